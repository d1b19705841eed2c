//! What a node holds and can prove, range by range: whole blobs, and blobs it is still fetching
//! (whose verified ranges it serves meanwhile and keeps, to resume, when a fetch is cut off).

use super::*;

impl BlobStore {
    /// The verified encoding of `[offset, offset + len)` of a blob held whole, or of a verified
    /// range of one still being fetched; `None` when this node cannot prove that range.
    pub async fn encode_range(
        &self,
        hash: &BlobHash,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.clone();
        let hash = *hash;
        tokio::task::spawn_blocking(move || {
            let mut encoded = Vec::new();
            let served = store.encode_range_into(&hash, offset, len, &mut encoded)?;
            Ok(served.then_some(encoded))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// Blocking: replaces `encoded` with the verified encoding of `[offset, offset + len)` (see
    /// [`BlobStore::encode_range`]); `false` when this node cannot prove that range. Every chunk
    /// group is read once and hashed against the tree as it is encoded, so a store file changed
    /// on disk is never served. Reuses `encoded`'s allocation.
    pub(crate) fn encode_range_into(
        &self,
        hash: &BlobHash,
        offset: u64,
        len: u64,
        encoded: &mut Vec<u8>,
    ) -> Result<bool, StoreError> {
        encoded.clear();
        if len == 0 || len > RANGE_BYTES {
            return Ok(false);
        }
        encoded.reserve(len as usize + len as usize / 128 + 1024);
        let encode_error = |e: bao_tree::io::EncodeError| std::io::Error::other(e.to_string());
        if let Some(meta) = self.meta(hash)? {
            if offset >= meta.size {
                return Ok(false);
            }
            let len = len.min(meta.size - offset);
            let data = fs::File::open(self.data_path(hash))?;
            // Read the tree nodes in place: a request needs a few of them, not the whole file.
            let outboard = PreOrderOutboard {
                root: blake3::Hash::from_bytes(hash.0),
                tree: BaoTree::new(meta.size, BLOCK_SIZE),
                data: fs::File::open(self.outboard_path(hash))?,
            };
            encode_ranges_validated(data, &outboard, &chunk_ranges(offset, len), &mut *encoded)
                .map_err(encode_error)?;
            self.metrics().bytes_sent.inc_by(len);
            return Ok(true);
        }
        let Some(partial) = self.partial(hash) else {
            return Ok(false);
        };
        let state = partial
            .lock()
            .map_err(|_| std::io::Error::other("a writer panicked"))?;
        let index = offset / RANGE_BYTES;
        if !offset.is_multiple_of(RANGE_BYTES)
            || !state.have.get(index as usize).copied().unwrap_or(false)
        {
            return Ok(false);
        }
        let len = len.min(state.size - offset);
        encode_ranges_validated(
            &state.file,
            &state.outboard,
            &chunk_ranges(offset, len),
            &mut *encoded,
        )
        .map_err(encode_error)?;
        self.metrics().bytes_sent.inc_by(len);
        Ok(true)
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

    /// Flushes what has been written so far to disk (on the calling thread), so that
    /// [`PartialBlob::finish`] has little left to wait for.
    pub(crate) fn sync_written(&self) -> std::io::Result<()> {
        let file = self
            .state
            .lock()
            .map_err(|_| std::io::Error::other("a writer panicked"))?
            .file
            .try_clone()?;
        file.sync_data()
    }

    /// Verifies an encoded range against the root hash and writes it. On error nothing of the
    /// bad chunk group is written.
    pub fn add(&self, offset: u64, len: u64, encoded: &[u8]) -> Result<(), String> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| "a writer panicked".to_string())?;
        let state = &mut *state;
        let mut reader = Cursor::new(encoded);
        decode_ranges(
            &mut reader,
            &chunk_ranges(offset, len.max(1)),
            &mut state.file,
            &mut state.outboard,
        )
        .map_err(|e| e.to_string())?;
        // A range's encoding has one length; bytes to spare are not this range's.
        if reader.position() != encoded.len() as u64 {
            return Err(format!(
                "{} bytes past the end of the range's encoding",
                encoded.len() as u64 - reader.position()
            ));
        }
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

    /// Moves the received file into the store, with the tree every range was verified against
    /// (checked once more to be whole and to hash up to the root; see
    /// [`BlobStore::commit_fetched`]).
    pub fn finish(self) -> Result<BlobMeta, StoreError> {
        let (file, tree) = {
            let state = self
                .state
                .lock()
                .map_err(|_| std::io::Error::other("a writer panicked"))?;
            if state.have.iter().any(|h| !*h) {
                return Err(std::io::Error::other("finishing a fetch that lacks ranges").into());
            }
            (state.file.try_clone()?, state.outboard.data.clone())
        };
        file.sync_all()?;
        let meta = self
            .store
            .commit_fetched(&self.path, self.hash, self.size, &tree)?;
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
