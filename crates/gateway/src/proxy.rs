//! One client request, from its `Host` to an answer: find the app, order its healthy instances
//! by its `[balance]` strategy, try them, and stamp the answer with who served it.
//!
//! When an attempt fails before any byte of an answer reached the client, the next instance in
//! the order is tried, as long as no attempt consumed the request body (see `replay`):
//! - for free when nobody took the request (no node, no such instance, an unhealthy one), and
//!   once to the same instance when an idempotent one's connection failed (a stale pooled one, a
//!   stream the peer dropped);
//! - as one of the app's `[balance] retries`, within its retry budget, when an instance failed
//!   or answered 5xx; and then only for an idempotent method if the app may have seen it.
//!
//! Every attempt's outcome goes to the balancer (latency, in flight, failures towards
//! ejection); every answer for a deployed app to the metrics.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mycel_placement::{PlacementHandle, PlacementState};
use mycel_protocol::{
    PeerId,
    app::{BalanceSpec, BalanceStrategy},
};
use tokio::time::Instant;

use crate::{
    Body, BoxError, GatewayConfig, INSTANCE_HEADER, LocalInstances, NODE_HEADER,
    activate::Activator,
    balance::{self, Balancer, Candidates, Outcome, Target},
    error::{AttemptError, INSTANCE_UNHEALTHY, REFUSED_HEADER, UNKNOWN_INSTANCE, json_error},
    forward, host,
    metrics::GatewayMetrics,
    remote::Remote,
    replay::Replay,
    track::Tracked,
    weights::Weights,
};

/// Attempts that nobody took (see the module docs) beyond the first try and the retries: enough
/// to step over a node that left and one whose replica lags, not to walk a whole large app.
const UNROUTED_ATTEMPTS: usize = 2;

pub(crate) struct Proxy {
    /// Lowercase, no trailing dot.
    domain: String,
    /// This node's peer id, as instances name their node.
    me: String,
    placement: PlacementHandle,
    local: Arc<dyn LocalInstances>,
    balancer: Arc<Mutex<Balancer>>,
    remote: Arc<Remote>,
    metrics: GatewayMetrics,
    weights: Weights,
    activator: Activator,
}

/// The parts of a request that every attempt sends again.
struct Head {
    method: http::Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Proxy {
    pub(crate) fn new(config: GatewayConfig, metrics: GatewayMetrics, weights: Weights) -> Self {
        // Only spread matters for the random choices; the clock differs enough between nodes.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            domain: config.domain.trim_end_matches('.').to_ascii_lowercase(),
            me: config.mesh.peer_id().to_string(),
            placement: config.placement.clone(),
            local: config.local,
            balancer: Arc::new(Mutex::new(Balancer::new(seed))),
            remote: Arc::new(Remote::new(config.mesh.streams())),
            activator: Activator::new(config.placement.clone(), metrics.clone()),
            metrics,
            weights,
        }
    }

    fn balancer(&self) -> MutexGuard<'_, Balancer> {
        lock(&self.balancer)
    }

    /// Answers one client request; every outcome is an answer (errors as JSON bodies).
    pub(crate) async fn handle(
        &self,
        client: IpAddr,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let arrived = Instant::now();
        let host = host_of(&request);
        let Some(app) = host::app_of_host(&host, &self.domain) else {
            return json_error(
                StatusCode::NOT_FOUND,
                "unknown_app",
                format!(
                    "the Host header '{host}' names no app: use <app>.{}",
                    self.domain
                ),
            );
        };
        let candidates = |state: &PlacementState| {
            balance::candidates(state, &app, &self.me, |id| self.local.is_healthy(id))
        };
        let found = candidates(&self.placement.replica().state);
        let (mut targets, spec, autoscaled) = match found {
            Candidates::UnknownApp => {
                return json_error(
                    StatusCode::NOT_FOUND,
                    "unknown_app",
                    format!("no app named '{app}' is deployed in this mesh"),
                );
            }
            Candidates::Healthy {
                targets,
                spec,
                autoscaled,
            } => (targets, spec, autoscaled),
        };
        let finished = Finished::start(&self.metrics, &app, arrived);
        if targets.is_empty() && autoscaled {
            // Scaled to zero (or its first instance still starting): held, counted as load.
            let found = self
                .activator
                .hold(&app, |state| match candidates(state) {
                    Candidates::Healthy { targets, .. } => targets,
                    Candidates::UnknownApp => Vec::new(),
                })
                .await;
            match found {
                Ok(found) => targets = found,
                Err(answer) => {
                    let answer = *answer;
                    self.metrics.answered(&app, answer.status().as_u16());
                    return answer
                        .map(move |body| Tracked::new(body, move || drop(finished)).boxed());
                }
            }
        }
        if spec.strategy == BalanceStrategy::Weighted {
            for target in &mut targets {
                target.weight = self.weights.of(&target.node);
            }
        }
        let targets = self.balancer().order(&app, &spec, targets, arrived);
        let (response, in_flight) = self
            .forward(client, &host, &app, &spec, targets, request)
            .await;
        self.metrics.answered(&app, response.status().as_u16());
        // Both end with the answer's body: read to its end, or dropped.
        response.map(move |body| Tracked::new(body, move || drop((in_flight, finished))).boxed())
    }

    /// Tries `targets` in order until one answers. Returns the answer and the in-flight count it
    /// holds at its instance (none for the gateway's own error answers).
    async fn forward(
        &self,
        client: IpAddr,
        host: &str,
        app: &str,
        spec: &BalanceSpec,
        targets: Vec<Target>,
        request: Request<Incoming>,
    ) -> (Response<Body>, Option<InFlight>) {
        if targets.is_empty() {
            return (no_healthy_instance(app), None);
        }
        let (parts, body) = request.into_parts();
        let mut head = Head {
            method: parts.method,
            uri: origin_form(&parts.uri),
            headers: parts.headers,
        };
        forward::strip_hop_by_hop(&mut head.headers);
        // Only gateways say which instance and node serve a request.
        head.headers.remove(INSTANCE_HEADER);
        head.headers.remove(NODE_HEADER);
        // This gateway already answered any `100-continue` by reading the body.
        head.headers.remove(header::EXPECT);
        forward::add_client(&mut head.headers, client, host);
        if !head.headers.contains_key(header::HOST)
            && let Ok(value) = HeaderValue::from_str(host)
        {
            head.headers.insert(header::HOST, value);
        }
        let idempotent = head.method.is_idempotent();

        // A request without a body that is safe to send twice may be hedged: when its instance
        // stays silent too long, a copy goes to the next one and the first answer wins, so a
        // frozen node costs a request a hedge delay rather than its whole time limit.
        let hedgeable = spec.hedge.0 && idempotent && http_body::Body::is_end_stream(&body);
        let replay = Replay::new(body.map_err(BoxError::from).boxed());

        let mut retries = spec.retries.0 as usize;
        let mut unrouted = UNROUTED_ATTEMPTS;
        let mut last_error = None;
        let mut targets = targets.iter().peekable();
        // A failed connection seldom says anything of its instance: an idempotent request goes
        // to the same instance again, on a fresh connection, once and without spending a retry.
        let mut again: Option<&Target> = None;
        let mut stale_retried = false;
        while let Some(first) = again.take().or_else(|| targets.next()) {
            let Some(body) = replay.lend() else {
                break;
            };
            let sent = Instant::now();
            let in_flight = InFlight::start(&self.balancer, app, &first.instance, sent);
            let attempt = Attempt {
                target: first,
                sent,
                in_flight,
            };
            let request = head.request(body);
            let (
                result,
                Attempt {
                    target,
                    sent,
                    in_flight,
                },
            ) = if hedgeable && targets.peek().is_some() {
                self.hedged(app, spec, attempt, request, &head, &mut targets)
                    .await
            } else {
                (self.attempt(first, request).await, attempt)
            };
            let now = Instant::now();
            let mut balancer = self.balancer();
            match result {
                Ok(response) => {
                    let failed = response.status().is_server_error();
                    let outcome = if failed {
                        Outcome::Failed
                    } else {
                        Outcome::Answered
                    };
                    let latency = Some(now - sent);
                    if balancer.record(app, spec, &target.instance, outcome, latency, now) {
                        tracing::info!(%app, instance = %target.instance, "instance ejected after consecutive failures");
                    }
                    // A 5xx not yet sent on goes to another instance when that is safe.
                    let retry = failed
                        && idempotent
                        && retries > 0
                        && targets.peek().is_some()
                        && replay.is_untouched()
                        && balancer.try_retry(app, now);
                    if !retry {
                        drop(balancer);
                        return (stamp(response, target), Some(in_flight));
                    }
                    retries -= 1;
                    tracing::debug!(%app, instance = %target.instance, status = %response.status(), "retrying a 5xx answer elsewhere");
                }
                Err(e) => {
                    tracing::debug!(%app, instance = %target.instance, error = %e, "an attempt failed");
                    if balancer.record(app, spec, &target.instance, e.outcome(), None, now) {
                        tracing::info!(%app, instance = %target.instance, "instance ejected after consecutive failures");
                    }
                    let stale = idempotent && e.is_connection_failure();
                    if stale && !stale_retried {
                        stale_retried = true;
                        again = Some(target);
                    }
                    let unrouted_error = e.is_unrouted() || stale;
                    let go_on = if unrouted_error && unrouted > 0 {
                        unrouted -= 1;
                        true
                    } else {
                        (idempotent || !e.app_may_have_seen())
                            && retries > 0
                            && targets.peek().is_some()
                            && balancer.try_retry(app, now)
                    };
                    last_error = Some(e);
                    if !go_on {
                        break;
                    }
                    if !unrouted_error {
                        retries -= 1;
                    }
                }
            }
            // Released before `in_flight` ends, which takes the lock again.
            drop(balancer);
            drop(in_flight);
        }
        let answer = match last_error {
            Some(AttemptError::NotThere { .. } | AttemptError::Unhealthy { .. }) | None => {
                no_healthy_instance(app)
            }
            Some(e) => {
                tracing::warn!(%app, error = %e, "no instance answered");
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "instance_unreachable",
                    format!("no instance of '{app}' answered"),
                )
            }
        };
        (answer, None)
    }

    /// Sends `request` to `first.target`; when no answer began within its hedge delay, sends a
    /// copy (no body) to the next target as well, and the first answer wins. The silent instance
    /// is skipped a while and its attempt dropped; a copy that fails leaves the first to finish.
    /// Returns the outcome and the attempt it came from.
    async fn hedged<'t>(
        &self,
        app: &str,
        spec: &BalanceSpec,
        first: Attempt<'t>,
        request: Request<Body>,
        head: &Head,
        targets: &mut std::iter::Peekable<std::slice::Iter<'t, Target>>,
    ) -> (Result<Response<Body>, AttemptError>, Attempt<'t>) {
        let after = self
            .balancer()
            .hedge_after(app, &first.target.instance, first.sent);
        let answer = self.attempt(first.target, request);
        tokio::pin!(answer);
        tokio::select! {
            result = &mut answer => return (result, first),
            () = tokio::time::sleep(after) => {}
        }
        let now = Instant::now();
        if !self.balancer().try_retry(app, now) {
            return (answer.await, first);
        }
        let Some(next) = targets.next() else {
            return (answer.await, first);
        };
        tracing::debug!(%app, instance = %first.target.instance, after = ?after, hedge = %next.instance, "no answer yet: hedging");
        let copy = Attempt {
            target: next,
            sent: now,
            in_flight: InFlight::start(&self.balancer, app, &next.instance, now),
        };
        let empty = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed();
        let copy_answer = self.attempt(next, head.request(empty));
        tokio::select! {
            result = &mut answer => (result, first),
            result = copy_answer => match result {
                Ok(response) => {
                    let now = Instant::now();
                    self.balancer()
                        .record(app, spec, &first.target.instance, Outcome::Stalled, None, now);
                    (Ok(response), copy)
                }
                Err(e) => {
                    let now = Instant::now();
                    self.balancer()
                        .record(app, spec, &next.instance, e.outcome(), None, now);
                    drop(copy);
                    (answer.await, first)
                }
            },
        }
    }

    /// Sends the request to one instance; `Ok` as soon as its answer began.
    async fn attempt(
        &self,
        target: &Target,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, AttemptError> {
        if let Ok(node) = HeaderValue::from_str(&target.node) {
            request.headers_mut().insert(NODE_HEADER, node);
        }
        if target.local {
            if let Ok(instance) = HeaderValue::from_str(&target.instance) {
                request.headers_mut().insert(INSTANCE_HEADER, instance);
            }
            let Some(answer) = self.local.serve(&target.instance, request) else {
                return Err(AttemptError::NotThere {
                    node: target.node.clone(),
                });
            };
            return answer.await.map_err(|e| AttemptError::InstanceFailed {
                node: target.node.clone(),
                reason: e.to_string(),
            });
        }
        let peer: PeerId = target.node.parse().map_err(|_| AttemptError::Unreachable {
            node: target.node.clone(),
            reason: "not a peer id".into(),
        })?;
        let instance =
            HeaderValue::from_str(&target.instance).map_err(|_| AttemptError::NotThere {
                node: target.node.clone(),
            })?;
        request.headers_mut().insert(INSTANCE_HEADER, instance);
        let response = self.remote.send(peer, request).await?;
        match response.headers().get(REFUSED_HEADER) {
            None => Ok(response),
            Some(reason) if reason == UNKNOWN_INSTANCE => Err(AttemptError::NotThere {
                node: target.node.clone(),
            }),
            Some(reason) if reason == INSTANCE_UNHEALTHY => Err(AttemptError::Unhealthy {
                node: target.node.clone(),
            }),
            Some(reason) => Err(AttemptError::InstanceFailed {
                node: target.node.clone(),
                reason: String::from_utf8_lossy(reason.as_bytes()).into_owned(),
            }),
        }
    }
}

/// One attempt at an instance: where it went, when, and its count in flight there.
struct Attempt<'t> {
    target: &'t Target,
    sent: Instant,
    in_flight: InFlight,
}

/// A request counted in flight at an instance, until dropped.
pub(crate) struct InFlight {
    balancer: Arc<Mutex<Balancer>>,
    app: String,
    instance: String,
}

impl InFlight {
    pub(crate) fn start(
        balancer: &Arc<Mutex<Balancer>>,
        app: &str,
        instance: &str,
        now: Instant,
    ) -> Self {
        lock(balancer).start(app, instance, now);
        Self {
            balancer: balancer.clone(),
            app: app.to_string(),
            instance: instance.to_string(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.balancer).end(&self.app, &self.instance);
    }
}

/// A request counted in the app's metrics, until dropped: then its duration is observed.
struct Finished {
    metrics: GatewayMetrics,
    app: String,
    arrived: Instant,
}

impl Finished {
    fn start(metrics: &GatewayMetrics, app: &str, arrived: Instant) -> Self {
        metrics.started(app);
        Self {
            metrics: metrics.clone(),
            app: app.to_string(),
            arrived,
        }
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.metrics
            .finished(&self.app, self.arrived.elapsed().as_secs_f64());
    }
}

impl Head {
    /// The request one attempt sends: HTTP/1.1 to the instance, in origin form.
    fn request(&self, body: Body) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// The name the client asked for: the `Host` header, or the authority of an absolute-form URI.
fn host_of<B>(request: &Request<B>) -> String {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// `/path?query` of `uri`, whatever form the client sent it in.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
}

/// The answer as the client gets it: no hop-by-hop headers, and who served it.
fn stamp(mut response: Response<Body>, target: &Target) -> Response<Body> {
    let headers = response.headers_mut();
    forward::strip_hop_by_hop(headers);
    headers.remove(REFUSED_HEADER);
    if let Ok(node) = HeaderValue::from_str(&target.node) {
        headers.insert(NODE_HEADER, node);
    }
    if let Ok(instance) = HeaderValue::from_str(&target.instance) {
        headers.insert(INSTANCE_HEADER, instance);
    }
    response
}

pub(crate) fn lock(balancer: &Mutex<Balancer>) -> MutexGuard<'_, Balancer> {
    // Every balancer update leaves it consistent: a panic elsewhere does not poison routing.
    balancer.lock().unwrap_or_else(PoisonError::into_inner)
}

fn no_healthy_instance(app: &str) -> Response<Body> {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_healthy_instance",
        format!("app '{app}' has no healthy instance right now"),
    )
}
