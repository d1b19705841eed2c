//! Apps' `[dependencies]` in the replicated state: a deploy needs every app it names deployed at
//! a version its requirement accepts; an app others need stops only when forced. Pure: checked
//! by the leader when it plans, and again by every replica when it applies.

use mycel_protocol::{
    app::{Manifest, satisfies},
    placement::WriteError,
};

use crate::state::PlacementState;

/// Whether every dependency of `manifest` is deployed at a version it accepts.
pub fn check_deployable(state: &PlacementState, manifest: &Manifest) -> Result<(), WriteError> {
    for (dependency, requirement) in &manifest.dependencies {
        let Some(record) = state.apps.get(dependency) else {
            return Err(WriteError::MissingDependency {
                app: manifest.name.clone(),
                dependency: dependency.clone(),
            });
        };
        let version = &record.manifest.version;
        if satisfies(version, requirement) != Some(true) {
            return Err(WriteError::DependencyVersion {
                dependency: dependency.clone(),
                version: version.clone(),
                requirement: requirement.clone(),
            });
        }
    }
    Ok(())
}

/// The deployed apps that depend on `app`, by name.
pub fn dependants(state: &PlacementState, app: &str) -> Vec<String> {
    state
        .apps
        .iter()
        .filter(|(name, record)| {
            name.as_str() != app && record.manifest.dependencies.contains_key(app)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether `app` may stop: no deployed app depends on it, or the stop is forced.
pub fn check_stoppable(state: &PlacementState, app: &str, force: bool) -> Result<(), WriteError> {
    let by = dependants(state, app);
    if force || by.is_empty() {
        return Ok(());
    }
    Err(WriteError::DependedOn {
        app: app.to_owned(),
        by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::placement::AppRecord;

    fn record(name: &str, version: &str, deps: &str) -> AppRecord {
        let manifest = Manifest::from_toml(&format!(
            "name = \"{name}\"\nversion = \"{version}\"\n[wasm]\nmodule = \"blake3:{}\"\n\
             [dependencies]\n{deps}",
            "0".repeat(64)
        ))
        .unwrap();
        AppRecord {
            manifest,
            deployed_by: "n".into(),
            deployed_at_ms: 0,
            generation: 1,
            unplaced: None,
            scale: None,
        }
    }

    #[test]
    fn a_dependency_must_be_deployed_in_range_and_a_needed_app_stops_only_when_forced() {
        let mut state = PlacementState::default();
        let front = record("front", "1.0.0", "back = \"^1.2\"\n");
        assert_eq!(
            check_deployable(&state, &front.manifest)
                .unwrap_err()
                .code(),
            "missing_dependency"
        );
        state
            .apps
            .insert("back".into(), record("back", "1.1.0", ""));
        assert_eq!(
            check_deployable(&state, &front.manifest)
                .unwrap_err()
                .code(),
            "dependency_version"
        );
        state
            .apps
            .insert("back".into(), record("back", "1.3.0", ""));
        check_deployable(&state, &front.manifest).unwrap();
        state.apps.insert("front".into(), front);
        assert_eq!(dependants(&state, "back"), ["front"]);
        assert_eq!(
            check_stoppable(&state, "back", false).unwrap_err().code(),
            "depended_on"
        );
        check_stoppable(&state, "back", true).unwrap();
        check_stoppable(&state, "front", false).unwrap();
    }
}
