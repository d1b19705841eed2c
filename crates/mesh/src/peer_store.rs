//! The peers a node remembers across restarts, so it can rejoin without a bootstrap address.
//!
//! A small JSON file in the data dir, replaced atomically (temp file, fsync, rename): a crash
//! leaves either the old list or the new one, never half of either.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Most peers remembered; enough to find the mesh again, small enough to dial all at start.
pub const MAX_REMEMBERED_PEERS: usize = 32;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedPeer {
    pub peer_id: String,
    pub addrs: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PeerFile {
    peers: Vec<RememberedPeer>,
}

/// Reads the remembered peers; a missing or unreadable file is an empty list (logged), since a
/// node must still start when it has nothing to remember.
pub fn load(path: &Path) -> Vec<(PeerId, Vec<Multiaddr>)> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "reading remembered peers");
            return Vec::new();
        }
    };
    let file: PeerFile = match serde_json::from_str(&text) {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "remembered peers file is malformed; ignoring it");
            return Vec::new();
        }
    };
    file.peers
        .into_iter()
        .filter_map(|p| {
            let peer = p.peer_id.parse().ok()?;
            let addrs = p.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            Some((peer, addrs))
        })
        .take(MAX_REMEMBERED_PEERS)
        .collect()
}

/// Replaces the remembered peers with `peers`.
pub fn save(path: &Path, peers: Vec<RememberedPeer>) -> io::Result<()> {
    let mut peers = peers;
    peers.truncate(MAX_REMEMBERED_PEERS);
    let json = serde_json::to_vec_pretty(&PeerFile { peers }).map_err(io::Error::other)?;
    write_atomically(path, &json)
}

/// Writes `bytes` to `path` so that readers see the old contents or the new, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        assert!(load(&path).is_empty());
        let peer = PeerId::random();
        save(
            &path,
            vec![RememberedPeer {
                peer_id: peer.to_string(),
                addrs: vec!["/ip4/127.0.0.1/tcp/4001".into(), "garbage".into()],
            }],
        )
        .unwrap();
        let loaded = load(&path);
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0, peer);
        assert_eq!(loaded[0].1.len(), 1, "unparsable addresses are skipped");
    }

    #[test]
    fn a_corrupt_file_is_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).is_empty());
    }
}
