//! The transports. An open mesh: TCP with Noise and Yamux, and QUIC. A private mesh: TCP only,
//! where each side proves it holds the mesh secret before anything else, and Noise is bound to
//! the secret too, so a peer without it cannot complete a connection and reaches no protocol.
//!
//! ```text
//!  TCP ─▶ nonces ─▶ proof of the secret ─▶ multistream-select ─▶ Noise (prologue from the secret) ─▶ Yamux
//! ```
//!
//! Each side sends a greeting and a fresh nonce, then a keyed BLAKE3 hash of its role and both
//! nonces under a key derived from the secret, and checks the other's before passing a byte on:
//! a peer without the secret is refused at one known point, with a clear reason, and counted in
//! `mycel_handshakes_refused_total{direction}`. The proof leaves in the same flight as what
//! follows (the check is lazy, on the first read), so it adds no round trip beyond the nonces'.
//! Noise's prologue, derived from the secret as well, makes the Noise handshake itself fail for a
//! peer without it, whatever happened before.
//!
//! Why not libp2p's pnet: it encrypts every byte again with XSalsa20 (a scalar implementation)
//! under Noise's own encryption, which capped a private link at about 40% of an open one's
//! throughput. Once the peer is proven, Noise's encryption is all a link needs.
//!
//! QUIC brings its own handshake (TLS) that cannot be bound to the secret, so a private mesh
//! neither listens on nor dials QUIC.

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

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{
    Multiaddr, PeerId, Swarm, Transport,
    core::{
        ConnectedPoint,
        muxing::StreamMuxerBox,
        transport::{Boxed, upgrade::Version},
    },
    identity::Keypair,
    multiaddr::Protocol,
    noise, tcp, yamux,
};
use mycel_protocol::ticket::MeshSecret;
use prometheus_client::{metrics::counter::Counter, registry::Registry};

use crate::{MeshConfig, MeshError, behaviour::Behaviour};

/// What each side of a private connection sends first: which handshake this is, and its version.
const GREETING: [u8; 8] = *b"mycel/p1";
/// The nonce each side sends after the greeting.
const NONCE_LEN: usize = 16;
/// A proof: a keyed BLAKE3 hash.
const PROOF_LEN: usize = 32;
/// How long the greetings and nonces may take.
const PROOF_TIMEOUT: Duration = Duration::from_secs(3);

/// Keys derived from the mesh secret, one per use.
#[derive(Clone)]
struct SecretKeys {
    proof: [u8; 32],
    prologue: Vec<u8>,
}

impl SecretKeys {
    fn derive(secret: &MeshSecret) -> Self {
        Self {
            proof: blake3::derive_key("mycel private mesh proof v1", secret.expose()),
            prologue: blake3::derive_key("mycel private mesh noise prologue v1", secret.expose())
                .to_vec(),
        }
    }

    /// What the side that `dialed` (or listened) proves with, for this pair of nonces.
    fn proof(&self, dialed: bool, dialer_nonce: &[u8], listener_nonce: &[u8]) -> [u8; PROOF_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.proof);
        hasher.update(if dialed { b"dialer" } else { b"listen" });
        hasher.update(dialer_nonce);
        hasher.update(listener_nonce);
        *hasher.finalize().as_bytes()
    }
}

/// Sends the greeting, a nonce and then this side's proof; answers the socket with the proof the
/// peer must send, which [`Proven`] checks on the first read.
async fn exchange_proofs<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    keys: &SecretKeys,
    endpoint: &ConnectedPoint,
    refusals: &Refusals,
) -> io::Result<[u8; PROOF_LEN]> {
    let mine: [u8; NONCE_LEN] = rand::random();
    let mut hello = [0; GREETING.len() + NONCE_LEN];
    hello[..GREETING.len()].copy_from_slice(&GREETING);
    hello[GREETING.len()..].copy_from_slice(&mine);
    socket.write_all(&hello).await?;
    socket.flush().await?;
    let mut theirs = [0; GREETING.len() + NONCE_LEN];
    socket.read_exact(&mut theirs).await?;
    if theirs[..GREETING.len()] != GREETING {
        // An open node (multistream-select), or something else entirely.
        refusals.record(endpoint);
        return Err(refused());
    }
    let theirs = &theirs[GREETING.len()..];
    let dialed = endpoint.is_dialer();
    let (dialer_nonce, listener_nonce) = if dialed {
        (&mine[..], theirs)
    } else {
        (theirs, &mine[..])
    };
    socket
        .write_all(&keys.proof(dialed, dialer_nonce, listener_nonce))
        .await?;
    Ok(keys.proof(!dialed, dialer_nonce, listener_nonce))
}

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

/// A private mesh's transport for `key`: TCP, the proof exchange keyed by `secret`, Noise with
/// a prologue from `secret`, Yamux. Public so tests and benchmarks speak exactly what nodes speak.
pub fn private_tcp(
    key: &Keypair,
    secret: &MeshSecret,
    refusals: Refusals,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let keys = SecretKeys::derive(secret);
    let noise = noise::Config::new(key)?.with_prologue(keys.prologue.clone());
    Ok(tcp::tokio::Transport::new(tcp_config())
        .and_then(move |mut socket, endpoint: ConnectedPoint| {
            let (keys, refusals) = (keys.clone(), refusals.clone());
            async move {
                // Shorter than the upgrade's own timeout: a peer that never answers with a
                // greeting (an open node waits for multistream-select) fails here, promptly.
                let exchange = exchange_proofs(&mut socket, &keys, &endpoint, &refusals);
                let expected = tokio::time::timeout(PROOF_TIMEOUT, exchange)
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the peer did not prove it holds the mesh secret in time (an open node?)",
                        )
                    })??;
                Ok::<_, io::Error>(Proven::new(socket, expected, refusals, endpoint))
            }
        })
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
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

/// A short, stable fingerprint of a mesh secret for logs and for people comparing two nodes: 8
/// hex digits of a hash derived from it. Reveals nothing usable.
pub fn secret_fingerprint(secret: &MeshSecret) -> String {
    let hash = blake3::derive_key("mycel private mesh fingerprint v1", secret.expose());
    hash[..4].iter().map(|b| format!("{b:02x}")).collect()
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

/// A stream that passes no byte on until the peer's proof has arrived and matched `expected`.
struct Proven<S> {
    inner: S,
    expected: [u8; PROOF_LEN],
    received: [u8; PROOF_LEN],
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
    fn new(
        inner: S,
        expected: [u8; PROOF_LEN],
        refusals: Refusals,
        endpoint: ConnectedPoint,
    ) -> Self {
        Self {
            inner,
            expected,
            received: [0; PROOF_LEN],
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
            let wanted = PROOF_LEN - this.got;
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
            if this.got < PROOF_LEN {
                continue;
            }
            // Compared as hashes: in constant time.
            if blake3::Hash::from_bytes(this.received) != blake3::Hash::from_bytes(this.expected) {
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
