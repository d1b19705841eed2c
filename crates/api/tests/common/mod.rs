//! What the API's integration tests share: one node over a real single-node setup (a real mesh,
//! a real placement group with Raft and sled in a temporary directory, a real blob store, and the
//! API served on 127.0.0.1:0), and the checks of its answers.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use libp2p::{Multiaddr, identity::Keypair};
use mycel_agent::AgentConfig;
use mycel_api::ApiState;
use mycel_blobs::{BlobMetrics, BlobStore, StoreServer};
use mycel_mesh::{LocalNode, MeshConfig, MeshHandle};
use mycel_placement::GroupConfig;
use mycel_protocol::{
    Resources, Runtime,
    api::{ApiError, AppStatus, Apps, BlobStored, InstanceState},
};
use prometheus_client::registry::Registry;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// One node: everything a real `mycel up` wires, minus the CLI.
pub(crate) struct Node {
    pub(crate) api: String,
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) peer_id: String,
    pub(crate) http: Client,
    pub(crate) mesh: MeshHandle,
    pub(crate) shutdown: CancellationToken,
    /// Stops the placement group, the agent and discovery, which run on `tasks`.
    pub(crate) stop_parts: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) _dir: tempfile::TempDir,
}

impl Node {
    /// A node that founds a new mesh and its placement group.
    pub(crate) async fn start() -> Node {
        Self::start_with(None).await
    }

    /// A node that joins the mesh (and so the group) of the node at `bootstrap`, if given.
    pub(crate) async fn start_with(bootstrap: Option<&Multiaddr>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let metrics = BlobMetrics::register(&mut registry);
        let blobs = BlobStore::open(&dir.path().join("blobs"), 64 << 20, metrics).unwrap();

        let (inbox_tx, inbox) = tokio::sync::mpsc::channel(64);
        let keypair = Keypair::generate_ed25519();
        let mut config = MeshConfig::new(
            keypair.clone(),
            vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        );
        config.placement_inbox = Some(inbox_tx);
        config.bootstrap = bootstrap.into_iter().cloned().collect();
        config.blob_server = Some(Arc::new(StoreServer {
            store: blobs.clone(),
        }));
        // The scheduler places wasm apps on nodes that offer wasm and have room.
        let local = LocalNode {
            name: "solo".into(),
            runtimes: vec![Runtime::Wasm],
            resources: Resources {
                cpu_cores: 4,
                memory_mb: 4096,
                memory_free_mb: 4096,
                disk_free_mb: 10_000,
            },
            ..Default::default()
        };
        let mesh = mycel_mesh::start(config, local, &mut registry)
            .await
            .unwrap();
        let (stop_parts, tasks) = (CancellationToken::new(), TaskTracker::new());
        let group = GroupConfig {
            dir: dir.path().join("placement"),
            mesh: mesh.handle.clone(),
            inbox,
            found: bootstrap.is_none(),
            timing: Default::default(),
        };
        let placement = mycel_placement::start(group, stop_parts.clone(), &tasks)
            .await
            .unwrap();
        // A joining node knows the leader once the leader has added it to the group.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while placement.cluster().leader.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader in time: {:?}",
                placement.cluster()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        // As a private mesh's members derive it from its secret.
        let secrets_key = Some(Arc::new(mycel_protocol::secrets::SecretsKey::derive(
            &mycel_protocol::ticket::MeshSecret::from_bytes([9; 32]),
        )));
        // An agent without runtimes: instances placed here fail to start, and have no logs.
        let config = AgentConfig {
            placement: placement.clone(),
            mesh: mesh.handle.clone(),
            blobs: blobs.clone(),
            drivers: vec![],
            docker: None,
            scratch_dir: dir.path().join("tmp"),
            policy: Default::default(),
            timing: Default::default(),
            secrets_key: secrets_key.clone(),
            volumes_dir: dir.path().join("volumes"),
            gateway: None,
        };
        let agent = mycel_agent::start(config, stop_parts.clone(), tasks.clone());
        let state = ApiState {
            mesh: mesh.handle.clone(),
            blobs,
            placement: placement.clone(),
            registry: Arc::new(registry),
            agent: agent.clone(),
            discovery: mycel_discovery::start(
                mycel_discovery::DiscoveryConfig::new(mesh.handle.clone(), keypair.clone()),
                tokio::sync::watch::channel(Vec::new()).1,
                stop_parts.clone(),
                &tasks,
            ),
            signer: mycel_api::NodeSigner::new(keypair),
            secrets_key,
        };
        tokio::spawn(mycel_api::serve(listener, state, shutdown.clone()));
        Node {
            api,
            listen: mesh.listen_addrs,
            peer_id: mesh.handle.peer_id().to_string(),
            http: Client::new(),
            mesh: mesh.handle,
            shutdown,
            stop_parts,
            tasks,
            _dir: dir,
        }
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.stop_parts.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let _ = self.mesh.leave().await;
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub(crate) async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.post(path, body.to_string()).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Response {
        self.http.delete(self.url(path)).send().await.unwrap()
    }

    /// Uploads `bytes` as a blob and returns its hash.
    pub(crate) async fn upload(&self, bytes: &'static [u8]) -> String {
        let response = self.post("/v1/blobs", bytes).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let stored: BlobStored = response.json().await.unwrap();
        stored.hash.to_string()
    }

    pub(crate) async fn apps(&self) -> Apps {
        let response = self.get("/v1/apps").await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub(crate) async fn status(&self, name: &str) -> AppStatus {
        let response = self.get(&format!("/v1/apps/{name}")).await;
        assert_eq!(response.status(), StatusCode::OK, "GET /v1/apps/{name}");
        response.json().await.unwrap()
    }
}

pub(crate) fn manifest(name: &str, version: &str, replicas: u32, module: &str) -> Value {
    json!({"name": name, "version": version, "replicas": replicas, "wasm": {"module": module}})
}

/// Asserts a JSON error answer with this status and code.
pub(crate) async fn expect_error(response: Response, status: StatusCode, code: &str) -> ApiError {
    let got = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    let error: ApiError =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not a JSON error ({e}): {body}"));
    assert_eq!(error.code, code, "{error:?}");
    assert!(!error.error.is_empty());
    error
}

/// The app without its instances' states, which the agent changes as it tries to start them (the
/// agent here has no runtime, so they go from pending to starting to failed and back).
/// `status` without what the node's agent reports as it goes (this node has no runtime, so its
/// instances fail, and say why).
pub(crate) fn without_states(mut status: AppStatus) -> AppStatus {
    for instance in &mut status.instances {
        instance.state = InstanceState::Pending;
        instance.error = None;
    }
    status
}
