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
    /// "Send `[offset, offset + len)` with its proof." Still answered, for peers that predate
    /// range streams; fetches now ask on a range stream (see [`RangeStreamOpen`]).
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

/// The version byte that opens every range stream (see [`RangeStreamOpen`]).
pub const RANGE_STREAM_VERSION: u8 = 1;

/// Why a range-stream frame was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeFrameError {
    #[error(
        "range stream version {0} is not spoken here (this node speaks {RANGE_STREAM_VERSION})"
    )]
    Version(u8),
    #[error("a range of {0} bytes: ranges are 1 to {MAX_RANGE_BYTES} bytes")]
    RangeLength(u64),
    #[error("an answer of {0} bytes: answers are at most {MAX_BLOB_RESPONSE_BYTES} bytes")]
    AnswerLength(u64),
    #[error("unknown answer status {0}")]
    Status(u8),
}

/// What a fetcher writes first on a range stream (`names::BLOB_RANGES_PROTOCOL`): the version and
/// the blob every request on the stream is about. Then it writes [`RangeAsk`]s, as many as it
/// likes without waiting; the provider answers each, in order, with a [`RangeAnswer`] head and
/// (for a range) that many bytes: the range bao-encoded, as in [`BlobResponse::Range`].
///
/// The frames are fixed-size binary: a megabyte of range data is never wrapped in CBOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeStreamOpen {
    pub hash: BlobHash,
}

impl RangeStreamOpen {
    pub const BYTES: usize = 33;

    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut out = [0u8; Self::BYTES];
        out[0] = RANGE_STREAM_VERSION;
        out[1..].copy_from_slice(&self.hash.0);
        out
    }

    pub fn decode(bytes: &[u8; Self::BYTES]) -> Result<Self, RangeFrameError> {
        if bytes[0] != RANGE_STREAM_VERSION {
            return Err(RangeFrameError::Version(bytes[0]));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[1..]);
        Ok(Self {
            hash: BlobHash(hash),
        })
    }
}

/// "Send `[offset, offset + len)` of the stream's blob with its proof": 8 + 4 bytes, big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeAsk {
    pub offset: u64,
    pub len: u64,
}

impl RangeAsk {
    pub const BYTES: usize = 12;

    /// Fails for a length outside `1..=MAX_RANGE_BYTES` (which could not be asked for anyway).
    pub fn encode(&self) -> Result<[u8; Self::BYTES], RangeFrameError> {
        if self.len == 0 || self.len > MAX_RANGE_BYTES {
            return Err(RangeFrameError::RangeLength(self.len));
        }
        let mut out = [0u8; Self::BYTES];
        out[..8].copy_from_slice(&self.offset.to_be_bytes());
        out[8..].copy_from_slice(&(self.len as u32).to_be_bytes());
        Ok(out)
    }

    pub fn decode(bytes: &[u8; Self::BYTES]) -> Result<Self, RangeFrameError> {
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&bytes[..8]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[8..]);
        let len = u64::from(u32::from_be_bytes(len));
        if len == 0 || len > MAX_RANGE_BYTES {
            return Err(RangeFrameError::RangeLength(len));
        }
        Ok(Self {
            offset: u64::from_be_bytes(offset),
            len,
        })
    }
}

/// The head of a provider's answer to one [`RangeAsk`]: a status byte and a big-endian length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// `len` bytes follow: the range, bao-encoded.
    Range { len: u32 },
    /// Not held (or not that range); nothing follows.
    Missing,
}

impl RangeAnswer {
    pub const BYTES: usize = 5;

    pub fn encode(&self) -> [u8; Self::BYTES] {
        let (status, len) = match self {
            Self::Range { len } => (0, *len),
            Self::Missing => (1, 0),
        };
        let mut out = [0u8; Self::BYTES];
        out[0] = status;
        out[1..].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// Refuses an answer longer than [`MAX_BLOB_RESPONSE_BYTES`] before a byte of it is read.
    pub fn decode(bytes: &[u8; Self::BYTES]) -> Result<Self, RangeFrameError> {
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[1..]);
        let len = u32::from_be_bytes(len);
        match bytes[0] {
            0 if len as usize > MAX_BLOB_RESPONSE_BYTES => {
                Err(RangeFrameError::AnswerLength(len.into()))
            }
            0 => Ok(Self::Range { len }),
            1 => Ok(Self::Missing),
            status => Err(RangeFrameError::Status(status)),
        }
    }
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
    fn range_stream_frames_round_trip_and_refuse_what_is_out_of_bounds() {
        let open = RangeStreamOpen {
            hash: BlobHash([7; 32]),
        };
        assert_eq!(RangeStreamOpen::decode(&open.encode()), Ok(open));
        let mut other = open.encode();
        other[0] = 2;
        assert_eq!(
            RangeStreamOpen::decode(&other),
            Err(RangeFrameError::Version(2))
        );

        let ask = RangeAsk {
            offset: u64::MAX - 5,
            len: MAX_RANGE_BYTES,
        };
        assert_eq!(RangeAsk::decode(&ask.encode().unwrap()), Ok(ask));
        for len in [0, MAX_RANGE_BYTES + 1, u64::MAX] {
            assert!(RangeAsk { offset: 0, len }.encode().is_err());
        }
        let mut too_long = ask.encode().unwrap();
        too_long[8..].copy_from_slice(&(MAX_RANGE_BYTES as u32 + 1).to_be_bytes());
        assert!(RangeAsk::decode(&too_long).is_err());
        assert!(RangeAsk::decode(&[0; RangeAsk::BYTES]).is_err());

        for answer in [RangeAnswer::Range { len: 0 }, RangeAnswer::Missing] {
            assert_eq!(RangeAnswer::decode(&answer.encode()), Ok(answer));
        }
        let largest = RangeAnswer::Range {
            len: MAX_BLOB_RESPONSE_BYTES as u32,
        };
        assert_eq!(RangeAnswer::decode(&largest.encode()), Ok(largest));
        let oversized = RangeAnswer::Range {
            len: MAX_BLOB_RESPONSE_BYTES as u32 + 1,
        };
        assert!(RangeAnswer::decode(&oversized.encode()).is_err());
        assert_eq!(
            RangeAnswer::decode(&[9, 0, 0, 0, 0]),
            Err(RangeFrameError::Status(9))
        );
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
