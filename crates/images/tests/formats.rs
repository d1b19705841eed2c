//! The archive formats accepted, made by hand: OCI layouts (with and without an index, gzip and
//! plain layers) and `docker save` archives in the Docker 25+ shape, whose paths are symlinks.

mod common;

use common::*;
use mycel_images::{ImageError, import_archive};

async fn import(
    entries: &[Entry],
    name: Option<&str>,
) -> (
    tempfile::TempDir,
    Result<mycel_images::Imported, ImageError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let archive = write_archive(dir.path(), "image.tar", &tar_of(entries));
    let store = open_store(dir.path());
    let result = import_archive(&store, &archive, name).await;
    (dir, result)
}

#[tokio::test]
async fn an_oci_layout_with_gzip_and_plain_layers_imports() {
    let layers = [
        Layer::gzipped(&[("bin/app", b"\x7fELF...")]),
        Layer::plain(&[("etc/app.toml", b"port = 8080\n")]),
    ];
    let config = config_for(&layers);
    let annotations = serde_json::json!({"org.opencontainers.image.ref.name": "team/app:2"});
    let entries = oci_entries(&config, &layers, annotations);
    let (_dir, result) = import(&entries, None).await;
    let record = result.unwrap().record;
    assert_eq!(record.name, "team/app:2");
    assert_eq!(record.config.digest, sha256(&config));
    assert_eq!(record.config.size, config.len() as u64);
    for (layer, made) in record.layers.iter().zip(&layers) {
        assert_eq!(layer.part.digest, sha256(&made.stored));
        assert_eq!(layer.diff_id, made.diff_id);
        assert_eq!(layer.part.size, made.stored.len() as u64);
    }
    // The gzip layer is stored as it came: its digest is not its diff_id.
    assert_ne!(record.layers[0].part.digest, record.layers[0].diff_id);
}

#[tokio::test]
async fn names_come_from_containerd_then_oci_annotations_and_a_given_name_wins() {
    let layers = [Layer::plain(&[("a", b"a")])];
    let config = config_for(&layers);
    let both = serde_json::json!({
        "io.containerd.image.name": "docker.io/library/app:3",
        "org.opencontainers.image.ref.name": "3",
    });
    let entries = oci_entries(&config, &layers, both);
    let (_dir, result) = import(&entries, None).await;
    assert_eq!(result.unwrap().record.name, "docker.io/library/app:3");
    let (_dir, result) = import(&entries, Some("mine")).await;
    assert_eq!(result.unwrap().record.name, "mine:latest");

    let unnamed = oci_entries(&config, &layers, serde_json::json!({}));
    let (_dir, result) = import(&unnamed, Some("given:7")).await;
    assert_eq!(result.unwrap().record.name, "given:7");
}

#[tokio::test]
async fn an_image_index_one_level_deep_is_followed_past_attestations() {
    let layers = [Layer::gzipped(&[("a", b"indexed")])];
    let config = config_for(&layers);
    let mut entries = oci_entries(&config, &layers, serde_json::json!({}));
    // Move the manifest under an index that also lists an attestation manifest.
    let index_entry = entries
        .iter()
        .position(|e| e.path == b"index.json")
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&entries[index_entry].data).unwrap();
    let manifest = index["manifests"][0].clone();
    let attestation = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest["digest"], "size": manifest["size"],
        "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
    });
    let image_index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest, attestation],
    }))
    .unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": sha256(&image_index), "size": image_index.len(),
        "annotations": {"org.opencontainers.image.ref.name": "indexed:1"},
    }]});
    entries[index_entry] = Entry::file("index.json", top.to_string());
    entries.push(Entry::file(
        format!("blobs/sha256/{}", hex(&sha256(&image_index))),
        image_index,
    ));
    let (_dir, result) = import(&entries, None).await;
    let record = result.unwrap().record;
    assert_eq!(record.name, "indexed:1");
    assert_eq!(record.layers[0].diff_id, layers[0].diff_id);
}

#[tokio::test]
async fn a_docker_25_save_with_symlinked_legacy_paths_imports() {
    let layers = [
        Layer::plain(&[("base", b"base")]),
        Layer::plain(&[("app", b"app")]),
    ];
    let config = config_for(&layers);
    // Docker 25+: the bytes live in blobs/sha256/, the legacy paths link there.
    let mut entries = oci_entries(&config, &layers, serde_json::json!({}));
    let mut legacy = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let target = format!("../blobs/sha256/{}", hex(&sha256(&layer.stored)));
        entries.push(Entry::dir(format!("v1-{i}/")));
        entries.push(Entry::symlink(format!("v1-{i}/layer.tar"), target));
        legacy.push(format!("v1-{i}/layer.tar"));
    }
    // A link to a link, to be sure chains resolve.
    entries.push(Entry::symlink(
        "config.json",
        format!("blobs/sha256/{}", hex(&sha256(&config))),
    ));
    entries.push(Entry::symlink("config-link.json", "config.json"));
    let manifest = serde_json::json!([{
        "Config": "config-link.json", "RepoTags": ["linked:25"], "Layers": legacy,
    }]);
    entries.push(Entry::file("manifest.json", manifest.to_string()));
    let (_dir, result) = import(&entries, None).await;
    let record = result.unwrap().record;
    assert_eq!(record.name, "linked:25");
    assert_eq!(record.config.digest, sha256(&config));
    assert_eq!(record.layers[1].diff_id, layers[1].diff_id);
}
