//! The libp2p protocols a mycel node speaks, assembled into one `NetworkBehaviour`.

use std::time::Duration;

use libp2p::{
    StreamProtocol, allow_block_list, gossipsub, identify, identity::Keypair, kad, ping,
    request_response, swarm::NetworkBehaviour,
};
use mycel_protocol::{
    blob::{BlobRequest, BlobResponse, MAX_BLOB_RESPONSE_BYTES},
    membership::{
        MAX_GOSSIP_FRAME_BYTES, MAX_MEMBER_SYNC_BYTES, MemberSyncRequest, MemberSyncResponse,
    },
    names,
};

use crate::{PlacementFrame, codec::CborCodec, membership::Timing};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) type MemberSyncCodec = CborCodec<MemberSyncRequest, MemberSyncResponse>;
pub(crate) type BlobCodec = CborCodec<BlobRequest, BlobResponse>;
pub(crate) type PlacementCodec = CborCodec<PlacementFrame, PlacementFrame>;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<crate::records::Store>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) member_sync: request_response::Behaviour<MemberSyncCodec>,
    pub(crate) blobs: request_response::Behaviour<BlobCodec>,
    pub(crate) placement: request_response::Behaviour<PlacementCodec>,
    /// Raw streams, opened and accepted through a [`libp2p_stream::Control`] outside the actor
    /// (the gateway tunnels HTTP/1.1 over them).
    pub(crate) streams: libp2p_stream::Behaviour,
}

pub(crate) fn membership_topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(names::MEMBERSHIP_TOPIC)
}

impl Behaviour {
    pub(crate) fn new(key: &Keypair, timing: &Timing) -> Result<Self, BoxError> {
        let local = key.public().to_peer_id();

        let identify = identify::Behaviour::new(
            identify::Config::new(names::IDENTIFY_PROTOCOL.to_string(), key.public())
                .with_agent_version(format!("mycel/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );

        let kad = crate::records::kademlia(local, crate::records::kademlia_config());

        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            // The application checks every message (signature, size, sequence) before it is
            // forwarded, so a bad message stops at the first honest node.
            .validate_messages()
            .max_transmit_size(MAX_GOSSIP_FRAME_BYTES)
            .heartbeat_initial_delay(Duration::from_millis(100))
            .heartbeat_interval(Duration::from_secs(1))
            // Every node announces itself every second, so duplicates dominate the traffic and
            // the CPU (gossipsub verifies each copy's signature before it sees it is a copy).
            // A smaller mesh, publishing into the mesh only, and gossip (IHAVE) about the last
            // heartbeat only keep each announcement to a few copies per node.
            .mesh_n(4)
            .mesh_n_low(3)
            .mesh_n_high(8)
            .mesh_outbound_min(2)
            .gossip_lazy(3)
            .history_gossip(1)
            .flood_publish(false)
            .build()
            .map_err(|e| e.to_string())?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )?;
        let (params, thresholds) = score_params();
        gossipsub.with_peer_score(params, thresholds)?;
        gossipsub
            .subscribe(&membership_topic())
            .map_err(|e| e.to_string())?;

        let member_sync = request_response::Behaviour::with_codec(
            MemberSyncCodec::new(64, MAX_MEMBER_SYNC_BYTES),
            [(
                StreamProtocol::new(names::MEMBER_SYNC_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        );

        let blobs = request_response::Behaviour::with_codec(
            BlobCodec::new(1024, MAX_BLOB_RESPONSE_BYTES),
            [(
                StreamProtocol::new(names::BLOB_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(30))
                .with_max_concurrent_streams(256),
        );

        // Raft traffic: heartbeats must not queue behind anything, and a request that takes
        // longer than a few seconds is better failed and retried by Raft.
        let placement = request_response::Behaviour::with_codec(
            PlacementCodec::new(
                crate::MAX_PLACEMENT_FRAME_BYTES,
                crate::MAX_PLACEMENT_FRAME_BYTES,
            ),
            [(
                StreamProtocol::new(names::PLACEMENT_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(10))
                .with_max_concurrent_streams(256),
        );

        Ok(Self {
            blocked: Default::default(),
            identify,
            // Pings are how neighbours notice a node that stopped answering (see `membership`).
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(timing.ping_interval)
                    .with_timeout(timing.ping_timeout),
            ),
            kad,
            gossipsub,
            member_sync,
            blobs,
            placement,
            streams: libp2p_stream::Behaviour::new(),
        })
    }
}

/// Peer scoring that punishes invalid messages hard and nothing else: the defaults also punish
/// many peers behind one IP (every node of a local mesh) and slow mesh deliveries (every quiet
/// topic), which would cut honest nodes off.
fn score_params() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        first_message_deliveries_weight: 0.1,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // One invalid message takes a peer below the graylist threshold.
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    };
    let mut params = gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    params.topics.insert(membership_topic().hash(), topic);
    (params, gossipsub::PeerScoreThresholds::default())
}
