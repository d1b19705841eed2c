//! What nodes tell each other: the capability advert and the departure notice, which a node only
//! ever says about itself, and the suspicion, which a node says about a neighbour that stopped
//! answering it.
//!
//! All travel as [`Signed<Announcement>`](crate::Signed) on the membership topic. An advert or a
//! departure is signed by the node it is about; `seq` orders them: a receiver keeps the highest it
//! has seen and drops anything at or below it. A suspicion is signed by the accuser and names the
//! newest `seq` of the suspect it holds, so any newer advert from the suspect refutes it.
//! Nodes derive `seq` from their wall clock in milliseconds (strictly increasing within a run), so a
//! node restarted with the same key is never taken for a replay of its former self.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use libp2p_identity::PeerId;

use crate::{app::Relaxation, envelope::SignedKind, ownership::OwnerKey};

/// Largest announcement payload accepted. A real advert is a few hundred bytes.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 8 * 1024;
/// Largest signed-announcement frame accepted: the payload plus the envelope (key, signature).
pub const MAX_ANNOUNCEMENT_FRAME_BYTES: usize = MAX_ANNOUNCEMENT_BYTES + 256;
/// Largest gossip message the mesh accepts on any topic; larger frames are refused by the
/// gossip layer itself before anything reads them.
pub const MAX_GOSSIP_FRAME_BYTES: usize = 64 * 1024;
/// Largest member-sync response accepted: the signed announcements of every known member.
pub const MAX_MEMBER_SYNC_BYTES: usize = 4 * 1024 * 1024;
/// Most announcements one member-sync response may carry.
pub const MAX_MEMBER_SYNC_ENTRIES: usize = 4096;

const MAX_NAME_LEN: usize = 64;
const MAX_ADDRS: usize = 16;
const MAX_ADDR_LEN: usize = 256;
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY_LEN: usize = 63;
const MAX_LABEL_VALUE_LEN: usize = 253;
const MAX_RUNTIMES: usize = 8;

/// A workload runtime a node can offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Wasm,
    Docker,
    Process,
}

impl Runtime {
    pub const ALL: [Runtime; 3] = [Runtime::Wasm, Runtime::Docker, Runtime::Process];

    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Wasm => "wasm",
            Runtime::Docker => "docker",
            Runtime::Process => "process",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown runtime '{s}' (expected wasm, docker or process)"))
    }
}

/// What a node has room for, as it measured itself when it made the advert.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_cores: u32,
    pub memory_mb: u64,
    pub memory_free_mb: u64,
    pub disk_free_mb: u64,
}

/// What a node's owner lets the mesh do on it. The scheduler honours it; `None` means no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePolicy {
    /// The most app instances this node runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// The most memory the mesh's apps may use here, in MiB (below what the machine has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// The most CPU the mesh's apps may use here, in thousandths of a core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Whose apps this node runs: owner keys (`ed25519:<hex>`, as `mycel whoami` prints), or
    /// peer ids, each standing for its node's key (which owns what was deployed unsigned through
    /// that node). `None`: anyone's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_owners: Option<Vec<String>>,
    /// Which relaxations of the container hardening this node's owner allows, by the names of
    /// [`Relaxation`] (`writable_root`, `run_as_root`, `capabilities`, `new_privileges`).
    /// `None` or empty: none; apps that ask for one are not placed here. Names this version does
    /// not know are carried and ignored, so a newer node's advert still validates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_relax: Option<Vec<String>>,
    /// Registry hosts (`docker.io`, `ghcr.io`, `localhost:5000`) this node may pull images from
    /// that were neither pushed to the mesh nor held by its engine. `None` or empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registries: Option<Vec<String>>,
    /// Which ports the mesh's apps may publish on this node's ingress address: ports (`"5432"`)
    /// and ranges (`"15000-15999"`). `None`: any; empty: none. A port outside them is not
    /// listened on here; the app still runs and is reached through other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_ports: Option<Vec<String>>,
}

/// At most this many port ranges in a policy's `published_ports`.
pub const MAX_PORT_RANGES: usize = 64;

/// At most this many allowed owners in a policy, each at most this long.
pub const MAX_ALLOWED_OWNERS: usize = 64;
const MAX_OWNER_LEN: usize = 128;
/// At most this many allowed relaxations in a policy, each at most this long.
const MAX_RELAXATIONS: usize = 8;
const MAX_RELAXATION_LEN: usize = 32;
/// At most this many registries in a policy, each a host (and port) at most this long.
pub const MAX_REGISTRIES: usize = 16;
const MAX_REGISTRY_LEN: usize = 255;

impl NodePolicy {
    /// Whether this node's owner allows `relaxation` of the container hardening.
    pub fn allows(&self, relaxation: Relaxation) -> bool {
        self.container_relax
            .iter()
            .flatten()
            .any(|name| name == relaxation.as_str())
    }

    /// The owners this node runs apps of, as owner keys (`ed25519:<hex>`): a peer id in the list
    /// stands for the key inside it (a node's key owns what was deployed unsigned through it).
    /// `None`: anyone's.
    pub fn allowed_owner_keys(&self) -> Option<BTreeSet<String>> {
        let owners = self.allowed_owners.as_ref()?;
        Some(
            owners
                .iter()
                .map(|owner| {
                    owner
                        .parse::<PeerId>()
                        .ok()
                        .and_then(|peer| OwnerKey::from_peer_id(&peer))
                        .map_or_else(|| owner.clone(), |key| key.to_string())
                })
                .collect(),
        )
    }

    /// Whether this node runs the apps of `owner`.
    pub fn allows_owner(&self, owner: &OwnerKey) -> bool {
        self.allowed_owner_keys()
            .is_none_or(|keys| keys.contains(&owner.to_string()))
    }

    /// Whether this node may pull images from registry `host` (compared without case, as host
    /// names are).
    pub fn allows_registry(&self, host: &str) -> bool {
        self.registries
            .iter()
            .flatten()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    /// Whether this node's owner lets apps publish `port` on its ingress address.
    pub fn allows_published_port(&self, port: u16) -> bool {
        self.published_ports.as_ref().is_none_or(|ranges| {
            ranges
                .iter()
                .filter_map(|r| port_range(r))
                .any(|(low, high)| (low..=high).contains(&port))
        })
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(ranges) = &self.published_ports {
            if ranges.len() > MAX_PORT_RANGES {
                return invalid(format!("more than {MAX_PORT_RANGES} published port ranges"));
            }
            if let Some(bad) = ranges.iter().find(|r| port_range(r).is_none()) {
                return invalid(format!(
                    "published port range '{bad:.32}' is not a port or LOW-HIGH (such as 5432 \
                     or 15000-15999, each 1 to 65535)"
                ));
            }
        }
        if let Some(names) = &self.container_relax {
            if names.len() > MAX_RELAXATIONS {
                return invalid(format!("more than {MAX_RELAXATIONS} container relaxations"));
            }
            if names.iter().any(|n| {
                n.is_empty()
                    || n.len() > MAX_RELAXATION_LEN
                    || !n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            }) {
                return invalid(format!(
                    "a container relaxation is 1 to {MAX_RELAXATION_LEN} lowercase letters and \
                     '_' (such as writable_root)"
                ));
            }
        }
        if let Some(registries) = &self.registries {
            if registries.len() > MAX_REGISTRIES {
                return invalid(format!("more than {MAX_REGISTRIES} registries"));
            }
            if let Some(bad) = registries.iter().find(|r| {
                r.is_empty()
                    || r.len() > MAX_REGISTRY_LEN
                    || !r
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
            }) {
                return invalid(format!(
                    "registry '{bad:.64}' is not a host name with an optional port (such as \
                     ghcr.io or localhost:5000)"
                ));
            }
        }
        if let Some(owners) = &self.allowed_owners {
            if owners.len() > MAX_ALLOWED_OWNERS {
                return invalid(format!("more than {MAX_ALLOWED_OWNERS} allowed owners"));
            }
            if owners.iter().any(|o| {
                o.is_empty() || o.len() > MAX_OWNER_LEN || o.chars().any(char::is_whitespace)
            }) {
                return invalid(format!(
                    "an allowed owner must be 1 to {MAX_OWNER_LEN} bytes without spaces"
                ));
            }
        }
        Ok(())
    }
}

/// A port (`"5432"`) or an inclusive range (`"15000-15999"`) of ports 1 to 65535.
pub fn port_range(text: &str) -> Option<(u16, u16)> {
    let port = |t: &str| t.trim().parse::<u16>().ok().filter(|p| *p != 0);
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (port(low)?, port(high)?),
        None => (port(text)?, port(text)?),
    };
    (low <= high).then_some((low, high))
}

/// A node's signed description of itself, gossiped periodically and whenever it changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    pub seq: u64,
    pub name: String,
    /// Multiaddrs other nodes can dial this node at (without the `/p2p/` suffix).
    pub addrs: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub runtimes: Vec<Runtime>,
    pub resources: Resources,
    /// The owner's limits (absent from adverts of nodes that set none).
    #[serde(default)]
    pub policy: NodePolicy,
}

/// A node's signed notice that it is leaving on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    pub seq: u64,
}

/// A node's signed claim that a neighbour stopped answering it (its connection broke and could
/// not be re-established, or its pings timed out). Receivers mark the suspect suspect; the suspect
/// refutes by announcing a newer advert, or is declared dead when the suspicion times out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspicion {
    /// The suspect's peer id, as bytes.
    #[serde(with = "serde_bytes")]
    pub suspect: Vec<u8>,
    /// The newest sequence number of the suspect that the accuser holds.
    pub suspect_seq: u64,
}

/// Everything published on the membership topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "an announcement lives only while it is signed or checked; what is kept is the Advert"
)]
pub enum Announcement {
    Advert(Advert),
    Departure(Departure),
    Suspicion(Suspicion),
}

impl SignedKind for Announcement {
    const DOMAIN: &'static [u8] = b"mycel/announcement/1";
}

impl Announcement {
    /// Checks the limits every receiver enforces, so a peer cannot grow others' state at will.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Announcement::Advert(advert) => advert.validate(),
            Announcement::Departure(_) => Ok(()),
            Announcement::Suspicion(suspicion) => suspicion.suspect_id().map(|_| ()),
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> Result<(), ValidationError> {
    Err(ValidationError::Invalid(message.into()))
}

impl Advert {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_node_name(&self.name)?;
        if self.addrs.len() > MAX_ADDRS {
            return invalid(format!("more than {MAX_ADDRS} addresses"));
        }
        if let Some(addr) = self
            .addrs
            .iter()
            .find(|a| a.is_empty() || a.len() > MAX_ADDR_LEN || !a.starts_with('/'))
        {
            return invalid(format!("address '{addr:.64}' is not a multiaddr"));
        }
        if self.labels.len() > MAX_LABELS {
            return invalid(format!("more than {MAX_LABELS} labels"));
        }
        for (key, value) in &self.labels {
            validate_label(key, value)?;
        }
        if self.runtimes.len() > MAX_RUNTIMES {
            return invalid(format!("more than {MAX_RUNTIMES} runtimes"));
        }
        self.policy.validate()
    }
}

impl Suspicion {
    pub fn new(suspect: &PeerId, suspect_seq: u64) -> Self {
        Self {
            suspect: suspect.to_bytes(),
            suspect_seq,
        }
    }

    /// The suspect's peer id.
    pub fn suspect_id(&self) -> Result<PeerId, ValidationError> {
        PeerId::from_bytes(&self.suspect)
            .map_err(|_| ValidationError::Invalid("the suspect is not a peer id".into()))
    }
}

/// A node name: 1 to 64 printable characters without spaces.
pub fn validate_node_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return invalid(format!("node name must be 1 to {MAX_NAME_LEN} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return invalid("node name must not contain spaces or control characters");
    }
    Ok(())
}

/// A label: key of letters, digits, `.`, `_`, `-`, `/`; value of printable characters.
pub fn validate_label(key: &str, value: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_LABEL_KEY_LEN {
        return invalid(format!("label key must be 1 to {MAX_LABEL_KEY_LEN} bytes"));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    {
        return invalid(format!(
            "label key '{key}' may hold only letters, digits, '.', '_', '-' and '/'"
        ));
    }
    if value.len() > MAX_LABEL_VALUE_LEN || value.chars().any(char::is_control) {
        return invalid(format!(
            "label value of '{key}' must be at most {MAX_LABEL_VALUE_LEN} printable bytes"
        ));
    }
    Ok(())
}

/// Request of the member-sync protocol: "send me the announcements of every member you know".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSyncRequest {}

/// Answer of the member-sync protocol: each member's latest signed announcement. Every entry is
/// verified on its own by the receiver, so a relaying peer cannot forge what it forwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberSyncResponse {
    pub members: Vec<MemberSyncEntry>,
}

/// One member as the answering node knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberSyncEntry {
    pub announcement: crate::Signed<Announcement>,
    /// Milliseconds since the answering node last heard from this member, so the asker does not
    /// take an old announcement for a sign of life.
    pub age_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Keypair, Signed, codec};

    pub(crate) fn sample_advert() -> Advert {
        Advert {
            seq: 1,
            name: "node-a".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/7400".into()],
            labels: BTreeMap::from([("zone".into(), "eu-1".into())]),
            runtimes: vec![Runtime::Wasm],
            resources: Resources {
                cpu_cores: 2,
                memory_mb: 1024,
                memory_free_mb: 512,
                disk_free_mb: 10_000,
            },
            policy: NodePolicy::default(),
        }
    }

    #[test]
    fn a_signed_advert_round_trips_through_the_wire() {
        let key = Keypair::generate_ed25519();
        let announcement = Announcement::Advert(sample_advert());
        let frame = codec::encode(&Signed::sign(&key, &announcement).unwrap()).unwrap();
        let envelope: Signed<Announcement> = codec::decode(&frame, MAX_ANNOUNCEMENT_BYTES).unwrap();
        let verified = envelope.verify(MAX_ANNOUNCEMENT_BYTES).unwrap();
        assert_eq!(verified.signer, key.public().to_peer_id());
        assert_eq!(verified.message, announcement);
        assert!(verified.message.validate().is_ok());
        assert!(frame.len() < 400, "advert frame is {} bytes", frame.len());
    }

    #[test]
    fn published_ports_are_ports_and_ranges() {
        assert_eq!(port_range("5432"), Some((5432, 5432)));
        assert_eq!(port_range("15000-15999"), Some((15000, 15999)));
        for bad in ["", "0", "70000", "9-1", "a-b", "1-", "-5", "1-2-3"] {
            assert_eq!(port_range(bad), None, "{bad}");
        }
        let policy = NodePolicy {
            published_ports: Some(vec!["5432".into(), "15000-15999".into()]),
            ..NodePolicy::default()
        };
        assert!(policy.validate().is_ok());
        assert!(policy.allows_published_port(5432));
        assert!(policy.allows_published_port(15500));
        assert!(!policy.allows_published_port(8080));
        assert!(NodePolicy::default().allows_published_port(8080));
        let none = NodePolicy {
            published_ports: Some(vec![]),
            ..NodePolicy::default()
        };
        assert!(!none.allows_published_port(8080));
        let bad = NodePolicy {
            published_ports: Some(vec!["80-70".into()]),
            ..NodePolicy::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn limits_are_enforced() {
        let mut a = sample_advert();
        a.name = String::new();
        assert!(a.validate().is_err());

        let mut a = sample_advert();
        a.addrs = vec!["/ip4/1.2.3.4/tcp/1".into(); MAX_ADDRS + 1];
        assert!(a.validate().is_err());

        let mut a = sample_advert();
        a.addrs = vec!["not a multiaddr".into()];
        assert!(a.validate().is_err());

        let mut a = sample_advert();
        a.labels.insert("bad key".into(), "v".into());
        assert!(a.validate().is_err());

        let mut a = sample_advert();
        a.labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(a.validate().is_err());
    }

    #[test]
    fn relaxations_and_registries_are_optional_on_the_wire_and_checked() {
        // A policy that sets neither adds nothing to the advert: older nodes read it as before.
        assert_eq!(serde_json::to_string(&NodePolicy::default()).unwrap(), "{}");
        let mut advert = sample_advert();
        advert.policy = NodePolicy {
            // A name this version does not know is carried, not refused: a newer node's advert.
            container_relax: Some(vec!["writable_root".into(), "newer_relaxation".into()]),
            registries: Some(vec!["ghcr.io".into(), "localhost:5000".into()]),
            ..NodePolicy::default()
        };
        let frame = codec::encode(&advert).unwrap();
        assert_eq!(
            codec::decode::<Advert>(&frame, MAX_ANNOUNCEMENT_BYTES).unwrap(),
            advert
        );
        assert!(advert.validate().is_ok());
        let policy = &advert.policy;
        assert!(policy.allows(Relaxation::WritableRoot));
        assert!(!policy.allows(Relaxation::RunAsRoot));
        assert!(policy.allows_registry("GHCR.io"), "host names have no case");
        assert!(!policy.allows_registry("docker.io"));
        assert!(!NodePolicy::default().allows(Relaxation::WritableRoot));
        assert!(!NodePolicy::default().allows_registry("docker.io"));

        let relax = |names: Vec<&str>| NodePolicy {
            container_relax: Some(names.into_iter().map(String::from).collect()),
            ..NodePolicy::default()
        };
        let registries = |hosts: Vec<&str>| NodePolicy {
            registries: Some(hosts.into_iter().map(String::from).collect()),
            ..NodePolicy::default()
        };
        for bad in [
            relax(vec!["Writable Root"]),
            relax(vec![""]),
            relax(vec!["writable_root"; MAX_RELAXATIONS + 1]),
            registries(vec!["ghcr.io/team"]),
            registries(vec![""]),
            registries(vec!["ghcr.io"; MAX_REGISTRIES + 1]),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_suspicion_must_name_a_peer() {
        let peer = PeerId::random();
        let suspicion = Suspicion::new(&peer, 7);
        assert_eq!(suspicion.suspect_id().unwrap(), peer);
        assert!(Announcement::Suspicion(suspicion).validate().is_ok());
        let bogus = Suspicion {
            suspect: vec![1, 2, 3],
            suspect_seq: 7,
        };
        assert!(Announcement::Suspicion(bogus).validate().is_err());
    }

    #[test]
    fn runtimes_parse_and_print() {
        for r in Runtime::ALL {
            assert_eq!(r.as_str().parse::<Runtime>().unwrap(), r);
        }
        assert!("vm".parse::<Runtime>().is_err());
        assert_eq!(
            serde_json::to_string(&Runtime::Docker).unwrap(),
            "\"docker\""
        );
    }
}
