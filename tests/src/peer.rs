//! Bare libp2p peers for tests that play a rogue: a swarm with TCP, Noise and Yamux, as a mycel
//! node's, around whatever behaviour the test speaks.

use std::time::Duration;

use anyhow::Result;
use libp2p::{Swarm, SwarmBuilder, identity::Keypair, noise, swarm::NetworkBehaviour, tcp, yamux};

/// What a behaviour constructor may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A swarm for `key` around the behaviour `behaviour` builds; connections stay open a minute.
pub fn tcp_swarm<B: NetworkBehaviour>(
    key: &Keypair,
    behaviour: impl FnOnce(&Keypair) -> Result<B, BoxError>,
) -> Result<Swarm<B>> {
    Ok(SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(behaviour)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}
