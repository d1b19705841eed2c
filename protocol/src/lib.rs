//! mycel's protocol: every type that crosses a process boundary, and nothing that does I/O.
//!
//! - [`codec`]: versioned CBOR frames whose size is checked before a byte is decoded.
//! - [`envelope`]: ed25519-signed envelopes; the signer's key is the node's libp2p identity.
//! - [`membership`]: the capability advert and the departure notice that nodes gossip.
//! - [`app`]: the app manifest (TOML in files, JSON through the API) and the rules it must meet.
//! - [`api`]: the JSON shapes of the HTTP API that the CLI, the tests and users read.
//! - [`logs`]: the logs protocol's request and limits.
//! - [`blob`]: content ids (`blake3:<hex>`).
//! - [`discovery`]: signed app listings in the DHT, their keys, the directory and its protocol.
//! - [`image`]: container images as the mesh stores them: a record naming config and layer blobs.
//! - [`names`]: protocol ids and topic names, each versioned.
//! - [`placement`]: what the placement group agrees on: app records, instances, log entries.
//! - [`ticket`]: join tickets (a member's addresses and a private mesh's secret, on one line).
//! - [`ownership`]: signed app requests (deploy, scale, stop) and the keys that own apps.
//! - [`seed`]: the seed's deploy body and its translation into a manifest, with warnings for
//!   what is not applied.
//!
//! Everything here is deterministic and unit-testable; the network lives in `mycel-mesh`.

pub mod api;
pub mod app;
pub mod blob;
pub mod codec;
pub mod discovery;
pub mod envelope;
pub mod image;
pub mod ingress;
pub mod logs;
pub mod membership;
pub mod names;
pub mod ownership;
pub mod placement;
pub mod secrets;
pub mod seed;
pub mod snapshot;
pub mod ticket;

pub use app::{Manifest, ManifestError};
pub use blob::BlobHash;
pub use codec::{CodecError, WIRE_VERSION, decode, encode};
pub use envelope::{EnvelopeError, Signed};
pub use libp2p_identity::{Keypair, PeerId, PublicKey};
pub use membership::{
    Advert, Announcement, Departure, NodePolicy, Resources, Runtime, Suspicion, ValidationError,
};
