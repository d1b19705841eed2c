//! The client's request body, lent to one attempt at a time.
//!
//! A body streams: once an attempt has taken a frame from it, those bytes are gone and the
//! request cannot be sent anywhere else. Until then it can: the body stays in a shared slot, each
//! attempt gets a [`Lent`] view of it, and a failed attempt that never took a frame hands it on
//! untouched. A superseded view (its attempt failed, but its connection still polls it) sees an
//! error, never the next attempt's bytes.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::{Body, BoxError};

/// The request body, owned across attempts.
pub(crate) struct Replay {
    slot: Arc<Mutex<Slot>>,
}

struct Slot {
    body: Option<Body>,
    /// The attempt the body is lent to now.
    lent_to: u64,
    /// Whether an attempt took a frame: then no other attempt can be made.
    started: bool,
}

impl Replay {
    pub(crate) fn new(body: Body) -> Self {
        Self {
            slot: Arc::new(Mutex::new(Slot {
                body: Some(body),
                lent_to: 0,
                started: false,
            })),
        }
    }

    /// Whether no attempt took any of the body yet: then it can go to another instance.
    pub(crate) fn is_untouched(&self) -> bool {
        !lock(&self.slot).started
    }

    /// The body for the next attempt; `None` once an earlier attempt took part of it.
    pub(crate) fn lend(&self) -> Option<Body> {
        let mut slot = lock(&self.slot);
        if slot.started {
            return None;
        }
        slot.lent_to += 1;
        Some(
            Lent {
                slot: self.slot.clone(),
                attempt: slot.lent_to,
            }
            .boxed(),
        )
    }
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // Polling a body under the lock cannot leave the slot half-updated.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One attempt's view of the body.
struct Lent {
    slot: Arc<Mutex<Slot>>,
    attempt: u64,
}

impl http_body::Body for Lent {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut slot = lock(&self.slot);
        if slot.lent_to != self.attempt {
            return Poll::Ready(Some(Err("the request went to another instance".into())));
        }
        let Some(body) = slot.body.as_mut() else {
            return Poll::Ready(None);
        };
        let poll = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(_)) = &poll {
            slot.started = true;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        let slot = lock(&self.slot);
        slot.lent_to != self.attempt || slot.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let slot = lock(&self.slot);
        match slot.body.as_ref() {
            Some(body) if slot.lent_to == self.attempt => body.size_hint(),
            _ => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;
    use http_body_util::{Empty, Full};

    use super::*;

    fn full(data: &'static str) -> Body {
        Full::new(Bytes::from_static(data.as_bytes()))
            .map_err(|never| match never {})
            .boxed()
    }

    #[tokio::test]
    async fn an_untouched_body_goes_to_the_next_attempt() {
        let replay = Replay::new(full("hello"));
        let first = replay.lend().expect("the first attempt gets it");
        drop(first);
        let second = replay.lend().expect("untouched, so lent again");
        let bytes = second.collect().await.expect("a body").to_bytes();
        assert_eq!(bytes, "hello");
        assert!(replay.lend().is_none(), "consumed: no third attempt");
    }

    #[tokio::test]
    async fn a_superseded_attempt_sees_an_error_not_the_bytes() {
        let replay = Replay::new(full("hello"));
        let mut first = replay.lend().expect("lent");
        let second = replay.lend().expect("lent again");
        assert!(first.frame().await.expect("a frame").is_err());
        assert_eq!(second.collect().await.expect("a body").to_bytes(), "hello");
    }

    #[tokio::test]
    async fn an_empty_body_can_always_be_retried() {
        let replay = Replay::new(Empty::new().map_err(|never| match never {}).boxed());
        let first = replay.lend().expect("lent");
        assert!(first.is_end_stream());
        assert!(first.collect().await.expect("a body").to_bytes().is_empty());
        assert!(replay.lend().is_some());
    }
}
