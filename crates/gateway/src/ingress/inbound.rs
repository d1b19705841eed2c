//! The mesh side of the ingress: a peer's ingress asks for a connection to an instance that runs
//! here. Only a port the instance's app publishes is reached, and only for an instance of that
//! app that passes its health check: a peer cannot open any other port of any instance.

use std::{sync::Arc, time::Duration};

use futures::{AsyncWriteExt, StreamExt};
use mycel_mesh::{
    codec::{read_prefixed, write_prefixed},
    libp2p_stream::IncomingStreams,
};
use mycel_protocol::ingress::{IngressAnswer, IngressOpen, MAX_FRAME_BYTES};
use tokio::net::TcpStream;
use tokio_util::{compat::FuturesAsyncReadCompatExt, sync::CancellationToken, task::TaskTracker};

use super::{
    Shared,
    connection::{COPY_BUFFER, connect_here},
};

/// How long a peer may take to say which connection it wants.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts peers' ingress streams until `shutdown`; each is served on its own task.
pub(super) async fn accept(
    mut incoming: IncomingStreams,
    shared: Arc<Shared>,
    connections: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let (peer, stream) = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = incoming.next() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        connections.spawn(async move {
            serve(&shared, stream, &shutdown).await;
            tracing::trace!(%peer, "an ingress stream from a peer ended");
        });
    }
}

async fn serve<S>(shared: &Shared, mut stream: S, shutdown: &CancellationToken)
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin + Send,
{
    let open = tokio::time::timeout(
        OPEN_TIMEOUT,
        read_prefixed::<_, IngressOpen>(&mut stream, MAX_FRAME_BYTES),
    )
    .await;
    let Ok(Ok(Some(open))) = open else {
        tracing::debug!("a peer's ingress stream did not open properly");
        return;
    };
    let mut tcp = match connect(shared, &open).await {
        Ok(tcp) => tcp,
        Err(why) => {
            let _ = write_prefixed(&mut stream, &IngressAnswer::Refused(why)).await;
            let _ = stream.close().await;
            return;
        }
    };
    if write_prefixed(&mut stream, &IngressAnswer::Open)
        .await
        .is_err()
    {
        return;
    }
    let mut stream = stream.compat();
    let copied =
        tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut tcp, COPY_BUFFER, COPY_BUFFER);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        result = copied => if let Err(e) = result {
            tracing::debug!(app = %open.app, error = %e, "a peer's ingress connection ended with an error");
        },
    }
}

/// The connection `open` asks for, if this node's replica says it is a published port of an
/// instance of that app.
async fn connect(shared: &Shared, open: &IngressOpen) -> Result<TcpStream, String> {
    let allowed = {
        let replica = shared.config.placement.replica();
        let state = &replica.state;
        let publishes = state.apps.get(&open.app).is_some_and(|record| {
            record
                .manifest
                .ports
                .iter()
                .any(|p| p.container == open.port)
        });
        let its_instance = state
            .instances
            .get(&open.instance)
            .is_some_and(|i| i.app == open.app);
        publishes && its_instance
    };
    if !allowed {
        return Err(format!(
            "port {} of instance {} is not a published port of app '{}' here",
            open.port, open.instance, open.app
        ));
    }
    if !shared.config.local.is_healthy(&open.instance) {
        return Err(format!(
            "instance {} does not run here, or has not passed its health check",
            open.instance
        ));
    }
    connect_here(shared, &open.instance, open.port).await
}
