//! App ownership, end to end: the CLI signs deploys, scales and stops with a user key; the first
//! key to deploy an app owns it, and a change signed by any other key (or sent unsigned to a node
//! whose key is not the owner's) is refused with 403 and changes nothing on any node. Forged,
//! stale and replayed signatures are refused too.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, ensure};
use mycel_protocol::{
    Keypair,
    api::AppStatus,
    ownership::{
        AppAction, HEADER_ISSUED_AT, HEADER_KEY, HEADER_SIGNATURE, MAX_SKEW_MS, OwnerKey,
        SignedRequest,
    },
};
use mycel_tests::{
    Mesh, NodeProcess,
    apps::{agreed_group, manifest},
    mycel_cli_env, wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A user of the CLI: their own key file.
struct User {
    key_file: PathBuf,
}

impl User {
    fn new(dir: &Path, name: &str) -> Self {
        Self {
            key_file: dir.join(format!("{name}.key")),
        }
    }

    /// Runs `mycel <args>` as this user, against `node`.
    async fn cli(&self, node: &NodeProcess, args: &[&str]) -> Result<Output> {
        let key = self.key_file.to_str().context("a UTF-8 path")?;
        let mut all = args.to_vec();
        all.extend(["--node", node.api()]);
        mycel_cli_env(all, &[("MYCEL_USER_KEY", key)]).await
    }

    /// The user's key (`mycel whoami` makes it on first use).
    async fn key(&self, node: &NodeProcess) -> Result<OwnerKey> {
        let out = self.cli(node, &["whoami"]).await?;
        ensure!(out.status.success(), "mycel whoami: {out:?}");
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    }

    fn keypair(&self) -> Result<Keypair> {
        Ok(Keypair::from_protobuf_encoding(&std::fs::read(
            &self.key_file,
        )?)?)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64
}

/// Sends `body` with `method` to `path` on `node`, with the headers of `signed`, if any.
async fn send(
    node: &NodeProcess,
    method: Method,
    path: &str,
    body: &Value,
    signed: Option<&SignedRequest>,
) -> Result<(StatusCode, Value)> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", node.api()))
        .json(body);
    if let Some(signed) = signed {
        request = request
            .header(HEADER_KEY, signed.key.to_string())
            .header(HEADER_ISSUED_AT, signed.issued_at_ms.to_string())
            .header(HEADER_SIGNATURE, signed.signature_hex());
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Checks `out` is the CLI's refusal: exit 1, one line on stderr that names the code.
fn ensure_refused(out: &Output, code: &str) -> Result<String> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.code() == Some(1), "want exit 1: {out:?}");
    ensure!(out.stdout.is_empty(), "want nothing on stdout: {out:?}");
    ensure!(
        stderr.trim_end().lines().count() == 1 && stderr.contains(&format!("({code})")),
        "want one line naming {code}: {stderr:?}"
    );
    Ok(stderr)
}

/// Checks an API answer is `status` with the error `code`.
fn ensure_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) -> Result<()> {
    ensure!(
        answer.0 == status && answer.1["code"] == code,
        "want {status} {code}, got {} {}",
        answer.0,
        answer.1
    );
    Ok(())
}

/// Waits until every node shows `app` with `replicas`, `version` and `owner`.
async fn everyone_sees(
    nodes: &[&NodeProcess],
    app: &str,
    replicas: u32,
    version: &str,
    owner: OwnerKey,
) -> Result<()> {
    wait_until(
        &format!("every node to show {app} {version} x{replicas} owned by {owner}"),
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || {
            for node in nodes {
                let status = node.app(app).await?;
                ensure!(
                    status.replicas == replicas
                        && status.version == version
                        && status.owner == Some(owner),
                    "{} shows {status:?}",
                    node.name()
                );
            }
            Ok(true)
        },
    )
    .await
}

/// Every node still shows exactly `before` (but the instances' states, which their nodes report).
async fn unchanged(nodes: &[&NodeProcess], app: &str, before: &AppStatus) -> Result<()> {
    for node in nodes {
        let now = node.app(app).await?;
        ensure!(
            now.replicas == before.replicas
                && now.version == before.version
                && now.owner == before.owner
                && now.manifest == before.manifest
                && now.instances.len() == before.instances.len(),
            "{} changed: {now:?}, was {before:?}",
            node.name()
        );
    }
    Ok(())
}

/// Waits until no node lists `app` any more: the node that took its stop shows it at once, the
/// others once the stop replicates.
async fn everyone_drops(nodes: &[&NodeProcess], app: &str) -> Result<()> {
    for node in nodes {
        wait_until(
            &format!("{} to drop {app}", node.name()),
            Duration::from_secs(10),
            Duration::from_millis(50),
            async || Ok(node.apps().await?.apps.is_empty()),
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_owners_key_changes_an_app() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        let nodes: Vec<&NodeProcess> = mesh.iter().collect();
        agreed_group(&nodes, 3, Duration::from_secs(30)).await?;
        let dir = tempfile::tempdir()?;
        let (alice, bob) = (User::new(dir.path(), "alice"), User::new(dir.path(), "bob"));
        let alice_key = alice.key(&mesh[0]).await?;
        let bob_key = bob.key(&mesh[0]).await?;
        ensure!(alice_key != bob_key);

        // Alice deploys through n0.
        let module = mesh[0].push(b"a module nobody runs".to_vec()).await?;
        let file = dir.path().join("web.toml");
        let toml = |version: &str| {
            format!(
                "name = \"web\"\nversion = \"{version}\"\nreplicas = 2\n[wasm]\n\
                 module = \"{module}\"\n[resources]\nmemory_mb = 16\ncpu = 0.01\n"
            )
        };
        std::fs::write(&file, toml("1.0.0"))?;
        let path = file.to_str().context("a UTF-8 path")?;
        let out = alice.cli(&mesh[0], &["deploy", path]).await?;
        ensure!(out.status.success(), "alice's deploy: {out:?}");
        everyone_sees(&nodes, "web", 2, "1.0.0", alice_key).await?;
        let before = mesh[0].app("web").await?;

        // Bob's scale, stop and redeploy, through another node, are refused.
        let line = ensure_refused(
            &bob.cli(&mesh[1], &["scale", "web", "5"]).await?,
            "not_owner",
        )?;
        ensure!(
            line.contains(&alice_key.to_string()) && line.contains(&bob_key.to_string()),
            "the refusal names both keys: {line}"
        );
        ensure_refused(&bob.cli(&mesh[1], &["stop", "web"]).await?, "not_owner")?;
        std::fs::write(&file, toml("6.6.6"))?;
        ensure_refused(&bob.cli(&mesh[2], &["deploy", path]).await?, "not_owner")?;
        // Behind each refusal, the API's 403 (here Bob's signed scale sent by hand).
        let signed = SignedRequest::sign(
            &bob.keypair()?,
            now_ms(),
            AppAction::Scale {
                app: "web".into(),
                replicas: 5,
            },
        )?;
        let body = json!({"replicas": 5});
        let answer = send(
            &mesh[2],
            Method::POST,
            "/v1/apps/web/scale",
            &body,
            Some(&signed),
        );
        ensure_error(&answer.await?, StatusCode::FORBIDDEN, "not_owner")?;

        // Unsigned requests act as the node that takes them: neither node's key is Alice's.
        for node in [&mesh[0], &mesh[1]] {
            let scale = send(node, Method::POST, "/v1/apps/web/scale", &body, None);
            ensure_error(&scale.await?, StatusCode::FORBIDDEN, "not_owner")?;
            let seed_stop = json!({"app_id": "web"});
            let stop = send(node, Method::POST, "/api/apps/stop_app", &seed_stop, None);
            ensure_error(&stop.await?, StatusCode::FORBIDDEN, "not_owner")?;
        }

        // A forged signature: Alice's key on Bob's signature.
        let forged = SignedRequest {
            key: alice_key,
            ..signed.clone()
        };
        let answer = send(
            &mesh[1],
            Method::POST,
            "/v1/apps/web/scale",
            &body,
            Some(&forged),
        );
        ensure_error(&answer.await?, StatusCode::UNAUTHORIZED, "bad_signature")?;
        // Alice's signature for 3 replicas, sent with a body asking for 5.
        let for_three = SignedRequest::sign(
            &alice.keypair()?,
            now_ms(),
            AppAction::Scale {
                app: "web".into(),
                replicas: 3,
            },
        )?;
        let answer = send(
            &mesh[1],
            Method::POST,
            "/v1/apps/web/scale",
            &body,
            Some(&for_three),
        );
        ensure_error(&answer.await?, StatusCode::UNAUTHORIZED, "bad_signature")?;
        // Alice's signature made ten minutes ago.
        let old = SignedRequest::sign(
            &alice.keypair()?,
            now_ms() - 2 * MAX_SKEW_MS,
            AppAction::Stop { app: "web".into() },
        )?;
        let answer = send(
            &mesh[1],
            Method::DELETE,
            "/v1/apps/web",
            &Value::Null,
            Some(&old),
        );
        ensure_error(&answer.await?, StatusCode::UNAUTHORIZED, "stale_request")?;
        // Headers that are not a signature at all.
        let answer = reqwest::Client::new()
            .delete(format!("{}/v1/apps/web", mesh[1].api()))
            .header(HEADER_KEY, "ed25519:nope")
            .header(HEADER_ISSUED_AT, now_ms().to_string())
            .header(HEADER_SIGNATURE, "00")
            .send()
            .await?;
        ensure!(answer.status() == StatusCode::BAD_REQUEST, "{answer:?}");

        // None of it changed anything, on any node.
        unchanged(&nodes, "web", &before).await?;

        // Alice scales through n2: allowed; her captured request cannot be replayed.
        let mine = SignedRequest::sign(
            &alice.keypair()?,
            now_ms(),
            AppAction::Scale {
                app: "web".into(),
                replicas: 3,
            },
        )?;
        let body = json!({"replicas": 3});
        let answer = send(
            &mesh[2],
            Method::POST,
            "/v1/apps/web/scale",
            &body,
            Some(&mine),
        );
        let answer = answer.await?;
        ensure!(answer.0 == StatusCode::OK, "alice's scale: {answer:?}");
        everyone_sees(&nodes, "web", 3, "1.0.0", alice_key).await?;
        let out = alice.cli(&mesh[1], &["scale", "web", "1"]).await?;
        ensure!(out.status.success(), "alice's scale with the CLI: {out:?}");
        everyone_sees(&nodes, "web", 1, "1.0.0", alice_key).await?;
        let replay = send(
            &mesh[0],
            Method::POST,
            "/v1/apps/web/scale",
            &body,
            Some(&mine),
        );
        ensure_error(&replay.await?, StatusCode::UNAUTHORIZED, "stale_request")?;
        everyone_sees(&nodes, "web", 1, "1.0.0", alice_key).await?;

        // Her new version, then her stop.
        std::fs::write(&file, toml("2.0.0"))?;
        let out = alice.cli(&mesh[2], &["deploy", path]).await?;
        ensure!(out.status.success(), "alice's redeploy: {out:?}");
        everyone_sees(&nodes, "web", 2, "2.0.0", alice_key).await?;
        let out = alice.cli(&mesh[1], &["stop", "web"]).await?;
        ensure!(out.status.success(), "alice's stop: {out:?}");
        everyone_drops(&nodes, "web").await?;
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_deployed_unsigned_belongs_to_the_node_that_took_it() -> Result<()> {
    let mesh = Mesh::star(2).await?;
    let result = async {
        let nodes: Vec<&NodeProcess> = mesh.iter().collect();
        agreed_group(&nodes, 1, Duration::from_secs(30)).await?;
        let module = mesh[0].push(b"another module".to_vec()).await?;
        let (status, body) = mesh[0]
            .deploy(&manifest("plain", "1.0.0", 1, &module))
            .await?;
        ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
        let n0: OwnerKey =
            OwnerKey::from_peer_id(&mesh[0].peer_id().parse()?).context("an ed25519 peer id")?;
        everyone_sees(&nodes, "plain", 1, "1.0.0", n0).await?;
        let before = mesh[0].app("plain").await?;

        // Through n1, unsigned: refused, and the answer says whose key it is.
        let scale = json!({"replicas": 2});
        let answer = send(&mesh[1], Method::POST, "/v1/apps/plain/scale", &scale, None).await?;
        ensure_error(&answer, StatusCode::FORBIDDEN, "not_owner")?;
        let message = answer.1["error"].as_str().unwrap_or_default();
        ensure!(
            message.contains("node 'n0'") && message.contains("this node's key"),
            "{message}"
        );
        let seed = json!({"app_id": "plain", "replicas": 2});
        let answer = send(&mesh[1], Method::POST, "/api/apps/scale_app", &seed, None).await?;
        ensure_error(&answer, StatusCode::FORBIDDEN, "not_owner")?;
        let answer = send(
            &mesh[1],
            Method::DELETE,
            "/v1/apps/plain",
            &Value::Null,
            None,
        )
        .await?;
        ensure_error(&answer, StatusCode::FORBIDDEN, "not_owner")?;
        // A user's key is not n0's either.
        let dir = tempfile::tempdir()?;
        let carol = User::new(dir.path(), "carol");
        ensure_refused(
            &carol.cli(&mesh[0], &["scale", "plain", "2"]).await?,
            "not_owner",
        )?;
        unchanged(&nodes, "plain", &before).await?;

        // Through n0, unsigned (as curl on one's own node): allowed, also by the seed's endpoint.
        let answer = send(&mesh[0], Method::POST, "/v1/apps/plain/scale", &scale, None).await?;
        ensure!(answer.0 == StatusCode::OK, "{answer:?}");
        everyone_sees(&nodes, "plain", 2, "1.0.0", n0).await?;
        let seed = json!({"app_id": "plain", "replicas": 3});
        let answer = send(&mesh[0], Method::POST, "/api/apps/scale_app", &seed, None).await?;
        ensure!(answer.0 == StatusCode::OK, "{answer:?}");
        everyone_sees(&nodes, "plain", 3, "1.0.0", n0).await?;

        // The CLI with n0's own key file acts as n0, through any node.
        let node_key = mesh[0].data_dir().path().join("node.key");
        let node_key = node_key.to_str().context("a UTF-8 path")?;
        let out = mycel_cli_env(
            ["stop", "--node", mesh[1].api(), "plain"],
            &[("MYCEL_USER_KEY", node_key)],
        )
        .await?;
        ensure!(out.status.success(), "stop as n0: {out:?}");
        everyone_drops(&nodes, "plain").await?;
        Ok(())
    }
    .await;
    mesh.report(result)
}
