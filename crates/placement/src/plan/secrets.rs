//! Planning secret writes: who may set or remove one, and the roll a changed secret starts.
//! Pure, as the rest of planning.

use mycel_protocol::{
    ownership::AppAction,
    placement::{Authorized, Command, SecretRoll, WriteError},
    secrets::{SealedSecret, check_secret_name},
};

use super::{View, put_app, roll};
use crate::state::PlacementState;

/// A deploy may name only secrets its app has.
pub(super) fn check_all_set(
    state: &PlacementState,
    app: &str,
    names: &[String],
) -> Result<(), WriteError> {
    let set = state.secrets.get(app);
    match names
        .iter()
        .find(|name| !set.is_some_and(|s| s.contains_key(*name)))
    {
        Some(name) => Err(WriteError::MissingSecret {
            app: app.to_owned(),
            name: name.clone(),
        }),
        None => Ok(()),
    }
}

/// Sets secret `name` of `app`; when the app runs with it, its new generation rolls out in the
/// same entry, so every instance restarts with the new value, never all at once.
pub(super) fn set(
    state: &PlacementState,
    view: &View,
    app: &str,
    name: &str,
    sealed: &SealedSecret,
    auth: Authorized,
) -> Result<Vec<Command>, WriteError> {
    check_secret_name(name).map_err(WriteError::Rejected)?;
    let action = AppAction::SetSecret {
        app: app.to_owned(),
        name: name.to_owned(),
        sealed: sealed.digest(),
    };
    state.check_signed(&auth, &action)?;
    let roll = state
        .apps
        .get(app)
        .filter(|record| record.manifest.secrets.iter().any(|s| s == name))
        .map(|current| {
            let mut record = current.clone();
            record.generation = state.next_generation(app);
            record.deployed_at_ms = view.now_ms;
            record.unplaced = None;
            let rollout = roll::start(state, &record, view.now_ms);
            if rollout.from.is_none() {
                // Nothing runs yet: placed as a deploy would place it.
                let Command::PutApp { app, instances, .. } =
                    put_app(state, view, record, auth.clone())
                else {
                    unreachable!("put_app answers a PutApp")
                };
                return SecretRoll {
                    app: *app,
                    instances,
                    rollout: Some(rollout),
                };
            }
            let owner = auth.request.key.to_string();
            let rolled = roll::step(state, view, &record, &rollout, owner);
            SecretRoll {
                app: rolled.record,
                instances: rolled.instances,
                rollout: Some(rolled.rollout),
            }
        });
    Ok(vec![Command::PutSecret {
        app: app.to_owned(),
        name: name.to_owned(),
        sealed: Box::new(sealed.clone()),
        auth: Box::new(auth),
        roll: roll.map(Box::new),
    }])
}

/// Removes secret `name` of `app`, unless the app's manifest still names it (its next start
/// would fail).
pub(super) fn remove(
    state: &PlacementState,
    app: &str,
    name: &str,
    auth: Authorized,
) -> Result<Vec<Command>, WriteError> {
    let action = AppAction::RemoveSecret {
        app: app.to_owned(),
        name: name.to_owned(),
    };
    state.check_signed(&auth, &action)?;
    if !state.secrets.get(app).is_some_and(|s| s.contains_key(name)) {
        return Err(WriteError::Rejected(format!(
            "app '{app}' has no secret '{name}'"
        )));
    }
    if state
        .apps
        .get(app)
        .is_some_and(|record| record.manifest.secrets.iter().any(|s| s == name))
    {
        return Err(WriteError::Rejected(format!(
            "app '{app}' runs with secret '{name}': deploy a version without it first"
        )));
    }
    Ok(vec![Command::RemoveSecret {
        app: app.to_owned(),
        name: name.to_owned(),
        auth: Box::new(auth),
    }])
}
