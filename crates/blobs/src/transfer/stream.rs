//! Ranges on a raw byte stream (`/mycel/blob-ranges/1`): one stream per blob and provider, the
//! fetcher's small asks pipelined on it, the provider's answers streamed back in order.
//!
//! ```text
//!  fetcher (one session per provider)                 provider (`serve_ranges`)
//!   writer: RangeStreamOpen, then a RangeAsk  ──────▶  reads asks (bounded queue)
//!           for each range the fetch hands it            │ encodes PIPELINE ahead on blocking
//!   reader: RangeAnswer head + encoded bytes  ◀──────    │ threads, into reused buffers
//!           into one reused buffer, verified on a      writes head + bytes, in ask order
//!           blocking thread, written into the store
//! ```
//!
//! The provider proves each chunk group against its tree as it reads it from disk (one pass, no
//! second read); the fetcher checks every chunk group against the root before it is written. An
//! answer larger than a range and its proof can be is refused from its head, before its bytes are
//! read; an answer with bytes to spare, or one that does not verify, fails the session, and every
//! range given to it goes back to the fetch to be asked elsewhere.

use std::{collections::VecDeque, io, sync::Arc, time::Duration};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt, future::Either};
use mycel_protocol::blob::{RangeAnswer, RangeAsk, RangeStreamOpen};
use tokio::sync::mpsc;

use super::*;

/// A byte stream to a provider: a libp2p stream in a node, an in-memory pipe in tests.
pub trait RangeIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> RangeIo for T {}

/// A range stream as [`BlobNetwork::open_ranges`] hands it out.
pub type RangeStream = Box<dyn RangeIo>;

/// How many answers a provider encodes ahead of the one it is writing.
const PIPELINE: usize = 2;
/// How long a range stream may go without an ask before its provider closes it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fetcher waits for one answer (head and bytes) before giving up on its provider.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Serves one range stream from `store` until the fetcher closes its side (or goes quiet for
/// [`IDLE_TIMEOUT`]). Memory is bounded by `PIPELINE + 1` answers, whatever the fetcher asks.
/// Cancel-safe: dropping it drops the stream.
pub async fn serve_ranges<S>(store: BlobStore, stream: S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (mut reader, mut writer) = stream.split();
    let mut open = [0u8; RangeStreamOpen::BYTES];
    tokio::time::timeout(IDLE_TIMEOUT, reader.read_exact(&mut open))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let hash = RangeStreamOpen::decode(&open).map_err(invalid)?.hash;

    let (asks_tx, asks_rx) = mpsc::channel::<RangeAsk>(PIPELINE);
    let read_asks = async move {
        loop {
            let mut ask = [0u8; RangeAsk::BYTES];
            match tokio::time::timeout(IDLE_TIMEOUT, reader.read_exact(&mut ask)).await {
                Err(_) => return Err(io::Error::from(io::ErrorKind::TimedOut)),
                // The fetcher closed its side: every ask is in.
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(())) => {}
            }
            let ask = RangeAsk::decode(&ask).map_err(invalid)?;
            if asks_tx.send(ask).await.is_err() {
                return Ok(()); // the writing side failed; it says why
            }
        }
    };

    // Buffers go round: encoded on a blocking thread, written, handed back.
    let spare: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
    let answer = async move {
        let encoded = receiver_stream(asks_rx)
            .map(|ask| {
                let store = store.clone();
                let mut buffer = spare
                    .lock()
                    .ok()
                    .and_then(|mut s| s.pop())
                    .unwrap_or_default();
                async move {
                    tokio::task::spawn_blocking(move || {
                        let served =
                            store.encode_range_into(&hash, ask.offset, ask.len, &mut buffer)?;
                        Ok::<_, StoreError>((served, buffer))
                    })
                    .await
                    .map_err(io::Error::other)?
                    .map_err(io::Error::other)
                }
            })
            .buffered(PIPELINE);
        let mut encoded = std::pin::pin!(encoded);
        while let Some(result) = encoded.next().await {
            let (served, buffer) = result?;
            let head = if served {
                RangeAnswer::Range {
                    len: u32::try_from(buffer.len()).map_err(invalid)?,
                }
            } else {
                RangeAnswer::Missing
            };
            writer.write_all(&head.encode()).await?;
            if served {
                writer.write_all(&buffer).await?;
            }
            writer.flush().await?;
            if let Ok(mut spare) = spare.lock() {
                spare.push(buffer);
            }
        }
        writer.close().await
    };
    futures::future::try_join(read_asks, answer).await?;
    Ok(())
}

/// A receiver as a stream (tokio's mpsc has no `Stream` impl without tokio-stream).
fn receiver_stream<T: Send>(rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// What a session reports for each range handed to it: exactly one result per range.
pub(super) type RangeResult<P> = (P, usize, Result<(), SessionError>);

/// Why a session ended before its ranges were in.
#[derive(Clone, Debug)]
pub(super) enum SessionError {
    /// The stream or its connection failed, or the provider went silent: another stream to the
    /// same provider may well work (a connection replaced while nodes dial each other closes
    /// the streams on it).
    Link(String),
    /// The provider answered what it must not (a range that does not verify, a broken frame) or
    /// no longer holds the range: it is dropped for this transfer.
    Provider(String),
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Link(why) | SessionError::Provider(why) => f.write_str(why),
        }
    }
}

fn link(error: impl std::fmt::Display) -> SessionError {
    SessionError::Link(error.to_string())
}

/// Fetches the ranges handed to it through `asks` from one provider over one stream, verifying
/// each into `partial`; reports each range's outcome on `results`. On the first failure it stops
/// taking ranges (so the fetch's hand-off fails and keeps the range) and reports every range it
/// still held as failed too. Ends when `asks` is closed and every answer is in, or at a failure.
pub(super) async fn session<N: BlobNetwork>(
    network: &N,
    peer: N::Peer,
    hash: BlobHash,
    partial: Arc<PartialBlob>,
    mut asks: mpsc::Receiver<usize>,
    results: mpsc::Sender<RangeResult<N::Peer>>,
) {
    let ranges = partial.ranges();
    let held = std::sync::Mutex::new(VecDeque::new());
    let outcome = async {
        let mut stream = network
            .open_ranges(peer.clone(), hash)
            .await
            .map_err(|e| link(format!("opening a range stream: {e}")))?;
        stream
            .write_all(&RangeStreamOpen { hash }.encode())
            .await
            .map_err(link)?;
        let (mut reader, mut writer) = stream.split();
        let (asked_tx, mut asked_rx) = mpsc::unbounded_channel::<usize>();
        let write_asks = async {
            while let Some(range) = asks.recv().await {
                // Held before it is asked: a failure from here on reports it.
                if let Ok(mut held) = held.lock() {
                    held.push_back(range);
                }
                let (offset, len) = ranges[range];
                let ask = RangeAsk { offset, len }.encode().map_err(link)?;
                writer.write_all(&ask).await.map_err(link)?;
                writer.flush().await.map_err(link)?;
                let _ = asked_tx.send(range);
            }
            drop(asked_tx);
            // Every range is asked: the provider may end the stream once it has answered.
            writer.close().await.map_err(link)
        };
        let read_answers = async {
            let mut buffer = Vec::new();
            while let Some(range) = asked_rx.recv().await {
                let (offset, len) = ranges[range];
                let answer =
                    tokio::time::timeout(ANSWER_TIMEOUT, read_answer(&mut reader, &mut buffer))
                        .await
                        .map_err(|_| link(format!("no answer for {ANSWER_TIMEOUT:?}")))?
                        .map_err(|e| match e.kind() {
                            io::ErrorKind::InvalidData => SessionError::Provider(e.to_string()),
                            _ => link(e),
                        })?;
                let Some(answer_len) = answer else {
                    return Err(SessionError::Provider(
                        "the peer no longer holds the range".to_string(),
                    ));
                };
                let partial = partial.clone();
                let (verified, returned) = tokio::task::spawn_blocking(move || {
                    let verified = partial.add(offset, len, &buffer[..answer_len]);
                    (verified, buffer)
                })
                .await
                .map_err(link)?;
                buffer = returned;
                verified.map_err(SessionError::Provider)?;
                if let Ok(mut held) = held.lock() {
                    held.retain(|r| *r != range);
                }
                if results.send((peer.clone(), range, Ok(()))).await.is_err() {
                    return Ok(()); // the fetch is over
                }
            }
            Ok(())
        };
        // A failed write leaves the answers to asks already sent to be read (and verified to
        // the end: a verification is never cut off half-way); a failed read ends both.
        let (write_asks, read_answers) = (std::pin::pin!(write_asks), std::pin::pin!(read_answers));
        match futures::future::select(write_asks, read_answers).await {
            Either::Left((written, read_answers)) => {
                let read = read_answers.await;
                written.and(read)
            }
            Either::Right((read, _)) => read,
        }
    }
    .await;
    if let Err(error) = outcome {
        asks.close();
        let mut failed: Vec<usize> = held
            .lock()
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        while let Ok(range) = asks.try_recv() {
            failed.push(range);
        }
        for range in failed {
            let _ = results
                .send((peer.clone(), range, Err(error.clone())))
                .await;
        }
    }
}

/// Reads one answer head and, for a range, its bytes into the front of `buffer` (grown when
/// needed, never shrunk); the number of bytes read, or `None` for `Missing`. The head's length
/// is checked before a byte of the body is read.
async fn read_answer<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    let mut head = [0u8; RangeAnswer::BYTES];
    reader.read_exact(&mut head).await?;
    match RangeAnswer::decode(&head).map_err(invalid)? {
        RangeAnswer::Missing => Ok(None),
        RangeAnswer::Range { len } => {
            let len = len as usize;
            if buffer.len() < len {
                buffer.resize(len, 0);
            }
            reader.read_exact(&mut buffer[..len]).await?;
            Ok(Some(len))
        }
    }
}
