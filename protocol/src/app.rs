//! The app manifest: what a user deploys. TOML in files, the same structure as JSON through the
//! API (see the contract's "App manifest").
//!
//! This module owns the manifest's shape, its defaults and every rule a manifest must satisfy, so
//! the CLI, the API and the placement group all accept and refuse exactly the same documents.
//! Every struct denies unknown fields: a misspelt key is an error, not a silently ignored line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::BlobHash;

mod balance;
mod blob_ref;
mod dependencies;
mod ports;
mod process;
mod relax;
mod scale;
mod update;
mod volumes;

pub use balance::{
    BalanceSpec, BalanceStrategy, DEFAULT_BASE_EJECTION_MS, DEFAULT_CONSECUTIVE_FAILURES,
    DEFAULT_MAX_EJECTION_PERCENT, DEFAULT_RETRIES, Hedge, MAX_BASE_EJECTION_MS,
    MAX_CONSECUTIVE_FAILURES, MAX_RETRIES, OutlierSpec, Retries,
};
pub use blob_ref::BlobRef;
pub use dependencies::{MAX_DEPENDENCIES, satisfies};
pub use ports::{MAX_PORTS, PortProtocol, PortSpec};
pub use process::{DEFAULT_PORT, MAX_ARG_BYTES, MAX_COMMAND_ARGS, ProcessSpec};
pub use relax::{KNOWN_CAPABILITIES, MAX_RELAX_CAPABILITIES, RelaxSpec, Relaxation};
pub use scale::{
    DEFAULT_COOLDOWN_MS, DEFAULT_SCALE_MAX, DEFAULT_SCALE_MIN, DEFAULT_SCALE_TO_ZERO_AFTER_MS,
    DEFAULT_TARGET_CONCURRENCY, DEFAULT_WINDOW_MS, MAX_SCALE_WAIT_MS, MAX_TARGET_CONCURRENCY,
    MAX_WINDOW_MS, MIN_SCALE_TO_ZERO_AFTER_MS, MIN_WINDOW_MS, ScaleSpec,
};
pub use update::{
    DEFAULT_HEALTHY_DEADLINE_MS, DEFAULT_MAX_PARALLEL, DEFAULT_MIN_HEALTHY_MS,
    MAX_HEALTHY_DEADLINE_MS, UpdateOrder, UpdateSpec,
};
pub use volumes::{
    DEFAULT_VOLUME_GRACE_MS, MAX_VOLUME_GRACE_MS, MAX_VOLUME_MB, MAX_VOLUMES,
    MIN_SNAPSHOT_EVERY_MS, MIN_VOLUME_MB, VolumeSpec, check_volume_name,
};

/// Largest manifest document accepted; checked before a byte of it is parsed.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
pub const MAX_REPLICAS: u32 = 1000;
pub const MAX_ENV_VARS: usize = 128;
pub const MAX_ENV_KEY_LEN: usize = 128;
pub const MAX_ENV_VALUE_BYTES: usize = 4096;
pub const DEFAULT_MEMORY_MB: u64 = 64;
pub const MAX_MEMORY_MB: u64 = 1_048_576;
/// Default CPU share, in cores.
pub const DEFAULT_CPU: f64 = 0.1;
pub const MAX_CPU: f64 = 1024.0;
/// Most rules in `placement.required`, and separately in `placement.preferred`.
pub const MAX_RULES: usize = 32;
/// Most values one placement rule may list.
pub const MAX_RULE_VALUES: usize = 32;
pub const MAX_LABEL_LEN: usize = 63;
pub const MAX_IMAGE_LEN: usize = 255;
pub const MAX_HEALTH_PATH_LEN: usize = 1024;
/// Longest relative path a blob reference may be.
pub const MAX_BLOB_PATH_LEN: usize = 1024;

const MAX_NAME_LEN: usize = 63;
const MAX_VERSION_LEN: usize = 64;
const HASH_PREFIX: &str = "blake3:";

/// An app as its author describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// A DNS label, because the gateway routes `<name>.<domain>`.
    pub name: String,
    pub version: String,
    /// How many instances should run; 0 keeps the app deployed with nothing running.
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub resources: ResourceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    #[serde(default, skip_serializing_if = "PlacementSpec::is_empty")]
    pub placement: PlacementSpec,
    /// How gateways spread requests over the instances (`[balance]`).
    #[serde(default, skip_serializing_if = "BalanceSpec::is_default")]
    pub balance: BalanceSpec,
    /// How the app scales itself on its load (`[scale]`); absent, it runs `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleSpec>,
    /// How a redeploy replaces the instances (`[update]`).
    #[serde(default, skip_serializing_if = "UpdateSpec::is_default")]
    pub update: UpdateSpec,
    /// TCP ports published on every node's ingress address (`[[ports]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// The secrets it gets, by name (files at `/run/secrets/<name>`; see [`crate::secrets`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Directories it keeps across restarts and redeploys (`[[volumes]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// How long it waits for a node holding its volumes that is gone before it moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_grace_ms: Option<u64>,
    /// The apps it needs, each with a semver requirement on its version (`[dependencies]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// A `wasi:http/proxy` component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmSpec {
    /// A path relative to the manifest (the CLI uploads it) or `blake3:<64 hex>`.
    pub module: String,
}

/// A container, from an image the node's Docker has (or pulls) or from an archive in the mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A `docker save` or OCI archive: a path relative to the manifest or `blake3:<64 hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// The port the app listens on; the app finds it in `$PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// `[container.relax]`: the hardening this app asks to drop; absent: fully hardened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relax: Option<RelaxSpec>,
}

/// What one instance may use. A partial `[resources]` table keeps the defaults for what it omits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceSpec {
    pub memory_mb: u64,
    /// Cores; fractions allowed.
    pub cpu: f64,
}

impl Default for ResourceSpec {
    fn default() -> Self {
        Self {
            memory_mb: DEFAULT_MEMORY_MB,
            cpu: DEFAULT_CPU,
        }
    }
}

/// The HTTP health check used for routing and restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub path: String,
}

/// Where instances may run (`required`) and where they had better run (`preferred`), by node label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementSpec {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<LabelRuleSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferred: Vec<LabelRuleSpec>,
    /// None leaves the choice to the scheduler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
}

impl PlacementSpec {
    pub fn is_empty(&self) -> bool {
        self.required.is_empty() && self.preferred.is_empty() && self.strategy.is_none()
    }
}

/// One condition on a node label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRuleSpec {
    pub key: String,
    pub op: RuleOp,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOp {
    /// The node has the label with one of `values`.
    In,
    /// The node lacks the label, or has it with none of `values`.
    NotIn,
    /// The node has the label, whatever its value.
    Exists,
}

impl RuleOp {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleOp::In => "in",
            RuleOp::NotIn => "not_in",
            RuleOp::Exists => "exists",
        }
    }
}

/// How the scheduler spreads an app's instances over the eligible nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// As many different nodes as possible.
    Spread,
    /// Fill nodes before using new ones.
    Binpack,
}

/// Which workload section a manifest has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    Wasm,
    Container,
    Process,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Wasm => "wasm",
            AppKind::Container => "container",
            AppKind::Process => "process",
        }
    }
}

impl std::fmt::Display for AppKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a manifest was refused. Every variant reads as one line for a person; the API answers all
/// of them with the code [`ManifestError::code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Refused before parsing.
    #[error("manifest is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    /// Not TOML or JSON of the manifest's shape: bad syntax, a wrong type, an unknown field.
    #[error("manifest does not parse: {0}")]
    Parse(String),
    /// Parsed, but a value breaks a rule. Displays as "replicas: at most 1000 (got 5000)".
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl ManifestError {
    /// The API's machine code for every manifest error.
    pub fn code(&self) -> &'static str {
        "invalid_manifest"
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Manifest {
    /// Parses a manifest file and validates it.
    pub fn from_toml(text: &str) -> Result<Manifest, ManifestError> {
        check_size(text.len())?;
        let manifest: Manifest = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Parses a manifest sent as JSON and validates it (paths still allowed: see
    /// [`Manifest::validate_for_api`]).
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        check_size(bytes.len())?;
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks every rule of the manifest; the error names the first field that breaks one.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_name(&self.name)?;
        check_version(&self.version)?;
        if self.replicas > MAX_REPLICAS {
            return Err(invalid(
                "replicas",
                format!("at most {MAX_REPLICAS} (got {})", self.replicas),
            ));
        }
        match (&self.wasm, &self.container, &self.process) {
            (Some(wasm), None, None) => wasm.validate()?,
            (None, Some(container), None) => container.validate()?,
            (None, None, Some(process)) => process.validate()?,
            (None, None, None) => {
                return Err(invalid(
                    "workload",
                    "exactly one of [wasm], [container] and [process] (got none)",
                ));
            }
            _ => {
                return Err(invalid(
                    "workload",
                    "exactly one of [wasm], [container] and [process] (got more)",
                ));
            }
        }
        check_env(&self.env)?;
        self.resources.validate()?;
        if let Some(health) = &self.health {
            health.validate()?;
        }
        self.placement.validate()?;
        self.balance.validate()?;
        if let Some(scale) = &self.scale {
            scale.validate(self.replicas)?;
        }
        ports::check_ports(&self.ports, self.kind())?;
        crate::secrets::check_manifest_secrets(&self.secrets)?;
        volumes::check_volumes(&self.volumes, self.volume_grace_ms)?;
        dependencies::check_dependencies(&self.name, &self.dependencies)?;
        self.update.validate()
    }

    /// [`Manifest::validate`], plus what the API demands: the API cannot read files next to the
    /// manifest, so every blob reference must be the hash of an uploaded blob.
    pub fn validate_for_api(&self) -> Result<(), ManifestError> {
        self.validate()?;
        for (field, text) in self.blob_refs() {
            if let Ok(BlobRef::Path(path)) = BlobRef::parse(text) {
                return Err(invalid(
                    field,
                    format!(
                        "through the API, paths are not allowed: upload '{}' and give its \
                         blake3:<hex> hash",
                        shown(path)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The workload kind. For a manifest that has not been validated, `wasm` wins over
    /// `process` over `container`, and a manifest with none counts as a container.
    pub fn kind(&self) -> AppKind {
        if self.wasm.is_some() {
            AppKind::Wasm
        } else if self.process.is_some() {
            AppKind::Process
        } else {
            AppKind::Container
        }
    }

    /// The blobs the app needs, in manifest order (references that are still paths are skipped).
    pub fn blobs(&self) -> Vec<BlobHash> {
        self.blob_refs()
            .filter_map(|(_, text)| match BlobRef::parse(text) {
                Ok(BlobRef::Hash(hash)) => Some(hash),
                _ => None,
            })
            .collect()
    }

    /// How long its instances wait for a node that is gone: `None` without volumes (the
    /// mesh's own grace holds).
    pub fn volume_grace_ms(&self) -> Option<u64> {
        (!self.volumes.is_empty()).then(|| self.volume_grace_ms.unwrap_or(DEFAULT_VOLUME_GRACE_MS))
    }

    pub fn memory_mb(&self) -> u64 {
        self.resources.memory_mb
    }

    /// The hardening relaxations the app asks for (none for wasm apps).
    pub fn relaxations(&self) -> Vec<Relaxation> {
        self.container
            .as_ref()
            .map(ContainerSpec::relaxations)
            .unwrap_or_default()
    }

    /// The CPU share in thousandths of a core, rounded up so a tiny share never becomes zero.
    pub fn cpu_millis(&self) -> u64 {
        // Round to millionths first, so binary noise (0.29 * 1000 = 289.99999999999997) does
        // not decide the result; `as` saturates, so an unvalidated NaN or negative gives 0.
        let micros = (self.resources.cpu * 1_000_000.0).round() as u64;
        micros.div_ceil(1000)
    }

    /// Each blob reference with the field it sits in.
    fn blob_refs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let module = self
            .wasm
            .as_ref()
            .map(|w| ("wasm.module", w.module.as_str()));
        let archive = self
            .container
            .as_ref()
            .and_then(|c| c.archive.as_deref())
            .map(|a| ("container.archive", a));
        let binary = self
            .process
            .as_ref()
            .map(|p| ("process.binary", p.binary.as_str()));
        module.into_iter().chain(archive).chain(binary)
    }
}

impl WasmSpec {
    fn validate(&self) -> Result<(), ManifestError> {
        BlobRef::parse(&self.module).map_err(|reason| invalid("wasm.module", reason))?;
        Ok(())
    }
}

impl ContainerSpec {
    /// The hardening relaxations this container asks for; empty: fully hardened.
    pub fn relaxations(&self) -> Vec<Relaxation> {
        self.relax
            .as_ref()
            .map(RelaxSpec::relaxations)
            .unwrap_or_default()
    }

    fn validate(&self) -> Result<(), ManifestError> {
        match (&self.image, &self.archive) {
            (Some(image), None) => check_image(image)?,
            (None, Some(archive)) => {
                BlobRef::parse(archive).map_err(|reason| invalid("container.archive", reason))?;
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "container",
                    "exactly one of image and archive (got both)",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "container",
                    "exactly one of image and archive (got neither)",
                ));
            }
        }
        if self.port == Some(0) {
            return Err(invalid("container.port", "must be 1 to 65535 (got 0)"));
        }
        process::check_args("container.command", &self.command)?;
        match &self.relax {
            Some(relax) => relax.validate(),
            None => Ok(()),
        }
    }
}

impl ResourceSpec {
    fn validate(&self) -> Result<(), ManifestError> {
        if !(1..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(invalid(
                "resources.memory_mb",
                format!("must be 1 to {MAX_MEMORY_MB} (got {})", self.memory_mb),
            ));
        }
        let cpu = self.cpu;
        if !cpu.is_finite() || cpu <= 0.0 || cpu > MAX_CPU {
            return Err(invalid(
                "resources.cpu",
                format!("must be more than 0 and at most {MAX_CPU} cores (got {cpu})"),
            ));
        }
        Ok(())
    }
}

impl HealthSpec {
    fn validate(&self) -> Result<(), ManifestError> {
        let path = &self.path;
        if !path.starts_with('/') {
            return Err(invalid(
                "health.path",
                format!("must start with '/' (got '{}')", shown(path)),
            ));
        }
        if path.len() > MAX_HEALTH_PATH_LEN {
            return Err(invalid(
                "health.path",
                format!("at most {MAX_HEALTH_PATH_LEN} bytes (got {})", path.len()),
            ));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "health.path",
                format!(
                    "must not contain spaces or control characters (got '{}')",
                    shown(path)
                ),
            ));
        }
        Ok(())
    }
}

impl PlacementSpec {
    fn validate(&self) -> Result<(), ManifestError> {
        for (list, rules) in [
            ("placement.required", &self.required),
            ("placement.preferred", &self.preferred),
        ] {
            if rules.len() > MAX_RULES {
                return Err(invalid(
                    list,
                    format!("at most {MAX_RULES} rules (got {})", rules.len()),
                ));
            }
            for (i, rule) in rules.iter().enumerate() {
                rule.validate(&format!("{list}[{i}]"))?;
            }
        }
        Ok(())
    }
}

impl LabelRuleSpec {
    fn validate(&self, field: &str) -> Result<(), ManifestError> {
        check_label_text(&format!("{field}.key"), &self.key)?;
        let values = format!("{field}.values");
        match self.op {
            RuleOp::In | RuleOp::NotIn if self.values.is_empty() => {
                return Err(invalid(
                    values,
                    format!("'{}' needs at least one value", self.op.as_str()),
                ));
            }
            RuleOp::Exists if !self.values.is_empty() => {
                return Err(invalid(
                    values,
                    format!("'exists' takes no values (got {})", self.values.len()),
                ));
            }
            _ => {}
        }
        if self.values.len() > MAX_RULE_VALUES {
            return Err(invalid(
                values,
                format!(
                    "at most {MAX_RULE_VALUES} values (got {})",
                    self.values.len()
                ),
            ));
        }
        for (i, value) in self.values.iter().enumerate() {
            check_label_text(&format!("{values}[{i}]"), value)?;
        }
        Ok(())
    }
}

fn check_size(size: usize) -> Result<(), ManifestError> {
    if size > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            size,
            max: MAX_MANIFEST_BYTES,
        });
    }
    Ok(())
}

/// toml's own message spans several lines with a source excerpt; the CLI prints one line.
fn toml_error(text: &str, err: &toml::de::Error) -> ManifestError {
    let message = err.message().trim();
    match err.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            ManifestError::Parse(format!("line {line}: {message}"))
        }
        None => ManifestError::Parse(message.to_string()),
    }
}

/// `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`: the app's name becomes a host name label.
pub(crate) fn check_name(name: &str) -> Result<(), ManifestError> {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes.iter().all(allowed)
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-');
    if !ok {
        return Err(invalid(
            "name",
            format!(
                "must be a DNS label: 1 to {MAX_NAME_LEN} lowercase letters, digits and '-', \
                 not starting or ending with '-' (got '{}')",
                shown(name)
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_version(version: &str) -> Result<(), ManifestError> {
    let ok = !version.is_empty()
        && version.len() <= MAX_VERSION_LEN
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if !ok {
        return Err(invalid(
            "version",
            format!(
                "must be 1 to {MAX_VERSION_LEN} letters, digits, '.', '_', '+' or '-' (got '{}')",
                shown(version)
            ),
        ));
    }
    Ok(())
}

fn check_env(env: &BTreeMap<String, String>) -> Result<(), ManifestError> {
    if env.len() > MAX_ENV_VARS {
        return Err(invalid(
            "env",
            format!("at most {MAX_ENV_VARS} variables (got {})", env.len()),
        ));
    }
    for (key, value) in env {
        let bytes = key.as_bytes();
        let ok = bytes.len() <= MAX_ENV_KEY_LEN
            && bytes
                .first()
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if !ok {
            return Err(invalid(
                "env",
                format!(
                    "'{}' is not a variable name: up to {MAX_ENV_KEY_LEN} letters, digits and \
                     '_', not starting with a digit",
                    shown(key)
                ),
            ));
        }
        if value.len() > MAX_ENV_VALUE_BYTES {
            return Err(invalid(
                format!("env.{key}"),
                format!("at most {MAX_ENV_VALUE_BYTES} bytes (got {})", value.len()),
            ));
        }
        // The environment is a list of C strings: a NUL cannot be passed on.
        if value.contains('\0') {
            return Err(invalid(
                format!("env.{key}"),
                "must not contain a NUL character",
            ));
        }
    }
    Ok(())
}

/// A label key or value in a placement rule: the characters node labels are made of.
fn check_label_text(field: &str, text: &str) -> Result<(), ManifestError> {
    let ok = !text.is_empty()
        && text.len() <= MAX_LABEL_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
    if !ok {
        return Err(invalid(
            field,
            format!(
                "must be 1 to {MAX_LABEL_LEN} letters, digits, '.', '_', '/' or '-' (got '{}')",
                shown(text)
            ),
        ));
    }
    Ok(())
}

fn check_image(image: &str) -> Result<(), ManifestError> {
    if image.is_empty() || image.len() > MAX_IMAGE_LEN {
        return Err(invalid(
            "container.image",
            format!("must be 1 to {MAX_IMAGE_LEN} bytes (got {})", image.len()),
        ));
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "container.image",
            format!(
                "must not contain spaces or control characters (got '{}')",
                shown(image)
            ),
        ));
    }
    // A name Docker could not parse would fail later on every node: refuse it now.
    let name = match image.split_once('@') {
        Some((name, digest)) if crate::image::is_sha256_digest(digest) => name,
        Some(_) => {
            return Err(invalid(
                "container.image",
                format!(
                    "'{}' has a digest that is not sha256:<64 hex>",
                    shown(image)
                ),
            ));
        }
        None => image,
    };
    crate::image::normalize_image_name(name)
        .map(drop)
        .map_err(|reason| invalid("container.image", reason))
}

/// User input quoted in a message: cut to 64 characters and escaped, so an error stays one
/// readable line whatever was sent.
fn shown(text: &str) -> String {
    const MAX_SHOWN: usize = 64;
    let mut out: String = text
        .chars()
        .take(MAX_SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_SHOWN).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
