//! The volumes endpoints and schemas: every app's volumes with their nodes and latest snapshots,
//! and a snapshot on request.

use serde_json::{Value, json};

use super::{WriteErrors, error_response, json_response};

pub(super) fn paths(errors: &WriteErrors) -> Value {
    json!({
        "/v1/volumes": {"get": {
            "summary": "Every app's volumes (stopped apps' too, until a purge), with the nodes that hold them and their latest snapshots",
            "parameters": [{"name": "app", "in": "query", "required": false,
                "schema": {"type": "string"}, "description": "One app's volumes only"}],
            "responses": {
                "200": json_response("The volumes, by app and name", "VolumeList"),
                "400": error_response("An unknown query parameter (bad_request)")
            }
        }},
        "/v1/apps/{name}/volumes/{volume}/snapshot": {"post": {
            "summary": "Snapshot a volume into the mesh's blob store, now",
            "description": "The node running the app's first replica freezes the volume's file system, stores the chunks that changed since its last snapshot, and names two other nodes to keep copies. The answer waits for the snapshot, up to two minutes.",
            "parameters": [
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "volume", "in": "path", "required": true,
                    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}}
            ],
            "responses": {
                "200": json_response("The snapshot", "VolumeSnapshot"),
                "202": {"description": "Asked for; not taken within two minutes (it still may be)"},
                "400": error_response("Not a volume name (bad_request)"),
                "404": error_response("The app has no such volume (volume_not_found)"),
                "409": error_response("The app is stopped: nothing runs to snapshot (app_not_running)"),
                "503": errors.no_quorum.clone()
            }
        }}
    })
}

pub(super) fn schemas() -> Value {
    json!({
        "VolumeList": {"type": "object", "required": ["volumes"], "properties": {
            "volumes": {"type": "array", "items": {"$ref": "#/components/schemas/VolumeEntry"}}
        }},
        "VolumeEntry": {"type": "object", "required": ["app", "name", "size_mb", "deployed", "nodes"], "properties": {
            "app": {"type": "string"},
            "name": {"type": "string"},
            "path": {"type": "string", "description": "Where the app sees it; absent while the app is stopped"},
            "size_mb": {"type": "integer"},
            "deployed": {"type": "boolean"},
            "nodes": {"type": "array", "items": {"type": "string"}, "description": "The nodes that hold a copy: the scheduler prefers them"},
            "snapshot": {"$ref": "#/components/schemas/VolumeSnapshot"}
        }},
        "VolumeSnapshot": {"type": "object", "required": ["index", "node", "taken_at_ms", "size_bytes", "used_bytes", "stored_bytes", "answers"], "properties": {
            "index": {"type": "string", "pattern": "^blake3:[0-9a-f]{64}$", "description": "The blob listing its chunks"},
            "node": {"type": "string", "description": "The node that took it"},
            "taken_at_ms": {"type": "integer"},
            "size_bytes": {"type": "integer"},
            "used_bytes": {"type": "integer", "description": "In use in the volume's file system"},
            "stored_bytes": {"type": "integer", "description": "What it added to the blob store: the chunks no earlier snapshot had, and its index"},
            "answers": {"type": "integer", "description": "How many snapshot requests it answers"},
            "copy_to": {"type": "array", "items": {"type": "string"}},
            "copies": {"type": "array", "items": {"type": "string"}, "description": "The nodes that hold a whole copy"}
        }}
    })
}
