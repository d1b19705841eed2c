//! Apps' volumes: `GET /v1/volumes[?app=]` lists them with the nodes that hold them and their
//! latest snapshots; `POST /v1/apps/{name}/volumes/{volume}/snapshot` asks the node running the
//! app for a snapshot and answers once it is in the mesh (see the agent's volumes module).

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
};
use mycel_placement::PlacementState;
use mycel_protocol::{
    api::{VolumeEntry, VolumeList},
    app::check_volume_name,
    placement::WriteRequest,
};
use serde::Deserialize;

use crate::{ApiError, ApiState, apps::commit};

/// How long a snapshot request waits for the snapshot before it answers `202`.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VolumesQuery {
    app: Option<String>,
}

/// `GET /v1/volumes`
pub(crate) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<VolumesQuery>, QueryRejection>,
) -> Result<Json<VolumeList>, ApiError> {
    let Query(query) = query.map_err(|e| bad_request(e.body_text()))?;
    let replica = state.placement.replica();
    Ok(Json(VolumeList {
        volumes: entries(&replica.state, query.app.as_deref()),
    }))
}

/// Every volume of `app` (of every app when `None`), by app and name.
pub(crate) fn entries(state: &PlacementState, app: Option<&str>) -> Vec<VolumeEntry> {
    state
        .volumes
        .iter()
        .filter(|(name, _)| app.is_none_or(|a| a == name.as_str()))
        .flat_map(|(app, held)| {
            let record = state.apps.get(app);
            held.volumes.iter().map(move |(name, volume)| VolumeEntry {
                app: app.clone(),
                name: name.clone(),
                path: record.and_then(|r| {
                    let spec = r.manifest.volumes.iter().find(|v| &v.name == name)?;
                    Some(spec.path.clone())
                }),
                size_mb: volume.size_mb,
                deployed: record.is_some(),
                nodes: volume.holders.iter().cloned().collect(),
                snapshot: volume.snapshot.clone(),
            })
        })
        .collect()
}

/// `POST /v1/apps/{name}/volumes/{volume}/snapshot`: `200` with the snapshot once the node
/// running the app took it, `202` when it has not within [`SNAPSHOT_WAIT`] (it still may).
pub(crate) async fn snapshot(
    State(state): State<ApiState>,
    Path((app, volume)): Path<(String, String)>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    check_volume_name(&volume).map_err(bad_request)?;
    let asked = {
        let replica = state.placement.replica();
        let record = replica
            .state
            .volumes
            .get(&app)
            .and_then(|v| v.volumes.get(&volume));
        let Some(record) = record else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "volume_not_found",
                format!("app '{app}' has no volume '{volume}'"),
            ));
        };
        if !replica.state.apps.contains_key(&app) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "app_not_running",
                format!("app '{app}' is stopped: nothing runs to snapshot its volumes"),
            ));
        }
        record.requested + 1
    };
    let write = WriteRequest::RequestSnapshot {
        app: app.clone(),
        volume: volume.clone(),
    };
    commit(&state, write).await?;
    let mut replicas = state.placement.subscribe();
    let answered = tokio::time::timeout(SNAPSHOT_WAIT, async {
        loop {
            let snapshot = {
                let replica = replicas.borrow_and_update();
                replica
                    .state
                    .volumes
                    .get(&app)
                    .and_then(|v| v.volumes.get(&volume))
                    .and_then(|v| v.snapshot.clone())
                    .filter(|s| s.answers >= asked)
            };
            if snapshot.is_some() {
                return snapshot;
            }
            if replicas.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    let answer = match answered {
        Ok(Some(snapshot)) => (StatusCode::OK, serde_json::to_value(snapshot)),
        _ => (
            StatusCode::ACCEPTED,
            Ok(serde_json::json!({
                "app": app,
                "volume": volume,
                "message": "asked for; the node running the app has not taken it yet",
            })),
        ),
    };
    let body = answer
        .1
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((answer.0, Json(body)))
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}
