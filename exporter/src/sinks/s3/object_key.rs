//! Object keys of the S3 sink: `<prefix><time partition><UUIDv7><extension>`, the time
//! partition expanded in UTC from `key_template`. Not the upload itself.

use chrono::{DateTime, Utc};
use spansink_config::TimeTemplate;
use uuid::Uuid;

/// Builds the key of each new object.
#[derive(Debug, Clone)]
pub struct ObjectKeys {
    prefix: String,
    template: TimeTemplate,
    extension: &'static str,
}

impl ObjectKeys {
    pub fn new(prefix: &str, template: &str, extension: &'static str) -> Result<Self, String> {
        Ok(Self {
            prefix: prefix.to_string(),
            template: TimeTemplate::parse(template).map_err(|e| format!("key_template {e}"))?,
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
        let keys = ObjectKeys::new("", "traces/year=%Y/month=%m/day=%d/hour=%H/", ".x").unwrap();
        assert!(
            keys.next(at())
                .starts_with("traces/year=2026/month=03/day=07/hour=04/")
        );
    }

    #[test]
    fn unsupported_specifiers_are_refused() {
        for bad in ["x/%Q/", "x/%"] {
            let err = ObjectKeys::new("", bad, ".x").unwrap_err();
            assert!(err.starts_with("key_template \"x/%"), "{err}");
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
