//! The API as a client discovers it: every path of `GET /v1/openapi.json` exists on a running node,
//! and what is not an endpoint is a JSON 404.

use anyhow::{Context, Result, ensure};
use mycel_protocol::api::ApiError;
use mycel_tests::NodeProcess;

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_path_is_served_and_nothing_else() -> Result<()> {
    let node = NodeProcess::start("api", None).await?;
    let client = reqwest::Client::new();
    let doc: serde_json::Value = client
        .get(format!("{}/v1/openapi.json", node.api()))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().context("paths")?;
    ensure!(paths.len() >= 6, "{paths:?}");
    let unknown_blob = format!("blake3:{}", "0".repeat(64));
    for (path, methods) in paths {
        let url = format!("{}{}", node.api(), path.replace("{hash}", &unknown_blob));
        for method in methods.as_object().context("methods")?.keys() {
            let response = client
                .request(method.to_uppercase().parse()?, &url)
                .send()
                .await?;
            let status = response.status();
            let body = response.text().await?;
            let routed = status != 404 && status != 405
                || serde_json::from_str::<ApiError>(&body)
                    .is_ok_and(|e| e.code != "not_found" && e.code != "method_not_allowed");
            ensure!(routed, "{method} {path}: {status} {body}");
        }
    }

    let response = client
        .get(format!("{}/v1/no-such-thing", node.api()))
        .send()
        .await?;
    ensure!(response.status() == 404);
    let error: ApiError = response.json().await?;
    ensure!(error.code == "not_found", "{error:?}");
    Ok(())
}

/// `/metrics` speaks the classic text format to whoever does not ask for OpenMetrics, and that
/// text passes Prometheus's own checker; OpenMetrics goes to those who ask.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_accept_and_the_classic_text_passes_promtool() -> Result<()> {
    let node = NodeProcess::start("metrics-formats", None).await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("{}/metrics", node.api());
    let classic = client.get(&url).send().await?;
    let kind = classic.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()?
        .to_owned();
    ensure!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = classic.text().await?;
    ensure!(!text.contains("# EOF"), "{text}");

    let mut promtool = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(promtool) => promtool,
        // CI installs it (tests/run.sh): there this must run, not skip.
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping the promtool check: no promtool here (tests/run.sh installs it)");
            return Ok(());
        }
        Err(e) => return Err(e).context("running promtool (Debian's prometheus package)"),
    };
    use std::io::Write;
    promtool
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(text.as_bytes())?;
    let checked = promtool.wait_with_output()?;
    ensure!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let open = client
        .get(&url)
        .header(
            reqwest::header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await?;
    let kind = open.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()?
        .to_owned();
    ensure!(kind.starts_with("application/openmetrics-text"), "{kind}");
    ensure!(open.text().await?.trim_end().ends_with("# EOF"));
    Ok(())
}

/// The document a live node serves passes a real OpenAPI validator (openapi-spec-validator,
/// from PyPI: tests/run.sh installs it in ~/.cache/mycel/venv), not only this project's tests.
#[tokio::test(flavor = "multi_thread")]
async fn the_live_openapi_document_passes_an_openapi_validator() -> Result<()> {
    let validator = std::env::var_os("MYCEL_OPENAPI_VALIDATOR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            let venv =
                std::path::Path::new(&home).join(".cache/mycel/venv/bin/openapi-spec-validator");
            venv.is_file().then_some(venv)
        });
    let Some(validator) = validator else {
        ensure!(
            std::env::var_os("CI").is_none(),
            "no openapi-spec-validator, and CI needs one (tests/run.sh installs it)"
        );
        eprintln!("skipping: no openapi-spec-validator here (tests/run.sh installs it)");
        return Ok(());
    };
    let node = NodeProcess::start("openapi-valid", None).await?;
    let document = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("{}/v1/openapi.json", node.api()))
        .send()
        .await?
        .bytes()
        .await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, &document)?;
    let checked = std::process::Command::new(&validator).arg(&path).output()?;
    let said = String::from_utf8_lossy(&checked.stdout);
    ensure!(
        checked.status.success() && said.trim_end().ends_with("OK"),
        "{}: {said}{}",
        validator.display(),
        String::from_utf8_lossy(&checked.stderr)
    );
    Ok(())
}

/// The node's own figures: the placement group, the scheduler, the blob store, the agent and
/// every local instance's CPU and memory.
#[tokio::test(flavor = "multi_thread")]
async fn the_nodes_own_figures_are_in_its_metrics() -> Result<()> {
    let (module, _) = mycel_tests::hello_example()?;
    let node = NodeProcess::builder("node-figures")
        .ingress("127.0.0.51")
        .start()
        .await?;
    let hash = node.push(std::fs::read(&module)?).await?;
    let manifest = serde_json::json!({"name": "hello", "version": "1", "replicas": 1,
        "wasm": {"module": hash}});
    let (status, answer) = node.deploy(&manifest).await?;
    ensure!(status.is_success(), "{status} {answer}");
    // A sandboxed echo server with a published port, reached once, for the ingress's series.
    let binary = node
        .push(std::fs::read(mycel_tests::hello_container_binary()?)?)
        .await?;
    let echo = serde_json::json!({"name": "echo", "version": "1", "process": {"binary": binary},
        "env": {"TCP_PORTS": "7000"}, "ports": [{"container": 7000, "published": 17600}]});
    let (status, answer) = node.deploy(&echo).await?;
    ensure!(status.is_success(), "{status} {answer}");
    node.wait_running("hello", 1).await?;
    node.wait_running("echo", 1).await?;
    // A request, so the instance has used some CPU.
    node.through_gateway("hello", "/").await?;
    mycel_tests::wait_until(
        "a connection through the published port",
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(100),
        async || {
            use tokio::io::AsyncReadExt;
            let mut tcp = tokio::net::TcpStream::connect("127.0.0.51:17600").await?;
            let mut greeting = [0u8; 5];
            tcp.read_exact(&mut greeting).await?;
            Ok(&greeting == b"hello")
        },
    )
    .await?;
    let value = |text: &str, name: &str| mycel_tests::metrics::value(text, name, &[]);
    mycel_tests::wait_until(
        "the node's figures",
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(200),
        async || {
            let text = node.metrics().await?;
            ensure!(value(&text, "mycel_raft_term") >= 1.0, "term");
            ensure!(value(&text, "mycel_raft_commit_index") >= 1.0, "commit");
            ensure!(value(&text, "mycel_raft_applied_index") >= 1.0, "applied");
            ensure!(value(&text, "mycel_instances_placed") == 2.0, "placed");
            ensure!(value(&text, "mycel_replicas_unplaced") == 0.0, "unplaced");
            ensure!(value(&text, "mycel_blobs") >= 2.0, "blobs");
            ensure!(
                value(&text, "mycel_blob_store_bytes") > 1000.0,
                "blob bytes"
            );
            let app = [("app", "hello")];
            // A wasm instance holds memory only while it serves: idle, that is 0.
            ensure!(
                text.contains("mycel_instance_memory_bytes{app=\"hello\",instance=\"hello-1-0\"}"),
                "instance memory"
            );
            let cpu = mycel_tests::metrics::value(&text, "mycel_instance_cpu_seconds", &app);
            ensure!(cpu > 0.0, "instance cpu: {cpu}");
            ensure!(text.contains("mycel_instance_restarts_total"), "restarts");
            ensure!(
                text.contains("mycel_health_checks_failed_total"),
                "failed checks"
            );
            Ok(true)
        },
    )
    .await?;
    // Every family bootstrap/grafana-dashboard.json charts is one the node serves.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../bootstrap/grafana-dashboard.json"),
    )?;
    serde_json::from_str::<serde_json::Value>(&dashboard).context("the dashboard is JSON")?;
    let text = node.metrics().await?;
    let mut names: Vec<&str> = dashboard
        .match_indices("mycel_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort();
    names.dedup();
    ensure!(names.len() >= 10, "{names:?}");
    for name in names {
        let family = ["_bucket", "_total", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        ensure!(
            text.contains(&format!("# TYPE {family} "))
                || text.contains(&format!("# TYPE {name} ")),
            "the Grafana dashboard charts {name}, which the node does not serve"
        );
    }
    Ok(())
}
