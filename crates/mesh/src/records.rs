//! What mycel's Kademlia accepts: its configuration, and the check every record a peer puts
//! goes through before it reaches the store (`StoreInserts::FilterBoth`).
//!
//! mycel's DHT holds one kind of record, an app listing under `/mycel/app/<name>`
//! ([`mycel_protocol::discovery`]); anything else, or a listing that is forged, oversized,
//! malformed, invalid or expired, is refused and never stored or served. Provider entries are
//! stored as peers announce them, except that an entry for an app key lives at most the
//! discovery lifetime: a node that stops running an app, or dies, drops out of its providers
//! when its entry runs out.
//!
//! Public so that `simulations/` runs the very same configuration and checks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::{
    PeerId, StreamProtocol,
    kad::{self, InboundRequest, RecordKey, store::RecordStore},
};
use mycel_protocol::{
    discovery::{self, ListingError},
    names,
};

/// The Kademlia store every mycel node uses.
pub type Store = kad::store::MemoryStore;

/// mycel's Kademlia configuration: the private protocol id, every inbound record checked before
/// it is stored.
pub fn kademlia_config() -> kad::Config {
    let mut config = kad::Config::new(StreamProtocol::new(names::KADEMLIA_PROTOCOL));
    config.set_query_timeout(Duration::from_secs(30));
    config.set_record_filtering(kad::StoreInserts::FilterBoth);
    config
}

/// mycel's Kademlia behaviour for `local`, with `config` (see [`kademlia_config`]).
pub fn kademlia(local: PeerId, config: kad::Config) -> kad::Behaviour<Store> {
    let mut kad = kad::Behaviour::with_config(local, Store::new(local), config);
    // Loopback and private addresses are never "confirmed external", so without this every
    // node of a local or LAN mesh would stay a DHT client and nobody would answer queries.
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

/// Wall-clock milliseconds, the clock listings are signed against.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Stores what a peer put, if it passes: a record only when it is a valid app listing (and no
/// longer than the listing says), a provider entry always (an app key's for at most
/// `app_provider_ttl`). Returns why a record was refused.
pub fn admit(
    kad: &mut kad::Behaviour<Store>,
    request: InboundRequest,
    app_provider_ttl: Duration,
) -> Result<(), ListingError> {
    match request {
        InboundRequest::PutRecord {
            record: Some(mut record),
            ..
        } => {
            let now = now_ms();
            let verified = discovery::verify_dht_record(record.key.as_ref(), &record.value, now)?;
            if newer_held(kad, &record.key, &verified, now) {
                // A replay of an older listing by the same node must not hide its newer one.
                return Ok(());
            }
            let left = Duration::from_millis(verified.listing.expires_at_ms.saturating_sub(now));
            let until = std::time::Instant::now() + left;
            record.expires = Some(record.expires.map_or(until, |e| e.min(until)));
            if let Err(error) = kad.store_mut().put(record) {
                tracing::debug!(%error, "the DHT store is full; a valid listing was not kept");
            }
            Ok(())
        }
        InboundRequest::AddProvider {
            record: Some(mut record),
        } => {
            if is_app_key(&record.key) {
                let until = std::time::Instant::now() + app_provider_ttl;
                record.expires = Some(record.expires.map_or(until, |e| e.min(until)));
            }
            if let Err(error) = kad.store_mut().add_provider(record) {
                tracing::debug!(%error, "the DHT store is full; a provider entry was not kept");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether the store holds a newer listing by the signer of `incoming` under `key`.
fn newer_held(
    kad: &mut kad::Behaviour<Store>,
    key: &RecordKey,
    incoming: &discovery::VerifiedListing,
    now: u64,
) -> bool {
    let Some(held) = kad.store_mut().get(key) else {
        return false;
    };
    discovery::verify_dht_record(key.as_ref(), &held.value, now).is_ok_and(|held| {
        held.signer == incoming.signer && held.listing.issued_at_ms > incoming.listing.issued_at_ms
    })
}

fn is_app_key(key: &RecordKey) -> bool {
    discovery::app_of_key(key.as_ref()).is_some()
}

#[cfg(test)]
mod tests {
    use libp2p::{identity::Keypair, swarm::ConnectionId};
    use mycel_protocol::{
        BlobHash, Signed,
        app::AppKind,
        discovery::{AppListing, LISTING_FORMAT, app_key},
    };

    use super::*;

    fn listing(name: &str, issued_at_ms: u64, description: Option<String>) -> AppListing {
        AppListing {
            format: LISTING_FORMAT,
            name: name.into(),
            version: "1.0.0".into(),
            kind: AppKind::Wasm,
            publisher: PeerId::random().to_string(),
            manifest_hash: BlobHash([1; 32]),
            description,
            issued_at_ms,
            expires_at_ms: issued_at_ms + 60_000,
        }
    }

    fn put(
        kad: &mut kad::Behaviour<Store>,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), ListingError> {
        let record = kad::Record::new(RecordKey::new(&key), value);
        let request = InboundRequest::PutRecord {
            source: PeerId::random(),
            connection: ConnectionId::new_unchecked(0),
            record: Some(record),
        };
        admit(kad, request, Duration::from_secs(60))
    }

    fn held(kad: &mut kad::Behaviour<Store>, name: &str) -> Option<u64> {
        let record = kad.store_mut().get(&RecordKey::new(&app_key(name)))?;
        let verified =
            discovery::verify_dht_record(&app_key(name), &record.value, now_ms()).ok()?;
        Some(verified.listing.issued_at_ms)
    }

    #[test]
    fn only_valid_listings_under_their_own_key_are_stored() {
        let mut kad = kademlia(PeerId::random(), kademlia_config());
        let node = Keypair::generate_ed25519();
        let now = now_ms();
        let signed =
            |l: &AppListing| mycel_protocol::encode(&Signed::sign(&node, l).unwrap()).unwrap();

        put(
            &mut kad,
            app_key("hello"),
            signed(&listing("hello", now, None)),
        )
        .unwrap();
        assert_eq!(held(&mut kad, "hello"), Some(now));

        // Forged: another key's signature under this node's name.
        let forger = Keypair::generate_ed25519();
        let honest = Signed::sign(&forger, &listing("evil", now, None)).unwrap();
        let (_, payload, signature) = honest.parts();
        let claimed = node
            .public()
            .try_into_ed25519()
            .unwrap()
            .to_bytes()
            .to_vec();
        let forged =
            Signed::<AppListing>::from_parts(claimed, payload.to_vec(), signature.to_vec());
        let error = put(
            &mut kad,
            app_key("evil"),
            mycel_protocol::encode(&forged).unwrap(),
        )
        .unwrap_err();
        assert_eq!(error.reason(), "forged");
        let huge = listing("big", now, Some("x".repeat(4096)));
        let error = put(&mut kad, app_key("big"), signed(&huge)).unwrap_err();
        assert_eq!(error.reason(), "oversized");
        let error = put(
            &mut kad,
            b"/mycel/other".to_vec(),
            signed(&listing("x", now, None)),
        )
        .unwrap_err();
        assert_eq!(error.reason(), "invalid");
        assert_eq!(held(&mut kad, "evil"), None);
        assert_eq!(held(&mut kad, "big"), None);

        // A replayed older listing of the same node does not replace its newer one.
        put(
            &mut kad,
            app_key("hello"),
            signed(&listing("hello", now - 5_000, None)),
        )
        .unwrap();
        assert_eq!(held(&mut kad, "hello"), Some(now));
    }
}
