//! The end-to-end harness: real `mycel` processes, or real nodes inside the test's process.
//!
//! Tests and the bench start nodes exactly as a user would (`mycel up` on 127.0.0.1, every port
//! picked by the OS) and talk to them only through the contract: `node.json`, the HTTP API, the
//! CLI and signals. Modelled on quickwit's `cluster_sandbox`: a builder starts the mesh, and tests
//! wait on conditions ([`wait_until`]), never on sleeps.
//!
//! - [`node`]: one `mycel up` child ([`NodeProcess`]) with its own data dir and log file; dropping
//!   it kills and reaps the process, and prints its log tail when the test is panicking.
//! - [`inprocess`]: nodes as `mycel_node::Node`s inside the test's process ([`InProcessMesh`]),
//!   for tests that need no separate process.
//! - [`mesh`]: several nodes joined as a chain or a star ([`Mesh`]), and the "everyone sees
//!   everyone alive" condition.
//! - [`chaos`]: a stream of deploys through random nodes while a test kills and restarts them,
//!   and the record of which writes were acknowledged.
//! - [`metrics`]: a small parser for the Prometheus text that `GET /metrics` serves.
//! - [`mycel_bin`], [`mycel_cli`]: where the binary is and how to run one-shot commands.

pub mod apps;
pub mod browser;
pub mod chaos;
pub mod docker;
pub mod inprocess;
pub mod mesh;
pub mod metrics;
pub mod netns;
pub mod node;
pub mod peer;
pub mod sandboxes;

use std::{
    ffi::OsStr,
    future::Future,
    path::PathBuf,
    process::{Output, Stdio},
    sync::OnceLock,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

pub use inprocess::{InProcessMesh, InProcessNode};
pub use mesh::Mesh;
pub use node::{DataDir, NodeBuilder, NodeJson, NodeProcess};

/// How long a node may take from spawn to writing `node.json`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `mycel` binary under test: `$MYCEL_BIN`, else `target/<profile>/mycel` next to the running
/// test or bench executable.
pub fn mycel_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MYCEL_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "MYCEL_BIN={} is not a file; build it with `cargo build -p mycel`",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("locating the running executable");
    // Tests live in target/<profile>/deps/, binaries in target/<profile>/.
    let mut dir = exe
        .parent()
        .expect("executable has a parent dir")
        .to_path_buf();
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.pop();
    }
    let bin = dir.join("mycel");
    assert!(
        bin.is_file(),
        "no mycel binary at {}; build it with `cargo build -p mycel` (or `--release` for the \
         bench), or set MYCEL_BIN",
        bin.display()
    );
    bin
}

/// The example app `examples/hello` built for wasm32-wasip2 (by its `build.sh`, once per test
/// process; cargo's own lock makes concurrent builds wait for each other): the component and the
/// manifest.
pub fn hello_example() -> Result<(PathBuf, PathBuf)> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_example("hello", &BUILT)
}

/// The example container app `examples/hello-container` built (by its `build.sh`, once per test
/// process: a static binary in a `FROM scratch` image, saved with `docker save`): the archive and
/// the manifest. Needs a Docker engine and the musl target, which the test command installs.
pub fn hello_container_example() -> Result<(PathBuf, PathBuf)> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_example("hello-container", &BUILT)
}

/// The static binary inside examples/hello-container's image (built as its archive is), which
/// `[process]` apps run.
pub fn hello_container_binary() -> Result<PathBuf> {
    let (archive, _) = hello_container_example()?;
    let target = archive.parent().context("the archive is in target/")?;
    Ok(target.join("x86_64-unknown-linux-musl/release/hello-container"))
}

/// Runs `examples/<name>/build.sh` once (it prints the path of what it built) and answers that
/// path and the example's manifest.
fn built_example(
    name: &str,
    built: &'static OnceLock<Result<PathBuf, String>>,
) -> Result<(PathBuf, PathBuf)> {
    let dir = package_dir().join("../examples").join(name);
    let built = built.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(dir.join("build.sh"))
            .output()
            .map_err(|e| format!("running examples/{name}/build.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "examples/{name}/build.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match built {
        Ok(path) => Ok((path.clone(), dir.join("mycel.toml"))),
        Err(e) => bail!("{e}"),
    }
}

/// Polls `condition` every `poll` until it returns `Ok(true)` or `timeout` passes.
///
/// `Ok(false)` and `Err(_)` both mean "not yet"; an error says why, and the last one is reported
/// when the wait times out, so conditions should fail with a sentence rather than return `false`.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut condition: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match condition().await {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            return match last {
                Some(e) => {
                    Err(e.context(format!("timed out after {timeout:?} waiting for {what}")))
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            };
        }
        tokio::time::sleep(poll).await;
    }
}

/// Runs `future` with a time limit, naming what timed out.
pub async fn within<T>(
    what: &str,
    timeout: Duration,
    future: impl Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(timeout, future)
        .await
        .with_context(|| format!("{what} did not finish within {timeout:?}"))
}

/// Runs `mycel <args>` to completion (at most 20 s) with no `MYCEL_*` variables inherited, and
/// returns what it printed.
pub async fn mycel_cli<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    mycel_cli_env(args, &[]).await
}

/// As [`mycel_cli`], with the variables `envs` set (after the `MYCEL_*` ones were cleared).
/// Commands sign with this test process's own user key ([`test_user_key`]) unless `envs` names
/// another in `MYCEL_USER_KEY`.
pub async fn mycel_cli_env<I, S>(args: I, envs: &[(&str, &str)]) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    mycel_cli_input(args, envs, None).await
}

/// As [`mycel_cli_env`], with `input` on the command's stdin (else it reads nothing).
pub async fn mycel_cli_input<I, S>(
    args: I,
    envs: &[(&str, &str)],
    input: Option<&[u8]>,
) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(mycel_bin());
    command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    clear_mycel_env(command.as_std_mut());
    command.env("MYCEL_USER_KEY", test_user_key());
    command.envs(envs.iter().copied());
    let mut child = command.spawn().context("running mycel")?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).await?;
    }
    within(
        "mycel command",
        Duration::from_secs(20),
        child.wait_with_output(),
    )
    .await?
    .context("running mycel")
}

/// The user key file the CLI signs with in this test process (made by the CLI on first use), in a
/// temporary directory of the process's own: tests never share `~/.config/mycel/user.key`.
pub fn test_user_key() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("making a temporary directory"))
        .path()
        .join("user.key")
}

/// Removes every `MYCEL_*` variable (but `MYCEL_BIN`) a child would inherit, so the developer's
/// environment cannot change what a test sees.
pub(crate) fn clear_mycel_env(command: &mut std::process::Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MYCEL_") {
            command.env_remove(key);
        }
    }
}

/// The last `lines` lines of a text file, or a note saying why there are none.
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// Resident memory of process `pid`, in MiB (VmRSS).
pub fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// This package's directory: as the test runner says at run time (cargo and nextest set it), so a
/// test binary reused from another checkout still looks in this one; as built, otherwise.
fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
