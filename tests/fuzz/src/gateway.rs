//! The gateway's tunnel: HTTP/1.1 that a peer's gateway sends over a mesh stream, served by this
//! node's local instances; and the `Host` header that names an app.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use mycel_gateway::{Body, BoxError, LocalInstances, app_of_host, fuzzing::serve_peer_bytes};

/// Local instances `web-1-0` (reads the request body, up to 1 MiB, and says how much it read) and `fail-1-0` (fails before it answers).
struct Instances;

impl LocalInstances for Instances {
    fn serve(
        &self,
        id: &str,
        request: http::Request<Body>,
    ) -> Option<BoxFuture<'static, Result<http::Response<Body>, BoxError>>> {
        match id {
            "web-1-0" => Some(Box::pin(async move {
                let mut body = request.into_body();
                let mut read = 0;
                while let Some(frame) = body.frame().await {
                    read += frame?.data_ref().map_or(0, Bytes::len);
                    if read > 1 << 20 {
                        break;
                    }
                }
                let answer = format!("read {read} bytes");
                let body = Full::new(Bytes::from(answer))
                    .map_err(|never| match never {})
                    .boxed();
                Ok(http::Response::new(body))
            })),
            "fail-1-0" => Some(Box::pin(async { Err("the instance crashed".into()) })),
            _ => None,
        }
    }

    fn is_healthy(&self, id: &str) -> bool {
        id == "web-1-0"
    }
}

/// The bytes of one peer's gateway stream; the same bytes as a `Host` header.
pub fn gateway_stream(data: &[u8]) {
    super::block_on(serve_peer_bytes(data, Arc::new(Instances), 1 << 20));
    if let Ok(host) = std::str::from_utf8(data)
        && let Some(app) = app_of_host(host, "localhost")
    {
        assert!(!app.is_empty() && !app.contains('.'), "{host:?} -> {app:?}");
    }
}

pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let requests: [(&str, &str); 6] = [
        (
            "get",
            "GET / HTTP/1.1\r\nhost: web.localhost\r\nx-mycel-instance: web-1-0\r\n\r\n",
        ),
        (
            "post",
            "POST /items HTTP/1.1\r\nhost: web.localhost\r\nx-mycel-instance: web-1-0\r\ncontent-length: 5\r\n\r\nhello",
        ),
        (
            "chunked",
            "POST / HTTP/1.1\r\nx-mycel-instance: web-1-0\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "pipelined",
            "GET /a HTTP/1.1\r\nx-mycel-instance: web-1-0\r\n\r\nGET /b HTTP/1.1\r\nx-mycel-instance: fail-1-0\r\nconnection: close\r\n\r\n",
        ),
        (
            "unknown-instance",
            "GET / HTTP/1.1\r\nx-mycel-instance: gone-1-0\r\n\r\n",
        ),
        (
            "no-instance",
            "GET / HTTP/1.1\r\nhost: web.localhost:7402\r\n\r\n",
        ),
    ];
    requests
        .into_iter()
        .map(|(name, text)| ("gateway_stream", name.to_string(), text.as_bytes().to_vec()))
        .collect()
}
