//! The seed's own deploy bodies at `POST /api/apps/deploy_app`, over a real single-node setup:
//! translated into manifests and deployed as they are, with warnings for what is not applied;
//! refused (and nothing changed) when they ask for a source build or say something unreadable.
//! The node offers no Docker: container apps are committed but never placed, so no image runs.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Node, expect_error, without_states};
use mycel_protocol::{
    Keypair,
    api::{SeedAppList, SeedDeployed},
    app::{MAX_MANIFEST_BYTES, PortProtocol, PortSpec},
    ownership::{
        AppAction, HEADER_ISSUED_AT, HEADER_KEY, HEADER_SIGNATURE, OwnerKey, SignedRequest,
    },
    seed::SeedDeploy,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn web_app() -> Value {
    json!({"name":"my-web-app","version":"1.0.0","image":"nginx:alpine","replicas":3,
        "resource_requirements":{"memory":"256m","cpu":"0.5"},
        "network_config":{"ports":{"80/tcp":{"HostPort":"8080"}}}})
}

fn database_app() -> Value {
    json!({"name":"database-app","version":"2.1.0","image":"postgres:15-alpine","replicas":1,
        "resource_requirements":{"memory":"1G","cpu":"2.0","storage":"5G"},
        "runtime_config":{"environment":{"POSTGRES_DB":"myapp","POSTGRES_USER":"appuser","POSTGRES_PASSWORD":"secretpassword"}},
        "network_config":{"ports":{"5432/tcp":{"HostPort":"5432"}}}})
}

fn python_api() -> Value {
    json!({"name":"python-api","version":"1.0.0","source_code_hash":"sha256:abc123...",
        "build_config":{"runtime":"python","version":"3.12"},"replicas":3,
        "resource_requirements":{"memory":"512m","cpu":"1.0"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_bodies_deploy_as_translated_manifests() {
    let node = Node::start().await;

    // A body that applies in full answers the seed's shape, without warnings.
    let response = node.post_json("/api/apps/deploy_app", &web_app()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"app_id": "my-web-app", "version": "1.0.0", "status": "deployed"})
    );

    // Storage and an unknown field are not applied: each comes back as a warning.
    let mut database = database_app();
    database["owner_team"] = json!("data");
    let response = node.post_json("/api/apps/deploy_app", &database).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let deployed: SeedDeployed = response.json().await.unwrap();
    assert_eq!(
        (deployed.app_id.as_str(), deployed.version.as_str()),
        ("database-app", "2.1.0")
    );
    assert_eq!(deployed.warnings.len(), 2, "{:?}", deployed.warnings);
    assert!(
        deployed.warnings[0].starts_with("resource_requirements.storage: not applied;"),
        "{:?}",
        deployed.warnings
    );
    assert_eq!(deployed.warnings[1], "owner_team: unknown field, ignored");

    let list: SeedAppList = node.get("/api/apps/list_apps").await.json().await.unwrap();
    let listed: Vec<(&str, &str, u32)> = list
        .apps
        .iter()
        .map(|a| (a.app_id.as_str(), a.version.as_str(), a.replicas))
        .collect();
    assert_eq!(
        listed,
        [("database-app", "2.1.0", 1), ("my-web-app", "1.0.0", 3)]
    );

    let web = node.status("my-web-app").await;
    assert_eq!((web.replicas, web.kind.as_str()), (3, "container"));
    let manifest = &web.manifest;
    assert_eq!(manifest.resources.memory_mb, 256);
    assert_eq!(manifest.resources.cpu, 0.5);
    let container = manifest.container.as_ref().unwrap();
    assert_eq!(
        (container.image.as_deref(), container.port),
        (Some("nginx:alpine"), Some(80))
    );
    assert_eq!(
        manifest.ports,
        [PortSpec {
            container: 80,
            published: 8080,
            protocol: PortProtocol::Tcp
        }]
    );

    let database = node.status("database-app").await;
    let manifest = &database.manifest;
    assert_eq!(database.replicas, 1);
    assert_eq!(
        (manifest.resources.memory_mb, manifest.resources.cpu),
        (1024, 2.0)
    );
    assert_eq!(manifest.env["POSTGRES_DB"], "myapp");
    assert_eq!(manifest.env["POSTGRES_USER"], "appuser");
    assert_eq!(manifest.env["POSTGRES_PASSWORD"], "secretpassword");
    assert_eq!(manifest.ports.len(), 1);
    assert_eq!(
        (manifest.ports[0].container, manifest.ports[0].published),
        (5432, 5432)
    );
    // The seed's own status endpoint reads it too.
    let response = node
        .get("/api/apps/get_app_status?app_id=database-app")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_seed_bodies_change_nothing() {
    let node = Node::start().await;
    let response = node
        .post_json(
            "/api/apps/deploy_app",
            &json!({"name":"hello-world","version":"1.0.0","image":"nginx:alpine","replicas":2,
                "network_config":{"ports":{"80/tcp":{"HostPort":"8080"}}}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let before = node.apps().await;
    let status_before = without_states(node.status("hello-world").await);

    // A source deploy: 422, and a message that says what to do instead.
    let error = expect_error(
        node.post_json("/api/apps/deploy_app", &python_api()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "source_deploy_unsupported",
    )
    .await;
    assert!(error.error.contains("not available yet"), "{error:?}");
    assert!(error.error.contains("image"), "{error:?}");

    // Unreadable or refused seed bodies: 400, naming the field.
    let with = |key: &str, value: Value| {
        let mut body = json!({"name":"hello-world","version":"2.0.0","image":"nginx:alpine"});
        body[key] = value;
        body
    };
    for (body, says) in [
        (
            with("resource_requirements", json!({"memory": "lots"})),
            "resource_requirements.memory",
        ),
        (
            with("resource_requirements", json!({"cpu": -1})),
            "resource_requirements.cpu",
        ),
        (
            with(
                "network_config",
                json!({"ports": {"53/udp": {"HostPort": "53"}}}),
            ),
            "only TCP",
        ),
        (
            with("network_config", json!({"ports": {"99999": {}}})),
            "network_config.ports",
        ),
        (
            with("network_config", json!({"ports": ["80/tcp"]})),
            "network_config.ports",
        ),
        (with("replicas", json!(-1)), "replicas"),
        (with("replicas", json!(5000)), "replicas"),
        (with("name", json!("Hello_World")), "name"),
        (
            with(
                "runtime_config",
                json!({"environment": {"A": {"nested": []}}}),
            ),
            "runtime_config.environment",
        ),
        // An image with a workload section is a manifest, and a manifest has no `image`.
        (with("container", json!({"image": "nginx"})), "image"),
        (
            json!({"name":"hello-world","version":"2.0.0","replicas":1,"network_config":{}}),
            "image",
        ),
    ] {
        let error = expect_error(
            node.post_json("/api/apps/deploy_app", &body).await,
            StatusCode::BAD_REQUEST,
            "invalid_manifest",
        )
        .await;
        assert!(error.error.contains(says), "{body}: {error:?}");
        assert!(!error.error.contains('\n'), "{error:?}");
    }
    // /v1/apps takes manifests only.
    expect_error(
        node.post_json("/v1/apps", &web_app()).await,
        StatusCode::BAD_REQUEST,
        "invalid_manifest",
    )
    .await;
    // A seed body is held to the manifest's size limit.
    let mut oversized = web_app();
    oversized["padding"] = json!("x".repeat(MAX_MANIFEST_BYTES));
    expect_error(
        node.post("/api/apps/deploy_app", oversized.to_string())
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;

    assert_eq!(node.apps().await, before);
    assert_eq!(
        without_states(node.status("hello-world").await),
        status_before
    );
    node.stop().await;
}

/// A signed seed body signs the deploy of the manifest it translates into; its key then owns the
/// app, and the node's own key may not redeploy it.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_seed_body_signs_its_translated_manifest() {
    let node = Node::start().await;
    let user = Keypair::generate_ed25519();
    let body = web_app();
    let translated = SeedDeploy::from_value(body.clone())
        .unwrap()
        .to_manifest()
        .unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let signed =
        SignedRequest::sign(&user, now_ms, AppAction::deploy(&translated.manifest)).unwrap();
    let send = |signed: &SignedRequest, body: &Value| {
        node.http
            .post(node.url("/api/apps/deploy_app"))
            .header(HEADER_KEY, signed.key.to_string())
            .header(HEADER_ISSUED_AT, signed.issued_at_ms.to_string())
            .header(HEADER_SIGNATURE, signed.signature_hex())
            .body(body.to_string())
            .send()
    };

    // Signed for another body: the signature does not hold.
    let mut other = body.clone();
    other["replicas"] = json!(1);
    expect_error(
        send(&signed, &other).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    )
    .await;
    assert!(node.apps().await.apps.is_empty());

    let response = send(&signed, &body).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let owner = node.status("my-web-app").await.owner;
    assert_eq!(owner, Some(OwnerKey::of(&user).unwrap()));

    // Unsigned, the node signs: it does not own the app.
    let mut unsigned = body;
    unsigned["version"] = json!("1.0.1");
    expect_error(
        node.post_json("/api/apps/deploy_app", &unsigned).await,
        StatusCode::FORBIDDEN,
        "not_owner",
    )
    .await;
    node.stop().await;
}
