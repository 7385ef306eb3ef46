//! The samples of one `/metrics` answer in the Prometheus text format (what an exporter
//! serves to a client that does not ask for OpenMetrics): metric name, labels, value.
//! Only what delivery health reads; `# HELP`/`# TYPE` lines and timestamps are skipped.
//! Not the scraping.

use std::collections::BTreeMap;

/// One sample: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples(pub Vec<Sample>);

/// A line that is not a sample, with its number (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("/metrics line {line}: {problem}")]
pub struct ParseError {
    pub line: usize,
    pub problem: String,
}

impl Samples {
    /// Reads a Prometheus text answer; an unreadable line fails the whole answer, since
    /// health computed from part of it could be wrong.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |problem: &str| ParseError {
                line: i + 1,
                problem: problem.to_string(),
            };
            let name_end = line
                .find(|c: char| c == '{' || c.is_whitespace())
                .ok_or_else(|| error("no value"))?;
            let name = &line[..name_end];
            let mut rest = &line[name_end..];
            let mut labels = BTreeMap::new();
            if let Some(inner) = rest.strip_prefix('{') {
                let (parsed, after) = parse_labels(inner).map_err(|p| error(&p))?;
                labels = parsed;
                rest = after;
            }
            let value = rest
                .split_whitespace()
                .next()
                .ok_or_else(|| error("no value"))?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other
                    .parse()
                    .map_err(|_| error(&format!("value {other:?} is not a number")))?,
            };
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        Ok(Self(samples))
    }

    /// The samples named `name`.
    pub fn named<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a Sample> + use<'a, 'n> {
        self.0.iter().filter(move |s| s.name == name)
    }
}

impl Sample {
    /// The value of label `name`, or `""`.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// The labels after `{`, and what follows the closing `}`.
fn parse_labels(mut text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = text
            .split_once("=\"")
            .ok_or_else(|| "a label without =\"value\"".to_string())?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value".to_string()),
                Some((at, '"')) => break at,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value".to_string()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(
            name.trim().trim_start_matches(',').trim().to_string(),
            value,
        );
        text = after[end + 1..].trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_labels_escapes_and_special_values() {
        let text = "# HELP x_total Help.\n# TYPE x_total counter\nx_total{sink=\"a\",reason=\"say \\\"hi\\\"\\n\"} 12\nup 1 1700000000000\nh_bucket{le=\"+Inf\"} +Inf\nempty{} 0.5\n";
        let samples = Samples::parse(text).unwrap();
        assert_eq!(samples.0.len(), 4);
        let x = samples.named("x_total").next().unwrap();
        assert_eq!(
            (x.label("sink"), x.label("reason"), x.value),
            ("a", "say \"hi\"\n", 12.0)
        );
        assert_eq!(samples.named("up").next().unwrap().value, 1.0);
        assert_eq!(
            samples.named("h_bucket").next().unwrap().value,
            f64::INFINITY
        );
        assert_eq!(samples.named("empty").next().unwrap().label("x"), "");
    }

    #[test]
    fn a_broken_line_names_its_number() {
        assert_eq!(Samples::parse("a 1\nb{x=\"1\" 2\n").unwrap_err().line, 2);
        assert!(
            Samples::parse("a one\n")
                .unwrap_err()
                .to_string()
                .contains("\"one\" is not a number")
        );
    }

    #[test]
    fn a_recorded_exporter_answer_reads_whole() {
        let samples = Samples::parse(include_str!("testdata/failing-t1.metrics")).unwrap();
        assert!(samples.named("spansink_sink_sent_spans_total").count() >= 1);
        assert!(samples.0.len() > 50);
    }
}
