//! The `mycel` command line: exit codes, one-line errors, and the client commands' output.

use std::process::Output;

use anyhow::{Context, Result, ensure};
use mycel_tests::{DataDir, NodeProcess, mycel_cli, mycel_cli_env};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks `output` is a failure with code `code`, exactly one non-empty line on stderr and
/// nothing on stdout.
fn ensure_one_line_failure(output: &Output, code: i32) -> Result<()> {
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    let context = format!(
        "status {}, stdout {stdout:?}, stderr {stderr:?}",
        output.status
    );
    ensure!(
        output.status.code() == Some(code),
        "want exit {code}: {context}"
    );
    ensure!(stdout.is_empty(), "want nothing on stdout: {context}");
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    ensure!(
        lines.len() == 1 && !lines[0].trim().is_empty(),
        "want exactly one line on stderr: {context}"
    );
    Ok(())
}

/// `mycel up` with everything on free local ports, so a wrongly accepted command line cannot
/// take the default ports or data dir.
async fn up_with(dir: &DataDir, extra: &[&str]) -> Result<Output> {
    let dir = dir.path().to_str().context("utf-8 temp dir")?;
    let mut args = vec!["up", "--data-dir", dir, "--api", "127.0.0.1:0"];
    args.extend(["--gateway", "127.0.0.1:0"]);
    args.extend(extra);
    mycel_cli(args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2_with_one_line() -> Result<()> {
    let dir = DataDir::temp()?;
    let unknown = up_with(
        &dir,
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-such-flag"],
    )
    .await?;
    ensure_one_line_failure(&unknown, 2).context("mycel up --no-such-flag")?;
    let bad_addr = up_with(&dir, &["--listen", "not-a-multiaddr"]).await?;
    ensure_one_line_failure(&bad_addr, 2).context("mycel up --listen not-a-multiaddr")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_node_exits_1_with_one_line() -> Result<()> {
    let output = mycel_cli(["nodes", "--node", "http://127.0.0.1:1"]).await?;
    ensure_one_line_failure(&output, 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn version_exits_0() -> Result<()> {
    for args in [&["--version"][..], &["version"]] {
        let output = mycel_cli(args).await?;
        ensure!(output.status.success(), "{output:?}");
        let version = text(&output.stdout);
        // `mycel 0.1.0 (commit 1a2b3c4d5e6f, built 2026-12-07)`
        ensure!(
            version.starts_with("mycel ")
                && version.contains(" (commit ")
                && version.contains(", built 20"),
            "{version}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_and_the_man_page_cover_every_command() -> Result<()> {
    for (shell, marker) in [
        ("bash", "_mycel()"),
        ("zsh", "#compdef mycel"),
        ("fish", "complete -c mycel"),
    ] {
        let output = mycel_cli(["completions", shell]).await?;
        ensure!(output.status.success(), "{output:?}");
        let script = text(&output.stdout);
        ensure!(script.contains(marker), "{shell}: {script}");
        for command in ["deploy", "rollback", "completions"] {
            ensure!(script.contains(command), "{shell} completes {command}");
        }
    }
    let refused = mycel_cli(["completions", "nosh"]).await?;
    ensure!(refused.status.code() == Some(2), "{refused:?}");

    let output = mycel_cli(["man"]).await?;
    ensure!(output.status.success(), "{output:?}");
    let page = text(&output.stdout);
    ensure!(
        page.contains(".TH mycel 1") && page.contains(".SH NAME"),
        "{page}"
    );
    ensure!(page.contains("deploy"), "the page lists the commands");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn client_commands_find_the_local_node_through_its_node_json() -> Result<()> {
    // Its API is on a port the OS picked: only node.json says which.
    let node = NodeProcess::start("found", None).await?;
    let dir = node
        .data_dir()
        .path()
        .to_str()
        .context("utf-8 path")?
        .to_owned();
    let output = mycel_cli_env(["nodes", "--json"], &[("MYCEL_DATA_DIR", &dir)]).await?;
    ensure!(output.status.success(), "{output:?}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    ensure!(value["nodes"][0]["peer_id"] == node.peer_id(), "{value}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_prints_json_and_a_table() -> Result<()> {
    let node = NodeProcess::start("cli-node", None).await?;
    let result = async {
        let json = mycel_cli(["nodes", "--json", "--node", node.api()]).await?;
        ensure!(json.status.success(), "mycel nodes --json: {json:?}");
        let value: serde_json::Value =
            serde_json::from_slice(&json.stdout).context("mycel nodes --json prints JSON")?;
        let nodes = value["nodes"].as_array().context("a `nodes` array")?;
        ensure!(
            nodes.iter().any(|n| n["peer_id"] == node.peer_id()),
            "own node missing: {value}"
        );

        let table = mycel_cli(["nodes", "--node", node.api()]).await?;
        ensure!(table.status.success(), "mycel nodes: {table:?}");
        let stdout = text(&table.stdout);
        ensure!(
            stdout
                .lines()
                .any(|l| l.contains("cli-node") && l.contains("alive")),
            "no row with the node's name and `alive`:\n{stdout}"
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        node.print_log_tail();
    }
    result
}

/// `mycel deploy` reads the seed's deploy body too: it prints each field it does not apply as a
/// warning, then deploys the manifest the body translates into.
#[tokio::test(flavor = "multi_thread")]
async fn deploy_reads_a_seed_body_and_warns_of_what_it_does_not_apply() -> Result<()> {
    let node = NodeProcess::start("cli-seed", None).await?;
    let result = async {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("user.key");
        let key = key.to_str().context("a UTF-8 path")?;
        let file = dir.path().join("seed.json");
        // 1T: no node has room for it, so nothing is pulled or started.
        std::fs::write(
            &file,
            r#"{"name":"database-app","version":"2.1.0","image":"postgres:15-alpine","replicas":1,
                "resource_requirements":{"memory":"1T","cpu":"2.0","storage":"5G"},
                "runtime_config":{"environment":{"POSTGRES_DB":"myapp"}},
                "network_config":{"ports":{"5432/tcp":{"HostPort":"47321"}}}}"#,
        )?;
        let file = file.to_str().context("a UTF-8 path")?;
        let out = mycel_cli_env(
            ["deploy", file, "--node", node.api()],
            &[("MYCEL_USER_KEY", key)],
        )
        .await?;
        ensure!(out.status.success(), "mycel deploy seed.json: {out:?}");
        let stderr = text(&out.stderr);
        ensure!(
            stderr
                .lines()
                .any(|l| l.starts_with("warning: resource_requirements.storage: not applied;")),
            "{stderr}"
        );
        let stdout = text(&out.stdout);
        ensure!(stdout.contains("deployed database-app 2.1.0"), "{stdout}");

        let app = node.app("database-app").await?;
        let manifest = &app.manifest;
        ensure!(
            manifest.resources.memory_mb == 1_048_576
                && manifest.resources.cpu == 2.0
                && manifest.env.get("POSTGRES_DB").map(String::as_str) == Some("myapp")
                && manifest.ports.len() == 1
                && manifest.ports[0].published == 47321,
            "{manifest:?}"
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        node.print_log_tail();
    }
    result
}
