//! Why an instance did not start on this node. The text is what the node logs and reports as the
//! instance's error; the kind says whose move it is.

/// Why an instance did not start here.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// This node's owner does not allow it (policy): retrying here helps only if room appears.
    #[error("{0}")]
    Refused(String),
    /// What it runs could not be had: a module or image blob from the mesh, an image from a
    /// registry.
    #[error("{0}")]
    Fetch(String),
    /// The manifest asks for what this node cannot run: a runtime it lacks, a value that does
    /// not name a blob or an image.
    #[error("{0}")]
    Unrunnable(String),
    /// This node's own parts failed: the blob store, the scratch dir, the Docker engine.
    #[error("{0}")]
    Node(String),
    /// The runtime did not start the instance.
    #[error(transparent)]
    Start(#[from] mycel_runtime::RuntimeError),
}
