//! The discover protocol on raw mesh streams (`/mycel/discover/1`): one request frame in, one
//! answer frame out, each size-checked before it is decoded. The server answers from this
//! node's directory; the client asks one peer with a time limit.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use mycel_mesh::{MeshHandle, StreamProtocol, codec};
use mycel_protocol::{
    PeerId,
    discovery::{
        DiscoverRequest, DiscoverResponse, MAX_DISCOVER_FRAME_BYTES, MAX_LIST_LISTINGS,
        verify_listing,
    },
    names::DISCOVER_PROTOCOL,
};
use tokio::sync::Semaphore;

use crate::{
    DiscoveryError, Shared,
    directory::{self, Directory},
    now_ms,
};

/// How many peers' requests are answered at once; more wait in line.
const MAX_CONCURRENT_ANSWERS: usize = 64;
/// How long a peer gets to send its request, and the answer to go out.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

fn protocol() -> StreamProtocol {
    StreamProtocol::new(DISCOVER_PROTOCOL)
}

/// Answers peers' discover streams until the mesh stops; each on its own task.
pub(crate) async fn serve(mesh: MeshHandle, shared: Arc<Shared>) {
    let mut incoming = match mesh.streams().accept(protocol()) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::error!(error = %e, "accepting discover streams");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_ANSWERS));
    while let Some((peer, mut stream)) = incoming.next().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let shared = shared.clone();
        // Detached: one per stream, bounded by ANSWER_TIMEOUT and by the permits.
        tokio::spawn(async move {
            let _permit = permit;
            let answered = tokio::time::timeout(ANSWER_TIMEOUT, async {
                let request: DiscoverRequest =
                    codec::read_frame(&mut stream, MAX_DISCOVER_FRAME_BYTES).await?;
                let response = answer(&shared.directory, peer, request);
                codec::write_frame(&mut stream, &response).await
            })
            .await;
            match answered {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "a discover stream failed"),
                Err(_) => tracing::debug!(%peer, "a discover stream timed out"),
            }
        });
    }
}

/// What this node answers `peer`'s request from its `directory` (pure but for the directory's
/// lock). Public for the fuzz targets.
pub fn answer(
    directory: &Mutex<Directory>,
    peer: PeerId,
    request: DiscoverRequest,
) -> DiscoverResponse {
    if let Err(reason) = request.check_limits() {
        return DiscoverResponse::Refused { reason };
    }
    let now = now_ms();
    match request {
        DiscoverRequest::Publish { listings } => {
            // Signatures are checked before the directory is locked.
            let verified: Vec<_> = listings
                .iter()
                .filter_map(|envelope| match verify_listing(envelope, now) {
                    Ok(verified) => Some(verified),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "refused a published listing");
                        None
                    }
                })
                .collect();
            let mut directory = directory::lock(directory);
            let kept = verified
                .into_iter()
                .filter(|v| directory.insert(v.clone(), now))
                .count();
            DiscoverResponse::Stored { kept: kept as u32 }
        }
        DiscoverRequest::Withdraw { names } => {
            // The stream is authenticated: a node withdraws its own listings only.
            directory::lock(directory).withdraw(peer, &names);
            DiscoverResponse::Withdrawn
        }
        DiscoverRequest::List { shards, name } => DiscoverResponse::Listings {
            listings: directory::lock(directory).listings(
                &shards,
                name.as_deref(),
                now,
                MAX_LIST_LISTINGS,
            ),
        },
    }
}

/// Sends `request` to `peer` and waits (at most `timeout`) for its answer.
pub(crate) async fn ask(
    mesh: &MeshHandle,
    peer: PeerId,
    request: &DiscoverRequest,
    timeout: Duration,
) -> Result<DiscoverResponse, DiscoveryError> {
    let failed = |reason: String| DiscoveryError::Request { peer, reason };
    tokio::time::timeout(timeout, async {
        let mut control = mesh.streams();
        let mut stream = control.open_stream(peer, protocol()).await.map_err(|e| {
            DiscoveryError::Unreachable {
                peer,
                reason: e.to_string(),
            }
        })?;
        codec::write_frame(&mut stream, request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        codec::read_frame(&mut stream, MAX_DISCOVER_FRAME_BYTES)
            .await
            .map_err(|e| failed(e.to_string()))
    })
    .await
    .map_err(|_| failed(format!("no answer within {timeout:?}")))?
}
