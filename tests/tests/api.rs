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
