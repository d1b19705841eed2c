//! What one request's store holds: WASI and wasi:http state, and the memory limiter.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use wasmtime::{ResourceLimiter, StoreLimits, component::ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::outgoing::Outgoing;

/// Most resources (streams, fields, pollables...) one request may hold at once, so a guest cannot
/// grow host memory outside its linear-memory limit without bound.
pub(crate) const MAX_RESOURCES: usize = 10_000;

/// The `T` of every `Store<T>`.
pub(crate) struct Host {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    /// Where its outgoing requests go (its dependencies through the node's gateway).
    pub(crate) outgoing: Outgoing,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

/// Holds all linear memories of one store to `limit` bytes together, remembers whether it refused
/// growth (so a resulting trap can be explained), and keeps the instance-wide memory gauge.
pub(crate) struct MemoryLimiter {
    limit: usize,
    used: usize,
    refused: bool,
    /// The instance's gauge: linear memory of every request in flight.
    gauge: Arc<AtomicU64>,
    /// Counts of instances and tables, and table sizes: wasmtime's defaults.
    others: StoreLimits,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize, gauge: Arc<AtomicU64>) -> Self {
        MemoryLimiter {
            limit,
            used: 0,
            refused: false,
            gauge,
            others: StoreLimits::default(),
        }
    }

    /// True once a memory growth beyond the limit was refused.
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let within_type = maximum.is_none_or(|max| desired <= max);
        let within_limit = self.used.saturating_add(growth) <= self.limit;
        if !within_limit {
            self.refused = true;
        }
        if within_type && within_limit {
            self.used += growth;
            self.gauge.fetch_add(growth as u64, Ordering::Relaxed);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.others.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.others.instances()
    }

    fn tables(&self) -> usize {
        self.others.tables()
    }

    fn memories(&self) -> usize {
        self.others.memories()
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.gauge.fetch_sub(self.used as u64, Ordering::Relaxed);
    }
}
