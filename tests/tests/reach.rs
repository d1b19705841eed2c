//! Running and reaching apps, end to end: the example wasi:http component deployed through one
//! node answers through every node's gateway, from instances on other nodes (over the mesh), and
//! keeps answering when nodes die, even without a quorum; and its log lines reach every node.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, stream::BoxStream};
use mycel_protocol::api::{InstanceState, LogEvent};
use mycel_tests::{
    Mesh, NodeProcess, apps::agreed_group, hello_example, mycel_cli, wait_until, within,
};
use reqwest::StatusCode;

/// Deploys the hello example through `node` with the CLI and waits until every replica runs.
async fn deploy_hello(node: &NodeProcess, replicas: u32) -> Result<()> {
    let (_, manifest) = hello_example()?;
    let out = mycel_cli([
        "deploy",
        "--node",
        node.api(),
        manifest.to_str().context("a UTF-8 path")?,
        "--wait",
        "--timeout",
        "60",
    ])
    .await?;
    ensure!(out.status.success(), "mycel deploy: {out:?}");
    if replicas != 2 {
        let out = mycel_cli([
            "scale",
            "--node",
            node.api(),
            "hello",
            &replicas.to_string(),
        ])
        .await?;
        ensure!(out.status.success(), "mycel scale: {out:?}");
    }
    running(node, replicas as usize, Duration::from_secs(60)).await
}

/// Waits until `node` sees `n` running instances of hello.
async fn running(node: &NodeProcess, n: usize, timeout: Duration) -> Result<()> {
    wait_until(
        &format!("{n} running instances of hello"),
        timeout,
        Duration::from_millis(200),
        async || {
            let app = node.app("hello").await?;
            let up = app
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .count();
            ensure!(up == n && app.instances.len() == n, "{app:?}");
            Ok(true)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_answers_through_every_gateway() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        deploy_hello(&mesh[1], 2).await?;
        let mut served_by = BTreeSet::new();
        for node in mesh.iter() {
            for _ in 0..4 {
                let response = node.through_gateway("hello", "/").await?;
                ensure!(response.status() == StatusCode::OK, "{response:?}");
                let by = response
                    .headers()
                    .get("x-mycel-node")
                    .context("x-mycel-node")?
                    .to_str()?
                    .to_string();
                ensure!(response.headers().contains_key("x-mycel-instance"));
                served_by.insert(by);
                let body = response.text().await?;
                ensure!(body == "hello from mycel: hi\n", "{body:?}");
            }
        }
        ensure!(
            served_by.len() == 2,
            "two replicas on two nodes served: {served_by:?}"
        );

        let env = mesh[0].through_gateway("hello", "/env/GREETING").await?;
        ensure!(env.text().await? == "hi\n", "the app sees its env");

        let unknown = mesh[0].through_gateway("nope", "/").await?;
        ensure!(unknown.status() == StatusCode::NOT_FOUND);
        let body: serde_json::Value = unknown.json().await?;
        ensure!(body["code"].is_string(), "{body}");
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_or_an_endless_loop_is_cut_off_and_the_next_request_succeeds() -> Result<()> {
    let config = tempfile::tempdir()?;
    let path = config.path().join("mycel.toml");
    std::fs::write(&path, "[runtime]\nrequest_timeout_ms = 1000\n")?;
    let node = NodeProcess::builder("solo")
        .arg("--config")
        .arg(path.to_str().context("a UTF-8 path")?)
        .start()
        .await?;
    let mesh = Mesh::from_nodes(vec![node]);
    let result = async {
        deploy_hello(&mesh[0], 1).await?;
        let trap = mesh[0].through_gateway("hello", "/trap").await?;
        ensure!(
            trap.status() == StatusCode::INTERNAL_SERVER_ERROR,
            "{trap:?}"
        );
        let ok = mesh[0].through_gateway("hello", "/").await?;
        ensure!(ok.status() == StatusCode::OK, "after a trap: {ok:?}");

        let started = tokio::time::Instant::now();
        let endless = mesh[0].through_gateway("hello", "/loop").await?;
        ensure!(endless.status().is_server_error(), "{endless:?}");
        ensure!(
            started.elapsed() < Duration::from_secs(5),
            "cut off after {:?}",
            started.elapsed()
        );
        let ok = mesh[0].through_gateway("hello", "/").await?;
        ensure!(ok.status() == StatusCode::OK, "after a loop: {ok:?}");
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_keep_answering_when_nodes_die() -> Result<()> {
    let mut mesh = Mesh::star(3).await?;
    let result = async {
        // Three voters first: with the founder still the only voter, killing it would leave
        // no group to decide anything (as in any Raft group that lost its majority).
        agreed_group(&[&mesh[0], &mesh[1], &mesh[2]], 3, Duration::from_secs(30)).await?;
        deploy_hello(&mesh[0], 2).await?;
        // Kill a node that runs an instance; the instance comes back on another node.
        let app = mesh[0].app("hello").await?;
        let victim_id = app.instances[0].node.clone();
        let victim = (0..3)
            .find(|&i| mesh[i].peer_id() == victim_id)
            .context("the victim")?;
        mesh[victim].sigkill()?;
        let observer = (victim + 1) % 3;
        wait_until(
            "the killed node's instance to run elsewhere",
            Duration::from_secs(60),
            Duration::from_millis(250),
            async || {
                let app = mesh[observer].app("hello").await?;
                let up: Vec<_> = app
                    .instances
                    .iter()
                    .filter(|i| i.state == InstanceState::Running && i.node != victim_id)
                    .collect();
                Ok(up.len() == 2)
            },
        )
        .await?;
        let ok = mesh[observer].through_gateway("hello", "/").await?;
        ensure!(ok.status() == StatusCode::OK);

        // Now kill one more: no quorum is left, yet the survivor serves what runs on it.
        let other = (0..3)
            .find(|&i| i != victim && i != observer)
            .context("the third node")?;
        mesh[other].sigkill()?;
        for _ in 0..10 {
            let response = mesh[observer].through_gateway("hello", "/").await?;
            ensure!(
                response.status() == StatusCode::OK,
                "without a quorum the survivor answered {response:?}"
            );
        }
        Ok(())
    }
    .await;
    mesh.report(result)
}

/// The log events of a `GET /v1/apps/{name}/logs` answer, read as they arrive.
struct LogEvents {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl LogEvents {
    async fn open(node: &NodeProcess, app: &str, follow: bool) -> Result<Self> {
        let url = format!("{}/v1/apps/{app}/logs?follow={follow}", node.api());
        let response = reqwest::Client::new().get(url).send().await?;
        ensure!(response.status() == StatusCode::OK, "{response:?}");
        let content_type = response.headers().get("content-type");
        ensure!(
            content_type.is_some_and(|t| t == "text/event-stream"),
            "{response:?}"
        );
        Ok(Self {
            body: response
                .bytes_stream()
                .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
                .boxed(),
            buffer: String::new(),
        })
    }

    /// The next event; `None` when the stream ended.
    async fn next(&mut self) -> Result<Option<LogEvent>> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive
                }
                return Ok(Some(serde_json::from_str(&data.join("\n"))?));
            }
            match self.body.next().await {
                Some(chunk) => self.buffer.push_str(std::str::from_utf8(&chunk?)?),
                None => return Ok(None),
            }
        }
    }

    /// Reads events until one satisfies `wanted`, within `timeout`.
    async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut wanted: impl FnMut(&LogEvent) -> bool,
    ) -> Result<()> {
        within(what, timeout, async {
            while let Some(event) = self.next().await? {
                if wanted(&event) {
                    return Ok(());
                }
            }
            bail!("the log stream ended before {what}")
        })
        .await?
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_of_every_instance_reach_any_node() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        deploy_hello(&mesh[0], 2).await?;
        let app = mesh[0].app("hello").await?;
        let placed: BTreeSet<(String, String)> = app
            .instances
            .iter()
            .map(|i| (i.id.clone(), i.node.clone()))
            .collect();
        ensure!(placed.len() == 2, "{app:?}");
        // Ask a node that runs no instance: every line crosses the mesh.
        let asker = mesh
            .iter()
            .find(|n| app.instances.iter().all(|i| i.node != n.peer_id()))
            .unwrap_or(&mesh[0]);

        // Requests until each instance has served (and so logged) one.
        let mut served = BTreeSet::new();
        for n in 0..30 {
            let response = asker
                .through_gateway("hello", &format!("/env/MARK{n}"))
                .await?;
            let instance = response
                .headers()
                .get("x-mycel-instance")
                .context("x-mycel-instance")?
                .to_str()?
                .to_string();
            // Read to the end: a client that hangs up mid-answer makes a wstd app panic on its
            // body write, which logs to stderr (an app's business, not this test's).
            response.bytes().await?;
            served.insert(instance);
            if served.len() == 2 {
                break;
            }
        }
        ensure!(served.len() == 2, "both instances served: {served:?}");

        let mut events = LogEvents::open(asker, "hello", false).await?;
        let mut logged = BTreeSet::new();
        within("the recent lines", Duration::from_secs(15), async {
            while let Some(event) = events.next().await? {
                ensure!(event.stream == "stdout", "{event:?}");
                if event.line.starts_with("GET /env/MARK") {
                    logged.insert((event.instance, event.node));
                }
            }
            Ok(())
        })
        .await??;
        ensure!(
            logged == placed,
            "lines from {logged:?}, instances {placed:?}"
        );

        // Following: the recent lines first, then a line written after the stream opened.
        let mut events = LogEvents::open(asker, "hello", true).await?;
        let mut recent = BTreeSet::new();
        events
            .until(
                "recent lines of both instances",
                Duration::from_secs(15),
                |e| {
                    if e.line.starts_with("GET /env/MARK") {
                        recent.insert(e.instance.clone());
                    }
                    recent.len() == 2
                },
            )
            .await?;
        let response = asker.through_gateway("hello", "/env/FOLLOWED").await?;
        ensure!(response.status() == StatusCode::NOT_FOUND, "{response:?}");
        response.bytes().await?;
        events
            .until("the followed line", Duration::from_secs(15), |e| {
                e.line == "GET /env/FOLLOWED"
            })
            .await?;

        // An instance that starts while the stream is open is followed too.
        let out = mycel_cli(["scale", "--node", asker.api(), "hello", "3"]).await?;
        ensure!(out.status.success(), "mycel scale: {out:?}");
        running(asker, 3, Duration::from_secs(60)).await?;
        let app = asker.app("hello").await?;
        let newcomer = app
            .instances
            .iter()
            .find(|i| !placed.iter().any(|(id, _)| *id == i.id))
            .context("the new instance")?
            .id
            .clone();
        let mut served_newcomer = false;
        for n in 0..30 {
            let response = asker
                .through_gateway("hello", &format!("/env/LATE{n}"))
                .await?;
            let by_newcomer = response
                .headers()
                .get("x-mycel-instance")
                .is_some_and(|i| i == newcomer.as_str());
            response.bytes().await?;
            if by_newcomer {
                served_newcomer = true;
                break;
            }
        }
        ensure!(served_newcomer, "{newcomer} served no request");
        events
            .until("a line of the new instance", Duration::from_secs(15), |e| {
                e.instance == newcomer && e.line.starts_with("GET /env/LATE")
            })
            .await?;
        drop(events);

        let out = mycel_cli(["logs", "--node", asker.api(), "hello"]).await?;
        ensure!(out.status.success(), "mycel logs: {out:?}");
        let printed = String::from_utf8(out.stdout)?;
        for (instance, _) in &placed {
            let line = format!("{instance} stdout: GET /env/FOLLOWED");
            let mark = format!("{instance} stdout: GET /env/MARK");
            ensure!(
                printed.contains(&line) || printed.contains(&mark),
                "mycel logs printed no line of {instance}: {printed}"
            );
        }
        Ok(())
    }
    .await;
    mesh.report(result)
}
