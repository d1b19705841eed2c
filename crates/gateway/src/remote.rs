//! Requests to instances on other nodes: HTTP/1.1 over libp2p streams of the gateway protocol,
//! on the mesh's own encrypted connections.
//!
//! Connections are pooled per peer. A request takes the most recently idle connection to its
//! node, or opens a new stream when none is idle; when an answer has been read to its end, its
//! connection goes back to the pool (at most [`MAX_IDLE_PER_PEER`] per peer, for at most
//! [`IDLE_FOR`]). An answer dropped before its end closes its connection, as HTTP/1.1 requires.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use mycel_mesh::{StreamProtocol, libp2p_stream::Control};
use mycel_protocol::PeerId;
use tokio::time::Instant;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::{Body, BoxError, error::AttemptError};

/// How long opening a stream to a node (dialling it if need be) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection is kept; shorter than the serving side's idle limit, so the pool
/// rarely hands out a connection the other side is closing.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// How many idle connections are kept per peer.
pub(crate) const MAX_IDLE_PER_PEER: usize = 32;
/// How long a finished exchange may take to free its connection before it is dropped instead.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = http1::SendRequest<Body>;

/// The pool of connections to other nodes' gateways.
pub(crate) struct Remote {
    streams: Control,
    protocol: StreamProtocol,
    idle: Mutex<HashMap<PeerId, Vec<Idle>>>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Remote {
    pub(crate) fn new(streams: Control) -> Self {
        Self {
            streams,
            protocol: StreamProtocol::new(mycel_protocol::names::GATEWAY_PROTOCOL),
            idle: Mutex::default(),
        }
    }

    /// Sends `request` to `peer`'s gateway. Returns once the answer's head arrived; its body
    /// streams on. A pooled connection that was closed before the request went out is replaced
    /// by a new one transparently.
    pub(crate) async fn send(
        self: &Arc<Self>,
        peer: PeerId,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, AttemptError> {
        if let Some(mut sender) = self.checkout(&peer) {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.pooled(peer, sender, response)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => {
                        return Err(AttemptError::Failed {
                            node: peer.to_string(),
                            reason: e.into_error().to_string(),
                            reused: true,
                        });
                    }
                },
            }
        }
        let mut sender = self.connect(peer).await?;
        match sender.send_request(request).await {
            Ok(response) => Ok(self.pooled(peer, sender, response)),
            Err(e) => Err(AttemptError::Failed {
                node: peer.to_string(),
                reason: e.to_string(),
                reused: false,
            }),
        }
    }

    /// How many idle connections to `peer` the pool holds.
    #[cfg(test)]
    pub(crate) fn idle_to(&self, peer: &PeerId) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(peer)
            .map_or(0, Vec::len)
    }

    /// The most recently idle connection to `peer` that is still open; expired ones are dropped.
    fn checkout(&self, peer: &PeerId) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(peer)?;
        list.retain(|i| i.since.elapsed() < IDLE_FOR && !i.sender.is_closed());
        let found = std::iter::from_fn(|| list.pop()).find(|i| i.sender.is_ready());
        if list.is_empty() {
            idle.remove(peer);
        }
        found.map(|i| i.sender)
    }

    async fn connect(&self, peer: PeerId) -> Result<Sender, AttemptError> {
        let unreachable = |reason: String| AttemptError::Unreachable {
            node: peer.to_string(),
            reason,
        };
        let mut control = self.streams.clone();
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            control.open_stream(peer, self.protocol.clone()),
        )
        .await
        .map_err(|_| unreachable(format!("no stream within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream.compat()))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // Detached: the connection ends when its sender is dropped or the peer closes it.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "gateway connection to a peer ended");
            }
        });
        Ok(sender)
    }

    /// The answer, with a body that gives the connection back to the pool when read to its end.
    fn pooled(
        self: &Arc<Self>,
        peer: PeerId,
        sender: Sender,
        response: Response<Incoming>,
    ) -> Response<Body> {
        let back = GiveBack {
            remote: self.clone(),
            peer,
            sender,
        };
        if response.body().is_end_stream() {
            back.give();
            return response.map(|body| body.map_err(BoxError::from).boxed());
        }
        response.map(|body| {
            PooledBody {
                body,
                back: Some(back),
            }
            .boxed()
        })
    }

    fn put_back(&self, peer: PeerId, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(peer).or_default();
        if list.len() < MAX_IDLE_PER_PEER {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// A connection whose exchange is over, on its way back to the pool.
struct GiveBack {
    remote: Arc<Remote>,
    peer: PeerId,
    sender: Sender,
}

impl GiveBack {
    /// Returns the connection once it can take the next request (the connection task needs a
    /// moment to finish the exchange).
    fn give(self) {
        let GiveBack {
            remote,
            peer,
            mut sender,
        } = self;
        // Detached: waits at most READY_TIMEOUT for the connection to be ready again.
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(READY_TIMEOUT, sender.ready()).await {
                remote.put_back(peer, sender);
            }
        });
    }
}

/// An answer's body from a pooled connection.
struct PooledBody {
    body: Incoming,
    /// Taken when the body ends.
    back: Option<GiveBack>,
}

impl PooledBody {
    fn finish(&mut self) {
        if let Some(back) = self.back.take() {
            back.give();
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        match &poll {
            // A reader may stop at `is_end_stream` without polling for the end.
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.finish(),
            Poll::Ready(None) => self.finish(),
            // A broken exchange leaves a connection nobody can use.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        poll.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use futures::StreamExt;
    use http_body_util::{Empty, Full};
    use hyper::service::service_fn;
    use mycel_mesh::{LocalNode, MeshConfig};
    use mycel_protocol::Keypair;
    use prometheus_client::registry::Registry;
    use tokio_util::sync::CancellationToken;

    use super::*;

    async fn mesh(bootstrap: Option<&str>) -> mycel_mesh::Mesh {
        let mut config = MeshConfig::new(
            Keypair::generate_ed25519(),
            vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")],
        );
        config.bootstrap = bootstrap
            .map(|a| a.parse().expect("a multiaddr"))
            .into_iter()
            .collect();
        mycel_mesh::start(config, LocalNode::default(), &mut Registry::default())
            .await
            .expect("the mesh starts")
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_connection_read_to_its_end_is_reused() {
        let a = mesh(None).await;
        let b = mesh(Some(&a.listen_addrs[0].to_string())).await;
        let mut incoming = b
            .handle
            .streams()
            .accept(StreamProtocol::new(mycel_protocol::names::GATEWAY_PROTOCOL))
            .expect("nobody else accepts");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Some((_, stream)) = incoming.next().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(|_request: Request<Incoming>| async {
                    let body = Full::new(Bytes::from_static(b"ok"))
                        .map_err(|never| match never {})
                        .boxed();
                    Ok::<_, Infallible>(Response::new(body))
                });
                tokio::spawn(crate::listener::serve_connection(
                    TokioIo::new(stream.compat()),
                    service,
                    Duration::from_secs(60),
                    CancellationToken::new(),
                ));
            }
        });

        let deadline = Instant::now() + Duration::from_secs(10);
        while a.handle.connected_peers().await.expect("the mesh runs") == 0 {
            assert!(Instant::now() < deadline, "b never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let remote = Arc::new(Remote::new(a.handle.streams()));
        let peer = b.handle.peer_id();
        for _ in 0..5 {
            let request = Request::builder()
                .uri("/")
                .header(http::header::HOST, "web.localhost")
                .body(Empty::new().map_err(|never| match never {}).boxed())
                .expect("a request");
            let response = remote.send(peer, request).await.expect("an answer");
            let body = response.into_body().collect().await.expect("a body");
            assert_eq!(body.to_bytes(), "ok");
            eventually("the connection to be idle again", || {
                remote.idle_to(&peer) == 1
            })
            .await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one stream for all five"
        );

        // An answer dropped before its end closes its connection rather than pooling it.
        let request = Request::builder()
            .uri("/")
            .header(http::header::HOST, "web.localhost")
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .expect("a request");
        drop(remote.send(peer, request).await.expect("an answer"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(remote.idle_to(&peer), 0);
    }
}
