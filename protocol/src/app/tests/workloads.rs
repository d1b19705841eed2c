//! The workload sections (`[wasm]`, `[container]`, `[process]`) and the blobs they name.

use super::*;

pub(super) fn process_spec() -> ProcessSpec {
    ProcessSpec {
        binary: format!("blake3:{}", "ab".repeat(32)),
        args: vec!["--serve".into()],
        port: None,
    }
}

pub(super) fn process_example() -> Manifest {
    Manifest {
        wasm: None,
        process: Some(process_spec()),
        ..example()
    }
}

#[test]
fn image_names_docker_parses_are_accepted() {
    for image in [
        "nginx",
        "nginx:1.27",
        "library/nginx:1.27-alpine",
        "registry.local:5000/team/app:v1",
        &format!("app@sha256:{}", "ab".repeat(32)),
        &format!("sha256:{}", "cd".repeat(32)),
    ] {
        let mut m = container_example();
        m.container.as_mut().unwrap().image = Some(image.to_owned());
        m.validate().unwrap_or_else(|e| panic!("{image}: {e}"));
    }
}

#[test]
fn a_process_app_parses_with_its_port_defaulting_to_8080() {
    let toml =
        "name = \"p\"\nversion = \"1\"\n[process]\nbinary = \"bin/server\"\nargs = [\"--serve\"]\n";
    let manifest = Manifest::from_toml(toml).unwrap();
    assert_eq!(manifest.kind(), AppKind::Process);
    let process = manifest.process.as_ref().unwrap();
    assert_eq!(
        (process.binary.as_str(), process.port()),
        ("bin/server", 8080)
    );
    let error = manifest.validate_for_api().unwrap_err().to_string();
    assert!(error.contains("process.binary"), "{error}");
    process_example().validate_for_api().unwrap();
    let unknown = "name = \"p\"\nversion = \"1\"\n[process]\nbinary = \"b\"\nshell = true\n";
    assert!(Manifest::from_toml(unknown).is_err());
}

#[test]
fn the_api_wants_hashes_not_paths() {
    let mut manifest = example();
    let err = manifest.validate_for_api().unwrap_err();
    assert_eq!(
        err.to_string(),
        "wasm.module: through the API, paths are not allowed: upload 'hello.wasm' and give its \
         blake3:<hex> hash"
    );
    manifest.wasm.as_mut().unwrap().module = hash_text(1);
    assert_eq!(manifest.validate_for_api(), Ok(()));
    assert_eq!(
        manifest.blobs(),
        [hash_text(1).parse::<BlobHash>().unwrap()]
    );

    let mut manifest = container_example();
    assert_eq!(manifest.validate_for_api(), Ok(()), "an image is no path");
    assert!(manifest.blobs().is_empty());
    let container = manifest.container.as_mut().unwrap();
    container.image = None;
    container.archive = Some("app.tar".into());
    let err = manifest.validate_for_api().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("container.archive: through the API"),
        "{err}"
    );
    manifest.container.as_mut().unwrap().archive = Some(hash_text(2));
    assert_eq!(manifest.validate_for_api(), Ok(()));
    assert_eq!(
        manifest.blobs(),
        [hash_text(2).parse::<BlobHash>().unwrap()]
    );
}

#[test]
fn blob_references_parse() {
    let hash = hash_text(0xcd);
    assert_eq!(
        BlobRef::parse(&hash),
        Ok(BlobRef::Hash(hash.parse().unwrap()))
    );
    for path in [
        "app.wasm",
        "./app.wasm",
        "build/app.wasm",
        "a..b/c",
        ".hidden",
    ] {
        assert_eq!(BlobRef::parse(path), Ok(BlobRef::Path(path)), "{path}");
    }
    for bad in [
        "", "/abs", "\\abs", "c:app", "..", "a/../b", "a\\..\\b", "a\nb", "blake3:",
    ] {
        assert!(BlobRef::parse(bad).is_err(), "{bad:?}");
    }
    assert!(BlobRef::parse(&"a".repeat(MAX_BLOB_PATH_LEN + 1)).is_err());
}

#[test]
fn published_ports_parse_and_are_checked() {
    let toml = "name = \"db\"\nversion = \"1\"\n[container]\nimage = \"postgres:15-alpine\"\n\
                port = 5432\n[[ports]]\ncontainer = 5432\npublished = 15432\n\
                protocol = \"tcp\"\n";
    let manifest = Manifest::from_toml(toml).unwrap();
    assert_eq!(
        manifest.ports,
        vec![PortSpec {
            container: 5432,
            published: 15432,
            protocol: PortProtocol::Tcp,
        }]
    );
    let port = |container, published| PortSpec {
        container,
        published,
        protocol: PortProtocol::Tcp,
    };
    let cases: Vec<(Vec<PortSpec>, &str, &str)> = vec![
        (vec![port(0, 1)], "ports[0].container", "got 0"),
        (vec![port(1, 0)], "ports[0].published", "got 0"),
        (
            vec![port(1, 9000), port(2, 9000)],
            "ports[1].published",
            "published twice",
        ),
        (vec![port(1, 1); MAX_PORTS + 1], "ports", "at most"),
    ];
    for (ports, field, fragment) in cases {
        let m = Manifest {
            ports,
            ..manifest.clone()
        };
        match m.validate() {
            Err(ManifestError::Invalid { field: f, reason }) => {
                assert_eq!(f, field);
                assert!(reason.contains(fragment), "{reason}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    let wasm = Manifest {
        ports: manifest.ports.clone(),
        ..super::example()
    };
    assert!(
        matches!(wasm.validate(), Err(ManifestError::Invalid { field, .. }) if field == "ports")
    );
    assert!(
        Manifest::from_toml(&format!("{toml}protocol2 = 1\n")).is_err(),
        "unknown keys in [[ports]] are refused"
    );
    assert!(Manifest::from_toml(&toml.replace("\"tcp\"", "\"udp\"")).is_err());
}
