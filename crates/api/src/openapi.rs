//! `GET /v1/openapi.json`: an OpenAPI 3 description of every endpoint this node serves. An
//! end-to-end test (`tests/tests/api.rs`) calls every path it names on a running node.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {
        "schema": {"$ref": format!("#/components/schemas/{schema}")}
    }}})
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

/// The document.
pub fn document() -> Value {
    let name_param = json!({
        "name": "name", "in": "path", "required": true,
        "schema": {"type": "string"}, "description": "The app's name"
    });
    let hash_param = json!({
        "name": "hash", "in": "path", "required": true,
        "schema": {"type": "string", "pattern": "^blake3:[0-9a-f]{64}$"}
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "mycel node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every node of a mycel mesh serves this API. Errors are always {error, code}."
        },
        "paths": {
            "/v1/health": {"get": {
                "summary": "Is this node up",
                "security": [],
                "responses": {"200": json_response("The node answers", "Health")}
            }},
            "/v1/nodes": {"get": {
                "summary": "The mesh as this node sees it",
                "responses": {
                    "200": json_response("Every known node, this one first", "Nodes"),
                    "503": error_response("The node is shutting down")
                }
            }},
            "/v1/cluster": {"get": {
                "summary": "The placement group as this node sees it",
                "responses": {"200": json_response("Leader, term, voters, learners", "Cluster")}
            }},
            "/v1/apps": {
                "get": {
                    "summary": "Every app deployed in the mesh, by name",
                    "responses": {"200": json_response("The apps", "Apps")}
                },
                "post": {
                    "summary": "Deploy an app; the same name again is a new version, rolled out",
                    "description": "Every blob the manifest names must be uploaded first (POST /v1/blobs) and held by some node.",
                    "requestBody": json_body("Manifest"),
                    "responses": {
                        "201": json_response("Committed by the placement group", "Deployed"),
                        "400": error_response("Not a valid manifest (invalid_manifest), or refused by the group (rejected)"),
                        "413": error_response("Larger than a manifest may be (too_large)"),
                        "422": error_response("A blob it names is held by no node in reach (blob_not_found)"),
                        "503": error_response("The placement group has no quorum (no_quorum)")
                    }
                }
            },
            "/v1/apps/{name}": {
                "get": {
                    "summary": "An app and its instances",
                    "parameters": [name_param.clone()],
                    "responses": {
                        "200": json_response("The app", "AppStatus"),
                        "404": error_response("No such app (app_not_found)")
                    }
                },
                "delete": {
                    "summary": "Remove an app and all its instances",
                    "parameters": [name_param.clone()],
                    "responses": {
                        "200": json_response("Removed", "Removed"),
                        "404": error_response("No such app (app_not_found)"),
                        "503": error_response("The placement group has no quorum (no_quorum)")
                    }
                }
            },
            "/v1/apps/{name}/scale": {"post": {
                "summary": "Change how many instances of an app run",
                "parameters": [name_param.clone()],
                "requestBody": json_body("ScaleRequest"),
                "responses": {
                    "200": json_response("The app after the change", "AppStatus"),
                    "400": error_response("Not a scale request (bad_request), or refused (rejected)"),
                    "404": error_response("No such app (app_not_found)"),
                    "503": error_response("The placement group has no quorum (no_quorum)")
                }
            }},
            "/v1/discover/apps": {"get": {
                "summary": "The apps found through DHT discovery (not the placement state), with the nodes that announce them",
                "description": "Asks the home nodes of every directory shard; answers within the lookup timeout (3 s) with what arrived, and at once on a node with no peers.",
                "responses": {"200": json_response("The apps, by name", "DiscoveredApps")}
            }},
            "/v1/discover/apps/{name}": {"get": {
                "summary": "One app looked up by name through the DHT",
                "parameters": [name_param.clone()],
                "responses": {
                    "200": json_response("The app and its providers", "DiscoveredApp"),
                    "404": error_response("No node announces it (app_not_found)")
                }
            }},
            "/v1/apps/{name}/logs": {"get": {
                "summary": "An app's log lines from every instance on every node, as server-sent events",
                "parameters": [name_param, {
                    "name": "follow", "in": "query", "required": false,
                    "schema": {"type": "boolean", "default": false},
                    "description": "Keep the stream open and send new lines as they come"
                }],
                "responses": {
                    "200": {
                        "description": "One event per log line; each event's data is a LogEvent as JSON. Without follow the stream ends after the recent lines.",
                        "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/LogEvent"}}}
                    },
                    "400": error_response("Not a valid query (bad_request)"),
                    "404": error_response("No such app (app_not_found)")
                }
            }},
            "/api/apps/deploy_app": {"post": {
                "summary": "Seed-compatible: deploy an app (as POST /v1/apps)",
                "requestBody": json_body("Manifest"),
                "responses": {
                    "201": json_response("Committed", "SeedDeployed"),
                    "400": error_response("Not a valid manifest"),
                    "413": error_response("Larger than a manifest may be"),
                    "422": error_response("A blob it names is held by no node in reach"),
                    "503": error_response("The placement group has no quorum")
                }
            }},
            "/api/apps/list_apps": {"get": {
                "summary": "Seed-compatible: every app",
                "responses": {"200": json_response("The apps", "SeedAppList")}
            }},
            "/api/apps/get_app_status": {"get": {
                "summary": "Seed-compatible: an app and its instances",
                "parameters": [{
                    "name": "app_id", "in": "query", "required": true,
                    "schema": {"type": "string"}, "description": "The app's name"
                }],
                "responses": {
                    "200": json_response("The app", "SeedAppStatus"),
                    "400": error_response("app_id is missing"),
                    "404": error_response("No such app")
                }
            }},
            "/api/apps/stop_app": {"post": {
                "summary": "Seed-compatible: remove an app and all its instances",
                "requestBody": json_body("SeedAppRef"),
                "responses": {
                    "200": json_response("Removed", "SeedStopped"),
                    "400": error_response("Not the expected body"),
                    "404": error_response("No such app"),
                    "503": error_response("The placement group has no quorum")
                }
            }},
            "/api/apps/scale_app": {"post": {
                "summary": "Seed-compatible: change how many instances of an app run",
                "requestBody": json_body("SeedScale"),
                "responses": {
                    "200": json_response("Scaled", "SeedScale"),
                    "400": error_response("Not the expected body, or refused"),
                    "404": error_response("No such app"),
                    "503": error_response("The placement group has no quorum")
                }
            }},
            "/v1/blobs": {"post": {
                "summary": "Store a blob; with ?hash, bytes that hash otherwise are refused",
                "parameters": [{
                    "name": "hash", "in": "query", "required": false,
                    "schema": {"type": "string", "pattern": "^blake3:[0-9a-f]{64}$"}
                }],
                "requestBody": {"required": true, "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}
                }}},
                "responses": {
                    "201": json_response("Stored", "BlobStored"),
                    "400": error_response("Malformed hash, hash mismatch, or an interrupted upload"),
                    "413": error_response("Larger than this node accepts"),
                    "500": error_response("The node could not store it")
                }
            }},
            "/v1/images": {"get": {
                "summary": "The images pushed to the mesh",
                "responses": {"200": json_response("Images", "Images")}
            }, "post": {
                "summary": "Push a `docker save` or OCI image archive: its config and layers become blobs, its name:tag is recorded for the mesh",
                "parameters": [{
                    "name": "name", "in": "query", "required": false,
                    "schema": {"type": "string"}
                }],
                "requestBody": {"required": true, "content": {"application/x-tar": {
                    "schema": {"type": "string", "format": "binary"}
                }}},
                "responses": {
                    "201": json_response("Pushed", "ImagePushed"),
                    "400": error_response("Not a valid image archive (paths, links, digests, sizes, names)"),
                    "413": error_response("Larger than this node accepts"),
                    "503": error_response("The placement group has no quorum")
                }
            }},
            "/v1/blobs/{hash}": {"get": {
                "summary": "A blob's bytes, fetched from peers (and verified) when this node lacks it",
                "parameters": [hash_param],
                "responses": {
                    "200": {"description": "The bytes", "content": {"application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"}
                    }}},
                    "400": error_response("Not a blob hash"),
                    "404": error_response("No node in reach holds it"),
                    "502": error_response("Every provider failed")
                }
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {}}}}
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "OpenMetrics text", "content": {"application/openmetrics-text": {}}}}
            }}
        },
        "components": {
            "schemas": merged([basic_schemas(), app_schemas(), seed_schemas()]),
            "securitySchemes": {"bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API bound to loopback needs no token. Bound elsewhere, every request but GET /v1/health must send `Authorization: Bearer <token>`, the token in the node's <data-dir>/api.token; without it, or with another, the answer is 401 (unauthorized) with `WWW-Authenticate: Bearer`, and nothing changes."
            }},
            "responses": {
                "Unauthorized": error_response("The API needs its token and the request lacks it or sent another (unauthorized)")
            }
        },
        // No token on loopback, the bearer token elsewhere.
        "security": [{}, {"bearer": []}],
    })
}

fn merged(parts: impl IntoIterator<Item = Value>) -> Value {
    let mut all = serde_json::Map::new();
    for part in parts {
        if let Value::Object(map) = part {
            all.extend(map);
        }
    }
    Value::Object(all)
}

fn basic_schemas() -> Value {
    json!({
        "Error": {"type": "object", "required": ["error", "code"], "properties": {
            "error": {"type": "string"}, "code": {"type": "string"}
        }},
        "DiscoveredApps": {"type": "object", "required": ["apps"], "properties": {
            "apps": {"type": "array", "items": {"$ref": "#/components/schemas/DiscoveredApp"}}
        }},
        "DiscoveredApp": {"type": "object", "required": ["name", "version", "kind", "publisher", "providers", "manifest_hash"], "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "kind": {"type": "string", "enum": ["wasm", "container"]},
            "publisher": {"type": "string", "description": "Peer id of the key that deployed it"},
            "providers": {"type": "array", "items": {"type": "string"}, "description": "Peer ids of the nodes that announce they run this version"},
            "manifest_hash": {"type": "string", "pattern": "^blake3:[0-9a-f]{64}$"},
            "description": {"type": "string"}
        }},
        "Health": {"type": "object", "required": ["status", "peer_id"], "properties": {
            "status": {"type": "string"}, "peer_id": {"type": "string"}
        }},
        "BlobStored": {"type": "object", "required": ["hash", "size"], "properties": {
            "hash": {"type": "string"}, "size": {"type": "integer", "minimum": 0}
        }},
        "Images": {"type": "object", "required": ["images"], "properties": {
            "images": {"type": "array", "items": {"type": "object", "required": ["image", "hash", "id", "layers", "size", "pushed_by", "pushed_at_ms"], "properties": {
                "image": {"type": "string"}, "hash": {"type": "string"}, "id": {"type": "string"},
                "layers": {"type": "integer", "minimum": 0}, "size": {"type": "integer", "minimum": 0},
                "pushed_by": {"type": "string"}, "pushed_at_ms": {"type": "integer", "minimum": 0}
            }}}
        }},
        "ImagePushed": {"type": "object", "required": ["image", "hash", "layers"], "properties": {
            "image": {"type": "string"},
            "hash": {"type": "string"},
            "layers": {"type": "array", "items": {"type": "object", "required": ["digest", "hash", "size"], "properties": {
                "digest": {"type": "string"}, "hash": {"type": "string"}, "size": {"type": "integer", "minimum": 0}
            }}}
        }},
        "Nodes": {"type": "object", "required": ["nodes"], "properties": {
            "nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}
        }},
        "Node": {"type": "object", "required": ["peer_id", "name", "status", "addrs", "labels", "runtimes", "resources", "raft", "last_seen_ms"], "properties": {
            "peer_id": {"type": "string"},
            "name": {"type": "string"},
            "status": {"type": "string", "enum": ["alive", "suspect", "dead"]},
            "addrs": {"type": "array", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "runtimes": {"type": "array", "items": {"type": "string", "enum": ["wasm", "docker", "process"]}},
            "resources": {"type": "object", "properties": {
                "cpu_cores": {"type": "integer"}, "memory_mb": {"type": "integer"},
                "memory_free_mb": {"type": "integer"}, "disk_free_mb": {"type": "integer"}
            }},
            "policy": {"type": "object", "description": "The node owner's limits; absent fields mean no limit", "properties": {
                "max_instances": {"type": "integer"}, "memory_mb": {"type": "integer"},
                "cpu_millis": {"type": "integer"},
                "allowed_owners": {"type": "array", "items": {"type": "string"}}
            }},
            "raft": {"type": "string", "enum": ["leader", "voter", "learner", "none"]},
            "last_seen_ms": {"type": "integer", "description": "How long ago the answering node last heard from it"},
            "departed": {"type": "boolean"},
            "self": {"type": "boolean"}
        }},
        "Cluster": {"type": "object", "required": ["leader", "term", "voters", "learners", "committed"], "properties": {
            "leader": {"type": "string", "nullable": true, "description": "Peer id; null during an election or without quorum"},
            "term": {"type": "integer", "minimum": 0},
            "voters": {"type": "array", "items": {"type": "string"}},
            "learners": {"type": "array", "items": {"type": "string"}},
            "committed": {"type": "integer", "nullable": true, "minimum": 0}
        }}
    })
}

fn app_schemas() -> Value {
    let blob_ref = json!({"type": "string", "pattern": "^blake3:[0-9a-f]{64}$",
        "description": "The hash of an uploaded blob (paths are the CLI's business)"});
    let rule = json!({"type": "object", "required": ["key", "op"], "additionalProperties": false, "properties": {
        "key": {"type": "string"},
        "op": {"type": "string", "enum": ["in", "not_in", "exists"]},
        "values": {"type": "array", "items": {"type": "string"}}
    }});
    json!({
        "Manifest": {
            "type": "object", "required": ["name", "version"], "additionalProperties": false,
            "description": "Exactly one of wasm and container. Unknown fields are refused.",
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
                "version": {"type": "string", "pattern": "^[A-Za-z0-9._+-]{1,64}$"},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1},
                "wasm": {"type": "object", "required": ["module"], "additionalProperties": false, "properties": {
                    "module": blob_ref.clone()
                }},
                "container": {"type": "object", "additionalProperties": false,
                    "description": "Exactly one of image and archive",
                    "properties": {
                        "image": {"type": "string"},
                        "archive": blob_ref,
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "command": {"type": "array", "items": {"type": "string"}}
                    }
                },
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "resources": {"type": "object", "additionalProperties": false, "properties": {
                    "memory_mb": {"type": "integer", "minimum": 1, "default": 64},
                    "cpu": {"type": "number", "exclusiveMinimum": 0, "default": 0.1, "description": "Cores"}
                }},
                "health": {"type": "object", "required": ["path"], "additionalProperties": false, "properties": {
                    "path": {"type": "string", "pattern": "^/"}
                }},
                "placement": {"type": "object", "additionalProperties": false, "properties": {
                    "required": {"type": "array", "items": rule.clone()},
                    "preferred": {"type": "array", "items": rule},
                    "strategy": {"type": "string", "enum": ["spread", "binpack"]}
                }}
            }
        },
        "Deployed": {"type": "object", "required": ["name", "version"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"}
        }},
        "Apps": {"type": "object", "required": ["apps"], "properties": {
            "apps": {"type": "array", "items": {"$ref": "#/components/schemas/AppSummary"}}
        }},
        "AppSummary": {"type": "object", "required": ["name", "version", "kind", "replicas", "running"], "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "kind": {"type": "string", "enum": ["wasm", "container"]},
            "replicas": {"type": "integer", "minimum": 0, "description": "Wanted instances"},
            "running": {"type": "integer", "minimum": 0, "description": "Instances in state running"}
        }},
        "AppStatus": {"type": "object", "required": ["name", "version", "kind", "replicas", "instances", "deployed_by", "manifest"], "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "kind": {"type": "string", "enum": ["wasm", "container"]},
            "replicas": {"type": "integer", "minimum": 0},
            "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}},
            "deployed_by": {"type": "string", "description": "Peer id of the node that took the deploy"},
            "unplaced": {"type": "string", "description": "Why some replicas have no node; absent when all have one"},
            "manifest": {"$ref": "#/components/schemas/Manifest"}
        }},
        "Instance": {"type": "object", "required": ["id", "node", "state", "runtime"], "properties": {
            "id": {"type": "string"},
            "node": {"type": "string", "description": "Peer id of the node it is placed on"},
            "state": {"type": "string", "enum": ["pending", "starting", "running", "failed", "stopped"]},
            "runtime": {"type": "string", "enum": ["wasm", "docker"]}
        }},
        "ScaleRequest": {"type": "object", "required": ["replicas"], "additionalProperties": false, "properties": {
            "replicas": {"type": "integer", "minimum": 0, "maximum": 1000}
        }},
        "Removed": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}
        }},
        "LogEvent": {"type": "object", "required": ["instance", "node", "at_ms", "stream", "line"], "properties": {
            "instance": {"type": "string"},
            "node": {"type": "string", "description": "Peer id of the node the instance runs on"},
            "at_ms": {"type": "integer", "description": "When the line was written, ms since the Unix epoch"},
            "stream": {"type": "string", "enum": ["stdout", "stderr"]},
            "line": {"type": "string"}
        }}
    })
}

fn seed_schemas() -> Value {
    let status = json!({"type": "string", "enum": ["stopped", "pending", "degraded", "running"]});
    json!({
        "SeedDeployed": {"type": "object", "required": ["app_id", "version", "status"], "properties": {
            "app_id": {"type": "string"}, "version": {"type": "string"},
            "status": {"type": "string", "enum": ["deployed"]}
        }},
        "SeedAppList": {"type": "object", "required": ["apps"], "properties": {
            "apps": {"type": "array", "items": {"$ref": "#/components/schemas/SeedAppEntry"}}
        }},
        "SeedAppEntry": {"type": "object", "required": ["app_id", "name", "version", "replicas", "running", "status"], "properties": {
            "app_id": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "string"},
            "replicas": {"type": "integer", "minimum": 0}, "running": {"type": "integer", "minimum": 0},
            "status": status.clone()
        }},
        "SeedAppStatus": {"type": "object", "required": ["app_id", "status", "replicas", "running", "instances"], "properties": {
            "app_id": {"type": "string"}, "status": status,
            "replicas": {"type": "integer", "minimum": 0}, "running": {"type": "integer", "minimum": 0},
            "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}}
        }},
        "SeedAppRef": {"type": "object", "required": ["app_id"], "properties": {
            "app_id": {"type": "string"}
        }},
        "SeedScale": {"type": "object", "required": ["app_id", "replicas"], "properties": {
            "app_id": {"type": "string"}, "replicas": {"type": "integer", "minimum": 0, "maximum": 1000}
        }},
        "SeedStopped": {"type": "object", "required": ["app_id", "status"], "properties": {
            "app_id": {"type": "string"}, "status": {"type": "string", "enum": ["stopped"]}
        }}
    })
}

#[cfg(test)]
mod tests {
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
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{target} is not a schema reference"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{target} names no schema"
            );
        }
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
            ("/v1/discover/apps", "get"),
            ("/v1/discover/apps/{name}", "get"),
            ("/api/apps/deploy_app", "post"),
            ("/api/apps/list_apps", "get"),
            ("/api/apps/get_app_status", "get"),
            ("/api/apps/stop_app", "post"),
            ("/api/apps/scale_app", "post"),
        ] {
            assert!(doc["paths"][path].get(method).is_some(), "{method} {path}");
        }
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
    }
}
