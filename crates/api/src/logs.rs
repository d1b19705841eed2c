//! `GET /v1/apps/{name}/logs[?follow=true]`: an app's log lines from every instance on every node,
//! as server-sent events whose data is a `LogEvent` as JSON.
//!
//! Lines of instances here come from the agent; those of instances on other nodes through the
//! logs protocol, one stream per node that runs some. The sources are merged as lines arrive.
//! Without `follow` the answer ends once every source has sent its recent lines; with it, it
//! stays open until the client leaves, following each running instance on its own stream and
//! picking up instances that come to run later (a redeploy, a restart, a move).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use axum::{
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{
    Stream, StreamExt,
    stream::{BoxStream, SelectAll},
};
use mycel_placement::PlacementState;
use mycel_protocol::{
    PeerId,
    api::{InstanceState, LogEvent},
};
use serde::Deserialize;

use crate::{ApiError, ApiState, apps::app_not_found, extract::AppName};

/// Query of `GET /v1/apps/{name}/logs`.
#[derive(Debug, Deserialize)]
pub(crate) struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

pub(crate) async fn logs(
    State(state): State<ApiState>,
    AppName(name): AppName,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, axum::Error>>>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let replica = state.placement.replica();
    if !replica.state.apps.contains_key(&name) {
        return Err(app_not_found(&name));
    }
    let events = if query.follow {
        following(state, name).boxed()
    } else {
        let sources = placed(&replica.state, &name)
            .into_iter()
            .filter_map(|(node, instances)| source(&state, &name, &node, instances, false));
        futures::stream::select_all(sources).boxed()
    };
    let events = events.map(|event| Event::default().json_data(event));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// How often a follower looks for instances that started after it began.
const NEW_INSTANCES_EVERY: Duration = Duration::from_secs(1);

/// The instances of `app`, by node.
fn placed(state: &PlacementState, app: &str) -> BTreeMap<String, Vec<String>> {
    let mut placed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for instance in state.instances_of(app) {
        placed
            .entry(instance.node.clone())
            .or_default()
            .push(instance.id.clone());
    }
    placed
}

/// The events of `instances` of `app` on `node`: from the agent here, or over the mesh.
fn source(
    state: &ApiState,
    app: &str,
    node: &str,
    instances: Vec<String>,
    follow: bool,
) -> Option<BoxStream<'static, LogEvent>> {
    let Ok(peer) = node.parse::<PeerId>() else {
        tracing::warn!(%node, "the replica names a node that is no peer id");
        return None;
    };
    Some(if peer == state.mesh.peer_id() {
        state.agent.log_events_of(app, &instances, follow)
    } else {
        mycel_agent::remote_logs(&state.mesh, peer, app, instances, follow).boxed()
    })
}

/// What a follower's merged sources yield: a line, or the end of one instance's lines.
enum Followed {
    Line(LogEvent),
    Ended(String),
}

/// Follows every running instance of `app`, one source per instance, and adds instances as they
/// come to run (a new version, a restart, a move), until the client leaves.
fn following(state: ApiState, app: String) -> impl Stream<Item = LogEvent> + Send + 'static {
    let mut tick = tokio::time::interval(NEW_INSTANCES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sources: SelectAll<BoxStream<'static, Followed>> = SelectAll::new();
    let followed: BTreeSet<String> = BTreeSet::new();
    futures::stream::unfold(
        (sources, followed, tick),
        move |(mut sources, mut followed, mut tick)| {
            let (state, app) = (state.clone(), app.clone());
            async move {
                loop {
                    tokio::select! {
                        Some(next) = sources.next() => match next {
                            Followed::Line(event) => return Some((event, (sources, followed, tick))),
                            // It stopped; if it runs again, it is followed again.
                            Followed::Ended(id) => { followed.remove(&id); }
                        },
                        _ = tick.tick() => {
                            let replica = state.placement.replica();
                            for instance in replica.state.instances_of(&app) {
                                if instance.state != InstanceState::Running
                                    || !followed.insert(instance.id.clone())
                                {
                                    continue;
                                }
                                let id = instance.id.clone();
                                if let Some(lines) = source(&state, &app, &instance.node, vec![id.clone()], true) {
                                    sources.push(
                                        lines
                                            .map(Followed::Line)
                                            .chain(futures::stream::once(async move { Followed::Ended(id) }))
                                            .boxed(),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
