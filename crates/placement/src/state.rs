//! The replicated state and how a log entry changes it. Pure: applying never calls out, so every
//! replica that applies the same entries holds the same state.

use std::collections::BTreeMap;

use mycel_protocol::{
    PeerId,
    ownership::{AppAction, OwnerKey, manifest_digest},
    placement::{
        AppRecord, Authorized, Command, ImageEntry, Instance, MAX_VERSIONS, Rollout, RolloutState,
        SecretRecord, VersionRecord, WriteError, instance_error,
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    owners::{self, Owners},
    volumes,
};

/// The apps and their instances, as of some log index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementState {
    pub apps: BTreeMap<String, AppRecord>,
    /// Every instance of every app, by id.
    pub instances: BTreeMap<String, Instance>,
    /// Images pushed to the mesh, by `name:tag`.
    #[serde(default)]
    pub images: BTreeMap<String, ImageEntry>,
    /// Each app's secrets, by app and secret name, sealed (see `mycel_protocol::secrets`). They
    /// go with the app when it is removed.
    #[serde(default)]
    pub secrets: BTreeMap<String, BTreeMap<String, SecretRecord>>,
    /// Who owns each app, and which signed requests were used (see [`owners`]).
    #[serde(default)]
    pub owners: Owners,
    /// Each app's latest rollout (see [`crate::rollout`]).
    #[serde(default)]
    pub rollouts: BTreeMap<String, Rollout>,
    /// The manifests each app was last deployed with, oldest first, at most [`MAX_VERSIONS`].
    #[serde(default)]
    pub versions: BTreeMap<String, Vec<VersionRecord>>,
    /// Each app's volumes: who holds them, their latest snapshots (see [`volumes`]).
    #[serde(default)]
    pub volumes: volumes::Volumes,
}

impl PlacementState {
    /// The instances of `app`, by replica number.
    pub fn instances_of<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.values().filter(move |i| i.app == app)
    }

    /// The record `instance` was placed from: its app's, or during a rollout the replaced
    /// version's (an old instance keeps its own manifest until it is retired). `None` for an
    /// instance of a generation the state no longer describes.
    pub fn record_for(&self, instance: &Instance) -> Option<&AppRecord> {
        let generation = instance.generation()?;
        let current = self.apps.get(&instance.app)?;
        if current.generation == generation {
            return Some(current);
        }
        self.rollouts
            .get(&instance.app)?
            .from
            .as_deref()
            .filter(|from| from.generation == generation)
    }

    /// The key that may change `app`: its owner, else the key of the node that took its deploy
    /// (an app recorded before apps had owners); `None` when neither is known (the next signed
    /// change claims it).
    pub fn owner_of(&self, app: &str) -> Option<OwnerKey> {
        if let Some(owner) = self.owners.apps.get(app) {
            return Some(*owner);
        }
        let record = self.apps.get(app)?;
        let peer: PeerId = record.deployed_by.parse().ok()?;
        OwnerKey::from_peer_id(&peer)
    }

    /// Checks a signed request against this state (see [`owners::check`]); answers the signer.
    pub fn check_signed(
        &self,
        auth: &Authorized,
        expected: &AppAction,
    ) -> Result<OwnerKey, WriteError> {
        owners::check(&self.owners, self.owner_of(expected.app()), auth, expected)
    }

    /// The instances placed on `node`.
    pub fn instances_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.values().filter(move |i| i.node == node)
    }

    /// Applies one entry as every replica does: one that is refused changes nothing (see
    /// [`PlacementState::try_apply`]).
    pub fn apply(&mut self, command: &Command) {
        let _ = self.try_apply(command);
    }

    /// Applies one entry. A deploy, scale or stop whose signed request does not hold up against
    /// this state (see [`owners::check`]) is refused and changes nothing: every replica refuses
    /// it alike, and the answer tells the leader's client why.
    pub fn try_apply(&mut self, command: &Command) -> Result<(), WriteError> {
        match command {
            Command::PutApp {
                app,
                instances,
                auth,
                rollout,
            } => {
                let name = app.manifest.name.clone();
                self.check_ports_free(&app.manifest)?;
                // Before the signed request is accepted: a refused entry changes nothing.
                volumes::check_sizes(&self.volumes, app, &self.volume_owner(&name))?;
                if auth
                    .as_ref()
                    .is_some_and(|a| matches!(a.request.action, AppAction::Deploy { .. }))
                {
                    crate::dependencies::check_deployable(self, &app.manifest)?;
                }
                self.authorize_put(app, auth.as_deref())?;
                if let Some(auth) = auth
                    && matches!(auth.request.action, AppAction::Deploy { .. })
                {
                    self.record_version(app, auth);
                }
                self.apps.insert(name.clone(), (**app).clone());
                self.replace_instances(&name, instances);
                if let Some(rollout) = rollout {
                    self.rollouts.insert(name, (**rollout).clone());
                }
            }
            Command::Roll {
                app,
                instances,
                rollout,
                after_step,
            } => {
                let name = &app.manifest.name;
                // A promote, a new deploy or a removal committed since the leader planned this
                // step: it no longer applies.
                let current = self.rollouts.get(name).map(|r| r.step);
                if current != Some(*after_step) || !self.apps.contains_key(name) {
                    return Ok(());
                }
                self.apps.insert(name.clone(), (**app).clone());
                self.replace_instances(name, instances);
                self.rollouts.insert(name.clone(), (**rollout).clone());
            }
            Command::Autoscale {
                app,
                generation,
                status,
                instances,
            } => {
                // The app may have been removed or redeployed since the leader decided.
                let Some(record) = self.apps.get_mut(app) else {
                    return Ok(());
                };
                if record.generation != *generation || record.manifest.scale.is_none() {
                    return Ok(());
                }
                record.scale = Some(status.clone());
                // A rollout under way places by its own steps, for the new count.
                if !self.rollouts.get(app).is_some_and(|r| r.places()) {
                    self.replace_instances(app, instances);
                }
            }
            Command::Promote { app, auth } => {
                self.check_signed(auth, &AppAction::Promote { app: app.clone() })?;
                let deadline = self
                    .apps
                    .get(app)
                    .ok_or_else(|| WriteError::UnknownApp(app.clone()))?
                    .manifest
                    .update
                    .healthy_deadline_ms;
                let rollout = self
                    .rollouts
                    .get_mut(app)
                    .filter(|r| r.active && !r.promoted)
                    .ok_or_else(|| {
                        WriteError::Rejected(format!(
                            "no rollout of '{app}' has canaries to promote"
                        ))
                    })?;
                rollout.promoted = true;
                rollout.state = RolloutState::Progressing;
                rollout.deadline_ms = auth.accepted_at_ms + deadline;
                rollout.message = format!("promoted: version {} rolls out", rollout.to_version);
                rollout.step += 1;
                self.owners.accept(auth);
            }
            Command::Place {
                app,
                instances,
                unplaced,
            } => {
                // The app may have been removed after the leader planned the move.
                let Some(record) = self.apps.get_mut(app) else {
                    return Ok(());
                };
                record.unplaced = unplaced.clone();
                self.replace_instances(app, instances);
            }
            Command::RemoveApp {
                name,
                auth,
                purge,
                force,
            } => {
                crate::dependencies::check_stoppable(self, name, *force)?;
                let app = name.clone();
                let action = if *purge {
                    AppAction::StopAndPurge { app }
                } else {
                    AppAction::Stop { app }
                };
                if *purge && !self.apps.contains_key(name) {
                    // A stopped app has no owner; its kept volumes still do.
                    volumes::check_purger(&self.volumes, name, auth.as_deref())?;
                }
                match auth {
                    Some(auth) => {
                        self.check_signed(auth, &action)?;
                        self.owners.accept(auth);
                    }
                    None => self.refuse_unsigned(name)?,
                }
                if *purge {
                    self.volumes.remove(name);
                }
                self.apps.remove(name);
                self.rollouts.remove(name);
                self.versions.remove(name);
                // Its name is free for anyone to claim now: its secrets must not wait for them.
                self.secrets.remove(name);
                self.instances.retain(|_, i| &i.app != name);
            }
            Command::Report {
                node,
                at_ms,
                states,
                errors,
            } => {
                for (id, state) in states {
                    // Only the node an instance is placed on speaks for it: a late report from
                    // the node it was moved away from changes nothing.
                    let Some(instance) = self.instances.get_mut(id) else {
                        continue;
                    };
                    if &instance.node != node {
                        continue;
                    }
                    if instance.state != *state {
                        instance.state = *state;
                        instance.since_ms = *at_ms;
                    }
                    instance.error = errors
                        .iter()
                        .find(|(failed, _)| failed == id)
                        .map(|(_, why)| instance_error(why));
                }
            }
            Command::PutImage { image } => {
                self.images
                    .insert(image.record.name.clone(), (**image).clone());
            }
            Command::PutSecret {
                app,
                name,
                sealed,
                auth,
                roll,
            } => self.put_secret(app, name, sealed, auth, roll.as_deref())?,
            Command::PutSnapshot {
                app,
                volume,
                snapshot,
            } => volumes::put_snapshot(&mut self.volumes, app, volume, snapshot),
            Command::RequestSnapshot { app, volume } => {
                volumes::request_snapshot(&mut self.volumes, app, volume)
            }
            Command::SnapshotCopied {
                app,
                volume,
                index,
                node,
            } => volumes::snapshot_copied(&mut self.volumes, app, volume, index, node),
            Command::RemoveSecret { app, name, auth } => {
                let action = AppAction::RemoveSecret {
                    app: app.clone(),
                    name: name.clone(),
                };
                self.check_signed(auth, &action)?;
                self.owners.accept(auth);
                if let Some(secrets) = self.secrets.get_mut(app) {
                    secrets.remove(name);
                    if secrets.is_empty() {
                        self.secrets.remove(app);
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets a secret, and rolls its app when the entry carries the roll and the app is still
    /// what it was planned against.
    fn put_secret(
        &mut self,
        app: &str,
        name: &str,
        sealed: &mycel_protocol::secrets::SealedSecret,
        auth: &Authorized,
        roll: Option<&mycel_protocol::placement::SecretRoll>,
    ) -> Result<(), WriteError> {
        let action = AppAction::SetSecret {
            app: app.to_owned(),
            name: name.to_owned(),
            sealed: sealed.digest(),
        };
        self.check_signed(auth, &action)?;
        self.owners.accept(auth);
        let record = SecretRecord {
            sealed: sealed.clone(),
            set_at_ms: auth.accepted_at_ms,
        };
        self.secrets
            .entry(app.to_owned())
            .or_default()
            .insert(name.to_owned(), record);
        if let Some(roll) = roll
            && self.apps.get(app).is_some_and(|current| {
                current.manifest == roll.app.manifest && current.generation < roll.app.generation
            })
        {
            self.apps.insert(app.to_owned(), roll.app.clone());
            self.replace_instances(app, &roll.instances);
            if let Some(rollout) = &roll.rollout {
                self.rollouts.insert(app.to_owned(), rollout.clone());
            }
        }
        Ok(())
    }

    /// The app that publishes `port` on every node's ingress address, if one does.
    pub fn publisher_of(&self, port: u16) -> Option<&str> {
        self.apps
            .values()
            .find(|record| record.manifest.ports.iter().any(|p| p.published == port))
            .map(|record| record.manifest.name.as_str())
    }

    /// A deploy may not publish a port another app publishes: every node listens on it for one
    /// app. Checked as the entry applies, so two deploys racing through different nodes cannot
    /// both take a port.
    fn check_ports_free(&self, manifest: &mycel_protocol::Manifest) -> Result<(), WriteError> {
        for port in &manifest.ports {
            if let Some(app) = self.publisher_of(port.published)
                && app != manifest.name
            {
                return Err(WriteError::PortTaken {
                    port: port.published,
                    app: app.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Whether a `PutApp` of `record` may apply: its signed request must sign exactly this
    /// deploy (the digest of this manifest), or this scale (the app as it is, with only its
    /// replicas changed), by the app's owner.
    fn authorize_put(
        &mut self,
        record: &AppRecord,
        auth: Option<&Authorized>,
    ) -> Result<(), WriteError> {
        let name = &record.manifest.name;
        let Some(auth) = auth else {
            return self.refuse_unsigned(name);
        };
        let expected = match &auth.request.action {
            AppAction::Deploy { .. } => AppAction::Deploy {
                app: name.clone(),
                manifest: manifest_digest(&record.manifest),
            },
            AppAction::Scale { .. } => {
                let current = self
                    .apps
                    .get(name)
                    .ok_or_else(|| WriteError::UnknownApp(name.clone()))?;
                let mut rescaled = current.clone();
                rescaled.manifest.replicas = record.manifest.replicas;
                rescaled.scale.clone_from(&record.scale);
                rescaled.unplaced.clone_from(&record.unplaced);
                if rescaled != *record {
                    return Err(WriteError::BadSignature(format!(
                        "a signed scale of '{name}' may change its replicas only"
                    )));
                }
                AppAction::Scale {
                    app: name.clone(),
                    replicas: record.manifest.replicas,
                }
            }
            AppAction::Stop { .. }
            | AppAction::StopAndPurge { .. }
            | AppAction::Promote { .. }
            | AppAction::SetSecret { .. }
            | AppAction::RemoveSecret { .. } => {
                return Err(WriteError::BadSignature(format!(
                    "a signed {} of '{name}' cannot deploy it",
                    auth.request.action.verb()
                )));
            }
        };
        self.check_signed(auth, &expected)?;
        self.owners.accept(auth);
        Ok(())
    }

    /// Adds the manifest of a signed deploy to the app's versions, forgetting the oldest past
    /// [`MAX_VERSIONS`].
    fn record_version(&mut self, record: &AppRecord, auth: &Authorized) {
        let versions = self
            .versions
            .entry(record.manifest.name.clone())
            .or_default();
        versions.push(VersionRecord {
            version: record.manifest.version.clone(),
            digest: manifest_digest(&record.manifest),
            by: auth.request.key.to_string(),
            at_ms: auth.accepted_at_ms,
            manifest: record.manifest.clone(),
        });
        let extra = versions.len().saturating_sub(MAX_VERSIONS);
        versions.drain(..extra);
    }

    /// The generation the next deploy of `app` takes: one past any it has had.
    pub fn next_generation(&self, app: &str) -> u64 {
        let record = self.apps.get(app).map_or(0, |r| r.generation);
        let rollout = self.rollouts.get(app).map_or(0, |r| r.max_generation);
        let instances = self
            .instances_of(app)
            .filter_map(Instance::generation)
            .max()
            .unwrap_or(0);
        record.max(rollout).max(instances) + 1
    }

    /// Entries without a signed request come from logs written before apps had owners: they
    /// apply as they did then, except to an app that has an owner now.
    fn refuse_unsigned(&self, app: &str) -> Result<(), WriteError> {
        match self.owners.apps.get(app) {
            Some(owner) => Err(WriteError::BadSignature(format!(
                "app '{app}' is owned by {owner}: an unsigned change of it is refused"
            ))),
            None => Ok(()),
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
                instance.error = previous.error.clone();
            }
            self.instances.insert(instance.id.clone(), instance);
        }
        if let Some(record) = self.apps.get(app) {
            let owner = self.volume_owner(app);
            let nodes = instances.iter().map(|i| i.node.as_str());
            volumes::note_placed(&mut self.volumes, record, &owner, nodes);
        }
    }

    /// Whose volumes `app`'s are: its owner key, or nobody's ("") for an app without an owner.
    pub fn volume_owner(&self, app: &str) -> String {
        self.owner_of(app)
            .map(|k| k.to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::{api::InstanceState, app::Manifest, placement::MAX_INSTANCE_ERROR_BYTES};

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
            scale: None,
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
            error: None,
        }
    }

    #[test]
    fn put_report_move_remove() {
        let mut state = PlacementState::default();
        state
            .try_apply(&Command::PutApp {
                app: record("web", 2),
                instances: vec![instance("web", 0, "a"), instance("web", 1, "b")],
                auth: None,
                rollout: None,
            })
            .unwrap();
        assert_eq!(state.instances_of("web").count(), 2);

        // Only the node an instance is on may report its state.
        state
            .try_apply(&Command::Report {
                node: "a".into(),
                at_ms: 5,
                states: vec![
                    ("web-1-0".into(), InstanceState::Running),
                    ("web-1-1".into(), InstanceState::Failed),
                ],
                errors: vec![("web-1-1".into(), "not mine to say".into())],
            })
            .unwrap();
        assert_eq!(state.instances["web-1-0"].state, InstanceState::Running);
        assert_eq!(state.instances["web-1-1"].state, InstanceState::Pending);
        assert_eq!(state.instances["web-1-1"].error, None);

        // A failure carries its reason (cut to a bounded length); running again clears it.
        let long = "no room here ".repeat(100);
        state
            .try_apply(&Command::Report {
                node: "a".into(),
                at_ms: 6,
                states: vec![("web-1-0".into(), InstanceState::Failed)],
                errors: vec![("web-1-0".into(), long.clone())],
            })
            .unwrap();
        let error = state.instances["web-1-0"].error.clone().unwrap();
        assert!(error.len() <= MAX_INSTANCE_ERROR_BYTES && long.starts_with(&error[..100]));
        state
            .try_apply(&Command::Report {
                node: "a".into(),
                at_ms: 7,
                states: vec![("web-1-0".into(), InstanceState::Running)],
                errors: vec![],
            })
            .unwrap();
        assert_eq!(state.instances["web-1-0"].error, None);

        // A rescale keeps what the nodes reported for instances that stay put...
        state
            .try_apply(&Command::PutApp {
                app: record("web", 1),
                instances: vec![instance("web", 0, "a")],
                auth: None,
                rollout: None,
            })
            .unwrap();
        assert_eq!(state.instances["web-1-0"].state, InstanceState::Running);
        assert_eq!(state.instances.len(), 1);

        // ...and a move starts over.
        state
            .try_apply(&Command::Place {
                app: "web".into(),
                instances: vec![instance("web", 0, "c")],
                unplaced: None,
            })
            .unwrap();
        assert_eq!(state.instances["web-1-0"].node, "c");
        assert_eq!(state.instances["web-1-0"].state, InstanceState::Pending);

        state
            .try_apply(&Command::RemoveApp {
                name: "web".into(),
                auth: None,
                purge: false,
                force: false,
            })
            .unwrap();
        assert_eq!(state, PlacementState::default());
    }

    #[test]
    fn place_for_a_removed_app_changes_nothing() {
        let mut state = PlacementState::default();
        state
            .try_apply(&Command::Place {
                app: "gone".into(),
                instances: vec![instance("gone", 0, "a")],
                unplaced: None,
            })
            .unwrap();
        assert_eq!(state, PlacementState::default());
    }
}
