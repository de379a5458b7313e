//! Wire formats. One module per vendor dialect turns request bytes into canonical
//! [`Draft`](crate::event::Draft)s. Dialects are pure: no I/O, no clock, no store.
//!
//! `props` keep the sender's order (serde_json's `preserve_order` is on). A dialect takes
//! fields out of a parsed object with `Map::shift_remove`, never `Map::remove`, which is
//! `swap_remove` under that feature and would move the last field into the hole (clippy's
//! `disallowed-methods` in `clippy.toml` holds that).

pub mod adjust;
pub mod appsflyer;
pub mod canon;
pub mod datafly;
pub mod form;
pub mod gamerebellion;
pub mod json;
pub mod reflect;

use crate::event::{Draft, Field, Reason, ValidEvent};
use crate::http::Reply;
use crate::http::reply::status_of;
use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode, Uri};
use serde_json::{Map, Value};
use std::borrow::Cow;

pub use adjust::Adjust;
pub use appsflyer::AppsFlyer;
pub use datafly::Datafly;
pub use gamerebellion::GameRebellion;
pub use reflect::Native;

/// How a vendor answers: the seam between the one ingest pipeline and a vendor's wire
/// format. Each vendor implements it in its own file, next to its decoder. A refusal's
/// status is the default [`status_of`] unless the vendor's table says otherwise
/// ([`Dialect::status`]); its body is the vendor's ([`Dialect::error`]). `Retry-After` and
/// the counting are the pipeline's (`ingest::refusal`), the same for every vendor.
pub trait Dialect {
    /// The `source` its events are stored and counted under.
    const SOURCE: &'static str;
    /// Whether every answer on its paths carries `X-RateLimit-*` headers, and a key's
    /// per-minute window is checked right after the key, before the body.
    const RATE_LIMITED: bool = false;
    /// How its batch answers name why an event was rejected.
    const RESULT_REASONS: ResultReasons = ResultReasons::Tags;
    /// Whether its JSON answers are inlet's own to shape, so that a dry run's carry
    /// `"dry_run": true` (the native dialect and GameRebellion); every dry run's answer
    /// carries the `X-Inlet-Dry-Run: 1` header.
    const DRY_RUN_FIELD: bool = false;

    /// The HTTP status of a refusal for `reason`.
    fn status(reason: Reason) -> StatusCode {
        status_of(reason)
    }

    /// The vendor's refusal body for `reason`, answered with `status`.
    fn error(reason: Reason, status: StatusCode) -> Reply;
}

/// How a batch answer names why an event was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultReasons {
    /// The reason's own tag, as the single endpoint answers it (`event_type_required`):
    /// GameRebellion, whose spec fixes only statuses ("400: invalid request body or missing
    /// required fields"), so its batch speaks like its single endpoint.
    Tags,
    /// Reflect's bulk example: a missing field is `"reason": "missing_required_fields"` with
    /// `"field": "<name>"`; every other reason its tag.
    Reflect,
}

/// The request side of a vendor, the stages the one pipeline (`ingest::ingest`) calls in
/// order: [`Ingest::head`] (before the body is read), the body within [`Ingest::body_limit`]
/// and its [`Ingest::payload`], [`Ingest::credential`], then [`Ingest::decode_batch`]:
/// - a request of one event is [`Ingest::decode`]d (into an [`Ingest::Event`], a
///   [`Candidate`]); the pipeline validates it, checks the
///   key's allowed events, encodes it, keeps the payload under
///   `<AUDIT_PREFIX>/<date>/<event id>` and answers [`Ingest::ok`] once the event is stored
///   (or was already: a retry is answered like the original);
/// - a batch gets a result per event: each valid one allowed by the key is stored, all in
///   one commit, the payload kept under `<BATCH_AUDIT_PREFIX>/<date>/<time-ordered id>`;
///   the answer lists the results in request order (`ingest::BatchSlots::answer`).
pub trait Ingest: Dialect {
    /// What the request line and headers say (route parameters, a credential).
    type Head;
    /// What authenticating tells the decoder (e.g. the signing secret).
    type Auth;
    /// What the success answer needs once the event is stored; `()` for most.
    type Then;
    /// A decoded event, before validation: the canonical [`Draft`] for every vendor; the
    /// native dialect's is [`reflect::Event`], which borrows from the payload.
    type Event<'a>: Candidate<'a>;
    /// Where the payload is kept, and how it is written.
    const AUDIT_PREFIX: &'static str;
    const AUDIT: AuditFormat = AuditFormat::Json;
    /// Where a batch request's payload is kept (unused by a vendor without batches).
    const BATCH_AUDIT_PREFIX: &'static str = "";

    /// Reads the request line and headers; a refusal here is answered before the body is
    /// read.
    fn head(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Self::Head, Reason>;

    /// The largest body accepted.
    fn body_limit(_: &Self::Head) -> BodyLimit {
        BodyLimit::Single
    }

    /// The bytes decoded and kept: the body, unless the vendor's parameters are elsewhere too.
    fn payload(_: &Self::Head, body: Bytes) -> Result<Bytes, Reason> {
        Ok(body)
    }

    /// The key a request's headers name, checked before the body is read; `None` when the
    /// credential needs the body.
    fn early_credential<L: Lookup>(_: &mut L, _: &Self::Head) -> Result<Option<L::Key>, Reason> {
        Ok(None)
    }

    /// Finds the request's credential (or takes the `early` one) and checks it through
    /// `lookup`.
    fn credential<L: Lookup>(
        lookup: &mut L,
        head: &Self::Head,
        early: Option<L::Key>,
        payload: &[u8],
        received_at_ms: u64,
    ) -> Result<Credited<L::Key, Self::Auth>, Reason>;

    /// The events of a batch request, each with its own decoding, or `None` when the
    /// request carries one event (the default: every request does). A refusal fails the
    /// request as a whole.
    fn decode_batch<'a>(
        _: &Self::Head,
        _: &'a [u8],
        _: u64,
    ) -> Result<Option<Vec<BatchItem<'a, Self::Event<'a>>>>, Reason> {
        Ok(None)
    }

    /// Decodes the payload into the canonical event and its guard (looking up what the
    /// guard needs, e.g. a session's start).
    fn decode<'a, L: Lookup>(
        lookup: &mut L,
        head: &Self::Head,
        auth: Self::Auth,
        payload: &'a [u8],
        received_at_ms: u64,
    ) -> Result<Decoded<Self::Then, Self::Event<'a>>, Reason>;

    /// The answer once the event is stored (`stored.duplicate_of`: it was already).
    fn ok<L: Lookup>(lookup: &mut L, then: Self::Then, stored: &Stored) -> Result<Reply, Reason>;

    // Quarantine (`ingest::quarantine`): a dialect whose refused events can be kept and
    // replayed says how one kept item decodes again.

    /// Whether refused events of this dialect are kept for replay.
    const KEEPS: bool = false;

    /// Decodes one kept item (a single request's payload, or a batch's own item) again for
    /// a replay with key `key`, its event id fixed to `event_id` (the one it was kept
    /// under). The credential passed when it arrived and is not checked again (none was
    /// kept); what the app's settings decide (an Adjust event token's name) is looked up
    /// anew.
    fn redecode<'a, L: Lookup>(
        _lookup: &mut L,
        _key: &L::Key,
        _item: &'a [u8],
        _event_id: &str,
        _received_at_ms: u64,
    ) -> Result<(Self::Event<'a>, Option<ItemGuard>), Reason> {
        Err(Reason::NotFound)
    }

    /// The event id and name of a kept item that does not decode as it is (an Adjust event
    /// token mapped to no event: the id its parameters make, the token).
    fn kept_label(_item: &[u8], _received_at_ms: u64) -> (Option<String>, Option<String>) {
        (None, None)
    }

    /// The item kept of a refused single-event request: its payload as it came, unless
    /// replaying it needs what the path, headers or decoding told (`then`; `None` when the
    /// refusal came before decoding finished), which the dialect then writes around it.
    /// `None`: nothing replayable to keep. A credential the item holds is taken out after.
    fn kept_item<'p>(
        _head: &Self::Head,
        _then: Option<&Self::Then>,
        payload: &'p [u8],
    ) -> Option<Cow<'p, [u8]>> {
        Some(Cow::Borrowed(payload))
    }
}

/// Quarantine: a kept item written around a request's payload, `{"<name>": <value>, ...,
/// "<body_name>": <body>}` (`values` JSON-encoded; `body` already JSON, an empty one `{}`).
pub fn wrap_kept(values: &[(&str, Value)], body_name: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'{');
    for (name, value) in values {
        canon::write_str(&mut out, name);
        out.push(b':');
        out.extend_from_slice(value.to_string().as_bytes());
        out.push(b',');
    }
    canon::write_str(&mut out, body_name);
    out.push(b':');
    let body = body.trim_ascii();
    out.extend_from_slice(if body.is_empty() { b"{}" } else { body });
    out.push(b'}');
    out
}

/// Quarantine: each item's own bytes of a `{"events": [...]}` batch body, in order (`None`
/// when it is not one).
pub fn batch_item_bytes(body: &[u8]) -> Option<Vec<&[u8]>> {
    #[derive(serde::Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        events: Vec<&'a serde_json::value::RawValue>,
    }
    let b: Batch = serde_json::from_slice(body).ok()?;
    Some(b.events.into_iter().map(|r| r.get().as_bytes()).collect())
}

/// What the writer made of an event: its id, where its payload is kept and, when it was
/// stored before, the original's sequence number.
pub struct Stored<'a> {
    pub event_id: &'a str,
    pub audit_key: &'a str,
    pub duplicate_of: Option<u64>,
}

impl Stored<'_> {
    /// Whether the event was stored before this request.
    pub fn duplicate(&self) -> bool {
        self.duplicate_of.is_some()
    }
}

/// A decoded event before validation, of whichever representation its dialect decodes
/// into. The pipeline validates it the same way for every dialect.
pub trait Candidate<'a> {
    /// The event id the sender gave, if any (to name a refused event in its receipt).
    fn claimed_id(&self) -> Option<&str>;

    /// Runs the canonical checks (`event::Checks`), fixing the event id (a new one from
    /// `new_id` when the sender gave none).
    fn validate(self, new_id: impl FnOnce() -> String) -> Result<Valid<'a>, Reason>;
}

impl<'a> Candidate<'a> for Draft {
    fn claimed_id(&self) -> Option<&str> {
        self.event_id.as_deref()
    }

    fn validate(self, new_id: impl FnOnce() -> String) -> Result<Valid<'a>, Reason> {
        Draft::validate(self, new_id).map(Valid::Canonical)
    }
}

impl<'a> Candidate<'a> for reflect::Event<'a> {
    fn claimed_id(&self) -> Option<&str> {
        self.event_id.as_deref()
    }

    fn validate(self, new_id: impl FnOnce() -> String) -> Result<Valid<'a>, Reason> {
        reflect::Event::validate(self, new_id).map(Valid::Native)
    }
}

/// A validated event, ready to be checked against the key and encoded for the writer.
pub enum Valid<'a> {
    /// Every vendor's: the canonical event.
    Canonical(ValidEvent),
    /// The native dialect's, borrowing from the payload.
    Native(reflect::ValidEvent<'a>),
}

impl Valid<'_> {
    pub fn event_id(&self) -> &str {
        match self {
            Valid::Canonical(e) => e.event_id(),
            Valid::Native(e) => e.event_id(),
        }
    }

    pub fn event_name(&self) -> &str {
        match self {
            Valid::Canonical(e) => &e.get().event_name,
            Valid::Native(e) => &e.get().event_name,
        }
    }

    pub fn event_ts_ms(&self) -> i64 {
        match self {
            Valid::Canonical(e) => e.get().event_ts_ms,
            Valid::Native(e) => e.get().event_ts_ms,
        }
    }
}

/// A decoded event, the rule the writer checks in the same commit (if any) and what the
/// success answer needs.
pub struct Decoded<T, E = Draft> {
    pub draft: E,
    pub guard: Option<ItemGuard>,
    pub then: T,
}

impl Decoded<()> {
    /// An event with no guard and a fixed answer.
    pub fn plain(draft: Draft) -> Decoded<()> {
        Decoded {
            draft,
            guard: None,
            then: (),
        }
    }
}

/// A rule the writer checks for an event in its commit, said without store types.
pub enum ItemGuard {
    /// Adjust's ordering rule: refused when older than the last stored event of the same
    /// app, event token and device; on acceptance `skan`, a conversion value the event
    /// earned, is merged into the device's.
    NotBefore {
        app_id: u32,
        event_token: String,
        device: String,
        skan: Option<crate::skan::Value>,
    },
    /// GameRebellion: on acceptance the session starts at `ts_ms`, the latest open one of
    /// its identifiers (`identity`).
    SessionStart {
        app_id: u32,
        session_id: String,
        ts_ms: i64,
        identity: Option<[u8; 16]>,
    },
    /// GameRebellion: on acceptance the session is forgotten.
    SessionEnd { app_id: u32, session_id: String },
}

/// The store lookups a dialect's [`Ingest::credential`] makes, provided by the pipeline so
/// that a dialect names no store type. The first lookup that finds an app names it for the
/// counting of a refusal that follows.
pub trait Lookup {
    /// An authenticated key (or the keyless principal of an app).
    type Key;
    /// The key a presented token is; a revoked and an unknown one are refused alike.
    fn key(&mut self, token: &str) -> Result<Self::Key, Reason>;
    /// The key an `X-API-Key` is; a revoked one (403) is told apart from an unknown one.
    fn api_key(&mut self, token: &str) -> Result<Self::Key, Reason>;
    /// The app a key belongs to.
    fn app_of(key: &Self::Key) -> u32;
    /// The keyless principal of an app (key id 0, every event name allowed).
    fn keyless(&mut self, app_id: u32) -> Result<Option<Self::Key>, Reason>;
    /// The app configured with this AppsFlyer bundle id.
    fn app_by_bundle(&mut self, bundle: &str) -> Result<u32, Reason>;
    /// The app configured with this Adjust app token.
    fn adjust_app(&mut self, app_token: &str) -> Result<adjust::AdjustApp, Reason>;
    /// The active secret that made `mac` over `timestamp.body`: its app's keyless
    /// principal and the secret's id.
    fn signer(
        &mut self,
        timestamp: &str,
        body: &[u8],
        mac: &[u8],
        now_ms: u64,
    ) -> Result<Signer<Self::Key>, Reason>;
    /// When a session of an app started, if it is known.
    fn session_start(&mut self, app_id: u32, session_id: &str) -> Result<Option<i64>, Reason>;
    /// The latest open session of an app started with the identifiers `identity`.
    fn latest_open_session(
        &mut self,
        app_id: u32,
        identity: &[u8; 16],
    ) -> Result<Option<OpenSession>, Reason>;
    /// Where the payload of the stored event `seq` is kept (`None` when it cannot be read).
    fn audit_key_of(&mut self, seq: u64) -> Option<String>;
    /// The SKAdNetwork conversion value stored for a device of an app.
    fn skan_value(
        &mut self,
        app_id: u32,
        device: &str,
    ) -> Result<Option<crate::skan::Value>, Reason>;
}

/// The largest body an endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// The configured limit of a single-event request.
    Single,
    /// The configured limit of a batch request.
    Bulk,
    /// The vendor's own limit, in bytes.
    Bytes(usize),
    /// No body is read.
    None,
}

/// How a request's raw body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFormat {
    /// A JSON document (every dialect but Adjust).
    Json,
    /// A query string and/or form body (Adjust).
    Form,
}

impl AuditFormat {
    /// The file extension of a kept body.
    pub fn ext(self) -> &'static str {
        match self {
            AuditFormat::Json => "json",
            AuditFormat::Form => "txt",
        }
    }
}

/// The `Authorization: Bearer <token>` of a request, when it has a non-empty one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
}

/// A request's checked credential: the key it is attributed to and what the dialect learned
/// finding it ([`Ingest::Auth`]).
pub struct Credited<K, A> {
    pub key: K,
    pub auth: A,
}

/// A GameRebellion session that started and has not ended: its id and start time.
pub struct OpenSession {
    pub session_id: String,
    pub started_ms: i64,
}

/// The principal of a signed request: its app's keyless key and the id of the secret whose
/// signature matched.
pub struct Signer<K> {
    pub key: K,
    pub secret_id: u32,
}

/// One event of a batch request: its `event_id` when it had a string one (so that a
/// rejection can name it) and its decoding.
#[derive(Debug, PartialEq)]
pub struct BatchItem<'a, E = Draft> {
    pub event_id: Option<Cow<'a, str>>,
    pub draft: Result<E, Reason>,
}

/// Decodes a `{"events": [...]}` batch body. The request fails as a whole only when it is not
/// a JSON object with a non-empty `events` array of at most `max`; each event then gets its
/// own result, decoded by `decode` (an event that is not an object is `bad_json`).
pub fn decode_events(
    body: &[u8],
    max: usize,
    decode: impl Fn(Map<String, Value>) -> Result<Draft, Reason>,
) -> Result<Vec<BatchItem<'static>>, Reason> {
    let mut object = json::parse_object(body).ok_or(Reason::BadJson)?;
    let events = match object.shift_remove("events") {
        None | Some(Value::Null) => return Err(Reason::Required(Field::Events)),
        Some(Value::Array(events)) => events,
        Some(_) => return Err(Reason::Invalid(Field::Events)),
    };
    if events.is_empty() {
        return Err(Reason::Required(Field::Events));
    }
    if events.len() > max {
        return Err(Reason::TooManyEvents);
    }
    Ok(events
        .into_iter()
        .map(|event| match event {
            Value::Object(map) => BatchItem {
                event_id: map
                    .get("event_id")
                    .and_then(Value::as_str)
                    .map(|id| Cow::Owned(id.to_owned())),
                draft: decode(map),
            },
            _ => BatchItem {
                event_id: None,
                draft: Err(Reason::BadJson),
            },
        })
        .collect())
}
