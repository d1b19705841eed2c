//! The Kademlia DHT: provider records ("this node holds X": blobs, apps), app listings as
//! records, and closest-peer lookups. A lookup answers with everything found before the query
//! ends or the caller stops waiting. What peers put is checked before it is stored
//! ([`crate::records::admit`]).

use super::*;

use libp2p::kad::{
    GetClosestPeersOk, GetProvidersOk, GetRecordOk, KBucketKey, QueryId, QueryResult, Quorum,
    Record, RecordKey,
};

/// A lookup in progress: what it found so far, and who waits for it.
type Lookup<T> = (Vec<T>, oneshot::Sender<Vec<T>>);

/// Lookups in progress, by query.
#[derive(Default)]
pub(super) struct DhtQueries {
    providers: HashMap<QueryId, Lookup<PeerId>>,
    records: HashMap<QueryId, Lookup<Vec<u8>>>,
    closest: HashMap<QueryId, oneshot::Sender<Vec<PeerId>>>,
}

impl Actor {
    pub(super) fn start_providing(&mut self, key: Vec<u8>) {
        if let Err(error) = self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(RecordKey::new(&key))
        {
            tracing::warn!(%error, "storing a provider record");
        }
    }

    pub(super) fn stop_providing(&mut self, key: Vec<u8>) {
        self.swarm
            .behaviour_mut()
            .kad
            .stop_providing(&RecordKey::new(&key));
    }

    pub(super) fn find_providers(&mut self, key: Vec<u8>, reply: oneshot::Sender<Vec<PeerId>>) {
        let id = self
            .swarm
            .behaviour_mut()
            .kad
            .get_providers(RecordKey::new(&key));
        self.dht.providers.insert(id, (Vec::new(), reply));
    }

    pub(super) fn put_record(&mut self, key: Vec<u8>, value: Vec<u8>, lifetime: Duration) {
        let record = Record {
            key: RecordKey::new(&key),
            value,
            publisher: None,
            expires: Some(Instant::now() + lifetime),
        };
        // One peer storing it is enough to be found; the others get it as the query goes.
        if let Err(error) = self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, Quorum::One)
        {
            tracing::warn!(%error, "storing a DHT record");
        }
    }

    pub(super) fn remove_record(&mut self, key: Vec<u8>) {
        self.swarm
            .behaviour_mut()
            .kad
            .remove_record(&RecordKey::new(&key));
    }

    pub(super) fn get_record(&mut self, key: Vec<u8>, reply: oneshot::Sender<Vec<Vec<u8>>>) {
        let id = self
            .swarm
            .behaviour_mut()
            .kad
            .get_record(RecordKey::new(&key));
        self.dht.records.insert(id, (Vec::new(), reply));
    }

    pub(super) fn closest_peers(&mut self, key: Vec<u8>, reply: oneshot::Sender<Vec<PeerId>>) {
        let id = self.swarm.behaviour_mut().kad.get_closest_peers(key);
        self.dht.closest.insert(id, reply);
    }

    pub(super) fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest { request } => {
                let ttl = self.config.app_provider_ttl;
                if let Err(error) =
                    crate::records::admit(&mut self.swarm.behaviour_mut().kad, request, ttl)
                {
                    tracing::debug!(%error, "refused a DHT record");
                    self.metrics.record_refused(error.reason());
                }
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_query_progress(id, result, step.last),
            _ => {}
        }
    }

    fn on_query_progress(&mut self, id: QueryId, result: QueryResult, last: bool) {
        match result {
            QueryResult::GetProviders(result) => {
                let Some((found, _)) = self.dht.providers.get_mut(&id) else {
                    return;
                };
                if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
                    found.extend(
                        providers
                            .into_iter()
                            .filter(|p| !found.contains(p))
                            .collect::<Vec<_>>(),
                    );
                }
                if last && let Some((found, reply)) = self.dht.providers.remove(&id) {
                    let _ = reply.send(found);
                }
            }
            QueryResult::GetRecord(result) => {
                let Some((found, _)) = self.dht.records.get_mut(&id) else {
                    return;
                };
                if let Ok(GetRecordOk::FoundRecord(peer_record)) = result {
                    found.push(peer_record.record.value);
                }
                if last && let Some((found, reply)) = self.dht.records.remove(&id) {
                    let _ = reply.send(found);
                }
            }
            QueryResult::GetClosestPeers(result) => {
                if !last {
                    return;
                }
                let Some(reply) = self.dht.closest.remove(&id) else {
                    return;
                };
                let (key, peers) = match result {
                    Ok(GetClosestPeersOk { key, peers }) => (key, peers),
                    // A timeout still carries what the lookup found.
                    Err(kad::GetClosestPeersError::Timeout { key, peers }) => (key, peers),
                };
                let target = KBucketKey::new(key);
                let mut peers: Vec<PeerId> = peers.into_iter().map(|p| p.peer_id).collect();
                peers.sort_by_key(|p| KBucketKey::from(*p).distance(&target));
                let _ = reply.send(peers);
            }
            QueryResult::PutRecord(Err(error)) => {
                tracing::debug!(%error, "a DHT record reached fewer peers than hoped");
            }
            _ => {}
        }
    }
}
