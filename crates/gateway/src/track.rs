//! An answer's body that reports when it is over: read to its end, failed, or dropped by the
//! client. What it reports to (the balancer's in-flight count, the duration histogram) is a
//! closure, run exactly once.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::{Body, BoxError};

pub(crate) struct Tracked {
    body: Body,
    on_end: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Tracked {
    pub(crate) fn new(body: Body, on_end: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            body,
            on_end: Some(Box::new(on_end)),
        }
    }

    fn end(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.end();
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        match &poll {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.end(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.end(),
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
