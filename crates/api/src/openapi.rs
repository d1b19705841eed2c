//! `GET /v1/openapi.json`: an OpenAPI 3 description of every endpoint this node serves. It is
//! An end-to-end test (`tests/tests/api.rs`) calls every path it names on a running node.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

/// The document.
pub fn document() -> Value {
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
                "responses": {"200": json_response("The node answers", "Health")}
            }},
            "/v1/nodes": {"get": {
                "summary": "The mesh as this node sees it",
                "responses": {
                    "200": json_response("Every known node, this one first", "Nodes"),
                    "503": error_response("The node is shutting down")
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
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error", "code"], "properties": {
                "error": {"type": "string"}, "code": {"type": "string"}
            }},
            "Health": {"type": "object", "required": ["status", "peer_id"], "properties": {
                "status": {"type": "string"}, "peer_id": {"type": "string"}
            }},
            "BlobStored": {"type": "object", "required": ["hash", "size"], "properties": {
                "hash": {"type": "string"}, "size": {"type": "integer", "minimum": 0}
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
                "raft": {"type": "string", "enum": ["leader", "voter", "learner", "none"]},
                "last_seen_ms": {"type": "integer", "description": "How long ago the answering node last heard from it"},
                "departed": {"type": "boolean"},
                "self": {"type": "boolean"}
            }}
        }}
    })
}
