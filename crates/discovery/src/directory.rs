//! The directory pages a node keeps as a home node of some shards, and how listings become the
//! apps a browse answers. Pure: time is an input, nothing here does I/O.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard},
};

use mycel_protocol::{
    PeerId, Signed,
    api::DiscoveredApp,
    discovery::{AppListing, VerifiedListing, shard_of},
};

/// Most listings a node keeps for others (a full page set at 1 KiB each is ~8 MiB).
pub const MAX_ENTRIES: usize = 8192;
/// Most listings one signer may have a node keep: what one node can run, with room to spare.
pub const MAX_ENTRIES_PER_SIGNER: usize = 256;
/// Most listings of one app a `List` answer carries, newest first: enough to show who serves it
/// without letting one popular app crowd the others out of the answer.
pub const MAX_LISTINGS_PER_APP: usize = 16;

struct Entry {
    shard: u16,
    listing: AppListing,
    envelope: Signed<AppListing>,
}

/// Listings by app and signer: at most one per node and app, the newest it signed.
pub struct Directory {
    entries: BTreeMap<(String, PeerId), Entry>,
    per_signer: HashMap<PeerId, usize>,
    capacity: usize,
}

/// Locks a shared directory. A panic while holding the lock leaves plain data behind: keep using
/// it.
pub fn lock(directory: &Mutex<Directory>) -> MutexGuard<'_, Directory> {
    directory.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Directory {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

impl Directory {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            per_signer: HashMap::new(),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps a checked listing unless an entry of the same signer and app is newer, or the
    /// directory is full of listings that outlive it. True when it was kept.
    pub fn insert(&mut self, verified: VerifiedListing, now_ms: u64) -> bool {
        let key = (verified.listing.name.clone(), verified.signer);
        if let Some(old) = self.entries.get(&key) {
            if old.listing.issued_at_ms > verified.listing.issued_at_ms {
                return false;
            }
        } else {
            if self.per_signer.get(&verified.signer).copied().unwrap_or(0) >= MAX_ENTRIES_PER_SIGNER
            {
                return false;
            }
            if self.entries.len() >= self.capacity {
                self.prune(now_ms);
            }
            if self.entries.len() >= self.capacity
                && !self.evict_before(verified.listing.expires_at_ms)
            {
                return false;
            }
            *self.per_signer.entry(verified.signer).or_default() += 1;
        }
        let entry = Entry {
            shard: shard_of(&verified.listing.name),
            listing: verified.listing,
            envelope: verified.envelope,
        };
        self.entries.insert(key, entry);
        true
    }

    /// Drops `signer`'s listings of `names`.
    pub fn withdraw(&mut self, signer: PeerId, names: &[String]) {
        for name in names {
            if self.entries.remove(&(name.clone(), signer)).is_some() {
                self.forget_one(signer);
            }
        }
    }

    /// Drops every listing that expired by `now_ms`.
    pub fn prune(&mut self, now_ms: u64) {
        let expired: Vec<(String, PeerId)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.listing.expires_at_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.entries.remove(&key);
            self.forget_one(key.1);
        }
    }

    /// The live listings of `shards` (of app `name` only, when given), at most
    /// [`MAX_LISTINGS_PER_APP`] per app, newest first, and `limit` in all.
    pub fn listings(
        &self,
        shards: &[u16],
        name: Option<&str>,
        now_ms: u64,
        limit: usize,
    ) -> Vec<Signed<AppListing>> {
        let mut by_app: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
        for ((app, _), entry) in &self.entries {
            if shards.contains(&entry.shard)
                && name.is_none_or(|n| n == app)
                && entry.listing.expires_at_ms > now_ms
            {
                by_app.entry(app).or_default().push(entry);
            }
        }
        let mut out = Vec::new();
        for entries in by_app.values_mut() {
            entries.sort_by_key(|e| std::cmp::Reverse(e.listing.issued_at_ms));
            for entry in entries.iter().take(MAX_LISTINGS_PER_APP) {
                if out.len() == limit {
                    return out;
                }
                out.push(entry.envelope.clone());
            }
        }
        out
    }

    /// Makes room by dropping the entry that expires first, if it expires before `expires_at_ms`.
    fn evict_before(&mut self, expires_at_ms: u64) -> bool {
        let Some(key) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.listing.expires_at_ms)
            .filter(|(_, e)| e.listing.expires_at_ms < expires_at_ms)
            .map(|(k, _)| k.clone())
        else {
            return false;
        };
        self.entries.remove(&key);
        self.forget_one(key.1);
        true
    }

    fn forget_one(&mut self, signer: PeerId) {
        if let Some(count) = self.per_signer.get_mut(&signer) {
            *count -= 1;
            if *count == 0 {
                self.per_signer.remove(&signer);
            }
        }
    }
}

/// The apps that checked listings describe, by name. Each node counts once per app (its newest
/// listing); when nodes disagree about an app (a rollout in progress, or a node that lies), the
/// description most nodes sign wins, then the most recently signed, and only the nodes that
/// signed it are its providers.
pub fn aggregate(listings: impl IntoIterator<Item = VerifiedListing>) -> Vec<DiscoveredApp> {
    let mut newest: BTreeMap<(String, PeerId), AppListing> = BTreeMap::new();
    for verified in listings {
        let key = (verified.listing.name.clone(), verified.signer);
        match newest.get(&key) {
            Some(old) if old.issued_at_ms >= verified.listing.issued_at_ms => {}
            _ => {
                newest.insert(key, verified.listing);
            }
        }
    }
    let mut by_app: BTreeMap<String, Vec<(PeerId, AppListing)>> = BTreeMap::new();
    for ((name, signer), listing) in newest {
        by_app.entry(name).or_default().push((signer, listing));
    }
    by_app
        .into_values()
        .filter_map(|signed| {
            let mut variants: Vec<(DiscoveredApp, u64)> = Vec::new();
            for (signer, listing) in signed {
                let app = discovered(&listing);
                match variants.iter_mut().find(|(v, _)| same_app(v, &app)) {
                    Some((variant, latest)) => {
                        variant.providers.push(signer.to_string());
                        *latest = (*latest).max(listing.issued_at_ms);
                    }
                    None => {
                        let mut app = app;
                        app.providers.push(signer.to_string());
                        variants.push((app, listing.issued_at_ms));
                    }
                }
            }
            let (mut app, _) = variants
                .into_iter()
                .max_by_key(|(v, latest)| (v.providers.len(), *latest))?;
            app.providers.sort();
            Some(app)
        })
        .collect()
}

fn discovered(listing: &AppListing) -> DiscoveredApp {
    DiscoveredApp {
        name: listing.name.clone(),
        version: listing.version.clone(),
        kind: listing.kind,
        publisher: listing.publisher.clone(),
        providers: Vec::new(),
        manifest_hash: listing.manifest_hash,
        description: listing.description.clone(),
    }
}

fn same_app(a: &DiscoveredApp, b: &DiscoveredApp) -> bool {
    a.version == b.version
        && a.kind == b.kind
        && a.publisher == b.publisher
        && a.manifest_hash == b.manifest_hash
        && a.description == b.description
}

#[cfg(test)]
mod tests;
