//! Request extractors whose every rejection is the API's JSON error (axum's own answer in plain
//! text). Bodies are read with a limit, and the limit is checked before a byte is parsed.

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// The largest JSON body of an endpoint that takes one (manifests have their own limit).
pub(crate) const MAX_JSON_BODY: usize = 64 * 1024;
/// An oversized body declared at most this long is read (and dropped) before the `413`: a client
/// still sending when the node answered and closed would see its write fail, not the answer.
/// Anything longer is refused unread.
const DRAIN_OVERSIZED: u64 = 1024 * 1024;

/// Reads a whole request body of at most `limit` bytes; `what` names it in the error.
///
/// The declared length is checked before anything is read, the actual length as it arrives (a
/// chunked body declares none).
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &str,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{what} is at most {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > limit as u64) {
        if len <= DRAIN_OVERSIZED {
            let mut stream = body.into_data_stream();
            while let Some(Ok(_)) = stream.next().await {}
        }
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body broke off before its end",
            )
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

/// A JSON body of type `T`; anything else (not JSON, the wrong shape, too large) is a `400
/// bad_request` (`413 too_large`) in the API's error shape. The content type is not checked, so
/// `curl -d` works as it is.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let bytes = read_limited(&parts.headers, body, MAX_JSON_BODY, "the body").await?;
        let bad = |reason: String| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body is not the JSON this endpoint takes: {reason}"),
            )
        };
        // No body at all is an empty object: the request takes every default it has.
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            axum::body::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        // serde reads a struct from an array of its fields too; a body is an object.
        if !starts_an_object(&bytes) {
            return Err(bad("expected a JSON object".into()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| bad(e.to_string()))
    }
}

/// True when the first non-blank byte opens a JSON object.
pub(crate) fn starts_an_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The `{name}` segment of an app's path.
pub(crate) struct AppName(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for AppName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        Ok(AppName(name))
    }
}
