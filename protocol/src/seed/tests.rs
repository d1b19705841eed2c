use serde_json::json;

use super::*;
use crate::app::{DEFAULT_CPU, DEFAULT_MEMORY_MB, PortProtocol, PortSpec};

fn translate(body: Value) -> Result<Translated, SeedError> {
    SeedDeploy::from_value(body)?.to_manifest()
}

/// The reason of an `Invalid` error for `field`, or a panic that shows what came instead.
fn invalid_reason(body: Value, field: &str) -> String {
    match translate(body) {
        Err(SeedError::Invalid { field: got, reason }) if got == field => {
            assert!(!reason.contains('\n'), "{reason}");
            reason
        }
        other => panic!("expected an error on {field}, got {other:?}"),
    }
}

fn port(container: u16, published: u16) -> PortSpec {
    PortSpec {
        container,
        published,
        protocol: PortProtocol::Tcp,
    }
}

#[test]
fn the_web_app_body_translates() {
    let body = json!({"name":"my-web-app","version":"1.0.0","image":"nginx:alpine","replicas":3,
        "resource_requirements":{"memory":"256m","cpu":"0.5"},
        "network_config":{"ports":{"80/tcp":{"HostPort":"8080"}}}});
    assert!(is_seed_form(&body));
    let Translated { manifest, warnings } = translate(body).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        (manifest.name.as_str(), manifest.version.as_str()),
        ("my-web-app", "1.0.0")
    );
    assert_eq!(manifest.replicas, 3);
    let container = manifest.container.as_ref().unwrap();
    assert_eq!(container.image.as_deref(), Some("nginx:alpine"));
    assert_eq!(container.port, Some(80));
    assert_eq!(
        (manifest.resources.memory_mb, manifest.resources.cpu),
        (256, 0.5)
    );
    assert_eq!(manifest.ports, [port(80, 8080)]);
    assert!(manifest.env.is_empty());
    manifest.validate_for_api().unwrap();
}

#[test]
fn the_hello_world_body_translates_with_default_resources() {
    let body = json!({"name":"hello-world","version":"1.0.0","image":"nginx:alpine","replicas":2,
        "network_config":{"ports":{"80/tcp":{"HostPort":"8080"}}}});
    let Translated { manifest, warnings } = translate(body).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(manifest.replicas, 2);
    assert_eq!(
        (manifest.resources.memory_mb, manifest.resources.cpu),
        (DEFAULT_MEMORY_MB, DEFAULT_CPU)
    );
    assert_eq!(manifest.ports, [port(80, 8080)]);
}

#[test]
fn the_python_source_body_is_a_source_deploy() {
    let body = json!({"name":"python-api","version":"1.0.0","source_code_hash":"sha256:abc123...",
        "build_config":{"runtime":"python","version":"3.12"},"replicas":3,
        "resource_requirements":{"memory":"512m","cpu":"1.0"}});
    assert!(is_seed_form(&body));
    let error = translate(body).unwrap_err();
    assert_eq!(error, SeedError::SourceDeploy);
    assert_eq!(error.code(), "source_deploy_unsupported");
    let message = error.to_string();
    assert!(message.contains("not available yet"), "{message}");
    assert!(message.contains("[process]"), "{message}");

    // Without its build_config too.
    let bare = json!({"name":"python-api","version":"1","source_code_hash":"sha256:abc"});
    assert_eq!(translate(bare).unwrap_err(), SeedError::SourceDeploy);
}

#[test]
fn the_database_body_translates_with_a_storage_warning() {
    let body = json!({"name":"database-app","version":"2.1.0","image":"postgres:15-alpine","replicas":1,
        "resource_requirements":{"memory":"1G","cpu":"2.0","storage":"5G"},
        "runtime_config":{"environment":{"POSTGRES_DB":"myapp","POSTGRES_USER":"appuser","POSTGRES_PASSWORD":"secretpassword"}},
        "network_config":{"ports":{"5432/tcp":{"HostPort":"5432"}}}});
    let Translated { manifest, warnings } = translate(body).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("resource_requirements.storage: not applied;"),
        "{warnings:?}"
    );
    assert_eq!(
        (manifest.resources.memory_mb, manifest.resources.cpu),
        (1024, 2.0)
    );
    assert_eq!(manifest.container.as_ref().unwrap().port, Some(5432));
    assert_eq!(manifest.ports, [port(5432, 5432)]);
    let env: Vec<(&str, &str)> = manifest
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("POSTGRES_DB", "myapp"),
            ("POSTGRES_PASSWORD", "secretpassword"),
            ("POSTGRES_USER", "appuser")
        ]
    );
}

#[test]
fn every_field_not_applied_is_a_warning() {
    let body = json!({"name":"web","version":"1","image":"nginx:alpine",
        "target_nodes":["node-1"],
        "owner":"someone", "labels": {"tier": "web"},
        "build_config":{"runtime":"python"},
        "resource_requirements":{"memory":"256m","storage":"5G","gpu":1},
        "network_config":{"ports":{"80":{"HostPort":"8080","HostIp":"10.0.0.1"}},"mode":"bridge"},
        "runtime_config":{"environment":{"A":"1"},"command":["nginx"],"restart":"always"}});
    let Translated { manifest, warnings } = translate(body).unwrap();
    let starts: Vec<&str> = warnings
        .iter()
        .map(|w| w.split(':').next().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "resource_requirements.storage",
            "resource_requirements.gpu",
            "network_config.mode",
            "network_config.ports[\"80\"].HostIp",
            "runtime_config.command",
            "runtime_config.restart",
            "target_nodes",
            "build_config",
            "labels",
            "owner",
        ],
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w == "owner: unknown field, ignored")
    );
    assert_eq!(manifest.env["A"], "1");
    // An empty target list asks for nothing.
    let body = json!({"name":"web","version":"1","image":"nginx","target_nodes":[]});
    assert!(translate(body).unwrap().warnings.is_empty());
}

#[test]
fn warnings_are_bounded() {
    let mut body = json!({"name":"web","version":"1","image":"nginx"});
    for i in 0..100 {
        body[format!("extra{i}")] = json!(i);
    }
    let warnings = translate(body).unwrap().warnings;
    assert_eq!(warnings.len(), MAX_WARNINGS + 1);
    assert_eq!(warnings[MAX_WARNINGS], "and 68 more fields not applied");
}

#[test]
fn memory_sizes_are_powers_of_1024_rounded_up_to_a_mib() {
    for (text, mib) in [
        ("256m", 256),
        ("256M", 256),
        ("300M", 300),
        ("1G", 1024),
        ("1g", 1024),
        ("512Mi", 512),
        ("2Gi", 2048),
        ("2GiB", 2048),
        ("256mb", 256),
        ("256 m", 256),
        (" 64m ", 64),
        ("1024k", 1),
        ("1025k", 2),
        ("1.5g", 1536),
        ("0.5m", 1),
        ("268435456", 256),
        ("268435457", 257),
        ("1", 1),
        ("1b", 1),
        ("1t", 1_048_576),
    ] {
        assert_eq!(quantity::memory_mb(&json!(text)), Ok(mib), "{text}");
    }
    assert_eq!(quantity::memory_mb(&json!(268_435_456)), Ok(256));
    for bad in [
        "lots",
        "",
        "m",
        "256x",
        "256mm",
        "1.2.3g",
        ".5g",
        "5.g",
        "-1g",
        "1e9",
        "0x10",
        "256 MiBs",
        "½g",
        "256\u{0}m",
    ] {
        let reason = quantity::memory_mb(&json!(bad)).unwrap_err();
        assert!(reason.contains("is not a size"), "{bad}: {reason}");
    }
    for zero in [json!("0"), json!("0m"), json!(0), json!("0.0g")] {
        let reason = quantity::memory_mb(&zero).unwrap_err();
        assert!(reason.contains("more than 0"), "{zero}: {reason}");
    }
    for huge in [
        json!("2t"),
        json!("1p"),
        json!("99999999999999999999999999999999999999999999g"),
        json!(u64::MAX),
    ] {
        let reason = quantity::memory_mb(&huge).unwrap_err();
        assert!(reason.starts_with("at most"), "{huge}: {reason}");
    }
    let reason = quantity::memory_mb(&json!(format!("1.{}g", "9".repeat(100)))).unwrap_err();
    assert!(reason.contains("digits after the point"), "{reason}");
    for wrong in [
        json!(-1),
        json!(1.5),
        json!(true),
        json!(["256m"]),
        json!({"m": 256}),
    ] {
        assert!(quantity::memory_mb(&wrong).is_err(), "{wrong}");
    }
}

#[test]
fn cpu_is_cores_as_a_string_or_a_number() {
    for (value, cores) in [
        (json!("0.5"), 0.5),
        (json!("1.0"), 1.0),
        (json!("2"), 2.0),
        (json!(" 1.5 "), 1.5),
        (json!("500m"), 0.5),
        (json!(0.25), 0.25),
        (json!(4), 4.0),
        (json!("1024"), 1024.0),
    ] {
        assert_eq!(quantity::cpu(&value), Ok(cores), "{value}");
    }
    for bad in [
        json!("-1"),
        json!(-0.5),
        json!("0"),
        json!(0),
        json!("1025"),
        json!(1e300),
        json!("inf"),
        json!("NaN"),
        json!("1e3"),
        json!("half"),
        json!(""),
        json!("."),
        json!("1."),
        json!(true),
        json!(null),
        json!({"cores": 1}),
        json!("9".repeat(400)),
    ] {
        let reason = quantity::cpu(&bad).unwrap_err();
        assert!(reason.contains("cores"), "{bad}: {reason}");
    }
}

#[test]
fn bad_quantities_name_their_field() {
    let body = |resources: Value| json!({"name":"web","version":"1","image":"nginx","resource_requirements": resources});
    let reason = invalid_reason(
        body(json!({"memory": "lots"})),
        "resource_requirements.memory",
    );
    assert!(reason.contains("'lots' is not a size"), "{reason}");
    let reason = invalid_reason(body(json!({"cpu": "-1"})), "resource_requirements.cpu");
    assert!(reason.contains("more than 0"), "{reason}");
    let reason = invalid_reason(body(json!({"cpu": -2})), "resource_requirements.cpu");
    assert!(reason.contains("more than 0"), "{reason}");
    // Null keeps the default.
    let translated = translate(body(json!({"memory": null, "cpu": null}))).unwrap();
    assert_eq!(translated.manifest.resources, ResourceSpec::default());
}

#[test]
fn ports_publish_each_host_port_and_the_lowest_is_the_http_port() {
    let body = |ports: Value| json!({"name":"web","version":"1","image":"nginx","network_config":{"ports": ports}});
    let translated = translate(body(json!({
        "8443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "443"}, {"HostPort": 8444}],
        "80": {"HostPort": 8080},
        "80/tcp": {"HostPort": "8080"},
        "9090/TCP": {},
        "9100": {"HostPort": ""},
        "9200": null,
        "9300": []
    })))
    .unwrap();
    assert!(translated.warnings.is_empty(), "{:?}", translated.warnings);
    let manifest = translated.manifest;
    assert_eq!(manifest.container.unwrap().port, Some(80));
    assert_eq!(
        manifest.ports,
        [port(80, 8080), port(8443, 443), port(8443, 8444)]
    );

    // Nothing published: the port is still the app's.
    let translated = translate(body(json!({"3000/tcp": {}}))).unwrap();
    assert_eq!(translated.manifest.container.unwrap().port, Some(3000));
    assert!(translated.manifest.ports.is_empty());
    let translated = translate(body(json!(null))).unwrap();
    assert_eq!(translated.manifest.container.unwrap().port, None);
}

#[test]
fn bad_ports_are_clear_errors() {
    let body = |ports: Value| json!({"name":"web","version":"1","image":"nginx","network_config":{"ports": ports}});
    for (ports, field, says) in [
        (
            json!({"53/udp": {"HostPort": "53"}}),
            "network_config.ports[\"53/udp\"]",
            "only TCP",
        ),
        (
            json!({"80/sctp": {}}),
            "network_config.ports[\"80/sctp\"]",
            "only TCP",
        ),
        (
            json!({"0/tcp": {}}),
            "network_config.ports[\"0/tcp\"]",
            "1 to 65535 (got 0)",
        ),
        (
            json!({"99999": {}}),
            "network_config.ports[\"99999\"]",
            "1 to 65535 (got 99999)",
        ),
        (
            json!({"http": {}}),
            "network_config.ports[\"http\"]",
            "not a port number",
        ),
        (
            json!({"": {}}),
            "network_config.ports[\"\"]",
            "not a port number",
        ),
        (
            json!({"80-90/tcp": {}}),
            "network_config.ports[\"80-90/tcp\"]",
            "not a range",
        ),
        (
            json!({"80": {"HostPort": "0"}}),
            "network_config.ports[\"80\"].HostPort",
            "got 0",
        ),
        (
            json!({"80": {"HostPort": 70000}}),
            "network_config.ports[\"80\"].HostPort",
            "got 70000",
        ),
        (
            json!({"80": {"HostPort": -1}}),
            "network_config.ports[\"80\"].HostPort",
            "got -1",
        ),
        (
            json!({"80": {"HostPort": "8080-8081"}}),
            "network_config.ports[\"80\"].HostPort",
            "not a range",
        ),
        (
            json!({"80": {"HostPort": ["8080"]}}),
            "network_config.ports[\"80\"].HostPort",
            "such as",
        ),
        (
            json!({"80": "8080"}),
            "network_config.ports[\"80\"]",
            "HostPort",
        ),
        (
            json!({"80": [8080]}),
            "network_config.ports[\"80\"]",
            "HostPort",
        ),
        (
            json!({"80": 8080}),
            "network_config.ports[\"80\"]",
            "HostPort",
        ),
        (
            json!(["80/tcp"]),
            "network_config.ports",
            "must be an object",
        ),
        (
            json!("80:8080"),
            "network_config.ports",
            "must be an object",
        ),
    ] {
        let reason = invalid_reason(body(ports.clone()), field);
        assert!(reason.contains(says), "{ports}: {reason}");
    }
    // The same host port twice is the manifest's rule, returned as it is.
    let error = translate(body(
        json!({"80": {"HostPort": "8080"}, "81": {"HostPort": "8080"}}),
    ))
    .unwrap_err();
    assert!(
        matches!(&error, SeedError::Manifest(ManifestError::Invalid { field, .. }) if field == "ports[1].published"),
        "{error:?}"
    );
}

#[test]
fn hostile_bodies_are_clear_errors() {
    let base = || json!({"name":"web","version":"1","image":"nginx"});
    let with = |key: &str, value: Value| {
        let mut body = base();
        body[key] = value;
        body
    };
    for (body, field) in [
        (with("replicas", json!(-1)), "replicas"),
        (with("replicas", json!(1e10)), "replicas"),
        (with("replicas", json!(u64::MAX)), "replicas"),
        (with("replicas", json!("3")), "replicas"),
        (with("replicas", json!(null)), "replicas"),
        (with("name", json!(5)), "name"),
        (with("image", json!({"name": "nginx"})), "image"),
        (
            with("resource_requirements", json!("256m")),
            "resource_requirements",
        ),
        (with("network_config", json!([1, 2])), "network_config"),
        (with("runtime_config", json!("env")), "runtime_config"),
        (with("target_nodes", json!("node-1")), "target_nodes"),
        (with("target_nodes", json!([1])), "target_nodes"),
        (with("build_config", json!(3)), "build_config"),
        (json!({"version":"1","image":"nginx"}), "name"),
        (json!({"name":"web","image":"nginx"}), "version"),
        (json!({"name":"web","version":"1"}), "image"),
        (
            with("source_code_hash", json!("sha256:1")),
            "source_code_hash",
        ),
    ] {
        let error = SeedDeploy::from_value(body.clone()).and_then(|seed| seed.to_manifest());
        match error {
            Err(SeedError::Invalid { field: got, reason }) => {
                assert_eq!(got, field, "{body}: {reason}");
                assert!(!reason.contains('\n'));
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    for (environment, field) in [
        (json!("A=1"), "runtime_config.environment"),
        (
            json!({"A": {"nested": [1, {"junk": null}]}}),
            "runtime_config.environment.A",
        ),
        (json!({"A": null}), "runtime_config.environment.A"),
        (json!(["NOEQUALS"]), "runtime_config.environment[0]"),
        (json!([1]), "runtime_config.environment[0]"),
    ] {
        invalid_reason(
            with("runtime_config", json!({"environment": environment})),
            field,
        );
    }
    // Docker's list form, numbers and booleans are read.
    let env = translate(with(
        "runtime_config",
        json!({"environment": ["A=1", "B=x=y"]}),
    ))
    .unwrap()
    .manifest
    .env;
    assert_eq!((env["A"].as_str(), env["B"].as_str()), ("1", "x=y"));
    let env = translate(with(
        "runtime_config",
        json!({"environment": {"N": 5, "T": true}}),
    ))
    .unwrap()
    .manifest
    .env;
    assert_eq!((env["N"].as_str(), env["T"].as_str()), ("5", "true"));

    // What the manifest refuses comes back as the manifest's error.
    for (body, field) in [
        (with("replicas", json!(5000)), "replicas"),
        (with("name", json!("My_App")), "name"),
        (with("image", json!("")), "container.image"),
        (with("image", json!("NGINX")), "container.image"),
        (
            with("runtime_config", json!({"environment": {"1BAD": "x"}})),
            "env",
        ),
    ] {
        match translate(body.clone()) {
            Err(SeedError::Manifest(ManifestError::Invalid { field: got, .. })) => {
                assert_eq!(got, field, "{body}")
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    // Not an object, not JSON, too large.
    assert!(matches!(
        SeedDeploy::from_value(json!([1, 2])),
        Err(SeedError::Manifest(ManifestError::Parse(_)))
    ));
    assert!(matches!(
        SeedDeploy::from_json(b"{\"name\": "),
        Err(SeedError::Manifest(ManifestError::Parse(_)))
    ));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep = format!(r#"{{"name":"web","version":"1","image":"nginx","x":{deep}}}"#);
    assert!(SeedDeploy::from_json(deep.as_bytes()).is_err());
    let large = vec![b' '; MAX_MANIFEST_BYTES + 1];
    assert!(matches!(
        SeedDeploy::from_json(&large),
        Err(SeedError::Manifest(ManifestError::TooLarge { .. }))
    ));
    // A long, odd key is quoted, cut and escaped: one line.
    let key = format!("\n{}", "k".repeat(500));
    let warnings = translate(with(&key, json!(1))).unwrap().warnings;
    assert!(
        !warnings[0].contains('\n') && warnings[0].len() < 120,
        "{warnings:?}"
    );
}

#[test]
fn seed_form_is_told_from_a_manifest() {
    for seed in [
        json!({"name":"a","version":"1","image":"nginx"}),
        json!({"name":"a","source_code_hash":"x"}),
        json!({"build_config":{}}),
        json!({"resource_requirements":{}}),
        json!({"network_config":{}}),
        json!({"runtime_config":{}}),
        json!({"target_nodes":[]}),
    ] {
        assert!(is_seed_form(&seed), "{seed}");
    }
    for not_seed in [
        json!({"name":"a","version":"1","container":{"image":"nginx"}}),
        json!({"name":"a","version":"1","image":"nginx","container":{"image":"nginx"}}),
        json!({"name":"a","version":"1","image":"nginx","wasm":{}}),
        json!({"name":"a","version":"1","image":"nginx","process":{}}),
        json!({"name":"a","version":"1"}),
        json!({}),
        json!([{"image":"nginx"}]),
        json!("image"),
        json!(null),
    ] {
        assert!(!is_seed_form(&not_seed), "{not_seed}");
    }
}

#[test]
fn a_seed_body_round_trips_through_serde() {
    let body = json!({"name":"web","version":"1","image":"nginx","replicas":2,"extra":{"a":1},
        "resource_requirements":{"memory":"1G","storage":"5G","x":1},
        "network_config":{"ports":{"80/tcp":{"HostPort":"8080"}}}});
    let seed = SeedDeploy::from_value(body.clone()).unwrap();
    assert_eq!(seed.unknown.keys().collect::<Vec<_>>(), ["extra"]);
    assert_eq!(serde_json::to_value(&seed).unwrap(), body);
    let bytes = serde_json::to_vec(&body).unwrap();
    assert_eq!(SeedDeploy::from_json(&bytes).unwrap(), seed);
}

proptest::proptest! {
    #[test]
    fn memory_strings_never_panic(text in ".{0,64}") {
        let _ = quantity::memory_mb(&Value::String(text));
    }

    #[test]
    fn memory_like_strings_never_panic(text in "[0-9. ]{0,48}[kKmMgGtTpPbBiI]{0,4}") {
        if let Ok(mib) = quantity::memory_mb(&Value::String(text.clone())) {
            proptest::prop_assert!((1..=crate::app::MAX_MEMORY_MB).contains(&mib), "{text}: {mib}");
        }
    }

    #[test]
    fn cpu_strings_never_panic(text in ".{0,64}") {
        if let Ok(cores) = quantity::cpu(&Value::String(text)) {
            proptest::prop_assert!(cores > 0.0 && cores <= crate::app::MAX_CPU);
        }
    }

    #[test]
    fn port_keys_and_host_ports_never_panic(key in ".{0,16}", host in ".{0,16}") {
        let body = json!({"name":"web","version":"1","image":"nginx",
            "network_config":{"ports":{key: {"HostPort": host}}}});
        let _ = translate(body);
    }

    #[test]
    fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        if let Ok(seed) = SeedDeploy::from_json(&bytes) {
            let _ = seed.to_manifest();
        }
    }
}
