//! What `hash`, `redact` and `truncate` do to one attribute value, an encoded `AnyValue`
//! body as the wire holds it. Each returns the new body, or `None` when the value stays as
//! it is (so an untouched value is never re-encoded). Not which attributes a rule selects
//! (`attributes`).

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use prost::Message;
use sha2::Digest;

use super::rules::{Matcher, Salted};
use crate::otlp::WireError;
use crate::otlp::view::ValueView;

/// An encoded `AnyValue` holding the string `text`.
pub fn string_value(text: &str) -> Vec<u8> {
    AnyValue {
        value: Some(Value::StringValue(text.to_string())),
    }
    .encode_to_vec()
}

/// The lowercase hex SHA-256 of the salt followed by the value's bytes: a string as
/// UTF-8, a number or boolean as its text, bytes as they are, an array or map as its
/// encoding. `None` for a value that is not set.
pub fn hash(body: &[u8], salted: &Salted) -> Result<Option<Vec<u8>>, WireError> {
    let text;
    let bytes: &[u8] = match ValueView::parse(body)? {
        ValueView::Empty | ValueView::StringIndex(_) => return Ok(None),
        ValueView::String(s) | ValueView::Bytes(s) => s,
        ValueView::Bool(b) => {
            if b {
                b"true"
            } else {
                b"false"
            }
        }
        ValueView::Int(i) => {
            text = i.to_string();
            text.as_bytes()
        }
        ValueView::Double(d) => {
            text = d.to_string();
            text.as_bytes()
        }
        ValueView::Array(_) | ValueView::Kvlist(_) => body,
    };
    let digest: [u8; 32] = salted.0.clone().chain_update(bytes).finalize().into();
    // Encoded by hand, into one allocation: `string_value` of the hex, which costs a
    // string, a hex string and an encoding more.
    let mut hex = const_hex::Buffer::<32>::new();
    let hex = hex.format(&digest);
    let mut out = Vec::with_capacity(2 + hex.len());
    // `AnyValue.string_value` (field 1, length-delimited) of 64 characters.
    out.extend_from_slice(&[0x0A, hex.len() as u8]);
    out.extend_from_slice(hex.as_bytes());
    Ok(Some(out))
}

/// Replaces what `matchers` find in the value's strings (in arrays and maps too) by
/// `replacement`.
pub fn redact(
    body: &[u8],
    matchers: &[Matcher],
    replacement: &str,
) -> Result<Option<Vec<u8>>, WireError> {
    match ValueView::parse(body)? {
        ValueView::String(s) => {
            let text = utf8(s)?;
            Ok(match redact_text(text, matchers, replacement) {
                Cow::Borrowed(_) => None,
                Cow::Owned(new) => Some(string_value(&new)),
            })
        }
        ValueView::Array(_) | ValueView::Kvlist(_) => {
            edit_strings(body, &mut |s| match redact_text(s, matchers, replacement) {
                Cow::Borrowed(_) => None,
                Cow::Owned(new) => Some(new),
            })
        }
        _ => Ok(None),
    }
}

/// Cuts strings (at a UTF-8 character boundary) and bytes longer than `max_bytes`, in
/// arrays and maps too.
pub fn truncate(body: &[u8], max_bytes: usize) -> Result<Option<Vec<u8>>, WireError> {
    // A string or bytes value is encoded with at least its length plus two bytes, so a
    // value this short holds nothing to cut.
    if body.len() <= max_bytes {
        return Ok(None);
    }
    match ValueView::parse(body)? {
        ValueView::String(s) if s.len() > max_bytes => {
            let text = utf8(s)?;
            Ok(Some(string_value(&text[..char_boundary(text, max_bytes)])))
        }
        ValueView::Bytes(b) if b.len() > max_bytes => Ok(Some(
            AnyValue {
                value: Some(Value::BytesValue(b[..max_bytes].to_vec())),
            }
            .encode_to_vec(),
        )),
        ValueView::Array(_) | ValueView::Kvlist(_) => {
            let mut value = AnyValue::decode(body)?;
            let changed = visit(&mut value, &mut |v| match v {
                Value::StringValue(s) if s.len() > max_bytes => {
                    s.truncate(char_boundary(s, max_bytes));
                    true
                }
                Value::BytesValue(b) if b.len() > max_bytes => {
                    b.truncate(max_bytes);
                    true
                }
                _ => false,
            });
            Ok(changed.then(|| value.encode_to_vec()))
        }
        _ => Ok(None),
    }
}

/// The largest index `<= max` that is a character boundary of `text`.
fn char_boundary(text: &str, max: usize) -> usize {
    let mut at = max.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn redact_text<'t>(text: &'t str, matchers: &[Matcher], replacement: &str) -> Cow<'t, str> {
    let mut text = Cow::Borrowed(text);
    for m in matchers {
        let replaced = if m.luhn {
            m.regex.replace_all(&text, |caps: &regex::Captures<'_>| {
                let found = &caps[0];
                if luhn_valid(found) {
                    replacement.to_string()
                } else {
                    found.to_string()
                }
            })
        } else {
            m.regex.replace_all(&text, regex::NoExpand(replacement))
        };
        // `replace_all` borrows when nothing matched; a Luhn-rejected match gives back an
        // equal string, which is no change either.
        if let Cow::Owned(new) = replaced
            && new != *text
        {
            text = Cow::Owned(new);
        }
    }
    text
}

/// Whether the digits of `candidate` (spaces and dashes ignored) pass the Luhn check.
fn luhn_valid(candidate: &str) -> bool {
    let mut sum = 0;
    let mut digits = 0;
    for (i, d) in candidate
        .bytes()
        .rev()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
        .enumerate()
    {
        digits += 1;
        sum += if i % 2 == 1 {
            let doubled = d * 2;
            if doubled > 9 { doubled - 9 } else { doubled }
        } else {
            d
        };
    }
    digits >= 13 && sum % 10 == 0
}

/// Decodes an array or map value, lets `edit` rewrite each string in it, re-encodes it
/// if anything changed.
fn edit_strings(
    body: &[u8],
    edit: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut value = AnyValue::decode(body)?;
    let changed = visit(&mut value, &mut |v| match v {
        Value::StringValue(s) => match edit(s) {
            Some(new) => {
                *s = new;
                true
            }
            None => false,
        },
        _ => false,
    });
    Ok(changed.then(|| value.encode_to_vec()))
}

/// Calls `f` on every scalar of `value`, in arrays and maps at any depth; true if any
/// call changed something.
fn visit(value: &mut AnyValue, f: &mut dyn FnMut(&mut Value) -> bool) -> bool {
    match value.value.as_mut() {
        None => false,
        Some(Value::ArrayValue(array)) => array
            .values
            .iter_mut()
            .fold(false, |changed, v| visit(v, f) | changed),
        Some(Value::KvlistValue(list)) => list
            .values
            .iter_mut()
            .filter_map(|kv| kv.value.as_mut())
            .fold(false, |changed, v| visit(v, f) | changed),
        Some(scalar) => f(scalar),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, WireError> {
    std::str::from_utf8(bytes).map_err(|_| {
        WireError(
            "an attribute string is not UTF-8 (the request passed the wire scan; this is a bug)"
                .into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use regex::Regex;
    use sha2::Sha256;
    use spansink_config::RedactionPattern;

    use super::*;
    use crate::otlp::fixtures::{kv, v_array, v_bytes, v_int, v_kvlist, v_str};

    fn decoded(body: Option<Vec<u8>>) -> Option<Value> {
        body.map(|b| AnyValue::decode(b.as_slice()).unwrap().value.unwrap())
    }

    fn presets(patterns: &[RedactionPattern]) -> Vec<Matcher> {
        patterns
            .iter()
            .map(|p| Matcher {
                regex: Regex::new(p.regex()).unwrap(),
                luhn: *p == RedactionPattern::CardNumber,
            })
            .collect()
    }

    #[test]
    fn hash_is_salted_sha256_hex_of_the_value_text() {
        let salted = Salted(Sha256::new_with_prefix(b"pepper"));
        let expected = const_hex::encode(Sha256::digest(b"pepperjane"));
        assert_eq!(
            decoded(hash(&v_str("jane").encode_to_vec(), &salted).unwrap()),
            Some(Value::StringValue(expected))
        );
        let expected = const_hex::encode(Sha256::digest(b"pepper42"));
        assert_eq!(
            decoded(hash(&v_int(42).encode_to_vec(), &salted).unwrap()),
            Some(Value::StringValue(expected))
        );
        assert_eq!(
            hash(&AnyValue::default().encode_to_vec(), &salted).unwrap(),
            None
        );
    }

    #[test]
    fn redact_replaces_matches_only_and_checks_card_numbers() {
        let m = presets(&[
            RedactionPattern::Email,
            RedactionPattern::CardNumber,
            RedactionPattern::BearerToken,
        ]);
        let out = redact(
            &v_str("to jane@example.com, card 4111-1111-1111-1111, order 1234567890123, Authorization: Bearer abc.def").encode_to_vec(),
            &m,
            "***",
        )
        .unwrap();
        assert_eq!(
            decoded(out),
            Some(Value::StringValue(
                "to ***, card ***, order 1234567890123, Authorization: ***".into()
            ))
        );
        assert_eq!(
            redact(&v_str("nothing here").encode_to_vec(), &m, "***").unwrap(),
            None
        );
        assert_eq!(
            redact(&v_int(4111111111111111).encode_to_vec(), &m, "***").unwrap(),
            None
        );
        let nested = v_kvlist(vec![kv("user", v_array(vec![v_str("a@b.io"), v_int(1)]))]);
        let out = decoded(redact(&nested.encode_to_vec(), &m, "X").unwrap());
        assert_eq!(
            out,
            v_kvlist(vec![kv("user", v_array(vec![v_str("X"), v_int(1)]))]).value
        );
    }

    #[test]
    fn truncate_cuts_at_a_character_boundary_and_bytes_exactly() {
        // "é" is two bytes: cutting "aé" to 2 bytes leaves "a".
        assert_eq!(
            decoded(truncate(&v_str("aébc").encode_to_vec(), 2).unwrap()),
            Some(Value::StringValue("a".into()))
        );
        assert_eq!(
            decoded(truncate(&v_str("abcdef").encode_to_vec(), 3).unwrap()),
            Some(Value::StringValue("abc".into()))
        );
        assert_eq!(truncate(&v_str("abc").encode_to_vec(), 3).unwrap(), None);
        assert_eq!(
            decoded(truncate(&v_bytes(&[1, 2, 3, 4, 5]).encode_to_vec(), 2).unwrap()),
            Some(Value::BytesValue(vec![1, 2]))
        );
        assert_eq!(
            decoded(
                truncate(
                    &v_array(vec![v_str("long text"), v_str("ok")]).encode_to_vec(),
                    4
                )
                .unwrap()
            ),
            v_array(vec![v_str("long"), v_str("ok")]).value
        );
        assert_eq!(
            truncate(&v_int(123456789).encode_to_vec(), 1).unwrap(),
            None
        );
    }
}
