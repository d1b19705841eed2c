//! Which published ports this node listens on, and one accept loop per port. The set follows
//! this node's replica: a port opens when an app that publishes it is deployed, and closes when
//! the app is removed or stops publishing it.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use mycel_placement::PlacementState;
use mycel_protocol::NodePolicy;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Shared, connection};

/// How long to wait before binding a port again that something else holds.
const BIND_RETRY: Duration = Duration::from_secs(2);
/// How long to wait after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One published port, as this node serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub app: String,
    /// The instances' own port its connections go to.
    pub container: u16,
}

/// The ports this node listens on (`listen`), and those its owner's policy refuses (`refused`),
/// each with the app that publishes it. Pure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub listen: BTreeMap<u16, Published>,
    pub refused: BTreeMap<u16, String>,
}

/// Every port an app in `state` publishes, split by whether `policy` lets this node open it.
pub fn wanted(state: &PlacementState, policy: &NodePolicy) -> Wanted {
    let mut wanted = Wanted::default();
    for record in state.apps.values() {
        let app = &record.manifest.name;
        for port in &record.manifest.ports {
            if policy.allows_published_port(port.published) {
                let published = Published {
                    app: app.clone(),
                    container: port.container,
                };
                wanted.listen.insert(port.published, published);
            } else {
                wanted.refused.insert(port.published, app.clone());
            }
        }
    }
    wanted
}

/// Opens and closes listeners as this node's replica changes, until `shutdown`.
pub(super) async fn follow(
    shared: Arc<Shared>,
    connections: &TaskTracker,
    shutdown: CancellationToken,
) {
    let mut replicas = shared.config.placement.subscribe();
    let mut open: BTreeMap<u16, (Published, CancellationToken)> = BTreeMap::new();
    let mut refused = BTreeMap::new();
    loop {
        let replica = replicas.borrow_and_update().clone();
        let wanted = wanted(&replica.state, &shared.config.policy);
        for (port, app) in &wanted.refused {
            if refused.get(port) != Some(app) {
                tracing::info!(
                    port, %app,
                    "not publishing a port here: this node's policy (published_ports) refuses it"
                );
            }
        }
        refused = wanted.refused;
        open.retain(|port, (published, stop)| {
            let keep = wanted.listen.get(port) == Some(published);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (port, published) in wanted.listen {
            if open.contains_key(&port) {
                continue;
            }
            let stop = shutdown.child_token();
            connections.spawn(listen(
                shared.clone(),
                port,
                published.clone(),
                connections.clone(),
                stop.clone(),
                shutdown.clone(),
            ));
            open.insert(port, (published, stop));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = replicas.changed() => if changed.is_err() { return },
        }
    }
}

/// Listens at `port` until `stop` (binding again while something else holds it), handing each
/// connection on. Connections outlive their listener: they end with their instance, or with the
/// node (`shutdown`).
async fn listen(
    shared: Arc<Shared>,
    port: u16,
    published: Published,
    connections: TaskTracker,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let addr = SocketAddr::new(shared.config.address, port);
    let mut warned = false;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => {
                if !warned {
                    tracing::warn!(%addr, app = %published.app, error = %e,
                        "cannot publish a port yet; trying again");
                    warned = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    () = tokio::time::sleep(BIND_RETRY) => {}
                }
            }
        }
    };
    tracing::info!(%addr, app = %published.app, container = published.container, "published a port");
    loop {
        let (tcp, _client) = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "accepting an ingress connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        connections.spawn(connection::forward(
            shared.clone(),
            published.clone(),
            tcp,
            shutdown.clone(),
        ));
    }
    tracing::info!(%addr, app = %published.app, "closed a published port");
}

#[cfg(test)]
mod tests {
    use mycel_protocol::{
        Manifest,
        app::{PortProtocol, PortSpec},
        placement::AppRecord,
    };

    use super::*;

    fn app(name: &str, ports: &[(u16, u16)]) -> AppRecord {
        let mut manifest = Manifest::from_toml(&format!(
            "name = \"{name}\"\nversion = \"1\"\n[container]\nimage = \"x:1\"\n"
        ))
        .unwrap();
        manifest.ports = ports
            .iter()
            .map(|&(container, published)| PortSpec {
                container,
                published,
                protocol: PortProtocol::Tcp,
            })
            .collect();
        AppRecord {
            manifest,
            deployed_by: "node".into(),
            deployed_at_ms: 0,
            generation: 1,
            unplaced: None,
            scale: None,
        }
    }

    #[test]
    fn every_published_port_is_wanted_unless_the_policy_refuses_it() {
        let mut state = PlacementState::default();
        for record in [
            app("db", &[(5432, 15432)]),
            app("web", &[(80, 8080), (443, 8443)]),
        ] {
            state.apps.insert(record.manifest.name.clone(), record);
        }
        state.apps.insert("plain".into(), app("plain", &[]));
        let all = wanted(&state, &NodePolicy::default());
        assert_eq!(
            all.listen.keys().copied().collect::<Vec<_>>(),
            [8080, 8443, 15432]
        );
        assert_eq!(
            all.listen[&15432],
            Published {
                app: "db".into(),
                container: 5432
            }
        );
        assert!(all.refused.is_empty());
        let policy = NodePolicy {
            published_ports: Some(vec!["8000-8999".into()]),
            ..NodePolicy::default()
        };
        let some = wanted(&state, &policy);
        assert_eq!(
            some.listen.keys().copied().collect::<Vec<_>>(),
            [8080, 8443]
        );
        assert_eq!(some.refused, BTreeMap::from([(15432, "db".to_owned())]));
    }
}
