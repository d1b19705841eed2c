//! The blob store's Prometheus metrics.

use prometheus_client::{
    metrics::{counter::Counter, histogram::Histogram},
    registry::Registry,
};

/// Bytes that crossed the mesh for blobs, bytes uploaded through the API, and how many peers
/// each fetch drew from.
#[derive(Clone, Debug)]
pub struct BlobMetrics {
    /// Peers that served at least one verified range, per completed fetch.
    pub fetch_peers: Histogram,
    /// Bytes this node served to peers.
    pub bytes_sent: Counter,
    /// Verified bytes this node fetched from peers.
    pub bytes_received: Counter,
    /// Bytes accepted through uploads (`POST /v1/blobs`).
    pub bytes_uploaded: Counter,
}

impl Default for BlobMetrics {
    fn default() -> Self {
        Self {
            fetch_peers: Histogram::new([1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0]),
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            bytes_uploaded: Counter::default(),
        }
    }
}

impl BlobMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "mycel_blob_fetch_peers",
            "Peers that served verified ranges, per completed fetch",
            metrics.fetch_peers.clone(),
        );
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
