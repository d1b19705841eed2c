//! The gateway's side of peers' streams, reachable by the fuzz targets (`tests/fuzz`): exactly
//! the code that serves a peer's `/mycel/gateway/1` stream, over an in-memory pipe.

use std::sync::Arc;

use http::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::{LocalInstances, inbound};

/// Feeds `input` to this node as the bytes of one peer's gateway stream and returns what the node
/// wrote back (at most `answer_limit` bytes are kept).
pub async fn serve_peer_bytes(
    input: &[u8],
    local: Arc<dyn LocalInstances>,
    answer_limit: usize,
) -> Vec<u8> {
    let (mut peer, node) = tokio::io::duplex(64 * 1024);
    let me = HeaderValue::from_static("12D3KooWFuzzGatewayNode");
    let server = tokio::spawn(inbound::serve_stream(
        node,
        me,
        local,
        CancellationToken::new(),
    ));
    let (mut read, mut write) = tokio::io::split(&mut peer);
    let send = async {
        let _ = write.write_all(input).await;
        let _ = write.shutdown().await;
    };
    let receive = async {
        let mut answer = Vec::new();
        let mut buffer = [0u8; 8192];
        while let Ok(n) = read.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            let room = answer_limit.saturating_sub(answer.len());
            answer.extend_from_slice(&buffer[..n.min(room)]);
        }
        answer
    };
    let ((), answer) = tokio::join!(send, receive);
    let _ = server.await;
    answer
}
