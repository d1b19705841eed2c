//! OCI image layouts: `oci-layout`, `index.json` naming an image manifest (or an image index one
//! level deep), and every blob at `blobs/sha256/<hex>`, each checked against its descriptor.

use std::fs::File;

use mycel_protocol::image::is_sha256_digest;
use serde::Deserialize;

use crate::{
    ImageError,
    plan::{
        Compression, LayerRef, MAX_JSON_BYTES, Plan, assemble, check_digest, check_layer_count,
        choose_name, parse_json, read_json_file,
    },
    tree::{Span, Tree, read_small},
};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Annotations that name an image: containerd's holds the whole reference, the OCI one is often
/// only a tag, so containerd's is preferred.
const NAME_ANNOTATIONS: [&str; 2] = [
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];

#[derive(Deserialize)]
struct Layout {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<std::collections::HashMap<String, String>>,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

impl Descriptor {
    fn annotation(&self, key: &str) -> Option<&String> {
        self.annotations.as_ref()?.get(key)
    }

    fn is_index(&self) -> bool {
        [OCI_INDEX, DOCKER_LIST].contains(&self.media_type.as_str())
    }

    fn is_manifest(&self) -> bool {
        [OCI_MANIFEST, DOCKER_MANIFEST].contains(&self.media_type.as_str())
    }
}

pub(crate) fn plan(tree: &Tree, file: &mut File, name: Option<&str>) -> Result<Plan, ImageError> {
    let (_, bytes) = read_json_file(tree, file, "oci-layout")?;
    let layout: Layout = parse_json(&bytes, "oci-layout")?;
    if !layout.version.starts_with("1.") {
        return Err(ImageError::Unsupported(format!(
            "OCI image layout version {:?}",
            layout.version
        )));
    }
    let (_, bytes) = read_json_file(tree, file, "index.json")?;
    let index: Index = parse_json(&bytes, "index.json")?;
    check_schema(index.schema_version, "index.json")?;

    // Several descriptors may name one image (one per tag); several images are refused.
    let top = index
        .manifests
        .first()
        .ok_or_else(|| ImageError::invalid("index.json lists no image"))?;
    let mut digests: Vec<&str> = index.manifests.iter().map(|d| d.digest.as_str()).collect();
    digests.sort_unstable();
    digests.dedup();
    if digests.len() > 1 {
        return Err(ImageError::SeveralImages(digests.len()));
    }
    let found = index.manifests.iter().filter_map(|descriptor| {
        NAME_ANNOTATIONS
            .iter()
            .find_map(|key| descriptor.annotation(key))
            .cloned()
    });
    let name = choose_name(name, found)?;

    let manifest_bytes = if top.is_index() {
        let bytes = read_blob(tree, file, top, "the image index", MAX_JSON_BYTES)?;
        let nested: Index = parse_json(&bytes, "the image index")?;
        check_schema(nested.schema_version, "the image index")?;
        let images: Vec<&Descriptor> = nested
            .manifests
            .iter()
            // Build attestations ride along as manifests of their own; they are not images.
            .filter(|d| {
                d.annotation("vnd.docker.reference.type")
                    .map(String::as_str)
                    != Some("attestation-manifest")
            })
            .collect();
        let manifest = match images.as_slice() {
            [] => return Err(ImageError::invalid("the image index lists no image")),
            [one] => *one,
            several => return Err(ImageError::SeveralImages(several.len())),
        };
        if !manifest.is_manifest() {
            return Err(ImageError::Unsupported(format!(
                "{:?} inside an image index (one level of index is read)",
                manifest.media_type
            )));
        }
        read_blob(tree, file, manifest, "the image manifest", MAX_JSON_BYTES)?
    } else if top.is_manifest() {
        read_blob(tree, file, top, "the image manifest", MAX_JSON_BYTES)?
    } else {
        return Err(ImageError::Unsupported(format!(
            "index.json names a {:?}, not an image",
            top.media_type
        )));
    };
    let manifest: Manifest = parse_json(&manifest_bytes, "the image manifest")?;
    check_schema(manifest.schema_version, "the image manifest")?;
    if !CONFIG_TYPES.contains(&manifest.config.media_type.as_str()) {
        return Err(ImageError::Unsupported(format!(
            "a config of media type {:?} (not a container image)",
            manifest.config.media_type
        )));
    }
    check_layer_count(manifest.layers.len())?;
    let config = read_blob(tree, file, &manifest.config, "the config", MAX_JSON_BYTES)?;
    let layers = manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let compression = layer_compression(layer)?;
            let span = blob_span(tree, layer, &format!("layer {i}"))?;
            Ok(LayerRef {
                span,
                digest: Some(layer.digest.clone()),
                compression,
            })
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    let config_digest = manifest.config.digest.clone();
    assemble(name, config, config_digest, layers)
}

fn check_schema(version: u32, what: &str) -> Result<(), ImageError> {
    if version != 2 {
        return Err(ImageError::Unsupported(format!(
            "{what} of schemaVersion {version}"
        )));
    }
    Ok(())
}

fn layer_compression(layer: &Descriptor) -> Result<Compression, ImageError> {
    if layer.urls.as_ref().is_some_and(|urls| !urls.is_empty()) {
        return Err(ImageError::Unsupported(
            "foreign layers (fetched from URLs, not in the archive)".to_owned(),
        ));
    }
    match layer.media_type.as_str() {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::Tar),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd" => Err(ImageError::Unsupported(
            "zstd-compressed layers; export the image with gzip or uncompressed layers".to_owned(),
        )),
        other if other.contains("nondistributable") || other.contains("foreign") => {
            Err(ImageError::Unsupported(format!("foreign layers ({other})")))
        }
        other => Err(ImageError::Unsupported(format!(
            "layers of media type {other:?}"
        ))),
    }
}

/// Where a descriptor's blob is, checking its digest's form and its size.
fn blob_span(tree: &Tree, descriptor: &Descriptor, what: &str) -> Result<Span, ImageError> {
    if !is_sha256_digest(&descriptor.digest) {
        return Err(ImageError::Unsupported(format!(
            "{what}'s digest {:?} (only sha256 is read)",
            descriptor.digest
        )));
    }
    let hex = &descriptor.digest["sha256:".len()..];
    let (_, span) = tree.file(&format!("blobs/sha256/{hex}"))?;
    if span.size != descriptor.size {
        return Err(ImageError::invalid(format!(
            "{what} is {} bytes in the archive but its descriptor says {}",
            span.size, descriptor.size
        )));
    }
    Ok(span)
}

/// Reads a small blob whole and checks its digest.
fn read_blob(
    tree: &Tree,
    file: &mut File,
    descriptor: &Descriptor,
    what: &str,
    limit: u64,
) -> Result<Vec<u8>, ImageError> {
    let span = blob_span(tree, descriptor, what)?;
    let bytes = read_small(file, span, what, limit)?;
    check_digest(what, &descriptor.digest, &bytes)?;
    Ok(bytes)
}
