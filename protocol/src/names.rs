//! Protocol ids and topic names. A breaking change to a message bumps its version here.

/// Gossipsub topic on which nodes announce their adverts and departures.
pub const MEMBERSHIP_TOPIC: &str = "/mycel/membership/1";
/// Request-response protocol: "send me every member you know" (used right after connecting).
pub const MEMBER_SYNC_PROTOCOL: &str = "/mycel/member-sync/1";
/// Kademlia protocol id, private to mycel meshes so they never mix with the public IPFS DHT.
pub const KADEMLIA_PROTOCOL: &str = "/mycel/kad/1";
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/mycel/id/1";
/// Request-response protocol for blob ranges (`BlobRequest` / `BlobResponse`).
pub const BLOB_PROTOCOL: &str = "/mycel/blob/1";
/// Raw-stream protocol carrying blob ranges: one stream per blob per provider, many ranges on it
/// (see `blob::RangeStreamOpen`).
pub const BLOB_RANGES_PROTOCOL: &str = "/mycel/blob-ranges/1";
/// Request-response protocol of the placement group (Raft messages and forwarded writes).
pub const PLACEMENT_PROTOCOL: &str = "/mycel/placement/1";
/// Raw-stream protocol of the gateway: HTTP/1.1 to an instance on the answering node, named by
/// the `x-mycel-instance` request header.
pub const GATEWAY_PROTOCOL: &str = "/mycel/gateway/1";
/// Raw-stream protocol for an app's log lines on the answering node: one `LogsRequest` frame in,
/// `LogEvent` frames out (see `logs`).
pub const LOGS_PROTOCOL: &str = "/mycel/logs/1";
/// Raw-stream protocol of app discovery's directory: one `DiscoverRequest` frame in, one
/// `DiscoverResponse` frame out (see `discovery`).
pub const DISCOVER_PROTOCOL: &str = "/mycel/discover/1";
/// Raw-stream protocol of the TCP ingress: one `IngressOpen` frame in, one `IngressAnswer` frame
/// out, then a client's connection to an instance's published port (see `ingress`).
pub const INGRESS_PROTOCOL: &str = "/mycel/ingress/1";
