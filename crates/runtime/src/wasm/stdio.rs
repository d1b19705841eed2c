//! A guest's stdout and stderr, split into lines and appended to its instance's log.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::{
    cli::{IsTerminal, StdoutStream},
    p2::{OutputStream, Pollable, StreamResult},
};

use crate::logs::{LogBuffer, Stream};

/// Longer lines are cut into pieces of this many bytes, so one endless line cannot grow the host.
const MAX_LINE: usize = 16 * 1024;
/// How much a guest may write in one call.
const WRITE_BUDGET: usize = 64 * 1024;

/// One request's stdout or stderr. Clones share the partial line; the last one dropped (with the
/// request's store) flushes it.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    splitter: Arc<Mutex<LineSplitter>>,
}

struct LineSplitter {
    stream: Stream,
    log: Arc<LogBuffer>,
    partial: Vec<u8>,
}

impl GuestOutput {
    pub(crate) fn new(stream: Stream, log: Arc<LogBuffer>) -> Self {
        GuestOutput {
            splitter: Arc::new(Mutex::new(LineSplitter {
                stream,
                log,
                partial: Vec::new(),
            })),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        self.splitter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(bytes);
    }
}

impl LineSplitter {
    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.partial.len();
            match bytes.iter().take(room).position(|b| *b == b'\n') {
                Some(end) => {
                    self.partial.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    self.emit();
                }
                None if bytes.len() >= room => {
                    self.partial.extend_from_slice(&bytes[..room]);
                    bytes = &bytes[room..];
                    self.emit();
                }
                None => {
                    self.partial.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
    }

    fn emit(&mut self) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        self.log.push(self.stream, line);
    }
}

impl Drop for LineSplitter {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(log: &LogBuffer) -> Vec<String> {
        log.logs().recent.into_iter().map(|l| l.line).collect()
    }

    #[test]
    fn splits_lines_and_flushes_the_rest_when_dropped() {
        let log = Arc::new(LogBuffer::new());
        let out = GuestOutput::new(Stream::Stdout, log.clone());
        out.write_bytes(b"GET /\r\nhal");
        out.write_bytes(b"f a line\n\nend");
        assert_eq!(lines(&log), ["GET /", "half a line", ""]);
        let copy = out.clone();
        drop(out);
        assert_eq!(lines(&log).len(), 3, "a clone still holds the partial line");
        drop(copy);
        assert_eq!(lines(&log).last().map(String::as_str), Some("end"));
    }

    #[test]
    fn cuts_endless_lines() {
        let log = Arc::new(LogBuffer::new());
        let out = GuestOutput::new(Stream::Stderr, log.clone());
        out.write_bytes(&vec![b'x'; MAX_LINE * 2 + 10]);
        drop(out);
        let lengths: Vec<usize> = lines(&log).iter().map(String::len).collect();
        assert_eq!(lengths, [MAX_LINE, MAX_LINE, 10]);
    }
}
