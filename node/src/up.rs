//! `mycel up`: starts a node (`mycel_node::Node`), logs that it is ready, and stops it gracefully
//! on SIGINT or SIGTERM.

use std::time::Duration;

use anyhow::Context;
use mycel_node::{Node, NodeConfig};
use tokio::signal::unix::SignalKind;

/// How long the API and gateway get to finish in-flight requests when the node stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a node until SIGINT or SIGTERM.
pub(crate) async fn run(config: NodeConfig) -> anyhow::Result<()> {
    init_tracing();
    let api_requires_token = config.api_requires_token;
    let node = Node::start(config).await?;
    let info = node.info();
    tracing::info!(
        peer_id = %info.peer_id,
        name = %info.name,
        p2p = %info.listen_addrs.join(","),
        mesh = %node.mesh_kind(),
        api = %info.api,
        api_token_required = api_requires_token,
        gateway = %info.gateway,
        runtimes = %node.runtimes().iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
        "mycel node ready"
    );
    wait_for_signal().await?;
    tracing::info!("leaving the mesh");
    node.shutdown(DRAIN_TIMEOUT).await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MYCEL_LOG")
        // kad warns at every periodic bootstrap of a node that is alone; that is not news.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,libp2p=warn,libp2p_kad=error,openraft=warn")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
