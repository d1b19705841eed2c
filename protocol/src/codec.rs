//! Versioned CBOR frames.
//!
//! A frame is the CBOR array `[version, message]`. [`decode`] checks the frame's length against the
//! caller's limit before it parses anything, so an oversized frame costs nothing but its length
//! check, and rejects versions it does not speak instead of guessing.

use serde::{
    Serialize,
    de::{DeserializeOwned, IgnoredAny},
};

/// The version of every frame this build writes and the only one it reads.
pub const WIRE_VERSION: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("frame has wire version {found}, this node speaks version {WIRE_VERSION}")]
    UnsupportedVersion { found: u16 },
    #[error("malformed CBOR frame: {0}")]
    Malformed(String),
    #[error("encoding a frame failed: {0}")]
    Encode(String),
}

/// Encodes `message` as a versioned frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(256);
    ciborium::into_writer(&(WIRE_VERSION, message), &mut out)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a versioned frame of at most `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    // Read the version alone first, so a newer peer's message gives a clear error rather than
    // a confusing field mismatch. The message is skipped, not built: as a CBOR value tree a
    // frame of small items costs some thirty times its size in memory.
    let (version, IgnoredAny): (u16, IgnoredAny) =
        ciborium::from_reader(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if version != WIRE_VERSION {
        return Err(CodecError::UnsupportedVersion { found: version });
    }
    let (_, message): (u16, T) =
        ciborium::from_reader(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        n: u64,
    }

    #[test]
    fn round_trips() {
        let s = Sample {
            name: "a".into(),
            n: 7,
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(decode::<Sample>(&bytes, 1024).unwrap(), s);
    }

    #[test]
    fn rejects_oversized_before_decoding() {
        // Not even valid CBOR: the size check must come first.
        let junk = vec![0xffu8; 2048];
        assert!(matches!(
            decode::<Sample>(&junk, 1024),
            Err(CodecError::TooLarge {
                len: 2048,
                limit: 1024
            })
        ));
    }

    #[test]
    fn rejects_other_versions() {
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &(
                2u16,
                Sample {
                    name: "a".into(),
                    n: 1,
                },
            ),
            &mut bytes,
        )
        .unwrap();
        assert!(matches!(
            decode::<Sample>(&bytes, 1024),
            Err(CodecError::UnsupportedVersion { found: 2 })
        ));
    }

    #[test]
    fn rejects_garbage() {
        for junk in [&b""[..], b"\x00", b"\x82\x01", b"\xa1\x61x\x01", b"{}"] {
            assert!(matches!(
                decode::<Sample>(junk, 1024),
                Err(CodecError::Malformed(_))
            ));
        }
    }

    #[test]
    fn checking_the_version_costs_no_more_than_the_frame() {
        // A frame of 2^20 one-byte items: as a value tree, tens of MiB; skipped, nothing.
        let items = 1 << 20;
        let mut frame = vec![0x82, 0x01, 0x9a];
        frame.extend_from_slice(&(items as u32).to_be_bytes());
        frame.resize(frame.len() + items, 0);
        let error = decode::<Sample>(&frame, 2 << 20).unwrap_err();
        assert!(matches!(error, CodecError::Malformed(_)), "{error}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode::<Sample>(&bytes, 1024);
        }
    }
}
