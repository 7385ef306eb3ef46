//! Typed attribute values in JSON, both ways: `KeyValue` lists as JSON objects whose
//! values keep their OTLP type, and the reader that gives back the identical values.
//! Not the span layout (see `json`), only values.
//!
//! The mapping, chosen to be natural to query and lossless:
//!
//! | OTLP `AnyValue`          | JSON                                             |
//! |--------------------------|--------------------------------------------------|
//! | string                   | string                                           |
//! | int                      | integer                                          |
//! | double (finite)          | number that always has a `.` or exponent: `1.0`   |
//! | double NaN / ±infinity   | `{"double":"NaN"}`, `{"double":"Infinity"}`, `{"double":"-Infinity"}` |
//! | bool                     | `true` / `false`                                 |
//! | array                    | array                                            |
//! | kvlist                   | object (entry order and duplicate keys kept)     |
//! | bytes                    | `{"bytes_base64":"<standard base64, padded>"}`    |
//! | empty / unset value      | `null`                                           |
//!
//! A one-entry object whose key is `bytes_base64`, `double` or `kvlist` is a tag, never a
//! kvlist: the rare kvlist that has exactly one entry with one of these keys is written
//! wrapped, as `{"kvlist":{...}}`. Normalisations (the only non-identities): a `KeyValue`
//! whose value is an empty `AnyValue` reads back with no value (`value: None`; OTLP gives
//! both the same meaning); NaN reads back as the canonical NaN; the profiling-only fields
//! `key_strindex` and `string_value_strindex` are not kept (OTLP tells trace consumers to
//! ignore them).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value,
};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::json_text::{
    write_finite_f64, write_i64, write_key, write_str, write_utf8_key, write_utf8_str,
};
use crate::otlp::WireError;
use crate::otlp::view::{KeyValueView, ValueView};

/// Key of the tag object holding a bytes value.
pub const BYTES_TAG: &str = "bytes_base64";
/// Key of the tag object holding a double that JSON cannot write as a number.
pub const DOUBLE_TAG: &str = "double";
/// Key of the tag object wrapping a kvlist that would otherwise look like a tag.
pub const KVLIST_TAG: &str = "kvlist";

fn is_tag(key: &str) -> bool {
    matches!(key, BYTES_TAG | DOUBLE_TAG | KVLIST_TAG)
}

/// Appends an attribute list as a JSON object: `{"http.method":"GET","retries":3}`.
pub fn write_attributes(out: &mut Vec<u8>, attributes: &[KeyValue]) {
    out.push(b'{');
    for (i, kv) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(out, &kv.key);
        write_value(out, kv.value.as_ref());
    }
    out.push(b'}');
}

/// Appends one value in the typed mapping described in the module docs.
pub fn write_value(out: &mut Vec<u8>, value: Option<&AnyValue>) {
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        out.extend_from_slice(b"null");
        return;
    };
    match value {
        Value::StringValue(s) => write_str(out, s),
        Value::BoolValue(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::IntValue(i) => write_i64(out, *i),
        Value::DoubleValue(d) => write_double(out, *d),
        Value::ArrayValue(array) => {
            out.push(b'[');
            for (i, v) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, Some(v));
            }
            out.push(b']');
        }
        Value::KvlistValue(list) => {
            let looks_like_tag = matches!(list.values.as_slice(), [only] if is_tag(&only.key));
            if looks_like_tag {
                write_tagged(out, KVLIST_TAG, |out| write_attributes(out, &list.values));
            } else {
                write_attributes(out, &list.values);
            }
        }
        Value::BytesValue(bytes) => write_bytes(out, bytes),
        // Profiling-only reference into a string table this signal does not have.
        Value::StringValueStrindex(_) => out.extend_from_slice(b"null"),
    }
}

fn write_tagged(out: &mut Vec<u8>, tag: &str, inner: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'{');
    write_key(out, tag);
    inner(out);
    out.push(b'}');
}

/// A double: a number when finite, else its tag object.
fn write_double(out: &mut Vec<u8>, d: f64) {
    if d.is_finite() {
        return write_finite_f64(out, d);
    }
    let text = if d.is_nan() {
        "NaN"
    } else if d > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    };
    write_tagged(out, DOUBLE_TAG, |out| write_str(out, text));
}

/// Bytes as their tag object with standard padded base64.
fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_tagged(out, BYTES_TAG, |out| {
        out.push(b'"');
        let start = out.len();
        out.resize(
            start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
            0,
        );
        // Cannot fail: the target is exactly the encoded length.
        let written = BASE64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
        out.truncate(start + written);
        out.push(b'"');
    });
}

/// Appends an attribute list read from the wire (the `KeyValue` bodies of a repeated field)
/// as [`write_attributes`] writes the decoded list: the same bytes.
pub fn write_attributes_view<'a>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = Result<&'a [u8], WireError>>,
) -> Result<(), WireError> {
    out.push(b'{');
    for (i, entry) in entries.enumerate() {
        let kv = KeyValueView::parse(entry?)?;
        if i > 0 {
            out.push(b',');
        }
        write_utf8_key(out, kv.key);
        write_value_view(out, kv.value.as_deref())?;
    }
    out.push(b'}');
    Ok(())
}

/// Appends one value read from the wire (an `AnyValue` body; `None` when the key-value has
/// no value) as [`write_value`] writes the decoded value.
pub fn write_value_view(out: &mut Vec<u8>, value: Option<&[u8]>) -> Result<(), WireError> {
    let Some(body) = value else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    match ValueView::parse(body)? {
        ValueView::String(s) => write_utf8_str(out, s),
        ValueView::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        ValueView::Int(i) => write_i64(out, i),
        ValueView::Double(d) => write_double(out, d),
        ValueView::Array(array) => {
            out.push(b'[');
            for (i, element) in ValueView::elements(&array).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value_view(out, Some(element?))?;
            }
            out.push(b']');
        }
        ValueView::Kvlist(list) => {
            let mut entries = ValueView::elements(&list);
            let looks_like_tag = match (entries.next(), entries.next()) {
                (Some(only), None) => is_tag_bytes(KeyValueView::parse(only?)?.key),
                _ => false,
            };
            if looks_like_tag {
                out.push(b'{');
                write_key(out, KVLIST_TAG);
                write_attributes_view(out, ValueView::elements(&list))?;
                out.push(b'}');
            } else {
                write_attributes_view(out, ValueView::elements(&list))?;
            }
        }
        ValueView::Bytes(bytes) => write_bytes(out, bytes),
        // As in `write_value`: no value, or a profiling-only string table reference.
        ValueView::Empty | ValueView::StringIndex(_) => out.extend_from_slice(b"null"),
    }
    Ok(())
}

fn is_tag_bytes(key: &[u8]) -> bool {
    std::str::from_utf8(key).is_ok_and(is_tag)
}

/// Parses an attribute object written by [`write_attributes`] (e.g. a CSV column).
pub fn read_attributes(json: &str) -> Result<Vec<KeyValue>, serde_json::Error> {
    serde_json::from_str::<Attributes>(json).map(|a| a.0)
}

/// An attribute list read from its JSON object, for use in `#[derive(Deserialize)]`
/// structs. Entry order and duplicate keys are kept.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Attributes(pub Vec<KeyValue>);

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawValue::deserialize(d)?.0 {
            Some(Value::KvlistValue(list)) => interpret_entries(list.values)
                .map(Attributes)
                .map_err(de::Error::custom),
            _ => Err(de::Error::custom("attributes must be a JSON object")),
        }
    }
}

/// A JSON value read as-is: objects become kvlists, tags are not yet interpreted (a tag
/// can only be recognised once its whole object is read).
struct RawValue(Option<Value>);

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawValueVisitor)
    }
}

struct RawValueVisitor;

impl<'de> Visitor<'de> for RawValueVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attribute value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue(None))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue(Some(Value::BoolValue(v))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue(Some(Value::IntValue(v))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        i64::try_from(v)
            .map(|i| RawValue(Some(Value::IntValue(i))))
            .map_err(|_| E::custom(format!("integer {v} does not fit an OTLP int (i64)")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue(Some(Value::DoubleValue(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue(Some(Value::StringValue(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue(Some(Value::StringValue(v))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(RawValue(value)) = seq.next_element()? {
            values.push(AnyValue { value });
        }
        Ok(RawValue(Some(Value::ArrayValue(ArrayValue { values }))))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut values = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<String>()? {
            let RawValue(value) = map.next_value()?;
            values.push(KeyValue {
                key,
                value: value.map(|v| AnyValue { value: Some(v) }),
                key_strindex: 0,
            });
        }
        Ok(RawValue(Some(Value::KvlistValue(KeyValueList { values }))))
    }
}

/// Turns tag objects inside a raw value into the values they stand for.
fn interpret(value: Value) -> Result<Value, String> {
    match value {
        Value::ArrayValue(array) => {
            let values = array
                .values
                .into_iter()
                .map(|v| {
                    Ok(AnyValue {
                        value: v.value.map(interpret).transpose()?,
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(Value::ArrayValue(ArrayValue { values }))
        }
        Value::KvlistValue(list) => interpret_object(list.values),
        other => Ok(other),
    }
}

fn interpret_object(mut entries: Vec<KeyValue>) -> Result<Value, String> {
    let is_tag_object = matches!(entries.as_slice(), [only] if is_tag(&only.key));
    if !is_tag_object {
        return interpret_entries(entries)
            .map(|values| Value::KvlistValue(KeyValueList { values }));
    }
    let Some(KeyValue { key, value, .. }) = entries.pop() else {
        return Err("empty tag object".to_string());
    };
    match (key.as_str(), value.and_then(|v| v.value)) {
        (BYTES_TAG, Some(Value::StringValue(text))) => BASE64
            .decode(text.as_bytes())
            .map(Value::BytesValue)
            .map_err(|e| format!("{{\"{BYTES_TAG}\": ...}} holds invalid base64: {e}")),
        (DOUBLE_TAG, Some(Value::StringValue(text))) => match text.as_str() {
            "NaN" => Ok(Value::DoubleValue(f64::NAN)),
            "Infinity" => Ok(Value::DoubleValue(f64::INFINITY)),
            "-Infinity" => Ok(Value::DoubleValue(f64::NEG_INFINITY)),
            other => Err(format!(
                "{{\"{DOUBLE_TAG}\": {other:?}}}: expected \"NaN\", \"Infinity\" or \"-Infinity\""
            )),
        },
        (KVLIST_TAG, Some(Value::KvlistValue(inner))) => interpret_entries(inner.values)
            .map(|values| Value::KvlistValue(KeyValueList { values })),
        (tag, _) => Err(format!(
            "one-entry object with key {tag:?} is a tag and holds the wrong type; a kvlist with this single key is written as {{\"{KVLIST_TAG}\":{{...}}}}"
        )),
    }
}

fn interpret_entries(entries: Vec<KeyValue>) -> Result<Vec<KeyValue>, String> {
    entries
        .into_iter()
        .map(|kv| {
            let value = match kv.value {
                Some(AnyValue { value: Some(v) }) => Some(AnyValue {
                    value: Some(interpret(v)?),
                }),
                _ => None,
            };
            Ok(KeyValue {
                key: kv.key,
                value,
                key_strindex: 0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::fixtures::{kv, v_array, v_bytes, v_double, v_int, v_kvlist, v_str};

    fn round_trip(attributes: &[KeyValue]) -> (String, Vec<KeyValue>) {
        let mut out = Vec::new();
        write_attributes(&mut out, attributes);
        let text = String::from_utf8(out).unwrap();
        let back = read_attributes(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (text, back)
    }

    #[test]
    fn every_value_kind_is_written_naturally_and_read_back_identically() {
        let attributes = vec![
            kv("s", v_str("x \"q\"\n")),
            kv("i", v_int(-3)),
            kv("d", v_double(2.0)),
            kv(
                "b",
                AnyValue {
                    value: Some(Value::BoolValue(true)),
                },
            ),
            kv("a", v_array(vec![v_int(1), v_str("two"), v_array(vec![])])),
            kv("m", v_kvlist(vec![kv("inner", v_double(0.5))])),
            kv("bytes", v_bytes(&[0, 1, 254, 255])),
            kv("inf", v_double(f64::INFINITY)),
            kv("ninf", v_double(f64::NEG_INFINITY)),
        ];
        let (text, back) = round_trip(&attributes);
        assert_eq!(
            text,
            r#"{"s":"x \"q\"\n","i":-3,"d":2.0,"b":true,"a":[1,"two",[]],"m":{"inner":0.5},"bytes":{"bytes_base64":"AAH+/w=="},"inf":{"double":"Infinity"},"ninf":{"double":"-Infinity"}}"#
        );
        assert_eq!(back, attributes);
    }

    #[test]
    fn kvlists_that_look_like_tags_are_wrapped_and_come_back_as_kvlists() {
        let attributes = vec![
            kv("b", v_kvlist(vec![kv(BYTES_TAG, v_str("not base64!"))])),
            kv("d", v_kvlist(vec![kv(DOUBLE_TAG, v_str("NaN"))])),
            kv(
                "k",
                v_kvlist(vec![kv(
                    KVLIST_TAG,
                    v_kvlist(vec![kv(BYTES_TAG, v_bytes(b"x"))]),
                )]),
            ),
            kv(
                "two",
                v_kvlist(vec![kv(BYTES_TAG, v_int(1)), kv("other", v_int(2))]),
            ),
            kv("empty", v_kvlist(vec![])),
        ];
        let (text, back) = round_trip(&attributes);
        assert!(
            text.contains(r#""b":{"kvlist":{"bytes_base64":"not base64!"}}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""two":{"bytes_base64":1,"other":2}"#),
            "{text}"
        );
        assert_eq!(back, attributes);
    }

    #[test]
    fn order_and_duplicate_keys_are_kept() {
        let attributes = vec![kv("z", v_int(1)), kv("a", v_int(2)), kv("z", v_int(3))];
        assert_eq!(round_trip(&attributes).1, attributes);
    }

    #[test]
    fn empty_values_read_back_as_absent_and_nan_as_nan() {
        let attributes = vec![
            KeyValue {
                key: "none".into(),
                value: None,
                key_strindex: 0,
            },
            kv("empty", AnyValue { value: None }),
            kv("arr", v_array(vec![AnyValue { value: None }])),
            kv("nan", v_double(f64::NAN)),
        ];
        let (text, back) = round_trip(&attributes);
        assert_eq!(
            text,
            r#"{"none":null,"empty":null,"arr":[null],"nan":{"double":"NaN"}}"#
        );
        assert_eq!(back[0].value, None);
        assert_eq!(back[1].value, None);
        assert_eq!(back[2], attributes[2]);
        assert!(matches!(
            back[3].value,
            Some(AnyValue { value: Some(Value::DoubleValue(d)) }) if d.is_nan()
        ));
    }

    #[test]
    fn malformed_tags_and_out_of_range_integers_are_errors() {
        assert!(read_attributes(r#"{"x":{"bytes_base64":"%%%"}}"#).is_err());
        assert!(read_attributes(r#"{"x":{"double":"1.5"}}"#).is_err());
        assert!(read_attributes(r#"{"x":{"kvlist":3}}"#).is_err());
        assert!(read_attributes(r#"{"x":18446744073709551615}"#).is_err());
        assert!(read_attributes(r#"[1]"#).is_err());
    }
}
