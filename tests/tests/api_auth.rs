//! API access: an API bound off loopback refuses every request without the node's token (401,
//! nothing changes) but the health probe; the token is in `<data-dir>/api.token`, never in
//! `node.json`, and the CLI finds it for a local node by itself. A loopback API stays open unless
//! `--api-token-required` asks otherwise.
//!
//! The off-loopback test runs its node in a network namespace (root and iproute2; elsewhere it
//! skips, and under CI it fails instead) and reaches it through the namespace's bridge.

use std::{process::Output, time::Duration};

use anyhow::{Context, Result, ensure};
use mycel_tests::{
    DataDir, NodeProcess,
    apps::manifest,
    mycel_cli_env,
    netns::{Net, namespaces_or_skip},
};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A client that sends no token of its own (the harness's sends the node's).
fn bare_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?)
}

/// Sends `method path` to `node` with `token` (if any) and `body` (if not null); returns the
/// status, the `WWW-Authenticate` header and the JSON answer (`null` when not JSON).
async fn call(
    node: &NodeProcess,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<(StatusCode, Option<String>, Value)> {
    let mut request = bare_client()?.request(method, format!("{}{path}", node.api()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if !body.is_null() {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("sending {path}"))?;
    let status = response.status();
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let text = response.text().await?;
    Ok((
        status,
        challenge,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    ))
}

/// Checks that `method path` with `token` is refused as unauthorized.
async fn ensure_refused(
    node: &NodeProcess,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<()> {
    let (status, challenge, answer) = call(node, method.clone(), path, token, body).await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "{method} {path}: {status} {answer}"
    );
    ensure!(
        answer["code"] == "unauthorized" && answer["error"].is_string(),
        "{method} {path}: {answer}"
    );
    ensure!(
        challenge.as_deref() == Some("Bearer"),
        "{method} {path}: WWW-Authenticate {challenge:?}"
    );
    Ok(())
}

/// `mycel apps --json --node <node's API>` with `envs`.
async fn cli_apps(node: &NodeProcess, envs: &[(&str, &str)]) -> Result<Output> {
    mycel_cli_env(["apps", "--json", "--node", node.api()], envs).await
}

fn ensure_cli_ok(output: &Output, what: &str) -> Result<()> {
    ensure!(
        output.status.success(),
        "{what}: {} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn ensure_cli_unauthorized(output: &Output, what: &str) -> Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(1) && stderr.contains("(unauthorized)"),
        "{what}: {} {stderr}",
        output.status
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_off_loopback_refuses_requests_without_the_token() -> Result<()> {
    if !namespaces_or_skip()? {
        return Ok(());
    }
    let net = Net::new()?;
    let node = NodeProcess::builder("guarded")
        .in_netns(net.netns("a"), net.addr("a"))
        .start()
        .await?;
    let result = async {
        ensure!(
            node.api().contains(&net.addr("a")),
            "the API is on {}",
            node.api()
        );
        let token = node
            .data_dir()
            .api_token()
            .context("the node made no api.token")?;
        ensure!(token.len() == 64, "a {}-character token", token.len());
        let node_json = std::fs::read_to_string(node.data_dir().node_json())?;
        ensure!(!node_json.contains(&token), "node.json holds the token");
        let wrong = "0".repeat(64);

        // The probe needs no token.
        let (status, _, health) =
            call(&node, Method::GET, "/v1/health", None, &Value::Null).await?;
        ensure!(status == StatusCode::OK, "health: {status} {health}");

        // Without the token, or with another, nothing is read and nothing changes.
        let module = node.push(b"module".to_vec()).await?;
        let app = manifest("guarded-app", "1.0.0", 1, &module);
        for token in [None, Some(wrong.as_str())] {
            for path in ["/v1/apps", "/v1/nodes", "/v1/openapi.json", "/metrics"] {
                ensure_refused(&node, Method::GET, path, token, &Value::Null).await?;
            }
            ensure_refused(&node, Method::POST, "/v1/apps", token, &app).await?;
            ensure_refused(&node, Method::POST, "/api/apps/deploy_app", token, &app).await?;
            ensure_refused(&node, Method::DELETE, "/v1/apps/x", token, &Value::Null).await?;
        }
        let (status, _, apps) =
            call(&node, Method::GET, "/v1/apps", Some(&token), &Value::Null).await?;
        ensure!(status == StatusCode::OK, "with the token: {status} {apps}");
        ensure!(
            apps["apps"] == serde_json::json!([]),
            "deployed anyway: {apps}"
        );

        // With the token, writes go through.
        let (status, _, deployed) =
            call(&node, Method::POST, "/v1/apps", Some(&token), &app).await?;
        ensure!(status == StatusCode::CREATED, "deploy: {status} {deployed}");

        // The CLI: the token from the local data dir whose node.json names the API, from
        // MYCEL_API_TOKEN, from --token; without one it fails with the API's reason.
        let dir = node.data_dir().path().to_str().context("utf-8 data dir")?;
        let empty = DataDir::temp()?;
        let elsewhere = empty.path().to_str().context("utf-8 temp dir")?;
        let output = cli_apps(&node, &[("MYCEL_DATA_DIR", dir)]).await?;
        ensure_cli_ok(&output, "mycel apps with the node's data dir")?;
        ensure!(
            String::from_utf8_lossy(&output.stdout).contains("guarded-app"),
            "mycel apps: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let output = cli_apps(
            &node,
            &[("MYCEL_DATA_DIR", elsewhere), ("MYCEL_API_TOKEN", &token)],
        )
        .await?;
        ensure_cli_ok(&output, "mycel apps with MYCEL_API_TOKEN")?;
        let output = mycel_cli_env(
            ["apps", "--node", node.api(), "--token", &token],
            &[("MYCEL_DATA_DIR", elsewhere)],
        )
        .await?;
        ensure_cli_ok(&output, "mycel apps --token")?;
        let output = cli_apps(&node, &[("MYCEL_DATA_DIR", elsewhere)]).await?;
        ensure_cli_unauthorized(&output, "mycel apps without a token")?;
        let output = cli_apps(
            &node,
            &[("MYCEL_DATA_DIR", dir), ("MYCEL_API_TOKEN", &wrong)],
        )
        .await?;
        ensure_cli_unauthorized(&output, "mycel apps with a wrong token")?;
        Ok(())
    }
    .await;
    if result.is_err() {
        node.print_log_tail();
    }
    drop(node);
    drop(net);
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_api_is_open_unless_the_token_is_required() -> Result<()> {
    let open = NodeProcess::start("open", None).await?;
    // A data dir where the CLI looks by default: `$XDG_DATA_HOME/mycel`.
    let xdg = DataDir::temp()?;
    let xdg_home = xdg.path().to_str().context("utf-8 temp dir")?;
    std::fs::create_dir(xdg.path().join("mycel"))?;
    let guarded = NodeProcess::builder("guarded-local")
        .data_dir(DataDir::at(xdg.path().join("mycel")))
        .arg("--api-token-required")
        .start()
        .await?;
    let result = async {
        let (status, _, apps) = call(&open, Method::GET, "/v1/apps", None, &Value::Null).await?;
        ensure!(status == StatusCode::OK, "open node: {status} {apps}");
        // The node keeps a token even on loopback: its join ticket (which holds a private
        // mesh's secret) is only for whoever holds it, as any local user reaches loopback.
        let token = open
            .data_dir()
            .api_token()
            .context("a loopback node keeps a token for its join ticket")?;
        ensure_refused(&open, Method::GET, "/v1/join-ticket", None, &Value::Null).await?;
        let (status, _, ticket) = call(
            &open,
            Method::GET,
            "/v1/join-ticket",
            Some(&token),
            &Value::Null,
        )
        .await?;
        ensure!(status == StatusCode::OK, "join ticket: {status} {ticket}");
        let output = cli_apps(&open, &[]).await?;
        ensure_cli_ok(&output, "mycel apps on an open node")?;

        let token = guarded
            .data_dir()
            .api_token()
            .context("--api-token-required made no api.token")?;
        ensure_refused(&guarded, Method::GET, "/v1/apps", None, &Value::Null).await?;
        let (status, _, _) = call(&guarded, Method::GET, "/v1/health", None, &Value::Null).await?;
        ensure!(status == StatusCode::OK, "health: {status}");
        let (status, _, _) = call(
            &guarded,
            Method::GET,
            "/v1/apps",
            Some(&token),
            &Value::Null,
        )
        .await?;
        ensure!(status == StatusCode::OK, "with the token: {status}");

        // The CLI finds the token in the default data dir by itself.
        let output = cli_apps(&guarded, &[("XDG_DATA_HOME", xdg_home)]).await?;
        ensure_cli_ok(&output, "mycel apps finding the default data dir")?;
        let empty = DataDir::temp()?;
        let elsewhere = empty.path().to_str().context("utf-8 temp dir")?;
        let output = cli_apps(&guarded, &[("XDG_DATA_HOME", elsewhere)]).await?;
        ensure_cli_unauthorized(&output, "mycel apps with no local token")?;
        Ok(())
    }
    .await;
    if result.is_err() {
        open.print_log_tail();
        guarded.print_log_tail();
    }
    result
}
