//! One attribute list (a span's, a resource's, an event's, ...) as rules edit it: keys and
//! values borrowed from the request bytes until a rule changes them, then written back as
//! protobuf. Not the walk over a request (`rewrite`) nor value edits (`values`).

use std::borrow::Cow;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::rules::{Action, CompiledRule, KeyMemo};
use super::values;
use crate::otlp::WireError;
use crate::otlp::view::KeyValueView;

/// One `KeyValue`: its key as bytes (the scan checked they are UTF-8, and rules compare
/// bytes, so no check again), its value an encoded `AnyValue` body (`None`: no value
/// field).
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute<'a> {
    pub key: Cow<'a, [u8]>,
    pub value: Option<Cow<'a, [u8]>>,
}

impl<'a> Attribute<'a> {
    /// Reads one encoded `KeyValue`.
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let view = KeyValueView::parse(body)?;
        Ok(Self {
            key: Cow::Borrowed(view.key),
            value: view.value,
        })
    }
}

/// Writes `attributes` as occurrences of the repeated `KeyValue` field `field`.
pub fn write_list(attributes: &[Attribute<'_>], field: u32, out: &mut Vec<u8>) {
    for a in attributes {
        let key_len = a.key.len();
        let mut len = 1 + encoded_len_varint(key_len as u64) + key_len;
        if let Some(value) = &a.value {
            len += 1 + encoded_len_varint(value.len() as u64) + value.len();
        }
        encode_key(field, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(key_len as u64, out);
        out.extend_from_slice(&a.key);
        if let Some(value) = &a.value {
            encode_key(2, WireType::LengthDelimited, out);
            encode_varint(value.len() as u64, out);
            out.extend_from_slice(value);
        }
    }
}

/// Applies rules `which` (indexes into `rules`, in order) to `attributes`, adding what
/// each changed to `counts` (by the same index; `memos` too). True if anything changed.
pub fn apply<'a>(
    rules: &'a [CompiledRule],
    which: &[usize],
    attributes: &mut Vec<Attribute<'a>>,
    counts: &mut [u64],
    memos: &mut [KeyMemo],
) -> Result<bool, WireError> {
    let mut changed = false;
    for &i in which {
        let n = apply_rule(&rules[i].action, attributes, &mut memos[i])?;
        counts[i] += n;
        changed |= n > 0;
    }
    Ok(changed)
}

/// What one rule changed: attributes written, removed, renamed or rewritten.
fn apply_rule<'a>(
    action: &'a Action,
    attributes: &mut Vec<Attribute<'a>>,
    memo: &mut KeyMemo,
) -> Result<u64, WireError> {
    let mut n = 0;
    match action {
        Action::Set { key, value } => {
            if write_existing(attributes, key, value, &mut n) == 0 {
                attributes.push(new_attribute(key, value));
                n += 1;
            }
        }
        Action::Insert { key, value } => {
            if !attributes.iter().any(|a| *a.key == *key.as_bytes()) {
                attributes.push(new_attribute(key, value));
                n += 1;
            }
        }
        Action::Update { key, value } => {
            write_existing(attributes, key, value, &mut n);
        }
        Action::Delete(selector) => {
            let before = attributes.len();
            let mut position = 0;
            attributes.retain(|a| {
                position += 1;
                !memo.selects(selector, &a.key, position - 1)
            });
            n = (before - attributes.len()) as u64;
        }
        Action::Rename { from, to } => {
            if attributes.iter().any(|a| *a.key == *from.as_bytes()) {
                // The renamed attribute replaces one that already had the new key.
                attributes.retain(|a| *a.key != *to.as_bytes());
                for a in attributes.iter_mut().filter(|a| *a.key == *from.as_bytes()) {
                    a.key = Cow::Borrowed(to.as_bytes());
                    n += 1;
                }
            }
        }
        Action::Hash { selector, salted } => {
            for (_, a) in attributes
                .iter_mut()
                .enumerate()
                .filter(|(i, a)| memo.selects(selector, &a.key, *i))
            {
                if let Some(value) = &a.value
                    && let Some(new) = values::hash(value, salted)?
                {
                    a.value = Some(Cow::Owned(new));
                    n += 1;
                }
            }
        }
        Action::Redact {
            selector,
            matchers,
            replacement,
            whole,
        } => {
            let mut selected = |i: usize, a: &Attribute<'_>| {
                selector.as_ref().is_none_or(|s| memo.selects(s, &a.key, i))
            };
            for (_, a) in attributes
                .iter_mut()
                .enumerate()
                .filter(|(i, a)| selected(*i, a))
            {
                let Some(value) = &a.value else { continue };
                if matchers.is_empty() {
                    if value.as_ref() != whole.as_slice() {
                        a.value = Some(Cow::Borrowed(whole));
                        n += 1;
                    }
                } else if let Some(new) = values::redact(value, matchers, replacement)? {
                    a.value = Some(Cow::Owned(new));
                    n += 1;
                }
            }
        }
        Action::Truncate {
            selector,
            max_bytes,
        } => {
            let mut selected = |i: usize, a: &Attribute<'_>| {
                selector.as_ref().is_none_or(|s| memo.selects(s, &a.key, i))
            };
            for (_, a) in attributes
                .iter_mut()
                .enumerate()
                .filter(|(i, a)| selected(*i, a))
            {
                if let Some(value) = &a.value
                    && let Some(new) = values::truncate(value, *max_bytes)?
                {
                    a.value = Some(Cow::Owned(new));
                    n += 1;
                }
            }
        }
        // Applied to spans by `rewrite`, not to attribute lists.
        Action::DropEvents | Action::DropLinks => {}
    }
    Ok(n)
}

/// Writes `value` into every attribute with `key`; how many there were. Counts in `n`
/// only those whose value differed.
fn write_existing<'a>(
    attributes: &mut [Attribute<'a>],
    key: &str,
    value: &'a [u8],
    n: &mut u64,
) -> usize {
    let mut found = 0;
    for a in attributes.iter_mut().filter(|a| *a.key == *key.as_bytes()) {
        found += 1;
        if a.value.as_deref() != Some(value) {
            a.value = Some(Cow::Borrowed(value));
            *n += 1;
        }
    }
    found
}

fn new_attribute<'a>(key: &'a str, value: &'a [u8]) -> Attribute<'a> {
    Attribute {
        key: Cow::Borrowed(key.as_bytes()),
        value: Some(Cow::Borrowed(value)),
    }
}
