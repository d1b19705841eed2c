//! Secrets in the placement group: who may set them, a deploy that names an unset one, the roll a
//! changed one starts, and what goes with the app.

use mycel_protocol::{
    placement::RolloutState,
    secrets::{SEAL_RANDOM_BYTES, SecretsKey},
    ticket::MeshSecret,
};

use super::*;
use crate::testing::{NOW_MS, deploy_by, remove_by, signed_by};

fn alive() -> View {
    let node = |id: &str| NodeView {
        id: id.into(),
        state: NodeState::Alive,
        runtimes: [Runtime::Wasm].into(),
        labels: Default::default(),
        memory_mb: 1024,
        cpu_millis: 2000,
        max_instances: None,
        allowed_owners: None,
        relaxations_allowed: Default::default(),
    };
    View {
        nodes: vec![node("a"), node("b")],
        now_ms: NOW_MS,
        dead_grace_ms: 5000,
    }
}

fn with_secret(name: &str) -> Manifest {
    Manifest::from_toml(&format!(
        "name = \"db\"\nversion = \"1\"\nreplicas = 2\nsecrets = [\"{name}\"]\n[wasm]\nmodule = \
         \"blake3:{}\"\n",
        "b".repeat(64)
    ))
    .unwrap()
}

fn set_by(n: u8, app: &str, name: &str, value: &[u8]) -> WriteRequest {
    let key = SecretsKey::derive(&MeshSecret::from_bytes([5; 32]));
    let sealed = key
        .public()
        .seal(app, name, value, [n; SEAL_RANDOM_BYTES])
        .unwrap();
    WriteRequest::SetSecret {
        app: app.into(),
        name: name.into(),
        signed: signed_by(
            n,
            AppAction::SetSecret {
                app: app.into(),
                name: name.into(),
                sealed: sealed.digest(),
            },
        ),
        sealed: Box::new(sealed),
    }
}

fn remove_secret_by(n: u8, app: &str, name: &str) -> WriteRequest {
    WriteRequest::RemoveSecret {
        app: app.into(),
        name: name.into(),
        signed: signed_by(
            n,
            AppAction::RemoveSecret {
                app: app.into(),
                name: name.into(),
            },
        ),
    }
}

fn write(state: &mut PlacementState, request: &WriteRequest) -> Result<(), WriteError> {
    for command in plan_write(state, &alive(), request)? {
        state.try_apply(&command)?;
    }
    Ok(())
}

#[test]
fn a_deploy_needs_its_secrets_set_first_by_its_owner() {
    let mut state = PlacementState::default();
    let missing = write(&mut state, &deploy_by(1, with_secret("password")));
    assert!(
        matches!(&missing, Err(WriteError::MissingSecret { name, .. }) if name == "password"),
        "{missing:?}"
    );
    assert!(state.apps.is_empty(), "a refused deploy changes nothing");
    // Setting a secret of an app nobody owns claims it.
    write(&mut state, &set_by(1, "db", "password", b"one")).unwrap();
    assert_eq!(state.owner_of("db"), Some(crate::testing::key_of(1)));
    assert!(matches!(
        write(&mut state, &set_by(2, "db", "password", b"mine")),
        Err(WriteError::NotOwner { .. })
    ));
    assert!(matches!(
        write(&mut state, &deploy_by(2, with_secret("password"))),
        Err(WriteError::NotOwner { .. })
    ));
    write(&mut state, &deploy_by(1, with_secret("password"))).unwrap();
    assert_eq!(state.instances_of("db").count(), 2);
}

#[test]
fn a_changed_secret_rolls_its_app_and_a_used_one_stays() {
    let mut state = PlacementState::default();
    write(&mut state, &set_by(1, "db", "password", b"one")).unwrap();
    write(&mut state, &deploy_by(1, with_secret("password"))).unwrap();
    let generation = state.apps["db"].generation;
    let before = state.secrets["db"]["password"].sealed.clone();

    write(&mut state, &set_by(1, "db", "password", b"two")).unwrap();
    assert_ne!(state.secrets["db"]["password"].sealed, before);
    assert_eq!(state.apps["db"].generation, generation + 1, "rolled");
    assert_eq!(state.apps["db"].manifest, with_secret("password"));
    let rollout = &state.rollouts["db"];
    assert_eq!(rollout.to_generation, generation + 1);
    assert_ne!(rollout.state, RolloutState::Failed);

    // A secret the app does not use changes nothing else.
    write(&mut state, &set_by(1, "db", "unused", b"x")).unwrap();
    assert_eq!(state.apps["db"].generation, generation + 1);
    // One it uses cannot go; one it does not, can.
    assert!(matches!(
        write(&mut state, &remove_secret_by(1, "db", "password")),
        Err(WriteError::Rejected(_))
    ));
    write(&mut state, &remove_secret_by(1, "db", "unused")).unwrap();
    assert!(!state.secrets["db"].contains_key("unused"));
    assert!(matches!(
        write(&mut state, &remove_secret_by(2, "db", "password")),
        Err(WriteError::NotOwner { .. })
    ));

    // Its secrets go with the app: the name is anyone's again.
    write(&mut state, &remove_by(1, "db")).unwrap();
    assert!(!state.secrets.contains_key("db"));
    write(&mut state, &set_by(2, "db", "password", b"theirs")).unwrap();
}
