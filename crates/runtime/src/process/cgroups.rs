//! A sandbox's cgroup v1 limits, made by the launcher thread itself: it creates the sandbox's
//! groups (memory, cpu, cpuacct, pids) under its own, sets the limits, moves itself in, forks
//! the sandbox — which starts inside, before any of its code runs — and moves back. cgroup v1
//! places threads, not processes, so no other thread of the node moves.
//!
//! Why not hakoniwa's own cgroups: on v1 it creates a group in every hierarchy the host mounts
//! (eight here) at the top of each, outside the node's own, and that was two thirds of a
//! sandbox's start. On a host without these v1 hierarchies (cgroup v2) the driver leaves the
//! limits to hakoniwa.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The v1 controllers a sandbox is limited and measured by.
const CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];
/// Where the hierarchies are mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// What one sandbox may use.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) memory_bytes: u64,
    /// CPU time per [`Limits::cpu_period_us`], in microseconds.
    pub(super) cpu_quota_us: u64,
    pub(super) cpu_period_us: u64,
    pub(super) pids: u64,
}

/// The launcher thread's own groups, under which each sandbox gets its own.
pub(super) struct V1 {
    /// Per controller: the launcher's group (where it returns to).
    home: Vec<PathBuf>,
}

/// One sandbox's groups, removed once it has ended.
pub(super) struct Group {
    dirs: Vec<PathBuf>,
}

impl V1 {
    /// The calling thread's v1 groups, when the host mounts every controller as v1.
    pub(super) fn detect() -> Option<Self> {
        let text = fs::read_to_string("/proc/thread-self/cgroup").ok()?;
        let home = CONTROLLERS
            .iter()
            .map(|controller| {
                let path = text.lines().find_map(|line| {
                    let mut fields = line.splitn(3, ':');
                    let (_, listed, path) = (fields.next()?, fields.next()?, fields.next()?);
                    listed.split(',').any(|c| c == *controller).then_some(path)
                })?;
                let dir = Path::new(ROOT)
                    .join(controller)
                    .join(path.trim_start_matches('/'));
                dir.join("tasks").is_file().then_some(dir)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { home })
    }

    /// Removes the groups of sandboxes that nodes no longer running left (a `kill -9` leaves
    /// them, empty): a group is named `<node pid>-<n>`.
    pub(super) fn sweep(&self) {
        for home in &self.home {
            let Ok(entries) = fs::read_dir(home.join("mycel-sandboxes")) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let pid = name.to_str().and_then(|n| n.split('-').next());
                if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                    // Fails, harmlessly, while anything still runs in it.
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
    }

    /// Makes sandbox `name`'s groups with `limits`, and moves the calling thread into them.
    pub(super) fn enter(&self, name: &str, limits: Limits) -> io::Result<Group> {
        let group = Group {
            dirs: self
                .home
                .iter()
                .map(|home| home.join("mycel-sandboxes").join(name))
                .collect(),
        };
        let made = group.make(limits);
        if let Err(e) = made.and_then(|()| group.join()) {
            let _ = self.leave();
            group.remove();
            return Err(e);
        }
        Ok(group)
    }

    /// Moves the calling thread back to its own groups.
    pub(super) fn leave(&self) -> io::Result<()> {
        join(&self.home)
    }
}

impl Group {
    fn make(&self, limits: Limits) -> io::Result<()> {
        for dir in &self.dirs {
            fs::create_dir_all(dir)?;
        }
        let [memory, cpu, _cpuacct, pids] = &self.dirs[..] else {
            return Err(io::Error::other("one group per controller"));
        };
        let bytes = limits.memory_bytes.to_string();
        fs::write(memory.join("memory.limit_in_bytes"), &bytes)?;
        // No swap beyond the limit, where the kernel accounts swap at all.
        let with_swap = memory.join("memory.memsw.limit_in_bytes");
        if with_swap.exists() {
            fs::write(with_swap, &bytes)?;
        }
        fs::write(
            cpu.join("cpu.cfs_period_us"),
            limits.cpu_period_us.to_string(),
        )?;
        fs::write(
            cpu.join("cpu.cfs_quota_us"),
            limits.cpu_quota_us.to_string(),
        )?;
        fs::write(pids.join("pids.max"), limits.pids.to_string())?;
        Ok(())
    }

    fn join(&self) -> io::Result<()> {
        join(&self.dirs)
    }

    /// Removes the groups (they must be empty: the sandbox has ended).
    pub(super) fn remove(&self) {
        for dir in &self.dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Moves the calling thread into `dirs` (v1's `tasks` takes a thread id).
fn join(dirs: &[PathBuf]) -> io::Result<()> {
    let tid = rustix::thread::gettid().as_raw_nonzero().to_string();
    for dir in dirs {
        fs::write(dir.join("tasks"), &tid)?;
    }
    Ok(())
}
