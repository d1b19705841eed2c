//! The node's data dir: its identity key and the `node.json` readiness file.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::Context;
use libp2p::identity::Keypair;
use mycel_mesh::peer_store::write_atomically;
use serde::Serialize;

const KEY_FILE: &str = "node.key";
pub(crate) const NODE_FILE: &str = "node.json";
pub(crate) const PEERS_FILE: &str = "peers.json";

/// Creates the data dir (owner-only) if it does not exist.
pub(crate) fn prepare(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting data dir {}", dir.display()))?;
    Ok(())
}

/// The node's ed25519 identity: read from the data dir, or made and stored on first start.
/// A key file that exists but does not parse is an error, never silently replaced: replacing it
/// would give the node a new identity.
pub(crate) fn load_or_create_key(dir: &Path) -> anyhow::Result<Keypair> {
    let path = dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).with_context(|| {
            format!(
                "{} is not a node key; move it away to start with a new identity",
                path.display()
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .context("encoding the new node key")?;
            write_private(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes a file only its owner can read, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// What `node.json` says: written when the node is ready, removed when it stops.
#[derive(Debug, Serialize)]
pub(crate) struct NodeFile {
    pub(crate) peer_id: String,
    pub(crate) name: String,
    pub(crate) listen_addrs: Vec<String>,
    pub(crate) api: String,
    pub(crate) gateway: String,
}

pub(crate) fn node_file(dir: &Path) -> PathBuf {
    dir.join(NODE_FILE)
}

pub(crate) fn write_node_file(dir: &Path, node: &NodeFile) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(node).context("encoding node.json")?;
    write_atomically(&node_file(dir), &json).context("writing node.json")
}

/// Removes `node.json`, so nobody reads the addresses of a node that is not running.
pub(crate) fn remove_node_file(dir: &Path) {
    match fs::remove_file(node_file(dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "removing node.json"),
    }
}

/// This machine's host name, for default node names.
pub(crate) fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_survives_restarts_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_key(dir.path()).unwrap();
        let second = load_or_create_key(dir.path()).unwrap();
        assert_eq!(first.public(), second.public());
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_corrupt_key_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        assert!(load_or_create_key(dir.path()).is_err());
        assert_eq!(fs::read(dir.path().join(KEY_FILE)).unwrap(), b"garbage");
    }
}
