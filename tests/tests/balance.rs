//! Balancing, end to end on three real nodes: least_request keeps load off a slow instance that
//! round robin hands a full third; an instance that keeps failing is ejected and comes back once
//! it serves again; a bad `[balance]` value is refused with 400 and changes nothing.
//!
//! Slowness and failure are made inside the app: examples/hello waits or answers 500 on the node
//! its env names (it learns its node from the `x-mycel-node` header the gateway adds).

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, ensure};
use futures::future::join_all;
use mycel_protocol::api::InstanceState;
use mycel_tests::{Mesh, NodeProcess, apps::manifest, hello_example, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Deploys hello as `name`, 3 replicas, with `env` and `balance`, and waits until one instance
/// runs on each node.
async fn deploy(mesh: &Mesh, name: &str, env: Value, balance: Value) -> Result<()> {
    let (wasm, _) = hello_example()?;
    let module = mesh[0].push(std::fs::read(wasm)?).await?;
    let mut m = manifest(name, "1.0.0", 3, &module);
    m["env"] = env;
    m["balance"] = balance;
    let (status, body) = mesh[0].deploy(&m).await?;
    ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
    wait_until(
        &format!("an instance of {name} running on each node"),
        Duration::from_secs(90),
        Duration::from_millis(100),
        async || {
            let app = mesh[0].app(name).await?;
            let mut nodes: Vec<&str> = app
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .map(|i| i.node.as_str())
                .collect();
            nodes.sort();
            nodes.dedup();
            ensure!(nodes.len() == 3, "{app:?}");
            Ok(true)
        },
    )
    .await
}

/// `clients` concurrent clients each send `each` `GET /` through `node`'s gateway: the answers
/// counted by (status, node that served).
async fn load(
    node: &NodeProcess,
    app: &str,
    clients: usize,
    each: usize,
) -> Result<BTreeMap<(u16, String), usize>> {
    let (client, url) = node.gateway_client(app, Duration::from_secs(20))?;
    let runs = (0..clients).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut seen = Vec::new();
            for _ in 0..each {
                let response = client.get(&url).send().await?;
                let served = response
                    .headers()
                    .get("x-mycel-node")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                seen.push((response.status().as_u16(), served));
                response.bytes().await?;
            }
            anyhow::Ok(seen)
        }
    });
    let mut counts = BTreeMap::new();
    for seen in join_all(runs).await {
        for key in seen? {
            *counts.entry(key).or_default() += 1;
        }
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread")]
async fn least_request_keeps_load_off_a_slow_instance() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let slow = mesh[2].peer_id().to_string();
        let env = json!({"DELAY_MS": "5", "SLOW_NODE": slow, "SLOW_MS": "200"});
        deploy(
            &mesh,
            "even",
            env.clone(),
            json!({"strategy": "round_robin"}),
        )
        .await?;
        deploy(&mesh, "smart", env, json!({})).await?;

        let share = |counts: &BTreeMap<(u16, String), usize>| -> Result<f64> {
            let total: usize = counts.values().sum();
            ensure!(
                counts.keys().all(|(status, _)| *status == 200),
                "{counts:?}"
            );
            let on_slow = counts.get(&(200, slow.clone())).copied().unwrap_or(0);
            Ok(on_slow as f64 / total as f64)
        };
        let even = share(&load(&mesh[0], "even", 4, 45).await?)?;
        let smart_counts = load(&mesh[0], "smart", 4, 45).await?;
        let smart = share(&smart_counts)?;
        // Every answer node 0's gateway gave is counted on its /metrics.
        let answered: usize = smart_counts.values().sum();
        let metrics = mesh[0].metrics().await?;
        let counted = mycel_tests::metrics::value(
            &metrics,
            "mycel_gateway_requests_total",
            &[("app", "smart"), ("code", "200")],
        );
        ensure!(
            counted as usize == answered,
            "node 0 counts {counted} answers for smart, the clients got {answered}"
        );
        let running = mycel_tests::metrics::value(
            &metrics,
            "mycel_instances",
            &[("app", "smart"), ("state", "running")],
        );
        ensure!(
            running == 3.0,
            "node 0 reports {running} running instances of smart"
        );
        ensure!(
            even > 0.25,
            "round robin gives the slow instance its third: {even}"
        );
        ensure!(
            smart < 0.1,
            "least_request keeps load off the slow instance: {smart} (round robin {even})"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_instance_is_ejected_and_comes_back() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let failing = mesh[2].peer_id().to_string();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        // It fails for a while after the deploy, then serves again.
        let until = now_ms + 25_000;
        let env = json!({"FAIL_NODE": failing, "FAIL_UNTIL_MS": until.to_string()});
        // No retries: the client sees each failure, so the ejection shows.
        let balance = json!({"strategy": "round_robin", "retries": 0,
            "outlier": {"consecutive_failures": 3, "base_ejection_ms": 4000}});
        deploy(&mesh, "flaky", env, balance).await?;
        let (client, url) = mesh[0].gateway_client("flaky", Duration::from_secs(20))?;
        let get = async || -> Result<(u16, String)> {
            let response = client.get(&url).send().await?;
            let node = response
                .headers()
                .get("x-mycel-node")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            Ok((response.status().as_u16(), node))
        };

        // Round robin hands the failing instance every third request, until three failures in a
        // row eject it: then the others serve everything.
        let mut failures = 0;
        let mut streak = 0;
        while streak < 30 {
            let (status, node) = get().await?;
            if status == 500 {
                ensure!(node == failing, "a 500 from {node}");
                failures += 1;
                streak = 0;
            } else {
                ensure!(status == 200 && node != failing, "{status} from {node}");
                streak += 1;
            }
            ensure!(
                failures <= 3,
                "still sent to the failing instance after 3 failures"
            );
        }
        ensure!(failures == 3, "{failures} failures before the ejection");

        // Once it serves again (after its failing window), it comes back and gets requests.
        wait_until(
            "the ejected instance to serve again",
            Duration::from_secs(60),
            Duration::from_millis(50),
            async || {
                let (status, node) = get().await?;
                Ok(status == 200 && node == failing)
            },
        )
        .await
        .context("the instance never came back")
    }
    .await;
    mesh.report(result)
}

/// One of three nodes frozen (SIGSTOP) under steady load: its instance stays in every replica
/// (the failure detector has not called it dead yet), yet requests through another node's
/// gateway keep answering in time: a request its instance leaves unanswered is hedged to another
/// after a second, and the silent instance is skipped meanwhile. Round robin, the strategy that
/// would send it a full third, shows that this holds whatever the strategy.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_node_costs_requests_at_most_a_hedge_delay() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        deploy(
            &mesh,
            "steady",
            json!({}),
            json!({"strategy": "round_robin"}),
        )
        .await?;
        mesh[2].freeze()?;
        // A request every 20 ms for 8 s.
        let (in_time, sent, slowest) = mesh[0]
            .open_loop(
                "steady",
                Duration::from_millis(20),
                400,
                Duration::from_secs(2),
            )
            .await?;
        mesh[2].thaw()?;
        let rate = in_time as f64 / sent as f64;
        // The aim is 97%; without hedging it is about that (the slowest waits 2.6 s), with it
        // every request answers within a hedge delay and a little.
        ensure!(
            rate >= 0.99,
            "{in_time} of {sent} requests answered within 2 s ({:.1}%), the slowest in {slowest:?}",
            rate * 100.0
        );
        Ok(())
    }
    .await;
    let _ = mesh[2].thaw();
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_balance_value_is_refused_and_changes_nothing() -> Result<()> {
    let mesh = Mesh::star(1).await?;
    let result = async {
        let node = &mesh[0];
        let (wasm, _) = hello_example()?;
        let module = node.push(std::fs::read(wasm)?).await?;
        let good = manifest("steady", "1.0.0", 0, &module);
        let (status, body) = node.deploy(&good).await?;
        ensure!(status == StatusCode::CREATED, "{status} {body}");
        for balance in [
            json!({"strategy": "fastest"}),
            json!({"retries": 11}),
            json!({"retries": -1}),
            json!({"outlier": {"consecutive_failures": 0}}),
            json!({"outlier": {"max_ejection_percent": 101}}),
            json!({"outlier": {"base_ejection_ms": 0}}),
            json!({"strategy": "latency", "sticky": true}),
        ] {
            let mut bad = manifest("steady", "2.0.0", 1, &module);
            bad["balance"] = balance.clone();
            let (status, body) = node.deploy(&bad).await?;
            ensure!(
                status == StatusCode::BAD_REQUEST && body["code"] == "invalid_manifest",
                "{balance}: {status} {body}"
            );
            ensure!(body["error"].is_string(), "{body}");
        }
        let app = node.app("steady").await?;
        ensure!(
            app.version == "1.0.0" && app.replicas == 0,
            "the refused deploys changed the app: {app:?}"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}
