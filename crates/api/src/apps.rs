//! `/v1/apps`: deploy, list, inspect, scale and remove apps.
//!
//! Reads answer from this node's replica of the placement state and never leave the node. Writes
//! go to the placement group's leader, wherever it is, and answer once this node's replica shows
//! them, so a read right after a write sees it. Everything is checked before the write: a refused
//! request changes nothing.

use std::time::Duration;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode},
};
use mycel_placement::{PlacementState, plan::runtimes_of};
use mycel_protocol::{
    BlobHash, Manifest, ManifestError,
    api::{
        AppInstance, AppStatus, AppSummary, Apps, Deployed, InstanceInfo, InstanceState, Instances,
        RollbackRequest, RolloutInfo, ScaleInfo, VersionInfo, Versions,
    },
    app::{MAX_MANIFEST_BYTES, MAX_REPLICAS},
    ownership::{AppAction, manifest_digest},
    placement::{AppRecord, VersionRecord, WriteError, WriteRequest},
};
use serde::{Deserialize, Serialize};

use crate::{
    ApiError, ApiState,
    extract::{AppName, JsonBody, read_limited, starts_an_object},
    signing::{signed_request, write_error},
};

/// How long a deploy looks for a node that holds a blob the manifest names.
const BLOB_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Answer of `DELETE /v1/apps/{name}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Removed {
    pub(crate) name: String,
}

/// `POST /v1/apps`: a manifest in, `201 {"name","version"}` once the group has committed it.
pub(crate) async fn deploy(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    let deployed = deploy_manifest(&state, &headers, body).await?;
    Ok((StatusCode::CREATED, Json(deployed)))
}

/// Reads, checks and commits a deploy.
async fn deploy_manifest(
    state: &ApiState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Deployed, ApiError> {
    let bytes = read_manifest(headers, body).await?;
    let manifest = parse_manifest(&bytes)?;
    commit_deploy(state, headers, manifest).await
}

/// Reads a deploy's body, at most [`MAX_MANIFEST_BYTES`] (also behind the seed's `deploy_app`).
pub(crate) async fn read_manifest(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    read_limited(headers, body, MAX_MANIFEST_BYTES, "a manifest").await
}

/// A manifest sent as JSON, checked as the API takes it (blobs by hash only).
pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ApiError> {
    // serde reads a struct from an array of its fields too; a manifest is an object.
    if !starts_an_object(bytes) {
        return Err(ManifestError::Parse("a manifest is a JSON object".into()).into());
    }
    let manifest = Manifest::from_json(bytes)?;
    manifest.validate_for_api()?;
    Ok(manifest)
}

/// Signs (or checks the signature of) a deploy of `manifest`, checks its blobs are held and
/// commits it (also behind the seed's `deploy_app`).
pub(crate) async fn commit_deploy(
    state: &ApiState,
    headers: &HeaderMap,
    manifest: Manifest,
) -> Result<Deployed, ApiError> {
    let signed = signed_request(state, headers, AppAction::deploy(&manifest))?;
    for hash in manifest.blobs() {
        ensure_held(state, hash).await?;
    }
    let deployed = Deployed {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
    };
    let key = signed.key;
    let write = WriteRequest::Deploy {
        manifest: Box::new(manifest),
        by: state.mesh.peer_id().to_string(),
        signed: Box::new(signed),
    };
    commit(state, write).await?;
    tracing::info!(app = %deployed.name, version = %deployed.version, %key, "app deployed");
    Ok(deployed)
}

/// `GET /v1/apps`
pub(crate) async fn list(State(state): State<ApiState>) -> Json<Apps> {
    Json(Apps {
        apps: summaries(&state.placement.replica().state),
    })
}

/// `GET /v1/apps/{name}`
pub(crate) async fn status(
    State(state): State<ApiState>,
    AppName(name): AppName,
) -> Result<Json<AppStatus>, ApiError> {
    status_of(&state.placement.replica().state, &name)
        .map(Json)
        .ok_or_else(|| app_not_found(&name))
}

/// `POST /v1/apps/{name}/scale`: answers the app's status after the change.
pub(crate) async fn scale(
    State(state): State<ApiState>,
    AppName(name): AppName,
    headers: HeaderMap,
    JsonBody(request): JsonBody<mycel_protocol::api::ScaleRequest>,
) -> Result<Json<AppStatus>, ApiError> {
    scale_app(&state, &headers, &name, request.replicas).await?;
    status_of(&state.placement.replica().state, &name)
        .map(Json)
        .ok_or_else(|| app_not_found(&name))
}

/// Query of `DELETE /v1/apps/{name}`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct RemoveQuery {
    /// Its volumes go too (else they are kept for a later deploy by the same owner).
    #[serde(default)]
    purge: bool,
    /// It stops even though other apps depend on it.
    #[serde(default)]
    force: bool,
}

/// `DELETE /v1/apps/{name}`: the app and all its instances (`?purge=true`: and its volumes).
pub(crate) async fn remove(
    State(state): State<ApiState>,
    AppName(name): AppName,
    headers: HeaderMap,
    query: Result<axum::extract::Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Removed>, ApiError> {
    let axum::extract::Query(query) = query.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad_request",
            e.body_text(),
        )
    })?;
    remove_app(&state, &headers, &name, query.purge, query.force).await?;
    Ok(Json(Removed { name }))
}

/// `GET /v1/apps/{name}/versions`: the manifests it was last deployed with, newest first.
pub(crate) async fn versions(
    State(state): State<ApiState>,
    AppName(name): AppName,
) -> Result<Json<Versions>, ApiError> {
    let (current, history) = history(&state.placement.replica().state, &name)?;
    let versions = history
        .iter()
        .rev()
        .map(|v| VersionInfo {
            version: v.version.clone(),
            digest: v.digest.to_string(),
            who: v.by.clone(),
            when: v.at_ms,
            current: v.digest == current,
        })
        .collect();
    Ok(Json(Versions { name, versions }))
}

/// The digest of the manifest `name` runs now, and the manifests it was deployed with.
fn history(state: &PlacementState, name: &str) -> Result<(BlobHash, Vec<VersionRecord>), ApiError> {
    let record = state.apps.get(name).ok_or_else(|| app_not_found(name))?;
    let versions = state.versions.get(name).cloned().unwrap_or_default();
    Ok((manifest_digest(&record.manifest), versions))
}

/// `POST /v1/apps/{name}/rollback`: deploys again the manifest of an earlier version (by default
/// the newest one that differs from what runs now), rolled out like any deploy. A signed
/// request signs the deploy of that manifest's digest (see `GET …/versions`).
pub(crate) async fn rollback(
    State(state): State<ApiState>,
    AppName(name): AppName,
    headers: HeaderMap,
    JsonBody(request): JsonBody<RollbackRequest>,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    let manifest = {
        let replica = state.placement.replica();
        let record = replica
            .state
            .apps
            .get(&name)
            .ok_or_else(|| app_not_found(&name))?;
        let current = manifest_digest(&record.manifest);
        let history = replica
            .state
            .versions
            .get(&name)
            .cloned()
            .unwrap_or_default();
        let found = match &request.version {
            Some(version) => history.iter().rev().find(|v| &v.version == version),
            None => history.iter().rev().find(|v| v.digest != current),
        };
        let wanted = request.version.as_deref().map_or_else(
            || "an earlier version".to_string(),
            |v| format!("version '{v}'"),
        );
        found
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "version_not_found",
                    format!("app '{name}' has no {wanted} to roll back to (see its versions)"),
                )
            })?
            .manifest
            .clone()
    };
    let deployed = commit_deploy(&state, &headers, manifest).await?;
    Ok((StatusCode::CREATED, Json(deployed)))
}

/// `POST /v1/apps/{name}/promote`: lets the canaries of the app's rollout replace the rest.
pub(crate) async fn promote(
    State(state): State<ApiState>,
    AppName(name): AppName,
    headers: HeaderMap,
) -> Result<Json<AppStatus>, ApiError> {
    let signed = signed_request(&state, &headers, AppAction::Promote { app: name.clone() })?;
    let key = signed.key;
    let write = WriteRequest::Promote {
        name: name.clone(),
        signed: Box::new(signed),
    };
    commit(&state, write).await?;
    tracing::info!(app = %name, %key, "rollout promoted");
    status_of(&state.placement.replica().state, &name)
        .map(Json)
        .ok_or_else(|| app_not_found(&name))
}

/// Scales `name` (also behind the seed's `scale_app`), signed by the client or by this node.
pub(crate) async fn scale_app(
    state: &ApiState,
    headers: &HeaderMap,
    name: &str,
    replicas: u32,
) -> Result<(), ApiError> {
    let action = AppAction::Scale {
        app: name.to_string(),
        replicas,
    };
    let signed = signed_request(state, headers, action)?;
    // The leader refuses this too; refusing here spares the group a round trip.
    if replicas > MAX_REPLICAS {
        return Err(WriteError::Rejected(format!(
            "replicas: at most {MAX_REPLICAS} (got {replicas})"
        ))
        .into());
    }
    let key = signed.key;
    let write = WriteRequest::Scale {
        name: name.to_string(),
        replicas,
        signed: Box::new(signed),
    };
    commit(state, write).await?;
    tracing::info!(app = %name, replicas, %key, "app scaled");
    Ok(())
}

/// Removes `name` (also behind the seed's `stop_app`), signed by the client or by this node.
pub(crate) async fn remove_app(
    state: &ApiState,
    headers: &HeaderMap,
    name: &str,
    purge: bool,
    force: bool,
) -> Result<(), ApiError> {
    let app = name.to_owned();
    let action = if purge {
        AppAction::StopAndPurge { app }
    } else {
        AppAction::Stop { app }
    };
    let signed = signed_request(state, headers, action)?;
    let key = signed.key;
    let write = WriteRequest::Remove {
        name: name.to_string(),
        signed: Box::new(signed),
        purge,
        force,
    };
    commit(state, write).await?;
    tracing::info!(app = %name, %key, "app removed");
    Ok(())
}

/// Commits `write` through the leader.
pub(crate) async fn commit(state: &ApiState, write: WriteRequest) -> Result<(), ApiError> {
    match state.placement.write(write).await {
        Ok(_) => Ok(()),
        Err(e) => Err(write_error(state, e).await),
    }
}

pub(crate) fn app_not_found(name: &str) -> ApiError {
    WriteError::UnknownApp(name.to_string()).into()
}

/// Every app, by name.
pub(crate) fn summaries(state: &PlacementState) -> Vec<AppSummary> {
    state
        .apps
        .iter()
        .map(|(name, record)| AppSummary {
            name: name.clone(),
            version: record.manifest.version.clone(),
            kind: record.manifest.kind(),
            replicas: record.replicas(),
            running: running(state, name),
        })
        .collect()
}

/// How many of the app's instances run.
pub(crate) fn running(state: &PlacementState, name: &str) -> u32 {
    state
        .instances_of(name)
        .filter(|i| i.state == InstanceState::Running)
        .count() as u32
}

/// The app's status, its instances by id.
/// The instances of app `record`, by id.
fn instance_infos(state: &PlacementState, record: &AppRecord) -> Vec<InstanceInfo> {
    // The preferred one: a process app on a node without sandboxes runs on its Docker.
    let runtime = runtimes_of(record.manifest.kind())[0].as_str();
    let mut instances: Vec<InstanceInfo> = state
        .instances_of(&record.manifest.name)
        .map(|i| InstanceInfo {
            id: i.id.clone(),
            node: i.node.clone(),
            state: i.state,
            runtime: runtime.to_string(),
            error: i.error.clone(),
        })
        .collect();
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    instances
}

/// `GET /v1/instances`: every app's instances in one read (the dashboard's node and topology
/// views).
pub(crate) async fn instances(State(state): State<ApiState>) -> Json<Instances> {
    let replica = state.placement.replica();
    let instances = replica
        .state
        .apps
        .values()
        .flat_map(|record| {
            instance_infos(&replica.state, record)
                .into_iter()
                .map(|instance| AppInstance {
                    app: record.manifest.name.clone(),
                    instance,
                })
        })
        .collect();
    Json(Instances { instances })
}

pub(crate) fn status_of(state: &PlacementState, name: &str) -> Option<AppStatus> {
    let record: &AppRecord = state.apps.get(name)?;
    let instances = instance_infos(state, record);
    Some(AppStatus {
        name: name.to_string(),
        version: record.manifest.version.clone(),
        kind: record.manifest.kind(),
        replicas: record.replicas(),
        instances,
        deployed_by: record.deployed_by.clone(),
        owner: state.owner_of(name),
        unplaced: record.unplaced.clone(),
        manifest: record.manifest.clone(),
        rollout: state.rollouts.get(name).map(|r| RolloutInfo {
            from: r.from.as_ref().map(|f| f.manifest.version.clone()),
            to: r.to_version.clone(),
            state: r.state,
            healthy: r.healthy,
            total: r.total,
            message: r.message.clone(),
        }),
        scale: record.manifest.scale.as_ref().map(|spec| ScaleInfo {
            min: spec.min,
            max: spec.max,
            desired: record.replicas(),
            from: record.scale.as_ref().map(|s| s.from),
            reason: record
                .scale
                .as_ref()
                .map_or_else(|| "as deployed".to_string(), |s| s.reason.clone()),
            signals: record
                .scale
                .as_ref()
                .map(|s| s.signals.clone())
                .unwrap_or_default(),
        }),
    })
}

/// A deploy may only name blobs some node holds: this one, a provider the DHT knows, or a member
/// that says so when asked. All within [`BLOB_LOOKUP_TIMEOUT`].
async fn ensure_held(state: &ApiState, hash: BlobHash) -> Result<(), ApiError> {
    if state.blobs.meta(&hash)?.is_some() {
        return Ok(());
    }
    let network = mycel_blobs::MeshBlobs {
        mesh: state.mesh.clone(),
    };
    let found = tokio::time::timeout(BLOB_LOOKUP_TIMEOUT, network.held_elsewhere(hash))
        .await
        .unwrap_or(false);
    if found {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "blob_not_found",
        format!("no node in reach holds {hash}: upload it first (POST /v1/blobs, or `mycel push`)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::placement::{Command, Instance};

    fn record(name: &str, replicas: u32) -> Box<AppRecord> {
        let manifest = Manifest::from_json(
            format!(
                r#"{{"name":"{name}","version":"2","replicas":{replicas},"wasm":{{"module":"blake3:{}"}}}}"#,
                "a".repeat(64)
            )
            .as_bytes(),
        )
        .unwrap();
        Box::new(AppRecord {
            manifest,
            deployed_by: "n0".into(),
            deployed_at_ms: 1,
            generation: 1,
            unplaced: Some("1 replica(s) have no node: no room".into()),
            scale: None,
        })
    }

    fn instance(app: &str, replica: u32, state: InstanceState) -> Instance {
        Instance {
            id: Instance::id_for(app, 1, replica),
            app: app.into(),
            replica,
            node: "n0".into(),
            state,
            since_ms: 1,
            error: None,
        }
    }

    #[test]
    fn summaries_and_status_read_the_replica() {
        let mut state = PlacementState::default();
        state.apply(&Command::PutApp {
            app: record("web", 3),
            instances: vec![
                instance("web", 1, InstanceState::Running),
                instance("web", 0, InstanceState::Pending),
            ],
            auth: None,
            rollout: None,
        });
        state.apply(&Command::PutApp {
            app: record("api", 1),
            instances: vec![instance("api", 0, InstanceState::Running)],
            auth: None,
            rollout: None,
        });

        let apps = summaries(&state);
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        assert_eq!((apps[1].replicas, apps[1].running), (3, 1));

        let status = status_of(&state, "web").unwrap();
        let ids: Vec<&str> = status.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["web-1-0", "web-1-1"]);
        assert!(status.instances.iter().all(|i| i.runtime == "wasm"));
        assert_eq!(status.version, "2");
        assert!(status.unplaced.is_some());
        assert!(status_of(&state, "nope").is_none());
    }
}
