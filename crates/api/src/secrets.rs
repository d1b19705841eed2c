//! An app's secrets: `GET /v1/secrets/key` (what values are sealed to), `PUT` and `DELETE
//! /v1/apps/{name}/secrets/{secret}`, `GET /v1/apps/{name}/secrets` (names only). A value never
//! comes back out of the API, and is never logged.
//!
//! A `PUT` carries `{"sealed": "<text>"}`, a value sealed to the mesh's secrets key (the CLI
//! seals before the value leaves the user's machine, and signs the sealed bytes), or
//! `{"value": "<text>"}`, which this node seals; a signed request must carry a sealed value, as
//! a signature covers the sealed bytes and sealing is randomized.

use axum::{
    Json,
    body::Body,
    extract::{FromRequestParts, Path, State},
    http::{HeaderMap, StatusCode, request::Parts},
};
use mycel_protocol::{
    api::{SecretEntry, SecretList, SecretSet, SecretsKeyAnswer},
    ownership::AppAction,
    placement::WriteRequest,
    secrets::{
        MAX_SECRET_BYTES, SEAL_RANDOM_BYTES, SealedSecret, SecretsPublicKey, check_secret_name,
    },
};
use serde::Deserialize;

use crate::{
    ApiError, ApiState,
    apps::commit,
    extract::{AppName, read_limited},
    signing::{has_signature, signed_request},
};

/// The `{name}/secrets/{secret}` segments of a secret's path, the secret's name checked.
pub(crate) struct SecretPath {
    app: String,
    secret: String,
}

impl<S: Send + Sync> FromRequestParts<S> for SecretPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((app, secret)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| bad_request(e.body_text()))?;
        check_secret_name(&secret).map_err(bad_request)?;
        Ok(SecretPath { app, secret })
    }
}

/// The body of `PUT /v1/apps/{name}/secrets/{secret}`: exactly one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSecret {
    sealed: Option<String>,
    value: Option<String>,
}

/// `GET /v1/secrets/key`
pub(crate) async fn key(State(state): State<ApiState>) -> Result<Json<SecretsKeyAnswer>, ApiError> {
    Ok(Json(SecretsKeyAnswer {
        key: public_key(&state)?.to_string(),
    }))
}

/// `GET /v1/apps/{name}/secrets`: the names, and when each was set.
pub(crate) async fn list(
    State(state): State<ApiState>,
    AppName(name): AppName,
) -> Result<Json<SecretList>, ApiError> {
    let replica = state.placement.replica();
    let secrets = replica
        .state
        .secrets
        .get(&name)
        .map(|secrets| {
            secrets
                .iter()
                .map(|(secret, record)| SecretEntry {
                    name: secret.clone(),
                    set_at_ms: record.set_at_ms,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(SecretList { app: name, secrets }))
}

/// `PUT /v1/apps/{name}/secrets/{secret}`
pub(crate) async fn put(
    State(state): State<ApiState>,
    SecretPath { app: name, secret }: SecretPath,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SecretSet>), ApiError> {
    // A value's text, JSON-escaped, is at most six bytes a byte.
    let bytes = read_limited(&headers, body, 6 * MAX_SECRET_BYTES + 1024, "a secret").await?;
    let body: PutSecret = serde_json::from_slice(&bytes).map_err(|e| {
        bad_request(format!(
            "the body is {{\"sealed\": \"<sealed value>\"}} or {{\"value\": \"<value>\"}}: {e}"
        ))
    })?;
    let sealed = match (body.sealed, body.value) {
        (Some(sealed), None) => SealedSecret::from_text(&sealed).map_err(bad_request)?,
        (None, Some(value)) => {
            if has_signature(&headers) {
                return Err(bad_request(
                    "a signed request carries a sealed value (its signature covers the sealed \
                     bytes): seal it to GET /v1/secrets/key first",
                ));
            }
            let random: [u8; SEAL_RANDOM_BYTES] = rand::random();
            public_key(&state)?
                .seal(&name, &secret, value.as_bytes(), random)
                .map_err(bad_request)?
        }
        _ => {
            return Err(bad_request("give exactly one of \"sealed\" and \"value\""));
        }
    };
    // Only a value this mesh can open is kept: one sealed elsewhere would fail every start.
    let key = state.secrets_key.as_ref().ok_or_else(no_key)?;
    key.open(&name, &secret, &sealed).map_err(|_| {
        bad_request(format!(
            "the sealed value does not open as secret '{secret}' of '{name}' with this mesh's \
             key (GET /v1/secrets/key)"
        ))
    })?;
    let action = AppAction::SetSecret {
        app: name.clone(),
        name: secret.clone(),
        sealed: sealed.digest(),
    };
    let signed = signed_request(&state, &headers, action)?;
    let owner = signed.key;
    let write = WriteRequest::SetSecret {
        app: name.clone(),
        name: secret.clone(),
        sealed: Box::new(sealed),
        signed: Box::new(signed),
    };
    commit(&state, write).await?;
    tracing::info!(app = %name, secret = %secret, key = %owner, "secret set");
    Ok((
        StatusCode::OK,
        Json(SecretSet {
            app: name,
            name: secret,
        }),
    ))
}

/// `DELETE /v1/apps/{name}/secrets/{secret}`
pub(crate) async fn remove(
    State(state): State<ApiState>,
    SecretPath { app: name, secret }: SecretPath,
    headers: HeaderMap,
) -> Result<Json<SecretSet>, ApiError> {
    let action = AppAction::RemoveSecret {
        app: name.clone(),
        name: secret.clone(),
    };
    let signed = signed_request(&state, &headers, action)?;
    let write = WriteRequest::RemoveSecret {
        app: name.clone(),
        name: secret.clone(),
        signed: Box::new(signed),
    };
    commit(&state, write).await?;
    tracing::info!(app = %name, secret = %secret, "secret removed");
    Ok(Json(SecretSet {
        app: name,
        name: secret,
    }))
}

fn public_key(state: &ApiState) -> Result<SecretsPublicKey, ApiError> {
    Ok(state.secrets_key.as_ref().ok_or_else(no_key)?.public())
}

fn no_key() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_secrets_key",
        "secrets need a private mesh: its members derive the key that seals them from the \
         mesh's secret, and an open mesh has none",
    )
}

fn bad_request(reason: impl ToString) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason.to_string())
}
