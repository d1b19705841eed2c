//! Where requests come in: the TCP accept loop, and HTTP/1.1 serving of one connection (a TCP
//! connection from a client, or a stream from a peer's gateway) until it ends or the gateway
//! shuts down, when in-flight requests finish and the connection closes.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http::Request;
use hyper::{
    body::Incoming,
    rt::{Read, Write},
    server::conn::http1,
    service::{HttpService, service_fn},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{Body, proxy::Proxy};

/// How long a client connection may sit without sending a whole request head (idle keep-alive
/// included) before it is closed.
const CLIENT_IDLE: Duration = Duration::from_secs(30);
/// How long to wait after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts client connections until `stop`; each is served on its own task in `connections`.
pub(crate) async fn accept(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    connections: &TaskTracker,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    loop {
        let (tcp, client) = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Per-connection failures and resource exhaustion both pass; the listener
                    // itself stays usable.
                    tracing::warn!(error = %e, "accepting a gateway connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY");
        }
        connections.spawn(serve_client(
            TokioIo::new(tcp),
            client,
            proxy.clone(),
            stop.clone(),
        ));
    }
}

async fn serve_client<I>(io: I, client: SocketAddr, proxy: Arc<Proxy>, stop: CancellationToken)
where
    I: Read + Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(client.ip(), request).await) }
    });
    serve_connection(io, service, CLIENT_IDLE, stop).await;
}

/// Serves HTTP/1.1 on `io` until the peer closes it, it idles for `idle`, or `stop` (then the
/// request in flight finishes first).
pub(crate) async fn serve_connection<I, S>(
    io: I,
    service: S,
    idle: Duration,
    stop: CancellationToken,
) where
    I: Read + Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = Body, Error = Infallible>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "gateway connection ended");
    }
}
