//! The blob protocol on the mesh: [`MeshBlobs`] fetches through a `MeshHandle`, [`StoreServer`]
//! answers peers from the local store.

use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use libp2p::PeerId;
use mycel_mesh::{BlobServer, MeshHandle};
use mycel_protocol::{
    BlobHash,
    api::MemberStatus,
    blob::{BlobRequest, BlobResponse, pack_ranges, unpack_ranges},
};

use crate::{BlobNetwork, BlobStore, Provider, RANGE_BYTES};

/// Most peers asked whether they hold a blob.
const MAX_ASKED: usize = 64;
/// How long a peer has to say whether it holds a blob.
const HAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Fetches blobs from the node's peers over the mesh.
#[derive(Clone, Debug)]
pub struct MeshBlobs {
    pub mesh: MeshHandle,
}

impl BlobNetwork for MeshBlobs {
    type Peer = PeerId;

    fn providers(&self, hash: BlobHash) -> BoxFuture<'_, Vec<Provider<PeerId>>> {
        Box::pin(async move {
            // Every alive member is a candidate (the request dials it when needed); the DHT's
            // provider records take over where asking everyone stops scaling.
            let peers: Vec<PeerId> = self
                .mesh
                .nodes()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|n| !n.is_self && n.status == MemberStatus::Alive)
                .filter_map(|n| n.peer_id.parse().ok())
                .take(MAX_ASKED)
                .collect();
            let asks = peers.into_iter().map(|peer| async move {
                // A connection that is being replaced (two nodes dialled each other at once)
                // fails the request without saying anything about the peer: ask once more.
                for _ in 0..2 {
                    let answer = tokio::time::timeout(
                        HAVE_TIMEOUT,
                        self.mesh.blob_request(peer, BlobRequest::Have { hash }),
                    )
                    .await;
                    match answer {
                        Ok(Ok(BlobResponse::Have { size })) => {
                            return Some(Provider { peer, size, ranges: None });
                        }
                        Ok(Ok(BlobResponse::Partial { size, ranges })) => {
                            let count = size.div_ceil(RANGE_BYTES) as usize;
                            let ranges = Some(unpack_ranges(&ranges, count));
                            return Some(Provider { peer, size, ranges });
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "asking a peer for a blob failed");
                        }
                        other => {
                            tracing::debug!(%peer, answer = ?other.map(|a| a.map(|_| ())), "peer does not provide the blob");
                            return None;
                        }
                    }
                }
                None
            });
            join_all(asks).await.into_iter().flatten().collect()
        })
    }

    fn range(
        &self,
        peer: PeerId,
        hash: BlobHash,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            match self
                .mesh
                .blob_request(peer, BlobRequest::Range { hash, offset, len })
                .await
            {
                Ok(BlobResponse::Range { encoded }) => Ok(encoded),
                Ok(BlobResponse::Missing) => Err("the peer no longer holds the blob".into()),
                Ok(BlobResponse::Have { .. } | BlobResponse::Partial { .. }) => {
                    Err("the peer answered the wrong question".into())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// Answers peers' blob requests from the local store.
#[derive(Clone, Debug)]
pub struct StoreServer {
    pub store: BlobStore,
}

impl BlobServer for StoreServer {
    fn serve(&self, peer: PeerId, request: BlobRequest) -> BoxFuture<'static, BlobResponse> {
        let store = self.store.clone();
        Box::pin(async move {
            let answer = match request {
                BlobRequest::Have { hash } => store.meta(&hash).map(|meta| match meta {
                    Some(meta) => Some(BlobResponse::Have { size: meta.size }),
                    None => store
                        .partial_ranges(&hash)
                        .map(|(size, have)| BlobResponse::Partial {
                            size,
                            ranges: pack_ranges(&have),
                        }),
                }),
                BlobRequest::Range { hash, offset, len } => store
                    .encode_range(&hash, offset, len)
                    .await
                    .map(|encoded| encoded.map(|encoded| BlobResponse::Range { encoded })),
            };
            match answer {
                Ok(Some(response)) => response,
                Ok(None) => BlobResponse::Missing,
                Err(error) => {
                    tracing::warn!(%peer, %error, "serving a blob request");
                    BlobResponse::Missing
                }
            }
        })
    }
}
