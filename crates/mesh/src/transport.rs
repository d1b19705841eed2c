//! The transports. An open mesh: TCP with Noise and Yamux, and QUIC. A private mesh: TCP only,
//! with libp2p's pre-shared-key layer (pnet: XSalsa20 keyed by the mesh secret) under Noise, so a
//! peer without the secret cannot complete a connection and reaches no protocol at all.
//!
//! ```text
//!  TCP ─▶ pnet nonces ─▶ proof of the secret ─▶ multistream-select ─▶ Noise ─▶ Yamux
//! ```
//!
//! pnet alone authenticates nothing: a peer keyed differently just reads garbage and fails
//! somewhere in the next handshake, like any broken connection. So each side also writes a fixed
//! proof through the pnet layer right after the nonces (it leaves in the same packet as what
//! follows: no extra round trip) and checks the other's before passing a byte on. A peer without
//! the secret is thus refused at one known point, with a clear reason, and counted in
//! `mycel_handshakes_refused_total{direction}`.
//!
//! QUIC brings its own encryption and cannot carry a pre-shared key, so a private mesh neither
//! listens on nor dials QUIC.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::{
    Multiaddr, PeerId, Swarm, Transport,
    core::{
        ConnectedPoint,
        muxing::StreamMuxerBox,
        transport::{Boxed, upgrade::Version},
    },
    identity::Keypair,
    multiaddr::Protocol,
    noise,
    pnet::{PnetConfig, PreSharedKey},
    tcp, yamux,
};
use mycel_protocol::ticket::MeshSecret;
use prometheus_client::{metrics::counter::Counter, registry::Registry};

use crate::{MeshConfig, MeshError, behaviour::Behaviour};

/// What each side of a private connection sends first through the pnet layer: decrypted right,
/// it reads as this; decrypted with another key (or never encrypted), as anything else.
const PROOF: [u8; 8] = *b"mycel/1\n";

/// Builds the node's swarm: open or private, as `config.secret` says.
pub(crate) fn build_swarm(
    config: &MeshConfig,
    registry: &mut Registry,
    refusals: Refusals,
) -> Result<Swarm<Behaviour>, MeshError> {
    let builder = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone()).with_tokio();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let swarm = match &config.secret {
        None => builder
            .with_tcp(tcp_config(), noise::Config::new, yamux::Config::default)
            .map_err(|e| MeshError::Transport(e.to_string()))?
            .with_quic()
            .with_bandwidth_metrics(registry)
            .with_behaviour(|key| Behaviour::new(key, &config.timing))
            .map_err(|e| MeshError::Behaviour(e.to_string()))?
            .with_swarm_config(idle)
            .build(),
        Some(secret) => builder
            .with_other_transport(|key| private_tcp(key, secret, refusals))
            .map_err(|e| MeshError::Transport(e.to_string()))?
            .with_bandwidth_metrics(registry)
            .with_behaviour(|key| Behaviour::new(key, &config.timing))
            .map_err(|e| MeshError::Behaviour(e.to_string()))?
            .with_swarm_config(idle)
            .build(),
    };
    Ok(swarm)
}

fn tcp_config() -> tcp::Config {
    tcp::Config::default().nodelay(true)
}

/// A private mesh's transport for `key`: TCP, pnet keyed by `secret` with the proof exchange,
/// Noise, Yamux. Public so tests and benchmarks speak exactly what nodes speak.
pub fn private_tcp(
    key: &Keypair,
    secret: &MeshSecret,
    refusals: Refusals,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let psk = PreSharedKey::new(*secret.expose());
    Ok(tcp::tokio::Transport::new(tcp_config())
        .and_then(move |socket, endpoint: ConnectedPoint| {
            let refusals = refusals.clone();
            async move {
                let mut socket = PnetConfig::new(psk).handshake(socket).await?;
                // Buffered by pnet: it leaves with the first multistream-select message.
                socket.write_all(&PROOF).await?;
                Ok::<_, libp2p::pnet::PnetError>(Proven::new(socket, refusals, endpoint))
            }
        })
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// A new mesh's secret: 32 bytes from a cryptographic generator.
pub fn generate_secret() -> MeshSecret {
    MeshSecret::from_bytes(rand::random())
}

/// Whether `addr` is a QUIC address (which a private mesh cannot use).
pub fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic))
}

/// A short, stable fingerprint of a mesh secret for logs and for people comparing two nodes:
/// the first 8 hex digits of pnet's (go-libp2p compatible) fingerprint. Reveals nothing usable.
pub fn secret_fingerprint(secret: &MeshSecret) -> String {
    let full = PreSharedKey::new(*secret.expose())
        .fingerprint()
        .to_string();
    full[..8].to_string()
}

/// Counts (and logs) connections refused for want of the mesh secret. Cloning shares the counts.
#[derive(Clone, Debug, Default)]
pub struct Refusals {
    inbound: Counter,
    outbound: Counter,
    /// The first refusal is logged at info, the rest at debug: an outsider retrying every few
    /// seconds must not fill the log.
    logged: Arc<AtomicBool>,
}

impl Refusals {
    pub(crate) fn new(inbound: Counter, outbound: Counter) -> Self {
        Self {
            inbound,
            outbound,
            logged: Arc::default(),
        }
    }

    /// Refused connections so far: (inbound, outbound).
    pub fn counts(&self) -> (u64, u64) {
        (self.inbound.get(), self.outbound.get())
    }

    fn record(&self, endpoint: &ConnectedPoint) {
        let remote = endpoint.get_remote_address();
        let first = !self.logged.swap(true, Ordering::Relaxed);
        if endpoint.is_dialer() {
            self.outbound.inc();
            if first {
                tracing::info!(%remote, "could not connect: the peer is not in this private mesh (another secret, or an open mesh); further refusals are logged at debug and counted in mycel_handshakes_refused_total");
            } else {
                tracing::debug!(%remote, "refused: the peer does not hold this mesh's secret");
            }
        } else {
            self.inbound.inc();
            if first {
                tracing::info!(%remote, "refused a connection from a peer without this private mesh's secret; further refusals are logged at debug and counted in mycel_handshakes_refused_total");
            } else {
                tracing::debug!(%remote, "refused a peer without this mesh's secret");
            }
        }
    }
}

/// A pnet stream that passes no byte on until the peer's proof has arrived and matched.
struct Proven<S> {
    inner: S,
    received: [u8; PROOF.len()],
    got: usize,
    state: ProofState,
    refusals: Refusals,
    endpoint: ConnectedPoint,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ProofState {
    Waiting,
    Passed,
    Refused,
}

impl<S> Proven<S> {
    fn new(inner: S, refusals: Refusals, endpoint: ConnectedPoint) -> Self {
        Self {
            inner,
            received: [0; PROOF.len()],
            got: 0,
            state: ProofState::Waiting,
            refusals,
            endpoint,
        }
    }
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the peer does not hold this private mesh's secret",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Proven<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.state {
                ProofState::Refused => return Poll::Ready(Err(refused())),
                ProofState::Passed => return Pin::new(&mut this.inner).poll_read(cx, buf),
                ProofState::Waiting => {}
            }
            // Into the caller's buffer when it holds the rest of the proof (it nearly always
            // does): one read then serves both the proof and what follows it.
            let wanted = PROOF.len() - this.got;
            let direct = buf.len() >= wanted;
            let n = if direct {
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?
            } else {
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.received[this.got..]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection before proving it holds the mesh secret",
                )));
            }
            let take = n.min(wanted);
            if direct {
                this.received[this.got..this.got + take].copy_from_slice(&buf[..take]);
            }
            this.got += take;
            if this.got < PROOF.len() {
                continue;
            }
            if this.received != PROOF {
                this.state = ProofState::Refused;
                this.refusals.record(&this.endpoint);
                continue;
            }
            this.state = ProofState::Passed;
            if direct && n > take {
                buf.copy_within(take..n, 0);
                return Poll::Ready(Ok(n - take));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Proven<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.state == ProofState::Refused {
            return Poll::Ready(Err(refused()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests;
