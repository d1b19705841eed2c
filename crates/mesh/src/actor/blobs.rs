//! The blob protocol's plumbing: outbound requests wait in a map for their answers; inbound ones
//! are answered by the node's `BlobServer` on a task of their own (reading a megabyte from disk
//! must never stall the swarm), whose answer comes back through `answers`.

use super::*;

use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use mycel_protocol::blob::{BlobRequest, BlobResponse};

/// How many answers may wait for the actor at once.
pub(super) const ANSWER_QUEUE: usize = 256;

#[derive(Default)]
pub(super) struct BlobTraffic {
    pub(super) waiting:
        HashMap<OutboundRequestId, oneshot::Sender<Result<BlobResponse, MeshError>>>,
    pub(super) answering: HashMap<u64, ResponseChannel<BlobResponse>>,
    pub(super) next_answer: u64,
}

impl Actor {
    pub(super) fn send_blob_request(
        &mut self,
        peer: PeerId,
        request: BlobRequest,
        reply: oneshot::Sender<Result<BlobResponse, MeshError>>,
    ) {
        let id = self
            .swarm
            .behaviour_mut()
            .blobs
            .send_request(&peer, request);
        self.blob_traffic.waiting.insert(id, reply);
    }

    pub(super) fn on_blob_event(
        &mut self,
        event: request_response::Event<BlobRequest, BlobResponse>,
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
                let Some(server) = self.config.blob_server.clone() else {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .blobs
                        .send_response(channel, BlobResponse::Missing);
                    return;
                };
                let id = self.blob_traffic.next_answer;
                self.blob_traffic.next_answer += 1;
                self.blob_traffic.answering.insert(id, channel);
                let answers = self.answers.clone();
                tokio::spawn(async move {
                    let response = server.serve(peer, request).await;
                    let _ = answers.send((id, response)).await;
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
                if let Some(reply) = self.blob_traffic.waiting.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.blob_traffic.waiting.remove(&request_id) {
                    let _ = reply.send(Err(MeshError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "answering a blob request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn answer_blob_request(&mut self, id: u64, response: BlobResponse) {
        if let Some(channel) = self.blob_traffic.answering.remove(&id) {
            // The asker may have given up meanwhile; nothing to do then.
            let _ = self
                .swarm
                .behaviour_mut()
                .blobs
                .send_response(channel, response);
        }
    }
}
