//! Requests for an app scaled to zero: the gateway that took one holds it while the placement
//! group places an instance (it asks the leader once per app at a time; the leader does nothing
//! when another gateway asked first) and the instance starts, then routes it as any other. A
//! held request waits at most [`HOLD_FOR`] and then gets `503` with `Retry-After`. An ask is a
//! no-op once made, so one that fails is made again for [`ASK_FOR`] (a leader killed mid-ask is
//! replaced within that); without a quorum the request then gets `503 no_quorum`, at once when
//! this node's mesh view already counts most voters dead. At most
//! [`MAX_HELD`] requests per app are held; more get `503` at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::future::{BoxFuture, FutureExt, Shared};
use http::{HeaderValue, Response, StatusCode, header};
use mycel_placement::{PlacementHandle, PlacementState};
use mycel_protocol::placement::{WriteError, WriteRequest};
use tokio::time::Instant;

use crate::{Body, balance::Target, error::json_error, metrics::GatewayMetrics};

/// The longest a request waits for an instance of an app at zero.
pub(crate) const HOLD_FOR: Duration = Duration::from_secs(30);
/// The most requests held for one app at once.
pub(crate) const MAX_HELD: usize = 1000;
/// How long a failing ask is made again: longer than an election takes.
const ASK_FOR: Duration = Duration::from_secs(4);
/// The pause between two asks.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(250);

type Ask = Shared<BoxFuture<'static, Result<(), WriteError>>>;

pub(crate) struct Activator {
    placement: PlacementHandle,
    metrics: GatewayMetrics,
    /// Requests held now, by app.
    held: Arc<Mutex<HashMap<String, usize>>>,
    /// Asks to the leader in flight, by app: every request held for the app waits on the same.
    asks: Arc<Mutex<HashMap<String, Ask>>>,
}

impl Activator {
    pub(crate) fn new(placement: PlacementHandle, metrics: GatewayMetrics) -> Self {
        Self {
            placement,
            metrics,
            held: Arc::default(),
            asks: Arc::default(),
        }
    }

    /// Holds a request for `app`, which has no instance to serve it, until `targets` finds one
    /// in the replica: the targets, or the answer to give instead.
    pub(crate) async fn hold(
        &self,
        app: &str,
        targets: impl Fn(&PlacementState) -> Vec<Target>,
    ) -> Result<Vec<Target>, Box<Response<Body>>> {
        let _held = Held::enter(self, app)?;
        let arrived = Instant::now();
        let deadline = arrived + HOLD_FOR;
        let mut replica = self.placement.subscribe();
        let mut ask = Some(self.ask(app));
        loop {
            let found = targets(&replica.borrow_and_update().state);
            if !found.is_empty() {
                self.metrics.cold_start(arrived.elapsed().as_secs_f64());
                return Ok(found);
            }
            tokio::select! {
                asked = async { ask.as_mut().expect("polled only while asking").await },
                    if ask.is_some() =>
                {
                    ask = None;
                    if let Err(e) = asked {
                        return Err(unavailable(e.code(), format!(
                            "app '{app}' is scaled to zero and no instance could be asked for: {e}"
                        ), false));
                    }
                }
                changed = replica.changed() => {
                    if changed.is_err() {
                        return Err(unavailable("stopping", "the node is shutting down".into(), false));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(unavailable("cold_start_timeout", format!(
                        "no instance of '{app}' started within {} s", HOLD_FOR.as_secs()
                    ), true));
                }
            }
        }
    }

    /// The ask for an instance of `app` in flight, or a new one.
    fn ask(&self, app: &str) -> Ask {
        let mut asks = lock(&self.asks);
        if let Some(ask) = asks.get(app) {
            return ask.clone();
        }
        let placement = self.placement.clone();
        let asks_map = self.asks.clone();
        let name = app.to_string();
        let ask = async move {
            let until = Instant::now() + ASK_FOR;
            let result = loop {
                if !placement.quorum_in_sight().await {
                    // Most voters are known gone: no ask can commit until they return.
                    break Err(WriteError::NoQuorum(
                        "fewer than a majority of the placement group's voters are alive".into(),
                    ));
                }
                let asked = placement
                    .write(WriteRequest::Activate { name: name.clone() })
                    .await
                    .map(|_| ());
                match asked {
                    Err(
                        WriteError::UnknownApp(_) | WriteError::Rejected(_) | WriteError::Stopped,
                    ) => {
                        break asked;
                    }
                    Err(_) if Instant::now() + ASK_AGAIN_AFTER < until => {
                        tokio::time::sleep(ASK_AGAIN_AFTER).await;
                    }
                    _ => break asked,
                }
            };
            lock(&asks_map).remove(&name);
            result
        }
        .boxed()
        .shared();
        asks.insert(app.to_string(), ask.clone());
        ask
    }
}

/// One held request, counted until dropped.
struct Held<'a> {
    activator: &'a Activator,
    app: String,
}

impl<'a> Held<'a> {
    fn enter(activator: &'a Activator, app: &str) -> Result<Self, Box<Response<Body>>> {
        let mut held = lock(&activator.held);
        let count = held.entry(app.to_string()).or_default();
        if *count >= MAX_HELD {
            return Err(unavailable(
                "too_many_held",
                format!("{MAX_HELD} requests already wait for an instance of '{app}'"),
                true,
            ));
        }
        *count += 1;
        activator.metrics.held(app, 1);
        Ok(Self {
            activator,
            app: app.to_string(),
        })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.activator.held);
        if let Some(count) = held.get_mut(&self.app) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.app);
            }
        }
        self.activator.metrics.held(&self.app, -1);
    }
}

fn unavailable(code: &str, message: String, retry: bool) -> Box<Response<Body>> {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, code, message);
    if retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Box::new(response)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
