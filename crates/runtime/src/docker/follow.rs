//! What an instance learns from the engine while its container runs: its stdout and stderr,
//! followed into the instance's log line by line, its memory use, sampled from the stats, and
//! its end, when it stops on its own.
//!
//! Each is a task the instance owns ([`Followers`]): aborted when it is dropped, and, on stop,
//! given a moment to read the container's last lines first.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bollard::{
    Docker,
    container::LogOutput,
    models::ContainerMemoryStats,
    query_parameters::{LogsOptionsBuilder, StatsOptionsBuilder, WaitContainerOptionsBuilder},
};
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::logs::{LogBuffer, Stream};

/// Longer lines are cut into pieces of this many bytes (as the wasm driver cuts them).
const MAX_LINE: usize = 16 * 1024;
/// How often the memory and CPU figures are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// [`Followers::memory`] before the first sample.
const UNKNOWN: u64 = u64::MAX;

/// The instance's follower tasks and what they found.
pub(super) struct Followers {
    logs: Mutex<Option<JoinHandle<()>>>,
    stats: JoinHandle<()>,
    /// Waits for the container to stop on its own.
    exit: JoinHandle<()>,
    /// How it stopped, once it has.
    ended: Arc<Mutex<Option<String>>>,
    memory: Arc<AtomicU64>,
    /// The container's CPU time since it started, in nanoseconds.
    cpu_nanos: Arc<AtomicU64>,
}

impl Followers {
    /// Starts following `container`. Its output is read from its start, so nothing written
    /// before this call is missed.
    pub(super) fn start(docker: &Docker, container: &str, log: Arc<LogBuffer>) -> Self {
        let memory = Arc::new(AtomicU64::new(UNKNOWN));
        let cpu_nanos = Arc::new(AtomicU64::new(UNKNOWN));
        let logs = tokio::spawn(follow_logs(docker.clone(), container.to_owned(), log));
        let stats = tokio::spawn(sample_stats(
            docker.clone(),
            container.to_owned(),
            memory.clone(),
            cpu_nanos.clone(),
        ));
        let ended = Arc::new(Mutex::new(None));
        let exit = tokio::spawn(wait_exit(
            docker.clone(),
            container.to_owned(),
            ended.clone(),
        ));
        Followers {
            logs: Mutex::new(Some(logs)),
            stats,
            exit,
            ended,
            memory,
            cpu_nanos,
        }
    }

    /// The container's memory use at the last sample, page cache excluded.
    pub(super) fn memory(&self) -> Option<u64> {
        Some(self.memory.load(Ordering::Relaxed)).filter(|m| *m != UNKNOWN)
    }

    /// The container's CPU time at the last sample.
    pub(super) fn cpu_nanos(&self) -> Option<u64> {
        Some(self.cpu_nanos.load(Ordering::Relaxed)).filter(|n| *n != UNKNOWN)
    }

    /// How the container stopped, once it has (on its own, or stopped by the instance).
    pub(super) fn ended(&self) -> Option<String> {
        self.ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops sampling, and lets the log follower read to the end of the container's output (it
    /// ends when the container has stopped) for at most `grace`.
    pub(super) async fn finish(&self, grace: Duration) {
        self.stats.abort();
        self.exit.abort();
        let logs = self
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut logs) = logs
            && tokio::time::timeout(grace, &mut logs).await.is_err()
        {
            logs.abort();
        }
    }
}

impl Drop for Followers {
    fn drop(&mut self) {
        self.stats.abort();
        self.exit.abort();
        if let Some(logs) = self
            .logs
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            logs.abort();
        }
    }
}

/// Waits until the container is no longer running, and says how it ended in `ended`.
async fn wait_exit(docker: Docker, container: String, ended: Arc<Mutex<Option<String>>>) {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let how = match docker
        .wait_container(&container, Some(options))
        .next()
        .await
    {
        Some(Ok(exit)) => format!("its container exited with code {}", exit.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
            format!("its container exited with code {code}")
        }
        Some(Err(e)) => format!("its container is gone: {e}"),
        None => "its container is gone".to_owned(),
    };
    *ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(how);
}

/// Copies the container's output into `log` until the container stops or the task is aborted.
async fn follow_logs(docker: Docker, container: String, log: Arc<LogBuffer>) {
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut output = docker.logs(&container, Some(options));
    let mut stdout = Lines::new(Stream::Stdout);
    let mut stderr = Lines::new(Stream::Stderr);
    let mut emit = |stream, line| log.push(stream, line);
    while let Some(frame) = output.next().await {
        match frame {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                stdout.push(&message, &mut emit);
            }
            Ok(LogOutput::StdErr { message }) => stderr.push(&message, &mut emit),
            Ok(LogOutput::StdIn { .. }) => {}
            Err(e) => {
                tracing::debug!(%container, error = %e, "following a container's output ended");
                break;
            }
        }
    }
    stdout.flush(&mut emit);
    stderr.flush(&mut emit);
}

/// The container's last `count` lines, for an error that says why it did not start.
pub(super) async fn last_lines(docker: &Docker, container: &str, count: usize) -> Vec<String> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&count.to_string())
        .build();
    let mut output = docker.logs(container, Some(options));
    let mut lines = Vec::new();
    let mut stdout = Lines::new(Stream::Stdout);
    let mut stderr = Lines::new(Stream::Stderr);
    let mut emit = |_, line| lines.push(line);
    while let Some(Ok(frame)) = output.next().await {
        match frame {
            LogOutput::StdErr { message } => stderr.push(&message, &mut emit),
            LogOutput::StdIn { .. } => {}
            other => stdout.push(other.as_ref(), &mut emit),
        }
    }
    stdout.flush(&mut emit);
    stderr.flush(&mut emit);
    lines
}

/// Samples the container's memory use and CPU time every [`STATS_EVERY`] until the task is
/// aborted.
async fn sample_stats(
    docker: Docker,
    container: String,
    memory: Arc<AtomicU64>,
    cpu_nanos: Arc<AtomicU64>,
) {
    // One sample, not two a second apart: the CPU rate comes from successive samples' totals.
    let options = StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(true)
        .build();
    loop {
        let sample = docker.stats(&container, Some(options.clone())).next().await;
        match sample {
            Some(Ok(stats)) => {
                if let Some(bytes) = stats.memory_stats.as_ref().and_then(working_set) {
                    memory.store(bytes, Ordering::Relaxed);
                }
                let total = stats
                    .cpu_stats
                    .as_ref()
                    .and_then(|c| c.cpu_usage.as_ref())
                    .and_then(|u| u.total_usage);
                if let Some(total) = total {
                    cpu_nanos.store(total, Ordering::Relaxed);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(%container, error = %e, "sampling a container's memory")
            }
            None => {}
        }
        tokio::time::sleep(STATS_EVERY).await;
    }
}

/// Memory in use without the reclaimable page cache, as `docker stats` reports it.
fn working_set(stats: &ContainerMemoryStats) -> Option<u64> {
    let usage = stats.usage?;
    let inactive = stats.stats.as_ref().and_then(|s| {
        // cgroup v2 names it inactive_file, v1 total_inactive_file.
        s.get("inactive_file")
            .or_else(|| s.get("total_inactive_file"))
            .copied()
    });
    Some(usage.saturating_sub(inactive.unwrap_or(0)))
}

/// One stream's partial line. The engine sends whole lines in most frames, but cuts long ones.
struct Lines {
    stream: Stream,
    partial: Vec<u8>,
}

impl Lines {
    fn new(stream: Stream) -> Self {
        Lines {
            stream,
            partial: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8], emit: &mut impl FnMut(Stream, String)) {
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let (text, complete) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            for chunk in text.chunks(MAX_LINE) {
                let room = MAX_LINE - self.partial.len();
                let (now, later) = chunk.split_at(chunk.len().min(room));
                self.partial.extend_from_slice(now);
                if self.partial.len() == MAX_LINE {
                    self.emit(emit);
                }
                self.partial.extend_from_slice(later);
            }
            if complete {
                self.emit(emit);
            }
        }
    }

    fn flush(&mut self, emit: &mut impl FnMut(Stream, String)) {
        if !self.partial.is_empty() {
            self.emit(emit);
        }
    }

    fn emit(&mut self, emit: &mut impl FnMut(Stream, String)) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        emit(
            self.stream,
            String::from_utf8_lossy(&self.partial).into_owned(),
        );
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(frames: &[&[u8]]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut out = Lines::new(Stream::Stdout);
        let mut emit = |_, line| lines.push(line);
        for frame in frames {
            out.push(frame, &mut emit);
        }
        out.flush(&mut emit);
        lines
    }

    #[test]
    fn frames_become_lines() {
        assert_eq!(
            split(&[b"GET /\r\n", b"half a", b" line\n\nlast"]),
            ["GET /", "half a line", "", "last"]
        );
    }

    #[test]
    fn endless_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let lengths: Vec<usize> = split(&[&long[..100], &long[100..], b"\n"])
            .iter()
            .map(String::len)
            .collect();
        assert_eq!(lengths, [MAX_LINE, MAX_LINE, 10]);
    }

    #[test]
    fn memory_excludes_the_page_cache() {
        let stats = ContainerMemoryStats {
            usage: Some(100),
            stats: Some([("total_inactive_file".to_owned(), 30)].into()),
            ..Default::default()
        };
        assert_eq!(working_set(&stats), Some(70));
        assert_eq!(working_set(&ContainerMemoryStats::default()), None);
    }
}
