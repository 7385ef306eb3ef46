//! A sink's `transform` policy: attribute rules (set, insert, update, delete, rename, hash,
//! redact, truncate) and dropping span events and links, applied in order to every request
//! the sink takes. Only the settings and their checks live here; the exporter's
//! `chain::transform` applies them.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::ByteSize;
use crate::validate::ValidationError;

/// Rewrites the spans this sink takes, after its `filter` and before its queue: the queue
/// (a durable one too), the batches and the backend only ever hold the transformed spans,
/// so redacted values never reach the disk or the backend. A fallback sink's own
/// transform is applied to the batches handed to it as well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// The rules, applied in order: a rule sees what the rules before it made of an
    /// attribute (a `rename` then a `hash` of the new key hashes the renamed attribute).
    pub rules: Vec<TransformRule>,
}

/// One rule. `action` says what it does; each action takes only the fields listed with
/// it (others are refused):
/// `set`, `insert`, `update`: `key`, `value`, `scope`;
/// `delete`: `key`/`keys`/`key_regex`, `scope`;
/// `rename`: `key`, `to`, `scope`;
/// `hash`: `key`/`keys`/`key_regex`, `salt_env`, `scope`;
/// `redact`: `key`/`keys`/`key_regex`, `patterns`, `regex`, `replacement`, `scope`;
/// `truncate`: `max_bytes`, optionally `key`/`keys`/`key_regex`, `scope`;
/// `drop_events`, `drop_links`: nothing else. Every rule may have a `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformRule {
    /// What the rule does.
    pub action: TransformAction,
    /// The rule's name in the `rule` label of `spansink_transform_changes_total` and in
    /// logs: lowercase letters, digits, `-`, `_` or `.`. Default: its index in `rules`
    /// (`0`, `1`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whose attributes the rule changes. Default: `span`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<AttributeScope>,
    /// The attribute key: the one `set`, `insert`, `update` write and `rename` renames;
    /// for `delete`, `hash`, `redact` and `truncate`, one more key to select (with `keys`
    /// and `key_regex`). Compared exactly, e.g. `enduser.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `delete`, `hash`, `redact`, `truncate`: the attributes with any of these keys
    /// (exact), besides `key` and `key_regex`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// `delete`, `hash`, `redact`, `truncate`: the attributes whose key matches any of
    /// these regular expressions (Rust `regex` syntax; a match anywhere in the key counts
    /// unless anchored, e.g. `"(?i)password|secret"`, `"^http\\.request\\.header\\."`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_regex: Vec<String>,
    /// `set`, `insert`, `update`: the value written, as typed in YAML: a string, an
    /// integer, a number with a fraction (`1.5`) or a boolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<AttributeValue>,
    /// `rename`: the new key. An attribute that already has it is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `hash`: name of the environment variable holding the salt, e.g.
    /// `SPANSINK_HASH_SALT` (fill it from a Secret). The value becomes the lowercase hex
    /// SHA-256 of the salt's bytes followed by the value's bytes (a string as UTF-8, a
    /// number or boolean as its text, bytes as they are, an array or map as its protobuf
    /// encoding), so equal values hash alike and can still be joined on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt_env: Option<String>,
    /// `redact`: built-in value patterns whose matches are replaced: `email`,
    /// `card_number` (13-19 digits, spaces or dashes between them, Luhn-checked) and
    /// `bearer_token` (`Bearer <token>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<RedactionPattern>,
    /// `redact`: more value patterns, as regular expressions (Rust `regex` syntax), e.g.
    /// `"token=[^&]+"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regex: Vec<String>,
    /// `redact`: the text written instead. With `patterns` or `regex`, each match in a
    /// string value (strings in arrays and maps included) is replaced and the rest kept;
    /// without, the whole value of each selected attribute becomes this string.
    /// Default: `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// `truncate`: string and bytes values longer than this are cut to at most this many
    /// bytes (a string at a UTF-8 character boundary), strings in arrays and maps
    /// included. Without `key`, `keys` or `key_regex`, every attribute of the scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<ByteSize>,
}

/// What a transform rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransformAction {
    /// Writes `key: value`, replacing the value if the attribute exists.
    Set,
    /// Writes `key: value` only if the attribute does not exist.
    Insert,
    /// Replaces the value of `key` only if the attribute exists.
    Update,
    /// Removes the selected attributes.
    Delete,
    /// Renames attribute `key` to `to`.
    Rename,
    /// Replaces the selected values by their salted SHA-256 (hex).
    Hash,
    /// Replaces sensitive values, or the parts of them that match patterns.
    Redact,
    /// Cuts long string and bytes values to `max_bytes`.
    Truncate,
    /// Removes every span's events (added to its `dropped_events_count`).
    DropEvents,
    /// Removes every span's links (added to its `dropped_links_count`).
    DropLinks,
}

impl TransformAction {
    /// The name written in YAML (and in the `action` metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Rename => "rename",
            Self::Hash => "hash",
            Self::Redact => "redact",
            Self::Truncate => "truncate",
            Self::DropEvents => "drop_events",
            Self::DropLinks => "drop_links",
        }
    }
}

/// Whose attributes a rule changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttributeScope {
    /// Each span's attributes.
    #[default]
    Span,
    /// The resource's attributes (`service.name`, `k8s.pod.name`, ...).
    Resource,
    /// The instrumentation scope's attributes.
    Scope,
    /// The attributes of each span event (e.g. `exception.message`).
    Event,
    /// The attributes of each span link.
    Link,
}

/// A built-in pattern of sensitive text for `redact`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedactionPattern {
    /// An e-mail address, e.g. `jane.doe@example.com`.
    Email,
    /// A payment card number: 13 to 19 digits, optionally grouped by spaces or dashes,
    /// that passes the Luhn check (so order numbers and timestamps are left alone).
    CardNumber,
    /// An HTTP bearer credential, `Bearer <token>` (any case), e.g. a JWT.
    BearerToken,
}

impl RedactionPattern {
    /// The regular expression that finds candidates (`card_number` matches are then
    /// Luhn-checked).
    pub fn regex(self) -> &'static str {
        match self {
            Self::Email => r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
            Self::CardNumber => r"\b\d(?:[ \-]?\d){12,18}\b",
            Self::BearerToken => r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*",
        }
    }
}

/// An attribute value written in the config: a string, an integer, a double or a boolean.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    String(String),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl Serialize for AttributeValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::String(v) => s.serialize_str(v),
            Self::Int(v) => s.serialize_i64(*v),
            Self::Double(v) => s.serialize_f64(*v),
            Self::Bool(v) => s.serialize_bool(*v),
        }
    }
}

impl<'de> Deserialize<'de> for AttributeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl Visitor<'_> for ValueVisitor {
            type Value = AttributeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, an integer, a number or a boolean (not a list or a map)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(AttributeValue::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(AttributeValue::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v).map(AttributeValue::Int).map_err(|_| {
                    E::custom(format!(
                        "{v} does not fit an attribute's 64-bit signed integer; quote it to write a string"
                    ))
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(AttributeValue::Double(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AttributeValue::String(v.to_string()))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

impl JsonSchema for AttributeValue {
    fn schema_name() -> Cow<'static, str> {
        "AttributeValue".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // No single type: the API server keeps any scalar as written (structural schemas
        // allow an untyped node only with preserve-unknown-fields); `validate` refuses
        // lists and maps.
        json_schema!({
            "description": "An attribute value: a string, an integer, a number with a fraction (1.5) or a boolean.",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

/// The text `redact` writes when `replacement` is not set.
pub const DEFAULT_REPLACEMENT: &str = "***";

/// Where a rule's regular expressions are, for compiling them with their field path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegexField {
    KeyRegex,
    Regex,
}

impl RegexField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyRegex => "key_regex",
            Self::Regex => "regex",
        }
    }
}

impl TransformRule {
    /// The scope, defaulted.
    pub fn scope(&self) -> AttributeScope {
        self.scope.unwrap_or_default()
    }

    /// The `rule` metric label: the name, or the index in `rules`.
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| index.to_string())
    }

    /// `redact`'s replacement, defaulted.
    pub fn replacement(&self) -> &str {
        self.replacement.as_deref().unwrap_or(DEFAULT_REPLACEMENT)
    }

    /// The exact keys a selecting action (`delete`, `hash`, `redact`, `truncate`)
    /// selects: `key` and `keys`.
    pub fn selected_keys(&self) -> impl Iterator<Item = &str> {
        self.key.iter().chain(&self.keys).map(String::as_str)
    }

    /// Whether the rule selects attributes by key at all (`key`, `keys` or `key_regex`).
    pub fn has_selector(&self) -> bool {
        self.key.is_some() || !self.keys.is_empty() || !self.key_regex.is_empty()
    }

    /// The fields that are set, by their YAML name, besides `action`, `name` and `scope`.
    fn set_fields(&self) -> Vec<&'static str> {
        [
            ("key", self.key.is_some()),
            ("keys", !self.keys.is_empty()),
            ("key_regex", !self.key_regex.is_empty()),
            ("value", self.value.is_some()),
            ("to", self.to.is_some()),
            ("salt_env", self.salt_env.is_some()),
            ("patterns", !self.patterns.is_empty()),
            ("regex", !self.regex.is_empty()),
            ("replacement", self.replacement.is_some()),
            ("max_bytes", self.max_bytes.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| name)
        .collect()
    }
}

/// The fields action `action` takes besides `action`, `name` and `scope`.
fn allowed_fields(action: TransformAction) -> &'static [&'static str] {
    use TransformAction::*;
    const SELECTOR: &[&str] = &["key", "keys", "key_regex"];
    match action {
        Set | Insert | Update => &["key", "value"],
        Delete => SELECTOR,
        Rename => &["key", "to"],
        Hash => &["key", "keys", "key_regex", "salt_env"],
        Redact => &[
            "key",
            "keys",
            "key_regex",
            "patterns",
            "regex",
            "replacement",
        ],
        Truncate => &["key", "keys", "key_regex", "max_bytes"],
        DropEvents | DropLinks => &[],
    }
}

impl TransformConfig {
    /// Every problem of these rules, with paths under `path` (e.g.
    /// `sinks.main.transform`): `sinks.main.transform.rules[2].regex[0]: ...`.
    pub fn problems(&self, path: &str) -> Vec<ValidationError> {
        let mut out = Vec::new();
        let mut error = |path: String, message: String| {
            out.push(ValidationError { path, message });
        };
        if self.rules.is_empty() {
            error(
                format!("{path}.rules"),
                "set at least one rule (an empty transform does nothing)".into(),
            );
        }
        let mut names = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let path = format!("{path}.rules[{i}]");
            rule_problems(rule, &path, &mut error);
            if let Some(name) = &rule.name
                && !names.insert(name.as_str())
            {
                error(
                    format!("{path}.name"),
                    format!("{name:?} names an earlier rule too; rule names must be unique"),
                );
            }
        }
        out
    }
}

fn rule_problems(rule: &TransformRule, path: &str, error: &mut impl FnMut(String, String)) {
    use TransformAction::*;
    let action = rule.action.as_str();
    if let Some(name) = &rule.name {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !ok {
            error(
                format!("{path}.name"),
                format!(
                    "{name:?} must be 1-63 lowercase letters, digits, '-', '_' or '.' (it is a metric label)"
                ),
            );
        }
    }
    let allowed = allowed_fields(rule.action);
    for field in rule.set_fields() {
        if !allowed.contains(&field) {
            error(
                format!("{path}.{field}"),
                format!(
                    "is not used by action {action}{}",
                    if allowed.is_empty() {
                        " (it takes no other field)".to_string()
                    } else {
                        format!(" (it takes {})", allowed.join(", "))
                    }
                ),
            );
        }
    }
    if matches!(rule.action, DropEvents | DropLinks) && rule.scope.is_some() {
        error(
            format!("{path}.scope"),
            format!("is not used by action {action}: it applies to every span"),
        );
    }
    let mut required = |field: &str, set: bool, example: &str| {
        if !set {
            error(
                format!("{path}.{field}"),
                format!("is required by action {action}, e.g. {example}"),
            );
        }
    };
    match rule.action {
        Set | Insert | Update => {
            required("key", rule.key.is_some(), "key: deployment.environment");
            required("value", rule.value.is_some(), "value: production");
        }
        Rename => {
            required("key", rule.key.is_some(), "key: user_id");
            required("to", rule.to.is_some(), "to: enduser.id");
        }
        Delete | Hash => required(
            "keys",
            rule.has_selector(),
            "keys: [enduser.id] (or key, key_regex)",
        ),
        Redact => {
            if !rule.has_selector() && rule.patterns.is_empty() && rule.regex.is_empty() {
                error(
                    path.to_string(),
                    "action redact needs what to redact: keys (or key, key_regex) for whole values, patterns or regex for parts of values".into(),
                );
            }
        }
        Truncate => required("max_bytes", rule.max_bytes.is_some(), "max_bytes: 256"),
        DropEvents | DropLinks => {}
    }
    if rule.action == Hash {
        match rule.salt_env.as_deref() {
            None => error(
                format!("{path}.salt_env"),
                "is required by action hash: name the environment variable holding the salt, e.g. SPANSINK_HASH_SALT".into(),
            ),
            Some(name) => {
                let ok = !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    error(
                        format!("{path}.salt_env"),
                        format!(
                            "{name:?} is not an environment variable name (letters, digits and '_', e.g. SPANSINK_HASH_SALT)"
                        ),
                    );
                }
            }
        }
    }
    for (field, key) in [("key", &rule.key), ("to", &rule.to)] {
        if key.as_deref() == Some("") {
            error(format!("{path}.{field}"), "must not be empty".into());
        }
    }
    for (j, key) in rule.keys.iter().enumerate() {
        if key.is_empty() {
            error(format!("{path}.keys[{j}]"), "must not be empty".into());
        }
    }
    if rule.action == Rename && rule.key.is_some() && rule.key == rule.to {
        error(
            format!("{path}.to"),
            "is the same key as `key`: the rule would do nothing".into(),
        );
    }
    if rule.max_bytes.is_some_and(|b| b.0 == 0) {
        error(
            format!("{path}.max_bytes"),
            "must be greater than zero (delete the attributes instead)".into(),
        );
    }
    if let Some(AttributeValue::Double(d)) = &rule.value
        && !d.is_finite()
    {
        error(
            format!("{path}.value"),
            format!("{d} is not a finite number"),
        );
    }
    for (field, sources) in [
        (RegexField::KeyRegex, &rule.key_regex),
        (RegexField::Regex, &rule.regex),
    ] {
        for (j, source) in sources.iter().enumerate() {
            if let Err(message) = compile_regex(source) {
                error(format!("{path}.{}[{j}]", field.as_str()), message);
            }
        }
    }
}

/// Compiles a user's regular expression the way the exporter does, with a message that
/// says what is wrong.
pub fn compile_regex(source: &str) -> Result<regex::Regex, String> {
    if source.is_empty() {
        return Err("must not be empty (it would match everything)".into());
    }
    regex::Regex::new(source).map_err(|e| {
        // The regex crate's messages span several lines (the pattern, a caret, the
        // reason); one line reads better in a list of problems and in a status condition.
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        format!("{source:?} is not a valid regular expression: {reason}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExporterConfig;

    fn problems(rules_yaml: &str) -> Vec<String> {
        let yaml = format!(
            "sinks:\n  main:\n    blackhole: {{}}\n    transform:\n      rules:\n{rules_yaml}"
        );
        let config: ExporterConfig = serde_yaml::from_str(&yaml).expect("test YAML parses");
        match crate::validate(&config) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_action_in_its_documented_form_passes() {
        let rules = r#"
        - {action: set, scope: resource, key: deployment.environment, value: production}
        - {action: insert, key: retries, value: 3}
        - {action: update, scope: scope, key: ratio, value: 1.5}
        - {action: set, key: sampled, value: true}
        - {action: delete, keys: [internal.debug], key_regex: ["^tmp\\."]}
        - {action: rename, key: user_id, to: enduser.id}
        - {action: hash, keys: [enduser.id], salt_env: SPANSINK_HASH_SALT, name: pseudonymize}
        - {action: redact, keys: [http.request.header.authorization]}
        - {action: redact, scope: event, patterns: [email, card_number, bearer_token], regex: ["token=[^&]+"], replacement: "[redacted]"}
        - {action: truncate, max_bytes: 256}
        - {action: truncate, key: db.statement, max_bytes: 4KiB}
        - {action: drop_events}
        - {action: drop_links}
"#;
        assert_eq!(problems(rules), Vec::<String>::new());
        let config: ExporterConfig = serde_yaml::from_str(&format!(
            "sinks:\n  main:\n    blackhole: {{}}\n    transform:\n      rules:\n{rules}"
        ))
        .unwrap();
        let transform = config.sinks["main"].transform.as_ref().unwrap();
        assert_eq!(
            transform.rules[0].value,
            Some(AttributeValue::String("production".into()))
        );
        assert_eq!(transform.rules[1].value, Some(AttributeValue::Int(3)));
        assert_eq!(transform.rules[2].value, Some(AttributeValue::Double(1.5)));
        assert_eq!(transform.rules[3].value, Some(AttributeValue::Bool(true)));
        assert_eq!(transform.rules[10].max_bytes, Some(ByteSize::kib(4)));
        assert_eq!(transform.rules[6].label(6), "pseudonymize");
        assert_eq!(transform.rules[5].label(5), "5");
        // The canonical form round-trips (the operator renders it into a ConfigMap).
        let again = ExporterConfig::from_yaml(&config.to_yaml()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn a_bad_regex_is_named_by_rule_and_position() {
        let errs = problems(
            "        - {action: set, key: a, value: b}\n        - {action: delete, key: x}\n        - {action: redact, regex: ['ok', '(unclosed'], key_regex: ['[z-a]']}\n",
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "sinks.main.transform.rules[2].key_regex[0]: \"[z-a]\" is not a valid regular expression: "
            ),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with(
                "sinks.main.transform.rules[2].regex[1]: \"(unclosed\" is not a valid regular expression: unclosed group"
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn required_and_foreign_fields_are_named() {
        let errs = problems(
            "        - {action: set, key: a}\n        - {action: hash, keys: [a]}\n        - {action: rename, key: a, to: a}\n        - {action: delete}\n        - {action: drop_events, scope: span, key: a}\n        - {action: truncate, max_bytes: 0, salt_env: X}\n        - {action: redact}\n        - {action: hash, key: a, salt_env: 1BAD}\n",
        );
        let expected = [
            "sinks.main.transform.rules[0].value: is required by action set, e.g. value: production",
            "sinks.main.transform.rules[1].salt_env: is required by action hash: name the environment variable holding the salt, e.g. SPANSINK_HASH_SALT",
            "sinks.main.transform.rules[2].to: is the same key as `key`: the rule would do nothing",
            "sinks.main.transform.rules[3].keys: is required by action delete, e.g. keys: [enduser.id] (or key, key_regex)",
            "sinks.main.transform.rules[4].key: is not used by action drop_events (it takes no other field)",
            "sinks.main.transform.rules[4].scope: is not used by action drop_events: it applies to every span",
            "sinks.main.transform.rules[5].salt_env: is not used by action truncate (it takes key, keys, key_regex, max_bytes)",
            "sinks.main.transform.rules[5].max_bytes: must be greater than zero (delete the attributes instead)",
            "sinks.main.transform.rules[6]: action redact needs what to redact: keys (or key, key_regex) for whole values, patterns or regex for parts of values",
            "sinks.main.transform.rules[7].salt_env: \"1BAD\" is not an environment variable name (letters, digits and '_', e.g. SPANSINK_HASH_SALT)",
        ];
        assert_eq!(errs, expected);
    }

    #[test]
    fn names_must_be_labels_and_unique_and_rules_not_empty() {
        let errs = problems(
            "        - {action: drop_events, name: Drop}\n        - {action: drop_links, name: x}\n        - {action: drop_events, name: x}\n",
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("sinks.main.transform.rules[0].name: \"Drop\" must be"));
        assert!(
            errs[1].starts_with("sinks.main.transform.rules[2].name: \"x\" names an earlier rule")
        );
        let config: ExporterConfig = serde_yaml::from_str(
            "sinks:\n  main:\n    blackhole: {}\n    transform: {rules: []}\n",
        )
        .unwrap();
        let errs = crate::validate(&config).unwrap_err().to_string();
        assert!(
            errs.contains("sinks.main.transform.rules: set at least one rule"),
            "{errs}"
        );
    }

    #[test]
    fn an_unknown_action_or_a_list_value_is_a_parse_error_with_the_rule_path() {
        let err = ExporterConfig::from_yaml(
            "sinks:\n  main:\n    blackhole: {}\n    transform:\n      rules:\n        - {action: set, key: a, value: b}\n        - {action: sett, key: a, value: b}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sinks.main.transform.rules[1].action: unknown variant `sett`"),
            "{err}"
        );
        let err = ExporterConfig::from_yaml(
            "sinks:\n  main:\n    blackhole: {}\n    transform:\n      rules:\n        - {action: set, key: a, value: [1, 2]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sinks.main.transform.rules[0].value: invalid type: sequence, expected a string, an integer, a number or a boolean"),
            "{err}"
        );
        let err = ExporterConfig::from_yaml(
            "sinks:\n  main:\n    blackhole: {}\n    transform:\n      rules:\n        - {action: redact, patterns: [phone]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sinks.main.transform.rules[0].patterns[0]: unknown variant `phone`"),
            "{err}"
        );
    }

    #[test]
    fn presets_find_what_they_name() {
        let email = regex::Regex::new(RedactionPattern::Email.regex()).unwrap();
        assert_eq!(
            email
                .find("mail jane.doe+x@mail.example.co.uk now")
                .map(|m| m.as_str()),
            Some("jane.doe+x@mail.example.co.uk")
        );
        assert!(email.find("user@localhost").is_none());
        let card = regex::Regex::new(RedactionPattern::CardNumber.regex()).unwrap();
        assert_eq!(
            card.find("card 4111 1111 1111 1111.").map(|m| m.as_str()),
            Some("4111 1111 1111 1111")
        );
        assert!(card.find("id 123456").is_none());
        let bearer = regex::Regex::new(RedactionPattern::BearerToken.regex()).unwrap();
        assert_eq!(
            bearer
                .find("authorization: Bearer eyJhbGc.eyJzdWI.Sfl-KxwR=")
                .map(|m| m.as_str()),
            Some("Bearer eyJhbGc.eyJzdWI.Sfl-KxwR=")
        );
        assert!(bearer.find("BEARER abc").is_some());
    }
}
