//! The placement group's API, as tests call it: cluster view, apps, deploys, blobs.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use mycel_protocol::api::{AppStatus, Apps, Cluster, DiscoveredApp, DiscoveredApps};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{NodeProcess, wait_until};

/// Clients of [`NodeProcess::closed_loop`], running.
pub struct ClosedLoop {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<u16>>>,
}

impl ClosedLoop {
    /// Stops the clients once their requests in flight end; answers every request's status
    /// (0: no answer).
    pub async fn stop(self) -> Result<Vec<u16>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut statuses = Vec::new();
        for client in self.clients {
            statuses.extend(client.await?);
        }
        Ok(statuses)
    }
}

/// A minimal wasm app manifest (API form) for `module`, a `blake3:` hash.
pub fn manifest(name: &str, version: &str, replicas: u32, module: &str) -> Value {
    json!({
        "name": name,
        "version": version,
        "replicas": replicas,
        "wasm": { "module": module },
        "resources": { "memory_mb": 16, "cpu": 0.01 },
    })
}

/// A container app manifest (API form) for an image record or archive `archive` (`blake3:`),
/// listening on 8080 with a health check, `GREETING=ahoy`.
pub fn container_manifest(name: &str, archive: &str, replicas: u32) -> Value {
    json!({
        "name": name,
        "version": "1.0.0",
        "replicas": replicas,
        "container": { "archive": archive, "port": 8080 },
        "env": { "GREETING": "ahoy" },
        "resources": { "memory_mb": 32, "cpu": 0.25 },
        "health": { "path": "/healthz" },
    })
}

impl NodeProcess {
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.api());
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url} on {}", self.name()))?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            bail!("GET {path} on {}: {status} {body}", self.name());
        }
        serde_json::from_str(&body).with_context(|| format!("decoding {path}: {body}"))
    }

    /// Waits (at most 90 s) until exactly `replicas` instances of `app` run, as this node sees it.
    pub async fn wait_running(&self, app: &str, replicas: usize) -> Result<()> {
        wait_until(
            &format!("{replicas} running instances of {app}"),
            Duration::from_secs(90),
            Duration::from_millis(200),
            async || {
                let status = self.app(app).await?;
                let up = status
                    .instances
                    .iter()
                    .filter(|i| i.state == mycel_protocol::api::InstanceState::Running)
                    .count();
                ensure!(up == replicas, "{status:?}");
                Ok(true)
            },
        )
        .await
    }

    /// `GET /v1/cluster`
    pub async fn cluster(&self) -> Result<Cluster> {
        self.get_json("/v1/cluster").await
    }

    /// `GET /v1/apps`
    pub async fn apps(&self) -> Result<Apps> {
        self.get_json("/v1/apps").await
    }

    /// `GET /v1/apps/{name}`
    pub async fn app(&self, name: &str) -> Result<AppStatus> {
        self.get_json(&format!("/v1/apps/{name}")).await
    }

    /// `GET /v1/discover/apps`: the apps found through DHT discovery.
    pub async fn discovered_apps(&self) -> Result<DiscoveredApps> {
        self.get_json("/v1/discover/apps").await
    }

    /// `GET /v1/discover/apps/{name}`: `None` when the node answers 404.
    pub async fn discovered_app(&self, name: &str) -> Result<Option<DiscoveredApp>> {
        let path = format!("/v1/discover/apps/{name}");
        let (status, body) = self
            .send_json(reqwest::Method::GET, &path, &Value::Null)
            .await?;
        match status {
            StatusCode::OK => Ok(Some(serde_json::from_value(body)?)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => bail!("GET {path} on {}: {status} {body}", self.name()),
        }
    }

    /// Sends `body` as JSON with `method` to `path`; returns the status and the JSON answer
    /// (`null` when the answer is not JSON).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.api());
        let response = self
            .http
            .request(method, &url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("{path} on {}", self.name()))?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `POST /v1/apps`
    pub async fn deploy(&self, manifest: &Value) -> Result<(StatusCode, Value)> {
        self.send_json(reqwest::Method::POST, "/v1/apps", manifest)
            .await
    }

    /// A client of this node's gateway for `app` (`Host: <app>.localhost`), and the URL of
    /// `/` through it.
    pub fn gateway_client(
        &self,
        app: &str,
        timeout: Duration,
    ) -> Result<(reqwest::Client, String)> {
        let gateway: std::net::SocketAddr = self
            .gateway()
            .trim_start_matches("http://")
            .parse()
            .context("the gateway address")?;
        let host = format!("{app}.localhost");
        let client = reqwest::Client::builder()
            .no_proxy()
            .resolve(&host, gateway)
            .timeout(timeout)
            .build()?;
        Ok((client, format!("http://{host}:{}/", gateway.port())))
    }

    /// Closed-loop load: `clients` tasks, each sending `GET /` for `app` through this node's
    /// gateway as soon as its last answer came (20 s limit each), until [`ClosedLoop::stop`].
    pub fn closed_loop(&self, app: &str, clients: usize) -> Result<ClosedLoop> {
        let (client, url) = self.gateway_client(app, Duration::from_secs(20))?;
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        statuses.push(match client.get(&url).send().await {
                            Ok(r) => r.status().as_u16(),
                            Err(_) => 0,
                        });
                    }
                    statuses
                })
            })
            .collect();
        Ok(ClosedLoop { stop, clients })
    }

    /// Open-loop load, as real traffic: `GET /` for `app` through this node's gateway every
    /// `every`, `count` times, each request on its own (10 s limit). Returns how many answered
    /// 200 within `within`, of how many, and the slowest answer.
    pub async fn open_loop(
        &self,
        app: &str,
        every: Duration,
        count: usize,
        within: Duration,
    ) -> Result<(usize, usize, Duration)> {
        let (client, url) = self.gateway_client(app, Duration::from_secs(10))?;
        let mut tick = tokio::time::interval(every);
        let mut requests = Vec::new();
        for _ in 0..count {
            tick.tick().await;
            let (client, url) = (client.clone(), url.clone());
            requests.push(tokio::spawn(async move {
                let sent = tokio::time::Instant::now();
                let ok = match client.get(&url).send().await {
                    Ok(r) => r.status() == StatusCode::OK && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                (ok, sent.elapsed())
            }));
        }
        let mut in_time = 0;
        let mut slowest = Duration::ZERO;
        for request in requests {
            let (ok, took) = request.await?;
            in_time += usize::from(ok && took <= within);
            slowest = slowest.max(took);
        }
        Ok((in_time, count, slowest))
    }

    /// `GET path` through this node's gateway with `Host: <app>.localhost` (10 s limit).
    pub async fn through_gateway(&self, app: &str, path: &str) -> Result<reqwest::Response> {
        let (client, root) = self.gateway_client(app, Duration::from_secs(10))?;
        let url = format!("{}{}", root.trim_end_matches('/'), path);
        Ok(client.get(url).send().await?)
    }

    /// `POST /v1/images`: pushes an image archive; returns the status and the JSON answer.
    pub async fn push_image(&self, archive: &std::path::Path) -> Result<(StatusCode, Value)> {
        let bytes = tokio::fs::read(archive)
            .await
            .with_context(|| format!("reading {}", archive.display()))?;
        self.push_image_bytes(bytes).await
    }

    /// `POST /v1/images` with `bytes` as the archive.
    pub async fn push_image_bytes(&self, bytes: Vec<u8>) -> Result<(StatusCode, Value)> {
        let url = format!("{}/v1/images", self.api());
        let response = self.http.post(&url).body(bytes).send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `GET /v1/images`
    pub async fn images(&self) -> Result<mycel_protocol::api::Images> {
        self.get_json("/v1/images").await
    }

    /// `POST /v1/blobs`: stores `bytes` on this node and returns their id.
    pub async fn push(&self, bytes: Vec<u8>) -> Result<String> {
        let url = format!("{}/v1/blobs", self.api());
        let response = self.http.post(&url).body(bytes).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != StatusCode::CREATED {
            bail!("pushing a blob to {}: {status} {body}", self.name());
        }
        body["hash"]
            .as_str()
            .map(str::to_string)
            .context("the answer has no hash")
    }
}

/// Deploys examples/hello as `name` with `replicas` replicas through `via` (the API, its
/// component uploaded first) and waits until every replica runs; answers the nodes they run on.
pub async fn deploy_hello_as(
    via: &NodeProcess,
    name: &str,
    replicas: usize,
) -> Result<Vec<String>> {
    let (wasm, _) = crate::hello_example()?;
    let module = via.push(std::fs::read(wasm)?).await?;
    let (status, body) = via
        .deploy(&manifest(name, "1.0.0", replicas as u32, &module))
        .await?;
    ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
    let mut nodes = Vec::new();
    wait_until(
        &format!("{replicas} running instances of {name}"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        async || {
            let app = via.app(name).await?;
            let running: Vec<String> = app
                .instances
                .iter()
                .filter(|i| i.state == mycel_protocol::api::InstanceState::Running)
                .map(|i| i.node.clone())
                .collect();
            ensure!(running.len() == replicas, "{app:?}");
            nodes = running;
            Ok(true)
        },
    )
    .await?;
    Ok(nodes)
}

/// Waits until every node in `nodes` names the same leader and the same `voters` voters, and
/// returns that view.
pub async fn agreed_group(
    nodes: &[&NodeProcess],
    voters: usize,
    timeout: Duration,
) -> Result<Cluster> {
    let mut agreed = None;
    wait_until(
        &format!("one leader and {voters} voters on every node"),
        timeout,
        Duration::from_millis(100),
        async || {
            let first = nodes[0].cluster().await?;
            let Some(leader) = &first.leader else {
                bail!("{} knows no leader", nodes[0].name());
            };
            ensure!(
                first.voters.len() == voters,
                "{} sees {} voters",
                nodes[0].name(),
                first.voters.len()
            );
            ensure!(first.voters.contains(leader), "the leader is not a voter");
            for node in &nodes[1..] {
                let view = node.cluster().await?;
                ensure!(
                    view.leader == first.leader && view.voters == first.voters,
                    "{} sees leader {:?} and voters {:?}, {} sees {:?} and {:?}",
                    node.name(),
                    view.leader,
                    view.voters,
                    nodes[0].name(),
                    first.leader,
                    first.voters
                );
            }
            agreed = Some(first);
            Ok(true)
        },
    )
    .await?;
    agreed.context("agreed")
}
