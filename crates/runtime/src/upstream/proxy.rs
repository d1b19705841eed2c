//! HTTP/1.1 connections to one app's port, a few of them kept alive for reuse.
//!
//! A request takes the most recently idle connection, or opens one. Its connection is on
//! [`Lease`] until the answer has been read to its end, and then goes back to the pool (at most
//! [`MAX_IDLE`], each for at most [`IDLE_FOR`]); an answer dropped before its end closes its
//! connection, as HTTP/1.1 requires.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpSocket, time::Instant};

use crate::Body;

/// How long connecting to the port may take (it is on this host: a refusal is immediate).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection is kept. Shorter than the idle timeouts of common servers
/// (Node's is 5 s), so the pool rarely hands out a connection the app is closing.
const IDLE_FOR: Duration = Duration::from_secs(4);
/// How many idle connections are kept.
const MAX_IDLE: usize = 8;
/// How long a finished exchange may take to free its connection before it is dropped instead.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = http1::SendRequest<Body>;

/// Why a request got no answer head.
pub(crate) enum SendError {
    /// It was never sent: nothing reached the app.
    NotSent(String),
    /// It was (perhaps partly) sent, and the exchange failed.
    Failed(String),
}

/// Makes the socket a connection starts from: in the host's network, or in the app's own.
pub(crate) type MakeSocket =
    Arc<dyn Fn() -> BoxFuture<'static, std::io::Result<TcpSocket>> + Send + Sync>;

/// The connections to one app.
pub(crate) struct Upstream {
    addr: SocketAddr,
    /// `None`: a socket in this host's network.
    make_socket: Option<MakeSocket>,
    idle: Mutex<Vec<Idle>>,
    closed: AtomicBool,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Upstream {
    /// Connections to `addr` on this host's network.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Upstream {
            addr,
            make_socket: None,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Connections to `addr` from sockets `make_socket` makes (in another network namespace).
    pub(crate) fn through(addr: SocketAddr, make_socket: MakeSocket) -> Self {
        Upstream {
            make_socket: Some(make_socket),
            ..Self::new(addr)
        }
    }

    /// Sends `request` and returns the answer's head, with the connection on lease until its
    /// body has been read. A pooled connection that closed before the request went out is
    /// replaced by a new one transparently.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut request: http::Request<Body>,
    ) -> Result<(http::Response<Incoming>, Lease), SendError> {
        while let Some(mut sender) = self.checkout() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(sender))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Failed(e.into_error().to_string())),
                },
            }
        }
        let mut sender = self.connect().await.map_err(SendError::NotSent)?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok((response, self.lease(sender))),
            Err(e) if e.message().is_some() => Err(SendError::NotSent(e.into_error().to_string())),
            Err(e) => Err(SendError::Failed(e.into_error().to_string())),
        }
    }

    /// Drops the idle connections and keeps none from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The most recently idle connection that is still open; expired ones are dropped.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|i| i.since.elapsed() < IDLE_FOR && !i.sender.is_closed());
        std::iter::from_fn(|| idle.pop())
            .find(|i| i.sender.is_ready())
            .map(|i| i.sender)
    }

    async fn connect(&self) -> Result<Sender, String> {
        let connect = async {
            let socket = match &self.make_socket {
                Some(make) => make().await?,
                None if self.addr.is_ipv4() => TcpSocket::new_v4()?,
                None => TcpSocket::new_v6()?,
            };
            socket.connect(self.addr).await
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("connecting to {} took over {CONNECT_TIMEOUT:?}", self.addr))?
            .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
        // Small requests and answers should not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("starting HTTP/1.1 on {}: {e}", self.addr))?;
        // The connection's task ends when its sender and the answer's body are both dropped:
        // with its request, or when the pool lets go of it.
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, error = %e, "a connection to an app ended");
            }
        });
        Ok(sender)
    }

    fn lease(self: &Arc<Self>, sender: Sender) -> Lease {
        Lease {
            upstream: self.clone(),
            sender,
        }
    }

    fn put_back(&self, sender: Sender) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// A connection whose answer is being read; dropping it closes the connection.
pub(crate) struct Lease {
    upstream: Arc<Upstream>,
    sender: Sender,
}

impl Lease {
    /// Returns the connection to the pool once it can take the next request (its task needs a
    /// moment to finish the exchange).
    pub(crate) fn give_back(self) {
        let Lease {
            upstream,
            mut sender,
        } = self;
        // Detached: waits at most READY_TIMEOUT for the connection to be ready again.
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(READY_TIMEOUT, sender.ready()).await {
                upstream.put_back(sender);
            }
        });
    }
}
