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
/// How long a DHT provider lookup may take before the fetch goes on with what it has.
const DHT_TIMEOUT: Duration = Duration::from_secs(2);
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
            // Candidates: the providers the DHT knows, then alive members (asking the peers a
            // node already knows is faster than any lookup, and finds fetches in progress, which
            // are not in the DHT). Requests dial a candidate when needed.
            let local = self.mesh.peer_id();
            let from_dht = tokio::time::timeout(
                DHT_TIMEOUT,
                self.mesh.find_providers(hash.to_string().into_bytes()),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
            let members = self.mesh.nodes().await.unwrap_or_default();
            let mut peers: Vec<PeerId> = Vec::new();
            let alive = members
                .into_iter()
                .filter(|n| !n.is_self && n.status == MemberStatus::Alive)
                .filter_map(|n| n.peer_id.parse().ok());
            for peer in from_dht.into_iter().chain(alive) {
                if peer != local && !peers.contains(&peer) && peers.len() < MAX_ASKED {
                    peers.push(peer);
                }
            }
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

    fn announce(&self, hash: BlobHash) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self
                .mesh
                .start_providing(hash.to_string().into_bytes())
                .await;
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
