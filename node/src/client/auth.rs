//! The API token client commands send, as `Authorization: Bearer`: `--token` (or
//! `MYCEL_API_TOKEN`), else the one a local node keeps in its data dir (`MYCEL_DATA_DIR`, else the
//! default one) when that node's `node.json` names the API the command talks to. A token is
//! never sent to an API that no local `node.json` names unless the user gave it.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::OnceLock,
};

use mycel_node::datadir;

use crate::config;

static TOKEN: OnceLock<Option<String>> = OnceLock::new();

/// Chooses the token for the commands that talk to `node`; `given` is `--token`. Called once,
/// before a command sends its first request.
pub(crate) fn choose_token(node: &str, given: Option<String>) {
    let token = given
        .filter(|t| !t.trim().is_empty())
        .or_else(|| local_token(node));
    let _ = TOKEN.set(token);
}

/// `request` with the chosen token, if there is one (marked sensitive: never logged).
pub(super) fn with_token(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match TOKEN.get() {
        Some(Some(token)) => request.bearer_auth(token.trim()),
        _ => request,
    }
}

/// The API a client command talks to when none is named: the one the local node's `node.json`
/// names (a node started with `--api 127.0.0.1:0` is found too), else the default address.
pub(crate) fn local_node() -> String {
    local_data_dir()
        .and_then(|dir| datadir::read_node_file(&dir))
        .map(|running| running.api)
        .unwrap_or_else(|| DEFAULT_NODE.to_owned())
}

/// The API client commands talk to when nothing names one and no local node says where it is.
const DEFAULT_NODE: &str = "http://127.0.0.1:7401";

/// The local node's data dir: `MYCEL_DATA_DIR`, else the default one.
fn local_data_dir() -> Option<PathBuf> {
    std::env::var_os("MYCEL_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| config::default_data_dir().ok())
}

/// The token of the local node whose `node.json` names `node`.
fn local_token(node: &str) -> Option<String> {
    let dir = local_data_dir()?;
    let running = datadir::read_node_file(&dir)?;
    if !same_api(node, &running.api) {
        return None;
    }
    datadir::read_api_token(&dir)
}

/// Whether the URL `node` reaches the API that `node.json` names as `api`: the same scheme, port
/// and address; an API bound to every address (`0.0.0.0`, `::`) is reached on loopback too.
fn same_api(node: &str, api: &str) -> bool {
    let (Ok(node), Ok(api)) = (reqwest::Url::parse(node), reqwest::Url::parse(api)) else {
        return false;
    };
    if node.scheme() != api.scheme() || node.port_or_known_default() != api.port_or_known_default()
    {
        return false;
    }
    match (host_ip(&node), host_ip(&api)) {
        (Some(wanted), Some(bound)) => {
            wanted == bound || (bound.is_unspecified() && wanted.is_loopback())
        }
        _ => false,
    }
}

fn host_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host == "localhost" {
        return Some(Ipv4Addr::LOCALHOST.into());
    }
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_matches_the_api_its_node_json_names() {
        let api = "http://10.1.2.3:7401";
        assert!(same_api("http://10.1.2.3:7401", api));
        assert!(same_api("http://10.1.2.3:7401/", api));
        assert!(!same_api("http://10.1.2.4:7401", api));
        assert!(!same_api("http://10.1.2.3:7402", api));
        assert!(!same_api("https://10.1.2.3:7401", api));
        assert!(!same_api("http://127.0.0.1:7401", api));
        assert!(!same_api("not a url", api));

        assert!(same_api("http://127.0.0.1:7401", "http://0.0.0.0:7401"));
        assert!(same_api("http://localhost:7401", "http://0.0.0.0:7401"));
        assert!(same_api("http://[::1]:7401", "http://[::]:7401"));
        assert!(same_api("http://[::1]:7401", "http://[::1]:7401"));
        assert!(!same_api("http://10.1.2.3:7401", "http://0.0.0.0:7401"));
        assert!(!same_api("http://example.com:7401", "http://0.0.0.0:7401"));
    }
}
