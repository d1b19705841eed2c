//! `mycel deploy`, `apps`, `status`, `scale`, `stop`: the app commands.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::Context;
use mycel_protocol::{
    api::{AppStatus, Apps, Deployed, DiscoveredApps, InstanceState, ScaleRequest},
    ownership::{AppAction, OwnerKey},
};

use super::{
    api_url, get, is_tar, manifest, manifest::BlobField, node_names, print_answer, push_image,
    send, short_peer, table, upload, user_key,
};

/// `mycel deploy FILE`: uploads the files the manifest names, deploys it, and with `wait`
/// follows its rollout until it succeeds (an error when it fails or is reverted). A seed deploy
/// body (JSON) is translated into a manifest first, each field it does not apply printed as a
/// warning.
pub(crate) async fn deploy(
    node: &str,
    file: &Path,
    wait: Option<Duration>,
    json: bool,
) -> anyhow::Result<()> {
    let manifest::Loaded {
        mut manifest,
        blobs,
        warnings,
    } = manifest::load(file)?;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    for blob in blobs {
        let context = || format!("uploading {} ({})", blob.given, blob.field.name());
        // An image archive goes in as an image: the nodes then share it layer by layer.
        let hash = if blob.field == BlobField::ContainerArchive && is_tar(&blob.path)? {
            let (pushed, _) = push_image(node, &blob.path).await.with_context(context)?;
            eprintln!(
                "pushed image {} from {}: {}",
                pushed.image, blob.given, pushed.hash
            );
            pushed.hash
        } else {
            let (stored, _) = upload(node, &blob.path).await.with_context(context)?;
            eprintln!("uploaded {}: {}", blob.given, stored.hash);
            stored.hash
        };
        blob.field.set(&mut manifest, hash);
    }
    manifest
        .validate_for_api()
        .with_context(|| format!("{}", file.display()))?;
    let body = serde_json::to_vec(&manifest).context("encoding the manifest")?;
    let request = reqwest::Client::new()
        .post(api_url(node, &["v1", "apps"])?)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    // The node parses the body back into this manifest, and checks the signature against it.
    let request = user_key::sign(request, AppAction::deploy(&manifest))?;
    let answer = send(node, request).await?;
    let deployed: Deployed =
        serde_json::from_str(&answer).context("the node's answer is not a deploy")?;
    if json {
        println!("{}", answer.trim_end());
    } else {
        println!(
            "deployed {} {} ({})",
            deployed.name,
            deployed.version,
            plural(manifest.replicas, "replica")
        );
    }
    match wait {
        Some(timeout) => super::rollouts::follow(node, &deployed, timeout).await,
        None => Ok(()),
    }
}

fn running(status: &AppStatus) -> u32 {
    status
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count() as u32
}

/// "1/2 running, 1 starting": running against wanted, then the other states by count.
fn progress(status: &AppStatus) -> String {
    let mut line = format!("{}/{} running", running(status), status.replicas);
    for state in [
        InstanceState::Pending,
        InstanceState::Starting,
        InstanceState::Failed,
        InstanceState::Stopped,
    ] {
        let count = status.instances.iter().filter(|i| i.state == state).count();
        if count > 0 {
            line.push_str(&format!(", {count} {}", state.as_str()));
        }
    }
    line
}

/// `mycel apps`
pub(crate) async fn apps(node: &str, json: bool) -> anyhow::Result<()> {
    let body = get(node, &["v1", "apps"]).await?;
    print_answer(&body, json, "an app list", |apps: Apps| apps_table(&apps))
}

fn apps_table(apps: &Apps) -> String {
    if apps.apps.is_empty() {
        return "no apps deployed\n".into();
    }
    let mut rows = vec![[
        "NAME".to_string(),
        "VERSION".into(),
        "KIND".into(),
        "REPLICAS".into(),
        "RUNNING".into(),
    ]];
    for app in &apps.apps {
        rows.push([
            app.name.clone(),
            app.version.clone(),
            app.kind.to_string(),
            app.replicas.to_string(),
            app.running.to_string(),
        ]);
    }
    table::render(&rows)
}

/// `mycel apps browse`: the apps found through DHT discovery.
pub(crate) async fn browse(node: &str, json: bool) -> anyhow::Result<()> {
    let body = get(node, &["v1", "discover", "apps"]).await?;
    let names = if json {
        BTreeMap::new()
    } else {
        node_names(node).await
    };
    print_answer(&body, json, "a list of discovered apps", |apps| {
        browse_table(&apps, &names)
    })
}

fn browse_table(apps: &DiscoveredApps, names: &BTreeMap<String, String>) -> String {
    if apps.apps.is_empty() {
        return "no apps found\n".into();
    }
    let node_name = |peer: &String| names.get(peer).cloned().unwrap_or_else(|| short_peer(peer));
    let mut rows = vec![[
        "NAME".to_string(),
        "VERSION".into(),
        "KIND".into(),
        "PUBLISHER".into(),
        "PROVIDERS".into(),
    ]];
    for app in &apps.apps {
        let providers: Vec<String> = app.providers.iter().map(node_name).collect();
        rows.push([
            app.name.clone(),
            app.version.clone(),
            app.kind.to_string(),
            node_name(&app.publisher),
            providers.join(","),
        ]);
    }
    table::render(&rows)
}

/// `mycel status APP`
pub(crate) async fn status(node: &str, app: &str, json: bool) -> anyhow::Result<()> {
    let body = get(node, &["v1", "apps", app]).await?;
    let names = if json {
        BTreeMap::new()
    } else {
        node_names(node).await
    };
    let me = if json { None } else { user_key::existing() };
    print_answer(&body, json, "an app status", |status: AppStatus| {
        status_text(&status, &names, me)
    })
}

fn status_text(
    status: &AppStatus,
    names: &BTreeMap<String, String>,
    me: Option<OwnerKey>,
) -> String {
    let node_name = |peer: &str| match names.get(peer) {
        Some(name) => name.clone(),
        None => short_peer(peer),
    };
    let mut out = format!(
        "{} {} ({}): {}, deployed by {}\n",
        status.name,
        status.version,
        status.kind,
        progress(status),
        node_name(&status.deployed_by)
    );
    if let Some(owner) = status.owner {
        let node = owner
            .to_peer_id()
            .and_then(|peer| names.get(&peer.to_string()));
        let who = match node {
            _ if Some(owner) == me => "you".to_string(),
            Some(name) => format!("node {name}"),
            None => "another key".to_string(),
        };
        out.push_str(&format!("owner: {who} ({owner})\n"));
    }
    if let Some(reason) = &status.unplaced {
        out.push_str(&format!("unplaced: {reason}\n"));
    }
    if let Some(scale) = &status.scale {
        let count = match scale.from {
            Some(from) if from != scale.desired => format!("scaled {from}→{}", scale.desired),
            _ => format!("{} instance(s)", scale.desired),
        };
        out.push_str(&format!(
            "scale: {count} ({}..={}): {}\n",
            scale.min, scale.max, scale.reason
        ));
    }
    if let Some(rollout) = &status.rollout {
        let from = rollout
            .from
            .as_deref()
            .map(|from| format!("{from} → "))
            .unwrap_or_default();
        out.push_str(&format!(
            "rollout: {} {from}{}, {}/{} new healthy: {}\n",
            rollout.state.as_str(),
            rollout.to,
            rollout.healthy,
            rollout.total,
            rollout.message
        ));
    }
    if status.instances.is_empty() {
        out.push_str("no instances\n");
        return out;
    }
    let mut rows = vec![[
        "ID".to_string(),
        "NODE".into(),
        "STATE".into(),
        "RUNTIME".into(),
    ]];
    for instance in &status.instances {
        rows.push([
            instance.id.clone(),
            node_name(&instance.node),
            instance.state.as_str().to_string(),
            instance.runtime.clone(),
        ]);
    }
    out.push_str(&table::render(&rows));
    // Why failed instances failed: each on its own line, as reasons are sentences.
    for instance in &status.instances {
        if let Some(error) = &instance.error {
            out.push_str(&format!("{}: {error}\n", instance.id));
        }
    }
    out
}

/// `mycel scale APP N`, signed by the user key.
pub(crate) async fn scale(node: &str, app: &str, replicas: u32, json: bool) -> anyhow::Result<()> {
    let request = reqwest::Client::new()
        .post(api_url(node, &["v1", "apps", app, "scale"])?)
        .json(&ScaleRequest { replicas });
    let action = AppAction::Scale {
        app: app.to_string(),
        replicas,
    };
    let body = send(node, user_key::sign(request, action)?).await?;
    print_answer(&body, json, "an app status", |status: AppStatus| {
        format!(
            "scaled {} to {}\n",
            status.name,
            plural(status.replicas, "replica")
        )
    })
}

/// What `mycel stop` does besides stopping.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StopFlags {
    /// Delete the app's volumes too.
    pub(crate) purge: bool,
    /// Stop it even though other apps depend on it.
    pub(crate) force: bool,
}

/// `mycel stop APP [--purge] [--force]`: removes the app and all its instances (`--purge`: and
/// its volumes); signed by the user key.
pub(crate) async fn stop(
    node: &str,
    app: &str,
    flags: StopFlags,
    json: bool,
) -> anyhow::Result<()> {
    let mut url = api_url(node, &["v1", "apps", app])?;
    let query: Vec<&str> = [(flags.purge, "purge=true"), (flags.force, "force=true")]
        .into_iter()
        .filter_map(|(on, pair)| on.then_some(pair))
        .collect();
    if !query.is_empty() {
        url.set_query(Some(&query.join("&")));
    }
    let app = app.to_string();
    let action = if flags.purge {
        AppAction::StopAndPurge { app: app.clone() }
    } else {
        AppAction::Stop { app: app.clone() }
    };
    let request = reqwest::Client::new().delete(url);
    let body = send(node, user_key::sign(request, action)?).await?;
    if json {
        println!("{}", body.trim_end());
    } else if flags.purge {
        println!("stopped {app}: removed with all its instances and volumes");
    } else {
        println!("stopped {app}: removed with all its instances (its volumes are kept)");
    }
    Ok(())
}

fn plural(count: u32, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::{
        Manifest,
        api::{AppSummary, InstanceInfo},
        app::AppKind,
    };

    fn status(states: &[InstanceState], unplaced: Option<&str>) -> AppStatus {
        let manifest = Manifest::from_json(
            format!(
                r#"{{"name":"hello","version":"1.0.0","replicas":3,"wasm":{{"module":"blake3:{}"}}}}"#,
                "a".repeat(64)
            )
            .as_bytes(),
        )
        .unwrap();
        AppStatus {
            name: "hello".into(),
            version: "1.0.0".into(),
            kind: AppKind::Wasm,
            replicas: 3,
            instances: states
                .iter()
                .enumerate()
                .map(|(i, state)| InstanceInfo {
                    id: format!("hello-1-{i}"),
                    node: if i == 0 {
                        "12D3KooWnodeAAAAAAAA".into()
                    } else {
                        "12D3KooWnodeBBBBBBBB".into()
                    },
                    state: *state,
                    runtime: "wasm".into(),
                    error: None,
                })
                .collect(),
            deployed_by: "12D3KooWnodeAAAAAAAA".into(),
            owner: None,
            unplaced: unplaced.map(str::to_string),
            manifest,
            rollout: None,
            scale: None,
        }
    }

    #[test]
    fn the_apps_table_has_the_contract_columns() {
        let apps = Apps {
            apps: vec![
                AppSummary {
                    name: "hello".into(),
                    version: "1.0.0".into(),
                    kind: AppKind::Wasm,
                    replicas: 2,
                    running: 1,
                },
                AppSummary {
                    name: "web-frontend".into(),
                    version: "12".into(),
                    kind: AppKind::Container,
                    replicas: 10,
                    running: 10,
                },
            ],
        };
        assert_eq!(
            apps_table(&apps),
            "NAME          VERSION  KIND       REPLICAS  RUNNING\n\
             hello         1.0.0    wasm       2         1\n\
             web-frontend  12       container  10        10\n"
        );
        assert_eq!(apps_table(&Apps { apps: vec![] }), "no apps deployed\n");
    }

    #[test]
    fn the_status_shows_instances_and_why_some_are_unplaced() {
        let names = BTreeMap::from([("12D3KooWnodeAAAAAAAA".to_string(), "a".to_string())]);
        let text = status_text(
            &status(
                &[InstanceState::Running, InstanceState::Starting],
                Some("1 replica(s) have no node: no node has room"),
            ),
            &names,
            None,
        );
        assert_eq!(
            text,
            "hello 1.0.0 (wasm): 1/3 running, 1 starting, deployed by a\n\
             unplaced: 1 replica(s) have no node: no node has room\n\
             ID         NODE       STATE     RUNTIME\n\
             hello-1-0  a          running   wasm\n\
             hello-1-1  …BBBBBBBB  starting  wasm\n"
        );
        let mut failing = status(&[InstanceState::Failed], None);
        failing.instances[0].error = Some("this node has no docker runtime".into());
        assert!(
            status_text(&failing, &names, None)
                .ends_with("hello-1-0: this node has no docker runtime\n")
        );
        let empty = status_text(&status(&[], None), &names, None);
        assert!(empty.ends_with("no instances\n"), "{empty}");
        assert!(!empty.contains("unplaced"));
    }

    #[test]
    fn the_status_says_how_an_autoscaled_app_was_scaled() {
        let mut status = status(&[InstanceState::Running], None);
        status.scale = Some(mycel_protocol::api::ScaleInfo {
            min: 1,
            max: 4,
            desired: 3,
            from: Some(1),
            reason: "5.8 in flight per instance, target 2".into(),
            signals: Default::default(),
        });
        let text = status_text(&status, &BTreeMap::new(), None);
        assert!(
            text.contains("scale: scaled 1→3 (1..=4): 5.8 in flight per instance, target 2\n"),
            "{text}"
        );
    }

    #[test]
    fn the_status_says_who_owns_the_app() {
        let key = |seed: u8| {
            let keypair = mycel_protocol::Keypair::ed25519_from_bytes([seed; 32]).unwrap();
            (
                OwnerKey::of(&keypair).unwrap(),
                keypair.public().to_peer_id(),
            )
        };
        let (node_key, node_peer) = key(1);
        let (user, _) = key(2);
        let names = BTreeMap::from([(node_peer.to_string(), "a".to_string())]);
        let owned_by = |owner: OwnerKey, me: Option<OwnerKey>| {
            let status = AppStatus {
                owner: Some(owner),
                ..status(&[], None)
            };
            status_text(&status, &names, me)
                .lines()
                .nth(1)
                .unwrap()
                .to_string()
        };
        assert_eq!(owned_by(user, Some(user)), format!("owner: you ({user})"));
        assert_eq!(
            owned_by(node_key, Some(user)),
            format!("owner: node a ({node_key})")
        );
        assert_eq!(owned_by(user, None), format!("owner: another key ({user})"));
    }

    #[test]
    fn the_browse_table_names_known_nodes() {
        let names = BTreeMap::from([("12D3KooWnodeAAAAAAAA".to_string(), "a".to_string())]);
        let apps = DiscoveredApps {
            apps: vec![mycel_protocol::api::DiscoveredApp {
                name: "hello".into(),
                version: "1.0.0".into(),
                kind: AppKind::Wasm,
                publisher: "12D3KooWnodeAAAAAAAA".into(),
                providers: vec!["12D3KooWnodeAAAAAAAA".into(), "12D3KooWnodeBBBBBBBB".into()],
                manifest_hash: mycel_protocol::BlobHash([0; 32]),
                description: None,
            }],
        };
        assert_eq!(
            browse_table(&apps, &names),
            "NAME   VERSION  KIND  PUBLISHER  PROVIDERS\n\
             hello  1.0.0    wasm  a          a,…BBBBBBBB\n"
        );
        assert_eq!(
            browse_table(&DiscoveredApps { apps: vec![] }, &names),
            "no apps found\n"
        );
    }

    #[test]
    fn progress_counts_every_state() {
        let all = status(
            &[
                InstanceState::Running,
                InstanceState::Running,
                InstanceState::Failed,
            ],
            None,
        );
        assert_eq!(progress(&all), "2/3 running, 1 failed");
        assert_eq!(progress(&status(&[], None)), "0/3 running");
        assert_eq!(plural(1, "replica"), "1 replica");
        assert_eq!(plural(0, "replica"), "0 replicas");
    }
}
