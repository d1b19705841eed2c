//! Which apps run here: the instances the agent runs and finds healthy, named through the
//! placement replica (which holds each app's manifest and who deployed it).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use mycel_placement::{PlacementHandle, PlacementState};
use mycel_protocol::BlobHash;
use tokio::sync::watch;

use crate::LocalApp;

/// How often the running instances are looked at again (the agent has no change feed).
const POLL: Duration = Duration::from_secs(1);

/// The instances that run on this node and passed their health check, by id: the agent knows.
pub trait LocalInstances: Send + Sync + 'static {
    fn healthy_instances(&self) -> Vec<String>;
}

/// A feed of the apps that run here, updated when the placement replica changes and every
/// second; ends when every receiver is gone.
pub fn watch_local_apps(
    instances: Arc<dyn LocalInstances>,
    placement: PlacementHandle,
) -> watch::Receiver<Vec<LocalApp>> {
    let (tx, rx) = watch::channel(Vec::new());
    let mut replica = placement.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                changed = replica.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
            let state = replica.borrow_and_update().clone();
            let apps = local_apps(&instances.healthy_instances(), &state.state);
            tx.send_if_modified(|current| {
                let changed = *current != apps;
                if changed {
                    *current = apps;
                }
                changed
            });
        }
    });
    rx
}

/// The apps of `instance_ids` (local instances), by name, as the placement state describes
/// them. Instances the state no longer names (an app just removed) are left out.
pub(crate) fn local_apps(instance_ids: &[String], state: &PlacementState) -> Vec<LocalApp> {
    let mut apps = BTreeMap::new();
    for id in instance_ids {
        let Some(instance) = state.instances.get(id) else {
            continue;
        };
        let Some(record) = state.apps.get(&instance.app) else {
            continue;
        };
        let manifest = &record.manifest;
        let json = serde_json::to_vec(manifest).unwrap_or_default();
        apps.entry(manifest.name.clone())
            .or_insert_with(|| LocalApp {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                kind: manifest.kind(),
                publisher: record.deployed_by.clone(),
                manifest_hash: BlobHash(*blake3::hash(&json).as_bytes()),
                // Manifests have no description yet.
                description: None,
            });
    }
    apps.into_values().collect()
}

#[cfg(test)]
mod tests {
    use mycel_protocol::{
        Manifest,
        api::InstanceState,
        placement::{AppRecord, Instance},
    };

    use super::*;

    #[test]
    fn names_the_apps_of_local_instances() {
        let manifest = Manifest::from_toml(
            "name = \"hello\"\nversion = \"1.0.0\"\n[wasm]\nmodule = \"blake3:0000000000000000000000000000000000000000000000000000000000000000\"\n",
        )
        .unwrap();
        let mut state = PlacementState::default();
        state.apps.insert(
            "hello".into(),
            AppRecord {
                manifest,
                deployed_by: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
                deployed_at_ms: 1,
                generation: 1,
                unplaced: None,
                scale: None,
            },
        );
        for replica in 0..2 {
            let id = Instance::id_for("hello", 1, replica);
            state.instances.insert(
                id.clone(),
                Instance {
                    id,
                    app: "hello".into(),
                    replica,
                    node: "me".into(),
                    state: InstanceState::Running,
                    since_ms: 1,
                    error: None,
                },
            );
        }
        let ids = vec!["hello-1-0".into(), "hello-1-1".into(), "gone-1-0".into()];
        let apps = local_apps(&ids, &state);
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].version, "1.0.0");
        assert_eq!(apps[0].publisher, state.apps["hello"].deployed_by);
        assert!(local_apps(&[], &state).is_empty());
    }
}
