//! Private and open transports against each other, as bare swarms on loopback.

use futures::{AsyncReadExt, StreamExt, io::Cursor};
use libp2p::swarm::{SwarmEvent, dummy};

use super::*;

fn secret(byte: u8) -> MeshSecret {
    MeshSecret::from_bytes([byte; 32])
}

fn swarm(secret: Option<&MeshSecret>, refusals: &Refusals) -> Swarm<dummy::Behaviour> {
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(10));
    match secret {
        Some(secret) => builder
            .with_other_transport(|key| private_tcp(key, secret, refusals.clone()))
            .unwrap()
            .with_behaviour(|_| dummy::Behaviour)
            .unwrap()
            .with_swarm_config(idle)
            .build(),
        None => builder
            .with_tcp(tcp_config(), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| dummy::Behaviour)
            .unwrap()
            .with_swarm_config(idle)
            .build(),
    }
}

async fn listening(swarm: &mut Swarm<dummy::Behaviour>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// Dials `listener` from `dialer` and drives both until the dialer connects (true) or its dial
/// fails (false) and the listener has seen the outcome too.
async fn connects(
    dialer: &mut Swarm<dummy::Behaviour>,
    listener: &mut Swarm<dummy::Behaviour>,
) -> bool {
    let addr = listening(listener).await;
    dialer.dial(addr).unwrap();
    let (mut dialer_done, mut listener_done) = (None, false);
    let outcome = async {
        while dialer_done.is_none() || !listener_done {
            tokio::select! {
                event = dialer.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } => dialer_done = Some(true),
                    SwarmEvent::OutgoingConnectionError { .. } => dialer_done = Some(false),
                    _ => {}
                },
                event = listener.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. }
                    | SwarmEvent::IncomingConnectionError { .. } => listener_done = true,
                    _ => {}
                },
            }
        }
        dialer_done.unwrap()
    };
    tokio::time::timeout(Duration::from_secs(10), outcome)
        .await
        .expect("the dial ends within 10 s")
}

#[tokio::test]
async fn the_same_secret_connects() {
    let (a, b) = (Refusals::default(), Refusals::default());
    let (mut dialer, mut listener) = (swarm(Some(&secret(1)), &a), swarm(Some(&secret(1)), &b));
    assert!(connects(&mut dialer, &mut listener).await);
    assert_eq!((a.counts(), b.counts()), ((0, 0), (0, 0)));
}

#[tokio::test]
async fn another_secret_is_refused_on_both_sides_and_counted() {
    let (a, b) = (Refusals::default(), Refusals::default());
    let (mut dialer, mut listener) = (swarm(Some(&secret(1)), &a), swarm(Some(&secret(2)), &b));
    assert!(!connects(&mut dialer, &mut listener).await);
    assert_eq!(a.counts(), (0, 1), "the dialer refused the listener");
    assert_eq!(b.counts(), (1, 0), "the listener refused the dialer");
}

#[test]
fn proofs_depend_on_the_secret_the_role_and_both_nonces() {
    let keys = SecretKeys::derive(&secret(1));
    let base = keys.proof(true, &[1; 16], &[2; 16]);
    assert_eq!(base, keys.proof(true, &[1; 16], &[2; 16]));
    assert_ne!(base, keys.proof(false, &[1; 16], &[2; 16]), "the role");
    assert_ne!(
        base,
        keys.proof(true, &[3; 16], &[2; 16]),
        "the dialer's nonce"
    );
    assert_ne!(
        base,
        keys.proof(true, &[1; 16], &[3; 16]),
        "the listener's nonce"
    );
    let other = SecretKeys::derive(&secret(2));
    assert_ne!(base, other.proof(true, &[1; 16], &[2; 16]), "the secret");
    assert_ne!(keys.prologue, other.prologue);
}

#[tokio::test]
async fn a_peer_without_the_proof_exchange_is_refused() {
    let (open, private) = (Refusals::default(), Refusals::default());
    let (mut dialer, mut listener) = (swarm(None, &open), swarm(Some(&secret(1)), &private));
    assert!(!connects(&mut dialer, &mut listener).await);
    assert_eq!(private.counts(), (1, 0));
}

#[tokio::test]
async fn a_private_node_cannot_dial_an_open_one() {
    let (open, private) = (Refusals::default(), Refusals::default());
    let (mut dialer, mut listener) = (swarm(Some(&secret(1)), &private), swarm(None, &open));
    assert!(!connects(&mut dialer, &mut listener).await);
}

#[test]
fn quic_addresses_are_recognised_and_fingerprints_are_short_and_stable() {
    assert!(is_quic(&"/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()));
    assert!(!is_quic(&"/ip4/127.0.0.1/tcp/0".parse().unwrap()));
    let fingerprint = secret_fingerprint(&secret(1));
    assert_eq!(fingerprint.len(), 8);
    assert_eq!(fingerprint, secret_fingerprint(&secret(1)));
    assert_ne!(fingerprint, secret_fingerprint(&secret(2)));
}

/// Reads at most `.1` bytes per call: a peer whose bytes arrive in small pieces.
struct Trickle<R>(R, usize);

impl<R: AsyncRead + Unpin> AsyncRead for Trickle<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = buf.len().min(this.1);
        Pin::new(&mut this.0).poll_read(cx, &mut buf[..n])
    }
}

fn listener_endpoint() -> ConnectedPoint {
    ConnectedPoint::Listener {
        local_addr: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
        send_back_addr: "/ip4/127.0.0.1/tcp/2".parse().unwrap(),
    }
}

async fn read_all(reader: &mut (impl AsyncRead + Unpin), chunk: usize) -> io::Result<Vec<u8>> {
    let (mut out, mut buf) = (Vec::new(), vec![0; chunk]);
    loop {
        match reader.read(&mut buf).await? {
            0 => return Ok(out),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn the_proof_is_checked_however_its_bytes_arrive() {
    let expected = SecretKeys::derive(&secret(1)).proof(true, &[1; 16], &[2; 16]);
    futures::executor::block_on(async {
        let mut sent = expected.to_vec();
        sent.extend_from_slice(b"then the handshake");
        for piece in [1, 3, 8, 9, 64] {
            for chunk in [1, 5, 8, 64] {
                let refusals = Refusals::default();
                let inner = Trickle(Cursor::new(sent.clone()), piece);
                let mut proven =
                    Proven::new(inner, expected, refusals.clone(), listener_endpoint());
                let got = read_all(&mut proven, chunk).await.unwrap();
                assert_eq!(
                    got, b"then the handshake",
                    "pieces of {piece}, reads of {chunk}"
                );
                assert_eq!(refusals.counts(), (0, 0));
            }
        }

        let refusals = Refusals::default();
        let other = SecretKeys::derive(&secret(2)).proof(true, &[1; 16], &[2; 16]);
        let mut wrong = other.to_vec();
        wrong.extend_from_slice(b"then the handshake");
        let mut proven = Proven::new(
            Cursor::new(wrong),
            expected,
            refusals.clone(),
            listener_endpoint(),
        );
        let error = read_all(&mut proven, 64).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert!(read_all(&mut proven, 64).await.is_err(), "refused for good");
        assert_eq!(refusals.counts(), (1, 0));

        let short = Cursor::new(b"myc".to_vec());
        let mut proven = Proven::new(short, expected, Refusals::default(), listener_endpoint());
        let error = read_all(&mut proven, 64).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    });
}
