//! The time templates of S3 object keys (`key_template`) and Elasticsearch index names
//! (`index`): literal text with `%Y %m %d %H %M %S %j %F %%` fields, expanded in UTC. One
//! grammar, parsed here for both the config's validation and the exporter's rendering.
//! Not the rules of keys or index names themselves: each sink checks its own.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// A parsed template: literal text and time fields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeTemplate {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(TimeField),
}

/// One `%` field, zero-padded to its width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeField {
    /// `%Y`: 2026.
    Year,
    /// `%m`: 01-12.
    Month,
    /// `%d`: 01-31.
    Day,
    /// `%H`: 00-23.
    Hour,
    /// `%M`: 00-59.
    Minute,
    /// `%S`: 00-60.
    Second,
    /// `%j`: 001-366.
    DayOfYear,
    /// `%F`: 2026-12-03.
    Date,
}

/// A `%` that is not one of the fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{template:?}: unsupported {found}; use %Y, %m, %d, %H, %M, %S, %j, %F or %% (a literal %)"
)]
pub struct TimeTemplateError {
    template: String,
    /// `%q`, or `end of text` for a trailing `%`.
    found: String,
}

impl TimeTemplate {
    /// Parses `template`; the error names the first unsupported `%` field.
    pub fn parse(template: &str) -> Result<Self, TimeTemplateError> {
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
                Some('Y') => TimeField::Year,
                Some('m') => TimeField::Month,
                Some('d') => TimeField::Day,
                Some('H') => TimeField::Hour,
                Some('M') => TimeField::Minute,
                Some('S') => TimeField::Second,
                Some('j') => TimeField::DayOfYear,
                Some('F') => TimeField::Date,
                other => {
                    return Err(TimeTemplateError {
                        template: template.to_string(),
                        found: other.map_or("end of text".to_string(), |c| format!("%{c}")),
                    });
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Field(field));
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self { pieces })
    }

    /// The template expanded for `at` (UTC).
    pub fn render(&self, at: DateTime<Utc>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            // Writing to a String cannot fail.
            let _ = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    Ok(())
                }
                Piece::Field(TimeField::Year) => write!(out, "{:04}", at.year()),
                Piece::Field(TimeField::Month) => write!(out, "{:02}", at.month()),
                Piece::Field(TimeField::Day) => write!(out, "{:02}", at.day()),
                Piece::Field(TimeField::Hour) => write!(out, "{:02}", at.hour()),
                Piece::Field(TimeField::Minute) => write!(out, "{:02}", at.minute()),
                Piece::Field(TimeField::Second) => write!(out, "{:02}", at.second()),
                Piece::Field(TimeField::DayOfYear) => write!(out, "{:03}", at.ordinal()),
                Piece::Field(TimeField::Date) => {
                    write!(out, "{:04}-{:02}-{:02}", at.year(), at.month(), at.day())
                }
            };
        }
        out
    }

    /// The literal text with every field as `0`: what naming rules are checked on (the
    /// fields only ever expand to digits and `-`).
    pub fn sample(&self) -> String {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(t) => t.as_str(),
                Piece::Field(_) => "0",
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn every_field_renders_zero_padded_in_utc() {
        let at = Utc.with_ymd_and_hms(2026, 3, 7, 4, 5, 6).unwrap();
        let t = TimeTemplate::parse("%F %H:%M:%S d%j 100%% %Y%m%d").unwrap();
        assert_eq!(t.render(at), "2026-03-07 04:05:06 d066 100% 20260307");
        assert_eq!(t.sample(), "0 0:0:0 d0 100% 000");
    }

    #[test]
    fn an_unsupported_or_trailing_percent_is_named() {
        let e = TimeTemplate::parse("spans-%Y.%q").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"spans-%Y.%q\": unsupported %q; use %Y, %m, %d, %H, %M, %S, %j, %F or %% (a literal %)"
        );
        let e = TimeTemplate::parse("a%").unwrap_err();
        assert!(e.to_string().contains("unsupported end of text"), "{e}");
    }
}
