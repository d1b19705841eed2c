//! Finding apps: a browse asks the home nodes of every directory shard for their pages; a lookup
//! by name asks its shard's home nodes and Kademlia (the app key's record and providers). Both
//! end within the lookup timeout with whatever arrived, and a node alone answers at once from
//! what it holds.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, future::join_all, stream::FuturesUnordered};
use mycel_protocol::{
    PeerId, Signed,
    api::DiscoveredApp,
    discovery::{
        AppListing, DIRECTORY_SHARDS, DiscoverRequest, DiscoverResponse, VerifiedListing, app_key,
        directory_key, is_app_name, shard_of, verify_dht_record, verify_listing,
    },
};
use tokio::time::Instant;

use crate::{DiscoveryHandle, Shared, directory::aggregate, now_ms, wire};

/// How many of the nodes closest to a shard's key a browse asks (the announcer tells
/// [`crate::announce::HOME_NODES`]).
pub(crate) const HOMES_ASKED: usize = 2;

impl DiscoveryHandle {
    /// The apps the mesh's directory lists, with their providers, by name. A node with no peers
    /// answers what it holds itself.
    pub async fn browse(&self) -> Vec<DiscoveredApp> {
        let shards: Vec<u16> = (0..DIRECTORY_SHARDS).collect();
        let listings = ask_directory(&self.shared, &shards, None).await;
        aggregate(checked(&self.shared, listings))
    }

    /// App `name` as the directory and Kademlia know it; `None` when no node announces it.
    pub async fn lookup(&self, name: &str) -> Option<DiscoveredApp> {
        if !is_app_name(name) {
            return None;
        }
        let shared = &self.shared;
        let mesh = &shared.config.mesh;
        let timeout = shared.config.lookup_timeout;
        let key = app_key(name);
        let shard = [shard_of(name)];
        let (listings, records, providers) = tokio::join!(
            ask_directory(shared, &shard, Some(name)),
            tokio::time::timeout(timeout, mesh.get_record(key.clone())),
            tokio::time::timeout(timeout, mesh.find_providers(key.clone())),
        );
        let now = now_ms();
        let from_dht = records
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|value| match verify_dht_record(&key, &value, now) {
                Ok(verified) => Some(verified),
                Err(e) => {
                    tracing::debug!(app = name, error = %e, "ignored a DHT record");
                    None
                }
            });
        let verified: Vec<VerifiedListing> = checked(shared, listings)
            .into_iter()
            .chain(from_dht)
            .filter(|v| v.listing.name == name)
            .collect();
        // Nodes that signed another description of the app do not serve the one shown.
        let signers: BTreeSet<String> = verified.iter().map(|v| v.signer.to_string()).collect();
        let mut app = aggregate(verified).into_iter().next()?;
        for provider in providers.ok().and_then(Result::ok).unwrap_or_default() {
            let provider = provider.to_string();
            if !signers.contains(&provider) && !app.providers.contains(&provider) {
                app.providers.push(provider);
            }
        }
        app.providers.sort();
        Some(app)
    }
}

/// This node's own pages for `shards`, and what the home nodes of each shard answer, until the
/// lookup timeout. Unchecked.
async fn ask_directory(
    shared: &Shared,
    shards: &[u16],
    name: Option<&str>,
) -> Vec<Signed<AppListing>> {
    let now = now_ms();
    let mut listings = shared
        .lock_directory()
        .listings(shards, name, now, usize::MAX);
    let mesh = &shared.config.mesh;
    let timeout = shared.config.lookup_timeout;
    let deadline = Instant::now() + timeout;

    // First the home nodes of every shard (lookups run side by side)...
    let mut lookups: FuturesUnordered<_> = shards
        .iter()
        .map(|&shard| async move { (shard, mesh.closest_peers(directory_key(shard)).await) })
        .collect();
    let mut homes: BTreeMap<PeerId, Vec<u16>> = BTreeMap::new();
    // Leave a third of the time for asking them.
    let lookup_deadline = deadline - timeout / 3;
    while let Ok(Some((shard, found))) =
        tokio::time::timeout_at(lookup_deadline, lookups.next()).await
    {
        for peer in found.unwrap_or_default().into_iter().take(HOMES_ASKED) {
            homes.entry(peer).or_default().push(shard);
        }
    }
    drop(lookups);

    // ...then each of them once, for all the shards it keeps.
    let asks = homes.into_iter().map(|(peer, shards)| {
        let request = DiscoverRequest::List {
            shards,
            name: name.map(str::to_string),
        };
        async move {
            let left = deadline.saturating_duration_since(Instant::now());
            (peer, wire::ask(mesh, peer, &request, left).await)
        }
    });
    for (peer, answer) in join_all(asks).await {
        match answer {
            Ok(DiscoverResponse::Listings { listings: theirs }) => listings.extend(theirs),
            Ok(other) => tracing::debug!(%peer, ?other, "unexpected answer to a List"),
            Err(e) => tracing::debug!(%peer, error = %e, "asking a home node"),
        }
    }
    listings
}

/// The listings that pass every check now, and this node's own.
fn checked(shared: &Shared, listings: Vec<Signed<AppListing>>) -> Vec<VerifiedListing> {
    let now = now_ms();
    let mut verified: Vec<VerifiedListing> = listings
        .iter()
        .filter_map(|envelope| match verify_listing(envelope, now) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(error = %e, "ignored a listing");
                None
            }
        })
        .collect();
    verified.extend(
        shared
            .lock_own()
            .iter()
            .filter(|v| v.listing.expires_at_ms > now)
            .cloned(),
    );
    verified
}
