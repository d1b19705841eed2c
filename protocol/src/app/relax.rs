//! `[container.relax]`: the parts of the container hardening an app asks to drop. A relaxation
//! takes effect only on a node whose owner allows it (`NodePolicy::container_relax`, by the names
//! of [`Relaxation`]): the scheduler places the app on such nodes only, and a node's agent refuses
//! to start it anyway when its own policy does not allow it.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{ManifestError, invalid, shown};

/// Most capabilities `[container.relax] capabilities` may add back.
pub const MAX_RELAX_CAPABILITIES: usize = 16;

/// The Linux capabilities (capabilities(7)) a manifest may add back, named without `CAP_`.
pub const KNOWN_CAPABILITIES: [&str; 41] = [
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// What a container asks to relax. Every field's default is the hardened behaviour, so an absent
/// table and an empty one mean the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaxSpec {
    /// A writable root filesystem instead of a read-only one.
    #[serde(skip_serializing_if = "is_false")]
    pub writable_root: bool,
    /// The image's user even when it is root (uid 0 when the image names none).
    #[serde(skip_serializing_if = "is_false")]
    pub run_as_root: bool,
    /// Capabilities added back after all are dropped, e.g. `["NET_BIND_SERVICE"]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// `false` lets processes gain privileges (setuid binaries): drops `no-new-privileges`.
    #[serde(skip_serializing_if = "is_true")]
    pub no_new_privileges: bool,
}

impl Default for RelaxSpec {
    fn default() -> Self {
        Self {
            writable_root: false,
            run_as_root: false,
            capabilities: Vec::new(),
            no_new_privileges: true,
        }
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

fn is_true(value: &bool) -> bool {
    *value
}

/// One relaxation, named as a manifest asks for it and as a node's policy allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Relaxation {
    WritableRoot,
    RunAsRoot,
    Capabilities,
    NewPrivileges,
}

impl Relaxation {
    pub const ALL: [Relaxation; 4] = [
        Relaxation::WritableRoot,
        Relaxation::RunAsRoot,
        Relaxation::Capabilities,
        Relaxation::NewPrivileges,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Relaxation::WritableRoot => "writable_root",
            Relaxation::RunAsRoot => "run_as_root",
            Relaxation::Capabilities => "capabilities",
            Relaxation::NewPrivileges => "new_privileges",
        }
    }
}

impl fmt::Display for Relaxation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Relaxation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Relaxation::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown relaxation '{}' (expected writable_root, run_as_root, capabilities \
                     or new_privileges)",
                    shown(s)
                )
            })
    }
}

impl RelaxSpec {
    /// The relaxations asked for, in [`Relaxation::ALL`]'s order; empty: fully hardened.
    pub fn relaxations(&self) -> Vec<Relaxation> {
        Relaxation::ALL
            .into_iter()
            .filter(|r| match r {
                Relaxation::WritableRoot => self.writable_root,
                Relaxation::RunAsRoot => self.run_as_root,
                Relaxation::Capabilities => !self.capabilities.is_empty(),
                Relaxation::NewPrivileges => !self.no_new_privileges,
            })
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), ManifestError> {
        const FIELD: &str = "container.relax.capabilities";
        if self.capabilities.len() > MAX_RELAX_CAPABILITIES {
            return Err(invalid(
                FIELD,
                format!(
                    "at most {MAX_RELAX_CAPABILITIES} capabilities (got {})",
                    self.capabilities.len()
                ),
            ));
        }
        for (i, name) in self.capabilities.iter().enumerate() {
            let field = format!("{FIELD}[{i}]");
            if !KNOWN_CAPABILITIES.contains(&name.as_str()) {
                // Docker also takes `cap_net_admin` or `ALL`; one spelling keeps policies and
                // audits simple, and `ALL` would undo the point of naming what an app needs.
                let upper = name.to_ascii_uppercase();
                let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
                let reason = if KNOWN_CAPABILITIES.contains(&bare) {
                    format!(
                        "write '{bare}': uppercase, without CAP_ (got '{}')",
                        shown(name)
                    )
                } else if bare == "ALL" {
                    "'ALL' is refused: name each capability the app needs".to_owned()
                } else {
                    format!(
                        "'{}' is not a Linux capability (see capabilities(7); without CAP_)",
                        shown(name)
                    )
                };
                return Err(invalid(field, reason));
            }
            if self.capabilities[..i].contains(name) {
                return Err(invalid(field, format!("'{name}' is listed twice")));
            }
        }
        Ok(())
    }
}
