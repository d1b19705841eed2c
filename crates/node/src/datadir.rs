//! The node's data dir: its identity key, the API token and the `node.json` readiness file (the
//! mesh's secret is `mesh_mode`'s).

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use libp2p::identity::Keypair;
use mycel_api::ApiToken;
use serde::{Deserialize, Serialize};

use crate::NodeError;

pub const KEY_FILE: &str = "node.key";
/// The API's bearer token, owner-only; never in `node.json`, never logged.
pub const API_TOKEN_FILE: &str = "api.token";
pub const NODE_FILE: &str = "node.json";
pub const PEERS_FILE: &str = "peers.json";

/// Creates the data dir (owner-only) if it does not exist.
pub fn prepare(dir: &Path) -> Result<(), NodeError> {
    fs::create_dir_all(dir).map_err(NodeError::io("creating data dir", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(NodeError::io("restricting data dir", dir))
}

/// The node's ed25519 identity: read from the data dir, or made and stored on first start.
/// A key file that exists but does not parse is an error, never silently replaced: replacing it
/// would give the node a new identity.
pub fn load_or_create_key(dir: &Path) -> Result<Keypair, NodeError> {
    let path = dir.join(KEY_FILE);
    load_or_create(
        &path,
        |bytes| {
            Keypair::from_protobuf_encoding(bytes).map_err(|_| NodeError::Unreadable {
                path: path.clone(),
                what: "a node key; move it away to start with a new identity".into(),
            })
        },
        || {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| {
                NodeError::io("encoding the new node key", &path)(io::Error::other(e))
            })?;
            Ok((key, bytes))
        },
    )
}

/// The API's token: read from the data dir, or made and stored on first need. A file that is
/// not a token is an error, never silently replaced: clients hold the old one.
pub fn load_or_create_api_token(dir: &Path) -> Result<ApiToken, NodeError> {
    let path = dir.join(API_TOKEN_FILE);
    load_or_create(
        &path,
        |bytes| {
            ApiToken::parse(&String::from_utf8_lossy(bytes)).map_err(|e| NodeError::Unreadable {
                path: path.clone(),
                what: format!("an API token ({e}); move it away to get a new one"),
            })
        },
        || {
            let token = ApiToken::generate();
            let line = format!("{}\n", token.expose()).into_bytes();
            Ok((token, line))
        },
    )
}

/// A secret kept at `path`: `parse`d from the file, or, when there is none, `create`d (the
/// value and the bytes to store) and written owner-only.
fn load_or_create<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, NodeError>,
    create: impl FnOnce() -> Result<(T, Vec<u8>), NodeError>,
) -> Result<T, NodeError> {
    match fs::read(path) {
        Ok(bytes) => parse(&bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let (value, bytes) = create()?;
            write_private(path, &bytes).map_err(NodeError::io("writing", path))?;
            Ok(value)
        }
        Err(e) => Err(NodeError::io("reading", path)(e)),
    }
}

/// The API token a node keeps in `dir`, for a client on this machine; `None` when there is none
/// or it cannot be read.
pub fn read_api_token(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(API_TOKEN_FILE)).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// Writes a file only its owner can read, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
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

/// What `node.json` says: written when the node is ready, removed when it stops. Owner-only: a
/// private mesh's join ticket holds the mesh's secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeFile {
    pub peer_id: String,
    pub name: String,
    pub listen_addrs: Vec<String>,
    pub api: String,
    pub gateway: String,
    /// Whether the mesh is private.
    #[serde(default)]
    pub private: bool,
    /// The join ticket (`mycel up --join`): this node's addresses, and a private mesh's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
}

pub fn node_file(dir: &Path) -> PathBuf {
    dir.join(NODE_FILE)
}

pub fn write_node_file(dir: &Path, node: &NodeFile) -> Result<(), NodeError> {
    let path = node_file(dir);
    let json = serde_json::to_vec_pretty(node).map_err(io::Error::other);
    json.and_then(|json| write_private(&path, &json))
        .map_err(NodeError::io("writing", &path))
}

/// The `node.json` of a node running from `dir`; `None` when there is none.
pub fn read_node_file(dir: &Path) -> Option<NodeFile> {
    serde_json::from_slice(&fs::read(node_file(dir)).ok()?).ok()
}

/// Removes `node.json`, so nobody reads the addresses of a node that is not running.
pub fn remove_node_file(dir: &Path) {
    match fs::remove_file(node_file(dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "removing node.json"),
    }
}

/// This machine's host name, for default node names.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_key_and_api_token_survive_restarts_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let (key, token) = (
            load_or_create_key(dir.path()).unwrap(),
            load_or_create_api_token(dir.path()).unwrap(),
        );
        assert_eq!(
            key.public(),
            load_or_create_key(dir.path()).unwrap().public()
        );
        let again = load_or_create_api_token(dir.path()).unwrap();
        assert_eq!(token.expose(), again.expose());
        assert_eq!(read_api_token(dir.path()).as_deref(), Some(token.expose()));
        assert_eq!(mode_of(&dir.path().join(KEY_FILE)), 0o600);
        assert_eq!(mode_of(&dir.path().join(API_TOKEN_FILE)), 0o600);
    }

    #[test]
    fn a_bad_api_token_is_an_error_not_a_new_token() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_api_token(dir.path()).is_none());
        fs::write(dir.path().join(API_TOKEN_FILE), b"short\n").unwrap();
        assert!(load_or_create_api_token(dir.path()).is_err());
        assert_eq!(
            fs::read(dir.path().join(API_TOKEN_FILE)).unwrap(),
            b"short\n"
        );
    }

    #[test]
    fn a_corrupt_key_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        assert!(load_or_create_key(dir.path()).is_err());
        assert_eq!(fs::read(dir.path().join(KEY_FILE)).unwrap(), b"garbage");
    }
}
