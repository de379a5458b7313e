//! The native dialect (Reflect S2S, `specs/reflect-s2s.md`): `POST /s2s/event` with one JSON
//! event, `POST /s2s/events/bulk` with `{"events": [...]}` of at most [`MAX_BULK`].
//!
//! Known fields map to the canonical event; every unknown top-level field is kept in `props`
//! (a name that is also a key of the sender's own `props` object is refused as
//! `props_invalid`, since keeping both would need a rename the sender did not ask for).
//! Stored `props` keep the sender's order: the `props` object's keys as written, then the
//! unknown top-level fields as written.
//!
//! This is the hot path of the appliance, so the body is read in one pass without a JSON
//! tree: each known field is classified as it is read (strings borrowed from the body unless
//! they had escapes), `props`, `context` and unknown fields are written straight out as the
//! JSON text that is stored ([`canon`]), with the same strictness as
//! [`json::parse`](super::json::parse). Only after the whole body parsed are the fields
//! judged, in a fixed order (`Raw::judge`), so the answer is the same reason the
//! straightforward reading gives. That reading, a decoder over a `serde_json::Value` tree,
//! lives with the tests (`reference`) and property tests compare the two on generated and
//! damaged events.

#[cfg(test)]
pub(crate) mod reference;

use super::canon::{self, Canon, Key, KeySet};
use crate::event::{Checks, Field, Reason};
use crate::http::Reply;
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode, Uri};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The native Reflect dialect (`/s2s/event`, `/s2s/events/bulk`).
pub struct Native;

impl super::Dialect for Native {
    const SOURCE: &'static str = "reflect";
    const RESULT_REASONS: super::ResultReasons = super::ResultReasons::Reflect;
    const DRY_RUN_FIELD: bool = true;

    /// `{"error": "<reason>"}`.
    fn error(reason: Reason, status: StatusCode) -> Reply {
        Reply::json(status, &serde_json::json!({ "error": reason.tag() }))
    }
}

/// What a native request's line and headers say: its endpoint and bearer token.
pub struct Head {
    endpoint: Endpoint,
    token: Option<String>,
}

/// Which native endpoint a request is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /s2s/event`.
    Single,
    /// `POST /s2s/events/bulk`.
    Bulk,
}

impl super::Ingest for Native {
    type Head = Head;
    type Auth = ();
    type Then = ();
    type Event<'a> = Event<'a>;
    const AUDIT_PREFIX: &'static str = "s2s";
    const BATCH_AUDIT_PREFIX: &'static str = "s2s/bulk";

    fn head(_: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Head, Reason> {
        let endpoint = match uri.path().trim_end_matches('/') {
            "/s2s/events/bulk" => Endpoint::Bulk,
            _ => Endpoint::Single,
        };
        let token = super::bearer(headers).map(str::to_owned);
        Ok(Head { endpoint, token })
    }

    fn body_limit(head: &Head) -> super::BodyLimit {
        match head.endpoint {
            Endpoint::Single => super::BodyLimit::Single,
            Endpoint::Bulk => super::BodyLimit::Bulk,
        }
    }

    /// The bearer key, checked before the body is read.
    fn early_credential<L: super::Lookup>(
        lookup: &mut L,
        head: &Head,
    ) -> Result<Option<L::Key>, Reason> {
        let token = head.token.as_deref().ok_or(Reason::MissingBearerToken)?;
        lookup.key(token).map(Some)
    }

    fn credential<L: super::Lookup>(
        _: &mut L,
        _: &Head,
        early: Option<L::Key>,
        _: &[u8],
        _: u64,
    ) -> Result<super::Credited<L::Key, ()>, Reason> {
        let key = early.ok_or(Reason::MissingBearerToken)?;
        Ok(super::Credited { key, auth: () })
    }

    fn decode_batch<'a>(
        head: &Head,
        body: &'a [u8],
        _: u64,
    ) -> Result<Option<Vec<BulkItem<'a>>>, Reason> {
        match head.endpoint {
            Endpoint::Bulk => decode_bulk(body).map(Some),
            Endpoint::Single => Ok(None),
        }
    }

    const KEEPS: bool = true;

    /// A kept item is one event object, as `/s2s/event` takes it.
    fn redecode<'a, L: super::Lookup>(
        _: &mut L,
        _: &L::Key,
        item: &'a [u8],
        event_id: &str,
        _: u64,
    ) -> Result<(Event<'a>, Option<super::ItemGuard>), Reason> {
        let mut event = decode_single(item)?;
        event.event_id = Some(Cow::Owned(event_id.to_owned()));
        Ok((event, None))
    }

    fn decode<'a, L: super::Lookup>(
        _: &mut L,
        _: &Head,
        (): (),
        body: &'a [u8],
        _: u64,
    ) -> Result<super::Decoded<(), Event<'a>>, Reason> {
        Ok(super::Decoded {
            draft: decode_single(body)?,
            guard: None,
            then: (),
        })
    }

    /// `{"accepted": 1, "event_id", "audit_key"}`; a retry of a stored event `{"accepted": 0,
    /// "duplicate": true, "event_id", "audit_key"}` with the original's audit key.
    fn ok<L: super::Lookup>(
        lookup: &mut L,
        (): (),
        stored: &super::Stored,
    ) -> Result<Reply, Reason> {
        Ok(match stored.duplicate_of {
            None => Reply::json_text(StatusCode::OK, accepted(stored.event_id, stored.audit_key)),
            Some(seq) => {
                let mut body = serde_json::json!({ "accepted": 0, "duplicate": true, "event_id": stored.event_id });
                if let Some(original) = lookup.audit_key_of(seq) {
                    body["audit_key"] = serde_json::Value::String(original);
                }
                Reply::json(StatusCode::OK, &body)
            }
        })
    }
}

/// The answer to an accepted single event, `{"accepted": 1, "event_id", "audit_key"}`,
/// written as text.
pub fn accepted(event_id: &str, audit_key: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(48 + event_id.len() + audit_key.len());
    body.extend_from_slice(br#"{"accepted":1,"event_id":"#);
    canon::write_str(&mut body, event_id);
    body.extend_from_slice(br#","audit_key":"#);
    canon::write_str(&mut body, audit_key);
    body.push(b'}');
    body
}

/// Most events in one bulk request.
pub const MAX_BULK: usize = 1000;

/// A decoded, not yet validated native event. Strings borrow from the body unless they had
/// escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// `None`: the sender gave no id; one is generated in [`Event::validate`].
    pub event_id: Option<Cow<'a, str>>,
    pub event_name: Cow<'a, str>,
    pub event_ts_ms: i64,
    pub install_uuid: Cow<'a, str>,
    pub user_id: Option<Cow<'a, str>>,
    pub anonymous_id: Option<Cow<'a, str>>,
    /// Other identifiers, in the order given (`null` ones left out).
    pub ids: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub revenue: Option<f64>,
    pub currency: Option<Cow<'a, str>>,
    pub transaction_id: Option<Cow<'a, str>>,
    pub product_id: Option<Cow<'a, str>>,
    /// The stored JSON text of `props`, the unknown top-level fields appended; `{}` if none.
    pub props: Cow<'a, str>,
    /// The stored JSON text of `context`; `{}` if none.
    pub context: Cow<'a, str>,
}

/// A native event that passed [`Event::validate`] and carries its final event id.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent<'a>(Event<'a>);

impl<'a> ValidEvent<'a> {
    pub fn get(&self) -> &Event<'a> {
        &self.0
    }

    pub fn event_id(&self) -> &str {
        self.0.event_id.as_deref().unwrap_or_default()
    }
}

impl<'a> Event<'a> {
    /// The checks of [`Draft::validate`](crate::event::Draft::validate), in the same order:
    /// fixes the event id (generating one with `new_id` when the sender gave none) and
    /// upper-cases the currency.
    pub fn validate(mut self, new_id: impl FnOnce() -> String) -> Result<ValidEvent<'a>, Reason> {
        Checks {
            event_id: self.event_id.as_deref(),
            event_name: &self.event_name,
            install_uuid: Some(&self.install_uuid),
            user_id: self.user_id.as_deref(),
            anonymous_id: self.anonymous_id.as_deref(),
            transaction_id: self.transaction_id.as_deref(),
            product_id: self.product_id.as_deref(),
            ids: &self.ids,
            revenue: self.revenue,
            currency: self.currency.as_deref(),
        }
        .run()?;
        if self.event_id.is_none() {
            self.event_id = Some(Cow::Owned(new_id()));
        }
        if let Some(c) = &mut self.currency
            && c.bytes().any(|b| b.is_ascii_lowercase())
        {
            c.to_mut().make_ascii_uppercase();
        }
        Ok(ValidEvent(self))
    }
}

/// One event of a bulk request: its `event_id` when it had a string one (so that a rejection
/// can name it) and its decoding.
pub type BulkItem<'a> = super::BatchItem<'a, Event<'a>>;

/// Decodes the body of `POST /s2s/event`.
pub fn decode_single(body: &[u8]) -> Result<Event<'_>, Reason> {
    let mut de = serde_json::Deserializer::from_str(utf8(body)?);
    let item = de
        .deserialize_any(EventVisitor)
        .and_then(|item| de.end().map(|()| item))
        .map_err(|_| Reason::BadJson)?;
    item.draft
}

/// Decodes the body of `POST /s2s/events/bulk`: the request fails as a whole only when it is
/// not a JSON object with a non-empty `events` array of at most [`MAX_BULK`]; each event then
/// gets its own result (an event that is not an object is `bad_json`).
pub fn decode_bulk(body: &[u8]) -> Result<Vec<BulkItem<'_>>, Reason> {
    let mut de = serde_json::Deserializer::from_str(utf8(body)?);
    let events = de
        .deserialize_any(BulkVisitor {
            capacity: (body.len() / 128 + 1).min(MAX_BULK),
        })
        .and_then(|events| de.end().map(|()| events))
        .map_err(|_| Reason::BadJson)?;
    match events {
        None | Some(Events::Null) => Err(Reason::Required(Field::Events)),
        Some(Events::Other) => Err(Reason::Invalid(Field::Events)),
        Some(Events::Array { items, .. }) if items.is_empty() => {
            Err(Reason::Required(Field::Events))
        }
        Some(Events::Array { overflow: true, .. }) => Err(Reason::TooManyEvents),
        Some(Events::Array { items, .. }) => Ok(items),
    }
}

/// The body as text: JSON is UTF-8, so a body that is not is `bad_json` however it would
/// parse. Checked once up front, serde_json then does not check each string again.
fn utf8(body: &[u8]) -> Result<&str, Reason> {
    std::str::from_utf8(body).map_err(|_| Reason::BadJson)
}

/// The known top-level fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    EventName,
    EventTsMs,
    InstallUuid,
    Revenue,
    EventId,
    UserId,
    AnonymousId,
    Currency,
    TransactionId,
    ProductId,
    Ids,
    Context,
    Props,
}

const KNOWN: usize = 13;

impl Known {
    fn of(name: &str) -> Option<Known> {
        Some(match name {
            "event_name" => Known::EventName,
            "event_ts_ms" => Known::EventTsMs,
            "install_uuid" => Known::InstallUuid,
            "revenue" => Known::Revenue,
            "event_id" => Known::EventId,
            "user_id" => Known::UserId,
            "anonymous_id" => Known::AnonymousId,
            "currency" => Known::Currency,
            "transaction_id" => Known::TransactionId,
            "product_id" => Known::ProductId,
            "ids" => Known::Ids,
            "context" => Known::Context,
            "props" => Known::Props,
            _ => return None,
        })
    }
}

/// What a field's value was, as far as the decoder cares.
#[derive(Debug)]
enum Val<'de> {
    /// `null` (or a float serde_json could not represent, which `json::parse` makes `null`).
    Null,
    Str(Cow<'de, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    /// `ids`: the string-valued entries in order, and whether every value was a string or
    /// `null`.
    Ids(Vec<(Cow<'de, str>, Cow<'de, str>)>, bool),
    /// `props`/`context`: the object's keys (its text went to the field's buffer).
    Object(KeySet<'de>),
    /// A boolean, an array, or an object where none is expected (checked, not kept).
    Other,
}

/// How to read a field's value.
enum Mode<'o> {
    Scalar,
    Ids,
    /// An object is written as text to this buffer.
    Object(&'o mut Vec<u8>),
}

struct Classify<'o>(Mode<'o>);

impl<'de> DeserializeSeed<'de> for Classify<'_> {
    type Value = Val<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Classify<'_> {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Val<'de>, E> {
        Ok(Val::Other)
    }

    fn visit_i64<E>(self, v: i64) -> Result<Val<'de>, E> {
        Ok(Val::I64(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Val<'de>, E> {
        Ok(Val::U64(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Val<'de>, E> {
        Ok(if v.is_finite() {
            Val::F64(v)
        } else {
            Val::Null
        })
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_none<E>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Val<'de>, A::Error> {
        canon::skip_seq(seq)?;
        Ok(Val::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
        match self.0 {
            Mode::Scalar => {
                canon::skip_map(map)?;
                Ok(Val::Other)
            }
            Mode::Object(out) => {
                // Typical props are a few dozen bytes: one allocation instead of four.
                out.reserve(128);
                Ok(Val::Object(canon::canon_map(map, out)?))
            }
            Mode::Ids => {
                let mut keys = KeySet::default();
                let mut ids = Vec::new();
                let mut all_strings = true;
                while let Some(key) = map.next_key_seed(Key)? {
                    let value = map.next_value_seed(Classify(Mode::Scalar))?;
                    if !keys.insert(key.clone()) {
                        return Err(canon::duplicate());
                    }
                    match value {
                        Val::Null => {}
                        Val::Str(s) => ids.push((key, s)),
                        _ => all_strings = false,
                    }
                }
                Ok(Val::Ids(ids, all_strings))
            }
        }
    }
}

/// One event object as read, before it is judged.
#[derive(Default)]
struct Raw<'de> {
    /// Each known field's value.
    known: [Option<Val<'de>>; KNOWN],
    props_text: Vec<u8>,
    context_text: Vec<u8>,
    /// Unknown fields in the sender's order: name, and the range of their value's text in
    /// `unknown_text`.
    unknown: Vec<(Cow<'de, str>, std::ops::Range<usize>)>,
    unknown_keys: KeySet<'de>,
    unknown_text: Vec<u8>,
}

/// Reads one event object (the caller has seen its `{`).
fn read_event<'de, A: MapAccess<'de>>(mut map: A) -> Result<BulkItem<'de>, A::Error> {
    let mut raw = Raw::default();
    while let Some(key) = map.next_key_seed(Key)? {
        match Known::of(&key) {
            Some(known) => {
                let value = match known {
                    Known::Ids => map.next_value_seed(Classify(Mode::Ids))?,
                    Known::Props => {
                        map.next_value_seed(Classify(Mode::Object(&mut raw.props_text)))?
                    }
                    Known::Context => {
                        map.next_value_seed(Classify(Mode::Object(&mut raw.context_text)))?
                    }
                    _ => map.next_value_seed(Classify(Mode::Scalar))?,
                };
                let slot = &mut raw.known[known as usize];
                if slot.is_some() {
                    return Err(canon::duplicate());
                }
                *slot = Some(value);
            }
            None => {
                let start = raw.unknown_text.len();
                map.next_value_seed(Canon::new(&mut raw.unknown_text))?;
                if !raw.unknown_keys.insert(key.clone()) {
                    return Err(canon::duplicate());
                }
                raw.unknown.push((key, start..raw.unknown_text.len()));
            }
        }
    }
    let event_id = match &raw.known[Known::EventId as usize] {
        Some(Val::Str(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(BulkItem {
        event_id,
        draft: raw.judge(),
    })
}

impl<'de> Raw<'de> {
    fn take(&mut self, known: Known) -> Option<Val<'de>> {
        self.known[known as usize].take()
    }

    /// An optional string field: `null` counts as absent, any other type is invalid.
    fn string(&mut self, known: Known, field: Field) -> Result<Option<Cow<'de, str>>, Reason> {
        match self.take(known) {
            None | Some(Val::Null) => Ok(None),
            Some(Val::Str(s)) => Ok(Some(s)),
            Some(_) => Err(Reason::Invalid(field)),
        }
    }

    /// The event, or the first reason it is refused for. The order of the checks decides
    /// which reason a sender sees first; the reference decoder checks in the same order.
    fn judge(&mut self) -> Result<Event<'de>, Reason> {
        let event_name = self
            .string(Known::EventName, Field::EventName)?
            .filter(|s| !s.is_empty())
            .ok_or(Reason::Required(Field::EventName))?;
        let event_ts_ms = match self.take(Known::EventTsMs) {
            None | Some(Val::Null) => return Err(Reason::Required(Field::EventTsMs)),
            Some(Val::U64(n)) => i64::try_from(n).map_err(|_| Reason::Invalid(Field::EventTsMs))?,
            Some(Val::I64(n)) if n >= 0 => n,
            Some(_) => return Err(Reason::Invalid(Field::EventTsMs)),
        };
        let install_uuid = self
            .string(Known::InstallUuid, Field::InstallUuid)?
            .filter(|s| !s.is_empty())
            .ok_or(Reason::Required(Field::InstallUuid))?;
        let revenue = match self.take(Known::Revenue) {
            None | Some(Val::Null) => None,
            Some(Val::U64(n)) => Some(n as f64),
            Some(Val::I64(n)) => Some(n as f64),
            Some(Val::F64(f)) => Some(f),
            Some(_) => return Err(Reason::Invalid(Field::Revenue)),
        };
        let event_id = self.string(Known::EventId, Field::EventId)?;
        let user_id = self.string(Known::UserId, Field::UserId)?;
        let anonymous_id = self.string(Known::AnonymousId, Field::AnonymousId)?;
        let currency = self.string(Known::Currency, Field::Currency)?;
        let transaction_id = self.string(Known::TransactionId, Field::TransactionId)?;
        let product_id = self.string(Known::ProductId, Field::ProductId)?;
        let ids = match self.take(Known::Ids) {
            None | Some(Val::Null) => Vec::new(),
            Some(Val::Ids(ids, true)) => ids,
            Some(_) => return Err(Reason::Invalid(Field::Ids)),
        };
        let has_context = self.object(Known::Context)?.is_some();
        let props_keys = self.object(Known::Props)?;
        let context = if has_context {
            text(std::mem::take(&mut self.context_text))?
        } else {
            Cow::Borrowed("{}")
        };
        let props = self.props(props_keys)?;
        Ok(Event {
            event_id,
            event_name,
            event_ts_ms,
            install_uuid,
            user_id,
            anonymous_id,
            ids,
            revenue,
            currency,
            transaction_id,
            product_id,
            props,
            context,
        })
    }

    /// `props`/`context`: absent or `null` is `None`, an object its keys; anything else is
    /// `props_invalid` (for both).
    fn object(&mut self, known: Known) -> Result<Option<KeySet<'de>>, Reason> {
        match self.take(known) {
            None | Some(Val::Null) => Ok(None),
            Some(Val::Object(keys)) => Ok(Some(keys)),
            Some(_) => Err(Reason::Invalid(Field::Props)),
        }
    }

    /// The stored `props` text: the sender's object, then the unknown top-level fields, each
    /// in the order the sender wrote them.
    fn props(&mut self, keys: Option<KeySet<'de>>) -> Result<Cow<'de, str>, Reason> {
        let mut out = match keys {
            Some(_) => std::mem::take(&mut self.props_text),
            None if self.unknown.is_empty() => return Ok(Cow::Borrowed("{}")),
            None => b"{}".to_vec(),
        };
        let keys = keys.unwrap_or_default();
        for (name, range) in &self.unknown {
            if keys.contains(name) {
                return Err(Reason::Invalid(Field::Props));
            }
            out.pop(); // the closing brace
            if out.len() > 1 {
                out.push(b',');
            }
            canon::write_str(&mut out, name);
            out.push(b':');
            out.extend_from_slice(&self.unknown_text[range.clone()]);
            out.push(b'}');
        }
        text(out)
    }
}

fn text<'de>(bytes: Vec<u8>) -> Result<Cow<'de, str>, Reason> {
    // Always UTF-8 (strings of a `str` body and ASCII punctuation); checked, not assumed.
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| Reason::BadJson)
}

/// A single event body: an object, read by [`read_event`].
struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = BulkItem<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BulkItem<'de>, A::Error> {
        read_event(map)
    }
}

/// The `events` member of a bulk body.
enum Events<'de> {
    Null,
    Array {
        /// The first [`MAX_BULK`] events.
        items: Vec<BulkItem<'de>>,
        /// More than [`MAX_BULK`] (the rest were checked, not decoded).
        overflow: bool,
    },
    Other,
}

/// A bulk body: an object whose `events` member is returned; other members are checked.
struct BulkVisitor {
    capacity: usize,
}

impl<'de> Visitor<'de> for BulkVisitor {
    type Value = Option<Events<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a bulk object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = KeySet::default();
        let mut events = None;
        let mut sink = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            if key == "events" {
                events = Some(map.next_value_seed(EventsSeed {
                    capacity: self.capacity,
                })?);
            } else {
                sink.clear();
                map.next_value_seed(Canon::new(&mut sink))?;
            }
            if !keys.insert(key) {
                return Err(canon::duplicate());
            }
        }
        Ok(events)
    }
}

struct EventsSeed {
    capacity: usize,
}

impl<'de> DeserializeSeed<'de> for EventsSeed {
    type Value = Events<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Events<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventsSeed {
    type Value = Events<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Events<'de>, E> {
        Ok(Events::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Events<'de>, E> {
        Ok(Events::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Events<'de>, E> {
        Ok(Events::Other)
    }

    fn visit_f64<E>(self, v: f64) -> Result<Events<'de>, E> {
        // `json::parse` makes a non-finite float `null`.
        Ok(if v.is_finite() {
            Events::Other
        } else {
            Events::Null
        })
    }

    fn visit_str<E>(self, _: &str) -> Result<Events<'de>, E> {
        Ok(Events::Other)
    }

    fn visit_unit<E>(self) -> Result<Events<'de>, E> {
        Ok(Events::Null)
    }

    fn visit_none<E>(self) -> Result<Events<'de>, E> {
        Ok(Events::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Events<'de>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Events<'de>, A::Error> {
        canon::skip_map(map)?;
        Ok(Events::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Events<'de>, A::Error> {
        let mut items = Vec::with_capacity(self.capacity);
        let mut overflow = false;
        let mut sink = Vec::new();
        loop {
            if items.len() < MAX_BULK {
                match seq.next_element_seed(ItemSeed)? {
                    Some(item) => items.push(item),
                    None => break,
                }
            } else {
                sink.clear();
                match seq.next_element_seed(Canon::new(&mut sink))? {
                    Some(()) => overflow = true,
                    None => break,
                }
            }
        }
        Ok(Events::Array { items, overflow })
    }
}

/// One element of `events`: an event object, or anything else (`bad_json` for that event).
struct ItemSeed;

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = BulkItem<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<BulkItem<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl ItemSeed {
    fn not_an_object<'de, E>(self) -> Result<BulkItem<'de>, E> {
        Ok(BulkItem {
            event_id: None,
            draft: Err(Reason::BadJson),
        })
    }
}

impl<'de> Visitor<'de> for ItemSeed {
    type Value = BulkItem<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event")
    }

    fn visit_bool<E>(self, _: bool) -> Result<BulkItem<'de>, E> {
        self.not_an_object()
    }

    fn visit_i64<E>(self, _: i64) -> Result<BulkItem<'de>, E> {
        self.not_an_object()
    }

    fn visit_u64<E>(self, _: u64) -> Result<BulkItem<'de>, E> {
        self.not_an_object()
    }

    fn visit_f64<E>(self, _: f64) -> Result<BulkItem<'de>, E> {
        self.not_an_object()
    }

    fn visit_str<E>(self, _: &str) -> Result<BulkItem<'de>, E> {
        self.not_an_object()
    }

    fn visit_unit<E>(self) -> Result<BulkItem<'de>, E> {
        self.not_an_object()
    }

    fn visit_none<E>(self) -> Result<BulkItem<'de>, E> {
        self.not_an_object()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<BulkItem<'de>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<BulkItem<'de>, A::Error> {
        canon::skip_seq(seq)?;
        self.not_an_object()
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BulkItem<'de>, A::Error> {
        read_event(map)
    }
}
