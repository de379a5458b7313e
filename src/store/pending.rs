//! What the writer accepts: one event that passed validation, encoded as it will be stored.
//!
//! A [`Pending`] is made only from what validation produced: an [`event::ValidEvent`] (every
//! dialect's `Draft` after `Draft::validate`) or, on the native fast path, a
//! [`reflect::ValidEvent`] (borrowed from the request body and written with no owned copy of
//! its strings). Its fields are private, so nothing else can hand the writer an event that
//! skipped validation. Afterwards only its dialect state ([`Guard`]) can be set and its
//! credentials redacted.

use super::codec::{EVENT_V1, EventRecord, decode_event, encode_event};
use super::read::KeyInfo;
use super::tables::IDENTITY_LEN;
use crate::auth::redact;
use crate::dialect::reflect;
use crate::event;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// Per-event state a dialect needs decided atomically with the append (so that concurrent
/// requests cannot race past it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Guard {
    /// Adjust's ordering rule: refuse the event ([`Outcome::OutOfOrder`](super::writer::Outcome::OutOfOrder)) when `ts_ms` is
    /// earlier than the last accepted one under `key` in [`ORDERING`](super::tables::ORDERING); on acceptance `ts_ms`
    /// becomes the last one (it never moves back).
    /// On acceptance, `skan` (a SKAdNetwork conversion value the event earned) is merged
    /// into the device's stored value in [`SKAN_VALUES`](super::tables::SKAN_VALUES) ([`crate::skan::merge`]).
    NotBefore {
        key: Vec<u8>,
        ts_ms: i64,
        skan: Option<SkanUpdate>,
    },
    /// GameRebellion sessions: on acceptance, `ts_ms` is the start of session `key` in
    /// [`SESSIONS`](super::tables::SESSIONS), and the session is the latest open one of its identifiers (`identity`,
    /// when it had any) in [`OPEN_SESSIONS`](super::tables::OPEN_SESSIONS). A restart of the same session id replaces it.
    SessionStart {
        key: Vec<u8>,
        ts_ms: i64,
        identity: Option<[u8; IDENTITY_LEN]>,
    },
    /// On acceptance, session `key` is forgotten (in both tables).
    SessionEnd { key: Vec<u8> },
}

/// A conversion value an Adjust event earned for device `key` ([`skan_key`](super::tables::skan_key)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkanUpdate {
    pub key: Vec<u8>,
    pub value: crate::skan::Value,
}

/// One event ready for the log: its id (for dedupe) and its encoded record. Its identity
/// links are not written here: the identity indexer (`crate::identity::indexer`, a thread of its own)
/// catches up from the log.
///
/// Serializable for cluster mode only: a node hands a validated event to the partition's
/// owner, and an owner's committed events are read back from the engine's stream (both
/// written by inlet nodes after validation).
#[derive(Debug, Serialize, Deserialize)]
pub struct Pending {
    event_id: String,
    record: Vec<u8>,
    /// A condition checked, and state kept, in the same transaction as the event.
    guard: Option<Guard>,
}

impl Pending {
    /// A validated canonical event, encoded as it will be stored.
    pub fn from_valid(
        key: &KeyInfo,
        source: &str,
        received_at_ms: u64,
        event: event::ValidEvent,
        audit_key: &str,
    ) -> Pending {
        let d = event.into_inner();
        let event_id = d.event_id.unwrap_or_default();
        let record = EventRecord {
            received_at_ms,
            tenant: key.tenant.clone(),
            app: key.app.clone(),
            key_id: key.key_id,
            source: source.to_owned(),
            event_id: event_id.clone(),
            event_name: d.event_name,
            event_ts_ms: d.event_ts_ms,
            install_uuid: d.install_uuid,
            user_id: d.user_id,
            anonymous_id: d.anonymous_id,
            ids: d.ids,
            revenue: d.revenue,
            currency: d.currency,
            transaction_id: d.transaction_id,
            product_id: d.product_id,
            props: Value::Object(d.props).to_string(),
            context: Value::Object(d.context).to_string(),
            audit_key: audit_key.to_owned(),
            interned: Default::default(),
        };
        Pending {
            event_id,
            record: encode_event(&record),
            guard: None,
        }
    }

    /// A validated native event, encoded as it will be stored: the same bytes as
    /// [`Pending::from_valid`] gives for the same event decoded as a `Draft`
    /// (`ingest::native`'s tests hold the two together).
    pub fn from_native(
        key: &KeyInfo,
        source: &str,
        received_at_ms: u64,
        event: &reflect::ValidEvent<'_>,
        audit_key: &str,
    ) -> Pending {
        let d = event.get();
        let record = RecordRef {
            received_at_ms,
            tenant: &key.tenant,
            app: &key.app,
            key_id: key.key_id,
            source,
            event_id: event.event_id(),
            event_name: &d.event_name,
            event_ts_ms: d.event_ts_ms,
            install_uuid: Some(&d.install_uuid),
            user_id: d.user_id.as_deref(),
            anonymous_id: d.anonymous_id.as_deref(),
            ids: &d.ids,
            revenue: d.revenue,
            currency: d.currency.as_deref(),
            transaction_id: d.transaction_id.as_deref(),
            product_id: d.product_id.as_deref(),
            props: &d.props,
            context: &d.context,
            audit_key,
        };
        let strings = [
            record.tenant,
            record.app,
            record.source,
            record.event_id,
            record.event_name,
            record.install_uuid.unwrap_or_default(),
            record.user_id.unwrap_or_default(),
            record.anonymous_id.unwrap_or_default(),
            record.currency.unwrap_or_default(),
            record.transaction_id.unwrap_or_default(),
            record.product_id.unwrap_or_default(),
            record.props,
            record.context,
            record.audit_key,
        ];
        // Varints and tags take at most 64 bytes besides the strings (each with a short length).
        let size = 64
            + strings.iter().map(|s| s.len() + 2).sum::<usize>()
            + d.ids
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.push(EVENT_V1);
        postcard::to_io(&record, &mut out).expect("writing to a Vec cannot fail");
        Pending {
            event_id: record.event_id.to_owned(),
            record: out,
            guard: None,
        }
    }

    /// An already encoded record, for tests of the writer and the store.
    #[cfg(test)]
    pub(crate) fn for_test(event_id: &str, record: Vec<u8>) -> Pending {
        Pending {
            event_id: event_id.to_owned(),
            record,
            guard: None,
        }
    }

    /// Sets the dialect state decided in the event's commit.
    pub fn set_guard(&mut self, guard: Option<Guard>) {
        self.guard = guard;
    }

    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// The encoded record ([`super::codec::decode_event`] reads it).
    pub fn record(&self) -> &[u8] {
        &self.record
    }

    /// Moves the encoded record out (the writer, once it is committed), leaving it empty.
    pub fn take_record(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.record)
    }

    pub fn guard(&self) -> Option<&Guard> {
        self.guard.as_ref()
    }

    /// Lets `f` change the record before it is stored (`privacy::store_less`); encoded again
    /// only when `f` says it changed something.
    pub fn map_record(&mut self, f: impl FnOnce(&mut EventRecord) -> bool) {
        if let Ok(mut r) = decode_event(&self.record)
            && f(&mut r)
        {
            self.record = super::codec::encode_event(&r);
        }
    }

    /// Lets `f` replace the record's `context` text (enrichment): `f` reads the stored text
    /// and, to change it, writes the new text to its buffer and says so. The new text is
    /// spliced into the encoded bytes where the old one was: the rest of the record is
    /// neither decoded nor encoded again. `scratch` is `f`'s buffer, reused across events.
    pub fn map_context(&mut self, scratch: &mut String, f: impl FnOnce(&str, &mut String) -> bool) {
        let Some((at, start, end)) = context_span(&self.record) else {
            return; // encoded by this process a moment ago: cannot happen
        };
        let Ok(text) = std::str::from_utf8(&self.record[start..end]) else {
            return;
        };
        scratch.clear();
        if !f(text, scratch) {
            return;
        }
        let (mut len, mut k, mut n) = ([0u8; 10], 0, scratch.len());
        while n >= 0x80 {
            len[k] = (n as u8) | 0x80;
            n >>= 7;
            k += 1;
        }
        len[k] = n as u8;
        // Moved in place: the tail once, then the length and the text (one allocation at
        // most, of the size needed: the record was encoded with no room to spare).
        let (new, old, tail) = (k + 1 + scratch.len(), end - at, self.record.len() - end);
        if new > old {
            self.record.reserve_exact(new - old);
            self.record.resize(self.record.len() + new - old, 0);
        }
        self.record.copy_within(end..end + tail, at + new);
        self.record.truncate(at + new + tail);
        self.record[at..=at + k].copy_from_slice(&len[..=k]);
        self.record[at + k + 1..at + new].copy_from_slice(scratch.as_bytes());
    }

    /// Keeps the record's enrichment as dictionary ids (`store::enrichments`): a v2 record.
    pub fn set_interned(&mut self, interned: super::codec::Interned) {
        match self.record.first() {
            Some(&EVENT_V1) if !interned.is_none() => {
                self.record[0] = super::codec::EVENT_V2;
                interned.append_to(&mut self.record);
            }
            _ => self.map_record(|r| {
                r.interned = interned;
                true
            }),
        }
    }

    /// Replaces every credential in what will be stored of this event (its id, its dialect
    /// state's key, every string of its record) by its marker ([`crate::auth::redact`]).
    /// The common case finds nothing and copies nothing.
    pub fn redact(&mut self, namer: &mut impl redact::Namer) {
        if let Some(clean) = redact::string(&self.event_id, namer) {
            self.event_id = clean;
        }
        if let Some(
            Guard::NotBefore { key, .. }
            | Guard::SessionStart { key, .. }
            | Guard::SessionEnd { key },
        ) = &mut self.guard
            && let Cow::Owned(clean) = redact::text(key, namer)
        {
            *key = clean;
        }
        // Escapes can hide one only in JSON text (`props`, `context`).
        if !redact::contains(&self.record) && !redact::may_hide_escaped(&self.record) {
            return;
        }
        let Ok(mut r) = decode_event(&self.record) else {
            return; // encoded by this process a moment ago: cannot happen
        };
        // Every field named, so that a new one cannot be left out unnoticed.
        let EventRecord {
            received_at_ms: _,
            tenant,
            app,
            key_id: _,
            source,
            event_id,
            event_name,
            event_ts_ms: _,
            install_uuid,
            user_id,
            anonymous_id,
            ids,
            revenue: _,
            currency,
            transaction_id,
            product_id,
            props,
            context,
            audit_key,
            // Ids of texts made from a user agent already redacted (enrichment runs after).
            interned: _,
        } = &mut r;
        let mut changed = false;
        let mut one = |s: &mut String| {
            if let Some(clean) = redact::string(s, namer) {
                *s = clean;
                changed = true;
            }
        };
        for s in [tenant, app, source, event_id, event_name, audit_key] {
            one(s);
        }
        for s in [
            install_uuid,
            user_id,
            anonymous_id,
            currency,
            transaction_id,
            product_id,
        ]
        .into_iter()
        .flatten()
        {
            one(s);
        }
        for (k, v) in ids {
            one(k);
            one(v);
        }
        for s in [props, context] {
            if let Cow::Owned(clean) = redact::json(s.as_bytes(), namer) {
                *s = String::from_utf8_lossy(&clean).into_owned();
                changed = true;
            }
        }
        if changed {
            self.record = encode_event(&r);
        }
    }
}

/// Where the `context` of an encoded v1 record is: (its length's first byte, its text's
/// first byte, the byte after its text). Reads the fields before it without decoding them
/// (the field order of [`EventRecord`]); `None` when the bytes are not a whole v1 record.
fn context_span(bytes: &[u8]) -> Option<(usize, usize, usize)> {
    struct Cursor<'a> {
        b: &'a [u8],
        at: usize,
    }
    impl Cursor<'_> {
        fn byte(&mut self) -> Option<u8> {
            let v = *self.b.get(self.at)?;
            self.at += 1;
            Some(v)
        }
        fn varint(&mut self) -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..70).step_by(7) {
                let byte = self.byte()?;
                v |= u64::from(byte & 0x7f).checked_shl(shift)?;
                if byte & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        }
        fn skip(&mut self, n: usize) -> Option<()> {
            self.at = self.at.checked_add(n).filter(|&e| e <= self.b.len())?;
            Some(())
        }
        fn string(&mut self) -> Option<()> {
            let n = usize::try_from(self.varint()?).ok()?;
            self.skip(n)
        }
        fn option(&mut self, some: impl FnOnce(&mut Self) -> Option<()>) -> Option<()> {
            match self.byte()? {
                0 => Some(()),
                1 => some(self),
                _ => None,
            }
        }
    }
    let mut c = Cursor { b: bytes, at: 0 };
    (c.byte()? == EVENT_V1).then_some(())?;
    c.varint()?; // received_at_ms
    c.string()?; // tenant
    c.string()?; // app
    c.varint()?; // key_id
    c.string()?; // source
    c.string()?; // event_id
    c.string()?; // event_name
    c.varint()?; // event_ts_ms
    for _ in 0..3 {
        c.option(Cursor::string)?; // install_uuid, user_id, anonymous_id
    }
    for _ in 0..c.varint()? {
        c.string()?; // ids
        c.string()?;
    }
    c.option(|c| c.skip(8))?; // revenue
    for _ in 0..3 {
        c.option(Cursor::string)?; // currency, transaction_id, product_id
    }
    c.string()?; // props
    let at = c.at;
    let n = usize::try_from(c.varint()?).ok()?;
    let start = c.at;
    c.skip(n)?;
    let end = c.at;
    c.string()?; // audit_key
    (c.at == bytes.len()).then_some((at, start, end))
}

/// [`EventRecord`] with borrowed fields: the same fields in the same order, so postcard
/// writes the same bytes (the test below holds the two together).
#[derive(Serialize)]
struct RecordRef<'a> {
    received_at_ms: u64,
    tenant: &'a str,
    app: &'a str,
    key_id: u32,
    source: &'a str,
    event_id: &'a str,
    event_name: &'a str,
    event_ts_ms: i64,
    install_uuid: Option<&'a str>,
    user_id: Option<&'a str>,
    anonymous_id: Option<&'a str>,
    ids: &'a [(Cow<'a, str>, Cow<'a, str>)],
    revenue: Option<f64>,
    currency: Option<&'a str>,
    transaction_id: Option<&'a str>,
    product_id: Option<&'a str>,
    props: &'a str,
    context: &'a str,
    audit_key: &'a str,
}

/// The record [`Pending::from_native`] encodes, as an [`EventRecord`].
#[cfg(test)]
pub fn native_record(
    key: &KeyInfo,
    source: &str,
    received_at_ms: u64,
    event: &reflect::ValidEvent<'_>,
    audit_key: &str,
) -> EventRecord {
    let d = event.get();
    let owned = |s: &Option<Cow<str>>| s.as_deref().map(str::to_owned);
    EventRecord {
        received_at_ms,
        tenant: key.tenant.clone(),
        app: key.app.clone(),
        key_id: key.key_id,
        source: source.to_owned(),
        event_id: event.event_id().to_owned(),
        event_name: d.event_name.clone().into_owned(),
        event_ts_ms: d.event_ts_ms,
        install_uuid: Some(d.install_uuid.clone().into_owned()),
        user_id: owned(&d.user_id),
        anonymous_id: owned(&d.anonymous_id),
        ids: d
            .ids
            .iter()
            .map(|(k, v)| (k.clone().into_owned(), v.clone().into_owned()))
            .collect(),
        revenue: d.revenue,
        currency: owned(&d.currency),
        transaction_id: owned(&d.transaction_id),
        product_id: owned(&d.product_id),
        props: d.props.clone().into_owned(),
        context: d.context.clone().into_owned(),
        audit_key: audit_key.to_owned(),
        interned: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(context: &str) -> EventRecord {
        EventRecord {
            received_at_ms: 1_764_000_000_123,
            tenant: "t".into(),
            app: "default".into(),
            key_id: 300,
            source: "reflect".into(),
            event_id: "e-1".into(),
            event_name: "purchase".into(),
            event_ts_ms: -5,
            install_uuid: Some("u".into()),
            user_id: None,
            anonymous_id: Some("a".into()),
            ids: vec![
                ("idfa".into(), "x".repeat(200)),
                ("gaid".into(), "y".into()),
            ],
            revenue: Some(1.5),
            currency: Some("EUR".into()),
            transaction_id: None,
            product_id: Some("p".into()),
            props: "{}".into(),
            context: context.into(),
            audit_key: "raw/2026-12-03/e-1.json".into(),
            interned: Default::default(),
        }
    }

    #[test]
    fn a_spliced_context_is_the_record_encoded_with_it() {
        let long = format!(r#"{{"ip":"1.2.3.4","pad":"{}"}}"#, "z".repeat(300));
        // Lengths across a varint boundary, both ways.
        for (before, after) in [
            ("{}", r#"{"geo":{"country":"DE"}}"#.to_owned()),
            (r#"{"ip":"1.2.3.4"}"#, long.clone()),
            (long.as_str(), "{}".to_owned()),
        ] {
            let mut p = Pending::for_test("e-1", encode_event(&record(before)));
            let mut scratch = String::new();
            p.map_context(&mut scratch, |text, out| {
                assert_eq!(text, before);
                out.push_str(&after);
                true
            });
            assert_eq!(p.record(), encode_event(&record(&after)));
            // Unchanged when `f` says so.
            let kept = p.record().to_vec();
            p.map_context(&mut scratch, |_, out| {
                out.push_str("{}");
                false
            });
            assert_eq!(p.record(), kept);
        }
        // Not a whole record: left alone, `f` not called.
        let mut bytes = encode_event(&record("{}"));
        bytes.pop();
        let mut p = Pending::for_test("e-1", bytes.clone());
        p.map_context(&mut String::new(), |_, _| panic!("called"));
        assert_eq!(p.record(), bytes);
    }
}
