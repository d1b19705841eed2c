//! One running wasm app: admission (stopped? concurrency?), then a fresh store and component
//! instance per request with its memory and time limits, and what became of the request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use http_body_util::{BodyExt, combinators::BoxBody};
use tokio::sync::oneshot;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline, component::ResourceTable};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::{
    WasiHttpCtx, WasiHttpView,
    p2::{bindings::ProxyPre, bindings::http::types::Scheme, body::HyperOutgoingBody},
};

use super::{
    ComponentSlot,
    engine::{MAX_MEMORY_BYTES, POOL_COMPONENT_INSTANCES},
    host::{Host, MAX_RESOURCES, MemoryLimiter},
    stdio::GuestOutput,
};
use crate::{
    Body, BoxError, Instance, InstanceSpec, RuntimeError, Usage,
    admission::{Gate, Ticket},
    body::SyncBody,
    logs::{LogBuffer, Logs, Stream},
};

pub(crate) struct WasmInstance {
    shared: Arc<Shared>,
}

/// Everything a request needs, shared with its task (which may outlive the caller's future).
struct Shared {
    id: String,
    app: String,
    pre: ProxyPre<Host>,
    env: Vec<(String, String)>,
    /// Its volumes, preopened read-write at their paths for every request.
    volumes: Vec<crate::VolumeMount>,
    /// Where `<dep>.localhost` requests go.
    dependencies: Option<Arc<super::outgoing::DependencyRoutes>>,
    memory_mb: u64,
    memory_limit: usize,
    timeout: Duration,
    gate: Arc<Gate>,
    log: Arc<LogBuffer>,
    /// Linear memory of the requests in flight, kept by their limiters.
    memory: Arc<AtomicU64>,
    /// CPU time its requests' tasks used (see [`crate::cpu`]).
    cpu_nanos: Arc<AtomicU64>,
    /// Keeps the compiled component shared with other instances of the same module.
    _component: Arc<ComponentSlot>,
}

impl WasmInstance {
    pub(super) fn new(
        spec: InstanceSpec,
        pre: ProxyPre<Host>,
        component: Arc<ComponentSlot>,
    ) -> Self {
        // One request is one component instance, so the node's pool bounds any instance too.
        let max_concurrency = spec
            .max_concurrency
            .clamp(1, POOL_COMPONENT_INSTANCES as usize);
        let memory_limit = usize::try_from(spec.memory_mb.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX)
            .min(MAX_MEMORY_BYTES);
        WasmInstance {
            shared: Arc::new(Shared {
                gate: Gate::new(&spec.instance_id, max_concurrency),
                id: spec.instance_id,
                app: spec.app,
                pre,
                env: spec.env.into_iter().collect(),
                volumes: spec.volumes,
                dependencies: spec.dependencies,
                memory_mb: spec.memory_mb,
                memory_limit,
                timeout: spec.request_timeout,
                log: Arc::new(LogBuffer::new()),
                memory: Arc::new(AtomicU64::new(0)),
                cpu_nanos: Arc::default(),
                _component: component,
            }),
        }
    }

    /// Instantiates the component once, under the app's limits, so a component that cannot run
    /// here (e.g. needs more memory than allowed) fails at start rather than on every request.
    pub(super) async fn check_instantiates(&self) -> Result<(), RuntimeError> {
        let shared = &self.shared;
        let limit = shared.timeout.max(Duration::from_secs(5));
        let deadline = Instant::now() + limit;
        let mut store = shared.new_store(deadline);
        let result =
            tokio::time::timeout_at(deadline.into(), shared.pre.instantiate_async(&mut store))
                .await;
        let reason = match result {
            Ok(Ok(_)) => return Ok(()),
            Err(_) => format!("instantiating took longer than {limit:?}"),
            Ok(Err(e)) if store.data().limiter.refused() => format!(
                "it needs more than its memory limit of {} MiB to start: {e:#}",
                shared.memory_mb
            ),
            Ok(Err(e)) => format!("{e:#}"),
        };
        Err(RuntimeError::Instantiate {
            app: shared.app.clone(),
            reason,
        })
    }
}

impl Instance for WasmInstance {
    fn id(&self) -> &str {
        &self.shared.id
    }

    fn handle(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, RuntimeError>> {
        // Admission happens now, not when the future is first polled.
        let admitted = self.shared.gate.admit();
        let shared = self.shared.clone();
        Box::pin(async move { shared.serve(request, admitted?).await })
    }

    fn logs(&self) -> Logs {
        self.shared.log.logs()
    }

    fn usage(&self) -> Usage {
        let shared = &self.shared;
        shared.gate.usage(
            Some(shared.memory.load(Ordering::Relaxed)),
            Some(shared.cpu_nanos.load(Ordering::Relaxed)),
        )
    }

    fn stop(&self) -> BoxFuture<'static, ()> {
        let shared = self.shared.clone();
        // Each running request is bounded by its time limit, so the wait is too.
        Box::pin(async move { shared.gate.close(None).await })
    }
}

impl Shared {
    /// Runs one request in its own task, and answers as soon as the app has set its response
    /// head; the body then streams from the still-running task.
    async fn serve(
        self: Arc<Self>,
        mut request: http::Request<Body>,
        ticket: Ticket,
    ) -> Result<http::Response<Body>, RuntimeError> {
        let deadline = Instant::now() + self.timeout;
        let mut store = self.new_store(deadline);

        // wasi:http needs an authority; a proxied request always has one, a bare one gets one.
        if request.uri().authority().is_none()
            && !request.headers().contains_key(http::header::HOST)
        {
            request.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
        let request = request.map(|body| {
            body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
        });
        let (sender, receiver) = oneshot::channel();
        let resources = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .and_then(|req| Ok((req, store.data_mut().http().new_response_outparam(sender)?)));
        let (req, out) = match resources {
            Ok(resources) => resources,
            Err(e) => {
                return Err(self.failed(RuntimeError::Guest {
                    instance: self.id.clone(),
                    reason: format!("passing the request to the app: {e:#}"),
                }));
            }
        };

        let shared = self.clone();
        // Detached from the caller so a client that goes away cannot cancel the guest mid-call;
        // bounded by the request's deadline.
        let cpu = self.cpu_nanos.clone();
        let task = tokio::spawn(crate::cpu::CpuTimed::new(
            async move {
                let _ticket = ticket;
                let pre = shared.pre.clone();
                let result = tokio::time::timeout_at(deadline.into(), async {
                    let proxy = pre.instantiate_async(&mut store).await?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, req, out)
                        .await
                })
                .await;
                let outcome = match result {
                    Ok(Ok(())) => Ok(()),
                    Err(_elapsed) => Err(shared.timed_out()),
                    Ok(Err(e)) => Err(shared.classify(e, store.data().limiter.refused())),
                };
                // Dropping the store flushes the app's last partial log lines before ours.
                drop(store);
                outcome.map_err(|e| shared.failed(e))
            },
            cpu,
        ));

        match receiver.await {
            Ok(Ok(response)) => Ok(response.map(into_body)),
            Ok(Err(code)) => Err(self.failed(RuntimeError::Guest {
                instance: self.id.clone(),
                reason: format!("the app answered with an error: {code:?}"),
            })),
            // The app ended without setting a response: its task says why.
            Err(_) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(self.failed(RuntimeError::Guest {
                    instance: self.id.clone(),
                    reason: "the app returned without answering".to_owned(),
                })),
                Err(e) => Err(self.failed(RuntimeError::Trap {
                    instance: self.id.clone(),
                    reason: format!("the request's task ended abnormally: {e}"),
                })),
            },
        }
    }

    fn new_store(&self, deadline: Instant) -> Store<Host> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.envs(&self.env)
            .stdout(GuestOutput::new(Stream::Stdout, self.log.clone()))
            .stderr(GuestOutput::new(Stream::Stderr, self.log.clone()));
        for volume in &self.volumes {
            let preopened = wasi.preopened_dir(
                &volume.host,
                &volume.path,
                wasmtime_wasi::FsPerms::ReadWrite,
            );
            if let Err(e) = preopened {
                // The request runs without it, and finds no such directory.
                tracing::warn!(instance = %self.id, path = %volume.path, error = %e, "could not open a volume");
            }
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let host = Host {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            outgoing: super::outgoing::Outgoing {
                routes: self.dependencies.clone(),
            },
            table,
            limiter: MemoryLimiter::new(self.memory_limit, self.memory.clone()),
        };
        let mut store = Store::new(self.pre.engine(), host);
        store.limiter(|host| &mut host.limiter);
        // At every epoch tick the guest yields to the executor (so a CPU-bound guest cannot hold a
        // worker thread) and, once past its deadline, is interrupted with a trap.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store
    }

    fn timed_out(&self) -> RuntimeError {
        RuntimeError::Timeout {
            instance: self.id.clone(),
            limit: self.timeout,
        }
    }

    fn classify(&self, error: wasmtime::Error, memory_refused: bool) -> RuntimeError {
        if error.is::<PoolConcurrencyLimitError>() {
            return RuntimeError::Overloaded {
                instance: self.id.clone(),
                limit: POOL_COMPONENT_INSTANCES as usize,
            };
        }
        let trap = error.downcast_ref::<Trap>().copied();
        if trap == Some(Trap::Interrupt) {
            return self.timed_out();
        }
        let mut reason = match trap {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        if memory_refused {
            reason = format!(
                "{reason} (after reaching its memory limit of {} MiB)",
                self.memory_mb
            );
        }
        RuntimeError::Trap {
            instance: self.id.clone(),
            reason,
        }
    }

    /// Counts a failed request and notes it in the instance's log, where `mycel logs` shows it.
    fn failed(&self, error: RuntimeError) -> RuntimeError {
        self.gate.count_failure();
        tracing::debug!(instance = %self.id, app = %self.app, error = %error, "request failed");
        self.log.push(Stream::Stderr, format!("[mycel] {error}"));
        error
    }
}

fn into_body(body: HyperOutgoingBody) -> Body {
    BoxBody::new(SyncBody::new(body).map_err(|e| Box::new(e) as BoxError))
}
