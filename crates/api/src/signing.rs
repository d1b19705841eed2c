//! Signed app requests over HTTP. A deploy, scale or stop may carry a signature in three headers
//! (`x-mycel-key`, `x-mycel-issued-at`, `x-mycel-signature`, see `mycel_protocol::ownership`);
//! this node checks it (and that it was signed within five minutes of its clock) before the
//! request goes anywhere. A request without them is signed here with the node's own identity
//! key, so the node owns what is deployed through it unsigned. Either way the signed request
//! travels with the write: the leader and every replica check it again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::http::{HeaderMap, StatusCode};
use mycel_protocol::{
    Keypair,
    ownership::{
        AppAction, HEADER_ISSUED_AT, HEADER_KEY, HEADER_SIGNATURE, MAX_SKEW_MS, OwnerKey,
        SignedRequest,
    },
    placement::WriteError,
};

use crate::{ApiError, ApiState};

/// Signs the requests this node's API takes unsigned, with the node's identity key.
#[derive(Clone)]
pub struct NodeSigner {
    inner: Arc<Inner>,
}

struct Inner {
    keypair: Keypair,
    /// The last `issued_at` this node signed: each is later than the one before, so two requests
    /// in the same millisecond are not taken for a replay of each other.
    last_ms: AtomicU64,
}

impl NodeSigner {
    /// `keypair` is the node's identity (an ed25519 key).
    pub fn new(keypair: Keypair) -> Self {
        Self {
            inner: Arc::new(Inner {
                keypair,
                last_ms: AtomicU64::new(0),
            }),
        }
    }

    /// The key requests sent unsigned to this node are signed with.
    pub fn key(&self) -> Option<OwnerKey> {
        OwnerKey::of(&self.inner.keypair).ok()
    }

    fn sign(&self, action: AppAction) -> Result<SignedRequest, ApiError> {
        let now = now_ms();
        let next = |last: u64| now.max(last + 1);
        let last = self
            .inner
            .last_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(next(last)))
            .unwrap_or_else(|last| last);
        let issued = next(last);
        SignedRequest::sign(&self.inner.keypair, issued, action).map_err(|e| {
            tracing::error!(%e, "signing a request with the node key");
            ApiError::internal("the node could not sign the request")
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The signed request for `action`: the client's, from the headers, once its signature and time
/// hold; else, when it sent none of the headers, one this node signs.
pub(crate) fn signed_request(
    state: &ApiState,
    headers: &HeaderMap,
    action: AppAction,
) -> Result<SignedRequest, ApiError> {
    match from_headers(headers, action.clone(), now_ms())? {
        Some(request) => Ok(request),
        None => state.signer.sign(action),
    }
}

/// Whether the request carries any of the signature headers.
pub(crate) fn has_signature(headers: &HeaderMap) -> bool {
    [HEADER_KEY, HEADER_ISSUED_AT, HEADER_SIGNATURE]
        .iter()
        .any(|name| headers.contains_key(*name))
}

/// The client's signed request for `action` in `headers`, checked against the clock `now_ms`;
/// `None` when the request carries none of the headers.
fn from_headers(
    headers: &HeaderMap,
    action: AppAction,
    now_ms: u64,
) -> Result<Option<SignedRequest>, ApiError> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let (key, issued_at, signature) = match (
        header(HEADER_KEY),
        header(HEADER_ISSUED_AT),
        header(HEADER_SIGNATURE),
    ) {
        (None, None, None) => return Ok(None),
        (Some(key), Some(issued_at), Some(signature)) => (key, issued_at, signature),
        (key, issued_at, signature) => {
            let missing: Vec<&str> = [
                (HEADER_KEY, key),
                (HEADER_ISSUED_AT, issued_at),
                (HEADER_SIGNATURE, signature),
            ]
            .into_iter()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name)
            .collect();
            return Err(malformed(format!(
                "a signed request carries {HEADER_KEY}, {HEADER_ISSUED_AT} and \
                 {HEADER_SIGNATURE}; this one lacks {}",
                missing.join(" and ")
            )));
        }
    };
    let key: OwnerKey = key
        .parse()
        .map_err(|e| malformed(format!("{HEADER_KEY}: {e}")))?;
    let issued_at_ms: u64 = issued_at.trim().parse().map_err(|_| {
        malformed(format!(
            "{HEADER_ISSUED_AT}: '{}' is not milliseconds since the Unix epoch",
            issued_at.chars().take(40).collect::<String>()
        ))
    })?;
    let request = SignedRequest::from_parts(key, issued_at_ms, action, signature)
        .map_err(|e| malformed(format!("{HEADER_SIGNATURE}: {e}")))?;
    if request.verify().is_err() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!(
                "the signature does not match {key} and this request: it must sign this {} of \
                 '{}' (the signed bytes are described in GET /v1/openapi.json)",
                request.action.verb(),
                request.action.app()
            ),
        ));
    }
    if !request.is_fresh(now_ms) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "stale_request",
            format!(
                "the request was signed {} s away from this node's clock; it must be signed \
                 within {} s of when it is sent (check the clock, and sign again)",
                issued_at_ms.abs_diff(now_ms) / 1000,
                MAX_SKEW_MS / 1000
            ),
        ));
    }
    Ok(Some(request))
}

fn malformed(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_signature", message)
}

/// The answer for a write the group refused. A refusal for want of ownership also says when the
/// owner is a node of the mesh (its key is its identity: a request sent to it unsigned acts as
/// it), and when the request was signed with this node's key because it carried no signature.
pub(crate) async fn write_error(state: &ApiState, error: WriteError) -> ApiError {
    let WriteError::NotOwner { app, owner, signer } = &error else {
        return error.into();
    };
    let mut owner_is = String::new();
    if let Some(peer) = owner.to_peer_id().map(|p| p.to_string()) {
        let nodes = state.mesh.nodes().await.unwrap_or_default();
        if let Some(node) = nodes.iter().find(|n| n.peer_id == peer) {
            owner_is = format!(
                " (node '{}': a request sent to it unsigned acts as it)",
                node.name
            );
        }
    }
    let signer_is = if state.signer.key() == Some(*signer) {
        " (this node's key: the request carried no signature)"
    } else {
        ""
    };
    let message = format!(
        "app '{app}' is owned by {owner}{owner_is}; this request is signed by {signer}{signer_is}"
    );
    ApiError::new(StatusCode::FORBIDDEN, error.code(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn scale(replicas: u32) -> AppAction {
        AppAction::Scale {
            app: "web".into(),
            replicas,
        }
    }

    fn headers(signed: &SignedRequest) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_KEY, signed.key.to_string().parse().unwrap());
        let issued_at = signed.issued_at_ms.to_string();
        headers.insert(HEADER_ISSUED_AT, issued_at.parse().unwrap());
        headers.insert(HEADER_SIGNATURE, signed.signature_hex().parse().unwrap());
        headers
    }

    fn refused(result: Result<Option<SignedRequest>, ApiError>) -> (StatusCode, &'static str) {
        let error = result.expect_err("refused");
        (error.status(), error.code())
    }

    #[test]
    fn a_request_without_headers_is_the_nodes_to_sign() {
        assert_eq!(
            from_headers(&HeaderMap::new(), scale(3), NOW).unwrap(),
            None
        );
        let signer = NodeSigner::new(Keypair::generate_ed25519());
        let first = signer.sign(scale(3)).unwrap();
        let second = signer.sign(scale(3)).unwrap();
        first.verify().unwrap();
        assert_eq!(Some(first.key), signer.key());
        assert!(
            second.issued_at_ms > first.issued_at_ms,
            "never the same time twice"
        );
    }

    #[test]
    fn a_signature_that_holds_is_taken() {
        let signed = SignedRequest::sign(&Keypair::generate_ed25519(), NOW, scale(3)).unwrap();
        let taken = from_headers(&headers(&signed), scale(3), NOW + 1000).unwrap();
        assert_eq!(taken, Some(signed));
    }

    #[test]
    fn bad_signatures_and_stale_ones_are_refused() {
        let keypair = Keypair::generate_ed25519();
        let signed = SignedRequest::sign(&keypair, NOW, scale(3)).unwrap();
        // Signed for 3 replicas, asking for 5.
        assert_eq!(
            refused(from_headers(&headers(&signed), scale(5), NOW)),
            (StatusCode::UNAUTHORIZED, "bad_signature")
        );
        // Another key claimed.
        let other = SignedRequest {
            key: OwnerKey::of(&Keypair::generate_ed25519()).unwrap(),
            ..signed.clone()
        };
        assert_eq!(
            refused(from_headers(&headers(&other), scale(3), NOW)),
            (StatusCode::UNAUTHORIZED, "bad_signature")
        );
        for now in [NOW + MAX_SKEW_MS + 1, NOW - MAX_SKEW_MS - 1] {
            assert_eq!(
                refused(from_headers(&headers(&signed), scale(3), now)),
                (StatusCode::UNAUTHORIZED, "stale_request")
            );
        }
    }

    #[test]
    fn malformed_headers_are_bad_requests() {
        let signed = SignedRequest::sign(&Keypair::generate_ed25519(), NOW, scale(3)).unwrap();
        let mut cases = Vec::new();
        for (name, value) in [
            (HEADER_KEY, "ed25519:nope"),
            (
                HEADER_KEY,
                "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            ),
            (HEADER_ISSUED_AT, "yesterday"),
            (HEADER_SIGNATURE, "00"),
        ] {
            let mut bad = headers(&signed);
            bad.insert(name, value.parse().unwrap());
            cases.push(bad);
        }
        for name in [HEADER_KEY, HEADER_ISSUED_AT, HEADER_SIGNATURE] {
            let mut partial = headers(&signed);
            partial.remove(name);
            cases.push(partial);
        }
        for bad in cases {
            assert_eq!(
                refused(from_headers(&bad, scale(3), NOW)),
                (StatusCode::BAD_REQUEST, "bad_signature"),
                "{bad:?}"
            );
        }
    }
}
