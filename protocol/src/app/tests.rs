use super::*;

mod relax;
mod workloads;

use workloads::{process_example, process_spec};

/// The contract's example manifest.
const EXAMPLE_TOML: &str = r#"
name = "hello"            # DNS label: [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?
version = "1.0.0"
replicas = 2              # default 1; 0 is allowed (deployed, nothing running)

[wasm]                    # a wasi:http/proxy component
module = "hello.wasm"     # a path relative to the manifest or "blake3:<64 hex>"

# [container]
# image = "name:tag"
# port = 8080

[env]
GREETING = "hi"

[resources]
memory_mb = 64
cpu = 0.25                # cores

[health]
path = "/"                # HTTP health check, for routing and restarts
"#;

/// The same manifest as the API receives it.
const EXAMPLE_JSON: &str = r#"{
    "name": "hello",
    "version": "1.0.0",
    "replicas": 2,
    "wasm": {"module": "hello.wasm"},
    "env": {"GREETING": "hi"},
    "resources": {"memory_mb": 64, "cpu": 0.25},
    "health": {"path": "/"}
}"#;

fn hash_text(byte: u8) -> String {
    format!("blake3:{}", format!("{byte:02x}").repeat(32))
}

fn example() -> Manifest {
    Manifest::from_toml(EXAMPLE_TOML).unwrap()
}

fn container_example() -> Manifest {
    Manifest {
        wasm: None,
        container: Some(ContainerSpec {
            image: Some("nginx:1.27".into()),
            port: Some(8080),
            ..ContainerSpec::default()
        }),
        ..example()
    }
}

fn rule(key: &str, op: RuleOp, values: &[&str]) -> LabelRuleSpec {
    LabelRuleSpec {
        key: key.into(),
        op,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

#[test]
fn the_contract_example_parses_from_toml_and_json() {
    let manifest = example();
    assert_eq!(manifest.name, "hello");
    assert_eq!(manifest.version, "1.0.0");
    assert_eq!(manifest.replicas, 2);
    assert_eq!(
        manifest.wasm,
        Some(WasmSpec {
            module: "hello.wasm".into()
        })
    );
    assert_eq!(manifest.container, None);
    assert_eq!(manifest.env["GREETING"], "hi");
    assert_eq!(manifest.memory_mb(), 64);
    assert_eq!(manifest.cpu_millis(), 250);
    assert_eq!(manifest.health.as_ref().unwrap().path, "/");
    assert!(manifest.placement.is_empty());
    assert_eq!(manifest.kind(), AppKind::Wasm);
    assert!(manifest.blobs().is_empty());

    assert_eq!(
        Manifest::from_json(EXAMPLE_JSON.as_bytes()).unwrap(),
        manifest
    );
}

#[test]
fn defaults_are_applied() {
    let manifest =
        Manifest::from_toml("name = \"a\"\nversion = \"1\"\n[container]\nimage = \"busybox\"\n")
            .unwrap();
    assert_eq!(manifest.replicas, 1);
    assert_eq!(manifest.resources, ResourceSpec::default());
    assert_eq!(manifest.memory_mb(), DEFAULT_MEMORY_MB);
    assert_eq!(manifest.cpu_millis(), 100);
    assert!(manifest.env.is_empty());
    assert_eq!(manifest.health, None);
    assert_eq!(manifest.placement, PlacementSpec::default());
    let container = manifest.container.as_ref().unwrap();
    assert_eq!((container.port, container.command.len()), (None, 0));
    assert_eq!(manifest.kind(), AppKind::Container);

    // A partial table keeps the defaults of what it omits; an integer is a valid cpu.
    let manifest = Manifest::from_toml(
        "name = \"a\"\nversion = \"1\"\nreplicas = 0\n[wasm]\nmodule = \"a.wasm\"\n\
         [resources]\ncpu = 2\n",
    )
    .unwrap();
    assert_eq!(manifest.replicas, 0);
    assert_eq!(manifest.memory_mb(), DEFAULT_MEMORY_MB);
    assert_eq!(manifest.cpu_millis(), 2000);
}

#[test]
fn placement_rules_parse() {
    let manifest = Manifest::from_toml(
        r#"
name = "api"
version = "2.0.0-rc.1+build.5"
[container]
archive = "images/api.tar"
command = ["/api", "--verbose"]
[[placement.required]]
key = "zone"
op = "in"
values = ["eu-1", "eu-2"]
[[placement.preferred]]
key = "gpu"
op = "exists"
[[placement.preferred]]
key = "tier"
op = "not_in"
values = ["spot"]
[placement]
strategy = "binpack"
"#,
    )
    .unwrap();
    assert_eq!(
        manifest.placement,
        PlacementSpec {
            required: vec![rule("zone", RuleOp::In, &["eu-1", "eu-2"])],
            preferred: vec![
                rule("gpu", RuleOp::Exists, &[]),
                rule("tier", RuleOp::NotIn, &["spot"]),
            ],
            strategy: Some(Strategy::Binpack),
        }
    );
    assert_eq!(manifest.container.unwrap().command, ["/api", "--verbose"]);
}

#[test]
fn json_round_trips() {
    let mut manifest = container_example();
    manifest.container = Some(ContainerSpec {
        image: None,
        archive: Some(hash_text(0xab)),
        port: Some(3000),
        command: vec!["/srv".into()],
        relax: Some(RelaxSpec {
            writable_root: true,
            capabilities: vec!["NET_BIND_SERVICE".into()],
            no_new_privileges: false,
            ..RelaxSpec::default()
        }),
    });
    manifest.placement = PlacementSpec {
        required: vec![rule("zone", RuleOp::In, &["eu-1"])],
        preferred: vec![],
        strategy: Some(Strategy::Spread),
    };
    let json = serde_json::to_vec(&manifest).unwrap();
    assert_eq!(Manifest::from_json(&json).unwrap(), manifest);

    // What is empty is left out, so the JSON reads like the file it came from.
    let value = serde_json::to_value(example()).unwrap();
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "env",
            "health",
            "name",
            "replicas",
            "resources",
            "version",
            "wasm"
        ]
    );
    assert_eq!(
        serde_json::to_value(PlacementSpec {
            strategy: Some(Strategy::Spread),
            ..PlacementSpec::default()
        })
        .unwrap(),
        serde_json::json!({"strategy": "spread"})
    );
}

#[test]
fn unknown_fields_are_rejected_everywhere() {
    for (where_, text) in [
        (
            "top",
            "name = \"a\"\nversion = \"1\"\nreplica = 2\n[wasm]\nmodule = \"a.wasm\"\n",
        ),
        (
            "wasm",
            "name = \"a\"\nversion = \"1\"\n[wasm]\nmodule = \"a.wasm\"\nmodul = \"b\"\n",
        ),
        (
            "container",
            "name = \"a\"\nversion = \"1\"\n[container]\nimage = \"x\"\nports = 1\n",
        ),
        (
            "relax",
            "name = \"a\"\nversion = \"1\"\n[container]\nimage = \"x\"\n[container.relax]\n\
             writable_rootfs = true\n",
        ),
        (
            "resources",
            "name = \"a\"\nversion = \"1\"\n[wasm]\nmodule = \"a.wasm\"\n[resources]\nmemory = 1\n",
        ),
        (
            "health",
            "name = \"a\"\nversion = \"1\"\n[wasm]\nmodule = \"a.wasm\"\n[health]\npath = \"/\"\nport = 1\n",
        ),
        (
            "placement",
            "name = \"a\"\nversion = \"1\"\n[wasm]\nmodule = \"a.wasm\"\n[placement]\nstrategie = \"spread\"\n",
        ),
        (
            "rule",
            "name = \"a\"\nversion = \"1\"\n[wasm]\nmodule = \"a.wasm\"\n[[placement.required]]\n\
             key = \"k\"\nop = \"exists\"\nvalue = \"v\"\n",
        ),
    ] {
        let err = Manifest::from_toml(text).unwrap_err();
        assert!(
            matches!(&err, ManifestError::Parse(m) if m.contains("unknown field") && m.starts_with("line ")),
            "{where_}: {err}"
        );
        assert!(!err.to_string().contains('\n'), "{where_}: one line: {err}");
    }
    let err = Manifest::from_json(br#"{"name":"a","version":"1","wasm":{"module":"a"},"x":1}"#)
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `x`"), "{err}");
    assert_eq!(err.code(), "invalid_manifest");
}

#[test]
fn bad_values_and_syntax_do_not_parse() {
    for text in [
        "name = \"a\"\nversion = \"1\"\nreplicas = -1\n[wasm]\nmodule = \"a\"\n",
        "name = \"a\"\nversion = \"1\"\n[container]\nimage = \"x\"\nport = 70000\n",
        "name = \"a\"\nversion = \"1\"\n[wasm]\nmodule = \"a\"\n[placement]\nstrategy = \"random\"\n",
        "name = \"a\"\nversion = \"1\"\n[wasm]\nmodule = \"a\"\n[[placement.required]]\nkey = \"k\"\nop = \"In\"\nvalues = [\"v\"]\n",
        "version = \"1\"\n[wasm]\nmodule = \"a\"\n",
        "name = \"a\"\nversion = \"1\"\n[wasm]\n",
        "name = \"a\nversion",
    ] {
        let err = Manifest::from_toml(text).unwrap_err();
        assert!(matches!(err, ManifestError::Parse(_)), "{text}: {err}");
    }
    assert!(matches!(
        Manifest::from_json(b"{\"name\": "),
        Err(ManifestError::Parse(_))
    ));
}

#[test]
fn oversized_documents_are_refused_before_parsing() {
    // Not even valid TOML or JSON: the size is all that is looked at.
    let big = "#".repeat(MAX_MANIFEST_BYTES + 1);
    let expected = ManifestError::TooLarge {
        size: MAX_MANIFEST_BYTES + 1,
        max: MAX_MANIFEST_BYTES,
    };
    assert_eq!(Manifest::from_json(big.as_bytes()).unwrap_err(), expected);
    assert_eq!(Manifest::from_toml(&big).unwrap_err(), expected);
}

#[test]
fn each_rule_rejects_with_a_message_naming_the_field() {
    type Break = fn(&mut Manifest);
    let cases: &[(Break, &str, &str)] = &[
        (|m| m.name = String::new(), "name", "DNS label"),
        (|m| m.name = "Hello".into(), "name", "got 'Hello'"),
        (|m| m.name = "-a".into(), "name", "DNS label"),
        (|m| m.name = "a-".into(), "name", "DNS label"),
        (|m| m.name = "a_b".into(), "name", "DNS label"),
        (|m| m.name = "a".repeat(64), "name", "DNS label"),
        (|m| m.version = String::new(), "version", "1 to 64"),
        (
            |m| m.version = "1.0 beta".into(),
            "version",
            "got '1.0 beta'",
        ),
        (|m| m.version = "1".repeat(65), "version", "1 to 64"),
        (|m| m.replicas = 5000, "replicas", "at most 1000 (got 5000)"),
        (
            |m| m.container = container_example().container,
            "workload",
            "got more",
        ),
        (
            |m| m.process = process_example().process,
            "workload",
            "got more",
        ),
        (|m| m.wasm = None, "workload", "got none"),
        (
            |m| {
                *m = Manifest {
                    process: Some(ProcessSpec {
                        port: Some(0),
                        ..process_spec()
                    }),
                    ..process_example()
                }
            },
            "process.port",
            "got 0",
        ),
        (
            |m| {
                *m = Manifest {
                    process: Some(ProcessSpec {
                        binary: "blake3:12".into(),
                        ..process_spec()
                    }),
                    ..process_example()
                }
            },
            "process.binary",
            "64",
        ),
        (
            |m| {
                *m = Manifest {
                    process: Some(ProcessSpec {
                        args: vec!["ok".into(), "a\0b".into()],
                        ..process_spec()
                    }),
                    ..process_example()
                }
            },
            "process.args[1]",
            "NUL",
        ),
        (
            |m| m.wasm.as_mut().unwrap().module = String::new(),
            "wasm.module",
            "empty",
        ),
        (
            |m| m.wasm.as_mut().unwrap().module = "/etc/app.wasm".into(),
            "wasm.module",
            "not absolute",
        ),
        (
            |m| m.wasm.as_mut().unwrap().module = "C:\\app.wasm".into(),
            "wasm.module",
            "not absolute",
        ),
        (
            |m| m.wasm.as_mut().unwrap().module = "build/../../app.wasm".into(),
            "wasm.module",
            "'..'",
        ),
        (
            |m| m.wasm.as_mut().unwrap().module = "blake3:abc".into(),
            "wasm.module",
            "not a blob hash",
        ),
        (
            |m| {
                m.wasm.as_mut().unwrap().module =
                    hash_text(0xab).to_uppercase().replace("BLAKE3", "blake3")
            },
            "wasm.module",
            "lowercase",
        ),
        (
            |m| {
                *m = Manifest {
                    container: Some(ContainerSpec::default()),
                    ..container_example()
                }
            },
            "container",
            "got neither",
        ),
        (
            |m| m.container.as_mut().unwrap().archive = Some("a.tar".into()),
            "container",
            "got both",
        ),
        (
            |m| m.container.as_mut().unwrap().image = Some(String::new()),
            "container.image",
            "1 to 255",
        ),
        (
            |m| m.container.as_mut().unwrap().image = Some("x".repeat(256)),
            "container.image",
            "got 256",
        ),
        (
            |m| m.container.as_mut().unwrap().image = Some("nginx latest".into()),
            "container.image",
            "spaces",
        ),
        (
            |m| m.container.as_mut().unwrap().image = Some("Nginx:1.27".into()),
            "container.image",
            "not a valid image name",
        ),
        (
            |m| m.container.as_mut().unwrap().image = Some("nginx::1".into()),
            "container.image",
            "not a valid image",
        ),
        (
            |m| m.container.as_mut().unwrap().image = Some("nginx@md5:12".into()),
            "container.image",
            "digest",
        ),
        (
            |m| {
                *m = Manifest {
                    container: Some(ContainerSpec {
                        archive: Some("../a.tar".into()),
                        ..ContainerSpec::default()
                    }),
                    ..container_example()
                }
            },
            "container.archive",
            "'..'",
        ),
        (
            |m| m.container.as_mut().unwrap().port = Some(0),
            "container.port",
            "1 to 65535",
        ),
        (
            |m| m.container.as_mut().unwrap().command = vec!["a".into(); 65],
            "container.command",
            "at most 64 arguments (got 65)",
        ),
        (
            |m| m.container.as_mut().unwrap().command = vec!["a\0b".into()],
            "container.command[0]",
            "NUL",
        ),
        (
            |m| relax_capabilities(m, &["NET_BIND_SERVICE"; 17]),
            "container.relax.capabilities",
            "at most 16 capabilities (got 17)",
        ),
        (
            |m| relax_capabilities(m, &["CHOWN", "CAP_NET_ADMIN"]),
            "container.relax.capabilities[1]",
            "write 'NET_ADMIN': uppercase, without CAP_ (got 'CAP_NET_ADMIN')",
        ),
        (
            |m| relax_capabilities(m, &["net_raw"]),
            "container.relax.capabilities[0]",
            "write 'NET_RAW'",
        ),
        (
            |m| relax_capabilities(m, &["ALL"]),
            "container.relax.capabilities[0]",
            "name each capability",
        ),
        (
            |m| relax_capabilities(m, &["SYS_EVERYTHING"]),
            "container.relax.capabilities[0]",
            "'SYS_EVERYTHING' is not a Linux capability",
        ),
        (
            |m| relax_capabilities(m, &["KILL", "CHOWN", "KILL"]),
            "container.relax.capabilities[2]",
            "'KILL' is listed twice",
        ),
        (
            |m| m.env = (0..129).map(|i| (format!("V{i}"), String::new())).collect(),
            "env",
            "at most 128 variables (got 129)",
        ),
        (
            |m| _ = m.env.insert("1ABC".into(), "x".into()),
            "env",
            "'1ABC' is not a variable name",
        ),
        (
            |m| _ = m.env.insert("MY-VAR".into(), "x".into()),
            "env",
            "not a variable name",
        ),
        (
            |m| _ = m.env.insert(String::new(), "x".into()),
            "env",
            "not a variable name",
        ),
        (
            |m| _ = m.env.insert("A".repeat(129), "x".into()),
            "env",
            "not a variable name",
        ),
        (
            |m| _ = m.env.insert("BIG".into(), "x".repeat(4097)),
            "env.BIG",
            "at most 4096 bytes (got 4097)",
        ),
        (
            |m| _ = m.env.insert("NUL".into(), "\0".into()),
            "env.NUL",
            "NUL",
        ),
        (
            |m| m.resources.memory_mb = 0,
            "resources.memory_mb",
            "1 to 1048576 (got 0)",
        ),
        (
            |m| m.resources.memory_mb = MAX_MEMORY_MB + 1,
            "resources.memory_mb",
            "1 to 1048576",
        ),
        (|m| m.resources.cpu = 0.0, "resources.cpu", "more than 0"),
        (|m| m.resources.cpu = -1.0, "resources.cpu", "(got -1)"),
        (
            |m| m.resources.cpu = 1024.5,
            "resources.cpu",
            "at most 1024 cores",
        ),
        (|m| m.resources.cpu = f64::NAN, "resources.cpu", "got NaN"),
        (
            |m| m.resources.cpu = f64::INFINITY,
            "resources.cpu",
            "more than 0",
        ),
        (
            |m| {
                m.health = Some(HealthSpec {
                    path: "healthz".into(),
                })
            },
            "health.path",
            "start with '/'",
        ),
        (
            |m| {
                m.health = Some(HealthSpec {
                    path: "/a b".into(),
                })
            },
            "health.path",
            "spaces",
        ),
        (
            |m| {
                m.health = Some(HealthSpec {
                    path: "/a\u{7f}".into(),
                })
            },
            "health.path",
            "control",
        ),
        (
            |m| {
                m.health = Some(HealthSpec {
                    path: format!("/{}", "a".repeat(1024)),
                })
            },
            "health.path",
            "at most 1024 bytes",
        ),
        (
            |m| m.placement.required = vec![rule("zone", RuleOp::In, &["eu"]); 33],
            "placement.required",
            "at most 32 rules (got 33)",
        ),
        (
            |m| m.placement.preferred = vec![rule("zone", RuleOp::Exists, &[]); 33],
            "placement.preferred",
            "at most 32 rules",
        ),
        (
            |m| m.placement.required = vec![rule("zone", RuleOp::In, &[])],
            "placement.required[0].values",
            "'in' needs at least one value",
        ),
        (
            |m| m.placement.preferred = vec![rule("zone", RuleOp::NotIn, &[])],
            "placement.preferred[0].values",
            "'not_in' needs at least one value",
        ),
        (
            |m| m.placement.required = vec![rule("zone", RuleOp::Exists, &["eu"])],
            "placement.required[0].values",
            "'exists' takes no values (got 1)",
        ),
        (
            |m| m.placement.required = vec![rule("", RuleOp::Exists, &[])],
            "placement.required[0].key",
            "1 to 63",
        ),
        (
            |m| m.placement.required = vec![rule("zone id", RuleOp::Exists, &[])],
            "placement.required[0].key",
            "got 'zone id'",
        ),
        (
            |m| m.placement.required = vec![rule(&"k".repeat(64), RuleOp::Exists, &[])],
            "placement.required[0].key",
            "1 to 63",
        ),
        (
            |m| m.placement.required = vec![rule("zone", RuleOp::In, &["eu", ""])],
            "placement.required[0].values[1]",
            "1 to 63",
        ),
        (
            |m| m.placement.required = vec![rule("zone", RuleOp::In, &["eu*"])],
            "placement.required[0].values[0]",
            "got 'eu*'",
        ),
        (
            |m| {
                m.placement.required = vec![LabelRuleSpec {
                    key: "k".into(),
                    op: RuleOp::In,
                    values: vec!["v".into(); 33],
                }]
            },
            "placement.required[0].values",
            "at most 32 values",
        ),
    ];
    for &(break_it, field, reason_part) in cases {
        let mut manifest = if field.starts_with("container") {
            container_example()
        } else {
            example()
        };
        break_it(&mut manifest);
        let err = manifest.validate().unwrap_err();
        let message = err.to_string();
        match &err {
            ManifestError::Invalid { field: got, .. } => assert_eq!(got, field, "{message}"),
            other => panic!("expected Invalid for {field}, got {other:?}"),
        }
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
        assert!(
            message.contains(reason_part),
            "{field}: '{message}' lacks '{reason_part}'"
        );
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(err.code(), "invalid_manifest");
        // The parsers apply the same rules.
        let json = serde_json::to_vec(&manifest).unwrap();
        if !message.contains("NaN") && !message.contains("inf") {
            assert_eq!(Manifest::from_json(&json).unwrap_err(), err);
        }
    }
}

fn relax_capabilities(manifest: &mut Manifest, names: &[&str]) {
    manifest.container.as_mut().unwrap().relax = Some(RelaxSpec {
        capabilities: names.iter().map(|n| n.to_string()).collect(),
        ..RelaxSpec::default()
    });
}

#[test]
fn values_at_the_limits_are_accepted() {
    let mut manifest = container_example();
    manifest.name = format!("a{}9", "-".repeat(61));
    manifest.version = "v".repeat(64);
    manifest.replicas = MAX_REPLICAS;
    manifest.env = (0..MAX_ENV_VARS)
        .map(|i| (format!("_V{i}"), "x".repeat(MAX_ENV_VALUE_BYTES)))
        .collect();
    manifest
        .env
        .insert("A".repeat(MAX_ENV_KEY_LEN), String::new());
    manifest.env.pop_last();
    manifest.resources = ResourceSpec {
        memory_mb: MAX_MEMORY_MB,
        cpu: MAX_CPU,
    };
    manifest.health = Some(HealthSpec {
        path: format!("/{}", "a".repeat(MAX_HEALTH_PATH_LEN - 1)),
    });
    manifest.placement.required =
        vec![rule(&"k".repeat(MAX_LABEL_LEN), RuleOp::In, &["a./_-Z9"]); MAX_RULES];
    let container = manifest.container.as_mut().unwrap();
    container.image = Some("x".repeat(MAX_IMAGE_LEN));
    container.port = Some(u16::MAX);
    container.command = vec!["a".repeat(MAX_ARG_BYTES); MAX_COMMAND_ARGS];
    assert_eq!(manifest.validate(), Ok(()));

    let mut manifest = example();
    manifest.name = "0".into();
    manifest.replicas = 0;
    manifest.resources.cpu = 0.001;
    manifest.wasm.as_mut().unwrap().module = "./build/app-v1.wasm".into();
    assert_eq!(manifest.validate(), Ok(()));
}

#[test]
fn cpu_millis_rounds_up_without_float_noise() {
    let mut manifest = example();
    for (cpu, millis) in [
        (0.25, 250),
        (0.1, 100),
        (0.29, 290),
        (0.57, 570),
        (1.0, 1000),
        (0.0001, 1),
        (1.0005, 1001),
        (1024.0, 1_024_000),
    ] {
        manifest.resources.cpu = cpu;
        assert_eq!(manifest.cpu_millis(), millis, "{cpu}");
    }
}

#[test]
fn enums_use_their_wire_names() {
    assert_eq!(serde_json::to_string(&RuleOp::NotIn).unwrap(), "\"not_in\"");
    for op in [RuleOp::In, RuleOp::NotIn, RuleOp::Exists] {
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            format!("\"{}\"", op.as_str())
        );
    }
    assert_eq!(
        serde_json::to_string(&Strategy::Binpack).unwrap(),
        "\"binpack\""
    );
    for kind in [AppKind::Wasm, AppKind::Container] {
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
    }
}

#[test]
fn messages_quote_input_safely() {
    let mut manifest = example();
    manifest.name = format!("{}\n{}", "x".repeat(10), "y".repeat(100));
    let message = manifest.validate().unwrap_err().to_string();
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.contains("\\n") && message.contains('…'),
        "{message}"
    );
}
