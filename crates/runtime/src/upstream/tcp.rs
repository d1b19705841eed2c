//! Raw TCP connections to an app's ports, for the ports it publishes (`[[ports]]`): the node's
//! ingress hands each client connection to one of them and copies bytes both ways.

use std::{collections::BTreeMap, io, net::SocketAddr, time::Duration};

use tokio::net::{TcpSocket, TcpStream};

use super::MakeSocket;

/// How long connecting to a port may take (it is on this host: a refusal is immediate).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an app's ports are reached from this host.
pub(crate) enum TcpPorts {
    /// Only the ports the engine published, each at a host address of its own, by the app's port.
    Published(BTreeMap<u16, SocketAddr>),
    /// Any port of the app's own network namespace, at `ip`, from sockets made inside it.
    Own {
        ip: std::net::IpAddr,
        make_socket: MakeSocket,
    },
}

impl TcpPorts {
    /// A connection to the app's `port`.
    pub(crate) async fn connect(&self, port: u16) -> io::Result<TcpStream> {
        let (addr, socket) = match self {
            TcpPorts::Published(ports) => {
                let addr = *ports.get(&port).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("port {port} of the app is not published"),
                    )
                })?;
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                (addr, socket)
            }
            TcpPorts::Own { ip, make_socket } => (SocketAddr::new(*ip, port), make_socket().await?),
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} took over {CONNECT_TIMEOUT:?}"),
                )
            })??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}
