//! mycel's container images: archives in, blobs stored, archives out for `docker load`.
//!
//! This crate owns the mesh's view of a container image (see [`mycel_protocol::image`]): it
//! reads a `docker save` archive or an OCI image-layout archive **as untrusted input**, stores
//! its config and layers as blobs in the node's [`BlobStore`] with an [`ImageRecord`] naming them
//! (itself a blob, whose hash is the image's id in the mesh), and writes a record back out as an
//! archive a Docker engine loads, leaving out the layers the engine already holds.
//!
//! ```text
//!  archive.tar ──▶ pass 1 (blocking thread): every tar header → entry table
//!                  │   paths relative, no `..`/NUL, no devices or fifos, no duplicates,
//!                  │   links resolve inside the tree, ≤ MAX_ENTRIES, not truncated;
//!                  │   then the small JSON files (≤ MAX_JSON_BYTES): manifest.json, or
//!                  │   oci-layout + index.json → [index →] manifest → config, each digest checked;
//!                  │   one image, a name, ≤ MAX_LAYERS, config rootfs.type "layers"
//!                  ▼
//!                  pass 2: each layer streamed once (never whole in memory): sha256 of the bytes
//!                  │   = digest, sha256 of the (gunzipped) tar = rootfs.diff_ids[i], bytes copied
//!                  │   into an upload that is not yet visible in the store
//!                  ▼
//!                  pass 3: commit config and layers, then the record → Imported
//!
//!  ImageRecord ──▶ write_loadable_archive(record, held_layers, …) ──▶ docker load
//!                  (manifest.json lists every layer; files only for those above the
//!                   prefix the engine holds: see layers_held_by_engine)
//!
//!  a binary ──▶ write_wrapped_binary ──▶ docker load   (a `[process]` app on a Docker-only node)
//! ```
//!
//! Any check that fails in pass 1 or 2 returns an [`ImageError`] and leaves the store as it was:
//! uploads become blobs only when committed in pass 3.

mod docker;
mod error;
mod export;
mod import;
mod oci;
mod plan;
mod tree;
mod wrap;

pub use error::ImageError;
pub use export::{layers_held_by_engine, write_loadable_archive};
pub use import::{Imported, import_archive};
pub use plan::MAX_JSON_BYTES;
pub use tree::MAX_ENTRIES;
pub use wrap::{WRAPPED_BINARY, wrapped_tag, write_wrapped_binary};

pub use mycel_blobs::{BlobHash, BlobStore};
pub use mycel_protocol::image::{ImageLayer, ImagePart, ImageRecord, MAX_LAYERS};
