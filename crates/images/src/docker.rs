//! `docker save` archives: `manifest.json` lists, per image, its config file, its tags and its
//! layer files, bottom first. Docker 25+ also writes an OCI layout beside it and makes the legacy
//! paths symlinks into `blobs/sha256/`; the tree resolves those.

use std::{collections::HashMap, fs::File};

use serde::Deserialize;

use crate::{
    ImageError,
    plan::{
        Compression, LayerRef, Plan, assemble, check_digest, check_layer_count, choose_name,
        digest_in_path, parse_json, read_json_file, sha256_digest,
    },
    tree::Tree,
};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
    /// Foreign layers (Windows base images) that are not in the archive.
    #[serde(default)]
    layer_sources: Option<HashMap<String, serde_json::Value>>,
}

pub(crate) fn plan(tree: &Tree, file: &mut File, name: Option<&str>) -> Result<Plan, ImageError> {
    let (_, bytes) = read_json_file(tree, file, "manifest.json")?;
    let mut entries: Vec<ManifestEntry> = parse_json(&bytes, "manifest.json")?;
    let entry = match entries.len() {
        0 => return Err(ImageError::invalid("manifest.json lists no image")),
        1 => entries.remove(0),
        n => return Err(ImageError::SeveralImages(n)),
    };
    if entry
        .layer_sources
        .is_some_and(|sources| !sources.is_empty())
    {
        return Err(ImageError::Unsupported(
            "foreign layers (LayerSources), which are not in the archive".to_owned(),
        ));
    }
    check_layer_count(entry.layers.len())?;
    let name = choose_name(name, entry.repo_tags.unwrap_or_default())?;

    let (config_path, config) = read_json_file(tree, file, &entry.config)?;
    let config_digest = sha256_digest(&config);
    if let Some(declared) = digest_in_path(&config_path) {
        check_digest("the config", &declared, &config)?;
    }
    let layers = entry
        .layers
        .iter()
        .map(|path| {
            let (resolved, span) = tree.file(path)?;
            Ok(LayerRef {
                span,
                digest: digest_in_path(&resolved),
                compression: Compression::Detect,
            })
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    assemble(name, config, config_digest, layers)
}
