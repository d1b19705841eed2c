//! One running container: admission (stopped? concurrency?), the request forwarded to its port
//! under the time limit, the answer's body streamed back, and stopping.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bollard::{Docker, query_parameters::StopContainerOptionsBuilder};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::{
    sync::OnceCell,
    time::{Instant, Sleep},
};

use super::{
    engine_reason,
    follow::Followers,
    force_remove, is_not_found,
    proxy::{Lease, SendError, Upstream},
};
use crate::{
    Body, BoxError, Instance, RuntimeError, Usage,
    admission::{Gate, Ticket},
    logs::{LogBuffer, Logs, Stream},
};

/// How long stopping waits, beyond the request time limit, for requests to end, and for the
/// last lines of a stopped container's output.
const GRACE: Duration = Duration::from_secs(1);

/// A started container, as [`Instance`].
pub(crate) struct DockerInstance {
    shared: Arc<Shared>,
}

/// What the container was started as.
pub(super) struct Started {
    pub(super) id: String,
    pub(super) app: String,
    /// The container's id on the engine.
    pub(super) container: String,
    pub(super) docker: Docker,
    pub(super) upstream: Upstream,
    pub(super) request_timeout: Duration,
    pub(super) max_concurrency: usize,
    pub(super) stop_timeout: Duration,
}

/// Everything a request needs, shared with its answer's body (which may outlive the caller).
struct Shared {
    id: String,
    app: String,
    container: String,
    docker: Docker,
    upstream: Arc<Upstream>,
    timeout: Duration,
    stop_timeout: Duration,
    gate: Arc<Gate>,
    /// Set once the container is stopped and removed; a second stop waits on the first.
    removed: OnceCell<()>,
    log: Arc<LogBuffer>,
    followers: Followers,
}

impl DockerInstance {
    /// Wraps a started container and starts following its output.
    pub(super) fn new(started: Started) -> Self {
        let log = Arc::new(LogBuffer::new());
        let followers = Followers::start(&started.docker, &started.container, log.clone());
        DockerInstance {
            shared: Arc::new(Shared {
                gate: Gate::new(&started.id, started.max_concurrency),
                id: started.id,
                app: started.app,
                container: started.container,
                docker: started.docker,
                upstream: Arc::new(started.upstream),
                timeout: started.request_timeout,
                stop_timeout: started.stop_timeout,
                removed: OnceCell::new(),
                log,
                followers,
            }),
        }
    }
}

impl Instance for DockerInstance {
    fn id(&self) -> &str {
        &self.shared.id
    }

    fn handle(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, RuntimeError>> {
        // Admission happens now, not when the future is first polled.
        let admitted = self.shared.gate.admit();
        let shared = self.shared.clone();
        Box::pin(async move { shared.forward(request, admitted?).await })
    }

    fn logs(&self) -> Logs {
        self.shared.log.logs()
    }

    fn usage(&self) -> Usage {
        let followers = &self.shared.followers;
        self.shared
            .gate
            .usage(followers.memory(), followers.cpu_nanos())
    }

    fn stop(&self) -> BoxFuture<'static, ()> {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared.removed.get_or_init(|| shared.shut_down()).await;
        })
    }
}

impl Shared {
    /// Sends the request to the container and answers once its head is back; the body then
    /// streams, under the same deadline.
    async fn forward(
        self: Arc<Self>,
        request: http::Request<Body>,
        ticket: Ticket,
    ) -> Result<http::Response<Body>, RuntimeError> {
        let deadline = Instant::now() + self.timeout;
        let request = origin_form(request);
        let sent = tokio::time::timeout_at(deadline, self.upstream.send(request)).await;
        match sent {
            Ok(Ok((response, lease))) => Ok(response.map(|body| {
                AnswerBody {
                    body,
                    lease: Some(lease),
                    ticket: Some(ticket),
                    shared: self.clone(),
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                }
                .boxed()
            })),
            Ok(Err(SendError::NotSent(reason))) => Err(self.failed(RuntimeError::Unreachable {
                instance: self.id.clone(),
                reason,
            })),
            Ok(Err(SendError::Failed(reason))) => Err(self.failed(RuntimeError::Guest {
                instance: self.id.clone(),
                reason: format!("the exchange with its container failed: {reason}"),
            })),
            Err(_elapsed) => Err(self.failed(self.timed_out())),
        }
    }

    /// Refuses new requests, waits (bounded) for the running ones, then stops and removes the
    /// container. Failures are logged here: the caller cannot act on them, and the agent's
    /// reaping removes what is left.
    async fn shut_down(&self) {
        // Each request is bounded by its time limit, but only while its answer is read: one that
        // nobody reads must not hold the stop forever.
        self.gate.close(Some(self.timeout + GRACE)).await;
        self.upstream.close();

        let seconds = i32::try_from(self.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        match self
            .docker
            .stop_container(&self.container, Some(options))
            .await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(
                instance = %self.id,
                container = %self.container,
                error = %engine_reason(&e),
                "stopping a container; removing it by force"
            ),
        }
        self.followers.finish(GRACE).await;
        if let Err(e) = force_remove(&self.docker, &self.container).await {
            tracing::warn!(instance = %self.id, error = %e, "removing a stopped container");
        }
        tracing::debug!(instance = %self.id, app = %self.app, "container stopped and removed");
    }

    fn timed_out(&self) -> RuntimeError {
        RuntimeError::Timeout {
            instance: self.id.clone(),
            limit: self.timeout,
        }
    }

    /// Counts a failed request and notes it in the instance's log, where `mycel logs` shows it.
    fn failed(&self, error: RuntimeError) -> RuntimeError {
        self.gate.count_failure();
        tracing::debug!(instance = %self.id, app = %self.app, error = %error, "request failed");
        self.log.push(Stream::Stderr, format!("[mycel] {error}"));
        error
    }
}

/// The request as an HTTP/1.1 origin server expects it: a path, not an absolute URI, and a Host
/// header (from the URI's authority when the request had none).
fn origin_form(request: http::Request<Body>) -> http::Request<Body> {
    let (mut parts, body) = request.into_parts();
    if !parts.headers.contains_key(http::header::HOST) {
        let host = parts
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| http::HeaderValue::from_static("localhost"));
        parts.headers.insert(http::header::HOST, host);
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .cloned()
        .map_or_else(|| http::Uri::from_static("/"), http::Uri::from);
    parts.version = http::Version::HTTP_11;
    http::Request::from_parts(parts, body)
}

/// An answer's body from the container: it ends at the request's deadline, holds the request's
/// ticket until it ends, and then gives its connection back.
struct AnswerBody {
    body: Incoming,
    /// Taken when the body ends (back to the pool) or fails (closed).
    lease: Option<Lease>,
    /// Taken when the body ends or fails; `None` then means there is nothing more to read.
    ticket: Option<Ticket>,
    shared: Arc<Shared>,
    deadline: Pin<Box<Sleep>>,
}

impl AnswerBody {
    fn finish(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.give_back();
        }
        self.ticket = None;
    }

    /// Ends the answer with `error`: its connection is closed, the failure counted.
    fn fail(&mut self, error: RuntimeError) -> BoxError {
        self.lease = None;
        self.ticket = None;
        self.shared.failed(error).into()
    }
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.ticket.is_none() {
            return Poll::Ready(None);
        }
        // Checked first, so an app that streams without pause is cut off too.
        if this.deadline.is_elapsed() {
            let error = this.shared.timed_out();
            return Poll::Ready(Some(Err(this.fail(error))));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.body.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let error = RuntimeError::Guest {
                    instance: this.shared.id.clone(),
                    reason: format!("its container's answer broke off: {e}"),
                };
                Poll::Ready(Some(Err(this.fail(error))))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let error = this.shared.timed_out();
                    Poll::Ready(Some(Err(this.fail(error))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ticket.is_none() || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        // A reader may stop at `is_end_stream` (an empty answer, or HEAD) without polling for
        // the end; the exchange is over all the same.
        if self.ticket.is_some() && self.body.is_end_stream() {
            self.finish();
        }
    }
}
