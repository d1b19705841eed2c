//! App secrets: their names, and their values sealed to the mesh's secrets key.
//!
//! The scheme is a mesh keyring, as Nomad's and Swarm's are: every member of a private mesh holds
//! the mesh's secret, and derives from it one X25519 key pair, the mesh's *secrets key*. A value
//! is sealed to the public half — an ephemeral X25519 key, and ChaCha20-Poly1305 under a key
//! derived from the shared point, with the app's and the secret's names as associated data — so
//! anyone who knows the public key (the CLI, before the value leaves the user's machine) can seal
//! one, only members can open one, and a sealed value opens only as the secret it was sealed for.
//!
//! Pure: the randomness a seal needs is passed in.

use std::fmt;

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit,
    aead::{Aead, Payload},
};
use serde::{Deserialize, Serialize};

use crate::{BlobHash, ticket::MeshSecret};

/// The largest secret value.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// The most secrets one app may have (and name in its manifest).
pub const MAX_SECRETS: usize = 32;
/// The longest secret name.
pub const MAX_SECRET_NAME_LEN: usize = 63;
/// How many random bytes one seal takes: an ephemeral X25519 key and a nonce.
pub const SEAL_RANDOM_BYTES: usize = 32 + 12;

const KEY_CONTEXT: &str = "mycel 2026-12 mesh secrets key v1";
const SEAL_CONTEXT: &str = "mycel 2026-12 sealed secret v1";
const PUBLIC_PREFIX: &str = "x25519:";

/// Why a secret could not be sealed, opened or named.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a secret value is at most {MAX_SECRET_BYTES} bytes (got {0})")]
    TooLarge(usize),
    /// Not sealed to this mesh's key, sealed for another secret, or altered.
    #[error("the sealed value does not open with this mesh's secrets key")]
    DoesNotOpen,
    #[error("{0}")]
    BadKey(String),
}

/// Checks a secret's name: it becomes a file name (`/run/secrets/<name>`) and an environment
/// variable's suffix, so it is 1 to 63 of `a-z`, `0-9`, `_` and `-`, starting with a letter or
/// digit. The error is the reason, for a person.
pub fn check_secret_name(name: &str) -> Result<(), String> {
    check_file_name("secret", name, MAX_SECRET_NAME_LEN)
}

/// A name that is also a file or directory name on nodes (a secret's, a volume's): 1 to `max`
/// of a-z, 0-9, '_' and '-', starting with a letter or digit, so nothing that could leave its
/// directory.
pub(crate) fn check_file_name(kind: &str, name: &str, max: usize) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= max
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a {kind} name: 1 to {max} of a-z, 0-9, '_' and '-', starting with a \
             letter or digit",
            name.escape_debug()
                .to_string()
                .chars()
                .take(64)
                .collect::<String>()
        ))
    }
}

/// Checks a manifest's `secrets`: each a valid name, none twice, at most [`MAX_SECRETS`].
pub(crate) fn check_manifest_secrets(names: &[String]) -> Result<(), crate::ManifestError> {
    let invalid = |field: String, reason: String| crate::ManifestError::Invalid { field, reason };
    if names.len() > MAX_SECRETS {
        return Err(invalid(
            "secrets".into(),
            format!("at most {MAX_SECRETS} (got {})", names.len()),
        ));
    }
    for (i, name) in names.iter().enumerate() {
        check_secret_name(name).map_err(|reason| invalid(format!("secrets[{i}]"), reason))?;
        if names[..i].contains(name) {
            return Err(invalid(
                format!("secrets[{i}]"),
                format!("'{name}' is named twice"),
            ));
        }
    }
    Ok(())
}

/// The mesh's secrets key pair, derived from its secret: the same on every member.
pub struct SecretsKey {
    secret: [u8; 32],
    public: SecretsPublicKey,
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SecretsKey {
    pub fn derive(mesh: &MeshSecret) -> Self {
        let secret = blake3::derive_key(KEY_CONTEXT, mesh.expose());
        let public = x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES);
        Self {
            secret,
            public: SecretsPublicKey(public),
        }
    }

    pub fn public(&self) -> SecretsPublicKey {
        self.public
    }

    /// The value sealed as secret `name` of `app`.
    pub fn open(
        &self,
        app: &str,
        name: &str,
        sealed: &SealedSecret,
    ) -> Result<Vec<u8>, SecretError> {
        let shared = x25519_dalek::x25519(self.secret, sealed.ephemeral);
        let cipher = cipher(&shared, &sealed.ephemeral, &self.public.0);
        cipher
            .decrypt(
                (&sealed.nonce).into(),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &associated(app, name),
                },
            )
            .map_err(|_| SecretError::DoesNotOpen)
    }
}

/// The public half of the mesh's secrets key: what values are sealed to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretsPublicKey([u8; 32]);

impl SecretsPublicKey {
    /// Seals `value` as secret `name` of `app`; `random` must be fresh random bytes.
    pub fn seal(
        &self,
        app: &str,
        name: &str,
        value: &[u8],
        random: [u8; SEAL_RANDOM_BYTES],
    ) -> Result<SealedSecret, SecretError> {
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge(value.len()));
        }
        let mut ephemeral_secret = [0u8; 32];
        ephemeral_secret.copy_from_slice(&random[..32]);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&random[32..]);
        let ephemeral =
            x25519_dalek::x25519(ephemeral_secret, x25519_dalek::X25519_BASEPOINT_BYTES);
        let shared = x25519_dalek::x25519(ephemeral_secret, self.0);
        let ciphertext = cipher(&shared, &ephemeral, &self.0)
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: value,
                    aad: &associated(app, name),
                },
            )
            .map_err(|_| SecretError::TooLarge(value.len()))?;
        Ok(SealedSecret {
            ephemeral,
            nonce,
            ciphertext,
        })
    }
}

impl fmt::Display for SecretsPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PUBLIC_PREFIX}{}",
            data_encoding::HEXLOWER.encode(&self.0)
        )
    }
}

impl fmt::Debug for SecretsPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for SecretsPublicKey {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, SecretError> {
        let bad =
            || SecretError::BadKey(format!("a secrets key is {PUBLIC_PREFIX}<64 hex digits>"));
        let hex = text.strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(hex.as_bytes())
            .map_err(|_| bad())?;
        Ok(Self(bytes.try_into().map_err(|_| bad())?))
    }
}

/// A secret's value as the placement group holds it: openable only with the mesh's secrets key,
/// and only as the secret it was sealed for.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub ephemeral: [u8; 32],
    pub nonce: [u8; 12],
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSecret({})", self.digest())
    }
}

impl SealedSecret {
    /// What an owner's signature over a secret's value covers: the sealed bytes, never the value.
    pub fn digest(&self) -> BlobHash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.ephemeral);
        hasher.update(&self.nonce);
        hasher.update(&self.ciphertext);
        BlobHash(*hasher.finalize().as_bytes())
    }

    /// As the API carries it: hex of the ephemeral key, the nonce and the ciphertext, joined by
    /// `.`.
    pub fn to_text(&self) -> String {
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        format!(
            "{}.{}.{}",
            hex(&self.ephemeral),
            hex(&self.nonce),
            hex(&self.ciphertext)
        )
    }

    pub fn from_text(text: &str) -> Result<Self, SecretError> {
        let bad = || SecretError::BadKey("a sealed secret is <64 hex>.<24 hex>.<hex>".into());
        let mut parts = text.trim().split('.');
        let mut next = || {
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(parts.next().ok_or_else(bad)?.as_bytes())
                .map_err(|_| bad())
        };
        let ephemeral = next()?.try_into().map_err(|_| bad())?;
        let nonce = next()?.try_into().map_err(|_| bad())?;
        let ciphertext = next()?;
        if parts.next().is_some() || ciphertext.len() > MAX_SECRET_BYTES + 16 {
            return Err(bad());
        }
        Ok(Self {
            ephemeral,
            nonce,
            ciphertext,
        })
    }
}

fn cipher(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> ChaCha20Poly1305 {
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(ephemeral);
    material[64..].copy_from_slice(recipient);
    let key = blake3::derive_key(SEAL_CONTEXT, &material);
    ChaCha20Poly1305::new((&key).into())
}

/// The associated data: which secret of which app a value is.
fn associated(app: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(app.len() + name.len() + 1);
    aad.extend_from_slice(app.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretsKey {
        SecretsKey::derive(&MeshSecret::from_bytes([seed; 32]))
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_mesh_and_as_its_secret() {
        let mesh = key(1);
        let sealed = mesh
            .public()
            .seal("db", "password", b"hunter2", [7; SEAL_RANDOM_BYTES])
            .unwrap();
        assert_eq!(mesh.open("db", "password", &sealed).unwrap(), b"hunter2");
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            key(2).open("db", "password", &sealed),
            Err(SecretError::DoesNotOpen)
        );
        assert_eq!(
            mesh.open("web", "password", &sealed),
            Err(SecretError::DoesNotOpen)
        );
        assert_eq!(
            mesh.open("db", "token", &sealed),
            Err(SecretError::DoesNotOpen)
        );
        let mut altered = sealed.clone();
        altered.ciphertext[0] ^= 1;
        assert_eq!(
            mesh.open("db", "password", &altered),
            Err(SecretError::DoesNotOpen)
        );
        // Through its text form, as the API carries it.
        let again = SealedSecret::from_text(&sealed.to_text()).unwrap();
        assert_eq!(again, sealed);
        assert_eq!(again.digest(), sealed.digest());
    }

    #[test]
    fn the_key_is_the_same_on_every_member_and_reads_back() {
        assert_eq!(key(1).public(), key(1).public());
        assert_ne!(key(1).public(), key(2).public());
        let text = key(1).public().to_string();
        assert!(text.starts_with("x25519:"));
        assert_eq!(text.parse::<SecretsPublicKey>().unwrap(), key(1).public());
        for bad in [
            "",
            "x25519:12",
            "ed25519:00",
            &format!("x25519:{}", "zz".repeat(32)),
        ] {
            assert!(bad.parse::<SecretsPublicKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_sizes_are_checked() {
        for good in ["db_password", "a", "tls-key", "0"] {
            assert!(check_secret_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            ".env",
            "A",
            "a/b",
            "a b",
            "-x",
            &"a".repeat(64),
            "é",
        ] {
            assert!(check_secret_name(bad).is_err(), "{bad}");
        }
        let big = vec![0u8; MAX_SECRET_BYTES + 1];
        assert!(matches!(
            key(1).public().seal("a", "b", &big, [0; SEAL_RANDOM_BYTES]),
            Err(SecretError::TooLarge(_))
        ));
        for bad in [
            "",
            "00.00",
            "zz.zz.zz",
            &format!("{}.{}.00.00", "00".repeat(32), "00".repeat(12)),
        ] {
            assert!(SealedSecret::from_text(bad).is_err(), "{bad}");
        }
    }
}
