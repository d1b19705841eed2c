//! The secrets endpoints and schemas: the mesh's secrets key, and an app's secrets (set, removed,
//! listed by name; a value never comes back out).

use serde_json::{Value, json};

use super::{WriteErrors, error_response, json_response};

pub(super) fn paths(signed: &Value, errors: &WriteErrors) -> Value {
    let name = json!({
        "name": "name", "in": "path", "required": true,
        "schema": {"type": "string"}, "description": "The app's name"
    });
    let secret = json!({
        "name": "secret", "in": "path", "required": true,
        "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
        "description": "The secret's name: its file is /run/secrets/<secret>"
    });
    let params: Vec<Value> = [name.clone(), secret]
        .into_iter()
        .chain(signed.as_array().into_iter().flatten().cloned())
        .collect();
    let no_key = "The mesh is open: secrets need a private mesh (no_secrets_key)";
    json!({
        "/v1/secrets/key": {"get": {
            "summary": "The public half of the mesh's secrets key, which secret values are sealed to",
            "responses": {
                "200": json_response("The key", "SecretsKey"),
                "422": error_response(no_key)
            }
        }},
        "/v1/apps/{name}/secrets": {"get": {
            "summary": "The names of an app's secrets (never their values)",
            "parameters": [name],
            "responses": {"200": json_response("Its secrets, by name", "SecretList")}
        }},
        "/v1/apps/{name}/secrets/{secret}": {
            "put": {
                "summary": "Set one of an app's secrets; a running app that uses it rolls",
                "description": "The body is {\"sealed\"}: a value sealed to GET /v1/secrets/key (X25519 with an ephemeral key; ChaCha20-Poly1305 under BLAKE3 derive_key(\"mycel 2026-12 sealed secret v1\", shared point || ephemeral key || mesh key), the app's and the secret's names joined by a zero byte as associated data), written as hex of the ephemeral key, the nonce and the ciphertext joined by dots; or {\"value\"}, which the node seals, for unsigned requests only. Signed, the request signs action 5 with the secret's name (u32 length and bytes) and the BLAKE3 of the sealed bytes. Setting a secret of an app nobody owns yet claims the app.",
                "parameters": params.clone(),
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SecretValue"}}}},
                "responses": {
                    "200": json_response("Set", "SecretSet"),
                    "400": error_response("Not a secret body or name, a sealed value this mesh cannot open as this secret, a signed request with a plain value (bad_request), or malformed x-mycel-* headers (bad_signature); nothing changed"),
                    "401": errors.bad_signature.clone(),
                    "403": errors.not_owner.clone(),
                    "413": error_response("Larger than a secret may be (too_large)"),
                    "422": error_response(no_key),
                    "503": errors.no_quorum.clone()
                }
            },
            "delete": {
                "summary": "Remove one of an app's secrets, unless its manifest names it",
                "description": "Signed, the request signs action 6 with the secret's name.",
                "parameters": params,
                "responses": {
                    "200": json_response("Removed", "SecretSet"),
                    "400": error_response("The app has no such secret, or its manifest names it (rejected), or malformed x-mycel-* headers (bad_signature); nothing changed"),
                    "401": errors.bad_signature.clone(),
                    "403": errors.not_owner.clone(),
                    "503": errors.no_quorum.clone()
                }
            }
        }
    })
}

pub(super) fn schemas() -> Value {
    json!({
        "SecretsKey": {"type": "object", "required": ["key"], "properties": {
            "key": {"type": "string", "pattern": "^x25519:[0-9a-f]{64}$"}
        }},
        "SecretValue": {"type": "object", "additionalProperties": false,
            "description": "Exactly one of sealed and value",
            "properties": {
                "sealed": {"type": "string", "pattern": "^[0-9a-f]{64}\\.[0-9a-f]{24}\\.[0-9a-f]+$"},
                "value": {"type": "string", "maxLength": 65536}
            }
        },
        "SecretList": {"type": "object", "required": ["app", "secrets"], "properties": {
            "app": {"type": "string"},
            "secrets": {"type": "array", "items": {"type": "object", "required": ["name", "set_at_ms"], "properties": {
                "name": {"type": "string"},
                "set_at_ms": {"type": "integer", "description": "When it was set, ms since the Unix epoch"}
            }}}
        }},
        "SecretSet": {"type": "object", "required": ["app", "name"], "properties": {
            "app": {"type": "string"}, "name": {"type": "string"}
        }}
    })
}
