//! What peers send over the mesh's own protocols: gossip, member sync, DHT records, the discover
//! directory and the logs protocol.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::io::Cursor;
use mycel_discovery::directory::{Directory, aggregate};
use mycel_mesh::{
    codec::read_frame,
    membership::{Membership, Timing},
    records,
};
use mycel_protocol::{
    Advert, Announcement, BlobHash, Departure, PeerId, Resources, Runtime, Signed, Suspicion,
    app::AppKind,
    decode,
    discovery::{
        self, AppListing, DiscoverRequest, DiscoverResponse, LISTING_FORMAT,
        MAX_DISCOVER_FRAME_BYTES, MAX_LISTING_BYTES, app_key,
    },
    encode,
    logs::{LogEvent, LogsRequest, MAX_EVENT_BYTES, MAX_REQUEST_BYTES},
    membership::{
        MAX_ANNOUNCEMENT_BYTES, MAX_ANNOUNCEMENT_FRAME_BYTES, MAX_MEMBER_SYNC_BYTES,
        MAX_MEMBER_SYNC_ENTRIES, MemberSyncEntry, MemberSyncRequest, MemberSyncResponse,
    },
};

use super::{NOW_MS, key};

/// Reads one frame as the mesh's request-response codec does, from a stream holding `data`.
fn frame<T: serde::de::DeserializeOwned>(data: &[u8], limit: usize) -> Option<T> {
    futures::executor::block_on(read_frame(&mut Cursor::new(data), limit)).ok()
}

/// A gossip frame as the membership topic delivers it, and an announcement payload as a valid
/// signature lets it through (signed here, so the fuzzer reaches what follows the signature).
pub fn advert(data: &[u8]) {
    let local = key(0).public().to_peer_id();
    let now = Instant::now();
    if let Ok(envelope) = decode::<Signed<Announcement>>(data, MAX_ANNOUNCEMENT_FRAME_BYTES) {
        let _ = envelope.claimed_signer();
        if let Ok(verified) = envelope.verify(MAX_ANNOUNCEMENT_BYTES)
            && verified.message.validate().is_ok()
        {
            let mut view = Membership::new(local, Timing::default());
            view.observe(
                now,
                verified.signer,
                &verified.message,
                &envelope,
                Duration::ZERO,
            );
        }
    }
    if let Ok(announcement) = decode::<Announcement>(data, MAX_ANNOUNCEMENT_BYTES)
        && announcement.validate().is_ok()
    {
        let signer = key(1 + data.len() as u8 % 3);
        let Ok(envelope) = Signed::sign(&signer, &announcement) else {
            return;
        };
        let verified = envelope
            .verify(MAX_ANNOUNCEMENT_BYTES)
            .expect("an announcement this node signed verifies");
        assert_eq!(
            verified.message, announcement,
            "signing changed the message"
        );
        let signer = verified.signer;
        let mut view = Membership::new(local, Timing::default());
        let age = Duration::from_millis(u64::from(data[data.len() - 1]) << 40);
        view.observe(now, signer, &announcement, &envelope, age);
        if let Announcement::Suspicion(suspicion) = &announcement
            && let Ok(suspect) = suspicion.suspect_id()
        {
            view.suspect(now, suspect, suspicion.suspect_seq);
        }
        view.observe(now, signer, &announcement, &envelope, Duration::ZERO);
        view.tick(now + Duration::from_secs(3600));
        let _ = view.nodes(now, &sample_advert(0));
        let _ = view.entries(now).count();
    }
}

/// A member-sync answer: every entry is checked on its own and the valid ones observed.
pub fn member_sync(data: &[u8]) {
    let _ = frame::<MemberSyncRequest>(data, 1024);
    let Some(response) = frame::<MemberSyncResponse>(data, MAX_MEMBER_SYNC_BYTES) else {
        return;
    };
    let local = key(0).public().to_peer_id();
    let now = Instant::now();
    let mut view = Membership::new(local, Timing::default());
    for entry in response.members.into_iter().take(MAX_MEMBER_SYNC_ENTRIES) {
        let Ok(verified) = entry.announcement.verify(MAX_ANNOUNCEMENT_BYTES) else {
            continue;
        };
        if verified.signer == local || verified.message.validate().is_err() {
            continue;
        }
        let age = Duration::from_millis(entry.age_ms);
        view.observe(
            now,
            verified.signer,
            &verified.message,
            &entry.announcement,
            age,
        );
    }
    view.tick(now);
}

thread_local! {
    static KADEMLIA: RefCell<Option<libp2p::kad::Behaviour<records::Store>>> =
        const { RefCell::new(None) };
}

/// A record a peer puts in the DHT: `[key length][key][value]`. It goes through the check every
/// node runs before storing (on the real clock), and the listing check on the corpus's clock;
/// a listing payload that passes is signed here and goes on into a directory.
pub fn dht_record(data: &[u8]) {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(len).min(rest.len()));
    let _ = discovery::verify_dht_record(key, value, NOW_MS);
    KADEMLIA.with(|cell| {
        let mut kad = cell.borrow_mut();
        let kad = kad.get_or_insert_with(|| {
            let local = super::key(0).public().to_peer_id();
            records::kademlia(local, records::kademlia_config())
        });
        let record = libp2p::kad::Record::new(libp2p::kad::RecordKey::new(&key), value.to_vec());
        let request = libp2p::kad::InboundRequest::PutRecord {
            source: PeerId::random(),
            connection: libp2p::swarm::ConnectionId::new_unchecked(0),
            record: Some(record),
        };
        let _ = records::admit(kad, request, Duration::from_secs(60));
    });
    if let Ok(listing) = decode::<AppListing>(value, MAX_LISTING_BYTES)
        && listing.validate(NOW_MS).is_ok()
    {
        let Ok(envelope) = Signed::sign(&super::key(1), &listing) else {
            return;
        };
        let bytes = encode(&envelope).expect("a signed listing encodes");
        let verified = discovery::verify_dht_record(&app_key(&listing.name), &bytes, NOW_MS)
            .expect("a valid listing this node signed passes the DHT check");
        let mut directory = Directory::with_capacity(8);
        directory.insert(verified.clone(), NOW_MS);
        let _ = directory.listings(&[discovery::shard_of(&listing.name)], None, NOW_MS, 8);
        let _ = aggregate([verified]);
    }
}

/// A discover request as the directory's server answers it, and an answer as the asking node
/// checks it.
pub fn discover(data: &[u8]) {
    if let Some(request) = frame::<DiscoverRequest>(data, MAX_DISCOVER_FRAME_BYTES) {
        let directory = Mutex::new(Directory::with_capacity(64));
        let peer = key(2).public().to_peer_id();
        let _ = mycel_discovery::answer(&directory, peer, request);
    }
    if let Some(DiscoverResponse::Listings { listings }) =
        frame::<DiscoverResponse>(data, MAX_DISCOVER_FRAME_BYTES)
    {
        let verified = listings
            .iter()
            .filter_map(|l| discovery::verify_listing(l, NOW_MS).ok());
        let _ = aggregate(verified);
    }
}

/// A logs frame's payload (after its length prefix, checked against the same limits).
pub fn logs_frame(data: &[u8]) {
    let _ = decode::<LogsRequest>(data, MAX_REQUEST_BYTES);
    let _ = decode::<LogEvent>(data, MAX_EVENT_BYTES);
}

fn sample_advert(seq: u64) -> Advert {
    Advert {
        seq,
        name: "node-a".into(),
        addrs: vec!["/ip4/127.0.0.1/tcp/7400".into()],
        labels: BTreeMap::from([("zone".into(), "eu-1".into())]),
        runtimes: vec![Runtime::Wasm, Runtime::Docker],
        resources: Resources {
            cpu_cores: 4,
            memory_mb: 8192,
            memory_free_mb: 4096,
            disk_free_mb: 100_000,
        },
        policy: Default::default(),
    }
}

fn sample_listing(name: &str) -> AppListing {
    AppListing {
        format: LISTING_FORMAT,
        name: name.into(),
        version: "1.0.0".into(),
        kind: AppKind::Wasm,
        publisher: key(3).public().to_peer_id().to_string(),
        manifest_hash: BlobHash([7; 32]),
        description: Some("a sample".into()),
        issued_at_ms: NOW_MS - 1000,
        expires_at_ms: NOW_MS + 60_000,
    }
}

pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let node = key(1);
    let advert = Announcement::Advert(sample_advert(1_700_000_000_000));
    let suspicion = Announcement::Suspicion(Suspicion::new(&key(2).public().to_peer_id(), 9));
    let departure = Announcement::Departure(Departure { seq: 5 });
    for (name, announcement) in [
        ("advert", &advert),
        ("suspicion", &suspicion),
        ("departure", &departure),
    ] {
        let signed = Signed::sign(&node, announcement).expect("signs");
        out.push(("advert", format!("{name}-frame"), encode(&signed).unwrap()));
        out.push((
            "advert",
            format!("{name}-payload"),
            encode(announcement).unwrap(),
        ));
    }
    let members = [&advert, &suspicion]
        .into_iter()
        .enumerate()
        .map(|(i, a)| MemberSyncEntry {
            announcement: Signed::sign(&key(4 + i as u8), a).unwrap(),
            age_ms: 1500,
        })
        .collect();
    out.push((
        "member_sync",
        "response".into(),
        encode(&MemberSyncResponse { members }).unwrap(),
    ));
    out.push((
        "member_sync",
        "request".into(),
        encode(&MemberSyncRequest {}).unwrap(),
    ));

    let listing = sample_listing("hello");
    let signed = Signed::sign(&node, &listing).unwrap();
    let key_bytes = app_key("hello");
    let mut record = vec![key_bytes.len() as u8];
    record.extend_from_slice(&key_bytes);
    record.extend_from_slice(&encode(&signed).unwrap());
    out.push(("dht_record", "listing".into(), record));
    let mut payload = vec![key_bytes.len() as u8];
    payload.extend_from_slice(&key_bytes);
    payload.extend_from_slice(&encode(&listing).unwrap());
    out.push(("dht_record", "listing-payload".into(), payload));

    for (name, request) in [
        (
            "publish",
            DiscoverRequest::Publish {
                listings: vec![signed.clone()],
            },
        ),
        (
            "withdraw",
            DiscoverRequest::Withdraw {
                names: vec!["hello".into()],
            },
        ),
        (
            "list",
            DiscoverRequest::List {
                shards: vec![0, 3, 15],
                name: Some("hello".into()),
            },
        ),
    ] {
        out.push(("discover", name.into(), encode(&request).unwrap()));
    }
    for (name, response) in [
        (
            "listings",
            DiscoverResponse::Listings {
                listings: vec![signed],
            },
        ),
        ("stored", DiscoverResponse::Stored { kept: 1 }),
        (
            "refused",
            DiscoverResponse::Refused {
                reason: "too many".into(),
            },
        ),
    ] {
        out.push(("discover", name.into(), encode(&response).unwrap()));
    }

    out.push((
        "logs_frame",
        "request".into(),
        encode(&LogsRequest {
            app: "hello".into(),
            follow: true,
            instances: vec!["hello-1-0".into()],
        })
        .unwrap(),
    ));
    let event: LogEvent = serde_json::from_value(serde_json::json!({
        "instance": "hello-1-0", "node": key(1).public().to_peer_id().to_string(),
        "at_ms": NOW_MS, "stream": "stdout", "line": "listening on :8080"
    }))
    .expect("a log event");
    out.push(("logs_frame", "event".into(), encode(&event).unwrap()));
    out
}
