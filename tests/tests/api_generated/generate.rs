//! Requests from the OpenAPI document: a seeded generator of valid-looking and broken requests
//! for each operation.

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::raw::Request;

/// splitmix64: small, fast, and the same sequence for the same seed everywhere.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn range(&mut self, low: i64, high: i64) -> i64 {
        let span = (high - low).max(0) as u64 + 1;
        low + (self.next() % span) as i64
    }
}

/// One operation of the document.
#[derive(Clone, Debug)]
pub(super) struct Operation {
    pub(super) method: String,
    pub(super) path: String,
    parameters: Vec<Value>,
    /// The request body's content type and schema.
    body: Option<(String, Value)>,
}

/// Every operation in `doc`, with `$ref`s in parameters resolved.
pub(super) fn operations(doc: &Value) -> Result<Vec<Operation>> {
    let mut out = Vec::new();
    for (path, methods) in doc["paths"].as_object().context("paths")? {
        for (method, operation) in methods.as_object().context("methods")? {
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| resolve(doc, p).clone())
                .collect();
            let body = operation["requestBody"]["content"]
                .as_object()
                .and_then(|content| content.iter().next())
                .map(|(kind, media)| (kind.clone(), media["schema"].clone()));
            out.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                parameters,
                body,
            });
        }
    }
    Ok(out)
}

fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    let mut value = value;
    for _ in 0..8 {
        // A choice of schemas without a type of its own (the seed deploy's body: a manifest or
        // the seed's form) is its first: requests stay manifests, which nothing can place.
        if value.get("type").is_none()
            && let Some(first) = value["oneOf"].as_array().and_then(|all| all.first())
        {
            value = first;
            continue;
        }
        let Some(target) = value.get("$ref").and_then(Value::as_str) else {
            break;
        };
        let Some(pointer) = target.strip_prefix('#') else {
            break;
        };
        match doc.pointer(pointer) {
            Some(found) => value = found,
            None => break,
        }
    }
    value
}

/// Makes requests for operations.
pub(super) struct Generator<'a> {
    doc: &'a Value,
    /// A blob the nodes hold.
    module: String,
}

/// Strings that have broken parsers before.
const NASTY: &[&str] = &[
    "",
    " ",
    "../../etc/passwd",
    "..\\..\\windows",
    "a\u{0}b",
    "\u{202e}gnp.exe",
    "😀🚀",
    "Ä",
    "%00",
    "${jndi:ldap://x}",
    "'; DROP TABLE apps; --",
    "<script>alert(1)</script>",
    "\n\r\t",
    "\u{fffd}",
    "blake3:",
    "sha256:../../x",
    "-",
    ".",
];

/// Path segments that are not names (percent-encoded where HTTP needs it).
const BAD_SEGMENTS: &[&str] = &[
    "..",
    ".",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f",
    "%00",
    "a%00b",
    "%zz",
    "%",
    "%C3%84%F0%9F%98%80",
    "UPPER",
    "-leading",
    "trailing-",
    "under_score",
    "with%20space",
    "new%0Aline",
    "%2F",
    "a.b",
    "blake3:zz",
    "blake3:",
    "sha256:0000",
];

impl<'a> Generator<'a> {
    pub(super) fn new(doc: &'a Value, module: String) -> Self {
        Self { doc, module }
    }

    /// Request number `i` for `operation`: about a third look valid, the rest are broken in one
    /// way each.
    pub(super) fn request(
        &self,
        operation: &Operation,
        rng: &mut Rng,
        i: usize,
        token: Option<&str>,
    ) -> Request {
        let valid = i.is_multiple_of(3);
        let mut kind = if valid { "valid" } else { "broken" }.to_string();
        let mut method = operation.method.clone();
        let mut headers: Vec<(String, String)> = Vec::new();
        match (token, rng.below(20)) {
            (Some(token), 0) => headers.push(("authorization".into(), format!("Bearer {token}x"))),
            (_, 1) => {}
            (Some(token), _) => headers.push(("authorization".into(), format!("Bearer {token}"))),
            (None, _) => {}
        }

        // What to break, when breaking.
        let breaking = if valid { usize::MAX } else { rng.below(8) };
        let mut path = operation.path.clone();
        let mut query: Vec<String> = Vec::new();
        for parameter in &operation.parameters {
            let name = parameter["name"].as_str().unwrap_or("x");
            let schema = resolve(self.doc, &parameter["schema"]);
            let required = parameter["required"].as_bool().unwrap_or(false);
            match parameter["in"].as_str() {
                Some("path") => {
                    let value = if breaking == 0 {
                        kind = format!("bad path parameter {name}");
                        self.bad_segment(rng)
                    } else {
                        encode(&self.string(name, schema, rng))
                    };
                    path = path.replace(&format!("{{{name}}}"), &value);
                }
                Some("query") => {
                    if breaking == 1 {
                        kind = format!("bad query parameter {name}");
                        match rng.below(4) {
                            0 => {}
                            1 => query.push(format!("{name}=%zz")),
                            2 => query.push(format!(
                                "{name}={}&{name}={}",
                                encode(nasty(rng)),
                                encode(nasty(rng))
                            )),
                            _ => query.push(format!("{name}={}", encode(&"9".repeat(400)))),
                        }
                    } else if required || rng.one_in(2) {
                        let value = self.value(name, schema, rng, 0);
                        let text = match &value {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        query.push(format!("{name}={}", encode(&text)));
                    }
                }
                Some("header") if breaking == 2 || rng.one_in(6) => {
                    kind = format!("bad header {name}");
                    let value = match rng.below(4) {
                        0 => "zz".to_string(),
                        1 => "f".repeat(4000),
                        2 => "-1".to_string(),
                        _ => format!("ed25519:{}", "0".repeat(64)),
                    };
                    headers.push((name.to_string(), value));
                }
                _ => {}
            }
        }
        if breaking == 3 {
            kind = "unknown query parameters".into();
            query.push(format!("unexpected={}", encode(nasty(rng))));
        }
        if breaking == 4 {
            let other = *rng.pick(&["PUT", "PATCH", "OPTIONS", "HEAD", "DELETE", "POST", "GET"]);
            kind = format!("method {other} instead of {method}");
            method = other.to_string();
        }

        let mut body = Vec::new();
        match &operation.body {
            Some((content_type, schema)) if content_type == "application/json" => {
                let schema = resolve(self.doc, schema);
                let value = self.value("body", schema, rng, 0);
                if breaking >= 5 {
                    let (text, what) = self.broken_json(value, schema, rng);
                    body = text;
                    kind = what;
                } else {
                    body = serde_json::to_vec(&value).expect("JSON");
                }
                let content_type = if breaking >= 5 && rng.one_in(4) {
                    kind.push_str(", wrong content type");
                    *rng.pick(&[
                        "text/plain",
                        "application/xml",
                        "application/json; charset=utf-16",
                        "multipart/form-data; boundary=x",
                    ])
                } else {
                    "application/json"
                };
                headers.push(("content-type".into(), content_type.into()));
            }
            Some((content_type, _)) => {
                body = match rng.below(4) {
                    0 => Vec::new(),
                    1 => b"{\"not\": \"binary\"}".to_vec(),
                    _ => (0..rng.below(5000)).map(|_| rng.next() as u8).collect(),
                };
                headers.push(("content-type".into(), content_type.clone()));
            }
            None if breaking >= 5 => {
                kind = "a body where none belongs".into();
                body = b"{\"replicas\": 1}".to_vec();
                headers.push(("content-type".into(), "application/json".into()));
            }
            None => {}
        }

        let mut target = path;
        if breaking == 7 && rng.one_in(2) {
            kind.push_str(", trailing slash");
            target.push('/');
        }
        if !query.is_empty() {
            target.push('?');
            target.push_str(&query.join("&"));
        }
        Request {
            method,
            target,
            headers,
            body,
            kind,
        }
    }

    fn bad_segment(&self, rng: &mut Rng) -> String {
        match rng.below(4) {
            0 => "a".repeat(rng.range(64, 5000) as usize),
            1 => encode(nasty(rng)),
            _ => BAD_SEGMENTS[rng.below(BAD_SEGMENTS.len())].to_string(),
        }
    }

    /// A string for parameter or field `name` that its schema would accept.
    fn string(&self, name: &str, schema: &Value, rng: &mut Rng) -> String {
        if let Some(choices) = schema["enum"].as_array() {
            return rng.pick(choices).as_str().unwrap_or("x").to_string();
        }
        let pattern = schema["pattern"].as_str().unwrap_or("");
        if pattern.starts_with("^blake3:") {
            // Mostly the blob the nodes hold: an unknown one makes the node search the mesh.
            return if rng.one_in(12) {
                format!("blake3:{}", hex(rng, 32))
            } else {
                self.module.clone()
            };
        }
        if pattern.starts_with("^ed25519:") {
            return format!("ed25519:{}", hex(rng, 32));
        }
        if pattern.starts_with("^[0-9a-f]{128}") {
            return hex(rng, 64);
        }
        if pattern.starts_with("^[a-z0-9]") || matches!(name, "name" | "app_id" | "app") {
            return if rng.one_in(2) {
                "existing".into()
            } else {
                format!("gen-{}", rng.below(1000))
            };
        }
        if pattern.starts_with("^[A-Za-z0-9._+-]") || name == "version" {
            return format!("{}.{}.{}", rng.below(3), rng.below(10), rng.below(10));
        }
        if pattern == "^/" || name == "path" {
            return rng.pick(&["/", "/healthz", "/a/b"]).to_string();
        }
        match name {
            "image" => rng
                .pick(&["nginx:1.27", "busybox", "ghcr.io/x/y:2"])
                .to_string(),
            "key" => "zone".into(),
            _ => format!("s{}", rng.below(100_000)),
        }
    }

    /// A value of `schema` (for field `name`), valid as far as the schema says.
    fn value(&self, name: &str, schema: &Value, rng: &mut Rng, depth: usize) -> Value {
        let schema = resolve(self.doc, schema);
        match schema["type"].as_str() {
            Some("object") => self.object(schema, rng, depth),
            Some("array") => {
                let items = resolve(self.doc, &schema["items"]);
                let count = if depth > 4 { 0 } else { rng.below(3) };
                Value::Array(
                    (0..count)
                        .map(|_| self.value(name, items, rng, depth + 1))
                        .collect(),
                )
            }
            Some("integer") => {
                let low = schema["minimum"].as_i64().unwrap_or(0);
                let high = schema["maximum"].as_i64().unwrap_or(low + 100);
                // Apps that can never be placed: nothing starts, whatever the test deploys.
                match name {
                    "replicas" => json!(rng.range(low, high.min(3))),
                    "memory_mb" => json!(1_048_576),
                    _ => json!(rng.range(low, high)),
                }
            }
            Some("number") => json!(0.01 + rng.below(400) as f64 / 100.0),
            Some("boolean") => json!(rng.one_in(2)),
            Some("string") => json!(self.string(name, schema, rng)),
            _ => json!(null),
        }
    }

    fn object(&self, schema: &Value, rng: &mut Rng, depth: usize) -> Value {
        let mut out = serde_json::Map::new();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(properties) = schema["properties"].as_object() {
            // Exactly one of a manifest's workloads, and of a container's image and archive.
            let mut exclusive = Vec::new();
            if properties.contains_key("wasm") && properties.contains_key("container") {
                exclusive.push(*rng.pick(&["wasm", "container"]));
            }
            if properties.contains_key("image") && properties.contains_key("archive") {
                exclusive.push(*rng.pick(&["image", "archive"]));
            }
            for (key, property) in properties {
                let paired = matches!(key.as_str(), "wasm" | "container" | "image" | "archive");
                let wanted = if paired && !exclusive.is_empty() {
                    exclusive.contains(&key.as_str())
                } else {
                    required.contains(&key.as_str()) || (depth < 3 && rng.one_in(2))
                };
                if wanted {
                    out.insert(key.clone(), self.value(key, property, rng, depth + 1));
                }
            }
        }
        if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            for n in 0..rng.below(3) {
                out.insert(
                    format!("KEY_{n}"),
                    self.value("value", extra, rng, depth + 1),
                );
            }
        }
        Value::Object(out)
    }

    /// `value` broken one way; the bytes to send and what was broken.
    fn broken_json(&self, mut value: Value, schema: &Value, rng: &mut Rng) -> (Vec<u8>, String) {
        let text = |v: &Value| serde_json::to_vec(v).expect("JSON");
        match rng.below(12) {
            0 => {
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match (value.as_object_mut(), required.is_empty()) {
                    (Some(object), false) => {
                        let field = *rng.pick(&required);
                        object.remove(field);
                        (text(&value), format!("missing required field {field}"))
                    }
                    _ => (b"{}".to_vec(), "empty object".into()),
                }
            }
            1 => {
                if let Some(object) = value.as_object_mut() {
                    object.insert("unexpected".into(), json!({"deeply": [1, 2, 3]}));
                }
                (text(&value), "an extra field".into())
            }
            2 | 3 => {
                let replacement = rng
                    .pick(&[
                        json!(null),
                        json!(true),
                        json!("a string"),
                        json!(1.5),
                        json!(-1),
                        json!(i64::MIN),
                        json!(u64::MAX),
                        json!(1e308),
                        json!([]),
                        json!({}),
                        json!([{"a": null}]),
                    ])
                    .clone();
                let at = replace_leaf(&mut value, replacement.clone(), rng);
                (text(&value), format!("{at} is {replacement}"))
            }
            4 => {
                let long = match rng.below(3) {
                    0 => "x".repeat(70_000),
                    1 => "😀".repeat(3000),
                    _ => "a".repeat(300),
                };
                let at = replace_leaf(&mut value, json!(long), rng);
                (text(&value), format!("{at} is a long string"))
            }
            5 => {
                let nasty = nasty(rng).to_string();
                let at = replace_leaf(&mut value, json!(nasty), rng);
                (text(&value), format!("{at} is {nasty:?}"))
            }
            6 => {
                // Numbers serde_json cannot hold: written into the text.
                let number = *rng.pick(&[
                    "1e400",
                    "-1e400",
                    "18446744073709551616",
                    "-0",
                    "1.0e2",
                    "0x10",
                    "NaN",
                    "Infinity",
                ]);
                let at = replace_leaf(&mut value, json!("@NUMBER@"), rng);
                let body = String::from_utf8(text(&value))
                    .expect("UTF-8")
                    .replace("\"@NUMBER@\"", number);
                (body.into_bytes(), format!("{at} is {number}"))
            }
            7 => {
                let depth = *rng.pick(&[200, 5000, 100_000]);
                let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                (body.into_bytes(), format!("{depth} nested arrays"))
            }
            8 => {
                let body = *rng.pick(&[
                    "",
                    "{",
                    "{\"name\":",
                    "nul",
                    "[]",
                    "\"text\"",
                    "42",
                    "{\"name\": \"a\", \"name\": \"b\"}",
                    "\u{feff}{}",
                    "{'name': 'single'}",
                    "{\"a\":1}garbage",
                ]);
                (body.as_bytes().to_vec(), format!("body {body:?}"))
            }
            9 => {
                let body: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                (body, "random bytes".into())
            }
            10 => (text(&json!([value])), "an array of the object".into()),
            _ => {
                let mut big = text(&value);
                big.extend(std::iter::repeat_n(b' ', 70_000));
                (big, "70 kB of whitespace after the object".into())
            }
        }
    }
}

/// Replaces a random node below the root of `value` (or the root itself) with `replacement`;
/// answers where.
fn replace_leaf(value: &mut Value, replacement: Value, rng: &mut Rng) -> String {
    let mut pointers = Vec::new();
    collect(value, String::new(), &mut pointers);
    let pointer = rng.pick(&pointers).clone();
    if let Some(target) = value.pointer_mut(&pointer) {
        *target = replacement;
    }
    if pointer.is_empty() {
        "the body".into()
    } else {
        pointer
    }
}

fn collect(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                collect(value, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                collect(value, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn nasty(rng: &mut Rng) -> &'static str {
    NASTY[rng.below(NASTY.len())]
}

fn hex(rng: &mut Rng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.next() as u8))
        .collect()
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
