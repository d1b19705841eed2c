//! The apps' volumes on this node. Each is an ext4 file system in a file of its own,
//! `<data>/volumes/<app>/<name>/volume.ext4`, loop-mounted at `mnt/` beside it and bound into
//! the app's instances: the file system's size is the volume's size, whatever the app writes, and
//! a snapshot reads one file (see [`snapshot`]).
//!
//! Volumes outlive their instances and the node's restarts: a `kill -9` leaves the file system
//! mounted, and the next start uses that mount as it is (mounting the same file twice would give
//! two kernels' views of one disk). A graceful stop unmounts them all.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
};

use mycel_protocol::app::check_volume_name;

use crate::AgentError;

pub(crate) mod keeper;
pub(crate) mod snapshot;

const IMAGE: &str = "volume.ext4";
const MOUNT: &str = "mnt";
/// The owner the volume was made for: a copy made for another owner is never handed over.
const OWNER: &str = "owner";
/// The snapshot the copy was last restored from or taken as (see [`snapshot`]).
pub(crate) const BASE: &str = "snapshot";

/// This node's volumes. Cheap to clone; one lock serializes making, mounting and removing them,
/// so two instances of an app that start together share one mount.
#[derive(Clone, Debug)]
pub(crate) struct LocalVolumes {
    root: PathBuf,
    lock: Arc<Mutex<()>>,
}

/// Why a name cannot be a path part here (names are checked by the manifest; this is the node's
/// own guard against a log entry written by something else).
fn checked(app: &str, name: &str) -> Result<(), AgentError> {
    if !mycel_protocol::discovery::is_app_name(app) {
        return Err(AgentError::Unrunnable(format!(
            "'{}' is not an app name",
            app.escape_debug()
        )));
    }
    check_volume_name(name).map_err(AgentError::Unrunnable)
}

impl LocalVolumes {
    /// The volumes under `root` (created, private to root).
    pub(crate) fn open(root: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&root)?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))?;
        // The kernel's mount table names absolute paths with no links.
        let root = root.canonicalize()?;
        Ok(LocalVolumes {
            root,
            lock: Arc::new(Mutex::new(())),
        })
    }

    pub(crate) fn dir(&self, app: &str, name: &str) -> PathBuf {
        self.root.join(app).join(name)
    }

    /// Whether this node has a copy of the volume (made for `owner`).
    pub(crate) fn holds(&self, app: &str, name: &str, owner: &str) -> bool {
        let dir = self.dir(app, name);
        dir.join(IMAGE).is_file() && fs::read_to_string(dir.join(OWNER)).is_ok_and(|o| o == owner)
    }

    /// Makes the volume ready for an instance: made (empty) if this node has none, grown to
    /// `size_mb` if it is smaller and not in use, and mounted. Returns the directory to bind.
    /// `restore` fills a volume this node does not hold yet before it is mounted.
    pub(crate) fn ensure(
        &self,
        app: &str,
        name: &str,
        size_mb: u64,
        owner: &str,
        restore: impl FnOnce(&Path) -> Result<Option<String>, AgentError>,
    ) -> Result<PathBuf, AgentError> {
        checked(app, name)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.dir(app, name);
        let (image, mount) = (dir.join(IMAGE), dir.join(MOUNT));
        if dir.exists() && !self.holds(app, name, owner) {
            // Made for another owner of the name, or half made: not this app's data.
            remove_dir(&dir)?;
        }
        let node_error = |what: &str, e: io::Error| AgentError::Node(format!("{what}: {e}"));
        if !image.is_file() {
            fs::create_dir_all(&mount).map_err(|e| node_error("making a volume's directory", e))?;
            let part = dir.join("volume.part");
            let base = restore(&part)?;
            if base.is_none() {
                make_file_system(&part, size_mb, name)?;
            }
            if let Some(base) = base {
                write_synced(&dir.join(BASE), base.as_bytes())
                    .map_err(|e| node_error("recording a volume's snapshot", e))?;
            }
            write_synced(&dir.join(OWNER), owner.as_bytes())
                .map_err(|e| node_error("recording a volume's owner", e))?;
            // Last: a volume file is whole, or absent.
            fs::rename(&part, &image).map_err(|e| node_error("keeping a new volume", e))?;
        }
        if !is_mounted(&mount) {
            grow(&image, size_mb)?;
            // No nodev or noatime: a sandbox's user namespace remounts its bind of it, and may not
            // change flags locked from outside (apps have no capability to make devices anyway).
            run(host_namespace("mount")
                .args(["-o", "loop,nosuid"])
                .arg(&image)
                .arg(&mount))?;
            // Any uid the app runs as may write it; only root can reach it outside the app.
            fs::set_permissions(&mount, fs::Permissions::from_mode(0o777))
                .map_err(|e| node_error("opening a volume to its app", e))?;
            let found = mount.join("lost+found");
            if found.is_dir() {
                // Apps such as PostgreSQL refuse a data directory that is not empty.
                let _ = fs::remove_dir(found);
            }
        }
        Ok(mount)
    }

    /// Unmounts and deletes a volume.
    pub(crate) fn remove(&self, app: &str, name: &str) -> Result<(), AgentError> {
        checked(app, name)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        remove_dir(&self.dir(app, name))?;
        let app_dir = self.root.join(app);
        let _ = fs::remove_dir(app_dir); // only once empty
        Ok(())
    }

    /// Every volume this node holds: (app, name).
    pub(crate) fn local(&self) -> Vec<(String, String)> {
        let names = |dir: &Path| -> Vec<String> {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        };
        names(&self.root)
            .into_iter()
            .flat_map(|app| {
                let names = names(&self.root.join(&app));
                names.into_iter().map(move |name| (app.clone(), name))
            })
            .collect()
    }

    /// Unmounts every volume (the node is stopping; its instances have stopped).
    pub(crate) fn unmount_all(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        for (app, name) in self.local() {
            let mount = self.dir(&app, &name).join(MOUNT);
            if is_mounted(&mount)
                && let Err(e) = unmount(&mount)
            {
                tracing::warn!(%app, volume = %name, error = %e, "could not unmount a volume");
            }
        }
    }

    /// The mounted directory and the file system file of a volume this node holds.
    pub(crate) fn paths(&self, app: &str, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir(app, name);
        (dir.join(MOUNT), dir.join(IMAGE))
    }
}

/// An empty ext4 file system of `size_mb` MiB in a sparse file.
fn make_file_system(file: &Path, size_mb: u64, label: &str) -> Result<(), AgentError> {
    let created = fs::File::create(file).and_then(|f| f.set_len(size_mb << 20));
    created.map_err(|e| AgentError::Node(format!("making a volume file: {e}")))?;
    run(Command::new("mkfs.ext4")
        // Quiet, no blocks reserved for root, the file's zeros trusted (it stays sparse).
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "assume_storage_prezeroed=1,root_owner=0:0",
        ])
        .args(["-L", &label[..label.len().min(16)]])
        .arg(file))
}

/// Grows an unmounted volume's file system to `size_mb` (a redeploy may ask for more room).
fn grow(image: &Path, size_mb: u64) -> Result<(), AgentError> {
    let size = fs::metadata(image)
        .map_err(|e| AgentError::Node(format!("reading a volume file: {e}")))?
        .len();
    if size >= size_mb << 20 {
        return Ok(());
    }
    let file = fs::OpenOptions::new().write(true).open(image);
    file.and_then(|f| f.set_len(size_mb << 20))
        .map_err(|e| AgentError::Node(format!("growing a volume file: {e}")))?;
    run(Command::new("e2fsck").args(["-f", "-p"]).arg(image))?;
    run(Command::new("resize2fs").arg(image))
}

/// Unmounts a mounted volume and deletes its directory.
fn remove_dir(dir: &Path) -> Result<(), AgentError> {
    let mount = dir.join(MOUNT);
    if is_mounted(&mount) {
        unmount(&mount)?;
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AgentError::Node(format!("deleting a volume: {e}"))),
    }
}

fn unmount(mount: &Path) -> Result<(), AgentError> {
    // Lazily when something still holds it open: it goes once nothing does.
    run(host_namespace("umount").arg(mount))
        .or_else(|_| run(host_namespace("umount").arg("-l").arg(mount)))
}

/// `tool`, run in the Docker engine's mount namespace when the node runs in one of its own
/// (systemd's `ProtectSystem=` gives it one): a volume mounted only in the node's namespace would
/// be an empty directory to the engine binding it. On a host whose mounts are shared (systemd
/// makes them so) the node's namespace receives it too.
fn host_namespace(tool: &str) -> Command {
    let namespace = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let engine = fs::read_to_string(DOCKER_PID)
        .ok()
        .map(|pid| pid.trim().to_owned())
        .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
    if let Some(engine) = engine
        && let (Some(own), Some(theirs)) = (namespace("self"), namespace(&engine))
        && own != theirs
    {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--mount=/proc/{engine}/ns/mnt"))
            .args(["--", tool]);
        return command;
    }
    Command::new(tool)
}

/// Where the Docker engine writes its pid (its default).
const DOCKER_PID: &str = "/run/docker.pid";

/// Whether something is mounted exactly at `path`, from the kernel's table.
pub(crate) fn is_mounted(path: &Path) -> bool {
    let Ok(table) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    // Field 5 is the mount point; volume paths hold no characters the table escapes.
    table
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_ref()))
}

/// Runs a system tool; its error output is the error.
fn run(command: &mut Command) -> Result<(), AgentError> {
    let tool = command.get_program().to_string_lossy().into_owned();
    let output = command
        .output()
        .map_err(|e| AgentError::Node(format!("running {tool}: {e} (volumes need it, as root)")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(AgentError::Node(format!(
        "{tool} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
