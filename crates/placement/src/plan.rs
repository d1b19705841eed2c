//! The leader's decisions, pure: a client's write plus the leader's view of the mesh in, the log
//! entries that carry it out. The scheduler does the placing; this module turns manifests into its
//! problem and its answer into entries.

use mycel_protocol::{
    Runtime,
    api::{InstanceState, MemberStatus, NodeInfo},
    app::{AppKind, Manifest, Relaxation, RuleOp},
    image::{self, ImageRecord},
    ownership::{AppAction, OwnerKey, SignedRequest, manifest_digest},
    placement::{AppRecord, Authorized, Command, ImageEntry, Instance, WriteError, WriteRequest},
};
use mycel_scheduler::{AppSpec, LabelRule, NodeState, NodeView, Placement, Problem, Strategy};

use crate::state::PlacementState;

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
            let generation = state
                .apps
                .get(&manifest.name)
                .map_or(1, |app| app.generation + 1);
            let record = AppRecord {
                manifest: (**manifest).clone(),
                deployed_by: by.clone(),
                deployed_at_ms: view.now_ms,
                generation,
                unplaced: None,
            };
            Ok(vec![put_app(state, view, record, auth)])
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
            record
                .manifest
                .validate()
                .map_err(|e| WriteError::Rejected(e.to_string()))?;
            Ok(vec![put_app(state, view, record, auth)])
        }
        WriteRequest::Remove { name, signed } => {
            if !state.apps.contains_key(name) {
                return Err(WriteError::UnknownApp(name.clone()));
            }
            let auth = accepted(signed);
            state.check_signed(&auth, &AppAction::Stop { app: name.clone() })?;
            Ok(vec![Command::RemoveApp {
                name: name.clone(),
                auth: Some(Box::new(auth)),
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
    for (name, record) in &state.apps {
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

/// The `PutApp` entry for `record`, placed among the apps already deployed.
fn put_app(
    state: &PlacementState,
    view: &View,
    mut record: AppRecord,
    auth: Authorized,
) -> Command {
    let name = record.manifest.name.clone();
    // The signer owns what it changes: the owner rule was checked, or it claims an ownerless app.
    let solution = solve(state, view, Some((&record, &auth.request.key)));
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
    changed: Option<(&AppRecord, &OwnerKey)>,
) -> mycel_scheduler::Solution {
    let mut apps: Vec<AppSpec> = state
        .apps
        .values()
        .filter(|app| changed.is_none_or(|(c, _)| c.manifest.name != app.manifest.name))
        .map(|app| app_spec(app, owner_text(state, app)))
        .collect();
    apps.extend(changed.map(|(app, owner)| app_spec(app, owner.to_string())));
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
        runtime: runtime_of(manifest.kind()),
        replicas: manifest.replicas,
        memory_mb: manifest.memory_mb(),
        cpu_millis: manifest.cpu_millis(),
        required: manifest.placement.required.iter().map(rule).collect(),
        preferred: manifest.placement.preferred.iter().map(rule).collect(),
        strategy: match manifest.placement.strategy {
            Some(mycel_protocol::app::Strategy::Binpack) => Strategy::Binpack,
            _ => Strategy::Spread,
        },
        relaxations: manifest.relaxations().into_iter().collect(),
    }
}

/// The node runtime that runs an app of this kind.
pub fn runtime_of(kind: AppKind) -> Runtime {
    match kind {
        AppKind::Wasm => Runtime::Wasm,
        AppKind::Container => Runtime::Docker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NOW_MS, deploy_by, remove_by, scale_by};
    use std::collections::{BTreeMap, BTreeSet};

    fn node(id: &str, state: NodeState) -> NodeView {
        NodeView {
            id: id.into(),
            state,
            runtimes: BTreeSet::from([Runtime::Wasm]),
            labels: BTreeMap::new(),
            memory_mb: 1024,
            cpu_millis: 2000,
            max_instances: None,
            allowed_owners: None,
            relaxations_allowed: BTreeSet::new(),
        }
    }

    /// An alive wasm node with 8 cores and 8 GiB, and no policy, as membership reports it.
    fn node_info(peer: &str) -> NodeInfo {
        NodeInfo {
            peer_id: peer.into(),
            name: peer.into(),
            status: MemberStatus::Alive,
            addrs: vec![],
            labels: BTreeMap::new(),
            runtimes: vec![Runtime::Wasm],
            resources: mycel_protocol::Resources {
                cpu_cores: 8,
                memory_mb: 8192,
                memory_free_mb: 8192,
                disk_free_mb: 1,
            },
            policy: mycel_protocol::NodePolicy::default(),
            raft: mycel_protocol::api::RaftRole::None,
            last_seen_ms: 0,
            departed: false,
            is_self: false,
        }
    }

    fn view(nodes: Vec<NodeView>) -> View {
        View {
            nodes,
            now_ms: NOW_MS,
            dead_grace_ms: 5000,
        }
    }

    fn deploy(name: &str, replicas: u32) -> WriteRequest {
        let manifest = Manifest::from_toml(&format!(
            "name = \"{name}\"\nversion = \"1\"\nreplicas = {replicas}\n[wasm]\nmodule = \"blake3:{}\"\n",
            "b".repeat(64)
        ))
        .unwrap();
        deploy_by(1, manifest)
    }

    fn write(state: &mut PlacementState, view: &View, request: &WriteRequest) {
        let commands = plan_write(state, view, request).unwrap();
        apply(state, commands);
    }

    fn apply(state: &mut PlacementState, commands: Vec<Command>) {
        for command in &commands {
            state.try_apply(command).unwrap();
        }
    }

    #[test]
    fn deploy_spreads_then_scale_keeps_running_instances() {
        let alive = view(vec![
            node("a", NodeState::Alive),
            node("b", NodeState::Alive),
            node("c", NodeState::Alive),
        ]);
        let mut state = PlacementState::default();
        write(&mut state, &alive, &deploy("web", 2));
        let nodes: BTreeSet<_> = state.instances_of("web").map(|i| i.node.clone()).collect();
        assert_eq!(nodes.len(), 2, "two replicas on two nodes");

        let scale = scale_by(1, "web", 3);
        let before: Vec<Instance> = state.instances_of("web").cloned().collect();
        write(&mut state, &alive, &scale);
        assert_eq!(state.instances_of("web").count(), 3);
        for instance in before {
            assert_eq!(state.instances[&instance.id], instance, "kept as it was");
        }
    }

    #[test]
    fn redeploy_is_a_new_generation_on_the_same_nodes() {
        let alive = view(vec![
            node("a", NodeState::Alive),
            node("b", NodeState::Alive),
        ]);
        let mut state = PlacementState::default();
        write(&mut state, &alive, &deploy("web", 1));
        let first = state.instances_of("web").next().unwrap().clone();
        write(&mut state, &alive, &deploy("web", 1));
        let second = state.instances_of("web").next().unwrap().clone();
        assert_eq!(state.apps["web"].generation, 2);
        assert_eq!(second.id, "web-2-0");
        assert_eq!(second.node, first.node);
        assert_eq!(state.instances.len(), 1);
    }

    #[test]
    fn unknown_apps_are_errors_and_nothing_is_planned() {
        let state = PlacementState::default();
        let v = view(vec![node("a", NodeState::Alive)]);
        for request in [scale_by(1, "nope", 1), remove_by(1, "nope")] {
            assert_eq!(
                plan_write(&state, &v, &request),
                Err(WriteError::UnknownApp("nope".into()))
            );
        }
    }

    #[test]
    fn instances_of_a_dead_node_move_after_the_grace_time() {
        let mut state = PlacementState::default();
        let alive = view(vec![
            node("a", NodeState::Alive),
            node("b", NodeState::Alive),
        ]);
        write(&mut state, &alive, &deploy("web", 1));
        let on = state.instances_of("web").next().unwrap().node.clone();
        let other = if on == "a" { "b" } else { "a" };

        let mut nodes = vec![node(other, NodeState::Alive)];
        nodes.push(node(&on, NodeState::Dead { for_ms: 1000 }));
        assert!(plan_reschedule(&state, &view(nodes.clone())).is_empty());

        nodes[1].state = NodeState::Dead { for_ms: 60_000 };
        let moves = plan_reschedule(&state, &view(nodes));
        assert_eq!(moves.len(), 1);
        apply(&mut state, moves);
        let moved = state.instances_of("web").next().unwrap();
        assert_eq!(moved.node, other);
        assert_eq!(moved.state, InstanceState::Pending);
        assert!(plan_reschedule(&state, &alive).is_empty(), "settled");
    }

    #[test]
    fn the_owners_policy_caps_what_a_node_takes() {
        let info = |peer: &str, policy: mycel_protocol::NodePolicy| NodeInfo {
            policy,
            ..node_info(peer)
        };
        let nodes = node_views(&[
            info(
                "capped",
                mycel_protocol::NodePolicy {
                    max_instances: Some(1),
                    memory_mb: Some(100),
                    cpu_millis: Some(500),
                    ..Default::default()
                },
            ),
            info(
                "private",
                mycel_protocol::NodePolicy {
                    allowed_owners: Some(vec!["someone-else".into()]),
                    ..Default::default()
                },
            ),
            info("open", mycel_protocol::NodePolicy::default()),
        ]);
        assert_eq!(nodes[0].memory_mb, 100);
        assert_eq!(nodes[0].cpu_millis, 500);
        let mut state = PlacementState::default();
        write(&mut state, &view(nodes), &deploy("web", 3));
        let on = |node: &str| state.instances_of("web").filter(|i| i.node == node).count();
        assert_eq!(on("capped"), 1, "one instance at most");
        assert_eq!(on("private"), 0, "only its owners' apps");
        assert_eq!(on("open"), 2);
    }

    #[test]
    fn relaxed_containers_go_only_to_nodes_whose_owner_allows_them() {
        let info = |peer: &str, relax: &[&str]| NodeInfo {
            runtimes: vec![Runtime::Wasm, Runtime::Docker],
            policy: mycel_protocol::NodePolicy {
                container_relax: Some(relax.iter().map(|r| r.to_string()).collect()),
                ..Default::default()
            },
            ..node_info(peer)
        };
        let nodes = node_views(&[
            info("strict", &[]),
            info("lenient", &["writable_root", "run_as_root"]),
            info("newer", &["writable_root", "some_future_relaxation"]),
        ]);
        assert_eq!(
            nodes[1].relaxations_allowed,
            BTreeSet::from([Relaxation::WritableRoot, Relaxation::RunAsRoot])
        );
        assert_eq!(
            nodes[2].relaxations_allowed,
            BTreeSet::from([Relaxation::WritableRoot]),
            "unknown names are ignored"
        );
        let container = |name: &str, relax: &str| {
            let manifest = Manifest::from_toml(&format!(
                "name = \"{name}\"\nversion = \"1\"\nreplicas = 4\n[container]\n\
                 image = \"web:1\"\n[container.relax]\n{relax}\n"
            ))
            .unwrap();
            deploy_by(1, manifest)
        };
        let mut state = PlacementState::default();
        let v = view(nodes);
        write(&mut state, &v, &container("rooted", "run_as_root = true"));
        assert!(
            state.instances_of("rooted").all(|i| i.node == "lenient"),
            "only the lenient node allows run_as_root"
        );
        assert_eq!(state.instances_of("rooted").count(), 4);
        write(&mut state, &v, &container("writer", "writable_root = true"));
        assert!(
            state
                .instances_of("writer")
                .all(|i| i.node == "lenient" || i.node == "newer")
        );
        write(&mut state, &v, &container("hardened", ""));
        assert!(state.instances_of("hardened").any(|i| i.node == "strict"));

        write(
            &mut state,
            &v,
            &container("setuid", "no_new_privileges = false"),
        );
        assert_eq!(state.instances_of("setuid").count(), 0);
        let unplaced = state.apps["setuid"].unplaced.clone().unwrap_or_default();
        assert!(
            unplaced.contains("no alive node allows new_privileges"),
            "{unplaced}"
        );
    }

    #[test]
    fn unplaced_replicas_are_reported_then_placed_when_room_appears() {
        let mut state = PlacementState::default();
        let one = view(vec![node("a", NodeState::Alive)]);
        write(&mut state, &one, &deploy("web", 2));
        assert_eq!(state.instances_of("web").count(), 2);
        // Twenty replicas of 64 MiB do not fit in 1 GiB.
        write(&mut state, &one, &deploy("big", 20));
        assert!(state.apps["big"].unplaced.is_some());
        let two = view(vec![
            node("a", NodeState::Alive),
            node("b", NodeState::Alive),
        ]);
        let moves = plan_reschedule(&state, &two);
        apply(&mut state, moves);
        assert_eq!(state.apps["big"].unplaced, None);
        assert_eq!(state.instances_of("big").count(), 20);
    }

    #[test]
    fn images_are_checked_and_kept_by_name() {
        use mycel_protocol::{
            BlobHash,
            image::{ImageLayer, ImagePart},
        };
        let part = |n: u8| ImagePart {
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            hash: BlobHash([n; 32]),
            size: 10,
        };
        let record = ImageRecord {
            name: "web:1.0".into(),
            config: part(1),
            layers: vec![ImageLayer {
                part: part(2),
                diff_id: part(3).digest,
            }],
        };
        let request = |record: &ImageRecord| WriteRequest::PutImage {
            record: Box::new(record.clone()),
            record_hash: BlobHash([9; 32]),
            by: "me".into(),
        };
        let mut state = PlacementState::default();
        let v = view(vec![node("a", NodeState::Alive)]);
        write(&mut state, &v, &request(&record));
        assert_eq!(state.images["web:1.0"].record, record);
        assert_eq!(state.images["web:1.0"].pushed_by, "me");

        let mut bad_digest = record.clone();
        bad_digest.layers[0].diff_id = "sha256:nope".into();
        let mut bad_name = record.clone();
        bad_name.name = "Web".into();
        let mut no_layers = record.clone();
        no_layers.layers.clear();
        for bad in [bad_digest, bad_name, no_layers] {
            assert!(matches!(
                plan_write(&state, &v, &request(&bad)),
                Err(WriteError::Rejected(_))
            ));
        }
    }
}
