//! mycel's fuzz targets: one per decoder of input that another node, a client or a file can
//! send, each running the real decoder and what the node then does with what it decoded.
//!
//! A target must never panic, abort, hang or allocate far beyond its input: a decoder answers
//! bad input with an error and changes nothing. `cargo fuzz` runs the targets
//! (`fuzz_targets/<name>.rs`, see `run.sh`); the workspace test `tests/tests/fuzz_corpus.rs`
//! includes this file and replays `corpus/<name>/` and [`seeds`] on stable Rust in CI, so a
//! crash that was found and fixed stays fixed.
//!
//! | target | input | decoder |
//! |---|---|---|
//! | `advert` | a gossip frame / announcement payload | signed capability adverts, departures, suspicions |
//! | `member_sync` | a member-sync answer | the full view a peer sends on connect |
//! | `dht_record` | a key and value a peer puts | DHT app listings |
//! | `discover` | a discover request / answer | the directory protocol |
//! | `blob_frame` | a blob request / answer | the blob protocol's frames |
//! | `blob_range` | an encoded range | BLAKE3 (bao) range verification |
//! | `blob_stream` | a range stream's bytes | range streams: asks served, answer heads |
//! | `placement` | a placement frame / snapshot | Raft frames, forwarded writes, snapshots |
//! | `logs_frame` | a logs frame | the logs protocol |
//! | `gateway_stream` | bytes of a peer's stream | HTTP/1.1 tunnelled between gateways |
//! | `image_archive` | a tar file | `docker save` / OCI archive import |
//! | `manifest` | a TOML / JSON file | app manifests, image records |
//! | `ticket` | a line of text | join tickets |

#![allow(unreachable_pub)]

mod blobs;
mod gateway;
mod images;
mod mesh;
mod placement;
mod text;

use std::{cell::RefCell, future::Future};

/// A target's body: it takes one input and must survive it.
pub type Target = fn(&[u8]);

/// Every target, by name: the fuzzer's binaries and the corpus replay call these.
pub const TARGETS: &[(&str, Target)] = &[
    ("advert", mesh::advert),
    ("member_sync", mesh::member_sync),
    ("dht_record", mesh::dht_record),
    ("discover", mesh::discover),
    ("blob_frame", blobs::blob_frame),
    ("blob_range", blobs::blob_range),
    ("blob_stream", blobs::blob_stream),
    ("placement", placement::placement),
    ("logs_frame", mesh::logs_frame),
    ("gateway_stream", gateway::gateway_stream),
    ("image_archive", images::image_archive),
    ("manifest", text::manifest),
    ("ticket", text::ticket),
];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    let (_, target) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target named {name}"));
    target(data);
}

/// Valid inputs made by the real encoders, as `(target, file name, bytes)`: the start of every
/// target's corpus. `MYCEL_FUZZ_WRITE_SEEDS=1` makes the replay test write them to `corpus/`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut all = Vec::new();
    all.extend(mesh::seeds());
    all.extend(blobs::seeds());
    all.extend(placement::seeds());
    all.extend(gateway::seeds());
    all.extend(images::seeds());
    all.extend(text::seeds());
    all
}

/// The wall clock the targets check signed listings against, so that a corpus replays alike
/// on any day.
const NOW_MS: u64 = 1_700_000_000_000;

thread_local! {
    /// One runtime per fuzzing thread: building one per input would be most of the work.
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `future` to completion on this thread's runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|cell| {
        let mut runtime = cell.borrow_mut();
        let runtime = runtime.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
        });
        runtime.block_on(future)
    })
}

/// A node key made from one byte: the same key on every run.
fn key(n: u8) -> mycel_protocol::Keypair {
    mycel_protocol::Keypair::ed25519_from_bytes([n; 32]).expect("32 bytes are an ed25519 key")
}
