//! What a sandbox is made of: the hakoniwa container and command for one instance.
//!
//! - namespaces: user, pid, mount, ipc, uts and cgroup of its own (its network is the one the
//!   launcher made for it);
//! - a read-only root: the host's `/usr` (and `/bin`, `/lib`… as the host has them), a few files
//!   of `/etc` a dynamic binary or an interpreter needs, the app's executable at `/app`, a fresh
//!   `/proc`, a minimal `/dev`, and a writable tmpfs `/tmp`;
//! - the app runs as `app` (uid 1000 inside), a host uid from the node's subordinate range (never
//!   root), with no capabilities and `no_new_privs`;
//! - a seccomp filter refuses what no app needs (mounts, ptrace, kexec, bpf, modules, new
//!   namespaces…), Landlock confines its files to the above and its listening to its own port;
//! - cgroup limits: memory (no swap beyond it), CPU quota, and a ceiling on processes (set by
//!   the launcher on cgroup v1 hosts, see `cgroups`; by hakoniwa elsewhere).

use std::{collections::BTreeMap, path::Path};

use super::cgroups::Limits;
use hakoniwa::{
    Container, Namespace, Rlimit, Stdio,
    cgroups::{Cpu, Memory, Pids, Resources},
    landlock::{CompatMode, FsAccess, Resource, Ruleset},
    seccomp::{Action, Arch, ArgCmp, ArgCmpOp, Filter},
};

/// util-linux's setpriv (Debian's util-linux is essential): see [`command`].
const SETPRIV: &str = "/usr/bin/setpriv";
/// Where the app's executable is, inside.
pub(super) const APP_DIR: &str = "/app";
/// The uid and gid the app runs as, inside.
const APP_ID: u32 = 1000;
/// The most processes (threads included) one instance may have.
const MAX_PIDS: u64 = 512;
/// The CFS period the CPU quota is a share of, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Host paths a program may need, shared read-only when the host has them.
const SYSTEM_DIRS: [&str; 5] = ["/bin", "/lib", "/lib32", "/lib64", "/sbin"];
const ETC_ENTRIES: [&str; 8] = [
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/mime.types",
];

/// Syscalls refused with EPERM: none has a use in an app, each is a way out or a way in.
const DENIED: [&str; 46] = [
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "init_module",
    "finit_module",
    "delete_module",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "acct",
    "quotactl",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "fanotify_init",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "vhangup",
    "personality",
];

/// One instance's sandbox, as the driver decided it.
pub(super) struct Plan {
    pub(super) app: String,
    /// The host directory holding the executable, shared read-only at [`APP_DIR`].
    pub(super) binary_dir: String,
    /// The executable's file name in it.
    pub(super) program: String,
    pub(super) args: Vec<String>,
    pub(super) env: BTreeMap<String, String>,
    pub(super) port: u16,
    /// More ports it may listen on (`[[ports]]`).
    pub(super) tcp_ports: Vec<u16>,
    /// The host uid (and gid) the app runs as.
    pub(super) host_id: u32,
    pub(super) memory_mb: u64,
    pub(super) cpu_millis: u64,
    /// Whether hakoniwa sets the cgroup limits (else the launcher does: see `cgroups`).
    pub(super) hakoniwa_limits: bool,
    /// The app's secrets, shared read-only at [`SECRETS_DIR`].
    pub(super) secrets_dir: Option<String>,
    /// The app's volumes: (host directory, path in the sandbox), read-write.
    pub(super) volumes: Vec<(String, String)>,
}

/// Where an app finds its secrets, one file each.
const SECRETS_DIR: &str = "/run/secrets";

/// The command that starts `plan`'s app in its sandbox.
pub(super) fn command(plan: &Plan) -> hakoniwa::Command {
    let container = container(plan);
    let program = format!("{APP_DIR}/{}", plan.program);
    // The app must die with its supervisor, and so with the node: hakoniwa asks for that
    // (PR_SET_PDEATHSIG) before it switches to the app's user, and the switch clears it.
    // util-linux's setpriv asks again as the app's user, then runs the app in its place.
    let mut command = if Path::new(SETPRIV).is_file() {
        let mut command = container.command(SETPRIV);
        command.args(["--pdeathsig", "KILL", "--", &program]);
        command
    } else {
        container.command(&program)
    };
    command
        .args(&plan.args)
        .envs(&plan.env)
        .env("PORT", &plan.port.to_string())
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/tmp")
        .current_dir(APP_DIR)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Ok(null) = std::fs::File::open("/dev/null") {
        command.stdin(Stdio::Fd(null.into()));
    }
    command
}

fn container(plan: &Plan) -> Container {
    let mut c = Container::new(); // user, pid and mount namespaces, a fresh /proc
    c.unshare(Namespace::Ipc)
        .unshare(Namespace::Uts)
        .unshare(Namespace::Cgroup)
        .hostname(&plan.app)
        .bindmount_ro("/usr", "/usr");
    let mut readable = vec!["/usr".to_owned(), APP_DIR.to_owned()];
    for dir in SYSTEM_DIRS {
        match std::fs::read_link(dir) {
            Ok(target) => {
                c.symlink(&target.to_string_lossy(), dir);
            }
            Err(_) if Path::new(dir).is_dir() => {
                c.bindmount_ro(dir, dir);
                readable.push(dir.to_owned());
            }
            Err(_) => {}
        }
    }
    for entry in ETC_ENTRIES {
        let path = Path::new(entry);
        if path.is_dir() {
            c.bindmount_ro(entry, entry);
        } else if path.is_file()
            && let Ok(contents) = std::fs::read_to_string(path)
        {
            c.file(entry, &contents);
        }
    }
    c.file(
        "/etc/passwd",
        &format!(
            "root:x:0:0::/:/usr/sbin/nologin\napp:x:{APP_ID}:{APP_ID}::/tmp:/usr/sbin/nologin\n"
        ),
    )
    .file("/etc/group", &format!("root:x:0:\napp:x:{APP_ID}:\n"))
    .file("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n")
    .bindmount_ro(&plan.binary_dir, APP_DIR)
    .devfsmount("/dev")
    .tmpfsmount("/tmp")
    .setrlimit(Rlimit::Core, 0, 0)
    .setrlimit(Rlimit::Nofile, 4096, 4096);
    // Root inside is the supervisor setting the sandbox up; the app is APP_ID inside and
    // `host_id` outside, never the host's root (newuidmap writes two-line maps).
    c.uidmaps(&[(0, 0, 1), (APP_ID, plan.host_id, 1)]);
    c.gidmaps(&[(0, 0, 1), (APP_ID, plan.host_id, 1)]);
    if let Some(secrets) = &plan.secrets_dir {
        c.bindmount_ro(secrets, SECRETS_DIR);
        readable.push(SECRETS_DIR.to_owned());
    }
    for (host, path) in &plan.volumes {
        c.bindmount_rw(host, path);
    }
    c.user("app", Some("app"), &[]);
    c.seccomp_filter(denied_syscalls());
    let ports: Vec<u16> = std::iter::once(plan.port)
        .chain(plan.tcp_ports.iter().copied())
        .collect();
    let writable: Vec<&str> = plan.volumes.iter().map(|(_, path)| path.as_str()).collect();
    c.landlock_ruleset(confined(&readable, &writable, &ports));
    if plan.hakoniwa_limits {
        c.cgroups_resources(hakoniwa_limits(&limits(plan)));
    }
    c
}

fn denied_syscalls() -> Filter {
    let mut filter = Filter::new(Action::Allow);
    // Syscalls through another ABI (int 0x80, x32) would slip past the rules: refused whole.
    filter.add_arch(Arch::Native);
    let refuse = Action::Errno(libc::EPERM);
    for syscall in DENIED {
        filter.add_rule(refuse, syscall);
    }
    // clone3 passes its flags in memory, where seccomp cannot look: libcs fall back to clone,
    // whose flags it can, and a clone into new namespaces is refused there.
    filter.add_rule(Action::Errno(libc::ENOSYS), "clone3");
    for namespace in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
    ] {
        let flag = namespace as u64;
        filter.add_rule_conditional(
            refuse,
            "clone",
            &[ArgCmp::new(0, ArgCmpOp::MaskedEq, flag, flag)],
        );
    }
    filter
}

/// Landlock: read and run what the root shares, read /etc and /proc, write /dev, /tmp and its
/// volumes only; listen on its own ports only.
fn confined(readable: &[String], writable: &[&str], ports: &[u16]) -> Ruleset {
    let mut ruleset = Ruleset::default();
    // Relax, not enforce: a kernel without Landlock (or this part of it) still runs apps, in
    // the rest of the sandbox.
    ruleset.restrict(Resource::FS, CompatMode::Relax);
    for path in readable {
        ruleset.allow_path(path, FsAccess::R | FsAccess::X);
    }
    ruleset
        .allow_path("/etc", FsAccess::R)
        .allow_path("/proc", FsAccess::R)
        .allow_path("/dev", FsAccess::R | FsAccess::W)
        .allow_path("/tmp", FsAccess::R | FsAccess::W);
    for path in writable {
        ruleset.allow_path(path, FsAccess::R | FsAccess::W);
    }
    ruleset.restrict(Resource::NET_TCP_BIND, CompatMode::Relax);
    for port in ports {
        ruleset.allow_tcp_bind(*port);
    }
    ruleset
}

/// `plan`'s cgroup limits.
pub(super) fn limits(plan: &Plan) -> Limits {
    Limits {
        memory_bytes: plan.memory_mb.saturating_mul(1 << 20),
        cpu_quota_us: plan.cpu_millis.max(1) * CPU_PERIOD_US / 1000,
        cpu_period_us: CPU_PERIOD_US,
        pids: MAX_PIDS,
    }
}

fn hakoniwa_limits(limits: &Limits) -> Resources {
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    let quota = i64::try_from(limits.cpu_quota_us).unwrap_or(i64::MAX);
    let mut resources = Resources::default();
    resources
        .memory(Memory::default().limit(memory).swap(memory).clone())
        .pids(Pids::default().limit(limits.pids as i64).clone())
        .cpu(
            Cpu::default()
                .period(limits.cpu_period_us)
                .quota(quota)
                .clone(),
        );
    resources
}
