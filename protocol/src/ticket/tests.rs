use proptest::prelude::*;

use super::*;

fn peer() -> PeerId {
    "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
        .parse()
        .unwrap()
}

fn addr(text: &str) -> Multiaddr {
    text.parse().unwrap()
}

fn private() -> JoinTicket {
    JoinTicket::new(
        peer(),
        &[
            addr("/ip4/192.0.2.10/tcp/7400"),
            addr("/ip6/2001:db8::1/tcp/7400"),
        ],
        Some(MeshSecret::from_bytes([7; 32])),
    )
}

/// Encodes `version ‖ body ‖ checksum` as a ticket, for inputs `encode` would never write.
fn raw_ticket(version: u8, body: &[u8]) -> String {
    let mut payload = vec![version];
    payload.extend_from_slice(body);
    let checksum = crc32fast::hash(&payload);
    payload.extend_from_slice(&checksum.to_be_bytes());
    format!(
        "mycel{}",
        data_encoding::BASE32_NOPAD
            .encode(&payload)
            .to_ascii_lowercase()
    )
}

fn cbor(value: &ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

fn body(peer: Vec<u8>, addrs: Vec<Vec<u8>>, secret: Option<Vec<u8>>) -> Vec<u8> {
    use ciborium::Value;
    let mut map = vec![
        (Value::Text("p".into()), Value::Bytes(peer)),
        (
            Value::Text("a".into()),
            Value::Array(addrs.into_iter().map(Value::Bytes).collect()),
        ),
    ];
    if let Some(secret) = secret {
        map.push((Value::Text("s".into()), Value::Bytes(secret)));
    }
    cbor(&Value::Map(map))
}

#[test]
fn a_private_ticket_round_trips_and_is_one_copy_safe_line() {
    let ticket = private();
    let text = ticket.to_string();
    assert!(text.starts_with("mycel"), "{text}");
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
        "{text}"
    );
    assert!(text.len() < 250, "{} characters", text.len());
    let parsed: JoinTicket = text.parse().unwrap();
    assert_eq!(parsed, ticket);
    assert!(parsed.is_private());
}

#[test]
fn an_open_ticket_has_no_secret() {
    let ticket = JoinTicket::new(peer(), &[addr("/ip4/127.0.0.1/tcp/1")], None);
    let parsed: JoinTicket = ticket.to_string().parse().unwrap();
    assert_eq!(parsed, ticket);
    assert!(!parsed.is_private());
    assert!(ticket.to_string().len() < private().to_string().len());
}

#[test]
fn case_and_whitespace_do_not_matter() {
    let text = private().to_string();
    let wrapped = format!(
        "  {}\n{}\r\n {} ",
        &text[..40],
        &text[40..90].to_ascii_uppercase(),
        &text[90..]
    );
    assert_eq!(wrapped.parse::<JoinTicket>().unwrap(), private());
    assert_eq!(
        text.to_ascii_uppercase().parse::<JoinTicket>().unwrap(),
        private()
    );
}

#[test]
fn peer_suffixes_are_dropped_and_dial_addresses_carry_them() {
    let with_peer = addr(&format!("/ip4/10.0.0.1/tcp/7400/p2p/{}", peer()));
    let ticket = JoinTicket::new(peer(), std::slice::from_ref(&with_peer), None);
    assert_eq!(ticket.addrs, vec![addr("/ip4/10.0.0.1/tcp/7400")]);
    assert_eq!(ticket.dial_addrs(), vec![with_peer]);
}

#[test]
fn at_most_the_limit_of_addresses_is_kept() {
    let addrs: Vec<Multiaddr> = (0..40)
        .map(|i| addr(&format!("/ip4/10.0.0.{i}/tcp/7400")))
        .collect();
    let ticket = JoinTicket::new(peer(), &addrs, None);
    assert_eq!(ticket.addrs.len(), MAX_TICKET_ADDRS);
    assert_eq!(ticket.to_string().parse::<JoinTicket>().unwrap(), ticket);
}

#[test]
fn what_is_not_a_ticket_says_so() {
    for text in [
        "",
        "/ip4/127.0.0.1/tcp/7400",
        "hello",
        "myce",
        "ticket-mycelabc",
    ] {
        assert!(
            matches!(text.parse::<JoinTicket>(), Err(TicketError::NotATicket(_))),
            "{text:?}"
        );
    }
    assert!(matches!(
        "mycel".parse::<JoinTicket>(),
        Err(TicketError::NotATicket(_))
    ));
    // '1', '8', '-' are not base32.
    for text in ["mycel1abc", "mycelabc8", "mycel-abc"] {
        assert!(
            matches!(text.parse::<JoinTicket>(), Err(TicketError::NotATicket(_))),
            "{text:?}"
        );
    }
    let error = "hello".parse::<JoinTicket>().unwrap_err().to_string();
    assert!(error.starts_with("not a mycel join ticket"), "{error}");
    assert!(JoinTicket::looks_like_ticket(" MYCELabc"));
    assert!(!JoinTicket::looks_like_ticket("/ip4/1.2.3.4/tcp/1"));
}

#[test]
fn a_damaged_copy_is_caught_by_the_checksum() {
    let text = private().to_string();
    // Every single changed character in the body is caught.
    for i in "mycel".len() + 2..text.len() {
        let mut bytes = text.clone().into_bytes();
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let damaged = String::from_utf8(bytes).unwrap();
        match damaged.parse::<JoinTicket>() {
            Err(TicketError::Damaged | TicketError::NotATicket(_)) => {}
            other => panic!("character {i} changed: {other:?}"),
        }
    }
    // Cut short, at a byte boundary or not.
    for len in "mycel".len() + 2..text.len() - 1 {
        match text[..len].parse::<JoinTicket>() {
            Err(TicketError::Damaged | TicketError::NotATicket(_) | TicketError::Malformed(_)) => {}
            other => panic!("cut to {len}: {other:?}"),
        }
    }
}

#[test]
fn a_newer_version_says_so() {
    let error = raw_ticket(2, b"whatever comes in version 2")
        .parse::<JoinTicket>()
        .unwrap_err();
    assert_eq!(error, TicketError::Newer { version: 2 });
    assert_eq!(
        error.to_string(),
        "ticket version 2 is newer than this mycel (it reads version 1); upgrade mycel"
    );
    assert!(matches!(
        raw_ticket(0, b"").parse::<JoinTicket>(),
        Err(TicketError::Malformed(_))
    ));
}

#[test]
fn malformed_bodies_are_refused() {
    let peer = peer().to_bytes();
    let tcp = addr("/ip4/127.0.0.1/tcp/7400").to_vec();
    let cases = [
        ("garbage", b"\xff\x00garbage".to_vec()),
        ("no peer", cbor(&ciborium::Value::Map(vec![]))),
        (
            "a bad peer id",
            body(b"not a peer".to_vec(), vec![tcp.clone()], None),
        ),
        ("no address", body(peer.clone(), vec![], None)),
        (
            "a bad address",
            body(peer.clone(), vec![b"\xff\xff\xff".to_vec()], None),
        ),
        (
            "a /p2p address",
            body(
                peer.clone(),
                vec![addr(&format!("/ip4/1.2.3.4/tcp/1/p2p/{}", self::peer())).to_vec()],
                None,
            ),
        ),
        (
            "too many addresses",
            body(peer.clone(), vec![tcp.clone(); MAX_TICKET_ADDRS + 1], None),
        ),
        (
            "a short secret",
            body(peer.clone(), vec![tcp.clone()], Some(vec![1; 31])),
        ),
        (
            "a long secret",
            body(peer.clone(), vec![tcp.clone()], Some(vec![1; 33])),
        ),
    ];
    for (what, bytes) in cases {
        assert!(
            matches!(
                raw_ticket(1, &bytes).parse::<JoinTicket>(),
                Err(TicketError::Malformed(_))
            ),
            "{what}"
        );
    }
    // A well-formed body is accepted, and fields a newer mycel adds are ignored.
    let mut newer = body(peer.clone(), vec![tcp.clone()], Some(vec![9; 32]));
    let ciborium::Value::Map(mut map) = ciborium::from_reader(&newer[..]).unwrap() else {
        unreachable!()
    };
    map.push((
        ciborium::Value::Text("z".into()),
        ciborium::Value::Bool(true),
    ));
    newer = cbor(&ciborium::Value::Map(map));
    let ticket: JoinTicket = raw_ticket(1, &newer).parse().unwrap();
    assert_eq!(ticket.secret, Some(MeshSecret::from_bytes([9; 32])));
}

#[test]
fn an_overlong_text_is_refused_before_decoding() {
    let text = format!("mycel{}", "a".repeat(MAX_TICKET_CHARS));
    assert!(matches!(
        text.parse::<JoinTicket>(),
        Err(TicketError::TooLong { .. })
    ));
}

#[test]
fn secrets_never_show_in_debug_and_read_back_from_hex() {
    let secret = MeshSecret::from_bytes([0xab; 32]);
    assert_eq!(format!("{secret:?}"), "MeshSecret(<redacted>)");
    assert!(!format!("{:?}", private()).contains("7, 7"));
    let hex = secret.to_hex();
    assert_eq!(hex, "ab".repeat(32));
    assert_eq!(MeshSecret::from_hex(&format!("{hex}\n")).unwrap(), secret);
    assert_eq!(
        MeshSecret::from_hex(&hex.to_ascii_uppercase()).unwrap(),
        secret
    );
    assert_eq!(MeshSecret::from_hex("abcd"), Err(InvalidSecret));
    assert_eq!(MeshSecret::from_hex(&"zz".repeat(32)), Err(InvalidSecret));
}

proptest! {
    #[test]
    fn any_ticket_round_trips(
        secret in proptest::option::of(proptest::array::uniform32(any::<u8>())),
        ports in proptest::collection::vec(1u16.., 1..6),
        ip in any::<[u8; 4]>(),
    ) {
        let addrs: Vec<Multiaddr> = ports
            .iter()
            .map(|p| addr(&format!("/ip4/{}.{}.{}.{}/tcp/{p}", ip[0], ip[1], ip[2], ip[3])))
            .collect();
        let ticket = JoinTicket::new(peer(), &addrs, secret.map(MeshSecret::from_bytes));
        prop_assert_eq!(ticket.to_string().parse::<JoinTicket>().unwrap(), ticket);
    }

    #[test]
    fn no_text_makes_the_parser_panic(text in "\\PC{0,300}") {
        let _ = text.parse::<JoinTicket>();
        let _ = format!("mycel{text}").parse::<JoinTicket>();
    }
}
