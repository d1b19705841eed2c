//! The blob protocols' plumbing. Requests (`/mycel/blob/1`): outbound ones wait in a map for
//! their answers; inbound ones are answered by the node's `BlobServer` on a task of their own
//! (reading from disk must never stall the swarm), whose answer comes back through `answers`.
//! Range streams (`/mycel/blob-ranges/1`) never touch the actor: an accept task, started with the
//! actor and aborted with it, hands each to the `BlobServer` on a task of its own.

use super::*;

use libp2p::StreamProtocol;
use mycel_protocol::blob::{BlobRequest, BlobResponse};

use super::traffic::{Inbound, Reply};

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
        reply: Reply<BlobResponse>,
    ) {
        let id = self
            .swarm
            .behaviour_mut()
            .blobs
            .send_request(&peer, request);
        self.blob_traffic.expect(id, reply);
    }

    pub(super) fn on_blob_event(
        &mut self,
        event: request_response::Event<BlobRequest, BlobResponse>,
    ) {
        let Some(Inbound {
            peer,
            request,
            channel,
        }) = self.blob_traffic.settle(event, "blob")
        else {
            return;
        };
        let Some(server) = self.config.blob_server.clone() else {
            let _ = self
                .swarm
                .behaviour_mut()
                .blobs
                .send_response(channel, BlobResponse::Missing);
            return;
        };
        let id = self.blob_traffic.hold(channel);
        let answers = self.answers.clone();
        // Detached: ends when the blob server answers or drops the reply.
        tokio::spawn(async move {
            let response = server.serve(peer, request).await;
            let _ = answers.send((id, response)).await;
        });
    }

    pub(super) fn answer_blob_request(&mut self, id: u64, response: BlobResponse) {
        if let Some(channel) = self.blob_traffic.release(id) {
            // The asker may have given up meanwhile; nothing to do then.
            let _ = self
                .swarm
                .behaviour_mut()
                .blobs
                .send_response(channel, response);
        }
    }
}
