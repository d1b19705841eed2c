//! Autoscaling, end to end on real nodes: an idle app with `min = 0` drops to no instance and
//! the next request is held and answered, not refused; concurrent clients of a slow endpoint grow
//! an app up to its `max`, never beyond, with no request failing, and it returns to `min` when
//! they stop; a minute of steady load keeps a steady count; bad `[scale]` values are refused and
//! change nothing.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
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
        let status = response.status();
        ensure!(
            status == StatusCode::OK,
            "{status} {}",
            response.text().await?
        );
        // Scaled up for it (and, 2 s idle later, perhaps down again already).
        let app = mesh[0].app("sleepy").await?;
        let scale = app.scale.as_ref().context("a scale status")?;
        ensure!(
            scale.desired == 1 || (scale.from == Some(1) && scale.reason.starts_with("no request")),
            "{app:?}"
        );
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
        let load = mesh[0].closed_loop("busy", 12)?;
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
        let answers = load.stop().await?;
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

/// With most voters known dead, a request for an app at zero is refused at once with
/// `503 no_quorum`: no instance can be placed, and holding it would only delay the answer.
#[tokio::test(flavor = "multi_thread")]
async fn without_quorum_a_request_for_an_app_at_zero_is_refused_at_once() -> Result<()> {
    let mut mesh = Mesh::star(3).await?;
    let result = async {
        let everyone: Vec<&NodeProcess> = mesh.iter().collect();
        mycel_tests::apps::agreed_group(&everyone, 3, Duration::from_secs(30)).await?;
        let scale = json!({"min": 0, "max": 1, "scale_to_zero_after_ms": 1000, "cooldown_ms": 0,
                           "window_ms": 6000});
        let m = hello(&mesh[0], "stranded", 1, scale).await?;
        let (status, body) = mesh[0].deploy(&m).await?;
        ensure!(status == StatusCode::CREATED, "{status} {body}");
        wait_until(
            "stranded to scale to zero",
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                let app = mesh[0].app("stranded").await?;
                Ok(desired(&app) == 0 && app.instances.is_empty())
            },
        )
        .await?;
        let gone = [mesh[1].peer_id().to_owned(), mesh[2].peer_id().to_owned()];
        mesh[1].sigkill()?;
        mesh[2].sigkill()?;
        wait_until(
            "node 0 to count the others dead",
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                let nodes = mesh[0].nodes().await?;
                Ok(gone.iter().all(|g| {
                    mycel_tests::mesh::find(&nodes, g)
                        .is_some_and(|n| n.status == mycel_protocol::api::MemberStatus::Dead)
                }))
            },
        )
        .await?;
        let asked = tokio::time::Instant::now();
        let response = mesh[0].through_gateway("stranded", "/").await?;
        let took = asked.elapsed();
        let status = response.status();
        let body: Value = response.json().await?;
        ensure!(
            status == StatusCode::SERVICE_UNAVAILABLE && body["code"] == "no_quorum",
            "{status} {body}"
        );
        // Well inside a write's own timeout (5 s), which is what a held request would wait.
        ensure!(took < Duration::from_secs(2), "answered after {took:?}");
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

/// A minute of steady load: once the app has grown to meet it, its count holds and the leader
/// makes no decision, though the load's measure wobbles from one report to the next.
#[tokio::test(flavor = "multi_thread")]
async fn steady_load_keeps_a_steady_count_for_a_minute() -> Result<()> {
    let mesh = Mesh::star(2).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let scale = json!({"min": 1, "max": 8, "target_concurrency": 2, "cooldown_ms": 1000,
                           "window_ms": 6000});
        let mut m = hello(&mesh[0], "steady", 1, scale).await?;
        m["env"] = json!({"DELAY_MS": "200"});
        let (status, body) = mesh[0].deploy(&m).await?;
        ensure!(status == StatusCode::CREATED, "{status} {body}");
        wait_until(
            "steady to run",
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || Ok(running(&mesh[0].app("steady").await?) == 1),
        )
        .await?;

        // 6 clients of a 200 ms endpoint: 6 in flight, 3 instances' worth at 2 each.
        let load = mesh[0].closed_loop("steady", 6)?;
        let measured = async {
            // Grown, and a whole window later: what the load asks for.
            wait_until(
                "steady to grow",
                Duration::from_secs(60),
                Duration::from_millis(200),
                async || Ok(running(&mesh[0].app("steady").await?) >= 2),
            )
            .await?;
            let mut settled = desired(&mesh[0].app("steady").await?);
            let mut since = tokio::time::Instant::now();
            wait_until(
                "steady to settle",
                Duration::from_secs(60),
                Duration::from_millis(200),
                async || {
                    let now = desired(&mesh[0].app("steady").await?);
                    if now != settled {
                        (settled, since) = (now, tokio::time::Instant::now());
                    }
                    Ok(since.elapsed() >= Duration::from_secs(8))
                },
            )
            .await?;
            let decisions = async || -> Result<f64> {
                Ok(metrics::value(
                    &mesh[0].metrics().await?,
                    "mycel_autoscale_decisions_total",
                    &[("app", "steady")],
                ))
            };
            let before = decisions().await?;
            let mut counts = std::collections::BTreeSet::new();
            let minute = tokio::time::Instant::now() + Duration::from_secs(60);
            while tokio::time::Instant::now() < minute {
                counts.insert(desired(&mesh[0].app("steady").await?));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let after = decisions().await?;
            ensure!(
                counts.len() == 1 && after == before,
                "a minute of steady load from {settled} instances saw counts {counts:?} and \
                 {} decisions",
                after - before
            );
            Ok(())
        }
        .await;
        let statuses = load.stop().await?;
        measured?;
        let failed = statuses.iter().filter(|s| **s != 200).count();
        ensure!(
            failed == 0,
            "{failed} of {} requests failed",
            statuses.len()
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}
