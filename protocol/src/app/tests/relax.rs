//! `[container.relax]`: which relaxations a manifest asks for, and their names.

use super::*;

#[test]
fn relaxations_are_named_and_absent_means_hardened() {
    let base = "name = \"a\"\nversion = \"1\"\n[container]\nimage = \"x\"\n";
    let parse = |relax: &str| Manifest::from_toml(&format!("{base}{relax}")).unwrap();
    assert_eq!(parse("").relaxations(), []);
    assert_eq!(parse("").container.unwrap().relax, None);
    // An empty table, or one that restates the defaults, relaxes nothing.
    assert_eq!(parse("[container.relax]\n").relaxations(), []);
    assert_eq!(
        parse("[container.relax]\nwritable_root = false\nno_new_privileges = true\ncapabilities = []\n")
            .relaxations(),
        []
    );
    let all = parse(
        "[container.relax]\nwritable_root = true\nrun_as_root = true\n\
         capabilities = [\"NET_BIND_SERVICE\", \"CHOWN\"]\nno_new_privileges = false\n",
    );
    assert_eq!(all.relaxations(), Relaxation::ALL);
    let names: Vec<String> = all.relaxations().iter().map(|r| r.to_string()).collect();
    assert_eq!(
        names,
        [
            "writable_root",
            "run_as_root",
            "capabilities",
            "new_privileges"
        ]
    );
    for r in Relaxation::ALL {
        assert_eq!(r.as_str().parse::<Relaxation>(), Ok(r));
    }
    assert!("writable_rootfs".parse::<Relaxation>().is_err());
    assert_eq!(example().relaxations(), [], "wasm apps relax nothing");
    // What is left at its default is left out of the JSON, as elsewhere.
    assert_eq!(
        serde_json::to_value(RelaxSpec {
            run_as_root: true,
            ..RelaxSpec::default()
        })
        .unwrap(),
        serde_json::json!({"run_as_root": true})
    );
    let mut limit = container_example();
    let sixteen: Vec<&str> = KNOWN_CAPABILITIES[..MAX_RELAX_CAPABILITIES].to_vec();
    relax_capabilities(&mut limit, &sixteen);
    assert_eq!(limit.validate(), Ok(()));
}
