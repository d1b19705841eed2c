//! Signed envelopes.
//!
//! An envelope carries the exact bytes that were signed (a versioned CBOR frame of the message),
//! so verification never depends on re-encoding. The signature covers a per-message-kind domain
//! tag followed by those bytes: a signature made for one kind of message can never be replayed as
//! another. Only ed25519 signers are accepted; the signer's libp2p [`PeerId`] is the node id.

use std::marker::PhantomData;

use libp2p_identity::{Keypair, PeerId, PublicKey};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::codec::{self, CodecError};

/// A message kind that travels signed. `DOMAIN` separates the signatures of different kinds.
pub trait SignedKind: Serialize + DeserializeOwned {
    const DOMAIN: &'static [u8];
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the signer is not a valid ed25519 public key")]
    BadSigner,
    #[error("the signature does not match the signer and payload")]
    BadSignature,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("payload: {0}")]
    Payload(#[from] CodecError),
}

/// A message of kind `T`, signed by a node key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    /// The signer's raw 32-byte ed25519 public key.
    #[serde(with = "serde_bytes")]
    signer: Vec<u8>,
    /// A versioned CBOR frame of the message: exactly the bytes that were signed.
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
    #[serde(skip)]
    kind: PhantomData<fn() -> T>,
}

/// What a verified envelope yields: who signed it and what they said.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified<T> {
    pub signer: PeerId,
    pub message: T,
}

impl<T: SignedKind> Signed<T> {
    /// Signs `message` with `keypair`, which must be an ed25519 key.
    pub fn sign(keypair: &Keypair, message: &T) -> Result<Self, EnvelopeError> {
        let public = keypair
            .public()
            .try_into_ed25519()
            .map_err(|_| EnvelopeError::BadSigner)?;
        let payload = codec::encode(message)?;
        let signature = keypair
            .sign(&signed_bytes::<T>(&payload))
            .map_err(|e| EnvelopeError::Signing(e.to_string()))?;
        Ok(Self {
            signer: public.to_bytes().to_vec(),
            payload,
            signature,
            kind: PhantomData,
        })
    }

    /// Checks the signature, then decodes the payload (at most `limit` bytes).
    pub fn verify(&self, limit: usize) -> Result<Verified<T>, EnvelopeError> {
        let signer = self.signer_key()?;
        if self.payload.len() > limit {
            return Err(CodecError::TooLarge {
                len: self.payload.len(),
                limit,
            }
            .into());
        }
        if !signer.verify(&signed_bytes::<T>(&self.payload), &self.signature) {
            return Err(EnvelopeError::BadSignature);
        }
        let message = codec::decode(&self.payload, limit)?;
        Ok(Verified {
            signer: signer.to_peer_id(),
            message,
        })
    }

    /// The claimed signer, without checking the signature.
    pub fn claimed_signer(&self) -> Result<PeerId, EnvelopeError> {
        Ok(self.signer_key()?.to_peer_id())
    }

    fn signer_key(&self) -> Result<PublicKey, EnvelopeError> {
        let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.signer)
            .map_err(|_| EnvelopeError::BadSigner)?;
        Ok(PublicKey::from(key))
    }

    /// Builds an envelope from its parts as they came off the wire or out of a test; nothing is
    /// checked until [`Signed::verify`].
    pub fn from_parts(signer: Vec<u8>, payload: Vec<u8>, signature: Vec<u8>) -> Self {
        Self {
            signer,
            payload,
            signature,
            kind: PhantomData,
        }
    }

    /// The parts: signer key, payload frame, signature.
    pub fn parts(&self) -> (&[u8], &[u8], &[u8]) {
        (&self.signer, &self.payload, &self.signature)
    }
}

fn signed_bytes<T: SignedKind>(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(T::DOMAIN.len() + 1 + payload.len());
    bytes.extend_from_slice(T::DOMAIN);
    bytes.push(0);
    bytes.extend_from_slice(payload);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note(String);
    impl SignedKind for Note {
        const DOMAIN: &'static [u8] = b"mycel/test-note";
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Other(String);
    impl SignedKind for Other {
        const DOMAIN: &'static [u8] = b"mycel/test-other";
    }

    #[test]
    fn signs_and_verifies() {
        let key = Keypair::generate_ed25519();
        let signed = Signed::sign(&key, &Note("hi".into())).unwrap();
        let verified = signed.verify(1024).unwrap();
        assert_eq!(verified.signer, key.public().to_peer_id());
        assert_eq!(verified.message, Note("hi".into()));
    }

    #[test]
    fn rejects_a_changed_payload() {
        let key = Keypair::generate_ed25519();
        let signed = Signed::sign(&key, &Note("hi".into())).unwrap();
        let (signer, _, signature) = signed.parts();
        let forged = Signed::<Note>::from_parts(
            signer.to_vec(),
            codec::encode(&Note("bye".into())).unwrap(),
            signature.to_vec(),
        );
        assert!(matches!(
            forged.verify(1024),
            Err(EnvelopeError::BadSignature)
        ));
    }

    #[test]
    fn rejects_a_claimed_signer_that_did_not_sign() {
        let honest = Keypair::generate_ed25519();
        let forger = Keypair::generate_ed25519();
        let signed = Signed::sign(&forger, &Note("hi".into())).unwrap();
        let (_, payload, signature) = signed.parts();
        let honest_key = honest.public().try_into_ed25519().unwrap().to_bytes();
        let forged =
            Signed::<Note>::from_parts(honest_key.to_vec(), payload.to_vec(), signature.to_vec());
        assert!(matches!(
            forged.verify(1024),
            Err(EnvelopeError::BadSignature)
        ));
    }

    #[test]
    fn signatures_do_not_cross_kinds() {
        let key = Keypair::generate_ed25519();
        let signed = Signed::sign(&key, &Note("hi".into())).unwrap();
        let (signer, payload, signature) = signed.parts();
        let replayed =
            Signed::<Other>::from_parts(signer.to_vec(), payload.to_vec(), signature.to_vec());
        assert!(matches!(
            replayed.verify(1024),
            Err(EnvelopeError::BadSignature)
        ));
    }

    #[test]
    fn rejects_bad_signers_and_oversized_payloads() {
        let key = Keypair::generate_ed25519();
        let signed = Signed::sign(&key, &Note("x".repeat(100))).unwrap();
        assert!(matches!(
            signed.verify(16),
            Err(EnvelopeError::Payload(CodecError::TooLarge { .. }))
        ));
        let (_, payload, signature) = signed.parts();
        let bad = Signed::<Note>::from_parts(vec![1, 2, 3], payload.to_vec(), signature.to_vec());
        assert!(matches!(bad.verify(1024), Err(EnvelopeError::BadSigner)));
    }
}
