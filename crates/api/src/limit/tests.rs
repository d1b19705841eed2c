use std::net::{Ipv4Addr, Ipv6Addr};

use axum::routing::{get, post};

use super::*;

const LIMIT: RateLimit = RateLimit {
    per_second: 10,
    burst: 3,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_bucket_gives_its_burst_then_one_token_per_interval() {
    let start = Instant::now();
    let mut bucket = Bucket::full(LIMIT, start);
    for _ in 0..3 {
        assert!(bucket.take(LIMIT, start).is_ok());
    }
    let wait = bucket.take(LIMIT, start).unwrap_err();
    assert_eq!(wait, ms(100), "one token drips in every 1/10 s");
    // Half-way there: the wait shrinks, and asking does not cost anything.
    assert_eq!(bucket.take(LIMIT, start + ms(50)).unwrap_err(), ms(50));
    assert!(bucket.take(LIMIT, start + ms(100)).is_ok());
    assert!(bucket.take(LIMIT, start + ms(100)).is_err());
}

#[test]
fn a_bucket_refills_up_to_its_burst_only() {
    let start = Instant::now();
    let mut bucket = Bucket::full(LIMIT, start);
    for _ in 0..3 {
        bucket.take(LIMIT, start).unwrap();
    }
    let later = start + Duration::from_secs(3600);
    assert!(bucket.is_full(LIMIT, later));
    for _ in 0..3 {
        assert!(bucket.take(LIMIT, later).is_ok());
    }
    assert!(
        bucket.take(LIMIT, later).is_err(),
        "an hour idle is still a burst of 3"
    );
}

#[test]
fn a_clock_that_goes_back_takes_nothing_and_gives_nothing() {
    let start = Instant::now() + Duration::from_secs(10);
    let mut bucket = Bucket::full(LIMIT, start);
    for _ in 0..3 {
        bucket.take(LIMIT, start).unwrap();
    }
    assert!(bucket.take(LIMIT, start - Duration::from_secs(5)).is_err());
}

#[test]
fn clients_are_addresses_and_ipv6_slash_64s() {
    let v4 = |a, b, c, d| Client::of(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
    assert_eq!(v4(10, 0, 0, 1), v4(10, 0, 0, 1));
    assert_ne!(v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    let v6 = |text: &str| Client::of(IpAddr::V6(text.parse::<Ipv6Addr>().unwrap()));
    assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff::9"));
    assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
    assert_eq!(v6("::ffff:10.0.0.1"), v4(10, 0, 0, 1));
}

#[test]
fn each_client_has_its_own_bucket() {
    let now = Instant::now();
    let mut buckets = Buckets::new(LIMIT, 100, now);
    let (a, b) = (Client::V4(1), Client::V4(2));
    for _ in 0..3 {
        buckets.take(a, now).unwrap();
    }
    assert!(buckets.take(a, now).is_err());
    assert!(buckets.take(b, now).is_ok(), "b is not held back by a");
}

#[test]
fn memory_is_bounded_and_a_full_map_shares_an_overflow_bucket() {
    let now = Instant::now();
    let mut buckets = Buckets::new(LIMIT, 4, now);
    for n in 0..4 {
        buckets.take(Client::V4(n), now).unwrap();
    }
    // The map is full of buckets that are not full: newcomers share one bucket.
    for n in 10..13 {
        buckets.take(Client::V4(n), now).unwrap();
    }
    assert!(buckets.take(Client::V4(99), now).is_err());
    assert_eq!(buckets.len(), 5, "four clients and the overflow");
    // Once they have refilled, a sweep makes room again.
    let later = now + Duration::from_secs(1);
    assert!(buckets.take(Client::V4(99), later).is_ok());
    assert_eq!(buckets.len(), 1);
}

#[test]
fn idle_buckets_are_swept_periodically() {
    let now = Instant::now();
    let mut buckets = Buckets::new(LIMIT, 100, now);
    for n in 0..50 {
        buckets.take(Client::V4(n), now).unwrap();
    }
    assert_eq!(buckets.len(), 50);
    buckets.take(Client::V4(1000), now + SWEEP_EVERY).unwrap();
    assert_eq!(buckets.len(), 1);
}

/// The layer over a real router: refused requests reach no handler and say when to retry;
/// health is never limited.
#[tokio::test]
async fn the_layer_refuses_with_429_and_retry_after() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            "done"
        }
    };
    let router = Router::new()
        .route(HEALTH_PATH, get(|| async { "ok" }))
        .route("/v1/apps", post(counted));
    let metrics = ApiMetrics::default();
    let limit = RateLimit {
        per_second: 1,
        burst: 2,
    };
    let router = protect(router, limit, metrics.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = || client.post(format!("{base}/v1/apps")).body("{}").send();
    assert_eq!(post().await.unwrap().status(), 200);
    assert_eq!(post().await.unwrap().status(), 200);
    let refused = post().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert!(body["error"].as_str().unwrap().contains("retry after 1 s"));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(metrics.rate_limited.get(), 1);
    for _ in 0..5 {
        let health = client.get(format!("{base}{HEALTH_PATH}")).send().await;
        assert_eq!(health.unwrap().status(), 200);
    }
    server.abort();
}
