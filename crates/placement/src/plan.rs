//! The leader's decisions, pure: a client's write plus the leader's view of the mesh in, the log
//! entries that carry it out. The scheduler does the placing; this module turns manifests into its
//! problem and its answer into entries.

use std::collections::BTreeSet;

use mycel_protocol::{
    Runtime,
    api::{InstanceState, MemberStatus, NodeInfo},
    app::{AppKind, Manifest, Relaxation, RuleOp},
    image::{self, ImageRecord},
    ownership::{AppAction, SignedRequest, manifest_digest},
    placement::{
        AppRecord, Authorized, Command, ImageEntry, Instance, ScaleStatus, WriteError, WriteRequest,
    },
};
use mycel_scheduler::{AppSpec, LabelRule, NodeState, NodeView, Placement, Problem, Strategy};

use crate::{state::PlacementState, volumes};

mod roll;
mod secrets;

pub use roll::plan_rollouts;

/// What the leader knows when it plans: its view of the mesh and the time.
#[derive(Clone, Debug)]
pub struct View {
    pub nodes: Vec<NodeView>,
    pub now_ms: u64,
    /// How long a dead node keeps its instances before they are placed elsewhere.
    pub dead_grace_ms: u64,
}

/// The scheduler's view of the mesh, from the membership view.
pub fn node_views(nodes: &[NodeInfo]) -> Vec<NodeView> {
    nodes
        .iter()
        .map(|node| NodeView {
            id: node.peer_id.clone(),
            state: match node.status {
                // A node that said goodbye is not coming back soon: no grace.
                _ if node.departed => NodeState::Dead { for_ms: u64::MAX },
                MemberStatus::Alive => NodeState::Alive,
                MemberStatus::Suspect => NodeState::Suspect,
                MemberStatus::Dead => NodeState::Dead {
                    for_ms: node.last_seen_ms,
                },
            },
            runtimes: node.runtimes.iter().copied().collect(),
            labels: node.labels.clone(),
            // The owner's policy caps what the machine has.
            memory_mb: node
                .resources
                .memory_mb
                .min(node.policy.memory_mb.unwrap_or(u64::MAX)),
            cpu_millis: (u64::from(node.resources.cpu_cores) * 1000)
                .min(node.policy.cpu_millis.unwrap_or(u64::MAX)),
            max_instances: node.policy.max_instances,
            allowed_owners: node.policy.allowed_owner_keys(),
            // An app that asks for a relaxation the owner does not allow is kept off the node,
            // as one whose runtime it lacks (names this version does not know are ignored).
            relaxations_allowed: Relaxation::ALL
                .into_iter()
                .filter(|r| node.policy.allows(*r))
                .collect(),
        })
        .collect()
}

/// The entries that carry out `request`, given the state they will apply to. A deploy, scale or
/// stop is checked here as every replica will check it (see [`crate::owners::check`]), with the
/// leader's clock as the time it was accepted.
pub fn plan_write(
    state: &PlacementState,
    view: &View,
    request: &WriteRequest,
) -> Result<Vec<Command>, WriteError> {
    let accepted = |signed: &SignedRequest| Authorized {
        request: signed.clone(),
        accepted_at_ms: view.now_ms,
    };
    match request {
        WriteRequest::Deploy {
            manifest,
            by,
            signed,
        } => {
            // The forwarding node checked it, unless it is not a mycel node: whatever a peer
            // sends, the log only ever holds manifests the API would take.
            manifest
                .validate_for_api()
                .map_err(|e| WriteError::Rejected(e.to_string()))?;
            let auth = accepted(signed);
            let action = AppAction::Deploy {
                app: manifest.name.clone(),
                manifest: manifest_digest(manifest),
            };
            state.check_signed(&auth, &action)?;
            secrets::check_all_set(state, &manifest.name, &manifest.secrets)?;
            crate::dependencies::check_deployable(state, manifest)?;
            let record = AppRecord {
                manifest: (**manifest).clone(),
                deployed_by: by.clone(),
                deployed_at_ms: view.now_ms,
                generation: state.next_generation(&manifest.name),
                unplaced: None,
                scale: None,
            };
            // The new version rolls out: its first step is part of the deploy's entry.
            let rollout = roll::start(state, &record, view.now_ms);
            if rollout.from.is_none() {
                let mut command = put_app(state, view, record, auth);
                if let Command::PutApp { rollout: r, .. } = &mut command {
                    *r = Some(Box::new(rollout));
                }
                return Ok(vec![command]);
            }
            let owner = auth.request.key.to_string();
            let rolled = roll::step(state, view, &record, &rollout, owner);
            Ok(vec![Command::PutApp {
                app: Box::new(rolled.record),
                instances: rolled.instances,
                auth: Some(Box::new(auth)),
                rollout: Some(Box::new(rolled.rollout)),
            }])
        }
        WriteRequest::Scale {
            name,
            replicas,
            signed,
        } => {
            let mut record = state
                .apps
                .get(name)
                .ok_or_else(|| WriteError::UnknownApp(name.clone()))?
                .clone();
            let auth = accepted(signed);
            let action = AppAction::Scale {
                app: name.clone(),
                replicas: *replicas,
            };
            state.check_signed(&auth, &action)?;
            record.manifest.replicas = *replicas;
            if record.manifest.scale.is_some() {
                // The autoscaler goes on from the count the owner set.
                record.scale = Some(ScaleStatus {
                    desired: *replicas,
                    from: state.apps.get(name).map_or(0, AppRecord::replicas),
                    reason: "set by its owner".into(),
                    signals: Default::default(),
                    at_ms: view.now_ms,
                });
            }
            record
                .manifest
                .validate()
                .map_err(|e| WriteError::Rejected(e.to_string()))?;
            if state.rollouts.get(name).is_some_and(|r| r.places()) {
                // The rollout's next step places (or retires) for the new count.
                return Ok(vec![Command::PutApp {
                    app: Box::new(record),
                    instances: state.instances_of(name).cloned().collect(),
                    auth: Some(Box::new(auth)),
                    rollout: None,
                }]);
            }
            Ok(vec![put_app(state, view, record, auth)])
        }
        WriteRequest::Activate { name } => {
            let record = state
                .apps
                .get(name)
                .ok_or_else(|| WriteError::UnknownApp(name.clone()))?;
            let Some(spec) = &record.manifest.scale else {
                return Ok(vec![]);
            };
            if record.replicas() > 0 {
                return Ok(vec![]); // another gateway asked first
            }
            let status = ScaleStatus {
                desired: spec.min.max(1),
                from: 0,
                reason: "a request arrived".into(),
                signals: Default::default(),
                at_ms: view.now_ms,
            };
            Ok(vec![autoscale(state, view, record, status)])
        }
        WriteRequest::Promote { name, signed } => {
            if !state.apps.contains_key(name) {
                return Err(WriteError::UnknownApp(name.clone()));
            }
            let auth = accepted(signed);
            state.check_signed(&auth, &AppAction::Promote { app: name.clone() })?;
            Ok(vec![Command::Promote {
                app: name.clone(),
                auth: Box::new(auth),
            }])
        }
        WriteRequest::Remove {
            name,
            signed,
            purge,
            force,
        } => {
            crate::dependencies::check_stoppable(state, name, *force)?;
            // A stopped app's volumes may still be purged.
            let purgeable = *purge && state.volumes.contains_key(name);
            if !state.apps.contains_key(name) && !purgeable {
                return Err(WriteError::UnknownApp(name.clone()));
            }
            let auth = accepted(signed);
            if !state.apps.contains_key(name) {
                volumes::check_purger(&state.volumes, name, Some(&auth))?;
            }
            let app = name.clone();
            let action = if *purge {
                AppAction::StopAndPurge { app }
            } else {
                AppAction::Stop { app }
            };
            state.check_signed(&auth, &action)?;
            Ok(vec![Command::RemoveApp {
                name: name.clone(),
                auth: Some(Box::new(auth)),
                purge: *purge,
                force: *force,
            }])
        }
        WriteRequest::Report {
            node,
            states,
            errors,
        } => Ok(vec![Command::Report {
            node: node.clone(),
            at_ms: view.now_ms,
            states: states.clone(),
            errors: errors.clone(),
        }]),
        WriteRequest::PutImage {
            record,
            record_hash,
            by,
        } => {
            check_image(record).map_err(WriteError::Rejected)?;
            Ok(vec![Command::PutImage {
                image: Box::new(ImageEntry {
                    record: (**record).clone(),
                    record_hash: *record_hash,
                    pushed_by: by.clone(),
                    pushed_at_ms: view.now_ms,
                }),
            }])
        }
        WriteRequest::PutSnapshot {
            app,
            volume,
            snapshot,
        } => Ok(vec![Command::PutSnapshot {
            app: app.clone(),
            volume: volume.clone(),
            snapshot: snapshot.clone(),
        }]),
        WriteRequest::RequestSnapshot { app, volume } => {
            let held = state.volumes.get(app).and_then(|v| v.volumes.get(volume));
            if held.is_none() {
                return Err(WriteError::Rejected(format!(
                    "app '{app}' has no volume '{volume}'"
                )));
            }
            Ok(vec![Command::RequestSnapshot {
                app: app.clone(),
                volume: volume.clone(),
            }])
        }
        WriteRequest::SnapshotCopied {
            app,
            volume,
            index,
            node,
        } => Ok(vec![Command::SnapshotCopied {
            app: app.clone(),
            volume: volume.clone(),
            index: *index,
            node: node.clone(),
        }]),
        WriteRequest::SetSecret {
            app,
            name,
            sealed,
            signed,
        } => secrets::set(state, view, app, name, sealed, accepted(signed)),
        WriteRequest::RemoveSecret { app, name, signed } => {
            secrets::remove(state, app, name, accepted(signed))
        }
    }
}

/// The leader's own check of an image record (the node that took the push checked the archive;
/// this keeps a record that names nonsense out of the log whatever node sent it).
fn check_image(record: &ImageRecord) -> Result<(), String> {
    let name = image::normalize_image_name(&record.name)?;
    if name != record.name {
        return Err(format!(
            "image name {:?} is not normalized ({name:?})",
            record.name
        ));
    }
    if record.layers.is_empty() || record.layers.len() > image::MAX_LAYERS {
        return Err(format!(
            "an image has 1 to {} layers (got {})",
            image::MAX_LAYERS,
            record.layers.len()
        ));
    }
    let digests = std::iter::once(&record.config.digest).chain(
        record
            .layers
            .iter()
            .flat_map(|l| [&l.part.digest, &l.diff_id]),
    );
    for digest in digests {
        if !image::is_sha256_digest(digest) {
            return Err(format!("{digest:?} is not a sha256 digest"));
        }
    }
    Ok(())
}

/// Places every app again on the current view and returns a `Place` entry for each app whose
/// placements changed: instances of dead nodes move, unplaced replicas find room.
pub fn plan_reschedule(state: &PlacementState, view: &View) -> Vec<Command> {
    let solution = solve(state, view, None);
    let mut commands = Vec::new();
    // An app being rolled out is placed by its rollout's steps.
    let rolling = |name: &String| state.rollouts.get(name).is_some_and(|r| r.places());
    for (name, record) in state.apps.iter().filter(|(name, _)| !rolling(name)) {
        let placed: Vec<&Placement> = solution
            .placements
            .iter()
            .filter(|p| &p.app == name)
            .collect();
        let unplaced = unplaced_reason(&solution, name);
        let unchanged = unplaced == record.unplaced
            && placed.len() == state.instances_of(name).count()
            && placed.iter().all(|p| {
                state
                    .instances
                    .get(&Instance::id_for(name, record.generation, p.replica))
                    .is_some_and(|i| i.node == p.node)
            });
        if !unchanged {
            commands.push(Command::Place {
                app: name.clone(),
                instances: instances(state, view, record, &placed),
                unplaced,
            });
        }
    }
    commands
}

/// An `Autoscale` entry for each decision that changes its app's count.
pub fn plan_autoscale(
    state: &PlacementState,
    view: &View,
    decisions: &[(String, crate::autoscale::Decision)],
) -> Vec<Command> {
    decisions
        .iter()
        .filter_map(|(name, decision)| {
            let record = state.apps.get(name)?;
            (decision.desired != record.replicas()).then(|| {
                let status = ScaleStatus {
                    desired: decision.desired,
                    from: record.replicas(),
                    reason: decision.reason.clone(),
                    signals: decision.signals.clone(),
                    at_ms: view.now_ms,
                };
                autoscale(state, view, record, status)
            })
        })
        .collect()
}

/// The `Autoscale` entry that gives `record` the count in `status`, its instances placed for it
/// (left to the rollout's steps while one places the app).
fn autoscale(
    state: &PlacementState,
    view: &View,
    record: &AppRecord,
    status: ScaleStatus,
) -> Command {
    let name = &record.manifest.name;
    let mut scaled = record.clone();
    scaled.scale = Some(status.clone());
    let instances = if state.rollouts.get(name).is_some_and(|r| r.places()) {
        state.instances_of(name).cloned().collect()
    } else {
        let solution = solve(state, view, Some((&scaled, owner_text(state, record))));
        let placed: Vec<&Placement> = solution
            .placements
            .iter()
            .filter(|p| &p.app == name)
            .collect();
        instances(state, view, &scaled, &placed)
    };
    Command::Autoscale {
        app: name.clone(),
        generation: record.generation,
        status,
        instances,
    }
}

/// The `PutApp` entry for `record`, placed among the apps already deployed.
fn put_app(
    state: &PlacementState,
    view: &View,
    mut record: AppRecord,
    auth: Authorized,
) -> Command {
    let name = record.manifest.name.clone();
    // The signer owns what it changes: the owner rule was checked, or it claims an ownerless app.
    let solution = solve(state, view, Some((&record, auth.request.key.to_string())));
    let placed: Vec<&Placement> = solution
        .placements
        .iter()
        .filter(|p| p.app == name)
        .collect();
    record.unplaced = unplaced_reason(&solution, &name);
    let instances = instances(state, view, &record, &placed);
    Command::PutApp {
        app: Box::new(record),
        instances,
        auth: Some(Box::new(auth)),
        rollout: None,
    }
}

/// The instances for `placed`: one that stays where it runs keeps its id, state and age.
fn instances(
    state: &PlacementState,
    view: &View,
    record: &AppRecord,
    placed: &[&Placement],
) -> Vec<Instance> {
    placed
        .iter()
        .map(|p| {
            let id = Instance::id_for(&p.app, record.generation, p.replica);
            match state.instances.get(&id) {
                Some(existing) if existing.node == p.node => existing.clone(),
                _ => Instance {
                    id,
                    app: p.app.clone(),
                    replica: p.replica,
                    node: p.node.clone(),
                    state: InstanceState::Pending,
                    since_ms: view.now_ms,
                    error: None,
                },
            }
        })
        .collect()
}

/// Solves the whole mesh's placement, with `changed` replacing (or adding) its app.
fn solve(
    state: &PlacementState,
    view: &View,
    changed: Option<(&AppRecord, String)>,
) -> mycel_scheduler::Solution {
    let mut apps: Vec<AppSpec> = state
        .apps
        .values()
        .filter(|app| {
            changed
                .as_ref()
                .is_none_or(|(c, _)| c.manifest.name != app.manifest.name)
        })
        .map(|app| {
            let mut spec = app_spec(app, owner_text(state, app));
            spec.holders =
                volumes::holders(&state.volumes, &spec.name, &state.volume_owner(&spec.name));
            spec
        })
        .collect();
    apps.extend(changed.map(|(app, owner)| {
        let mut spec = app_spec(app, owner);
        // Signed: the volumes are the signer's if they were made under the same key.
        spec.holders = volumes::holders(&state.volumes, &spec.name, &spec.owner);
        spec
    }));
    // A redeployed app keeps its nodes: its old instances count as its previous placements.
    let previous: Vec<Placement> = state
        .instances
        .values()
        .map(|i| Placement {
            app: i.app.clone(),
            replica: i.replica,
            node: i.node.clone(),
        })
        .collect();
    let problem = Problem {
        nodes: view.nodes.clone(),
        apps,
        dead_grace_ms: view.dead_grace_ms,
    };
    mycel_scheduler::solve(&problem, &previous)
}

fn unplaced_reason(solution: &mycel_scheduler::Solution, app: &str) -> Option<String> {
    solution
        .unplaced
        .iter()
        .find(|u| u.app == app)
        .map(|u| format!("{} replica(s) have no node: {}", u.replicas, u.reason))
}

/// Who owns `app`, as nodes' `policy.allowed_owners` name owners: its key, else (an app whose
/// deployer has no key in its id) the peer id that took its deploy.
fn owner_text(state: &PlacementState, app: &AppRecord) -> String {
    state
        .owner_of(&app.manifest.name)
        .map_or_else(|| app.deployed_by.clone(), |key| key.to_string())
}

/// The scheduler's view of an app owned by `owner`.
pub fn app_spec(record: &AppRecord, owner: String) -> AppSpec {
    let manifest: &Manifest = &record.manifest;
    let rule = |r: &mycel_protocol::app::LabelRuleSpec| match r.op {
        RuleOp::In => LabelRule::In {
            key: r.key.clone(),
            values: r.values.clone(),
        },
        RuleOp::NotIn => LabelRule::NotIn {
            key: r.key.clone(),
            values: r.values.clone(),
        },
        RuleOp::Exists => LabelRule::Exists { key: r.key.clone() },
    };
    AppSpec {
        name: manifest.name.clone(),
        owner,
        runtimes: runtimes_of(manifest.kind()),
        replicas: record.replicas(),
        memory_mb: manifest.memory_mb(),
        cpu_millis: manifest.cpu_millis(),
        required: manifest.placement.required.iter().map(rule).collect(),
        preferred: manifest.placement.preferred.iter().map(rule).collect(),
        strategy: match manifest.placement.strategy {
            Some(mycel_protocol::app::Strategy::Binpack) => Strategy::Binpack,
            _ => Strategy::Spread,
        },
        relaxations: manifest.relaxations().into_iter().collect(),
        holders: BTreeSet::new(),
        grace_ms: manifest.volume_grace_ms(),
    }
}

/// The node runtimes that run an app of this kind, the preferred first: a process app runs in
/// a sandbox, or on Docker in an image its node makes of the binary.
pub fn runtimes_of(kind: AppKind) -> Vec<Runtime> {
    match kind {
        AppKind::Wasm => vec![Runtime::Wasm],
        AppKind::Container => vec![Runtime::Docker],
        AppKind::Process => vec![Runtime::Process, Runtime::Docker],
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod secrets_tests;
