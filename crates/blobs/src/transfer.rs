//! Verified transfer: serving ranges of a blob with their BLAKE3 proofs, and fetching a blob from
//! several peers at once, each range checked against the root hash before a byte is written.
//!
//! A range is `RANGE_BYTES` of the blob (the last one shorter), encoded bao-style: the tree nodes a
//! receiver needs, interleaved with 16 KiB chunk groups. A provider that sends anything that does
//! not verify is dropped for the rest of the transfer and its range is asked of another.

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

/// The span of one range request: 64 chunk groups.
pub const RANGE_BYTES: u64 = mycel_protocol::blob::MAX_RANGE_BYTES;
/// How often a fetch asks again who holds what: fetchers that started together learn each
/// other's new ranges this fast.
const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// A fetch that makes no progress for this long gives up.
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Requests in flight to one provider at once: enough to keep a loopback or LAN link busy.
const PER_PROVIDER: usize = 4;

/// How the fetcher reaches peers; the node implements it over the mesh.
pub trait BlobNetwork: Send + Sync {
    type Peer: Clone + Eq + Hash + fmt::Display + Send + Sync;
    /// Peers that hold `hash`, whole or in part.
    fn providers(&self, hash: BlobHash) -> BoxFuture<'_, Vec<Provider<Self::Peer>>>;
    /// Tells the mesh this node now holds `hash` whole (a provider record in the DHT).
    fn announce(&self, hash: BlobHash) -> BoxFuture<'_, ()>;
    /// The encoded range `[offset, offset + len)` of `hash` from `peer`.
    fn range(
        &self,
        peer: Self::Peer,
        hash: BlobHash,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'_, Result<Vec<u8>, String>>;
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

impl BlobStore {
    /// The verified encoding of `[offset, offset + len)` of a blob held whole, or of a verified
    /// range of one still being fetched; `None` when this node cannot prove that range.
    pub async fn encode_range(
        &self,
        hash: &BlobHash,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if len == 0 || len > RANGE_BYTES {
            return Ok(None);
        }
        let store = self.clone();
        let hash = *hash;
        let encoded =
            tokio::task::spawn_blocking(move || store.encode_range_blocking(&hash, offset, len))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        if let Some(encoded) = &encoded {
            self.metrics()
                .bytes_sent
                .inc_by(len.min(encoded.len() as u64));
        }
        Ok(encoded)
    }

    fn encode_range_blocking(
        &self,
        hash: &BlobHash,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut encoded = Vec::with_capacity(len as usize + len as usize / 128 + 1024);
        let encode_error = |e: bao_tree::io::EncodeError| std::io::Error::other(e.to_string());
        if let Some(meta) = self.meta(hash)? {
            if offset >= meta.size {
                return Ok(None);
            }
            let len = len.min(meta.size - offset);
            let data = fs::File::open(self.data_path(hash))?;
            // Read the tree nodes in place: a request needs a few of them, not the whole file.
            let outboard = PreOrderOutboard {
                root: blake3::Hash::from_bytes(hash.0),
                tree: BaoTree::new(meta.size, BLOCK_SIZE),
                data: fs::File::open(self.outboard_path(hash))?,
            };
            encode_ranges_validated(data, &outboard, &chunk_ranges(offset, len), &mut encoded)
                .map_err(encode_error)?;
            return Ok(Some(encoded));
        }
        let Some(partial) = self.partial(hash) else {
            return Ok(None);
        };
        let state = partial
            .lock()
            .map_err(|_| std::io::Error::other("a writer panicked"))?;
        let index = offset / RANGE_BYTES;
        if !offset.is_multiple_of(RANGE_BYTES)
            || !state.have.get(index as usize).copied().unwrap_or(false)
        {
            return Ok(None);
        }
        let len = len.min(state.size - offset);
        encode_ranges_validated(
            state.file.try_clone()?,
            &state.outboard,
            &chunk_ranges(offset, len),
            &mut encoded,
        )
        .map_err(encode_error)?;
        Ok(Some(encoded))
    }

    /// The size of a blob being fetched here, and a receiver that changes whenever another
    /// range is verified.
    pub fn watch_partial(
        &self,
        hash: &BlobHash,
    ) -> Option<(u64, tokio::sync::watch::Receiver<usize>)> {
        let partial = self.partial(hash)?;
        let state = partial.lock().ok()?;
        Some((state.size, state.progress.subscribe()))
    }

    /// The bytes of range `index` (of `RANGE_BYTES`), from the whole blob or from a fetch in
    /// progress that verified it; `None` when neither has it (yet).
    pub async fn read_range(
        &self,
        hash: &BlobHash,
        index: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.clone();
        let hash = *hash;
        tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, StoreError> {
            use std::os::unix::fs::FileExt;
            let offset = index * RANGE_BYTES;
            let read = |file: &fs::File, size: u64| -> Result<Option<Vec<u8>>, StoreError> {
                if offset >= size {
                    return Ok(None);
                }
                let mut bytes = vec![0u8; RANGE_BYTES.min(size - offset) as usize];
                file.read_exact_at(&mut bytes, offset)?;
                Ok(Some(bytes))
            };
            if let Some(meta) = store.meta(&hash)? {
                return read(&fs::File::open(store.data_path(&hash))?, meta.size);
            }
            let Some(partial) = store.partial(&hash) else {
                return Ok(None);
            };
            let state = partial
                .lock()
                .map_err(|_| std::io::Error::other("a writer panicked"))?;
            if !state.have.get(index as usize).copied().unwrap_or(false) {
                return Ok(None);
            }
            read(&state.file, state.size)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// Which ranges of a blob being fetched this node already verified.
    pub fn partial_ranges(&self, hash: &BlobHash) -> Option<(u64, Vec<bool>)> {
        let partial = self.partial(hash)?;
        let state = partial.lock().ok()?;
        Some((state.size, state.have.clone()))
    }

    /// Starts (or resumes) receiving `hash` of `size` bytes under `partial/`; its verified ranges
    /// are served to peers while the rest arrives. What an earlier, interrupted fetch verified is
    /// kept: the ranges that still check out against the tree are not fetched again.
    pub fn begin_fetch(&self, hash: BlobHash, size: u64) -> Result<PartialBlob, StoreError> {
        let path = self.partial_path(&hash);
        let tree_path = path.with_extension("obao");
        // Read as well as written: verified ranges are served from it while the rest arrives.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let resumed = file.metadata()?.len() == size;
        let have_path = path.with_extension("have");
        let tree = if resumed {
            fs::read(&tree_path).unwrap_or_default()
        } else {
            file.set_len(0)?;
            file.set_len(size)?;
            Vec::new()
        };
        let outboard = outboard_of(&hash, size, tree);
        let have = if resumed {
            let claimed = fs::read(&have_path).unwrap_or_default();
            let count = size.div_ceil(RANGE_BYTES) as usize;
            let claimed = mycel_protocol::blob::unpack_ranges(&claimed, count);
            verified_ranges(&outboard, &file, size, &claimed)
        } else {
            vec![false; size.div_ceil(RANGE_BYTES) as usize]
        };
        let kept = have.iter().filter(|h| **h).count();
        if kept > 0 {
            tracing::info!(%hash, ranges = kept, "resuming a fetch from the ranges it verified");
        }
        let state = Arc::new(Mutex::new(PartialState {
            size,
            file,
            outboard,
            have,
            unsaved: 0,
            progress: tokio::sync::watch::channel(kept).0,
        }));
        self.register_partial(hash, state.clone());
        Ok(PartialBlob {
            store: self.clone(),
            hash,
            size,
            path,
            tree_path,
            have_path,
            state,
        })
    }
}

/// Which of the ranges an interrupted fetch recorded as verified still check out against the
/// tree it saved (hashing each claimed range once: a crash may have saved a claim whose bytes
/// never reached the disk).
fn verified_ranges(
    outboard: &PreOrderOutboard<Vec<u8>>,
    data: &fs::File,
    size: u64,
    claimed: &[bool],
) -> Vec<bool> {
    (0..size.div_ceil(RANGE_BYTES) as usize)
        .map(|i| {
            if !claimed.get(i).copied().unwrap_or(false) {
                return false;
            }
            let offset = i as u64 * RANGE_BYTES;
            let wanted = chunk_ranges(offset, RANGE_BYTES.min(size - offset));
            let valid: Result<Vec<_>, _> =
                bao_tree::io::sync::valid_ranges(outboard, data, &wanted)
                    .into_iter()
                    .collect();
            valid.is_ok_and(|valid| {
                let mut covered = bao_tree::ChunkRanges::empty();
                for range in valid {
                    covered |= bao_tree::ChunkRanges::from(range);
                }
                covered.is_superset(&wanted)
            })
        })
        .collect()
}

/// What a fetch has received so far; shared with the code that serves it to peers.
#[derive(Debug)]
pub(crate) struct PartialState {
    size: u64,
    file: fs::File,
    outboard: PreOrderOutboard<Vec<u8>>,
    /// One flag per `RANGE_BYTES` range: verified and written.
    have: Vec<bool>,
    /// Ranges verified since the tree was last saved.
    unsaved: usize,
    /// Counts verified ranges, for readers waiting to stream them.
    progress: tokio::sync::watch::Sender<usize>,
}

/// How many verified ranges may go unsaved; a crash costs at most these to fetch again.
const SAVE_EVERY: usize = 8;

pub(crate) type SharedPartial = Arc<Mutex<PartialState>>;

/// A blob being received: verified ranges are written in place; nothing is visible under the
/// hash until [`PartialBlob::finish`].
#[derive(Debug)]
pub struct PartialBlob {
    store: BlobStore,
    hash: BlobHash,
    size: u64,
    path: PathBuf,
    /// Where the tree nodes received so far, and which ranges were verified, are saved for
    /// resuming.
    tree_path: PathBuf,
    have_path: PathBuf,
    state: SharedPartial,
}

impl PartialBlob {
    /// The ranges a complete fetch asks for, as `(offset, len)` (none for an empty blob).
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        (0..self.size.div_ceil(RANGE_BYTES))
            .map(|i| {
                let offset = i * RANGE_BYTES;
                (offset, RANGE_BYTES.min(self.size - offset))
            })
            .collect()
    }

    /// The indices (into [`PartialBlob::ranges`]) of the ranges not verified yet.
    pub fn missing(&self) -> Vec<usize> {
        let Ok(state) = self.state.lock() else {
            return (0..self.ranges().len()).collect();
        };
        (0..state.have.len()).filter(|i| !state.have[*i]).collect()
    }

    /// Verifies an encoded range against the root hash and writes it. On error nothing of the
    /// bad chunk group is written.
    pub fn add(&self, offset: u64, len: u64, encoded: &[u8]) -> Result<(), String> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| "a writer panicked".to_string())?;
        let state = &mut *state;
        decode_ranges(
            Cursor::new(encoded),
            &chunk_ranges(offset, len.max(1)),
            &mut state.file,
            &mut state.outboard,
        )
        .map_err(|e| e.to_string())?;
        if let Some(flag) = state.have.get_mut((offset / RANGE_BYTES) as usize) {
            *flag = true;
        }
        state.unsaved += 1;
        state.progress.send_modify(|n| *n += 1);
        if state.unsaved >= SAVE_EVERY && self.save(state) {
            state.unsaved = 0;
        }
        self.store.metrics().bytes_received.inc_by(len);
        Ok(())
    }

    /// Saves what resuming needs. Best effort: a torn save only means fewer ranges check out.
    fn save(&self, state: &PartialState) -> bool {
        fs::write(&self.tree_path, &state.outboard.data).is_ok()
            && fs::write(
                &self.have_path,
                mycel_protocol::blob::pack_ranges(&state.have),
            )
            .is_ok()
    }

    /// Moves the received file into the store. Committing rebuilds the whole tree from the
    /// bytes and refuses a root other than the hash, so this re-checks every byte once more.
    pub fn finish(self) -> Result<BlobMeta, StoreError> {
        self.state
            .lock()
            .map_err(|_| std::io::Error::other("a writer panicked"))?
            .file
            .sync_all()?;
        let meta = self.store.commit(&self.path, self.hash, self.size)?;
        let _ = fs::remove_file(&self.tree_path);
        let _ = fs::remove_file(&self.have_path);
        Ok(meta)
    }
}

impl Drop for PartialBlob {
    /// An unfinished fetch keeps what it verified for the next attempt; one that verified nothing
    /// leaves nothing.
    fn drop(&mut self) {
        self.store.unregister_partial(&self.hash, &self.state);
        if !self.path.exists() {
            return; // finished: the file is the blob now
        }
        let kept = self
            .state
            .lock()
            .ok()
            .filter(|s| s.have.iter().any(|h| *h))
            .is_some_and(|s| self.save(&s));
        if !kept {
            for path in [&self.path, &self.tree_path, &self.have_path] {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// One provider during a fetch.
struct Source<P> {
    provider: Provider<P>,
    busy: usize,
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
    let ranges = partial.ranges();
    // Each fetcher starts at its own place, so fetchers that start together hold different
    // ranges early and can trade them.
    let mut todo: VecDeque<usize> = partial.missing().into();
    todo.rotate_left(rand::random_range(0..todo.len().max(1)));

    let mut sources: Vec<Source<N::Peer>> = Vec::new();
    let mut failed: Vec<N::Peer> = Vec::new();
    merge_sources(&mut sources, &failed, found, size);
    let mut in_flight = FuturesUnordered::new();
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_progress = tokio::time::Instant::now();
    let mut last_error = String::from("no provider answered");
    let mut served_by: Vec<N::Peer> = Vec::new();

    while !todo.is_empty() || !in_flight.is_empty() {
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
            source.busy += 1;
            let peer = source.provider.peer.clone();
            let (offset, len) = ranges[range];
            let request = network.range(peer.clone(), hash, offset, len);
            let partial = partial.clone();
            in_flight.push(async move {
                let result = match request.await {
                    Ok(encoded) => {
                        tokio::task::spawn_blocking(move || partial.add(offset, len, &encoded))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r)
                    }
                    Err(e) => Err(e),
                };
                (peer, range, result)
            });
        }
        todo = waiting;
        if sources.is_empty() && in_flight.is_empty() {
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
            Some((peer, range, result)) = in_flight.next() => {
                if let Some(source) = sources.iter_mut().find(|s| s.provider.peer == peer) {
                    source.busy -= 1;
                }
                match result {
                    Ok(()) => {
                        last_progress = tokio::time::Instant::now();
                        if !served_by.contains(&peer) {
                            served_by.push(peer);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%peer, %hash, range, %error, "dropping a provider for this transfer");
                        last_error = format!("{peer}: {error}");
                        sources.retain(|s| s.provider.peer != peer);
                        failed.push(peer);
                        todo.push_back(range);
                    }
                }
            }
            _ = refresh.tick() => {
                let found = network.providers(hash).await;
                merge_sources(&mut sources, &failed, found, size);
            }
        }
    }
    let partial = Arc::into_inner(partial).expect("every request finished");
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
            None => sources.push(Source { provider, busy: 0 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlobMetrics;
    use std::collections::HashMap;

    /// Peers as stores in this process, one of which may lie.
    struct Peers {
        stores: HashMap<String, BlobStore>,
        liar: Option<String>,
    }

    impl BlobNetwork for Peers {
        type Peer = String;
        fn providers(&self, hash: BlobHash) -> BoxFuture<'_, Vec<Provider<String>>> {
            Box::pin(async move {
                let mut found: Vec<Provider<String>> = self
                    .stores
                    .iter()
                    .filter_map(|(name, s)| {
                        Some(Provider {
                            peer: name.clone(),
                            size: s.meta(&hash).ok()??.size,
                            ranges: None,
                        })
                    })
                    .collect();
                found.sort_by(|a, b| a.peer.cmp(&b.peer));
                found
            })
        }
        fn announce(&self, _: BlobHash) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn range(
            &self,
            peer: String,
            hash: BlobHash,
            offset: u64,
            len: u64,
        ) -> BoxFuture<'_, Result<Vec<u8>, String>> {
            Box::pin(async move {
                let mut encoded = self.stores[&peer]
                    .encode_range(&hash, offset, len)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("missing")?;
                if self.liar.as_ref() == Some(&peer) {
                    let last = encoded.len() - 1;
                    encoded[last] ^= 0xff;
                }
                Ok(encoded)
            })
        }
    }

    async fn store_with(dir: &std::path::Path, bytes: &[u8]) -> (BlobStore, BlobHash) {
        let store = BlobStore::open(dir, 1 << 30, BlobMetrics::default()).unwrap();
        let mut upload = store.begin_upload().await.unwrap();
        upload.write(bytes).await.unwrap();
        let meta = upload.finish(None).await.unwrap();
        (store, meta.hash)
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    async fn fetch_from(
        bytes: &[u8],
        providers: usize,
        liar: bool,
    ) -> (
        Result<BlobMeta, FetchError>,
        BlobStore,
        Vec<tempfile::TempDir>,
    ) {
        let mut dirs = Vec::new();
        let mut stores = HashMap::new();
        let mut hash = None;
        for i in 0..providers {
            let dir = tempfile::tempdir().unwrap();
            let (store, h) = store_with(dir.path(), bytes).await;
            stores.insert(format!("p{i}"), store);
            hash = Some(h);
            dirs.push(dir);
        }
        let peers = Peers {
            stores,
            liar: liar.then(|| "p0".to_string()),
        };
        let dir = tempfile::tempdir().unwrap();
        let fetcher = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        dirs.push(dir);
        let result = fetch(&fetcher, &peers, hash.unwrap()).await;
        (result, fetcher, dirs)
    }

    async fn read(store: &BlobStore, hash: &BlobHash) -> Vec<u8> {
        let (_, mut file) = store.open_blob(hash).await.unwrap().unwrap();
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes)
            .await
            .unwrap();
        bytes
    }

    #[tokio::test]
    async fn a_blob_arrives_whole_from_several_providers() {
        for len in [
            0,
            1,
            16 * 1024,
            RANGE_BYTES as usize,
            3 * RANGE_BYTES as usize + 12_345,
        ] {
            let bytes = sample(len);
            let (result, fetcher, _dirs) = fetch_from(&bytes, 3, false).await;
            let meta = result.unwrap_or_else(|e| panic!("{len} bytes: {e}"));
            assert_eq!(read(&fetcher, &meta.hash).await, bytes, "{len} bytes");
        }
    }

    #[tokio::test]
    async fn a_provider_that_corrupts_is_dropped_and_the_fetch_succeeds_from_others() {
        let bytes = sample(4 * RANGE_BYTES as usize);
        let (result, fetcher, _dirs) = fetch_from(&bytes, 3, true).await;
        let meta = result.unwrap();
        assert_eq!(read(&fetcher, &meta.hash).await, bytes);
    }

    #[tokio::test]
    async fn a_lone_corrupting_provider_stores_nothing() {
        let bytes = sample(2 * RANGE_BYTES as usize);
        let (result, fetcher, dirs) = fetch_from(&bytes, 1, true).await;
        assert!(
            matches!(result, Err(FetchError::ProvidersFailed { .. })),
            "{result:?}"
        );
        let hash = BlobHash(*blake3::hash(&bytes).as_bytes());
        assert!(fetcher.meta(&hash).unwrap().is_none());
        let tmp = dirs.last().unwrap().path().join("tmp");
        assert_eq!(fs::read_dir(tmp).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn nobody_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 20, BlobMetrics::default()).unwrap();
        let peers = Peers {
            stores: HashMap::new(),
            liar: None,
        };
        let hash = BlobHash([7; 32]);
        assert!(matches!(
            fetch(&store, &peers, hash).await,
            Err(FetchError::NotFound(_))
        ));
    }
}

#[cfg(test)]
mod doctored {
    use super::*;
    use crate::BlobMetrics;

    #[tokio::test]
    async fn a_doctored_store_file_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut upload = store.begin_upload().await.unwrap();
        upload.write(&bytes).await.unwrap();
        let meta = upload.finish(None).await.unwrap();
        let path = store.data_path(&meta.hash);
        let mut doctored = fs::read(&path).unwrap();
        doctored[100] ^= 0x5a;
        fs::write(&path, doctored).unwrap();
        let served = store.encode_range(&meta.hash, 0, RANGE_BYTES).await;
        assert!(!matches!(served, Ok(Some(_))), "served a doctored range");
    }
}

#[cfg(test)]
mod partial_serving {
    use super::*;
    use crate::BlobMetrics;

    #[tokio::test]
    async fn verified_ranges_of_a_fetch_in_progress_are_served() {
        let (a_dir, b_dir, c_dir) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let open =
            |d: &std::path::Path| BlobStore::open(d, 1 << 30, BlobMetrics::default()).unwrap();
        let (a, b, c) = (open(a_dir.path()), open(b_dir.path()), open(c_dir.path()));
        let bytes: Vec<u8> = (0..3 * RANGE_BYTES as usize + 5000)
            .map(|i| (i % 253) as u8)
            .collect();
        let mut upload = a.begin_upload().await.unwrap();
        upload.write(&bytes).await.unwrap();
        let meta = upload.finish(None).await.unwrap();

        let partial = b.begin_fetch(meta.hash, meta.size).unwrap();
        let (offset, len) = partial.ranges()[1];
        let encoded = a
            .encode_range(&meta.hash, offset, len)
            .await
            .unwrap()
            .unwrap();
        partial.add(offset, len, &encoded).unwrap();
        assert_eq!(
            b.partial_ranges(&meta.hash).unwrap().1,
            [false, true, false, false]
        );

        // b serves what it verified, and a third node can verify it.
        let relayed = b
            .encode_range(&meta.hash, offset, len)
            .await
            .unwrap()
            .expect("served");
        let other = c.begin_fetch(meta.hash, meta.size).unwrap();
        other.add(offset, len, &relayed).unwrap();
        assert!(
            b.encode_range(&meta.hash, 0, RANGE_BYTES)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[cfg(test)]
mod resuming {
    use super::*;
    use crate::BlobMetrics;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One provider that answers `budget` range requests, then fails every one.
    struct Flaky {
        store: BlobStore,
        budget: usize,
        asked: AtomicUsize,
    }

    impl BlobNetwork for Flaky {
        type Peer = String;
        fn providers(&self, hash: BlobHash) -> BoxFuture<'_, Vec<Provider<String>>> {
            Box::pin(async move {
                let size = self.store.meta(&hash).unwrap().unwrap().size;
                vec![Provider {
                    peer: "origin".into(),
                    size,
                    ranges: None,
                }]
            })
        }
        fn announce(&self, _: BlobHash) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn range(
            &self,
            _: String,
            hash: BlobHash,
            offset: u64,
            len: u64,
        ) -> BoxFuture<'_, Result<Vec<u8>, String>> {
            Box::pin(async move {
                if self.asked.fetch_add(1, Ordering::SeqCst) >= self.budget {
                    return Err("cut off".into());
                }
                Ok(self
                    .store
                    .encode_range(&hash, offset, len)
                    .await
                    .unwrap()
                    .unwrap())
            })
        }
    }

    #[tokio::test]
    async fn a_fetch_cut_off_half_way_resumes_without_refetching_what_it_verified() {
        let origin_dir = tempfile::tempdir().unwrap();
        let origin = BlobStore::open(origin_dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let bytes: Vec<u8> = (0..10 * RANGE_BYTES as usize + 777)
            .map(|i| (i % 241) as u8)
            .collect();
        let mut upload = origin.begin_upload().await.unwrap();
        upload.write(&bytes).await.unwrap();
        let hash = upload.finish(None).await.unwrap().hash;

        let dir = tempfile::tempdir().unwrap();
        let fetcher = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let cut = Flaky {
            store: origin.clone(),
            budget: 5,
            asked: AtomicUsize::new(0),
        };
        assert!(
            fetch(&fetcher, &cut, hash).await.is_err(),
            "the provider was cut off"
        );
        assert!(fetcher.meta(&hash).unwrap().is_none());

        // A restart in between: the store is opened afresh.
        drop(fetcher);
        let fetcher = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let honest = Flaky {
            store: origin.clone(),
            budget: usize::MAX,
            asked: AtomicUsize::new(0),
        };
        fetch(&fetcher, &honest, hash).await.unwrap();
        let (_, mut file) = fetcher.open_blob(&hash).await.unwrap().unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut got)
            .await
            .unwrap();
        assert_eq!(got, bytes);
        assert_eq!(
            honest.asked.load(Ordering::SeqCst),
            11 - 5,
            "only the ranges not verified before were asked for"
        );
        assert_eq!(fs::read_dir(dir.path().join("partial")).unwrap().count(), 0);
    }
}
