use super::*;

/// Every `$ref` in `value`, recursively.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => out.push(target.clone()),
                    _ => refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for target in found {
        let (kind, name) = target
            .strip_prefix("#/components/")
            .and_then(|t| t.split_once('/'))
            .unwrap_or_else(|| panic!("{target} is not a component reference"));
        assert!(
            doc["components"][kind].get(name).is_some(),
            "{target} names no component"
        );
    }
}

#[test]
fn every_operation_but_health_may_be_rate_limited() {
    let doc = document();
    let limited = json!({"$ref": "#/components/responses/RateLimited"});
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let is_health = path == "/v1/health" && method == "get";
            assert_eq!(
                operation["responses"].get("429") == Some(&limited),
                !is_health,
                "{method} {path}"
            );
        }
    }
    let response = &doc["components"]["responses"]["RateLimited"];
    assert!(response["headers"].get("Retry-After").is_some());
}

#[test]
fn the_app_endpoints_are_documented() {
    let doc = document();
    for (path, method) in [
        ("/v1/cluster", "get"),
        ("/v1/apps", "get"),
        ("/v1/apps", "post"),
        ("/v1/apps/{name}", "get"),
        ("/v1/apps/{name}", "delete"),
        ("/v1/apps/{name}/scale", "post"),
        ("/v1/apps/{name}/logs", "get"),
        ("/v1/apps/{name}/versions", "get"),
        ("/v1/apps/{name}/rollback", "post"),
        ("/v1/apps/{name}/promote", "post"),
        ("/v1/discover/apps", "get"),
        ("/v1/discover/apps/{name}", "get"),
        ("/v1/join-ticket", "get"),
        ("/api/apps/deploy_app", "post"),
        ("/api/apps/list_apps", "get"),
        ("/api/apps/get_app_status", "get"),
        ("/api/apps/stop_app", "post"),
        ("/api/apps/scale_app", "post"),
        ("/v1/volumes", "get"),
        ("/v1/apps/{name}/volumes/{volume}/snapshot", "post"),
    ] {
        assert!(doc["paths"][path].get(method).is_some(), "{method} {path}");
    }
}

#[test]
fn every_app_write_documents_its_signature_and_the_owner_rule() {
    let doc = document();
    for (path, method) in [
        ("/v1/apps", "post"),
        ("/v1/apps/{name}", "delete"),
        ("/v1/apps/{name}/scale", "post"),
        ("/v1/apps/{name}/rollback", "post"),
        ("/v1/apps/{name}/promote", "post"),
        ("/api/apps/deploy_app", "post"),
        ("/api/apps/stop_app", "post"),
        ("/api/apps/scale_app", "post"),
    ] {
        let operation = &doc["paths"][path][method];
        let headers: Vec<&str> = operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            headers,
            ["x-mycel-key", "x-mycel-issued-at", "x-mycel-signature"],
            "{method} {path}"
        );
        for status in ["401", "403"] {
            assert!(
                operation["responses"].get(status).is_some(),
                "{method} {path} {status}"
            );
        }
    }
    let owner = &doc["components"]["schemas"]["AppStatus"]["properties"]["owner"];
    assert_eq!(owner["type"], "string");
}

#[test]
fn the_bearer_token_is_documented_and_health_is_open() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert!(
        scheme["description"]
            .as_str()
            .unwrap()
            .contains("401 (unauthorized)")
    );
    assert_eq!(doc["security"], json!([{}, {"bearer": []}]));
    assert_eq!(doc["paths"]["/v1/health"]["get"]["security"], json!([]));
    assert_eq!(
        doc["paths"]["/v1/join-ticket"]["get"]["security"],
        json!([{"bearer": []}])
    );
}

#[test]
fn the_seed_deploy_takes_a_manifest_or_a_seed_body_and_answers_warnings() {
    let doc = document();
    let operation = &doc["paths"]["/api/apps/deploy_app"]["post"];
    let branches = &operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"];
    assert_eq!(
        branches,
        &json!([
            {"$ref": "#/components/schemas/Manifest"},
            {"$ref": "#/components/schemas/SeedDeploy"}
        ])
    );
    let error_422 = operation["responses"]["422"]["description"]
        .as_str()
        .unwrap();
    assert!(
        error_422.contains("source_deploy_unsupported"),
        "{error_422}"
    );
    let seed = &doc["components"]["schemas"]["SeedDeploy"]["properties"];
    for field in [
        "image",
        "replicas",
        "resource_requirements",
        "network_config",
        "runtime_config",
        "source_code_hash",
        "build_config",
        "target_nodes",
    ] {
        assert!(seed.get(field).is_some(), "SeedDeploy.{field}");
    }
    let warnings = &doc["components"]["schemas"]["SeedDeployed"]["properties"]["warnings"];
    assert_eq!(warnings["type"], "array");
}
