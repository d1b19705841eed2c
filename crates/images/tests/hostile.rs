//! Hostile and broken archives: each is refused with its own error code, and the blob store is
//! left exactly as it was (no blob, no temp file).

mod common;

use std::fs;

use common::*;
use mycel_blobs::{BlobMetrics, BlobStore};
use mycel_images::{ImageError, MAX_ENTRIES, MAX_JSON_BYTES, MAX_LAYERS, import_archive};
use tar::EntryType;

fn layers() -> Vec<Layer> {
    vec![
        Layer::plain(&[("base.txt", b"base")]),
        Layer::plain(&[("app.txt", b"app")]),
    ]
}

/// A valid `docker save` archive's entries, to break one way at a time.
fn good() -> Vec<Entry> {
    let layers = layers();
    save_entries(&config_for(&layers), &layers, &["victim:1"])
}

fn good_oci() -> Vec<Entry> {
    let layers = [Layer::gzipped(&[("a", b"a")])];
    let annotations = serde_json::json!({"org.opencontainers.image.ref.name": "victim:1"});
    oci_entries(&config_for(&layers), &layers, annotations)
}

fn with(mut entries: Vec<Entry>, extra: impl IntoIterator<Item = Entry>) -> Vec<Entry> {
    entries.extend(extra);
    entries
}

fn replace(mut entries: Vec<Entry>, path: &str, data: impl Into<Vec<u8>>) -> Vec<Entry> {
    let entry = entries
        .iter_mut()
        .find(|e| e.path == path.as_bytes())
        .unwrap();
    entry.data = data.into();
    entries
}

/// Imports `archive`, expecting a refusal that leaves the store untouched; gives its code.
async fn refused_bytes(archive: &[u8], name: Option<&str>, max_blob_bytes: u64) -> ImageError {
    let dir = tempfile::tempdir().unwrap();
    let path = write_archive(dir.path(), "hostile.tar", archive);
    let root = dir.path().join("blobs");
    let store = BlobStore::open(&root, max_blob_bytes, BlobMetrics::default()).unwrap();
    let error = import_archive(&store, &path, name)
        .await
        .expect_err("the archive was accepted");
    assert_eq!(store.hashes().unwrap(), [], "{error}: blobs were stored");
    for sub in ["data", "tmp"] {
        let left = fs::read_dir(root.join(sub)).unwrap().count();
        assert_eq!(left, 0, "{error}: {sub}/ holds {left} files");
    }
    error
}

async fn refused(entries: &[Entry]) -> ImageError {
    refused_bytes(&tar_of(entries), None, 1 << 30).await
}

macro_rules! assert_code {
    ($error:expr, $code:literal) => {{
        let error = $error;
        assert_eq!(error.code(), $code, "{error}");
        assert!(error.is_client_error(), "{error}");
    }};
}

#[tokio::test]
async fn the_unbroken_archives_import() {
    for entries in [good(), good_oci()] {
        let dir = tempfile::tempdir().unwrap();
        let path = write_archive(dir.path(), "good.tar", &tar_of(&entries));
        let store = open_store(dir.path());
        let record = import_archive(&store, &path, None).await.unwrap().record;
        assert_eq!(record.name, "victim:1");
    }
}

#[tokio::test]
async fn unsafe_paths_are_refused() {
    assert_code!(
        refused(&with(good(), [Entry::file("../x", "x")])).await,
        "unsafe_path"
    );
    assert_code!(
        refused(&with(good(), [Entry::file("a/../../x", "x")])).await,
        "unsafe_path"
    );
    assert_code!(
        refused(&with(good(), [Entry::file("/etc/x", "x")])).await,
        "unsafe_path"
    );
    let long_with_nul = format!("{}\0hidden", "d/".repeat(60));
    assert_code!(
        refused(&with(good(), [Entry::file(long_with_nul, "x")])).await,
        "unsafe_path"
    );
    // A manifest may not name what the archive could not hold either.
    let manifest =
        serde_json::json!([{"Config": "../config.json", "RepoTags": ["a:1"], "Layers": []}]);
    assert_code!(
        refused(&replace(good(), "manifest.json", manifest.to_string())).await,
        "unsafe_path"
    );
}

#[tokio::test]
async fn links_out_of_the_tree_to_nothing_or_in_loops_are_refused() {
    for links in [
        vec![Entry::symlink("passwd", "/etc/passwd")],
        vec![Entry::symlink("a/passwd", "../../etc/passwd")],
        vec![Entry::symlink("dangling", "nowhere")],
        vec![
            Entry::symlink("loop-a", "loop-b"),
            Entry::symlink("loop-b", "loop-a"),
        ],
        vec![Entry::symlink("self", "./self")],
    ] {
        assert_code!(refused(&with(good(), links)).await, "bad_link");
    }
    let mut hard = Entry::symlink("hard", "../outside");
    hard.kind = EntryType::Link;
    assert_code!(refused(&with(good(), [hard])).await, "bad_link");
    // A manifest that names a layer through a link to /etc/passwd.
    let mut entries = good();
    let layer = entries
        .iter_mut()
        .find(|e| e.path == b"layer1/layer.tar")
        .unwrap();
    *layer = Entry::symlink("layer1/layer.tar", "/etc/passwd");
    assert_code!(refused(&entries).await, "bad_link");
}

#[tokio::test]
async fn devices_fifos_and_duplicates_are_refused() {
    for kind in [EntryType::Fifo, EntryType::Char, EntryType::Block] {
        assert_code!(
            refused(&with(good(), [Entry::special("dev", kind)])).await,
            "unsafe_entry"
        );
    }
    let twice = Entry::file("manifest.json", "[]");
    assert_code!(refused(&with(good(), [twice])).await, "duplicate_path");
    let spelt_otherwise = Entry::file("./layer0//layer.tar", "x");
    assert_code!(
        refused(&with(good(), [spelt_otherwise])).await,
        "duplicate_path"
    );
}

#[tokio::test]
async fn bytes_that_do_not_match_their_digest_or_diff_id_are_refused() {
    // An OCI layer whose bytes changed (same size) after its descriptor was written.
    let mut entries = good_oci();
    let layer = Layer::gzipped(&[("a", b"a")]);
    let path = format!("blobs/sha256/{}", hex(&sha256(&layer.stored)));
    let blob = entries
        .iter_mut()
        .find(|e| e.path == path.as_bytes())
        .unwrap();
    let last = blob.data.len() - 1;
    blob.data[last] ^= 0xff;
    assert_code!(refused(&entries).await, "digest_mismatch");

    // A docker save whose config says another diff_id than its layer has.
    let layers = layers();
    let mut lying = layers.clone();
    lying[1].diff_id = sha256(b"something else");
    let entries = save_entries(&config_for(&lying), &layers, &["victim:1"]);
    assert_code!(refused(&entries).await, "diff_id_mismatch");

    // A gzip layer whose config lists the digest of the compressed bytes as its diff_id.
    let mut gz = Layer::gzipped(&[("a", b"a")]);
    let honest = gz.clone();
    gz.diff_id = sha256(&gz.stored);
    let entries = oci_entries(
        &config_for(&[gz]),
        &[honest],
        serde_json::json!({
            "org.opencontainers.image.ref.name": "victim:1"
        }),
    );
    assert_code!(refused(&entries).await, "diff_id_mismatch");

    // A legacy config file named by a digest it does not have.
    let mut entries = good();
    let config = entries
        .iter_mut()
        .find(|e| e.path.ends_with(b".json") && e.path != b"manifest.json");
    config.unwrap().data.push(b' ');
    assert_code!(refused(&entries).await, "digest_mismatch");
}

#[tokio::test]
async fn truncated_and_non_tar_archives_are_refused() {
    let whole = tar_of(&good());
    // Cut inside the last layer's data, and cut right before the end-of-archive blocks.
    assert_code!(
        refused_bytes(&whole[..whole.len() - 1500], None, 1 << 30).await,
        "invalid_archive"
    );
    assert_code!(
        refused_bytes(&whole[..whole.len() - 1024], None, 1 << 30).await,
        "invalid_archive"
    );
    assert_code!(
        refused_bytes(&[0x42; 4096], None, 1 << 30).await,
        "invalid_archive"
    );
    assert_code!(refused_bytes(&[], None, 1 << 30).await, "invalid_archive");
    let garbled_layer = replace(good(), "layer1/layer.tar", gzip(b"x")[..10].to_vec());
    assert_code!(refused(&garbled_layer).await, "invalid_archive");
}

#[tokio::test]
async fn oversized_archives_are_refused() {
    let padding = " ".repeat(MAX_JSON_BYTES as usize + 1);
    let huge = format!(r#"[{{"Config":"c","RepoTags":[],"Layers":[]}}{padding}]"#);
    assert_code!(
        refused(&replace(good(), "manifest.json", huge)).await,
        "too_large"
    );

    let many: Vec<Entry> = (0..=MAX_ENTRIES)
        .map(|i| Entry::dir(format!("d{i}/")))
        .collect();
    assert_code!(refused(&with(good(), many)).await, "too_large");

    let layer_paths = vec!["layer0/layer.tar"; MAX_LAYERS + 1];
    let config_name = good()[0].path.clone();
    let manifest = serde_json::json!([{
        "Config": String::from_utf8(config_name).unwrap(), "RepoTags": ["a:1"], "Layers": layer_paths,
    }]);
    assert_code!(
        refused(&replace(good(), "manifest.json", manifest.to_string())).await,
        "too_large"
    );

    // A layer larger than this node stores.
    let error = refused_bytes(&tar_of(&good()), None, 100).await;
    assert_code!(error, "too_large");
}

#[tokio::test]
async fn one_named_image_per_archive() {
    let manifest: serde_json::Value = serde_json::from_slice(&good().last().unwrap().data).unwrap();
    let two = serde_json::json!([manifest[0], manifest[0]]);
    assert_code!(
        refused(&replace(good(), "manifest.json", two.to_string())).await,
        "several_images"
    );

    let mut entries = good_oci();
    let index: serde_json::Value = serde_json::from_slice(&entries[1].data).unwrap();
    let mut other = index["manifests"][0].clone();
    other["digest"] = serde_json::json!(sha256(b"another manifest"));
    let two = serde_json::json!({"schemaVersion": 2, "manifests": [index["manifests"][0], other]});
    entries[1].data = two.to_string().into_bytes();
    assert_code!(refused(&entries).await, "several_images");

    let layers = layers();
    let unnamed = save_entries(&config_for(&layers), &layers, &[]);
    assert_code!(refused(&unnamed).await, "no_name");
    let unnamed_oci = oci_entries(&config_for(&layers), &layers, serde_json::json!({}));
    assert_code!(refused(&unnamed_oci).await, "no_name");
    let two_names = save_entries(&config_for(&layers), &layers, &["a:1", "b:1"]);
    assert_code!(refused(&two_names).await, "ambiguous_name");
    assert_code!(
        refused_bytes(&tar_of(&good()), Some("Not A Name"), 1 << 30).await,
        "invalid_name"
    );
}

#[tokio::test]
async fn configs_must_describe_the_layers() {
    let layers = layers();
    let short = save_entries(&config_for(&layers[..1]), &layers, &["a:1"]);
    assert_code!(refused(&short).await, "invalid_config");
    let not_layers = br#"{"rootfs":{"type":"tarball","diff_ids":[]}}"#;
    assert_code!(
        refused(&save_entries(not_layers, &[], &["a:1"])).await,
        "invalid_config"
    );
    assert_code!(
        refused(&save_entries(b"[1,2]", &[], &["a:1"])).await,
        "invalid_config"
    );
}

#[tokio::test]
async fn zstd_and_foreign_layers_are_refused() {
    let mut zstd = Layer::plain(&[("a", b"a")]);
    zstd.media_type = "application/vnd.oci.image.layer.v1.tar+zstd";
    let named = serde_json::json!({"org.opencontainers.image.ref.name": "a:1"});
    let entries = oci_entries(
        &config_for(std::slice::from_ref(&zstd)),
        &[zstd.clone()],
        named.clone(),
    );
    assert_code!(refused(&entries).await, "unsupported");

    let mut foreign = zstd.clone();
    foreign.media_type = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    let entries = oci_entries(
        &config_for(std::slice::from_ref(&foreign)),
        &[foreign],
        named,
    );
    assert_code!(refused(&entries).await, "unsupported");

    // docker save declares no media type: zstd is recognised by its magic number.
    let mut sniffed = zstd;
    sniffed.stored = vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
    let entries = save_entries(
        &config_for(std::slice::from_ref(&sniffed)),
        &[sniffed],
        &["a:1"],
    );
    assert_code!(refused(&entries).await, "unsupported");
}
