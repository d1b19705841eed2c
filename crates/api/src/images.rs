//! `POST /v1/images`: a `docker save` or OCI archive into the mesh. The archive is streamed into
//! the blob store (it stays there, so `archive = "blake3:<its hash>"` works too), checked as
//! untrusted input and split into config and layer blobs by `mycel-images`, then named in the
//! placement state so every node can resolve `name:tag`.

use axum::{
    Json,
    body::Body,
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
};
use mycel_blobs::BlobNetwork;
use mycel_protocol::{
    api::{ImagePushed, ImagePushedLayer, ImageSummary, Images},
    placement::WriteRequest,
};
use serde::Deserialize;

use crate::{ApiError, ApiState, blobs::store_body};

#[derive(Debug, Deserialize)]
pub(crate) struct PushQuery {
    /// `name:tag` for the image, overriding the archive's own.
    name: Option<String>,
}

/// `POST /v1/images[?name=name:tag]`
pub(crate) async fn push(
    State(state): State<ApiState>,
    query: Result<Query<PushQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ImagePushed>), ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let archive = store_body(&state, &headers, body, None).await?;
    let path = state
        .blobs
        .blob_path(&archive.hash)?
        .ok_or_else(|| ApiError::internal("the archive vanished from the blob store"))?;
    let imported = mycel_images::import_archive(&state.blobs, &path, query.name.as_deref())
        .await
        .map_err(image_error)?;
    let record = imported.record;
    state
        .placement
        .write(WriteRequest::PutImage {
            record: Box::new(record.clone()),
            record_hash: imported.record_hash,
            by: state.mesh.peer_id().to_string(),
        })
        .await?;
    tracing::info!(image = %record.name, hash = %imported.record_hash, layers = record.layers.len(), "image pushed");

    // Peers fetch the parts from here (and from each other) when they need them.
    let network = mycel_blobs::MeshBlobs {
        mesh: state.mesh.clone(),
    };
    let parts = std::iter::once(imported.record_hash)
        .chain(std::iter::once(record.config.hash))
        .chain(record.layers.iter().map(|l| l.part.hash));
    for hash in parts {
        network.announce(hash).await;
    }
    Ok((
        StatusCode::CREATED,
        Json(ImagePushed {
            image: record.name,
            hash: imported.record_hash,
            layers: record
                .layers
                .into_iter()
                .map(|l| ImagePushedLayer {
                    digest: l.part.digest,
                    hash: l.part.hash,
                    size: l.part.size,
                })
                .collect(),
        }),
    ))
}

/// `GET /v1/images`: the images pushed to the mesh, from this node's replica.
pub(crate) async fn list(State(state): State<ApiState>) -> Json<Images> {
    let replica = state.placement.replica();
    Json(Images {
        images: replica
            .state
            .images
            .values()
            .map(|entry| ImageSummary {
                image: entry.record.name.clone(),
                hash: entry.record_hash,
                id: entry.record.image_id().to_owned(),
                layers: entry.record.layers.len(),
                size: entry.record.size(),
                pushed_by: entry.pushed_by.clone(),
                pushed_at_ms: entry.pushed_at_ms,
            })
            .collect(),
    })
}

fn image_error(error: mycel_images::ImageError) -> ApiError {
    if error.is_client_error() {
        return ApiError::new(StatusCode::BAD_REQUEST, error.code(), error.to_string());
    }
    tracing::error!(%error, "storing an image failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        error.code(),
        error.to_string(),
    )
}
