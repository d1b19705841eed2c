//! Apps that serve HTTP/1.1 on a port of their own — containers and sandboxed processes — as
//! [`Instance`](crate::Instance)s: a pool of connections to the port ([`proxy`]) and the instance
//! shell around it ([`instance`]), which leaves measuring and ending the app to its runtime's
//! [`Backend`].

pub(crate) mod instance;
pub(crate) mod proxy;
pub(crate) mod tcp;

pub(crate) use instance::{Backend, Started, UpstreamInstance};
pub(crate) use proxy::{MakeSocket, Upstream};
pub(crate) use tcp::TcpPorts;
