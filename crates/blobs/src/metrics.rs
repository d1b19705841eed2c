//! The blob store's Prometheus metrics.

use prometheus_client::{metrics::counter::Counter, registry::Registry};

/// Bytes that crossed the mesh for blobs, and bytes uploaded through the API.
#[derive(Clone, Debug, Default)]
pub struct BlobMetrics {
    /// Bytes this node served to peers.
    pub bytes_sent: Counter,
    /// Verified bytes this node fetched from peers.
    pub bytes_received: Counter,
    /// Bytes accepted through uploads (`POST /v1/blobs`).
    pub bytes_uploaded: Counter,
}

impl BlobMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "mycel_blob_bytes_sent",
            "Blob bytes served to peers",
            metrics.bytes_sent.clone(),
        );
        registry.register(
            "mycel_blob_bytes_received",
            "Verified blob bytes fetched from peers",
            metrics.bytes_received.clone(),
        );
        registry.register(
            "mycel_blob_bytes_uploaded",
            "Blob bytes stored through uploads",
            metrics.bytes_uploaded.clone(),
        );
        metrics
    }
}
