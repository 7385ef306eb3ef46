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
