//! Rebuilding an image for `docker load`, leaving out the layers the engine already holds.
//!
//! The rule, from Docker's loader (`image/tarexport/load.go` in moby, unchanged in this respect
//! from 20.10 to the 28 line) and checked against the engine on the development machine (Docker
//! Engine 20.10.24 behind a 28.2.2 client, classic graph-driver image store): for each layer `i`
//! of `manifest.json`, the loader computes the chain id of `diff_ids[0..=i]` and uses the layer
//! the engine already has under that chain id; only when it has none does it open the file named
//! by `Layers[i]`. So a layer's file may be absent exactly when the engine holds that layer *on
//! top of the same lower layers*: the omitted layers are always a prefix of the image's chain (an
//! engine that holds chain `0..=i` holds every shorter one). `manifest.json` must still list
//! every layer (the loader checks that `Layers` and `rootfs.diff_ids` have the same length); only
//! the files are left out. Observed:
//!
//! - B = A + one layer, A loaded: B's archive without A's layer file loads, same image id.
//! - The same archive with nothing loaded: `open .../layer.tar: no such file or directory`.
//! - A loaded, A's layer file present but B's own layer file absent: the same error.
//!
//! Not verified: an engine using the containerd image store (`docker info` shows `driver-type
//! io.containerd.snapshotter.v1`) loads through containerd's importer, another code path; until
//! it is tested, give such an engine `held_layers = 0`.

use std::{
    collections::HashSet,
    fs::File,
    io::{self, Write},
    path::PathBuf,
};

use mycel_blobs::BlobHash;
use mycel_protocol::image::{ImagePart, ImageRecord, is_sha256_digest};
use serde::Serialize;

use crate::ImageError;

/// How many of the record's layers, from the bottom, an engine already holds, given the
/// `RootFS.Layers` (diff_ids, bottom first) of the images it holds: the longest prefix of the
/// record's diff_ids that some held image starts with. Those layers' files can be left out of the
/// archive written for `docker load` (see the module documentation for why only a prefix).
pub fn layers_held_by_engine(record: &ImageRecord, engine_images: &[Vec<String>]) -> usize {
    engine_images
        .iter()
        .map(|held| {
            record
                .layers
                .iter()
                .zip(held)
                .take_while(|(layer, held)| layer.diff_id == **held)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry<'a> {
    config: String,
    repo_tags: [&'a str; 1],
    layers: Vec<String>,
}

/// Writes `record` as a legacy `docker save` archive for `docker load`: `manifest.json`, the
/// config, and the files of every layer but the first `held_layers`, which the engine must
/// already hold (use [`layers_held_by_engine`]). `blob_path` says where the store keeps a blob
/// (`|hash| store.blob_path(hash).ok().flatten()`).
///
/// Blocking: run it on a blocking thread, writing to a file or a pipe into the engine.
pub fn write_loadable_archive(
    record: &ImageRecord,
    held_layers: usize,
    blob_path: impl Fn(&BlobHash) -> Option<PathBuf>,
    out: impl Write,
) -> Result<(), ImageError> {
    if held_layers > record.layers.len() {
        return Err(ImageError::InvalidRecord(format!(
            "{held_layers} layers held, but the image has {}",
            record.layers.len()
        )));
    }
    let parts = std::iter::once(&record.config).chain(record.layers.iter().map(|l| &l.part));
    // The digests become paths: a record from a peer must not make them anything but hex.
    if let Some(bad) = parts.clone().find(|part| !is_sha256_digest(&part.digest)) {
        return Err(ImageError::InvalidRecord(format!(
            "{:?} is not a sha256 digest",
            bad.digest
        )));
    }
    let manifest = [ManifestEntry {
        config: blob_name(&record.config),
        repo_tags: [&record.name],
        layers: record.layers.iter().map(|l| blob_name(&l.part)).collect(),
    }];
    let manifest = serde_json::to_vec(&manifest).map_err(|e| ImageError::Io {
        doing: "encoding manifest.json",
        source: io::Error::other(e),
    })?;

    let write_error = ImageError::io("writing the image archive");
    let mut tar = tar::Builder::new(out);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = new_header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut header, dir, io::empty())
            .map_err(ImageError::io("writing the image archive"))?;
    }
    let mut header = new_header(tar::EntryType::Regular, 0o644, manifest.len() as u64);
    tar.append_data(&mut header, "manifest.json", manifest.as_slice())
        .map_err(ImageError::io("writing the image archive"))?;
    let needed = std::iter::once(&record.config)
        .chain(record.layers[held_layers..].iter().map(|layer| &layer.part));
    // An image may hold the same layer twice; its file is written once.
    let mut written = HashSet::new();
    for part in needed {
        if !written.insert(&part.digest) {
            continue;
        }
        let path = blob_path(&part.hash).ok_or(ImageError::MissingBlob { hash: part.hash })?;
        let file = File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ImageError::MissingBlob { hash: part.hash },
            _ => ImageError::Io {
                doing: "opening a blob",
                source,
            },
        })?;
        let size = file
            .metadata()
            .map_err(ImageError::io("opening a blob"))?
            .len();
        if size != part.size {
            return Err(ImageError::InvalidRecord(format!(
                "blob {} is {size} bytes, the record says {}",
                part.hash, part.size
            )));
        }
        let mut header = new_header(tar::EntryType::Regular, 0o644, size);
        tar.append_data(&mut header, blob_name(part), file)
            .map_err(ImageError::io("writing the image archive"))?;
    }
    tar.into_inner()
        .and_then(|mut out| out.flush())
        .map_err(write_error)
}

/// Where a part goes in the archive: `blobs/sha256/<hex>`, as Docker 25+ writes its saves.
fn blob_name(part: &ImagePart) -> String {
    format!("blobs/sha256/{}", &part.digest["sha256:".len()..])
}

/// A reproducible header: the same record always makes the same archive.
pub(crate) fn new_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::image::ImageLayer;

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn record(diff_ids: &[u8]) -> ImageRecord {
        let part = |n| ImagePart {
            digest: digest(n),
            hash: BlobHash([n; 32]),
            size: 1,
        };
        ImageRecord {
            name: "app:1".to_owned(),
            config: part(0xff),
            layers: diff_ids
                .iter()
                .map(|n| ImageLayer {
                    part: part(*n),
                    diff_id: digest(*n),
                })
                .collect(),
        }
    }

    fn held(images: &[&[u8]]) -> Vec<Vec<String>> {
        images
            .iter()
            .map(|ids| ids.iter().map(|n| digest(*n)).collect())
            .collect()
    }

    #[test]
    fn only_a_prefix_of_the_chain_counts_as_held() {
        let b = record(&[1, 2, 3]);
        assert_eq!(layers_held_by_engine(&b, &[]), 0);
        assert_eq!(layers_held_by_engine(&b, &held(&[&[1]])), 1);
        assert_eq!(layers_held_by_engine(&b, &held(&[&[1, 2, 9]])), 2);
        assert_eq!(layers_held_by_engine(&b, &held(&[&[1, 2, 3, 4]])), 3);
        // The best of several images.
        assert_eq!(layers_held_by_engine(&b, &held(&[&[1], &[1, 2], &[9]])), 2);
        // The same layers on other lower layers are other chains.
        assert_eq!(layers_held_by_engine(&b, &held(&[&[2, 3], &[9, 2, 3]])), 0);
    }

    #[test]
    fn a_record_with_a_bad_digest_or_too_many_held_layers_is_refused() {
        let mut bad = record(&[1]);
        bad.layers[0].part.digest = "sha256:../../etc".to_owned();
        let none = |_: &BlobHash| None;
        assert!(matches!(
            write_loadable_archive(&bad, 0, none, io::sink()),
            Err(ImageError::InvalidRecord(_))
        ));
        assert!(matches!(
            write_loadable_archive(&record(&[1]), 2, none, io::sink()),
            Err(ImageError::InvalidRecord(_))
        ));
        assert!(matches!(
            write_loadable_archive(&record(&[1]), 1, none, io::sink()),
            Err(ImageError::MissingBlob { .. })
        ));
    }
}
