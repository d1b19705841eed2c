//! Apps' log lines: those of the instances that run here, and those of other nodes' instances
//! through the logs protocol (`/mycel/logs/1`, see [`mycel_protocol::logs`]).
//!
//! ```text
//!  asker ── LogsRequest ──▶ serve_logs ── one task per stream: log_events(app) ──▶ LogEvent frames
//!        ◀── LogEvent … ──┘   (recent lines, then with follow the instances' broadcasts, merged,
//!                              until the asker closes the stream)
//! ```

use std::{io, pin::pin, time::Duration};

use futures::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Stream, StreamExt,
    stream::{self, BoxStream},
};
use mycel_mesh::{
    MeshHandle, StreamProtocol,
    codec::{read_prefixed, write_prefixed},
};
use mycel_protocol::{
    PeerId,
    logs::{LogEvent, LogsRequest, MAX_EVENT_BYTES, MAX_REQUEST_BYTES},
    names::LOGS_PROTOCOL,
};
use mycel_runtime::{LogLine, Logs};
use tokio::sync::broadcast;

use crate::AgentHandle;

/// How long opening a stream to a node (dialling it if need be) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest line a log event carries; longer lines are cut (a frame has room to spare for the
/// other fields).
const MAX_LINE_BYTES: usize = MAX_EVENT_BYTES - 1024;

impl AgentHandle {
    /// The logs of every local instance of `app`: each one's recent lines and a receiver of the
    /// lines that follow them.
    pub fn logs_of(&self, app: &str) -> Vec<(String, Logs)> {
        self.running
            .borrow()
            .iter()
            .filter(|(_, entry)| entry.app == app)
            .map(|(id, entry)| (id.clone(), entry.instance.logs()))
            .collect()
    }

    /// The log lines of every local instance of `app` as events: the recent lines of each
    /// instance in turn, then, with `follow`, new lines from all of them as they come (the stream
    /// ends when every instance has stopped). A follower too slow for an instance skips lines.
    pub fn log_events(&self, app: &str, follow: bool) -> BoxStream<'static, LogEvent> {
        self.log_events_of(app, &[], follow)
    }

    /// As [`log_events`](Self::log_events), for the instances named in `only` (all when empty).
    pub fn log_events_of(
        &self,
        app: &str,
        only: &[String],
        follow: bool,
    ) -> BoxStream<'static, LogEvent> {
        let node = self.node.clone();
        let mut recent = Vec::new();
        let mut followers = Vec::new();
        let wanted = |id: &String| only.is_empty() || only.contains(id);
        for (id, logs) in self.logs_of(app).into_iter().filter(|(id, _)| wanted(id)) {
            recent.extend(logs.recent.into_iter().map(|l| event(&node, &id, l)));
            if follow {
                followers.push(following(node.clone(), id, logs.follow));
            }
        }
        let recent = stream::iter(recent);
        if follow {
            recent.chain(stream::select_all(followers)).boxed()
        } else {
            recent.boxed()
        }
    }
}

fn event(node: &str, instance: &str, line: LogLine) -> LogEvent {
    let mut text = line.line;
    if text.len() > MAX_LINE_BYTES {
        let mut end = MAX_LINE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    LogEvent {
        instance: instance.to_string(),
        node: node.to_string(),
        at_ms: line.at_ms,
        stream: line.stream.as_str().to_string(),
        line: text,
    }
}

/// The lines an instance writes from now on, until it stops.
fn following(
    node: String,
    instance: String,
    receiver: broadcast::Receiver<LogLine>,
) -> BoxStream<'static, LogEvent> {
    stream::unfold(receiver, move |mut receiver| {
        let (node, instance) = (node.clone(), instance.clone());
        async move {
            loop {
                match receiver.recv().await {
                    Ok(line) => return Some((event(&node, &instance, line), receiver)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(%instance, missed, "a log follower fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
    .boxed()
}

/// Answers peers' streams of the logs protocol until the mesh stops; each on its own task.
pub async fn serve_logs(agent: AgentHandle, mesh: MeshHandle) {
    let mut incoming = match mesh.streams().accept(StreamProtocol::new(LOGS_PROTOCOL)) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::error!(error = %e, "accepting logs streams");
            return;
        }
    };
    while let Some((peer, stream)) = incoming.next().await {
        let agent = agent.clone();
        // Detached: one per stream, it ends when the asker closes the stream or the events end.
        tokio::spawn(async move {
            if let Err(e) = answer(&agent, stream).await {
                tracing::debug!(%peer, error = %e, "a logs stream ended with an error");
            }
        });
    }
}

/// Serves one logs stream: reads the request, writes the events, and stops when they end or the
/// asker closes the stream.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    agent: &AgentHandle,
    stream: S,
) -> io::Result<()> {
    let (mut reader, mut writer) = stream.split();
    let request: LogsRequest = read_prefixed(&mut reader, MAX_REQUEST_BYTES)
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no request"))?;
    let mut events = agent.log_events_of(&request.app, &request.instances, request.follow);
    // The asker writes nothing after its request: a read that returns means it closed the stream
    // (or broke the protocol); either way the answer is over.
    let mut probe = [0u8; 1];
    let mut closed = pin!(reader.read(&mut probe));
    loop {
        tokio::select! {
            biased;
            _ = &mut closed => return Ok(()),
            next = events.next() => match next {
                Some(event) => write_prefixed(&mut writer, &event).await?,
                None => break,
            },
        }
    }
    writer.close().await
}

/// The log events of `app`'s instances on `peer` (those in `instances`, or all when it is
/// empty): recent lines, then with `follow` new ones until
/// the stream is dropped. The stream ends when the peer closes it or on any error (logged).
pub fn remote_logs(
    mesh: &MeshHandle,
    peer: PeerId,
    app: &str,
    instances: Vec<String>,
    follow: bool,
) -> impl Stream<Item = LogEvent> + Send + 'static {
    let control = mesh.streams();
    let request = LogsRequest {
        app: app.to_string(),
        follow,
        instances,
    };
    stream::once(async move {
        let mut control = control;
        let opened = tokio::time::timeout(
            CONNECT_TIMEOUT,
            control.open_stream(peer, StreamProtocol::new(LOGS_PROTOCOL)),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "opening a logs stream");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "no logs stream within {CONNECT_TIMEOUT:?}");
                return None;
            }
        };
        if let Err(e) = write_prefixed(&mut stream, &request).await {
            tracing::debug!(%peer, error = %e, "sending a logs request");
            return None;
        }
        Some(stream)
    })
    .filter_map(std::future::ready)
    .flat_map(move |stream| {
        stream::unfold(stream, move |mut stream| async move {
            match read_prefixed::<_, LogEvent>(&mut stream, MAX_EVENT_BYTES).await {
                Ok(Some(event)) => Some((event, stream)),
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "reading a logs stream");
                    None
                }
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let request = LogsRequest {
            app: "hello".into(),
            follow: true,
            instances: vec!["hello-1-0".into()],
        };
        let mut buffer = Vec::new();
        write_prefixed(&mut buffer, &request).await.unwrap();
        let mut reader = futures::io::Cursor::new(buffer.clone());
        let read: Option<LogsRequest> =
            read_prefixed(&mut reader, MAX_REQUEST_BYTES).await.unwrap();
        assert_eq!(read, Some(request));
        // A clean end before a frame is the end of the stream, not an error.
        let read: Option<LogsRequest> =
            read_prefixed(&mut reader, MAX_REQUEST_BYTES).await.unwrap();
        assert_eq!(read, None);
        // The length is checked before anything is read.
        let mut reader = futures::io::Cursor::new(buffer);
        let error = read_prefixed::<_, LogsRequest>(&mut reader, 4)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let line = LogLine {
            at_ms: 1,
            stream: mycel_runtime::Stream::Stderr,
            line: "é".repeat(MAX_EVENT_BYTES),
        };
        let event = event("node", "hello-1", line);
        assert!(event.line.len() <= MAX_LINE_BYTES);
        assert_eq!(event.stream, "stderr");
        assert!(mycel_protocol::encode(&event).unwrap().len() <= MAX_EVENT_BYTES);
    }
}
