//! Transfer tests: real stores, peers in this process.

use super::*;

mod in_process {
    use super::*;
    use crate::BlobMetrics;
    use std::collections::HashMap;

    /// Peers as stores in this process, one of which may lie.
    struct Peers {
        stores: HashMap<String, BlobStore>,
        liar: Option<String>,
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
        fn range(
            &self,
            peer: String,
            hash: BlobHash,
            offset: u64,
            len: u64,
        ) -> BoxFuture<'_, Result<Vec<u8>, String>> {
            Box::pin(async move {
                let mut encoded = self.stores[&peer]
                    .encode_range(&hash, offset, len)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("missing")?;
                if self.liar.as_ref() == Some(&peer) {
                    let last = encoded.len() - 1;
                    encoded[last] ^= 0xff;
                }
                Ok(encoded)
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
        liar: bool,
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
            liar: liar.then(|| "p0".to_string()),
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
            let (result, fetcher, _dirs) = fetch_from(&bytes, 3, false).await;
            let meta = result.unwrap_or_else(|e| panic!("{len} bytes: {e}"));
            assert_eq!(read(&fetcher, &meta.hash).await, bytes, "{len} bytes");
        }
    }

    #[tokio::test]
    async fn a_provider_that_corrupts_is_dropped_and_the_fetch_succeeds_from_others() {
        let bytes = sample(4 * RANGE_BYTES as usize);
        let (result, fetcher, _dirs) = fetch_from(&bytes, 3, true).await;
        let meta = result.unwrap();
        assert_eq!(read(&fetcher, &meta.hash).await, bytes);
    }

    #[tokio::test]
    async fn a_lone_corrupting_provider_stores_nothing() {
        let bytes = sample(2 * RANGE_BYTES as usize);
        let (result, fetcher, dirs) = fetch_from(&bytes, 1, true).await;
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One provider that answers `budget` range requests, then fails every one.
    struct Flaky {
        store: BlobStore,
        budget: usize,
        asked: AtomicUsize,
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
        fn range(
            &self,
            _: String,
            hash: BlobHash,
            offset: u64,
            len: u64,
        ) -> BoxFuture<'_, Result<Vec<u8>, String>> {
            Box::pin(async move {
                if self.asked.fetch_add(1, Ordering::SeqCst) >= self.budget {
                    return Err("cut off".into());
                }
                Ok(self
                    .store
                    .encode_range(&hash, offset, len)
                    .await
                    .unwrap()
                    .unwrap())
            })
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
        let cut = Flaky {
            store: origin.clone(),
            budget: 5,
            asked: AtomicUsize::new(0),
        };
        assert!(
            fetch(&fetcher, &cut, hash).await.is_err(),
            "the provider was cut off"
        );
        assert!(fetcher.meta(&hash).unwrap().is_none());

        // A restart in between: the store is opened afresh.
        drop(fetcher);
        let fetcher = BlobStore::open(dir.path(), 1 << 30, BlobMetrics::default()).unwrap();
        let honest = Flaky {
            store: origin.clone(),
            budget: usize::MAX,
            asked: AtomicUsize::new(0),
        };
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
}
