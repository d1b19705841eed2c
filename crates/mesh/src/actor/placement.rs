//! The placement protocol's plumbing: opaque frames for the placement group. Outbound requests
//! wait in a map for their answers; inbound ones go to the placement inbox with a reply channel,
//! and a small task per request brings the answer back to the actor.

use super::*;

use crate::{InboundPlacement, PlacementFrame};

use super::traffic::{Inbound, Reply};

impl Actor {
    pub(super) fn send_placement_request(
        &mut self,
        peer: PeerId,
        frame: PlacementFrame,
        reply: Reply<PlacementFrame>,
    ) {
        if peer == *self.swarm.local_peer_id() {
            let _ = reply.send(Err(MeshError::Request {
                peer,
                reason: "a node does not send placement requests to itself".into(),
            }));
            return;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .placement
            .send_request(&peer, frame);
        self.placement_traffic.expect(id, reply);
    }

    pub(super) fn on_placement_event(
        &mut self,
        event: request_response::Event<PlacementFrame, PlacementFrame>,
    ) {
        let Some(Inbound {
            peer,
            request,
            channel,
        }) = self.placement_traffic.settle(event, "placement")
        else {
            return;
        };
        let Some(inbox) = self.config.placement_inbox.clone() else {
            // Dropping the channel closes the stream: the asker sees a failure.
            return;
        };
        let (reply, answer) = oneshot::channel();
        // A full inbox means the placement group is behind: refuse rather than queue without
        // bound (Raft retries).
        if inbox
            .try_send(InboundPlacement {
                peer,
                frame: request,
                reply,
            })
            .is_err()
        {
            tracing::debug!(%peer, "placement inbox full or closed; request refused");
            return;
        }
        let id = self.placement_traffic.hold(channel);
        let answers = self.placement_answers.clone();
        // Detached: ends when the placement group answers or drops the reply.
        tokio::spawn(async move {
            // A dropped reply is a refusal: the entry is removed when it comes back empty.
            let answer = answer.await.ok();
            let _ = answers.send((id, answer)).await;
        });
    }

    pub(super) fn answer_placement_request(&mut self, id: u64, answer: Option<PlacementFrame>) {
        let Some(channel) = self.placement_traffic.release(id) else {
            return;
        };
        if let Some(frame) = answer {
            let _ = self
                .swarm
                .behaviour_mut()
                .placement
                .send_response(channel, frame);
        }
    }
}
