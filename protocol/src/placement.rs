//! What the placement group agrees on: the apps, where their instances run, and the entries of
//! its log that change them. Every entry carries every decision (placements, timestamps) so that
//! applying it is deterministic: the leader decides, every replica merely applies.

mod rollout;
mod volumes;

use serde::{Deserialize, Serialize};

pub use rollout::{MAX_VERSIONS, Rollout, RolloutState, VersionRecord};
pub use volumes::{AppVolumes, VolumeRecord, VolumeSnapshot};

use crate::{
    BlobHash,
    api::InstanceState,
    app::Manifest,
    image::ImageRecord,
    ownership::{OwnerKey, SignedRequest},
    secrets::SealedSecret,
};

/// A deployed app, as the group holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub manifest: Manifest,
    /// Peer id of the node that took the deploy.
    pub deployed_by: String,
    /// Wall-clock milliseconds, from the leader that committed the deploy.
    pub deployed_at_ms: u64,
    /// Bumped by every deploy of the app: instances of a new generation replace the old ones.
    pub generation: u64,
    /// Why some replicas have no node, when some have none.
    pub unplaced: Option<String>,
    /// The autoscaler's last decision, for an app with `[scale]` (absent until it makes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleStatus>,
}

impl AppRecord {
    /// How many instances it should run: the autoscaler's count for an app with `[scale]` once
    /// it has decided one, else the manifest's `replicas`.
    pub fn replicas(&self) -> u32 {
        match (&self.manifest.scale, &self.scale) {
            (Some(_), Some(status)) => status.desired,
            _ => self.manifest.replicas,
        }
    }
}

/// An autoscaler decision, as the group holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleStatus {
    pub desired: u32,
    /// The count before this decision.
    #[serde(default)]
    pub from: u32,
    /// Why, for a person (`5.8 in flight per instance, target 2`).
    pub reason: String,
    /// What the autoscaler saw when it decided.
    #[serde(default)]
    pub signals: ScaleSignals,
    /// The leader's clock when it decided.
    pub at_ms: u64,
}

/// The load an autoscaler decision was made on, summed over the nodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaleSignals {
    /// Requests in flight, averaged over the app's window.
    pub in_flight: f64,
    /// Memory its instances used.
    pub memory_bytes: u64,
    /// CPU its instances used, in cores, averaged over the window.
    #[serde(default)]
    pub cpu_cores: f64,
}

/// What one node saw of each app's load since its last report: the leader's autoscaler sums
/// these over the nodes. Sent to the leader about every second; never written to the log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub apps: Vec<AppLoad>,
}

/// The most apps one load report may name.
pub const MAX_LOAD_APPS: usize = 4096;

/// One app's load at one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppLoad {
    pub app: String,
    /// Requests in flight through this node's gateway, averaged over the report's window
    /// (requests held for an app at zero count too).
    pub in_flight: f64,
    /// Requests this node's gateway took for the app in the window.
    pub requests: u64,
    /// Memory the app's instances on this node use now.
    #[serde(default)]
    pub memory_bytes: u64,
    /// The app's instances running on this node.
    #[serde(default)]
    pub instances: u32,
    /// CPU its instances on this node used over the window, in cores.
    #[serde(default)]
    pub cpu_cores: f64,
}

/// One replica of an app, placed on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `<app>-<generation>-<replica>`: unique, and readable in logs.
    pub id: String,
    pub app: String,
    pub replica: u32,
    /// Peer id of the node that runs it.
    pub node: String,
    pub state: InstanceState,
    /// Wall-clock milliseconds of the last state change.
    pub since_ms: u64,
    /// Why its node last failed to start or keep it (the owner's policy refused it, its image
    /// could not be loaded, it failed its health checks); cleared once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The longest failure reason an instance report carries; longer ones are cut.
pub const MAX_INSTANCE_ERROR_BYTES: usize = 512;

/// `why` as the placement state keeps it: at most [`MAX_INSTANCE_ERROR_BYTES`], cut on a
/// character boundary.
pub fn instance_error(why: &str) -> String {
    let mut end = why.len().min(MAX_INSTANCE_ERROR_BYTES);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    why[..end].to_string()
}

impl Instance {
    pub fn id_for(app: &str, generation: u64, replica: u32) -> String {
        format!("{app}-{generation}-{replica}")
    }

    /// The generation its id names (`None` for an id not made by [`Instance::id_for`]).
    pub fn generation(&self) -> Option<u64> {
        let rest = self.id.strip_prefix(&self.app)?.strip_prefix('-')?;
        rest.split_once('-')?.0.parse().ok()
    }
}

/// A container image pushed to the mesh, as the group holds it under its `name:tag`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    pub record: ImageRecord,
    /// The record's own blob: what `[container] archive = "blake3:…"` names.
    pub record_hash: BlobHash,
    /// Peer id of the node that took the push.
    pub pushed_by: String,
    pub pushed_at_ms: u64,
}

/// One entry of the placement log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Deploys (or redeploys, or rescales) an app: its record and its whole list of instances.
    /// Instances that keep their id and node keep the state their node reported.
    PutApp {
        app: Box<AppRecord>,
        instances: Vec<Instance>,
        /// The signed request this carries out (absent in entries written before ownership).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<Box<Authorized>>,
        /// The rollout a deploy starts (absent for a scale, and in older entries).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollout: Option<Box<Rollout>>,
    },
    /// One step of an app's rollout: its record (a revert restores the previous one), its whole
    /// list of instances and its rollout. Applies only when the app's rollout is still at step
    /// `after_step`: a step planned before a promote or a new deploy changes nothing.
    Roll {
        app: Box<AppRecord>,
        instances: Vec<Instance>,
        rollout: Box<Rollout>,
        after_step: u64,
    },
    /// The owner lets a rollout's canaries replace the rest of the old instances.
    Promote { app: String, auth: Box<Authorized> },
    /// The autoscaler's decision for an app with `[scale]`: its count and why, and its instances
    /// placed for it. Applies only to the generation it was planned for.
    Autoscale {
        app: String,
        generation: u64,
        status: ScaleStatus,
        instances: Vec<Instance>,
    },
    /// Moves an app's instances (a node died, or room appeared for unplaced replicas).
    Place {
        app: String,
        instances: Vec<Instance>,
        unplaced: Option<String>,
    },
    RemoveApp {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<Box<Authorized>>,
        /// Its volumes go too (signed as `StopAndPurge`); otherwise they are kept for its owner.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        purge: bool,
        /// It stops even though other apps depend on it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// A node reports the states of the instances it runs.
    Report {
        node: String,
        at_ms: u64,
        states: Vec<(String, InstanceState)>,
        /// Why failed instances among `states` failed (absent in entries from older nodes).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        errors: Vec<(String, String)>,
    },
    /// Names an image pushed to the mesh (a later push of the same `name:tag` replaces it).
    PutImage { image: Box<ImageEntry> },
    /// Sets one of an app's secrets (the app need not exist yet: the signer then claims its
    /// name). When the app runs with that secret, `roll` is its new generation, rolled out so
    /// that every instance restarts with the new value, never all at once.
    PutSecret {
        app: String,
        name: String,
        sealed: Box<SealedSecret>,
        auth: Box<Authorized>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        roll: Option<Box<SecretRoll>>,
    },
    RemoveSecret {
        app: String,
        name: String,
        auth: Box<Authorized>,
    },
    /// A node took a snapshot of one of an app's volumes. Applies only when it is newer than
    /// the one the group holds.
    PutSnapshot {
        app: String,
        volume: String,
        snapshot: Box<VolumeSnapshot>,
    },
    /// Someone asked for a snapshot of a volume: its `requested` count goes up by one.
    RequestSnapshot { app: String, volume: String },
    /// `node` holds a whole copy of the snapshot `index` of a volume.
    SnapshotCopied {
        app: String,
        volume: String,
        index: BlobHash,
        node: String,
    },
}

/// The app rolled again for a changed secret: as [`Command::PutApp`] would put it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecretRoll {
    pub app: AppRecord,
    pub instances: Vec<Instance>,
    pub rollout: Option<Rollout>,
}

/// One secret as the group holds it: sealed to the mesh's secrets key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub sealed: SealedSecret,
    /// The leader's clock when it was set.
    pub set_at_ms: u64,
}

/// A signed app request as the leader accepted it: every replica checks it again when it applies
/// the entry (signature, freshness against `accepted_at_ms`, owner, replay), so an entry that
/// does not hold up changes nothing anywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorized {
    pub request: SignedRequest,
    /// The leader's wall clock when it planned the entry: the "now" that freshness is checked
    /// against, carried in the entry so that applying it never reads a clock.
    pub accepted_at_ms: u64,
}

/// A write a client asks for, as one node forwards it to the leader. The leader turns it into
/// [`Command`]s (it runs the scheduler); followers never decide anything.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WriteRequest {
    /// `signed` asks for exactly this: the deploy of this manifest, the scale of this app to
    /// these replicas, the removal of this app.
    Deploy {
        manifest: Box<Manifest>,
        by: String,
        signed: Box<SignedRequest>,
    },
    Scale {
        name: String,
        replicas: u32,
        signed: Box<SignedRequest>,
    },
    Remove {
        name: String,
        signed: Box<SignedRequest>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        purge: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    Promote {
        name: String,
        signed: Box<SignedRequest>,
    },
    /// A gateway holds a request for an app scaled to zero: one instance should start. Asked by
    /// any node, unsigned (it changes nothing the owner chose); a no-op unless the app is at zero.
    Activate { name: String },
    Report {
        node: String,
        states: Vec<(String, InstanceState)>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        errors: Vec<(String, String)>,
    },
    PutImage {
        record: Box<ImageRecord>,
        record_hash: BlobHash,
        by: String,
    },
    SetSecret {
        app: String,
        name: String,
        sealed: Box<SealedSecret>,
        signed: Box<SignedRequest>,
    },
    RemoveSecret {
        app: String,
        name: String,
        signed: Box<SignedRequest>,
    },
    /// A node took a snapshot of a volume (sent by that node, unsigned: members are trusted
    /// with placement, as with `Report`).
    PutSnapshot {
        app: String,
        volume: String,
        snapshot: Box<VolumeSnapshot>,
    },
    /// Someone asked for a snapshot of a volume: its `requested` count goes up by one.
    RequestSnapshot { app: String, volume: String },
    /// `node` holds a whole copy of the snapshot `index` of a volume.
    SnapshotCopied {
        app: String,
        volume: String,
        index: BlobHash,
        node: String,
    },
}

/// What a committed write did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// The log index that holds the write: a replica that has applied it shows the write.
    pub log_index: u64,
}

/// Why a write did not commit. Crosses the wire from leader to the forwarding node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    /// No leader is reachable, or the leader cannot reach a majority of the voters: nothing was
    /// written; try again later.
    #[error("the placement group has no quorum: {0}")]
    NoQuorum(String),
    /// The leader is known but this node could not finish the exchange with it: nothing may have
    /// been written; try again, or through another node.
    #[error("the placement group's leader cannot be reached: {0}")]
    LeaderUnreachable(String),
    /// The leader proposed the write but did not see it commit in time: it may still commit.
    /// Look before writing again (a signed request sent again is refused as a replay).
    #[error("the write was not confirmed in time (it may still commit): {0}")]
    Unconfirmed(String),
    /// The placement group on the node asked has stopped (the node is shutting down): ask
    /// another node.
    #[error("the placement group on this node has stopped")]
    Stopped,
    #[error("no app named '{0}'")]
    UnknownApp(String),
    #[error("{0}")]
    Rejected(String),
    /// The app belongs to another key.
    #[error("app '{app}' is owned by {owner}; this request is signed by {signer}")]
    NotOwner {
        app: String,
        owner: OwnerKey,
        signer: OwnerKey,
    },
    /// The request's signature does not hold (or does not sign what the request asks for).
    #[error("{0}")]
    BadSignature(String),
    /// The request was signed too long ago (or too far ahead), or it is a replay: a request as
    /// new or newer from the same key for the same app was accepted already.
    #[error("{0}")]
    Stale(String),
    /// The node asked is not the leader (any more): ask again.
    #[error("not the leader")]
    NotLeader,
    /// Another app already publishes this port: every node listens on it for that app.
    #[error("port {port} is already published by app '{app}'")]
    PortTaken { port: u16, app: String },
    /// The manifest names a secret the app does not have.
    #[error("app '{app}' has no secret '{name}': set it first (mycel secret set {app} {name})")]
    MissingSecret { app: String, name: String },
    /// The manifest depends on an app that is not deployed.
    #[error("app '{app}' depends on '{dependency}', which is not deployed: deploy it first")]
    MissingDependency { app: String, dependency: String },
    /// A dependency is deployed at a version outside the manifest's requirement.
    #[error(
        "dependency '{dependency}' is at version {version}, which does not satisfy {requirement}"
    )]
    DependencyVersion {
        dependency: String,
        version: String,
        requirement: String,
    },
    /// Other apps depend on the app being stopped (force it to stop anyway).
    #[error("app '{app}' is a dependency of {}: stop those first, or force it", by.join(", "))]
    DependedOn { app: String, by: Vec<String> },
}

impl WriteError {
    /// The API error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            WriteError::NoQuorum(_) | WriteError::LeaderUnreachable(_) | WriteError::NotLeader => {
                "no_quorum"
            }
            WriteError::Unconfirmed(_) => "commit_unconfirmed",
            WriteError::Stopped => "stopping",
            WriteError::UnknownApp(_) => "app_not_found",
            WriteError::Rejected(_) => "rejected",
            WriteError::NotOwner { .. } => "not_owner",
            WriteError::BadSignature(_) => "bad_signature",
            WriteError::Stale(_) => "stale_request",
            WriteError::PortTaken { .. } => "port_taken",
            WriteError::MissingSecret { .. } => "missing_secret",
            WriteError::MissingDependency { .. } => "missing_dependency",
            WriteError::DependencyVersion { .. } => "dependency_version",
            WriteError::DependedOn { .. } => "depended_on",
        }
    }
}
