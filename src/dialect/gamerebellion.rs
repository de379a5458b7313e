//! The GameRebellion dialect (`specs/gamerebellion-s2s.md`): `POST /api/v1/event` with one
//! JSON event, `POST /api/v1/events` with `{"events": [...]}` of at most [`MAX_BATCH`], and
//! `POST /api/v1/sessions/{start,stop,end}`.
//!
//! Mapping to the canonical event:
//! - `event_type` → `event_name` (required, a non-empty string).
//! - `identifiers`: `user_id`, `anonymous_id` and `install_uuid` go to those canonical fields,
//!   every other identifier (`player_id`, `device_id`, ...) to `ids`, in the order given.
//!   Values are strings or integers (kept as their decimal text).
//! - `utm` → `context.utm`, as given.
//! - `payload.amount` (a number) → `revenue`, `payload.currency` → `currency`,
//!   `payload.transaction_id` / `payload.product_id` (strings) → those fields; the rest of
//!   `payload`, `usd_value` included, → `props`.
//! - Any other top-level field is kept in `props` under its name (a name that is also a key of
//!   `payload` is refused as `payload_invalid` rather than renamed).
//! - The spec has no event id and no timestamp: an `event_id` string, when given, is honoured
//!   (a retry with the same id is a duplicate); otherwise one is generated and no dedupe is
//!   possible. `event_ts_ms` is the receive time.
//!
//! Sessions are events named `session_start`, `session_stop`, `session_end` carrying
//! `props.session_id`; the pipeline adds `props.duration_ms` to a stop or end whose start it
//! knows. The spec gives sessions no body schema, so a session request is an event without
//! `event_type`, and the sender's session id is honoured wherever an event would carry it:
//! top-level `session_id`, `payload.session_id` or `identifiers.session_id` (the same id
//! when in more than one). A stop or end without one names the latest open session started
//! with the same identifiers ([`identity_key`]).

use super::json;
use crate::event::{Draft, Field, Reason};
use ring::digest;
use serde_json::{Map, Value};

/// The GameRebellion dialect (`/api/v1/...`).
pub struct GameRebellion;

impl super::Dialect for GameRebellion {
    const SOURCE: &'static str = "gamerebellion";
    const RATE_LIMITED: bool = true;
    const DRY_RUN_FIELD: bool = true;

    /// `{"error": "<reason>"}` (its spec fixes only the statuses).
    fn error(reason: Reason, status: hyper::StatusCode) -> crate::http::Reply {
        crate::http::Reply::json(status, &serde_json::json!({ "error": reason.tag() }))
    }
}

/// What a GameRebellion request says before its body: which endpoint and the `X-API-Key` it
/// presents.
pub struct Head {
    /// `POST /api/v1/events`.
    batch: bool,
    session: Option<SessionKind>,
    api_key: Option<String>,
}

/// What a single-event request's answer names beyond the event id.
pub struct Then {
    session_id: Option<String>,
    duration_ms: Option<i64>,
    /// Quarantine: which session endpoint (`None`: an event).
    session: Option<SessionKind>,
}

/// The request side of `POST /api/v1/event`, `POST /api/v1/events` and
/// `POST /api/v1/sessions/{start,stop,end}`, top to bottom: `X-API-Key` → key (401
/// missing/unknown, 403 revoked) → the key's per-minute window (429) → body → decode →
/// [session: the session named, or the latest open one of the same identifiers (404
/// `no_open_session`), and its start time] → validate → key's allowed events (403; in a
/// batch, per event) → writer (dedupe, quota, append, session tables). Every answer carries
/// `X-RateLimit-Limit/Remaining/Reset`.
impl super::Ingest for GameRebellion {
    type Head = Head;
    /// The key's app.
    type Auth = u32;
    type Then = Then;
    type Event<'a> = Draft;
    const AUDIT_PREFIX: &'static str = "gr";
    const BATCH_AUDIT_PREFIX: &'static str = "gr/batch";

    fn head(
        _: &hyper::Method,
        uri: &hyper::Uri,
        headers: &hyper::HeaderMap,
    ) -> Result<Head, Reason> {
        let path = uri.path();
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let batch = path == "/api/v1/events";
        let session = match path.strip_prefix("/api/v1/sessions/") {
            Some(segment) => Some(SessionKind::from_segment(segment).ok_or(Reason::NotFound)?),
            None => None,
        };
        let api_key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        Ok(Head {
            batch,
            session,
            api_key,
        })
    }

    fn body_limit(head: &Head) -> super::BodyLimit {
        if head.batch {
            super::BodyLimit::Bulk
        } else {
            super::BodyLimit::Single
        }
    }

    fn early_credential<L: super::Lookup>(
        lookup: &mut L,
        head: &Head,
    ) -> Result<Option<L::Key>, Reason> {
        let presented = head.api_key.as_deref().ok_or(Reason::MissingApiKey)?;
        lookup.api_key(presented).map(Some)
    }

    fn credential<L: super::Lookup>(
        _: &mut L,
        _: &Head,
        early: Option<L::Key>,
        _: &[u8],
        _: u64,
    ) -> Result<super::Credited<L::Key, u32>, Reason> {
        let key = early.ok_or(Reason::MissingApiKey)?;
        let auth = L::app_of(&key);
        Ok(super::Credited { key, auth })
    }

    fn decode_batch(
        head: &Head,
        body: &[u8],
        received_at_ms: u64,
    ) -> Result<Option<Vec<BatchItem>>, Reason> {
        head.batch
            .then(|| decode_batch(body, received_at_ms))
            .transpose()
    }

    fn decode<L: super::Lookup>(
        lookup: &mut L,
        head: &Head,
        app_id: u32,
        body: &[u8],
        received_at_ms: u64,
    ) -> Result<super::Decoded<Then>, Reason> {
        let Some(kind) = head.session else {
            return Ok(super::Decoded {
                draft: decode_single(body, received_at_ms)?,
                guard: None,
                then: Then {
                    session_id: None,
                    duration_ms: None,
                    session: None,
                },
            });
        };
        let session = decode_session(kind, body, received_at_ms)?;
        let identity = session.identity();
        let Session {
            session_id,
            mut draft,
        } = session;
        if session_id
            .as_ref()
            .is_some_and(|s| s.chars().count() > crate::event::MAX_ID)
        {
            return Err(Reason::TooLong(Field::SessionId));
        }
        // A stop or end after an acknowledged start finds the start committed: by the id it
        // names, or else as the latest open session started with the same identifiers.
        let (session_id, started) = match (kind, session_id) {
            (SessionKind::Start, id) => (id.unwrap_or_else(crate::event::random_id), None),
            (SessionKind::Stop | SessionKind::End, Some(id)) => {
                let started = lookup.session_start(app_id, &id)?;
                (id, started)
            }
            (SessionKind::Stop | SessionKind::End, None) => {
                let identity = identity.ok_or(Reason::Required(Field::SessionId))?;
                let open = lookup
                    .latest_open_session(app_id, &identity)?
                    .ok_or(Reason::NoOpenSession)?;
                (open.session_id, Some(open.started_ms))
            }
        };
        let duration_ms = started.map(|start| (received_at_ms as i64 - start).max(0));
        mark_session(&mut draft, &session_id, duration_ms);
        let guard = match kind {
            SessionKind::Start => Some(super::ItemGuard::SessionStart {
                app_id,
                session_id: session_id.clone(),
                ts_ms: received_at_ms as i64,
                identity,
            }),
            SessionKind::Stop => None,
            SessionKind::End => Some(super::ItemGuard::SessionEnd {
                app_id,
                session_id: session_id.clone(),
            }),
        };
        Ok(super::Decoded {
            draft,
            guard,
            then: Then {
                session_id: Some(session_id),
                duration_ms,
                session: Some(kind),
            },
        })
    }

    const KEEPS: bool = true;

    /// An event (of `/api/v1/event`, or a batch's own item) is kept as sent. A session
    /// request is not an event item: it is kept as `{"session": "start"|"stop"|"end",
    /// "session_id": <the id it was given or found on arrival>, "body": <its body>}`, so that
    /// a replay names the same session however it was named (a start's generated id, a stop
    /// found by its identifiers).
    fn kept_item<'p>(
        head: &Head,
        then: Option<&Then>,
        payload: &'p [u8],
    ) -> Option<std::borrow::Cow<'p, [u8]>> {
        if head.session.is_none() {
            return Some(std::borrow::Cow::Borrowed(payload));
        }
        let then = then?;
        let (kind, id) = (then.session?, then.session_id.as_deref()?);
        let values = [
            ("session", Value::from(kind.segment())),
            ("session_id", Value::from(id)),
        ];
        Some(super::wrap_kept(&values, "body", payload).into())
    }

    /// Replays a kept event or session request (see [`Ingest::kept_item`](super::Ingest)) as
    /// on arrival, at its receive time: a stop or end gets its duration when the session's
    /// start is known now (a start replayed before it, say), and an end forgets the session.
    /// A replayed start records its start under its session id, but does not become the
    /// open session of its identifiers: its stop has likely come and gone meanwhile, and a
    /// later stop naming no session must not end this one.
    fn redecode<L: super::Lookup>(
        lookup: &mut L,
        key: &L::Key,
        item: &[u8],
        event_id: &str,
        received_at_ms: u64,
    ) -> Result<(Draft, Option<super::ItemGuard>), Reason> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Kept<'a> {
            session: String,
            session_id: String,
            #[serde(borrow)]
            body: &'a serde_json::value::RawValue,
        }
        let app_id = L::app_of(key);
        // An event has its `event_type`; a session request kept has none (the path named it).
        let Ok(kept) = serde_json::from_slice::<Kept>(item) else {
            let mut draft = decode_single(item, received_at_ms)?;
            draft.event_id = Some(event_id.to_owned());
            return Ok((draft, None));
        };
        let kind = SessionKind::from_segment(&kept.session).ok_or(Reason::BadJson)?;
        let body = kept.body.get().as_bytes();
        let Session { mut draft, .. } = decode_session(kind, body, received_at_ms)?;
        let id = kept.session_id;
        let guard = match kind {
            SessionKind::Start => {
                mark_session(&mut draft, &id, None);
                Some(super::ItemGuard::SessionStart {
                    app_id,
                    session_id: id,
                    ts_ms: received_at_ms as i64,
                    identity: None,
                })
            }
            SessionKind::Stop | SessionKind::End => {
                let started = lookup.session_start(app_id, &id)?;
                let duration_ms = started.map(|start| (received_at_ms as i64 - start).max(0));
                mark_session(&mut draft, &id, duration_ms);
                (kind == SessionKind::End).then_some(super::ItemGuard::SessionEnd {
                    app_id,
                    session_id: id,
                })
            }
        };
        draft.event_id = Some(event_id.to_owned());
        Ok((draft, guard))
    }

    /// `{"event_id", ["session_id", "duration_ms",] "accepted": 1, "audit_key"}` or, for a
    /// duplicate, `{"event_id", ..., "accepted": 0, "duplicate": true}`.
    fn ok<L: super::Lookup>(
        _: &mut L,
        then: Then,
        stored: &super::Stored,
    ) -> Result<crate::http::Reply, Reason> {
        let mut fields = serde_json::json!({ "event_id": stored.event_id });
        if let Some(id) = then.session_id {
            fields["session_id"] = Value::from(id);
        }
        if let Some(d) = then.duration_ms {
            fields["duration_ms"] = Value::from(d);
        }
        if stored.duplicate() {
            fields["accepted"] = Value::from(0);
            fields["duplicate"] = Value::from(true);
        } else {
            fields["accepted"] = Value::from(1);
            fields["audit_key"] = Value::from(stored.audit_key);
        }
        Ok(crate::http::Reply::json(hyper::StatusCode::OK, &fields))
    }
}

/// Most events in one batch request (the spec's limit).
pub const MAX_BATCH: usize = 100;

/// Decodes the body of `POST /api/v1/event`.
pub fn decode_single(body: &[u8], received_at_ms: u64) -> Result<Draft, Reason> {
    let object = json::parse_object(body).ok_or(Reason::BadJson)?;
    decode_event(object, received_at_ms)
}

/// One event of a batch.
pub type BatchItem = super::BatchItem<'static>;

/// Decodes the body of `POST /api/v1/events`: the request fails as a whole only when it is not
/// an object with a non-empty `events` array of at most [`MAX_BATCH`].
pub fn decode_batch(body: &[u8], received_at_ms: u64) -> Result<Vec<BatchItem>, Reason> {
    super::decode_events(body, MAX_BATCH, |map| decode_event(map, received_at_ms))
}

/// Which session endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Start,
    Stop,
    End,
}

impl SessionKind {
    /// The kind named by the last segment of `/api/v1/sessions/<segment>`.
    pub fn from_segment(segment: &str) -> Option<SessionKind> {
        match segment {
            "start" => Some(SessionKind::Start),
            "stop" => Some(SessionKind::Stop),
            "end" => Some(SessionKind::End),
            _ => None,
        }
    }

    /// The last segment of its path.
    pub fn segment(self) -> &'static str {
        match self {
            SessionKind::Start => "start",
            SessionKind::Stop => "stop",
            SessionKind::End => "end",
        }
    }

    pub fn event_name(self) -> &'static str {
        match self {
            SessionKind::Start => "session_start",
            SessionKind::Stop => "session_stop",
            SessionKind::End => "session_end",
        }
    }
}

/// A decoded session request.
#[derive(Debug, PartialEq)]
pub struct Session {
    /// The sender's session id, wherever it was given; `None` when it gave none (a start gets
    /// a generated one, a stop or end the latest open session of its identifiers).
    pub session_id: Option<String>,
    pub draft: Draft,
}

impl Session {
    /// The key of the identifiers this request was made with ([`identity_key`]).
    pub fn identity(&self) -> Option<[u8; 16]> {
        identity_key(&self.draft)
    }
}

/// Decodes the body of `POST /api/v1/sessions/{start,stop,end}`: an optional JSON object with
/// the fields of an event (`identifiers`, `utm`, `payload`, `event_id`), without
/// `event_type`, and optionally the sender's `session_id` (a string or integer) at the top
/// level, in `payload` or in `identifiers`. An empty body is `{}`. A stop or end needs a
/// session id or identifiers (`session_id_required`).
pub fn decode_session(
    kind: SessionKind,
    body: &[u8],
    received_at_ms: u64,
) -> Result<Session, Reason> {
    let mut object = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        json::parse_object(body).ok_or(Reason::BadJson)?
    };
    let mut session_id = take_session_id(&mut object)?;
    for within in ["payload", "identifiers"] {
        if let Some(Value::Object(inner)) = object.get_mut(within) {
            match (take_session_id(inner)?, &session_id) {
                (None, _) => {}
                (Some(id), None) => session_id = Some(id),
                (Some(id), Some(seen)) if id == *seen => {}
                // Two different ids: which session is meant cannot be told.
                (Some(_), Some(_)) => return Err(Reason::Invalid(Field::SessionId)),
            }
        }
    }
    if object.contains_key("event_type") {
        // The path names the event; a second name would be silently overridden.
        return Err(Reason::Invalid(Field::EventType));
    }
    object.insert("event_type".into(), Value::String(kind.event_name().into()));
    let draft = decode_event(object, received_at_ms)?;
    if kind != SessionKind::Start && session_id.is_none() && identity_key(&draft).is_none() {
        // Nothing names the session to stop or end.
        return Err(Reason::Required(Field::SessionId));
    }
    Ok(Session { session_id, draft })
}

/// Removes `session_id` from `m`: its text, `None` when absent or null.
fn take_session_id(m: &mut Map<String, Value>) -> Result<Option<String>, Reason> {
    match m.shift_remove("session_id") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => id_text(v)
            .filter(|s| !s.is_empty())
            .map(Some)
            .ok_or(Reason::Invalid(Field::SessionId)),
    }
}

/// A key of the set of identifiers an event was sent with (`user_id`, `anonymous_id`,
/// `install_uuid` and every other identifier, in any order): the first 16 bytes of a SHA-256
/// over the sorted `name, value` pairs. `None` when it has none.
pub fn identity_key(d: &Draft) -> Option<[u8; 16]> {
    let mut pairs: Vec<(&str, &str)> = d
        .ids
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (name, value) in [
        ("user_id", &d.user_id),
        ("anonymous_id", &d.anonymous_id),
        ("install_uuid", &d.install_uuid),
    ] {
        if let Some(v) = value {
            pairs.push((name, v));
        }
    }
    if pairs.is_empty() {
        return None;
    }
    pairs.sort_unstable();
    let mut h = digest::Context::new(&digest::SHA256);
    for (k, v) in pairs {
        for part in [k, v] {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
    }
    Some(
        h.finish().as_ref()[..16]
            .try_into()
            .expect("16 of 32 bytes"),
    )
}

/// Puts the session id (and, when known, the duration) into a session event's props.
pub fn mark_session(draft: &mut Draft, session_id: &str, duration_ms: Option<i64>) {
    draft
        .props
        .insert("session_id".into(), Value::String(session_id.to_owned()));
    if let Some(d) = duration_ms {
        draft.props.insert("duration_ms".into(), Value::from(d));
    }
}

fn decode_event(mut m: Map<String, Value>, received_at_ms: u64) -> Result<Draft, Reason> {
    let event_name = match m.shift_remove("event_type") {
        None | Some(Value::Null) => return Err(Reason::Required(Field::EventType)),
        Some(Value::String(s)) if s.is_empty() => return Err(Reason::Required(Field::EventType)),
        Some(Value::String(s)) => s,
        Some(_) => return Err(Reason::Invalid(Field::EventType)),
    };
    let event_id = match m.shift_remove("event_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(Reason::Invalid(Field::EventId)),
    };
    let mut draft = Draft {
        event_id,
        event_name,
        event_ts_ms: i64::try_from(received_at_ms).unwrap_or(i64::MAX),
        ..Draft::default()
    };
    for (name, value) in take_object(&mut m, "identifiers", Field::Identifiers)? {
        if value.is_null() {
            continue;
        }
        let value = id_text(value).ok_or(Reason::Invalid(Field::Identifiers))?;
        match name.as_str() {
            "user_id" => draft.user_id = Some(value),
            "anonymous_id" => draft.anonymous_id = Some(value),
            "install_uuid" => draft.install_uuid = Some(value),
            _ => draft.ids.push((name, value)),
        }
    }
    match m.shift_remove("utm") {
        None | Some(Value::Null) => {}
        Some(Value::Object(utm)) => {
            draft.context.insert("utm".into(), Value::Object(utm));
        }
        Some(_) => return Err(Reason::Invalid(Field::Utm)),
    }
    let mut payload = take_object(&mut m, "payload", Field::Payload)?;
    draft.revenue = match payload.shift_remove("amount") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_f64().ok_or(Reason::Invalid(Field::Amount))?),
        Some(_) => return Err(Reason::Invalid(Field::Amount)),
    };
    draft.currency = match payload.shift_remove("currency") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(Reason::Invalid(Field::Currency)),
    };
    for (name, slot) in [
        ("transaction_id", &mut draft.transaction_id),
        ("product_id", &mut draft.product_id),
    ] {
        // Only strings move to the canonical field; anything else stays in props as given.
        if let Some(Value::String(_)) = payload.get(name)
            && let Some(Value::String(s)) = payload.shift_remove(name)
        {
            *slot = Some(s);
        }
    }
    draft.props = payload;
    for (name, value) in m {
        if draft.props.contains_key(&name) {
            return Err(Reason::Invalid(Field::Payload));
        }
        draft.props.insert(name, value);
    }
    Ok(draft)
}

/// An identifier's text: a string as is, an integer in decimal.
fn id_text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn take_object(
    m: &mut Map<String, Value>,
    name: &str,
    field: Field,
) -> Result<Map<String, Value>, Reason> {
    match m.shift_remove(name) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(Reason::Invalid(field)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_764_137_630_000;

    /// The spec's single-event example, verbatim.
    const SPEC_EVENT: &str = r#"{
"event_type": "transaction",
"identifiers": {
"player_id": "player-12345",
"device_id": "device-uuid"
},
"utm": {
"source": "facebook",
"medium": "cpc",
"campaign": "summer_2026"
},
"payload": {
"amount": 4.99,
"currency": "USD",
"type": "iap",
"description": "Premium Sword",
"status": "success",
"usd_value": 4.99
}
}"#;

    #[test]
    fn decodes_the_spec_example_completely() {
        let d = decode_single(SPEC_EVENT.as_bytes(), NOW).unwrap();
        assert_eq!(d.event_name, "transaction");
        assert_eq!(d.event_id, None);
        assert_eq!(d.event_ts_ms, NOW as i64);
        assert_eq!(
            d.ids,
            vec![
                ("player_id".to_owned(), "player-12345".to_owned()),
                ("device_id".to_owned(), "device-uuid".to_owned())
            ]
        );
        assert_eq!(d.revenue, Some(4.99));
        assert_eq!(d.currency.as_deref(), Some("USD"));
        assert_eq!(
            Value::Object(d.props),
            json!({"type": "iap", "description": "Premium Sword", "status": "success", "usd_value": 4.99})
        );
        assert_eq!(
            Value::Object(d.context),
            json!({"utm": {"source": "facebook", "medium": "cpc", "campaign": "summer_2026"}})
        );
    }

    #[test]
    fn canonical_identifiers_and_extra_fields() {
        let body = br#"{"event_type":"login","event_id":"e1","level":3,
            "identifiers":{"user_id":"u1","player_id":42,"anonymous_id":"a","gone":null},
            "payload":{"transaction_id":"t1","product_id":7}}"#;
        let d = decode_single(body, NOW).unwrap();
        assert_eq!(d.event_id.as_deref(), Some("e1"));
        assert_eq!(d.user_id.as_deref(), Some("u1"));
        assert_eq!(d.anonymous_id.as_deref(), Some("a"));
        assert_eq!(d.ids, vec![("player_id".to_owned(), "42".to_owned())]);
        assert_eq!(d.transaction_id.as_deref(), Some("t1"));
        assert_eq!(d.product_id, None);
        assert_eq!(Value::Object(d.props), json!({"product_id": 7, "level": 3}));
    }

    #[test]
    fn rejections() {
        let cases: &[(&str, Reason)] = &[
            (r#"{"payload":{}}"#, Reason::Required(Field::EventType)),
            (r#"{"event_type":""}"#, Reason::Required(Field::EventType)),
            (r#"{"event_type":1}"#, Reason::Invalid(Field::EventType)),
            (
                r#"{"event_type":"x","identifiers":[]}"#,
                Reason::Invalid(Field::Identifiers),
            ),
            (
                r#"{"event_type":"x","identifiers":{"p":{"a":1}}}"#,
                Reason::Invalid(Field::Identifiers),
            ),
            (
                r#"{"event_type":"x","identifiers":{"p":1.5}}"#,
                Reason::Invalid(Field::Identifiers),
            ),
            (
                r#"{"event_type":"x","utm":"fb"}"#,
                Reason::Invalid(Field::Utm),
            ),
            (
                r#"{"event_type":"x","payload":3}"#,
                Reason::Invalid(Field::Payload),
            ),
            (
                r#"{"event_type":"x","payload":{"amount":"4.99"}}"#,
                Reason::Invalid(Field::Amount),
            ),
            (
                r#"{"event_type":"x","payload":{"currency":1}}"#,
                Reason::Invalid(Field::Currency),
            ),
            (
                r#"{"event_type":"x","event_id":5}"#,
                Reason::Invalid(Field::EventId),
            ),
            (
                r#"{"event_type":"x","type":1,"payload":{"type":2}}"#,
                Reason::Invalid(Field::Payload),
            ),
            (r#"{"event_type":"x","#, Reason::BadJson),
            (r#"{"event_type":"x","event_type":"y"}"#, Reason::BadJson),
        ];
        for (body, reason) in cases {
            assert_eq!(
                decode_single(body.as_bytes(), NOW).err(),
                Some(*reason),
                "{body}"
            );
        }
    }

    #[test]
    fn batch_limits() {
        let one = r#"{"event_type":"impression","payload":{"campaign_id":"c"}}"#;
        let body = |n: usize| format!(r#"{{"events":[{}]}}"#, vec![one; n].join(","));
        assert_eq!(
            decode_batch(body(MAX_BATCH).as_bytes(), NOW).unwrap().len(),
            MAX_BATCH
        );
        assert_eq!(
            decode_batch(body(MAX_BATCH + 1).as_bytes(), NOW).err(),
            Some(Reason::TooManyEvents)
        );
        assert_eq!(
            decode_batch(br#"{"events":[]}"#, NOW).err(),
            Some(Reason::Required(Field::Events))
        );
        let mixed = decode_batch(
            br#"{"events":[{"event_type":"a"},{"event_id":"x"},2]}"#,
            NOW,
        )
        .unwrap();
        assert!(mixed[0].draft.is_ok());
        assert_eq!(mixed[1].event_id.as_deref(), Some("x"));
        assert_eq!(
            mixed[1].draft.as_ref().err(),
            Some(&Reason::Required(Field::EventType))
        );
        assert_eq!(mixed[2].draft.as_ref().err(), Some(&Reason::BadJson));
    }

    /// Only `/api/v1/events` (with or without its trailing slash) is a batch, read within
    /// the bulk limit; the pipeline decodes every other path as one event.
    #[test]
    fn the_batch_path_is_the_one_batch() {
        use crate::dialect::{BodyLimit, Ingest};
        let head = |path: &str| {
            let uri: hyper::Uri = path.parse().unwrap();
            GameRebellion::head(&hyper::Method::POST, &uri, &hyper::HeaderMap::new()).unwrap()
        };
        let body = br#"{"events":[{"event_type":"a"}]}"#;
        for path in ["/api/v1/events", "/api/v1/events/"] {
            let h = head(path);
            assert_eq!(GameRebellion::body_limit(&h), BodyLimit::Bulk);
            let items = GameRebellion::decode_batch(&h, body, NOW).unwrap();
            assert_eq!(items.map(|i| i.len()), Some(1));
        }
        for path in ["/api/v1/event", "/api/v1/sessions/start"] {
            let h = head(path);
            assert_eq!(GameRebellion::body_limit(&h), BodyLimit::Single);
            assert!(
                GameRebellion::decode_batch(&h, body, NOW)
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn sessions() {
        let s = decode_session(SessionKind::Start, b"", NOW).unwrap();
        assert_eq!(s.session_id, None);
        assert_eq!(s.draft.event_name, "session_start");
        let s = decode_session(
            SessionKind::End,
            br#"{"session_id":12,"identifiers":{"player_id":"p"}}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(s.session_id.as_deref(), Some("12"));
        assert_eq!(s.draft.event_name, "session_end");
        // A stop or end may name no session: the pipeline finds it by the identifiers. With
        // neither, nothing names it.
        let s = decode_session(
            SessionKind::Stop,
            br#"{"identifiers":{"player_id":"p"}}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(s.session_id, None);
        assert!(s.identity().is_some());
        assert_eq!(
            decode_session(SessionKind::Stop, b"{}", NOW).err(),
            Some(Reason::Required(Field::SessionId))
        );
        // The sender's id wherever an event carries it, and only the same id twice.
        for body in [
            r#"{"payload":{"session_id":"p-1","level":2}}"#,
            r#"{"identifiers":{"session_id":"p-1","player_id":"p"}}"#,
            r#"{"session_id":"p-1","payload":{"session_id":"p-1"}}"#,
        ] {
            let s = decode_session(SessionKind::Start, body.as_bytes(), NOW).unwrap();
            assert_eq!(s.session_id.as_deref(), Some("p-1"), "{body}");
            assert!(!s.draft.props.contains_key("session_id"), "{body}");
            assert!(s.draft.ids.iter().all(|(k, _)| k != "session_id"), "{body}");
        }
        assert_eq!(
            decode_session(
                SessionKind::Start,
                br#"{"session_id":"a","payload":{"session_id":"b"}}"#,
                NOW
            )
            .err(),
            Some(Reason::Invalid(Field::SessionId))
        );
        assert_eq!(
            decode_session(SessionKind::End, br#"{"payload":{"session_id":[1]}}"#, NOW).err(),
            Some(Reason::Invalid(Field::SessionId))
        );
        // The identifiers key ignores order, and tells different sets apart.
        let key = |body: &str| {
            decode_session(SessionKind::End, body.as_bytes(), NOW)
                .unwrap()
                .identity()
        };
        let a = key(r#"{"identifiers":{"player_id":"p","device_id":"d"}}"#);
        assert!(a.is_some());
        assert_eq!(
            a,
            key(r#"{"identifiers":{"device_id":"d","player_id":"p"}}"#)
        );
        assert_ne!(a, key(r#"{"identifiers":{"player_id":"p"}}"#));
        assert_ne!(
            a,
            key(r#"{"identifiers":{"player_id":"pd","device_id":""}}"#)
        );
        assert_ne!(
            key(r#"{"identifiers":{"user_id":"u"}}"#),
            key(r#"{"identifiers":{"player_id":"u"}}"#)
        );
        assert_eq!(
            decode_session(SessionKind::Start, br#"{"session_id":""}"#, NOW).err(),
            Some(Reason::Invalid(Field::SessionId))
        );
        assert_eq!(
            decode_session(
                SessionKind::Start,
                br#"{"event_type":"x","session_id":"s"}"#,
                NOW
            )
            .err(),
            Some(Reason::Invalid(Field::EventType))
        );
        let mut d = s.draft;
        mark_session(&mut d, "12", Some(5000));
        assert_eq!(
            Value::Object(d.props),
            json!({"session_id": "12", "duration_ms": 5000})
        );
        assert_eq!(SessionKind::from_segment("pause"), None);
    }
}
