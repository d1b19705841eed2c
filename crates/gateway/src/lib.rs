//! The gateway: every node answers `Host: <app>.<domain>` on its gateway port.
//!
//! Today it knows the host-to-app rule and the contract's error answers; the route table (apps,
//! their healthy instances, tunnels to other nodes) comes with the runtime and agent. Until an app
//! is placed, every app is unknown: 404 with the JSON error body.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Apps are reached as `<app>.<domain>`.
    pub domain: String,
}

/// The gateway's routes: everything goes through host-based routing.
pub fn router(config: GatewayConfig) -> Router {
    Router::new().fallback(route).with_state(config)
}

/// Serves the gateway on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(config))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The app a `Host` header names under `domain`, if it names one.
pub fn app_of_host<'h>(host: &'h str, domain: &str) -> Option<&'h str> {
    let host = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    let app = host.strip_suffix(domain)?.strip_suffix('.')?;
    (!app.is_empty() && !app.contains('.')).then_some(app)
}

async fn route(State(config): State<GatewayConfig>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let message = match app_of_host(host, &config.domain) {
        Some(app) => format!("no app named '{app}' is deployed in this mesh"),
        None => format!(
            "the Host header '{host}' names no app: use <app>.{}",
            config.domain
        ),
    };
    let body = mycel_protocol::api::ApiError {
        error: message,
        code: "unknown_app".into(),
    };
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::app_of_host;

    #[test]
    fn finds_the_app_in_the_host() {
        assert_eq!(app_of_host("hello.localhost", "localhost"), Some("hello"));
        assert_eq!(
            app_of_host("hello.localhost:7402", "localhost"),
            Some("hello")
        );
        assert_eq!(
            app_of_host("hello.mesh.example", "mesh.example"),
            Some("hello")
        );
        assert_eq!(app_of_host("localhost", "localhost"), None);
        assert_eq!(app_of_host("a.b.localhost", "localhost"), None);
        assert_eq!(app_of_host("hellolocalhost", "localhost"), None);
        assert_eq!(app_of_host("", "localhost"), None);
    }
}
