//! Human-readable units used throughout the config: durations ("250ms", "5s", "1m") and
//! byte sizes ("512KiB", "4MiB"). Not for anything else: they parse, print and describe themselves.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a number and a unit: `250ms`, `5s`, `1m`, `1h30m`.
///
/// Parsed by `humantime` so the accepted forms are the ones Kubernetes users already know
/// from other tools; printed back in the same notation, so a round trip is stable (the
/// operator hashes the rendered config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(Duration)
            .map_err(|e| {
                format!("invalid duration {s:?} ({e}); write e.g. \"250ms\", \"5s\", \"1m\"")
            })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        // humantime separates components with spaces ("1m 30s"); drop them so the value
        // reads like the examples in the docs and stays a single YAML token.
        let text = humantime::format_duration(self.0).to_string();
        f.write_str(&text.replace(' ', ""))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (ns, us, ms, s, m, h, d), e.g. \"250ms\", \"5s\", \"1m30s\".",
            "pattern": "^\\s*([0-9]+\\s*(ns|us|µs|ms|s|sec|m|min|h|hr|d|days?|hours?|minutes?|seconds?)\\s*)+$"
        })
    }
}

/// A size in bytes written with an optional unit: `1024`, `512KiB`, `4MiB`, `1GiB`
/// (binary) or `500KB`, `4MB` (decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub const fn kib(n: u64) -> Self {
        Self(n * Self::KIB)
    }
    pub const fn mib(n: u64) -> Self {
        Self(n * Self::MIB)
    }
    pub const fn gib(n: u64) -> Self {
        Self(n * Self::GIB)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
    /// The size as `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

const UNITS: &[(&str, u64)] = &[
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("kB", 1_000),
    ("B", 1),
];

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let bad = || {
            format!(
                "invalid size {s:?}; write a whole number with an optional unit, e.g. \"4096\", \"512KiB\", \"4MiB\", \"1GiB\""
            )
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        let unit = unit.trim();
        let factor = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, f)| *f)
                .ok_or_else(bad)?
        };
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, factor) in &UNITS[..3] {
            if self.0 >= *factor && self.0.is_multiple_of(*factor) {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept a bare YAML integer too: `max_bytes: 1048576`.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "A size in bytes: a whole number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. \"512KiB\", \"4MiB\".",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9]+\\s*(B|kB|KB|MB|GB|KiB|MiB|GiB)?\\s*$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_round_trip() {
        for (text, ms) in [
            ("250ms", 250),
            ("5s", 5000),
            ("1m", 60_000),
            ("1m30s", 90_000),
        ] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.0.as_millis(), ms, "{text}");
            assert_eq!(d.to_string(), text);
        }
        assert!(
            "5 parsecs"
                .parse::<Duration>()
                .unwrap_err()
                .contains("\"5 parsecs\"")
        );
        assert!("".parse::<Duration>().is_err());
    }

    #[test]
    fn sizes_parse_and_print_round_trip() {
        for (text, n) in [
            ("512KiB", 512 * 1024),
            ("4MiB", 4 << 20),
            ("1GiB", 1 << 30),
            ("100", 100),
        ] {
            let s: ByteSize = text.parse().unwrap();
            assert_eq!(s.0, n, "{text}");
            assert_eq!(s.to_string(), text);
        }
        assert_eq!("4MB".parse::<ByteSize>().unwrap().0, 4_000_000);
        assert_eq!("4MB".parse::<ByteSize>().unwrap().to_string(), "4000000");
        assert!(
            "4 mebibytes"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("\"4 mebibytes\"")
        );
        assert!("-1KiB".parse::<ByteSize>().is_err());
        assert!("99999999999999999999GiB".parse::<ByteSize>().is_err());
        let yaml: ByteSize = serde_yaml::from_str("1048576").unwrap();
        assert_eq!(yaml, ByteSize::mib(1));
    }
}
