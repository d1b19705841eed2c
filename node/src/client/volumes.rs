//! `mycel volumes [APP]` lists volumes with their nodes, sizes and latest snapshots; `mycel
//! volume snapshot APP NAME` takes a snapshot now and prints it.

use mycel_protocol::{
    api::{VolumeEntry, VolumeList},
    app::check_volume_name,
    placement::VolumeSnapshot,
};

use super::{api_url, get, print_answer, send, table};

/// `mycel volumes [APP]`
pub(crate) async fn list(node: &str, app: Option<&str>, json: bool) -> anyhow::Result<()> {
    let body = get(node, &["v1", "volumes"]).await?;
    let body = match app {
        // One app's, filtered here: the answer keeps its shape.
        Some(app) => {
            let mut list: VolumeList = serde_json::from_str(&body)?;
            list.volumes.retain(|v| v.app == app);
            serde_json::to_string_pretty(&list)?
        }
        None => body,
    };
    print_answer(&body, json, "a list of volumes", |list: VolumeList| {
        if list.volumes.is_empty() {
            return "no volumes\n".to_owned();
        }
        let mut rows =
            vec![["APP", "VOLUME", "PATH", "SIZE", "NODES", "LAST SNAPSHOT"].map(String::from)];
        rows.extend(list.volumes.iter().map(row));
        table::render(&rows)
    })
}

fn row(volume: &VolumeEntry) -> [String; 6] {
    let nodes: Vec<String> = volume.nodes.iter().map(|n| table::short_peer(n)).collect();
    [
        volume.app.clone(),
        volume.name.clone(),
        volume.path.clone().unwrap_or_else(|| "(stopped)".into()),
        format!("{} MiB", volume.size_mb),
        nodes.join(","),
        volume
            .snapshot
            .as_ref()
            .map_or_else(|| "none".to_owned(), describe),
    ]
}

/// A snapshot in one line: when, where, what it stored, its copies.
fn describe(snapshot: &VolumeSnapshot) -> String {
    let age_s = now_ms().saturating_sub(snapshot.taken_at_ms) / 1000;
    format!(
        "{age_s}s ago on {}, {} used, {} stored, {} of {} copies",
        table::short_peer(&snapshot.node),
        bytes(snapshot.used_bytes),
        bytes(snapshot.stored_bytes),
        snapshot.copies.len(),
        snapshot.copy_to.len()
    )
}

/// `mycel volume snapshot APP NAME`
pub(crate) async fn snapshot(node: &str, app: &str, name: &str, json: bool) -> anyhow::Result<()> {
    check_volume_name(name).map_err(|e| anyhow::anyhow!(e))?;
    let url = api_url(node, &["v1", "apps", app, "volumes", name, "snapshot"])?;
    let body = send(node, reqwest::Client::new().post(url)).await?;
    if json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    match serde_json::from_str::<VolumeSnapshot>(&body) {
        Ok(snapshot) => println!(
            "snapshot {} of {app}/{name}: {}",
            snapshot.index,
            describe(&snapshot)
        ),
        Err(_) => println!("asked for a snapshot of {app}/{name}; it has not been taken yet"),
    }
    Ok(())
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / f64::from(1 << 10)),
        n => format!("{n} B"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
