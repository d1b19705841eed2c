//! Provider records in the Kademlia DHT: "this node holds X" (blobs now, apps later). A lookup
//! answers with every provider found before the query ends or the caller stops waiting.

use super::*;

use libp2p::kad::{GetProvidersOk, QueryId, QueryResult, RecordKey};

/// Lookups in progress: what they found so far, and who waits for it.
pub(super) type ProviderLookups = HashMap<QueryId, (Vec<PeerId>, oneshot::Sender<Vec<PeerId>>)>;

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
        self.provider_lookups.insert(id, (Vec::new(), reply));
    }

    pub(super) fn on_kad_event(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        let QueryResult::GetProviders(result) = result else {
            return;
        };
        let Some((found, _)) = self.provider_lookups.get_mut(&id) else {
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
        if step.last
            && let Some((found, reply)) = self.provider_lookups.remove(&id)
        {
            let _ = reply.send(found);
        }
    }
}
