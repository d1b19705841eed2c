//! Transfer tests: real stores, peers in this process, range streams over in-memory pipes.

use super::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use mycel_protocol::blob::{RangeAnswer, RangeAsk, RangeStreamOpen};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// A stream to `store` served by the real provider side ([`serve_ranges`]) on a task.
fn pipe_to(store: BlobStore) -> RangeStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let _ = serve_ranges(store, theirs.compat()).await;
    });
    Box::new(ours.compat())
}

/// What a hand-written provider does wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mischief {
    None,
    /// Flips the last byte of each answer.
    Corrupt,
    /// Announces an answer longer than any range and its proof can be.
    Oversized,
    /// Sends one byte more than the encoding.
    BytesToSpare,
    /// Answers with a status the protocol does not have.
    BadStatus,
    /// Says it no longer holds the range.
    Missing,
}

/// A stream to a provider written out by hand: it answers `budget` asks from `store` (counting
/// them in `asked`), then cuts the stream; `mischief` says how it misbehaves.
fn hand_served(
    store: BlobStore,
    budget: usize,
    asked: Arc<AtomicUsize>,
    mischief: Mischief,
) -> RangeStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let mut theirs = theirs.compat();
        let mut open = [0u8; RangeStreamOpen::BYTES];
        theirs.read_exact(&mut open).await.unwrap();
        let hash = RangeStreamOpen::decode(&open).unwrap().hash;
        loop {
            let mut ask = [0u8; RangeAsk::BYTES];
            if theirs.read_exact(&mut ask).await.is_err() {
                return;
            }
            let ask = RangeAsk::decode(&ask).unwrap();
            if asked.fetch_add(1, Ordering::SeqCst) >= budget {
                return;
            }
            let mut encoded = store
                .encode_range(&hash, ask.offset, ask.len)
                .await
                .unwrap()
                .unwrap();
            let mut head = RangeAnswer::Range {
                len: encoded.len() as u32,
            }
            .encode();
            match mischief {
                Mischief::None => {}
                Mischief::Corrupt => {
                    if let Some(last) = encoded.last_mut() {
                        *last ^= 0xff;
                    }
                }
                Mischief::Oversized => {
                    let len = mycel_protocol::blob::MAX_BLOB_RESPONSE_BYTES as u32 + 1;
                    head[1..].copy_from_slice(&len.to_be_bytes());
                }
                Mischief::BytesToSpare => {
                    encoded.push(0);
                    head = RangeAnswer::Range {
                        len: encoded.len() as u32,
                    }
                    .encode();
                }
                Mischief::BadStatus => head[0] = 7,
                Mischief::Missing => {
                    head = RangeAnswer::Missing.encode();
                    encoded.clear();
                }
            }
            if theirs.write_all(&head).await.is_err() || theirs.write_all(&encoded).await.is_err() {
                return;
            }
        }
    });
    Box::new(ours.compat())
}

mod in_process {
    use super::*;
    use crate::BlobMetrics;
    use std::collections::HashMap;

    /// Peers as stores in this process, one of which may lie.
    struct Peers {
        stores: HashMap<String, BlobStore>,
        liar: Option<String>,
        mischief: Mischief,
    }

    impl BlobNetwork for Peers {
        type Peer = String;
        fn providers(&self, hash: BlobHash) -> BoxFuture<'_, Vec<Provider<String>>> {
            Box::pin(async move {
                let mut found: Vec<Provider<String>> = self
                    .stores
                    .iter()
                    .filter_map(|(name, s)| {
                        Some(Provider {
                            peer: name.clone(),
                            size: s.meta(&hash).ok()??.size,
                            ranges: None,
                        })
                    })
                    .collect();
                found.sort_by(|a, b| a.peer.cmp(&b.peer));
                found
            })
        }
        fn announce(&self, _: BlobHash) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn open_ranges(
            &self,
            peer: String,
            _: BlobHash,
        ) -> BoxFuture<'_, Result<RangeStream, String>> {
            Box::pin(async move {
                let store = self.stores.get(&peer).ok_or("no such peer")?.clone();
                if self.liar.as_ref() == Some(&peer) {
                    return Ok(hand_served(
                        store,
                        usize::MAX,
                        Arc::default(),
                        self.mischief,
                    ));
                }
                Ok(pipe_to(store))
            })
        }
    }

    async fn store_with(dir: &std::path::Path, bytes: &[u8]) -> (BlobStore, BlobHash) {
        let store = BlobStore::open(dir, 1 << 30, BlobMetrics::default()).unwrap();
        let mut upload = store.begin_upload().await.unwrap();
        upload.write(bytes).await.unwrap();
        let meta = upload.finish(None).await.unwrap();
        (store, meta.hash)
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    async fn fetch_from(
        bytes: &[u8],
        providers: usize,
        liar: Option<Mischief>,
    ) -> (
        Result<BlobMeta, FetchError>,
        BlobStore,
        Vec<tempfile::TempDir>,
    ) {
        let mut dirs = Vec::new();
        let mut stores = HashMap::new();
        let mut hash = None;
        for i in 0..providers {
            let dir = tempfile::tempdir().unwrap();
            let (store, h) = store_with(dir.path(), bytes).await;
            stores.insert(format!("p{i}"), store);
            hash = Some(h);
            dirs.push(dir);
        }
        let peers = Peers {
            stores,
            liar: liar.map(|_| "p0".to_string()),
            mischief: liar.unwrap_or(Mischief::None),
        };
        let dir = tempfile::tempdir().unwrap();
        let fetcher = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        dirs.push(dir);
        let result = fetch(&fetcher, &peers, hash.unwrap()).await;
        (result, fetcher, dirs)
    }

    async fn read(store: &BlobStore, hash: &BlobHash) -> Vec<u8> {
        let (_, mut file) = store.open_blob(hash).await.unwrap().unwrap();
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes)
            .await
            .unwrap();
        bytes
    }

    #[tokio::test]
    async fn a_blob_arrives_whole_from_several_providers() {
        for len in [
            0,
            1,
            16 * 1024,
            RANGE_BYTES as usize,
            3 * RANGE_BYTES as usize + 12_345,
        ] {
            let bytes = sample(len);
            let (result, fetcher, _dirs) = fetch_from(&bytes, 3, None).await;
            let meta = result.unwrap_or_else(|e| panic!("{len} bytes: {e}"));
            assert_eq!(read(&fetcher, &meta.hash).await, bytes, "{len} bytes");
        }
    }

    #[tokio::test]
    async fn a_provider_that_corrupts_is_dropped_and_the_fetch_succeeds_from_others() {
        let bytes = sample(4 * RANGE_BYTES as usize);
        let (result, fetcher, _dirs) = fetch_from(&bytes, 3, Some(Mischief::Corrupt)).await;
        let meta = result.unwrap();
        assert_eq!(read(&fetcher, &meta.hash).await, bytes);
    }

    #[tokio::test]
    async fn a_provider_that_breaks_the_framing_is_dropped_and_the_fetch_succeeds_from_others() {
        let bytes = sample(3 * RANGE_BYTES as usize + 100);
        for mischief in [
            Mischief::Oversized,
            Mischief::BytesToSpare,
            Mischief::BadStatus,
            Mischief::Missing,
        ] {
            let (result, fetcher, _dirs) = fetch_from(&bytes, 2, Some(mischief)).await;
            let meta = result.unwrap_or_else(|e| panic!("{mischief:?}: {e}"));
            assert_eq!(read(&fetcher, &meta.hash).await, bytes, "{mischief:?}");

            let (alone, _, _dirs) = fetch_from(&bytes, 1, Some(mischief)).await;
            assert!(
                matches!(alone, Err(FetchError::ProvidersFailed { .. })),
                "{mischief:?}: {alone:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_lone_corrupting_provider_stores_nothing() {
        let bytes = sample(2 * RANGE_BYTES as usize);
        let (result, fetcher, dirs) = fetch_from(&bytes, 1, Some(Mischief::Corrupt)).await;
        assert!(
            matches!(result, Err(FetchError::ProvidersFailed { .. })),
            "{result:?}"
        );
        let hash = BlobHash(*blake3::hash(&bytes).as_bytes());
        assert!(fetcher.meta(&hash).unwrap().is_none());
        let tmp = dirs.last().unwrap().path().join("tmp");
        assert_eq!(fs::read_dir(tmp).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn nobody_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 20, BlobMetrics::default()).unwrap();
        let peers = Peers {
            stores: HashMap::new(),
            liar: None,
            mischief: Mischief::None,
        };
        let hash = BlobHash([7; 32]);
        assert!(matches!(
            fetch(&store, &peers, hash).await,
            Err(FetchError::NotFound(_))
        ));
    }
}

mod doctored {
    use super::*;
    use crate::BlobMetrics;

    #[tokio::test]
    async fn a_doctored_store_file_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut upload = store.begin_upload().await.unwrap();
        upload.write(&bytes).await.unwrap();
        let meta = upload.finish(None).await.unwrap();
        let path = store.data_path(&meta.hash);
        let mut doctored = fs::read(&path).unwrap();
        doctored[100] ^= 0x5a;
        fs::write(&path, doctored).unwrap();
        let served = store.encode_range(&meta.hash, 0, RANGE_BYTES).await;
        assert!(!matches!(served, Ok(Some(_))), "served a doctored range");
    }
}

mod partial_serving {
    use super::*;
    use crate::BlobMetrics;

    #[tokio::test]
    async fn verified_ranges_of_a_fetch_in_progress_are_served() {
        let (a_dir, b_dir, c_dir) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let open =
            |d: &std::path::Path| BlobStore::open(d, 1 << 30, BlobMetrics::default()).unwrap();
        let (a, b, c) = (open(a_dir.path()), open(b_dir.path()), open(c_dir.path()));
        let bytes: Vec<u8> = (0..3 * RANGE_BYTES as usize + 5000)
            .map(|i| (i % 253) as u8)
            .collect();
        let mut upload = a.begin_upload().await.unwrap();
        upload.write(&bytes).await.unwrap();
        let meta = upload.finish(None).await.unwrap();

        let partial = b.begin_fetch(meta.hash, meta.size).unwrap();
        let (offset, len) = partial.ranges()[1];
        let encoded = a
            .encode_range(&meta.hash, offset, len)
            .await
            .unwrap()
            .unwrap();
        partial.add(offset, len, &encoded).unwrap();
        assert_eq!(
            b.partial_ranges(&meta.hash).unwrap().1,
            [false, true, false, false]
        );

        // b serves what it verified, and a third node can verify it.
        let relayed = b
            .encode_range(&meta.hash, offset, len)
            .await
            .unwrap()
            .expect("served");
        let other = c.begin_fetch(meta.hash, meta.size).unwrap();
        other.add(offset, len, &relayed).unwrap();
        assert!(
            b.encode_range(&meta.hash, 0, RANGE_BYTES)
                .await
                .unwrap()
                .is_none()
        );
    }
}

mod resuming {
    use super::*;
    use crate::BlobMetrics;

    /// The only provider. The `n`th stream it opens answers while fewer than `budgets[n]` asks
    /// were made of it in all (the last budget holds for every later stream), then is cut, as a
    /// broken link cuts it; `asked` counts every ask.
    struct Flaky {
        store: BlobStore,
        budgets: Vec<usize>,
        opened: AtomicUsize,
        asked: Arc<AtomicUsize>,
    }

    fn flaky(store: &BlobStore, budgets: &[usize]) -> Flaky {
        Flaky {
            store: store.clone(),
            budgets: budgets.to_vec(),
            opened: AtomicUsize::new(0),
            asked: Arc::default(),
        }
    }

    impl BlobNetwork for Flaky {
        type Peer = String;
        fn providers(&self, hash: BlobHash) -> BoxFuture<'_, Vec<Provider<String>>> {
            Box::pin(async move {
                let size = self.store.meta(&hash).unwrap().unwrap().size;
                vec![Provider {
                    peer: "origin".into(),
                    size,
                    ranges: None,
                }]
            })
        }
        fn announce(&self, _: BlobHash) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn open_ranges(
            &self,
            _: String,
            _: BlobHash,
        ) -> BoxFuture<'_, Result<RangeStream, String>> {
            let n = self.opened.fetch_add(1, Ordering::SeqCst);
            let budget = self.budgets[n.min(self.budgets.len() - 1)];
            let stream = hand_served(
                self.store.clone(),
                budget,
                self.asked.clone(),
                Mischief::None,
            );
            Box::pin(async move { Ok(stream) })
        }
    }

    #[tokio::test]
    async fn a_fetch_cut_off_half_way_resumes_without_refetching_what_it_verified() {
        let origin_dir = tempfile::tempdir().unwrap();
        let origin = BlobStore::open(origin_dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let bytes: Vec<u8> = (0..10 * RANGE_BYTES as usize + 777)
            .map(|i| (i % 241) as u8)
            .collect();
        let mut upload = origin.begin_upload().await.unwrap();
        upload.write(&bytes).await.unwrap();
        let hash = upload.finish(None).await.unwrap().hash;

        let dir = tempfile::tempdir().unwrap();
        let fetcher = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let cut = flaky(&origin, &[5, 0]);
        assert!(
            fetch(&fetcher, &cut, hash).await.is_err(),
            "the provider was cut off"
        );
        assert!(fetcher.meta(&hash).unwrap().is_none());

        // A restart in between: the store is opened afresh.
        drop(fetcher);
        let fetcher = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let honest = flaky(&origin, &[usize::MAX]);
        fetch(&fetcher, &honest, hash).await.unwrap();
        let (_, mut file) = fetcher.open_blob(&hash).await.unwrap().unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut got)
            .await
            .unwrap();
        assert_eq!(got, bytes);
        assert_eq!(
            honest.asked.load(Ordering::SeqCst),
            11 - 5,
            "only the ranges not verified before were asked for"
        );
        assert_eq!(fs::read_dir(dir.path().join("partial")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_stream_cut_by_the_link_is_opened_again_and_the_lone_provider_finishes() {
        let origin_dir = tempfile::tempdir().unwrap();
        let origin = BlobStore::open(origin_dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let bytes: Vec<u8> = (0..10 * RANGE_BYTES as usize + 123)
            .map(|i| (i % 239) as u8)
            .collect();
        let mut upload = origin.begin_upload().await.unwrap();
        upload.write(&bytes).await.unwrap();
        let hash = upload.finish(None).await.unwrap().hash;

        let dir = tempfile::tempdir().unwrap();
        let fetcher = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let network = flaky(&origin, &[3, usize::MAX]);
        fetch(&fetcher, &network, hash).await.unwrap();
        assert_eq!(network.opened.load(Ordering::SeqCst), 2, "one new stream");
        let (_, mut file) = fetcher.open_blob(&hash).await.unwrap().unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut got)
            .await
            .unwrap();
        assert_eq!(got, bytes);
    }
}

mod serving {
    use super::*;
    use crate::BlobMetrics;

    /// Runs the real provider side on `input` (what a fetcher wrote, then closed); returns how
    /// serving ended and everything it wrote back.
    async fn serve(store: &BlobStore, input: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
        let (ours, theirs) = tokio::io::duplex(4 << 20);
        let serving = tokio::spawn(serve_ranges(store.clone(), theirs.compat()));
        let mut ours = ours.compat();
        ours.write_all(&input).await.unwrap();
        ours.close().await.unwrap();
        let mut output = Vec::new();
        let _ = ours.read_to_end(&mut output).await;
        (serving.await.unwrap(), output)
    }

    #[tokio::test]
    async fn a_fetcher_that_breaks_the_framing_gets_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let mut upload = store.begin_upload().await.unwrap();
        upload.write(&[9u8; 100_000]).await.unwrap();
        let hash = upload.finish(None).await.unwrap().hash;
        let open = RangeStreamOpen { hash }.encode().to_vec();

        // Another version; an ask of no bytes; one of more than a range; a torn ask.
        let mut wrong_version = open.clone();
        wrong_version[0] = 9;
        let mut empty_ask = open.clone();
        empty_ask.extend_from_slice(&[0u8; RangeAsk::BYTES]);
        let mut huge_ask = open.clone();
        huge_ask.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        for input in [wrong_version, empty_ask, huge_ask] {
            assert!(serve(&store, input).await.0.is_err());
        }
        let mut torn = open.clone();
        torn.extend_from_slice(&[0, 0, 0]);
        let (ended, output) = serve(&store, torn).await;
        assert!(ended.is_ok() && output.is_empty(), "{ended:?}");

        // A range past the end, and one of a blob the store lacks: `Missing`, and the stream
        // goes on.
        let mut past_end = open.clone();
        let far = RangeAsk {
            offset: u64::MAX - 10,
            len: 5,
        };
        past_end.extend_from_slice(&far.encode().unwrap());
        let near = RangeAsk {
            offset: 0,
            len: 100_000,
        };
        past_end.extend_from_slice(&near.encode().unwrap());
        let (ended, output) = serve(&store, past_end).await;
        ended.unwrap();
        assert_eq!(output[..RangeAnswer::BYTES], RangeAnswer::Missing.encode());
        let expected = store
            .encode_range(&hash, 0, 100_000)
            .await
            .unwrap()
            .unwrap();
        let head = RangeAnswer::Range {
            len: expected.len() as u32,
        };
        assert_eq!(
            output[RangeAnswer::BYTES..2 * RangeAnswer::BYTES],
            head.encode()
        );
        assert_eq!(output[2 * RangeAnswer::BYTES..], expected);

        let mut unknown = RangeStreamOpen {
            hash: BlobHash([1; 32]),
        }
        .encode()
        .to_vec();
        unknown.extend_from_slice(&near.encode().unwrap());
        let (ended, output) = serve(&store, unknown).await;
        ended.unwrap();
        assert_eq!(output, RangeAnswer::Missing.encode());
    }
}
