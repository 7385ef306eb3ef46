//! Rewrites the bytes of an encoded `ExportTraceServiceRequest` by a transform's rules, on
//! the wire: every message the rules leave alone is copied as it came, and only the
//! attribute lists, events and links a rule changed are encoded again, so a request costs
//! little more than one copy. Not what rules do to a list (`attributes`).
//!
//! A singular message sent more than once (a resource, a scope) is written once, as the
//! merge of its occurrences, which is what protobuf decodes it to anyway.

use std::borrow::Cow;

use prost::encoding::{WireType, encode_key, encode_varint};

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
}

impl<'t> Rewrite<'t> {
    pub fn new(transform: &'t SpanTransform) -> Self {
        Self {
            transform,
            counts: vec![0; transform.rules.len()],
            memos: (0..transform.rules.len())
                .map(|_| KeyMemo::default())
                .collect(),
        }
    }

    /// The rewritten request; `None` when no rule changed anything.
    pub fn request(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
        let mut splice = Splice::new(body);
        walk(body, |n, v, start, end| {
            if n == 1
                && let Some(new) = self.resource_spans(len(v)?)?
            {
                splice.replace(start, end, |out| put_len(out, 1, &new));
            }
            Ok(())
        })?;
        Ok(splice.finish())
    }

    fn resource_spans(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
        let t = self.transform;
        let rules = &t.resource;
        let resource = if rules.is_empty() {
            None
        } else {
            let merged = merged(body, 1)?;
            self.attributes_in(merged.as_deref().unwrap_or(&[]), 1, rules)?
        };
        let mut splice = Splice::new(body);
        let mut written = false;
        walk(body, |n, v, start, end| {
            match (n, &resource) {
                (1, Some(new)) => splice.replace(start, end, |out| {
                    if !std::mem::replace(&mut written, true) {
                        put_len(out, 1, new);
                    }
                }),
                (2, _) => {
                    if let Some(new) = self.scope_spans(len(v)?)? {
                        splice.replace(start, end, |out| put_len(out, 2, &new));
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        if let Some(new) = &resource
            && !written
        {
            splice.replace(body.len(), body.len(), |out| put_len(out, 1, new));
        }
        Ok(splice.finish())
    }

    fn scope_spans(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
        let t = self.transform;
        let rules = &t.scope;
        let scope = if rules.is_empty() {
            None
        } else {
            let merged = merged(body, 1)?;
            self.attributes_in(merged.as_deref().unwrap_or(&[]), 3, rules)?
        };
        let mut splice = Splice::new(body);
        let mut written = false;
        walk(body, |n, v, start, end| {
            match (n, &scope) {
                (1, Some(new)) => splice.replace(start, end, |out| {
                    if !std::mem::replace(&mut written, true) {
                        put_len(out, 1, new);
                    }
                }),
                (2, _) => {
                    if let Some(new) = self.span(len(v)?)? {
                        splice.replace(start, end, |out| put_len(out, 2, &new));
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        if let Some(new) = &scope
            && !written
        {
            splice.replace(body.len(), body.len(), |out| put_len(out, 1, new));
        }
        Ok(splice.finish())
    }

    fn span(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, WireError> {
        let t = self.transform;
        let (drop_events, drop_links) = (t.drop_events, t.drop_links);
        // Room for a typical span's attributes, so the list grows once, not three times.
        let mut attributes = Vec::with_capacity(if t.span.is_empty() { 0 } else { 16 });
        let (mut events, mut links) = (Vec::new(), Vec::new());
        let (mut event_count, mut link_count) = (0usize, 0usize);
        let (mut dropped_events, mut dropped_links) = (0u64, 0u64);
        walk(body, |n, v, _, _| {
            match n {
                9 if !t.span.is_empty() => attributes.push(Attribute::parse(len(v)?)?),
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
            &mut attributes,
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
            return Ok(None);
        }
        if let Some(rule) = drop_events.filter(|_| drops_events) {
            self.counts[rule] += event_count as u64;
        }
        if let Some(rule) = drop_links.filter(|_| drops_links) {
            self.counts[rule] += link_count as u64;
        }
        let mut out = Vec::with_capacity(body.len() + 64);
        let (mut attributes_written, mut event, mut link) = (false, 0, 0);
        walk(body, |n, _, start, end| {
            let raw = &body[start..end];
            match n {
                9 if attributes_changed => {
                    if !std::mem::replace(&mut attributes_written, true) {
                        attributes::write_list(&attributes, 9, &mut out);
                    }
                }
                11 | 12 if drops_events => {}
                13 | 14 if drops_links => {}
                11 => {
                    match events.get(event).and_then(Option::as_ref) {
                        Some(new) => put_len(&mut out, 11, new),
                        None => out.extend_from_slice(raw),
                    }
                    event += 1;
                }
                13 => {
                    match links.get(link).and_then(Option::as_ref) {
                        Some(new) => put_len(&mut out, 13, new),
                        None => out.extend_from_slice(raw),
                    }
                    link += 1;
                }
                _ => out.extend_from_slice(raw),
            }
            Ok(())
        })?;
        if attributes_changed && !attributes_written {
            attributes::write_list(&attributes, 9, &mut out);
        }
        // What was dropped is counted in the span, as OTLP asks of anything that drops.
        if drops_events {
            put_varint(&mut out, 12, dropped_count(dropped_events, event_count));
        }
        if drops_links {
            put_varint(&mut out, 14, dropped_count(dropped_links, link_count));
        }
        Ok(Some(out))
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

/// Builds a rewritten message only once something in it changes: until then nothing is
/// copied; then the untouched stretches between replaced fields are copied whole.
struct Splice<'a> {
    source: &'a [u8],
    out: Option<Vec<u8>>,
    copied: usize,
}

impl<'a> Splice<'a> {
    fn new(source: &'a [u8]) -> Self {
        Self {
            source,
            out: None,
            copied: 0,
        }
    }

    /// Replaces `source[start..end]` by what `write` writes.
    fn replace(&mut self, start: usize, end: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let source = self.source;
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(source.len() + source.len() / 8 + 64));
        out.extend_from_slice(&source[self.copied..start]);
        write(out);
        self.copied = end;
    }

    fn finish(self) -> Option<Vec<u8>> {
        let mut out = self.out?;
        out.extend_from_slice(&self.source[self.copied..]);
        Some(out)
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
