//! mycel's blobs: a content-addressed store on the node's disk.
//!
//! A blob is named by the BLAKE3 hash of its bytes ([`BlobHash`]). The store keeps, under
//! `<data-dir>/blobs/`:
//!
//! ```text
//! data/<hex>      the bytes, written once and never changed
//! outboard/<hex>  the BLAKE3 tree (pre-order bao outboard, 16 KiB chunk groups), so any range
//!                 can be served with the proof a receiver checks against the root hash
//! index/          sled: hash -> size, the record of what the store holds
//! tmp/            uploads in progress; emptied at every start
//! partial/        fetches in progress or interrupted: the bytes, the tree nodes and which
//!                 ranges were verified, to resume from (kept a day)
//! ```
//!
//! Nothing reaches `data/` unverified: an upload streams to `tmp/` while it is hashed, is fsynced,
//! checked against the hash the uploader declared, and only then renamed to its final name and
//! indexed. A `kill -9` at any point leaves either no blob or a whole, correct one.
//!
//! Between nodes ([`fetch`]): a node that lacks a blob asks its peers who holds it (`/mycel/blob/1`,
//! request-response), then asks all of them at once for different 1 MiB ranges, on one raw
//! stream per provider (`/mycel/blob-ranges/1`, [`serve_ranges`]); every range arrives with its
//! BLAKE3 proof and is verified against the root hash before it is written, and a provider that
//! sends anything that does not verify is dropped for the transfer. A node serves the verified
//! ranges of a blob it is still fetching, so fetchers that start together feed each other.

mod mesh;
mod metrics;
mod store;
mod transfer;

pub use bao_tree::BlockSize;
pub use mesh::{MeshBlobs, StoreServer, provider_of};
pub use metrics::BlobMetrics;
pub use mycel_protocol::BlobHash;
pub use store::{BlobMeta, BlobStore, StoreError, Upload};
pub use transfer::{
    BlobNetwork, FetchError, PartialBlob, Provider, RANGE_BYTES, RangeIo, RangeStream, fetch,
    serve_ranges,
};

/// Chunk groups of 16 KiB: the unit a receiver verifies (and a sender proves) at once.
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);
