//! `/v1/discover/apps`: the apps found through DHT discovery, not through the placement state,
//! so a node that just joined (and has no replica yet) finds them too. Each call asks the mesh
//! and answers within the discovery lookup timeout; a node alone answers at once.

use axum::{Json, extract::State};
use mycel_protocol::api::{DiscoveredApp, DiscoveredApps};

use crate::{ApiError, ApiState, apps::app_not_found, extract::AppName};

/// `GET /v1/discover/apps`
pub(crate) async fn list(State(state): State<ApiState>) -> Json<DiscoveredApps> {
    Json(DiscoveredApps {
        apps: state.discovery.browse().await,
    })
}

/// `GET /v1/discover/apps/{name}`: `404 app_not_found` when no node announces it.
pub(crate) async fn app(
    State(state): State<ApiState>,
    AppName(name): AppName,
) -> Result<Json<DiscoveredApp>, ApiError> {
    state
        .discovery
        .lookup(&name)
        .await
        .map(Json)
        .ok_or_else(|| app_not_found(&name))
}
