//! The blob protocols' plumbing. Requests (`/mycel/blob/1`): outbound ones wait in a map for
//! their answers; inbound ones are answered by the node's `BlobServer` on a task of their own
//! (reading from disk must never stall the swarm), whose answer comes back through `answers`.
//! Range streams (`/mycel/blob-ranges/1`) never touch the actor: an accept task, started with the
//! actor and aborted with it, hands each to the `BlobServer` on a task of its own.

use super::*;

use libp2p::{
    StreamProtocol,
    request_response::{OutboundRequestId, ResponseChannel},
};
use mycel_protocol::blob::{BlobRequest, BlobResponse};

/// How many answers may wait for the actor at once.
pub(super) const ANSWER_QUEUE: usize = 256;
/// How many range streams are served at once; more are refused (closed) until some end. Each
/// holds at most three encoded ranges (about 3 MiB) at a time.
const MAX_RANGE_STREAMS: usize = 32;

/// Aborts the task it holds (and so every task in that task's `JoinSet`) when dropped.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Default)]
pub(super) struct BlobTraffic {
    pub(super) waiting:
        HashMap<OutboundRequestId, oneshot::Sender<Result<BlobResponse, MeshError>>>,
    pub(super) answering: HashMap<u64, ResponseChannel<BlobResponse>>,
    pub(super) next_answer: u64,
}

impl Actor {
    /// Starts serving peers' range streams when the node has a `BlobServer`; they stop when the
    /// returned guard is dropped.
    pub(super) fn accept_blob_streams(&self) -> Option<AbortOnDrop> {
        let server = self.config.blob_server.clone()?;
        let protocol = StreamProtocol::new(names::BLOB_RANGES_PROTOCOL);
        let mut incoming = match self
            .swarm
            .behaviour()
            .streams
            .new_control()
            .accept(protocol)
        {
            Ok(incoming) => incoming,
            Err(error) => {
                tracing::error!(%error, "accepting blob range streams");
                return None;
            }
        };
        Some(AbortOnDrop(tokio::spawn(async move {
            let mut serving = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    next = incoming.next() => {
                        let Some((peer, stream)) = next else { return };
                        if serving.len() >= MAX_RANGE_STREAMS {
                            tracing::debug!(%peer, "too many blob range streams; closing one");
                            continue;
                        }
                        serving.spawn(server.serve_stream(peer, stream));
                    }
                    Some(_) = serving.join_next(), if !serving.is_empty() => {}
                }
            }
        })))
    }

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
