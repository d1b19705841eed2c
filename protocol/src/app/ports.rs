//! `[[ports]]`: TCP ports of an app published on every node's ingress address, the way Swarm's
//! routing mesh publishes a service's ports: a client reaches the app through any node.

use serde::{Deserialize, Serialize};

use super::{AppKind, ManifestError, invalid};

/// The most ports one app may publish.
pub const MAX_PORTS: usize = 16;

/// One published port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// The port the app listens on inside its container or sandbox.
    pub container: u16,
    /// The port every node listens on, at its ingress address. Unique in the mesh.
    pub published: u16,
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// What a published port carries. TCP only, for now: named so a manifest says what it means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    #[default]
    Tcp,
}

/// Checks an app's published ports: each valid, none published twice, and only for an app with
/// ports of its own.
pub(super) fn check_ports(ports: &[PortSpec], kind: AppKind) -> Result<(), ManifestError> {
    if !ports.is_empty() && kind == AppKind::Wasm {
        return Err(invalid(
            "ports",
            "a wasm app answers HTTP through the gateway only; publish ports from a [container] \
             or [process] app",
        ));
    }
    if ports.len() > MAX_PORTS {
        return Err(invalid(
            "ports",
            format!("at most {MAX_PORTS} ports (got {})", ports.len()),
        ));
    }
    for (i, port) in ports.iter().enumerate() {
        if port.container == 0 {
            return Err(invalid(
                format!("ports[{i}].container"),
                "must be 1 to 65535 (got 0)",
            ));
        }
        if port.published == 0 {
            return Err(invalid(
                format!("ports[{i}].published"),
                "must be 1 to 65535 (got 0)",
            ));
        }
        if ports[..i].iter().any(|p| p.published == port.published) {
            return Err(invalid(
                format!("ports[{i}].published"),
                format!("port {} is published twice", port.published),
            ));
        }
    }
    Ok(())
}
