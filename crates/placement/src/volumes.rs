//! Apps' volumes in the replicated state: which nodes hold a copy (every node an instance was
//! placed on), the latest snapshot, and whose they are. Pure, like the rest of the state.

use std::collections::{BTreeMap, BTreeSet};

use mycel_protocol::placement::{AppRecord, AppVolumes, VolumeSnapshot, WriteError};

/// Every app's volumes, by app name. Kept when an app stops; dropped by a purge.
pub type Volumes = BTreeMap<String, AppVolumes>;

/// Records that `record`'s instances were placed on `nodes`: each keeps a copy of its volumes.
/// Volumes left by an earlier app of the same name but another owner are dropped first: a
/// name claimed anew starts empty.
pub(crate) fn note_placed<'a>(
    volumes: &mut Volumes,
    record: &AppRecord,
    owner: &str,
    nodes: impl Iterator<Item = &'a str>,
) {
    let specs = &record.manifest.volumes;
    let name = &record.manifest.name;
    if volumes.get(name).is_some_and(|v| v.owner != owner) {
        volumes.remove(name);
    }
    if specs.is_empty() && !volumes.contains_key(name) {
        return;
    }
    let entry = volumes.entry(name.clone()).or_insert_with(|| AppVolumes {
        owner: owner.to_owned(),
        volumes: BTreeMap::new(),
    });
    let nodes: BTreeSet<&str> = nodes.collect();
    for spec in specs {
        let volume = entry.volumes.entry(spec.name.clone()).or_default();
        volume.size_mb = volume.size_mb.max(spec.size_mb);
        volume.holders.extend(nodes.iter().map(|n| (*n).to_owned()));
    }
}

/// Keeps `snapshot` as the volume's latest when it is newer than the one held.
pub(crate) fn put_snapshot(
    volumes: &mut Volumes,
    app: &str,
    volume: &str,
    snapshot: &VolumeSnapshot,
) {
    let Some(record) = volumes.get_mut(app).and_then(|v| v.volumes.get_mut(volume)) else {
        return; // purged, or never had it
    };
    if record
        .snapshot
        .as_ref()
        .is_none_or(|held| held.taken_at_ms < snapshot.taken_at_ms)
    {
        record.snapshot = Some(snapshot.clone());
    }
}

/// One more snapshot of the volume is asked for.
pub(crate) fn request_snapshot(volumes: &mut Volumes, app: &str, volume: &str) {
    if let Some(record) = volumes.get_mut(app).and_then(|v| v.volumes.get_mut(volume)) {
        record.requested += 1;
    }
}

/// `node` holds a whole copy of snapshot `index` (when that is still the volume's latest).
pub(crate) fn snapshot_copied(
    volumes: &mut Volumes,
    app: &str,
    volume: &str,
    index: &mycel_protocol::BlobHash,
    node: &str,
) {
    let snapshot = volumes
        .get_mut(app)
        .and_then(|v| v.volumes.get_mut(volume))
        .and_then(|r| r.snapshot.as_mut())
        .filter(|s| s.index == *index);
    if let Some(snapshot) = snapshot
        && !snapshot.copies.iter().any(|c| c == node)
    {
        snapshot.copies.push(node.to_owned());
    }
}

/// The nodes that hold a copy of any of `app`'s volumes (for an owner who may use them).
pub fn holders(volumes: &Volumes, app: &str, owner: &str) -> BTreeSet<String> {
    volumes
        .get(app)
        .filter(|v| v.owner == owner)
        .map(|v| {
            v.volumes
                .values()
                .flat_map(|r| r.holders.iter().cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// Only the owner of a stopped app's kept volumes may purge them.
pub(crate) fn check_purger(
    volumes: &Volumes,
    app: &str,
    auth: Option<&mycel_protocol::placement::Authorized>,
) -> Result<(), WriteError> {
    let Some(held) = volumes.get(app).filter(|v| !v.owner.is_empty()) else {
        return Ok(());
    };
    let signer = auth.map(|a| a.request.key.to_string()).unwrap_or_default();
    if signer == held.owner {
        return Ok(());
    }
    Err(WriteError::BadSignature(format!(
        "the volumes of '{app}' belong to {}; this purge is signed by {}",
        held.owner,
        if signer.is_empty() { "nobody" } else { &signer }
    )))
}

/// A redeploy may grow a volume, never shrink one: its file system holds data up to its size.
pub(crate) fn check_sizes(
    volumes: &Volumes,
    record: &AppRecord,
    owner: &str,
) -> Result<(), WriteError> {
    let Some(held) = volumes
        .get(&record.manifest.name)
        .filter(|v| v.owner == owner)
    else {
        return Ok(());
    };
    for spec in &record.manifest.volumes {
        if let Some(volume) = held.volumes.get(&spec.name)
            && spec.size_mb < volume.size_mb
        {
            return Err(WriteError::Rejected(format!(
                "volume '{}' is {} MiB: a volume can grow, not shrink (asked {} MiB)",
                spec.name, volume.size_mb, spec.size_mb
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::{BlobHash, app::Manifest};

    fn record(size_mb: u64) -> AppRecord {
        let manifest = Manifest::from_toml(&format!(
            "name = \"db\"\nversion = \"1\"\n[container]\nimage = \"postgres:15\"\n\
             [[volumes]]\nname = \"data\"\npath = \"/data\"\nsize_mb = {size_mb}\n"
        ))
        .unwrap();
        AppRecord {
            manifest,
            deployed_by: "n".into(),
            deployed_at_ms: 0,
            generation: 1,
            unplaced: None,
            scale: None,
        }
    }

    fn snapshot(at: u64) -> VolumeSnapshot {
        VolumeSnapshot {
            index: BlobHash([at as u8; 32]),
            node: "a".into(),
            taken_at_ms: at,
            size_bytes: 1,
            used_bytes: 1,
            stored_bytes: 1,
            answers: 0,
            copy_to: vec![],
            copies: vec![],
        }
    }

    #[test]
    fn holders_grow_with_placements_and_stay_with_their_owner() {
        let mut volumes = Volumes::new();
        note_placed(&mut volumes, &record(64), "alice", ["a"].into_iter());
        note_placed(&mut volumes, &record(128), "alice", ["b"].into_iter());
        assert_eq!(
            holders(&volumes, "db", "alice"),
            ["a", "b"].map(String::from).into()
        );
        assert_eq!(volumes["db"].volumes["data"].size_mb, 128);
        assert!(holders(&volumes, "db", "mallory").is_empty());
        assert!(check_sizes(&volumes, &record(64), "alice").is_err());
        check_sizes(&volumes, &record(64), "mallory").unwrap();
        check_sizes(&volumes, &record(256), "alice").unwrap();

        // Another owner claims the name: the old volumes are not theirs.
        note_placed(&mut volumes, &record(64), "mallory", ["c"].into_iter());
        assert_eq!(volumes["db"].owner, "mallory");
        assert_eq!(
            holders(&volumes, "db", "mallory"),
            ["c"].map(String::from).into()
        );
    }

    #[test]
    fn only_their_owner_purges_kept_volumes() {
        let mut volumes = Volumes::new();
        note_placed(&mut volumes, &record(64), "alice", ["a"].into_iter());
        assert!(check_purger(&volumes, "db", None).is_err());
        check_purger(&volumes, "other", None).unwrap();
    }

    #[test]
    fn only_a_newer_snapshot_replaces_the_held_one() {
        let mut volumes = Volumes::new();
        put_snapshot(&mut volumes, "db", "data", &snapshot(5));
        assert!(volumes.is_empty(), "no volume, no snapshot");
        note_placed(&mut volumes, &record(64), "alice", ["a"].into_iter());
        put_snapshot(&mut volumes, "db", "data", &snapshot(5));
        put_snapshot(&mut volumes, "db", "data", &snapshot(3));
        let held = volumes["db"].volumes["data"].snapshot.as_ref().unwrap();
        assert_eq!(held.taken_at_ms, 5);
        put_snapshot(&mut volumes, "db", "data", &snapshot(9));
        let held = volumes["db"].volumes["data"].snapshot.as_ref().unwrap();
        assert_eq!(held.taken_at_ms, 9);

        snapshot_copied(&mut volumes, "db", "data", &BlobHash([5; 32]), "b");
        snapshot_copied(&mut volumes, "db", "data", &BlobHash([9; 32]), "b");
        snapshot_copied(&mut volumes, "db", "data", &BlobHash([9; 32]), "b");
        let held = volumes["db"].volumes["data"].snapshot.as_ref().unwrap();
        assert_eq!(
            held.copies,
            ["b"],
            "only the latest snapshot's copies count, once each"
        );
        request_snapshot(&mut volumes, "db", "data");
        request_snapshot(&mut volumes, "db", "nope");
        assert_eq!(volumes["db"].volumes["data"].requested, 1);
    }
}
