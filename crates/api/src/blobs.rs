//! `POST /v1/blobs` and `GET /v1/blobs/{hash}`: bytes in and out of the node's blob store,
//! streamed both ways (an upload never sits in memory). A blob this node lacks is fetched from its
//! peers, verified, stored, then served.

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use mycel_blobs::BlobHash;
use mycel_protocol::api::BlobStored;
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use crate::{ApiError, ApiState};

#[derive(Debug, Deserialize)]
pub(crate) struct UploadQuery {
    /// The hash the uploader expects; the upload is refused if the bytes hash otherwise.
    hash: Option<String>,
}

fn parse_hash(text: &str) -> Result<BlobHash, ApiError> {
    text.parse()
        .map_err(|e: mycel_protocol::blob::BadBlobHash| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_hash", e.to_string())
        })
}

pub(crate) async fn upload(
    State(state): State<ApiState>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<BlobStored>), ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let declared = query.hash.as_deref().map(parse_hash).transpose()?;
    // Refuse a declared oversize before reading a byte of it.
    let limit = state.blobs.max_blob_bytes();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|len| len > limit) {
        return Err(mycel_blobs::StoreError::TooLarge { limit }.into());
    }

    let mut upload = state.blobs.begin_upload().await?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "upload_interrupted",
                "the upload broke off before its end; nothing was stored",
            )
        })?;
        upload.write(&chunk).await?;
    }
    let meta = upload.finish(declared).await?;
    tracing::info!(hash = %meta.hash, size = meta.size, "blob stored");
    let network = mycel_blobs::MeshBlobs {
        mesh: state.mesh.clone(),
    };
    mycel_blobs::BlobNetwork::announce(&network, meta.hash).await;
    Ok((
        StatusCode::CREATED,
        Json(BlobStored {
            hash: meta.hash,
            size: meta.size,
        }),
    ))
}

pub(crate) async fn download(
    State(state): State<ApiState>,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash)?;
    if state.blobs.meta(&hash)?.is_none() {
        let network = mycel_blobs::MeshBlobs {
            mesh: state.mesh.clone(),
        };
        match mycel_blobs::fetch(&state.blobs, &network, hash).await {
            Ok(meta) => tracing::info!(%hash, size = meta.size, "blob fetched from peers"),
            Err(mycel_blobs::FetchError::NotFound(_)) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "blob_not_found",
                    format!("no node in reach holds {hash}"),
                ));
            }
            Err(mycel_blobs::FetchError::Store(e)) => return Err(e.into()),
            Err(e @ mycel_blobs::FetchError::ProvidersFailed { .. }) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "fetch_failed",
                    e.to_string(),
                ));
            }
        }
    }
    let Some((meta, file)) = state.blobs.open_blob(&hash).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "blob_not_found",
            format!("no node in reach holds {hash}"),
        ));
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, meta.size.to_string()),
        ],
        Body::from_stream(ReaderStream::with_capacity(file, 64 * 1024)),
    )
        .into_response())
}
