//! Rewrites the bytes of an encoded `ExportTraceServiceRequest` by a transform's rules, on
//! the wire, in one pass into one output buffer: every span the rules leave alone is copied
//! as it came, and only the attribute lists, events and links a rule changed are encoded
//! again. Not what rules do to a list (`attributes`).
//!
//! A singular message sent more than once (a resource, a scope) is written once, as the
//! merge of its occurrences, which is what protobuf decodes it to anyway.

use std::borrow::Cow;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::SpanTransform;
use super::attributes::{self, Attribute};
use super::rules::KeyMemo;
use crate::otlp::WireError;
use crate::otlp::view::{FieldValue, walk};

/// One request's rewrite: the transform and what its rules changed so far.
pub struct Rewrite<'t> {
    pub transform: &'t SpanTransform,
    /// Changes by rule index.
    pub counts: Vec<u64>,
    /// Key decisions by rule index.
    memos: Vec<KeyMemo>,
    /// Whether any rule changed anything yet (else the request keeps its bytes).
    changed: bool,
}

impl<'t> Rewrite<'t> {
    pub fn new(transform: &'t SpanTransform) -> Self {
        Self {
            transform,
            counts: vec![0; transform.rules.len()],
            memos: (0..transform.rules.len())
                .map(|_| KeyMemo::default())
                .collect(),
            changed: false,
        }
    }

    /// The rewritten request; `None` when no rule changed anything.
    pub fn request(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
        // Written straight into the one output buffer, nested messages included (their
        // lengths are patched in as each closes), so a request is copied once, not once per
        // level; the room for what `set` and `hash` add, so it rarely grows.
        let mut out = Vec::with_capacity(body.len() + body.len() / 4 + 64);
        walk(body, |n, v, start, end| {
            if n == 1 {
                let resource_spans = len(v)?;
                let nested = Nested::open(&mut out, 1, resource_spans.len());
                self.resource_spans(resource_spans, &mut out)?;
                nested.close(&mut out);
            } else {
                out.extend_from_slice(&body[start..end]);
            }
            Ok(())
        })?;
        Ok(self.changed.then_some(out))
    }

    /// Writes the rewritten body of a `ResourceSpans` to `out`.
    fn resource_spans(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        let t = self.transform;
        let rules = &t.resource;
        let resource = if rules.is_empty() {
            None
        } else {
            let merged = merged(body, 1)?;
            self.attributes_in(merged.as_deref().unwrap_or(&[]), 1, rules)?
        };
        self.changed |= resource.is_some();
        let mut written = false;
        walk(body, |n, v, start, end| {
            match (n, &resource) {
                (1, Some(new)) => {
                    if !std::mem::replace(&mut written, true) {
                        put_len(out, 1, new);
                    }
                }
                (2, _) => {
                    let scope_spans = len(v)?;
                    let nested = Nested::open(out, 2, scope_spans.len());
                    self.scope_spans(scope_spans, out)?;
                    nested.close(out);
                }
                _ => out.extend_from_slice(&body[start..end]),
            }
            Ok(())
        })?;
        if let Some(new) = &resource
            && !written
        {
            put_len(out, 1, new);
        }
        Ok(())
    }

    /// Writes the rewritten body of a `ScopeSpans` to `out`.
    fn scope_spans(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        let t = self.transform;
        let rules = &t.scope;
        let scope = if rules.is_empty() {
            None
        } else {
            let merged = merged(body, 1)?;
            self.attributes_in(merged.as_deref().unwrap_or(&[]), 3, rules)?
        };
        self.changed |= scope.is_some();
        // One list for the attributes of every span, so it is allocated once per scope.
        let mut attributes = Vec::new();
        let mut written = false;
        walk(body, |n, v, start, end| {
            match (n, &scope) {
                (1, Some(new)) => {
                    if !std::mem::replace(&mut written, true) {
                        put_len(out, 1, new);
                    }
                }
                (2, _) => self.span(len(v)?, &body[start..end], &mut attributes, out)?,
                _ => out.extend_from_slice(&body[start..end]),
            }
            Ok(())
        })?;
        if let Some(new) = &scope
            && !written
        {
            put_len(out, 1, new);
        }
        Ok(())
    }

    /// Writes span `body` (`field`: the whole span field as encoded) to `out`, rewritten;
    /// `attributes` is room for its attribute list.
    fn span<'a>(
        &mut self,
        body: &'a [u8],
        field: &[u8],
        attributes: &mut Vec<Attribute<'a>>,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError>
    where
        't: 'a,
    {
        let t: &'a SpanTransform = self.transform;
        let (drop_events, drop_links) = (t.drop_events, t.drop_links);
        attributes.clear();
        let (mut events, mut links) = (Vec::new(), Vec::new());
        let (mut event_count, mut link_count) = (0usize, 0usize);
        let (mut dropped_events, mut dropped_links) = (0u64, 0u64);
        // Where the attribute list lies, if it is one stretch (as encoders write it).
        let (mut list, mut list_split) = (None::<(usize, usize)>, false);
        walk(body, |n, v, start, end| {
            match n {
                9 if !t.span.is_empty() => {
                    attributes.push(Attribute::parse(len(v)?)?);
                    list = Some(match list {
                        None => (start, end),
                        Some((first, last)) => {
                            list_split |= last != start;
                            (first, end)
                        }
                    });
                }
                11 => {
                    event_count += 1;
                    if drop_events.is_none() && !t.event.is_empty() {
                        events.push(self.attributes_in(len(v)?, 3, &t.event)?);
                    }
                }
                13 => {
                    link_count += 1;
                    if drop_links.is_none() && !t.link.is_empty() {
                        links.push(self.attributes_in(len(v)?, 4, &t.link)?);
                    }
                }
                12 => dropped_events = varint(v)?,
                14 => dropped_links = varint(v)?,
                _ => {}
            }
            Ok(())
        })?;
        let attributes_changed = attributes::apply(
            &t.rules,
            &t.span,
            attributes,
            &mut self.counts,
            &mut self.memos,
        )?;
        let drops_events = drop_events.is_some() && event_count > 0;
        let drops_links = drop_links.is_some() && link_count > 0;
        if !attributes_changed
            && !drops_events
            && !drops_links
            && events.iter().chain(&links).all(Option::is_none)
        {
            out.extend_from_slice(field);
            return Ok(());
        }
        self.changed = true;
        if let Some(rule) = drop_events.filter(|_| drops_events) {
            self.counts[rule] += event_count as u64;
        }
        if let Some(rule) = drop_links.filter(|_| drops_links) {
            self.counts[rule] += link_count as u64;
        }
        let nested = Nested::open(out, 2, body.len());
        let attributes_only =
            !drops_events && !drops_links && events.iter().chain(&links).all(Option::is_none);
        if attributes_only && !list_split {
            // Only the list changed: the stretches around it are copied whole, without a
            // second walk (the common case; a new list goes last, as below).
            let (first, last) = list.unwrap_or((body.len(), body.len()));
            out.extend_from_slice(&body[..first]);
            attributes::write_list(attributes, 9, out);
            out.extend_from_slice(&body[last..]);
            nested.close(out);
            return Ok(());
        }
        let (mut attributes_written, mut event, mut link) = (false, 0, 0);
        walk(body, |n, _, start, end| {
            let raw = &body[start..end];
            match n {
                9 if attributes_changed => {
                    if !std::mem::replace(&mut attributes_written, true) {
                        attributes::write_list(attributes, 9, out);
                    }
                }
                11 | 12 if drops_events => {}
                13 | 14 if drops_links => {}
                11 => {
                    match events.get(event).and_then(Option::as_ref) {
                        Some(new) => put_len(out, 11, new),
                        None => out.extend_from_slice(raw),
                    }
                    event += 1;
                }
                13 => {
                    match links.get(link).and_then(Option::as_ref) {
                        Some(new) => put_len(out, 13, new),
                        None => out.extend_from_slice(raw),
                    }
                    link += 1;
                }
                _ => out.extend_from_slice(raw),
            }
            Ok(())
        })?;
        if attributes_changed && !attributes_written {
            attributes::write_list(attributes, 9, out);
        }
        // What was dropped is counted in the span, as OTLP asks of anything that drops.
        if drops_events {
            put_varint(out, 12, dropped_count(dropped_events, event_count));
        }
        if drops_links {
            put_varint(out, 14, dropped_count(dropped_links, link_count));
        }
        nested.close(out);
        Ok(())
    }

    /// Applies rules `which` to the attribute list `field` of the message `body` (a
    /// resource, a scope, an event, a link); the rewritten message, or `None` if no rule
    /// changed it.
    fn attributes_in(
        &mut self,
        body: &[u8],
        field: u32,
        which: &[usize],
    ) -> Result<Option<Vec<u8>>, WireError> {
        let mut list = Vec::new();
        walk(body, |n, v, _, _| {
            if n == field {
                list.push(Attribute::parse(len(v)?)?);
            }
            Ok(())
        })?;
        let t = self.transform;
        if !attributes::apply(
            &t.rules,
            which,
            &mut list,
            &mut self.counts,
            &mut self.memos,
        )? {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(body.len() + 64);
        let mut written = false;
        walk(body, |n, _, start, end| {
            if n != field {
                out.extend_from_slice(&body[start..end]);
            } else if !std::mem::replace(&mut written, true) {
                attributes::write_list(&list, field, &mut out);
            }
            Ok(())
        })?;
        if !written {
            attributes::write_list(&list, field, &mut out);
        }
        Ok(Some(out))
    }
}

/// A length-delimited field being written into the output: its key and room for its
/// length are written first, the length itself once the body is complete. The room is
/// the size of the input's length, so it fits unless the body grew or shrank across a
/// varint size (a few spans in a thousand); then the body moves by a byte or two. The
/// output is so the same, byte for byte, as encoding the body apart and copying it in.
#[must_use = "a nested field must be closed to get its length"]
struct Nested {
    body_at: usize,
    room: usize,
}

impl Nested {
    fn open(out: &mut Vec<u8>, field: u32, input_len: usize) -> Self {
        encode_key(field, WireType::LengthDelimited, out);
        let room = encoded_len_varint(input_len as u64);
        out.resize(out.len() + room, 0);
        Self {
            body_at: out.len(),
            room,
        }
    }

    fn close(self, out: &mut Vec<u8>) {
        let len = out.len() - self.body_at;
        let needed = encoded_len_varint(len as u64);
        let length_at = self.body_at - self.room;
        if needed > self.room {
            out.splice(
                self.body_at..self.body_at,
                std::iter::repeat_n(0, needed - self.room),
            );
        } else if needed < self.room {
            out.drain(length_at + needed..self.body_at);
        }
        let mut slot = &mut out[length_at..length_at + needed];
        encode_varint(len as u64, &mut slot);
    }
}

/// The merge of every occurrence of the singular message field `field` in `body`.
fn merged(body: &[u8], field: u32) -> Result<Option<Cow<'_, [u8]>>, WireError> {
    let mut seen: Option<Cow<'_, [u8]>> = None;
    walk(body, |n, v, _, _| {
        if n == field {
            let part = len(v)?;
            match &mut seen {
                None => seen = Some(Cow::Borrowed(part)),
                Some(so_far) => so_far.to_mut().extend_from_slice(part),
            }
        }
        Ok(())
    })?;
    Ok(seen)
}

/// A `uint32` dropped count after dropping `more` (a varint read as sent: only its low 32
/// bits count, as prost reads it).
fn dropped_count(sent: u64, more: usize) -> u64 {
    u64::from((sent as u32).saturating_add(u32::try_from(more).unwrap_or(u32::MAX)))
}

fn put_len(out: &mut Vec<u8>, field: u32, body: &[u8]) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

fn put_varint(out: &mut Vec<u8>, field: u32, value: u64) {
    encode_key(field, WireType::Varint, out);
    encode_varint(value, out);
}

fn len(value: FieldValue<'_>) -> Result<&[u8], WireError> {
    match value {
        FieldValue::Len(body) => Ok(body),
        _ => Err(wrong_type()),
    }
}

fn varint(value: FieldValue<'_>) -> Result<u64, WireError> {
    match value {
        FieldValue::Varint(v) => Ok(v),
        _ => Err(wrong_type()),
    }
}

#[cold]
fn wrong_type() -> WireError {
    WireError(
        "a field has the wrong wire type (the request passed the wire scan; this is a bug)".into(),
    )
}
