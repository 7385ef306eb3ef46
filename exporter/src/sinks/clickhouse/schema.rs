//! The table the ClickHouse sink creates: its DDL for current servers (DateTime64, Map,
//! codecs, skip indexes) and a plain one for servers older than 22.3. Not the rows.
//!
//! Both tables store exactly the columns of the row format (see `encoding`), so the same
//! rows fit either, and derive the query helpers from them on the server (MATERIALIZED:
//! computed at insert, never sent, not in `SELECT *`): `start_time`/`end_time` from the
//! exact nanosecond integers, and on current servers `attributes_map` and
//! `resource_attributes_map` (Map(String, String), strings as they are, other values as
//! their JSON text) from the typed JSON text, for `attributes_map['http.route']` queries.

/// The first version whose features the current DDL uses throughout (DateTime64,
/// Map without experimental flags, `fromUnixTimestamp64Nano`, JSON functions,
/// `non_replicated_deduplication_window`): the 22.3 LTS.
pub const MODERN_SINCE: (u32, u32) = (22, 3);
/// Table TTL clauses exist since 19.6.
pub const TTL_SINCE: (u32, u32) = (19, 6);

/// The stored columns, in row order, with the type each has in the current DDL and in
/// the plain one.
const COLUMNS: [(&str, &str, &str); 28] = [
    (
        "service_name",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
    ("trace_id", "String CODEC(ZSTD(1))", "String"),
    ("span_id", "String CODEC(ZSTD(1))", "String"),
    ("parent_span_id", "String CODEC(ZSTD(1))", "String"),
    ("trace_state", "String CODEC(ZSTD(1))", "String"),
    ("flags", "UInt32 CODEC(ZSTD(1))", "UInt32"),
    ("name", "LowCardinality(String) CODEC(ZSTD(1))", "String"),
    // Names, not Enum8: a value outside the OTLP enum is written as its number and must
    // not fail the whole batch.
    ("kind", "LowCardinality(String) CODEC(ZSTD(1))", "String"),
    (
        "start_time_unix_nano",
        "UInt64 CODEC(Delta, ZSTD(1))",
        "UInt64",
    ),
    (
        "end_time_unix_nano",
        "UInt64 CODEC(Delta, ZSTD(1))",
        "UInt64",
    ),
    ("duration_ns", "UInt64 CODEC(T64, ZSTD(1))", "UInt64"),
    (
        "status_code",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
    ("status_message", "String CODEC(ZSTD(1))", "String"),
    ("attributes", "String CODEC(ZSTD(1))", "String"),
    (
        "dropped_attributes_count",
        "UInt32 CODEC(ZSTD(1))",
        "UInt32",
    ),
    ("events", "String CODEC(ZSTD(1))", "String"),
    ("dropped_events_count", "UInt32 CODEC(ZSTD(1))", "UInt32"),
    ("links", "String CODEC(ZSTD(1))", "String"),
    ("dropped_links_count", "UInt32 CODEC(ZSTD(1))", "UInt32"),
    ("resource_attributes", "String CODEC(ZSTD(1))", "String"),
    (
        "resource_dropped_attributes_count",
        "UInt32 CODEC(ZSTD(1))",
        "UInt32",
    ),
    ("resource_entity_refs", "String CODEC(ZSTD(1))", "String"),
    (
        "resource_schema_url",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
    (
        "scope_name",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
    (
        "scope_version",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
    ("scope_attributes", "String CODEC(ZSTD(1))", "String"),
    (
        "scope_dropped_attributes_count",
        "UInt32 CODEC(ZSTD(1))",
        "UInt32",
    ),
    (
        "scope_schema_url",
        "LowCardinality(String) CODEC(ZSTD(1))",
        "String",
    ),
];

/// Names of the stored columns, in row order.
pub fn column_names() -> impl Iterator<Item = &'static str> {
    COLUMNS.iter().map(|(name, _, _)| *name)
}

/// The stored columns with the type of their value in a row (`String`, `UInt32`,
/// `UInt64`: the plain DDL's types), in row order.
pub fn stored_columns() -> impl Iterator<Item = (&'static str, &'static str)> {
    COLUMNS.iter().map(|(name, _, plain)| (*name, *plain))
}

/// The (name, type, default kind) of each column in a `DESCRIBE TABLE ... FORMAT
/// TabSeparated` answer.
pub fn described_columns(describe: &str) -> Vec<(String, String, String)> {
    describe
        .lines()
        .map(|line| {
            let mut fields = line.split('\t').map(str::to_string);
            let mut next = || fields.next().unwrap_or_default();
            (next(), next(), next())
        })
        .collect()
}

/// Why a table's columns (as `DESCRIBE TABLE` gives them: name, type, default kind)
/// cannot take `RowBinary` rows, naming the first column that does not fit; `None` when
/// every stored column is there with a type whose binary form is the row's. Other
/// columns of the table are left to their defaults, as with JSON rows.
pub fn row_binary_misfit(table: &[(String, String, String)]) -> Option<String> {
    for (name, wire_type) in stored_columns() {
        let Some((_, column_type, default_kind)) = table.iter().find(|(n, _, _)| n == name) else {
            return Some(format!("the table has no column {name}"));
        };
        if matches!(default_kind.as_str(), "MATERIALIZED" | "ALIAS") {
            return Some(format!(
                "column {name} is {default_kind}, so it cannot be inserted"
            ));
        }
        let fits = column_type == wire_type
            || (wire_type == "String" && column_type == "LowCardinality(String)");
        if !fits {
            return Some(format!(
                "column {name} is {column_type}; RowBinary rows carry it as {wire_type}"
            ));
        }
    }
    None
}

/// The column list of an insert: every stored column, backquoted, in row order.
pub fn column_list() -> String {
    let names: Vec<String> = column_names().map(|n| format!("`{n}`")).collect();
    format!("({})", names.join(", "))
}

/// `db`.`table`, quoted (the names are validated identifiers; quoting keeps keywords
/// such as `default` usable).
pub fn qualified_name(database: &str, table: &str) -> String {
    format!("`{database}`.`{table}`")
}

/// A server version as `(major, minor)` from `SELECT version()` (`18.16.1`,
/// `24.3.2.23`).
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `CREATE DATABASE IF NOT EXISTS`.
pub fn create_database(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS `{database}`")
}

/// The table for current servers: MergeTree partitioned by day, ordered by service,
/// span name and second (the usual filters, and similar rows together compress well),
/// a bloom filter on `trace_id` for trace lookups, and an optional TTL. A retried insert
/// of the same batch (e.g. after a timeout whose insert did commit) is recognised by its
/// block hash and not stored twice (`non_replicated_deduplication_window`; replicated
/// tables do that by default).
pub fn modern_table(database: &str, table: &str, ttl_seconds: Option<u64>) -> String {
    let mut ddl = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n",
        qualified_name(database, table)
    );
    for (name, modern, _) in COLUMNS {
        ddl.push_str(&format!("  `{name}` {modern},\n"));
    }
    ddl.push_str(
        "  `start_time` DateTime64(9, 'UTC') MATERIALIZED fromUnixTimestamp64Nano(toInt64(start_time_unix_nano), 'UTC') CODEC(Delta, ZSTD(1)),\n\
         \x20 `end_time` DateTime64(9, 'UTC') MATERIALIZED fromUnixTimestamp64Nano(toInt64(end_time_unix_nano), 'UTC') CODEC(Delta, ZSTD(1)),\n",
    );
    for (map, source) in [
        ("attributes_map", "attributes"),
        ("resource_attributes_map", "resource_attributes"),
    ] {
        ddl.push_str(&format!(
            "  `{map}` Map(LowCardinality(String), String) MATERIALIZED CAST(arrayMap(kv -> (kv.1, if(JSONType(kv.2) = 'String', JSONExtractString(kv.2), kv.2)), JSONExtractKeysAndValuesRaw({source})), 'Map(LowCardinality(String), String)') CODEC(ZSTD(1)),\n"
        ));
    }
    ddl.push_str(
        "  INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,\n\
         \x20 INDEX idx_duration duration_ns TYPE minmax GRANULARITY 1\n\
         ) ENGINE = MergeTree\n\
         PARTITION BY toDate(start_time)\n\
         ORDER BY (service_name, name, toDateTime(start_time))\n",
    );
    if let Some(seconds) = ttl_seconds {
        ddl.push_str(&format!(
            "TTL toDateTime(start_time) + toIntervalSecond({seconds})\n"
        ));
    }
    ddl.push_str("SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000");
    ddl
}

/// The table for servers older than 22.3 (down to 18.x): the same stored columns in
/// plain types, `start_time`/`end_time` as DateTime (seconds), TTL where the server has
/// it (19.6+).
pub fn plain_table(database: &str, table: &str, ttl_seconds: Option<u64>) -> String {
    let mut ddl = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n",
        qualified_name(database, table)
    );
    for (name, _, plain) in COLUMNS {
        ddl.push_str(&format!("  `{name}` {plain},\n"));
    }
    ddl.push_str(
        "  `start_time` DateTime MATERIALIZED toDateTime(intDiv(start_time_unix_nano, 1000000000)),\n\
         \x20 `end_time` DateTime MATERIALIZED toDateTime(intDiv(end_time_unix_nano, 1000000000))\n\
         ) ENGINE = MergeTree\n\
         PARTITION BY toDate(start_time)\n\
         ORDER BY (service_name, name, start_time)\n",
    );
    if let Some(seconds) = ttl_seconds {
        ddl.push_str(&format!("TTL start_time + toIntervalSecond({seconds})\n"));
    }
    ddl.push_str("SETTINGS index_granularity = 8192");
    ddl
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::FIELDS;

    #[test]
    fn the_tables_store_exactly_the_row_fields() {
        assert_eq!(column_names().collect::<Vec<_>>(), FIELDS.to_vec());
    }

    #[test]
    fn row_binary_fits_the_created_tables_and_names_what_does_not() {
        let described =
            |types: &dyn Fn(&str, &str) -> (String, String)| -> Vec<(String, String, String)> {
                COLUMNS
                    .iter()
                    .map(|(name, _, plain)| {
                        let (t, kind) = types(name, plain);
                        (name.to_string(), t, kind)
                    })
                    .collect()
            };
        // Both created layouts (codecs are not part of DESCRIBE's type).
        let plain = described(&|_, plain| (plain.to_string(), String::new()));
        assert_eq!(row_binary_misfit(&plain), None);
        let modern = described(&|name, plain| {
            let low = matches!(name, "service_name" | "name" | "kind");
            (
                if low {
                    "LowCardinality(String)".into()
                } else {
                    plain.to_string()
                },
                String::new(),
            )
        });
        assert_eq!(row_binary_misfit(&modern), None);
        let wide = described(&|name, plain| {
            (
                if name == "flags" {
                    "UInt64".into()
                } else {
                    plain.to_string()
                },
                String::new(),
            )
        });
        assert_eq!(
            row_binary_misfit(&wide).unwrap(),
            "column flags is UInt64; RowBinary rows carry it as UInt32"
        );
        let mut missing = plain.clone();
        missing.retain(|(n, _, _)| n != "links");
        assert_eq!(
            row_binary_misfit(&missing).unwrap(),
            "the table has no column links"
        );
        assert!(column_list().starts_with("(`service_name`, `trace_id`,"));
        assert_eq!(
            described_columns(
                "flags\tUInt32\t\t\t\t\t\nstart_time\tDateTime\tMATERIALIZED\ttoDateTime(x)\n"
            ),
            [
                ("flags".to_string(), "UInt32".to_string(), String::new()),
                (
                    "start_time".to_string(),
                    "DateTime".to_string(),
                    "MATERIALIZED".to_string()
                ),
            ]
        );
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("18.16.1\n"), Some((18, 16)));
        assert_eq!(parse_version("24.3.2.23"), Some((24, 3)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("26.9.2.1").unwrap() >= MODERN_SINCE);
        assert!(parse_version("18.16.1").unwrap() < TTL_SINCE);
    }

    #[test]
    fn ttl_appears_only_when_asked() {
        assert!(!modern_table("db", "t", None).contains("TTL"));
        assert!(
            modern_table("db", "t", Some(86_400))
                .contains("TTL toDateTime(start_time) + toIntervalSecond(86400)")
        );
        assert!(plain_table("db", "t", Some(60)).contains("TTL start_time + toIntervalSecond(60)"));
        assert!(
            modern_table("default", "spans", None)
                .starts_with("CREATE TABLE IF NOT EXISTS `default`.`spans` (")
        );
    }
}
