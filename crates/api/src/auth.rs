//! Bearer-token access to the API.
//!
//! An API bound to loopback needs no token; bound anywhere else, every request but
//! `GET /v1/health` (so probes work) must carry the node's [`ApiToken`] as
//! `Authorization: Bearer <token>`. The paths that hand out a secret (`GET /v1/join-ticket`: a
//! private mesh's ticket) need it everywhere, loopback included, because any local user reaches
//! loopback. The check runs before routing, so a refused request reaches no handler, reads no
//! body and changes nothing: it gets `401 unauthorized` and `WWW-Authenticate: Bearer`.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq;

use crate::ApiError;

/// The one path a request may take without the token.
const HEALTH_PATH: &str = "/v1/health";
/// The dashboard's page: it holds no data (it asks for the token where the API needs one).
fn is_dashboard(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}
/// The paths that hand out a secret: they need the token even where nothing else does.
const SECRET_PATHS: &[&str] = &["/v1/join-ticket"];

/// Who may call the API.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// The node's token. Without one, the paths that hand out a secret refuse everybody.
    pub token: Option<ApiToken>,
    /// Whether every request but the health probe needs the token (an API off loopback, or
    /// `--api-token-required`), or only those that hand out a secret.
    pub everywhere: bool,
}

/// The secret an API client must present. Its `Debug` never shows it, so it cannot be logged by
/// accident.
#[derive(Clone)]
pub struct ApiToken(String);

/// Why a text is not an API token.
#[derive(Debug, thiserror::Error)]
pub enum InvalidToken {
    #[error("an API token has at least {} characters", ApiToken::MIN_LEN)]
    TooShort,
    #[error("an API token has at most {} characters", ApiToken::MAX_LEN)]
    TooLong,
    #[error(
        "an API token is made of letters, digits and -._~+/= (it goes into an HTTP header as is)"
    )]
    BadCharacter,
}

impl ApiToken {
    /// The shortest token accepted: a generated one has 64 hex characters (32 random bytes).
    pub const MIN_LEN: usize = 32;
    pub const MAX_LEN: usize = 512;

    /// A new token: 32 bytes from a cryptographic generator, as lowercase hex.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A token as stored (e.g. an operator's own): surrounding whitespace is ignored; the rest
    /// must be RFC 6750's `b64token` characters.
    pub fn parse(text: &str) -> Result<Self, InvalidToken> {
        let text = text.trim();
        if text.len() < Self::MIN_LEN {
            return Err(InvalidToken::TooShort);
        }
        if text.len() > Self::MAX_LEN {
            return Err(InvalidToken::TooLong);
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
        {
            return Err(InvalidToken::BadCharacter);
        }
        Ok(Self(text.to_string()))
    }

    /// The secret itself, to store it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// `router` behind the token check that `access` asks for.
pub(crate) fn protect(router: Router, access: Access) -> Router {
    router.layer(middleware::from_fn_with_state(
        Arc::new(access),
        require_token,
    ))
}

async fn require_token(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    if allowed(
        &access,
        request.method(),
        request.uri().path(),
        request.headers(),
    ) {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this API needs its token: send `Authorization: Bearer <token>` (the node keeps it in \
         <data-dir>/api.token)",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Whether a request may go on: the health probe and the dashboard's page always; a secret only with the token;
/// anything else with the token when `access` asks for it everywhere.
fn allowed(access: &Access, method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if (path == HEALTH_PATH || is_dashboard(path))
        && (method == Method::GET || method == Method::HEAD)
    {
        return true;
    }
    if !access.everywhere && !SECRET_PATHS.contains(&path) {
        return true;
    }
    let Some(token) = &access.token else {
        return false;
    };
    bearer(headers).is_some_and(|presented| token.matches(presented))
}

/// The credential of an `Authorization: Bearer <credential>` header (the scheme's case does not
/// matter); `None` for a missing header or another scheme.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::routing::{get, post};

    use super::*;

    fn token() -> ApiToken {
        ApiToken::parse(&"a".repeat(64)).unwrap()
    }

    fn everywhere() -> Access {
        Access {
            token: Some(token()),
            everywhere: true,
        }
    }

    fn authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn generated_tokens_are_64_hex_and_differ() {
        let (one, two) = (ApiToken::generate(), ApiToken::generate());
        assert_eq!(one.expose().len(), 64);
        assert!(one.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(one.expose(), two.expose());
        assert!(ApiToken::parse(one.expose()).is_ok());
        assert!(!format!("{one:?}").contains(one.expose()));
    }

    #[test]
    fn stored_tokens_are_checked() {
        let padded = format!("  {}\n", "b".repeat(40));
        assert_eq!(ApiToken::parse(&padded).unwrap().expose(), "b".repeat(40));
        assert!(matches!(
            ApiToken::parse("short"),
            Err(InvalidToken::TooShort)
        ));
        assert!(matches!(
            ApiToken::parse(&"c".repeat(600)),
            Err(InvalidToken::TooLong)
        ));
        let spaced = format!("{} {}", "d".repeat(20), "d".repeat(20));
        assert!(matches!(
            ApiToken::parse(&spaced),
            Err(InvalidToken::BadCharacter)
        ));
    }

    #[test]
    fn the_bearer_credential_is_read_from_the_header() {
        assert_eq!(bearer(&authorization("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&authorization("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&authorization("Basic abc")), None);
        assert_eq!(bearer(&authorization("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = token();
        assert!(token.matches(&"a".repeat(64)));
        assert!(!token.matches(&"a".repeat(63)));
        assert!(!token.matches(&format!("{}b", "a".repeat(63))));
        assert!(!token.matches(""));
    }

    #[test]
    fn health_and_the_dashboard_page_are_open_and_everything_else_needs_the_token() {
        let token = everywhere();
        let none = HeaderMap::new();
        let good = authorization(&format!("Bearer {}", "a".repeat(64)));
        let wrong = authorization(&format!("Bearer {}", "e".repeat(64)));
        assert!(allowed(&token, &Method::GET, "/v1/health", &none));
        assert!(allowed(&token, &Method::HEAD, "/v1/health", &none));
        assert!(!allowed(&token, &Method::POST, "/v1/health", &none));
        assert!(!allowed(&token, &Method::GET, "/v1/health/", &none));
        // The dashboard's page holds no data: it asks for the token itself.
        for page in ["/", "/ui", "/ui/app/web"] {
            assert!(allowed(&token, &Method::GET, page, &none), "{page}");
            assert!(!allowed(&token, &Method::POST, page, &none), "{page}");
        }
        assert!(!allowed(&token, &Method::GET, "/uix", &none));
        for path in [
            "/v1/apps",
            "/v1/openapi.json",
            "/metrics",
            "/no-such-thing",
            "/v1/join-ticket",
        ] {
            assert!(!allowed(&token, &Method::GET, path, &none), "{path}");
            assert!(!allowed(&token, &Method::GET, path, &wrong), "{path}");
            assert!(allowed(&token, &Method::GET, path, &good), "{path}");
        }
    }

    #[test]
    fn on_loopback_only_the_join_ticket_needs_the_token() {
        let none = HeaderMap::new();
        let good = authorization(&format!("Bearer {}", "a".repeat(64)));
        let wrong = authorization(&format!("Bearer {}", "e".repeat(64)));
        let loopback = Access {
            token: Some(token()),
            everywhere: false,
        };
        for path in ["/v1/apps", "/metrics", "/v1/health", "/v1/join-ticket/"] {
            assert!(allowed(&loopback, &Method::GET, path, &none), "{path}");
        }
        assert!(!allowed(&loopback, &Method::GET, "/v1/join-ticket", &none));
        assert!(!allowed(&loopback, &Method::GET, "/v1/join-ticket", &wrong));
        assert!(allowed(&loopback, &Method::GET, "/v1/join-ticket", &good));
        // A node with no token at all gives its ticket to nobody.
        let tokenless = Access::default();
        assert!(allowed(&tokenless, &Method::GET, "/v1/apps", &none));
        assert!(!allowed(&tokenless, &Method::GET, "/v1/join-ticket", &none));
        assert!(!allowed(&tokenless, &Method::GET, "/v1/join-ticket", &good));
    }

    /// The layer over a real router: a refused request reaches no handler.
    #[tokio::test]
    async fn a_refused_request_reaches_no_handler() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = {
            let calls = calls.clone();
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                "done"
            }
        };
        let router = Router::new()
            .route(HEALTH_PATH, get(|| async { "ok" }))
            .route("/v1/apps", post(counted));
        let router = protect(router, everywhere());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deploy = |token: Option<String>| {
            let request = client.post(format!("{base}/v1/apps")).body("{}");
            let request = match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            };
            async move { request.send().await.unwrap() }
        };

        let refused = deploy(None).await;
        assert_eq!(refused.status(), 401);
        assert_eq!(refused.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
        assert!(body["error"].is_string());
        assert_eq!(deploy(Some("e".repeat(64))).await.status(), 401);
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        let health = client
            .get(format!("{base}/v1/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(deploy(Some("a".repeat(64))).await.status(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        server.abort();
    }
}
