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
