//! The owner rule, as the leader plans and as every replica applies.

use std::collections::{BTreeMap, BTreeSet};

use mycel_protocol::{
    Keypair, Runtime,
    api::InstanceState,
    app::Manifest,
    ownership::{AppAction, MAX_SKEW_MS, OwnerKey, SignedRequest},
    placement::{AppRecord, Authorized, Command, Instance, WriteError, WriteRequest},
};
use mycel_scheduler::{NodeState, NodeView};

use super::*;
use crate::{
    plan::{View, plan_write},
    state::PlacementState,
    testing::{NOW_MS, deploy_by, key_of, remove_by, scale_by, signed_by, user},
};

fn view() -> View {
    let node = |id: &str| NodeView {
        id: id.into(),
        state: NodeState::Alive,
        runtimes: BTreeSet::from([Runtime::Wasm]),
        labels: BTreeMap::new(),
        memory_mb: 4096,
        cpu_millis: 4000,
        max_instances: None,
        allowed_owners: None,
        relaxations_allowed: BTreeSet::new(),
    };
    View {
        nodes: vec![node("a"), node("b")],
        now_ms: NOW_MS,
        dead_grace_ms: 5000,
    }
}

fn manifest(name: &str, version: &str, replicas: u32) -> Manifest {
    Manifest::from_toml(&format!(
        "name = \"{name}\"\nversion = \"{version}\"\nreplicas = {replicas}\n[wasm]\n\
         module = \"blake3:{}\"\n",
        "b".repeat(64)
    ))
    .unwrap()
}

/// Plans `request` on the leader's state and applies its entries to every replica; answers the
/// leader's verdict.
fn write(replicas: &mut [PlacementState], request: &WriteRequest) -> Result<(), WriteError> {
    let commands = plan_write(&replicas[0], &view(), request)?;
    for replica in replicas.iter_mut() {
        for command in &commands {
            replica.try_apply(command)?;
        }
    }
    Ok(())
}

/// Three replicas holding `web` 1.0.0 with 2 replicas, deployed by user 1.
fn deployed() -> Vec<PlacementState> {
    let mut replicas = vec![PlacementState::default(); 3];
    write(&mut replicas, &deploy_by(1, manifest("web", "1.0.0", 2))).unwrap();
    replicas
}

#[test]
fn the_first_deployer_owns_the_app_and_may_change_it() {
    let mut replicas = deployed();
    assert_eq!(replicas[0].owner_of("web"), Some(key_of(1)));
    write(&mut replicas, &scale_by(1, "web", 3)).unwrap();
    write(&mut replicas, &deploy_by(1, manifest("web", "2.0.0", 3))).unwrap();
    assert_eq!(replicas[0].apps["web"].manifest.version, "2.0.0");
    assert_eq!(replicas[0].apps["web"].manifest.replicas, 3);
    write(&mut replicas, &remove_by(1, "web")).unwrap();
    assert!(replicas[0].apps.is_empty());
    assert_eq!(replicas[0].owner_of("web"), None);
    // Once stopped, the name is free: another key deploys it and owns it.
    write(&mut replicas, &deploy_by(2, manifest("web", "9.0.0", 1))).unwrap();
    assert_eq!(replicas[0].owner_of("web"), Some(key_of(2)));
    assert!(replicas.iter().all(|r| *r == replicas[0]));
}

#[test]
fn another_key_is_refused_and_changes_nothing() {
    let mut replicas = deployed();
    let before = replicas[0].clone();
    for request in [
        scale_by(2, "web", 5),
        remove_by(2, "web"),
        deploy_by(2, manifest("web", "6.6.6", 1)),
    ] {
        let refused = write(&mut replicas, &request);
        assert_eq!(
            refused,
            Err(WriteError::NotOwner {
                app: "web".into(),
                owner: key_of(1),
                signer: key_of(2),
            }),
            "{request:?}"
        );
        assert_eq!(refused.unwrap_err().code(), "not_owner");
        for replica in &replicas {
            assert_eq!(*replica, before);
        }
    }
}

/// The entry a leader that skipped its own check would commit: every replica refuses it alike.
#[test]
fn every_replica_refuses_an_entry_the_owner_did_not_sign() {
    let replicas = deployed();
    let leader_view = view();
    // A leader plans user 2's scale on a state where user 2 owns the app...
    let mut elsewhere = vec![PlacementState::default()];
    write(&mut elsewhere, &deploy_by(2, manifest("web", "1.0.0", 2))).unwrap();
    let commands = plan_write(&elsewhere[0], &leader_view, &scale_by(2, "web", 7)).unwrap();
    // ...and the replicas, where user 1 owns it, apply it.
    for mut replica in replicas.clone() {
        let before = replica.clone();
        for command in &commands {
            assert!(matches!(
                replica.try_apply(command),
                Err(WriteError::NotOwner { .. })
            ));
        }
        assert_eq!(replica, before);
    }
}

#[test]
fn an_entry_must_do_exactly_what_was_signed() {
    let mut replicas = deployed();
    let before = replicas[0].clone();
    let record = before.apps["web"].clone();
    let instances: Vec<Instance> = before.instances_of("web").cloned().collect();
    let auth = |action: AppAction| {
        Some(Box::new(Authorized {
            request: *signed_by(1, action),
            accepted_at_ms: NOW_MS,
        }))
    };
    let scale_to_3 = AppAction::Scale {
        app: "web".into(),
        replicas: 3,
    };
    let mut other_version = record.clone();
    other_version.manifest.version = "6.6.6".into();
    other_version.manifest.replicas = 3;
    let mut five = record.clone();
    five.manifest.replicas = 5;
    let mut other_app = record.clone();
    other_app.manifest.name = "api".into();
    let forged = [
        // A scale's signature carrying a new version.
        (other_version, auth(scale_to_3.clone())),
        // A scale to 3 applied as a scale to 5.
        (five, auth(scale_to_3)),
        // The owner's deploy of web applied to another app.
        (
            other_app,
            auth(AppAction::Deploy {
                app: "web".into(),
                manifest: mycel_protocol::ownership::manifest_digest(&record.manifest),
            }),
        ),
        // A stop's signature carrying a deploy.
        (record.clone(), auth(AppAction::Stop { app: "web".into() })),
    ];
    for (app, auth) in forged {
        let command = Command::PutApp {
            app: Box::new(app),
            instances: instances.clone(),
            auth,
            rollout: None,
        };
        for replica in &mut replicas {
            assert!(
                matches!(
                    replica.try_apply(&command),
                    Err(WriteError::BadSignature(_))
                ),
                "{command:?}"
            );
            assert_eq!(*replica, before);
        }
    }
    // An owned app takes no unsigned change.
    for command in [
        Command::PutApp {
            app: Box::new(record),
            instances,
            auth: None,
            rollout: None,
        },
        Command::RemoveApp {
            name: "web".into(),
            auth: None,
            purge: false,
            force: false,
        },
    ] {
        for replica in &mut replicas {
            assert!(replica.try_apply(&command).is_err());
            assert_eq!(*replica, before);
        }
    }
}

#[test]
fn forged_signatures_are_refused() {
    let mut replicas = deployed();
    let before = replicas[0].clone();
    // User 2 presents user 1's key with its own signature.
    let mut forged = *signed_by(
        2,
        AppAction::Scale {
            app: "web".into(),
            replicas: 9,
        },
    );
    forged.key = key_of(1);
    let request = WriteRequest::Scale {
        name: "web".into(),
        replicas: 9,
        signed: Box::new(forged),
    };
    let refused = write(&mut replicas, &request).unwrap_err();
    assert_eq!(refused.code(), "bad_signature", "{refused}");
    // A valid signature for another replica count.
    let mut mismatched = scale_by(1, "web", 4);
    if let WriteRequest::Scale { replicas: n, .. } = &mut mismatched {
        *n = 40;
    }
    assert_eq!(
        write(&mut replicas, &mismatched).unwrap_err().code(),
        "bad_signature"
    );
    assert!(replicas.iter().all(|r| *r == before));
}

#[test]
fn stale_and_replayed_requests_are_refused() {
    let mut replicas = deployed();
    let before = replicas[0].clone();
    let signed_at = |issued_at_ms: u64| WriteRequest::Scale {
        name: "web".into(),
        replicas: 4,
        signed: Box::new(
            SignedRequest::sign(
                &user(1),
                issued_at_ms,
                AppAction::Scale {
                    app: "web".into(),
                    replicas: 4,
                },
            )
            .unwrap(),
        ),
    };
    for issued in [NOW_MS - MAX_SKEW_MS - 1, NOW_MS + MAX_SKEW_MS + 1] {
        let refused = write(&mut replicas, &signed_at(issued)).unwrap_err();
        assert_eq!(refused.code(), "stale_request", "{refused}");
    }
    assert!(replicas.iter().all(|r| *r == before));

    let scale = scale_by(1, "web", 4);
    write(&mut replicas, &scale).unwrap();
    let after = replicas[0].clone();
    assert_eq!(
        write(&mut replicas, &scale).unwrap_err().code(),
        "stale_request"
    );
    // Even after the app was stopped and deployed again by its owner.
    write(&mut replicas, &remove_by(1, "web")).unwrap();
    write(&mut replicas, &deploy_by(1, manifest("web", "1.0.0", 1))).unwrap();
    assert_eq!(
        write(&mut replicas, &scale).unwrap_err().code(),
        "stale_request"
    );
    assert_ne!(replicas[0], after);
}

#[test]
fn old_replay_guards_are_forgotten() {
    let mut owners = Owners::default();
    let accept = |owners: &mut Owners, app: &str, issued_at_ms: u64| {
        owners.accept(&Authorized {
            request: SignedRequest::sign(
                &user(1),
                issued_at_ms,
                AppAction::Stop { app: app.into() },
            )
            .unwrap(),
            accepted_at_ms: issued_at_ms,
        });
    };
    accept(&mut owners, "a", NOW_MS);
    accept(&mut owners, "b", NOW_MS + 2 * MAX_SKEW_MS);
    assert_eq!(owners.latest.len(), 2);
    accept(&mut owners, "c", NOW_MS + 2 * MAX_SKEW_MS + 1);
    let left: Vec<&str> = owners.latest.keys().map(|(_, app)| app.as_str()).collect();
    assert_eq!(left, ["b", "c"]);
}

#[test]
fn apps_from_before_ownership_belong_to_the_node_that_took_them() {
    let node = Keypair::ed25519_from_bytes([9; 32]).unwrap();
    let node_key = OwnerKey::of(&node).unwrap();
    let legacy = |name: &str, deployed_by: String| Command::PutApp {
        app: Box::new(AppRecord {
            manifest: manifest(name, "1.0.0", 1),
            deployed_by,
            deployed_at_ms: 1,
            generation: 1,
            unplaced: None,
            scale: None,
        }),
        instances: vec![Instance {
            id: Instance::id_for(name, 1, 0),
            app: name.into(),
            replica: 0,
            node: "a".into(),
            state: InstanceState::Running,
            since_ms: 1,
            error: None,
        }],
        auth: None,
        rollout: None,
    };
    let mut replicas = vec![PlacementState::default(); 2];
    for replica in &mut replicas {
        replica
            .try_apply(&legacy("old", node.public().to_peer_id().to_string()))
            .unwrap();
        replica
            .try_apply(&legacy("odd", "not-a-peer-id".into()))
            .unwrap();
    }
    assert_eq!(replicas[0].owner_of("old"), Some(node_key));
    assert_eq!(replicas[0].owner_of("odd"), None);

    // A user's key may not take over the node's app...
    assert!(matches!(
        write(&mut replicas, &scale_by(1, "old", 2)),
        Err(WriteError::NotOwner { owner, .. }) if owner == node_key
    ));
    // ...the node's key may change it, and then owns it on the record...
    write(&mut replicas, &scale_by(9, "old", 2)).unwrap();
    assert_eq!(replicas[0].owners.apps.get("old"), Some(&node_key));
    // ...and an app whose deployer names no key goes to the first signed change.
    write(&mut replicas, &scale_by(2, "odd", 2)).unwrap();
    assert_eq!(replicas[0].owner_of("odd"), Some(key_of(2)));
    assert!(write(&mut replicas, &scale_by(1, "odd", 3)).is_err());
}

#[test]
fn the_state_with_owners_survives_a_snapshot() {
    let mut replicas = deployed();
    write(&mut replicas, &deploy_by(2, manifest("api", "1", 1))).unwrap();
    let frame = mycel_protocol::encode(&replicas[0]).unwrap();
    let back: PlacementState = mycel_protocol::decode(&frame, 1 << 20).unwrap();
    assert_eq!(back, replicas[0]);
    assert_eq!(back.owners.latest.len(), 2);

    // A snapshot written before apps had owners reads as a state without any.
    #[derive(serde::Serialize)]
    struct Before {
        apps: BTreeMap<String, AppRecord>,
        instances: BTreeMap<String, Instance>,
    }
    let old = Before {
        apps: replicas[0].apps.clone(),
        instances: replicas[0].instances.clone(),
    };
    let back: PlacementState =
        mycel_protocol::decode(&mycel_protocol::encode(&old).unwrap(), 1 << 20).unwrap();
    assert_eq!(back.owners, Owners::default());
    assert_eq!(back.apps, replicas[0].apps);
}
