//! The node's one wasmtime [`Engine`]: pooling allocator, epoch interruption, and the thread that
//! ticks the epoch.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A running guest checks its deadline (and yields to the executor)
/// once per tick, so this is the granularity of time limits and of fairness between guests.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

// The pooling allocator reserves every slot up front (virtual memory, committed only when used),
// so these numbers bound what runs at once on the node, across all apps. Each request runs in its
// own component instance, so "instances" below are requests in flight, not replicas.

/// Component instances (requests in flight) the node runs at once; more are refused as overloaded.
pub(crate) const POOL_COMPONENT_INSTANCES: u32 = 1_000;
/// Core module instances: a Rust wasip2 component instantiates about three (its module, a shim and
/// its fixups); other toolchains use a few more.
const POOL_CORE_INSTANCES: u32 = 8 * POOL_COMPONENT_INSTANCES;
/// Linear memories: one per component is the norm. Each slot reserves `MAX_MEMORY_BYTES` plus
/// guard pages of address space (about 4 TiB in all, of the 128 TiB a 64-bit process has); that
/// reservation is what lets compiled code skip bounds checks.
const POOL_MEMORIES: u32 = POOL_COMPONENT_INSTANCES;
/// Tables: a Rust component has about two (its module's and the shim's).
const POOL_TABLES: u32 = 4 * POOL_COMPONENT_INSTANCES;
/// Async stacks, one per running request (`async_stack_size`, 2 MiB by default).
const POOL_STACKS: u32 = POOL_COMPONENT_INSTANCES;
/// The most any single linear memory may grow to: all of wasm32's 4 GiB. Apps are held to their
/// own `memory_mb` by a per-request limiter, not by this.
pub(crate) const MAX_MEMORY_BYTES: usize = 4 << 30;

/// How much of a linear memory / table is reset in place (memset of the pages it used, found with
/// Linux's PAGEMAP_SCAN where the kernel has it) rather than given back to the kernel when its
/// request ends. Giving pages back costs a TLB shootdown across cores per request and page faults
/// on the next one; that was most of a small request's time.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Builds the engine every instance on this node shares.
pub(crate) fn new_engine() -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_COMPONENT_INSTANCES)
        .total_core_instances(POOL_CORE_INSTANCES)
        .total_memories(POOL_MEMORIES)
        .total_tables(POOL_TABLES)
        .total_stacks(POOL_STACKS)
        .max_memory_size(MAX_MEMORY_BYTES)
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .wasm_component_model(true);
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        thread::Builder::new()
            .name("mycel-wasm-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        // The thread notices within one tick and exits, releasing its engine handle; joining would
        // block the dropping (possibly async) thread for as long.
        self.stop.store(true, Ordering::Relaxed);
    }
}
