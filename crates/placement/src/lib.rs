//! mycel's placement group: the nodes form one Raft group by themselves (openraft, with its log
//! and snapshots in sled and its messages on the mesh), every node replicates the decided state,
//! and any node takes writes by forwarding them to the leader.
//!
//! ```text
//!  API ──write──▶ PlacementHandle ──(not leader)──▶ mesh ──▶ leader's PlacementHandle
//!                      │                                        │ plan (scheduler, pure)
//!  API/agent/gateway ◀─┤ replica (watch)                        ▼
//!                      └──── StateMachine ◀── apply ◀── Raft log (sled) ◀── commit
//! ```
//!
//! - [`state`]: the replicated state and how an entry changes it (pure).
//! - [`plan`]: the leader's decisions: writes and dead nodes into entries (pure, uses the
//!   scheduler).
//! - [`autoscale`]: how many instances an app with `[scale]` should run (pure).
//! - [`rollout`]: the next step of an app's rollout (pure).
//! - [`load`]: the nodes' load reports on the leader, summed for the autoscaler.
//! - [`owners`]: who owns each app; the rule every replica applies to signed requests (pure).
//! - [`voters`]: who votes and who only replicates (pure).
//! - `storage`, `network`, `group`: the shells around openraft.

pub mod autoscale;
pub mod dependencies;
#[doc(hidden)]
pub mod fuzzing;
mod group;
pub mod load;
mod network;
pub mod owners;
pub mod plan;
pub mod rollout;
pub mod state;
mod storage;
#[cfg(test)]
mod testing;
mod types;
pub mod volumes;
pub mod voters;

pub use group::{GroupConfig, GroupError, GroupTiming, PlacementHandle, start};
pub use state::PlacementState;
pub use types::{EntryOutcome, Member, NodeId, Raft, Replica, TypeConfig, node_id};
