//! dashboard_bench: what an open dashboard tab costs its node, and how soon the page shows 100
//! apps, in headless Chromium (Debian's) against one node.
//!
//! ```text
//! cargo build -p mycel -p mycel-tests --bins && target/debug/dashboard_bench
//! ```
//!
//! - Load: the API requests one tab makes over 20 s, on the overview and on an app's page (its
//!   log stream counted once), as requests/s.
//! - First render: from navigation to the page's `first-render` mark (its first view drawn with
//!   data), the median of 5, with 1 and with 100 apps deployed; the baseline in the same run is
//!   the same three API reads the overview makes, fetched directly (reqwest).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chromiumoxide::Page;
use mycel_tests::{NodeProcess, browser::Chromium, hello_example, wait_until};
use reqwest::StatusCode;
use serde_json::json;
use tokio::time::Instant;

const APPS: usize = 100;
const RUNS: usize = 5;
const WINDOW: Duration = Duration::from_secs(20);

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let (module, _) = hello_example()?;
    let node = NodeProcess::start("n0", None).await?;
    let hash = node.push(std::fs::read(&module)?).await?;
    let deploy = async |name: String| -> Result<()> {
        let manifest =
            json!({"name": name, "version": "1", "replicas": 1, "wasm": {"module": hash}});
        let (status, answer) = node.deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        Ok(())
    };
    deploy("app-0".into()).await?;
    node.wait_running("app-0", 1).await?;
    let chromium = Chromium::launch().await?;
    let url = format!("{}/", node.api());

    println!("dashboard, one debug node, headless Chromium");
    let overview = load(&chromium, &url).await?;
    let app = load(&chromium, &format!("{url}#/app/app-0")).await?;
    println!(
        "load of one open tab: overview {overview:.2} API requests/s, an app's page {app:.2} \
         (and one log stream)"
    );

    let direct_one = direct(&node).await?;
    let one = first_render(&chromium, &url, 1).await?;
    for i in 1..APPS {
        deploy(format!("app-{i}")).await?;
    }
    let direct_many = direct(&node).await?;
    let many = first_render(&chromium, &url, APPS).await?;
    println!(
        "first render (median of {RUNS}): 1 app {:.0} ms (the overview's reads fetched directly: \
         {:.1} ms); {APPS} apps {:.0} ms (directly: {:.1} ms, {:.2}x 1 app)",
        one * 1e3,
        direct_one * 1e3,
        many * 1e3,
        direct_many * 1e3,
        many / one
    );
    chromium.close().await?;
    drop(node);
    Ok(())
}

/// API requests per second one tab at `url` makes, over [`WINDOW`].
async fn load(chromium: &Chromium, url: &str) -> Result<f64> {
    let page = chromium.browser.new_page(url).await?;
    rendered(&page).await?;
    page.evaluate(
        "performance.clearResourceTimings(); performance.setResourceTimingBufferSize(100000)",
    )
    .await?;
    tokio::time::sleep(WINDOW).await;
    let requests: f64 = page
        .evaluate(
            "performance.getEntriesByType('resource')\
             .filter(e => e.name.includes('/v1/') || e.name.includes('/metrics')).length",
        )
        .await?
        .into_value()?;
    page.close().await?;
    Ok(requests / WINDOW.as_secs_f64())
}

/// Seconds from navigation to the page's first view with data, with `apps` apps listed.
async fn first_render(chromium: &Chromium, url: &str, apps: usize) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let page = chromium.browser.new_page(url).await?;
        rendered(&page).await?;
        let listed: usize = page
            .evaluate("document.querySelectorAll('#apps tr[data-app]').length")
            .await?
            .into_value()?;
        ensure!(listed == apps, "{listed} apps listed, not {apps}");
        let ms: f64 = page
            .evaluate("performance.getEntriesByName('first-render')[0].startTime")
            .await?
            .into_value()?;
        times.push(ms / 1e3);
        page.close().await?;
    }
    Ok(median(times))
}

async fn rendered(page: &Page) -> Result<()> {
    wait_until(
        "the page's first render",
        Duration::from_secs(30),
        Duration::from_millis(20),
        async || {
            let marked: bool = page
                .evaluate("performance.getEntriesByName('first-render').length > 0")
                .await?
                .into_value()?;
            Ok(marked)
        },
    )
    .await
}

/// Seconds to fetch the overview's three reads (nodes, cluster, apps) at once, directly: the
/// median of [`RUNS`].
async fn direct(node: &NodeProcess) -> Result<f64> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let get = |path: &str| client.get(format!("{}{path}", node.api())).send();
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let (a, b, c) = tokio::join!(get("/v1/nodes"), get("/v1/cluster"), get("/v1/apps"));
        for response in [a, b, c] {
            response?.bytes().await.context("a read")?;
        }
        times.push(started.elapsed().as_secs_f64());
    }
    Ok(median(times))
}
