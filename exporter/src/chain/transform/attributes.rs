//! One attribute list (a span's, a resource's, an event's, ...) as rules edit it: keys and
//! values borrowed from the request bytes until a rule changes them, then written back as
//! protobuf. Not the walk over a request (`rewrite`) nor value edits (`values`).

use std::borrow::Cow;

use prost::encoding::{WireType, encoded_len_varint};

use super::rules::{Action, CompiledRule, KeyMemo, Selector};
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
    #[inline]
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        // The usual encoding, read directly: the key then the value, each under 128 bytes
        // (one-byte lengths) and nothing else. Anything else (more fields, longer parts,
        // another order) goes the general way, which reads it the same.
        if let [0x0A, key_len, rest @ ..] = body
            && *key_len < 0x80
            && let Some((key, rest)) = rest.split_at_checked(usize::from(*key_len))
            && let [0x12, value_len, value @ ..] = rest
            && usize::from(*value_len) == value.len()
        {
            return Ok(Self {
                key: Cow::Borrowed(key),
                value: Some(Cow::Borrowed(value)),
            });
        }
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
        // Each header in one copy: pushing varints byte by byte was a third of the cost
        // of writing a list (callgrind).
        let mut header = Header::default();
        header.key(field);
        header.varint(len as u64);
        header.key(1);
        header.varint(key_len as u64);
        out.extend_from_slice(header.bytes());
        out.extend_from_slice(&a.key);
        if let Some(value) = &a.value {
            let mut header = Header::default();
            header.key(2);
            header.varint(value.len() as u64);
            out.extend_from_slice(header.bytes());
            out.extend_from_slice(value);
        }
    }
}

/// Field keys and lengths, encoded on the stack before they are copied out.
#[derive(Default)]
struct Header {
    bytes: [u8; 32],
    len: usize,
}

impl Header {
    /// The key of length-delimited field `field`.
    fn key(&mut self, field: u32) {
        self.varint(u64::from(field) << 3 | WireType::LengthDelimited as u64);
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes[self.len] = value as u8 | 0x80;
            self.len += 1;
            value >>= 7;
        }
        self.bytes[self.len] = value as u8;
        self.len += 1;
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
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

/// The attributes `selector` selects (every one without a selector), to rewrite in place.
fn selected<'s, 'a>(
    attributes: &'s mut [Attribute<'a>],
    selector: Option<&'s Selector>,
    memo: &'s mut KeyMemo,
) -> impl Iterator<Item = &'s mut Attribute<'a>> {
    attributes.iter_mut().enumerate().filter_map(move |(i, a)| {
        selector
            .is_none_or(|s| memo.selects(s, &a.key, i))
            .then_some(a)
    })
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
            for a in selected(attributes, Some(selector), memo) {
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
            for a in selected(attributes, selector.as_ref(), memo) {
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
            for a in selected(attributes, selector.as_ref(), memo) {
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

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use prost::Message;

    use super::*;

    fn encoded(key: &str, text: &str) -> Vec<u8> {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(text.into())),
            }),
            key_strindex: 0,
        }
        .encode_to_vec()
    }

    #[test]
    fn the_direct_read_of_a_key_value_equals_the_general_one() {
        let long = |n| "k".repeat(n);
        let mut bodies = vec![
            encoded("http.route", "/api"),
            encoded(&long(127), "v"),
            encoded(&long(128), "v"),
            encoded("k", &long(124)),
            encoded("k", &long(125)),
            encoded("k", &long(200)),
            encoded("", ""),
            KeyValue {
                key: "only.key".into(),
                ..KeyValue::default()
            }
            .encode_to_vec(),
            Vec::new(),
        ];
        let plain = encoded("a", "b");
        // Value before key; the value twice (merged); an unknown field after them.
        let mut reordered = plain[3..].to_vec();
        reordered.extend_from_slice(&plain[..3]);
        bodies.push(reordered);
        let mut twice = plain.clone();
        twice.extend_from_slice(&plain[3..]);
        bodies.push(twice);
        let mut unknown = plain.clone();
        prost::encoding::string::encode(9, &"x".to_string(), &mut unknown);
        bodies.push(unknown);
        // A value length that claims more or less than there is.
        let mut short = plain.clone();
        short.push(0);
        bodies.push(short);
        for body in &bodies {
            let general = KeyValueView::parse(body).map(|v| (v.key.to_vec(), v.value));
            let direct = Attribute::parse(body).map(|a| (a.key.to_vec(), a.value));
            assert_eq!(
                format!("{direct:?}"),
                format!("{general:?}"),
                "body {body:?}"
            );
        }
    }
}
