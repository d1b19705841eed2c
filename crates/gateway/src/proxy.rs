//! One client request, from its `Host` to an answer: find the app, order its healthy instances,
//! try up to [`MAX_ATTEMPTS`] of them, and stamp the answer with who served it.
//!
//! An attempt that fails before any byte of an answer arrived is retried on the next instance,
//! as long as it did not consume any of the request body (see `replay`); once an answer has
//! begun, it goes to the client as it is.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mycel_placement::PlacementHandle;
use mycel_protocol::PeerId;
use tokio::time::Instant;

use crate::{
    Body, BoxError, GatewayConfig, INSTANCE_HEADER, LocalInstances, NODE_HEADER,
    balance::{self, Balancer, Candidates, Target},
    error::{AttemptError, json_error},
    forward, host,
    inbound::{REFUSED_HEADER, UNKNOWN_INSTANCE},
    remote::Remote,
    replay::Replay,
};

/// The first try and at most two retries, each on another instance.
pub(crate) const MAX_ATTEMPTS: usize = 3;

pub(crate) struct Proxy {
    /// Lowercase, no trailing dot.
    domain: String,
    /// This node's peer id, as instances name their node.
    me: String,
    placement: PlacementHandle,
    local: Arc<dyn LocalInstances>,
    balancer: Mutex<Balancer>,
    remote: Arc<Remote>,
}

/// The parts of a request that every attempt sends again.
struct Head {
    method: http::Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Proxy {
    pub(crate) fn new(config: GatewayConfig) -> Self {
        Self {
            domain: config.domain.trim_end_matches('.').to_ascii_lowercase(),
            me: config.mesh.peer_id().to_string(),
            placement: config.placement,
            local: config.local,
            balancer: Mutex::default(),
            remote: Arc::new(Remote::new(config.mesh.streams())),
        }
    }

    fn balancer(&self) -> std::sync::MutexGuard<'_, Balancer> {
        self.balancer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers one client request; every outcome is an answer (errors as JSON bodies).
    pub(crate) async fn handle(
        &self,
        client: IpAddr,
        request: Request<Incoming>,
    ) -> Response<Body> {
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
        let candidates = {
            let replica = self.placement.replica();
            balance::candidates(&replica.state, &app, &self.me, |id| {
                self.local.is_healthy(id)
            })
        };
        let targets = match candidates {
            Candidates::UnknownApp => {
                return json_error(
                    StatusCode::NOT_FOUND,
                    "unknown_app",
                    format!("no app named '{app}' is deployed in this mesh"),
                );
            }
            Candidates::Healthy(healthy) => self.balancer().order(&app, healthy, Instant::now()),
        };
        if targets.is_empty() {
            return no_healthy_instance(&app);
        }

        let (parts, body) = request.into_parts();
        let mut head = Head {
            method: parts.method,
            uri: origin_form(&parts.uri),
            headers: parts.headers,
        };
        forward::strip_hop_by_hop(&mut head.headers);
        head.headers.remove(INSTANCE_HEADER);
        // This gateway already answered any `100-continue` by reading the body.
        head.headers.remove(header::EXPECT);
        forward::add_client(&mut head.headers, client, &host);
        if !head.headers.contains_key(header::HOST)
            && let Ok(value) = HeaderValue::from_str(&host)
        {
            head.headers.insert(header::HOST, value);
        }
        let replay = Replay::new(body.map_err(BoxError::from).boxed());

        let mut last_error = None;
        for target in targets.iter().take(MAX_ATTEMPTS) {
            let Some(body) = replay.lend() else {
                break;
            };
            match self.attempt(target, head.request(body)).await {
                Ok(response) => {
                    if !target.local {
                        self.balancer().reset(&target.instance);
                    }
                    return stamp(response, target);
                }
                Err(e) => {
                    tracing::debug!(%app, instance = %target.instance, error = %e, "an attempt failed");
                    if e.trips_breaker() {
                        self.balancer().trip(&target.instance, Instant::now());
                    }
                    last_error = Some(e);
                }
            }
        }
        match last_error {
            Some(AttemptError::NotThere { .. }) | None => no_healthy_instance(&app),
            Some(e) => {
                tracing::warn!(%app, error = %e, "no instance answered");
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "instance_unreachable",
                    format!("no instance of '{app}' answered"),
                )
            }
        }
    }

    /// Sends the request to one instance; `Ok` as soon as its answer began.
    async fn attempt(
        &self,
        target: &Target,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, AttemptError> {
        if target.local {
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
            Some(reason) => Err(AttemptError::InstanceFailed {
                node: target.node.clone(),
                reason: String::from_utf8_lossy(reason.as_bytes()).into_owned(),
            }),
        }
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

fn no_healthy_instance(app: &str) -> Response<Body> {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_healthy_instance",
        format!("app '{app}' has no healthy instance right now"),
    )
}
