use libp2p_identity::Keypair;

use super::*;

const NOW: u64 = 1_800_000_000_000;

fn listing(name: &str) -> AppListing {
    AppListing {
        format: LISTING_FORMAT,
        name: name.into(),
        version: "1.0.0".into(),
        kind: AppKind::Wasm,
        publisher: Keypair::generate_ed25519()
            .public()
            .to_peer_id()
            .to_string(),
        manifest_hash: BlobHash([7; 32]),
        description: Some("says hello".into()),
        issued_at_ms: NOW,
        expires_at_ms: NOW + 60_000,
    }
}

fn signed(key: &Keypair, listing: &AppListing) -> Vec<u8> {
    codec::encode(&Signed::sign(key, listing).unwrap()).unwrap()
}

#[test]
fn a_signed_listing_verifies_under_its_app_key() {
    let key = Keypair::generate_ed25519();
    let value = signed(&key, &listing("hello"));
    let verified = verify_dht_record(&app_key("hello"), &value, NOW + 1).unwrap();
    assert_eq!(verified.signer, key.public().to_peer_id());
    assert_eq!(verified.listing.name, "hello");
    assert!(matches!(
        verify_dht_record(&app_key("other"), &value, NOW + 1),
        Err(ListingError::WrongKey)
    ));
    assert!(matches!(
        verify_dht_record(b"/mycel/blob/x", &value, NOW + 1),
        Err(ListingError::WrongKey)
    ));
}

#[test]
fn forged_listings_are_refused() {
    let honest = Keypair::generate_ed25519();
    let forger = Keypair::generate_ed25519();
    let payload = codec::encode(&listing("hello")).unwrap();
    let signature = forger.sign(&payload).unwrap();
    let claimed = honest.public().try_into_ed25519().unwrap().to_bytes();
    let envelope = Signed::<AppListing>::from_parts(claimed.to_vec(), payload, signature);
    let value = codec::encode(&envelope).unwrap();
    let error = verify_dht_record(&app_key("hello"), &value, NOW).unwrap_err();
    assert!(matches!(error, ListingError::Forged), "{error}");
    assert_eq!(error.reason(), "forged");
}

#[test]
fn oversized_and_malformed_listings_are_refused_before_decoding() {
    let key = Keypair::generate_ed25519();
    let mut big = listing("hello");
    big.description = Some("x".repeat(4 * MAX_LISTING_BYTES));
    let error = decode_listing(&signed(&key, &big), NOW).unwrap_err();
    assert_eq!(error.reason(), "oversized", "{error}");
    let error = decode_listing(&[0xff; 64], NOW).unwrap_err();
    assert_eq!(error.reason(), "malformed", "{error}");
}

#[test]
fn rules_and_lifetimes_are_checked() {
    let key = Keypair::generate_ed25519();
    type Change = Box<dyn Fn(&mut AppListing)>;
    let cases: Vec<(&str, Change)> = vec![
        ("name", Box::new(|l| l.name = "Not A Label".into())),
        ("version", Box::new(|l| l.version = "1 0".into())),
        ("publisher", Box::new(|l| l.publisher = "nobody".into())),
        ("format", Box::new(|l| l.format = 2)),
        (
            "description",
            Box::new(|l| l.description = Some("x".repeat(MAX_DESCRIPTION_BYTES + 1))),
        ),
        ("control", Box::new(|l| l.description = Some("a\nb".into()))),
        (
            "future",
            Box::new(|l| l.issued_at_ms = NOW + 2 * CLOCK_SKEW_MS),
        ),
        (
            "lifetime",
            Box::new(|l| l.expires_at_ms = l.issued_at_ms + MAX_LIFETIME_MS + 1),
        ),
        ("backwards", Box::new(|l| l.expires_at_ms = l.issued_at_ms)),
    ];
    for (what, change) in cases {
        let mut bad = listing("hello");
        change(&mut bad);
        let error = decode_listing(&signed(&key, &bad), NOW).unwrap_err();
        assert_eq!(error.reason(), "invalid", "{what}: {error}");
    }
    let error = decode_listing(&signed(&key, &listing("hello")), NOW + 60_000).unwrap_err();
    assert_eq!(error.reason(), "expired");
}

#[test]
fn keys_and_shards_are_stable() {
    assert_eq!(app_key("hello"), b"/mycel/app/hello");
    assert_eq!(app_of_key(b"/mycel/app/hello"), Some("hello"));
    assert_eq!(app_of_key(b"/mycel/apps/3"), None);
    assert_eq!(directory_key(3), b"/mycel/apps/3");
    // Fixed: every node must put a name in the same shard.
    assert_eq!(shard_of("hello"), shard_of("hello"));
    let mut counts = [0usize; DIRECTORY_SHARDS as usize];
    for i in 0..1600 {
        counts[shard_of(&format!("app-{i}")) as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (50..=150).contains(&c)),
        "{counts:?}"
    );
}

#[test]
fn request_counts_are_bounded() {
    let request = DiscoverRequest::List {
        shards: vec![0; MAX_REQUEST_ITEMS + 1],
        name: None,
    };
    assert!(request.check_limits().is_err());
    let request = DiscoverRequest::List {
        shards: (0..DIRECTORY_SHARDS).collect(),
        name: None,
    };
    assert!(request.check_limits().is_ok());
}

proptest::proptest! {
    #[test]
    fn never_panics_on_arbitrary_records(
        key in proptest::collection::vec(proptest::num::u8::ANY, 0..32),
        value in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
    ) {
        let _ = verify_dht_record(&key, &value, NOW);
    }
}

#[test]
fn a_typical_signed_listing_is_small() {
    let key = Keypair::generate_ed25519();
    let mut typical = listing("hello-world");
    typical.description = None;
    let len = signed(&key, &typical).len();
    assert!((250..450).contains(&len), "{len} bytes");
}
