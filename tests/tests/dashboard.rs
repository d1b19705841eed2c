//! The dashboard in a real browser: headless Chromium (Debian's, driven over the DevTools
//! protocol by chromiumoxide) opens a node's page on a live three-node mesh, finds every node,
//! the leader, an app and the nodes its instances run on, scales the app with the page's own
//! form, and writes screenshots to `<target dir>/screenshots/` for a person to open.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, ensure};
use chromiumoxide::{
    Page,
    browser::{Browser, BrowserConfig},
    page::ScreenshotParams,
};
use futures::StreamExt;
use mycel_tests::{Mesh, hello_example, wait_until};
use reqwest::StatusCode;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium with a profile of its own; the task that drives its protocol.
async fn chromium() -> Result<(Browser, tokio::task::JoinHandle<()>, tempfile::TempDir)> {
    ensure!(
        std::path::Path::new(CHROMIUM).exists(),
        "no {CHROMIUM}: the test command installs Debian's chromium"
    );
    let profile = tempfile::tempdir()?;
    // This machine has no way out: Chromium's own background traffic is turned off.
    let config = BrowserConfig::builder()
        .chrome_executable(CHROMIUM)
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(1280, 900)
        .args([
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .build()
        .map_err(anyhow::Error::msg)?;
    let (browser, mut handler) = Browser::launch(config).await?;
    let driver = tokio::spawn(async move { while handler.next().await.is_some() {} });
    Ok((browser, driver, profile))
}

/// `script`'s value in `page`, once it is `want` (the page redraws every 2 s).
async fn shows<T>(page: &Page, what: &str, script: &str, want: T) -> Result<()>
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    wait_until(
        what,
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || {
            let got: T = page.evaluate(script).await?.into_value()?;
            ensure!(got == want, "{script}: {got:?}, not {want:?}");
            Ok(true)
        },
    )
    .await
}

fn screenshot_dir() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn screenshot(page: &Page, name: &str) -> Result<()> {
    let path = screenshot_dir()?.join(format!("dashboard-{name}.png"));
    page.save_screenshot(ScreenshotParams::builder().full_page(true).build(), &path)
        .await?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_mesh_and_scales_an_app() -> Result<()> {
    let (module, _) = hello_example()?;
    let mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let hash = mesh[0].push(std::fs::read(&module)?).await?;
        let manifest = json!({"name": "hello", "version": "1", "replicas": 2,
            "wasm": {"module": hash}});
        let (status, answer) = mesh[0].deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        mesh[0].wait_running("hello", 2).await?;

        let (mut browser, driver, _profile) = chromium().await?;
        let page = browser.new_page(format!("{}/", mesh[0].api())).await?;

        // Every node, by its peer id; the leader by name; the app, running as wanted.
        let mut peers: Vec<String> = mesh.iter().map(|n| n.peer_id().to_string()).collect();
        peers.sort();
        shows(
            &page,
            "every node on the overview",
            "[...document.querySelectorAll('#nodes tr[data-node]')].map(r => r.dataset.node).sort()",
            peers,
        )
        .await?;
        let cluster = mesh[1].cluster().await?;
        let leader = cluster.leader.context("a leader")?;
        let leader_name = mesh[mesh.index_of(&leader)?].name().to_owned();
        shows(
            &page,
            "the leader",
            "document.querySelector('#leader')?.textContent",
            Some(leader_name),
        )
        .await?;
        shows(
            &page,
            "hello running 2 of 2",
            "document.querySelector('#apps tr[data-app=hello]')?.innerText.replace(/\\s+/g, ' ')",
            Some("hello 1 wasm 2 / 2".to_owned()),
        )
        .await?;
        screenshot(&page, "overview").await?;

        // The app's page: its instances, on the nodes the API says.
        let status = mesh[0].app("hello").await?;
        let mut placed: Vec<(String, String)> = status
            .instances
            .iter()
            .map(|i| {
                let node = mesh.index_of(&i.node).map(|n| mesh[n].name().to_owned());
                node.map(|name| (i.id.clone(), name))
            })
            .collect::<Result<_>>()?;
        placed.sort();
        page.evaluate("location.hash = '#/app/hello'").await?;
        shows(
            &page,
            "the instances and their nodes",
            "[...document.querySelectorAll('#instances tr[data-instance]')]\
             .map(r => [r.dataset.instance, r.querySelector('.instance-node').textContent]).sort()",
            placed,
        )
        .await?;
        screenshot(&page, "app").await?;

        // Scaled with the page's own form: a real click.
        page.evaluate("document.querySelector('#scale-replicas').value = '3'")
            .await?;
        page.find_element("#scale").await?.click().await?;
        mesh[2].wait_running("hello", 3).await?;
        shows(
            &page,
            "three replicas on the app's page",
            "document.querySelector('#app-replicas')?.textContent",
            Some("3".to_owned()),
        )
        .await?;

        page.evaluate("location.hash = '#/topology'").await?;
        shows(
            &page,
            "every node in the topology",
            "document.querySelectorAll('#topology .topo-node').length",
            3,
        )
        .await?;
        screenshot(&page, "topology").await?;

        browser.close().await?;
        let _ = browser.wait().await;
        driver.abort();
        Ok(())
    }
    .await;
    mesh.report(result)
}
