//! A running container as the [`Backend`] of its instance: measured by its followers, ended
//! by stopping and removing it.

use std::time::Duration;

use bollard::{Docker, query_parameters::StopContainerOptionsBuilder};
use futures::future::BoxFuture;

use super::{engine_reason, follow::Followers, force_remove, is_not_found};
use crate::upstream::Backend;

/// How long a stopped container's last lines may take to arrive.
const LAST_LINES: Duration = Duration::from_secs(1);

pub(super) struct ContainerBackend {
    pub(super) id: String,
    /// The container's id on the engine.
    pub(super) container: String,
    pub(super) docker: Docker,
    pub(super) stop_timeout: Duration,
    pub(super) followers: Followers,
}

impl Backend for ContainerBackend {
    fn memory(&self) -> Option<u64> {
        self.followers.memory()
    }

    fn cpu_nanos(&self) -> Option<u64> {
        self.followers.cpu_nanos()
    }

    fn ended(&self) -> Option<String> {
        self.followers.ended()
    }

    /// Stops the container (SIGTERM, then SIGKILL after the stop timeout), reads its last
    /// lines, and removes it; the agent's reaping removes whatever this leaves.
    fn shut_down(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let seconds = i32::try_from(self.stop_timeout.as_secs()).unwrap_or(i32::MAX);
            let options = StopContainerOptionsBuilder::default().t(seconds).build();
            match self
                .docker
                .stop_container(&self.container, Some(options))
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => tracing::warn!(
                    instance = %self.id,
                    container = %self.container,
                    error = %engine_reason(&e),
                    "stopping a container; removing it by force"
                ),
            }
            self.followers.finish(LAST_LINES).await;
            if let Err(e) = force_remove(&self.docker, &self.container).await {
                tracing::warn!(instance = %self.id, error = %e, "removing a stopped container");
            }
        })
    }
}
