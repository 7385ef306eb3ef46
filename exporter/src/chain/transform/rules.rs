//! A transform rule made ready to run from its config: keys to compare, regular expressions
//! compiled, the value to write already encoded, the salt read from its environment
//! variable, the rule's change counter. Not how rules walk a request (`rewrite`) nor what
//! they do to one value (`values`).

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use regex::Regex;
// Keys are matched as bytes: they come off the wire, already checked to be UTF-8.
use regex::bytes::RegexSet;
use sha2::{Digest, Sha256};
use spansink_config::{
    AttributeScope, AttributeValue, RedactionPattern, RegexField, TransformAction, TransformRule,
    compile_regex,
};

use crate::telemetry::Metrics;
use crate::telemetry::metrics::TransformLabels;

/// Why a transform could not be built. `validate` catches all but the environment; the
/// others are kept as errors rather than panics for configs that skipped it.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error(
        "transform.rules[{index}].salt_env: environment variable {var} is not set; fill it from a Secret (env valueFrom secretKeyRef, or envFrom)"
    )]
    SaltNotSet { index: usize, var: String },
    #[error(
        "transform.rules[{index}].salt_env: environment variable {var} is empty; an unsalted hash is reversed by hashing guesses: set a long random salt"
    )]
    SaltEmpty { index: usize, var: String },
    #[error("transform.rules[{index}].{field}[{position}]: {message}")]
    Regex {
        index: usize,
        field: &'static str,
        position: usize,
        message: String,
    },
    #[error(
        "transform.rules[{index}].{field}: is required by action {action}; run `validate` on the config"
    )]
    Missing {
        index: usize,
        field: &'static str,
        action: &'static str,
    },
}

/// Which attributes a rule selects by key.
#[derive(Debug)]
pub struct Selector {
    keys: Vec<String>,
    regex: Option<RegexSet>,
}

impl Selector {
    pub fn selects(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|k| k.as_bytes() == key)
            || self.regex.as_ref().is_some_and(|r| r.is_match(key))
    }
}

/// A selector's decisions within one request, by key. The same keys come back on every
/// span, and a `key_regex` match costs several times a lookup (measured: ~10% of a
/// three-rule pipeline's CPU went to matching); keys usually come in the same order, so
/// the key at the same position is tried first.
#[derive(Debug, Default)]
pub struct KeyMemo {
    seen: Vec<(Box<[u8]>, bool)>,
}

/// Distinct keys remembered per rule and request; past that, keys are matched each time.
const MEMO_KEYS: usize = 256;

impl KeyMemo {
    /// Whether `selector` selects `key`, the `position`-th attribute of its list.
    #[inline]
    pub fn selects(&mut self, selector: &Selector, key: &[u8], position: usize) -> bool {
        if selector.regex.is_none() {
            return selector.selects(key);
        }
        if let Some((seen, decision)) = self.seen.get(position)
            && **seen == *key
        {
            return *decision;
        }
        if let Some((_, decision)) = self.seen.iter().find(|(seen, _)| **seen == *key) {
            return *decision;
        }
        let decision = selector.selects(key);
        if self.seen.len() < MEMO_KEYS {
            self.seen.push((key.into(), decision));
        }
        decision
    }
}

/// A value pattern of `redact`.
#[derive(Debug)]
pub struct Matcher {
    pub regex: Regex,
    /// Replace a match only if its digits pass the Luhn check (`card_number`).
    pub luhn: bool,
}

/// The salt of `hash`, fed into a hasher once: each value hashes from a clone of it. Its
/// Debug output shows nothing of the salt.
#[derive(Clone)]
pub struct Salted(pub Sha256);

impl std::fmt::Debug for Salted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salted(<secret>)")
    }
}

/// What a rule does, with everything it needs at hand. Values are encoded `AnyValue`
/// bodies, as attributes carry them on the wire.
#[derive(Debug)]
pub enum Action {
    Set {
        key: String,
        value: Vec<u8>,
    },
    Insert {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
    },
    Delete(Selector),
    Rename {
        from: String,
        to: String,
    },
    Hash {
        selector: Selector,
        salted: Salted,
    },
    /// Without matchers, a selected value becomes `whole` (the replacement, encoded).
    Redact {
        selector: Option<Selector>,
        matchers: Vec<Matcher>,
        replacement: String,
        whole: Vec<u8>,
    },
    Truncate {
        selector: Option<Selector>,
        max_bytes: usize,
    },
    DropEvents,
    DropLinks,
}

/// One rule of a sink's transform.
#[derive(Debug)]
pub struct CompiledRule {
    pub action: Action,
    pub scope: AttributeScope,
    /// `spansink_transform_changes_total{sink, rule, action}`.
    pub changes: Counter,
}

impl CompiledRule {
    /// Compiles rule `index` of sink `sink`, reading a salt through `env`.
    pub fn new(
        sink: &str,
        index: usize,
        rule: &TransformRule,
        metrics: &Metrics,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, TransformError> {
        let missing = |field| TransformError::Missing {
            index,
            field,
            action: rule.action.as_str(),
        };
        let key = || rule.key.clone().ok_or_else(|| missing("key"));
        let value = || {
            rule.value
                .as_ref()
                .map(encode_value)
                .ok_or_else(|| missing("value"))
        };
        let action = match rule.action {
            TransformAction::Set => Action::Set {
                key: key()?,
                value: value()?,
            },
            TransformAction::Insert => Action::Insert {
                key: key()?,
                value: value()?,
            },
            TransformAction::Update => Action::Update {
                key: key()?,
                value: value()?,
            },
            TransformAction::Delete => Action::Delete(selector(index, rule)?),
            TransformAction::Rename => Action::Rename {
                from: key()?,
                to: rule.to.clone().ok_or_else(|| missing("to"))?,
            },
            TransformAction::Hash => {
                let var = rule
                    .salt_env
                    .as_deref()
                    .ok_or_else(|| missing("salt_env"))?;
                let salt = env(var).ok_or_else(|| TransformError::SaltNotSet {
                    index,
                    var: var.to_string(),
                })?;
                if salt.is_empty() {
                    return Err(TransformError::SaltEmpty {
                        index,
                        var: var.to_string(),
                    });
                }
                Action::Hash {
                    selector: selector(index, rule)?,
                    salted: Salted(Sha256::new_with_prefix(salt.as_bytes())),
                }
            }
            TransformAction::Redact => {
                let mut matchers = Vec::new();
                for (position, pattern) in rule.patterns.iter().enumerate() {
                    // Constants that a config test compiles; an error, not a panic, anyway.
                    let regex = Regex::new(pattern.regex()).map_err(|e| TransformError::Regex {
                        index,
                        field: "patterns",
                        position,
                        message: e.to_string(),
                    })?;
                    matchers.push(Matcher {
                        regex,
                        luhn: *pattern == RedactionPattern::CardNumber,
                    });
                }
                for (position, source) in rule.regex.iter().enumerate() {
                    matchers.push(Matcher {
                        regex: compile(index, RegexField::Regex, position, source)?,
                        luhn: false,
                    });
                }
                Action::Redact {
                    selector: optional_selector(index, rule)?,
                    matchers,
                    replacement: rule.replacement().to_string(),
                    whole: encode_value(&AttributeValue::String(rule.replacement().to_string())),
                }
            }
            TransformAction::Truncate => Action::Truncate {
                selector: optional_selector(index, rule)?,
                max_bytes: rule
                    .max_bytes
                    .ok_or_else(|| missing("max_bytes"))?
                    .0
                    .try_into()
                    .unwrap_or(usize::MAX),
            },
            TransformAction::DropEvents => Action::DropEvents,
            TransformAction::DropLinks => Action::DropLinks,
        };
        let changes = metrics
            .transform_changes
            .get_or_create(&TransformLabels {
                sink: sink.to_string(),
                rule: rule.label(index),
                action: rule.action.as_str(),
            })
            .clone();
        Ok(Self {
            action,
            scope: rule.scope(),
            changes,
        })
    }
}

fn compile(
    index: usize,
    field: RegexField,
    position: usize,
    source: &str,
) -> Result<Regex, TransformError> {
    compile_regex(source).map_err(|message| TransformError::Regex {
        index,
        field: field.as_str(),
        position,
        message,
    })
}

fn selector(index: usize, rule: &TransformRule) -> Result<Selector, TransformError> {
    optional_selector(index, rule)?.ok_or(TransformError::Missing {
        index,
        field: "keys",
        action: rule.action.as_str(),
    })
}

/// The rule's `key`, `keys` and `key_regex`; `None` when none is set.
fn optional_selector(
    index: usize,
    rule: &TransformRule,
) -> Result<Option<Selector>, TransformError> {
    if !rule.has_selector() {
        return Ok(None);
    }
    for (position, source) in rule.key_regex.iter().enumerate() {
        compile(index, RegexField::KeyRegex, position, source)?;
    }
    let regex = if rule.key_regex.is_empty() {
        None
    } else {
        Some(
            RegexSet::new(&rule.key_regex).map_err(|e| TransformError::Regex {
                index,
                field: RegexField::KeyRegex.as_str(),
                position: 0,
                message: e.to_string(),
            })?,
        )
    };
    Ok(Some(Selector {
        keys: rule.selected_keys().map(str::to_string).collect(),
        regex,
    }))
}

/// A config value as an encoded `AnyValue` body.
pub fn encode_value(value: &AttributeValue) -> Vec<u8> {
    let value = match value {
        AttributeValue::String(s) => Value::StringValue(s.clone()),
        AttributeValue::Int(i) => Value::IntValue(*i),
        AttributeValue::Double(d) => Value::DoubleValue(*d),
        AttributeValue::Bool(b) => Value::BoolValue(*b),
    };
    AnyValue { value: Some(value) }.encode_to_vec()
}
