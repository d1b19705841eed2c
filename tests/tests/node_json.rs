//! `<data-dir>/node.json`: what a ready node writes, and that it tells the truth.

use anyhow::{Result, ensure};
use mycel_tests::{NodeJson, NodeProcess};

#[tokio::test(flavor = "multi_thread")]
async fn node_json_names_a_live_api_and_full_listen_addrs() -> Result<()> {
    let node = NodeProcess::start("json-node", None).await?;
    let result = async {
        // Read the file afresh rather than trusting the harness's copy.
        let bytes = std::fs::read(node.data_dir().node_json())?;
        let info: NodeJson = serde_json::from_slice(&bytes)?;
        ensure!(info.name == "json-node", "{info:?}");
        ensure!(!info.listen_addrs.is_empty(), "{info:?}");
        let suffix = format!("/p2p/{}", info.peer_id);
        for addr in &info.listen_addrs {
            ensure!(addr.ends_with(&suffix), "{addr} does not end in {suffix}");
        }
        ensure!(info.api.starts_with("http://"), "{info:?}");
        ensure!(info.gateway.starts_with("http://"), "{info:?}");

        let health = node.health().await?;
        ensure!(health.status == "ok", "{health:?}");
        ensure!(health.peer_id == info.peer_id, "{health:?} vs {info:?}");
        Ok(())
    }
    .await;
    if result.is_err() {
        node.print_log_tail();
    }
    result
}
