//! Pass 1: the archive's entry table, read from headers alone without trusting any of them.
//!
//! Nothing is ever extracted: entries are looked up by their normalised path in this table, and a
//! file is read later by seeking to the offset recorded here. So the checks below are about what a
//! path may *mean* (no `..`, no absolute paths, links that resolve inside the tree), not about
//! what it could do to a file system.
//!
//! The tar crate runs in raw mode so that GNU long names and PAX headers, which it would otherwise
//! read whole into memory, are read here under a size limit.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, Read, Seek, SeekFrom},
};

use tar::{EntryType, PaxExtensions};

use crate::ImageError;

/// The most entries (headers) an archive may have. A `docker save` of one image with
/// [`mycel_protocol::image::MAX_LAYERS`] layers has well under a thousand.
pub const MAX_ENTRIES: usize = 4096;
/// The most a GNU long-name or PAX header may hold.
const MAX_EXTENSION_BYTES: u64 = 64 * 1024;
/// The most links followed to resolve one path; more is a loop.
const MAX_LINK_HOPS: usize = 16;
const BLOCK: u64 = 512;

/// Where a regular file's bytes are in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Span {
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

#[derive(Debug)]
enum Node {
    File(Span),
    Dir,
    /// A symbolic or hard link, its target already turned into a path in the tree.
    Link {
        target: String,
    },
}

/// The archive's entries by normalised path.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: HashMap<String, Node>,
}

/// Extension headers seen since the last real entry; they describe the next one.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
}

impl Tree {
    /// Reads every header of the archive `file` (seeking over the data).
    pub(crate) fn read(file: &mut File) -> Result<Self, ImageError> {
        let len = file
            .metadata()
            .map_err(ImageError::io("reading the archive"))?
            .len();
        let mut archive = tar::Archive::new(BufReader::new(&mut *file));
        let entries = archive.entries_with_seek().map_err(not_a_tar)?.raw(true);
        let mut nodes = HashMap::new();
        let mut pending = Pending::default();
        let mut count = 0;
        let mut end = 0;
        for entry in entries {
            let mut entry = entry.map_err(not_a_tar)?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(ImageError::TooLarge {
                    what: "the archive's entry count".to_owned(),
                    limit: MAX_ENTRIES as u64,
                });
            }
            let span = Span {
                offset: entry.raw_file_position(),
                size: entry.size(),
            };
            // Seeking over data never fails, so a cut-off archive shows only here.
            let data_end = span
                .offset
                .checked_add(span.size)
                .filter(|data_end| *data_end <= len)
                .ok_or_else(|| ImageError::invalid("the archive is truncated"))?;
            end = data_end.div_ceil(BLOCK) * BLOCK;
            let kind = entry.header().entry_type();
            match kind {
                EntryType::GNULongName => {
                    set_once(&mut pending.path, read_extension(&mut entry, span)?)?
                }
                EntryType::GNULongLink => {
                    set_once(&mut pending.link, read_extension(&mut entry, span)?)?
                }
                EntryType::XHeader => {
                    let bytes = read_extension(&mut entry, span)?;
                    for field in PaxExtensions::new(&bytes) {
                        let field = field.map_err(|_| ImageError::invalid("a bad PAX header"))?;
                        match field.key_bytes() {
                            b"path" => set_once(&mut pending.path, field.value_bytes().to_vec())?,
                            b"linkpath" => {
                                set_once(&mut pending.link, field.value_bytes().to_vec())?
                            }
                            b"size" => {
                                let size = field.value().ok().and_then(|v| v.parse().ok());
                                pending.size =
                                    Some(size.ok_or_else(|| ImageError::invalid("a bad PAX size"))?)
                            }
                            _ => {}
                        }
                    }
                }
                EntryType::XGlobalHeader => {
                    // Comments are harmless; a global path or size would make every reader see a
                    // different archive.
                    let bytes = read_extension(&mut entry, span)?;
                    for field in PaxExtensions::new(&bytes) {
                        let field = field.map_err(|_| ImageError::invalid("a bad PAX header"))?;
                        if matches!(field.key_bytes(), b"path" | b"linkpath" | b"size") {
                            return Err(ImageError::Unsupported(
                                "global PAX headers that set paths or sizes".to_owned(),
                            ));
                        }
                    }
                }
                _ => {
                    let pending = std::mem::take(&mut pending);
                    // The tar crate skipped this entry's data by the header's size; a PAX size
                    // that says otherwise would make other readers see other entries.
                    if pending.size.is_some_and(|size| size != span.size) {
                        return Err(ImageError::Unsupported(
                            "PAX sizes that differ from the header's (entries over 8 GiB)"
                                .to_owned(),
                        ));
                    }
                    let raw_path = pending
                        .path
                        .unwrap_or_else(|| entry.header().path_bytes().into_owned());
                    let raw_link = pending.link.or_else(|| {
                        entry
                            .header()
                            .link_name_bytes()
                            .map(|link| link.into_owned())
                    });
                    add_entry(&mut nodes, kind, &raw_path, raw_link, span)?;
                }
            }
        }
        if pending.path.is_some() || pending.link.is_some() || pending.size.is_some() {
            return Err(ImageError::invalid(
                "the archive ends with a header that describes no entry",
            ));
        }
        check_end_marker(file, end, len)?;
        let tree = Self { nodes };
        tree.check_links()?;
        Ok(tree)
    }

    /// Whether `path` is an entry (of any kind).
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// Resolves `path` (as named by a JSON file in the archive) through links to a regular file:
    /// its resolved path and where its bytes are.
    pub(crate) fn file(&self, path: &str) -> Result<(String, Span), ImageError> {
        let normal = normalize(path.as_bytes()).map_err(|reason| ImageError::UnsafePath {
            path: path.to_owned(),
            reason,
        })?;
        let resolved = self.resolve(&normal)?;
        match self.nodes.get(&resolved) {
            Some(Node::File(span)) => Ok((resolved, *span)),
            Some(_) => Err(ImageError::invalid(format!(
                "{path:?} names a directory, not a file"
            ))),
            None => Err(ImageError::invalid(format!(
                "the archive has no file {path:?}"
            ))),
        }
    }

    /// Follows links from `path` to an entry that is not a link (or to a missing path when
    /// `path` itself is missing).
    fn resolve(&self, path: &str) -> Result<String, ImageError> {
        let mut current = path.to_owned();
        for _ in 0..=MAX_LINK_HOPS {
            match self.nodes.get(&current) {
                Some(Node::Link { target }) => {
                    if !self.nodes.contains_key(target) {
                        return Err(ImageError::BadLink {
                            path: current,
                            target: target.clone(),
                            reason: "it points to nothing in the archive",
                        });
                    }
                    current = target.clone();
                }
                _ => return Ok(current),
            }
        }
        Err(ImageError::BadLink {
            path: path.to_owned(),
            target: current,
            reason: "the links loop (or chain too deep)",
        })
    }

    /// Every link must resolve to a file or directory inside the archive, referenced or not: an
    /// archive that carries a dangling or looping link was not written by Docker.
    fn check_links(&self) -> Result<(), ImageError> {
        for (path, node) in &self.nodes {
            if matches!(node, Node::Link { .. }) {
                self.resolve(path)?;
            }
        }
        Ok(())
    }
}

fn not_a_tar(error: std::io::Error) -> ImageError {
    ImageError::invalid(format!("not a readable tar archive ({error})"))
}

fn set_once(slot: &mut Option<Vec<u8>>, value: Vec<u8>) -> Result<(), ImageError> {
    if slot.replace(value).is_some() {
        return Err(ImageError::invalid(
            "two extension headers name the same entry",
        ));
    }
    Ok(())
}

/// Reads a GNU long name or PAX header, bounded; a long name is NUL-terminated.
fn read_extension(entry: &mut impl Read, span: Span) -> Result<Vec<u8>, ImageError> {
    if span.size > MAX_EXTENSION_BYTES {
        return Err(ImageError::TooLarge {
            what: "a tar extension header".to_owned(),
            limit: MAX_EXTENSION_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(span.size as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(ImageError::io("reading the archive"))?;
    if bytes.last() == Some(&0) {
        bytes.pop();
    }
    Ok(bytes)
}

fn add_entry(
    nodes: &mut HashMap<String, Node>,
    kind: EntryType,
    raw_path: &[u8],
    raw_link: Option<Vec<u8>>,
    span: Span,
) -> Result<(), ImageError> {
    let shown = || String::from_utf8_lossy(raw_path).into_owned();
    let path = normalize(raw_path).map_err(|reason| ImageError::UnsafePath {
        path: shown(),
        reason,
    })?;
    let unsafe_entry = |kind| ImageError::UnsafeEntry {
        path: shown(),
        kind,
    };
    let node = match kind {
        EntryType::Regular | EntryType::Continuous => Node::File(span),
        EntryType::Directory => Node::Dir,
        EntryType::Symlink | EntryType::Link => {
            let raw_link = raw_link.unwrap_or_default();
            let bad_link = |reason| ImageError::BadLink {
                path: shown(),
                target: String::from_utf8_lossy(&raw_link).into_owned(),
                reason,
            };
            let target = if kind == EntryType::Symlink {
                resolve_symlink(&path, &raw_link).map_err(bad_link)?
            } else {
                // A hard link names another entry of the archive, from its root.
                normalize(&raw_link).map_err(bad_link)?
            };
            Node::Link { target }
        }
        EntryType::Char => return Err(unsafe_entry("character device")),
        EntryType::Block => return Err(unsafe_entry("block device")),
        EntryType::Fifo => return Err(unsafe_entry("fifo")),
        other => {
            return Err(ImageError::Unsupported(format!(
                "tar entries of type {:?} ({:?})",
                other.as_byte() as char,
                shown()
            )));
        }
    };
    // The archive's root directory ("./") is no entry worth keeping.
    if path.is_empty() {
        return match node {
            Node::Dir => Ok(()),
            _ => Err(ImageError::UnsafePath {
                path: shown(),
                reason: "a file or link cannot be the archive's root",
            }),
        };
    }
    if nodes.insert(path.clone(), node).is_some() {
        return Err(ImageError::DuplicatePath(path));
    }
    Ok(())
}

/// An entry's path as a key: UTF-8, relative, no NUL, no `..`; `.` components, repeated and
/// trailing slashes dropped (so `./a//b/` is `a/b`).
fn normalize(raw: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "the path is not UTF-8")?;
    if text.contains('\0') {
        return Err("the path holds a NUL byte");
    }
    if text.starts_with('/') {
        return Err("the path is absolute");
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("the path climbs out with `..`"),
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// A symlink's target as a path in the tree: relative to the link's directory, where `..` may
/// climb but never above the root.
fn resolve_symlink(link_path: &str, target: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(target).map_err(|_| "the target is not UTF-8")?;
    if text.is_empty() || text.contains('\0') {
        return Err("the target is empty or holds a NUL byte");
    }
    if text.starts_with('/') {
        return Err("it points outside the archive (an absolute path)");
    }
    let mut parts: Vec<&str> = link_path.split('/').collect();
    parts.pop();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts
                    .pop()
                    .ok_or("it points outside the archive (`..` above the root)")?;
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// A tar ends with a zero block; an archive cut off between entries has none.
fn check_end_marker(file: &mut File, end: u64, len: u64) -> Result<(), ImageError> {
    let truncated = || ImageError::invalid("the archive is truncated (no end-of-archive marker)");
    if end == 0 {
        return Err(ImageError::invalid("the archive is empty"));
    }
    if end.checked_add(BLOCK).is_none_or(|needed| needed > len) {
        return Err(truncated());
    }
    let mut block = [0u8; BLOCK as usize];
    file.seek(SeekFrom::Start(end))
        .and_then(|_| file.read_exact(&mut block))
        .map_err(ImageError::io("reading the archive"))?;
    if block.iter().any(|b| *b != 0) {
        return Err(truncated());
    }
    Ok(())
}

/// Reads a small file whole, refusing one over `limit` bytes before reading it.
pub(crate) fn read_small(
    file: &mut File,
    span: Span,
    what: &str,
    limit: u64,
) -> Result<Vec<u8>, ImageError> {
    if span.size > limit {
        return Err(ImageError::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    let mut bytes = vec![0; span.size as usize];
    file.seek(SeekFrom::Start(span.offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(ImageError::io("reading the archive"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_or_refused() {
        assert_eq!(normalize(b"./a//b/").unwrap(), "a/b");
        assert_eq!(normalize(b"./").unwrap(), "");
        assert_eq!(normalize(b"manifest.json").unwrap(), "manifest.json");
        for bad in [&b"/etc/passwd"[..], b"a/../../x", b"..", b"a\0b", b"\xff"] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symlink_targets_resolve_from_the_link_directory_and_stay_inside() {
        let hex = "ab".repeat(32);
        assert_eq!(
            resolve_symlink("id/layer.tar", format!("../blobs/sha256/{hex}").as_bytes()).unwrap(),
            format!("blobs/sha256/{hex}")
        );
        assert_eq!(resolve_symlink("a/b", b"c").unwrap(), "a/c");
        assert_eq!(resolve_symlink("top", b"./x/./y").unwrap(), "x/y");
        for bad in [&b"/etc/passwd"[..], b"../x", b"../../x", b""] {
            assert!(resolve_symlink("a", bad).is_err(), "{bad:?}");
        }
        assert!(resolve_symlink("a/b", b"../../x").is_err());
    }
}
