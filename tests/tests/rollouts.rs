//! Rollouts, end to end on real nodes under steady load through two gateways: a redeploy fails
//! no request and ends serving only the new version; a version whose health check fails is
//! never served and is reverted by itself; canaries wait for a promote; a rollback brings an
//! earlier manifest back; a rollout outlives the leader that drove it; bad `[update]` values
//! are refused and change nothing.
//!
//! Which version answered is read from `x-mycel-instance`: `<app>-<generation>-<replica>`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use mycel_protocol::{
    api::{AppStatus, InstanceState},
    placement::RolloutState,
};
use mycel_tests::{
    Mesh, NodeProcess,
    apps::{agreed_group, manifest},
    hello_example, wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// hello as `name` `version`, `replicas`, rolling out with `min_healthy_ms` = 1 s.
async fn hello(node: &NodeProcess, name: &str, version: &str, replicas: u32) -> Result<Value> {
    let (wasm, _) = hello_example()?;
    let module = node.push(std::fs::read(wasm)?).await?;
    let mut m = manifest(name, version, replicas, &module);
    m["env"] = json!({ "GREETING": format!("version {version}") });
    m["update"] = json!({ "min_healthy_ms": 1000, "healthy_deadline_ms": 20000 });
    Ok(m)
}

async fn deploy(node: &NodeProcess, manifest: &Value) -> Result<()> {
    let (status, body) = node.deploy(manifest).await?;
    ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
    Ok(())
}

/// Waits until `node` shows the app's rollout in `state` (and settled: nothing left to do).
async fn rollout_ends(node: &NodeProcess, name: &str, state: RolloutState) -> Result<AppStatus> {
    let mut last = None;
    wait_until(
        &format!("the rollout of {name} to end {}", state.as_str()),
        Duration::from_secs(90),
        Duration::from_millis(100),
        async || {
            let app = node.app(name).await?;
            let rollout = app.rollout.clone().context("no rollout")?;
            if matches!(
                rollout.state,
                RolloutState::Failed | RolloutState::Succeeded
            ) && rollout.state != state
            {
                bail!(
                    "the rollout ended {}: {}",
                    rollout.state.as_str(),
                    rollout.message
                );
            }
            let settled = rollout.healthy == rollout.total
                && app.instances.len() as u32 == app.replicas
                && app
                    .instances
                    .iter()
                    .all(|i| i.state == InstanceState::Running);
            let done =
                rollout.state == state && (settled || state == RolloutState::AwaitingPromotion);
            last = Some(app);
            Ok(done)
        },
    )
    .await?;
    last.context("no status")
}

/// The generation an instance id names.
fn generation(instance: &str) -> Option<u64> {
    let mut parts = instance.rsplitn(3, '-');
    parts.next()?;
    parts.next()?.parse().ok()
}

/// Steady load: `clients` clients per gateway, each sending `GET /` in a loop until stopped.
/// Every answer is recorded as (status, instance), a request that got no answer as (0, error).
struct Load {
    stop: Arc<AtomicBool>,
    runs: Vec<tokio::task::JoinHandle<Vec<(u16, String)>>>,
}

impl Load {
    fn start(gateways: &[&NodeProcess], app: &str, clients: usize) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut runs = Vec::new();
        for node in gateways {
            let (client, url) = node.gateway_client(app, Duration::from_secs(10))?;
            for _ in 0..clients {
                let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
                runs.push(tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let answer = match client.get(&url).send().await {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let instance = response
                                    .headers()
                                    .get("x-mycel-instance")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string();
                                match response.bytes().await {
                                    Ok(_) => (status, instance),
                                    Err(e) => (0, format!("reading the answer: {e}")),
                                }
                            }
                            Err(e) => (0, e.to_string()),
                        };
                        seen.push(answer);
                    }
                    seen
                }));
            }
        }
        Ok(Self { stop, runs })
    }

    /// Stops the clients: every answer, in order per client, all clients together.
    async fn finish(self) -> Result<Vec<(u16, String)>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for run in self.runs {
            all.extend(run.await?);
        }
        Ok(all)
    }
}

/// Answers by (status, generation); failures listed with their reason.
fn tally(answers: &[(u16, String)]) -> BTreeMap<(u16, Option<u64>), usize> {
    let mut counts = BTreeMap::new();
    for (status, instance) in answers {
        *counts.entry((*status, generation(instance))).or_default() += 1;
    }
    counts
}

/// Fails when any request failed, naming the first few.
fn none_failed(answers: &[(u16, String)]) -> Result<()> {
    let failed: Vec<&(u16, String)> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    ensure!(
        failed.is_empty(),
        "{} of {} requests failed, first {:?}; answers by (status, generation): {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)],
        tally(answers)
    );
    Ok(())
}

/// `n` requests through each of `gateways`: the generations that answered.
async fn generations_now(gateways: &[&NodeProcess], app: &str, n: usize) -> Result<Vec<u64>> {
    let mut seen = Vec::new();
    for node in gateways {
        for _ in 0..n {
            let response = node.through_gateway(app, "/").await?;
            ensure!(response.status() == StatusCode::OK, "{}", response.status());
            let instance = response
                .headers()
                .get("x-mycel-instance")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            seen.extend(generation(&instance));
        }
    }
    seen.sort();
    seen.dedup();
    Ok(seen)
}

async fn running_everywhere(mesh: &Mesh, name: &str, replicas: usize) -> Result<()> {
    wait_until(
        &format!("{replicas} instances of {name} running"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        async || {
            let app = mesh[0].app(name).await?;
            let running = app
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .count();
            Ok(running == replicas
                && app
                    .rollout
                    .is_some_and(|r| r.state == RolloutState::Succeeded))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redeploy_under_load_fails_no_request_and_ends_on_the_new_version() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        deploy(&mesh[0], &hello(&mesh[0], "roll", "1", 3).await?).await?;
        running_everywhere(&mesh, "roll", 3).await?;

        let gateways = [&mesh[0], &mesh[1]];
        let load = Load::start(&gateways, "roll", 4)?;
        deploy(&mesh[0], &hello(&mesh[0], "roll", "2", 3).await?).await?;
        let app = rollout_ends(&mesh[0], "roll", RolloutState::Succeeded).await?;
        ensure!(app.version == "2", "{app:?}");
        ensure!(
            app.instances.iter().all(|i| generation(&i.id) == Some(2)),
            "{:?}",
            app.instances
        );
        let answers = load.finish().await?;
        let counts = tally(&answers);
        none_failed(&answers)?;
        ensure!(
            counts.contains_key(&(200, Some(1))) && counts.contains_key(&(200, Some(2))),
            "both versions served during the rollout: {counts:?}"
        );
        ensure!(generations_now(&gateways, "roll", 20).await? == [2]);

        // Every node counts the rollout's end.
        let metrics = mesh[2].metrics().await?;
        let succeeded = mycel_tests::metrics::value(
            &metrics,
            "mycel_rollouts_total",
            &[("app", "roll"), ("result", "succeeded")],
        );
        ensure!(succeeded >= 1.0, "mycel_rollouts_total: {succeeded}");
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_fails_its_health_check_is_never_served_and_reverted() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        deploy(&mesh[0], &hello(&mesh[0], "safe", "1", 3).await?).await?;
        running_everywhere(&mesh, "safe", 3).await?;

        let gateways = [&mesh[0], &mesh[1]];
        let load = Load::start(&gateways, "safe", 4)?;
        let mut broken = hello(&mesh[0], "safe", "2", 3).await?;
        broken["health"] = json!({ "path": "/no-such-page" });
        broken["update"]["healthy_deadline_ms"] = json!(4000);
        deploy(&mesh[0], &broken).await?;
        let app = rollout_ends(&mesh[0], "safe", RolloutState::Reverted).await?;
        let answers = load.finish().await?;
        let counts = tally(&answers);
        none_failed(&answers)?;
        ensure!(
            counts.keys().all(|(_, generation)| *generation == Some(1)),
            "only version 1 ever answered: {counts:?}"
        );
        ensure!(app.version == "1", "the restored version shows: {app:?}");
        let rollout = app.rollout.context("a rollout")?;
        ensure!(
            rollout.from.as_deref() == Some("2") && rollout.to == "1",
            "{rollout:?}"
        );
        ensure!(
            rollout.message.contains("reverted to version 1"),
            "{rollout:?}"
        );
        ensure!(generations_now(&gateways, "safe", 10).await? == [1]);
        let metrics = mesh[1].metrics().await?;
        let reverted = mycel_tests::metrics::value(
            &metrics,
            "mycel_rollouts_total",
            &[("app", "safe"), ("result", "reverted")],
        );
        ensure!(reverted == 1.0, "mycel_rollouts_total reverted: {reverted}");
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn canaries_wait_for_a_promote_and_a_rollback_brings_an_earlier_version_back() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let node = &mesh[0];
        deploy(node, &hello(node, "bird", "1", 3).await?).await?;
        running_everywhere(&mesh, "bird", 3).await?;

        // Nothing to promote yet.
        let (status, body) = node
            .send_json(Method::POST, "/v1/apps/bird/promote", &Value::Null)
            .await?;
        ensure!(status == StatusCode::BAD_REQUEST, "{status} {body}");

        let mut canary = hello(node, "bird", "2", 3).await?;
        canary["update"]["canary"] = json!(1);
        deploy(node, &canary).await?;
        let app = rollout_ends(node, "bird", RolloutState::AwaitingPromotion).await?;
        let mut generations: Vec<u64> = app
            .instances
            .iter()
            .filter_map(|i| generation(&i.id))
            .collect();
        generations.sort();
        ensure!(
            generations == [1, 1, 1, 2],
            "one canary beside three: {:?}",
            app.instances
        );
        // It waits: still one canary a while later (the deadline does not run while waiting).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let app = node.app("bird").await?;
        ensure!(
            app.rollout
                .as_ref()
                .is_some_and(|r| r.state == RolloutState::AwaitingPromotion)
                && app.instances.len() == 4,
            "{app:?}"
        );

        let (status, body) = node
            .send_json(Method::POST, "/v1/apps/bird/promote", &Value::Null)
            .await?;
        ensure!(status == StatusCode::OK, "{status} {body}");
        let app = rollout_ends(node, "bird", RolloutState::Succeeded).await?;
        ensure!(app.instances.iter().all(|i| generation(&i.id) == Some(2)));

        let (status, versions) = node
            .send_json(Method::GET, "/v1/apps/bird/versions", &Value::Null)
            .await?;
        ensure!(status == StatusCode::OK, "{status} {versions}");
        let listed: Vec<(&str, bool)> = versions["versions"]
            .as_array()
            .context("versions")?
            .iter()
            .map(|v| {
                (
                    v["version"].as_str().unwrap_or_default(),
                    v["current"] == json!(true),
                )
            })
            .collect();
        ensure!(listed == [("2", true), ("1", false)], "{versions}");

        // No such version: 404, nothing changes.
        let (status, body) = node
            .send_json(
                Method::POST,
                "/v1/apps/bird/rollback",
                &json!({"version": "7"}),
            )
            .await?;
        ensure!(status == StatusCode::NOT_FOUND, "{status} {body}");
        ensure!(body["code"] == "version_not_found", "{body}");

        let (status, body) = node
            .send_json(Method::POST, "/v1/apps/bird/rollback", &json!({}))
            .await?;
        ensure!(status == StatusCode::CREATED, "{status} {body}");
        ensure!(body["version"] == "1", "{body}");
        let app = rollout_ends(node, "bird", RolloutState::Succeeded).await?;
        ensure!(app.version == "1" && app.instances.iter().all(|i| generation(&i.id) == Some(3)));
        let answer = node.through_gateway("bird", "/").await?.text().await?;
        ensure!(answer.contains("version 1"), "{answer}");
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_outlives_the_leader_that_drove_it() -> Result<()> {
    // Four nodes labelled by name, so the app can be kept off the leader: killing it then
    // stops the rollout's driver, not the app.
    let mut mesh = Mesh::star_labelled(4).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let everyone: Vec<&NodeProcess> = mesh.iter().collect();
        let group = agreed_group(&everyone, 3, Duration::from_secs(30)).await?;
        let leader_id = group.leader.clone().context("a leader")?;
        let leader = mesh.index_of(&leader_id)?;
        let via = (leader + 1) % mesh.len();
        let keep_off = |m: &mut Value| {
            m["placement"] = json!({"required": [
                {"key": "host", "op": "not_in", "values": [mesh[leader].name()]}
            ]});
            m["update"]["min_healthy_ms"] = json!(3000);
        };
        let mut v1 = hello(&mesh[via], "steady", "1", 3).await?;
        keep_off(&mut v1);
        deploy(&mesh[via], &v1).await?;
        wait_until(
            "3 instances of steady running",
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                let app = mesh[via].app("steady").await?;
                Ok(app
                    .rollout
                    .is_some_and(|r| r.state == RolloutState::Succeeded))
            },
        )
        .await?;

        let mut v2 = hello(&mesh[via], "steady", "2", 3).await?;
        keep_off(&mut v2);
        deploy(&mesh[via], &v2).await?;
        // Once the first new instance runs (the rollout is under way), the leader dies.
        wait_until(
            "a new instance running",
            Duration::from_secs(30),
            Duration::from_millis(50),
            async || {
                let app = mesh[via].app("steady").await?;
                Ok(app
                    .instances
                    .iter()
                    .any(|i| generation(&i.id) == Some(2) && i.state == InstanceState::Running))
            },
        )
        .await?;
        let rollout = mesh[via]
            .app("steady")
            .await?
            .rollout
            .context("a rollout")?;
        ensure!(rollout.state == RolloutState::Progressing, "{rollout:?}");
        mesh[leader].sigkill()?;

        let app = rollout_ends(&mesh[via], "steady", RolloutState::Succeeded).await?;
        ensure!(app.instances.iter().all(|i| generation(&i.id) == Some(2)));
        let new_leader = mesh[via].cluster().await?.leader;
        ensure!(
            new_leader.is_some_and(|l| l != leader_id),
            "another node drove the rest"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_update_values_are_refused_and_change_nothing() -> Result<()> {
    let node = NodeProcess::start("solo", None).await?;
    let result = async {
        let good = hello(&node, "strict", "1", 1).await?;
        for (field, value) in [
            ("order", json!("sideways")),
            ("max_paralel", json!(2)),
            ("canary", json!(-1)),
            ("healthy_deadline_ms", json!(0)),
            ("min_healthy_ms", json!(999_999)),
        ] {
            let mut bad = good.clone();
            bad["update"][field] = value.clone();
            let (status, body) = node.deploy(&bad).await?;
            ensure!(
                status == StatusCode::BAD_REQUEST && body["code"] == "invalid_manifest",
                "update.{field} = {value}: {status} {body}"
            );
        }
        ensure!(node.apps().await?.apps.is_empty(), "nothing was deployed");
        Ok(())
    }
    .await;
    if result.is_err() {
        node.print_log_tail();
    }
    result
}

/// The CLI, signed with a user key: `deploy --wait` exits 0 when the rollout succeeds and 1
/// when it is reverted; `versions`, `promote` and `rollback --to` sign what they ask.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_follows_promotes_and_rolls_back() -> Result<()> {
    let node = NodeProcess::start("solo", None).await?;
    let result = async {
        let dir = tempfile::tempdir()?;
        let (wasm, _) = hello_example()?;
        std::fs::copy(wasm, dir.path().join("hello.wasm"))?;
        let key = dir.path().join("user.key");
        let key = key.to_str().context("a UTF-8 path")?;
        let cli = async |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend(["--node", node.api()]);
            mycel_tests::mycel_cli_env(all, &[("MYCEL_USER_KEY", key)]).await
        };
        let write = |version: &str, extra: &str| -> Result<String> {
            let file = dir.path().join(format!("v{version}.toml"));
            std::fs::write(
                &file,
                format!(
                    "name = \"cli\"\nversion = \"{version}\"\nreplicas = 2\n\
                     [wasm]\nmodule = \"hello.wasm\"\n[resources]\nmemory_mb = 16\ncpu = 0.01\n\
                     [update]\nmin_healthy_ms = 300\nhealthy_deadline_ms = 3000\n{extra}"
                ),
            )?;
            Ok(file.to_str().context("a UTF-8 path")?.to_string())
        };
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

        let out = cli(&["deploy", &write("1", "")?, "--wait"]).await?;
        ensure!(out.status.success(), "{out:?}");
        ensure!(
            text(&out.stderr).contains("succeeded 1"),
            "{}",
            text(&out.stderr)
        );

        let broken = write("2", "[health]\npath = \"/no-such-page\"\n")?;
        let out = cli(&["deploy", &broken, "--wait"]).await?;
        ensure!(
            out.status.code() == Some(1),
            "a reverted rollout exits 1: {out:?}"
        );
        let stderr = text(&out.stderr);
        ensure!(
            stderr
                .lines()
                .last()
                .is_some_and(|l| l.contains("was reverted")),
            "{stderr}"
        );

        let out = cli(&["versions", "cli"]).await?;
        let table = text(&out.stdout);
        let rows: Vec<&str> = table.lines().skip(1).collect();
        ensure!(
            rows.len() == 2 && rows[0].starts_with("2 ") && rows[1].starts_with("1 "),
            "{table}"
        );
        ensure!(rows[1].trim_end().ends_with("current"), "{table}");

        let out = cli(&["deploy", &write("3", "canary = 1\n")?, "--wait"]).await?;
        ensure!(out.status.success(), "{out:?}");
        ensure!(
            text(&out.stderr).contains("mycel promote cli"),
            "{}",
            text(&out.stderr)
        );
        let out = cli(&["promote", "cli"]).await?;
        ensure!(out.status.success(), "{out:?}");
        rollout_ends(&node, "cli", RolloutState::Succeeded).await?;

        let out = cli(&["rollback", "cli", "--to", "1", "--wait"]).await?;
        ensure!(out.status.success(), "{out:?}");
        let app = node.app("cli").await?;
        ensure!(app.version == "1", "{app:?}");
        let out = cli(&["rollback", "cli", "--to", "9"]).await?;
        ensure!(out.status.code() == Some(1), "{out:?}");
        Ok(())
    }
    .await;
    if result.is_err() {
        node.print_log_tail();
    }
    result
}

/// A retired container instance is drained, not cut off: an upload still streaming into it when
/// the rollout retires it finishes, and its echo comes back whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_retired_instance_finishes_the_requests_it_has() -> Result<()> {
    let (archive, _) = mycel_tests::hello_container_example()?;
    let mesh = Mesh::star(1).await?;
    let result = async {
        let node = &mesh[0];
        let (status, pushed) = node.push_image(&archive).await?;
        ensure!(status == StatusCode::CREATED, "push: {status} {pushed}");
        let hash = pushed["hash"].as_str().context("hash")?.to_string();
        let version = |v: &str| {
            let mut m = mycel_tests::apps::container_manifest("drain", &hash, 1);
            m["version"] = json!(v);
            m["update"] = json!({"min_healthy_ms": 0});
            m
        };
        deploy(node, &version("1")).await?;
        running_everywhere(&mesh, "drain", 1).await?;

        // An upload that streams for a while: 20 chunks, 250 ms apart.
        let (client, url) = node.gateway_client("drain", Duration::from_secs(30))?;
        let (chunks, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let stream = futures::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let body = reqwest::Body::wrap_stream(stream);
        let upload = tokio::spawn(
            client
                .post(format!("{url}echo"))
                .header("content-length", "2000")
                .body(body)
                .send(),
        );
        let feeding = tokio::spawn(async move {
            for _ in 0..20 {
                if chunks.send(Ok(vec![b'x'; 100])).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        deploy(node, &version("2")).await?;
        let app = rollout_ends(node, "drain", RolloutState::Succeeded).await?;
        ensure!(app.instances.iter().all(|i| generation(&i.id) == Some(2)));
        ensure!(
            !feeding.is_finished(),
            "the old instance was retired mid-upload"
        );

        let response = upload.await??;
        ensure!(response.status() == StatusCode::OK, "{}", response.status());
        let served_by = response
            .headers()
            .get("x-mycel-instance")
            .and_then(|v| v.to_str().ok())
            .and_then(generation);
        ensure!(
            served_by == Some(1),
            "the old instance answered: {served_by:?}"
        );
        let echoed = response.bytes().await?;
        ensure!(
            echoed.len() == 2000,
            "the whole upload came back: {} bytes",
            echoed.len()
        );
        Ok(())
    }
    .await;
    mycel_tests::docker::remove_containers_of(&mesh);
    mesh.report(result)
}
