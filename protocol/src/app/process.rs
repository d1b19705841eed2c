//! `[process]`: a binary run in the node's namespace sandbox, and the argument rules it shares
//! with `[container] command`.

use serde::{Deserialize, Serialize};

use super::{BlobRef, ManifestError, invalid};

/// The most arguments a command line may have.
pub const MAX_COMMAND_ARGS: usize = 64;
/// The longest one argument may be.
pub const MAX_ARG_BYTES: usize = 4096;
/// The port a process or container app listens on when its manifest names none.
pub const DEFAULT_PORT: u16 = 8080;

/// An executable (a static binary, or a dynamic one whose libraries the node's `/usr` has),
/// started in a sandbox of its own on every node that runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// A path relative to the manifest (the CLI uploads it) or `blake3:<64 hex>`.
    pub binary: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The port the app listens on (in its own network); the app finds it in `$PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl ProcessSpec {
    /// The port the app listens on.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }

    pub(super) fn validate(&self) -> Result<(), ManifestError> {
        BlobRef::parse(&self.binary).map_err(|reason| invalid("process.binary", reason))?;
        if self.port == Some(0) {
            return Err(invalid("process.port", "must be 1 to 65535 (got 0)"));
        }
        check_args("process.args", &self.args)
    }
}

/// Checks a command line's count and each argument's size and content.
pub(super) fn check_args(field: &str, args: &[String]) -> Result<(), ManifestError> {
    if args.len() > MAX_COMMAND_ARGS {
        return Err(invalid(
            field,
            format!("at most {MAX_COMMAND_ARGS} arguments (got {})", args.len()),
        ));
    }
    for (i, arg) in args.iter().enumerate() {
        let field = format!("{field}[{i}]");
        if arg.len() > MAX_ARG_BYTES {
            return Err(invalid(
                field,
                format!("at most {MAX_ARG_BYTES} bytes (got {})", arg.len()),
            ));
        }
        // A process argument is a C string: it cannot carry a NUL.
        if arg.contains('\0') {
            return Err(invalid(field, "must not contain a NUL character"));
        }
    }
    Ok(())
}
