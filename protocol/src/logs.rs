//! The logs protocol (`/mycel/logs/1`): the asker writes one [`LogsRequest`] frame, the answering
//! node writes [`LogEvent`] frames for the app's instances that run there.
//!
//! Every frame is a `u32` big-endian length followed by that many bytes of a versioned CBOR frame
//! (see [`crate::codec`]). Without `follow` the answering node closes the stream after the recent
//! lines; with it, it writes new lines as they come until the asker closes the stream.

use serde::{Deserialize, Serialize};

pub use crate::api::LogEvent;

/// The most bytes a request frame may have.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024;
/// The most bytes a log event frame may have.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// What the asker wants: the log lines of `app`'s instances on the answering node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub app: String,
    /// Keep the stream open and send new lines as they come.
    pub follow: bool,
    /// Only these instances (a follower adds instances that started after it began); empty:
    /// every instance of the app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
}
