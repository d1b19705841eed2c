//! The node's HTTP API: every endpoint of the contract that exists so far, on every node.
//!
//! Handlers are thin: they ask the mesh handle, the blob store, the placement group (reads from
//! this node's replica, writes through the leader), the agent (local instances' logs) or app
//! discovery (the DHT) and shape JSON from `mycel_protocol::api`.
//! Every error is `{"error", "code"}` with a 4xx/5xx status; nothing internal leaks.

mod apps;
mod auth;
mod blobs;
mod dashboard;
mod discover;
mod error;
mod exposition;
mod extract;
mod images;
mod join;
mod limit;
mod logs;
pub mod openapi;
mod secrets;
mod seed;
mod signing;
mod volumes;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, post, put},
};
use mycel_mesh::MeshHandle;
use mycel_protocol::api::{Cluster, Health, Nodes};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{Access, ApiToken, InvalidToken};
pub use error::ApiError;
pub use limit::{ApiMetrics, RateLimit};
pub use signing::NodeSigner;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub mesh: MeshHandle,
    pub blobs: mycel_blobs::BlobStore,
    /// The node's replica of the placement state (reads) and its way to the leader (writes).
    pub placement: mycel_placement::PlacementHandle,
    pub registry: Arc<Registry>,
    /// The local instances (their logs).
    pub agent: mycel_agent::AgentHandle,
    /// App discovery through the DHT.
    pub discovery: mycel_discovery::DiscoveryHandle,
    /// Signs the app requests that arrive unsigned, with the node's identity key.
    pub signer: NodeSigner,
    /// Seals and checks app secrets (`None` in an open mesh, which has no secrets).
    pub secrets_key: Option<Arc<mycel_protocol::secrets::SecretsKey>>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/ui", get(dashboard::page))
        .route("/ui/{*rest}", get(dashboard::page))
        .route("/v1/health", get(health))
        .route("/v1/nodes", get(nodes))
        .route("/v1/cluster", get(cluster))
        .route("/v1/apps", get(apps::list).post(apps::deploy))
        .route("/v1/instances", get(apps::instances))
        .route("/v1/apps/{name}", get(apps::status).delete(apps::remove))
        .route("/v1/apps/{name}/scale", post(apps::scale))
        .route("/v1/apps/{name}/versions", get(apps::versions))
        .route("/v1/apps/{name}/rollback", post(apps::rollback))
        .route("/v1/apps/{name}/promote", post(apps::promote))
        .route("/v1/apps/{name}/logs", get(logs::logs))
        .route("/v1/apps/{name}/secrets", get(secrets::list))
        .route(
            "/v1/apps/{name}/secrets/{secret}",
            put(secrets::put).delete(secrets::remove),
        )
        .route("/v1/secrets/key", get(secrets::key))
        .route("/v1/volumes", get(volumes::list))
        .route(
            "/v1/apps/{name}/volumes/{volume}/snapshot",
            post(volumes::snapshot),
        )
        .route("/v1/discover/apps", get(discover::list))
        .route("/v1/discover/apps/{name}", get(discover::app))
        .route("/v1/join-ticket", get(join::ticket))
        .route("/api/apps/deploy_app", post(seed::deploy_app))
        .route("/api/apps/list_apps", get(seed::list_apps))
        .route("/api/apps/get_app_status", get(seed::get_app_status))
        .route("/api/apps/stop_app", post(seed::stop_app))
        .route("/api/apps/scale_app", post(seed::scale_app))
        .route(
            "/v1/blobs",
            post(blobs::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/blobs/{hash}", get(blobs::download))
        .route(
            "/v1/images",
            get(images::list)
                .post(images::push)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/openapi.json", get(openapi_document))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// How the API is served: who may call it and how often.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Who needs the token for what (see [`Access`]).
    pub access: Access,
    /// How many requests each client may make (see [`RateLimit`]).
    pub rate_limit: RateLimit,
    pub metrics: ApiMetrics,
}

/// Serves the API on `listener`, open to every client (at the default rate limit), until
/// `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, state, ServeOptions::default(), shutdown).await
}

/// Serves the API on `listener` until `shutdown` is cancelled, the token required as `access`
/// says (see [`Access`]), at the default rate limit.
pub async fn serve_with_access(
    listener: TcpListener,
    state: ApiState,
    access: Access,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let options = ServeOptions {
        access,
        ..ServeOptions::default()
    };
    serve_with(listener, state, options, shutdown).await
}

/// Serves the API on `listener` with `options` until `shutdown` is cancelled. The rate limit
/// comes first: a client that floods the API is refused before its token is even looked at.
pub async fn serve_with(
    listener: TcpListener,
    state: ApiState,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = auth::protect(router(state), options.access);
    let router = limit::protect(router, options.rate_limit, options.metrics);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

async fn health(State(state): State<ApiState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        peer_id: state.mesh.peer_id().to_string(),
    })
}

async fn nodes(State(state): State<ApiState>) -> Result<Json<Nodes>, ApiError> {
    let mut nodes = state
        .mesh
        .nodes()
        .await
        .map_err(|_| ApiError::shutting_down())?;
    let cluster = state.placement.cluster();
    for node in &mut nodes {
        node.raft = cluster.role_of(&node.peer_id);
    }
    Ok(Json(Nodes { nodes }))
}

/// `GET /v1/cluster`: the placement group as this node's replica sees it.
async fn cluster(State(state): State<ApiState>) -> Json<Cluster> {
    Json(state.placement.cluster())
}

/// `GET /metrics`: OpenMetrics when `Accept` asks for it, else the classic text format.
async fn metrics(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.registry)
        .map_err(|_| ApiError::internal("encoding metrics failed"))?;
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    Ok(if exposition::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, exposition::OPENMETRICS)], text)
    } else {
        (
            [(header::CONTENT_TYPE, exposition::CLASSIC)],
            exposition::classic(&text),
        )
    })
}

async fn openapi_document() -> Json<serde_json::Value> {
    Json(openapi::document())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
