//! `GET /v1/apps/{name}/logs[?follow=true]`: an app's log lines from every instance on every node,
//! as server-sent events whose data is a `LogEvent` as JSON.
//!
//! Lines of instances here come from the agent; those of instances on other nodes through the
//! logs protocol, one stream per node that runs some. The sources are merged as lines arrive.
//! Without `follow` the answer ends once every source has sent its recent lines; with it, it
//! stays open until the client leaves.

use std::collections::BTreeSet;

use axum::{
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt, stream::BoxStream};
use mycel_protocol::{PeerId, api::LogEvent};
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
    let nodes: BTreeSet<String> = replica
        .state
        .instances_of(&name)
        .map(|i| i.node.clone())
        .collect();
    let me = state.mesh.peer_id();
    let mut sources: Vec<BoxStream<'static, LogEvent>> = Vec::new();
    for node in nodes {
        let Ok(peer) = node.parse::<PeerId>() else {
            tracing::warn!(%node, "the replica names a node that is no peer id");
            continue;
        };
        if peer == me {
            sources.push(state.agent.log_events(&name, query.follow));
        } else {
            sources.push(mycel_agent::remote_logs(&state.mesh, peer, &name, query.follow).boxed());
        }
    }
    let events =
        futures::stream::select_all(sources).map(|event| Event::default().json_data(event));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
