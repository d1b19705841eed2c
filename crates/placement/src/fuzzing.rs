//! The placement group's decoders, reachable by the fuzz targets (`tests/fuzz`): the frames a
//! peer sends ([`rpc`]) and answers ([`reply`]), a snapshot's data ([`snapshot`]), and what a node
//! does with what they carry that needs no Raft: the leader plans a forwarded write, every replica
//! applies log entries. [`samples`] are valid frames made by the real encoders, for seed corpora.

use std::collections::{BTreeMap, BTreeSet};

use mycel_protocol::{
    Keypair, Manifest, Runtime,
    api::InstanceState,
    ownership::{AppAction, SignedRequest},
    placement::{Command, WriteError, WriteOutcome, WriteRequest},
};
use mycel_scheduler::{NodeState, NodeView};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
        VoteResponse,
    },
};

use crate::{
    PlacementState,
    network::{self, Rpc, RpcReply},
    plan::{self, View},
    storage,
};

/// Decodes `frame` as a peer's placement request, then does what needs no Raft with it: a
/// forwarded write is planned against `state` as the leader would, appended entries are applied
/// to a copy of `state` as a replica would once they commit. With `signer`, a forwarded deploy,
/// scale or stop is signed again by that key for what it asks (a fuzzer cannot forge a
/// signature; any peer can sign its own requests), so that planning sees it.
pub fn rpc(frame: &[u8], state: &PlacementState, signer: Option<&Keypair>) -> Result<(), String> {
    match network::decode_rpc(frame)? {
        Rpc::Write(mut request) => {
            if let Some(signer) = signer {
                sign_again(&mut request, signer);
            }
            let commands = plan::plan_write(state, &view(), &request).map_err(|e| e.to_string())?;
            let mut next = state.clone();
            for command in &commands {
                next.apply(command);
            }
        }
        Rpc::Append(request) => {
            let mut next = state.clone();
            for entry in &request.entries {
                if let EntryPayload::Normal(command) = &entry.payload {
                    next.apply(command);
                }
            }
        }
        Rpc::Load(report) => {
            // What the leader does with a report: keep it, sum it on the next tick.
            let mut autoscaler = crate::load::Autoscaler::default();
            autoscaler.report("fuzzer".into(), report, view().now_ms);
            autoscaler.tick(state, view().now_ms);
        }
        Rpc::Vote(_) | Rpc::Snapshot(_) => {}
    }
    Ok(())
}

/// Replaces the signature of a deploy, scale or stop with `signer`'s, made at the planning view's
/// clock, for exactly what the request asks.
fn sign_again(request: &mut WriteRequest, signer: &Keypair) {
    let (action, signed) = match request {
        WriteRequest::Deploy {
            manifest, signed, ..
        } => (AppAction::deploy(manifest), signed),
        WriteRequest::Scale {
            name,
            replicas,
            signed,
        } => (
            AppAction::Scale {
                app: name.clone(),
                replicas: *replicas,
            },
            signed,
        ),
        WriteRequest::Remove {
            name,
            signed,
            purge: false,
            ..
        } => (AppAction::Stop { app: name.clone() }, signed),
        WriteRequest::Remove { name, signed, .. } => {
            (AppAction::StopAndPurge { app: name.clone() }, signed)
        }
        WriteRequest::Promote { name, signed } => {
            (AppAction::Promote { app: name.clone() }, signed)
        }
        WriteRequest::SetSecret {
            app,
            name,
            sealed,
            signed,
        } => (
            AppAction::SetSecret {
                app: app.clone(),
                name: name.clone(),
                sealed: sealed.digest(),
            },
            signed,
        ),
        WriteRequest::RemoveSecret { app, name, signed } => (
            AppAction::RemoveSecret {
                app: app.clone(),
                name: name.clone(),
            },
            signed,
        ),
        WriteRequest::Report { .. }
        | WriteRequest::PutImage { .. }
        | WriteRequest::PutSnapshot { .. }
        | WriteRequest::RequestSnapshot { .. }
        | WriteRequest::SnapshotCopied { .. }
        | WriteRequest::Activate { .. } => return,
    };
    if let Ok(again) = SignedRequest::sign(signer, view().now_ms, action) {
        **signed = again;
    }
}

/// Decodes `frame` as the answer to a placement request.
pub fn reply(frame: &[u8]) -> Result<(), String> {
    network::decode_reply(frame).map(|_| ())
}

/// Decodes `data` as an installed snapshot's, and replans its apps as a new leader would.
pub fn snapshot(data: &[u8]) -> Result<(), String> {
    let state = storage::decode_snapshot(data).map_err(|e| e.to_string())?;
    plan::plan_reschedule(&state, &view());
    Ok(())
}

/// Two alive nodes that run every runtime: what the leader plans writes against.
fn view() -> View {
    let node = |id: &str| NodeView {
        id: id.to_owned(),
        state: NodeState::Alive,
        runtimes: Runtime::ALL.into_iter().collect(),
        labels: BTreeMap::new(),
        memory_mb: 8192,
        cpu_millis: 8000,
        max_instances: None,
        allowed_owners: None,
        relaxations_allowed: BTreeSet::new(),
    };
    View {
        nodes: vec![node("node-a"), node("node-b")],
        now_ms: 1_700_000_000_000,
        dead_grace_ms: 60_000,
    }
}

/// Valid frames and snapshot data, made by the real encoders: `(name, target, bytes)` where
/// target is `rpc`, `reply` or `snapshot`.
pub fn samples() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let report = WriteRequest::Report {
        node: "node-a".into(),
        states: vec![("web-1-0".into(), InstanceState::Running)],
        errors: vec![],
    };
    let state = PlacementState::default();
    let vote = Vote::new_committed(3, 7);
    let log_id = LogId::new(CommittedLeaderId::new(3, 7), 12);
    let entry = |command: Command| Entry {
        log_id,
        payload: EntryPayload::Normal(command),
    };
    let snapshot_data = mycel_protocol::encode(&storage::SnapshotBody {
        state: state.clone(),
    })
    .expect("a snapshot encodes");
    let signer = Keypair::ed25519_from_bytes([5; 32]).expect("an ed25519 key");
    let signed = |action: AppAction| {
        Box::new(SignedRequest::sign(&signer, view().now_ms, action).expect("signs"))
    };
    let manifest = Manifest::from_toml(
        "name = \"web\"\nversion = \"1.0.0\"\nreplicas = 2\n[wasm]\nmodule = \"blake3:0000000000000000000000000000000000000000000000000000000000000000\"\n",
    )
    .expect("a valid manifest");
    let deploy = WriteRequest::Deploy {
        signed: signed(AppAction::deploy(&manifest)),
        manifest: Box::new(manifest),
        by: "node-a".into(),
    };
    let scale = WriteRequest::Scale {
        name: "web".into(),
        replicas: 3,
        signed: signed(AppAction::Scale {
            app: "web".into(),
            replicas: 3,
        }),
    };
    let remove = WriteRequest::Remove {
        name: "web".into(),
        signed: signed(AppAction::Stop { app: "web".into() }),
        purge: false,
        force: false,
    };
    let rpcs = [
        ("write-report", Rpc::Write(report)),
        ("write-deploy", Rpc::Write(deploy)),
        ("write-scale", Rpc::Write(scale)),
        ("write-remove", Rpc::Write(remove)),
        (
            "vote",
            Rpc::Vote(VoteRequest::new(Vote::new(4, 7), Some(log_id))),
        ),
        (
            "append",
            Rpc::Append(AppendEntriesRequest {
                vote,
                prev_log_id: None,
                entries: vec![entry(Command::Report {
                    node: "node-a".into(),
                    at_ms: 1,
                    states: vec![("web-1-0".into(), InstanceState::Failed)],
                    errors: vec![("web-1-0".into(), "refused".into())],
                })],
                leader_commit: Some(log_id),
            }),
        ),
        (
            "snapshot-chunk",
            Rpc::Snapshot(InstallSnapshotRequest {
                vote,
                meta: SnapshotMeta {
                    last_log_id: Some(log_id),
                    last_membership: StoredMembership::default(),
                    snapshot_id: "3-7-12".into(),
                },
                offset: 0,
                data: snapshot_data.clone(),
                done: true,
            }),
        ),
    ];
    let replies = [
        (
            "reply-append",
            RpcReply::Append(Ok(AppendEntriesResponse::Success)),
        ),
        (
            "reply-vote",
            RpcReply::Vote(Ok(VoteResponse {
                vote,
                vote_granted: true,
                last_log_id: Some(log_id),
            })),
        ),
        (
            "reply-write",
            RpcReply::Write(Ok(WriteOutcome { log_index: 12 })),
        ),
        (
            "reply-not-leader",
            RpcReply::Write(Err(WriteError::NotLeader)),
        ),
        ("reply-refused", RpcReply::Refused("no".into())),
    ];
    let mut out: Vec<(&'static str, &'static str, Vec<u8>)> = Vec::new();
    for (name, rpc) in &rpcs {
        out.push((
            name,
            "rpc",
            mycel_protocol::encode(rpc).expect("a sample encodes"),
        ));
    }
    for (name, reply) in &replies {
        out.push((
            name,
            "reply",
            mycel_protocol::encode(reply).expect("a sample encodes"),
        ));
    }
    out.push(("snapshot", "snapshot", snapshot_data));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deploy forwarded by a peer is checked by the leader as the API checks it: a manifest
    /// no API would take (here four billion replicas, which the leader would set out to place)
    /// is refused, whoever signed it.
    #[test]
    fn the_leader_refuses_a_forwarded_manifest_the_api_would_refuse() {
        let signer = Keypair::ed25519_from_bytes([5; 32]).unwrap();
        let deploy = |edit: &dyn Fn(&mut Manifest)| {
            let mut manifest = Manifest::from_toml(
                "name = \"web\"\nversion = \"1\"\n[wasm]\nmodule = \"blake3:0000000000000000000000000000000000000000000000000000000000000000\"\n",
            )
            .unwrap();
            edit(&mut manifest);
            let signed = SignedRequest::sign(&signer, view().now_ms, AppAction::deploy(&manifest));
            let request = WriteRequest::Deploy {
                manifest: Box::new(manifest),
                by: "node-a".into(),
                signed: Box::new(signed.unwrap()),
            };
            plan::plan_write(&PlacementState::default(), &view(), &request)
        };
        assert!(deploy(&|_| {}).is_ok());
        for edit in [
            &|m: &mut Manifest| m.replicas = 4_000_000_000,
            &|m: &mut Manifest| m.name = "../etc".into(),
            &|m: &mut Manifest| m.resources.cpu = f64::NAN,
            &|m: &mut Manifest| m.wasm.as_mut().unwrap().module = "app.wasm".into(),
        ] as [&dyn Fn(&mut Manifest); 4]
        {
            let refused = deploy(edit).unwrap_err();
            assert!(matches!(refused, WriteError::Rejected(_)), "{refused:?}");
        }
    }

    /// A snapshot chunk that ends past the largest snapshot is refused before openraft sees it
    /// (it would grow its buffer to the offset).
    #[test]
    fn a_snapshot_chunk_far_past_the_largest_snapshot_is_refused() {
        let chunk = |offset: u64| {
            let log_id = LogId::new(CommittedLeaderId::new(3, 7), 12);
            mycel_protocol::encode(&Rpc::Snapshot(InstallSnapshotRequest {
                vote: Vote::new_committed(3, 7),
                meta: SnapshotMeta {
                    last_log_id: Some(log_id),
                    last_membership: StoredMembership::default(),
                    snapshot_id: "3-7-12".into(),
                },
                offset,
                data: vec![0; 16],
                done: false,
            }))
            .unwrap()
        };
        assert!(network::decode_rpc(&chunk(0)).is_ok());
        let limit = storage::LOCAL_RECORD_LIMIT as u64;
        assert!(network::decode_rpc(&chunk(limit - 16)).is_ok());
        for offset in [limit - 15, 1 << 40, u64::MAX - 4] {
            let error = network::decode_rpc(&chunk(offset)).unwrap_err();
            assert!(error.contains("snapshot chunk"), "{error}");
        }
    }
}
