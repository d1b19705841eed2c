//! The node owner's policy, enforced where instances start. The scheduler already keeps off this
//! node what its advertised policy refuses, but a placement may predate the policy (the node
//! restarted with a stricter one) or come from a mistaken leader, so the agent checks again and
//! refuses, saying why. A pure check: the agent passes in what already runs here.

use mycel_protocol::{NodePolicy, ownership::OwnerKey, placement::AppRecord};

use crate::AgentError;

/// Whether an instance of `app`, owned by `owner` (`None`: unknown), may start here, next to
/// instances of `others` (one entry per local instance that is starting or running, this one
/// excluded). `Err` says why not, for the node's log and the instance's report.
pub fn admit<'a>(
    policy: &NodePolicy,
    app: &AppRecord,
    owner: Option<&OwnerKey>,
    others: impl IntoIterator<Item = &'a AppRecord>,
) -> Result<(), AgentError> {
    if let Some(owners) = &policy.allowed_owners
        && !owner.is_some_and(|key| policy.allows_owner(key))
    {
        return Err(AgentError::Refused(format!(
            "this node's owner runs only the apps of {} (policy.allowed_owners); {} is owned by {}",
            owners.join(", "),
            app.manifest.name,
            owner.map_or_else(|| "nobody known".to_string(), |key| key.to_string())
        )));
    }
    let (mut count, mut memory_mb, mut cpu_millis) = (0u64, 0u64, 0u64);
    for other in others {
        count += 1;
        memory_mb += other.manifest.memory_mb();
        cpu_millis += other.manifest.cpu_millis();
    }
    if let Some(max) = policy.max_instances
        && count + 1 > u64::from(max)
    {
        return Err(AgentError::Refused(format!(
            "this node's owner allows at most {max} instances here (policy.max_instances), and \
             {count} run"
        )));
    }
    let wants_memory = memory_mb + app.manifest.memory_mb();
    if let Some(max) = policy.memory_mb
        && wants_memory > max
    {
        return Err(AgentError::Refused(format!(
            "{} needs {} MiB; this node's owner allows {max} MiB for apps (policy.memory_mb) and \
             {memory_mb} MiB are in use",
            app.manifest.name,
            app.manifest.memory_mb()
        )));
    }
    let wants_cpu = cpu_millis + app.manifest.cpu_millis();
    if let Some(max) = policy.cpu_millis
        && wants_cpu > max
    {
        return Err(AgentError::Refused(format!(
            "{} needs {} cores; this node's owner allows {} cores for apps (policy.cpu) and {} \
             are in use",
            app.manifest.name,
            cores(app.manifest.cpu_millis()),
            cores(max),
            cores(cpu_millis)
        )));
    }
    Ok(())
}

fn cores(millis: u64) -> String {
    format!("{}", millis as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use libp2p_identity::Keypair;
    use mycel_protocol::app::Manifest;

    use super::*;

    fn app(name: &str, memory_mb: u64, cpu: f64, by: &str) -> AppRecord {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "name": name,
            "version": "1.0.0",
            "wasm": {"module": format!("blake3:{}", "0".repeat(64))},
            "resources": {"memory_mb": memory_mb, "cpu": cpu},
        }))
        .unwrap();
        AppRecord {
            manifest,
            deployed_by: by.into(),
            deployed_at_ms: 0,
            generation: 1,
            unplaced: None,
            scale: None,
        }
    }

    #[test]
    fn no_policy_admits_everything() {
        let others = [app("a", 4096, 4.0, "x"), app("b", 4096, 4.0, "x")];
        admit(
            &NodePolicy::default(),
            &app("c", 4096, 4.0, "y"),
            None,
            &others,
        )
        .unwrap();
    }

    #[test]
    fn limits_count_what_already_runs_here() {
        let policy = NodePolicy {
            max_instances: Some(2),
            memory_mb: Some(256),
            cpu_millis: Some(1000),
            ..NodePolicy::default()
        };
        let one = [app("a", 128, 0.5, "x")];
        admit(&policy, &app("b", 128, 0.5, "x"), None, &one).unwrap();

        let two = [app("a", 64, 0.25, "x"), app("b", 64, 0.25, "x")];
        let error = admit(&policy, &app("c", 64, 0.25, "x"), None, &two)
            .unwrap_err()
            .to_string();
        assert!(error.contains("at most 2 instances"), "{error}");

        let error = admit(&policy, &app("b", 129, 0.25, "x"), None, &one)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("needs 129 MiB") && error.contains("policy.memory_mb"),
            "{error}"
        );

        let error = admit(&policy, &app("b", 64, 0.75, "x"), None, &one)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("needs 0.75 cores") && error.contains("policy.cpu"),
            "{error}"
        );
    }

    #[test]
    fn only_allowed_owners_apps_start() {
        let alice = Keypair::generate_ed25519();
        let alice_key = OwnerKey::of(&alice).unwrap();
        let node = Keypair::generate_ed25519();
        let node_key = OwnerKey::of(&node).unwrap();
        let mallory = OwnerKey::of(&Keypair::generate_ed25519()).unwrap();
        // A key, and a node's peer id standing for the node's key.
        let policy = NodePolicy {
            allowed_owners: Some(vec![
                alice_key.to_string(),
                node.public().to_peer_id().to_string(),
            ]),
            ..NodePolicy::default()
        };
        let web = app("web", 64, 0.1, "x");
        admit(&policy, &web, Some(&alice_key), []).unwrap();
        admit(&policy, &web, Some(&node_key), []).unwrap();
        let error = admit(&policy, &web, Some(&mallory), [])
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("owned by {mallory}")), "{error}");
        assert!(admit(&policy, &web, None, []).is_err());
    }
}
