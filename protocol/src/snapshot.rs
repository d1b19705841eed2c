//! The index of a volume snapshot, stored as a blob: the volume cut into [`CHUNK_BYTES`]
//! chunks, each either all zeros or a range of a *pack*, a blob of chunks. A snapshot stores in
//! a new pack only the chunks no earlier snapshot of the volume had at that place, so an
//! unchanged chunk is never stored or sent twice; a node restoring it fetches the packs it lacks.
//!
//! Binary, versioned, checked whole before use:
//!
//! ```text
//! "mycel-snapshot" version:u8 size_bytes:u64 packs:u32 chunks:u32
//! pack hash:[32] × packs
//! chunk × chunks: pack:u32 (u32::MAX: zeros) index_in_pack:u32 blake3:[32]
//! ```

use crate::BlobHash;

/// The unit of change: small enough that a write touches few, large enough that the index of a
/// 256 MiB volume is 160 KiB.
pub const CHUNK_BYTES: u64 = 64 * 1024;
/// The largest volume an index describes (the manifest's limit, 1 TiB).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 40;
/// The most packs one snapshot may use before the next is written whole.
pub const MAX_PACKS: usize = 64;
const MAGIC: &[u8] = b"mycel-snapshot";
const VERSION: u8 = 1;
const ZEROS: u32 = u32::MAX;
const CHUNK_ENTRY: usize = 4 + 4 + 32;

/// Where one chunk's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// All zeros: stored nowhere.
    Zeros,
    /// Chunk `index` of pack `pack` (its bytes from `index * CHUNK_BYTES`), hashing to `hash`.
    Packed {
        pack: u32,
        index: u32,
        hash: [u8; 32],
    },
}

/// A snapshot's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotIndex {
    /// The volume file's size (the last chunk may be short).
    pub size_bytes: u64,
    pub packs: Vec<BlobHash>,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a volume snapshot index")]
    NotAnIndex,
    #[error("snapshot index version {0} is not known to this node")]
    Version(u8),
    #[error("snapshot index is malformed: {0}")]
    Malformed(&'static str),
}

impl SnapshotIndex {
    /// How many chunks a volume of `size_bytes` has.
    pub fn chunks_for(size_bytes: u64) -> u64 {
        size_bytes.div_ceil(CHUNK_BYTES)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            MAGIC.len() + 17 + self.packs.len() * 32 + self.chunks.len() * CHUNK_ENTRY,
        );
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.size_bytes.to_be_bytes());
        out.extend_from_slice(&(self.packs.len() as u32).to_be_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for pack in &self.packs {
            out.extend_from_slice(&pack.0);
        }
        for chunk in &self.chunks {
            let (pack, index, hash) = match chunk {
                Chunk::Zeros => (ZEROS, 0, [0; 32]),
                Chunk::Packed { pack, index, hash } => (*pack, *index, *hash),
            };
            out.extend_from_slice(&pack.to_be_bytes());
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&hash);
        }
        out
    }

    /// Decodes an index, checking that every chunk names a pack it lists and that the chunks
    /// cover exactly `size_bytes`.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotIndex, SnapshotError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(SnapshotError::NotAnIndex)?;
        let (&version, rest) = rest.split_first().ok_or(SnapshotError::NotAnIndex)?;
        if version != VERSION {
            return Err(SnapshotError::Version(version));
        }
        let mut reader = Reader(rest);
        let size_bytes = reader.u64()?;
        let packs = reader.u32()? as usize;
        let chunks = reader.u32()? as u64;
        if size_bytes > MAX_SNAPSHOT_BYTES {
            return Err(SnapshotError::Malformed(
                "the volume is larger than any volume",
            ));
        }
        if packs > MAX_PACKS {
            return Err(SnapshotError::Malformed("too many packs"));
        }
        if chunks != Self::chunks_for(size_bytes) {
            return Err(SnapshotError::Malformed(
                "the chunks do not cover the volume",
            ));
        }
        let expected = packs * 32 + chunks as usize * CHUNK_ENTRY;
        if reader.0.len() != expected {
            return Err(SnapshotError::Malformed("wrong length"));
        }
        let packs: Vec<BlobHash> = (0..packs)
            .map(|_| reader.hash().map(BlobHash))
            .collect::<Result<_, _>>()?;
        let chunks = (0..chunks)
            .map(|_| {
                let (pack, index, hash) = (reader.u32()?, reader.u32()?, reader.hash()?);
                match pack {
                    ZEROS => Ok(Chunk::Zeros),
                    p if (p as usize) < packs.len() => Ok(Chunk::Packed { pack, index, hash }),
                    _ => Err(SnapshotError::Malformed("a chunk names a pack not listed")),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(SnapshotIndex {
            size_bytes,
            packs,
            chunks,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(SnapshotError::Malformed("cut short"))?;
        self.0 = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        self.take().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        self.take().map(u64::from_be_bytes)
    }

    fn hash(&mut self) -> Result<[u8; 32], SnapshotError> {
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn index() -> SnapshotIndex {
        SnapshotIndex {
            size_bytes: 3 * CHUNK_BYTES - 5,
            packs: vec![BlobHash([7; 32])],
            chunks: vec![
                Chunk::Zeros,
                Chunk::Packed {
                    pack: 0,
                    index: 0,
                    hash: [1; 32],
                },
                Chunk::Packed {
                    pack: 0,
                    index: 1,
                    hash: [2; 32],
                },
            ],
        }
    }

    #[test]
    fn an_index_round_trips() {
        let index = index();
        assert_eq!(SnapshotIndex::decode(&index.encode()).unwrap(), index);
    }

    #[test]
    fn malformed_indexes_are_refused() {
        let good = index().encode();
        assert_eq!(
            SnapshotIndex::decode(b"nope"),
            Err(SnapshotError::NotAnIndex)
        );
        let mut version = good.clone();
        version[MAGIC.len()] = 9;
        assert_eq!(
            SnapshotIndex::decode(&version),
            Err(SnapshotError::Version(9))
        );
        assert!(SnapshotIndex::decode(&good[..good.len() - 1]).is_err());
        let mut stray_pack = index();
        stray_pack.chunks[1] = Chunk::Packed {
            pack: 3,
            index: 0,
            hash: [0; 32],
        };
        assert!(SnapshotIndex::decode(&stray_pack.encode()).is_err());
        let mut short = index();
        short.chunks.pop();
        assert!(SnapshotIndex::decode(&short.encode()).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let _ = SnapshotIndex::decode(&framed);
            let _ = SnapshotIndex::decode(&bytes);
        }
    }
}
