//! One client connection at a published port: pick an instance (one on this node first, else
//! the others in the app's balancing order), connect to its port, directly or over a mesh
//! stream, and copy bytes both ways until either side closes. A failed connect moves on to the
//! next instance; nothing has reached the app yet, so trying again is always safe.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use mycel_mesh::{
    StreamProtocol,
    codec::{read_prefixed, write_prefixed},
};
use mycel_protocol::{
    PeerId,
    ingress::{IngressAnswer, IngressOpen, MAX_FRAME_BYTES},
};
use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Instant,
};
use tokio_util::{compat::FuturesAsyncReadCompatExt, sync::CancellationToken};

use super::{Published, Shared};
use crate::{
    balance::{self, Candidates, Outcome, Target},
    proxy::{InFlight, lock},
};

/// How long reaching an instance may take: opening a stream to its node (dialling it if need
/// be) and its node connecting to it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Each direction's copy buffer: large enough that bulk transfers are not syscall-bound.
pub(super) const COPY_BUFFER: usize = 64 * 1024;

/// Either end of a connection's copy: a TCP connection or a mesh stream.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Serves one client connection until it or its instance closes, or the node stops.
pub(super) async fn forward(
    shared: Arc<Shared>,
    published: Published,
    client: TcpStream,
    shutdown: CancellationToken,
) {
    let app = &published.app;
    shared.metrics.connection(app);
    let _ = client.set_nodelay(true);
    let Some((mut upstream, _in_flight)) = connect(&shared, &published).await else {
        tracing::debug!(%app, "no instance took an ingress connection; closing it");
        return;
    };
    let (received, sent) = shared.metrics.bytes(app);
    let mut client = Counted {
        inner: client,
        received,
        sent,
    };
    let copied = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        COPY_BUFFER,
        COPY_BUFFER,
    );
    tokio::select! {
        _ = shutdown.cancelled() => {}
        result = copied => if let Err(e) = result {
            tracing::debug!(%app, error = %e, "an ingress connection ended with an error");
        },
    }
}

/// A connection to a running instance of the app, counted open at it until dropped; `None`
/// when none could be reached.
async fn connect(shared: &Shared, published: &Published) -> Option<(Box<dyn Io>, InFlight)> {
    let app = &published.app;
    let config = &shared.config;
    let me = config.mesh.peer_id().to_string();
    let replica = config.placement.replica();
    let healthy =
        |state: &_| balance::candidates(state, app, &me, |id| config.local.is_healthy(id));
    let Candidates::Healthy {
        mut targets,
        spec,
        autoscaled,
    } = healthy(&replica.state)
    else {
        return None;
    };
    drop(replica);
    if targets.is_empty() && autoscaled {
        // Scaled to zero: held while an instance starts (as the gateway holds a request).
        let found = shared.activator.hold(app, |state| match healthy(state) {
            Candidates::Healthy { targets, .. } => targets,
            Candidates::UnknownApp => Vec::new(),
        });
        targets = found.await.ok()?;
    }
    let ordered = lock(&shared.balancer).order(app, &spec, targets, Instant::now());
    // A local instance costs no hop: the app's order decides among local ones, then remote ones.
    let (local, remote): (Vec<Target>, Vec<Target>) = ordered.into_iter().partition(|t| t.local);
    for target in local.into_iter().chain(remote) {
        let started = Instant::now();
        let opened = if target.local {
            connect_here(shared, &target.instance, published.container)
                .await
                .map(|tcp| Box::new(tcp) as Box<dyn Io>)
        } else {
            open_remote(shared, &target, published).await
        };
        let now = Instant::now();
        let mut balancer = lock(&shared.balancer);
        match opened {
            Ok(io) => {
                let took = now.duration_since(started);
                balancer.record(
                    app,
                    &spec,
                    &target.instance,
                    Outcome::Answered,
                    Some(took),
                    now,
                );
                drop(balancer);
                let in_flight = InFlight::start(&shared.balancer, app, &target.instance, now);
                return Some((io, in_flight));
            }
            Err(reason) => {
                tracing::debug!(%app, instance = %target.instance, node = %target.node, %reason,
                    "an instance did not take an ingress connection");
                balancer.record(
                    app,
                    &spec,
                    &target.instance,
                    Outcome::Unreachable,
                    None,
                    now,
                );
            }
        }
    }
    None
}

/// A connection to `port` of `instance`, which runs on this node.
pub(super) async fn connect_here(
    shared: &Shared,
    instance: &str,
    port: u16,
) -> Result<TcpStream, String> {
    let connecting = shared
        .config
        .local
        .connect(instance, port)
        .ok_or_else(|| format!("instance {instance} does not run on this node"))?;
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("connecting took over {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())
}

/// A mesh stream to `target`'s node, on which that node connected to the instance.
async fn open_remote(
    shared: &Shared,
    target: &Target,
    published: &Published,
) -> Result<Box<dyn Io>, String> {
    let peer: PeerId = target
        .node
        .parse()
        .map_err(|e| format!("node id {}: {e}", target.node))?;
    let mut control = shared.config.mesh.streams();
    let protocol = StreamProtocol::new(mycel_protocol::names::INGRESS_PROTOCOL);
    let open = IngressOpen {
        app: published.app.clone(),
        instance: target.instance.clone(),
        port: published.container,
    };
    let exchange = async {
        let mut stream = control
            .open_stream(peer, protocol)
            .await
            .map_err(|e| e.to_string())?;
        write_prefixed(&mut stream, &open)
            .await
            .map_err(|e| e.to_string())?;
        match read_prefixed::<_, IngressAnswer>(&mut stream, MAX_FRAME_BYTES).await {
            Ok(Some(IngressAnswer::Open)) => Ok(stream),
            Ok(Some(IngressAnswer::Refused(why))) => Err(format!("refused: {why}")),
            Ok(None) => Err("the node closed the stream".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))??;
    Ok(Box::new(stream.compat()))
}

/// A client connection whose bytes are counted as they pass, so a long connection shows in the
/// metrics while it lasts.
struct Counted {
    inner: TcpStream,
    received: Counter,
    sent: Counter,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.received.inc_by(read as u64);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            self.sent.inc_by(written as u64);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
