//! `mycel logs APP [--follow]`: reads the API's server-sent events and prints one line per log
//! line, `<instance> <stream>: <line>` (or each event's JSON with `--json`).

use std::io::Write;

use anyhow::Context;
use futures::StreamExt;
use mycel_protocol::api::LogEvent;

use super::{api_url, auth, body_of};

pub(crate) async fn logs(node: &str, app: &str, follow: bool, json: bool) -> anyhow::Result<()> {
    let mut url = api_url(node, &["v1", "apps", app, "logs"])?;
    if follow {
        url.query_pairs_mut().append_pair("follow", "true");
    }
    let response = auth::with_token(reqwest::Client::new().get(url))
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    if !response.status().is_success() {
        body_of(response).await?;
        anyhow::bail!("the node refused the request");
    }
    let mut body = response.bytes_stream();
    let mut events = SseData::default();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("reading the node's log stream")?;
        for data in events.push(&chunk) {
            if json {
                writeln!(out, "{data}")?;
            } else {
                let event: LogEvent = serde_json::from_str(&data)
                    .context("the node's log stream carries something other than log lines")?;
                writeln!(out, "{} {}: {}", event.instance, event.stream, event.line)?;
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// The data of server-sent events, from a body that arrives in arbitrary chunks.
#[derive(Debug, Default)]
struct SseData {
    /// Bytes of a line not yet complete.
    partial: Vec<u8>,
    /// The `data:` lines of the event being read.
    data: Vec<String>,
}

impl SseData {
    /// Takes the next chunk of the body; returns the data of each event it completes.
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut complete = Vec::new();
        self.partial.extend_from_slice(chunk);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    complete.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                self.data
                    .push(data.strip_prefix(' ').unwrap_or(data).to_string());
            }
            // Comments (keep-alives), `event:`, `id:` and `retry:` lines carry no log line.
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_come_out_whole() {
        let mut sse = SseData::default();
        assert!(sse.push(b": keep-alive\n\nda").is_empty());
        assert!(sse.push(b"ta: {\"a\":1}\r").is_empty());
        assert_eq!(sse.push(b"\n\ndata:x\ndata: y\n\n"), ["{\"a\":1}", "x\ny"]);
        // A character split between chunks is whole again.
        let e_acute = "data: é\n\n".as_bytes();
        assert!(sse.push(&e_acute[..7]).is_empty());
        assert_eq!(sse.push(&e_acute[7..]), ["é"]);
    }
}
