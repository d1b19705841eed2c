//! `mycel versions`, `rollback`, `promote`, and following a rollout (`deploy --wait`).

use std::time::Duration;

use anyhow::{Context, bail};
use mycel_protocol::{
    BlobHash,
    api::{AppStatus, Deployed, RollbackRequest, Versions},
    ownership::AppAction,
    placement::RolloutState,
};

use super::{api_url, get, print_answer, send, table, user_key};

/// How often `--wait` asks how the rollout goes.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Polls the app's status until the rollout of `deployed` ends: Ok once it succeeded (or its
/// canaries wait for a promote), an error when it failed or was reverted, or on `timeout`.
/// Progress goes to stderr on each change.
pub(crate) async fn follow(
    node: &str,
    deployed: &Deployed,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_line = String::new();
    loop {
        let body = get(node, &["v1", "apps", &deployed.name]).await?;
        let status: AppStatus =
            serde_json::from_str(&body).context("the node's answer is not an app status")?;
        let Some(rollout) = &status.rollout else {
            bail!(
                "the node does not say how the rollout of {} goes",
                status.name
            );
        };
        let ours = rollout.to == deployed.version
            || (rollout.state == RolloutState::Reverted
                && rollout.from.as_deref() == Some(&deployed.version));
        if !ours {
            bail!(
                "{} was deployed again meanwhile (now version {})",
                status.name,
                status.version
            );
        }
        let line = format!(
            "{} {}: {}/{} new healthy, {}",
            rollout.state.as_str(),
            rollout.to,
            rollout.healthy,
            rollout.total,
            rollout.message
        );
        if line != last_line {
            eprintln!("{}: {line}", status.name);
            last_line = line;
        }
        match rollout.state {
            RolloutState::Succeeded => return Ok(()),
            RolloutState::AwaitingPromotion => {
                eprintln!(
                    "{0}: `mycel promote {0}` rolls version {1} out to every replica, \
                     `mycel rollback {0}` brings back the version before",
                    status.name, rollout.to
                );
                return Ok(());
            }
            RolloutState::Failed => {
                bail!("the rollout of {} failed: {}", status.name, rollout.message)
            }
            RolloutState::Reverted => {
                bail!(
                    "the rollout of {} was reverted: {}",
                    status.name,
                    rollout.message
                )
            }
            RolloutState::Progressing => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let unplaced = status
                .unplaced
                .as_deref()
                .map(|reason| format!("; {reason}"))
                .unwrap_or_default();
            bail!(
                "timed out after {} s following the rollout of {}: {last_line}{unplaced}",
                timeout.as_secs(),
                status.name
            );
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// `mycel versions APP`
pub(crate) async fn versions(node: &str, app: &str, json: bool) -> anyhow::Result<()> {
    let body = get(node, &["v1", "apps", app, "versions"]).await?;
    print_answer(&body, json, "an app's versions", |versions: Versions| {
        versions_table(&versions)
    })
}

fn versions_table(versions: &Versions) -> String {
    let mut rows = vec![[
        "VERSION".to_string(),
        "DEPLOYED".into(),
        "BY".into(),
        "DIGEST".into(),
        String::new(),
    ]];
    for v in &versions.versions {
        rows.push([
            v.version.clone(),
            when(v.when),
            short(&v.who),
            short(&v.digest),
            if v.current {
                "current".into()
            } else {
                String::new()
            },
        ]);
    }
    table::render(&rows)
}

/// `mycel rollback APP [--to VERSION]`: deploys an earlier manifest again, signed as a deploy
/// of exactly that manifest; with `wait`, follows its rollout.
pub(crate) async fn rollback(
    node: &str,
    app: &str,
    to: Option<&str>,
    wait: Option<Duration>,
    json: bool,
) -> anyhow::Result<()> {
    let body = get(node, &["v1", "apps", app, "versions"]).await?;
    let versions: Versions =
        serde_json::from_str(&body).context("the node's answer is not an app's versions")?;
    // The node picks the same one: the newest with that version, else the newest not current.
    let chosen = match to {
        Some(version) => versions.versions.iter().find(|v| v.version == version),
        None => versions.versions.iter().find(|v| !v.current),
    };
    let Some(chosen) = chosen else {
        match to {
            Some(version) => bail!(
                "{app} has no version '{version}' to roll back to (see `mycel versions {app}`)"
            ),
            None => bail!("{app} has no earlier version to roll back to"),
        }
    };
    let digest: BlobHash = chosen
        .digest
        .parse()
        .map_err(|e| anyhow::anyhow!("the node named a bad digest {}: {e}", chosen.digest))?;
    let request = reqwest::Client::new()
        .post(api_url(node, &["v1", "apps", app, "rollback"])?)
        .json(&RollbackRequest {
            version: Some(chosen.version.clone()),
        });
    let action = AppAction::Deploy {
        app: app.to_string(),
        manifest: digest,
    };
    let answer = send(node, user_key::sign(request, action)?).await?;
    let deployed: Deployed =
        serde_json::from_str(&answer).context("the node's answer is not a deploy")?;
    if json {
        println!("{}", answer.trim_end());
    } else {
        println!(
            "rolling {} back to version {}",
            deployed.name, deployed.version
        );
    }
    match wait {
        Some(timeout) => follow(node, &deployed, timeout).await,
        None => Ok(()),
    }
}

/// `mycel promote APP`: the canaries' version replaces the rest.
pub(crate) async fn promote(node: &str, app: &str, json: bool) -> anyhow::Result<()> {
    let request = reqwest::Client::new().post(api_url(node, &["v1", "apps", app, "promote"])?);
    let action = AppAction::Promote {
        app: app.to_string(),
    };
    let body = send(node, user_key::sign(request, action)?).await?;
    print_answer(&body, json, "an app status", |status: AppStatus| {
        let to = status.rollout.map(|r| r.to).unwrap_or_default();
        format!(
            "promoted {}: version {to} rolls out to every replica\n",
            status.name
        )
    })
}

/// `1a2b3c4d5e6f…` of a long key or digest, after its `kind:` prefix.
fn short(text: &str) -> String {
    let (kind, rest) = text.split_once(':').unwrap_or(("", text));
    let head: String = rest.chars().take(12).collect();
    match (kind, rest.len() > 12) {
        ("", _) => head,
        (kind, true) => format!("{kind}:{head}…"),
        (kind, false) => format!("{kind}:{head}"),
    }
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`.
fn when(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Howard Hinnant's days-to-civil: the proleptic Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::api::VersionInfo;

    #[test]
    fn the_versions_table_marks_the_current_one() {
        let versions = Versions {
            name: "web".into(),
            versions: vec![
                VersionInfo {
                    version: "2".into(),
                    digest: format!("blake3:{}", "ab".repeat(32)),
                    who: format!("ed25519:{}", "cd".repeat(32)),
                    when: 1_796_601_600_000,
                    current: true,
                },
                VersionInfo {
                    version: "1".into(),
                    digest: format!("blake3:{}", "ef".repeat(32)),
                    who: format!("ed25519:{}", "cd".repeat(32)),
                    when: 86_399_000,
                    current: false,
                },
            ],
        };
        let text = versions_table(&versions);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("VERSION"));
        assert!(lines[1].starts_with("2 ") && lines[1].trim_end().ends_with("current"));
        assert!(lines[1].contains("2026-12-07 00:00:00"), "{}", lines[1]);
        assert!(lines[1].contains("blake3:abababababab…"));
        assert!(lines[2].contains("1970-01-01 23:59:59") && !lines[2].contains("current"));
    }
}
