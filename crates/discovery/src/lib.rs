//! mycel's app discovery: every node that runs an app announces it in the DHT, and any node
//! finds the mesh's apps and who serves them, with no central index.
//!
//! ```text
//!  agent + placement replica ──watch (local apps)──▶ announcer task
//!                                                    │ every change, and every lifetime / 3:
//!                                                    │  sign a listing per app (node key)
//!                                                    ├─▶ kad: provide /mycel/app/<name>, put the
//!                                                    │        listing there as a record
//!                                                    └─▶ shard's home nodes: Publish (discover/1)
//!  peers ──discover/1──▶ server ──▶ Directory (the pages this node keeps as a home node)
//!  API ──▶ DiscoveryHandle::browse / lookup ──▶ kad lookups + List to home nodes ──▶ checked,
//!                                               aggregated listings
//! ```
//!
//! - [`directory`]: the pages a home node keeps, and how listings become apps (pure).
//! - `announce`: the announcer task. `browse`: enumeration and lookup by name. `wire`: the
//!   discover protocol on mesh streams. `local`: which apps run here, from the agent and the
//!   placement replica.
//!
//! Every listing is checked wherever it is read (signature, size, rules, expiry): a forged one
//! never reaches an answer. See the README's "Discovering apps" for the design and its costs.

pub mod directory;

mod announce;
mod browse;
mod local;
mod wire;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use mycel_mesh::MeshHandle;
use mycel_protocol::{
    BlobHash, Keypair, PeerId,
    app::AppKind,
    discovery::{DEFAULT_LIFETIME_MS, VerifiedListing},
};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use local::{LocalInstances, watch_local_apps};
/// The discover protocol's server side; public for the fuzz targets.
#[doc(hidden)]
pub use wire::answer;

/// How to run discovery.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    pub mesh: MeshHandle,
    /// The node key: it signs this node's listings.
    pub keypair: Keypair,
    /// How long a listing lives; it is re-announced after a third of it.
    pub lifetime: Duration,
    /// The longest a browse or a lookup waits for the mesh's answers.
    pub lookup_timeout: Duration,
}

impl DiscoveryConfig {
    /// How long listings live unless configured otherwise.
    pub const DEFAULT_LIFETIME: Duration = Duration::from_millis(DEFAULT_LIFETIME_MS);

    pub fn new(mesh: MeshHandle, keypair: Keypair) -> Self {
        Self {
            mesh,
            keypair,
            lifetime: Self::DEFAULT_LIFETIME,
            lookup_timeout: Duration::from_secs(3),
        }
    }
}

/// An app that runs here, as this node lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalApp {
    pub name: String,
    pub version: String,
    pub kind: AppKind,
    /// The peer id of the key that deployed it.
    pub publisher: String,
    pub manifest_hash: BlobHash,
    pub description: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The peer could not be reached: ask another.
    #[error("{peer} is unreachable: {reason}")]
    Unreachable { peer: PeerId, reason: String },
    /// The peer was reached but did not answer properly.
    #[error("asking {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
}

/// What the announcer, the server and the handle share.
pub(crate) struct Shared {
    config: DiscoveryConfig,
    /// The pages this node keeps (its own listings included).
    directory: Mutex<directory::Directory>,
    /// This node's current listings, by app.
    own: Mutex<Vec<VerifiedListing>>,
}

impl Shared {
    pub(crate) fn lock_directory(&self) -> MutexGuard<'_, directory::Directory> {
        directory::lock(&self.directory)
    }

    pub(crate) fn lock_own(&self) -> MutexGuard<'_, Vec<VerifiedListing>> {
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cheap, cloneable handle: browse and look up apps. Dropping it does not stop discovery:
/// cancelling the token given to [`start`] does.
#[derive(Clone)]
pub struct DiscoveryHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DiscoveryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryHandle").finish_non_exhaustive()
    }
}

/// Starts discovery on `tasks`: the server of the discover protocol, and the announcer of the
/// apps that `local_apps` says run here. Cancelling `stop` ends both; the announcer first
/// withdraws this node's listings (for at most a lookup timeout: what does not get out runs out
/// with the listings' lifetime). Wait on `tasks` for them to end.
pub fn start(
    config: DiscoveryConfig,
    local_apps: watch::Receiver<Vec<LocalApp>>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> DiscoveryHandle {
    let shared = Arc::new(Shared {
        config,
        directory: Mutex::default(),
        own: Mutex::default(),
    });
    let server = wire::serve(shared.config.mesh.clone(), shared.clone());
    let stop_serving = stop.clone();
    tasks.spawn(async move { stop_serving.run_until_cancelled(server).await });
    let announcer = shared.clone();
    tasks.spawn(async move {
        stop.run_until_cancelled(announce::run(announcer.clone(), local_apps))
            .await;
        let timeout = announcer.config.lookup_timeout;
        let _ = tokio::time::timeout(timeout, announce::withdraw_all(&announcer)).await;
    });
    DiscoveryHandle { shared }
}

/// Wall-clock milliseconds.
pub(crate) fn now_ms() -> u64 {
    mycel_mesh::records::now_ms()
}
