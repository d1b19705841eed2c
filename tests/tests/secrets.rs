//! App secrets end to end: set with the CLI (sealed on the user's side, signed by their key),
//! read by a container at `/run/secrets/<name>` and by a wasm component in its environment, and
//! found nowhere else: no data dir file, API answer, node log or container config holds a value.
//! Only the app's owner sets or removes them; a changed secret rolls the app.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use mycel_tests::{
    Mesh, NodeProcess,
    docker::{docker, remove_containers_of},
    hello_container_example, hello_example, mycel_cli, mycel_cli_input, wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `mycel secret set APP NAME` through `node`, the value on stdin.
async fn set_secret(node: &NodeProcess, app: &str, name: &str, value: &str) -> Result<String> {
    let out = mycel_cli_input(
        ["secret", "set", "--node", node.api(), app, name],
        &[],
        Some(format!("{value}\n").as_bytes()),
    )
    .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "secret set: {text}");
    Ok(text)
}

/// Whether any file under `dir` holds `needle`.
fn found_under(dir: &Path, needle: &[u8]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        } else if meta.is_file()
            && std::fs::read(&path)?
                .windows(needle.len())
                .any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    Ok(found)
}

/// `GET /secret/<name>` of `app` through `node`'s gateway, until it answers `want`.
async fn answers(node: &NodeProcess, app: &str, path: &str, want: &str) -> Result<()> {
    let (client, url) = node.gateway_client(app, Duration::from_secs(5))?;
    wait_until(
        &format!("{path} of {app} to answer {want:?}"),
        Duration::from_secs(90),
        Duration::from_millis(200),
        async || {
            let response = client.get(format!("{url}{}", &path[1..])).send().await?;
            let status = response.status();
            let body = response.text().await?;
            ensure!(
                status == StatusCode::OK && body == format!("{want}\n"),
                "{status} {body}"
            );
            Ok(true)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_set_with_the_cli_reaches_a_container_and_nothing_else() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    let mesh = Mesh::star(2).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let value = format!("pw-{:016x}", rand::random::<u64>());
        let out = set_secret(&mesh[0], "web", "db_password", &value).await?;
        ensure!(out.contains("set secret db_password of web"), "{out}");
        // Listed by name through the other node, once its replica has the write.
        wait_until(
            "the secret listed through n1",
            Duration::from_secs(10),
            Duration::from_millis(100),
            async || {
                let out = mycel_cli(["secret", "ls", "--node", mesh[1].api(), "web"]).await?;
                let listed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                ensure!(listed == "db_password", "{out:?}");
                Ok(true)
            },
        )
        .await?;

        // Deployed by the same user key, which owns the app since it set its secret.
        let (status, pushed) = mesh[0].push_image(&archive).await?;
        ensure!(status == StatusCode::CREATED, "{status} {pushed}");
        let dir = tempfile::tempdir()?;
        let manifest = |secrets: Value| {
            json!({"name": "web", "version": "1", "replicas": 2,
                "container": {"archive": pushed["hash"], "port": 8080}, "secrets": secrets})
        };
        let unset = dir.path().join("unset.json");
        std::fs::write(
            &unset,
            manifest(json!(["db_password", "api_token"])).to_string(),
        )?;
        let out = mycel_cli([
            "deploy",
            "--node",
            mesh[0].api(),
            unset.to_str().context("utf-8")?,
        ])
        .await?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains("missing_secret"),
            "{err}"
        );
        let file = dir.path().join("web.json");
        std::fs::write(&file, manifest(json!(["db_password"])).to_string())?;
        let out = mycel_cli([
            "deploy",
            "--node",
            mesh[0].api(),
            file.to_str().context("utf-8")?,
        ])
        .await?;
        ensure!(out.status.success(), "{out:?}");
        mesh[1].wait_running("web", 2).await?;
        answers(&mesh[1], "web", "/secret/db_password", &value).await?;

        // Nowhere else: data dirs, API answers, node logs, container configs.
        for node in mesh.iter() {
            let found = found_under(node.data_dir().path(), value.as_bytes())?;
            ensure!(found.is_empty(), "in {}'s data dir: {found:?}", node.name());
            for path in ["/v1/apps/web", "/v1/apps/web/secrets", "/v1/apps"] {
                let (_, answer) = node.send_json(Method::GET, path, &Value::Null).await?;
                ensure!(!answer.to_string().contains(&value), "{path}: {answer}");
            }
        }
        let containers = docker(&["ps", "-aq", "--filter", "label=mycel.app=web"])?;
        for container in containers.lines() {
            let inspect = docker(&["inspect", container])?;
            ensure!(!inspect.contains(&value), "docker inspect {container}");
            ensure!(inspect.contains("/run/secrets"), "the secrets are mounted");
        }

        // Only the owner's key sets or removes them.
        let other_key = dir.path().join("other.key");
        let other = [("MYCEL_USER_KEY", other_key.to_str().context("utf-8")?)];
        let out = mycel_cli_input(
            [
                "secret",
                "set",
                "--node",
                mesh[1].api(),
                "web",
                "db_password",
            ],
            &other,
            Some(b"theirs\n"),
        )
        .await?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success() && err.contains("not_owner"), "{err}");
        let out = mycel_cli_input(
            [
                "secret",
                "rm",
                "--node",
                mesh[1].api(),
                "web",
                "db_password",
            ],
            &other,
            None,
        )
        .await?;
        ensure!(!out.status.success(), "{out:?}");
        let out = mycel_cli(["secret", "set", "--node", mesh[0].api(), "web", "../x"]).await?;
        ensure!(!out.status.success(), "a hostile name is refused: {out:?}");

        // A new value rolls the app: its instances restart with it.
        let again = format!("pw2-{:016x}", rand::random::<u64>());
        set_secret(&mesh[1], "web", "db_password", &again).await?;
        answers(&mesh[0], "web", "/secret/db_password", &again).await?;

        // Stopped, the app's secrets go with its instances, and with the app.
        let out = mycel_cli(["stop", "--node", mesh[0].api(), "web"]).await?;
        ensure!(out.status.success(), "{out:?}");
        wait_until(
            "the secrets directories to go",
            Duration::from_secs(60),
            Duration::from_millis(200),
            async || {
                let left = found_under(Path::new(mycel_agent::SECRETS_ROOT), again.as_bytes())
                    .unwrap_or_default();
                ensure!(left.is_empty(), "{left:?}");
                Ok(true)
            },
        )
        .await?;
        let (status, list) = mesh[0]
            .send_json(Method::GET, "/v1/apps/web/secrets", &Value::Null)
            .await?;
        ensure!(
            status == StatusCode::OK && list["secrets"] == json!([]),
            "{list}"
        );
        Ok(())
    }
    .await;
    remove_containers_of(&mesh);
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_app_reads_its_secret_from_its_environment() -> Result<()> {
    let (module, _) = hello_example()?;
    let node = NodeProcess::start("n0", None).await?;
    let mesh = Mesh::from_nodes(vec![node]);
    let result = async {
        // Through the API, unsigned: the node seals the value and its key signs (and owns).
        let (status, answer) = mesh[0]
            .send_json(
                Method::PUT,
                "/v1/apps/hello/secrets/api-token",
                &json!({"value": "tok-123"}),
            )
            .await?;
        ensure!(status == StatusCode::OK, "{status} {answer}");
        let hash = mesh[0].push(std::fs::read(&module)?).await?;
        let manifest = json!({"name": "hello", "version": "1", "wasm": {"module": hash},
            "secrets": ["api-token"]});
        let (status, answer) = mesh[0].deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        mesh[0].wait_running("hello", 1).await?;
        answers(&mesh[0], "hello", "/env/SECRET_API_TOKEN", "tok-123").await?;
        // Both forms at once, neither, and a hostile name: refused.
        for (path, body) in [
            (
                "/v1/apps/hello/secrets/x",
                json!({"value": "a", "sealed": "b"}),
            ),
            ("/v1/apps/hello/secrets/x", json!({})),
            ("/v1/apps/hello/secrets/..", json!({"value": "a"})),
            ("/v1/apps/hello/secrets/A%2Fb", json!({"value": "a"})),
            ("/v1/apps/hello/secrets/x", json!({"sealed": "00.00.00"})),
        ] {
            let (status, answer) = mesh[0].send_json(Method::PUT, path, &body).await?;
            ensure!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                "{path} {body}: {status} {answer}"
            );
        }
        let (_, list) = mesh[0]
            .send_json(Method::GET, "/v1/apps/hello/secrets", &Value::Null)
            .await?;
        ensure!(
            list["secrets"].as_array().map(Vec::len) == Some(1),
            "{list}"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}
