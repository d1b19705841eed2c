use mycel_protocol::{
    BlobHash, Keypair,
    app::AppKind,
    discovery::{DIRECTORY_SHARDS, LISTING_FORMAT, verify_listing},
};

use super::*;

const NOW: u64 = 1_800_000_000_000;

fn all_shards() -> Vec<u16> {
    (0..DIRECTORY_SHARDS).collect()
}

fn listing(name: &str, version: &str, issued_at_ms: u64) -> AppListing {
    AppListing {
        format: LISTING_FORMAT,
        name: name.into(),
        version: version.into(),
        kind: AppKind::Wasm,
        publisher: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
        manifest_hash: BlobHash([1; 32]),
        description: None,
        issued_at_ms,
        expires_at_ms: issued_at_ms + 60_000,
    }
}

fn verified(key: &Keypair, listing: &AppListing) -> VerifiedListing {
    let envelope = Signed::sign(key, listing).unwrap();
    verify_listing(&envelope, listing.issued_at_ms).unwrap()
}

#[test]
fn keeps_the_newest_listing_per_node_and_app() {
    let node = Keypair::generate_ed25519();
    let mut directory = Directory::default();
    assert!(directory.insert(verified(&node, &listing("hello", "2", NOW + 5)), NOW));
    assert!(!directory.insert(verified(&node, &listing("hello", "1", NOW)), NOW));
    assert_eq!(directory.len(), 1);
    let kept = directory.listings(&all_shards(), None, NOW, 100);
    assert_eq!(verify_listing(&kept[0], NOW).unwrap().listing.version, "2");
}

#[test]
fn answers_by_shard_and_name_and_forgets_expired_and_withdrawn_listings() {
    let a = Keypair::generate_ed25519();
    let b = Keypair::generate_ed25519();
    let mut directory = Directory::default();
    directory.insert(verified(&a, &listing("hello", "1", NOW)), NOW);
    directory.insert(verified(&b, &listing("hello", "1", NOW)), NOW);
    directory.insert(verified(&a, &listing("other", "1", NOW)), NOW);
    let hello_shard = shard_of("hello");
    assert_eq!(
        directory
            .listings(&[hello_shard], Some("hello"), NOW, 100)
            .len(),
        2
    );
    let others: Vec<u16> = all_shards()
        .into_iter()
        .filter(|s| *s != hello_shard && *s != shard_of("other"))
        .collect();
    assert!(directory.listings(&others, None, NOW, 100).is_empty());

    directory.withdraw(a.public().to_peer_id(), &["hello".into()]);
    assert_eq!(directory.listings(&all_shards(), None, NOW, 100).len(), 2);
    // Expired listings are never answered, and pruning drops them.
    assert!(
        directory
            .listings(&all_shards(), None, NOW + 60_000, 100)
            .is_empty()
    );
    directory.prune(NOW + 60_000);
    assert!(directory.is_empty());
}

#[test]
fn is_bounded_per_signer_and_in_all() {
    let greedy = Keypair::generate_ed25519();
    let mut directory = Directory::with_capacity(MAX_ENTRIES_PER_SIGNER + 4);
    for i in 0..MAX_ENTRIES_PER_SIGNER + 10 {
        directory.insert(verified(&greedy, &listing(&format!("a{i}"), "1", NOW)), NOW);
    }
    assert_eq!(directory.len(), MAX_ENTRIES_PER_SIGNER);

    // Full: a listing that outlives the soonest-expiring entry replaces it; one that does not
    // is refused.
    let mut small = Directory::with_capacity(2);
    let x = Keypair::generate_ed25519();
    small.insert(verified(&x, &listing("one", "1", NOW)), NOW);
    small.insert(verified(&x, &listing("two", "1", NOW + 10)), NOW);
    assert!(!small.insert(verified(&x, &listing("old", "1", NOW - 10)), NOW));
    assert!(small.insert(verified(&x, &listing("three", "1", NOW + 20)), NOW));
    let names: Vec<String> = small
        .listings(&all_shards(), None, NOW, 10)
        .iter()
        .map(|l| verify_listing(l, NOW).unwrap().listing.name)
        .collect();
    assert_eq!(names, ["three", "two"]);
}

#[test]
fn answers_are_capped_per_app() {
    let mut directory = Directory::default();
    for _ in 0..MAX_LISTINGS_PER_APP + 5 {
        let node = Keypair::generate_ed25519();
        directory.insert(verified(&node, &listing("popular", "1", NOW)), NOW);
    }
    assert_eq!(
        directory.listings(&all_shards(), None, NOW, 1000).len(),
        MAX_LISTINGS_PER_APP
    );
    assert_eq!(directory.listings(&all_shards(), None, NOW, 3).len(), 3);
}

#[test]
fn aggregate_picks_what_most_nodes_sign_and_lists_them_as_providers() {
    let (a, b, c) = (
        Keypair::generate_ed25519(),
        Keypair::generate_ed25519(),
        Keypair::generate_ed25519(),
    );
    let apps = aggregate([
        verified(&a, &listing("hello", "1", NOW)),
        verified(&b, &listing("hello", "1", NOW + 1)),
        // A liar (or a node mid-rollout) alone on another version.
        verified(&c, &listing("hello", "9", NOW + 2)),
        // Duplicates of one node's listing count once.
        verified(&a, &listing("hello", "1", NOW)),
        verified(&c, &listing("solo", "3", NOW)),
    ]);
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[0].name, "hello");
    assert_eq!(apps[0].version, "1");
    let mut expected = vec![
        a.public().to_peer_id().to_string(),
        b.public().to_peer_id().to_string(),
    ];
    expected.sort();
    assert_eq!(apps[0].providers, expected);
    assert_eq!(apps[1].name, "solo");
    assert_eq!(apps[1].providers, [c.public().to_peer_id().to_string()]);
    assert!(aggregate([]).is_empty());
}
