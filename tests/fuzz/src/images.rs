//! Image archives (`docker save` and OCI layouts) as `POST /v1/images` and `[container] archive`
//! take them: untrusted tar files imported into a blob store.
//!
//! Random bytes rarely make a tar header whose checksum holds, and never a manifest whose digests
//! match, so besides raw archives (first byte even) the target takes a description of one (first
//! byte odd) that it writes as a well-formed tar, filling in digests:
//!
//! ```text
//! entry   = kind:u8 path_len:u8 path data_len:u16le data
//! kind    = 0 file, 1 directory, 2 symlink (data: target), 3 hard link (data: target),
//!           anything else: that tar entry type as is
//! in paths and data, @h<i> is the sha256 hex of entry i's data (i one base-36 digit), @s<i> the
//! same with "sha256:", @n<i> its length, @u<i> the sha256 hex of its data gunzipped
//! ```

use std::{cell::RefCell, io::Read};

use mycel_blobs::{BlobMetrics, BlobStore};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::block_on;

struct Store {
    store: BlobStore,
    dir: tempfile::TempDir,
}

thread_local! {
    static STORE: RefCell<Option<Store>> = const { RefCell::new(None) };
}

/// The most entries a description may have.
const MAX_DESCRIBED: usize = 36;

pub fn image_archive(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let archive = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        match described(rest) {
            Some(entries) => tar_of(&entries),
            None => return,
        }
    };
    STORE.with(|cell| {
        let mut store = cell.borrow_mut();
        let store = store.get_or_insert_with(|| {
            let dir = tempfile::tempdir().expect("a temp dir");
            let store = BlobStore::open(&dir.path().join("blobs"), 1 << 30, BlobMetrics::default())
                .expect("a blob store");
            Store { store, dir }
        });
        let path = store.dir.path().join("archive.tar");
        std::fs::write(&path, &archive).expect("the archive is written");
        let name = (mode & 2 != 0).then_some("fuzz/override:1");
        let _ = block_on(mycel_images::import_archive(&store.store, &path, name));
    });
}

/// An archive entry as described.
struct Entry {
    kind: u8,
    path: Vec<u8>,
    data: Vec<u8>,
}

/// The entries `bytes` describe, placeholders filled in; `None` when it describes none.
fn described(mut bytes: &[u8]) -> Option<Vec<Entry>> {
    let mut raw = Vec::new();
    while raw.len() < MAX_DESCRIBED {
        let [kind, path_len, rest @ ..] = bytes else {
            break;
        };
        let path_len = usize::from(*path_len).min(rest.len());
        let (path, rest) = rest.split_at(path_len);
        let (data, rest) = match rest {
            [lo, hi, rest @ ..] => {
                let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
                rest.split_at(len)
            }
            _ => (&rest[..0], &rest[..0]),
        };
        raw.push(Entry {
            kind: *kind,
            path: path.to_vec(),
            data: data.to_vec(),
        });
        bytes = rest;
    }
    if raw.is_empty() {
        return None;
    }
    // Three rounds: a layer, the config naming its digest, the manifest naming the config's.
    let mut data: Vec<Vec<u8>> = raw.iter().map(|e| e.data.clone()).collect();
    for _ in 0..3 {
        let values = Values::new(&data);
        data = raw.iter().map(|e| fill(&e.data, &values)).collect();
    }
    let paths: Vec<Vec<u8>> = {
        let values = Values::new(&data);
        raw.iter().map(|e| fill(&e.path, &values)).collect()
    };
    Some(
        raw.iter()
            .zip(paths)
            .zip(data)
            .map(|((entry, path), data)| Entry {
                kind: entry.kind,
                path,
                data,
            })
            .collect(),
    )
}

/// What placeholders stand for, for each entry's data of one round (computed when first asked).
struct Values<'a> {
    data: &'a [Vec<u8>],
    hex: Vec<std::cell::OnceCell<String>>,
    gunzipped: Vec<std::cell::OnceCell<String>>,
}

impl<'a> Values<'a> {
    fn new(data: &'a [Vec<u8>]) -> Self {
        Self {
            data,
            hex: vec![Default::default(); data.len()],
            gunzipped: vec![Default::default(); data.len()],
        }
    }

    fn value(&self, what: u8, i: usize) -> Option<String> {
        let data = &self.data[i];
        Some(match what {
            b'h' => self.hex[i].get_or_init(|| hex(data)).clone(),
            b's' => format!("sha256:{}", self.hex[i].get_or_init(|| hex(data))),
            b'n' => data.len().to_string(),
            b'u' => self.gunzipped[i]
                .get_or_init(|| {
                    let mut plain = Vec::new();
                    let mut gunzip = flate2::read::MultiGzDecoder::new(&data[..]).take(1 << 18);
                    match gunzip.read_to_end(&mut plain) {
                        Ok(_) => hex(&plain),
                        Err(_) => hex(data),
                    }
                })
                .clone(),
            _ => return None,
        })
    }
}

/// `text` with its placeholders filled in from `values`.
fn fill(text: &[u8], values: &Values<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.iter().position(|b| *b == b'@') {
        out.extend_from_slice(&rest[..at]);
        let value = rest.get(at + 1..at + 3).and_then(|p| {
            let target = (p[1] as char).to_digit(36)? as usize;
            (target < values.data.len())
                .then(|| values.value(p[0], target))
                .flatten()
        });
        match value {
            Some(value) => {
                out.extend_from_slice(value.as_bytes());
                rest = &rest[at + 3..];
            }
            None => {
                out.push(b'@');
                rest = &rest[at + 1..];
            }
        }
    }
    out.extend_from_slice(rest);
    out
}

fn hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A tar of `entries`, written as described (no path cleaning); long names get a GNU long-name
/// header.
fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        let kind = match entry.kind {
            0 => EntryType::Regular,
            1 => EntryType::Directory,
            2 => EntryType::Symlink,
            3 => EntryType::Link,
            other => EntryType::new(other),
        };
        let is_link = matches!(kind, EntryType::Symlink | EntryType::Link);
        let (link, data): (&[u8], &[u8]) = if is_link {
            (&entry.data[..entry.data.len().min(100)], &[])
        } else {
            (&[], &entry.data)
        };
        if entry.path.len() > 100 {
            let mut name = entry.path.clone();
            name.push(0);
            let long = header(b"././@LongLink", EntryType::GNULongName, &[], name.len());
            let _ = tar.append(&long, name.as_slice());
        }
        let path = &entry.path[..entry.path.len().min(100)];
        let header = header(path, kind, link, data.len());
        let _ = tar.append(&header, data);
    }
    tar.into_inner().unwrap_or_default()
}

fn header(path: &[u8], kind: EntryType, link: &[u8], size: usize) -> Header {
    let mut header = Header::new_gnu();
    header.as_old_mut().name[..path.len()].copy_from_slice(path);
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_size(size as u64);
    header.set_mtime(0);
    header.set_cksum();
    header
}

/// Writes a description: `(kind, path, data)` per entry.
fn describe(entries: &[(u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = vec![1];
    for (kind, path, data) in entries {
        out.push(*kind);
        out.push(path.len() as u8);
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let layer = b"a layer's tar would be here" as &[u8];
    let gzipped = gzip(b"another layer");
    // docker save: entries 0 config, 1 layer dir, 2 layer, 3 manifest.
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["/hello"]},"rootfs":{"type":"layers","diff_ids":["@s2"]}}"#;
    let save = describe(&[
        (0, "@h0.json", config),
        (1, "layer0/", b""),
        (0, "layer0/layer.tar", layer),
        (
            0,
            "manifest.json",
            br#"[{"Config":"@h0.json","RepoTags":["hello:1"],"Layers":["layer0/layer.tar"]}]"#,
        ),
    ]);
    // OCI: 0 oci-layout, 1 config, 2 layer (gzip), 3 manifest, 4 index.
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:@u2"]}}"#;
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"@s1","size":@n1},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"@s2","size":@n2}]}"#;
    let index = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@s3","size":@n3,"annotations":{"org.opencontainers.image.ref.name":"hello:1","io.containerd.image.name":"docker.io/library/hello:1"}}]}"#;
    let oci = describe(&[
        (0, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        (0, "blobs/sha256/@h1", config),
        (0, "blobs/sha256/@h2", &gzipped),
        (0, "blobs/sha256/@h3", manifest),
        (0, "index.json", index),
    ]);
    let hostile = describe(&[
        (2, "manifest.json", b"../../etc/passwd"),
        (0, "../escape", b"x"),
        (3, "loop", b"loop"),
    ]);
    let mut raw_save = vec![0];
    raw_save.extend(tar_of(&described(&save[1..]).expect("entries")));
    vec![
        ("image_archive", "docker-save".to_string(), save),
        ("image_archive", "oci".to_string(), oci),
        ("image_archive", "hostile".to_string(), hostile),
        ("image_archive", "docker-save-raw".to_string(), raw_save),
    ]
}
