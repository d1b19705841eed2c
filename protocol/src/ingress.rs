//! The ingress protocol (`/mycel/ingress/1`): one client's TCP connection to a published port,
//! carried to the node that runs the instance serving it.
//!
//! The opening node writes one [`IngressOpen`] frame, the answering node one [`IngressAnswer`]
//! frame (each a `u32` big-endian length and a versioned CBOR frame, see [`crate::codec`]); after
//! an `Open` answer the stream carries the connection's bytes both ways, untouched, until either
//! side closes.

use serde::{Deserialize, Serialize};

/// The most bytes an opening or answering frame may have.
pub const MAX_FRAME_BYTES: usize = 1024;

/// Which connection the opening node asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressOpen {
    pub app: String,
    /// The instance on the answering node.
    pub instance: String,
    /// The instance's own port (`[[ports]] container`).
    pub port: u16,
}

/// Whether the answering node connected to the instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngressAnswer {
    /// Connected: the connection's bytes follow.
    Open,
    /// Not connected, and why (the instance is not here, or refused): the opening node tries
    /// another instance.
    Refused(String),
}
