//! The store itself: uploads, reads, and recovery at start.

use std::{
    collections::HashMap,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use bao_tree::io::{outboard::PreOrderOutboard, sync::CreateOutboard};
use mycel_protocol::BlobHash;
use tokio::io::AsyncWriteExt;

use crate::{BLOCK_SIZE, BlobMetrics, transfer::SharedPartial};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the blob is larger than this node's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the bytes hash to {actual}, not to the declared {declared}")]
    HashMismatch {
        declared: BlobHash,
        actual: BlobHash,
    },
    #[error("blob store I/O: {0}")]
    Io(#[from] io::Error),
    #[error("blob index: {0}")]
    Index(#[from] sled::Error),
}

/// How long an interrupted fetch is kept for resuming.
const KEEP_PARTIAL_FETCHES: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What the store knows about a blob it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    pub hash: BlobHash,
    pub size: u64,
}

/// The node's blob store. Cheap to clone; every clone is the same store.
#[derive(Clone, Debug)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    index: sled::Db,
    max_blob_bytes: u64,
    next_tmp: AtomicU64,
    metrics: BlobMetrics,
    /// Blobs being fetched, so their verified ranges can be served meanwhile.
    partials: Mutex<HashMap<BlobHash, SharedPartial>>,
    /// One fetch per blob at a time: a second request for the same blob waits for the first.
    fetching: Mutex<HashMap<BlobHash, Arc<tokio::sync::Mutex<()>>>>,
}

impl BlobStore {
    /// Opens (or creates) the store under `dir`, discarding what a crash left half-done.
    pub fn open(dir: &Path, max_blob_bytes: u64, metrics: BlobMetrics) -> Result<Self, StoreError> {
        for sub in ["data", "outboard", "tmp", "partial"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        // Every commit flushes the index itself, so sled's background flusher (a thread that
        // also keeps the database locked for a while after it is dropped) is not needed.
        let index = sled::Config::new()
            .path(dir.join("index"))
            .flush_every_ms(None)
            .open()?;
        let store = Self {
            inner: Arc::new(Inner {
                root: dir.to_path_buf(),
                index,
                max_blob_bytes,
                next_tmp: AtomicU64::new(0),
                metrics,
                partials: Mutex::new(HashMap::new()),
                fetching: Mutex::new(HashMap::new()),
            }),
        };
        store.recover()?;
        Ok(store)
    }

    /// Makes the disk and the index agree after a crash: unfinished uploads go, a data file the
    /// index does not know goes (its upload was never acknowledged), an index entry without its
    /// files goes.
    fn recover(&self) -> Result<(), StoreError> {
        for entry in fs::read_dir(self.dir("tmp"))? {
            fs::remove_file(entry?.path())?;
        }
        // Interrupted fetches are kept to be resumed, but not forever.
        for entry in fs::read_dir(self.dir("partial"))? {
            let entry = entry?;
            let stale = entry
                .metadata()?
                .modified()?
                .elapsed()
                .is_ok_and(|age| age > KEEP_PARTIAL_FETCHES);
            if stale {
                fs::remove_file(entry.path())?;
            }
        }
        for entry in fs::read_dir(self.dir("data"))? {
            let entry = entry?;
            let name = entry.file_name();
            let indexed = name
                .to_str()
                .and_then(BlobHash::from_hex)
                .is_some_and(|hash| self.meta(&hash).ok().flatten().is_some());
            if !indexed {
                tracing::warn!(file = ?name, "removing a blob file the index does not know");
                fs::remove_file(entry.path())?;
                let _ = fs::remove_file(self.dir("outboard").join(&name));
            }
        }
        for item in self.inner.index.iter() {
            let (key, value) = item?;
            let Some(meta) = decode_meta(&key, &value) else {
                self.inner.index.remove(key)?;
                continue;
            };
            let complete = fs::metadata(self.data_path(&meta.hash))
                .is_ok_and(|m| m.len() == meta.size)
                && self.outboard_path(&meta.hash).exists();
            if !complete {
                tracing::warn!(hash = %meta.hash, "forgetting a blob whose files are missing");
                self.inner.index.remove(key)?;
            }
        }
        self.inner.index.flush()?;
        Ok(())
    }

    fn dir(&self, sub: &str) -> PathBuf {
        self.inner.root.join(sub)
    }

    /// The lock a fetch of `hash` holds.
    pub(crate) fn fetch_lock(&self, hash: &BlobHash) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetching = self
            .inner
            .fetching
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Locks nobody holds or waits for are dropped as we go.
        fetching.retain(|_, lock| Arc::strong_count(lock) > 1);
        fetching.entry(*hash).or_default().clone()
    }

    pub(crate) fn partial(&self, hash: &BlobHash) -> Option<SharedPartial> {
        self.inner.partials.lock().ok()?.get(hash).cloned()
    }

    /// Makes a fetch's ranges servable; a second concurrent fetch of the same blob leaves the
    /// first one registered.
    pub(crate) fn register_partial(&self, hash: BlobHash, state: SharedPartial) {
        if let Ok(mut partials) = self.inner.partials.lock() {
            partials.entry(hash).or_insert(state);
        }
    }

    pub(crate) fn unregister_partial(&self, hash: &BlobHash, state: &SharedPartial) {
        if let Ok(mut partials) = self.inner.partials.lock()
            && partials.get(hash).is_some_and(|s| Arc::ptr_eq(s, state))
        {
            partials.remove(hash);
        }
    }

    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.inner.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.dir("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Where an unfinished fetch of `hash` keeps its bytes (and, beside them, its tree).
    pub(crate) fn partial_path(&self, hash: &BlobHash) -> PathBuf {
        self.dir("partial").join(hash.to_hex())
    }

    /// The file that holds blob `hash`, when the store holds it whole (read it, never write it).
    pub fn blob_path(&self, hash: &BlobHash) -> Result<Option<PathBuf>, StoreError> {
        Ok(self.meta(hash)?.map(|_| self.data_path(hash)))
    }

    pub(crate) fn data_path(&self, hash: &BlobHash) -> PathBuf {
        self.dir("data").join(hash.to_hex())
    }

    pub(crate) fn outboard_path(&self, hash: &BlobHash) -> PathBuf {
        self.dir("outboard").join(hash.to_hex())
    }

    pub fn metrics(&self) -> &BlobMetrics {
        &self.inner.metrics
    }

    pub fn max_blob_bytes(&self) -> u64 {
        self.inner.max_blob_bytes
    }

    /// Every blob the store holds whole.
    pub fn hashes(&self) -> Result<Vec<BlobHash>, StoreError> {
        let mut hashes = Vec::new();
        for item in self.inner.index.iter() {
            let (key, value) = item?;
            if let Some(meta) = decode_meta(&key, &value) {
                hashes.push(meta.hash);
            }
        }
        Ok(hashes)
    }

    /// How many blobs the store holds whole, and their bytes.
    pub fn totals(&self) -> Result<(u64, u64), StoreError> {
        let (mut count, mut bytes) = (0, 0);
        for item in self.inner.index.iter() {
            let (key, value) = item?;
            if let Some(meta) = decode_meta(&key, &value) {
                count += 1;
                bytes += meta.size;
            }
        }
        Ok((count, bytes))
    }

    /// The blob's size, if the store holds it whole.
    pub fn meta(&self, hash: &BlobHash) -> Result<Option<BlobMeta>, StoreError> {
        Ok(self
            .inner
            .index
            .get(hash.0)?
            .and_then(|value| decode_meta(&hash.0, &value)))
    }

    /// Opens a held blob for reading.
    pub async fn open_blob(
        &self,
        hash: &BlobHash,
    ) -> Result<Option<(BlobMeta, tokio::fs::File)>, StoreError> {
        let Some(meta) = self.meta(hash)? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(self.data_path(hash)).await?;
        Ok(Some((meta, file)))
    }

    /// Starts an upload; nothing is visible under any hash until [`Upload::finish`].
    pub async fn begin_upload(&self) -> Result<Upload, StoreError> {
        let path = self.tmp_path("upload");
        let file = tokio::fs::File::create(&path).await?;
        Ok(Upload {
            store: self.clone(),
            file: Some(file),
            path,
            hasher: blake3::Hasher::new(),
            size: 0,
        })
    }

    /// Moves a verified temp file into place: outboard first, then the data, then the index, each
    /// durable before the next, so the index never names a blob whose files are not whole.
    pub(crate) fn commit(
        &self,
        tmp: &Path,
        hash: BlobHash,
        size: u64,
    ) -> Result<BlobMeta, StoreError> {
        let meta = BlobMeta { hash, size };
        if self.meta(&hash)?.is_some() {
            fs::remove_file(tmp)?;
            return Ok(meta);
        }
        let data = fs::File::open(tmp)?;
        let outboard = PreOrderOutboard::<Vec<u8>>::create(&data, BLOCK_SIZE)?;
        // The tree's root is the BLAKE3 hash of the bytes: this is the last check every uploaded
        // blob (and every small fetched one) passes before it gets its name.
        if outboard.root.as_bytes() != &hash.0 {
            return Err(StoreError::HashMismatch {
                declared: hash,
                actual: BlobHash(*outboard.root.as_bytes()),
            });
        }
        self.install(tmp, hash, size, &outboard.data)
    }

    /// As [`BlobStore::commit`], for a fetch whose every chunk group was checked against `tree`
    /// (and `tree` against the root) as it arrived: the bytes are not read and hashed again.
    /// Instead the tree itself is checked once more, its nodes only: it must cover the whole blob
    /// and hash up to `hash`. A blob of one range or less, whose tree proves little, and a tree
    /// that fails the check are committed the slow way, from the bytes.
    pub(crate) fn commit_fetched(
        &self,
        tmp: &Path,
        hash: BlobHash,
        size: u64,
        tree: &[u8],
    ) -> Result<BlobMeta, StoreError> {
        if self.meta(&hash)?.is_some()
            || size <= crate::RANGE_BYTES
            || !tree_is_whole(&hash, size, tree)
        {
            return self.commit(tmp, hash, size);
        }
        self.install(tmp, hash, size, tree)
    }

    /// Moves verified bytes and their tree into place: outboard first, then the data, then the
    /// index, each durable before the next.
    fn install(
        &self,
        tmp: &Path,
        hash: BlobHash,
        size: u64,
        tree: &[u8],
    ) -> Result<BlobMeta, StoreError> {
        let meta = BlobMeta { hash, size };
        write_durably(&self.outboard_path(&hash), tree)?;
        fs::rename(tmp, self.data_path(&hash))?;
        fs::File::open(self.dir("data"))?.sync_all()?;
        self.inner.index.insert(hash.0, &size.to_be_bytes())?;
        self.inner.index.flush()?;
        Ok(meta)
    }
}

/// Whether `tree` is the complete tree of a blob of `size` bytes named `hash`: every node present
/// and every parent hashing up to the root (the chunk groups themselves are not read).
fn tree_is_whole(hash: &BlobHash, size: u64, tree: &[u8]) -> bool {
    let shape = bao_tree::BaoTree::new(size, BLOCK_SIZE);
    if tree.len() as u64 != shape.outboard_size() {
        return false;
    }
    let outboard = PreOrderOutboard {
        root: blake3::Hash::from_bytes(hash.0),
        tree: shape,
        data: tree,
    };
    let wanted = bao_tree::io::round_up_to_chunks(&bao_tree::ByteRanges::from(0..size));
    let mut covered = bao_tree::ChunkRanges::empty();
    for range in bao_tree::io::sync::valid_outboard_ranges(&outboard, &wanted) {
        match range {
            Ok(range) => covered |= bao_tree::ChunkRanges::from(range),
            Err(_) => return false,
        }
    }
    covered.is_superset(&wanted)
}

fn decode_meta(key: &[u8], value: &[u8]) -> Option<BlobMeta> {
    let hash = BlobHash(key.try_into().ok()?);
    let size = u64::from_be_bytes(value.try_into().ok()?);
    Some(BlobMeta { hash, size })
}

/// Writes `bytes` to `path` through a temp file, fsync and rename.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// An upload in progress: bytes stream to a temp file and through the hasher. Dropped without
/// [`Upload::finish`], it leaves nothing behind.
#[derive(Debug)]
pub struct Upload {
    store: BlobStore,
    file: Option<tokio::fs::File>,
    path: PathBuf,
    hasher: blake3::Hasher,
    size: u64,
}

impl Upload {
    /// Appends bytes; fails once the blob outgrows the store's limit.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let limit = self.store.max_blob_bytes();
        self.size += bytes.len() as u64;
        if self.size > limit {
            return Err(StoreError::TooLarge { limit });
        }
        self.hasher.update(bytes);
        let file = self.file.as_mut().expect("the file lives until finish");
        file.write_all(bytes).await?;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Finishes the upload: the bytes must hash to `declared` when one is given. On success the
    /// blob is durable and readable under its hash.
    pub async fn finish(mut self, declared: Option<BlobHash>) -> Result<BlobMeta, StoreError> {
        let mut file = self.file.take().expect("finish runs once");
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let actual = BlobHash(*self.hasher.finalize().as_bytes());
        if let Some(declared) = declared.filter(|d| *d != actual) {
            return Err(StoreError::HashMismatch { declared, actual });
        }
        let store = self.store.clone();
        let path = self.path.clone();
        let size = self.size;
        let meta = tokio::task::spawn_blocking(move || store.commit(&path, actual, size))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        self.store.metrics().bytes_uploaded.inc_by(size);
        Ok(meta)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // After a successful commit the temp file has been renamed away; otherwise it goes.
        if self.path.exists() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> BlobStore {
        BlobStore::open(dir, 1 << 20, BlobMetrics::default()).unwrap()
    }

    fn hash_of(bytes: &[u8]) -> BlobHash {
        BlobHash(*blake3::hash(bytes).as_bytes())
    }

    async fn read(store: &BlobStore, hash: &BlobHash) -> Option<Vec<u8>> {
        let (_, mut file) = store.open_blob(hash).await.unwrap()?;
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes)
            .await
            .unwrap();
        Some(bytes)
    }

    fn tmp_is_empty(dir: &Path) -> bool {
        fs::read_dir(dir.join("tmp")).unwrap().next().is_none()
    }

    #[tokio::test]
    async fn stores_and_reads_back_under_the_blake3_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let bytes: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut upload = store.begin_upload().await.unwrap();
        for chunk in bytes.chunks(7000) {
            upload.write(chunk).await.unwrap();
        }
        let meta = upload.finish(Some(hash_of(&bytes))).await.unwrap();
        assert_eq!(meta.hash, hash_of(&bytes));
        assert_eq!(meta.size, bytes.len() as u64);
        assert_eq!(read(&store, &meta.hash).await.unwrap(), bytes);
        assert!(tmp_is_empty(dir.path()));

        // It survives a restart.
        drop(store);
        let store = self::store(dir.path());
        assert_eq!(read(&store, &meta.hash).await.unwrap(), bytes);
    }

    #[tokio::test]
    async fn a_declared_hash_that_does_not_match_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut upload = store.begin_upload().await.unwrap();
        upload.write(b"the real bytes").await.unwrap();
        let declared = hash_of(b"other bytes");
        let err = upload.finish(Some(declared)).await.unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
        assert!(store.meta(&declared).unwrap().is_none());
        assert!(store.meta(&hash_of(b"the real bytes")).unwrap().is_none());
        assert!(tmp_is_empty(dir.path()));
        assert_eq!(fs::read_dir(dir.path().join("data")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn the_size_limit_holds_and_an_abandoned_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut upload = store.begin_upload().await.unwrap();
        upload.write(&vec![0u8; 1 << 20]).await.unwrap();
        let err = upload.write(b"one byte too many").await.unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }));
        drop(upload);
        assert!(tmp_is_empty(dir.path()));
    }

    #[tokio::test]
    async fn recovery_discards_what_a_crash_left_half_done() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut upload = store.begin_upload().await.unwrap();
        upload.write(b"kept").await.unwrap();
        let kept = upload.finish(None).await.unwrap();
        drop(store);

        // A crash mid-upload, one between rename and index, one that lost a data file.
        fs::write(dir.path().join("tmp/upload-1-0"), b"partial").unwrap();
        let orphan = hash_of(b"orphan");
        fs::write(dir.path().join("data").join(orphan.to_hex()), b"orphan").unwrap();
        let store = self::store(dir.path());
        assert!(tmp_is_empty(dir.path()));
        assert!(!dir.path().join("data").join(orphan.to_hex()).exists());
        assert_eq!(read(&store, &kept.hash).await.unwrap(), b"kept");

        drop(store);
        fs::remove_file(dir.path().join("data").join(kept.hash.to_hex())).unwrap();
        let store = self::store(dir.path());
        assert!(store.meta(&kept.hash).unwrap().is_none());
    }

    #[test]
    fn a_fetched_tree_counts_only_when_whole_and_rooted_in_the_hash() {
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let hash = hash_of(&bytes);
        let size = bytes.len() as u64;
        let tree = PreOrderOutboard::<Vec<u8>>::create(std::io::Cursor::new(&bytes), BLOCK_SIZE)
            .unwrap()
            .data;
        assert!(tree_is_whole(&hash, size, &tree));

        let mut changed = tree.clone();
        changed[64 * 7 + 3] ^= 1;
        assert!(!tree_is_whole(&hash, size, &changed), "a changed node");
        assert!(
            !tree_is_whole(&hash, size, &tree[..tree.len() - 64]),
            "a missing node"
        );
        let mut zeroed = tree.clone();
        zeroed[tree.len() - 64..].fill(0);
        assert!(
            !tree_is_whole(&hash, size, &zeroed),
            "a node never received"
        );
        assert!(
            !tree_is_whole(&hash_of(b"other"), size, &tree),
            "another root"
        );
        // (A size off by less than a chunk group has the same tree: the last chunk group's
        // bytes, checked as they arrive, are what prove the size.)
        assert!(
            !tree_is_whole(&hash, size + 64 * 1024, &tree),
            "another shape"
        );
    }

    #[tokio::test]
    async fn the_same_bytes_twice_are_one_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        for _ in 0..2 {
            let mut upload = store.begin_upload().await.unwrap();
            upload.write(b"same").await.unwrap();
            upload.finish(None).await.unwrap();
        }
        assert_eq!(fs::read_dir(dir.path().join("data")).unwrap().count(), 1);
        assert!(tmp_is_empty(dir.path()));
    }
}
