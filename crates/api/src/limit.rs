//! Per-client rate limits: a token bucket per client, checked before routing.
//!
//! - **A client** is its remote address: an IPv4 address, or the /64 an IPv6 address is in (a
//!   host usually holds a whole /64, so one address each would be no limit). The bearer token
//!   names no client: it is the node's, shared by all its clients.
//! - **What counts**: every request but `GET /v1/health`, which probes must be able to send to a
//!   node that is busy refusing someone else, and which costs less than a check would save.
//! - **A refused request** gets `429 rate_limited` with `Retry-After` (whole seconds): like a
//!   request without its token, it reaches no handler, reads no body and changes nothing.
//! - **Memory is bounded**: at most [`MAX_CLIENTS`] buckets. A bucket that has refilled to its
//!   burst remembers nothing worth keeping, so a sweep (when the map is full, and once a
//!   [`SWEEP_EVERY`]) drops those; clients that find the map full of busy buckets share one
//!   overflow bucket, so a crowd of addresses is limited as one client rather than not at all.
//!
//! The bucket is pure ([`Bucket::take`] takes `now`); the middleware is its shell.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    Router,
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use prometheus_client::{metrics::counter::Counter, registry::Registry};
use tokio::time::Instant;

use crate::ApiError;

/// The most clients with a bucket of their own.
pub(crate) const MAX_CLIENTS: usize = 10_000;
/// How often idle buckets are dropped even when the map is not full.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The one path that is never limited.
const HEALTH_PATH: &str = "/v1/health";

/// How many requests a client may make: `per_second` on average, `burst` at once. A
/// `per_second` of 0 turns limiting off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    /// Far above what the CLI, a dashboard or a deploy script sends (a `mycel deploy --wait`
    /// polls a few times a second; the test suites' busiest loops make tens of requests a
    /// second), far below what would make a node slow for everyone else.
    pub const DEFAULT: Self = Self {
        per_second: 200,
        burst: 400,
    };
    /// No limit at all.
    pub const OFF: Self = Self {
        per_second: 0,
        burst: 0,
    };

    pub fn is_off(&self) -> bool {
        self.per_second == 0
    }

    fn rate(&self) -> f64 {
        f64::from(self.per_second)
    }

    fn capacity(&self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One client's tokens as of `at`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A bucket holding its whole burst.
    pub(crate) fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: limit.capacity(),
            at: now,
        }
    }

    /// The tokens at `now`: what was left plus what has dripped in since, up to the burst.
    fn level(&self, limit: RateLimit, now: Instant) -> f64 {
        let dripped = now.saturating_duration_since(self.at).as_secs_f64() * limit.rate();
        (self.tokens + dripped).min(limit.capacity())
    }

    /// Takes a token at `now`; when there is none, how long until there is one.
    pub(crate) fn take(&mut self, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        self.tokens = self.level(limit, now);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / limit.rate()))
    }

    /// Whether the bucket has refilled completely by `now` (it can be forgotten).
    fn is_full(&self, limit: RateLimit, now: Instant) -> bool {
        self.level(limit, now) >= limit.capacity()
    }
}

/// Who a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Client {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
    /// Everyone who found the map full.
    Overflow,
}

impl Client {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Client::V4(v4.to_bits()),
            IpAddr::V6(v6) => Client::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

/// The buckets of every client, and when they were last swept.
#[derive(Debug)]
pub(crate) struct Buckets {
    limit: RateLimit,
    capacity: usize,
    clients: HashMap<Client, Bucket>,
    swept: Instant,
}

impl Buckets {
    pub(crate) fn new(limit: RateLimit, capacity: usize, now: Instant) -> Self {
        Self {
            limit,
            capacity,
            clients: HashMap::new(),
            swept: now,
        }
    }

    /// Takes a token from `client`'s bucket at `now`; when it has none, how long to wait.
    pub(crate) fn take(&mut self, client: Client, now: Instant) -> Result<(), Duration> {
        let limit = self.limit;
        if now.saturating_duration_since(self.swept) >= SWEEP_EVERY {
            self.sweep(now);
        }
        let client = if self.clients.contains_key(&client) {
            client
        } else {
            if self.clients.len() >= self.capacity {
                self.sweep(now);
            }
            if self.clients.len() >= self.capacity {
                Client::Overflow
            } else {
                client
            }
        };
        self.clients
            .entry(client)
            .or_insert_with(|| Bucket::full(limit, now))
            .take(limit, now)
    }

    /// Drops the buckets that have refilled: they hold nothing a fresh one would not.
    fn sweep(&mut self, now: Instant) {
        let limit = self.limit;
        self.clients.retain(|_, bucket| !bucket.is_full(limit, now));
        self.swept = now;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }
}

/// The API's own metrics.
#[derive(Clone, Debug, Default)]
pub struct ApiMetrics {
    /// Requests refused with `429 rate_limited`.
    pub rate_limited: Counter,
}

impl ApiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "mycel_api_rate_limited",
            "API requests refused because their client sent too many (429 rate_limited)",
            metrics.rate_limited.clone(),
        );
        metrics
    }
}

#[derive(Clone)]
struct Limiter {
    limit: RateLimit,
    buckets: Arc<Mutex<Buckets>>,
    metrics: ApiMetrics,
}

/// `router` behind the rate limit; unchanged when the limit is off. The router must be served
/// with `ConnectInfo<SocketAddr>` (a request without it is not limited).
pub(crate) fn protect(router: Router, limit: RateLimit, metrics: ApiMetrics) -> Router {
    if limit.is_off() {
        return router;
    }
    let limiter = Limiter {
        limit,
        buckets: Arc::new(Mutex::new(Buckets::new(limit, MAX_CLIENTS, Instant::now()))),
        metrics,
    };
    router.layer(middleware::from_fn_with_state(limiter, limit_rate))
}

async fn limit_rate(State(limiter): State<Limiter>, request: Request, next: Next) -> Response {
    let exempt = request.uri().path() == HEALTH_PATH
        && (request.method() == Method::GET || request.method() == Method::HEAD);
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| Client::of(addr.ip()));
    let (Some(client), false) = (client, exempt) else {
        return next.run(request).await;
    };
    let taken = limiter
        .buckets
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take(client, Instant::now());
    match taken {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            limiter.metrics.rate_limited.inc();
            refused(limiter.limit, wait)
        }
    }
}

fn refused(limit: RateLimit, wait: Duration) -> Response {
    // Whole seconds, rounded up: a client that waits that long finds a token.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "this client sent more than {} requests a second (bursts of {}); retry after {seconds} s",
            limit.per_second,
            limit.burst.max(1)
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests;
