//! The one thread that starts sandboxes, holds them, and makes sockets inside their networks.
//!
//! Why a thread of its own: a sandbox's supervisor is killed when the thread that forked it ends
//! (hakoniwa sets `PR_SET_PDEATHSIG`, which follows the forking thread), so that thread lives as
//! long as the driver — and when the node dies, even by `kill -9`, every sandbox dies with it.
//! Each sandbox gets a network of its own: this thread moves into a fresh network namespace,
//! brings its loopback up and forks the sandbox there, then moves back; a socket made while it
//! stands in that namespace belongs to it for good. No tokio worker ever changes namespace.

use std::{
    collections::HashMap,
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{Arc, mpsc},
};

use rustix::{
    net::{AddressFamily, SocketFlags, SocketType},
    thread::{LinkNameSpaceType, UnshareFlags},
};
use tokio::sync::oneshot;

use super::cgroups::{Group, Limits, V1};

/// A sandbox that started: where to find and follow it.
pub(super) struct Spawned {
    /// The launcher's key for it.
    pub(super) key: u64,
    /// Its supervisor's pid on this host.
    pub(super) pid: u32,
    pub(super) stdout: Option<OwnedFd>,
    pub(super) stderr: Option<OwnedFd>,
    /// Its network namespace.
    pub(super) netns: Arc<OwnedFd>,
}

/// How a sandbox ended.
pub(super) struct Ended {
    /// Its exit code (125: the sandbox itself failed; 128 + n: killed by signal n).
    pub(super) code: i32,
    pub(super) reason: String,
}

/// Builds the sandboxed command, on the launcher thread (hakoniwa's types stay there).
pub(super) type MakeCommand = Box<dyn FnOnce() -> hakoniwa::Command + Send>;

enum Job {
    Spawn {
        make: MakeCommand,
        /// Its cgroup limits, when the launcher sets them (see [`Launcher::sets_limits`]).
        limits: Option<Limits>,
        reply: oneshot::Sender<Result<Spawned, String>>,
    },
    Socket {
        netns: Arc<OwnedFd>,
        reply: oneshot::Sender<io::Result<OwnedFd>>,
    },
    /// Whether it ended, and how (it is reaped then).
    Reap {
        key: u64,
        reply: oneshot::Sender<Option<Ended>>,
    },
    /// Kills it (the whole sandbox dies with its supervisor) and reaps it.
    Kill {
        key: u64,
        reply: oneshot::Sender<()>,
    },
}

/// The handle to the launcher thread; the thread ends when every handle is gone.
#[derive(Clone)]
pub(super) struct Launcher {
    jobs: mpsc::Sender<Job>,
    sets_limits: bool,
}

impl Launcher {
    pub(super) fn start() -> io::Result<Self> {
        let host_netns: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
        let (jobs, queue) = mpsc::channel();
        let (started, sets_limits) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("mycel-sandboxes".into())
            .spawn(move || {
                let cgroups = V1::detect();
                if let Some(cgroups) = &cgroups {
                    cgroups.sweep();
                }
                let _ = started.send(cgroups.is_some());
                Thread::new(host_netns, cgroups).run(queue)
            })?;
        let sets_limits = sets_limits.recv().map_err(io::Error::other)?;
        Ok(Self { jobs, sets_limits })
    }

    /// Whether the launcher sets sandboxes' cgroup limits itself (cgroup v1 hosts); otherwise
    /// hakoniwa does, as the command asks.
    pub(super) fn sets_limits(&self) -> bool {
        self.sets_limits
    }

    pub(super) async fn spawn(
        &self,
        make: MakeCommand,
        limits: Option<Limits>,
    ) -> Result<Spawned, String> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Spawn {
            make,
            limits,
            reply,
        })?;
        answer.await.map_err(|_| gone())?
    }

    /// A TCP socket (non-blocking, close-on-exec) in the network `netns`.
    pub(super) async fn socket(&self, netns: Arc<OwnedFd>) -> io::Result<OwnedFd> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Socket { netns, reply })
            .map_err(io::Error::other)?;
        answer.await.map_err(|_| io::Error::other(gone()))?
    }

    /// `Some(how)` once sandbox `key` has ended (it is forgotten then).
    pub(super) async fn reap(&self, key: u64) -> Option<Ended> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Reap { key, reply }).ok()?;
        answer.await.ok().flatten()
    }

    pub(super) async fn kill(&self, key: u64) {
        let (reply, answer) = oneshot::channel();
        if self.send(Job::Kill { key, reply }).is_ok() {
            let _ = answer.await;
        }
    }

    /// Kills sandbox `key` without waiting for it to be done.
    pub(super) fn kill_detached(&self, key: u64) {
        let (reply, _) = oneshot::channel();
        let _ = self.send(Job::Kill { key, reply });
    }

    fn send(&self, job: Job) -> Result<(), String> {
        self.jobs.send(job).map_err(|_| gone())
    }
}

fn gone() -> String {
    "the sandbox launcher thread is gone".to_owned()
}

struct Thread {
    host_netns: OwnedFd,
    /// The thread's own v1 groups, when it makes sandboxes' groups itself.
    cgroups: Option<V1>,
    children: HashMap<u64, (hakoniwa::Child, Option<Group>)>,
    next_key: u64,
}

impl Thread {
    fn new(host_netns: OwnedFd, cgroups: Option<V1>) -> Self {
        Self {
            host_netns,
            cgroups,
            children: HashMap::new(),
            next_key: 0,
        }
    }

    fn run(mut self, queue: mpsc::Receiver<Job>) {
        while let Ok(job) = queue.recv() {
            match job {
                Job::Spawn {
                    make,
                    limits,
                    reply,
                } => {
                    // Nobody waits for it any more (the start was cancelled): it must not run.
                    if let Err(Ok(orphan)) = reply.send(self.spawn(make, limits)) {
                        self.kill(orphan.key);
                    }
                }
                Job::Socket { netns, reply } => {
                    let _ = reply.send(self.socket(&netns));
                }
                Job::Reap { key, reply } => {
                    let _ = reply.send(self.reap(key));
                }
                Job::Kill { key, reply } => {
                    self.kill(key);
                    let _ = reply.send(());
                }
            }
        }
        // The driver is gone: so are its sandboxes.
        let keys: Vec<u64> = self.children.keys().copied().collect();
        for key in keys {
            self.kill(key);
        }
    }

    fn spawn(&mut self, make: MakeCommand, limits: Option<Limits>) -> Result<Spawned, String> {
        // SAFETY: NEWNET moves only this thread into a new network namespace; it shares no
        // memory, files or other state differently afterwards. It moves back below.
        #[allow(unsafe_code)]
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }
            .map_err(|e| format!("making a network namespace: {e}"))?;
        let spawned = self.spawn_here(make, limits);
        if let Err(e) = self.back_home() {
            // Every later sandbox would share a network: stop offering any.
            panic!("the sandbox launcher cannot return to the host's network: {e}");
        }
        spawned
    }

    /// Starts the sandbox in the network namespace this thread stands in.
    fn spawn_here(&mut self, make: MakeCommand, limits: Option<Limits>) -> Result<Spawned, String> {
        loopback_up().map_err(|e| format!("bringing the sandbox's loopback up: {e}"))?;
        // Its network is its own: any port is the app's to use, 80 included.
        std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")
            .map_err(|e| format!("opening low ports in the sandbox's network: {e}"))?;
        let netns: OwnedFd = File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("opening the sandbox's network namespace: {e}"))?
            .into();
        let key = self.next_key;
        self.next_key += 1;
        let mut command = make();
        // In the sandbox's groups while it forks, so it starts inside them.
        let group = match (&self.cgroups, limits) {
            (Some(cgroups), Some(limits)) => Some(
                cgroups
                    .enter(&format!("{}-{key}", std::process::id()), limits)
                    .map_err(|e| format!("making the sandbox's cgroups: {e}"))?,
            ),
            _ => None,
        };
        let child = command.spawn();
        if let Some(cgroups) = &self.cgroups
            && group.is_some()
            && let Err(e) = cgroups.leave()
        {
            // Every later sandbox and socket would count against this one's limits.
            panic!("the sandbox launcher cannot return to its own cgroups: {e}");
        }
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                if let Some(group) = group {
                    group.remove();
                }
                return Err(format!("starting the sandbox: {e}"));
            }
        };
        let spawned = Spawned {
            key,
            pid: child.id(),
            stdout: child.stdout.take().map(OwnedFd::from),
            stderr: child.stderr.take().map(OwnedFd::from),
            netns: Arc::new(netns),
        };
        self.children.insert(key, (child, group));
        Ok(spawned)
    }

    fn kill(&mut self, key: u64) {
        if let Some((mut child, group)) = self.children.remove(&key) {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(group) = group {
                group.remove();
            }
        }
    }

    fn socket(&self, netns: &OwnedFd) -> io::Result<OwnedFd> {
        rustix::thread::move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))?;
        let socket = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        );
        if let Err(e) = self.back_home() {
            panic!("the sandbox launcher cannot return to the host's network: {e}");
        }
        Ok(socket?)
    }

    fn reap(&mut self, key: u64) -> Option<Ended> {
        let (child, _) = self.children.get_mut(&key)?;
        let ended = match child.try_wait() {
            Ok(None) => return None,
            Ok(Some(status)) => Ended {
                code: status.code,
                reason: status.reason,
            },
            Err(e) => Ended {
                code: -1,
                reason: format!("waiting for it failed: {e}"),
            },
        };
        if let Some((_, Some(group))) = self.children.remove(&key) {
            group.remove();
        }
        Some(ended)
    }

    fn back_home(&self) -> io::Result<()> {
        rustix::thread::move_into_link_name_space(
            self.host_netns.as_fd(),
            Some(LinkNameSpaceType::Network),
        )?;
        Ok(())
    }
}

/// Sets `lo` up in this thread's network namespace (a new one starts with it down).
#[allow(unsafe_code)]
fn loopback_up() -> io::Result<()> {
    let socket = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)?;
    // SAFETY: `ifreq` is plain data for which all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface `request` names into `request`,
    // which lives for the call; the descriptor is a socket this function owns.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the union's flags member, the one read and written here.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `request`.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
