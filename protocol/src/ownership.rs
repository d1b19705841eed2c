//! App ownership: who may change an app. The CLI signs each deploy, scale and stop with a user
//! key; a node signs the unsigned requests its API takes with its own identity key. The placement
//! group records the key that first deployed an app as its owner and refuses changes signed by
//! any other key.
//!
//! A [`SignedRequest`] is a statement, not an HTTP request: "key K, at time T, asks for action A",
//! where A names the app and what changes (for a deploy, the digest of the exact manifest). The
//! signature covers a canonical, versioned byte encoding of that statement
//! ([`SignedRequest::signed_bytes`]), so every replica of the placement state can check it again
//! without trusting the node that forwarded it, and the same statement is valid through every
//! endpoint that does the same thing (`/v1/…` and the seed's `/api/apps/…`).
//!
//! Over HTTP a statement travels in three headers ([`HEADER_KEY`], [`HEADER_ISSUED_AT`],
//! [`HEADER_SIGNATURE`]); the action is what the request asks for (method, path and body).

use std::{fmt, str::FromStr};

use libp2p_identity::{Keypair, PeerId, PublicKey, ed25519};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{BlobHash, Manifest};

/// The domain tag in front of every signed statement: a signature made for anything else (an
/// advert, a DHT record) is never a valid app request, and a later encoding gets a new tag.
pub const DOMAIN: &[u8] = b"mycel app request v1\0";

/// How far a request's `issued_at` may be from the clock of the node that takes it, and of the
/// leader that commits it, either way.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// HTTP header: the signer's public key, `ed25519:<64 hex>`.
pub const HEADER_KEY: &str = "x-mycel-key";
/// HTTP header: when the request was signed, in milliseconds since the Unix epoch.
pub const HEADER_ISSUED_AT: &str = "x-mycel-issued-at";
/// HTTP header: the ed25519 signature of [`SignedRequest::signed_bytes`], 128 hex digits.
pub const HEADER_SIGNATURE: &str = "x-mycel-signature";

const KEY_PREFIX: &str = "ed25519:";

/// An ed25519 public key that signs app requests and owns apps: a user's key, or a node's
/// identity key for the requests its API took unsigned. Written `ed25519:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnershipError {
    #[error("'{0}' is not a key: expected ed25519:<64 hex digits>")]
    BadKey(String),
    #[error("the signature is not 128 hex digits")]
    MalformedSignature,
    #[error("the signature does not match the key and the request")]
    BadSignature,
    #[error("only ed25519 keys sign app requests")]
    NotEd25519,
    #[error("signing failed: {0}")]
    Signing(String),
}

impl OwnerKey {
    /// The public key of `keypair`, if it is an ed25519 key.
    pub fn of(keypair: &Keypair) -> Result<Self, OwnershipError> {
        Self::from_public(&keypair.public())
    }

    pub fn from_public(key: &PublicKey) -> Result<Self, OwnershipError> {
        let key = key
            .clone()
            .try_into_ed25519()
            .map_err(|_| OwnershipError::NotEd25519)?;
        Ok(Self(key.to_bytes()))
    }

    /// The key inside an ed25519 peer id (those embed their key); `None` for any other id.
    pub fn from_peer_id(peer: &PeerId) -> Option<Self> {
        let multihash = peer.as_ref();
        // Code 0 is the identity multihash: the digest is the protobuf-encoded key itself.
        if multihash.code() != 0 {
            return None;
        }
        let key = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
        Self::from_public(&key).ok()
    }

    /// The peer id of a node whose identity is this key.
    pub fn to_peer_id(&self) -> Option<PeerId> {
        let key = ed25519::PublicKey::try_from_bytes(&self.0).ok()?;
        Some(PublicKey::from(key).to_peer_id())
    }

    /// The first hex digits, for a person (`ed25519:1a2b3c4d…`).
    pub fn short(&self) -> String {
        let hex = hex(&self.0);
        format!("{KEY_PREFIX}{}…", &hex[..12])
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), OwnershipError> {
        let key = ed25519::PublicKey::try_from_bytes(&self.0)
            .map_err(|_| OwnershipError::BadKey(self.to_string()))?;
        if key.verify(message, signature) {
            Ok(())
        } else {
            Err(OwnershipError::BadSignature)
        }
    }
}

impl fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", hex(&self.0))
    }
}

impl fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for OwnerKey {
    type Err = OwnershipError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || OwnershipError::BadKey(s.chars().take(80).collect());
        let bytes = s
            .trim()
            .strip_prefix(KEY_PREFIX)
            .and_then(from_hex::<32>)
            .ok_or_else(bad)?;
        // Not every 32 bytes are a point on the curve.
        ed25519::PublicKey::try_from_bytes(&bytes).map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

impl Serialize for OwnerKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OwnerKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a signed request asks for. Each names its app; a deploy names the exact manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppAction {
    /// Deploy (or redeploy) the manifest whose [`manifest_digest`] this is.
    Deploy {
        app: String,
        manifest: BlobHash,
    },
    Scale {
        app: String,
        replicas: u32,
    },
    Stop {
        app: String,
    },
    /// Stop the app and delete its volumes (their snapshots are no longer kept either).
    StopAndPurge {
        app: String,
    },
    /// Let the canaries of the app's rollout replace the rest of the old instances.
    Promote {
        app: String,
    },
    /// Set secret `name` of the app to the value sealed as `sealed` (its digest: a signature
    /// never covers a value).
    SetSecret {
        app: String,
        name: String,
        sealed: BlobHash,
    },
    RemoveSecret {
        app: String,
        name: String,
    },
}

impl AppAction {
    /// The deploy of exactly `manifest`.
    pub fn deploy(manifest: &Manifest) -> Self {
        AppAction::Deploy {
            app: manifest.name.clone(),
            manifest: manifest_digest(manifest),
        }
    }

    pub fn app(&self) -> &str {
        match self {
            AppAction::Deploy { app, .. }
            | AppAction::Scale { app, .. }
            | AppAction::Stop { app }
            | AppAction::StopAndPurge { app }
            | AppAction::Promote { app }
            | AppAction::SetSecret { app, .. }
            | AppAction::RemoveSecret { app, .. } => app,
        }
    }

    /// "deploy", "scale", "stop", "promote", "secret set" or "secret removal".
    pub fn verb(&self) -> &'static str {
        match self {
            AppAction::Deploy { .. } => "deploy",
            AppAction::Scale { .. } => "scale",
            AppAction::Stop { .. } => "stop",
            AppAction::StopAndPurge { .. } => "stop and purge",
            AppAction::Promote { .. } => "promote",
            AppAction::SetSecret { .. } => "secret set",
            AppAction::RemoveSecret { .. } => "secret removal",
        }
    }
}

/// The digest a signed deploy names: BLAKE3 of the manifest's canonical JSON (serde's encoding of
/// the parsed manifest: fields in declaration order, maps sorted, defaults filled in), so the CLI,
/// the node that takes the request and every replica compute it from the manifest alone,
/// whatever whitespace or key order the request's body had.
pub fn manifest_digest(manifest: &Manifest) -> BlobHash {
    // Serializing plain data with string keys cannot fail.
    let json = serde_json::to_vec(manifest).unwrap_or_default();
    BlobHash(*blake3::hash(&json).as_bytes())
}

/// "Key `key`, at `issued_at_ms`, asks for `action`", signed by that key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    pub key: OwnerKey,
    /// Milliseconds since the Unix epoch, by the signer's clock.
    pub issued_at_ms: u64,
    pub action: AppAction,
    /// ed25519 over [`SignedRequest::signed_bytes`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl SignedRequest {
    /// Signs `action` at `issued_at_ms` with `keypair` (an ed25519 key).
    pub fn sign(
        keypair: &Keypair,
        issued_at_ms: u64,
        action: AppAction,
    ) -> Result<Self, OwnershipError> {
        let key = OwnerKey::of(keypair)?;
        let signature = keypair
            .sign(&Self::signed_bytes(&key, issued_at_ms, &action))
            .map_err(|e| OwnershipError::Signing(e.to_string()))?;
        Ok(Self {
            key,
            issued_at_ms,
            action,
            signature,
        })
    }

    /// Builds a request from what arrived (e.g. HTTP headers); nothing is checked until
    /// [`SignedRequest::verify`].
    pub fn from_parts(
        key: OwnerKey,
        issued_at_ms: u64,
        action: AppAction,
        signature_hex: &str,
    ) -> Result<Self, OwnershipError> {
        let signature = from_hex::<64>(signature_hex.trim())
            .ok_or(OwnershipError::MalformedSignature)?
            .to_vec();
        Ok(Self {
            key,
            issued_at_ms,
            action,
            signature,
        })
    }

    /// The signature as 128 hex digits (the HTTP header's form).
    pub fn signature_hex(&self) -> String {
        hex(&self.signature)
    }

    /// Checks the signature against the key, the time and the action.
    pub fn verify(&self) -> Result<(), OwnershipError> {
        if self.signature.len() != 64 {
            return Err(OwnershipError::MalformedSignature);
        }
        let message = Self::signed_bytes(&self.key, self.issued_at_ms, &self.action);
        self.key.verify(&message, &self.signature)
    }

    /// Whether `issued_at_ms` is within [`MAX_SKEW_MS`] of `now_ms`, either way.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        self.issued_at_ms.abs_diff(now_ms) <= MAX_SKEW_MS
    }

    /// The bytes a signature covers (version 1):
    ///
    /// ```text
    /// "mycel app request v1" 0x00
    /// key             32 bytes, the ed25519 public key
    /// issued_at_ms    u64, big-endian
    /// action          u8: 1 deploy, 2 scale, 3 stop, 4 promote, 5 set secret, 6 remove secret
    /// app             u32 big-endian length, then the name's UTF-8 bytes
    /// deploy:         32 bytes, the manifest digest
    /// scale:          u32 big-endian, the replicas
    /// secrets:        u32 big-endian length, then the secret's name; a set: 32 bytes, the
    ///                 sealed value's digest
    /// ```
    pub fn signed_bytes(key: &OwnerKey, issued_at_ms: u64, action: &AppAction) -> Vec<u8> {
        let app = action.app().as_bytes();
        let mut out = Vec::with_capacity(DOMAIN.len() + 32 + 8 + 1 + 4 + app.len() + 32);
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(&key.0);
        out.extend_from_slice(&issued_at_ms.to_be_bytes());
        out.push(match action {
            AppAction::Deploy { .. } => 1,
            AppAction::Scale { .. } => 2,
            AppAction::Stop { .. } => 3,
            AppAction::Promote { .. } => 4,
            AppAction::SetSecret { .. } => 5,
            AppAction::RemoveSecret { .. } => 6,
            AppAction::StopAndPurge { .. } => 7,
        });
        // Names are at most 63 bytes once validated; a longer one still encodes unambiguously.
        out.extend_from_slice(&(app.len() as u32).to_be_bytes());
        out.extend_from_slice(app);
        match action {
            AppAction::Deploy { manifest, .. } => out.extend_from_slice(&manifest.0),
            AppAction::Scale { replicas, .. } => out.extend_from_slice(&replicas.to_be_bytes()),
            AppAction::Stop { .. } | AppAction::StopAndPurge { .. } | AppAction::Promote { .. } => {
            }
            AppAction::SetSecret { name, sealed, .. } => {
                out.extend_from_slice(&(name.len() as u32).to_be_bytes());
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&sealed.0);
            }
            AppAction::RemoveSecret { name, .. } => {
                out.extend_from_slice(&(name.len() as u32).to_be_bytes());
                out.extend_from_slice(name.as_bytes());
            }
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
