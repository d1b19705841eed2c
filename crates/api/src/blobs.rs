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
    let meta = store_body(&state, &headers, body, declared).await?;
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

/// Streams a request body into the blob store (never whole in memory), within the store's size
/// limit; a body that breaks off, or hashes otherwise than `declared`, stores nothing.
pub(crate) async fn store_body(
    state: &ApiState,
    headers: &axum::http::HeaderMap,
    body: Body,
    declared: Option<BlobHash>,
) -> Result<mycel_blobs::BlobMeta, ApiError> {
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
    Ok(upload.finish(declared).await?)
}

pub(crate) async fn download(
    State(state): State<ApiState>,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash)?;
    if let Some((meta, file)) = state.blobs.open_blob(&hash).await? {
        return Ok(bytes_response(
            meta.size,
            Body::from_stream(ReaderStream::with_capacity(file, 64 * 1024)),
        ));
    }
    fetch_and_stream(state, hash).await
}

fn bytes_response(size: u64, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response()
}

/// How a fetch for a download ended (`None` while it runs).
type FetchOutcome = Option<Result<(), FetchFailure>>;

#[derive(Clone, Debug)]
enum FetchFailure {
    NotFound,
    Failed(String),
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchFailure::NotFound => f.write_str("no node in reach holds the blob"),
            FetchFailure::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Fetches the blob from peers on a task of its own (it completes even if this client leaves, and
/// the node keeps the blob) and streams each range to the client as soon as it is verified.
async fn fetch_and_stream(state: ApiState, hash: BlobHash) -> Result<Response, ApiError> {
    let (done_tx, mut done) = tokio::sync::watch::channel::<FetchOutcome>(None);
    let store = state.blobs.clone();
    let network = mycel_blobs::MeshBlobs {
        mesh: state.mesh.clone(),
    };
    // Detached on purpose (see above): it ends with the fetch.
    tokio::spawn(async move {
        let outcome = match mycel_blobs::fetch(&store, &network, hash).await {
            Ok(meta) => {
                tracing::info!(%hash, size = meta.size, "blob fetched from peers");
                Ok(())
            }
            Err(e) => Err(e),
        };
        let _ = done_tx.send(Some(outcome.map_err(|e| match e {
            mycel_blobs::FetchError::NotFound(_) => FetchFailure::NotFound,
            e => FetchFailure::Failed(e.to_string()),
        })));
    });

    // Wait until the size is known: the fetch has started, or it ended.
    let size = loop {
        if let Some(meta) = state.blobs.meta(&hash)? {
            break meta.size;
        }
        if let Some((size, _)) = state.blobs.watch_partial(&hash) {
            break size;
        }
        match done.borrow().clone() {
            Some(Err(FetchFailure::NotFound)) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "blob_not_found",
                    format!("no node in reach holds {hash}"),
                ));
            }
            Some(Err(FetchFailure::Failed(reason))) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "fetch_failed",
                    reason,
                ));
            }
            Some(Ok(())) | None => {}
        }
        // The fetch registers within a provider lookup; wake on its end or check again soon.
        let _ = tokio::time::timeout(STARTUP_POLL, done.changed()).await;
    };

    let ranges = size.div_ceil(mycel_blobs::RANGE_BYTES);
    let stream = futures::stream::unfold(0u64, move |index| {
        let store = state.blobs.clone();
        let mut done = done.clone();
        async move {
            if index >= ranges {
                return None;
            }
            let mut progress = store.watch_partial(&hash).map(|(_, rx)| rx);
            loop {
                match store.read_range(&hash, index).await {
                    Ok(Some(bytes)) => {
                        // The last bytes go out once the blob is stored: when a download ends,
                        // this node holds the blob.
                        if index + 1 == ranges
                            && let Err(reason) = stored(&store, &hash, &mut done).await
                        {
                            return Some((Err(std::io::Error::other(reason)), ranges));
                        }
                        return Some((Ok(axum::body::Bytes::from(bytes)), index + 1));
                    }
                    Ok(None) => {}
                    Err(e) => return Some((Err(std::io::Error::other(e.to_string())), ranges)),
                }
                if let Some(Err(failure)) = done.borrow().clone() {
                    // The client sees a body shorter than its length: the download failed.
                    return Some((Err(std::io::Error::other(failure.to_string())), ranges));
                }
                // Wait for the next verified range or the fetch's end, at most a moment.
                let next_range = async {
                    let changed = match progress.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => false,
                    };
                    if !changed {
                        // No fetch to watch (or it ended): let the other arms decide.
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    _ = next_range => {}
                    _ = done.changed() => {}
                    _ = tokio::time::sleep(STREAM_POLL) => {}
                }
            }
        }
    });
    Ok(bytes_response(size, Body::from_stream(stream)))
}

/// Waits until the blob is stored here, or its fetch failed.
async fn stored(
    store: &mycel_blobs::BlobStore,
    hash: &BlobHash,
    done: &mut tokio::sync::watch::Receiver<FetchOutcome>,
) -> Result<(), String> {
    loop {
        if matches!(store.meta(hash), Ok(Some(_))) {
            return Ok(());
        }
        if let Some(outcome) = done.borrow_and_update().clone() {
            return outcome.map_err(|failure| failure.to_string());
        }
        if done.changed().await.is_err() {
            // The fetch task is gone: what it left is the answer.
            return match store.meta(hash) {
                Ok(Some(_)) => Ok(()),
                _ => Err("the fetch ended without storing the blob".into()),
            };
        }
    }
}

/// How often a download checks for its fetch to start.
const STARTUP_POLL: std::time::Duration = std::time::Duration::from_millis(20);
/// The longest a streaming download waits before looking again for its next range.
const STREAM_POLL: std::time::Duration = std::time::Duration::from_millis(100);
