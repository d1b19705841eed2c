//! The rollout endpoints and schemas: `versions`, `rollback`, `promote`, the app's `rollout`
//! and the manifest's `[update]`; and the autoscaler's: the manifest's `[scale]` and the app's
//! `scale`.

use serde_json::{Value, json};

use super::{WriteErrors, error_response, json_response};

pub(super) fn paths(signed: &Value, errors: &WriteErrors) -> Value {
    let name = json!({
        "name": "name", "in": "path", "required": true,
        "schema": {"type": "string"}, "description": "The app's name"
    });
    let params: Vec<Value> = std::iter::once(name.clone())
        .chain(signed.as_array().into_iter().flatten().cloned())
        .collect();
    json!({
        "/v1/apps/{name}/versions": {"get": {
            "summary": "The manifests the app was last deployed with (at most 10), newest first",
            "parameters": [name],
            "responses": {
                "200": json_response("Its versions", "Versions"),
                "404": error_response("No such app (app_not_found)")
            }
        }},
        "/v1/apps/{name}/rollback": {"post": {
            "summary": "Deploy an earlier manifest of the app again, rolled out like any deploy",
            "description": "Without a version, the newest manifest that is not the current one. Signed, the request signs the deploy of that manifest (action 1, its digest as GET …/versions lists it).",
            "parameters": params.clone(),
            "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RollbackRequest"}}}},
            "responses": {
                "201": json_response("The version being rolled out", "Deployed"),
                "400": error_response("Not a rollback request (bad_request), or malformed x-mycel-* headers (bad_signature)"),
                "401": errors.bad_signature.clone(),
                "403": errors.not_owner.clone(),
                "404": error_response("No such app (app_not_found), or it has no such version (version_not_found)"),
                "422": error_response("No node in reach holds a blob that manifest names (blob_not_found)"),
                "503": errors.no_quorum.clone()
            }
        }},
        "/v1/apps/{name}/promote": {"post": {
            "summary": "Let the canaries of the app's rollout replace the rest of its instances",
            "parameters": params,
            "responses": {
                "200": json_response("The app after the promote", "AppStatus"),
                "400": error_response("No rollout of the app has canaries to promote (rejected), or malformed x-mycel-* headers (bad_signature)"),
                "401": errors.bad_signature.clone(),
                "403": errors.not_owner.clone(),
                "404": error_response("No such app (app_not_found)"),
                "503": errors.no_quorum.clone()
            }
        }}
    })
}

pub(super) fn schemas() -> Value {
    json!({
        "Update": {"type": "object", "additionalProperties": false,
            "description": "How a redeploy replaces the instances: new ones start beside the old (start_first) or in their place (stop_first), max_parallel at a time; an old one is retired once a new one has passed its health check for min_healthy_ms. A rollout with no new instance turning healthy for healthy_deadline_ms fails, and with auto_revert the previous version comes back the same way. With canary = N, N new instances run beside the old until promoted. A value out of range is 400 invalid_manifest.",
            "properties": {
                "max_parallel": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1, "description": "0 replaces all at once"},
                "min_healthy_ms": {"type": "integer", "minimum": 0, "default": 2000, "description": "Less than healthy_deadline_ms"},
                "healthy_deadline_ms": {"type": "integer", "minimum": 1, "maximum": 86400000, "default": 60000},
                "auto_revert": {"type": "boolean", "default": true},
                "canary": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 0},
                "order": {"type": "string", "enum": ["start_first", "stop_first"], "default": "start_first"}
            }
        },
        "Rollout": {"type": "object", "required": ["from", "to", "state", "healthy", "total", "message"], "properties": {
            "from": {"type": "string", "nullable": true, "description": "The version it replaces (null for a first deploy); after a revert, the one that failed"},
            "to": {"type": "string", "description": "The version it brings; after a revert, the restored one"},
            "state": {"type": "string", "enum": ["progressing", "succeeded", "failed", "reverted", "awaiting_promotion"]},
            "healthy": {"type": "integer", "minimum": 0, "description": "New instances that passed their health checks for min_healthy_ms"},
            "total": {"type": "integer", "minimum": 0, "description": "New instances it aims for (the canaries, until promoted)"},
            "message": {"type": "string"}
        }},
        "Versions": {"type": "object", "required": ["name", "versions"], "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "object", "required": ["version", "digest", "who", "when", "current"], "properties": {
                "version": {"type": "string"},
                "digest": {"type": "string", "pattern": "^blake3:[0-9a-f]{64}$", "description": "The manifest's digest, as a signed deploy names it"},
                "who": {"type": "string", "description": "The key that signed the deploy"},
                "when": {"type": "integer", "description": "Milliseconds since the Unix epoch"},
                "current": {"type": "boolean"}
            }}}
        }},
        "Scale": {"type": "object", "additionalProperties": false,
            "description": "The app scales itself between min and max instances on its load: requests in flight per instance against target_concurrency (the default signal, 10), the memory per instance against target_memory. Load is averaged over window_ms (a tenth of it catches bursts); a count goes down only after cooldown_ms. With min 0 it runs no instance after scale_to_zero_after_ms without a request, and a gateway holds the next request (up to 30 s) while one starts. replicas is the starting count, within min..max. A value out of range is 400 invalid_manifest.",
            "properties": {
                "min": {"type": "integer", "minimum": 0, "default": 1},
                "max": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
                "target_concurrency": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 100000},
                "target_cpu": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1, "description": "A fraction of the manifest's cpu each instance should use"},
                "target_memory": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1},
                "scale_to_zero_after_ms": {"type": "integer", "minimum": 1000, "maximum": 86400000, "default": 60000},
                "cooldown_ms": {"type": "integer", "minimum": 0, "maximum": 86400000, "default": 30000},
                "window_ms": {"type": "integer", "minimum": 6000, "maximum": 3600000, "default": 60000}
            }
        },
        "ScaleStatus": {"type": "object", "required": ["min", "max", "desired", "reason"], "properties": {
            "min": {"type": "integer"},
            "max": {"type": "integer"},
            "desired": {"type": "integer", "description": "The count it runs for now"},
            "from": {"type": "integer", "description": "The count before the last decision"},
            "signals": {"type": "object", "properties": {
                "in_flight": {"type": "number", "description": "Requests in flight over the window, summed over the nodes"},
                "memory_bytes": {"type": "integer"},
                "cpu_cores": {"type": "number", "description": "CPU the instances used over the window, in cores"}
            }},
            "reason": {"type": "string", "description": "Why, such as `5.8 in flight per instance, target 2`"}
        }},
        "RollbackRequest": {"type": "object", "additionalProperties": false, "properties": {
            "version": {"type": "string", "description": "Absent: the newest version that is not the current one"}
        }}
    })
}
