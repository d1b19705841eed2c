//! The placement protocol's plumbing: opaque frames for the placement group. Outbound requests
//! wait in a map for their answers; inbound ones go to the placement inbox with a reply channel,
//! and a small task per request brings the answer back to the actor.

use super::*;

use libp2p::request_response::{OutboundRequestId, ResponseChannel};

use crate::{InboundPlacement, PlacementFrame};

#[derive(Default)]
pub(super) struct PlacementTraffic {
    pub(super) waiting:
        HashMap<OutboundRequestId, oneshot::Sender<Result<PlacementFrame, MeshError>>>,
    pub(super) answering: HashMap<u64, ResponseChannel<PlacementFrame>>,
    pub(super) next_answer: u64,
}

impl Actor {
    pub(super) fn send_placement_request(
        &mut self,
        peer: PeerId,
        frame: PlacementFrame,
        reply: oneshot::Sender<Result<PlacementFrame, MeshError>>,
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
        self.placement_traffic.waiting.insert(id, reply);
    }

    pub(super) fn on_placement_event(
        &mut self,
        event: request_response::Event<PlacementFrame, PlacementFrame>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let Some(inbox) = self.config.placement_inbox.clone() else {
                    // Dropping the channel closes the stream: the asker sees a failure.
                    return;
                };
                let id = self.placement_traffic.next_answer;
                self.placement_traffic.next_answer += 1;
                let (reply, answer) = oneshot::channel();
                // A full inbox means the placement group is behind: refuse rather than queue
                // without bound (Raft retries).
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
                self.placement_traffic.answering.insert(id, channel);
                let answers = self.placement_answers.clone();
                tokio::spawn(async move {
                    // A dropped reply is a refusal: the entry is removed when it comes back empty.
                    let answer = answer.await.ok();
                    let _ = answers.send((id, answer)).await;
                });
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.placement_traffic.waiting.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.placement_traffic.waiting.remove(&request_id) {
                    let reason = error.to_string();
                    let error = match error {
                        request_response::OutboundFailure::DialFailure => {
                            MeshError::Unreachable { peer, reason }
                        }
                        _ => MeshError::Request { peer, reason },
                    };
                    let _ = reply.send(Err(error));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "answering a placement request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn answer_placement_request(&mut self, id: u64, answer: Option<PlacementFrame>) {
        let Some(channel) = self.placement_traffic.answering.remove(&id) else {
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
