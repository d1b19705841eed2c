//! Bare libp2p peers for tests that play a rogue: a swarm with TCP, Noise and Yamux, as a mycel
//! node's, around whatever behaviour the test speaks. Given a private mesh's secret, the swarm
//! speaks that mesh's transport (mycel's own): the rogue is an insider that holds the secret.

use std::time::Duration;

use anyhow::Result;
use libp2p::{Swarm, SwarmBuilder, identity::Keypair, noise, swarm::NetworkBehaviour, tcp, yamux};
use mycel_mesh::{MeshSecret, transport};

/// What a behaviour constructor may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A swarm for `key` around the behaviour `behaviour` builds, for an open mesh or (with its
/// `secret`) a private one; connections stay open a minute.
pub fn tcp_swarm<B: NetworkBehaviour>(
    key: &Keypair,
    secret: Option<&MeshSecret>,
    behaviour: impl FnOnce(&Keypair) -> Result<B, BoxError>,
) -> Result<Swarm<B>> {
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let builder = SwarmBuilder::with_existing_identity(key.clone()).with_tokio();
    Ok(match secret {
        Some(secret) => builder
            .with_other_transport(|key| {
                transport::private_tcp(key, secret, transport::Refusals::default())
            })?
            .with_behaviour(behaviour)?
            .with_swarm_config(idle)
            .build(),
        None => builder
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(behaviour)?
            .with_swarm_config(idle)
            .build(),
    })
}
