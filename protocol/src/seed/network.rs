//! `network_config`: Docker's port bindings as the seed sends them, as the manifest's `ports` and
//! the container's port.

use serde_json::{Map, Value};

use super::{SeedError, SeedNetwork, Warnings, invalid, json_shown, quoted};
use crate::app::{PortProtocol, PortSpec};

/// The container's port and the published ports that `network_config` describes.
///
/// The seed's `ports` is a JSON object, and serde reads it into a sorted map: the order the
/// client wrote the keys in is not known here. So the app's HTTP port (`container.port`, where
/// the gateway sends requests) is the lowest container port among the keys, not the first one
/// written. Every binding with a `HostPort` publishes that container port on it; a binding
/// without one (absent, `""` or `null`), or `{}`, publishes nothing.
pub(super) fn translate(
    network: &SeedNetwork,
    warnings: &mut Warnings,
) -> Result<(Option<u16>, Vec<PortSpec>), SeedError> {
    for key in network.unknown.keys() {
        warnings.push(format!("network_config.{}: unknown, ignored", quoted(key)));
    }
    let Some(bindings) = &network.ports else {
        return Ok((None, Vec::new()));
    };
    let mut lowest: Option<u16> = None;
    let mut published = Vec::new();
    for (key, value) in bindings {
        let field = format!("network_config.ports[\"{}\"]", quoted(key));
        let container = container_port(key).map_err(|reason| invalid(&field, reason))?;
        lowest = Some(lowest.map_or(container, |port| port.min(container)));
        for host in host_ports(&field, value, warnings)? {
            published.push(PortSpec {
                container,
                published: host,
                protocol: PortProtocol::Tcp,
            });
        }
    }
    // Sorted and without repeats ("80" and "80/tcp" may both bind 8080), so that one body always
    // gives one manifest.
    published.sort_by_key(|p| (p.container, p.published));
    published.dedup();
    Ok((lowest, published))
}

/// `"80/tcp"` or `"80"`: the container port, TCP only.
fn container_port(key: &str) -> Result<u16, String> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    if !protocol.eq_ignore_ascii_case("tcp") {
        return Err(format!(
            "only TCP ports can be published (got '{}'); UDP and other protocols are not \
             supported",
            quoted(protocol)
        ));
    }
    port_number(port)
        .map_err(|reason| format!("{reason}; a key is PORT or PORT/tcp, such as 80/tcp"))
}

/// The host ports a binding value publishes: `{"HostPort": "8080"}`, a list of such bindings,
/// `{}` or `null`.
fn host_ports(field: &str, value: &Value, warnings: &mut Warnings) -> Result<Vec<u16>, SeedError> {
    let expected = |got: &Value| {
        invalid(
            field,
            format!(
                "must be {{\"HostPort\": \"8080\"}}, a list of such bindings, or {{}} (got {})",
                json_shown(got)
            ),
        )
    };
    let bindings: Vec<&Map<String, Value>> = match value {
        Value::Null => Vec::new(),
        Value::Object(binding) => vec![binding],
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_object().ok_or_else(|| expected(item)))
            .collect::<Result<_, _>>()?,
        other => return Err(expected(other)),
    };
    let mut ports = Vec::new();
    for binding in bindings {
        for (key, value) in binding {
            match key.as_str() {
                "HostPort" => {
                    if let Some(port) = host_port(value)
                        .map_err(|reason| invalid(format!("{field}.HostPort"), reason))?
                    {
                        ports.push(port);
                    }
                }
                "HostIp" => {
                    let any =
                        matches!(value.as_str(), Some("" | "0.0.0.0" | "::")) || value.is_null();
                    if !any {
                        warnings.push(format!(
                            "{field}.HostIp: not applied; a published port listens on every \
                             node's ingress address"
                        ));
                    }
                }
                other => warnings.push(format!("{field}.{}: unknown, ignored", quoted(other))),
            }
        }
    }
    Ok(ports)
}

/// A `HostPort`: `"8080"` or `8080`; `""` or `null` publishes nothing.
fn host_port(value: &Value) -> Result<Option<u16>, String> {
    let port = match value {
        Value::Null => return Ok(None),
        Value::String(text) if text.trim().is_empty() => return Ok(None),
        Value::String(text) => port_number(text.trim()),
        Value::Number(n) => match n.as_u64() {
            Some(n) => in_range(n),
            None => Err(format!("must be 1 to 65535 (got {n})")),
        },
        other => Err(format!(
            "must be a port such as \"8080\" (got {})",
            json_shown(other)
        )),
    };
    port.map(Some)
}

fn port_number(text: &str) -> Result<u16, String> {
    if text.contains('-') {
        return Err(format!("'{}': a single port, not a range", quoted(text)));
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{}' is not a port number", quoted(text)));
    }
    // Digits only: a parse failure can only be a number too large.
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!("must be 1 to 65535 (got {})", quoted(text))),
    }
}

fn in_range(n: u64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!("must be 1 to 65535 (got {n})")),
    }
}
