//! The Docker driver against the real engine and examples/hello-container, whose image the first
//! test builds (build.sh) and each test loads from its archive. Without a Docker engine these
//! tests fail, saying so: they never pass by skipping.
//!
//! Each test is its own node (a unique node id), so tests running side by side on one engine
//! never reap each other's containers; a [`Node`] removes what is left of its own when dropped.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
use bytes::Bytes;
use common::{get, hello_container_archive, request};
use futures::SinkExt;
use http_body_util::{BodyExt, StreamBody};
use mycel_runtime::{
    BoxError, ContainerRelax, ContainerWorkload, DockerConfig, DockerDriver, Driver, Instance,
    InstanceSpec, RuntimeError, Stream, Workload,
};

const IMAGE: &str = "mycel-hello-container:1.0";

/// A node of its own on the shared engine, with the image loaded.
struct Node {
    id: String,
    driver: DockerDriver,
    /// For checking what the driver did, behind its back.
    docker: bollard::Docker,
}

impl Node {
    async fn new(test: &str) -> Node {
        let id = format!("test-{test}-{}", std::process::id());
        let driver = DockerDriver::connect(DockerConfig::new(&id))
            .await
            .unwrap_or_else(|e| {
                panic!("these tests need a running Docker engine (`docker info` must work): {e}")
            });
        let loaded = driver
            .load_archive(&hello_container_archive())
            .await
            .expect("the example's archive loads");
        assert!(loaded.iter().any(|l| l == IMAGE), "loaded {loaded:?}");
        let docker = bollard::Docker::connect_with_local_defaults()
            .expect("a second engine client")
            .negotiate_version()
            .await
            .expect("the engine's API version");
        Node { id, driver, docker }
    }

    async fn start(&self, spec: InstanceSpec) -> Arc<dyn Instance> {
        self.driver.start(spec).await.expect("the instance starts")
    }

    /// The ids of the containers labelled with this node's id, whatever their state.
    async fn containers(&self) -> Vec<String> {
        let filters =
            std::collections::HashMap::from([("label", vec![format!("mycel.node={}", self.id)])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .expect("the engine lists containers")
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }
}

impl Drop for Node {
    /// Removes this node's containers even when the test failed halfway (synchronously: the
    /// test's runtime may be gone).
    fn drop(&mut self) {
        let listed = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=mycel.node={}", self.id),
            ])
            .output();
        if let Ok(out) = listed {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn spec(id: &str) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.to_owned(),
        app: "hello-container".to_owned(),
        workload: Workload::Container(ContainerWorkload {
            image: IMAGE.to_owned(),
            port: 8080,
            command: vec![],
            relax: ContainerRelax::default(),
            tcp_ports: vec![],
        }),
        env: BTreeMap::new(),
        memory_mb: 32,
        cpu_millis: 250,
        request_timeout: Duration::from_secs(5),
        max_concurrency: 16,
        secrets_dir: None,
        volumes: Vec::new(),
        dependencies: None,
    }
}

/// Waits (bounded) until `condition` holds: conditions, not sleeps.
async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request body fed through a channel, so a test decides when each chunk goes out.
fn channel_body() -> (
    futures::channel::mpsc::Sender<Result<http_body::Frame<Bytes>, BoxError>>,
    mycel_runtime::Body,
) {
    let (sender, receiver) = futures::channel::mpsc::channel(1);
    (sender, StreamBody::new(receiver).boxed())
}

fn chunk(text: &'static str) -> Result<http_body::Frame<Bytes>, BoxError> {
    Ok(http_body::Frame::data(Bytes::from_static(text.as_bytes())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_its_env_and_logs_each_request() {
    let node = Node::new("env").await;
    let mut spec = spec("env-1");
    spec.env.insert("GREETING".to_owned(), "hola".to_owned());
    spec.env.insert("COLOUR".to_owned(), "teal".to_owned());
    let started = Instant::now();
    let instance = node.start(spec).await;
    let first = get(&*instance, "/").await.expect("an answer");
    eprintln!(
        "timing: start() to the first answer took {:?}",
        started.elapsed()
    );
    assert_eq!(instance.id(), "env-1");
    assert_eq!(
        first,
        (
            http::StatusCode::OK,
            "hello from a mycel container: hola\n".to_owned()
        )
    );
    assert_eq!(
        get(&*instance, "/env/COLOUR").await.unwrap(),
        (http::StatusCode::OK, "teal\n".to_owned())
    );
    assert_eq!(
        get(&*instance, "/env/PORT").await.unwrap(),
        (http::StatusCode::OK, "8080\n".to_owned())
    );
    let (status, _) = get(&*instance, "/env/NOT_SET").await.unwrap();
    assert_eq!(status, http::StatusCode::NOT_FOUND);

    let requests = || {
        instance
            .logs()
            .recent
            .into_iter()
            .filter(|l| l.stream == Stream::Stdout)
            .map(|l| l.line)
            // The start's readiness probe is a request too.
            .filter(|l| l != "OPTIONS *")
            .collect::<Vec<_>>()
    };
    eventually("the request lines are in the log", || async {
        requests().len() == 4
    })
    .await;
    assert_eq!(
        requests(),
        [
            "GET /",
            "GET /env/COLOUR",
            "GET /env/PORT",
            "GET /env/NOT_SET"
        ]
    );
    assert!(
        instance
            .logs()
            .recent
            .iter()
            .any(|l| l.stream == Stream::Stderr && l.line.starts_with("listening on")),
        "stderr is followed too: {:#?}",
        instance.logs().recent
    );
    let mut follow = instance.logs().follow;
    get(&*instance, "/healthz").await.unwrap();
    let followed = tokio::time::timeout(Duration::from_secs(10), follow.recv())
        .await
        .expect("a line within 10 s")
        .expect("a followed line");
    assert_eq!(followed.line, "GET /healthz");

    let usage = instance.usage();
    assert_eq!((usage.requests, usage.in_flight, usage.failures), (5, 0, 0));
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_hardened() {
    let node = Node::new("hardened").await;
    let instance = node.start(spec("hardened-1")).await;

    // From inside: not root, a read-only root filesystem, the manifest's memory limit.
    let (status, whoami) = get(&*instance, "/whoami").await.unwrap();
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(
        whoami,
        format!(
            "uid=65534 readonly_root=true memory_limit={}\n",
            32u64 << 20
        )
    );

    // From the engine: what cannot be seen from inside.
    let containers = node.containers().await;
    assert_eq!(containers.len(), 1);
    let inspect = node
        .docker
        .inspect_container(&containers[0], None::<InspectContainerOptions>)
        .await
        .expect("the container");
    let host = inspect.host_config.expect("a host config");
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_owned()])
    );
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.memory, Some(32 << 20));
    assert_eq!(host.memory_swap, Some(32 << 20), "no swap");
    assert_eq!(host.nano_cpus, Some(250_000_000));
    assert_eq!(host.pids_limit, Some(256));
    assert!(
        host.tmpfs
            .unwrap_or_default()
            .get("/tmp")
            .is_some_and(|o| o.contains("noexec") && o.contains("nosuid"))
    );
    let published = inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|mut p| p.remove("8080/tcp").flatten())
        .unwrap_or_default();
    assert!(!published.is_empty());
    assert!(
        published
            .iter()
            .all(|b| b.host_ip.as_deref() == Some("127.0.0.1")),
        "published on loopback only: {published:?}"
    );
    let labels = inspect
        .config
        .and_then(|c| c.labels)
        .expect("the container's labels");
    assert_eq!(labels.get("mycel.node"), Some(&node.id));
    assert_eq!(
        labels.get("mycel.instance").map(String::as_str),
        Some("hardened-1")
    );
    assert_eq!(
        labels.get("mycel.app").map(String::as_str),
        Some("hello-container")
    );
    assert_eq!(
        labels.get("mycel.managed").map(String::as_str),
        Some("true")
    );
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relaxed_container_can_write_its_root_and_the_default_cannot() {
    let node = Node::new("relaxed").await;
    let hardened = node.start(spec("hardened-1")).await;
    let mut relaxed = spec("relaxed-1");
    relaxed.workload = Workload::Container(ContainerWorkload {
        relax: ContainerRelax {
            writable_root: true,
            // `/` belongs to root: only root may create a file there, once it is writable.
            run_as_root: true,
            capabilities: vec!["NET_BIND_SERVICE".to_owned()],
            new_privileges: true,
        },
        ..match relaxed.workload {
            Workload::Container(workload) => workload,
            Workload::Wasm { .. } | Workload::Process(_) => unreachable!("spec() is a container"),
        }
    });
    let relaxed = node.start(relaxed).await;

    // From inside: `/whoami` creates (and removes) a file in `/`; it reports readonly_root=true
    // only when the mount refused it.
    let whoami = |instance: Arc<dyn Instance>| async move {
        let (status, text) = get(&*instance, "/whoami").await.unwrap();
        assert_eq!(status, http::StatusCode::OK);
        text
    };
    let text = whoami(hardened.clone()).await;
    assert!(text.starts_with("uid=65534 readonly_root=true "), "{text}");
    let text = whoami(relaxed.clone()).await;
    assert!(text.starts_with("uid=0 readonly_root=false "), "{text}");

    // From the engine: the relaxed container dropped exactly what it asked to.
    let filters = std::collections::HashMap::from([(
        "label",
        vec![
            format!("mycel.node={}", node.id),
            "mycel.instance=relaxed-1".to_owned(),
        ],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let listed = node.docker.list_containers(Some(options)).await.unwrap();
    let id = listed[0].id.clone().expect("the container's id");
    let inspect = node
        .docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .expect("the container");
    assert_eq!(inspect.config.and_then(|c| c.user).as_deref(), Some("0"));
    let host = inspect.host_config.expect("a host config");
    assert_eq!(host.readonly_rootfs, Some(false));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(host.cap_add, Some(vec!["NET_BIND_SERVICE".to_owned()]));
    assert!(
        host.security_opt.unwrap_or_default().is_empty(),
        "no no-new-privileges"
    );
    assert_eq!(host.memory, Some(32 << 20), "the limits stay");
    hardened.stop().await;
    relaxed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_streams_the_body_both_ways() {
    let node = Node::new("echo").await;
    let instance = node.start(spec("echo-1")).await;

    let (mut sender, body) = channel_body();
    sender.send(chunk("first ")).await.unwrap();
    let response = instance
        .handle(request("POST", "/echo", body))
        .await
        .expect("an answer");
    assert_eq!(response.status(), http::StatusCode::OK);
    let mut body = response.into_body();

    // The first chunk comes back while the request body is still open.
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first "));
    sender.send(chunk("second")).await.unwrap();
    drop(sender);
    let rest = body.collect().await.expect("the rest").to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second"));
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_for_the_answer_and_for_concurrency() {
    let node = Node::new("limits").await;
    let mut spec = spec("limits-1");
    spec.max_concurrency = 1;
    spec.request_timeout = Duration::from_millis(500);
    let instance = node.start(spec).await;

    // An echo whose request body never ends holds the one slot while its answer streams.
    let (mut sender, body) = channel_body();
    sender.send(chunk("held")).await.unwrap();
    let response = instance
        .handle(request("POST", "/echo", body))
        .await
        .expect("an answer");
    let overloaded = get(&*instance, "/").await.unwrap_err();
    assert!(
        matches!(overloaded, RuntimeError::Overloaded { limit: 1, .. }),
        "{overloaded:?}"
    );
    assert!(overloaded.is_retryable());

    // The deadline covers the body: the answer is cut off, and the slot freed.
    let started = Instant::now();
    let error = response
        .into_body()
        .collect()
        .await
        .expect_err("the answer is cut off");
    let took = started.elapsed();
    assert!(
        error.to_string().contains("did not answer within"),
        "{error}"
    );
    assert!(took < Duration::from_secs(2), "cut off after {took:?}");
    assert_eq!(get(&*instance, "/").await.unwrap().0, http::StatusCode::OK);
    let usage = instance.usage();
    assert_eq!((usage.requests, usage.failures, usage.rejected), (2, 1, 1));
    drop(sender);
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_removes_the_container_and_refuses_requests() {
    let node = Node::new("stop").await;
    let instance = node.start(spec("stop-1")).await;
    assert_eq!(node.containers().await.len(), 1);

    let started = Instant::now();
    instance.stop().await;
    eprintln!("timing: stop() took {:?}", started.elapsed());
    assert_eq!(node.containers().await, Vec::<String>::new());
    let error = get(&*instance, "/").await.unwrap_err();
    assert!(matches!(error, RuntimeError::Stopped { .. }), "{error:?}");
    // Twice is harmless.
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_behind_the_drivers_back_is_unreachable() {
    let node = Node::new("killed").await;
    let instance = node.start(spec("killed-1")).await;
    let container = node.containers().await.remove(0);
    node.docker
        .kill_container(&container, None)
        .await
        .expect("the engine kills it");

    let error = get(&*instance, "/").await.unwrap_err();
    assert!(
        matches!(error, RuntimeError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(error.status_code(), http::StatusCode::BAD_GATEWAY);
    instance.stop().await;
    assert_eq!(node.containers().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reaped_and_the_kept_stay() {
    let node = Node::new("orphans").await;
    let neighbour = Node::new("orphans-neighbour").await;
    let kept = node.start(spec("kept")).await;
    let _orphan = node.start(spec("orphan")).await;
    let other = neighbour.start(spec("orphan")).await;
    assert_eq!(node.containers().await.len(), 2);

    let keep = BTreeSet::from(["kept".to_owned()]);
    let removed = Driver::remove_orphans(&node.driver, keep)
        .await
        .expect("reaping");
    assert_eq!(removed, 1);
    assert_eq!(node.containers().await.len(), 1);
    assert_eq!(get(&*kept, "/").await.unwrap().0, http::StatusCode::OK);
    // Another node's container of the same instance id is not this node's to reap.
    assert_eq!(get(&*other, "/").await.unwrap().0, http::StatusCode::OK);

    assert_eq!(node.driver.remove_all().await.expect("leaving"), 1);
    assert_eq!(node.containers().await, Vec::<String>::new());
    assert_eq!(neighbour.containers().await.len(), 1);
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_at_once_fails_the_start_clearly() {
    let node = Node::new("exits").await;
    let mut spec = spec("exits-1");
    if let Workload::Container(container) = &mut spec.workload {
        container.command = vec!["/nonexistent".to_owned()];
    }
    let error = match node.driver.start(spec).await {
        Ok(_) => panic!("a container without its program started"),
        Err(e) => e,
    };
    let text = error.to_string();
    eprintln!("error: {text}");
    assert!(
        matches!(error, RuntimeError::Instantiate { .. }),
        "{error:?}"
    );
    assert!(text.contains("exited with code 127"), "{text}");
    assert!(
        text.contains("/nonexistent"),
        "its last output is quoted: {text}"
    );
    assert_eq!(node.containers().await, Vec::<String>::new(), "removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_driver_cannot_run_is_refused() {
    let node = Node::new("refused").await;
    let mut wasm = spec("wasm-1");
    wasm.workload = Workload::Wasm {
        module: "hello.wasm".into(),
        module_hash: format!("blake3:{}", "a1".repeat(32)),
    };
    let error = node.driver.start(wasm).await.err().expect("refused");
    assert!(matches!(error, RuntimeError::InvalidSpec(_)), "{error:?}");

    let mut missing = spec("missing-1");
    missing.workload = Workload::Container(ContainerWorkload {
        image: "mycel-no-such-image:0".to_owned(),
        port: 8080,
        command: vec![],
        relax: ContainerRelax::default(),
        tcp_ports: vec![],
    });
    let error = node.driver.start(missing).await.err().expect("refused");
    assert!(
        error.to_string().contains("load its archive first"),
        "{error}"
    );
    assert_eq!(node.containers().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_images_are_listed_with_their_layers() {
    let node = Node::new("images").await;
    assert!(node.driver.has_image(IMAGE).await.expect("a lookup"));
    assert!(
        !node
            .driver
            .has_image("mycel-no-such-image:0")
            .await
            .expect("a lookup")
    );
    let images = node.driver.image_diff_ids().await.expect("the images");
    let hello = images
        .iter()
        .find(|i| i.tags.iter().any(|t| t == IMAGE))
        .expect("the example's image is listed");
    assert!(hello.id.starts_with("sha256:"), "{hello:?}");
    assert_eq!(hello.diff_ids.len(), 1, "one COPY, one layer: {hello:?}");
    assert!(hello.diff_ids[0].starts_with("sha256:"));
    assert!(node.driver.has_image(&hello.id).await.expect("a lookup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_container_of_the_same_instance_is_replaced() {
    let node = Node::new("leftover").await;
    // A start whose instance is dropped unstopped leaves its container, as a crash would.
    let first = node.start(spec("same")).await;
    drop(first);
    let before = node.containers().await;
    assert_eq!(before.len(), 1);

    let second = node.start(spec("same")).await;
    let after = node.containers().await;
    assert_eq!(after.len(), 1);
    assert_ne!(before, after, "a new container replaced the leftover");
    assert_eq!(
        get(&*second, "/").await.unwrap().1,
        "hello from a mycel container: hi\n"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_dies_says_how() {
    let node = Node::new("dies").await;
    let instance = node.start(spec("dies-1")).await;
    assert_eq!(instance.ended(), None, "it runs");
    let containers = node.containers().await;
    assert_eq!(containers.len(), 1);
    // Killed behind the driver's back, as a crash or the OOM killer would.
    node.docker
        .kill_container(
            &containers[0],
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("the engine kills it");
    eventually("its end is noticed", || async {
        instance.ended().is_some()
    })
    .await;
    let how = instance.ended().unwrap();
    assert!(how.contains("exited with code 137"), "{how}");
    instance.stop().await;
}
