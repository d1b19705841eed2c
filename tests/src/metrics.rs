//! Reading the Prometheus text exposition that `GET /metrics` serves.
//!
//! Just enough of the format for tests: one sample per line, `name{label="value",...} number`,
//! comments skipped. Counter names are matched with or without their `_total` suffix, since
//! exporters differ on whether they append it.

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when this sample is the metric `name` (with or without `_total`).
    pub fn is(&self, name: &str) -> bool {
        let base = |n: &str| n.strip_suffix("_total").unwrap_or(n).to_owned();
        base(&self.name) == base(name)
    }
}

/// Every sample in `text`; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

/// The sum of the samples of metric `name` that carry all of `labels`; 0 when there are none
/// (a labelled counter that was never incremented is not exported at all).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse(text)
        .iter()
        .filter(|s| s.is(name) && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

/// The sum of every sample whose name satisfies `select`.
pub fn sum_where(text: &str, select: impl Fn(&Sample) -> bool) -> f64 {
    parse(text)
        .iter()
        .filter(|s| select(s))
        .map(|s| s.value)
        .sum()
}

/// Total libp2p transport traffic, both directions, all protocols (`libp2p_bandwidth_bytes…`).
pub fn bandwidth_bytes(text: &str) -> f64 {
    sum_where(text, |s| s.name.contains("libp2p_bandwidth_bytes"))
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        let mut chars = s[eq + 1..].trim_start().strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        let quoted = s[eq + 1..].trim_start().strip_prefix('"')?;
        s = &quoted[end + 1..];
        labels.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP mycel_adverts_dropped Adverts dropped.
# TYPE mycel_adverts_dropped counter
mycel_adverts_dropped_total{reason="forged"} 3
mycel_adverts_dropped_total{reason="oversized"} 1
mycel_peers_connected 4
libp2p_bandwidth_bytes_total{protocols="/ip4/tcp",direction="Inbound"} 100
libp2p_bandwidth_bytes_total{protocols="/ip4/tcp",direction="Outbound"} 50
odd{v="a\"b,c}"} 2
# EOF
"#;

    #[test]
    fn reads_samples() {
        assert_eq!(
            value(TEXT, "mycel_adverts_dropped", &[("reason", "forged")]),
            3.0
        );
        assert_eq!(value(TEXT, "mycel_adverts_dropped_total", &[]), 4.0);
        assert_eq!(
            value(TEXT, "mycel_adverts_dropped_total", &[("reason", "stale")]),
            0.0
        );
        assert_eq!(value(TEXT, "mycel_peers_connected", &[]), 4.0);
        assert_eq!(bandwidth_bytes(TEXT), 150.0);
        let odd = parse(TEXT).into_iter().find(|s| s.name == "odd").unwrap();
        assert_eq!(odd.label("v"), Some("a\"b,c}"));
        assert_eq!(odd.value, 2.0);
    }
}
