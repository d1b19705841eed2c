//! Container images in the mesh: an image is its config and its layers, each stored as a blob, and
//! a record naming them. The record is itself stored as a blob (its hash is the image's id in the
//! mesh) and kept in the placement state under its `name:tag`, so every node can resolve
//! `[container] image = "name:tag"` and fetch only the layers its Docker engine lacks.

use serde::{Deserialize, Serialize};

use crate::BlobHash;

/// The most layers an image may have (Docker's own limit is 127 for overlay).
pub const MAX_LAYERS: usize = 128;
/// The longest `name:tag` accepted.
pub const MAX_IMAGE_NAME: usize = 255;

/// One part of an image: the config or a layer, as Docker names it and as the mesh stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePart {
    /// `sha256:<64 hex>` of the bytes as stored (what Docker and OCI call the digest).
    pub digest: String,
    /// The same bytes' id in the mesh's blob store.
    pub hash: BlobHash,
    pub size: u64,
}

/// A layer: its stored bytes (maybe compressed) and the digest of its uncompressed tar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLayer {
    #[serde(flatten)]
    pub part: ImagePart,
    /// `sha256:<64 hex>` of the uncompressed tar (the config's `rootfs.diff_ids` entry), which is
    /// how a Docker engine knows whether it already holds the layer.
    pub diff_id: String,
}

/// An image as the mesh knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `name:tag` (a missing tag is `latest`).
    pub name: String,
    pub config: ImagePart,
    /// Bottom layer first.
    pub layers: Vec<ImageLayer>,
}

impl ImageRecord {
    /// The total size of the config and every layer, in bytes.
    pub fn size(&self) -> u64 {
        self.config.size + self.layers.iter().map(|l| l.part.size).sum::<u64>()
    }

    /// Docker's id of the image: the config's digest.
    pub fn image_id(&self) -> &str {
        &self.config.digest
    }
}

/// Checks `sha256:<64 lowercase hex>`.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Normalises an image reference to `name:tag` (adding `:latest`), or says why it is not one.
/// Names follow Docker's rules loosely: lowercase path components, an optional registry host with
/// a port, a tag of `[A-Za-z0-9_.-]` up to 128 characters; digests (`@sha256:`) are not names.
pub fn normalize_image_name(reference: &str) -> Result<String, String> {
    if reference.is_empty() || reference.len() > MAX_IMAGE_NAME {
        return Err(format!(
            "an image name is 1 to {MAX_IMAGE_NAME} characters (got {})",
            reference.len()
        ));
    }
    if reference.contains('@') {
        return Err("name an image by name:tag, not by digest".to_owned());
    }
    // The tag is after the last ':' unless that ':' belongs to a registry host's port.
    let (name, tag) = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "latest"),
    };
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !tag_ok {
        return Err(format!("{tag:?} is not a valid image tag"));
    }
    let mut components = name.split('/').peekable();
    let mut first = true;
    while let Some(component) = components.next() {
        let is_host = first && components.peek().is_some() && component.contains(['.', ':']);
        first = false;
        let ok = component.starts_with(|c: char| c.is_ascii_alphanumeric())
            && if is_host {
                component
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
            } else {
                component
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            };
        if !ok {
            return Err(format!("{name:?} is not a valid image name"));
        }
    }
    Ok(format!("{name}:{tag}"))
}

/// The registry Docker pulls from when a reference names no host.
pub const DOCKER_HUB: &str = "docker.io";

/// The registry host a reference pulls from, as Docker reads it: the part before the first `/`
/// when it looks like a host (it has a `.` or a `:`, or is `localhost`), else Docker Hub.
pub fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => DOCKER_HUB,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_a_tag_and_bad_ones_are_refused() {
        assert_eq!(normalize_image_name("hello").unwrap(), "hello:latest");
        assert_eq!(normalize_image_name("hello:1.0").unwrap(), "hello:1.0");
        assert_eq!(
            normalize_image_name("localhost:5000/team/app").unwrap(),
            "localhost:5000/team/app:latest"
        );
        assert_eq!(
            normalize_image_name("localhost:5000/team/app:v2").unwrap(),
            "localhost:5000/team/app:v2"
        );
        for bad in [
            "",
            "Hello",
            "a:",
            "a:-x",
            "a b",
            "a@sha256:00",
            "/a",
            "a//b",
            "../a",
        ] {
            assert!(normalize_image_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_registry_host_is_the_first_component_when_it_looks_like_one() {
        for (reference, host) in [
            ("nginx:1.27", "docker.io"),
            ("library/nginx:1.27", "docker.io"),
            ("team/app:v2", "docker.io"),
            ("ghcr.io/team/app:v2", "ghcr.io"),
            ("localhost:5000/app:latest", "localhost:5000"),
            ("localhost/app:latest", "localhost"),
            ("registry:5000/app", "registry:5000"),
            ("localhost:latest", "docker.io"),
        ] {
            assert_eq!(registry_host(reference), host, "{reference}");
        }
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert!(is_sha256_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_sha256_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_sha256_digest(&format!("sha512:{}", "a".repeat(64))));
        assert!(!is_sha256_digest("sha256:abc"));
    }
}
