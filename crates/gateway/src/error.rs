//! What can go wrong on the way to an instance, and the gateway's own JSON error answers.
//!
//! Every [`AttemptError`] happens before any byte of an answer arrived, so trying another
//! instance is safe as far as the answer goes; whether the request can be sent again depends on
//! its body (see `replay`), and, when the app may have seen it, on its method being idempotent.
//! Once an answer has begun towards the client, it is the client's, errors and all.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::{Body, balance::Outcome};

/// Marks an answer as the serving gateway's refusal, not the app's: its value is the reason
/// (`unknown_instance`, `instance_unhealthy` or `instance_failed`). Only ever set by the
/// serving side (`inbound::answer`).
pub(crate) const REFUSED_HEADER: &str = "x-mycel-refused";
pub(crate) const UNKNOWN_INSTANCE: &str = "unknown_instance";
pub(crate) const INSTANCE_UNHEALTHY: &str = "instance_unhealthy";
pub(crate) const INSTANCE_FAILED: &str = "instance_failed";

/// Why one attempt at an instance produced no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    /// No stream or no HTTP connection to the instance's node: nothing was sent.
    #[error("reaching node {node}: {reason}")]
    Unreachable { node: String, reason: String },
    /// The request went out, perhaps in part, and the connection failed before an answer.
    /// `reused`: on a pooled connection, which may simply have gone stale while idle.
    #[error("sending to node {node}: {reason}")]
    Failed {
        node: String,
        reason: String,
        reused: bool,
    },
    /// The node runs no such instance (its replica and ours disagree for a moment).
    #[error("node {node} does not run the instance")]
    NotThere { node: String },
    /// The node refused: the instance has not passed its health check.
    #[error("node {node} says the instance is not healthy")]
    Unhealthy { node: String },
    /// The instance could not take the request (its node refused with `instance_failed`, or
    /// the local instance returned an error: overloaded or stopping).
    #[error("the instance on node {node} failed: {reason}")]
    InstanceFailed { node: String, reason: String },
}

impl AttemptError {
    /// What the failure says about the instance, for balancing.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            AttemptError::Unreachable { .. } => Outcome::Unreachable,
            AttemptError::Failed { reused: false, .. } => Outcome::Failed,
            // A stale pooled connection says nothing about the instance; an overloaded one is
            // load, which the strategies weigh, not a fault.
            AttemptError::Failed { reused: true, .. } | AttemptError::InstanceFailed { .. } => {
                Outcome::Neutral
            }
            AttemptError::NotThere { .. } => Outcome::NotThere,
            AttemptError::Unhealthy { .. } => Outcome::Unhealthy,
        }
    }

    /// Whether the app may have seen the request: then only an idempotent one is sent again.
    pub(crate) fn app_may_have_seen(&self) -> bool {
        matches!(self, AttemptError::Failed { .. })
    }

    /// Whether the connection failed before an answer began: a pooled one gone stale while
    /// idle, or a new stream the peer dropped (libp2p-stream drops streams a busy acceptor has
    /// no room for, as a burst of new connections can find it). Seldom the instance's fault.
    pub(crate) fn is_connection_failure(&self) -> bool {
        matches!(self, AttemptError::Failed { .. })
    }

    /// Whether trying another instance is routing rather than a retry: nobody took the request
    /// (no node, no such instance, an unhealthy one), so it costs neither a retry nor budget.
    pub(crate) fn is_unrouted(&self) -> bool {
        matches!(
            self,
            AttemptError::Unreachable { .. }
                | AttemptError::NotThere { .. }
                | AttemptError::Unhealthy { .. }
        )
    }
}

/// A gateway answer with the contract's JSON error body.
pub(crate) fn json_error(status: StatusCode, code: &str, message: String) -> Response<Body> {
    let body = mycel_protocol::api::ApiError {
        error: message,
        code: code.to_string(),
    };
    // Two strings always serialize.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(
        Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
