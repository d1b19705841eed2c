//! The dashboard in a real browser: headless Chromium (Debian's, driven over the DevTools
//! protocol by chromiumoxide) opens a node's page on a live three-node mesh, finds every node,
//! the leader, an app and the nodes its instances run on, scales the app with the page's own
//! form, deploys a kept version again from its versions table, and writes screenshots to `<target dir>/screenshots/` for a person to open.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chromiumoxide::Page;
use mycel_tests::{
    Mesh,
    browser::{Chromium, screenshot},
    hello_example, wait_until,
};
use reqwest::StatusCode;
use serde_json::json;

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

/// A real click on `selector`, found again when a refresh replaced it before the click landed
/// (a click that fails that way never reached the page).
async fn click(page: &Page, selector: &str) -> Result<()> {
    wait_until(
        &format!("a click on {selector}"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || {
            page.find_element(selector).await?.click().await?;
            Ok(true)
        },
    )
    .await
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

        let chromium = Chromium::launch().await?;
        let page = chromium
            .browser
            .new_page(format!("{}/", mesh[0].api()))
            .await?;

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
        eprintln!("screenshot: {}", screenshot(&page, "overview").await?.display());

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
        eprintln!("screenshot: {}", screenshot(&page, "app").await?.display());

        // A node's page lists the instances it runs (one read of every instance).
        let node = &status.instances[0].node;
        let on_it = status.instances.iter().filter(|i| &i.node == node).count();
        page.evaluate(format!("location.hash = '#/node/{node}'"))
            .await?;
        shows(
            &page,
            "the node's instances",
            "document.querySelectorAll('#node-instances tr').length - 1",
            on_it,
        )
        .await?;
        page.evaluate("location.hash = '#/app/hello'").await?;
        shows(
            &page,
            "the app's page again",
            "document.querySelector('#app-replicas')?.textContent",
            Some("2".to_owned()),
        )
        .await?;

        // Scaled with the page's own form: a real click.
        // Focused, the field is not redrawn under the typing (the page refreshes every 2 s).
        page.evaluate(
            "(() => { const f = document.querySelector('#scale-replicas'); f.focus(); f.value = '3'; })()",
        )
        .await?;
        click(&page, "#scale").await?;
        mesh[2].wait_running("hello", 3).await?;
        shows(
            &page,
            "three replicas on the app's page",
            "document.querySelector('#app-replicas')?.textContent",
            Some("3".to_owned()),
        )
        .await?;

        // A kept version deployed again from the page's versions table.
        let mut second = manifest.clone();
        second["version"] = json!("2");
        second["replicas"] = json!(3);
        let (status, answer) = mesh[0].deploy(&second).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        shows(
            &page,
            "version 1 kept, with a button",
            "document.querySelectorAll('button[data-rollback=\"1\"]').length",
            1,
        )
        .await?;
        click(&page, "button[data-rollback=\"1\"]").await?;
        wait_until(
            "version 1 deployed again",
            Duration::from_secs(30),
            Duration::from_millis(200),
            async || Ok(mesh[1].app("hello").await?.version == "1"),
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
        eprintln!("screenshot: {}", screenshot(&page, "topology").await?.display());

        chromium.close().await?;
        Ok(())
    }
    .await;
    mesh.report(result)
}
