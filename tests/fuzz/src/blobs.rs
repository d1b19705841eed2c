//! The blob protocols: request-response frames both ways, range streams, and the verification
//! of every range a peer sends.

use std::{cell::RefCell, path::PathBuf};

use futures::io::Cursor;
use mycel_blobs::{BlobHash, BlobMetrics, BlobStore, StoreServer, provider_of, serve_ranges};
use mycel_mesh::{BlobServer, codec::read_frame};
use mycel_protocol::{
    blob::{
        BlobRequest, BlobResponse, MAX_BLOB_RESPONSE_BYTES, RangeAnswer, RangeAsk, RangeStreamOpen,
    },
    encode,
};

use super::block_on;

/// The sizes of the sample blobs: around the 16 KiB chunk groups a range is proven in.
const SIZES: [usize; 5] = [1, 1024, 16 * 1024, 16 * 1024 + 1, 40_000];

fn sample(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

struct Stores {
    /// Holds every sample blob whole: it serves requests.
    holder: BlobStore,
    /// Fetches them: it verifies ranges.
    fetcher: BlobStore,
    fetcher_dir: PathBuf,
    samples: Vec<(BlobHash, u64)>,
    _dir: tempfile::TempDir,
}

thread_local! {
    static STORES: RefCell<Option<Stores>> = const { RefCell::new(None) };
}

fn with_stores<R>(f: impl FnOnce(&Stores) -> R) -> R {
    STORES.with(|cell| {
        let mut stores = cell.borrow_mut();
        let stores = stores.get_or_insert_with(|| {
            let dir = tempfile::tempdir().expect("a temp dir");
            let open = |name: &str| {
                BlobStore::open(&dir.path().join(name), 1 << 30, BlobMetrics::default())
                    .expect("a blob store")
            };
            let holder = open("holder");
            let fetcher = open("fetcher");
            let samples = SIZES
                .iter()
                .map(|&size| {
                    block_on(async {
                        let mut upload = holder.begin_upload().await.expect("an upload");
                        upload.write(&sample(size)).await.expect("written");
                        let meta = upload.finish(None).await.expect("stored");
                        (meta.hash, meta.size)
                    })
                })
                .collect();
            Stores {
                holder,
                fetcher,
                fetcher_dir: dir.path().join("fetcher"),
                samples,
                _dir: dir,
            }
        });
        f(stores)
    })
}

/// A blob request as this node's server answers it, and an answer as the asking node reads it.
pub fn blob_frame(data: &[u8]) {
    let peer = super::key(2).public().to_peer_id();
    if let Ok(request) =
        futures::executor::block_on(read_frame::<BlobRequest, _>(&mut Cursor::new(data), 1024))
    {
        with_stores(|stores| {
            let server = StoreServer {
                store: stores.holder.clone(),
            };
            block_on(server.serve(peer, request));
        });
    }
    if let Ok(response) = futures::executor::block_on(read_frame::<BlobResponse, _>(
        &mut Cursor::new(data),
        MAX_BLOB_RESPONSE_BYTES,
    )) {
        let _ = provider_of(peer, response);
    }
}

/// `[sample][encoded range]`: the range a peer sent for the whole of sample blob `sample`,
/// verified against the blob's hash as a fetch does before it writes a byte.
pub fn blob_range(data: &[u8]) {
    let Some((&which, encoded)) = data.split_first() else {
        return;
    };
    with_stores(|stores| {
        let (hash, size) = stores.samples[usize::from(which) % SIZES.len()];
        let partial = stores
            .fetcher
            .begin_fetch(hash, size)
            .expect("a fetch begins");
        let _ = partial.add(0, size, encoded);
        drop(partial);
        // A fetch keeps what it verified for the next attempt: each input starts afresh.
        if let Ok(entries) = std::fs::read_dir(stores.fetcher_dir.join("partial")) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    });
}

/// What a fetcher writes on a range stream (`/mycel/blob-ranges/1`): the opening frame and its
/// asks, served by this node from its store; and the answer heads a provider sends back.
pub fn blob_stream(data: &[u8]) {
    with_stores(|stores| {
        let mut pipe = Pipe {
            input: futures::io::Cursor::new(data.to_vec()),
            output: Vec::new(),
        };
        let _ = block_on(serve_ranges(stores.holder.clone(), &mut pipe));
    });
    for head in data.chunks_exact(RangeAnswer::BYTES) {
        let head: &[u8; RangeAnswer::BYTES] = head.try_into().expect("chunks of the size");
        if let Ok(RangeAnswer::Range { len }) = RangeAnswer::decode(head) {
            assert!(
                len as usize <= MAX_BLOB_RESPONSE_BYTES,
                "an answer of {len} bytes"
            );
        }
    }
}

/// A stream whose peer wrote `input` and closed its side; what this node writes is kept.
struct Pipe {
    input: futures::io::Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl futures::AsyncRead for Pipe {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl futures::AsyncWrite for Pipe {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // Bounded like a peer that reads slowly would bound it: the rest is dropped.
        if self.output.len() < 1 << 22 {
            self.output.extend_from_slice(buf);
        }
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    with_stores(|stores| {
        for (i, &(hash, size)) in stores.samples.iter().enumerate() {
            let encoded = block_on(stores.holder.encode_range(&hash, 0, size))
                .expect("encodes")
                .expect("the holder holds it");
            let mut range = vec![i as u8];
            range.extend_from_slice(&encoded);
            out.push(("blob_range", format!("range-{size}"), range));
        }
        let (hash, size) = stores.samples[4];
        let frames = [
            ("have", encode(&BlobRequest::Have { hash })),
            (
                "range",
                encode(&BlobRequest::Range {
                    hash,
                    offset: 0,
                    len: size,
                }),
            ),
            ("answer-have", encode(&BlobResponse::Have { size })),
            (
                "answer-partial",
                encode(&BlobResponse::Partial {
                    size: 3 << 20,
                    ranges: vec![0b101],
                }),
            ),
            (
                "answer-range",
                encode(&BlobResponse::Range {
                    encoded: vec![0; 64],
                }),
            ),
            ("answer-missing", encode(&BlobResponse::Missing)),
            // Once made the asker allocate a flag per MiB of the claimed 2^64 bytes.
            (
                "answer-partial-of-2-to-the-64",
                encode(&BlobResponse::Partial {
                    size: u64::MAX,
                    ranges: vec![0b101],
                }),
            ),
        ];
        for (name, frame) in frames {
            out.push(("blob_frame", name.into(), frame.expect("encodes")));
        }
        let ask = |offset, len| RangeAsk { offset, len }.encode().expect("a valid ask");
        let mut stream = RangeStreamOpen { hash }.encode().to_vec();
        stream.extend_from_slice(&ask(0, size));
        stream.extend_from_slice(&ask(16 * 1024, 100));
        stream.extend_from_slice(&ask(size + 1, 1));
        out.push(("blob_stream", "asks".into(), stream));
        let mut answers = RangeAnswer::Range { len: 64 }.encode().to_vec();
        answers.extend_from_slice(&RangeAnswer::Missing.encode());
        out.push(("blob_stream", "answers".into(), answers));
    });
    out
}
