//! Requests per second through `Instance::handle` on examples/hello, against a baseline in the
//! same run: a trivial in-process handler (the shape of a hyper `service_fn`) answering the same
//! bytes. Both include building
//! the request and collecting the answer's body; neither touches the network.
//!
//! `cargo bench -p mycel-runtime --bench hello` (throughput is printed as elements/s).

#[path = "../tests/common/mod.rs"]
mod common;

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use mycel_runtime::{Driver, Instance, InstanceSpec, WasmDriver, Workload, empty_body};

const CONCURRENT: usize = 32;

fn hello_instance(runtime: &tokio::runtime::Runtime) -> (Arc<dyn Instance>, tempfile::TempDir) {
    let (module, module_hash) = common::hello();
    let cache = tempfile::tempdir().expect("a temporary directory");
    let driver = WasmDriver::new(cache.path().to_path_buf()).expect("a wasm driver");
    let spec = InstanceSpec {
        instance_id: "bench".to_owned(),
        app: "hello".to_owned(),
        workload: Workload::Wasm {
            module,
            module_hash,
        },
        env: [("GREETING".to_owned(), "hi".to_owned())].into(),
        memory_mb: 64,
        cpu_millis: 1_000,
        request_timeout: Duration::from_secs(10),
        max_concurrency: 1_000,
        secrets_dir: None,
        volumes: Vec::new(),
        dependencies: None,
    };
    let instance = runtime
        .block_on(driver.start(spec))
        .expect("the instance starts");
    (instance, cache)
}

async fn through_wasm(instance: &dyn Instance) -> Bytes {
    let response = instance
        .handle(common::request("GET", "/", empty_body()))
        .await
        .expect("an answer");
    response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes()
}

async fn through_baseline() -> Bytes {
    let Ok(response) = hello_handler(common::request("GET", "/", empty_body())).await;
    response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes()
}

/// The baseline: what answering the same bytes costs without wasm.
async fn hello_handler(
    _request: http::Request<mycel_runtime::Body>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::new(Bytes::from_static(
        b"hello from mycel: hi\n",
    ))))
}

fn requests(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (instance, _cache) = hello_instance(&runtime);
    assert_eq!(
        runtime.block_on(through_wasm(&*instance)),
        runtime.block_on(through_baseline())
    );

    let mut group = c.benchmark_group("one_at_a_time");
    group.throughput(Throughput::Elements(1));
    group.bench_function("wasm_hello", |b| {
        b.iter(|| runtime.block_on(through_wasm(&*instance)))
    });
    group.bench_function("native_baseline", |b| {
        b.iter(|| runtime.block_on(through_baseline()))
    });
    group.finish();

    let mut group = c.benchmark_group("concurrent_32");
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function("wasm_hello", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tasks: Vec<_> = (0..CONCURRENT)
                    .map(|_| {
                        let instance = instance.clone();
                        tokio::spawn(async move { through_wasm(&*instance).await })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("a request task");
                }
            })
        })
    });
    group.bench_function("native_baseline", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tasks: Vec<_> = (0..CONCURRENT)
                    .map(|_| tokio::spawn(through_baseline()))
                    .collect();
                for task in tasks {
                    task.await.expect("a request task");
                }
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = requests
}
criterion_main!(benches);
