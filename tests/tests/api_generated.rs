//! Requests generated from the API's own OpenAPI document, against a real two-node mesh: for
//! every operation, requests that look valid (from its parameters' and body's schemas) and
//! requests that are not (missing, extra and mistyped fields, huge and negative numbers, long,
//! unicode and path-traversal strings, invalid JSON, empty bodies, wrong content types, bad path
//! parameters). Whatever arrives:
//!
//! - no answer is a 5xx, and every error is the API's JSON `{"error", "code"}`;
//! - a write that was refused (4xx) changed nothing: the apps and images are as before;
//! - both nodes stay up and healthy.
//!
//! One seed drives the whole run and is printed; `MYCEL_API_FUZZ_SEED=<n>` replays a run.
//! Requests go out over raw HTTP/1.1, so that paths such as `/v1/apps/../x` arrive as written.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use mycel_tests::{NodeProcess, apps::manifest, wait_until};
use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

#[path = "api_generated/generate.rs"]
mod generate;

use generate::{Generator, Rng};
use raw::{Answer, Request};

/// The most requests per operation, and the most time one operation's requests may take (DHT
/// lookups and blob searches wait up to 3 s each, so slow operations get fewer).
const PER_OPERATION: usize = 90;
const OPERATION_BUDGET: Duration = Duration::from_millis(2500);

/// The nodes' config: no rate limit (this test is a flood from one address).
const CONFIG: &str = "[api_rate_limit]\nper_second = 0\n";

#[tokio::test(flavor = "multi_thread")]
async fn requests_generated_from_the_openapi_document_never_get_a_5xx() -> Result<()> {
    let seed = std::env::var("MYCEL_API_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("api_generated: seed {seed} (replay with MYCEL_API_FUZZ_SEED={seed})");

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("mycel.toml");
    std::fs::write(&config, CONFIG)?;
    let config = config.to_str().context("a UTF-8 path")?.to_string();
    let first = NodeProcess::builder("gen-a")
        .arg("--config")
        .arg(&config)
        .start()
        .await?;
    let second = NodeProcess::builder("gen-b")
        .join(&first)
        .arg("--config")
        .arg(&config)
        .start()
        .await?;
    let nodes = [&first, &second];
    wait_for_a_leader(&nodes).await?;

    // Something to find: a blob, an app (that can never be placed, so nothing runs), its name.
    let module = first.push(b"not really wasm".to_vec()).await?;
    let mut existing = manifest("existing", "1.0.0", 1, &module);
    existing["resources"]["memory_mb"] = json!(1_048_576);
    let (status, body) = first.deploy(&existing).await?;
    ensure!(status == 201, "deploying the sample app: {status} {body}");
    converged(&nodes).await?;

    let doc: Value = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("{}/v1/openapi.json", first.api()))
        .send()
        .await?
        .json()
        .await?;
    let operations = generate::operations(&doc)?;
    ensure!(operations.len() >= 15, "{} operations", operations.len());
    let token = first.data_dir().api_token();
    let generator = Generator::new(&doc, module.clone());

    let mut rng = Rng::new(seed);
    let mut failures: Vec<String> = Vec::new();
    let mut sent = 0;
    let mut events: Vec<String> = Vec::new();
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    let started = Instant::now();
    for operation in &operations {
        let op_started = Instant::now();
        for i in 0..PER_OPERATION {
            if op_started.elapsed() > OPERATION_BUDGET {
                break;
            }
            let node = nodes[rng.below(2)];
            let request = generator.request(operation, &mut rng, i, token.as_deref());
            let writes = request.method == "POST" || request.method == "DELETE";
            let before = if writes {
                Some(state_of(node).await?)
            } else {
                None
            };
            let answer = raw::send(node.api(), &request).await;
            sent += 1;
            if let Ok(answer) = &answer {
                *statuses.entry(answer.status).or_insert(0) += 1;
            }
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    failures.push(format!("{} — no answer: {e:#}", request.describe()));
                    break;
                }
            };
            if let Some(problem) = check(&request, &answer) {
                failures.push(format!("{} — {problem}", request.describe()));
            }
            if let Some(before) = before {
                if (400..500).contains(&answer.status) {
                    let after = state_of(node).await?;
                    if after != before {
                        failures.push(format!(
                            "{} — refused with {} but changed the state: {before} -> {after}; before it: {:?}",
                            request.describe(),
                            answer.status,
                            &events[events.len().saturating_sub(6)..]
                        ));
                    }
                } else if answer.status < 300 {
                    // A write that went through: put the sample app back if it went, and let
                    // both replicas agree before the next check.
                    events.push(format!(
                        "{} on {}: {}",
                        request.describe(),
                        node.name(),
                        answer.status
                    ));
                    if restore_existing(&first, &existing).await? {
                        events.push("restored".into());
                    }
                    converged(&nodes).await?;
                    events.push(format!("converged: {}", state_of(node).await?));
                }
            }
        }
        for node in nodes {
            ensure!(
                !node.has_exited(),
                "{} exited during {operation:?}",
                node.name()
            );
            node.health()
                .await
                .with_context(|| format!("{} after {operation:?}", node.name()))?;
        }
        if failures.len() > 40 {
            break;
        }
    }
    eprintln!(
        "api_generated: {sent} requests over {} operations in {:.1} s",
        operations.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("api_generated: answers by status: {statuses:?}");
    ensure!(sent > 500, "only {sent} requests went out");
    ensure!(
        failures.is_empty(),
        "seed {seed}: {} bad answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// What a response must be: below 500, and an error is the API's JSON.
fn check(request: &Request, answer: &Answer) -> Option<String> {
    if answer.status >= 500 {
        return Some(format!("{} {}", answer.status, answer.excerpt()));
    }
    if answer.status >= 400 && request.method != "HEAD" {
        let error: Option<Map<String, Value>> = serde_json::from_slice(&answer.body).ok();
        let shaped = error.as_ref().is_some_and(|e| {
            e.get("error").is_some_and(Value::is_string)
                && e.get("code").is_some_and(Value::is_string)
        });
        if !shaped {
            return Some(format!(
                "{} without the JSON error shape: {}",
                answer.status,
                answer.excerpt()
            ));
        }
    }
    None
}

/// The apps (name, version, replicas) and images (name, hash) a node's replica holds.
async fn state_of(node: &NodeProcess) -> Result<String> {
    let apps = node.apps().await?;
    let mut apps: Vec<String> = apps
        .apps
        .iter()
        .map(|a| format!("{}@{}x{}", a.name, a.version, a.replicas))
        .collect();
    apps.sort();
    let images = node.images().await?;
    let mut images: Vec<String> = images
        .images
        .iter()
        .map(|i| format!("{}={}", i.image, i.hash))
        .collect();
    images.sort();
    Ok(format!(
        "apps [{}] images [{}]",
        apps.join(" "),
        images.join(" ")
    ))
}

/// Waits until every node has applied what any of them had applied when it was called: then
/// all the writes that were answered are in every replica.
async fn converged(nodes: &[&NodeProcess]) -> Result<()> {
    let mut target = 0;
    for node in nodes {
        target = target.max(node.cluster().await?.committed.unwrap_or(0));
    }
    wait_until(
        "every replica applies the writes made so far",
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || {
            for node in nodes {
                if node.cluster().await?.committed.unwrap_or(0) < target {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await
}

/// Deploys the sample app again when a generated request removed it (or scaled it to nothing).
async fn restore_existing(node: &NodeProcess, existing: &Value) -> Result<bool> {
    let apps = node.apps().await?;
    if apps
        .apps
        .iter()
        .any(|a| a.name == "existing" && a.replicas == 1)
    {
        return Ok(false);
    }
    let (status, body) = node.deploy(existing).await?;
    ensure!(status == 201, "restoring the sample app: {status} {body}");
    Ok(true)
}

async fn wait_for_a_leader(nodes: &[&NodeProcess]) -> Result<()> {
    wait_until(
        "both nodes know the same leader",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let a = nodes[0].cluster().await?;
            let b = nodes[1].cluster().await?;
            Ok(a.leader.is_some() && a.leader == b.leader)
        },
    )
    .await
}

/// Sends raw HTTP/1.1 and reads the answer.
mod raw {
    use super::*;

    /// One request, exactly as it goes on the wire (bar `Host`, `Content-Length` and
    /// `Connection`, which are always right).
    #[derive(Clone, Debug)]
    pub(super) struct Request {
        pub(super) method: String,
        /// The request target: path and query, already percent-encoded where needed.
        pub(super) target: String,
        pub(super) headers: Vec<(String, String)>,
        pub(super) body: Vec<u8>,
        /// What made it, for the report.
        pub(super) kind: String,
    }

    impl Request {
        pub(super) fn describe(&self) -> String {
            let body = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned();
            let headers: Vec<String> = self
                .headers
                .iter()
                .filter(|(k, _)| k != "authorization")
                .map(|(k, v)| format!("{k}: {}", &v[..v.len().min(60)]))
                .collect();
            format!(
                "{} {} [{}] {{{}}} body({} bytes) {body:?}",
                self.method,
                &self.target[..self.target.len().min(200)],
                self.kind,
                headers.join(", "),
                self.body.len()
            )
        }
    }

    pub(super) struct Answer {
        pub(super) status: u16,
        pub(super) body: Vec<u8>,
    }

    impl Answer {
        pub(super) fn excerpt(&self) -> String {
            String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned()
        }
    }

    /// Sends `request` to the API at `base` (`http://HOST:PORT`) on a connection of its own.
    pub(super) async fn send(base: &str, request: &Request) -> Result<Answer> {
        let addr = base.trim_start_matches("http://");
        tokio::time::timeout(Duration::from_secs(15), async {
            let mut stream = TcpStream::connect(addr).await?;
            let mut head = format!(
                "{} {} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
                request.method,
                request.target,
                request.body.len()
            );
            for (key, value) in &request.headers {
                head.push_str(&format!("{key}: {value}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await?;
            // A server may answer (and close) before it has read a large body: that is fine.
            let _ = stream.write_all(&request.body).await;
            read_answer(&mut stream, request.method == "HEAD").await
        })
        .await
        .context("no answer within 15 s")?
    }

    async fn read_answer(stream: &mut TcpStream, head_only: bool) -> Result<Answer> {
        let mut buffer = Vec::new();
        let header_end = loop {
            if let Some(end) = find(&buffer, b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!(
                    "the connection closed before an answer: {:?}",
                    String::from_utf8_lossy(&buffer)
                );
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        let mut body = buffer[header_end + 4..].to_vec();
        if head_only || status < 400 {
            // Success bodies may be streams that never end (logs with follow): not read.
            return Ok(Answer { status, body });
        }
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
        let mut chunk = [0u8; 8192];
        loop {
            if length.is_some_and(|len| body.len() >= len) {
                break;
            }
            if chunked && find(&body, b"\r\n0\r\n\r\n").is_some() {
                break;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        if chunked {
            body = dechunk(&body);
        }
        Ok(Answer { status, body })
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(line_end) = find(bytes, b"\r\n") {
            let size = std::str::from_utf8(&bytes[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
            let Some(size) = size.filter(|s| *s > 0) else {
                break;
            };
            let start = line_end + 2;
            let end = (start + size).min(bytes.len());
            out.extend_from_slice(&bytes[start..end]);
            bytes = &bytes[(end + 2).min(bytes.len())..];
        }
        out
    }
}
