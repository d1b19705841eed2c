//! `[[volumes]]`: directories an app keeps across restarts and redeploys. Each is a file system of
//! its own on the node (so its size holds), mounted read-write at `path`; the scheduler keeps the
//! app on the nodes that hold its volumes, and snapshots in the mesh's blob store let it move.

use serde::{Deserialize, Serialize};

use super::{ManifestError, invalid};

/// The most volumes one app may have.
pub const MAX_VOLUMES: usize = 8;
/// The smallest volume: a file system needs room for its own bookkeeping.
pub const MIN_VOLUME_MB: u64 = 8;
/// The largest volume, 1 TiB.
pub const MAX_VOLUME_MB: u64 = 1 << 20;
/// How long an app with volumes waits for a node that is gone before it moves (restoring its
/// latest snapshot elsewhere), unless the manifest says `volume_grace_ms`.
pub const DEFAULT_VOLUME_GRACE_MS: u64 = 60_000;
/// The longest `volume_grace_ms`: a day.
pub const MAX_VOLUME_GRACE_MS: u64 = 86_400_000;
/// The most often a volume may be snapshotted by itself.
pub const MIN_SNAPSHOT_EVERY_MS: u64 = 1_000;
const MAX_VOLUME_NAME_LEN: usize = 63;
const MAX_VOLUME_PATH_LEN: usize = 256;
/// Where a volume may not be mounted: what the sandbox itself provides.
const RESERVED_PATHS: [&str; 6] = ["/proc", "/sys", "/dev", "/run/secrets", "/app", "/etc"];

/// One volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Names the volume within its app: 1 to 63 of a-z, 0-9, '_' and '-'.
    pub name: String,
    /// Where the app sees it: an absolute path, mounted read-write.
    pub path: String,
    /// Its size in MiB; writes beyond it fail with "no space left on device".
    pub size_mb: u64,
    /// How often the node running the app snapshots it into the mesh; absent, only on request
    /// (`mycel volume snapshot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_every_ms: Option<u64>,
}

/// Checks an app's volumes: names and paths valid and distinct, sizes in range.
pub(super) fn check_volumes(
    volumes: &[VolumeSpec],
    grace_ms: Option<u64>,
) -> Result<(), ManifestError> {
    if volumes.len() > MAX_VOLUMES {
        return Err(invalid(
            "volumes",
            format!("at most {MAX_VOLUMES} (got {})", volumes.len()),
        ));
    }
    for (i, volume) in volumes.iter().enumerate() {
        check_volume_name(&volume.name).map_err(|e| invalid(format!("volumes[{i}].name"), e))?;
        check_volume_path(&volume.path).map_err(|e| invalid(format!("volumes[{i}].path"), e))?;
        if !(MIN_VOLUME_MB..=MAX_VOLUME_MB).contains(&volume.size_mb) {
            return Err(invalid(
                format!("volumes[{i}].size_mb"),
                format!(
                    "must be {MIN_VOLUME_MB} to {MAX_VOLUME_MB} (got {})",
                    volume.size_mb
                ),
            ));
        }
        if volume
            .snapshot_every_ms
            .is_some_and(|every| every < MIN_SNAPSHOT_EVERY_MS)
        {
            return Err(invalid(
                format!("volumes[{i}].snapshot_every_ms"),
                format!("at least {MIN_SNAPSHOT_EVERY_MS}"),
            ));
        }
        let earlier = &volumes[..i];
        if earlier.iter().any(|v| v.name == volume.name) {
            return Err(invalid(
                format!("volumes[{i}].name"),
                format!("'{}' is named twice", volume.name),
            ));
        }
        if let Some(other) = earlier
            .iter()
            .find(|v| nested(&v.path, &volume.path) || nested(&volume.path, &v.path))
        {
            return Err(invalid(
                format!("volumes[{i}].path"),
                format!("'{}' overlaps '{}'", volume.path, other.path),
            ));
        }
    }
    if let Some(grace) = grace_ms {
        if volumes.is_empty() {
            return Err(invalid(
                "volume_grace_ms",
                "only an app with [[volumes]] waits for them",
            ));
        }
        if grace > MAX_VOLUME_GRACE_MS {
            return Err(invalid(
                "volume_grace_ms",
                format!("at most {MAX_VOLUME_GRACE_MS} (got {grace})"),
            ));
        }
    }
    Ok(())
}

/// A volume name: also a directory name on the node, so nothing that could leave it.
pub fn check_volume_name(name: &str) -> Result<(), String> {
    crate::secrets::check_file_name("volume", name, MAX_VOLUME_NAME_LEN)
}

/// A mount path: absolute, normal (no `.`, `..`, empty or doubled parts), printable, not the
/// root and not where the sandbox mounts its own things.
fn check_volume_path(path: &str) -> Result<(), String> {
    let shown = || {
        path.escape_debug()
            .to_string()
            .chars()
            .take(64)
            .collect::<String>()
    };
    if path.len() > MAX_VOLUME_PATH_LEN {
        return Err(format!("at most {MAX_VOLUME_PATH_LEN} bytes"));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("'{}' must be an absolute path", shown()));
    };
    if rest.is_empty() {
        return Err("a volume cannot be mounted over the root".into());
    }
    let bad_part = |part: &str| {
        part.is_empty()
            || part == "."
            || part == ".."
            || part
                .chars()
                .any(|c| c.is_control() || c == ':' || c == ',' || c == '\\')
    };
    if rest.split('/').any(bad_part) {
        return Err(format!(
            "'{}' must be a plain absolute path: no '.', '..', empty parts, ':' or ','",
            shown()
        ));
    }
    if let Some(reserved) = RESERVED_PATHS
        .iter()
        .find(|r| nested(r, path) || nested(path, r))
    {
        return Err(format!(
            "'{}' overlaps {reserved}, which mycel provides",
            shown()
        ));
    }
    Ok(())
}

/// Whether `inner` is `outer` or lies under it.
fn nested(outer: &str, inner: &str) -> bool {
    inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(name: &str, path: &str, size_mb: u64) -> VolumeSpec {
        VolumeSpec {
            name: name.into(),
            path: path.into(),
            size_mb,
            snapshot_every_ms: None,
        }
    }

    #[test]
    fn plain_volumes_pass() {
        let volumes = [
            volume("data", "/data", 64),
            volume("logs", "/var/log/app", 8),
        ];
        check_volumes(&volumes, Some(1000)).unwrap();
    }

    #[test]
    fn hostile_names_and_paths_are_refused() {
        for name in ["", "../x", "a/b", "A", ".hidden", "x y", &"n".repeat(64)] {
            let err = check_volumes(&[volume(name, "/data", 64)], None).unwrap_err();
            assert!(
                err.to_string().starts_with("volumes[0].name"),
                "{name}: {err}"
            );
        }
        for path in [
            "data",
            "/",
            "/data/../etc",
            "/data/./x",
            "//data",
            "/data/",
            "/proc",
            "/proc/self",
            "/run/secrets",
            "/run",
            "/dev/shm",
            "/a:/b",
            "/a,b",
            "/x\n",
            "/etc/passwd",
        ] {
            let err = check_volumes(&[volume("data", path, 64)], None).unwrap_err();
            assert!(
                err.to_string().starts_with("volumes[0].path"),
                "{path}: {err}"
            );
        }
    }

    #[test]
    fn sizes_twins_and_overlaps_are_refused() {
        for size in [0, MIN_VOLUME_MB - 1, MAX_VOLUME_MB + 1] {
            assert!(check_volumes(&[volume("data", "/data", size)], None).is_err());
        }
        let twins = [volume("data", "/data", 64), volume("data", "/other", 64)];
        assert!(check_volumes(&twins, None).is_err());
        let nested = [volume("a", "/data", 64), volume("b", "/data/inner", 64)];
        assert!(check_volumes(&nested, None).is_err());
        let siblings = [volume("a", "/data", 64), volume("b", "/database", 64)];
        check_volumes(&siblings, None).unwrap();
        assert!(check_volumes(&[], Some(1000)).is_err());
        let too_many: Vec<_> = (0..=MAX_VOLUMES)
            .map(|i| volume(&format!("v{i}"), &format!("/v{i}"), 8))
            .collect();
        assert!(check_volumes(&too_many, None).is_err());
    }
}
