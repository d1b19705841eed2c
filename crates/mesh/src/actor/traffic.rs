//! The bookkeeping every request-response protocol of the actor shares: this node's requests
//! waiting for their answers, and peers' requests waiting for this node's answer (held here by a
//! number while a task works the answer out, since a response channel cannot leave the actor).

use super::*;

use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};

/// Where the answer to one of this node's requests goes.
pub(super) type Reply<Resp> = oneshot::Sender<Result<Resp, MeshError>>;

/// A peer's request for this node to answer.
pub(super) struct Inbound<Req, Resp> {
    pub(super) peer: PeerId,
    pub(super) request: Req,
    pub(super) channel: ResponseChannel<Resp>,
}

pub(super) struct Traffic<Resp> {
    waiting: HashMap<OutboundRequestId, Reply<Resp>>,
    answering: HashMap<u64, ResponseChannel<Resp>>,
    next_answer: u64,
}

impl<Resp> Default for Traffic<Resp> {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            answering: HashMap::new(),
            next_answer: 0,
        }
    }
}

impl<Resp> Traffic<Resp> {
    /// Remembers where the answer to request `id` goes.
    pub(super) fn expect(&mut self, id: OutboundRequestId, reply: Reply<Resp>) {
        self.waiting.insert(id, reply);
    }

    /// Holds a peer's response channel while the answer is worked out; returns its number.
    pub(super) fn hold(&mut self, channel: ResponseChannel<Resp>) -> u64 {
        let id = self.next_answer;
        self.next_answer += 1;
        self.answering.insert(id, channel);
        id
    }

    /// The response channel held as number `id`, once (the asker may be gone meanwhile).
    pub(super) fn release(&mut self, id: u64) -> Option<ResponseChannel<Resp>> {
        self.answering.remove(&id)
    }

    /// Settles the events about this node's own requests (an answer, a failure) and the
    /// protocol's housekeeping; returns a peer's request, for the protocol to answer. A request
    /// that never reached the peer's node is `Unreachable` (the caller may try another peer).
    pub(super) fn settle<Req>(
        &mut self,
        event: request_response::Event<Req, Resp>,
        protocol: &str,
    ) -> Option<Inbound<Req, Resp>> {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                return Some(Inbound {
                    peer,
                    request,
                    channel,
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
                if let Some(reply) = self.waiting.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.waiting.remove(&request_id) {
                    let reason = error.to_string();
                    let error = match error {
                        OutboundFailure::DialFailure => MeshError::Unreachable { peer, reason },
                        _ => MeshError::Request { peer, reason },
                    };
                    let _ = reply.send(Err(error));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "answering a {protocol} request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
        None
    }
}
