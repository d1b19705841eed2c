//! `mycel secret set APP NAME` (the value on stdin), `mycel secret ls APP`, `mycel secret rm APP
//! NAME`. A value is sealed here, to the mesh's secrets key the node names, before it leaves this
//! machine; the user key signs the sealed bytes.

use std::io::Read;

use anyhow::{Context, bail};
use mycel_protocol::{
    api::{SecretList, SecretsKeyAnswer},
    ownership::AppAction,
    secrets::{MAX_SECRET_BYTES, SEAL_RANDOM_BYTES, SecretsPublicKey, check_secret_name},
};

use super::{api_url, get, print_answer, send, user_key};

/// `mycel secret set APP NAME`: reads the value from stdin (one trailing newline dropped, so
/// `echo pw | mycel secret set` sets `pw`).
pub(crate) async fn set(node: &str, app: &str, name: &str, json: bool) -> anyhow::Result<()> {
    check_secret_name(name).map_err(|e| anyhow::anyhow!(e))?;
    let mut value = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_SECRET_BYTES as u64 + 2)
        .read_to_end(&mut value)
        .context("reading the value from stdin")?;
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    if value.len() > MAX_SECRET_BYTES {
        bail!("a secret value is at most {MAX_SECRET_BYTES} bytes");
    }
    let answer: SecretsKeyAnswer =
        serde_json::from_str(&get(node, &["v1", "secrets", "key"]).await?)
            .context("the node's answer is not a secrets key")?;
    let key: SecretsPublicKey = answer.key.parse()?;
    let random: [u8; SEAL_RANDOM_BYTES] = rand::random();
    let sealed = key.seal(app, name, &value, random)?;
    value.fill(0);
    let action = AppAction::SetSecret {
        app: app.to_owned(),
        name: name.to_owned(),
        sealed: sealed.digest(),
    };
    let request = reqwest::Client::new()
        .put(api_url(node, &["v1", "apps", app, "secrets", name])?)
        .json(&serde_json::json!({ "sealed": sealed.to_text() }));
    let body = send(node, user_key::sign(request, action)?).await?;
    if json {
        println!("{}", body.trim_end());
    } else {
        println!("set secret {name} of {app}");
    }
    Ok(())
}

/// `mycel secret ls APP`: the names, never the values.
pub(crate) async fn list(node: &str, app: &str, json: bool) -> anyhow::Result<()> {
    let body = get(node, &["v1", "apps", app, "secrets"]).await?;
    print_answer(&body, json, "a list of secrets", |list: SecretList| {
        list.secrets
            .iter()
            .map(|s| format!("{}\n", s.name))
            .collect()
    })
}

/// `mycel secret rm APP NAME`
pub(crate) async fn remove(node: &str, app: &str, name: &str, json: bool) -> anyhow::Result<()> {
    check_secret_name(name).map_err(|e| anyhow::anyhow!(e))?;
    let request =
        reqwest::Client::new().delete(api_url(node, &["v1", "apps", app, "secrets", name])?);
    let action = AppAction::RemoveSecret {
        app: app.to_owned(),
        name: name.to_owned(),
    };
    let body = send(node, user_key::sign(request, action)?).await?;
    if json {
        println!("{}", body.trim_end());
    } else {
        println!("removed secret {name} of {app}");
    }
    Ok(())
}
