//! What pass 1 concludes from an archive's small JSON files: the image's name, its config, and
//! where each layer's bytes are with the digests they must have. Both archive formats end here.

use std::fs::File;

use mycel_protocol::image::{MAX_LAYERS, is_sha256_digest, normalize_image_name};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{
    ImageError,
    tree::{Span, Tree, read_small},
};

/// The largest JSON file read from an archive (manifests, indexes, the config).
pub const MAX_JSON_BYTES: u64 = 4 * 1024 * 1024;

/// An image found in an archive, checked as far as its JSON files go.
#[derive(Debug)]
pub(crate) struct Plan {
    /// `name:tag`, normalised.
    pub(crate) name: String,
    pub(crate) config: Vec<u8>,
    /// `sha256:<hex>` of `config`, already checked against any digest the archive declared.
    pub(crate) config_digest: String,
    /// Bottom layer first.
    pub(crate) layers: Vec<LayerPlan>,
}

#[derive(Debug)]
pub(crate) struct LayerPlan {
    pub(crate) span: Span,
    /// The digest the archive declares for the stored bytes, when it declares one (OCI
    /// descriptors and `blobs/sha256/<hex>` paths do; legacy `docker save` paths do not).
    pub(crate) digest: Option<String>,
    pub(crate) compression: Compression,
    /// The config's `rootfs.diff_ids` entry: the sha256 of the uncompressed tar.
    pub(crate) diff_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    Tar,
    Gzip,
    /// By the first bytes, as `docker load` does (`docker save` declares no media types).
    Detect,
}

/// A layer as an archive's manifest names it, before the config is consulted.
pub(crate) struct LayerRef {
    pub(crate) span: Span,
    pub(crate) digest: Option<String>,
    pub(crate) compression: Compression,
}

/// Joins a config and the layers a manifest names, checking the config's `rootfs` against them.
pub(crate) fn assemble(
    name: String,
    config: Vec<u8>,
    config_digest: String,
    layers: Vec<LayerRef>,
) -> Result<Plan, ImageError> {
    let diff_ids = config_diff_ids(&config)?;
    if diff_ids.len() != layers.len() {
        return Err(ImageError::InvalidConfig(format!(
            "the manifest lists {} layers but rootfs.diff_ids has {}",
            layers.len(),
            diff_ids.len()
        )));
    }
    let layers = layers
        .into_iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| LayerPlan {
            span: layer.span,
            digest: layer.digest,
            compression: layer.compression,
            diff_id,
        })
        .collect();
    Ok(Plan {
        name,
        config,
        config_digest,
        layers,
    })
}

/// Refuses more layers than an image may have, before any of them is looked at.
pub(crate) fn check_layer_count(count: usize) -> Result<(), ImageError> {
    if count > MAX_LAYERS {
        return Err(ImageError::TooLarge {
            what: format!("an image of {count} layers"),
            limit: MAX_LAYERS as u64,
        });
    }
    Ok(())
}

fn config_diff_ids(config: &[u8]) -> Result<Vec<String>, ImageError> {
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(rename = "type")]
        kind: String,
        diff_ids: Vec<String>,
    }
    let config: Config = serde_json::from_slice(config)
        .map_err(|e| ImageError::InvalidConfig(format!("not an image config ({e})")))?;
    if config.rootfs.kind != "layers" {
        return Err(ImageError::InvalidConfig(format!(
            "rootfs.type is {:?}, not \"layers\"",
            config.rootfs.kind
        )));
    }
    check_layer_count(config.rootfs.diff_ids.len())?;
    if let Some(bad) = config.rootfs.diff_ids.iter().find(|d| !is_sha256_digest(d)) {
        return Err(ImageError::InvalidConfig(format!(
            "{bad:?} in rootfs.diff_ids is not a sha256 digest"
        )));
    }
    Ok(config.rootfs.diff_ids)
}

/// Reads a JSON file of the archive under [`MAX_JSON_BYTES`].
pub(crate) fn read_json_file(
    tree: &Tree,
    file: &mut File,
    path: &str,
) -> Result<(String, Vec<u8>), ImageError> {
    let (resolved, span) = tree.file(path)?;
    let bytes = read_small(file, span, path, MAX_JSON_BYTES)?;
    Ok((resolved, bytes))
}

pub(crate) fn parse_json<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &str,
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::invalid(format!("{what}: {e}")))
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Checks bytes against a declared digest.
pub(crate) fn check_digest(what: &str, declared: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let actual = sha256_digest(bytes);
    if actual != declared {
        return Err(ImageError::DigestMismatch {
            what: what.to_owned(),
            declared: declared.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// The digest a content-addressed path declares: `blobs/sha256/<hex>` (OCI, and Docker 25+
/// saves) or a legacy config's `<hex>.json`.
pub(crate) fn digest_in_path(path: &str) -> Option<String> {
    let hex = path
        .strip_prefix("blobs/sha256/")
        .or_else(|| path.strip_suffix(".json"))?;
    let digest = format!("sha256:{hex}");
    is_sha256_digest(&digest).then_some(digest)
}

/// The image's name: the caller's when given, else the one name the archive gives.
pub(crate) fn choose_name(
    given: Option<&str>,
    found: impl IntoIterator<Item = String>,
) -> Result<String, ImageError> {
    let normalize = |name: &str| {
        normalize_image_name(name).map_err(|reason| ImageError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if let Some(given) = given {
        return normalize(given);
    }
    let mut names = found
        .into_iter()
        .map(|name| normalize(&name))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    names.dedup();
    match names.len() {
        0 => Err(ImageError::NoName),
        1 => Ok(names.remove(0)),
        _ => Err(ImageError::AmbiguousName { names }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_name_wins_and_an_archive_must_name_one_image() {
        let found = || vec!["a:1".to_owned(), "b".to_owned()];
        assert_eq!(choose_name(Some("c"), found()).unwrap(), "c:latest");
        assert!(matches!(
            choose_name(None, found()),
            Err(ImageError::AmbiguousName { .. })
        ));
        assert!(matches!(
            choose_name(None, Vec::new()),
            Err(ImageError::NoName)
        ));
        // The same name spelt twice is one name.
        let same = vec!["a".to_owned(), "a:latest".to_owned()];
        assert_eq!(choose_name(None, same).unwrap(), "a:latest");
        assert!(matches!(
            choose_name(Some("Bad Name"), found()),
            Err(ImageError::InvalidName { .. })
        ));
    }

    #[test]
    fn content_addressed_paths_declare_their_digest() {
        let hex = "0f".repeat(32);
        let digest = format!("sha256:{hex}");
        assert_eq!(
            digest_in_path(&format!("blobs/sha256/{hex}")),
            Some(digest.clone())
        );
        assert_eq!(digest_in_path(&format!("{hex}.json")), Some(digest));
        assert_eq!(digest_in_path(&format!("{hex}/layer.tar")), None);
        assert_eq!(digest_in_path("blobs/sha256/xyz"), None);
    }

    #[test]
    fn configs_need_layers_rootfs_with_sha256_diff_ids() {
        let id = format!("sha256:{}", "1".repeat(64));
        let good = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{id}"]}}}}"#);
        assert_eq!(config_diff_ids(good.as_bytes()).unwrap(), [id]);
        for bad in [
            r#"{"rootfs":{"type":"other","diff_ids":[]}}"#,
            r#"{"rootfs":{"type":"layers","diff_ids":["md5:00"]}}"#,
            r#"{"config":{}}"#,
            "[]",
            "not json",
        ] {
            assert!(
                matches!(
                    config_diff_ids(bad.as_bytes()),
                    Err(ImageError::InvalidConfig(_))
                ),
                "{bad}"
            );
        }
    }
}
