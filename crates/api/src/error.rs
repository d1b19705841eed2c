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

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable machine code, e.g. `not_owner`.
    pub fn code(&self) -> &'static str {
        self.code
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

impl From<mycel_protocol::ManifestError> for ApiError {
    fn from(error: mycel_protocol::ManifestError) -> Self {
        use mycel_protocol::ManifestError;
        let status = match error {
            ManifestError::TooLarge { .. } => {
                return Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    error.to_string(),
                );
            }
            ManifestError::Parse(_) | ManifestError::Invalid { .. } => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

/// The one mapping of a placement write's failure to an answer.
impl From<mycel_protocol::placement::WriteError> for ApiError {
    fn from(error: mycel_protocol::placement::WriteError) -> Self {
        use mycel_protocol::placement::WriteError;
        let (status, message) = match &error {
            WriteError::NoQuorum(_)
            | WriteError::LeaderUnreachable(_)
            | WriteError::Unconfirmed(_)
            | WriteError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
            WriteError::NotLeader => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the placement group is choosing a leader; try again".to_string(),
            ),
            WriteError::UnknownApp(_) => (StatusCode::NOT_FOUND, error.to_string()),
            WriteError::Rejected(_) => (StatusCode::BAD_REQUEST, error.to_string()),
            WriteError::NotOwner { .. } => (StatusCode::FORBIDDEN, error.to_string()),
            WriteError::PortTaken { .. } => (StatusCode::CONFLICT, error.to_string()),
            WriteError::MissingSecret { .. }
            | WriteError::MissingDependency { .. }
            | WriteError::DependencyVersion { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
            }
            WriteError::DependedOn { .. } => (StatusCode::CONFLICT, error.to_string()),
            WriteError::BadSignature(_) | WriteError::Stale(_) => {
                (StatusCode::UNAUTHORIZED, error.to_string())
            }
        };
        Self::new(status, error.code(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::placement::WriteError;

    fn key(seed: u8) -> mycel_protocol::ownership::OwnerKey {
        let keypair = mycel_protocol::Keypair::ed25519_from_bytes([seed; 32]).unwrap();
        mycel_protocol::ownership::OwnerKey::of(&keypair).unwrap()
    }

    #[test]
    fn write_errors_map_to_statuses_and_codes() {
        for (error, status, code) in [
            (
                WriteError::NoQuorum("x".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "no_quorum",
            ),
            (
                WriteError::LeaderUnreachable("x".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "no_quorum",
            ),
            (
                WriteError::Unconfirmed("x".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "commit_unconfirmed",
            ),
            (
                WriteError::Stopped,
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
            ),
            (
                WriteError::NotLeader,
                StatusCode::SERVICE_UNAVAILABLE,
                "no_quorum",
            ),
            (
                WriteError::UnknownApp("web".into()),
                StatusCode::NOT_FOUND,
                "app_not_found",
            ),
            (
                WriteError::Rejected("replicas: too many".into()),
                StatusCode::BAD_REQUEST,
                "rejected",
            ),
            (
                WriteError::NotOwner {
                    app: "web".into(),
                    owner: key(1),
                    signer: key(2),
                },
                StatusCode::FORBIDDEN,
                "not_owner",
            ),
            (
                WriteError::BadSignature("x".into()),
                StatusCode::UNAUTHORIZED,
                "bad_signature",
            ),
            (
                WriteError::Stale("x".into()),
                StatusCode::UNAUTHORIZED,
                "stale_request",
            ),
            (
                WriteError::PortTaken {
                    port: 5432,
                    app: "db".into(),
                },
                StatusCode::CONFLICT,
                "port_taken",
            ),
        ] {
            let mapped = ApiError::from(error);
            assert_eq!((mapped.status, mapped.code), (status, code));
        }
    }

    #[test]
    fn manifest_errors_are_invalid_manifest_except_size() {
        let too_large = ApiError::from(mycel_protocol::ManifestError::TooLarge { size: 9, max: 1 });
        assert_eq!(
            (too_large.status, too_large.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        );
        let parse = ApiError::from(mycel_protocol::ManifestError::Parse("x".into()));
        assert_eq!(
            (parse.status, parse.code),
            (StatusCode::BAD_REQUEST, "invalid_manifest")
        );
    }
}
