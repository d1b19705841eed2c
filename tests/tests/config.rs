//! What a node offers and how it is configured, checked through `GET /v1/nodes`: runtimes are
//! detected honestly, and flags beat `MYCEL_*` variables, which beat the `--config` file.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use mycel_protocol::{Runtime, api::NodeInfo};
use mycel_tests::{NodeProcess, mesh::find};

async fn own_entry(node: &NodeProcess) -> Result<NodeInfo> {
    let nodes = node.nodes().await?;
    find(&nodes, node.peer_id())
        .cloned()
        .context("the node does not list itself")
}

fn docker_engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_is_offered_only_when_an_engine_answers() -> Result<()> {
    if !docker_engine_answers() {
        // CI installs and starts an engine (tests/run.sh): there this must run, not skip.
        ensure!(
            std::env::var_os("CI").is_none(),
            "no Docker engine answers, and CI needs one"
        );
        eprintln!("skipping: no Docker engine answers here (tests/run.sh starts one)");
        return Ok(());
    }
    let with_engine = NodeProcess::start("with-engine", None).await?;
    let entry = own_entry(&with_engine).await?;
    // This host runs sandboxes too (tests/run.sh gives root a subordinate uid range).
    ensure!(
        entry.runtimes == [Runtime::Wasm, Runtime::Docker, Runtime::Process],
        "{entry:?}"
    );

    let without_engine = NodeProcess::builder("without-engine")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .start()
        .await?;
    let entry = own_entry(&without_engine).await?;
    ensure!(
        entry.runtimes == [Runtime::Wasm, Runtime::Process],
        "{entry:?}"
    );

    let wasm_only = NodeProcess::builder("wasm-only")
        .arg("--runtimes")
        .arg("wasm")
        .start()
        .await?;
    let entry = own_entry(&wasm_only).await?;
    ensure!(entry.runtimes == [Runtime::Wasm], "{entry:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_beat_the_environment_which_beats_the_config_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("mycel.toml");
    std::fs::write(
        &config,
        "runtimes = \"wasm\"\n[labels]\nzone = \"from-file\"\nrack = \"r1\"\n",
    )?;
    let config = config.to_str().context("utf-8 path")?.to_string();

    let from_file = NodeProcess::builder("from-file")
        .arg("--config")
        .arg(&config)
        .start()
        .await?;
    let entry = own_entry(&from_file).await?;
    ensure!(entry.labels["zone"] == "from-file", "{entry:?}");
    ensure!(entry.labels["rack"] == "r1", "{entry:?}");
    ensure!(entry.runtimes == [Runtime::Wasm], "{entry:?}");

    let from_env = NodeProcess::builder("from-env")
        .env("MYCEL_CONFIG", &config)
        .env("MYCEL_LABELS", "zone=from-env")
        .start()
        .await?;
    let entry = own_entry(&from_env).await?;
    ensure!(entry.labels["zone"] == "from-env", "{entry:?}");
    ensure!(entry.labels["rack"] == "r1", "{entry:?}");

    let from_flag = NodeProcess::builder("from-flag")
        .env("MYCEL_CONFIG", &config)
        .env("MYCEL_LABELS", "zone=from-env")
        .arg("--label")
        .arg("zone=from-flag")
        .start()
        .await?;
    let entry = own_entry(&from_flag).await?;
    ensure!(entry.labels["zone"] == "from-flag", "{entry:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_file_exits_2_with_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("mycel.toml");
    std::fs::write(&config, "no_such_key = 1\n")?;
    let output = Command::new(mycel_tests::mycel_bin())
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()?;
    ensure!(output.status.code() == Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.trim().lines().count() == 1, "{stderr}");
    ensure!(stderr.contains("no_such_key"), "{stderr}");
    Ok(())
}
