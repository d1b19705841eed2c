//! API errors: a status, a stable machine code, and a sentence for a person.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the node is shutting down",
        )
    }

    pub fn internal(message: &str) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = mycel_protocol::api::ApiError {
            error: self.message,
            code: self.code.to_string(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<mycel_blobs::StoreError> for ApiError {
    fn from(error: mycel_blobs::StoreError) -> Self {
        use mycel_blobs::StoreError;
        match error {
            StoreError::TooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                error.to_string(),
            ),
            StoreError::HashMismatch { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "hash_mismatch", error.to_string())
            }
            StoreError::Io(_) | StoreError::Index(_) => {
                tracing::error!(%error, "blob store failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    "the node could not store or read the blob",
                )
            }
        }
    }
}
