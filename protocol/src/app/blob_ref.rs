//! What a blob reference in a manifest names: an uploaded blob by hash, or a file next to the
//! manifest that the CLI uploads.

use crate::BlobHash;

use super::{HASH_PREFIX, MAX_BLOB_PATH_LEN, shown};

/// What a `wasm.module` or `container.archive` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobRef<'a> {
    /// An uploaded blob.
    Hash(BlobHash),
    /// A file next to the manifest, which the CLI uploads and replaces by its hash.
    Path(&'a str),
}

impl<'a> BlobRef<'a> {
    /// Reads a reference; the error is the reason, for a person.
    pub fn parse(text: &'a str) -> Result<Self, String> {
        if text.starts_with(HASH_PREFIX) {
            // BlobHash accepts either case; the canonical form (and the only one we accept, so a
            // blob has exactly one name) is lowercase.
            return match text.parse::<BlobHash>() {
                Ok(hash) if hash.to_string() == text => Ok(BlobRef::Hash(hash)),
                _ => Err(format!(
                    "'{}' is not a blob hash: expected blake3:<64 lowercase hex digits>",
                    shown(text)
                )),
            };
        }
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.len() > MAX_BLOB_PATH_LEN {
            return Err(format!(
                "a path of at most {MAX_BLOB_PATH_LEN} bytes (got {})",
                text.len()
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(format!("'{}' contains control characters", shown(text)));
        }
        if is_absolute(text) {
            return Err(format!(
                "'{}' must be a path relative to the manifest, not absolute",
                shown(text)
            ));
        }
        if text.split(['/', '\\']).any(|part| part == "..") {
            return Err(format!(
                "'{}' must not leave the manifest's directory ('..')",
                shown(text)
            ));
        }
        Ok(BlobRef::Path(text))
    }
}

/// Absolute on any platform the CLI may run on: `/x`, `\x`, or a Windows drive such as `C:`.
fn is_absolute(path: &str) -> bool {
    let bytes = path.as_bytes();
    matches!(bytes.first(), Some(b'/' | b'\\'))
        || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
}
