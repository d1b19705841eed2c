//! The dashboard: one page embedded in the binary (no CDN, nothing built at install time) served
//! at `GET /` and `/ui/…`. It reads this node's own API every 2 s, so it shows what the API shows,
//! under the same access rules: the page itself holds no data and needs no token; where the API
//! does, the page asks for it and keeps it for the tab only.

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

/// The page: HTML, its style and its script in one file.
const PAGE: &str = include_str!("dashboard/index.html");

/// `GET /`, `GET /ui`, `GET /ui/{*rest}`: the page (it routes by its URL fragment).
pub(crate) async fn page() -> Response {
    let mut response = PAGE.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Its script is inline and talks to this origin only; nothing else may load or frame it.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
