//! Metric exposition formats for the exporter's and the operator's `/metrics`.
//! prometheus-client writes OpenMetrics, which Prometheus asks for; tools that read the
//! classic Prometheus text format (promtool, older scrapers, a plain `curl`) get that
//! instead, derived from the same encoding. Not the metrics themselves.

/// Content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Rewrites OpenMetrics text into the Prometheus text format. The two differ only in
/// metadata: counters are announced under their sample name (`x_total`, not `x`), there
/// are no `# UNIT` lines and no `# EOF` terminator. Samples are left as they are.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            counters.insert(name.to_string());
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        match meta {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS_TEXT: &str = "\
# HELP spansink_sink_sent_spans Spans a sink delivered.
# TYPE spansink_sink_sent_spans counter
spansink_sink_sent_spans_total{sink=\"a\"} 3
# HELP spansink_sink_export_duration_seconds One export call.
# TYPE spansink_sink_export_duration_seconds histogram
# UNIT spansink_sink_export_duration_seconds seconds
spansink_sink_export_duration_seconds_sum{sink=\"a\"} 0.5
# HELP spansink_sink_queue_spans Spans waiting.
# TYPE spansink_sink_queue_spans gauge
spansink_sink_queue_spans{sink=\"a\"} 0
# EOF
";

    #[test]
    fn counters_are_announced_under_their_sample_name() {
        let text = to_prometheus_text(OPENMETRICS_TEXT);
        assert!(
            text.contains("# HELP spansink_sink_sent_spans_total Spans a sink delivered.\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE spansink_sink_sent_spans_total counter\n"),
            "{text}"
        );
        assert!(text.contains("spansink_sink_sent_spans_total{sink=\"a\"} 3\n"));
        assert!(text.contains("# TYPE spansink_sink_export_duration_seconds histogram\n"));
        assert!(text.contains("# TYPE spansink_sink_queue_spans gauge\n"));
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
    }

    #[test]
    fn negotiation_follows_the_accept_header() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
