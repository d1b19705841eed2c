//! The body type every driver speaks, and the adapter from wasmtime-wasi-http's `!Sync` bodies.

use std::{
    pin::Pin,
    sync::{Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Any error, for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming HTTP body, in and out of every instance.
pub type Body = BoxBody<Bytes, BoxError>;

/// An empty [`Body`].
pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A [`Body`] holding `bytes`.
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Makes a `Send` but `!Sync` body `Sync`, as [`Body`] requires. Polling needs `&mut self`, so the
/// mutex is never contended there: `get_mut` takes no lock. Only the `&self` hints lock it.
pub(crate) struct SyncBody<B>(Mutex<B>);

impl<B> SyncBody<B> {
    pub(crate) fn new(body: B) -> Self {
        SyncBody(Mutex::new(body))
    }
}

impl<B> http_body::Body for SyncBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        Pin::new(inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size_hint()
    }
}
