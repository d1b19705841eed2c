//! `[dependencies]` on real nodes: a deploy needs its dependencies deployed at versions their
//! requirements accept; an app others need stops only when forced (through the API and the CLI).

use std::time::Duration;

use anyhow::{Result, ensure};
use mycel_tests::{Mesh, hello_example, mycel_cli_env};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn app(name: &str, version: &str, module: &Value, dependencies: Value) -> Value {
    json!({"name": name, "version": version, "wasm": {"module": module},
        "dependencies": dependencies})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_needs_its_dependencies_in_range_and_a_needed_app_stops_only_when_forced()
-> Result<()> {
    let (module, _) = hello_example()?;
    let mesh = Mesh::star(2).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let hash = json!(mesh[0].push(std::fs::read(&module)?).await?);
        let front = app("front", "1.0.0", &hash, json!({"back": "^1.2"}));

        // Refused manifests change nothing.
        for (dependencies, code) in [
            (json!({"front": "^1"}), "invalid_manifest"),
            (json!({"back": "one"}), "invalid_manifest"),
            (json!({"Back": "^1"}), "invalid_manifest"),
        ] {
            let (status, answer) = mesh[0]
                .deploy(&app("front", "1.0.0", &hash, dependencies))
                .await?;
            ensure!(
                status == StatusCode::BAD_REQUEST && answer["code"] == code,
                "{answer}"
            );
        }
        let (status, answer) = mesh[0].deploy(&front).await?;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY && answer["code"] == "missing_dependency",
            "{status} {answer}"
        );
        let (status, _) = mesh[0]
            .deploy(&app("back", "1.1.0", &hash, json!({})))
            .await?;
        ensure!(status == StatusCode::CREATED);
        let (status, answer) = mesh[1].deploy(&front).await?;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY
                && answer["code"] == "dependency_version"
                && answer["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("1.1.0")),
            "{status} {answer}"
        );
        ensure!(
            mesh[0]
                .send_json(Method::GET, "/v1/apps/front", &Value::Null)
                .await?
                .0
                == StatusCode::NOT_FOUND
        );

        // In range: deployed; the dependency now stops only when forced.
        let (status, _) = mesh[0]
            .deploy(&app("back", "1.3.0", &hash, json!({})))
            .await?;
        ensure!(status == StatusCode::CREATED);
        let (status, answer) = mesh[0].deploy(&front).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        let (status, answer) = mesh[1]
            .send_json(Method::DELETE, "/v1/apps/back", &Value::Null)
            .await?;
        ensure!(
            status == StatusCode::CONFLICT
                && answer["code"] == "depended_on"
                && answer["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("front")),
            "{status} {answer}"
        );
        // The CLI says so too (as the node, which owns both apps it deployed unsigned).
        let key = mesh[0].data_dir().path().join("node.key");
        let env = [("MYCEL_USER_KEY", key.to_str().unwrap_or_default())];
        let out = mycel_cli_env(["stop", "--node", mesh[0].api(), "back"], &env).await?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains("depended_on"),
            "{err}"
        );
        let out = mycel_cli_env(["stop", "--node", mesh[0].api(), "--force", "back"], &env).await?;
        ensure!(out.status.success(), "{out:?}");
        ensure!(
            mesh[0]
                .send_json(Method::GET, "/v1/apps/back", &Value::Null)
                .await?
                .0
                == StatusCode::NOT_FOUND
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}

/// A wasm component reaches its declared dependency at `http://<dep>.localhost/`, wherever it
/// runs, through the node's gateway; an undeclared one is 403 `undeclared_dependency`.
#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_app_reaches_its_dependency_as_dep_localhost_and_nothing_undeclared() -> Result<()> {
    let (module, _) = hello_example()?;
    let mesh = Mesh::star(2).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let hash = json!(mesh[0].push(std::fs::read(&module)?).await?);
        let mut back = app("back", "1.0.0", &hash, json!({}));
        back["env"] = json!({"GREETING": "from back"});
        let mut other = app("other", "1.0.0", &hash, json!({}));
        other["env"] = json!({"GREETING": "from other"});
        for manifest in [&back, &other] {
            let (status, answer) = mesh[0].deploy(manifest).await?;
            ensure!(status == StatusCode::CREATED, "{status} {answer}");
        }
        let front = app("front", "1.0.0", &hash, json!({"back": "^1"}));
        let (status, answer) = mesh[0].deploy(&front).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        for name in ["back", "other", "front"] {
            mesh[1].wait_running(name, 1).await?;
        }
        let (client, url) = mesh[1].gateway_client("front", Duration::from_secs(10))?;
        let call = async |path: &str| -> Result<String> {
            Ok(client
                .get(format!("{url}call/{path}"))
                .send()
                .await?
                .text()
                .await?)
        };
        let mut reached = String::new();
        for _ in 0..50 {
            reached = call("back.localhost/").await?;
            if reached.starts_with("200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(
            reached == "200 hello from mycel: from back\n",
            "{reached:?}"
        );
        let refused = call("other.localhost/").await?;
        ensure!(
            refused.starts_with("403 ") && refused.contains("undeclared_dependency"),
            "{refused:?}"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}
