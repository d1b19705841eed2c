//! Content ids: a blob is named by the BLAKE3 hash of its bytes, written `blake3:<64 hex>`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The BLAKE3 hash that names a blob.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(pub [u8; 32]);

const PREFIX: &str = "blake3:";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a blob hash: expected blake3:<64 hex digits>")]
pub struct BadBlobHash(String);

impl BlobHash {
    /// The hex digits without the `blake3:` prefix (for file names).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for BlobHash {
    type Err = BadBlobHash;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix(PREFIX)
            .and_then(Self::from_hex)
            .ok_or_else(|| BadBlobHash(s.chars().take(80).collect()))
    }
}

impl Serialize for BlobHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Largest range one blob request may ask for.
pub const MAX_RANGE_BYTES: u64 = 1024 * 1024;
/// Largest blob response accepted: a full range plus its proof (64 bytes per 16 KiB group).
pub const MAX_BLOB_RESPONSE_BYTES: usize = MAX_RANGE_BYTES as usize + 64 * 1024;

/// A request of the blob protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobRequest {
    /// "Do you hold this blob whole, and how large is it?"
    Have { hash: BlobHash },
    /// "Send `[offset, offset + len)` with its proof."
    Range {
        hash: BlobHash,
        offset: u64,
        len: u64,
    },
}

/// An answer of the blob protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobResponse {
    /// The size of a blob held whole.
    Have { size: u64 },
    /// The blob is being fetched here: its size, and a bitmap of the 1 MiB ranges already
    /// verified (bit `i % 8` of byte `i / 8` for range `i`), which can be asked for.
    Partial {
        size: u64,
        #[serde(with = "serde_bytes")]
        ranges: Vec<u8>,
    },
    /// The range, bao-encoded: chunk groups interleaved with the tree nodes that prove them.
    Range {
        #[serde(with = "serde_bytes")]
        encoded: Vec<u8>,
    },
    /// Not held (or not that range).
    Missing,
}

/// Packs one flag per range into the bitmap of [`BlobResponse::Partial`].
pub fn pack_ranges(flags: &[bool]) -> Vec<u8> {
    let mut bits = vec![0u8; flags.len().div_ceil(8)];
    for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
        bits[i / 8] |= 1 << (i % 8);
    }
    bits
}

/// Unpacks `count` flags from a bitmap (missing bytes read as zeros).
pub fn unpack_ranges(bits: &[u8], count: usize) -> Vec<bool> {
    (0..count)
        .map(|i| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let text = format!("blake3:{}", "ab".repeat(32));
        let hash: BlobHash = text.parse().unwrap();
        assert_eq!(hash.to_string(), text);
        assert_eq!(hash.0[0], 0xab);
        assert_eq!(serde_json::to_string(&hash).unwrap(), format!("\"{text}\""));
    }

    #[test]
    fn range_bitmaps_round_trip() {
        let flags = [
            true, false, false, true, true, false, false, false, true, false,
        ];
        let bits = pack_ranges(&flags);
        assert_eq!(bits.len(), 2);
        assert_eq!(unpack_ranges(&bits, flags.len()), flags);
        assert_eq!(unpack_ranges(&[], 3), [false; 3]);
    }

    #[test]
    fn rejects_what_is_not_a_hash() {
        for bad in [
            "",
            "blake3:",
            "sha256:".to_string().as_str(),
            &"ab".repeat(32),
            &format!("blake3:{}", "ab".repeat(31)),
            &format!("blake3:{}", "zz".repeat(32)),
            &format!("blake3:{}", "ab".repeat(33)),
            &format!("blake3:{}é", "a".repeat(63)),
        ] {
            assert!(bad.parse::<BlobHash>().is_err(), "{bad}");
        }
    }
}
