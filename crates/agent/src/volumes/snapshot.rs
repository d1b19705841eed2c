//! Volume snapshots in the blob store ([`mycel_protocol::snapshot`] has the format). Taking
//! one freezes the volume's file system (FIFREEZE, as `fsfreeze` does) while its file is read, so
//! the snapshot is what a crash at that instant would have left: ext4's journal makes that a
//! consistent file system. Only chunks that differ from the previous snapshot's at the same place
//! go into the new pack.

use std::{
    fs,
    io::{self, Read, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::Command,
};

use mycel_blobs::{BlobNetwork, BlobStore};
use mycel_protocol::{
    BlobHash,
    snapshot::{CHUNK_BYTES, Chunk, MAX_PACKS, SnapshotIndex},
};

use super::{BASE, LocalVolumes, is_mounted, run};
use crate::AgentError;

/// What a snapshot took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) index: BlobHash,
    pub(crate) size_bytes: u64,
    pub(crate) used_bytes: u64,
    /// Bytes of the new pack: what no earlier snapshot stored.
    pub(crate) stored_bytes: u64,
}

fn node_error(what: &str) -> impl Fn(io::Error) -> AgentError + '_ {
    move |e| AgentError::Node(format!("{what}: {e}"))
}

/// The index blob `hash` from the local store, decoded.
pub(crate) fn read_index(blobs: &BlobStore, hash: &BlobHash) -> Result<SnapshotIndex, AgentError> {
    let path = blobs
        .blob_path(hash)
        .map_err(|e| AgentError::Node(format!("reading the blob store: {e}")))?
        .ok_or_else(|| AgentError::Fetch(format!("snapshot {hash} is not on this node")))?;
    let bytes = fs::read(path).map_err(node_error("reading a snapshot index"))?;
    SnapshotIndex::decode(&bytes).map_err(|e| AgentError::Fetch(format!("snapshot {hash}: {e}")))
}

/// Takes a snapshot of a volume this node holds, on top of `previous` when this node has it.
pub(crate) async fn take(
    volumes: &LocalVolumes,
    blobs: &BlobStore,
    app: &str,
    name: &str,
    previous: Option<BlobHash>,
) -> Result<Taken, AgentError> {
    let previous = previous.and_then(|hash| read_index(blobs, &hash).ok());
    let (mount, image) = volumes.paths(app, name);
    let pack = volumes.dir(app, name).join("pack.tmp");
    let lock = volumes.lock.clone();
    let (index, used_bytes, stored_bytes) = {
        let pack = pack.clone();
        tokio::task::spawn_blocking(move || {
            // One snapshot (or mount, or removal) of this node's volumes at a time.
            let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let used = used_bytes(&mount);
            let frozen = Frozen::freeze(&mount)?;
            let cut = cut(&image, previous.as_ref(), &pack);
            drop(frozen);
            cut.map(|(index, stored)| (index, used, stored))
        })
        .await
        .map_err(|e| AgentError::Node(format!("a snapshot's task failed: {e}")))??
    };
    let mut index = index;
    if stored_bytes > 0 {
        let meta = upload_file(blobs, &pack).await;
        let _ = fs::remove_file(&pack);
        index.packs.push(meta?);
    } else {
        let _ = fs::remove_file(&pack);
    }
    let bytes = index.encode();
    let mut upload = blobs.begin_upload().await.map_err(store_error)?;
    upload.write(&bytes).await.map_err(store_error)?;
    let hash = upload.finish(None).await.map_err(store_error)?.hash;
    let base = volumes.dir(app, name).join(BASE);
    super::write_synced(&base, hash.to_string().as_bytes())
        .map_err(node_error("recording a volume's snapshot"))?;
    Ok(Taken {
        index: hash,
        size_bytes: index.size_bytes,
        used_bytes,
        stored_bytes: stored_bytes + bytes.len() as u64,
    })
}

fn store_error(e: mycel_blobs::StoreError) -> AgentError {
    AgentError::Node(format!("storing a snapshot: {e}"))
}

async fn upload_file(blobs: &BlobStore, path: &Path) -> Result<BlobHash, AgentError> {
    let mut file = fs::File::open(path).map_err(node_error("reading a snapshot's pack"))?;
    let mut upload = blobs.begin_upload().await.map_err(store_error)?;
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(node_error("reading a snapshot's pack"))?;
        if n == 0 {
            break;
        }
        upload.write(&buffer[..n]).await.map_err(store_error)?;
    }
    Ok(upload.finish(None).await.map_err(store_error)?.hash)
}

/// Cuts the volume file into chunks: the index (without the new pack, which is `pack` and the
/// last of the packs once stored) and the bytes written to `pack`. Chunks equal to `previous`'s
/// at the same place are not written again, unless `previous` already uses so many packs that
/// this snapshot starts over.
fn cut(
    image: &Path,
    previous: Option<&SnapshotIndex>,
    pack: &Path,
) -> Result<(SnapshotIndex, u64), AgentError> {
    let previous = previous.filter(|p| p.packs.len() < MAX_PACKS);
    let file = fs::File::open(image).map_err(node_error("reading a volume"))?;
    let size_bytes = file
        .metadata()
        .map_err(node_error("reading a volume"))?
        .len();
    let mut out = io::BufWriter::new(fs::File::create(pack).map_err(node_error("writing a pack"))?);
    let mut packs: Vec<BlobHash> = Vec::new();
    let kept_pack = |old: u32, packs: &mut Vec<BlobHash>| -> u32 {
        let hash = previous
            .expect("a kept chunk has a previous snapshot")
            .packs[old as usize];
        match packs.iter().position(|p| *p == hash) {
            Some(at) => at as u32,
            None => {
                packs.push(hash);
                (packs.len() - 1) as u32
            }
        }
    };
    let chunks_total = SnapshotIndex::chunks_for(size_bytes);
    let mut chunks = Vec::with_capacity(chunks_total as usize);
    let mut new_chunks: Vec<(usize, [u8; 32])> = Vec::new();
    let mut buffer = vec![0u8; CHUNK_BYTES as usize];
    for i in 0..chunks_total {
        let len = CHUNK_BYTES.min(size_bytes - i * CHUNK_BYTES) as usize;
        let bytes = &mut buffer[..len];
        file.read_exact_at(bytes, i * CHUNK_BYTES)
            .map_err(node_error("reading a volume"))?;
        if bytes.iter().all(|b| *b == 0) {
            chunks.push(Chunk::Zeros);
            continue;
        }
        let hash = *blake3::hash(bytes).as_bytes();
        match previous.and_then(|p| p.chunks.get(i as usize)) {
            Some(Chunk::Packed {
                pack,
                index,
                hash: old,
            }) if *old == hash => chunks.push(Chunk::Packed {
                pack: kept_pack(*pack, &mut packs),
                index: *index,
                hash,
            }),
            _ => {
                // Padded to a whole chunk so that chunk n of a pack starts at n * CHUNK_BYTES.
                out.write_all(bytes).map_err(node_error("writing a pack"))?;
                let pad = CHUNK_BYTES as usize - len;
                out.write_all(&vec![0; pad])
                    .map_err(node_error("writing a pack"))?;
                new_chunks.push((chunks.len(), hash));
                chunks.push(Chunk::Zeros); // placed below, once the pack's number is known
            }
        }
    }
    out.flush().map_err(node_error("writing a pack"))?;
    let new_pack = packs.len() as u32;
    for (n, (at, hash)) in new_chunks.iter().enumerate() {
        chunks[*at] = Chunk::Packed {
            pack: new_pack,
            index: n as u32,
            hash: *hash,
        };
    }
    let stored = new_chunks.len() as u64 * CHUNK_BYTES;
    Ok((
        SnapshotIndex {
            size_bytes,
            packs,
            chunks,
        },
        stored,
    ))
}

/// Fetches snapshot `index` and the packs it names into the local store, from whichever peers
/// hold them: the local blob store skips what it has.
pub(crate) async fn fetch<N: BlobNetwork>(
    blobs: &BlobStore,
    network: &N,
    index: BlobHash,
) -> Result<SnapshotIndex, AgentError> {
    let fetch_error = |what: String| move |e| AgentError::Fetch(format!("fetching {what}: {e}"));
    mycel_blobs::fetch(blobs, network, index)
        .await
        .map_err(fetch_error(format!("snapshot {index}")))?;
    let decoded = read_index(blobs, &index)?;
    for pack in &decoded.packs {
        mycel_blobs::fetch(blobs, network, *pack)
            .await
            .map_err(fetch_error(format!("a pack of snapshot {index}")))?;
    }
    Ok(decoded)
}

/// Writes the volume `index` describes to `file`, from packs in the local store: zero chunks
/// stay holes. Every chunk is checked against its hash.
pub(crate) fn restore(
    blobs: &BlobStore,
    index: &SnapshotIndex,
    file: &Path,
) -> Result<(), AgentError> {
    let out = fs::File::create(file).map_err(node_error("writing a volume"))?;
    out.set_len(index.size_bytes)
        .map_err(node_error("writing a volume"))?;
    let packs: Vec<fs::File> = index
        .packs
        .iter()
        .map(|hash| {
            let path: PathBuf = blobs
                .blob_path(hash)
                .map_err(|e| AgentError::Node(format!("reading the blob store: {e}")))?
                .ok_or_else(|| AgentError::Fetch(format!("pack {hash} is not on this node")))?;
            fs::File::open(path).map_err(node_error("reading a pack"))
        })
        .collect::<Result<_, _>>()?;
    let mut buffer = vec![0u8; CHUNK_BYTES as usize];
    for (i, chunk) in index.chunks.iter().enumerate() {
        let Chunk::Packed {
            pack,
            index: at,
            hash,
        } = chunk
        else {
            continue;
        };
        let offset = i as u64 * CHUNK_BYTES;
        let len = CHUNK_BYTES.min(index.size_bytes - offset) as usize;
        let bytes = &mut buffer[..len];
        packs[*pack as usize]
            .read_exact_at(bytes, u64::from(*at) * CHUNK_BYTES)
            .map_err(node_error("reading a pack"))?;
        if blake3::hash(bytes).as_bytes() != hash {
            return Err(AgentError::Fetch(format!(
                "chunk {i} of the snapshot does not match its hash"
            )));
        }
        out.write_all_at(bytes, offset)
            .map_err(node_error("writing a volume"))?;
    }
    out.sync_all().map_err(node_error("writing a volume"))
}

/// Bytes in use in a mounted file system (0 when it is not mounted).
fn used_bytes(mount: &Path) -> u64 {
    if !is_mounted(mount) {
        return 0;
    }
    rustix::fs::statvfs(mount)
        .map(|stat| (stat.f_blocks - stat.f_bfree) * stat.f_frsize)
        .unwrap_or(0)
}

/// A frozen file system, thawed when dropped (whatever happened while it was frozen).
struct Frozen(Option<PathBuf>);

impl Frozen {
    fn freeze(mount: &Path) -> Result<Frozen, AgentError> {
        if !is_mounted(mount) {
            return Ok(Frozen(None)); // nothing writes it
        }
        run(Command::new("fsfreeze").arg("-f").arg(mount))?;
        Ok(Frozen(Some(mount.to_path_buf())))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(mount) = &self.0
            && let Err(e) = run(Command::new("fsfreeze").arg("-u").arg(mount))
        {
            tracing::error!(mount = %mount.display(), error = %e, "could not thaw a volume");
        }
    }
}
