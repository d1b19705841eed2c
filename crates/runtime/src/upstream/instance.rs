//! One running app behind a port (a container's, a sandboxed process's): admission (stopped?
//! concurrency?), the request forwarded to its port under the time limit, the answer's body
//! streamed back, and stopping through its [`Backend`].

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::{
    net::TcpStream,
    sync::OnceCell,
    time::{Instant, Sleep},
};

use super::{
    TcpPorts,
    proxy::{Lease, SendError, Upstream},
};
use crate::{
    Body, BoxError, Instance, RuntimeError, Usage,
    admission::{Gate, Ticket},
    logs::{LogBuffer, Logs, Stream},
};

/// How long stopping waits, beyond the request time limit, for requests to end.
const GRACE: Duration = Duration::from_secs(1);

/// What runs the app: measures it and ends it.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The memory it uses now, when known.
    fn memory(&self) -> Option<u64>;
    /// The CPU time it used since it started, in nanoseconds, when known.
    fn cpu_nanos(&self) -> Option<u64>;
    /// How it ended, once it has (see [`Instance::ended`]).
    fn ended(&self) -> Option<String> {
        None
    }
    /// Ends it, once no request is left, and removes what it leaves behind. Failures are the
    /// backend's to log: the caller cannot act on them.
    fn shut_down(&self) -> BoxFuture<'_, ()>;
}

/// A started app behind a port, as [`Instance`].
pub(crate) struct UpstreamInstance {
    shared: Arc<Shared>,
}

/// What the app was started as.
pub(crate) struct Started {
    pub(crate) id: String,
    pub(crate) app: String,
    /// What it runs in, as messages name it: "container", "process".
    pub(crate) kind: &'static str,
    pub(crate) upstream: Upstream,
    /// Where its published ports are reached (`[[ports]]`).
    pub(crate) tcp: TcpPorts,
    pub(crate) request_timeout: Duration,
    pub(crate) max_concurrency: usize,
    /// Where its output goes (the backend follows it there).
    pub(crate) log: Arc<LogBuffer>,
    pub(crate) backend: Box<dyn Backend>,
}

/// Everything a request needs, shared with its answer's body (which may outlive the caller).
struct Shared {
    id: String,
    app: String,
    kind: &'static str,
    upstream: Arc<Upstream>,
    tcp: TcpPorts,
    timeout: Duration,
    gate: Arc<Gate>,
    /// Set once the app is stopped; a second stop waits on the first.
    removed: OnceCell<()>,
    log: Arc<LogBuffer>,
    backend: Box<dyn Backend>,
}

impl UpstreamInstance {
    pub(crate) fn new(started: Started) -> Self {
        UpstreamInstance {
            shared: Arc::new(Shared {
                gate: Gate::new(&started.id, started.max_concurrency),
                id: started.id,
                app: started.app,
                kind: started.kind,
                upstream: Arc::new(started.upstream),
                tcp: started.tcp,
                timeout: started.request_timeout,
                removed: OnceCell::new(),
                log: started.log,
                backend: started.backend,
            }),
        }
    }
}

impl Instance for UpstreamInstance {
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

    fn connect(&self, port: u16) -> BoxFuture<'static, Result<TcpStream, RuntimeError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            if shared.gate.is_closed() {
                return Err(RuntimeError::Stopped {
                    instance: shared.id.clone(),
                });
            }
            shared
                .tcp
                .connect(port)
                .await
                .map_err(|e| RuntimeError::Unreachable {
                    instance: shared.id.clone(),
                    reason: format!("port {port}: {e}"),
                })
        })
    }

    fn logs(&self) -> Logs {
        self.shared.log.logs()
    }

    fn ended(&self) -> Option<String> {
        self.shared.backend.ended()
    }

    fn usage(&self) -> Usage {
        let backend = &self.shared.backend;
        self.shared
            .gate
            .usage(backend.memory(), backend.cpu_nanos())
    }

    fn stop(&self) -> BoxFuture<'static, ()> {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared.removed.get_or_init(|| shared.shut_down()).await;
        })
    }
}

impl Shared {
    /// Sends the request to the app and answers once its head is back; the body then
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
                reason: format!("the exchange with its {} failed: {reason}", self.kind),
            })),
            Err(_elapsed) => Err(self.failed(self.timed_out())),
        }
    }

    /// Refuses new requests, waits (bounded) for the running ones, then ends the app.
    async fn shut_down(&self) {
        // Each request is bounded by its time limit, but only while its answer is read: one that
        // nobody reads must not hold the stop forever.
        self.gate.close(Some(self.timeout + GRACE)).await;
        self.upstream.close();
        self.backend.shut_down().await;
        tracing::debug!(instance = %self.id, app = %self.app, kind = self.kind, "stopped");
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

/// An answer's body from the app: it ends at the request's deadline, holds the request's
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
                    reason: format!("its {}'s answer broke off: {e}", this.shared.kind),
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
