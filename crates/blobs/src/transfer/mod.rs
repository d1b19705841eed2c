//! Verified transfer: serving ranges of a blob with their BLAKE3 proofs, and fetching a blob from
//! several peers at once, each range checked against the root hash before a byte is written.
//!
//! A range is `RANGE_BYTES` of the blob (the last one shorter), encoded bao-style: the tree nodes a
//! receiver needs, interleaved with 16 KiB chunk groups. Ranges travel on one raw stream per
//! provider (see [`stream`]), several asked ahead. A provider that sends anything that does not
//! verify is dropped for the rest of the transfer and its ranges are asked of another.

use std::{
    collections::VecDeque,
    fmt, fs,
    hash::Hash,
    io::Cursor,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bao_tree::{
    BaoTree, ByteRanges,
    io::{
        outboard::PreOrderOutboard,
        round_up_to_chunks,
        sync::{decode_ranges, encode_ranges_validated},
    },
};
use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use mycel_protocol::BlobHash;

use crate::{BLOCK_SIZE, BlobMeta, BlobStore, StoreError};

mod partial;
mod stream;
#[cfg(test)]
mod tests;

pub use partial::PartialBlob;
pub(crate) use partial::SharedPartial;
pub use stream::{RangeIo, RangeStream, serve_ranges};

/// The span of one range request: 64 chunk groups.
pub const RANGE_BYTES: u64 = mycel_protocol::blob::MAX_RANGE_BYTES;
/// How often a fetch asks again who holds what: fetchers that started together learn each
/// other's new ranges this fast.
const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// A fetch that makes no progress for this long gives up.
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Ranges asked of one provider at once, on its stream: enough to keep a loopback or LAN link busy.
const PER_PROVIDER: usize = 4;
/// How many sessions with one provider may fail on the link in a row, with no range served
/// between them, before it is dropped for the transfer (one that sends what does not verify is
/// dropped at once).
const MAX_LINK_FAILURES: usize = 3;
/// How many range outcomes may wait for the fetch loop.
const RESULT_QUEUE: usize = 256;
/// Verified ranges between two background flushes of the fetched bytes to disk: the flush that
/// makes the blob durable at the end then has at most these left to write.
const SYNC_EVERY: usize = 16;

/// How the fetcher reaches peers; the node implements it over the mesh.
pub trait BlobNetwork: Send + Sync {
    type Peer: Clone + Eq + Hash + fmt::Display + Send + Sync;
    /// Peers that hold `hash`, whole or in part.
    fn providers(&self, hash: BlobHash) -> BoxFuture<'_, Vec<Provider<Self::Peer>>>;
    /// Tells the mesh this node now holds `hash` whole (a provider record in the DHT).
    fn announce(&self, hash: BlobHash) -> BoxFuture<'_, ()>;
    /// A new byte stream to `peer` for the ranges of `hash` (the fetch speaks the range-stream
    /// protocol on it: see [`serve_ranges`] for the other end).
    fn open_ranges(
        &self,
        peer: Self::Peer,
        hash: BlobHash,
    ) -> BoxFuture<'_, Result<RangeStream, String>>;
}

/// A peer that holds a blob, and what of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider<P> {
    pub peer: P,
    /// The size it claims (a wrong one cannot produce ranges that verify).
    pub size: u64,
    /// `None`: it holds the blob whole; else which `RANGE_BYTES` ranges it has verified so far.
    pub ranges: Option<Vec<bool>>,
}

impl<P> Provider<P> {
    fn has(&self, range: usize) -> bool {
        self.ranges
            .as_ref()
            .is_none_or(|r| r.get(range).copied().unwrap_or(false))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no peer holds {0}")]
    NotFound(BlobHash),
    #[error("every provider of {hash} failed; the last said: {last}")]
    ProvidersFailed { hash: BlobHash, last: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn chunk_ranges(offset: u64, len: u64) -> bao_tree::ChunkRanges {
    round_up_to_chunks(&ByteRanges::from(offset..offset + len))
}

fn outboard_of(hash: &BlobHash, size: u64, data: Vec<u8>) -> PreOrderOutboard<Vec<u8>> {
    PreOrderOutboard {
        root: blake3::Hash::from_bytes(hash.0),
        tree: BaoTree::new(size, BLOCK_SIZE),
        data,
    }
}

/// One provider during a fetch.
struct Source<P> {
    provider: Provider<P>,
    busy: usize,
    /// Sessions with this provider that failed on the link, not on what it sent.
    link_failures: usize,
    /// Hands ranges to the provider's stream session, once it has one.
    session: Option<tokio::sync::mpsc::Sender<usize>>,
}

/// Fetches `hash` from every peer that has it at once, whole or in part, verifying each range;
/// returns when the blob is whole in `store`. Ranges are asked of peers that are fetching the blob
/// too whenever they have them, so fetchers that start together feed each other and the first
/// holder serves only what nobody else has yet.
pub async fn fetch<N: BlobNetwork>(
    store: &BlobStore,
    network: &N,
    hash: BlobHash,
) -> Result<BlobMeta, FetchError> {
    if let Some(meta) = store.meta(&hash)? {
        return Ok(meta);
    }
    let lock = store.fetch_lock(&hash);
    let _fetching = lock.lock().await;
    // Another request may have fetched it while this one waited.
    if let Some(meta) = store.meta(&hash)? {
        return Ok(meta);
    }
    let found = network.providers(hash).await;
    // Trust the size of a whole holder first; a wrong size fails verification anyway.
    let Some(size) = found
        .iter()
        .find(|p| p.ranges.is_none())
        .or(found.first())
        .map(|p| p.size)
    else {
        return Err(FetchError::NotFound(hash));
    };
    if size > store.max_blob_bytes() {
        return Err(StoreError::TooLarge {
            limit: store.max_blob_bytes(),
        }
        .into());
    }
    tracing::info!(%hash, size, providers = found.len(), "fetching a blob from peers");
    let partial = Arc::new(store.begin_fetch(hash, size)?);
    // Each fetcher starts at its own place, so fetchers that start together hold different
    // ranges early and can trade them.
    let mut todo: VecDeque<usize> = partial.missing().into();
    todo.rotate_left(rand::random_range(0..todo.len().max(1)));

    let mut sources: Vec<Source<N::Peer>> = Vec::new();
    let mut failed: Vec<N::Peer> = Vec::new();
    merge_sources(&mut sources, &failed, found, size);
    // One stream session per provider, all driven by this task; each reports every range it was
    // handed, exactly once, on `results`.
    let mut sessions = FuturesUnordered::new();
    let (results_tx, mut results) = tokio::sync::mpsc::channel(RESULT_QUEUE);
    let mut outstanding = 0usize;
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asking: Option<BoxFuture<'_, Vec<Provider<N::Peer>>>> = None;
    let mut last_progress = tokio::time::Instant::now();
    let mut last_error = String::from("no provider answered");
    let mut served_by: Vec<N::Peer> = Vec::new();
    let mut unsynced = 0usize;
    let mut syncing: Option<tokio::task::JoinHandle<()>> = None;

    while !todo.is_empty() || outstanding > 0 {
        // Hand out every range some provider with room holds; peers still fetching first.
        let mut waiting = VecDeque::new();
        while let Some(range) = todo.pop_front() {
            let pick = sources
                .iter_mut()
                .filter(|s| s.busy < PER_PROVIDER && s.provider.has(range))
                .min_by_key(|s| (s.provider.ranges.is_none(), s.busy));
            let Some(source) = pick else {
                waiting.push_back(range);
                continue;
            };
            let session = source.session.get_or_insert_with(|| {
                let (tx, rx) = tokio::sync::mpsc::channel(PER_PROVIDER);
                sessions.push(stream::session(
                    network,
                    source.provider.peer.clone(),
                    hash,
                    partial.clone(),
                    rx,
                    results_tx.clone(),
                ));
                tx
            });
            // A session that failed takes no more ranges; its failure is on its way.
            match session.try_send(range) {
                Ok(()) => {
                    source.busy += 1;
                    outstanding += 1;
                }
                Err(_) => waiting.push_back(range),
            }
        }
        todo = waiting;
        if sources.is_empty() && outstanding == 0 {
            return Err(FetchError::ProvidersFailed {
                hash,
                last: last_error,
            });
        }
        if last_progress.elapsed() > STALL_TIMEOUT {
            return Err(FetchError::ProvidersFailed {
                hash,
                last: format!("no range arrived for {STALL_TIMEOUT:?}; last error: {last_error}"),
            });
        }
        tokio::select! {
            Some((peer, range, result)) = results.recv() => {
                outstanding -= 1;
                if let Some(source) = sources.iter_mut().find(|s| s.provider.peer == peer) {
                    source.busy -= 1;
                    // Only failures in a row give a provider up: one that serves again is fine.
                    if result.is_ok() {
                        source.link_failures = 0;
                    }
                }
                match result {
                    Ok(()) => {
                        last_progress = tokio::time::Instant::now();
                        if !served_by.contains(&peer) {
                            served_by.push(peer);
                        }
                        unsynced += 1;
                        if unsynced >= SYNC_EVERY && syncing.as_ref().is_none_or(|s| s.is_finished()) {
                            unsynced = 0;
                            let partial = partial.clone();
                            syncing = Some(tokio::task::spawn_blocking(move || {
                                if let Err(error) = partial.sync_written() {
                                    tracing::debug!(%error, "flushing a fetch in progress");
                                }
                            }));
                        }
                    }
                    Err(error) => {
                        last_error = format!("{peer}: {error}");
                        let source = sources.iter_mut().find(|s| s.provider.peer == peer);
                        // Every range the failed session held reports the failure: count it once,
                        // when the session is still the provider's (its channel closed).
                        let ended = source
                            .as_ref()
                            .and_then(|s| s.session.as_ref())
                            .is_some_and(|session| session.is_closed());
                        let give_up = match (&error, source) {
                            (stream::SessionError::Link(_), Some(source)) if ended => {
                                source.session = None;
                                source.link_failures += 1;
                                source.link_failures >= MAX_LINK_FAILURES
                            }
                            (stream::SessionError::Link(_), _) => false,
                            (stream::SessionError::Provider(_), _) => true,
                        };
                        if give_up && !failed.contains(&peer) {
                            tracing::warn!(%peer, %hash, range, %error, "dropping a provider for this transfer");
                            sources.retain(|s| s.provider.peer != peer);
                            failed.push(peer);
                        } else if ended {
                            tracing::debug!(%peer, %hash, %error, "a range stream failed; opening another");
                        }
                        todo.push_back(range);
                    }
                }
            }
            Some(()) = sessions.next(), if !sessions.is_empty() => {}
            // Asking who holds what takes a DHT lookup and a round of questions: it runs beside
            // the transfers, never in their way, and only while ranges wait for a holder.
            _ = refresh.tick(), if asking.is_none() && !todo.is_empty() => {
                asking = Some(network.providers(hash));
            }
            found = async { asking.as_mut().expect("guarded").await }, if asking.is_some() => {
                asking = None;
                merge_sources(&mut sources, &failed, found, size);
            }
        }
    }
    // Every range is in: the sessions close their streams.
    drop(sources);
    drop(results);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        while sessions.next().await.is_some() {}
    })
    .await;
    drop(sessions);
    if let Some(syncing) = syncing {
        let _ = syncing.await;
    }
    let partial = Arc::into_inner(partial)
        .ok_or_else(|| StoreError::from(std::io::Error::other("a range is still being written")))?;
    let meta = tokio::task::spawn_blocking(move || partial.finish())
        .await
        .map_err(|e| StoreError::from(std::io::Error::other(e.to_string())))??;
    store.metrics().fetch_peers.observe(served_by.len() as f64);
    network.announce(hash).await;
    tracing::info!(%hash, peers = served_by.len(), "blob fetched");
    Ok(meta)
}

/// Adds new providers and updates what known ones hold; failed ones stay out.
fn merge_sources<P: Clone + Eq>(
    sources: &mut Vec<Source<P>>,
    failed: &[P],
    found: Vec<Provider<P>>,
    size: u64,
) {
    for provider in found {
        if provider.size != size || failed.contains(&provider.peer) {
            continue;
        }
        match sources
            .iter_mut()
            .find(|s| s.provider.peer == provider.peer)
        {
            Some(source) => source.provider = provider,
            None => sources.push(Source {
                provider,
                busy: 0,
                link_failures: 0,
                session: None,
            }),
        }
    }
}
