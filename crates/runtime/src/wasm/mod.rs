//! The wasm driver: `wasi:http/proxy` components on wasmtime.
//!
//! ```text
//! WasmDriver ── Engine (pooling allocator) ◀── EpochTicker thread: increment_epoch every 10 ms
//!    │          Linker<Host> (WASI p2 + wasi:http), built once
//!    │          loaded: module hash → Component, shared by the instances of one module
//!    │            └─ on a miss: <cache_dir>/<hex>.cwasm (cache.rs), else compile and store it
//!    └─ start(spec) → WasmInstance (instance.rs): ProxyPre + limits
//!                       └─ handle(request): a fresh Store<Host> (host.rs) and component
//!                          instance per request, stdout/stderr into the log (stdio.rs)
//! ```
//!
//! Compiling and loading run on the blocking pool; requests run as tokio tasks on the caller's
//! runtime.

mod cache;
mod engine;
mod host;
mod instance;
pub(crate) mod outgoing;
mod stdio;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::future::BoxFuture;
use tokio::sync::OnceCell;
use wasmtime::{
    Engine,
    component::{Component, Linker},
};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use self::{engine::EpochTicker, host::Host, instance::WasmInstance};
use crate::{Driver, Instance, InstanceSpec, RuntimeError, Workload};

/// The compiled component of one module, shared by its instances; the driver keeps only a weak
/// reference, so it is freed with the last instance.
type ComponentSlot = OnceCell<Component>;

/// How the driver obtained compiled components since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Compiled from the module (a cache miss).
    pub compiled: u64,
    /// Loaded from `<cache_dir>/<hash>.cwasm`.
    pub loaded_from_disk: u64,
    /// Shared with a running instance of the same module.
    pub reused_in_memory: u64,
    /// Cached artefacts that could not be used (damaged, or from another wasmtime) and were
    /// replaced.
    pub discarded: u64,
}

/// Runs `wasi:http/proxy` components. Cheap to clone; all clones share one engine and cache.
#[derive(Clone)]
pub struct WasmDriver {
    inner: Arc<DriverInner>,
}

struct DriverInner {
    engine: Engine,
    linker: Linker<Host>,
    cache_dir: PathBuf,
    loaded: Mutex<HashMap<String, Weak<ComponentSlot>>>,
    compiled: AtomicU64,
    loaded_from_disk: AtomicU64,
    reused_in_memory: AtomicU64,
    discarded: AtomicU64,
    _ticker: EpochTicker,
}

impl WasmDriver {
    /// Creates the node's wasm engine, keeping compiled components in `cache_dir` (created if
    /// missing).
    pub fn new(cache_dir: PathBuf) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(&cache_dir).map_err(|e| {
            RuntimeError::io(
                format!("creating the wasm cache directory {}", cache_dir.display()),
                e,
            )
        })?;
        let engine = engine::new_engine()
            .map_err(|e| RuntimeError::Setup(format!("creating the wasm engine: {e:#}")))?;
        let linker = new_linker(&engine).map_err(|e| {
            RuntimeError::Setup(format!("linking WASI into the wasm engine: {e:#}"))
        })?;
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| RuntimeError::io("starting the wasm epoch thread", e))?;
        Ok(WasmDriver {
            inner: Arc::new(DriverInner {
                engine,
                linker,
                cache_dir,
                loaded: Mutex::new(HashMap::new()),
                compiled: AtomicU64::new(0),
                loaded_from_disk: AtomicU64::new(0),
                reused_in_memory: AtomicU64::new(0),
                discarded: AtomicU64::new(0),
                _ticker: ticker,
            }),
        })
    }

    /// Where the compiled artefact of the module with this hash (`blake3:<hex>`) is kept.
    pub fn cache_path(&self, module_hash: &str) -> Result<PathBuf, RuntimeError> {
        Ok(cache::path(&self.inner.cache_dir, parse_hash(module_hash)?))
    }

    /// How compiled components were obtained so far (for metrics and tests).
    pub fn cache_stats(&self) -> CacheStats {
        let inner = &self.inner;
        CacheStats {
            compiled: inner.compiled.load(Ordering::Relaxed),
            loaded_from_disk: inner.loaded_from_disk.load(Ordering::Relaxed),
            reused_in_memory: inner.reused_in_memory.load(Ordering::Relaxed),
            discarded: inner.discarded.load(Ordering::Relaxed),
        }
    }

    async fn start_instance(self, spec: InstanceSpec) -> Result<Arc<dyn Instance>, RuntimeError> {
        let Workload::Wasm {
            module,
            module_hash,
        } = &spec.workload
        else {
            return Err(RuntimeError::InvalidSpec(format!(
                "the wasm runtime cannot run a {} workload",
                spec.workload.runtime()
            )));
        };
        let hex = parse_hash(module_hash)?.to_owned();
        let slot = self.inner.slot(&hex);
        if slot.initialized() {
            self.inner.reused_in_memory.fetch_add(1, Ordering::Relaxed);
        }
        let component = slot
            .get_or_try_init(|| {
                let inner = self.inner.clone();
                let module = module.clone();
                async move {
                    let name = module.display().to_string();
                    tokio::task::spawn_blocking(move || inner.load_or_compile(&module, &hex))
                        .await
                        .map_err(|e| RuntimeError::Compile {
                            module: name,
                            reason: format!("the compiling thread failed: {e}"),
                        })?
                }
            })
            .await?
            .clone();

        let pre = self.inner.linker.instantiate_pre(&component).map_err(|e| {
            RuntimeError::Instantiate {
                app: spec.app.clone(),
                reason: format!("{e:#}"),
            }
        })?;
        let pre = ProxyPre::new(pre).map_err(|e| RuntimeError::Instantiate {
            app: spec.app.clone(),
            reason: format!("not a wasi:http/proxy component (it must export wasi:http/incoming-handler@0.2): {e:#}"),
        })?;
        let instance = WasmInstance::new(spec, pre, slot);
        instance.check_instantiates().await?;
        Ok(Arc::new(instance))
    }
}

impl Driver for WasmDriver {
    fn runtime(&self) -> mycel_protocol::Runtime {
        mycel_protocol::Runtime::Wasm
    }

    fn start(
        &self,
        spec: InstanceSpec,
    ) -> BoxFuture<'static, Result<Arc<dyn Instance>, RuntimeError>> {
        Box::pin(self.clone().start_instance(spec))
    }
}

impl DriverInner {
    /// The shared slot for a module, created empty when no instance of it runs.
    fn slot(&self, hex: &str) -> Arc<ComponentSlot> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = loaded.get(hex).and_then(Weak::upgrade) {
            return slot;
        }
        loaded.retain(|_, slot| slot.strong_count() > 0);
        let slot = Arc::new(ComponentSlot::new());
        loaded.insert(hex.to_owned(), Arc::downgrade(&slot));
        slot
    }

    /// Blocking: the cached artefact if it is usable, else compiles the module and caches it.
    fn load_or_compile(&self, module: &Path, hex: &str) -> Result<Component, RuntimeError> {
        let cached = cache::path(&self.cache_dir, hex);
        match cache::load(&self.engine, &cached) {
            Ok(component) => {
                self.loaded_from_disk.fetch_add(1, Ordering::Relaxed);
                return Ok(component);
            }
            Err(cache::LoadError::Missing) => {}
            Err(cache::LoadError::Unusable(reason)) => {
                tracing::warn!(path = %cached.display(), %reason, "recompiling: the cached artefact is unusable");
                self.discarded.fetch_add(1, Ordering::Relaxed);
                cache::remove(&cached);
            }
        }

        let compile_error = |reason: String| RuntimeError::Compile {
            module: module.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(module)
            .map_err(|e| RuntimeError::io(format!("reading {}", module.display()), e))?;
        check_component_header(&bytes).map_err(compile_error)?;
        let actual = blake3::hash(&bytes).to_hex();
        if actual.as_str() != hex {
            return Err(compile_error(format!(
                "its content hashes to blake3:{actual}, not the expected blake3:{hex}"
            )));
        }
        let started = std::time::Instant::now();
        let component = Component::from_binary(&self.engine, &bytes)
            .map_err(|e| compile_error(format!("{e:#}")))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        tracing::info!(module = %module.display(), elapsed_ms = started.elapsed().as_millis() as u64, "compiled a wasm component");

        // The cache only saves time: failing to write it is worth a warning, not a failed start.
        match component.serialize() {
            Ok(artefact) => {
                if let Err(e) = cache::store(&cached, &artefact) {
                    tracing::warn!(path = %cached.display(), error = %e, "caching a compiled component");
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "serializing a compiled component"),
        }
        Ok(component)
    }
}

/// WASI 0.2 (no preopened directories, every socket address denied: the defaults of
/// `WasiCtxBuilder`) and wasi:http. All of WASI, not just the proxy world's imports, because
/// toolchains import more than they use (Rust's std imports `wasi:cli/environment`, `exit` and the
/// terminal interfaces).
fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// `blake3:<64 lowercase hex>` → the hex part, which names the cache file.
fn parse_hash(module_hash: &str) -> Result<&str, RuntimeError> {
    module_hash
        .strip_prefix("blake3:")
        .filter(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
        .ok_or_else(|| {
            RuntimeError::InvalidSpec(format!(
                "module hash {module_hash:?} is not blake3:<64 lowercase hex digits>"
            ))
        })
}

/// Says plainly what a file is when it is not a component, before wasmtime's parser does less
/// plainly.
fn check_component_header(bytes: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8; 4] = b"\0asm";
    const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err("not a WebAssembly file (no \\0asm header)".to_owned());
    }
    if bytes[4..8] == CORE_MODULE {
        return Err("a core WebAssembly module, not a component: build for wasm32-wasip2 (or wrap it with `wasm-tools component new`) so it exports wasi:http/incoming-handler".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_must_be_blake3_hex() {
        let good = format!("blake3:{}", "a1".repeat(32));
        assert_eq!(parse_hash(&good).ok(), Some(&good[7..]));
        for bad in [
            "a1".repeat(32),
            format!("blake3:{}", "A1".repeat(32)),
            format!("blake3:{}", "a1".repeat(31)),
            format!("blake3:../../{}", "a".repeat(58)),
        ] {
            assert!(parse_hash(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_name_what_the_file_is() {
        assert!(
            check_component_header(b"hello")
                .unwrap_err()
                .contains("not a WebAssembly file")
        );
        assert!(
            check_component_header(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(check_component_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
