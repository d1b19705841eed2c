//! The seed-compatible endpoints' deploy (`/api/apps/deploy_app`, which takes a manifest or the
//! seed's own body) and the `Seed…` schemas.

use serde_json::{Value, json};

use super::{WriteErrors, error_response, json_response};

pub(super) fn paths(signed: &Value, errors: &WriteErrors) -> Value {
    json!({
        "/api/apps/deploy_app": {"post": {
            "summary": "Seed-compatible: deploy an app, from a manifest (as POST /v1/apps) or from the seed's own body",
            "description": "A body with none of container, wasm and process but any of image, source_code_hash, build_config, resource_requirements, network_config, runtime_config and target_nodes is a seed body (SeedDeploy), translated into a manifest: image is container.image; resource_requirements.memory (256m, 1G, 512Mi, or bytes) is resources.memory_mb; resource_requirements.cpu is resources.cpu; each network_config.ports binding with a HostPort is a published port, and the lowest container port is container.port; runtime_config.environment is env. What is not applied (storage, target_nodes, other runtime_config keys, unknown fields) comes back as warnings. Signed, the request signs the deploy of that translated manifest (as GET /v1/apps/{name} shows it).",
            "parameters": signed.clone(),
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/Manifest"},
                {"$ref": "#/components/schemas/SeedDeploy"}
            ]}}}},
            "responses": {
                "201": json_response("Committed by the placement group", "SeedDeployed"),
                "400": error_response("Not a valid manifest or seed body (invalid_manifest), refused by the group (rejected), or malformed x-mycel-* headers (bad_signature)"),
                "401": errors.bad_signature.clone(),
                "403": errors.not_owner.clone(),
                "409": error_response("A port it publishes is another app's (port_taken); nothing changed"),
                "413": error_response("Larger than a manifest may be (too_large)"),
                "422": error_response("A blob it names is held by no node in reach (blob_not_found), or a seed body asks to build from source_code_hash, which is not available yet (source_deploy_unsupported); nothing changed"),
                "503": errors.no_quorum.clone()
            }
        }}
    })
}

pub(super) fn schemas() -> Value {
    let status = json!({"type": "string", "enum": ["stopped", "pending", "degraded", "running"]});
    json!({
        "SeedDeploy": {"type": "object", "required": ["name", "version"],
            "description": "The seed's deploy body. Exactly one of image and source_code_hash; a source deploy is refused (422 source_deploy_unsupported). Other fields are allowed and each comes back as a warning.",
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
                "version": {"type": "string", "pattern": "^[A-Za-z0-9._+-]{1,64}$"},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1},
                "image": {"type": "string", "description": "The container image, as Docker names it (container.image)"},
                "source_code_hash": {"type": "string", "description": "Not available yet: 422 source_deploy_unsupported"},
                "build_config": {"type": "object", "description": "Only for source deploys"},
                "resource_requirements": {"type": "object", "properties": {
                    "memory": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 1}],
                        "description": "A number with an optional unit k, m, g or t, each a power of 1024 in either case, optionally followed by i and b (256m, 1G, 512Mi, 2GiB); without a unit, or as a number, bytes. Rounded up to a MiB; at most 1T"},
                    "cpu": {"oneOf": [{"type": "string"}, {"type": "number"}],
                        "description": "Cores, such as \"0.5\" or 2 (or thousandths: \"500m\"); more than 0, at most 1024"},
                    "storage": {"type": "string", "description": "Not applied (a warning): a size names no mount path; a mycel manifest declares [[volumes]]"}
                }},
                "network_config": {"type": "object", "properties": {
                    "ports": {"type": "object",
                        "description": "Docker's port bindings: keys PORT or PORT/tcp (other protocols are 400 invalid_manifest), each {\"HostPort\": \"8080\"}, a list of such bindings, or {} (not published). Each HostPort publishes that container port on every node's ingress address; the lowest container port is the app's HTTP port (container.port)",
                        "additionalProperties": {"oneOf": [
                            {"type": "object", "properties": {
                                "HostPort": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 1, "maximum": 65535}]},
                                "HostIp": {"type": "string"}
                            }},
                            {"type": "array", "items": {"type": "object"}}
                        ]}
                    }
                }},
                "runtime_config": {"type": "object",
                    "description": "Anything; environment (an object of variables, or a list of KEY=value) is the app's env, each other key a warning",
                    "properties": {"environment": {"oneOf": [
                        {"type": "object", "additionalProperties": {"type": "string"}},
                        {"type": "array", "items": {"type": "string"}}
                    ]}}
                },
                "target_nodes": {"type": "array", "items": {"type": "string"}, "description": "Not applied (a warning): the scheduler chooses the nodes"}
            }
        },
        "SeedDeployed": {"type": "object", "required": ["app_id", "version", "status"], "properties": {
            "app_id": {"type": "string"}, "version": {"type": "string"},
            "status": {"type": "string", "enum": ["deployed"]},
            "warnings": {"type": "array", "items": {"type": "string"},
                "description": "One sentence for each field of a seed body that is not applied, such as `resource_requirements.storage: not applied; …`; absent when there is none"}
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
