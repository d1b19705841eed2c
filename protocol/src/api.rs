//! JSON shapes of the HTTP API (see the contract). The API server writes them, the CLI and the
//! tests read them; keeping them here keeps both sides in step.
//!
//! The `Seed…` types are the shapes of the seed-compatible endpoints (`/api/apps/…`), kept so
//! clients written against the seed keep working.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::app::{AppKind, Manifest};
use crate::membership::{NodePolicy, Resources, Runtime};

/// `GET /v1/health`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub peer_id: String,
}

/// How a node judges another node's liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    Alive,
    Suspect,
    Dead,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Dead => "dead",
        }
    }
}

/// A node's role in the placement group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RaftRole {
    Leader,
    Voter,
    Learner,
    None,
}

/// One entry of `GET /v1/nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub peer_id: String,
    pub name: String,
    pub status: MemberStatus,
    pub addrs: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub runtimes: Vec<Runtime>,
    pub resources: Resources,
    /// What the node's owner lets the mesh do on it.
    #[serde(default)]
    pub policy: NodePolicy,
    pub raft: RaftRole,
    /// Milliseconds since the answering node last heard from this one (0 for itself).
    pub last_seen_ms: u64,
    /// True when the node announced its departure (a graceful leave), as opposed to going silent.
    #[serde(default)]
    pub departed: bool,
    /// True for the answering node's own entry.
    #[serde(default, rename = "self")]
    pub is_self: bool,
}

/// `GET /v1/nodes`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nodes {
    pub nodes: Vec<NodeInfo>,
}

/// `GET /v1/join-ticket`: what a new node joins this node's mesh with (`mycel up --join`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTicketInfo {
    /// The ticket, one line (see [`crate::ticket`]); a private mesh's carries its secret.
    pub ticket: String,
    /// Whether the mesh is private (the ticket holds its secret) or open.
    pub private: bool,
    pub peer_id: String,
    /// The addresses the ticket names, each ending in `/p2p/<peer id>`.
    pub addrs: Vec<String>,
}

/// Every API error body: a sentence for a person and a stable code for a program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub code: String,
}

/// `POST /v1/blobs`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStored {
    pub hash: crate::BlobHash,
    pub size: u64,
}

/// `POST /v1/images`: the image pushed, its record's blob and its layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePushed {
    /// `name:tag`
    pub image: String,
    /// The image record's blob: `[container] archive` may name it.
    pub hash: crate::BlobHash,
    pub layers: Vec<ImagePushedLayer>,
}

/// `GET /v1/images`: the images pushed to the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Images {
    pub images: Vec<ImageSummary>,
}

/// One image of `GET /v1/images`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// `name:tag`
    pub image: String,
    pub hash: crate::BlobHash,
    /// Docker's image id: the config's digest.
    pub id: String,
    pub layers: usize,
    /// Config and layers, in bytes.
    pub size: u64,
    pub pushed_by: String,
    pub pushed_at_ms: u64,
}

/// One layer of a pushed image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePushedLayer {
    pub digest: String,
    pub hash: crate::BlobHash,
    pub size: u64,
}

/// Where an app instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Placed on a node that has not begun starting it.
    Pending,
    /// Fetching blobs, pulling the image or booting.
    Starting,
    Running,
    Failed,
    Stopped,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Failed => "failed",
            InstanceState::Stopped => "stopped",
        }
    }
}

/// One instance of an app, in `GET /v1/apps/{name}` and the seed's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    /// The peer id of the node it is placed on.
    pub node: String,
    pub state: InstanceState,
    /// The runtime running it: "wasm" or "docker".
    pub runtime: String,
    /// Why its node last failed to start or keep it; absent once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/instances`: every instance of every app, by app then id, in one read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instances {
    pub instances: Vec<AppInstance>,
}

/// One instance, with its app's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInstance {
    pub app: String,
    #[serde(flatten)]
    pub instance: InstanceInfo,
}

/// One entry of `GET /v1/apps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSummary {
    pub name: String,
    pub version: String,
    pub kind: AppKind,
    /// Wanted instances.
    pub replicas: u32,
    /// Instances in state running.
    pub running: u32,
}

/// `GET /v1/apps`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Apps {
    pub apps: Vec<AppSummary>,
}

/// `GET /v1/apps/{name}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub version: String,
    pub kind: AppKind,
    pub replicas: u32,
    pub instances: Vec<InstanceInfo>,
    /// The peer id of the node that accepted the deploy.
    pub deployed_by: String,
    /// The key that owns the app: only requests it signs change the app (see
    /// [`crate::ownership`]). Absent for an app nobody owns yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<crate::ownership::OwnerKey>,
    /// Why some replicas have no node (no node matches, none has room), for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaced: Option<String>,
    pub manifest: Manifest,
    /// The app's latest rollout (absent for an app deployed before rollouts were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutInfo>,
    /// How it scales itself, for an app with `[scale]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleInfo>,
}

/// `"scale"` of `GET /v1/apps/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleInfo {
    pub min: u32,
    pub max: u32,
    /// The count it runs for now.
    pub desired: u32,
    /// The count before the last decision (absent before the autoscaler made one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    /// Why, for a person.
    pub reason: String,
    /// The load the last decision was made on.
    #[serde(default)]
    pub signals: crate::placement::ScaleSignals,
}

/// `"rollout"` of `GET /v1/apps/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutInfo {
    /// The version it replaces (null for a first deploy); after a revert, the one that failed.
    pub from: Option<String>,
    /// The version it brings; after a revert, the restored one.
    pub to: String,
    pub state: crate::placement::RolloutState,
    /// New instances that passed their health checks for `min_healthy_ms`.
    pub healthy: u32,
    /// New instances it aims for (the canaries, until promoted).
    pub total: u32,
    pub message: String,
}

/// `GET /v1/apps/{name}/versions`: the manifests the app was last deployed with, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    pub name: String,
    pub versions: Vec<VersionInfo>,
}

/// One deploy of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    /// `blake3:<hex>` of the manifest, as a signed deploy names it.
    pub digest: String,
    /// The key that signed the deploy.
    pub who: String,
    /// Milliseconds since the Unix epoch.
    pub when: u64,
    /// Whether the app runs this manifest now.
    pub current: bool,
}

/// `POST /v1/apps/{name}/rollback`: the version to bring back; absent, the one before the
/// current.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default)]
    pub version: Option<String>,
}

/// `GET /v1/cluster`: the placement group as the answering node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Peer id of the leader; null while there is none (an election, or no quorum).
    pub leader: Option<String>,
    pub term: u64,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// Index of the last committed log entry, if any.
    pub committed: Option<u64>,
    /// This node is not in touch with a leader (just restarted, an election, or no quorum): its
    /// view, and `term`, are the last it knows and may be behind.
    #[serde(default)]
    pub catching_up: bool,
}

impl Cluster {
    /// The role `peer_id` plays in the group this view describes.
    pub fn role_of(&self, peer_id: &str) -> RaftRole {
        if self.leader.as_deref() == Some(peer_id) {
            RaftRole::Leader
        } else if self.voters.iter().any(|v| v == peer_id) {
            RaftRole::Voter
        } else if self.learners.iter().any(|l| l == peer_id) {
            RaftRole::Learner
        } else {
            RaftRole::None
        }
    }
}

/// `201` answer of `POST /v1/apps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub name: String,
    pub version: String,
}

/// Body of `POST /v1/apps/{name}/scale`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub replicas: u32,
}

/// One log line of an instance: an event of `GET /v1/apps/{name}/logs` (its data, as JSON), and
/// a frame of the logs protocol between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    /// The instance that wrote the line.
    pub instance: String,
    /// The peer id of the node it runs on.
    pub node: String,
    /// When the line was completed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line, without its newline.
    pub line: String,
}

/// An app found through DHT discovery: an entry of `GET /v1/discover/apps`, and the answer of
/// `GET /v1/discover/apps/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredApp {
    pub name: String,
    pub version: String,
    pub kind: AppKind,
    /// The peer id of the key that deployed the app.
    pub publisher: String,
    /// Peer ids of the nodes that announce they run this version, by peer id.
    pub providers: Vec<String>,
    pub manifest_hash: crate::BlobHash,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `GET /v1/discover/apps`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredApps {
    pub apps: Vec<DiscoveredApp>,
}

/// Answer of the seed's `POST /api/apps/deploy_app`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedDeployed {
    pub app_id: String,
    pub version: String,
    /// Always "deployed".
    pub status: String,
    /// What a seed-form body asked for that mycel does not apply, one sentence each (see
    /// `mycel_protocol::seed`); absent for a manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One entry of the seed's `GET /api/apps/list_apps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedAppEntry {
    pub app_id: String,
    pub name: String,
    pub version: String,
    pub replicas: u32,
    pub running: u32,
    /// See [`seed_status`].
    pub status: String,
}

/// The seed's `GET /api/apps/list_apps`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedAppList {
    pub apps: Vec<SeedAppEntry>,
}

/// The seed's `GET /api/apps/get_app_status?app_id=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedAppStatus {
    pub app_id: String,
    /// See [`seed_status`].
    pub status: String,
    pub replicas: u32,
    pub running: u32,
    pub instances: Vec<InstanceInfo>,
}

/// Body of the seed's `POST /api/apps/stop_app`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedAppRef {
    pub app_id: String,
}

/// Body of the seed's `POST /api/apps/scale_app`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedScale {
    pub app_id: String,
    pub replicas: u32,
}

/// The seed's one-word app status: "stopped" when no replica is wanted, "running" when every
/// wanted replica runs (more is still "running", as during a scale-down), "pending" when none
/// runs yet, "degraded" when only some do.
pub fn seed_status(replicas: u32, running: u32) -> &'static str {
    if replicas == 0 {
        "stopped"
    } else if running >= replicas {
        "running"
    } else if running == 0 {
        "pending"
    } else {
        "degraded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_status_reads_replicas_and_running() {
        for (replicas, running, status) in [
            (0, 0, "stopped"),
            (0, 2, "stopped"),
            (3, 0, "pending"),
            (3, 1, "degraded"),
            (3, 3, "running"),
            (3, 4, "running"),
            (1, 1, "running"),
        ] {
            assert_eq!(
                seed_status(replicas, running),
                status,
                "{replicas}/{running}"
            );
        }
    }

    #[test]
    fn instance_states_use_their_wire_names() {
        for state in [
            InstanceState::Pending,
            InstanceState::Starting,
            InstanceState::Running,
            InstanceState::Failed,
            InstanceState::Stopped,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), json!(state.as_str()));
        }
    }

    #[test]
    fn app_status_matches_the_contract() {
        let manifest = Manifest::from_json(
            br#"{"name":"hello","version":"1","wasm":{"module":"hello.wasm"}}"#,
        )
        .unwrap();
        let status = AppStatus {
            name: "hello".into(),
            version: "1".into(),
            kind: AppKind::Wasm,
            replicas: 1,
            instances: vec![InstanceInfo {
                id: "hello-1".into(),
                node: "12D3KooW".into(),
                state: InstanceState::Running,
                runtime: "wasm".into(),
                error: None,
            }],
            deployed_by: "12D3KooW".into(),
            owner: None,
            unplaced: None,
            manifest,
            rollout: Some(RolloutInfo {
                from: None,
                to: "1".into(),
                state: crate::placement::RolloutState::AwaitingPromotion,
                healthy: 1,
                total: 1,
                message: "waiting".into(),
            }),
            scale: None,
        };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(
            value["rollout"],
            json!({"from": null, "to": "1", "state": "awaiting_promotion", "healthy": 1,
                   "total": 1, "message": "waiting"})
        );
        assert_eq!(value["kind"], "wasm");
        assert_eq!(
            value["instances"][0],
            json!({"id": "hello-1", "node": "12D3KooW", "state": "running", "runtime": "wasm"})
        );
        assert!(value.get("unplaced").is_none());
        assert_eq!(serde_json::from_value::<AppStatus>(value).unwrap(), status);
    }

    #[test]
    fn cluster_without_a_leader_says_null() {
        let cluster = Cluster {
            leader: None,
            term: 3,
            voters: vec!["a".into()],
            learners: vec![],
            committed: None,
            catching_up: true,
        };
        assert_eq!(
            serde_json::to_value(&cluster).unwrap(),
            json!({"leader": null, "term": 3, "voters": ["a"], "learners": [], "committed": null,
                   "catching_up": true})
        );
        // An answer from a node older than `catching_up` still reads.
        let old: Cluster = serde_json::from_value(
            json!({"leader": null, "term": 3, "voters": ["a"], "learners": [], "committed": null}),
        )
        .unwrap();
        assert!(!old.catching_up);
    }

    #[test]
    fn a_scale_request_refuses_unknown_fields() {
        let ok: ScaleRequest = serde_json::from_str(r#"{"replicas": 3}"#).unwrap();
        assert_eq!(ok, ScaleRequest { replicas: 3 });
        assert!(serde_json::from_str::<ScaleRequest>(r#"{"replica": 3}"#).is_err());
        assert!(serde_json::from_str::<ScaleRequest>(r#"{"replicas": -1}"#).is_err());
    }
}

/// `GET /v1/secrets/key`: the public half of the mesh's secrets key, which values are sealed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsKeyAnswer {
    /// `x25519:<64 hex>`.
    pub key: String,
}

/// `GET /v1/apps/{name}/secrets`: names only; a value never comes back out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretList {
    pub app: String,
    pub secrets: Vec<SecretEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEntry {
    pub name: String,
    pub set_at_ms: u64,
}

/// Answer of `PUT` and `DELETE /v1/apps/{name}/secrets/{secret}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSet {
    pub app: String,
    pub name: String,
}

/// `GET /v1/volumes`: every app's volumes (`?app=` one app's), stopped apps' included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeList {
    pub volumes: Vec<VolumeEntry>,
}

/// One volume of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntry {
    pub app: String,
    pub name: String,
    /// Where the app sees it (absent for an app that is stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub size_mb: u64,
    /// Whether the app is deployed (a stopped app keeps its volumes until a purge).
    pub deployed: bool,
    /// The nodes that hold a copy.
    pub nodes: Vec<String>,
    /// The latest snapshot in the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::placement::VolumeSnapshot>,
}
