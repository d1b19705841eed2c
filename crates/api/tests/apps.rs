//! The app endpoints over a real single-node setup: a real mesh, a real placement group (Raft,
//! sled in a temporary directory), a real blob store, and the API served on 127.0.0.1:0.

mod common;

use std::time::Duration;

use common::{Node, expect_error, manifest, without_states};
use futures::stream;
use mycel_protocol::{
    api::{AppStatus, Deployed, InstanceState, SeedAppList, SeedAppStatus, SeedDeployed},
    app::MAX_MANIFEST_BYTES,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn deploy_list_status_redeploy_scale_and_remove() {
    let node = Node::start().await;
    let module = node.upload(b"\0asm hello").await;
    assert!(node.apps().await.apps.is_empty());

    let response = node
        .post_json("/v1/apps", &manifest("hello", "1.0.0", 2, &module))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let deployed: Deployed = response.json().await.unwrap();
    assert_eq!(
        deployed,
        Deployed {
            name: "hello".into(),
            version: "1.0.0".into()
        }
    );

    // The write answers once this node's replica shows it: no waiting.
    let apps = node.apps().await.apps;
    assert_eq!(apps.len(), 1);
    assert_eq!(
        serde_json::to_value(&apps[0]).unwrap(),
        json!({"name": "hello", "version": "1.0.0", "kind": "wasm", "replicas": 2, "running": 0})
    );
    let status = node.status("hello").await;
    assert_eq!(status.instances.len(), 2, "{status:?}");
    assert_eq!(status.deployed_by, node.peer_id);
    assert_eq!(status.unplaced, None);
    for instance in &status.instances {
        assert_eq!(instance.node, node.peer_id);
        assert_eq!(instance.runtime, "wasm");
        // The agent here has no wasm runtime: an instance never runs.
        assert_ne!(instance.state, InstanceState::Running, "{instance:?}");
    }
    let ids: Vec<&str> = status.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["hello-1-0", "hello-1-1"]);

    // The same name again is a new version, with new instances.
    let response = node
        .post_json("/v1/apps", &manifest("hello", "1.1.0", 2, &module))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let status = node.status("hello").await;
    assert_eq!(status.version, "1.1.0");
    let ids: Vec<&str> = status.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["hello-2-0", "hello-2-1"]);
    assert_eq!(node.apps().await.apps.len(), 1);

    // Scale up, then to nothing (still deployed).
    let response = node
        .post_json("/v1/apps/hello/scale", &json!({"replicas": 3}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let scaled: AppStatus = response.json().await.unwrap();
    assert_eq!((scaled.replicas, scaled.instances.len()), (3, 3));
    assert_eq!(node.status("hello").await.instances.len(), 3);
    let response = node
        .post_json("/v1/apps/hello/scale", &json!({"replicas": 0}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let status = node.status("hello").await;
    assert_eq!((status.replicas, status.instances.len()), (0, 0));
    assert_eq!(node.apps().await.apps[0].replicas, 0);

    // Logs of an app with no instance: an event stream that ends without an event.
    let response = node.get("/v1/apps/hello/logs").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{response:?}"
    );
    let body = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(!body.contains("data:"), "{body}");

    // Unknown apps.
    expect_error(
        node.get("/v1/apps/nope/logs").await,
        StatusCode::NOT_FOUND,
        "app_not_found",
    )
    .await;
    expect_error(
        node.get("/v1/apps/hello/logs?follow=maybe").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    expect_error(
        node.get("/v1/apps/nope").await,
        StatusCode::NOT_FOUND,
        "app_not_found",
    )
    .await;
    expect_error(
        node.delete("/v1/apps/nope").await,
        StatusCode::NOT_FOUND,
        "app_not_found",
    )
    .await;
    expect_error(
        node.post_json("/v1/apps/nope/scale", &json!({"replicas": 1}))
            .await,
        StatusCode::NOT_FOUND,
        "app_not_found",
    )
    .await;

    // Remove.
    let response = node.delete("/v1/apps/hello").await;
    assert_eq!(response.status(), StatusCode::OK);
    let removed: Value = response.json().await.unwrap();
    assert_eq!(removed, json!({"name": "hello"}));
    assert!(node.apps().await.apps.is_empty());
    expect_error(
        node.get("/v1/apps/hello").await,
        StatusCode::NOT_FOUND,
        "app_not_found",
    )
    .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_requests_change_nothing() {
    let node = Node::start().await;
    let module = node.upload(b"\0asm kept").await;
    let response = node
        .post_json("/v1/apps", &manifest("kept", "1", 1, &module))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let before = node.apps().await;
    let status_before = without_states(node.status("kept").await);

    let mut two_workloads = manifest("kept", "2", 1, &module);
    two_workloads["container"] = json!({"image": "nginx:1"});
    let mut unknown_field = manifest("kept", "2", 1, &module);
    unknown_field["replica"] = json!(2);
    let invalid: Vec<(&str, String)> = vec![
        (
            "bad name",
            manifest("Kept_App", "2", 1, &module).to_string(),
        ),
        ("two workloads", two_workloads.to_string()),
        (
            "a path instead of a hash",
            manifest("kept", "2", 1, "kept.wasm").to_string(),
        ),
        ("unknown field", unknown_field.to_string()),
        ("malformed JSON", r#"{"name": "kept", "#.to_string()),
        ("not JSON at all", "name = \"kept\"".to_string()),
        ("an empty body", String::new()),
        (
            "an array of the fields",
            json!(["kept", "2", 1, {"module": module}]).to_string(),
        ),
        (
            "too many replicas",
            manifest("kept", "2", 5000, &module).to_string(),
        ),
    ];
    for path in ["/v1/apps", "/api/apps/deploy_app"] {
        for (what, body) in &invalid {
            let error = expect_error(
                node.post(path, body.clone()).await,
                StatusCode::BAD_REQUEST,
                "invalid_manifest",
            )
            .await;
            assert!(!error.error.contains('\n'), "{what}: {error:?}");
        }
    }

    // Too large, declared up front and (chunked) not declared.
    let mut oversized = manifest("kept", "2", 1, &module);
    oversized["env"] = json!({"PAD": "x".repeat(MAX_MANIFEST_BYTES)});
    let oversized = oversized.to_string();
    expect_error(
        node.post("/v1/apps", oversized.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = oversized
        .as_bytes()
        .chunks(8 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    // Without a declared length the node reads up to the limit, answers 413 and closes: a client
    // still sending may see its write fail instead of the answer. Either way nothing is stored.
    let streamed = node
        .http
        .post(node.url("/v1/apps"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await;
    match streamed {
        Ok(response) => {
            expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
        }
        Err(e) => assert!(e.is_request(), "{e}"),
    }

    // A blob that no node holds.
    let nobody = format!("blake3:{}", "0".repeat(64));
    let error = expect_error(
        node.post_json("/v1/apps", &manifest("kept", "2", 1, &nobody))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "blob_not_found",
    )
    .await;
    assert!(error.error.contains(&nobody), "{error:?}");

    // Malformed scale requests, and one the group refuses.
    for body in [
        "",
        "{",
        r#"{"replicas": -1}"#,
        r#"{"replica": 2}"#,
        r#"[1]"#,
    ] {
        expect_error(
            node.post("/v1/apps/kept/scale", body).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    expect_error(
        node.post_json("/v1/apps/kept/scale", &json!({"replicas": 5000}))
            .await,
        StatusCode::BAD_REQUEST,
        "rejected",
    )
    .await;
    expect_error(
        node.post("/api/apps/scale_app", "{}").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    expect_error(
        node.post("/api/apps/stop_app", "app_id=kept").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    // A method the path does not take.
    expect_error(
        node.http.put(node.url("/v1/apps")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    assert_eq!(node.apps().await, before);
    assert_eq!(without_states(node.status("kept").await), status_before);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_endpoints_round_trip() {
    let node = Node::start().await;
    let module = node.upload(b"\0asm web").await;

    let response = node
        .post_json("/api/apps/deploy_app", &manifest("web", "1", 1, &module))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let deployed: SeedDeployed = response.json().await.unwrap();
    assert_eq!(
        serde_json::to_value(&deployed).unwrap(),
        json!({"app_id": "web", "version": "1", "status": "deployed"})
    );

    let list: Value = node.get("/api/apps/list_apps").await.json().await.unwrap();
    assert_eq!(
        list,
        json!({"apps": [{"app_id": "web", "name": "web", "version": "1", "replicas": 1,
                         "running": 0, "status": "pending"}]})
    );
    serde_json::from_value::<SeedAppList>(list).unwrap();

    let response = node.get("/api/apps/get_app_status?app_id=web").await;
    assert_eq!(response.status(), StatusCode::OK);
    let status: SeedAppStatus = response.json().await.unwrap();
    assert_eq!(
        (status.app_id.as_str(), status.status.as_str()),
        ("web", "pending")
    );
    assert_eq!((status.replicas, status.running), (1, 0));
    assert_eq!(status.instances.len(), 1);
    assert_eq!(status.instances[0].node, node.peer_id);
    expect_error(
        node.get("/api/apps/get_app_status").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    expect_error(
        node.get("/api/apps/get_app_status?app_id=nope").await,
        StatusCode::NOT_FOUND,
        "app_not_found",
    )
    .await;

    let response = node
        .post_json(
            "/api/apps/scale_app",
            &json!({"app_id": "web", "replicas": 3}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let scaled: Value = response.json().await.unwrap();
    assert_eq!(scaled, json!({"app_id": "web", "replicas": 3}));
    assert_eq!(node.status("web").await.instances.len(), 3);
    expect_error(
        node.post_json(
            "/api/apps/scale_app",
            &json!({"app_id": "nope", "replicas": 3}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "app_not_found",
    )
    .await;

    let response = node
        .post_json("/api/apps/stop_app", &json!({"app_id": "web"}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let stopped: Value = response.json().await.unwrap();
    assert_eq!(stopped, json!({"app_id": "web", "status": "stopped"}));
    let list: SeedAppList = node.get("/api/apps/list_apps").await.json().await.unwrap();
    assert!(list.apps.is_empty());
    expect_error(
        node.post_json("/api/apps/stop_app", &json!({"app_id": "web"}))
            .await,
        StatusCode::NOT_FOUND,
        "app_not_found",
    )
    .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_held_by_another_node_is_enough() {
    let a = Node::start().await;
    let b = Node::start_with(a.listen.first()).await;
    let module = a.upload(b"\0asm far away").await;

    // B lacks the blob, but A holds it: B accepts the deploy and forwards it to the leader.
    let response = b
        .post_json("/v1/apps", &manifest("far", "1", 1, &module))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(b.status("far").await.deployed_by, b.peer_id);
    // Reads on the leader show it too once it applied the entry (it committed it first).
    assert_eq!(a.status("far").await.version, "1");

    let nobody = format!("blake3:{}", "1".repeat(64));
    expect_error(
        b.post_json("/v1/apps", &manifest("far", "2", 1, &nobody))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "blob_not_found",
    )
    .await;
    assert_eq!(b.status("far").await.version, "1");
    b.stop().await;
    a.stop().await;
}
