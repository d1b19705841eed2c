//! Autoscaling, end to end on real nodes: an idle app with `min = 0` drops to no instance and
//! the next request is held and answered, not refused; concurrent clients of a slow endpoint grow
//! an app up to its `max`, never beyond, with no request failing, and it returns to `min` when
//! they stop; bad `[scale]` values are refused and change nothing.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::future::join_all;
use mycel_protocol::api::{AppStatus, InstanceState};
use mycel_tests::{Mesh, NodeProcess, apps::manifest, hello_example, metrics, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn hello(node: &NodeProcess, name: &str, replicas: u32, scale: Value) -> Result<Value> {
    let (wasm, _) = hello_example()?;
    let module = node.push(std::fs::read(wasm)?).await?;
    let mut m = manifest(name, "1", replicas, &module);
    m["scale"] = scale;
    Ok(m)
}

fn running(app: &AppStatus) -> usize {
    app.instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count()
}

fn desired(app: &AppStatus) -> u32 {
    app.scale.as_ref().map_or(app.replicas, |s| s.desired)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_app_scales_to_zero_and_the_next_request_brings_it_back() -> Result<()> {
    let mesh = Mesh::star(2).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let scale = json!({"min": 0, "max": 2, "scale_to_zero_after_ms": 2000, "cooldown_ms": 0,
                           "window_ms": 6000});
        let m = hello(&mesh[0], "sleepy", 1, scale).await?;
        let (status, body) = mesh[0].deploy(&m).await?;
        ensure!(status == StatusCode::CREATED, "{status} {body}");
        // Idle: no instance, still deployed.
        let mut reason = String::new();
        wait_until(
            "sleepy to scale to zero",
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                let app = mesh[0].app("sleepy").await?;
                reason = app
                    .scale
                    .as_ref()
                    .map(|s| s.reason.clone())
                    .unwrap_or_default();
                Ok(desired(&app) == 0 && app.instances.is_empty())
            },
        )
        .await?;
        ensure!(reason.starts_with("no request for"), "{reason}");
        ensure!(
            mesh[1]
                .apps()
                .await?
                .apps
                .iter()
                .any(|a| a.name == "sleepy")
        );

        // A request through the other node's gateway is held while one instance starts.
        let response = mesh[1].through_gateway("sleepy", "/").await?;
        ensure!(response.status() == StatusCode::OK, "{}", response.status());
        let app = mesh[0].app("sleepy").await?;
        ensure!(desired(&app) == 1, "{app:?}");
        let metrics = mesh[1].metrics().await?;
        ensure!(
            metrics::value(&metrics, "mycel_cold_start_seconds_count", &[]) >= 1.0,
            "a cold start is counted"
        );
        ensure!(
            metrics::value(
                &metrics,
                "mycel_gateway_held_requests",
                &[("app", "sleepy")]
            ) == 0.0,
            "nothing held any more"
        );
        // Every node counts the decisions it sees.
        let decisions = metrics::value(
            &mesh[0].metrics().await?,
            "mycel_autoscale_decisions_total",
            &[("app", "sleepy")],
        );
        ensure!(
            decisions >= 2.0,
            "down and up again are counted: {decisions}"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn load_grows_an_app_to_its_max_and_its_end_returns_it_to_min() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let scale = json!({"min": 1, "max": 4, "target_concurrency": 2, "cooldown_ms": 1000,
                           "window_ms": 6000});
        let mut m = hello(&mesh[0], "busy", 1, scale).await?;
        m["env"] = json!({"DELAY_MS": "400"});
        let (status, body) = mesh[0].deploy(&m).await?;
        ensure!(status == StatusCode::CREATED, "{status} {body}");
        wait_until(
            "busy to run",
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || Ok(running(&mesh[0].app("busy").await?) == 1),
        )
        .await?;

        // 12 clients of a 400 ms endpoint: 12 in flight, 6 instances' worth at 2 each; max 4.
        let (client, url) = mesh[0].gateway_client("busy", Duration::from_secs(20))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..12)
            .map(|_| {
                let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let status = match client.get(&url).send().await {
                            Ok(r) => r.status().as_u16(),
                            Err(_) => 0,
                        };
                        answers.push(status);
                    }
                    answers
                })
            })
            .collect();
        let mut most = 0;
        let grown = wait_until(
            "busy to grow to its max",
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                let app = mesh[0].app("busy").await?;
                most = most.max(app.instances.len());
                ensure!(app.instances.len() <= 4, "beyond max: {app:?}");
                Ok(running(&app) == 4)
            },
        )
        .await;
        // A while at max: it stays there, never beyond.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let app = mesh[0].app("busy").await?;
            most = most.max(app.instances.len());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let answers: Vec<u16> = join_all(clients)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        grown?;
        ensure!(most <= 4, "at most max instances: saw {most}");
        let failed: Vec<u16> = answers.iter().copied().filter(|s| *s != 200).collect();
        ensure!(
            failed.is_empty(),
            "{} of {} requests failed while scaling: {failed:?}",
            failed.len(),
            answers.len()
        );
        let app = mesh[0].app("busy").await?;
        let scale = app.scale.context("a scale status")?;
        ensure!(
            scale.from.is_some_and(|from| from < 4) && scale.signals.in_flight > 0.0,
            "the decision says what it changed and on what load: {scale:?}"
        );
        let reason = scale.reason;
        ensure!(
            reason.contains("in flight per instance, target 2"),
            "{reason}"
        );

        // The load is gone: back to min once the window has forgotten it.
        wait_until(
            "busy back to min",
            Duration::from_secs(60),
            Duration::from_millis(200),
            async || Ok(mesh[0].app("busy").await?.instances.len() == 1),
        )
        .await?;
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_scale_values_are_refused_and_change_nothing() -> Result<()> {
    let node = NodeProcess::start("solo", None).await?;
    let result = async {
        for (replicas, scale) in [
            (1, json!({"min": 3, "max": 2})),
            (1, json!({"max": 1001})),
            (5, json!({"max": 4})),
            (1, json!({"target_concurrency": 0})),
            (1, json!({"target_cpu": 2.0})),
            (1, json!({"scale_to_zero_after_ms": 5})),
            (1, json!({"window_ms": 10})),
            (1, json!({"maximum": 3})),
        ] {
            let m = hello(&node, "strict", replicas, scale.clone()).await?;
            let (status, body) = node.deploy(&m).await?;
            ensure!(
                status == StatusCode::BAD_REQUEST && body["code"] == "invalid_manifest",
                "{scale}: {status} {body}"
            );
        }
        ensure!(node.apps().await?.apps.is_empty());
        Ok(())
    }
    .await;
    if result.is_err() {
        node.print_log_tail();
    }
    result
}

/// An app at zero is activated while the placement group elects a new leader: the held request
/// waits for the new leader, and is answered.
#[tokio::test(flavor = "multi_thread")]
async fn activation_outlives_a_leader_change() -> Result<()> {
    let mut mesh = Mesh::star_labelled(3).await?;
    let result = async {
        let everyone: Vec<&NodeProcess> = mesh.iter().collect();
        let group = mycel_tests::apps::agreed_group(&everyone, 3, Duration::from_secs(30)).await?;
        let leader_id = group.leader.clone().context("a leader")?;
        let leader = mesh.index_of(&leader_id)?;
        let via = (leader + 1) % mesh.len();
        let scale = json!({"min": 0, "max": 1, "scale_to_zero_after_ms": 1000, "cooldown_ms": 0,
                           "window_ms": 6000});
        let mut m = hello(&mesh[via], "phoenix", 1, scale).await?;
        // Never on the leader, so its death takes no instance with it.
        m["placement"] = json!({"required": [
            {"key": "host", "op": "not_in", "values": [mesh[leader].name()]}
        ]});
        let (status, body) = mesh[via].deploy(&m).await?;
        ensure!(status == StatusCode::CREATED, "{status} {body}");
        wait_until(
            "phoenix to scale to zero",
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                let app = mesh[via].app("phoenix").await?;
                Ok(desired(&app) == 0 && app.instances.is_empty())
            },
        )
        .await?;
        mesh[leader].sigkill()?;
        let response = mesh[via].through_gateway("phoenix", "/").await?;
        ensure!(response.status() == StatusCode::OK, "{}", response.status());
        let new_leader = mesh[via].cluster().await?.leader;
        ensure!(
            new_leader.as_ref().is_some_and(|l| *l != leader_id),
            "{new_leader:?}"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}

/// A CPU-bound load (requests that spin in the guest) grows an app whose target is its CPU.
#[tokio::test(flavor = "multi_thread")]
async fn spinning_requests_grow_a_target_cpu_app() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let scale = json!({"min": 1, "max": 3, "target_cpu": 0.5, "window_ms": 6000});
        let mut m = hello(&mesh[0], "hot", 1, scale).await?;
        m["resources"] = json!({"memory_mb": 32, "cpu": 0.5});
        let (status, body) = mesh[0].deploy(&m).await?;
        ensure!(status == StatusCode::CREATED, "{status} {body}");
        wait_until(
            "hot to run",
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || Ok(running(&mesh[0].app("hot").await?) == 1),
        )
        .await?;
        // Two requests that spin until the runtime cuts them off: a core or two busy, against a
        // quarter of a core per instance.
        let (client, url) = mesh[0].gateway_client("hot", Duration::from_secs(60))?;
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { client.get(format!("{url}loop")).send().await })
            })
            .collect();
        let mut reason = String::new();
        let grown = wait_until(
            "hot to grow on its CPU",
            Duration::from_secs(40),
            Duration::from_millis(200),
            async || {
                let app = mesh[0].app("hot").await?;
                reason = app
                    .scale
                    .as_ref()
                    .map(|s| s.reason.clone())
                    .unwrap_or_default();
                Ok(desired(&app) >= 2)
            },
        )
        .await;
        for spinner in spinners {
            spinner.abort();
        }
        grown?;
        ensure!(
            reason.contains("of cpu per instance, target 50%"),
            "{reason}"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}
