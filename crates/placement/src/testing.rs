//! Helpers for the crate's unit tests: signed requests from fixed keys.

use std::cell::Cell;

use mycel_protocol::{
    Keypair,
    app::Manifest,
    ownership::{AppAction, OwnerKey, SignedRequest, manifest_digest},
    placement::WriteRequest,
};

/// The clock the unit tests' views show.
pub(crate) const NOW_MS: u64 = 1_000_000;

thread_local! {
    /// Each request a test signs is issued a millisecond after the one before (a request no
    /// newer than one accepted from the same key for the same app is a replay).
    static CLOCK: Cell<u64> = const { Cell::new(NOW_MS) };
}

/// The key of user `n` (the tests' default user is 1).
pub(crate) fn user(n: u8) -> Keypair {
    Keypair::ed25519_from_bytes([n; 32]).expect("32 bytes are an ed25519 secret")
}

pub(crate) fn key_of(n: u8) -> OwnerKey {
    OwnerKey::of(&user(n)).expect("an ed25519 key")
}

/// `action` signed by user `n`, issued now.
pub(crate) fn signed_by(n: u8, action: AppAction) -> Box<SignedRequest> {
    let issued_at_ms = CLOCK.with(|clock| {
        let now = clock.get() + 1;
        clock.set(now);
        now
    });
    Box::new(SignedRequest::sign(&user(n), issued_at_ms, action).expect("signing"))
}

pub(crate) fn deploy_by(n: u8, manifest: Manifest) -> WriteRequest {
    let action = AppAction::Deploy {
        app: manifest.name.clone(),
        manifest: manifest_digest(&manifest),
    };
    WriteRequest::Deploy {
        manifest: Box::new(manifest),
        by: "me".into(),
        signed: signed_by(n, action),
    }
}

pub(crate) fn scale_by(n: u8, name: &str, replicas: u32) -> WriteRequest {
    let action = AppAction::Scale {
        app: name.into(),
        replicas,
    };
    WriteRequest::Scale {
        name: name.into(),
        replicas,
        signed: signed_by(n, action),
    }
}

pub(crate) fn remove_by(n: u8, name: &str) -> WriteRequest {
    WriteRequest::Remove {
        name: name.into(),
        signed: signed_by(n, AppAction::Stop { app: name.into() }),
        purge: false,
        force: false,
    }
}
