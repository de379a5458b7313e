//! Datafly Signal server-side events (`specs/datafly-server-side.md`), Segment-style:
//! `POST /v1/events` with one JSON message. Authentication (HMAC over `X-Timestamp + "." +
//! body`) is checked by the pipeline before this decoder runs; see `crate::auth::secrets`.
//!
//! Mapping to the canonical event:
//! - `type` `track` → `event_name` = `event` (required); `page`, `identify`, `group` →
//!   `event_name` = the type. `type` is also kept in `props`.
//! - `userId` → `user_id`, `anonymousId` → `anonymous_id` (at least one); both present link
//!   them in the identity graph. `groupId` stays in `props`: a group is not a person, and
//!   linking it would merge every member into one profile.
//! - `messageId` (Segment's message id, when sent) → `event_id`, so a retried message is
//!   stored once. Without it the pipeline gives the message a [`derived_id`] (from the
//!   signing secret's id, `X-Timestamp` and the body), so an exact retry — the same signed
//!   request sent again — is stored once too.
//! - `timestamp` (ISO 8601) → `event_ts_ms`, default the receive time.
//! - `context` → `context`, with `userAgent` renamed `user_agent` (the canonical name).
//! - `properties.revenue` (number) and `properties.currency` (3 letters) are copied to
//!   `revenue` / `currency`, `properties.order_id` to `transaction_id`.
//! - Every other top-level field (`properties`, `traits`, `groupId`, `name`, ...) is kept in
//!   `props` as sent.

use super::json;
use crate::clock::days_from_civil;
use crate::event::{Draft, Reason, hex};
use crate::http::Reply;
use hyper::StatusCode;
use ring::digest;
use serde_json::{Map, Value};

/// The Datafly dialect (`/v1/events`, signed).
pub struct Datafly;

impl super::Dialect for Datafly {
    const SOURCE: &'static str = "datafly";

    /// `{"success": false, "error": "<reason>"}`.
    fn error(reason: Reason, status: StatusCode) -> Reply {
        Reply::json(
            status,
            &serde_json::json!({ "success": false, "error": reason.tag() }),
        )
    }
}

/// The request line and headers: `X-Signature` (absent; present and its MAC, if well
/// formed) and a well-formed `X-Timestamp`. Missing or malformed ones are refused only once
/// the body is read, so that the connection stays usable for the client's next request.
pub struct Head {
    signature: Option<Option<Vec<u8>>>,
    timestamp: Option<String>,
}

/// What the signature check tells the decoder.
pub struct Signed {
    secret_id: u32,
    timestamp: String,
}

/// The request side, top to bottom: HMAC-SHA256 over `X-Timestamp + "." + body` against
/// every active secret (401 when none matches) → timestamp within ±5 minutes (403) → decode
/// → event id (`messageId`, else [`derived_id`]). The signature is checked before the time
/// window, so only a holder of a valid secret learns that a timestamp was stale. Signed
/// requests carry no key: key id 0, every event name allowed.
impl super::Ingest for Datafly {
    type Head = Head;
    type Auth = Signed;
    /// The id of the secret that signed it (quarantine: kept with a refused message).
    type Then = u32;
    type Event<'a> = Draft;
    const AUDIT_PREFIX: &'static str = "datafly";

    fn head(_: &hyper::Method, _: &hyper::Uri, headers: &hyper::HeaderMap) -> Result<Head, Reason> {
        let signature = headers
            .get("x-signature")
            .map(|v| v.to_str().ok().and_then(parse_signature));
        let timestamp = headers
            .get("x-timestamp")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned);
        Ok(Head {
            signature,
            timestamp,
        })
    }

    fn credential<L: super::Lookup>(
        lookup: &mut L,
        head: &Head,
        _: Option<L::Key>,
        body: &[u8],
        received_at_ms: u64,
    ) -> Result<super::Credited<L::Key, Signed>, Reason> {
        let mac = head
            .signature
            .as_ref()
            .ok_or(Reason::SignatureRequired)?
            .as_ref()
            .ok_or(Reason::SignatureInvalid)?;
        let timestamp = head.timestamp.clone().ok_or(Reason::TimestampRequired)?;
        let super::Signer { key, secret_id } =
            lookup.signer(&timestamp, body, mac, received_at_ms)?;
        let sent_ms: u64 = timestamp.parse().map_err(|_| Reason::TimestampRequired)?;
        if sent_ms.abs_diff(received_at_ms) > WINDOW_MS {
            return Err(Reason::TimestampOutsideWindow);
        }
        Ok(super::Credited {
            key,
            auth: Signed {
                secret_id,
                timestamp,
            },
        })
    }

    fn decode<L: super::Lookup>(
        _: &mut L,
        _: &Head,
        auth: Signed,
        body: &[u8],
        received_at_ms: u64,
    ) -> Result<super::Decoded<u32>, Reason> {
        let mut draft = decode(body, received_at_ms)?;
        if draft.event_id.is_none() {
            draft.event_id = Some(derived_id(auth.secret_id, &auth.timestamp, 0, body));
        }
        draft
            .context
            .insert("secret_id".into(), Value::from(auth.secret_id));
        Ok(super::Decoded {
            draft,
            guard: None,
            then: auth.secret_id,
        })
    }

    /// `200 {"success": true}`.
    fn ok<L: super::Lookup>(_: &mut L, _: u32, _: &super::Stored) -> Result<Reply, Reason> {
        Ok(Reply::json(
            StatusCode::OK,
            &serde_json::json!({ "success": true }),
        ))
    }

    const KEEPS: bool = true;

    /// `{"secret_id": <the secret that signed it>, "message": <the body>}`: the headers (the
    /// signature, `X-Timestamp`) are not kept; the event id they made is the kept event's.
    fn kept_item<'p>(
        _: &Head,
        secret_id: Option<&u32>,
        payload: &'p [u8],
    ) -> Option<std::borrow::Cow<'p, [u8]>> {
        let values = [("secret_id", Value::from(*secret_id?))];
        Some(super::wrap_kept(&values, "message", payload).into())
    }

    /// Decodes a kept message (see [`Ingest::kept_item`](super::Ingest)) as on arrival, at
    /// its receive time, with the id it was kept under.
    fn redecode<L: super::Lookup>(
        _: &mut L,
        _: &L::Key,
        item: &[u8],
        event_id: &str,
        received_at_ms: u64,
    ) -> Result<(Draft, Option<super::ItemGuard>), Reason> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Kept<'a> {
            secret_id: u32,
            #[serde(borrow)]
            message: &'a serde_json::value::RawValue,
        }
        let kept: Kept = serde_json::from_slice(item).map_err(|_| Reason::BadJson)?;
        let mut draft = decode(kept.message.get().as_bytes(), received_at_ms)?;
        draft.event_id = Some(event_id.to_owned());
        draft
            .context
            .insert("secret_id".into(), Value::from(kept.secret_id));
        Ok((draft, None))
    }
}

/// The id of the secret that signed a kept message (see [`Ingest::kept_item`](super::Ingest)).
pub fn kept_secret_id(item: &[u8]) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Kept {
        secret_id: u32,
    }
    serde_json::from_slice::<Kept>(item)
        .ok()
        .map(|k| k.secret_id)
}

/// How far `X-Timestamp` may be from the receive time.
pub const WINDOW_MS: u64 = 5 * 60 * 1000;

/// The MAC bytes of an `X-Signature: sha256=<64 hex>` header; `None` when malformed.
pub fn parse_signature(header: &str) -> Option<Vec<u8>> {
    let hex_part = header.trim().strip_prefix("sha256=")?;
    if hex_part.len() != 64 {
        return None;
    }
    crate::event::unhex(hex_part)
}

/// Prefix of a [`derived_id`].
pub const DERIVED_ID_PREFIX: &str = "datafly_";

/// The id of a message sent without `messageId`: [`DERIVED_ID_PREFIX`] + 32 hex characters
/// (128 bits) of SHA-256 over the id of the secret that signed the request, its
/// `X-Timestamp`, the message's index in the request (0 for the single message of
/// `/v1/events`; a batch gives each message its own) and the raw body. The same signed
/// request sent again gets the same id, and is answered as a duplicate; the secret itself
/// takes no part.
pub fn derived_id(secret_id: u32, timestamp: &str, index: usize, body: &[u8]) -> String {
    let mut h = digest::Context::new(&digest::SHA256);
    h.update(b"inlet datafly message id v1\0");
    h.update(&secret_id.to_be_bytes());
    h.update(&(timestamp.len() as u64).to_be_bytes());
    h.update(timestamp.as_bytes());
    h.update(&(index as u64).to_be_bytes());
    h.update(body);
    format!("{DERIVED_ID_PREFIX}{}", hex(&h.finish().as_ref()[..16]))
}

/// Decodes a message received at `received_at_ms`.
pub fn decode(body: &[u8], received_at_ms: u64) -> Result<Draft, Reason> {
    let mut m = json::parse_object(body).ok_or(Reason::BadJson)?;
    let kind = match m.get("type") {
        None | Some(Value::Null) => return Err(Reason::VendorField("type_required")),
        Some(Value::String(t)) if matches!(t.as_str(), "track" | "page" | "identify" | "group") => {
            t.clone()
        }
        Some(_) => return Err(Reason::VendorField("type_invalid")),
    };
    let event_name = if kind == "track" {
        text(&mut m, "event", "event_invalid")?.ok_or(Reason::VendorField("event_required"))?
    } else {
        // Not the name of a page/identify/group: a non-empty one stays in props, in its
        // place; a null or empty one is dropped, another type refused.
        if !matches!(m.get("event"), Some(Value::String(e)) if !e.is_empty()) {
            text(&mut m, "event", "event_invalid")?;
        }
        kind
    };
    let user_id = text(&mut m, "userId", "userId_invalid")?;
    let anonymous_id = text(&mut m, "anonymousId", "anonymousId_invalid")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Reason::VendorField("userId_or_anonymousId_required"));
    }
    let event_id = text(&mut m, "messageId", "messageId_invalid")?;
    let event_ts_ms = match text(&mut m, "timestamp", "timestamp_invalid")? {
        None => received_at_ms as i64,
        Some(ts) => parse_iso8601_ms(&ts).ok_or(Reason::VendorField("timestamp_invalid"))?,
    };
    let mut context = match m.shift_remove("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(c)) => c,
        Some(_) => return Err(Reason::VendorField("context_invalid")),
    };
    if let Some(ua) = context.shift_remove("userAgent") {
        context.insert("user_agent".into(), ua);
    }
    let (mut revenue, mut currency, mut transaction_id) = (None, None, None);
    match m.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => {
            revenue = p.get("revenue").and_then(Value::as_f64);
            currency = p
                .get("currency")
                .and_then(Value::as_str)
                .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
                .map(str::to_owned);
            transaction_id = p
                .get("order_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
        }
        Some(_) => return Err(Reason::VendorField("properties_invalid")),
    }
    if matches!(m.get("traits"), Some(t) if !t.is_object() && !t.is_null()) {
        return Err(Reason::VendorField("traits_invalid"));
    }
    Ok(Draft {
        event_id,
        event_name,
        event_ts_ms,
        user_id,
        anonymous_id,
        revenue,
        currency,
        transaction_id,
        props: m,
        context,
        ..Draft::default()
    })
}

/// Removes an optional string field; `null` and `""` count as absent.
fn text(
    m: &mut Map<String, Value>,
    name: &str,
    invalid: &'static str,
) -> Result<Option<String>, Reason> {
    match m.shift_remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reason::VendorField(invalid)),
    }
}

/// Parses an ISO 8601 / RFC 3339 date-time with a zone (`Z` or `±HH:MM`) and optional
/// fraction, e.g. `2026-02-25T14:30:00.000Z`, into milliseconds since the epoch.
pub fn parse_iso8601_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min: i64 = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year as i32, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_min * 60;
    Some(secs * 1000 + i64::from(millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_764_158_400_000;

    #[test]
    fn derived_ids_are_stable_and_differ_in_each_input() {
        let id = derived_id(3, "1764158400000", 0, b"{}");
        assert_eq!(id, derived_id(3, "1764158400000", 0, b"{}"));
        assert!(id.starts_with(DERIVED_ID_PREFIX) && id.len() == DERIVED_ID_PREFIX.len() + 32);
        for other in [
            derived_id(4, "1764158400000", 0, b"{}"),
            derived_id(3, "1764158400001", 0, b"{}"),
            derived_id(3, "1764158400000", 1, b"{}"),
            derived_id(3, "1764158400000", 0, b"{ }"),
        ] {
            assert_ne!(id, other);
        }
    }

    const SPEC_EXAMPLE: &str = r#"{
"type": "track",
"event": "Order Completed",
"userId": "user_98765",
"properties": {
"order_id": "ORD-2026-1234",
"revenue": 149.99,
"currency": "USD",
"products": [
{"product_id": "SKU-1234", "name": "Wireless Headphones", "price": 79.99, "quantity": 1}
]
},
"context": {
"ip": "203.0.113.42",
"userAgent": "Mozilla/5.0 ..."
},
"timestamp": "2026-02-25T14:30:00.000Z"
}"#;

    #[test]
    fn decodes_the_spec_example() {
        let d = decode(SPEC_EXAMPLE.as_bytes(), NOW).unwrap();
        assert_eq!(d.event_name, "Order Completed");
        assert_eq!(d.user_id.as_deref(), Some("user_98765"));
        assert_eq!(d.anonymous_id, None);
        assert_eq!(d.event_ts_ms, 1_772_029_800_000);
        assert_eq!(d.revenue, Some(149.99));
        assert_eq!(d.currency.as_deref(), Some("USD"));
        assert_eq!(d.transaction_id.as_deref(), Some("ORD-2026-1234"));
        assert_eq!(d.props["type"], "track");
        assert_eq!(
            d.props["properties"]["products"][0]["product_id"],
            "SKU-1234"
        );
        assert_eq!(
            Value::Object(d.context),
            json!({"ip": "203.0.113.42", "user_agent": "Mozilla/5.0 ..."})
        );
    }

    #[test]
    fn types_and_ids() {
        let d = decode(
            br#"{"type":"identify","userId":"u","anonymousId":"a","traits":{"plan":"pro"},"messageId":"m1"}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(d.event_name, "identify");
        assert_eq!(d.event_id.as_deref(), Some("m1"));
        assert_eq!(d.anonymous_id.as_deref(), Some("a"));
        assert_eq!(d.event_ts_ms, NOW as i64, "no timestamp: receive time");
        assert_eq!(d.props["traits"], json!({"plan": "pro"}));
        let g = decode(br#"{"type":"group","anonymousId":"a","groupId":"g1"}"#, NOW).unwrap();
        assert_eq!(g.event_name, "group");
        assert!(g.ids.is_empty(), "a group id is not a person's identifier");
        assert_eq!(g.props["groupId"], "g1");
        let p = decode(br#"{"type":"page","userId":"u","name":"Home"}"#, NOW).unwrap();
        assert_eq!(p.event_name, "page");
        for (body, tag) in [
            (r#"{"event":"x","userId":"u"}"#, "type_required"),
            (r#"{"type":"screen","userId":"u"}"#, "type_invalid"),
            (r#"{"type":"track","userId":"u"}"#, "event_required"),
            (
                r#"{"type":"track","event":"x"}"#,
                "userId_or_anonymousId_required",
            ),
            (
                r#"{"type":"track","event":"x","userId":5}"#,
                "userId_invalid",
            ),
            (
                r#"{"type":"track","event":"x","userId":"u","timestamp":"yesterday"}"#,
                "timestamp_invalid",
            ),
            (
                r#"{"type":"track","event":"x","userId":"u","properties":[]}"#,
                "properties_invalid",
            ),
            (
                r#"{"type":"track","event":"x","userId":"u","context":1}"#,
                "context_invalid",
            ),
        ] {
            assert_eq!(
                decode(body.as_bytes(), NOW).err(),
                Some(Reason::VendorField(tag)),
                "{body}"
            );
        }
        assert_eq!(decode(b"[]", NOW).err(), Some(Reason::BadJson));
    }

    #[test]
    fn props_keep_the_senders_order() {
        let keys = |body: &str| -> Vec<String> {
            let d = decode(body.as_bytes(), NOW).unwrap();
            d.props.keys().cloned().collect()
        };
        // A page's `event` is not its name: it stays where the sender put it.
        assert_eq!(
            keys(r#"{"z":1,"type":"page","event":"e","userId":"u","name":"Home","a":2}"#),
            ["z", "type", "event", "name", "a"]
        );
        for empty in [r#""""#, "null"] {
            let body = format!(r#"{{"z":1,"type":"page","event":{empty},"userId":"u","a":2}}"#);
            assert_eq!(keys(&body), ["z", "type", "a"], "{body}");
        }
        let body = r#"{"type":"page","event":7,"userId":"u"}"#;
        assert_eq!(
            decode(body.as_bytes(), NOW).err(),
            Some(Reason::VendorField("event_invalid"))
        );
        let track = r#"{"traits":{},"messageId":"m","type":"track","userId":"u","event":"x","b":1,"properties":{"z":1,"a":2}}"#;
        assert_eq!(keys(track), ["traits", "type", "b", "properties"]);
    }

    #[test]
    fn iso8601() {
        assert_eq!(parse_iso8601_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601_ms("2026-02-25T14:30:00.000Z"),
            Some(1_772_029_800_000)
        );
        assert_eq!(
            parse_iso8601_ms("2026-02-25T16:30:00.5+02:00"),
            Some(1_772_029_800_500)
        );
        assert_eq!(
            parse_iso8601_ms("2026-02-25T14:30:00.123456789Z"),
            Some(1_772_029_800_123)
        );
        assert_eq!(
            parse_iso8601_ms("2026-02-25T09:30:00-05:00"),
            Some(1_772_029_800_000)
        );
        for bad in [
            "2026-02-25",
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-02-25T14:30:00",
            "2026-02-25T14:30:00.Z",
            "2026-02-25T24:00:00Z",
            "2026-02-25T14:30:00+2:00",
            "２026-02-25T14:30:00Z",
        ] {
            assert_eq!(parse_iso8601_ms(bad), None, "{bad}");
        }
    }
}
