//! Verified transfer: serving ranges of a blob with their BLAKE3 proofs, and fetching a blob from
//! several peers at once, each range checked against the root hash before a byte is written.
//!
//! A range is `RANGE_BYTES` of the blob (the last one shorter), encoded bao-style: the tree nodes a
//! receiver needs, interleaved with 16 KiB chunk groups. A provider that sends anything that does
//! not verify is dropped for the rest of the transfer and its range is asked of another.

use std::{collections::VecDeque, fmt, fs, hash::Hash, io::Cursor, path::PathBuf};

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
pub const RANGE_BYTES: u64 = 1024 * 1024;
/// Requests in flight to one provider at once: enough to keep a loopback or LAN link busy.
const PER_PROVIDER: usize = 4;

/// How the fetcher reaches peers; the node implements it over the mesh.
pub trait BlobNetwork: Send + Sync {
    type Peer: Clone + Eq + Hash + fmt::Display + Send + Sync;
    /// Peers that hold `hash` whole, with the size each claims.
    fn providers(&self, hash: BlobHash) -> BoxFuture<'_, Vec<(Self::Peer, u64)>>;
    /// The encoded range `[offset, offset + len)` of `hash` from `peer`.
    fn range(
        &self,
        peer: Self::Peer,
        hash: BlobHash,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'_, Result<Vec<u8>, String>>;
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
    /// The verified encoding of `[offset, offset + len)` of a blob held whole, or `None`.
    pub async fn encode_range(
        &self,
        hash: &BlobHash,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(meta) = self.meta(hash)? else {
            return Ok(None);
        };
        if offset >= meta.size.max(1) || len == 0 || len > RANGE_BYTES {
            return Ok(None);
        }
        let store = self.clone();
        let hash = *hash;
        let len = len.min(meta.size - offset);
        let encoded = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, StoreError> {
            let data = fs::File::open(store.data_path(&hash))?;
            // Read the tree nodes in place: a request needs a few of them, not the whole file.
            let outboard = PreOrderOutboard {
                root: blake3::Hash::from_bytes(hash.0),
                tree: BaoTree::new(meta.size, BLOCK_SIZE),
                data: fs::File::open(store.outboard_path(&hash))?,
            };
            let mut encoded = Vec::with_capacity(len as usize + len as usize / 128 + 1024);
            encode_ranges_validated(data, &outboard, &chunk_ranges(offset, len), &mut encoded)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(encoded)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        self.metrics().bytes_sent.inc_by(len);
        Ok(Some(encoded))
    }

    /// Starts receiving `hash` of `size` bytes into a temp file.
    pub fn begin_fetch(&self, hash: BlobHash, size: u64) -> Result<PartialBlob, StoreError> {
        let path = self.tmp_path("fetch");
        let file = fs::File::create(&path)?;
        file.set_len(size)?;
        Ok(PartialBlob {
            store: self.clone(),
            hash,
            size,
            file,
            path,
            outboard: outboard_of(&hash, size, Vec::new()),
        })
    }
}

/// A blob being received: verified ranges are written in place; nothing is visible under the
/// hash until [`PartialBlob::finish`].
#[derive(Debug)]
pub struct PartialBlob {
    store: BlobStore,
    hash: BlobHash,
    size: u64,
    file: fs::File,
    path: PathBuf,
    outboard: PreOrderOutboard<Vec<u8>>,
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

    /// Verifies an encoded range against the root hash and writes it. On error nothing of the
    /// bad chunk group is written.
    pub fn add(&mut self, offset: u64, len: u64, encoded: &[u8]) -> Result<(), String> {
        decode_ranges(
            Cursor::new(encoded),
            &chunk_ranges(offset, len.max(1)),
            &mut self.file,
            &mut self.outboard,
        )
        .map_err(|e| e.to_string())?;
        self.store.metrics().bytes_received.inc_by(len);
        Ok(())
    }

    /// Moves the received file into the store. Committing rebuilds the whole tree from the
    /// bytes and refuses a root other than the hash, so this re-checks every byte once more.
    pub fn finish(self) -> Result<BlobMeta, StoreError> {
        self.file.sync_all()?;
        self.store.commit(&self.path, self.hash, self.size)
    }
}

impl Drop for PartialBlob {
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Fetches `hash` from every peer that has it at once, verifying each range; returns when the
/// blob is whole in `store`.
pub async fn fetch<N: BlobNetwork>(
    store: &BlobStore,
    network: &N,
    hash: BlobHash,
) -> Result<BlobMeta, FetchError> {
    if let Some(meta) = store.meta(&hash)? {
        return Ok(meta);
    }
    let providers = network.providers(hash).await;
    let Some(size) = providers.first().map(|(_, size)| *size) else {
        return Err(FetchError::NotFound(hash));
    };
    // A provider that claims another size cannot serve ranges that verify; leave it out.
    let mut providers: Vec<N::Peer> = providers
        .into_iter()
        .filter(|(_, s)| *s == size)
        .map(|(peer, _)| peer)
        .collect();
    if size > store.max_blob_bytes() {
        return Err(StoreError::TooLarge {
            limit: store.max_blob_bytes(),
        }
        .into());
    }
    tracing::info!(%hash, size, providers = providers.len(), "fetching a blob from peers");
    let partial = store.begin_fetch(hash, size)?;
    let mut todo: VecDeque<(u64, u64)> = partial.ranges().into();
    let partial = std::sync::Arc::new(std::sync::Mutex::new(partial));
    let mut busy: Vec<(N::Peer, usize)> = providers.iter().map(|p| (p.clone(), 0)).collect();
    let mut in_flight = FuturesUnordered::new();
    let mut last_error = String::from("no provider answered");

    loop {
        // Hand out ranges to providers with room.
        while let Some(&(offset, len)) = todo.front() {
            let Some(slot) = busy
                .iter_mut()
                .filter(|(p, n)| *n < PER_PROVIDER && providers.contains(p))
                .min_by_key(|(_, n)| *n)
            else {
                break;
            };
            slot.1 += 1;
            let peer = slot.0.clone();
            todo.pop_front();
            let request = network.range(peer.clone(), hash, offset, len);
            let partial = partial.clone();
            in_flight.push(async move {
                let result = match request.await {
                    Ok(encoded) => tokio::task::spawn_blocking(move || {
                        partial
                            .lock()
                            .map_err(|_| "a writer panicked".to_string())?
                            .add(offset, len, &encoded)
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r),
                    Err(e) => Err(e),
                };
                (peer, offset, len, result)
            });
        }
        let Some((peer, offset, len, result)) = in_flight.next().await else {
            break;
        };
        if let Some(slot) = busy.iter_mut().find(|(p, _)| *p == peer) {
            slot.1 -= 1;
        }
        if let Err(error) = result {
            tracing::warn!(%peer, %hash, offset, %error, "dropping a provider for this transfer");
            last_error = format!("{peer}: {error}");
            providers.retain(|p| *p != peer);
            todo.push_back((offset, len));
            if providers.is_empty() {
                return Err(FetchError::ProvidersFailed {
                    hash,
                    last: last_error,
                });
            }
        }
    }
    if !todo.is_empty() {
        return Err(FetchError::ProvidersFailed {
            hash,
            last: last_error,
        });
    }
    let partial = std::sync::Arc::into_inner(partial)
        .expect("every request finished")
        .into_inner()
        .map_err(|_| StoreError::from(std::io::Error::other("a writer panicked")))?;
    let meta = tokio::task::spawn_blocking(move || partial.finish())
        .await
        .map_err(|e| StoreError::from(std::io::Error::other(e.to_string())))??;
    Ok(meta)
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
        fn providers(&self, hash: BlobHash) -> BoxFuture<'_, Vec<(String, u64)>> {
            Box::pin(async move {
                let mut found: Vec<(String, u64)> = self
                    .stores
                    .iter()
                    .filter_map(|(name, s)| Some((name.clone(), s.meta(&hash).ok()??.size)))
                    .collect();
                found.sort();
                found
            })
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
