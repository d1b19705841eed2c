//! The announcer: keeps this node's listings in the DHT while its apps run, and takes them out
//! when they stop.
//!
//! On every change of the local apps, and every `lifetime / 3` (so a listing is renewed twice
//! before it could expire, even when one round fails), each app that runs here gets a freshly
//! signed listing: its key is provided in Kademlia, the listing is put under it as a record, and
//! it is published to the home nodes of its directory shard. An app that stopped is withdrawn:
//! no longer provided, its record removed here (the copies run out), its directory entries
//! dropped at the home nodes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use futures::future::join_all;
use mycel_protocol::{
    PeerId, Signed,
    discovery::{
        AppListing, DiscoverRequest, LISTING_FORMAT, VerifiedListing, app_key, directory_key,
        shard_of, verify_listing,
    },
};
use tokio::{sync::watch, time::Instant};

use crate::{LocalApp, Shared, now_ms, wire};

/// How many of the nodes closest to a shard's key keep its listings. Browsing asks the closest
/// [`crate::browse::HOMES_ASKED`], so a node or two joining near the key loses nothing.
pub(crate) const HOME_NODES: usize = 4;

/// Runs until aborted (the node stops) or the local-apps feed ends.
pub(crate) async fn run(shared: Arc<Shared>, mut local_apps: watch::Receiver<Vec<LocalApp>>) {
    let renew_every = shared.config.lifetime / 3;
    let mut announced: BTreeMap<String, (LocalApp, Instant)> = BTreeMap::new();
    let mut tick = tokio::time::interval(renew_every.max(Duration::from_millis(500)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = local_apps.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let wanted: Vec<LocalApp> = local_apps.borrow_and_update().clone();
        let now = Instant::now();
        let gone: Vec<String> = announced
            .keys()
            .filter(|name| !wanted.iter().any(|a| &a.name == *name))
            .cloned()
            .collect();
        let due: Vec<LocalApp> = wanted
            .into_iter()
            .filter(|app| match announced.get(&app.name) {
                Some((was, at)) => was != app || now.duration_since(*at) >= renew_every,
                None => true,
            })
            .collect();
        if !gone.is_empty() {
            withdraw(&shared, &gone).await;
            for name in &gone {
                announced.remove(name);
            }
        }
        if !due.is_empty() {
            announce(&shared, &due).await;
            for app in due {
                announced.insert(app.name.clone(), (app, now));
            }
        }
        shared.lock_directory().prune(now_ms());
    }
}

/// Signs and announces `apps`.
async fn announce(shared: &Shared, apps: &[LocalApp]) {
    let config = &shared.config;
    let now = now_ms();
    let mut listings = Vec::new();
    for app in apps {
        match sign(config, app, now) {
            Ok(verified) => listings.push(verified),
            Err(e) => tracing::error!(app = %app.name, error = %e, "signing this node's listing"),
        }
    }
    {
        let mut own = shared.lock_own();
        let mut directory = shared.lock_directory();
        for verified in &listings {
            own.retain(|l| l.listing.name != verified.listing.name);
            own.push(verified.clone());
            directory.insert(verified.clone(), now);
        }
    }
    let lifetime = config.lifetime;
    for verified in &listings {
        let key = app_key(&verified.listing.name);
        let value = match mycel_protocol::encode(&verified.envelope) {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(error = %e, "encoding this node's listing");
                continue;
            }
        };
        let provided = config.mesh.start_providing(key.clone()).await;
        if provided
            .and(config.mesh.put_record(key, value, lifetime).await)
            .is_err()
        {
            return; // The mesh has stopped.
        }
    }
    let mut by_shard: BTreeMap<u16, Vec<Signed<AppListing>>> = BTreeMap::new();
    for verified in listings {
        by_shard
            .entry(shard_of(&verified.listing.name))
            .or_default()
            .push(verified.envelope);
    }
    let sends = by_shard
        .into_iter()
        .map(|(shard, listings)| tell_homes(shared, shard, DiscoverRequest::Publish { listings }));
    join_all(sends).await;
    tracing::debug!(apps = apps.len(), "announced this node's apps");
}

/// Takes `names` out of the DHT and the directory.
async fn withdraw(shared: &Shared, names: &[String]) {
    let config = &shared.config;
    shared
        .lock_own()
        .retain(|l| !names.contains(&l.listing.name));
    shared
        .lock_directory()
        .withdraw(config.mesh.peer_id(), names);
    for name in names {
        let key = app_key(name);
        let stopped = config.mesh.stop_providing(key.clone()).await;
        if stopped.and(config.mesh.remove_record(key).await).is_err() {
            return; // The mesh has stopped.
        }
    }
    let mut by_shard: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for name in names {
        by_shard
            .entry(shard_of(name))
            .or_default()
            .push(name.clone());
    }
    let sends = by_shard
        .into_iter()
        .map(|(shard, names)| tell_homes(shared, shard, DiscoverRequest::Withdraw { names }));
    join_all(sends).await;
    tracing::debug!(apps = names.len(), "withdrew apps that no longer run here");
}

/// Withdraws every listing this node has out (the node is leaving).
pub(crate) async fn withdraw_all(shared: &Shared) {
    let names: BTreeSet<String> = shared
        .lock_own()
        .iter()
        .map(|l| l.listing.name.clone())
        .collect();
    if !names.is_empty() {
        withdraw(shared, &names.into_iter().collect::<Vec<_>>()).await;
    }
}

/// Sends `request` to the home nodes of `shard`, as a DHT lookup finds them now.
async fn tell_homes(shared: &Shared, shard: u16, request: DiscoverRequest) {
    let config = &shared.config;
    let timeout = config.lookup_timeout;
    let homes: Vec<PeerId> = match tokio::time::timeout(
        timeout,
        config.mesh.closest_peers(directory_key(shard)),
    )
    .await
    {
        Ok(Ok(peers)) => peers.into_iter().take(HOME_NODES).collect(),
        Ok(Err(_)) => return,
        Err(_) => {
            tracing::debug!(shard, "no home nodes found in time");
            return;
        }
    };
    let asks = homes
        .iter()
        .map(|peer| wire::ask(&config.mesh, *peer, &request, timeout));
    for result in join_all(asks).await {
        if let Err(e) = result {
            tracing::debug!(shard, error = %e, "telling a home node");
        }
    }
}

/// This node's listing of `app`, signed now.
fn sign(
    config: &crate::DiscoveryConfig,
    app: &LocalApp,
    now: u64,
) -> Result<VerifiedListing, String> {
    let listing = AppListing {
        format: LISTING_FORMAT,
        name: app.name.clone(),
        version: app.version.clone(),
        kind: app.kind,
        publisher: app.publisher.clone(),
        manifest_hash: app.manifest_hash,
        description: app.description.clone(),
        issued_at_ms: now,
        expires_at_ms: now + config.lifetime.as_millis() as u64,
    };
    let envelope = Signed::sign(&config.keypair, &listing).map_err(|e| e.to_string())?;
    // Checked like anyone else's: a listing this node would refuse is never sent.
    verify_listing(&envelope, now).map_err(|e| e.to_string())
}
