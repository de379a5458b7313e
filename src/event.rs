//! The canonical event every dialect decodes into, its validation, and the stable rejection
//! reasons shared by all stages.
//!
//! A dialect produces a [`Draft`]; [`Draft::validate`] is the only way to get a [`ValidEvent`],
//! and the writer only accepts a `store::pending::Pending`, made only from a `ValidEvent` (or
//! the native fast path's `reflect::ValidEvent`), so an unchecked event cannot reach the log.

use serde_json::{Map, Value};
use std::borrow::Cow;

/// Longest accepted `event_name`, in characters.
pub const MAX_EVENT_NAME: usize = 128;
/// Longest accepted identifier (`event_id`, `install_uuid`, `user_id`, ...), in characters.
pub const MAX_ID: usize = 256;

/// A field of the canonical event, named as on the wire of the native dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    EventId,
    EventName,
    EventTsMs,
    InstallUuid,
    UserId,
    AnonymousId,
    Revenue,
    Currency,
    TransactionId,
    ProductId,
    Props,
    Ids,
    Events,
    // GameRebellion
    EventType,
    Identifiers,
    Utm,
    Payload,
    Amount,
    SessionId,
    // Adjust
    S2s,
    AppToken,
    EventToken,
    DeviceId,
    IpAddress,
    CreatedAt,
    CallbackParams,
    PartnerParams,
    Environment,
    SkadnRegisteredAt,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::EventId => "event_id",
            Field::EventName => "event_name",
            Field::EventTsMs => "event_ts_ms",
            Field::InstallUuid => "install_uuid",
            Field::UserId => "user_id",
            Field::AnonymousId => "anonymous_id",
            Field::Revenue => "revenue",
            Field::Currency => "currency",
            Field::TransactionId => "transaction_id",
            Field::ProductId => "product_id",
            Field::Props => "props",
            Field::Ids => "ids",
            Field::Events => "events",
            Field::EventType => "event_type",
            Field::Identifiers => "identifiers",
            Field::Utm => "utm",
            Field::Payload => "payload",
            Field::Amount => "amount",
            Field::SessionId => "session_id",
            Field::S2s => "s2s",
            Field::AppToken => "app_token",
            Field::EventToken => "event_token",
            Field::DeviceId => "device_id",
            Field::IpAddress => "ip_address",
            Field::CreatedAt => "created_at",
            Field::CallbackParams => "callback_params",
            Field::PartnerParams => "partner_params",
            Field::Environment => "environment",
            Field::SkadnRegisteredAt => "skadn_registered_at",
        }
    }
}

/// Why a request or one event of it was not accepted. Each has a stable snake_case tag that
/// clients can match on; the HTTP status is chosen in one place, `http::reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    BadJson,
    TooManyEvents,
    Required(Field),
    Invalid(Field),
    TooLong(Field),
    MissingBearerToken,
    UnknownOrRevokedKey,
    EventNotAllowedByKey,
    BodyTooLarge,
    CapExceeded,
    /// The writer queue is full: retry shortly.
    Overloaded,
    /// The commit failed (I/O error, disk full): nothing of the request was stored.
    StorageUnavailable,
    /// The server is shutting down and no longer takes new work.
    ShuttingDown,
    /// Stored data needed to judge the request is damaged, or a bug: retrying cannot help
    /// (500; the detail is logged, never answered).
    Internal,
    RequestTimeout,
    /// The body could not be read (the client went away mid-body, bad chunking).
    BodyUnreadable,
    /// A `Content-Encoding` other than identity: inlet takes uncompressed bodies only.
    UnsupportedEncoding,
    NotFound,
    MethodNotAllowed,
    /// GameRebellion: no `X-API-Key` header.
    MissingApiKey,
    /// GameRebellion: the `X-API-Key` is no key of this server.
    UnknownApiKey,
    /// GameRebellion: the `X-API-Key` was revoked.
    RevokedApiKey,
    /// GameRebellion: the key's requests-per-minute limit is used up.
    RateLimited,
    /// GameRebellion: a session stop or end names no session id, and no session started with
    /// the same identifiers is open (404).
    NoOpenSession,
    /// Adjust: no app has this `app_token`.
    UnknownAppToken,
    /// Adjust: the bearer key belongs to another app than the `app_token`'s.
    KeyNotForApp,
    /// Adjust: the timestamp is more than 58 days before the receive time.
    EventTooOld,
    /// Adjust: the timestamp is earlier than the last accepted one of the same device and
    /// event token.
    EventOutOfOrder,
    /// A parameter that may appear once appeared twice.
    DuplicateParameter,
    /// A body in a content type the endpoint does not take.
    UnsupportedContentType,
    /// A field of a vendor dialect is missing or malformed (400). The tag is the dialect's
    /// own, naming the field as on that vendor's wire: `eventName_required`, ...
    VendorField(&'static str),
    /// AppsFlyer: no app is configured with the bundle id of the path (404).
    UnknownBundleId,
    /// Datafly: no `X-Signature` header (401).
    SignatureRequired,
    /// Datafly: the signature is malformed or made with no active secret (401).
    SignatureInvalid,
    /// Datafly: no or a non-numeric `X-Timestamp` header (401).
    TimestampRequired,
    /// Datafly: `X-Timestamp` is more than 5 minutes from the server's clock (403).
    TimestampOutsideWindow,
    /// The event carries an identifier of a subject erased with suppression (403).
    SubjectSuppressed,
}

impl Reason {
    pub fn tag(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Reason::BadJson => "bad_json",
            Reason::TooManyEvents => "too_many_events",
            Reason::Required(f) => return format!("{}_required", f.name()).into(),
            Reason::Invalid(f) => return format!("{}_invalid", f.name()).into(),
            Reason::TooLong(f) => return format!("{}_too_long", f.name()).into(),
            Reason::MissingBearerToken => "missing_bearer_token",
            Reason::UnknownOrRevokedKey => "unknown_or_revoked_key",
            Reason::EventNotAllowedByKey => "event_not_allowed_by_key",
            Reason::BodyTooLarge => "body_too_large",
            Reason::CapExceeded => "cap_exceeded",
            Reason::Overloaded => "overloaded",
            Reason::StorageUnavailable => "storage_unavailable",
            Reason::Internal => "internal",
            Reason::ShuttingDown => "shutting_down",
            Reason::RequestTimeout => "request_timeout",
            Reason::BodyUnreadable => "body_unreadable",
            Reason::UnsupportedEncoding => "unsupported_content_encoding",
            Reason::NotFound => "not_found",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::MissingApiKey => "missing_api_key",
            Reason::UnknownApiKey => "unknown_api_key",
            Reason::RevokedApiKey => "api_key_revoked",
            Reason::RateLimited => "rate_limit_exceeded",
            Reason::NoOpenSession => "no_open_session",
            Reason::UnknownAppToken => "unknown_app_token",
            Reason::KeyNotForApp => "key_not_for_app",
            Reason::EventTooOld => "event_too_old",
            Reason::EventOutOfOrder => "event_out_of_order",
            Reason::DuplicateParameter => "duplicate_parameter",
            Reason::UnsupportedContentType => "unsupported_content_type",
            Reason::VendorField(tag) => tag,
            Reason::UnknownBundleId => "unknown_bundle_id",
            Reason::SignatureRequired => "signature_required",
            Reason::SignatureInvalid => "signature_invalid",
            Reason::TimestampRequired => "timestamp_required",
            Reason::TimestampOutsideWindow => "timestamp_outside_window",
            Reason::SubjectSuppressed => "subject_suppressed",
        })
    }
}

/// A decoded, not yet validated canonical event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    /// `None`: the sender gave no id; one is generated and no dedupe is possible.
    pub event_id: Option<String>,
    pub event_name: String,
    pub event_ts_ms: i64,
    pub install_uuid: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// Other identifiers (`player_id`, `device_id`, `idfa`, ...), in the order given.
    pub ids: Vec<(String, String)>,
    pub revenue: Option<f64>,
    pub currency: Option<String>,
    pub transaction_id: Option<String>,
    pub product_id: Option<String>,
    /// Every other field the sender gave, kept losslessly and in the sender's order.
    pub props: Map<String, Value>,
    /// Request context: ip, user agent, utm, ...
    pub context: Map<String, Value>,
}

/// A canonical event that passed validation and carries its final `event_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent(Draft);

impl ValidEvent {
    pub fn get(&self) -> &Draft {
        &self.0
    }

    /// The event id: the sender's, or the one generated in [`Draft::validate`].
    pub fn event_id(&self) -> &str {
        self.0.event_id.as_deref().unwrap_or_default()
    }

    pub fn into_inner(self) -> Draft {
        self.0
    }
}

impl Draft {
    /// Checks the limits every dialect shares and fixes the event id, generating one with
    /// `new_id` when the sender gave none.
    pub fn validate(mut self, new_id: impl FnOnce() -> String) -> Result<ValidEvent, Reason> {
        Checks {
            event_id: self.event_id.as_deref(),
            event_name: &self.event_name,
            install_uuid: self.install_uuid.as_deref(),
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
            self.event_id = Some(new_id());
        }
        if let Some(c) = &mut self.currency {
            c.make_ascii_uppercase();
        }
        Ok(ValidEvent(self))
    }
}

/// The fields [`Draft::validate`] checks, borrowed, so that a dialect with its own event type
/// (the native one, which borrows from the body) applies exactly the same checks in the same
/// order. After `run` succeeds the caller generates a missing event id and upper-cases the
/// currency.
pub struct Checks<'a, S> {
    pub event_id: Option<&'a str>,
    pub event_name: &'a str,
    pub install_uuid: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub anonymous_id: Option<&'a str>,
    pub transaction_id: Option<&'a str>,
    pub product_id: Option<&'a str>,
    pub ids: &'a [(S, S)],
    pub revenue: Option<f64>,
    pub currency: Option<&'a str>,
}

impl<S: AsRef<str>> Checks<'_, S> {
    /// The first limit the event breaks, in a fixed order.
    pub fn run(&self) -> Result<(), Reason> {
        if let Some(id) = self.event_id {
            check_id(Field::EventId, id)?;
        }
        if self.event_name.is_empty() {
            return Err(Reason::Required(Field::EventName));
        }
        if self.event_name.len() > MAX_EVENT_NAME
            && self.event_name.chars().count() > MAX_EVENT_NAME
        {
            return Err(Reason::TooLong(Field::EventName));
        }
        for (field, value) in [
            (Field::InstallUuid, self.install_uuid),
            (Field::UserId, self.user_id),
            (Field::AnonymousId, self.anonymous_id),
            (Field::TransactionId, self.transaction_id),
            (Field::ProductId, self.product_id),
        ] {
            if let Some(v) = value {
                check_id(field, v)?;
            }
        }
        for (name, value) in self.ids {
            let name = name.as_ref();
            if name.is_empty() || (name.len() > MAX_ID && name.chars().count() > MAX_ID) {
                return Err(Reason::Invalid(Field::Ids));
            }
            check_id(Field::Ids, value.as_ref())?;
        }
        if let Some(r) = self.revenue
            && !r.is_finite()
        {
            return Err(Reason::Invalid(Field::Revenue));
        }
        if let Some(c) = self.currency
            && (c.len() != 3 || !c.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            return Err(Reason::Invalid(Field::Currency));
        }
        Ok(())
    }
}

fn check_id(field: Field, value: &str) -> Result<(), Reason> {
    if value.is_empty() {
        return Err(Reason::Invalid(field));
    }
    // A string of at most MAX_ID bytes has at most MAX_ID characters.
    if value.len() > MAX_ID && value.chars().count() > MAX_ID {
        return Err(Reason::TooLong(field));
    }
    Ok(())
}

/// A fresh random 128-bit id as 32 lowercase hex characters (a dashless uuid4-like id).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes[..]);
    hex(&bytes)
}

/// A random id whose first 48 bits are the current time in ms (the UUIDv7 layout, as 32
/// lowercase hex digits): ids made later sort later, so an index keyed by them grows at its
/// end (batch audit keys).
pub fn time_ordered_id() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes[6..]);
    bytes[..6].copy_from_slice(&crate::clock::now_ms().to_be_bytes()[2..]);
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    hex(&bytes)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Bytes of lowercase or uppercase hex; `None` for anything else (no sign, no odd length).
/// Hex is small enough to keep here rather than add a crate for it.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16);
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(((digit(p[0])? << 4) | digit(p[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_unhex_takes_only_hex_digits() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes.clone()));
        assert_eq!(unhex(&hex(&bytes).to_uppercase()), Some(bytes));
        assert_eq!(unhex(""), Some(vec![]));
        for bad in ["a", "+a", "0g", " 0", "é"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }

    fn draft() -> Draft {
        Draft {
            event_name: "purchase".into(),
            event_ts_ms: 1,
            ..Draft::default()
        }
    }

    #[test]
    fn generates_an_id_only_when_absent() {
        let v = draft().validate(|| "gen".into()).unwrap();
        assert_eq!(v.event_id(), "gen");
        let mut d = draft();
        d.event_id = Some("mine".into());
        assert_eq!(d.validate(|| "gen".into()).unwrap().event_id(), "mine");
    }

    #[test]
    fn enforces_lengths_and_formats() {
        let mut d = draft();
        d.event_name = "x".repeat(129);
        assert_eq!(
            d.validate(random_id),
            Err(Reason::TooLong(Field::EventName))
        );
        let mut d = draft();
        d.event_name = "é".repeat(128);
        assert!(
            d.validate(random_id).is_ok(),
            "limit counts characters, not bytes"
        );
        let mut d = draft();
        d.user_id = Some("u".repeat(257));
        assert_eq!(d.validate(random_id), Err(Reason::TooLong(Field::UserId)));
        let mut d = draft();
        d.currency = Some("US".into());
        assert_eq!(d.validate(random_id), Err(Reason::Invalid(Field::Currency)));
        let mut d = draft();
        d.currency = Some("usd".into());
        assert_eq!(
            d.validate(random_id).unwrap().get().currency.as_deref(),
            Some("USD")
        );
    }

    #[test]
    fn tags_are_stable() {
        assert_eq!(
            Reason::Required(Field::InstallUuid).tag(),
            "install_uuid_required"
        );
        assert_eq!(
            Reason::TooLong(Field::EventName).tag(),
            "event_name_too_long"
        );
        assert_eq!(Reason::UnknownOrRevokedKey.tag(), "unknown_or_revoked_key");
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(random_id().len(), 32);
    }
}
