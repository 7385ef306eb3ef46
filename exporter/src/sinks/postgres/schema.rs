//! The spans table: its columns, indexes and the migration that brings a database to
//! them (create what is missing, check what exists). Not the rows (see `encoding`).
//!
//! Choices, so queries are natural and the round trip is exact:
//! - ids are `bytea` (16/8 raw bytes), not hex text: half the size in the table and in the
//!   unique index that every write checks, and no case mismatch (`'ABC'` vs `'abc'`) on
//!   lookup; query with `WHERE trace_id = decode('5b5b…', 'hex')`, show with
//!   `encode(trace_id, 'hex')`. A root span's `parent_span_id` is NULL.
//! - `start_time`/`end_time` are `timestamptz` for queries (microseconds: PostgreSQL has
//!   no finer type) and `*_unix_nano` keep the exact nanoseconds as `bigint`.
//! - unsigned 32-bit OTLP values (flags, dropped counts) are `bigint`: `integer` is
//!   signed and would not hold every u32.
//! - attribute lists, events, links and entity refs are `jsonb` in the typed JSON of the
//!   file sink (`encoding::attributes`): indexable (GIN) and queryable with `->>`, `@>`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::errors::{PostgresError, classify};

/// One column of the spans table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// The type as `format_type()` prints it, so the catalog check compares text.
    pub sql_type: &'static str,
    pub not_null: bool,
}

const fn col(name: &'static str, sql_type: &'static str) -> Column {
    Column {
        name,
        sql_type,
        not_null: false,
    }
}

const fn key(name: &'static str, sql_type: &'static str) -> Column {
    Column {
        name,
        sql_type,
        not_null: true,
    }
}

const BYTEA: &str = "bytea";
const TEXT: &str = "text";
const BIGINT: &str = "bigint";
const TIMESTAMPTZ: &str = "timestamp with time zone";
const JSONB: &str = "jsonb";

/// Every column, in the order the COPY rows carry them. A later version appends columns
/// here; the migration adds them to existing tables (nullable, so old rows stay valid).
pub const COLUMNS: [Column; 30] = [
    key("trace_id", BYTEA),
    key("span_id", BYTEA),
    col("parent_span_id", BYTEA),
    col("trace_state", TEXT),
    col("flags", BIGINT),
    col("name", TEXT),
    col("kind", TEXT),
    col("start_time", TIMESTAMPTZ),
    col("end_time", TIMESTAMPTZ),
    col("start_time_unix_nano", BIGINT),
    col("end_time_unix_nano", BIGINT),
    col("duration_ns", BIGINT),
    col("status_code", TEXT),
    col("status_message", TEXT),
    col("service_name", TEXT),
    col("attributes", JSONB),
    col("dropped_attributes_count", BIGINT),
    col("events", JSONB),
    col("dropped_events_count", BIGINT),
    col("links", JSONB),
    col("dropped_links_count", BIGINT),
    col("resource_attributes", JSONB),
    col("resource_dropped_attributes_count", BIGINT),
    col("resource_entity_refs", JSONB),
    col("resource_schema_url", TEXT),
    col("scope_name", TEXT),
    col("scope_version", TEXT),
    col("scope_attributes", JSONB),
    col("scope_dropped_attributes_count", BIGINT),
    col("scope_schema_url", TEXT),
];

/// Session-local table each batch is COPYed into before the one INSERT that skips rows
/// already there. Created once per connection; emptied at every commit.
pub const STAGING_TABLE: &str = "spansink_staging";

/// An index the sink creates: its name suffix, method and columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Index {
    pub suffix: &'static str,
    pub unique: bool,
    pub method: &'static str,
    pub columns: &'static [&'static str],
}

/// The unique key: a retried batch (or a span sent twice) inserts nothing new. It also
/// serves lookups by trace id (leading column), so there is no separate trace_id index.
pub const KEY_INDEX: Index = Index {
    suffix: "_trace_span_key",
    unique: true,
    method: "btree",
    columns: &["trace_id", "span_id"],
};

/// Indexes for the common queries; each one costs write time, so only these:
/// a service's spans over a time range, and any spans over a time range (BRIN: a few
/// pages for a whole table whose rows arrive roughly in time order, nearly free to keep).
pub const QUERY_INDEXES: [Index; 2] = [
    Index {
        suffix: "_service_start_idx",
        unique: false,
        method: "btree",
        columns: &["service_name", "start_time"],
    },
    Index {
        suffix: "_start_time_brin",
        unique: false,
        method: "brin",
        columns: &["start_time"],
    },
];

/// The target table, named safely for SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    schema: Option<String>,
    name: String,
}

impl Table {
    /// `name` must already be validated as `[schema.]table` of plain identifiers (the
    /// config validation does); quoting them anyway keeps keywords such as `user` usable.
    pub fn new(schema: Option<&str>, name: &str) -> Self {
        Self {
            schema: schema.map(str::to_string),
            name: name.to_string(),
        }
    }

    /// The schema part of `[schema.]table`, if named.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// `"schema"."table"` or `"table"`.
    pub fn qualified(&self) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{}\"", self.name),
            None => format!("\"{}\"", self.name),
        }
    }

    /// The name of one of the sink's indexes: the table name (shortened so the whole fits
    /// PostgreSQL's 63-byte limit, which would otherwise truncate it silently) + suffix.
    pub fn index_name(&self, index: &Index) -> String {
        let room = 63 - index.suffix.len();
        let stem: String = self.name.chars().take(room).collect();
        format!("{stem}{}", index.suffix)
    }

    fn create_index_sql(&self, index: &Index) -> String {
        format!(
            "CREATE {}INDEX IF NOT EXISTS \"{}\" ON {} USING {} ({})",
            if index.unique { "UNIQUE " } else { "" },
            self.index_name(index),
            self.qualified(),
            index.method,
            index.columns.join(", ")
        )
    }
}

/// `CREATE TABLE IF NOT EXISTS` with every column.
pub fn create_table_sql(table: &Table) -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (", table.qualified());
    for (i, c) in COLUMNS.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "{} {}", c.name, c.sql_type);
        if c.not_null {
            sql.push_str(" NOT NULL");
        }
    }
    sql.push(')');
    sql
}

/// The session's staging table: the same columns, no constraints or indexes (it only
/// ever holds one batch).
pub fn create_staging_sql() -> String {
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect();
    format!(
        "CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} ({}) ON COMMIT DELETE ROWS",
        columns.join(", ")
    )
}

/// Binary COPY of a batch into the staging table.
pub fn copy_sql() -> String {
    format!(
        "COPY {STAGING_TABLE} ({}) FROM STDIN (FORMAT binary)",
        column_list()
    )
}

/// Moves the staged batch into the table, skipping spans already there.
pub fn insert_sql(table: &Table) -> String {
    let columns = column_list();
    format!(
        "INSERT INTO {} ({columns}) SELECT {columns} FROM {STAGING_TABLE} ON CONFLICT (trace_id, span_id) DO NOTHING",
        table.qualified()
    )
}

fn column_list() -> String {
    COLUMNS.map(|c| c.name).join(", ")
}

/// What the catalog says about the table.
#[derive(Debug, Default)]
struct Existing {
    /// Column name -> `format_type()`.
    columns: BTreeMap<String, String>,
    /// (unique and not partial, key columns in order) of each index.
    indexes: Vec<(bool, Vec<String>)>,
}

impl Existing {
    fn has_index(&self, index: &Index) -> bool {
        self.indexes.iter().any(|(unique, columns)| {
            if index.unique {
                // ON CONFLICT (trace_id, span_id) accepts any unique index on exactly
                // these columns, in either order.
                let mut have: Vec<&str> = columns.iter().map(String::as_str).collect();
                let mut want = index.columns.to_vec();
                have.sort_unstable();
                want.sort_unstable();
                *unique && have == want
            } else {
                columns
                    .iter()
                    .map(String::as_str)
                    .eq(index.columns.iter().copied())
            }
        })
    }
}

/// Serialises migrations of one table across exporter replicas (concurrent `CREATE
/// TABLE IF NOT EXISTS` can fail on PostgreSQL's catalog unique index).
const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";

const COLUMNS_SQL: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
     FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped";

const INDEXES_SQL: &str = "SELECT i.indisunique AND i.indpred IS NULL, \
     ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n) \
     FROM pg_index i WHERE i.indrelid = to_regclass($1)";

async fn inspect(
    client: &tokio_postgres::Transaction<'_>,
    qualified: &str,
) -> Result<Option<Existing>, PostgresError> {
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified])
        .await
        .map_err(|e| classify("inspect the table", &e))?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let columns = client
        .query(COLUMNS_SQL, &[&qualified])
        .await
        .map_err(|e| classify("read the table's columns", &e))?
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, String>(1)))
        .collect();
    let indexes = client
        .query(INDEXES_SQL, &[&qualified])
        .await
        .map_err(|e| classify("read the table's indexes", &e))?
        .iter()
        .map(|row| (row.get::<_, bool>(0), row.get::<_, Vec<String>>(1)))
        .collect();
    Ok(Some(Existing { columns, indexes }))
}

const SCHEMA_EXISTS_SQL: &str = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)";

async fn schema_exists(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
) -> Result<bool, PostgresError> {
    let row = tx
        .query_one(SCHEMA_EXISTS_SQL, &[&schema])
        .await
        .map_err(|e| classify("inspect the schema", &e))?;
    Ok(row.get::<_, bool>(0))
}

/// Creates the table's schema when it is missing, so `create_table` works for
/// `tracing.spans` on a fresh database. Needs CREATE on the database; without it the
/// error names the schema and the grant. Under its own advisory lock because two tables
/// of one schema (two sinks, or replicas) would otherwise race on the catalog.
async fn create_schema_if_missing(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
) -> Result<bool, PostgresError> {
    if schema_exists(tx, schema).await? {
        return Ok(false);
    }
    tx.execute(LOCK_SQL, &[&format!("schema {schema}")])
        .await
        .map_err(|e| classify("lock the schema for migration", &e))?;
    match tx
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            Err(PostgresError::Schema(format!(
                "schema \"{schema}\" does not exist and this role may not create it; create it (CREATE SCHEMA \"{schema}\") or grant the role CREATE on the database"
            )))
        }
        Err(e) => Err(classify("create the schema", &e)),
    }
}

/// What a migration did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migration {
    pub created_schema: bool,
    pub created_table: bool,
    pub added_columns: Vec<&'static str>,
    pub created_indexes: Vec<String>,
    /// Query indexes missing while `create_table` is off (writes work; queries are slower).
    pub missing_indexes: Vec<String>,
}

/// Brings the table to [`COLUMNS`] and the indexes (and creates its schema when missing),
/// in one transaction under an advisory lock. Only what is missing is changed, so a role that may only INSERT works on a
/// table that is already complete. With `create` off nothing is changed: a missing
/// table, column or key index is a permanent error naming it. A column of another type
/// is always a permanent error (the sink will not rewrite a user's column). Indexes are
/// built with plain `CREATE INDEX`, which blocks writes to a large existing table while
/// it runs; create them beforehand (`CONCURRENTLY`) for such a table.
pub async fn migrate(
    client: &mut deadpool_postgres::Object,
    table: &Table,
    create: bool,
) -> Result<Migration, PostgresError> {
    let qualified = table.qualified();
    let tx = client
        .transaction()
        .await
        .map_err(|e| classify("begin the migration", &e))?;
    tx.execute(LOCK_SQL, &[&qualified])
        .await
        .map_err(|e| classify("lock the table for migration", &e))?;
    let mut done = Migration::default();
    let existing = match inspect(&tx, &qualified).await? {
        Some(existing) => existing,
        None if create => {
            if let Some(schema) = table.schema() {
                done.created_schema = create_schema_if_missing(&tx, schema).await?;
            }
            tx.batch_execute(&create_table_sql(table))
                .await
                .map_err(|e| classify("create the table", &e))?;
            done.created_table = true;
            inspect(&tx, &qualified).await?.unwrap_or_default()
        }
        None => {
            let what = match table.schema() {
                Some(schema) if !schema_exists(&tx, schema).await? => {
                    format!("schema \"{schema}\" (and table {qualified})")
                }
                _ => format!("table {qualified}"),
            };
            return Err(PostgresError::Schema(format!(
                "{what} does not exist; create it or set postgres.create_table: true"
            )));
        }
    };
    let mut wrong_types = Vec::new();
    let mut missing = Vec::new();
    for c in &COLUMNS {
        match existing.columns.get(c.name) {
            Some(found) if found != c.sql_type => wrong_types.push(format!(
                "{} is {found}, the sink writes {}",
                c.name, c.sql_type
            )),
            Some(_) => {}
            None => missing.push(c),
        }
    }
    if !wrong_types.is_empty() {
        return Err(PostgresError::Schema(format!(
            "table {qualified} has columns of other types ({}); alter them or point postgres.table at another table",
            wrong_types.join("; ")
        )));
    }
    if !missing.is_empty() && !create {
        return Err(PostgresError::Schema(format!(
            "table {qualified} lacks columns {}; add them or set postgres.create_table: true",
            missing
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for c in missing {
        tx.batch_execute(&format!(
            "ALTER TABLE {qualified} ADD COLUMN IF NOT EXISTS {} {}",
            c.name, c.sql_type
        ))
        .await
        .map_err(|e| classify("add a column", &e))?;
        done.added_columns.push(c.name);
    }
    for index in std::iter::once(&KEY_INDEX).chain(&QUERY_INDEXES) {
        if existing.has_index(index) {
            continue;
        }
        let name = table.index_name(index);
        if create {
            tx.batch_execute(&table.create_index_sql(index))
                .await
                .map_err(|e| classify("create an index", &e))?;
            done.created_indexes.push(name);
        } else if index.unique {
            return Err(PostgresError::Schema(format!(
                "table {qualified} has no unique index on (trace_id, span_id), which keeps retried batches from duplicating rows; create one or set postgres.create_table: true"
            )));
        } else {
            done.missing_indexes.push(name);
        }
    }
    tx.commit()
        .await
        .map_err(|e| classify("commit the migration", &e))?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_are_unique_plain_identifiers() {
        let mut names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COLUMNS.len());
        for name in names {
            assert!(
                spansink_config::PostgresSinkConfig::is_identifier(name),
                "{name}"
            );
        }
    }

    #[test]
    fn statements_quote_the_table_and_list_every_column() {
        let table = Table::new(Some("tracing"), "spans");
        assert_eq!(table.qualified(), "\"tracing\".\"spans\"");
        let create = create_table_sql(&table);
        assert!(create.starts_with("CREATE TABLE IF NOT EXISTS \"tracing\".\"spans\" (trace_id bytea NOT NULL, span_id bytea NOT NULL, parent_span_id bytea, "), "{create}");
        assert!(
            create.contains("start_time timestamp with time zone, "),
            "{create}"
        );
        assert!(create.contains("attributes jsonb, "), "{create}");
        let insert = insert_sql(&table);
        assert!(insert.starts_with("INSERT INTO \"tracing\".\"spans\" (trace_id, span_id, "));
        assert!(
            insert.ends_with("FROM spansink_staging ON CONFLICT (trace_id, span_id) DO NOTHING")
        );
        assert_eq!(insert.matches("scope_schema_url").count(), 2);
        assert!(copy_sql().ends_with("FROM STDIN (FORMAT binary)"));
        assert!(create_staging_sql().ends_with("ON COMMIT DELETE ROWS"));
    }

    #[test]
    fn index_names_fit_the_identifier_limit() {
        let long = "t".repeat(63);
        let table = Table::new(None, &long);
        for index in std::iter::once(&KEY_INDEX).chain(&QUERY_INDEXES) {
            let name = table.index_name(index);
            assert!(name.len() <= 63, "{name}");
            assert!(name.ends_with(index.suffix));
        }
        assert_eq!(
            Table::new(None, "spans").index_name(&KEY_INDEX),
            "spans_trace_span_key"
        );
        assert_eq!(
            Table::new(None, "spans").create_index_sql(&QUERY_INDEXES[1]),
            "CREATE INDEX IF NOT EXISTS \"spans_start_time_brin\" ON \"spans\" USING brin (start_time)"
        );
    }

    #[test]
    fn an_equivalent_unique_index_counts_whatever_its_name_and_order() {
        let existing = Existing {
            columns: BTreeMap::new(),
            indexes: vec![(true, vec!["span_id".into(), "trace_id".into()])],
        };
        assert!(existing.has_index(&KEY_INDEX));
        assert!(!existing.has_index(&QUERY_INDEXES[0]));
        let not_unique = Existing {
            columns: BTreeMap::new(),
            indexes: vec![(false, vec!["trace_id".into(), "span_id".into()])],
        };
        assert!(!not_unique.has_index(&KEY_INDEX));
    }
}
