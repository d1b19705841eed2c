//! How the gateway and discovery see what the agent runs here.

use std::{sync::Arc, time::Duration};

use mycel_agent::AgentHandle;
use mycel_mesh::MeshHandle;

/// App discovery: announces the apps the agent runs here healthy, and browses the mesh.
pub(crate) fn start_discovery(
    mesh: &MeshHandle,
    keypair: libp2p::identity::Keypair,
    lifetime: Duration,
    agent: &AgentHandle,
    placement: &mycel_placement::PlacementHandle,
    stage: &crate::start::Stage,
) -> mycel_discovery::DiscoveryHandle {
    let mut config = mycel_discovery::DiscoveryConfig::new(mesh.clone(), keypair);
    config.lifetime = lifetime;
    let local = mycel_discovery::watch_local_apps(
        Arc::new(AgentInstances(agent.clone())),
        placement.clone(),
    );
    mycel_discovery::start(config, local, stage.stop.clone(), &stage.tasks)
}

/// Discovery's view of what runs here: the agent's healthy instances.
struct AgentInstances(AgentHandle);

impl mycel_discovery::LocalInstances for AgentInstances {
    fn healthy_instances(&self) -> Vec<String> {
        self.0
            .instances()
            .iter()
            .map(|i| i.id().to_string())
            .filter(|id| self.0.is_healthy(id))
            .collect()
    }
}

/// The gateway's view of what runs here: the agent's instances. A runtime error that another
/// instance might not hit (overloaded, stopping) goes back to the gateway to retry elsewhere;
/// any other becomes this instance's answer (a trap is a 500, a timeout a 504).
pub(crate) struct AgentRoutes(pub(crate) AgentHandle);

impl mycel_gateway::LocalInstances for AgentRoutes {
    fn serve(
        &self,
        id: &str,
        request: http::Request<mycel_gateway::Body>,
    ) -> Option<
        futures::future::BoxFuture<
            'static,
            Result<http::Response<mycel_gateway::Body>, mycel_gateway::BoxError>,
        >,
    > {
        let answer = self.0.serve(id, request)?;
        Some(Box::pin(async move {
            match answer.await {
                Ok(response) => Ok(response),
                Err(e) if e.is_retryable() => Err(Box::new(e) as mycel_gateway::BoxError),
                Err(e) => {
                    let body = serde_json::json!({"error": e.to_string(), "code": e.code()});
                    let mut response =
                        http::Response::new(mycel_runtime::full_body(body.to_string()));
                    *response.status_mut() = e.status_code();
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok(response)
                }
            }
        }))
    }

    fn is_healthy(&self, id: &str) -> bool {
        self.0.is_healthy(id)
    }

    fn connect(
        &self,
        id: &str,
        port: u16,
    ) -> Option<
        futures::future::BoxFuture<'static, Result<tokio::net::TcpStream, mycel_gateway::BoxError>>,
    > {
        let connecting = self.0.instance(id)?.connect(port);
        Some(Box::pin(async move {
            connecting
                .await
                .map_err(|e| Box::new(e) as mycel_gateway::BoxError)
        }))
    }
}
