//! The seed-compatible endpoints (`/api/apps/…`), kept with their JSON shapes so clients written
//! against the seed keep working. Each is a thin wrapper over the `/v1/apps` handlers' logic: the
//! same checks, the same errors. `deploy_app` also takes the seed's own deploy body, which
//! `mycel_protocol::seed` translates into a manifest.

use axum::{
    Json,
    body::Body,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
};
use mycel_protocol::{
    api::{
        SeedAppEntry, SeedAppList, SeedAppRef, SeedAppStatus, SeedDeployed, SeedScale, seed_status,
    },
    seed::{SeedDeploy, SeedError, Translated, is_seed_form},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    ApiError, ApiState,
    apps::{self, app_not_found},
    extract::JsonBody,
};

/// Query of `GET /api/apps/get_app_status`.
#[derive(Debug, Deserialize)]
pub(crate) struct StatusQuery {
    app_id: Option<String>,
}

/// Answer of `POST /api/apps/stop_app`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SeedStopped {
    pub(crate) app_id: String,
    /// Always "stopped".
    pub(crate) status: String,
}

/// `POST /api/apps/deploy_app`: a manifest, as `POST /v1/apps` takes it, or the seed's own body
/// (`image`, `resource_requirements`, `network_config`, …; see `mycel_protocol::seed`),
/// translated into one. What a seed body asks for that mycel does not apply comes back as
/// `warnings`. Either way the deploy is the manifest's: checked, signed and committed alike (a
/// signed seed body signs the deploy of the manifest it translates into).
pub(crate) async fn deploy_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SeedDeployed>), ApiError> {
    let bytes = apps::read_manifest(&headers, body).await?;
    let (manifest, warnings) = match seed_body(&bytes) {
        Some(seed) => {
            let Translated { manifest, warnings } = SeedDeploy::from_value(seed)
                .and_then(|seed| seed.to_manifest())
                .map_err(seed_error)?;
            manifest.validate_for_api()?;
            (manifest, warnings)
        }
        None => (apps::parse_manifest(&bytes)?, Vec::new()),
    };
    let deployed = apps::commit_deploy(&state, &headers, manifest).await?;
    Ok((
        StatusCode::CREATED,
        Json(SeedDeployed {
            app_id: deployed.name,
            version: deployed.version,
            status: "deployed".into(),
            warnings,
        }),
    ))
}

/// The body as JSON when it is in the seed's form; `None` for a manifest, and for anything that
/// is not JSON (the manifest's parser says what is wrong with it).
fn seed_body(bytes: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    is_seed_form(&value).then_some(value)
}

/// A seed body refused: `422 source_deploy_unsupported` for a source deploy, else as a manifest.
fn seed_error(error: SeedError) -> ApiError {
    match error {
        SeedError::Manifest(error) => error.into(),
        source @ SeedError::SourceDeploy => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            source.code(),
            source.to_string(),
        ),
        invalid @ SeedError::Invalid { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, invalid.code(), invalid.to_string())
        }
    }
}

/// `GET /api/apps/list_apps`
pub(crate) async fn list_apps(State(state): State<ApiState>) -> Json<SeedAppList> {
    let replica = state.placement.replica();
    let apps = apps::summaries(&replica.state)
        .into_iter()
        .map(|app| SeedAppEntry {
            app_id: app.name.clone(),
            name: app.name,
            version: app.version,
            replicas: app.replicas,
            running: app.running,
            status: seed_status(app.replicas, app.running).into(),
        })
        .collect();
    Json(SeedAppList { apps })
}

/// `GET /api/apps/get_app_status?app_id=`
pub(crate) async fn get_app_status(
    State(state): State<ApiState>,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Json<SeedAppStatus>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let Some(app_id) = query.app_id.filter(|id| !id.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "app_id is required: ?app_id=<app name>",
        ));
    };
    let replica = state.placement.replica();
    let status = apps::status_of(&replica.state, &app_id).ok_or_else(|| app_not_found(&app_id))?;
    let running = apps::running(&replica.state, &app_id);
    Ok(Json(SeedAppStatus {
        status: seed_status(status.replicas, running).into(),
        app_id,
        replicas: status.replicas,
        running,
        instances: status.instances,
    }))
}

/// `POST /api/apps/stop_app` `{"app_id"}`: removes the app and all its instances.
pub(crate) async fn stop_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SeedAppRef>,
) -> Result<Json<SeedStopped>, ApiError> {
    apps::remove_app(&state, &headers, &request.app_id, false, false).await?;
    Ok(Json(SeedStopped {
        app_id: request.app_id,
        status: "stopped".into(),
    }))
}

/// `POST /api/apps/scale_app` `{"app_id","replicas"}`: answers the same shape.
pub(crate) async fn scale_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SeedScale>,
) -> Result<Json<SeedScale>, ApiError> {
    apps::scale_app(&state, &headers, &request.app_id, request.replicas).await?;
    Ok(Json(request))
}
