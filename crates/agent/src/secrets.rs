//! An instance's secrets on its node: opened with the mesh's secrets key just before the instance
//! starts, and handed over without touching the data dir or the runtime's own config.
//!
//! - Containers and sandboxed processes get them as files in a directory of their own on a tmpfs
//!   (under [`SECRETS_ROOT`], readable by root only on the host), mounted read-only at
//!   `/run/secrets`: `docker inspect` shows the directory, never a value. The directory goes with
//!   the instance ([`WithSecrets`]), and a node sweeps its own at start (after a `kill -9`, the
//!   files live in memory until then).
//! - Wasm components get them as environment variables, `SECRET_<NAME>` (upper case, `-` as
//!   `_`), which exist in the instance's memory only.

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::future::BoxFuture;
use mycel_placement::PlacementState;
use mycel_protocol::secrets::SecretsKey;
use mycel_runtime::{Instance, Logs, RuntimeError, Usage};

use crate::AgentError;

/// Where instances' secret directories are made: a tmpfs on every Linux host.
pub const SECRETS_ROOT: &str = "/dev/shm/mycel-secrets";

/// The values of the secrets `names` of `app`, opened; an error names the first that is unset or
/// does not open.
pub(crate) fn open_all(
    key: Option<&SecretsKey>,
    state: &PlacementState,
    app: &str,
    names: &[String],
) -> Result<Vec<(String, Vec<u8>)>, AgentError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let key = key.ok_or_else(|| {
        AgentError::Unrunnable(
            "the app has secrets, and this node has no secrets key (secrets need a private mesh)"
                .into(),
        )
    })?;
    let set = state.secrets.get(app);
    names
        .iter()
        .map(|name| {
            let record = set.and_then(|s| s.get(name)).ok_or_else(|| {
                AgentError::Unrunnable(format!(
                    "secret '{name}' is not set (mycel secret set {app} {name})"
                ))
            })?;
            let value = key.open(app, name, &record.sealed).map_err(|e| {
                AgentError::Unrunnable(format!("secret '{name}' does not open here: {e}"))
            })?;
            Ok((name.clone(), value))
        })
        .collect()
}

/// A directory of one instance's secrets, removed when dropped: when its instance is gone, or
/// its start failed or was given up.
pub(crate) struct SecretsDir(PathBuf);

impl SecretsDir {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SecretsDir {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700));
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "removing an instance's secrets");
        }
    }
}

/// Writes `secrets` as files in a directory of `instance`'s own (a new one for every start, so
/// a stopping instance's cleanup never meets its successor's), readable by whoever the instance
/// runs as.
pub(crate) fn write_files(
    node: &str,
    instance: &str,
    secrets: &[(String, Vec<u8>)],
) -> Result<SecretsDir, AgentError> {
    let failed = |doing: &str, e: std::io::Error| {
        AgentError::Node(format!("{doing} for instance {instance}'s secrets: {e}"))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(SECRETS_ROOT)
        .map_err(|e| failed("making the secrets directory", e))?;
    let nonce: u32 = rand::random();
    let path = Path::new(SECRETS_ROOT).join(format!("{}-{instance}-{nonce:08x}", short(node)));
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&path)
        .map_err(|e| failed("making a directory", e))?;
    let dir = SecretsDir(path);
    for (name, value) in secrets {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(dir.0.join(name))
            .map_err(|e| failed("writing a file", e))?;
        file.write_all(value)
            .map_err(|e| failed("writing a file", e))?;
    }
    // Read-only from now on, for the instance and for the runtime that mounts it.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o555))
        .map_err(|e| failed("sealing the directory", e))?;
    Ok(dir)
}

/// Removes every secrets directory an earlier run of this node left (after a `kill -9`).
pub(crate) fn sweep(node: &str) {
    let prefix = format!("{}-", short(node));
    let Ok(entries) = std::fs::read_dir(SECRETS_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            drop(SecretsDir(entry.path()));
        }
    }
}

/// An instance and its secrets directory, which goes when the instance does.
pub(crate) struct WithSecrets {
    pub(crate) instance: Arc<dyn Instance>,
    pub(crate) _dir: SecretsDir,
}

impl Instance for WithSecrets {
    fn id(&self) -> &str {
        self.instance.id()
    }

    fn handle(
        &self,
        request: http::Request<mycel_runtime::Body>,
    ) -> BoxFuture<'static, Result<http::Response<mycel_runtime::Body>, RuntimeError>> {
        self.instance.handle(request)
    }

    fn connect(
        &self,
        port: u16,
    ) -> BoxFuture<'static, Result<tokio::net::TcpStream, RuntimeError>> {
        self.instance.connect(port)
    }

    fn logs(&self) -> Logs {
        self.instance.logs()
    }

    fn usage(&self) -> Usage {
        self.instance.usage()
    }

    fn ended(&self) -> Option<String> {
        self.instance.ended()
    }

    fn stop(&self) -> BoxFuture<'static, ()> {
        self.instance.stop()
    }
}

/// How an instance gets its secrets: a directory to mount, and environment variables.
type HandedOver = (Option<SecretsDir>, Vec<(String, String)>);

/// How `instance` gets `secrets`: a directory to mount (containers and processes), or
/// environment variables (wasm). Nothing when it has none.
pub(crate) fn hand_over(
    secrets: &[(String, Vec<u8>)],
    node: &str,
    instance: &str,
    wasm: bool,
) -> Result<HandedOver, AgentError> {
    if secrets.is_empty() {
        return Ok((None, Vec::new()));
    }
    if wasm {
        return Ok((None, as_env(secrets).collect()));
    }
    Ok((Some(write_files(node, instance, secrets)?), Vec::new()))
}

/// `instance`, holding on to its secrets directory (if any) for as long as it lives.
pub(crate) fn holding(instance: Arc<dyn Instance>, dir: Option<SecretsDir>) -> Arc<dyn Instance> {
    match dir {
        Some(dir) => Arc::new(WithSecrets {
            instance,
            _dir: dir,
        }),
        None => instance,
    }
}

/// The environment variables a wasm instance gets its secrets as.
pub(crate) fn as_env(secrets: &[(String, Vec<u8>)]) -> impl Iterator<Item = (String, String)> + '_ {
    secrets.iter().map(|(name, value)| {
        (
            format!("SECRET_{}", name.to_ascii_uppercase().replace('-', "_")),
            String::from_utf8_lossy(value).into_owned(),
        )
    })
}

/// A peer id's last 16 characters: enough to keep nodes on one host apart, short enough for a
/// path.
fn short(node: &str) -> &str {
    &node[node.len().saturating_sub(16)..]
}
