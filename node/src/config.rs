//! The node's configuration: flags, then `MYCEL_*` variables, then the `--config` TOML file, then
//! defaults. Everything is checked here, before anything is bound or written.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use libp2p::Multiaddr;
use mycel_mesh::Timing;
use mycel_protocol::{NodePolicy, Runtime, app::Relaxation};
use serde::Deserialize;

use mycel_node::{Bootstrap, NodeConfig};

use crate::cli::{UpArgs, parse_bootstrap, parse_label, parse_multiaddr, parse_ticket};

pub(crate) const DEFAULT_P2P_PORT: u16 = 7400;
pub(crate) const DEFAULT_API: &str = "127.0.0.1:7401";
pub(crate) const DEFAULT_GATEWAY: &str = "127.0.0.1:7402";

/// The `--config` file: the flags' keys, plus tuning that has no flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    api: Option<String>,
    api_token_required: Option<bool>,
    gateway: Option<String>,
    ingress_address: Option<String>,
    /// Multiaddrs ending in `/p2p/<peer id>`, or join tickets.
    #[serde(default)]
    bootstrap: Vec<String>,
    /// Join tickets.
    #[serde(default)]
    join: Vec<String>,
    /// A deliberately open mesh.
    open: Option<bool>,
    name: Option<String>,
    /// `label = ["zone=a"]`, as the flag.
    #[serde(default)]
    label: Vec<String>,
    /// `[labels] zone = "a"`, the natural TOML form.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    runtimes: Option<Runtimes>,
    domain: Option<String>,
    #[serde(default)]
    membership: MembershipFile,
    #[serde(default)]
    blobs: BlobsFile,
    #[serde(default)]
    policy: PolicyFile,
    #[serde(default)]
    runtime: RuntimeFile,
    #[serde(default)]
    api_rate_limit: ApiRateLimitFile,
}

/// `[api_rate_limit]`: how many API requests each client (remote address) may make. (`api` is
/// the API's address, so the table has a name of its own.)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiRateLimitFile {
    /// Requests per second on average (default 200); 0 turns the limit off.
    per_second: Option<u32>,
    /// Requests at once (default twice `per_second`).
    burst: Option<u32>,
}

impl ApiRateLimitFile {
    fn resolve(self) -> anyhow::Result<mycel_api::RateLimit> {
        let default = mycel_api::RateLimit::DEFAULT;
        let per_second = self.per_second.unwrap_or(default.per_second);
        if per_second == 0 {
            return Ok(mycel_api::RateLimit::OFF);
        }
        let burst = match self.burst {
            None if self.per_second.is_none() => default.burst,
            None => per_second.saturating_mul(2),
            Some(0) => bail!(
                "api_rate_limit.burst must be at least 1 (per_second = 0 turns the limit off)"
            ),
            Some(burst) => burst,
        };
        Ok(mycel_api::RateLimit { per_second, burst })
    }
}

/// `[runtime]`: how this node runs app instances.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeFile {
    /// The longest one request to an instance may run, in ms (default 30000).
    request_timeout_ms: Option<u64>,
}

/// `[policy]`: the owner's limits on what the mesh runs here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// `runtimes = ["wasm"]`: the only runtimes the mesh may use here, whatever the host has.
    runtimes: Option<Vec<String>>,
    max_instances: Option<u32>,
    memory_mb: Option<u64>,
    /// Cores, fractions allowed.
    cpu: Option<f64>,
    allowed_owners: Option<Vec<String>>,
    /// `container_relax = ["writable_root"]`: what apps' `[container.relax]` may drop here.
    container_relax: Option<Vec<String>>,
    /// `registries = ["ghcr.io"]`: where this node may pull images the mesh and engine lack.
    registries: Option<Vec<String>>,
    /// `published_ports = ["5432", "15000-15999"]`: which ports apps may publish on this node's
    /// ingress address (default: any).
    published_ports: Option<Vec<String>>,
}

impl PolicyFile {
    fn resolve(self) -> anyhow::Result<NodePolicy> {
        let cpu_millis = match self.cpu {
            None => None,
            Some(cpu) if (0.0..=1_000_000.0).contains(&cpu) => Some((cpu * 1000.0).round() as u64),
            Some(cpu) => bail!("policy.cpu must be a number of cores, not {cpu}"),
        };
        // Adverts carry names a newer version may add; the owner's own file must name known
        // ones, so a typo is an error rather than a relaxation silently not allowed.
        for name in self.container_relax.iter().flatten() {
            if let Err(e) = name.parse::<Relaxation>() {
                bail!("policy.container_relax: {e}");
            }
        }
        let policy = NodePolicy {
            max_instances: self.max_instances,
            memory_mb: self.memory_mb,
            cpu_millis,
            allowed_owners: self.allowed_owners,
            container_relax: self.container_relax,
            registries: self.registries,
            published_ports: self.published_ports,
        };
        policy
            .validate()
            .map_err(|e| anyhow::anyhow!("policy in the config file: {e}"))?;
        Ok(policy)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlobsFile {
    /// The largest blob this node accepts, in MiB (default 4096).
    max_size_mb: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Runtimes {
    Comma(String),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipFile {
    advert_interval_ms: Option<u64>,
    suspect_after_ms: Option<u64>,
    suspicion_timeout_ms: Option<u64>,
    ping_interval_ms: Option<u64>,
    ping_timeout_ms: Option<u64>,
}

/// Merges flags and environment (already merged by clap) over the file over the defaults.
pub(crate) fn resolve(args: UpArgs) -> anyhow::Result<NodeConfig> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };

    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .map_or_else(default_data_dir, Ok)?;

    let listen_given = !args.listen.is_empty() || !file.listen.is_empty();
    let listen = if !args.listen.is_empty() {
        args.listen
    } else if !file.listen.is_empty() {
        parse_all(&file.listen, parse_multiaddr)?
    } else {
        default_listen()
    };
    let bootstrap: Vec<Bootstrap> = if !args.bootstrap.is_empty() || !args.join.is_empty() {
        let tickets = args.join.into_iter().map(Bootstrap::Ticket);
        args.bootstrap.into_iter().chain(tickets).collect()
    } else {
        let tickets = parse_all(&file.join, parse_ticket)?;
        let mut bootstrap = parse_all(&file.bootstrap, parse_bootstrap)?;
        bootstrap.extend(tickets.into_iter().map(Bootstrap::Ticket));
        bootstrap
    };
    let open = args.open || file.open.unwrap_or(false);
    if open
        && bootstrap
            .iter()
            .any(|b| matches!(b, Bootstrap::Ticket(t) if t.is_private()))
    {
        bail!(
            "--open makes an open mesh, but the join ticket is a private mesh's (it holds \
             its secret): drop --open to join that mesh"
        );
    }

    let api = parse_socket(
        args.api.or(file.api).as_deref().unwrap_or(DEFAULT_API),
        "api",
    )?;
    // Any other local user reaches loopback too: `api_token_required` closes that as well.
    let api_requires_token = args.api_token_required
        || file.api_token_required.unwrap_or(false)
        || !api.ip().to_canonical().is_loopback();
    let gateway = parse_socket(
        args.gateway
            .or(file.gateway)
            .as_deref()
            .unwrap_or(DEFAULT_GATEWAY),
        "gateway",
    )?;
    let ingress = match args.ingress_address.or(file.ingress_address) {
        None => std::net::IpAddr::from([127, 0, 0, 1]),
        Some(text) => text.parse().map_err(|_| {
            anyhow::anyhow!("--ingress-address '{text}' is not an IP address (such as 127.0.0.1)")
        })?,
    };

    let name = args.name.or(file.name);
    if let Some(name) = &name {
        mycel_protocol::membership::validate_node_name(name)
            .map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    }

    let mut labels = file.labels;
    for (key, value) in &labels {
        mycel_protocol::membership::validate_label(key, value)
            .map_err(|e| anyhow::anyhow!("labels in the config file: {e}"))?;
    }
    labels.extend(parse_all(&file.label, parse_label)?);
    labels.extend(args.labels);

    let runtimes = match args.runtimes {
        Some(list) => Some(parse_runtimes(list.split(','))?),
        None => match file.runtimes {
            Some(Runtimes::Comma(list)) => Some(parse_runtimes(list.split(','))?),
            Some(Runtimes::List(list)) => Some(parse_runtimes(list.iter().map(String::as_str))?),
            None => None,
        },
    };
    // The owner's policy narrows what the flag, the file or the host offers.
    let runtimes = match &file.policy.runtimes {
        None => runtimes,
        Some(allowed) => {
            let allowed = parse_runtimes(allowed.iter().map(String::as_str))
                .map_err(|e| anyhow::anyhow!("policy.runtimes: {e}"))?;
            match runtimes {
                None => Some(allowed),
                Some(offered) => {
                    let kept: Vec<Runtime> = offered
                        .into_iter()
                        .filter(|r| allowed.contains(r))
                        .collect();
                    if kept.is_empty() {
                        bail!("policy.runtimes allows none of the runtimes --runtimes names");
                    }
                    Some(kept)
                }
            }
        }
    };

    let domain = args
        .domain
        .or(file.domain)
        .unwrap_or_else(|| "localhost".into());
    if domain.is_empty() || domain.starts_with('.') || domain.contains(['/', ':', ' ']) {
        bail!("--domain '{domain}' is not a domain name");
    }

    Ok(NodeConfig {
        data_dir,
        listen,
        listen_given,
        api,
        api_requires_token,
        gateway,
        ingress,
        bootstrap,
        open,
        name,
        labels,
        runtimes,
        domain,
        timing: timing(&file.membership)?,
        max_blob_bytes: file
            .blobs
            .max_size_mb
            .unwrap_or(4096)
            .saturating_mul(1024 * 1024),
        policy: file.policy.resolve()?,
        request_timeout: match file.runtime.request_timeout_ms {
            None => Duration::from_secs(30),
            Some(0) => bail!("runtime.request_timeout_ms must be above 0"),
            Some(ms) => Duration::from_millis(ms),
        },
        api_rate_limit: file.api_rate_limit.resolve()?,
        discovery_ttl: args.discovery_ttl.map_or(
            mycel_discovery::DiscoveryConfig::DEFAULT_LIFETIME,
            Duration::from_secs,
        ),
    })
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // toml's own rendering spans several lines; the contract promises one.
        let line = e
            .span()
            .map_or(0, |span| text[..span.start].matches('\n').count() + 1);
        anyhow::anyhow!(
            "config file {} line {line}: {}",
            path.display(),
            e.message().trim()
        )
    })
}

/// The data dir when neither `--data-dir` nor `MYCEL_DATA_DIR` names one.
pub(crate) fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("mycel"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/mycel")),
        None => bail!("no data dir: set --data-dir, MYCEL_DATA_DIR, XDG_DATA_HOME or HOME"),
    }
}

fn default_listen() -> Vec<Multiaddr> {
    let any = Ipv4Addr::UNSPECIFIED;
    vec![
        format!("/ip4/{any}/tcp/{DEFAULT_P2P_PORT}")
            .parse()
            .expect("valid multiaddr"),
        format!("/ip4/{any}/udp/{DEFAULT_P2P_PORT}/quic-v1")
            .parse()
            .expect("valid multiaddr"),
    ]
}

fn parse_all<T>(items: &[String], parse: fn(&str) -> Result<T, String>) -> anyhow::Result<Vec<T>> {
    items
        .iter()
        .map(|s| parse(s).map_err(anyhow::Error::msg))
        .collect()
}

fn parse_socket(value: &str, flag: &str) -> anyhow::Result<SocketAddr> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--{flag} '{value}' must be HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host == "localhost" {
        Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse()
            .map_err(|_| anyhow::anyhow!("--{flag} '{value}': '{host}' is not an IP address"))?
    };
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("--{flag} '{value}': '{port}' is not a port"))?;
    Ok(SocketAddr::new(ip, port))
}

fn parse_runtimes<'a>(names: impl Iterator<Item = &'a str>) -> anyhow::Result<Vec<Runtime>> {
    let mut runtimes = Vec::new();
    for name in names.map(str::trim).filter(|n| !n.is_empty()) {
        let runtime: Runtime = name
            .parse()
            .map_err(|e| anyhow::anyhow!("--runtimes: {e}"))?;
        if !runtimes.contains(&runtime) {
            runtimes.push(runtime);
        }
    }
    if runtimes.is_empty() {
        bail!("--runtimes names no runtime");
    }
    Ok(runtimes)
}

fn timing(file: &MembershipFile) -> anyhow::Result<Timing> {
    let defaults = Timing::default();
    let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
    let timing = Timing {
        advert_interval: ms(file.advert_interval_ms, defaults.advert_interval),
        suspect_after: ms(file.suspect_after_ms, defaults.suspect_after),
        suspicion_timeout: ms(file.suspicion_timeout_ms, defaults.suspicion_timeout),
        ping_interval: ms(file.ping_interval_ms, defaults.ping_interval),
        ping_timeout: ms(file.ping_timeout_ms, defaults.ping_timeout),
        forget_after: defaults.forget_after,
    };
    if [
        timing.advert_interval,
        timing.suspicion_timeout,
        timing.ping_interval,
        timing.ping_timeout,
    ]
    .iter()
    .any(Duration::is_zero)
        || timing.suspect_after <= timing.advert_interval
    {
        bail!("[membership] times must be above 0, and suspect_after_ms above advert_interval_ms");
    }
    Ok(timing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `node/` directory, as the test runner says at run time (a test binary reused from
    /// another checkout still reads this one's files).
    fn package_dir() -> PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
    }

    fn args() -> UpArgs {
        UpArgs {
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        }
    }

    /// Resolves `args` with `text` as its config file (written into `dir`).
    fn resolve_with_file(
        dir: &tempfile::TempDir,
        text: &str,
        mut args: UpArgs,
    ) -> anyhow::Result<NodeConfig> {
        let path = dir.path().join("mycel.toml");
        std::fs::write(&path, text).unwrap();
        args.config = Some(path);
        resolve(args)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = resolve(args()).unwrap();
        assert_eq!(c.api.to_string(), DEFAULT_API);
        assert_eq!(c.gateway.to_string(), DEFAULT_GATEWAY);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.domain, "localhost");
        assert!(c.runtimes.is_none());
        assert!(!c.api_requires_token, "loopback needs no token");
    }

    #[test]
    fn an_api_off_loopback_requires_the_token() {
        let requires = |api: &str| {
            let mut a = args();
            a.api = Some(api.into());
            resolve(a).unwrap().api_requires_token
        };
        assert!(!requires("127.0.0.1:0"));
        assert!(!requires("[::1]:7401"));
        assert!(!requires("localhost:7401"));
        assert!(!requires("[::ffff:127.0.0.1]:7401"));
        assert!(requires("0.0.0.0:7401"));
        assert!(requires("[::]:7401"));
        assert!(requires("10.1.2.3:7401"));

        let mut a = args();
        a.api_token_required = true;
        assert!(resolve(a).unwrap().api_requires_token);
        let dir = tempfile::tempdir().unwrap();
        let c = resolve_with_file(&dir, "api_token_required = true\n", args()).unwrap();
        assert!(c.api_requires_token);
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mycel.toml");
        std::fs::write(
            &path,
            "name = \"from-file\"\napi = \"127.0.0.1:9000\"\nruntimes = \"wasm\"\n[labels]\nzone = \"a\"\n[membership]\nsuspicion_timeout_ms = 9000\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        a.name = Some("from-flag".into());
        a.labels = vec![("rack".into(), "r1".into())];
        let c = resolve(a).unwrap();
        assert_eq!(c.name.as_deref(), Some("from-flag"));
        assert_eq!(c.api.port(), 9000);
        assert_eq!(c.runtimes, Some(vec![Runtime::Wasm]));
        assert_eq!(c.labels.len(), 2);
        assert_eq!(c.timing.suspicion_timeout, Duration::from_secs(9));
    }

    #[test]
    fn the_shipped_sample_config_is_valid() {
        let mut a = args();
        a.config = Some(package_dir().join("../bootstrap/mycel.toml"));
        let c = resolve(a).unwrap();
        // TCP only: a private mesh (the default) refuses a QUIC address it is asked for.
        assert_eq!(c.listen.len(), 1);
        assert!(c.listen_given);
        assert_eq!(c.api.to_string(), DEFAULT_API);
    }

    #[test]
    fn the_example_configs_are_valid() {
        let dir = package_dir().join("../examples/lan-mesh");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let mut a = args();
            a.config = Some(entry.unwrap().path());
            resolve(a).unwrap();
            checked += 1;
        }
        assert!(checked >= 2);
    }

    #[test]
    fn the_owners_policy_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = |text: &str| resolve_with_file(&dir, text, args());
        let c = resolve("[policy]\nmax_instances = 4\nmemory_mb = 2048\ncpu = 1.5\nallowed_owners = [\"12D3KooWabc\"]\n").unwrap();
        assert_eq!(
            c.policy,
            NodePolicy {
                max_instances: Some(4),
                memory_mb: Some(2048),
                cpu_millis: Some(1500),
                allowed_owners: Some(vec!["12D3KooWabc".into()]),
                ..NodePolicy::default()
            }
        );
        let c = resolve(
            "[policy]\ncontainer_relax = [\"writable_root\", \"capabilities\"]\n\
             registries = [\"ghcr.io\", \"localhost:5000\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.policy.container_relax,
            Some(vec!["writable_root".into(), "capabilities".into()])
        );
        assert_eq!(
            c.policy.registries,
            Some(vec!["ghcr.io".into(), "localhost:5000".into()])
        );
        let typo = resolve("[policy]\ncontainer_relax = [\"writable_rootfs\"]\n").unwrap_err();
        assert!(
            typo.to_string()
                .contains("unknown relaxation 'writable_rootfs'"),
            "{typo}"
        );
        assert!(resolve("[policy]\nregistries = [\"ghcr.io/team\"]\n").is_err());
        assert_eq!(resolve("").unwrap().policy, NodePolicy::default());
        assert!(resolve("[policy]\ncpu = -1\n").is_err());
        assert!(resolve("[policy]\nallowed_owners = [\"has space\"]\n").is_err());
        assert!(
            resolve("[policy]\nmax_instance = 4\n").is_err(),
            "a typo is an error"
        );
    }

    #[test]
    fn the_policys_runtimes_narrow_what_the_node_offers() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = |text: &str, flag: Option<&str>| {
            let mut a = args();
            a.runtimes = flag.map(String::from);
            resolve_with_file(&dir, text, a)
        };
        let wasm_only = "[policy]\nruntimes = [\"wasm\"]\n";
        assert_eq!(
            resolve(wasm_only, None).unwrap().runtimes,
            Some(vec![Runtime::Wasm])
        );
        assert_eq!(
            resolve(wasm_only, Some("wasm,docker")).unwrap().runtimes,
            Some(vec![Runtime::Wasm])
        );
        let none_left = resolve(wasm_only, Some("docker")).unwrap_err();
        assert!(
            none_left.to_string().contains("policy.runtimes"),
            "{none_left}"
        );
        assert!(resolve("[policy]\nruntimes = [\"vm\"]\n", None).is_err());
        assert_eq!(resolve("", None).unwrap().runtimes, None);
    }

    #[test]
    fn tickets_and_open_come_from_flags_or_the_file() {
        let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
            .parse()
            .unwrap();
        let addr: Multiaddr = "/ip4/192.0.2.10/tcp/7400".parse().unwrap();
        let private = mycel_mesh::JoinTicket::new(
            peer,
            std::slice::from_ref(&addr),
            Some(mycel_mesh::MeshSecret::from_bytes([5; 32])),
        );
        let open_ticket = mycel_mesh::JoinTicket::new(peer, std::slice::from_ref(&addr), None);
        let dir = tempfile::tempdir().unwrap();
        let resolve = |text: &str, edit: &dyn Fn(&mut UpArgs)| {
            let mut a = args();
            edit(&mut a);
            resolve_with_file(&dir, text, a)
        };
        let c = resolve(&format!("join = [\"{private}\"]\n"), &|_| {}).unwrap();
        assert_eq!(c.bootstrap, vec![Bootstrap::Ticket(private.clone())]);
        assert!(!c.open);
        assert!(!c.listen_given);
        let c = resolve(
            &format!("bootstrap = [\"{open_ticket}\", \"{addr}/p2p/{peer}\"]\nopen = true\n"),
            &|_| {},
        )
        .unwrap();
        assert!(c.open);
        assert_eq!(c.bootstrap.len(), 2);
        // Flags win: the file's bootstrap is not added to --join's.
        let c = resolve(&format!("join = [\"{private}\"]\n"), &|a| {
            a.join = vec![open_ticket.clone()]
        })
        .unwrap();
        assert_eq!(c.bootstrap, vec![Bootstrap::Ticket(open_ticket.clone())]);
        // --open with a private mesh's ticket is a contradiction.
        let error = resolve("", &|a| {
            a.open = true;
            a.join = vec![private.clone()];
        })
        .unwrap_err();
        assert!(error.to_string().contains("drop --open"), "{error}");
        assert!(resolve("join = [\"mycelbroken\"]\n", &|_| {}).is_err());
        let c = resolve("listen = [\"/ip4/0.0.0.0/tcp/7400\"]\n", &|_| {}).unwrap();
        assert!(c.listen_given);
    }

    #[test]
    fn the_api_rate_limit_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = |text: &str| resolve_with_file(&dir, text, args()).map(|c| c.api_rate_limit);
        let limit = |per_second, burst| mycel_api::RateLimit { per_second, burst };
        assert_eq!(resolve("").unwrap(), mycel_api::RateLimit::DEFAULT);
        assert_eq!(
            resolve("[api_rate_limit]\nper_second = 5\n").unwrap(),
            limit(5, 10)
        );
        assert_eq!(
            resolve("[api_rate_limit]\nper_second = 5\nburst = 1\n").unwrap(),
            limit(5, 1)
        );
        assert_eq!(
            resolve("[api_rate_limit]\nburst = 1000\n").unwrap(),
            limit(200, 1000)
        );
        assert!(
            resolve("[api_rate_limit]\nper_second = 0\n")
                .unwrap()
                .is_off()
        );
        assert!(resolve("[api_rate_limit]\nper_second = 5\nburst = 0\n").is_err());
        assert!(resolve("[api_rate_limit]\nper_second = -1\n").is_err());
        assert!(resolve("[api_rate_limit]\nrate = 5\n").is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let mut a = args();
        a.config = Some(path);
        assert!(resolve(a).is_err());

        let mut a = args();
        a.api = Some("nowhere".into());
        assert!(resolve(a).is_err());

        let mut a = args();
        a.runtimes = Some("wasm,vm".into());
        assert!(resolve(a).is_err());
    }
}
