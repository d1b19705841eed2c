//! The blob protocols on the mesh: [`MeshBlobs`] fetches through a `MeshHandle`, [`StoreServer`]
//! answers peers from the local store (`Have` questions, and range streams).

use std::time::Duration;

use futures::{
    StreamExt,
    future::{BoxFuture, join_all},
    stream::FuturesUnordered,
};
use libp2p::PeerId;
use mycel_mesh::{BlobServer, MeshHandle, StreamProtocol};
use mycel_protocol::{
    BlobHash,
    api::MemberStatus,
    blob::{BlobRequest, BlobResponse, pack_ranges, unpack_ranges},
    names,
};

use crate::{BlobNetwork, BlobStore, Provider, RANGE_BYTES, RangeStream};

/// Most peers asked whether they hold a blob.
const MAX_ASKED: usize = 64;
/// How long a DHT provider lookup may take before the fetch goes on with what it has.
const DHT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer has to say whether it holds a blob.
const HAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long opening a range stream to a provider (dialling it if need be) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches blobs from the node's peers over the mesh.
#[derive(Clone, Debug)]
pub struct MeshBlobs {
    pub mesh: MeshHandle,
}

impl MeshBlobs {
    /// Alive members other than this node, at most [`MAX_ASKED`]: asking the peers a node
    /// already knows is faster than any lookup, and finds fetches in progress, which are not in
    /// the DHT.
    async fn alive_members(&self) -> Vec<PeerId> {
        let members = self.mesh.nodes().await.unwrap_or_default();
        members
            .into_iter()
            .filter(|n| !n.is_self && n.status == MemberStatus::Alive)
            .filter_map(|n| n.peer_id.parse().ok())
            .take(MAX_ASKED)
            .collect()
    }

    /// The providers the DHT knows for `hash`, other than this node (none after
    /// [`DHT_TIMEOUT`]).
    async fn dht_providers(&self, hash: BlobHash) -> Vec<PeerId> {
        let local = self.mesh.peer_id();
        tokio::time::timeout(
            DHT_TIMEOUT,
            self.mesh.find_providers(hash.to_string().into_bytes()),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| *p != local)
        .collect()
    }

    /// Asks `peer` whether it holds `hash`: its answer when it holds some or all of it.
    async fn ask(&self, peer: PeerId, hash: BlobHash) -> Option<BlobResponse> {
        // A connection that is being replaced (two nodes dialled each other at once) fails the
        // request without saying anything about the peer: ask once more.
        for _ in 0..2 {
            let answer = tokio::time::timeout(
                HAVE_TIMEOUT,
                self.mesh.blob_request(peer, BlobRequest::Have { hash }),
            )
            .await;
            match answer {
                Ok(Ok(answer @ (BlobResponse::Have { .. } | BlobResponse::Partial { .. }))) => {
                    return Some(answer);
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
    }

    /// True as soon as the DHT or a member says another node holds `hash` whole. The DHT lookup
    /// answers only when it ends, which can be slow in a mesh with unreachable peers; asking the
    /// members at the same time covers that, and blobs whose provider record has not spread yet.
    pub async fn held_elsewhere(&self, hash: BlobHash) -> bool {
        let mut checks: FuturesUnordered<BoxFuture<'_, bool>> = FuturesUnordered::new();
        checks.push(Box::pin(async move {
            !self.dht_providers(hash).await.is_empty()
        }));
        for peer in self.alive_members().await {
            checks.push(Box::pin(async move {
                matches!(self.ask(peer, hash).await, Some(BlobResponse::Have { .. }))
            }));
        }
        while let Some(held) = checks.next().await {
            if held {
                return true;
            }
        }
        false
    }
}

impl BlobNetwork for MeshBlobs {
    type Peer = PeerId;

    fn providers(&self, hash: BlobHash) -> BoxFuture<'_, Vec<Provider<PeerId>>> {
        Box::pin(async move {
            // Candidates: the providers the DHT knows, then alive members. Requests dial a
            // candidate when needed.
            let from_dht = self.dht_providers(hash).await;
            let mut peers: Vec<PeerId> = Vec::new();
            for peer in from_dht.into_iter().chain(self.alive_members().await) {
                if !peers.contains(&peer) && peers.len() < MAX_ASKED {
                    peers.push(peer);
                }
            }
            let asks = peers.into_iter().map(|peer| async move {
                let answer = self.ask(peer, hash).await?;
                provider_of(peer, answer)
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

    fn open_ranges(
        &self,
        peer: PeerId,
        _hash: BlobHash,
    ) -> BoxFuture<'_, Result<RangeStream, String>> {
        Box::pin(async move {
            let protocol = StreamProtocol::new(names::BLOB_RANGES_PROTOCOL);
            // A clone of the control per opener: each has its own slot (see `MeshHandle::streams`).
            let mut control = self.mesh.streams();
            match tokio::time::timeout(OPEN_TIMEOUT, control.open_stream(peer, protocol)).await {
                Ok(Ok(stream)) => Ok(Box::new(stream) as RangeStream),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no stream within {OPEN_TIMEOUT:?}")),
            }
        })
    }
}

/// The provider a peer's answer to `Have` describes; `None` for an answer that is not one.
///
/// The size is the peer's claim, checked against the store's limit only later: the flags kept are
/// at most as many as the bitmap it sent holds (those past its end read as "not held" anyway), so
/// a claimed size of 2^64 bytes costs nothing here. Public for the fuzz targets.
#[doc(hidden)]
pub fn provider_of<P>(peer: P, answer: BlobResponse) -> Option<Provider<P>> {
    match answer {
        BlobResponse::Have { size } => Some(Provider {
            peer,
            size,
            ranges: None,
        }),
        BlobResponse::Partial { size, ranges } => {
            let count = size.div_ceil(RANGE_BYTES).min(ranges.len() as u64 * 8);
            let flags = unpack_ranges(&ranges, count as usize);
            Some(Provider {
                peer,
                size,
                ranges: Some(flags),
            })
        }
        BlobResponse::Range { .. } | BlobResponse::Missing => None,
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

    fn serve_stream(&self, peer: PeerId, stream: libp2p::Stream) -> BoxFuture<'static, ()> {
        let store = self.store.clone();
        Box::pin(async move {
            if let Err(error) = crate::serve_ranges(store, stream).await {
                tracing::debug!(%peer, %error, "a blob range stream ended");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_size_costs_no_more_than_the_bitmap_sent() {
        // Found by the `blob_frame` fuzz target: a peer claiming a fetch of 2^64 bytes in
        // progress made the asker allocate one flag per MiB of the claim (16 TiB).
        let answer = BlobResponse::Partial {
            size: u64::MAX,
            ranges: vec![0b101],
        };
        let provider = provider_of(1, answer).unwrap();
        let flags = provider.ranges.unwrap();
        assert_eq!(flags.len(), 8);
        assert_eq!(&flags[..3], [true, false, true]);

        let small = BlobResponse::Partial {
            size: 3 * RANGE_BYTES - 1,
            ranges: vec![0xff, 0xff],
        };
        assert_eq!(provider_of(1, small).unwrap().ranges.unwrap().len(), 3);
        assert_eq!(provider_of(1, BlobResponse::Missing), None);
    }
}
