//! The runtime's errors: each says what went wrong and maps to the status a client should see.

use std::time::Duration;

use http::StatusCode;

/// Why a driver could not start an instance, or an instance could not answer a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The spec itself is unusable (e.g. a malformed module hash).
    #[error("invalid instance spec: {0}")]
    InvalidSpec(String),

    /// The runtime itself could not be set up (e.g. the host refused the address space the wasm
    /// pool reserves).
    #[error("setting up the runtime: {0}")]
    Setup(String),

    /// Reading the module or writing the compiled-artefact cache failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The module is not something this runtime can compile (not wasm, a core module rather than a
    /// component, invalid, or its content does not match its hash).
    #[error("compiling {module}: {reason}")]
    Compile { module: String, reason: String },

    /// The component compiled but cannot be instantiated here: it imports what mycel does not
    /// provide, does not export `wasi:http/incoming-handler`, or needs more memory than allowed.
    /// For a container: it exited, or never listened on its port, before it could serve.
    #[error("instantiating {app}: {reason}")]
    Instantiate { app: String, reason: String },

    /// The app trapped (panicked, ran out of its memory limit, ...) before it answered.
    #[error("instance {instance} trapped: {reason}")]
    Trap { instance: String, reason: String },

    /// The app did not finish within its time limit.
    #[error("instance {instance} did not answer within {limit:?}")]
    Timeout { instance: String, limit: Duration },

    /// The app answered with an error instead of a response, or never answered.
    #[error("instance {instance} failed to answer: {reason}")]
    Guest { instance: String, reason: String },

    /// `max_concurrency` requests already run on this instance (or the node's wasm pool is full);
    /// the request was not started, so it is safe to retry it elsewhere.
    #[error("instance {instance} is overloaded ({limit} requests in flight)")]
    Overloaded { instance: String, limit: usize },

    /// The instance is stopping or stopped; the request was not started.
    #[error("instance {instance} is stopped")]
    Stopped { instance: String },

    /// The instance could not be reached (its container's port refused the connection): the
    /// request was never sent, so it is safe to retry it elsewhere.
    #[error("instance {instance} is unreachable: {reason}")]
    Unreachable { instance: String, reason: String },

    /// The node's container engine refused or failed an operation (creating, starting or
    /// removing a container, loading an image, ...).
    #[error("{context}: {reason}")]
    Engine { context: String, reason: String },
}

impl RuntimeError {
    /// The status a gateway answers with when a request fails this way.
    pub fn status_code(&self) -> StatusCode {
        match self {
            RuntimeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            RuntimeError::Overloaded { .. } | RuntimeError::Stopped { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RuntimeError::Guest { .. } | RuntimeError::Unreachable { .. } => {
                StatusCode::BAD_GATEWAY
            }
            RuntimeError::InvalidSpec(_)
            | RuntimeError::Setup(_)
            | RuntimeError::Io { .. }
            | RuntimeError::Compile { .. }
            | RuntimeError::Instantiate { .. }
            | RuntimeError::Trap { .. }
            | RuntimeError::Engine { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine code, for the API's `{"error", "code"}` bodies and for metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::InvalidSpec(_) => "invalid_spec",
            RuntimeError::Setup(_) => "runtime_setup_failed",
            RuntimeError::Io { .. } => "io",
            RuntimeError::Compile { .. } => "compile_failed",
            RuntimeError::Instantiate { .. } => "instantiate_failed",
            RuntimeError::Trap { .. } => "app_trapped",
            RuntimeError::Timeout { .. } => "app_timeout",
            RuntimeError::Guest { .. } => "app_failed",
            RuntimeError::Overloaded { .. } => "app_overloaded",
            RuntimeError::Stopped { .. } => "instance_stopped",
            RuntimeError::Unreachable { .. } => "app_unreachable",
            RuntimeError::Engine { .. } => "engine_failed",
        }
    }

    /// True when the request never reached the app, so another instance may take it.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RuntimeError::Overloaded { .. }
                | RuntimeError::Stopped { .. }
                | RuntimeError::Unreachable { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}
