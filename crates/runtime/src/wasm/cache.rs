//! Compiled components on disk: `<cache_dir>/<blake3 hex of the module>.cwasm`.
//!
//! A file holds the artefact `Component::serialize` produced followed by the 32-byte BLAKE3 hash of
//! that artefact, and is only ever written by [`store`]: to a temporary file in the same directory,
//! synced, then renamed over the final name. A reader therefore sees a whole file or none, and
//! [`load`] checks the trailing hash before handing the bytes to wasmtime, so a truncated,
//! corrupted or foreign file is reported (and recompiled by the caller), never executed.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use wasmtime::{Engine, component::Component};

const CHECKSUM_LEN: usize = blake3::OUT_LEN;

/// Where the artefact for the module with this BLAKE3 hex digest lives.
pub(crate) fn path(cache_dir: &Path, hex: &str) -> PathBuf {
    cache_dir.join(format!("{hex}.cwasm"))
}

/// Why a cached artefact could not be used.
#[derive(Debug)]
pub(crate) enum LoadError {
    Missing,
    Unusable(String),
}

/// Loads a cached artefact: `Missing` when there is none, `Unusable` when it is damaged or was
/// made by an incompatible wasmtime or engine configuration.
pub(crate) fn load(engine: &Engine, path: &Path) -> Result<Component, LoadError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(LoadError::Unusable(format!("reading it: {e}"))),
    };
    let Some(split) = bytes.len().checked_sub(CHECKSUM_LEN) else {
        return Err(LoadError::Unusable("truncated".to_owned()));
    };
    let (artefact, checksum) = bytes.split_at(split);
    if blake3::hash(artefact).as_bytes() != checksum {
        return Err(LoadError::Unusable("checksum mismatch".to_owned()));
    }
    deserialize_verified(engine, artefact).map_err(|e| LoadError::Unusable(format!("{e:#}")))
}

/// Turns an artefact whose checksum [`load`] just verified back into a component.
#[allow(unsafe_code)]
fn deserialize_verified(engine: &Engine, artefact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be an artefact wasmtime produced, since
    // it maps the machine code in it as executable. These bytes are exactly what `store` wrote:
    // the cache directory is the node's own, files in it are written only by `store` (temporary
    // file + rename, so never seen half-written), from `Component::serialize` of a module whose
    // content matched its BLAKE3 hash (the file name), and `load` has checked the trailing BLAKE3
    // checksum over the whole artefact. wasmtime itself still rejects artefacts from another
    // wasmtime version or an incompatible engine configuration with an error.
    unsafe { Component::deserialize(engine, artefact) }
}

/// Writes an artefact atomically: a reader sees the old file, the new one, or none.
pub(crate) fn store(path: &Path, artefact: &[u8]) -> io::Result<()> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.{sequence}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);

    let written = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(artefact)?;
        file.write_all(blake3::hash(artefact).as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// Removes an unusable artefact so the next start does not trip over it again.
pub(crate) fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "removing an unusable compiled artefact");
    }
}
