//! Draining: an instance that is no longer wanted takes no new requests and finishes the ones
//! it has before it stops. Each request counts as in flight from the moment it is handed to the
//! instance until its answer's body ends (read to its end, failed, or dropped).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use mycel_runtime::{Body, BoxError};

/// How often a draining stop looks at the count.
const POLL: Duration = Duration::from_millis(10);

/// One request in flight at an instance: counted from [`InFlight::start`] until dropped.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until nothing is in flight, or `grace` has passed.
pub(crate) async fn settle(in_flight: &AtomicUsize, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while in_flight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// An answer's body that holds its request's [`InFlight`] until it is over.
pub(crate) struct Counted {
    body: Body,
    _in_flight: InFlight,
}

impl Counted {
    pub(crate) fn new(body: Body, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_request_counts_until_its_answer_is_over() {
        let count = Arc::new(AtomicUsize::new(0));
        let body = Counted::new(mycel_runtime::full_body("hi"), InFlight::start(&count));
        assert_eq!(count.load(Ordering::Relaxed), 1);
        let waiting = tokio::spawn({
            let count = count.clone();
            async move {
                let started = tokio::time::Instant::now();
                settle(&count, Duration::from_secs(30)).await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the answer is still being read");
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
        assert_eq!(count.load(Ordering::Relaxed), 0);
        let waited = waiting.await.unwrap();
        assert!(
            waited < Duration::from_secs(5),
            "done at once, not at the grace"
        );

        // A request that never ends holds the stop back for the grace only.
        let _stuck = InFlight::start(&count);
        let started = tokio::time::Instant::now();
        settle(&count, Duration::from_millis(200)).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
