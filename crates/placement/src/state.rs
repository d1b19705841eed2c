//! The replicated state and how a log entry changes it. Pure: applying never calls out, so every
//! replica that applies the same entries holds the same state.

use std::collections::BTreeMap;

use mycel_protocol::placement::{AppRecord, Command, ImageEntry, Instance};
use serde::{Deserialize, Serialize};

/// The apps and their instances, as of some log index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementState {
    pub apps: BTreeMap<String, AppRecord>,
    /// Every instance of every app, by id.
    pub instances: BTreeMap<String, Instance>,
    /// Images pushed to the mesh, by `name:tag`.
    #[serde(default)]
    pub images: BTreeMap<String, ImageEntry>,
}

impl PlacementState {
    /// The instances of `app`, by replica number.
    pub fn instances_of<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.values().filter(move |i| i.app == app)
    }

    /// The instances placed on `node`.
    pub fn instances_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.values().filter(move |i| i.node == node)
    }

    pub fn apply(&mut self, command: &Command) {
        match command {
            Command::PutApp { app, instances } => {
                let name = app.manifest.name.clone();
                self.apps.insert(name.clone(), (**app).clone());
                self.replace_instances(&name, instances);
            }
            Command::Place {
                app,
                instances,
                unplaced,
            } => {
                // The app may have been removed after the leader planned the move.
                let Some(record) = self.apps.get_mut(app) else {
                    return;
                };
                record.unplaced = unplaced.clone();
                self.replace_instances(app, instances);
            }
            Command::RemoveApp { name } => {
                self.apps.remove(name);
                self.instances.retain(|_, i| &i.app != name);
            }
            Command::Report {
                node,
                at_ms,
                states,
            } => {
                for (id, state) in states {
                    // Only the node an instance is placed on speaks for it: a late report from
                    // the node it was moved away from changes nothing.
                    if let Some(instance) = self.instances.get_mut(id)
                        && &instance.node == node
                        && instance.state != *state
                    {
                        instance.state = *state;
                        instance.since_ms = *at_ms;
                    }
                }
            }
            Command::PutImage { image } => {
                self.images
                    .insert(image.record.name.clone(), (**image).clone());
            }
        }
    }

    /// Replaces the instances of `app` with `instances`; one that keeps its id and its node
    /// keeps the state its node reported (the leader planned from a state that may be older).
    fn replace_instances(&mut self, app: &str, instances: &[Instance]) {
        let mut old: BTreeMap<String, Instance> = BTreeMap::new();
        self.instances.retain(|id, i| {
            if i.app == app {
                old.insert(id.clone(), i.clone());
                false
            } else {
                true
            }
        });
        for instance in instances {
            let mut instance = instance.clone();
            if let Some(previous) = old.get(&instance.id)
                && previous.node == instance.node
            {
                instance.state = previous.state;
                instance.since_ms = previous.since_ms;
            }
            self.instances.insert(instance.id.clone(), instance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::{api::InstanceState, app::Manifest};

    fn record(name: &str, replicas: u32) -> Box<AppRecord> {
        let manifest = Manifest::from_toml(&format!(
            "name = \"{name}\"\nversion = \"1\"\nreplicas = {replicas}\n[wasm]\nmodule = \"blake3:{}\"\n",
            "a".repeat(64)
        ))
        .unwrap();
        Box::new(AppRecord {
            manifest,
            deployed_by: "n0".into(),
            deployed_at_ms: 1,
            generation: 1,
            unplaced: None,
        })
    }

    fn instance(app: &str, replica: u32, node: &str) -> Instance {
        Instance {
            id: Instance::id_for(app, 1, replica),
            app: app.into(),
            replica,
            node: node.into(),
            state: InstanceState::Pending,
            since_ms: 1,
        }
    }

    #[test]
    fn put_report_move_remove() {
        let mut state = PlacementState::default();
        state.apply(&Command::PutApp {
            app: record("web", 2),
            instances: vec![instance("web", 0, "a"), instance("web", 1, "b")],
        });
        assert_eq!(state.instances_of("web").count(), 2);

        // Only the node an instance is on may report its state.
        state.apply(&Command::Report {
            node: "a".into(),
            at_ms: 5,
            states: vec![
                ("web-1-0".into(), InstanceState::Running),
                ("web-1-1".into(), InstanceState::Failed),
            ],
        });
        assert_eq!(state.instances["web-1-0"].state, InstanceState::Running);
        assert_eq!(state.instances["web-1-1"].state, InstanceState::Pending);

        // A rescale keeps what the nodes reported for instances that stay put...
        state.apply(&Command::PutApp {
            app: record("web", 1),
            instances: vec![instance("web", 0, "a")],
        });
        assert_eq!(state.instances["web-1-0"].state, InstanceState::Running);
        assert_eq!(state.instances.len(), 1);

        // ...and a move starts over.
        state.apply(&Command::Place {
            app: "web".into(),
            instances: vec![instance("web", 0, "c")],
            unplaced: None,
        });
        assert_eq!(state.instances["web-1-0"].node, "c");
        assert_eq!(state.instances["web-1-0"].state, InstanceState::Pending);

        state.apply(&Command::RemoveApp { name: "web".into() });
        assert_eq!(state, PlacementState::default());
    }

    #[test]
    fn place_for_a_removed_app_changes_nothing() {
        let mut state = PlacementState::default();
        state.apply(&Command::Place {
            app: "gone".into(),
            instances: vec![instance("gone", 0, "a")],
            unplaced: None,
        });
        assert_eq!(state, PlacementState::default());
    }
}
