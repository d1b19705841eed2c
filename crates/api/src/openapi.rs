//! `GET /v1/openapi.json`: an OpenAPI 3 description of every endpoint this node serves. An
//! end-to-end test (`tests/tests/api.rs`) calls every path it names on a running node.

use serde_json::{Value, json};

mod rollouts;
mod secrets;
mod seed;
mod volumes;

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
    let mut doc = described();
    let signed = signed_headers();
    let errors = write_errors();
    for more in [
        rollouts::paths(&signed, &errors),
        secrets::paths(&signed, &errors),
        seed::paths(&signed, &errors),
        volumes::paths(&errors),
    ] {
        if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), more) {
            paths.extend(more);
        }
    }
    with_rate_limits(doc)
}

/// Every operation but the health probe may be refused with `429 rate_limited` (see the
/// `limit` module): the answer is added to each, and described once under
/// `components/responses/RateLimited`.
fn with_rate_limits(mut doc: Value) -> Value {
    let mut limited = error_response(
        "This client sent more requests than the node's rate limit allows (rate_limited); nothing changed. Retry after the seconds that Retry-After gives.",
    );
    limited["headers"] = json!({"Retry-After": {
        "description": "Seconds to wait before the next request is served",
        "schema": {"type": "integer", "minimum": 1}
    }});
    doc["components"]["responses"]["RateLimited"] = limited;
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, operations) in paths {
            let Some(operations) = operations.as_object_mut() else {
                continue;
            };
            for (method, operation) in operations {
                if path == "/v1/health" && method == "get" {
                    continue;
                }
                operation["responses"]["429"] =
                    json!({"$ref": "#/components/responses/RateLimited"});
            }
        }
    }
    doc
}

/// The document as its operations describe it.
fn described() -> Value {
    let name_param = json!({
        "name": "name", "in": "path", "required": true,
        "schema": {"type": "string"}, "description": "The app's name"
    });
    let hash_param = json!({
        "name": "hash", "in": "path", "required": true,
        "schema": {"type": "string", "pattern": "^blake3:[0-9a-f]{64}$"}
    });
    let signed = signed_headers();
    let with_signed = |first: &Value| -> Value {
        std::iter::once(first)
            .chain(signed.as_array().into_iter().flatten())
            .cloned()
            .collect()
    };
    let mut remove_parameters = with_signed(&name_param);
    if let Some(list) = remove_parameters.as_array_mut() {
        list.push(json!({"name": "purge", "in": "query", "required": false,
            "description": "Delete its volumes and their snapshots too (signed as `stop and purge`, action 7); also for an app already stopped",
            "schema": {"type": "boolean", "default": false}}));
        list.push(json!({"name": "force", "in": "query", "required": false,
            "description": "Stop it even though other apps depend on it (else 409 depended_on)",
            "schema": {"type": "boolean", "default": false}}));
    }
    let WriteErrors {
        not_owner,
        bad_signature,
        ..
    } = write_errors();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "mycel node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every node of a mycel mesh serves this API. Errors are always {error, code}."
        },
        "paths": {
            "/": {"get": {
                "summary": "The dashboard: one HTML page that reads this API (also at /ui/…)",
                "security": [],
                "responses": {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}}
            }},
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
            "/v1/instances": {"get": {
                "summary": "Every instance of every app, in one read, by app then id",
                "responses": {"200": json_response("The instances", "Instances")}
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
                    "parameters": signed.clone(),
                    "requestBody": json_body("Manifest"),
                    "responses": {
                        "201": json_response("Committed by the placement group", "Deployed"),
                        "400": error_response("Not a valid manifest (invalid_manifest), refused by the group (rejected), or malformed x-mycel-* headers (bad_signature)"),
                        "401": bad_signature.clone(),
                        "403": not_owner.clone(),
                        "409": error_response("A port it publishes is another app's (port_taken); nothing changed"),
                        "413": error_response("Larger than a manifest may be (too_large)"),
                        "422": error_response("A blob it names is held by no node in reach (blob_not_found), it names a secret the app has not (missing_secret), or a dependency that is not deployed (missing_dependency) or whose version is outside its requirement (dependency_version)"),
                        "503": error_response("The placement group has no quorum or its leader is out of reach (no_quorum), did not confirm the commit in time (commit_unconfirmed: it may still commit; look before sending again), or is stopping on this node (stopping)")
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
                    "summary": "Remove an app and all its instances; its volumes are kept for its owner unless purge=true",
                    "parameters": remove_parameters,
                    "responses": {
                        "200": json_response("Removed", "Removed"),
                        "400": error_response("Malformed x-mycel-* headers (bad_signature)"),
                        "401": bad_signature.clone(),
                        "403": not_owner.clone(),
                        "404": error_response("No such app (app_not_found)"),
                        "409": error_response("Other apps depend on it, and force is not set (depended_on); nothing changed"),
                        "503": error_response("The placement group has no quorum or its leader is out of reach (no_quorum), did not confirm the commit in time (commit_unconfirmed: it may still commit; look before sending again), or is stopping on this node (stopping)")
                    }
                }
            },
            "/v1/apps/{name}/scale": {"post": {
                "summary": "Change how many instances of an app run",
                "parameters": with_signed(&name_param),
                "requestBody": json_body("ScaleRequest"),
                "responses": {
                    "200": json_response("The app after the change", "AppStatus"),
                    "400": error_response("Not a scale request (bad_request), refused (rejected), or malformed x-mycel-* headers (bad_signature)"),
                    "401": bad_signature.clone(),
                    "403": not_owner.clone(),
                    "404": error_response("No such app (app_not_found)"),
                    "503": error_response("The placement group has no quorum or its leader is out of reach (no_quorum), did not confirm the commit in time (commit_unconfirmed: it may still commit; look before sending again), or is stopping on this node (stopping)")
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
                "parameters": signed.clone(),
                "requestBody": json_body("SeedAppRef"),
                "responses": {
                    "200": json_response("Removed", "SeedStopped"),
                    "400": error_response("Not the expected body, or malformed x-mycel-* headers"),
                    "401": bad_signature.clone(),
                    "403": not_owner.clone(),
                    "404": error_response("No such app"),
                    "503": error_response("The placement group has no quorum")
                }
            }},
            "/api/apps/scale_app": {"post": {
                "summary": "Seed-compatible: change how many instances of an app run",
                "parameters": signed,
                "requestBody": json_body("SeedScale"),
                "responses": {
                    "200": json_response("Scaled", "SeedScale"),
                    "400": error_response("Not the expected body, refused, or malformed x-mycel-* headers"),
                    "401": bad_signature,
                    "403": not_owner,
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
            "/v1/join-ticket": {"get": {
                "summary": "The ticket a new node joins this node's mesh with (`mycel up --join`)",
                "description": "A private mesh's ticket holds its secret, so this endpoint always needs the API token, on loopback too (the node keeps it in <data-dir>/api.token). An open mesh's ticket holds no secret.",
                "security": [{"bearer": []}],
                "responses": {
                    "200": json_response("The ticket, whether the mesh is private, and the addresses it names", "JoinTicket"),
                    "401": error_response("No token, or another (unauthorized): the ticket is only for whoever holds the node's token"),
                    "503": error_response("The node is shutting down")
                }
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {}}}}
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "The classic Prometheus text format (0.0.4), or OpenMetrics when Accept asks for application/openmetrics-text", "content": {"text/plain": {}, "application/openmetrics-text": {}}}}
            }}
        },
        "components": {
            "schemas": merged([
                basic_schemas(),
                app_schemas(),
                rollouts::schemas(),
                secrets::schemas(),
                seed::schemas(),
                volumes::schemas(),
            ]),
            "securitySchemes": {"bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API bound to loopback needs no token, but for GET /v1/join-ticket. Bound elsewhere, every request but GET /v1/health must send `Authorization: Bearer <token>`, the token in the node's <data-dir>/api.token; without it, or with another, the answer is 401 (unauthorized) with `WWW-Authenticate: Bearer`, and nothing changes."
            }},
            "responses": {
                "Unauthorized": error_response("The API needs its token and the request lacks it or sent another (unauthorized)")
            }
        },
        // No token on loopback, the bearer token elsewhere.
        "security": [{}, {"bearer": []}],
    })
}

/// The answers every signed write may get.
struct WriteErrors {
    not_owner: Value,
    bad_signature: Value,
    no_quorum: Value,
}

fn write_errors() -> WriteErrors {
    WriteErrors {
        not_owner: error_response(
            "The app is owned by another key than the one that signed the request, or (unsigned) this node's (not_owner); nothing changed",
        ),
        bad_signature: error_response(
            "The x-mycel-* headers are malformed (400 bad_signature), or the signature does not hold (401 bad_signature), or it was signed more than 5 minutes away from now or was used already (401 stale_request); nothing changed",
        ),
        no_quorum: error_response(
            "The placement group has no quorum or its leader is out of reach (no_quorum), did not confirm the commit in time (commit_unconfirmed: it may still commit; look before sending again), or is stopping on this node (stopping)",
        ),
    }
}

/// The headers that sign a deploy, scale or stop (see `mycel_protocol::ownership`).
fn signed_headers() -> Value {
    let signed_bytes = "The signature covers, in this order: the bytes `mycel app request v1` and a zero byte; the 32-byte public key; x-mycel-issued-at as a big-endian u64; one byte for the action (1 deploy, 2 scale, 3 stop, 4 promote, 5 set secret, 6 remove secret); the app's name as a big-endian u32 length and its UTF-8 bytes; for a deploy, the 32-byte BLAKE3 hash of the manifest's canonical JSON (the manifest as this API parses it, serialized back compactly: fields in the Manifest schema's order, maps sorted by key, defaults filled in, empty sections left out); for a scale, the replicas as a big-endian u32. The action is what the request asks for, so one signature is good for the /v1 endpoint and the seed-compatible one alike; a seed body (see /api/apps/deploy_app) signs the deploy of the manifest it translates into.";
    json!([
        {
            "name": "x-mycel-key", "in": "header", "required": false,
            "schema": {"type": "string", "pattern": "^ed25519:[0-9a-f]{64}$"},
            "description": "The ed25519 public key that signs this deploy, scale or stop. Without the three x-mycel-* headers the node signs the request with its own identity key, so an app deployed unsigned is owned by the node that took it. The first key to deploy an app owns it; a redeploy, scale or stop signed by another key is refused (403 not_owner)."
        },
        {
            "name": "x-mycel-issued-at", "in": "header", "required": false,
            "schema": {"type": "integer", "minimum": 0},
            "description": "When the request was signed, in milliseconds since the Unix epoch: within 5 minutes of the node's clock and of the placement group's leader, and later than the last request this key made for this app that was accepted (else 401 stale_request)."
        },
        {
            "name": "x-mycel-signature", "in": "header", "required": false,
            "schema": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
            "description": signed_bytes
        }
    ])
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
            "kind": {"type": "string", "enum": ["wasm", "container", "process"]},
            "publisher": {"type": "string", "description": "Peer id of the key that deployed it"},
            "providers": {"type": "array", "items": {"type": "string"}, "description": "Peer ids of the nodes that announce they run this version"},
            "manifest_hash": {"type": "string", "pattern": "^blake3:[0-9a-f]{64}$"},
            "description": {"type": "string"}
        }},
        "JoinTicket": {"type": "object", "required": ["ticket", "private", "peer_id", "addrs"], "properties": {
            "ticket": {"type": "string", "pattern": "^mycel[a-z2-7]+$", "description": "One line: `mycel up --join <ticket>`"},
            "private": {"type": "boolean", "description": "Whether the ticket holds the mesh's secret"},
            "peer_id": {"type": "string"},
            "addrs": {"type": "array", "items": {"type": "string"}, "description": "The addresses the ticket names, each ending in /p2p/<peer id>"}
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
            "committed": {"type": "integer", "nullable": true, "minimum": 0},
            "catching_up": {"type": "boolean", "description": "The answering node is not in touch with a leader (just restarted, an election, or no quorum): its view and term are the last it knows"}
        }}
    })
}

fn app_schemas() -> Value {
    let blob_ref = json!({"type": "string", "pattern": "^blake3:[0-9a-f]{64}$",
        "description": "The hash of an uploaded blob (paths are the CLI's business)"});
    let rule = json!({"type": "object", "required": ["key", "op"], "additionalProperties": false, "properties": {
        "key": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,63}$"},
        "op": {"type": "string", "enum": ["in", "not_in", "exists"]},
        "values": {"type": "array", "maxItems": 32, "items": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,63}$"}}
    }});
    let balance = json!({"type": "object", "additionalProperties": false,
        "description": "How every gateway spreads requests over the app's healthy instances. A value out of range or an unknown strategy is 400 invalid_manifest.",
        "properties": {
            "strategy": {"type": "string", "default": "least_request",
                "enum": ["least_request", "round_robin", "least_connections", "weighted", "latency"],
                "description": "least_request: power of two random choices over in-flight requests weighted by a peak-EWMA of latency; weighted: by the node's `weight` label, else its cores; latency: the lowest EWMA latency, the local instance when close"},
            "retries": {"type": "integer", "minimum": 0, "maximum": 10, "default": 2,
                "description": "Retries on another instance, when safe (no byte of the answer sent, an idempotent method) and within a budget of about 20% of requests"},
            "hedge": {"type": "boolean", "default": true,
                "description": "A request without a body and with an idempotent method whose instance stays silent past 8 times its usual latency (at least 1 s) is sent to another instance too; the first answer wins and the silent instance is skipped 2 s"},
            "outlier": {"type": "object", "additionalProperties": false,
                "description": "An instance failing consecutive_failures requests in a row (connection error, timeout, 5xx) is ejected for base_ejection_ms × the times it was ejected, never more than max_ejection_percent of the instances",
                "properties": {
                    "consecutive_failures": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5},
                    "base_ejection_ms": {"type": "integer", "minimum": 1, "maximum": 3600000, "default": 30000},
                    "max_ejection_percent": {"type": "integer", "minimum": 0, "maximum": 100, "default": 50}
                }
            }
        }
    });
    let ports = json!({"type": "array", "maxItems": 16,
    "description": "TCP ports published at every node's ingress address, each handed to an instance's `container` port; a `published` port another app holds is 409 port_taken. Container and process apps only",
    "items": {"type": "object", "required": ["container", "published"], "additionalProperties": false,
        "properties": {
            "container": {"type": "integer", "minimum": 1, "maximum": 65535},
            "published": {"type": "integer", "minimum": 1, "maximum": 65535},
            "protocol": {"type": "string", "enum": ["tcp"], "default": "tcp"}
        }}});
    json!({
        "Manifest": {
            "type": "object", "required": ["name", "version"], "additionalProperties": false,
            "description": "Exactly one of wasm, container and process. Unknown fields are refused.",
            "oneOf": [{"required": ["wasm"]}, {"required": ["container"]}, {"required": ["process"]}],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
                "version": {"type": "string", "pattern": "^[A-Za-z0-9._+-]{1,64}$"},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1},
                "wasm": {"type": "object", "required": ["module"], "additionalProperties": false, "properties": {
                    "module": blob_ref.clone()
                }},
                "container": {"type": "object", "additionalProperties": false,
                    "description": "Exactly one of image and archive",
                    "oneOf": [{"required": ["image"]}, {"required": ["archive"]}],
                    "properties": {
                        "image": {"type": "string", "minLength": 1, "maxLength": 255,
                            "description": "name[:tag] or name@sha256:<64 hex>, as Docker parses it: lowercase path components, a registry host (with a port) first; anything else is 400 invalid_manifest"},
                        "archive": blob_ref.clone(),
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "command": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 4096}}
                    }
                },
                "process": {"type": "object", "required": ["binary"], "additionalProperties": false,
                    "description": "An executable run in a namespace sandbox on nodes that offer `process`",
                    "properties": {
                        "binary": blob_ref,
                        "args": {"type": "array", "items": {"type": "string"}, "maxItems": 64},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8080}
                    }
                },
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "resources": {"type": "object", "additionalProperties": false, "properties": {
                    "memory_mb": {"type": "integer", "minimum": 1, "default": 64},
                    "cpu": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1024, "default": 0.1, "description": "Cores"}
                }},
                "health": {"type": "object", "required": ["path"], "additionalProperties": false, "properties": {
                    "path": {"type": "string", "pattern": "^/"}
                }},
                "placement": {"type": "object", "additionalProperties": false, "properties": {
                    "required": {"type": "array", "items": rule.clone()},
                    "preferred": {"type": "array", "items": rule},
                    "strategy": {"type": "string", "enum": ["spread", "binpack"]}
                }},
                "update": {"$ref": "#/components/schemas/Update"},
                "scale": {"$ref": "#/components/schemas/Scale"},
                "ports": ports,
                "secrets": {"type": "array", "maxItems": 32, "uniqueItems": true,
                    "description": "The app's secrets it gets, by name: files at /run/secrets/<name> (containers, processes), SECRET_<NAME> in its environment (wasm). A name the app has no secret for is 422 missing_secret",
                    "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}},
                "volumes": {"type": "array", "maxItems": 8,
                    "description": "Directories the app keeps across restarts and redeploys: each a file system of its own on the node, mounted read-write at `path`. The app stays on the nodes that hold them; snapshots in the mesh let it move",
                    "items": {"type": "object", "required": ["name", "path", "size_mb"], "additionalProperties": false, "properties": {
                        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
                        "path": {"type": "string", "pattern": "^/", "maxLength": 256, "description": "Absolute, plain (no '.', '..', ':' or ','), not /, /proc, /sys, /dev, /etc, /app or /run/secrets"},
                        "size_mb": {"type": "integer", "minimum": 8, "maximum": 1048576},
                        "snapshot_every_ms": {"type": "integer", "minimum": 1000}
                    }}},
                "dependencies": {"type": "object", "maxProperties": 32,
                    "description": "The apps it needs, by name, each with a semver requirement on its version (\"^1\", \">=1.2, <2\"). A deploy while one is not deployed is 422 missing_dependency, while one's version is outside its requirement 422 dependency_version",
                    "additionalProperties": {"type": "string", "maxLength": 128}},
                "volume_grace_ms": {"type": "integer", "minimum": 0, "maximum": 86400000, "default": 60000,
                    "description": "How long the app waits for a node holding its volumes that is gone before it moves, restoring the latest snapshot"},
                "balance": balance
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
            "kind": {"type": "string", "enum": ["wasm", "container", "process"]},
            "replicas": {"type": "integer", "minimum": 0, "description": "Wanted instances"},
            "running": {"type": "integer", "minimum": 0, "description": "Instances in state running"}
        }},
        "AppStatus": {"type": "object", "required": ["name", "version", "kind", "replicas", "instances", "deployed_by", "manifest"], "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "kind": {"type": "string", "enum": ["wasm", "container", "process"]},
            "replicas": {"type": "integer", "minimum": 0},
            "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}},
            "deployed_by": {"type": "string", "description": "Peer id of the node that took the deploy"},
            "owner": {"type": "string", "pattern": "^ed25519:[0-9a-f]{64}$", "description": "The key that owns the app: only requests it signs redeploy, scale or stop it (a node's key for apps deployed unsigned through it). Absent when nobody owns it yet"},
            "unplaced": {"type": "string", "description": "Why some replicas have no node; absent when all have one"},
            "manifest": {"$ref": "#/components/schemas/Manifest"},
            "rollout": {"$ref": "#/components/schemas/Rollout"},
            "scale": {"$ref": "#/components/schemas/ScaleStatus"}
        }},
        "Instance": {"type": "object", "required": ["id", "node", "state", "runtime"], "properties": {
            "id": {"type": "string"},
            "node": {"type": "string", "description": "Peer id of the node it is placed on"},
            "state": {"type": "string", "enum": ["pending", "starting", "running", "failed", "stopped"]},
            "runtime": {"type": "string", "enum": ["wasm", "docker", "process"]},
            "error": {"type": "string", "description": "Why its node last failed to start or keep it (such as its owner's policy refusing it); absent once it runs"}
        }},
        "Instances": {"type": "object", "required": ["instances"], "properties": {
            "instances": {"type": "array", "items": {"allOf": [
                {"$ref": "#/components/schemas/Instance"},
                {"type": "object", "required": ["app"], "properties": {"app": {"type": "string"}}}
            ]}}
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

#[cfg(test)]
mod tests;
