//! The Adjust dialect (`specs/adjust-s2s.md`, `specs/adjust-responses.md`): `GET /event` and
//! `POST /event` with URL parameters, or `POST /event` with an
//! `application/x-www-form-urlencoded` body.
//!
//! Decoding runs in two steps so that the pipeline can find the app and check the key in
//! between: [`Params::parse`] checks what names the app (`s2s=1`, `app_token`,
//! `event_token`), then [`Params::into_event`] turns the rest into a canonical [`Draft`] once
//! the event token is mapped to an event name.
//!
//! Mapping: device identifiers → `ids` (at least one); `ip_address` (IPv4 only) →
//! `context.ip`; `user_agent` → `context.user_agent`; `environment` (`sandbox` |
//! `production`, default production) → `context.environment`; `created_at_unix` (seconds) or
//! `created_at` (ISO 8601) → `event_ts_ms` (none → the receive time); `revenue` (0.001 to
//! 1e11) and `currency` → those fields; `callback_params` / `partner_params` (flat JSON
//! objects) and every other parameter (`app_token` and `event_token` included) → `props`.
//! `skadn_registered_at` (ISO 8601 as the Adjust SDK sends it, or Unix seconds; not ahead of
//! the receive time by more than the clock skew allowance) stays in `props` and marks an
//! iOS 14+ request ([`crate::skan`]).
//!
//! Event id: Adjust has none. When the sender gives a timestamp, the id is a hash of all the
//! request's parameters, so an exact retry of a request is a duplicate (stored once, answered
//! `OK`); without a timestamp two identical requests are two events, and the id is random.

use super::json;
use crate::event::{Draft, Field, Reason, hex};
use crate::http::Reply;
use hyper::StatusCode;
use ring::digest;
use serde_json::{Map, Value};
use std::net::Ipv4Addr;

/// The Adjust S2S dialect (`/event`).
pub struct Adjust;

impl super::Dialect for Adjust {
    const SOURCE: &'static str = "adjust";

    /// Adjust's table: "404 Device not found" when no device is given.
    fn status(reason: Reason) -> StatusCode {
        match reason {
            Reason::Required(Field::DeviceId) => StatusCode::NOT_FOUND,
            _ => crate::http::reply::status_of(reason),
        }
    }

    /// `{"error": "Event request failed (<message>)"}`, with the message of [`message`].
    fn error(reason: Reason, status: StatusCode) -> Reply {
        let message = message(reason);
        Reply::json(
            status,
            &serde_json::json!({ "error": format!("Event request failed ({message})") }),
        )
    }
}

/// Adjust's success answer: `200 OK`.
pub fn ok() -> Reply {
    Reply::text(StatusCode::OK, "OK")
}

/// What the request line and headers say: `Authorization: Bearer` (and whether the header
/// was there at all), whether a body is a form, the query string and whether a body is read
/// (`POST`).
pub struct Head {
    bearer: Option<String>,
    has_authorization: bool,
    is_form: bool,
    query: Vec<u8>,
    post: bool,
}

/// The app an `app_token` names, as authenticating needs it.
pub struct AdjustApp {
    pub app_id: u32,
    /// `--adjust-require-token false`: a request without `Authorization` is attributed to
    /// key id 0.
    pub token_optional: bool,
    /// Event token → event name.
    pub events: std::collections::BTreeMap<String, String>,
    /// The app's conversion value rules, if any.
    pub skan: Option<crate::skan::Rules>,
}

/// The request side, top to bottom: parameters (query string, then a form body within the
/// limit) → `s2s=1`, `app_token`, `event_token` present → the app of the `app_token` (404) →
/// `Authorization: Bearer` key of that app (401; may be absent when the app allows it) →
/// `event_token` → event name of that app (400) → the rest of the event. The writer checks the
/// ordering rule per device and event token and merges an iOS 14+ request's conversion value
/// into the device's; the answer is `OK`, or for an iOS 14+ request (`skadn_registered_at`)
/// of an app with conversion value rules, the device's value as JSON ([`crate::skan`]).
/// What the credential step learned from a request's parameters: the parameters, the event
/// name its `event_token` maps to, and its app.
pub struct Token {
    params: Params,
    /// `None`: the token maps to no event of the app, refused in `decode` (once the key is
    /// known, so that the event can be kept in the quarantine).
    event_name: Option<String>,
    app: AdjustApp,
}

impl super::Ingest for Adjust {
    type Head = Head;
    type Auth = Token;
    /// The app and device whose conversion value the answer names.
    type Then = Option<(u32, String)>;
    type Event<'a> = Draft;
    const AUDIT_PREFIX: &'static str = "adjust";
    const AUDIT: super::AuditFormat = super::AuditFormat::Form;

    fn head(
        method: &hyper::Method,
        uri: &hyper::Uri,
        headers: &hyper::HeaderMap,
    ) -> Result<Head, Reason> {
        let is_form = headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        Ok(Head {
            bearer: super::bearer(headers).map(str::to_owned),
            has_authorization: headers.contains_key(hyper::header::AUTHORIZATION),
            is_form,
            query: uri.query().unwrap_or_default().as_bytes().to_vec(),
            post: method == hyper::Method::POST,
        })
    }

    fn body_limit(head: &Head) -> super::BodyLimit {
        if head.post {
            super::BodyLimit::Single
        } else {
            super::BodyLimit::None
        }
    }

    /// The query string and the form body joined by `&`.
    fn payload(head: &Head, body: bytes::Bytes) -> Result<bytes::Bytes, Reason> {
        let mut raw = head.query.clone();
        if !body.is_empty() {
            if !head.is_form {
                return Err(Reason::UnsupportedContentType);
            }
            if !raw.is_empty() {
                raw.push(b'&');
            }
            raw.extend_from_slice(&body);
        }
        Ok(raw.into())
    }

    fn credential<L: super::Lookup>(
        lookup: &mut L,
        head: &Head,
        _: Option<L::Key>,
        raw: &[u8],
        _: u64,
    ) -> Result<super::Credited<L::Key, Token>, Reason> {
        let params = Params::parse(raw)?;
        let app = lookup.adjust_app(&params.app_token)?;
        // A key that is given must be right even where none is required.
        let key = match &head.bearer {
            Some(token) => lookup.key(token)?,
            None if app.token_optional && !head.has_authorization => {
                lookup.keyless(app.app_id)?.ok_or(Reason::UnknownAppToken)?
            }
            None => return Err(Reason::MissingBearerToken),
        };
        if L::app_of(&key) != app.app_id {
            return Err(Reason::KeyNotForApp);
        }
        let event_name = app.events.get(&params.event_token).cloned();
        Ok(super::Credited {
            key,
            auth: Token {
                params,
                event_name,
                app,
            },
        })
    }

    fn decode<L: super::Lookup>(
        _: &mut L,
        _: &Head,
        Token {
            params,
            event_name,
            app,
        }: Token,
        _: &[u8],
        received_at_ms: u64,
    ) -> Result<super::Decoded<Self::Then>, Reason> {
        let event_name = event_name.ok_or(Reason::Invalid(Field::EventToken))?;
        let decoded = params.into_event(&event_name, received_at_ms)?;
        // iOS 14+: the conversion value this event earns under the app's rules, within the
        // window after the app registered for SKAdNetwork.
        let (then, earned) = match (&app.skan, decoded.skadn_registered_at) {
            (Some(rules), Some(registered)) => {
                let earned = rules
                    .in_window(registered, received_at_ms as i64)
                    .then(|| rules.value_of(&decoded.draft.event_name, decoded.draft.revenue))
                    .flatten();
                (Some((app.app_id, decoded.device.clone())), earned)
            }
            _ => (None, None),
        };
        Ok(super::Decoded {
            draft: decoded.draft,
            guard: Some(super::ItemGuard::NotBefore {
                app_id: app.app_id,
                event_token: decoded.event_token,
                device: decoded.device,
                skan: earned,
            }),
            then,
        })
    }

    const KEEPS: bool = true;

    /// A kept item is the request's parameters (the query string and form body joined): its
    /// app token and event token are looked up anew, so that a token mapped since replays.
    fn redecode<L: super::Lookup>(
        lookup: &mut L,
        key: &L::Key,
        item: &[u8],
        event_id: &str,
        received_at_ms: u64,
    ) -> Result<(Draft, Option<super::ItemGuard>), Reason> {
        let params = Params::parse(item)?;
        let app = lookup.adjust_app(&params.app_token)?;
        if L::app_of(key) != app.app_id {
            return Err(Reason::KeyNotForApp);
        }
        let event_name = app.events.get(&params.event_token).cloned();
        let head = Head {
            bearer: None,
            has_authorization: false,
            is_form: false,
            query: Vec::new(),
            post: false,
        };
        let token = Token {
            params,
            event_name,
            app,
        };
        let mut decoded = Self::decode(lookup, &head, token, item, received_at_ms)?;
        decoded.draft.event_id = Some(event_id.to_owned());
        Ok((decoded.draft, decoded.guard))
    }

    /// The id the event would have (when its timestamp makes one) and its event token.
    fn kept_label(item: &[u8], received_at_ms: u64) -> (Option<String>, Option<String>) {
        let Ok(params) = Params::parse(item) else {
            return (None, None);
        };
        let token = params.event_token.clone();
        let id = params
            .into_event(&token, received_at_ms)
            .ok()
            .and_then(|d| d.draft.event_id);
        (id, Some(token))
    }

    /// `OK`, or the device's conversion value (read after the commit: it includes this
    /// event).
    fn ok<L: super::Lookup>(
        lookup: &mut L,
        then: Self::Then,
        _: &super::Stored,
    ) -> Result<Reply, Reason> {
        let Some((app_id, device)) = then else {
            return Ok(ok());
        };
        Ok(match lookup.skan_value(app_id, &device)? {
            Some(v) => Reply::json(StatusCode::OK, &crate::skan::answer(v)),
            None => ok(),
        })
    }
}

/// Accepted device identifiers, preferred first: the first one present names the device for
/// the ordering rule.
pub const DEVICE_IDS: [&str; 8] = [
    "idfa",
    "gps_adid",
    "fire_adid",
    "oaid",
    "web_uuid",
    "idfv",
    "android_id",
    "adid",
];

/// Events older than this (before the receive time) are refused.
pub const MAX_AGE_MS: i64 = 58 * 86_400_000;
/// Timestamps further ahead of the receive time than this are refused (clock skew allowance).
pub const MAX_AHEAD_MS: i64 = 3_600_000;
/// Largest accepted revenue (Adjust's limit).
pub const MAX_REVENUE: f64 = 1e11;
/// Smallest accepted revenue.
pub const MIN_REVENUE: f64 = 0.001;

/// The message of a request without `Authorization: Bearer` for an app that requires it (the
/// default): Adjust's own message, then what to send, or the setting that lets this app's
/// requests come without a key.
pub const MISSING_TOKEN: &str = "Failed to authorize request: no Authorization: Bearer <S2S token>; \
send a key of this app (inlet keys mint --app APP), or accept requests without one with \
inlet apps configure APP --adjust-require-token false";

/// The message in `{"error": "Event request failed (<message>)"}` for a refusal. Adjust's own
/// messages where its table has a row for the case; plain ones in its style otherwise.
pub fn message(reason: Reason) -> &'static str {
    match reason {
        Reason::Required(Field::S2s) | Reason::Invalid(Field::S2s) => "Missing parameter s2s=1",
        Reason::Required(Field::AppToken) | Reason::Invalid(Field::AppToken) => "Invalid app token",
        Reason::UnknownAppToken => "App token not found",
        Reason::Required(Field::EventToken) | Reason::Invalid(Field::EventToken) => {
            "Invalid event token"
        }
        // Adjust's snippets send no token; say how to accept that instead of only refusing.
        Reason::MissingBearerToken => MISSING_TOKEN,
        Reason::UnknownOrRevokedKey | Reason::KeyNotForApp => "Failed to authorize request",
        Reason::EventNotAllowedByKey => "Event token blocklisted",
        Reason::Required(Field::DeviceId) | Reason::Invalid(Field::DeviceId) => "Device not found",
        Reason::Invalid(Field::IpAddress) => "Invalid IP address, only IPv4 is supported",
        Reason::Invalid(Field::CreatedAt) => "Invalid created_at",
        Reason::EventTooOld => "Bad event state: created_at is older than 58 days",
        Reason::EventOutOfOrder => {
            "Bad event state: created_at is earlier than the last event of this device and event token"
        }
        Reason::Invalid(Field::CallbackParams) | Reason::Invalid(Field::PartnerParams) => {
            "Invalid callback parameters"
        }
        Reason::Invalid(Field::Revenue) => "Invalid revenue",
        Reason::Required(Field::Currency) | Reason::Invalid(Field::Currency) => "Invalid currency",
        Reason::Invalid(Field::Environment) => "Invalid environment",
        Reason::Invalid(Field::SkadnRegisteredAt) => "Invalid skadn_registered_at",
        Reason::DuplicateParameter => "Bad event state: a parameter is given more than once",
        Reason::BodyTooLarge => "Request too large",
        Reason::UnsupportedContentType => {
            "Unsupported content type, use application/x-www-form-urlencoded"
        }
        Reason::UnsupportedEncoding => "Unsupported content encoding",
        Reason::CapExceeded => "Monthly event quota exceeded",
        Reason::RequestTimeout => "Request timeout",
        Reason::Overloaded | Reason::StorageUnavailable | Reason::ShuttingDown => {
            "Service temporarily unavailable, retry later"
        }
        Reason::Internal => "Internal error",
        Reason::MethodNotAllowed => "Method not allowed",
        Reason::NotFound => "Not found",
        Reason::TooLong(_) => "Bad event state: a parameter is too long",
        _ => "Bad event state",
    }
}

/// Parameters of one request (query string, then form body), decoded, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pairs: Vec<(String, String)>,
    pub app_token: String,
    pub event_token: String,
}

impl Params {
    /// Decodes `raw` (`a=1&b=2` text; the query string and the form body joined by `&`) and
    /// checks the parameters that name the app and event: `s2s=1`, `app_token`, `event_token`.
    pub fn parse(raw: &[u8]) -> Result<Params, Reason> {
        let pairs = parse_form(raw)?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(Reason::DuplicateParameter);
            }
        }
        let get = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        match get("s2s").map(String::as_str) {
            Some("1") => {}
            None => return Err(Reason::Required(Field::S2s)),
            Some(_) => return Err(Reason::Invalid(Field::S2s)),
        }
        let token = |name: &str, field: Field| match get(name) {
            None => Err(Reason::Required(field)),
            Some(t) if token_ok(t) => Ok(t.clone()),
            Some(_) => Err(Reason::Invalid(field)),
        };
        let app_token = token("app_token", Field::AppToken)?;
        let event_token = token("event_token", Field::EventToken)?;
        Ok(Params {
            pairs,
            app_token,
            event_token,
        })
    }

    /// The canonical event named `event_name`, received at `received_at_ms`. Also returns
    /// the device (`name=value` of its preferred identifier) and, when the sender gave one,
    /// the event's timestamp: together the key of the ordering rule.
    pub fn into_event(self, event_name: &str, received_at_ms: u64) -> Result<Decoded, Reason> {
        let received = i64::try_from(received_at_ms).unwrap_or(i64::MAX);
        let fingerprint = fingerprint(&self.pairs);
        let mut d = Draft {
            event_name: event_name.to_owned(),
            event_ts_ms: received,
            ..Draft::default()
        };
        let mut explicit_ts = None;
        let mut created_at = None;
        let mut skadn_registered_at = None;
        let mut revenue = None;
        for (name, value) in self.pairs {
            match name.as_str() {
                "s2s" => {}
                n if DEVICE_IDS.contains(&n) => {
                    if !value.is_empty() {
                        d.ids.push((name, value));
                    }
                }
                "ip_address" => {
                    let ip: Ipv4Addr = value
                        .parse()
                        .map_err(|_| Reason::Invalid(Field::IpAddress))?;
                    d.context.insert("ip".into(), Value::String(ip.to_string()));
                }
                "user_agent" => {
                    d.context.insert("user_agent".into(), Value::String(value));
                }
                "environment" => {
                    if value != "sandbox" && value != "production" {
                        return Err(Reason::Invalid(Field::Environment));
                    }
                    d.context.insert("environment".into(), Value::String(value));
                }
                "created_at_unix" => {
                    let secs: i64 = value
                        .parse()
                        .ok()
                        .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                        .ok_or(Reason::Invalid(Field::CreatedAt))?;
                    explicit_ts = Some(
                        secs.checked_mul(1000)
                            .ok_or(Reason::Invalid(Field::CreatedAt))?,
                    );
                }
                "created_at" => {
                    created_at =
                        Some(parse_iso8601(&value).ok_or(Reason::Invalid(Field::CreatedAt))?);
                }
                "callback_params" | "partner_params" => {
                    let field = if name == "callback_params" {
                        Field::CallbackParams
                    } else {
                        Field::PartnerParams
                    };
                    d.props
                        .insert(name, Value::Object(flat_object(&value, field)?));
                }
                "revenue" => {
                    let r: f64 = value
                        .parse()
                        .ok()
                        .filter(|_| {
                            value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                                && value.bytes().any(|b| b.is_ascii_digit())
                        })
                        .filter(|r| (MIN_REVENUE..=MAX_REVENUE).contains(r))
                        .ok_or(Reason::Invalid(Field::Revenue))?;
                    revenue = Some(r);
                }
                "skadn_registered_at" => {
                    // The SDK's form (`2023-06-10T09:06:36.898Z+0200`) or Unix seconds.
                    let ms = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                        value.parse::<i64>().ok().and_then(|s| s.checked_mul(1000))
                    } else {
                        parse_iso8601(&value)
                    };
                    let ms = ms
                        .filter(|ms| *ms <= received.saturating_add(MAX_AHEAD_MS))
                        .ok_or(Reason::Invalid(Field::SkadnRegisteredAt))?;
                    skadn_registered_at = Some(ms);
                    d.props.insert(name, Value::String(value));
                }
                "currency" => d.currency = Some(value),
                _ => {
                    d.props.insert(name, Value::String(value));
                }
            }
        }
        // `created_at_unix` is the recommended one: it wins when both are given.
        let explicit_ts = explicit_ts.or(created_at);
        if let Some(ts) = explicit_ts {
            if ts < received.saturating_sub(MAX_AGE_MS) {
                return Err(Reason::EventTooOld);
            }
            if ts > received.saturating_add(MAX_AHEAD_MS) {
                return Err(Reason::Invalid(Field::CreatedAt));
            }
            d.event_ts_ms = ts;
        }
        if let Some(r) = revenue {
            if d.currency.is_none() {
                return Err(Reason::Required(Field::Currency));
            }
            d.revenue = Some(r);
        }
        let device = DEVICE_IDS
            .iter()
            .find_map(|n| d.ids.iter().find(|(k, _)| k == n))
            .map(|(k, v)| format!("{k}={v}"))
            .ok_or(Reason::Required(Field::DeviceId))?;
        if explicit_ts.is_some() {
            d.event_id = Some(format!("adj_{fingerprint}"));
        }
        Ok(Decoded {
            draft: d,
            device,
            event_token: self.event_token,
            skadn_registered_at,
        })
    }
}

/// A decoded Adjust event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub draft: Draft,
    /// `name=value` of the preferred device identifier given.
    pub device: String,
    pub event_token: String,
    /// `skadn_registered_at` (ms): when the app registered for SKAdNetwork attribution. Its
    /// presence marks an iOS 14+ request, answered with the device's conversion value.
    pub skadn_registered_at: Option<i64>,
}

/// App and event tokens: 1–64 of `A-Z a-z 0-9 _ -`.
fn token_ok(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// 32 hex characters of the SHA-256 of the parameters, sorted (so their order does not
/// matter).
fn fingerprint(pairs: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort();
    let mut h = digest::Context::new(&digest::SHA256);
    for (k, v) in sorted {
        h.update(&(k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update(&(v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    hex(&h.finish().as_ref()[..16])
}

/// A URL-encoded JSON object whose values are not objects or arrays.
fn flat_object(text: &str, field: Field) -> Result<Map<String, Value>, Reason> {
    let object = json::parse_object(text.as_bytes()).ok_or(Reason::Invalid(field))?;
    if object
        .values()
        .any(|v| matches!(v, Value::Object(_) | Value::Array(_)))
    {
        return Err(Reason::Invalid(field));
    }
    Ok(object)
}

/// Decodes `application/x-www-form-urlencoded` text (also used for query strings): pairs
/// split on `&`, name and value on the first `=`, `+` is a space, `%XY` a byte; a `%` not
/// followed by two hex digits is kept as is. Empty pieces are skipped. Names and values must
/// be UTF-8.
pub fn parse_form(raw: &[u8]) -> Result<Vec<(String, String)>, Reason> {
    raw.split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &b""[..]),
            };
            let text = |b: &[u8]| super::form::decode_text(b).ok_or(Reason::BodyUnreadable);
            Ok((text(name)?, text(value)?))
        })
        .collect()
}

/// Parses an ISO 8601 date-time into ms since the epoch: `YYYY-MM-DDTHH:MM[:SS[.fff]]`
/// followed by `Z`, an offset (`+HHMM`, `+HH:MM`, `+HH`, `-...`), `Z` and an offset (the
/// spec's own example `2017-01-02T15:04:05Z+0200`; the offset counts), or nothing (UTC).
/// A space may stand for the `T`, and for the `+` of an offset (an unencoded `+` in a URL
/// decodes to a space).
pub fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let year = num(0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (month, day) = (num(5, 2)?, num(8, 2)?);
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    let mut i = 16;
    let mut second = 0;
    let mut millis = 0;
    if b.get(i) == Some(&b':') {
        second = num(i + 1, 2)?;
        i += 3;
        if matches!(b.get(i), Some(b'.' | b',')) {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
            // Milliseconds: the first three digits, padded.
            let digits = &s[start..i.min(start + 3)];
            millis = format!("{digits:0<3}").parse::<i64>().ok()?;
        }
    }
    if matches!(b.get(i), Some(b'Z' | b'z')) {
        i += 1;
    }
    let mut offset_min = 0;
    if let Some(&sign) = b.get(i) {
        let sign = match sign {
            b'+' | b' ' => 1,
            b'-' => -1,
            _ => return None,
        };
        let oh = num(i + 1, 2)?;
        i += 3;
        if b.get(i) == Some(&b':') {
            i += 1;
        }
        let om = if i < b.len() { num(i, 2)? } else { 0 };
        if i < b.len() {
            i += 2;
        }
        if oh > 23 || om > 59 {
            return None;
        }
        offset_min = sign * (oh * 60 + om);
    }
    if i != b.len() {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = crate::clock::days_from_civil(year as i32, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_764_137_630_000; // 2025-11-26T06:13:50Z

    fn params(q: &str) -> Result<Params, Reason> {
        Params::parse(q.as_bytes())
    }

    fn event(q: &str) -> Result<Decoded, Reason> {
        params(q)?.into_event("purchase", NOW)
    }

    #[test]
    fn iso8601_forms() {
        let base = 1_483_369_445_000; // 2017-01-02T15:04:05Z
        for (text, want) in [
            ("2017-01-02T15:04:05Z", base),
            ("2017-01-02T15:04:05.000+0000", base),
            ("2017-01-02T15:04:05.250Z", base + 250),
            ("2017-01-02T15:04:05.2Z", base + 200),
            ("2017-01-02T15:04:05.123456Z", base + 123),
            ("2017-01-02T17:04:05+02:00", base),
            ("2017-01-02T17:04:05+02", base),
            ("2017-01-02T17:04:05Z+0200", base),
            ("2017-01-02T13:04:05-0200", base),
            ("2017-01-02T17:04:05.000 0200", base),
            ("2017-01-02 15:04:05", base),
            ("2017-01-02T15:04", base - 5000),
        ] {
            assert_eq!(parse_iso8601(text), Some(want), "{text}");
        }
        for bad in [
            "",
            "2017-01-02",
            "2017-13-02T15:04:05Z",
            "2017-02-29T15:04:05Z",
            "2017-01-02T24:04:05Z",
            "2017-01-02T15:04:05X",
            "2017-01-02T15:04:05+2",
            "2017-01-02T15:04:05.Z",
            "17-01-02T15:04:05Z",
            "2017-01-02T15:04:05+0200junk",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
        assert!(parse_iso8601("2016-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn form_decoding() {
        let p = parse_form(b"a=1&b=x%20y+z&c=%7B%22k%22%3A1%7D&&d&e=100%&f=%zz").unwrap();
        let want: Vec<(String, String)> = [
            ("a", "1"),
            ("b", "x y z"),
            ("c", r#"{"k":1}"#),
            ("d", ""),
            ("e", "100%"),
            ("f", "%zz"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(p, want);
        assert_eq!(parse_form(b"a=%ff"), Err(Reason::BodyUnreadable));
    }

    #[test]
    fn the_specs_example_request_decodes() {
        // The spec's GET example, verbatim (its created_at is from 2017: too old today).
        let q = "s2s=1&event_token=f0ob4r&app_token=4w565xzmb54d&idfa=D2CADB5F-410F-4963-AC0C-2A78534BDF1E&created_at=2017-01-02T15%3A04%3A05Z%2B0200&callback_params=%7B%22f0o%22%3A%22bar%22%2C%20%22bar%22%3A%22baz%22%7D&partner_params=%7B%22f0o%22%3A%22bar%22%2C%20%22bar%22%3A%22baz%22%7D&currency=EUR&revenue=123.4&environment=sandbox";
        let p = params(q).unwrap();
        assert_eq!(
            (p.app_token.as_str(), p.event_token.as_str()),
            ("4w565xzmb54d", "f0ob4r")
        );
        assert_eq!(
            p.clone().into_event("purchase", NOW),
            Err(Reason::EventTooOld)
        );
        let then = 1_483_362_245_000u64; // 2017-01-02T13:04:05Z
        let e = p.into_event("purchase", then + 1000).unwrap();
        let d = &e.draft;
        assert_eq!(d.event_ts_ms, then as i64);
        assert_eq!(e.device, "idfa=D2CADB5F-410F-4963-AC0C-2A78534BDF1E");
        assert_eq!(d.revenue, Some(123.4));
        assert_eq!(d.currency.as_deref(), Some("EUR"));
        assert_eq!(
            Value::Object(d.props.clone()),
            serde_json::json!({
                "event_token": "f0ob4r", "app_token": "4w565xzmb54d",
                "callback_params": {"f0o": "bar", "bar": "baz"},
                "partner_params": {"f0o": "bar", "bar": "baz"},
            })
        );
        assert_eq!(d.context["environment"], "sandbox");
        assert!(d.event_id.as_deref().unwrap().starts_with("adj_"));
    }

    #[test]
    fn rules() {
        let ok = "s2s=1&app_token=abc&event_token=tok&gps_adid=g1";
        assert!(event(ok).is_ok());
        let cases: &[(&str, Reason)] = &[
            (
                "app_token=abc&event_token=tok&gps_adid=g1",
                Reason::Required(Field::S2s),
            ),
            (
                "s2s=0&app_token=abc&event_token=tok&gps_adid=g1",
                Reason::Invalid(Field::S2s),
            ),
            (
                "s2s=1&event_token=tok&gps_adid=g1",
                Reason::Required(Field::AppToken),
            ),
            (
                "s2s=1&app_token=a%20b&event_token=tok",
                Reason::Invalid(Field::AppToken),
            ),
            (
                "s2s=1&app_token=abc&gps_adid=g1",
                Reason::Required(Field::EventToken),
            ),
            (
                "s2s=1&s2s=1&app_token=abc&event_token=tok",
                Reason::DuplicateParameter,
            ),
            (
                "s2s=1&app_token=abc&event_token=tok",
                Reason::Required(Field::DeviceId),
            ),
            (
                "s2s=1&app_token=abc&event_token=tok&idfa=",
                Reason::Required(Field::DeviceId),
            ),
        ];
        for (q, reason) in cases {
            assert_eq!(event(q).err(), Some(*reason), "{q}");
        }
        let field_cases: &[(&str, Reason)] = &[
            ("ip_address=::1", Reason::Invalid(Field::IpAddress)),
            ("ip_address=1.2.3", Reason::Invalid(Field::IpAddress)),
            ("created_at_unix=12.5", Reason::Invalid(Field::CreatedAt)),
            ("created_at_unix=-5", Reason::Invalid(Field::CreatedAt)),
            ("created_at=yesterday", Reason::Invalid(Field::CreatedAt)),
            ("created_at_unix=1759000000", Reason::EventTooOld),
            (
                "created_at_unix=1764150000",
                Reason::Invalid(Field::CreatedAt),
            ),
            (
                "callback_params=%7B%22a%22%3A%7B%7D%7D",
                Reason::Invalid(Field::CallbackParams),
            ),
            (
                "callback_params=%5B%5D",
                Reason::Invalid(Field::CallbackParams),
            ),
            (
                "partner_params=%7B%22a%22%3A%5B1%5D%7D",
                Reason::Invalid(Field::PartnerParams),
            ),
            ("partner_params=nope", Reason::Invalid(Field::PartnerParams)),
            (
                "revenue=0.0009&currency=EUR",
                Reason::Invalid(Field::Revenue),
            ),
            (
                "revenue=100000000001&currency=EUR",
                Reason::Invalid(Field::Revenue),
            ),
            ("revenue=1e3&currency=EUR", Reason::Invalid(Field::Revenue)),
            ("revenue=-1&currency=EUR", Reason::Invalid(Field::Revenue)),
            ("revenue=abc&currency=EUR", Reason::Invalid(Field::Revenue)),
            ("revenue=5", Reason::Required(Field::Currency)),
            ("environment=staging", Reason::Invalid(Field::Environment)),
            (
                "skadn_registered_at=yesterday",
                Reason::Invalid(Field::SkadnRegisteredAt),
            ),
            (
                "skadn_registered_at=1764150000",
                Reason::Invalid(Field::SkadnRegisteredAt),
            ),
        ];
        for (extra, reason) in field_cases {
            let q = format!("{ok}&{extra}");
            assert_eq!(event(&q).err(), Some(*reason), "{q}");
        }
        for fine in [
            "revenue=0.001&currency=EUR",
            "revenue=100000000000&currency=EUR",
            "ip_address=192.0.0.1",
            "environment=production",
            "callback_params=%7B%22a%22%3A1%2C%22b%22%3Anull%7D",
            "created_at_unix=1764137630",
            "created_at_unix=1759137630",
        ] {
            assert!(event(&format!("{ok}&{fine}")).is_ok(), "{fine}");
        }
    }

    #[test]
    fn skadn_registered_at_marks_ios_14() {
        let ok = "s2s=1&app_token=a&event_token=t&idfa=i";
        assert_eq!(event(ok).unwrap().skadn_registered_at, None);
        for (value, want) in [
            ("2025-11-26T05%3A13%3A50.000Z%2B0100", 1_764_130_430_000),
            ("1764130430", 1_764_130_430_000),
        ] {
            let e = event(&format!("{ok}&skadn_registered_at={value}")).unwrap();
            assert_eq!(e.skadn_registered_at, Some(want), "{value}");
            assert!(e.draft.props.contains_key("skadn_registered_at"));
        }
    }

    #[test]
    fn device_preference_and_ids() {
        let e = event("s2s=1&app_token=a&event_token=t&adid=x&idfv=v&gps_adid=g").unwrap();
        assert_eq!(e.device, "gps_adid=g");
        assert_eq!(e.draft.ids.len(), 3);
        assert_eq!(e.draft.event_id, None, "no timestamp: no derived id");
    }

    #[test]
    fn derived_ids_ignore_parameter_order() {
        let a = event("s2s=1&app_token=a&event_token=t&adid=x&created_at_unix=1764137000").unwrap();
        let b = event("adid=x&created_at_unix=1764137000&s2s=1&event_token=t&app_token=a").unwrap();
        let c = event("s2s=1&app_token=a&event_token=t&adid=x&created_at_unix=1764137001").unwrap();
        assert_eq!(a.draft.event_id, b.draft.event_id);
        assert_ne!(a.draft.event_id, c.draft.event_id);
        assert_eq!(a.draft.event_id.as_ref().unwrap().len(), 36);
    }
}
