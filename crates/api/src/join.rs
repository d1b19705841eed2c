//! `GET /v1/join-ticket`: the ticket a new node joins this node's mesh with. A private mesh's
//! ticket carries the mesh's secret, so the auth layer lets this path through only with the
//! node's token, on loopback too (see `auth`).

use axum::{Json, extract::State};
use mycel_protocol::api::JoinTicketInfo;

use crate::{ApiError, ApiState};

/// `GET /v1/join-ticket`
pub(crate) async fn ticket(
    State(state): State<ApiState>,
) -> Result<Json<JoinTicketInfo>, ApiError> {
    let ticket = state
        .mesh
        .join_ticket()
        .await
        .map_err(|_| ApiError::shutting_down())?;
    Ok(Json(JoinTicketInfo {
        private: ticket.is_private(),
        peer_id: ticket.peer_id.to_string(),
        addrs: ticket.dial_addrs().iter().map(|a| a.to_string()).collect(),
        ticket: ticket.to_string(),
    }))
}
