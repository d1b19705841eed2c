//! `/metrics` in the format the scraper asks for: OpenMetrics when its `Accept` names it (as
//! Prometheus does), else the classic text format 0.0.4, which every other parser reads
//! (`promtool check metrics`, older scrapers): counters typed under their `_total` name, no
//! `# EOF`, units or exemplars.

/// The content type of each format.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub(crate) const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether `accept` asks for OpenMetrics.
pub(crate) fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| accept.contains("application/openmetrics-text"))
}

/// The classic text format of an OpenMetrics exposition.
pub(crate) fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's HELP comes before its TYPE, which decides the name both carry.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {}\n", classic_help(text)));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else if line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
        } else {
            // An exemplar follows ` # ` after the value; the classic format has none.
            let sample = line.split_once(" # ").map_or(line, |(sample, _)| sample);
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

/// OpenMetrics escapes `"` in help text too; the classic format only `\` and newlines.
fn classic_help(text: &str) -> String {
    text.replace("\\\"", "\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_typed_under_their_total_and_the_rest_is_dropped() {
        let openmetrics = "# HELP mycel_requests Requests \\\"served\\\".\n\
            # TYPE mycel_requests counter\n\
            # UNIT mycel_requests requests\n\
            mycel_requests_total{app=\"a\"} 3 # {trace=\"x\"} 1.0\n\
            # HELP mycel_instances Instances.\n\
            # TYPE mycel_instances gauge\n\
            mycel_instances 2\n\
            # TYPE mycel_build info\n\
            mycel_build_info{version=\"1\"} 1\n\
            # EOF\n";
        assert_eq!(
            classic(openmetrics),
            "# HELP mycel_requests_total Requests \"served\".\n\
             # TYPE mycel_requests_total counter\n\
             mycel_requests_total{app=\"a\"} 3\n\
             # HELP mycel_instances Instances.\n\
             # TYPE mycel_instances gauge\n\
             mycel_instances 2\n\
             # TYPE mycel_build_info gauge\n\
             mycel_build_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    fn only_an_accept_naming_openmetrics_gets_it() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
