//! The wasm driver against examples/hello, built for wasm32-wasip2 by the first test that needs it.

mod common;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{get, hello, request};
use http_body_util::{BodyExt, StreamBody};
use mycel_runtime::{
    BoxError, Driver, Instance, InstanceSpec, RuntimeError, Stream, WasmDriver, Workload,
    empty_body,
};
use tempfile::TempDir;

fn hello_spec(id: &str) -> InstanceSpec {
    let (module, module_hash) = hello();
    InstanceSpec {
        instance_id: id.to_owned(),
        app: "hello".to_owned(),
        workload: Workload::Wasm {
            module,
            module_hash,
        },
        env: BTreeMap::new(),
        memory_mb: 64,
        cpu_millis: 250,
        request_timeout: Duration::from_secs(5),
        max_concurrency: 16,
        secrets_dir: None,
        volumes: Vec::new(),
        dependencies: None,
    }
}

fn driver() -> (WasmDriver, TempDir) {
    let cache = tempfile::tempdir().expect("a temporary directory");
    let driver = WasmDriver::new(cache.path().join("wasm")).expect("a wasm driver");
    (driver, cache)
}

async fn start(driver: &WasmDriver, spec: InstanceSpec) -> Arc<dyn Instance> {
    driver.start(spec).await.expect("the instance starts")
}

/// Waits (bounded) until `condition` holds: conditions, not sleeps.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_its_env_and_logs_each_request() {
    let (driver, _cache) = driver();
    let mut spec = hello_spec("hello-1");
    spec.env.insert("GREETING".to_owned(), "hola".to_owned());
    spec.env.insert("COLOUR".to_owned(), "teal".to_owned());
    let instance = start(&driver, spec).await;
    assert_eq!(instance.id(), "hello-1");

    let mut follow = instance.logs().follow;
    assert_eq!(
        get(&*instance, "/").await.unwrap(),
        (http::StatusCode::OK, "hello from mycel: hola\n".to_owned())
    );
    assert_eq!(
        get(&*instance, "/env/COLOUR").await.unwrap(),
        (http::StatusCode::OK, "teal\n".to_owned())
    );
    let (status, _) = get(&*instance, "/env/NOT_SET").await.unwrap();
    assert_eq!(status, http::StatusCode::NOT_FOUND);

    let lines: Vec<_> = instance.logs().recent;
    let requests: Vec<_> = lines
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.line.as_str())
        .collect();
    assert_eq!(requests, ["GET /", "GET /env/COLOUR", "GET /env/NOT_SET"]);
    assert!(lines.iter().all(|l| l.at_ms > 1_600_000_000_000));
    let followed = follow.recv().await.expect("a followed line");
    assert_eq!(followed.line, "GET /");

    // A request's task ends just after its answer's body does.
    eventually("the requests' tasks end", || {
        instance.usage().in_flight == 0
    })
    .await;
    let usage = instance.usage();
    assert_eq!((usage.requests, usage.failures), (3, 0));
    assert_eq!(
        usage.memory_bytes,
        Some(0),
        "no request runs, so no linear memory is held"
    );

    // Without GREETING, the default.
    let plain = start(&driver, hello_spec("hello-2")).await;
    assert_eq!(get(&*plain, "/").await.unwrap().1, "hello from mycel: hi\n");
    assert_eq!(driver.cache_stats().reused_in_memory, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_streams_the_body_both_ways() {
    let (driver, _cache) = driver();
    let instance = start(&driver, hello_spec("echo")).await;

    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(1);
    let body = StreamBody::new(tokio_stream(receiver)).boxed();
    sender
        .send(Ok(http_body::Frame::data(Bytes::from_static(b"first "))))
        .await
        .unwrap();
    let response = instance
        .handle(request("POST", "/echo", body))
        .await
        .expect("an answer");
    assert_eq!(response.status(), http::StatusCode::OK);
    let mut body = response.into_body();

    // The first chunk comes back while the request body is still open.
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first "));
    sender
        .send(Ok(http_body::Frame::data(Bytes::from_static(b"second"))))
        .await
        .unwrap();
    drop(sender);
    let rest = body.collect().await.expect("the rest").to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second"));
}

/// An mpsc receiver as a `Stream`, without tokio-stream.
fn tokio_stream<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Sync + 'static {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_only_that_request() {
    let (driver, _cache) = driver();
    let instance = start(&driver, hello_spec("trap")).await;

    let error = get(&*instance, "/trap").await.unwrap_err();
    eprintln!("error: {error}");
    assert!(matches!(error, RuntimeError::Trap { .. }), "{error:?}");
    assert_eq!(error.status_code(), http::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!error.is_retryable());

    assert_eq!(get(&*instance, "/").await.unwrap().0, http::StatusCode::OK);
    let usage = instance.usage();
    assert_eq!((usage.requests, usage.failures), (2, 1));

    let logs = instance.logs().recent;
    assert!(
        logs.iter()
            .any(|l| l.stream == Stream::Stderr && l.line.contains("trap requested")),
        "the app's panic message is in its log: {logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l.stream == Stream::Stderr
            && l.line.starts_with("[mycel]")
            && l.line.contains("trapped")),
        "the host notes the trap: {logs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_is_cut_off_at_the_time_limit() {
    let (driver, _cache) = driver();
    let mut spec = hello_spec("loop");
    spec.request_timeout = Duration::from_millis(300);
    let instance = start(&driver, spec).await;

    let started = Instant::now();
    let error = get(&*instance, "/loop").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, RuntimeError::Timeout { .. }), "{error:?}");
    assert_eq!(error.status_code(), http::StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "cut off after {took:?}"
    );
    eprintln!("timing: /loop with a 300 ms limit was cut off after {took:?}");

    assert_eq!(get(&*instance, "/").await.unwrap().0, http::StatusCode::OK);
    assert_eq!(instance.usage().failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_beyond_the_limit_fails_only_that_request() {
    let (driver, _cache) = driver();
    let mut spec = hello_spec("memory");
    spec.memory_mb = 16;
    let instance = start(&driver, spec).await;

    let (status, body) = get(&*instance, "/alloc/4").await.unwrap();
    assert_eq!(
        (status, body.starts_with("allocated 4 MiB")),
        (http::StatusCode::OK, true)
    );

    let error = get(&*instance, "/alloc/32").await.unwrap_err();
    eprintln!("error: {error}");
    match &error {
        RuntimeError::Trap { reason, .. } => {
            assert!(reason.contains("memory limit of 16 MiB"), "{reason}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }

    assert_eq!(get(&*instance, "/").await.unwrap().0, http::StatusCode::OK);
    eventually("every request's memory is released", || {
        instance.usage().memory_bytes == Some(0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_below_what_the_module_needs_fails_the_start() {
    let (driver, _cache) = driver();
    let mut spec = hello_spec("tiny");
    spec.memory_mb = 0;
    let error = driver.start(spec).await.err().expect("the start fails");
    match &error {
        RuntimeError::Instantiate { reason, .. } => {
            assert!(reason.contains("memory limit of 0 MiB"), "{reason}")
        }
        other => panic!("expected an instantiate error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_concurrency_are_refused_as_overloaded() {
    let (driver, _cache) = driver();
    let mut spec = hello_spec("busy");
    spec.max_concurrency = 1;
    spec.request_timeout = Duration::from_millis(500);
    let instance = start(&driver, spec).await;

    let looping = tokio::spawn(instance.handle(request("GET", "/loop", empty_body())));
    eventually("the loop runs", || instance.usage().in_flight == 1).await;

    let error = get(&*instance, "/").await.unwrap_err();
    assert!(
        matches!(error, RuntimeError::Overloaded { limit: 1, .. }),
        "{error:?}"
    );
    assert_eq!(error.status_code(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(error.is_retryable());

    let looped = looping.await.unwrap().expect_err("the loop times out");
    assert!(matches!(looped, RuntimeError::Timeout { .. }), "{looped:?}");
    assert_eq!(get(&*instance, "/").await.unwrap().0, http::StatusCode::OK);
    let usage = instance.usage();
    assert_eq!((usage.requests, usage.rejected, usage.failures), (2, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_refuses_requests_after_draining() {
    let (driver, _cache) = driver();
    let mut spec = hello_spec("stopping");
    spec.request_timeout = Duration::from_millis(400);
    let instance = start(&driver, spec).await;

    let looping = tokio::spawn(instance.handle(request("GET", "/loop", empty_body())));
    eventually("the loop runs", || instance.usage().in_flight == 1).await;
    let started = Instant::now();
    instance.stop().await;
    assert_eq!(
        instance.usage().in_flight,
        0,
        "stop waits for running requests"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(looping.await.unwrap().is_err());

    let error = get(&*instance, "/").await.unwrap_err();
    assert!(matches!(error, RuntimeError::Stopped { .. }), "{error:?}");
    instance.stop().await; // twice is harmless
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_cached_on_disk() {
    let (first, cache) = driver();
    let spec = hello_spec("cached");

    let started = Instant::now();
    let instance = start(&first, spec.clone()).await;
    let compiling = started.elapsed();
    assert_eq!(first.cache_stats().compiled, 1);
    let cached = first.cache_path(&module_hash_of(&spec)).unwrap();
    assert!(cached.is_file(), "{} exists", cached.display());
    assert_eq!(cached.extension().and_then(|e| e.to_str()), Some("cwasm"));
    instance.stop().await;
    drop(instance);

    // A new driver (as after a node restart) loads the artefact instead of compiling.
    let second = WasmDriver::new(cache.path().join("wasm")).unwrap();
    let started = Instant::now();
    let instance = start(&second, spec.clone()).await;
    let loading = started.elapsed();
    let stats = second.cache_stats();
    assert_eq!((stats.compiled, stats.loaded_from_disk), (0, 1));
    assert_eq!(get(&*instance, "/").await.unwrap().0, http::StatusCode::OK);

    // And a second instance of the same module shares the loaded component.
    let started = Instant::now();
    let _sibling = start(&second, hello_spec("cached-2")).await;
    let sharing = started.elapsed();
    assert_eq!(second.cache_stats().reused_in_memory, 1);

    eprintln!(
        "timing: first start (compile) {compiling:?}, start from the disk cache {loading:?}, \
         start sharing a loaded component {sharing:?}"
    );
    assert!(
        loading * 3 < compiling,
        "a cached start ({loading:?}) is much faster than compiling ({compiling:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_cache_file_is_recompiled() {
    let (first, cache) = driver();
    let spec = hello_spec("corrupt");
    drop(start(&first, spec.clone()).await);
    let cached = first.cache_path(&module_hash_of(&spec)).unwrap();

    // Flip bytes in the middle of the artefact, then truncate it: both are caught.
    let mut bytes = std::fs::read(&cached).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0xa5;
    }
    std::fs::write(&cached, &bytes).unwrap();
    let second = WasmDriver::new(cache.path().join("wasm")).unwrap();
    let instance = start(&second, spec.clone()).await;
    assert_eq!(get(&*instance, "/").await.unwrap().0, http::StatusCode::OK);
    let stats = second.cache_stats();
    assert_eq!(
        (stats.discarded, stats.compiled, stats.loaded_from_disk),
        (1, 1, 0)
    );
    drop(instance);

    std::fs::write(&cached, b"not an artefact").unwrap();
    let third = WasmDriver::new(cache.path().join("wasm")).unwrap();
    let instance = start(&third, spec.clone()).await;
    assert_eq!(get(&*instance, "/").await.unwrap().0, http::StatusCode::OK);
    assert_eq!(third.cache_stats().discarded, 1);

    // The recompiled artefact replaced the damaged one.
    let fourth = WasmDriver::new(cache.path().join("wasm")).unwrap();
    drop(start(&fourth, spec).await);
    assert_eq!(fourth.cache_stats().loaded_from_disk, 1);
}

fn module_file(dir: &TempDir, name: &str, bytes: &[u8]) -> (PathBuf, String) {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (path, format!("blake3:{}", blake3::hash(bytes).to_hex()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_that_are_not_components_are_refused_clearly() {
    let (driver, cache) = driver();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "text.wasm",
            b"#!/bin/sh\necho hi\n",
            "not a WebAssembly file",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0",
            "a core WebAssembly module, not a component",
        ),
        ("broken.wasm", b"\0asm\x0d\0\x01\0\xff\xff", "compiling"),
    ];
    for (name, bytes, expected) in cases {
        let (module, module_hash) = module_file(&cache, name, bytes);
        let error = driver
            .start(InstanceSpec {
                workload: Workload::Wasm {
                    module,
                    module_hash,
                },
                ..hello_spec(name)
            })
            .await
            .err()
            .expect("the start fails");
        assert!(matches!(error, RuntimeError::Compile { .. }), "{error:?}");
        assert!(error.to_string().contains(expected), "{name}: {error}");
    }

    // A module whose content does not match its hash is refused before it is compiled or cached.
    let (module, _) = module_file(&cache, "other.wasm", &std::fs::read(hello().0).unwrap());
    let wrong = format!("blake3:{}", "0".repeat(64));
    let error = driver
        .start(InstanceSpec {
            workload: Workload::Wasm {
                module,
                module_hash: wrong.clone(),
            },
            ..hello_spec("mismatch")
        })
        .await
        .err()
        .expect("the start fails");
    assert!(error.to_string().contains("hashes to blake3:"), "{error}");
    assert!(!driver.cache_path(&wrong).unwrap().exists());

    let error = driver
        .start(InstanceSpec {
            workload: Workload::Wasm {
                module: hello().0,
                module_hash: "sha256:abc".to_owned(),
            },
            ..hello_spec("bad-hash")
        })
        .await
        .err()
        .expect("the start fails");
    assert!(matches!(error, RuntimeError::InvalidSpec(_)), "{error:?}");
}

fn module_hash_of(spec: &InstanceSpec) -> String {
    match &spec.workload {
        Workload::Wasm { module_hash, .. } => module_hash.clone(),
        other => panic!("not a wasm workload: {other:?}"),
    }
}
