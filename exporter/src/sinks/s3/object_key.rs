//! Object keys of the S3 sink: `<prefix><time partition><UUIDv7><extension>`, the time
//! partition expanded in UTC from `key_template`. Not the upload itself.

use chrono::{DateTime, Datelike, Timelike, Utc};
use uuid::Uuid;

/// A parsed `key_template`: literal text and time fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    DayOfYear,
    Date,
}

impl KeyTemplate {
    /// Parses the strftime-like subset the config documents (`%Y %m %d %H %M %S %j %F %%`).
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let field = match chars.next() {
                Some('%') => {
                    text.push('%');
                    continue;
                }
                Some('Y') => Piece::Year,
                Some('m') => Piece::Month,
                Some('d') => Piece::Day,
                Some('H') => Piece::Hour,
                Some('M') => Piece::Minute,
                Some('S') => Piece::Second,
                Some('j') => Piece::DayOfYear,
                Some('F') => Piece::Date,
                other => {
                    return Err(format!(
                        "key_template {template:?}: unsupported %{}; use %Y, %m, %d, %H, %M, %S, %j, %F or %%",
                        other.map(String::from).unwrap_or_default()
                    ));
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(field);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self { pieces })
    }

    /// The template expanded for `at` (UTC).
    pub fn render(&self, at: DateTime<Utc>) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for piece in &self.pieces {
            // Writing to a String cannot fail.
            let _ = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    Ok(())
                }
                Piece::Year => write!(out, "{:04}", at.year()),
                Piece::Month => write!(out, "{:02}", at.month()),
                Piece::Day => write!(out, "{:02}", at.day()),
                Piece::Hour => write!(out, "{:02}", at.hour()),
                Piece::Minute => write!(out, "{:02}", at.minute()),
                Piece::Second => write!(out, "{:02}", at.second()),
                Piece::DayOfYear => write!(out, "{:03}", at.ordinal()),
                Piece::Date => write!(out, "{:04}-{:02}-{:02}", at.year(), at.month(), at.day()),
            };
        }
        out
    }
}

/// Builds the key of each new object.
#[derive(Debug, Clone)]
pub struct ObjectKeys {
    prefix: String,
    template: KeyTemplate,
    extension: &'static str,
}

impl ObjectKeys {
    pub fn new(prefix: &str, template: &str, extension: &'static str) -> Result<Self, String> {
        Ok(Self {
            prefix: prefix.to_string(),
            template: KeyTemplate::parse(template)?,
            extension,
        })
    }

    /// A key that no other batch gets: UUIDv7 is time-ordered (keys sort by write time
    /// within a partition) and carries 74 random/counter bits, unique across replicas.
    pub fn next(&self, at: DateTime<Utc>) -> String {
        let id = Uuid::now_v7();
        format!(
            "{}{}{}{}",
            self.prefix,
            self.template.render(at),
            id.hyphenated(),
            self.extension
        )
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 7, 4, 5, 9).unwrap()
    }

    #[test]
    fn the_default_template_partitions_by_hour_in_utc() {
        let t = KeyTemplate::parse("traces/year=%Y/month=%m/day=%d/hour=%H/").unwrap();
        assert_eq!(t.render(at()), "traces/year=2026/month=03/day=07/hour=04/");
    }

    #[test]
    fn every_specifier_and_a_literal_percent() {
        let t = KeyTemplate::parse("%F %H:%M:%S d%j 100%% %Y%m%d").unwrap();
        assert_eq!(t.render(at()), "2026-03-07 04:05:09 d066 100% 20260307");
    }

    #[test]
    fn unsupported_specifiers_are_refused() {
        for bad in ["x/%Q/", "x/%"] {
            let err = KeyTemplate::parse(bad).unwrap_err();
            assert!(err.contains("unsupported"), "{err}");
        }
    }

    #[test]
    fn keys_are_prefix_partition_uuid_v7_extension_and_unique() {
        let keys = ObjectKeys::new("prod/", "%Y/", ".binpb.gz").unwrap();
        let mut generated = Vec::new();
        for _ in 0..1000 {
            let key = keys.next(at());
            let id = key
                .strip_prefix("prod/2026/")
                .and_then(|k| k.strip_suffix(".binpb.gz"))
                .unwrap();
            assert_eq!(Uuid::parse_str(id).unwrap().get_version_num(), 7);
            generated.push(key);
        }
        // Unique, and in creation order when listed (S3 lists keys sorted).
        let mut listed = generated.clone();
        listed.sort();
        listed.dedup();
        assert_eq!(listed, generated);
    }
}
