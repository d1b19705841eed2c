//! mycel's node agent: makes what runs on this node match what the placement group placed here.
//!
//! ```text
//!  placement replica ──watch──▶ agent actor ──start/stop──▶ runtime drivers (wasm, docker…)
//!                                  │  ▲                          │
//!      fetch modules (blobs) ◀─────┘  └── task events (started, health) ◀─┘
//!                                  │
//!                                  └──report states──▶ placement group (through the leader)
//! ```
//!
//! The decisions are pure ([`reconcile`]); the actor owns the local instances and runs the I/O:
//! fetching a module from peers before the first start, starting, stopping, restarting a failed
//! instance with backoff, HTTP health checks, and reporting each instance's state back through
//! the placement group. Reports that cannot commit (no quorum) are retried; the instances keep
//! running meanwhile: losing the control plane never stops an app.
//!
//! [`logs`](AgentHandle::log_events) serves the local instances' log lines, to the API and to
//! other nodes through the logs protocol ([`serve_logs`], [`remote_logs`]).

pub mod admission;
mod agent;
mod error;
mod images;
mod logs;
mod prepare;
pub mod reconcile;
mod secrets;
mod volumes;

pub use agent::{AgentConfig, AgentHandle, AgentTiming, Counts, start};
pub use error::AgentError;
pub use images::DEFAULT_CONTAINER_PORT;
pub use logs::{remote_logs, serve_logs};
pub use secrets::SECRETS_ROOT;
