//! The mesh side of the gateway: streams of the gateway protocol from other nodes' gateways,
//! each an HTTP/1.1 connection whose requests name their instance in `x-mycel-instance`, served
//! by this node's [`LocalInstances`].
//!
//! A request for an instance that does not run here (the peer's replica is ahead or behind
//! ours), or that has not passed its health check (the replica says `Running` from its start,
//! before its first check), is refused before the app sees it: the answer carries
//! [`REFUSED_HEADER`], so the sending gateway may try another instance. The header never reaches
//! a client.
//!
//! The app sees which instance it is and on which node in `x-mycel-instance` and
//! `x-mycel-node`, as it does for requests from this node's own gateway.

use std::{convert::Infallible, sync::Arc, time::Duration};

use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use mycel_mesh::libp2p_stream::IncomingStreams;
use mycel_protocol::PeerId;
use tokio_util::{compat::FuturesAsyncReadCompatExt, sync::CancellationToken, task::TaskTracker};

use crate::{
    Body, BoxError, INSTANCE_HEADER, LocalInstances, NODE_HEADER,
    error::{INSTANCE_FAILED, INSTANCE_UNHEALTHY, REFUSED_HEADER, UNKNOWN_INSTANCE, json_error},
    forward, listener,
};

/// How long a peer's connection may idle before it is closed; longer than the sending side
/// keeps it in its pool.
const PEER_IDLE: Duration = Duration::from_secs(60);

/// Accepts peers' gateway streams until `stop`; each is served on its own task.
pub(crate) async fn accept(
    mut incoming: IncomingStreams,
    me: PeerId,
    local: Arc<dyn LocalInstances>,
    connections: TaskTracker,
    stop: CancellationToken,
) {
    let me = HeaderValue::from_str(&me.to_string()).expect("a peer id is a valid header value");
    loop {
        let (peer, stream) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            next = incoming.next() => match next {
                Some(next) => next,
                // The mesh has stopped.
                None => return,
            },
        };
        tracing::trace!(%peer, "gateway stream from a peer");
        connections.spawn(serve_stream(
            stream.compat(),
            me.clone(),
            local.clone(),
            stop.clone(),
        ));
    }
}

/// Serves one peer's stream: an HTTP/1.1 connection whose requests local instances answer.
pub(crate) async fn serve_stream<S>(
    stream: S,
    me: HeaderValue,
    local: Arc<dyn LocalInstances>,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let local = local.clone();
        let me = me.clone();
        async move { Ok::<_, Infallible>(answer(&*local, me, request).await) }
    });
    listener::serve_connection(TokioIo::new(stream), service, PEER_IDLE, stop).await;
}

/// Serves one request from a peer with the local instance it names.
async fn answer(
    local: &dyn LocalInstances,
    me: HeaderValue,
    request: Request<Incoming>,
) -> Response<Body> {
    let Some(id) = request
        .headers()
        .get(INSTANCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("a gateway stream request names its instance in {INSTANCE_HEADER}"),
        );
    };
    let mut request = request.map(|body| body.map_err(BoxError::from).boxed());
    request.headers_mut().insert(NODE_HEADER, me.clone());
    if !local.is_healthy(&id) {
        // Also what an instance that does not run here at all is: the sender skips it briefly
        // either way.
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            INSTANCE_UNHEALTHY,
            format!("instance '{id}' does not run here or has not passed its health check"),
        );
    }
    let Some(served) = local.serve(&id, request) else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            UNKNOWN_INSTANCE,
            format!("instance '{id}' does not run on this node"),
        );
    };
    match served.await {
        Ok(mut response) => {
            let headers = response.headers_mut();
            forward::strip_hop_by_hop(headers);
            headers.remove(REFUSED_HEADER);
            headers.insert(NODE_HEADER, me);
            if let Ok(id) = HeaderValue::from_str(&id) {
                headers.insert(INSTANCE_HEADER, id);
            }
            response
        }
        Err(e) => {
            tracing::debug!(instance = %id, error = %e, "a local instance failed a peer's request");
            refused(
                StatusCode::BAD_GATEWAY,
                INSTANCE_FAILED,
                format!("instance '{id}' failed before it answered"),
            )
        }
    }
}

fn refused(status: StatusCode, code: &'static str, message: String) -> Response<Body> {
    let mut response = json_error(status, code, message);
    response
        .headers_mut()
        .insert(REFUSED_HEADER, HeaderValue::from_static(code));
    response
}
