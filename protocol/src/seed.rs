//! The seed's deploy body: the JSON that clients written against the seed send to
//! `POST /api/apps/deploy_app`, and its translation into a mycel [`Manifest`].
//!
//! This module owns which seed fields mycel applies, how each maps onto the manifest, and which
//! it reports back as warnings instead of silently dropping. The API and the CLI both translate
//! through [`SeedDeploy::to_manifest`], so a seed body means the same thing whichever way it
//! arrives. The translated manifest meets every rule of [`Manifest::validate`].
//!
//! ```json
//! {"name": "my-web-app", "version": "1.0.0", "image": "nginx:alpine", "replicas": 3,
//!  "resource_requirements": {"memory": "256m", "cpu": "0.5"},
//!  "network_config": {"ports": {"80/tcp": {"HostPort": "8080"}}}}
//! ```
//!
//! | seed field | manifest |
//! | --- | --- |
//! | `image` | `container.image` |
//! | `replicas` (default 1) | `replicas` |
//! | `resource_requirements.memory` (`256m`, `1G`, `512Mi`, bytes) | `resources.memory_mb` |
//! | `resource_requirements.cpu` (`"0.5"` or `0.5`) | `resources.cpu` |
//! | `network_config.ports` `{"80/tcp": {"HostPort": "8080"}}` | `ports`, and `container.port` |
//! | `runtime_config.environment` | `env` |
//! | `source_code_hash`, `build_config` | refused: [`SeedError::SourceDeploy`] |
//! | `resource_requirements.storage`, `target_nodes`, anything else | a warning each |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::app::{ContainerSpec, MAX_MANIFEST_BYTES, Manifest, ManifestError, ResourceSpec};

mod network;
mod quantity;

/// The most warnings one translation reports; the rest are counted in a last one.
pub const MAX_WARNINGS: usize = 32;

/// The top-level fields that make a JSON body a seed body (see [`is_seed_form`]).
const SEED_FIELDS: [&str; 7] = [
    "image",
    "source_code_hash",
    "build_config",
    "resource_requirements",
    "network_config",
    "runtime_config",
    "target_nodes",
];

/// The workload sections of a mycel manifest: a body with one of them is a manifest.
const MANIFEST_WORKLOADS: [&str; 3] = ["container", "wasm", "process"];

/// A deploy body in the seed's shape, as sent. Read it with [`SeedDeploy::from_json`] or
/// [`SeedDeploy::from_value`], which name the field whose value has the wrong type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedDeploy {
    pub name: String,
    pub version: String,
    #[serde(default = "one")]
    pub replicas: u32,
    /// The container image to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A source deploy: refused until mycel builds images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_code_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_requirements: Option<SeedResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<SeedNetwork>,
    /// Anything; mycel applies its `environment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_nodes: Option<Vec<String>>,
    /// Every other top-level field, kept so that each is reported.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// `resource_requirements`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedResources {
    /// `"256m"`, `"1G"`, `"512Mi"`, or bytes (a string or a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Value>,
    /// Cores, `"0.5"` or `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Value>,
    /// Not applied: a volume needs a mount path, which the seed's size does not give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Value>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// `network_config`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedNetwork {
    /// Docker's port bindings: `{"80/tcp": {"HostPort": "8080"}}`, a binding may also be a list
    /// of them (`[{"HostPort": "8080"}]`) or `{}` (exposed, not published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<BTreeMap<String, Value>>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

fn one() -> u32 {
    1
}

/// A seed body translated: the manifest to deploy, and a sentence for each field it does not
/// apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Translated {
    pub manifest: Manifest,
    pub warnings: Vec<String>,
}

/// Why a seed body cannot be deployed. Each reads as one line for a person.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// The body asks mycel to build from source (`source_code_hash`), which it cannot yet.
    #[error(
        "source deploys (source_code_hash, build_config) are not available yet: deploy an image \
         (\"image\": \"name:tag\"), or a binary as a mycel manifest's [process]"
    )]
    SourceDeploy,
    /// A seed field has a value mycel cannot read. Displays as "resource_requirements.memory:
    /// 'lots' is not a size …".
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Too large or not JSON, or the translated manifest breaks a manifest rule.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl SeedError {
    /// The API's machine code: `source_deploy_unsupported`, else the manifest's.
    pub fn code(&self) -> &'static str {
        match self {
            SeedError::SourceDeploy => "source_deploy_unsupported",
            SeedError::Invalid { .. } => "invalid_manifest",
            SeedError::Manifest(error) => error.code(),
        }
    }
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SeedError {
    SeedError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// True when `json` is a seed body rather than a mycel manifest: an object with none of the
/// manifest's workload sections (`container`, `wasm`, `process`) and one of the seed's own
/// fields (`image`, `source_code_hash`, `build_config`, `resource_requirements`,
/// `network_config`, `runtime_config`, `target_nodes`).
pub fn is_seed_form(json: &Value) -> bool {
    let Some(object) = json.as_object() else {
        return false;
    };
    !MANIFEST_WORKLOADS.iter().any(|k| object.contains_key(*k))
        && SEED_FIELDS.iter().any(|k| object.contains_key(*k))
}

impl SeedDeploy {
    /// Reads a seed body: at most [`MAX_MANIFEST_BYTES`], JSON, each known field of its type.
    pub fn from_json(bytes: &[u8]) -> Result<SeedDeploy, SeedError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                size: bytes.len(),
                max: MAX_MANIFEST_BYTES,
            }
            .into());
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        Self::from_value(value)
    }

    /// Reads a seed body already parsed as JSON. A known field of the wrong type is an error
    /// that names it; unknown fields are kept in [`SeedDeploy::unknown`].
    pub fn from_value(value: Value) -> Result<SeedDeploy, SeedError> {
        let Some(object) = value.as_object() else {
            return Err(ManifestError::Parse("a seed body is a JSON object".into()).into());
        };
        check_shape(object)?;
        // The shape is checked: what is left to fail is serde's business, and says so.
        serde_json::from_value(value).map_err(|e| ManifestError::Parse(e.to_string()).into())
    }

    /// Translates the body into the manifest mycel deploys (see the module's table), with a
    /// warning for each field it does not apply. The manifest meets [`Manifest::validate`]; its
    /// error is returned as it is.
    pub fn to_manifest(&self) -> Result<Translated, SeedError> {
        let image = match (&self.image, &self.source_code_hash) {
            (None, Some(_)) => return Err(SeedError::SourceDeploy),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "source_code_hash",
                    "a seed body names an image or a source_code_hash, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "image",
                    "required: the container image to run, such as nginx:alpine (source deploys \
                     are not available yet)",
                ));
            }
            (Some(image), None) => image.clone(),
        };
        let mut warnings = Warnings::default();
        let resources = self.resources(&mut warnings)?;
        let (port, ports) = match &self.network_config {
            Some(network) => network::translate(network, &mut warnings)?,
            None => (None, Vec::new()),
        };
        let env = match &self.runtime_config {
            Some(runtime) => environment(runtime, &mut warnings)?,
            None => BTreeMap::new(),
        };
        if self.target_nodes.as_ref().is_some_and(|t| !t.is_empty()) {
            warnings.push(
                "target_nodes: not applied; the scheduler chooses the nodes (a mycel manifest's \
                 [placement] rules on node labels can steer it)",
            );
        }
        if self.build_config.is_some() {
            warnings.push("build_config: ignored; it only applies to source deploys");
        }
        for key in self.unknown.keys() {
            warnings.push(format!("{}: unknown field, ignored", quoted(key)));
        }
        let manifest = Manifest {
            name: self.name.clone(),
            version: self.version.clone(),
            replicas: self.replicas,
            wasm: None,
            container: Some(ContainerSpec {
                image: Some(image),
                port,
                ..ContainerSpec::default()
            }),
            process: None,
            env,
            resources,
            health: None,
            placement: Default::default(),
            balance: Default::default(),
            scale: None,
            update: Default::default(),
            ports,
            secrets: Vec::new(),
            volumes: Vec::new(),
            volume_grace_ms: None,
            dependencies: BTreeMap::new(),
        };
        manifest.validate()?;
        Ok(Translated {
            manifest,
            warnings: warnings.finish(),
        })
    }

    /// `resource_requirements` as the manifest's `resources`; what is absent keeps its default.
    fn resources(&self, warnings: &mut Warnings) -> Result<ResourceSpec, SeedError> {
        let mut resources = ResourceSpec::default();
        let Some(seed) = &self.resource_requirements else {
            return Ok(resources);
        };
        if let Some(memory) = seed.memory.as_ref().filter(|v| !v.is_null()) {
            resources.memory_mb = quantity::memory_mb(memory)
                .map_err(|reason| invalid("resource_requirements.memory", reason))?;
        }
        if let Some(cpu) = seed.cpu.as_ref().filter(|v| !v.is_null()) {
            resources.cpu = quantity::cpu(cpu)
                .map_err(|reason| invalid("resource_requirements.cpu", reason))?;
        }
        if seed.storage.as_ref().is_some_and(|v| !v.is_null()) {
            warnings.push(
                "resource_requirements.storage: not applied; a size names no mount path: declare \
                 [[volumes]] (name, path, size_mb) in a mycel manifest",
            );
        }
        for key in seed.unknown.keys() {
            warnings.push(format!(
                "resource_requirements.{}: unknown, ignored",
                quoted(key)
            ));
        }
        Ok(resources)
    }
}

/// `runtime_config.environment` as the manifest's `env`: an object of variables, or Docker's
/// list of `KEY=value`. A warning for every other key of `runtime_config`.
fn environment(
    runtime: &Map<String, Value>,
    warnings: &mut Warnings,
) -> Result<BTreeMap<String, String>, SeedError> {
    const FIELD: &str = "runtime_config.environment";
    for key in runtime.keys().filter(|k| *k != "environment") {
        warnings.push(format!(
            "runtime_config.{}: not applied; mycel reads only runtime_config.environment",
            quoted(key)
        ));
    }
    let mut env = BTreeMap::new();
    match runtime.get("environment") {
        None | Some(Value::Null) => {}
        Some(Value::Object(vars)) => {
            for (key, value) in vars {
                let value = match value {
                    Value::String(text) => text.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(invalid(
                            format!("{FIELD}.{}", quoted(key)),
                            format!("must be a string (got {})", json_shown(other)),
                        ));
                    }
                };
                env.insert(key.clone(), value);
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let pair = item.as_str().and_then(|text| text.split_once('='));
                let Some((key, value)) = pair else {
                    return Err(invalid(
                        format!("{FIELD}[{i}]"),
                        format!("must be \"KEY=value\" (got {})", json_shown(item)),
                    ));
                };
                env.insert(key.to_string(), value.to_string());
            }
        }
        Some(other) => {
            return Err(invalid(
                FIELD,
                format!(
                    "must be an object of variables, such as {{\"KEY\": \"value\"}} (got {})",
                    json_shown(other)
                ),
            ));
        }
    }
    Ok(env)
}

/// Checks that each known field has its type, so that the error names the field (serde's own
/// does not, once the body is a `Value`).
fn check_shape(object: &Map<String, Value>) -> Result<(), SeedError> {
    for required in ["name", "version"] {
        if !object.contains_key(required) {
            return Err(invalid(required, "required"));
        }
    }
    for (key, value) in object {
        let (ok, expected) = match key.as_str() {
            "name" | "version" => (value.is_string(), "a string"),
            "replicas" => (
                value.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
                "a whole number, such as 3",
            ),
            "image" | "source_code_hash" => (value.is_string() || value.is_null(), "a string"),
            "build_config" | "resource_requirements" | "runtime_config" => {
                (value.is_object() || value.is_null(), "an object")
            }
            "network_config" => {
                if let Some(ports) = value.get("ports")
                    && !(ports.is_object() || ports.is_null())
                {
                    return Err(invalid(
                        "network_config.ports",
                        format!(
                            "must be an object such as {{\"80/tcp\": {{\"HostPort\": \
                             \"8080\"}}}} (got {})",
                            json_shown(ports)
                        ),
                    ));
                }
                (value.is_object() || value.is_null(), "an object")
            }
            "target_nodes" => (
                value.is_null()
                    || value
                        .as_array()
                        .is_some_and(|nodes| nodes.iter().all(Value::is_string)),
                "a list of strings",
            ),
            _ => (true, ""),
        };
        if !ok {
            return Err(invalid(
                key.as_str(),
                format!("must be {expected} (got {})", json_shown(value)),
            ));
        }
    }
    Ok(())
}

/// The warnings of one translation, at most [`MAX_WARNINGS`] and then a count of the rest.
#[derive(Default)]
struct Warnings {
    kept: Vec<String>,
    more: usize,
}

impl Warnings {
    fn push(&mut self, warning: impl Into<String>) {
        if self.kept.len() < MAX_WARNINGS {
            self.kept.push(warning.into());
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.kept
                .push(format!("and {} more fields not applied", self.more));
        }
        self.kept
    }
}

/// User text quoted in a message: cut to 64 characters, control characters and line breaks
/// escaped, so that a warning or an error stays one readable line whatever was sent.
pub(crate) fn quoted(text: &str) -> String {
    const MAX_SHOWN: usize = 64;
    let mut out = String::new();
    for c in text.chars().take(MAX_SHOWN) {
        if c.is_control() || (c.is_whitespace() && c != ' ') {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if text.chars().nth(MAX_SHOWN).is_some() {
        out.push('…');
    }
    out
}

/// A JSON value quoted in a message, compact and cut like [`quoted`].
pub(crate) fn json_shown(value: &Value) -> String {
    quoted(&value.to_string())
}

#[cfg(test)]
mod tests;
