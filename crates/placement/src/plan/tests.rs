use super::*;
use crate::testing::{NOW_MS, deploy_by, remove_by, scale_by};
use mycel_protocol::placement::RolloutState;
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

/// The node's report that `id` runs (and passes its health checks) since `at_ms`.
fn running(state: &mut PlacementState, id: &str, at_ms: u64) {
    let node = state.instances[id].node.clone();
    apply(
        state,
        vec![Command::Report {
            node,
            at_ms,
            states: vec![(id.into(), InstanceState::Running)],
            errors: vec![],
        }],
    );
}

#[test]
fn redeploy_rolls_a_new_generation_out_on_the_same_nodes() {
    let mut alive = view(vec![
        node("a", NodeState::Alive),
        node("b", NodeState::Alive),
    ]);
    let mut state = PlacementState::default();
    write(&mut state, &alive, &deploy("web", 1));
    let first = state.instances_of("web").next().unwrap().clone();
    running(&mut state, &first.id, NOW_MS);
    // The first deploy's rollout ends once its instance is healthy long enough.
    alive.now_ms = NOW_MS + 2000;
    let steps = plan_rollouts(&state, &alive);
    apply(&mut state, steps);
    assert_eq!(state.rollouts["web"].state, RolloutState::Succeeded);

    write(&mut state, &alive, &deploy("web", 1));
    assert_eq!(state.apps["web"].generation, 2);
    let second = state.instances["web-2-0"].clone();
    assert_eq!(second.node, first.node);
    assert_eq!(
        state.instances.len(),
        2,
        "the new one starts beside the old"
    );
    assert!(
        plan_rollouts(&state, &alive).is_empty(),
        "nothing to do yet"
    );

    running(&mut state, "web-2-0", alive.now_ms);
    alive.now_ms += 1999;
    assert!(
        plan_rollouts(&state, &alive).is_empty(),
        "not healthy long enough"
    );
    alive.now_ms += 1;
    let steps = plan_rollouts(&state, &alive);
    apply(&mut state, steps);
    let ids: Vec<&String> = state.instances.keys().collect();
    assert_eq!(ids, ["web-2-0"]);
    let rollout = &state.rollouts["web"];
    assert_eq!(rollout.state, RolloutState::Succeeded);
    assert_eq!(rollout.from.as_ref().unwrap().generation, 1);
    assert!(!rollout.active);
    let versions: Vec<&str> = state.versions["web"]
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(versions, ["1", "1"]);
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
