//! The gateway over real meshes and a real placement group in one process: requests reach
//! instances on other nodes over mesh streams, round robin spreads them, an instance that never
//! passed its health check gets no request from any gateway, clients' addresses reach the app,
//! bodies stream both ways, the contract's error answers hold, and the metrics count it all.
//!
//! Instances are a fixture at the `LocalInstances` seam (a hyper `service_fn` that says who it is
//! and echoes what it got); the wasm runtime behind that seam is tested end to end elsewhere.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::{Service, service_fn};
use mycel_gateway::{Body, BoxError, GatewayConfig, GatewayMetrics, LocalInstances};
use mycel_mesh::{LocalNode, MeshConfig, MeshHandle};
use mycel_placement::{GroupConfig, PlacementHandle};
use mycel_protocol::{
    Keypair, Resources, Runtime,
    api::InstanceState,
    app::Manifest,
    ownership::{AppAction, SignedRequest},
    placement::{WriteError, WriteRequest},
};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The instances that "run" on one node: id → passes its health check.
#[derive(Default)]
struct Fixture {
    instances: Mutex<HashMap<String, bool>>,
}

impl Fixture {
    fn run(&self, id: &str, healthy: bool) {
        self.instances
            .lock()
            .expect("fixture lock")
            .insert(id.to_string(), healthy);
    }
}

impl Fixture {
    fn stop(&self, id: &str) {
        self.instances.lock().expect("fixture lock").remove(id);
    }
}

impl LocalInstances for Fixture {
    fn serve(
        &self,
        id: &str,
        request: Request<Body>,
    ) -> Option<BoxFuture<'static, Result<Response<Body>, BoxError>>> {
        if !self
            .instances
            .lock()
            .expect("fixture lock")
            .contains_key(id)
        {
            return None;
        }
        let id = id.to_string();
        let app = service_fn(move |request: Request<Body>| app(id.clone(), request));
        Some(Box::pin(app.call(request)))
    }

    fn is_healthy(&self, id: &str) -> bool {
        self.instances.lock().expect("fixture lock").get(id) == Some(&true)
    }
}

/// The app: `POST /echo` streams the request body back; anything else answers who served it
/// and the headers it got, one per line.
async fn app(id: String, request: Request<Body>) -> Result<Response<Body>, BoxError> {
    if request.uri().path() == "/echo" {
        return Ok(Response::new(request.into_body()));
    }
    let mut text = format!("served by {id}\n");
    for (name, value) in request.headers() {
        text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
    }
    Ok(Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    ))
}

struct Node {
    mesh: MeshHandle,
    listen: String,
    group: PlacementHandle,
    gateway: SocketAddr,
    local: Arc<Fixture>,
    /// Stops this node's gateway.
    stop_gateway: CancellationToken,
    /// Holds the gateway's metrics.
    registry: Registry,
    _task: tokio::task::JoinHandle<()>,
}

impl Node {
    async fn start(dir: &std::path::Path, bootstrap: Option<&str>) -> Result<Node> {
        let (inbox, requests) = tokio::sync::mpsc::channel(256);
        let mut config = MeshConfig::new(
            Keypair::generate_ed25519(),
            vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        );
        config.placement_inbox = Some(inbox);
        config.bootstrap = bootstrap
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        let local = LocalNode {
            name: "n".into(),
            runtimes: vec![Runtime::Wasm],
            resources: Resources {
                cpu_cores: 4,
                memory_mb: 4096,
                memory_free_mb: 4096,
                disk_free_mb: 4096,
            },
            ..Default::default()
        };
        let mesh = mycel_mesh::start(config, local, &mut Registry::default()).await?;
        let group = GroupConfig {
            dir: dir.to_path_buf(),
            mesh: mesh.handle.clone(),
            inbox: requests,
            found: bootstrap.is_none(),
            timing: Default::default(),
        };
        // The group runs until the test ends.
        let group =
            mycel_placement::start(group, CancellationToken::new(), &TaskTracker::new()).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let gateway = listener.local_addr()?;
        let fixture = Arc::new(Fixture::default());
        let stop_gateway = CancellationToken::new();
        let config = GatewayConfig {
            domain: "localhost".into(),
            mesh: mesh.handle.clone(),
            placement: group.clone(),
            local: fixture.clone(),
        };
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        tokio::spawn(mycel_gateway::serve_with(
            listener,
            config,
            metrics,
            stop_gateway.clone(),
        ));
        Ok(Node {
            listen: mesh.listen_addrs[0].to_string(),
            mesh: mesh.handle,
            group,
            gateway,
            local: fixture,
            stop_gateway,
            registry,
            _task: mesh.task,
        })
    }

    fn peer(&self) -> String {
        self.mesh.peer_id().to_string()
    }

    /// The lines of this node's metrics text that start with `prefix`.
    fn metrics(&self, prefix: &str) -> Vec<String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encodes");
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }
}

/// Two nodes: `a` founds the mesh and the group, `b` joins as a learner.
struct Pair {
    a: Node,
    b: Node,
    _dirs: [tempfile::TempDir; 2],
}

impl Pair {
    async fn start() -> Result<Pair> {
        let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
        let a = Node::start(dirs[0].path(), None).await?;
        let b = Node::start(dirs[1].path(), Some(&a.listen)).await?;
        wait_for("a leader and b as a learner", || {
            let cluster = a.group.cluster();
            cluster.leader.is_some() && cluster.learners.contains(&b.peer())
        })
        .await?;
        Ok(Pair { a, b, _dirs: dirs })
    }

    /// Deploys `name` with one instance on each node, balanced round robin, and waits until
    /// both replicas hold it; returns (the instance on a, the instance on b).
    async fn deploy(&self, name: &str) -> Result<(String, String)> {
        let toml = format!(
            "name = \"{name}\"\nversion = \"1\"\nreplicas = 2\n[wasm]\nmodule = \"blake3:{}\"\n[resources]\nmemory_mb = 1\n[balance]\nstrategy = \"round_robin\"\n",
            "c".repeat(64)
        );
        let manifest = Manifest::from_toml(&toml)?;
        // Signed by a key of its own: each app has another name, and so its own owner.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let action = AppAction::deploy(&manifest);
        let signed = SignedRequest::sign(&Keypair::generate_ed25519(), now_ms, action)?;
        write(
            &self.a.group,
            WriteRequest::Deploy {
                manifest: Box::new(manifest),
                by: "test".into(),
                signed: Box::new(signed),
            },
        )
        .await?;
        wait_for("both replicas to hold the app", || {
            [&self.a, &self.b]
                .iter()
                .all(|n| n.group.replica().state.apps.contains_key(name))
        })
        .await?;
        let state = self.a.group.replica().state.clone();
        let on = |node: &Node| -> Result<String> {
            state
                .instances_of(name)
                .find(|i| i.node == node.peer())
                .map(|i| i.id.clone())
                .with_context(|| format!("no instance of {name} on a node: {state:?}"))
        };
        Ok((on(&self.a)?, on(&self.b)?))
    }

    /// `node` reports `instance` running, and it starts answering there; waits until both
    /// replicas show it.
    async fn run(&self, node: &Node, instance: &str) -> Result<()> {
        self.run_checked(node, instance, true).await
    }

    /// As [`Pair::run`], the instance passing its health check or not.
    async fn run_checked(&self, node: &Node, instance: &str, healthy: bool) -> Result<()> {
        node.local.run(instance, healthy);
        write(
            &node.group,
            WriteRequest::Report {
                node: node.peer(),
                states: vec![(instance.to_string(), InstanceState::Running)],
                errors: vec![],
            },
        )
        .await?;
        wait_for("both replicas to show the instance running", || {
            [&self.a, &self.b].iter().all(|n| {
                n.group
                    .replica()
                    .state
                    .instances
                    .get(instance)
                    .is_some_and(|i| i.state == InstanceState::Running)
            })
        })
        .await
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn write(group: &PlacementHandle, request: WriteRequest) -> Result<()> {
    // The first write may race the founder's own election.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match group.write(request.clone()).await {
            Ok(_) => return Ok(()),
            Err(WriteError::NoQuorum(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).context("write"),
        }
    }
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()?)
}

/// GET `/` on `gateway` for `host`: (status, x-mycel-node, x-mycel-instance, body).
async fn get(
    client: &reqwest::Client,
    gateway: SocketAddr,
    host: &str,
) -> Result<(u16, String, String, String)> {
    let response = client
        .get(format!("http://{gateway}/"))
        .header("host", host)
        .send()
        .await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (node, instance) = (header("x-mycel-node"), header("x-mycel-instance"));
    Ok((
        response.status().as_u16(),
        node,
        instance,
        response.text().await?,
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_for_an_instance_on_another_node_crosses_the_mesh() -> Result<()> {
    let pair = Pair::start().await?;
    let (_, on_b) = pair.deploy("hello").await?;
    // Only b's instance runs: a's gateway must go over the mesh.
    pair.run(&pair.b, &on_b).await?;
    let client = client()?;

    let response = client
        .get(format!("http://{}/", pair.a.gateway))
        .header("host", "Hello.LocalHost:8080")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-mycel-instance", "hello-spoofed")
        .send()
        .await?;
    ensure!(response.status() == 200, "{}", response.status());
    ensure!(response.headers()["x-mycel-node"] == pair.b.peer().as_str());
    ensure!(response.headers()["x-mycel-instance"] == on_b.as_str());
    let body = response.text().await?;
    ensure!(body.starts_with(&format!("served by {on_b}\n")), "{body}");
    ensure!(
        body.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{body}"
    );
    ensure!(
        body.contains("forwarded: for=127.0.0.1;host=\"Hello.LocalHost:8080\";proto=http\n"),
        "{body}"
    );
    ensure!(body.contains("host: Hello.LocalHost:8080\n"), "{body}");
    // The app learns which instance and node it is from the gateways, never from the client.
    ensure!(
        body.contains(&format!("x-mycel-instance: {on_b}\n")),
        "{body}"
    );
    ensure!(
        body.contains(&format!("x-mycel-node: {}\n", pair.b.peer())),
        "{body}"
    );
    ensure!(!body.contains("spoofed"), "{body}");

    // Later requests reuse the pooled connection, and keep arriving.
    for _ in 0..5 {
        let (status, node, instance, _) = get(&client, pair.a.gateway, "hello.localhost").await?;
        ensure!(status == 200 && node == pair.b.peer() && instance == on_b);
    }

    // Several MiB stream through both gateways and back, intact.
    let sent: Vec<u8> = (0..8u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let chunks: Vec<Result<Bytes, std::io::Error>> = sent
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let response = client
        .post(format!("http://{}/echo", pair.a.gateway))
        .header("host", "hello.localhost")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await?;
    ensure!(response.status() == 200, "{}", response.status());
    let echoed = response.bytes().await?;
    ensure!(echoed.len() == sent.len(), "{} bytes back", echoed.len());
    ensure!(echoed == sent, "the echo differs");

    // Nothing is buffered whole: each chunk comes back before the next is sent.
    let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let response = client
        .post(format!("http://{}/echo", pair.a.gateway))
        .header("host", "hello.localhost")
        .body(reqwest::Body::wrap_stream(tokio_stream_from(chunks_rx)))
        .send();
    let first = Bytes::from(vec![1u8; 32 * 1024]);
    chunks_tx.send(Ok(first.clone())).await?;
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .context("the answer began before the request body ended")??;
    let mut echoed = response.bytes_stream();
    for round in 1..=4u8 {
        let mut got = 0;
        while got < first.len() {
            let chunk = tokio::time::timeout(Duration::from_secs(10), echoed.next())
                .await
                .with_context(|| format!("round {round}: no echo of a sent chunk"))?
                .context("the echo ended early")??;
            got += chunk.len();
        }
        ensure!(got == first.len(), "round {round}: {got} bytes");
        if round < 4 {
            chunks_tx.send(Ok(first.clone())).await?;
        }
    }
    drop(chunks_tx);
    ensure!(
        echoed.next().await.is_none(),
        "the echo ends with the request"
    );
    Ok(())
}

/// A stream of what `rx` receives.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_alternate_over_healthy_instances_and_skip_failed_ones() -> Result<()> {
    let pair = Pair::start().await?;
    let (on_a, on_b) = pair.deploy("web").await?;
    pair.run(&pair.a, &on_a).await?;
    pair.run(&pair.b, &on_b).await?;
    let client = client()?;

    // Round robin from either gateway: the instances take turns.
    for gateway in [pair.a.gateway, pair.b.gateway] {
        let mut served = Vec::new();
        for _ in 0..6 {
            let (status, node, instance, body) = get(&client, gateway, "web.localhost").await?;
            ensure!(status == 200, "{status}: {body}");
            ensure!(
                body.starts_with(&format!("served by {instance}\n")),
                "{body}"
            );
            let expected_node = if instance == on_a {
                pair.a.peer()
            } else {
                pair.b.peer()
            };
            ensure!(node == expected_node, "{instance} answered as {node}");
            served.push(instance);
        }
        ensure!(
            served.windows(2).all(|w| w[0] != w[1]),
            "not alternating: {served:?}"
        );
        let both: BTreeSet<&String> = served.iter().collect();
        ensure!(both.len() == 2, "{served:?}");
    }

    // a's own instance fails its health check: a's gateway sends everything to b's.
    pair.a.local.run(&on_a, false);
    for _ in 0..4 {
        let (status, node, instance, _) = get(&client, pair.a.gateway, "web.localhost").await?;
        ensure!(status == 200 && instance == on_b && node == pair.b.peer());
    }
    pair.a.local.run(&on_a, true);

    // b's instance is gone while both replicas still say it runs: b refuses before any app sees
    // the request, and a's gateway retries on its own instance.
    pair.b.local.stop(&on_b);
    for _ in 0..4 {
        let (status, _, instance, body) = get(&client, pair.a.gateway, "web.localhost").await?;
        ensure!(
            status == 200 && instance == on_a,
            "{status} from {instance}: {body}"
        );
    }
    pair.b.local.run(&on_b, true);

    // b's gateway stops: its instance still shows Running in a's replica, but a request through
    // a that tries it is retried on a's instance, and the breaker skips b's meanwhile.
    pair.b.stop_gateway.cancel();
    for _ in 0..6 {
        let (status, _, instance, body) = get(&client, pair.a.gateway, "web.localhost").await?;
        ensure!(status == 200, "{status}: {body}");
        ensure!(instance == on_a, "served by {instance}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_apps_and_apps_without_a_healthy_instance_get_json_errors() -> Result<()> {
    let pair = Pair::start().await?;
    let (on_a, _) = pair.deploy("idle").await?;
    // Deployed, placed, and reported by nobody: not Running anywhere.
    pair.a.local.run(&on_a, true);
    let client = client()?;

    let expect = |status: u16, code: &str, got: (u16, String, String, String)| -> Result<()> {
        let (got_status, node, _, body) = got;
        let json: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))?;
        if got_status != status || json["code"] != code || !json["error"].is_string() {
            bail!("expected {status} {code}, got {got_status} {body}");
        }
        ensure!(node.is_empty(), "an error answer names no node");
        Ok(())
    };
    for gateway in [pair.a.gateway, pair.b.gateway] {
        expect(
            404,
            "unknown_app",
            get(&client, gateway, "nope.localhost").await?,
        )?;
        expect(
            404,
            "unknown_app",
            get(&client, gateway, "localhost").await?,
        )?;
        expect(
            404,
            "unknown_app",
            get(&client, gateway, "idle.example.com").await?,
        )?;
        expect(
            503,
            "no_healthy_instance",
            get(&client, gateway, "idle.localhost").await?,
        )?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_never_passed_its_health_check_gets_no_request() -> Result<()> {
    let pair = Pair::start().await?;
    let (on_a, on_b) = pair.deploy("web").await?;
    pair.run(&pair.a, &on_a).await?;
    // b's instance answers requests, and both replicas say it runs, but it never passed its
    // health check: neither b's gateway nor a's may hand it a request.
    pair.run_checked(&pair.b, &on_b, false).await?;
    let client = client()?;
    for gateway in [pair.a.gateway, pair.b.gateway] {
        for _ in 0..10 {
            let (status, _, instance, body) = get(&client, gateway, "web.localhost").await?;
            ensure!(status == 200, "{status}: {body}");
            ensure!(instance == on_a, "served by {instance}");
        }
    }
    // Once it passes, it gets its turn (a's gateway skips it for a moment after b refused it).
    pair.b.local.run(&on_b, true);
    let mut sent = 10; // through a, above
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, instance, _) = get(&client, pair.a.gateway, "web.localhost").await?;
        sent += 1;
        ensure!(status == 200, "{status}");
        if instance == on_b {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "b's instance never got a request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The metrics counted every answer of a's gateway, and nothing is left in flight.
    wait_for("a's gateway to show nothing in flight", || {
        pair.a.metrics("mycel_gateway_inflight") == ["mycel_gateway_inflight{app=\"web\"} 0"]
    })
    .await?;
    let requests = pair.a.metrics("mycel_gateway_requests_total");
    ensure!(
        requests
            == [format!(
                "mycel_gateway_requests_total{{app=\"web\",code=\"200\"}} {sent}"
            )],
        "{requests:?}, {sent} sent"
    );
    let count = pair
        .a
        .metrics("mycel_gateway_request_duration_seconds_count");
    ensure!(
        count
            == [format!(
                "mycel_gateway_request_duration_seconds_count{{app=\"web\"}} {sent}"
            )],
        "{count:?}, {sent} sent"
    );
    // An unknown app gets no label of its own.
    get(&client, pair.a.gateway, "nope.localhost").await?;
    ensure!(pair.a.metrics("mycel_gateway_requests_total").len() == 1);
    Ok(())
}
