//! An instance's log: the last [`RECENT_LINES`] lines in a ring, and a broadcast for followers.

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::broadcast;

/// How many lines an instance keeps for `logs()`.
pub(crate) const RECENT_LINES: usize = 1_000;
/// How many lines a follower may fall behind before it misses some (it then sees `Lagged`).
const FOLLOW_BUFFER: usize = 1_024;

/// Which output a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line an app wrote (without its newline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When the line was completed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub stream: Stream,
    pub line: String,
}

/// An instance's recent lines, and a receiver that gets every line written after them: no line
/// is in both, none falls between.
#[derive(Debug)]
pub struct Logs {
    pub recent: Vec<LogLine>,
    pub follow: broadcast::Receiver<LogLine>,
}

/// The ring and the broadcast sender, behind one lock so a snapshot and a subscription line up.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    inner: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<LogLine>,
    sender: broadcast::Sender<LogLine>,
}

impl LogBuffer {
    pub(crate) fn new() -> Self {
        let (sender, _) = broadcast::channel(FOLLOW_BUFFER);
        LogBuffer {
            inner: Mutex::new(Ring {
                lines: VecDeque::with_capacity(64),
                sender,
            }),
        }
    }

    pub(crate) fn push(&self, stream: Stream, line: String) {
        let entry = LogLine {
            at_ms: now_ms(),
            stream,
            line,
        };
        let mut ring = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.lines.len() == RECENT_LINES {
            ring.lines.pop_front();
        }
        ring.lines.push_back(entry.clone());
        // No receivers is normal: nobody follows.
        let _ = ring.sender.send(entry);
    }

    pub(crate) fn logs(&self) -> Logs {
        let ring = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Logs {
            recent: ring.lines.iter().cloned().collect(),
            follow: ring.sender.subscribe(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_follows_the_next() {
        let buffer = LogBuffer::new();
        for i in 0..RECENT_LINES + 5 {
            buffer.push(Stream::Stdout, format!("line {i}"));
        }
        let mut logs = buffer.logs();
        assert_eq!(logs.recent.len(), RECENT_LINES);
        assert_eq!(logs.recent[0].line, "line 5");
        assert_eq!(
            logs.recent.last().map(|l| l.line.as_str()),
            Some("line 1004")
        );

        buffer.push(Stream::Stderr, "next".to_owned());
        let next = logs.follow.try_recv().expect("a followed line");
        assert_eq!((next.stream, next.line.as_str()), (Stream::Stderr, "next"));
        assert!(logs.follow.try_recv().is_err());
    }
}
