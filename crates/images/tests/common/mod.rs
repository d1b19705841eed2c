//! Helpers for the image tests: hand-made archives (with raw headers, so hostile paths can be
//! written), a blob store in a temp dir, and the Docker CLI.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use mycel_blobs::{BlobMetrics, BlobStore};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

pub fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("a sha256 digest")
}

/// One archive entry, written as given (no path cleaning).
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryType,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
}

impl Entry {
    pub fn file(path: impl AsRef<[u8]>, data: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.as_ref().to_vec(),
            kind: EntryType::Regular,
            data: data.into(),
            link: Vec::new(),
        }
    }

    pub fn symlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        Self {
            path: path.as_ref().to_vec(),
            kind: EntryType::Symlink,
            data: Vec::new(),
            link: target.as_ref().to_vec(),
        }
    }

    pub fn dir(path: impl AsRef<[u8]>) -> Self {
        Self {
            path: path.as_ref().to_vec(),
            kind: EntryType::Directory,
            data: Vec::new(),
            link: Vec::new(),
        }
    }

    pub fn special(path: impl AsRef<[u8]>, kind: EntryType) -> Self {
        Self {
            path: path.as_ref().to_vec(),
            kind,
            data: Vec::new(),
            link: Vec::new(),
        }
    }
}

/// A tar of `entries`; names over 100 bytes get a GNU long-name header.
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        if entry.path.len() > 100 {
            let mut long = raw_header(b"././@LongLink", EntryType::GNULongName, &[], 0);
            let mut name = entry.path.clone();
            name.push(0);
            long.set_size(name.len() as u64);
            long.set_cksum();
            tar.append(&long, name.as_slice()).unwrap();
        }
        let path = &entry.path[..entry.path.len().min(100)];
        let header = raw_header(path, entry.kind, &entry.link, entry.data.len() as u64);
        tar.append(&header, entry.data.as_slice()).unwrap();
    }
    tar.into_inner().unwrap()
}

fn raw_header(path: &[u8], kind: EntryType, link: &[u8], size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.as_old_mut().name[..path.len()].copy_from_slice(path);
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_size(size);
    header.set_mtime(0);
    header.set_cksum();
    header
}

/// A root file system layer holding `files`.
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<Entry> = files.iter().map(|(p, d)| Entry::file(p, *d)).collect();
    tar_of(&entries)
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A layer as stored in an archive, and the diff_id of its uncompressed tar.
#[derive(Clone, Debug)]
pub struct Layer {
    pub stored: Vec<u8>,
    pub diff_id: String,
    pub media_type: &'static str,
}

impl Layer {
    pub fn plain(files: &[(&str, &[u8])]) -> Self {
        let tar = layer_tar(files);
        Self {
            diff_id: sha256(&tar),
            stored: tar,
            media_type: "application/vnd.oci.image.layer.v1.tar",
        }
    }

    pub fn gzipped(files: &[(&str, &[u8])]) -> Self {
        let tar = layer_tar(files);
        Self {
            diff_id: sha256(&tar),
            stored: gzip(&tar),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }
}

pub fn config_for(layers: &[Layer]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// A legacy `docker save` archive (as Docker before 25 writes it).
pub fn save_entries(config: &[u8], layers: &[Layer], tags: &[&str]) -> Vec<Entry> {
    let config_name = format!("{}.json", hex(&sha256(config)));
    let mut entries = vec![Entry::file(&config_name, config)];
    let mut layer_paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let path = format!("layer{i}/layer.tar");
        entries.push(Entry::dir(format!("layer{i}/")));
        entries.push(Entry::file(&path, layer.stored.clone()));
        layer_paths.push(path);
    }
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": tags,
        "Layers": layer_paths,
    }]);
    entries.push(Entry::file("manifest.json", manifest.to_string()));
    entries
}

/// An OCI image layout; `annotations` go on index.json's descriptor.
pub fn oci_entries(config: &[u8], layers: &[Layer], annotations: serde_json::Value) -> Vec<Entry> {
    let blob = |bytes: &[u8]| Entry::file(format!("blobs/sha256/{}", hex(&sha256(bytes))), bytes);
    let descriptor = |media_type: &str, bytes: &[u8]| serde_json::json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| descriptor(l.media_type, &l.stored)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let mut top = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    top["annotations"] = annotations;
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [top]});
    let mut entries = vec![
        Entry::file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
        Entry::file("index.json", index.to_string()),
        Entry::dir("blobs/"),
        Entry::dir("blobs/sha256/"),
        blob(&manifest),
        blob(config),
    ];
    entries.extend(layers.iter().map(|l| blob(&l.stored)));
    entries
}

pub fn write_archive(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

pub fn open_store(dir: &Path) -> BlobStore {
    BlobStore::open(&dir.join("blobs"), 1 << 30, BlobMetrics::default()).unwrap()
}

/// Runs the Docker CLI, failing the test with its stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    let output = docker_output(args);
    assert!(
        output.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub fn docker_output(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("running the docker CLI")
}

/// These tests need a Docker engine; without one they fail, saying so, rather than pass.
pub fn require_docker() {
    let output = Command::new("docker").arg("info").output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "these tests need a running Docker engine, and `docker info` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => panic!("these tests need the docker CLI and a running engine: {e}"),
    }
}

/// Starts a Docker test: checks the engine, gives a temp dir and one unique image name per
/// `tests` entry, and a guard that removes those images when the test ends.
pub fn docker_test<const N: usize>(tests: [&str; N]) -> (tempfile::TempDir, [String; N], Images) {
    require_docker();
    let names = tests.map(unique_name);
    let guard = Images(names.to_vec());
    (tempfile::tempdir().unwrap(), names, guard)
}

/// A name no other test (or run) uses.
pub fn unique_name(test: &str) -> String {
    format!("mycel-images-test-{test}-{}:1", std::process::id())
}

/// Removes the images it names when dropped, also when the test fails.
pub struct Images(pub Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = docker_output(&["rmi", "-f", name]);
        }
    }
}

/// `RootFS.Layers` and the id of an image in the engine.
pub fn inspect(name: &str) -> (Vec<String>, String) {
    let layers = docker(&[
        "image",
        "inspect",
        name,
        "--format",
        "{{json .RootFS.Layers}}",
    ]);
    let id = docker(&["image", "inspect", name, "--format", "{{.Id}}"]);
    (serde_json::from_str(&layers).unwrap(), id)
}

/// The paths of the entries of a tar.
pub fn tar_paths(bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}
