//! `[dependencies]`: the apps an app needs, each with a semver requirement on its version
//! (`back = "^1"`). A deploy is refused while a dependency is missing or out of range, and an app
//! others depend on stops only when forced (see the placement state).

use std::collections::BTreeMap;

use super::{ManifestError, check_name, invalid};

/// The most dependencies one app may name.
pub const MAX_DEPENDENCIES: usize = 32;
const MAX_REQUIREMENT_LEN: usize = 128;

/// Checks `dependencies` of app `app`: names that are app names (not its own), requirements
/// that parse as semver requirements.
pub(super) fn check_dependencies(
    app: &str,
    dependencies: &BTreeMap<String, String>,
) -> Result<(), ManifestError> {
    if dependencies.len() > MAX_DEPENDENCIES {
        return Err(invalid(
            "dependencies",
            format!("at most {MAX_DEPENDENCIES} (got {})", dependencies.len()),
        ));
    }
    for (name, requirement) in dependencies {
        let field = format!("dependencies.{}", name.escape_debug());
        if check_name(name).is_err() {
            return Err(invalid(field, "not an app name (a DNS label)"));
        }
        if name == app {
            return Err(invalid(field, "an app cannot depend on itself"));
        }
        if requirement.len() > MAX_REQUIREMENT_LEN {
            return Err(invalid(
                field,
                format!("at most {MAX_REQUIREMENT_LEN} bytes"),
            ));
        }
        semver::VersionReq::parse(requirement).map_err(|e| {
            invalid(
                field,
                format!(
                    "'{}' is not a semver requirement: {e}",
                    requirement.escape_debug()
                ),
            )
        })?;
    }
    Ok(())
}

/// Whether `version` (a deployed app's) satisfies `requirement`; `None` when the version is not
/// semver, so no requirement can hold.
pub fn satisfies(version: &str, requirement: &str) -> Option<bool> {
    let version = semver::Version::parse(version).ok()?;
    let requirement = semver::VersionReq::parse(requirement).ok()?;
    Some(requirement.matches(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn names_and_requirements_are_checked() {
        check_dependencies("front", &deps(&[("back", "^1"), ("db", ">=15, <17")])).unwrap();
        for bad in [
            deps(&[("front", "^1")]),
            deps(&[("Back", "^1")]),
            deps(&[("../x", "^1")]),
            deps(&[("back", "one")]),
            deps(&[("back", "")]),
        ] {
            let err = check_dependencies("front", &bad).unwrap_err();
            assert!(
                err.to_string().starts_with("dependencies"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn versions_satisfy_requirements_as_semver_says() {
        assert_eq!(satisfies("1.4.0", "^1"), Some(true));
        assert_eq!(satisfies("2.0.0", "^1"), Some(false));
        assert_eq!(satisfies("1.0.0-rc.1", "^1"), Some(false));
        assert_eq!(satisfies("v1", "^1"), None);
    }
}
