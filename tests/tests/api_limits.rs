//! The API's per-client rate limit on a real node, configured in its `--config` file: a burst
//! past the limit is refused with `429 rate_limited` and `Retry-After`, changes nothing, and is
//! counted; after waiting, the client is served again; another client (another loopback address)
//! is not held back; the health probe never is.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context, Result, ensure};
use mycel_protocol::api::{ApiError, Apps};
use mycel_tests::{NodeProcess, apps::manifest, metrics};
use reqwest::{Client, StatusCode, header::RETRY_AFTER};

/// Two requests a second, four at once.
const CONFIG: &str = "[api_rate_limit]\nper_second = 2\nburst = 4\n";

fn client_from(ip: &str) -> Result<Client> {
    Ok(Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>()?)
        .timeout(Duration::from_secs(5))
        .build()?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_the_limit_is_refused_until_the_client_waits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("mycel.toml");
    std::fs::write(&config, CONFIG)?;
    let node = NodeProcess::builder("limited")
        .arg("--config")
        .arg(config.to_str().context("a UTF-8 path")?)
        .start()
        .await?;
    let api = node.api().to_string();
    let first = client_from("127.0.0.1")?;
    let apps_url = format!("{api}/v1/apps");

    // Made before the burst, so the refused deploy below would have had all it needs. The
    // harness's own calls come from 127.0.0.1 too: wait until its bucket is full again.
    let module = node.push(b"module".to_vec()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut statuses = Vec::new();
    let mut refused = None;
    let burst_started = std::time::Instant::now();
    for _ in 0..10 {
        let response = first.get(&apps_url).send().await?;
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS && refused.is_none() {
            refused = Some(response);
        }
    }
    // The burst, plus the tokens that dripped in meanwhile (two a second; a slow machine takes
    // longer over the ten requests).
    let dripped = (burst_started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    let served = statuses.iter().filter(|s| **s == 200).count();
    ensure!(
        statuses[..4] == [200; 4] && served <= 4 + dripped && served < statuses.len(),
        "a burst of 4 (and {dripped} tokens that dripped in) is served, the rest refused: \
         {statuses:?}"
    );
    let refused = refused.context("no request was refused")?;
    let retry_after: u64 = refused
        .headers()
        .get(RETRY_AFTER)
        .context("a 429 without Retry-After")?
        .to_str()?
        .parse()?;
    ensure!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    let error: ApiError = refused.json().await?;
    ensure!(error.code == "rate_limited", "{error:?}");

    // A refused write changes nothing.
    let deploy = first
        .post(&apps_url)
        .json(&manifest("limited-app", "1.0.0", 1, &module))
        .send()
        .await?;
    ensure!(
        deploy.status() == StatusCode::TOO_MANY_REQUESTS,
        "{deploy:?}"
    );

    // Neither the health probe nor another client is held back.
    for _ in 0..5 {
        let health = first.get(format!("{api}/v1/health")).send().await?;
        ensure!(
            health.status() == StatusCode::OK,
            "health: {}",
            health.status()
        );
    }
    let second = client_from("127.0.0.2")?;
    for _ in 0..3 {
        let response = second.get(&apps_url).send().await?;
        ensure!(
            response.status() == StatusCode::OK,
            "127.0.0.2 is held back by 127.0.0.1's burst: {}",
            response.status()
        );
    }

    // After Retry-After, the first client is served again: nothing was deployed.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let response = first.get(&apps_url).send().await?;
    ensure!(
        response.status() == StatusCode::OK,
        "after waiting: {}",
        response.status()
    );
    let apps: Apps = response.json().await?;
    ensure!(
        apps.apps.is_empty(),
        "a refused deploy changed something: {apps:?}"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let text = first
        .get(format!("{api}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let counted = metrics::value(&text, "mycel_api_rate_limited_total", &[]);
    ensure!(
        counted >= (statuses.len() - served + 1) as f64,
        "mycel_api_rate_limited_total = {counted}, statuses {statuses:?}"
    );
    Ok(())
}
