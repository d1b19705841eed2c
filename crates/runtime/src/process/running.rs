//! A running sandbox as the [`Backend`] of its instance: its output followed into the log, its
//! end noticed (from a pidfd) and said there, its memory and CPU read from its cgroup, and
//! stopping it a kill of its whole process tree.

use std::{
    os::fd::OwnedFd,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::{io::AsyncReadExt, task::JoinHandle};

use super::launcher::{Launcher, Spawned};
use crate::{
    logs::{LogBuffer, Stream},
    upstream::Backend,
};

/// Longer lines are cut into pieces of this many bytes (as the other drivers cut them).
const MAX_LINE: usize = 16 * 1024;
/// How long a killed sandbox's last lines may take to be read.
const LAST_LINES: Duration = Duration::from_secs(1);
/// How often the end is looked for where a pidfd cannot tell.
const POLL_END: Duration = Duration::from_millis(500);

pub(super) struct Sandbox {
    id: String,
    key: u64,
    launcher: Launcher,
    /// How it ended, once it has.
    ended: Arc<Mutex<Option<String>>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
    watcher: JoinHandle<()>,
    cgroup: Cgroup,
    /// Set once [`Backend::shut_down`] killed it; until then dropping it kills it.
    killed: AtomicBool,
}

impl Sandbox {
    /// Starts following `spawned`: its output into `log`, and its end.
    pub(super) fn follow(
        id: String,
        launcher: Launcher,
        spawned: &Spawned,
        log: Arc<LogBuffer>,
    ) -> Self {
        let mut readers = Vec::new();
        for (fd, stream) in [
            (&spawned.stdout, Stream::Stdout),
            (&spawned.stderr, Stream::Stderr),
        ] {
            if let Some(fd) = fd.as_ref().and_then(|fd| fd.try_clone().ok()) {
                readers.push(tokio::spawn(read_lines(fd, stream, log.clone())));
            }
        }
        let ended = Arc::new(Mutex::new(None));
        let watcher = tokio::spawn(watch_end(
            spawned.pid,
            spawned.key,
            launcher.clone(),
            ended.clone(),
            log,
        ));
        Self {
            id,
            key: spawned.key,
            launcher,
            ended,
            readers: Mutex::new(readers),
            watcher,
            cgroup: Cgroup::of(spawned.pid),
            killed: AtomicBool::new(false),
        }
    }

    /// How it ended, if it has.
    pub(super) async fn reaped(&self) -> Option<String> {
        if let Some(ended) = lock(&self.ended).clone() {
            return Some(ended);
        }
        let ended = self.launcher.reap(self.key).await?;
        let text = ended.reason;
        *lock(&self.ended) = Some(text.clone());
        Some(text)
    }
}

impl Backend for Sandbox {
    fn memory(&self) -> Option<u64> {
        self.cgroup.memory()
    }

    fn cpu_nanos(&self) -> Option<u64> {
        self.cgroup.cpu_nanos()
    }

    fn ended(&self) -> Option<String> {
        lock(&self.ended).clone()
    }

    fn shut_down(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.killed.store(true, Ordering::SeqCst);
            self.launcher.kill(self.key).await;
            self.watcher.abort();
            let readers = std::mem::take(&mut *lock(&self.readers));
            for reader in readers {
                let abort = reader.abort_handle();
                if tokio::time::timeout(LAST_LINES, reader).await.is_err() {
                    abort.abort();
                }
            }
            tracing::debug!(instance = %self.id, "sandbox killed");
        })
    }
}

impl Drop for Sandbox {
    /// A sandbox nobody holds must not run on: a start cancelled midway (the agent no longer
    /// wants the instance) kills what it spawned.
    fn drop(&mut self) {
        if !self.killed.load(Ordering::SeqCst) {
            self.launcher.kill_detached(self.key);
        }
        self.watcher.abort();
        for reader in lock(&self.readers).drain(..) {
            reader.abort();
        }
    }
}

/// Reads `fd` to its end, a line at a time, into `log`.
async fn read_lines(fd: OwnedFd, stream: Stream, log: Arc<LogBuffer>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut pending = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(read) = pipe.read(&mut chunk).await {
        if read == 0 {
            break;
        }
        pending.extend_from_slice(&chunk[..read]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            push(&log, stream, &line[..line.len() - 1]);
        }
        while pending.len() >= MAX_LINE {
            let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            push(&log, stream, &piece);
        }
    }
    if !pending.is_empty() {
        push(&log, stream, &pending);
    }
}

fn push(log: &LogBuffer, stream: Stream, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    log.push(stream, String::from_utf8_lossy(line).into_owned());
}

/// Waits for the sandbox's supervisor to end (a pidfd turns readable), then reaps it and says
/// how it ended in the log: requests to it fail from then on, and the agent's health checks
/// restart it.
async fn watch_end(
    pid: u32,
    key: u64,
    launcher: Launcher,
    ended: Arc<Mutex<Option<String>>>,
    log: Arc<LogBuffer>,
) {
    let pidfd = rustix::process::Pid::from_raw(pid as i32)
        .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok())
        .and_then(watchable);
    let how = loop {
        match &pidfd {
            Some(fd) => {
                if let Ok(mut ready) = fd.readable().await {
                    ready.retain_ready();
                }
            }
            None => tokio::time::sleep(POLL_END).await,
        }
        if let Some(how) = launcher.reap(key).await {
            break how.reason;
        }
        if pidfd.is_some() {
            // Readable yet not reapable: the launcher is gone; nothing more to watch.
            return;
        }
    };
    log.push(Stream::Stderr, format!("[mycel] the process ended: {how}"));
    *lock(&ended) = Some(how);
}

/// `pidfd` registered with the reactor, to wait for it to turn readable.
#[allow(unsafe_code)]
fn watchable(pidfd: OwnedFd) -> Option<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` moves into the `AsyncFd`, which alone owns it from here on: the
    // descriptor stays open and the same until the `AsyncFd` drops it.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .ok()
}

/// Where the sandbox's cgroup files are, as `/proc/<pid>/cgroup` names them.
struct Cgroup {
    memory: Option<PathBuf>,
    /// `cpuacct.usage` (nanoseconds, v1) or `cpu.stat` (`usage_usec`, v2).
    cpu: Option<PathBuf>,
}

impl Cgroup {
    fn of(pid: u32) -> Self {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let mut cgroup = Cgroup {
            memory: None,
            cpu: None,
        };
        let mut unified = None;
        for line in text.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if controllers.is_empty() {
                unified = Some(PathBuf::from("/sys/fs/cgroup").join(path));
                continue;
            }
            let dir = PathBuf::from("/sys/fs/cgroup").join(controllers).join(path);
            let listed: Vec<&str> = controllers.split(',').collect();
            if listed.contains(&"memory") {
                cgroup.memory = Some(dir.join("memory.usage_in_bytes"));
            }
            if listed.contains(&"cpuacct") {
                cgroup.cpu = Some(dir.join("cpuacct.usage"));
            }
        }
        // cgroup v2 alone (hybrid hosts keep the limits in v1).
        if let Some(dir) = unified.filter(|_| cgroup.memory.is_none()) {
            cgroup.memory = Some(dir.join("memory.current"));
            cgroup.cpu = Some(dir.join("cpu.stat"));
        }
        cgroup
    }

    fn memory(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.memory.as_ref()?).ok()?;
        text.trim().parse().ok()
    }

    fn cpu_nanos(&self) -> Option<u64> {
        let path = self.cpu.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        if path.ends_with("cpu.stat") {
            let usec: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()?;
            return Some(usec.saturating_mul(1000));
        }
        text.trim().parse().ok()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
