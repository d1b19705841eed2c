//! What a container is made of: its name, labels and hardened configuration, decided from the
//! spec alone so that every decision is unit-tested without an engine.
//!
//! Hardening, by default: a read-only root filesystem with a small `noexec` tmpfs on `/tmp`; a
//! non-root user (the image's own if it names one, else `nobody`); every capability dropped and
//! `no-new-privileges`. A workload's [`ContainerRelax`] drops some of these, one by one (the
//! agent lets through only what the node's owner allows). Never relaxed: memory (without swap),
//! CPU and process-count limits; the port published on the host's loopback address only; no
//! restart by the engine (the agent decides); a bounded log file.

use std::{collections::HashMap, net::IpAddr};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};

use super::{LABEL_APP, LABEL_INSTANCE, LABEL_MANAGED, LABEL_NODE};
use crate::{ContainerRelax, ContainerWorkload, InstanceSpec};

/// The user a container runs as when its image would run it as root: `nobody`.
pub(super) const NOBODY: &str = "65534:65534";
/// Most processes (threads included) a container may have: stops fork bombs, allows thread pools.
pub(super) const PIDS_LIMIT: i64 = 256;
/// The writable scratch space every container gets; it counts against its memory limit.
pub(super) const TMP_OPTIONS: &str = "rw,noexec,nosuid,nodev,size=16m";
/// The engine refuses memory limits under 6 MiB.
const MIN_MEMORY_BYTES: i64 = 6 << 20;
/// The engine refuses CPU limits under a hundredth of a core.
const MIN_NANO_CPUS: i64 = 10_000_000;

/// Everything besides the spec that shapes a container.
pub(super) struct Plan<'a> {
    pub(super) spec: &'a InstanceSpec,
    pub(super) workload: &'a ContainerWorkload,
    /// The user the image's config names (`USER`), if any.
    pub(super) image_user: Option<&'a str>,
    pub(super) node_id: &'a str,
    pub(super) host_address: IpAddr,
    pub(super) init: bool,
    pub(super) host_cpus: u64,
}

/// A name unique to (node, instance) on a shared engine: readable parts, made safe for Docker
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) and shortened, then a hash of the exact pair, so two pairs
/// that read alike after cleaning still differ.
pub(super) fn container_name(node_id: &str, instance_id: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(node_id.as_bytes());
    hasher.update(&[0]);
    hasher.update(instance_id.as_bytes());
    let hash = hasher.finalize().to_hex();
    format!(
        "mycel-{}-{}-{}",
        docker_safe(node_id, 16),
        docker_safe(instance_id, 40),
        &hash[..12]
    )
}

fn docker_safe(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The image's user when it is not root, else [`NOBODY`]. Root is an empty user (the default),
/// `root` or uid 0, with or without a group. With `run_as_root`, the image's user whatever it is,
/// and uid 0 when it names none (said explicitly, so the intent shows in `docker inspect`).
pub(super) fn run_as(image_user: Option<&str>, run_as_root: bool) -> String {
    let user = image_user.map(str::trim).unwrap_or("");
    let name = user.split(':').next().unwrap_or("");
    let is_root = name.is_empty() || name == "root" || name.parse::<u32>() == Ok(0);
    match (is_root, run_as_root) {
        (false, _) => user.to_owned(),
        (true, false) => NOBODY.to_owned(),
        (true, true) if user.is_empty() => "0".to_owned(),
        (true, true) => user.to_owned(),
    }
}

/// The engine's key for a TCP port: `8080/tcp`.
pub(super) fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

impl Plan<'_> {
    /// The container to create.
    pub(super) fn create_body(&self) -> ContainerCreateBody {
        let spec = self.spec;
        let workload = self.workload;
        let ports = workload.ports().map(port_key).collect::<Vec<_>>();
        // The app finds its port in $PORT; the spec's own PORT, if any, would only mislead it.
        let env = spec
            .env
            .iter()
            .filter(|(key, _)| key.as_str() != "PORT")
            .map(|(key, value)| format!("{key}={value}"))
            .chain([format!("PORT={}", workload.port)])
            .collect();
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_NODE.to_owned(), self.node_id.to_owned()),
            (LABEL_APP.to_owned(), spec.app.clone()),
            (LABEL_INSTANCE.to_owned(), spec.instance_id.clone()),
        ]);
        ContainerCreateBody {
            image: Some(workload.image.clone()),
            cmd: (!workload.command.is_empty()).then(|| workload.command.clone()),
            env: Some(env),
            user: Some(run_as(self.image_user, workload.relax.run_as_root)),
            exposed_ports: Some(ports.clone()),
            labels: Some(labels),
            host_config: Some(self.host_config(ports)),
            ..Default::default()
        }
    }

    fn host_config(&self, ports: Vec<String>) -> HostConfig {
        let memory = i64::try_from(self.spec.memory_mb.saturating_mul(1 << 20))
            .unwrap_or(i64::MAX)
            .max(MIN_MEMORY_BYTES);
        // Zero means no CPU limit; a share beyond the host's CPUs is refused by the engine, and
        // the whole host is what it would get anyway.
        let host_nano =
            i64::try_from(self.host_cpus.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX);
        let nano_cpus = (self.spec.cpu_millis > 0).then(|| {
            i64::try_from(self.spec.cpu_millis.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX)
                .clamp(MIN_NANO_CPUS, host_nano.max(MIN_NANO_CPUS))
        });
        // An empty host port lets the engine pick a free one; it is read back after the start.
        let binding = PortBinding {
            host_ip: Some(self.host_address.to_string()),
            host_port: Some(String::new()),
        };
        let relax: &ContainerRelax = &self.workload.relax;
        HostConfig {
            readonly_rootfs: Some(!relax.writable_root),
            tmpfs: Some(HashMap::from([("/tmp".to_owned(), TMP_OPTIONS.to_owned())])),
            // The app's secrets: a directory on the host's tmpfs, read-only; the container's
            // config names the directory, never a value.
            // Its volumes read-write (their paths hold no ':' or ',', the manifest checks).
            binds: {
                let secrets = self
                    .spec
                    .secrets_dir
                    .iter()
                    .map(|dir| format!("{}:/run/secrets:ro", dir.to_string_lossy()));
                let volumes =
                    self.spec.volumes.iter().map(|volume| {
                        format!("{}:{}:rw", volume.host.to_string_lossy(), volume.path)
                    });
                let binds: Vec<String> = secrets.chain(volumes).collect();
                (!binds.is_empty()).then_some(binds)
            },
            // Dropping all first makes the added ones the whole set, whatever the engine's
            // default set is.
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: (!relax.capabilities.is_empty()).then(|| relax.capabilities.clone()),
            security_opt: (!relax.new_privileges).then(|| vec!["no-new-privileges".to_owned()]),
            memory: Some(memory),
            // Memory plus swap equal to memory: no swap at all.
            memory_swap: Some(memory),
            nano_cpus,
            pids_limit: Some(PIDS_LIMIT),
            port_bindings: Some(
                ports
                    .into_iter()
                    .map(|port| (port, Some(vec![binding.clone()])))
                    .collect(),
            ),
            auto_remove: Some(false),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            init: Some(self.init),
            // json-file whatever the engine's default, so the logs API can read it back, and
            // bounded so a chatty app cannot fill the node's disk.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), "10m".to_owned()),
                    ("max-file".to_owned(), "2".to_owned()),
                ])),
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

    use super::*;
    use crate::Workload;

    fn spec() -> (InstanceSpec, ContainerWorkload) {
        let workload = ContainerWorkload {
            image: "web:1".to_owned(),
            port: 8080,
            command: vec![],
            relax: ContainerRelax::default(),
            tcp_ports: vec![],
        };
        let spec = InstanceSpec {
            instance_id: "web-1".to_owned(),
            app: "web".to_owned(),
            workload: Workload::Container(workload.clone()),
            env: BTreeMap::from([
                ("GREETING".to_owned(), "hola".to_owned()),
                ("PORT".to_owned(), "1".to_owned()),
            ]),
            memory_mb: 32,
            cpu_millis: 250,
            request_timeout: Duration::from_secs(5),
            max_concurrency: 4,
            secrets_dir: None,
            volumes: Vec::new(),
            dependencies: None,
        };
        (spec, workload)
    }

    fn plan<'a>(spec: &'a InstanceSpec, workload: &'a ContainerWorkload) -> Plan<'a> {
        Plan {
            spec,
            workload,
            image_user: None,
            node_id: "node-a",
            host_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            init: true,
            host_cpus: 2,
        }
    }

    #[test]
    fn containers_are_hardened() {
        let (spec, workload) = spec();
        let body = plan(&spec, &workload).create_body();
        assert_eq!(body.user.as_deref(), Some(NOBODY));
        assert_eq!(body.cmd, None, "the image's command stays");
        assert_eq!(
            body.env,
            Some(vec!["GREETING=hola".to_owned(), "PORT=8080".to_owned()])
        );
        let labels = body.labels.unwrap_or_default();
        assert_eq!(labels.get("mycel.node").map(String::as_str), Some("node-a"));
        assert_eq!(
            labels.get("mycel.instance").map(String::as_str),
            Some("web-1")
        );
        assert_eq!(
            labels.get("mycel.managed").map(String::as_str),
            Some("true")
        );

        let host = body.host_config.unwrap_or_default();
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add, None);
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        assert_eq!(host.memory, Some(32 << 20));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.nano_cpus, Some(250_000_000));
        assert_eq!(host.pids_limit, Some(PIDS_LIMIT));
        assert_eq!(host.auto_remove, Some(false));
        let tmp = host.tmpfs.unwrap_or_default();
        assert!(tmp.get("/tmp").is_some_and(|o| o.contains("noexec")));
        let bindings = host.port_bindings.unwrap_or_default();
        let binding = &bindings["8080/tcp"].as_deref().unwrap_or_default()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some(""));
    }

    #[test]
    fn limits_stay_within_what_the_engine_accepts() {
        let (mut spec, workload) = spec();
        spec.memory_mb = 1;
        spec.cpu_millis = 64_000;
        let host = plan(&spec, &workload)
            .create_body()
            .host_config
            .unwrap_or_default();
        assert_eq!(host.memory, Some(MIN_MEMORY_BYTES));
        assert_eq!(
            host.nano_cpus,
            Some(2_000_000_000),
            "capped at the host's CPUs"
        );

        spec.cpu_millis = 0;
        let host = plan(&spec, &workload)
            .create_body()
            .host_config
            .unwrap_or_default();
        assert_eq!(host.nano_cpus, None, "no share means no limit");
    }

    #[test]
    fn root_becomes_nobody_and_other_users_stay() {
        for root in [
            None,
            Some(""),
            Some("root"),
            Some("0"),
            Some("0:0"),
            Some("root:app"),
        ] {
            assert_eq!(run_as(root, false), NOBODY, "{root:?}");
        }
        for user in ["1000", "1000:1000", "app", "app:app"] {
            assert_eq!(run_as(Some(user), false), user);
            assert_eq!(
                run_as(Some(user), true),
                user,
                "relaxing keeps a non-root user"
            );
        }
    }

    #[test]
    fn run_as_root_keeps_the_images_root_user() {
        for (image_user, user) in [
            (None, "0"),
            (Some(""), "0"),
            (Some("root"), "root"),
            (Some("0:0"), "0:0"),
        ] {
            assert_eq!(run_as(image_user, true), user, "{image_user:?}");
        }
    }

    #[test]
    fn each_relaxation_drops_only_its_own_hardening() {
        let (spec, hardened) = spec();
        let body = |relax: ContainerRelax| {
            let workload = ContainerWorkload {
                relax,
                ..hardened.clone()
            };
            plan(&spec, &workload).create_body()
        };
        let hardened = body(ContainerRelax::default());
        let host = |body: &ContainerCreateBody| body.host_config.clone().unwrap_or_default();

        // Each relaxed body equals the hardened one but for what the relaxation drops.
        let mut expected = hardened.clone();
        expected.host_config = Some(HostConfig {
            readonly_rootfs: Some(false),
            ..host(&hardened)
        });
        let writable = body(ContainerRelax {
            writable_root: true,
            ..ContainerRelax::default()
        });
        assert_eq!(writable, expected);
        assert!(
            host(&writable)
                .tmpfs
                .unwrap_or_default()
                .contains_key("/tmp")
        );

        let mut expected = hardened.clone();
        expected.host_config = Some(HostConfig {
            cap_add: Some(vec!["NET_BIND_SERVICE".to_owned(), "CHOWN".to_owned()]),
            security_opt: None,
            ..host(&hardened)
        });
        let privileged = body(ContainerRelax {
            capabilities: vec!["NET_BIND_SERVICE".to_owned(), "CHOWN".to_owned()],
            new_privileges: true,
            ..ContainerRelax::default()
        });
        assert_eq!(privileged, expected);
        assert_eq!(host(&privileged).cap_drop, Some(vec!["ALL".to_owned()]));

        let mut expected = hardened.clone();
        expected.user = Some("0".to_owned());
        let root = body(ContainerRelax {
            run_as_root: true,
            ..ContainerRelax::default()
        });
        assert_eq!(root, expected);
    }

    #[test]
    fn names_are_safe_and_unique_per_node_and_instance() {
        let name = container_name("12D3KooW/node", "web:1");
        assert!(name.starts_with("mycel-12D3KooW-node-web-1-"), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        );
        assert_ne!(
            container_name("a", "web:1"),
            container_name("a", "web-1"),
            "alike after cleaning"
        );
        assert_ne!(container_name("a", "x"), container_name("b", "x"));
        assert!(container_name(&"n".repeat(200), &"i".repeat(200)).len() < 80);
    }
}
