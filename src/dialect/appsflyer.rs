//! AppsFlyer Web-S2S (`specs/appsflyer-web-s2s.md`): `POST /v1/{bundleId}/event` and
//! `POST /v1/{bundleId}/setcuid`, one JSON object of at most [`MAX_PAYLOAD`] bytes, the
//! credential (`webDevKey`) in the body.
//!
//! Mapping to the canonical event:
//! - `customerUserId` → `user_id` (the studio's own user id, the same across SDKs and S2S,
//!   so it links with `user_id` of every other dialect); `afUserId` → `ids.af_user_id`.
//! - `eventName` → `event_name`; `timestamp` (13-digit ms) → `event_ts_ms`. A late event
//!   (arriving after midnight UTC of the day after it happened) or a future one gets the
//!   receive time instead; then the sender's `timestamp` stays in `props` and
//!   `context.timestamp_replaced` says `late` or `future`.
//! - `eventRevenue` → `revenue` (negative allowed: refunds), `eventRevenueCurrency` →
//!   `currency`, `USD` when revenue is given without a currency.
//! - `ip`, `userAgent`, `referrer` → `context.ip`, `context.user_agent`, `context.referrer`
//!   (empty strings are dropped).
//! - Everything else (`eventType`, `eventValue`, `eventCategory`, `eventLabel`, unknown
//!   fields) is kept in `props` under its own name.
//!
//! `setcuid` becomes an event named `setcuid` whose id is derived from the two user ids, so
//! sending the same association twice stores it once.

use super::json;
use crate::clock::Date;
use crate::event::{Draft, Reason, hex};
use crate::http::Reply;
use hyper::StatusCode;
use ring::digest;
use serde_json::{Map, Value};

/// The AppsFlyer Web-S2S dialect (`/v1/{bundleId}/{event|setcuid}`).
pub struct AppsFlyer;

impl super::Dialect for AppsFlyer {
    const SOURCE: &'static str = "appsflyer";

    /// The vendor's message for the status ("Bad request", "Not found", ...) followed by the
    /// stable reason tag naming the problem, e.g. `Bad request: eventName_required`.
    fn error(reason: Reason, status: StatusCode) -> Reply {
        let message = match status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::REQUEST_TIMEOUT => "Request timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "Payload too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            StatusCode::INTERNAL_SERVER_ERROR => "Internal server error",
            _ => "Service unavailable",
        };
        Reply::plain(status, format!("{message}: {}", reason.tag()))
    }
}

/// The request side, top to bottom: `POST` only → the path's bundle id and method → body
/// (≤ [`MAX_PAYLOAD`], the vendor's limit; read before anything is refused, so that the
/// connection stays usable) → the app of the bundle id (404 when none) → decode →
/// `webDevKey` authenticates as a key of that app. Identity links follow from the log.
impl super::Ingest for AppsFlyer {
    type Head = (String, Method);
    /// The credential is in the body: the event is decoded to find it.
    type Auth = Draft;
    type Then = ();
    type Event<'a> = Draft;
    const AUDIT_PREFIX: &'static str = "appsflyer";

    fn head(
        method: &hyper::Method,
        uri: &hyper::Uri,
        _: &hyper::HeaderMap,
    ) -> Result<(String, Method), Reason> {
        if method != hyper::Method::POST {
            return Err(Reason::MethodNotAllowed);
        }
        let (bundle, method) = parse_path(uri.path()).ok_or(Reason::NotFound)?;
        Ok((bundle.to_owned(), method))
    }

    fn body_limit(_: &(String, Method)) -> super::BodyLimit {
        super::BodyLimit::Bytes(MAX_PAYLOAD)
    }

    fn credential<L: super::Lookup>(
        lookup: &mut L,
        (bundle, method): &(String, Method),
        _: Option<L::Key>,
        body: &[u8],
        received_at_ms: u64,
    ) -> Result<super::Credited<L::Key, Draft>, Reason> {
        let app_id = lookup.app_by_bundle(bundle)?;
        let decoded = decode(*method, body, received_at_ms)?;
        let key = lookup.key(&decoded.web_dev_key)?;
        if L::app_of(&key) != app_id {
            return Err(Reason::KeyNotForApp);
        }
        Ok(super::Credited {
            key,
            auth: decoded.draft,
        })
    }

    fn decode<L: super::Lookup>(
        _: &mut L,
        _: &(String, Method),
        draft: Draft,
        _: &[u8],
        _: u64,
    ) -> Result<super::Decoded<()>, Reason> {
        Ok(super::Decoded::plain(draft))
    }

    /// `200 OK` with the body `OK` (a repeated setcuid too: the link exists).
    fn ok<L: super::Lookup>(_: &mut L, (): (), _: &super::Stored) -> Result<Reply, Reason> {
        Ok(Reply::text(StatusCode::OK, "OK"))
    }

    const KEEPS: bool = true;

    /// The body without its `webDevKey` (the credential: never kept); a `setcuid` body as
    /// `{"setcuid": <body>}`, since its path is not kept.
    fn kept_item<'p>(
        (_, method): &(String, Method),
        _: Option<&()>,
        payload: &'p [u8],
    ) -> Option<std::borrow::Cow<'p, [u8]>> {
        let mut m = json::parse_object(payload)?;
        m.shift_remove("webDevKey");
        let body = serde_json::to_vec(&m).ok()?;
        Some(match method {
            Method::Event => body.into(),
            Method::SetCuid => super::wrap_kept(&[], "setcuid", &body).into(),
        })
    }

    /// Decodes a kept body (see [`Ingest::kept_item`](super::Ingest)) as on arrival, at its
    /// receive time (a late or future `timestamp` is judged against that time); the key is
    /// the one it came with.
    fn redecode<L: super::Lookup>(
        _: &mut L,
        _: &L::Key,
        item: &[u8],
        event_id: &str,
        received_at_ms: u64,
    ) -> Result<(Draft, Option<super::ItemGuard>), Reason> {
        let mut m = json::parse_object(item).ok_or(Reason::BadJson)?;
        let method = match m.get("setcuid") {
            Some(Value::Object(_)) if m.len() == 1 => {
                let Some(Value::Object(inner)) = m.shift_remove("setcuid") else {
                    return Err(Reason::BadJson);
                };
                m = inner;
                Method::SetCuid
            }
            _ => Method::Event,
        };
        let mut draft = decode_fields(method, m, received_at_ms)?;
        draft.event_id = Some(event_id.to_owned());
        Ok((draft, None))
    }
}

/// The bundle id and method of a `/v1/{bundleId}/{event|setcuid}` path.
pub fn parse_path(path: &str) -> Option<(&str, Method)> {
    let rest = path.strip_prefix("/v1/")?;
    let (bundle, method) = rest.split_once('/')?;
    if bundle.is_empty() || method.contains('/') {
        return None;
    }
    Some((bundle, Method::from_path(method)?))
}

/// The vendor's payload limit, in bytes; enforced while reading the body.
pub const MAX_PAYLOAD: usize = 1024;
/// Longest `eventValue`, in characters (of the string, or of the object's JSON text).
pub const MAX_EVENT_VALUE: usize = 1000;
/// Event name of a stored `setcuid` call.
pub const SETCUID_EVENT: &str = "setcuid";

/// The two methods of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Event,
    SetCuid,
}

impl Method {
    /// The method named by the last path segment (`event`, `setcuid`; case-insensitive, as
    /// the vendor's docs spell it both `setCuId` and `setcuid`).
    pub fn from_path(segment: &str) -> Option<Method> {
        if segment.eq_ignore_ascii_case("event") {
            Some(Method::Event)
        } else if segment.eq_ignore_ascii_case("setcuid") {
            Some(Method::SetCuid)
        } else {
            None
        }
    }
}

/// A decoded request: the key to authenticate and the event it carries.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub web_dev_key: String,
    pub draft: Draft,
}

/// Decodes a request body received at `received_at_ms`.
pub fn decode(method: Method, body: &[u8], received_at_ms: u64) -> Result<Decoded, Reason> {
    let mut m = json::parse_object(body).ok_or(Reason::BadJson)?;
    let web_dev_key = text(&mut m, "webDevKey", "webDevKey_invalid")?
        .ok_or(Reason::VendorField("webDevKey_required"))?;
    let draft = decode_fields(method, m, received_at_ms)?;
    Ok(Decoded { web_dev_key, draft })
}

/// The event of a body whose `webDevKey` was taken out.
fn decode_fields(
    method: Method,
    mut m: Map<String, Value>,
    received_at_ms: u64,
) -> Result<Draft, Reason> {
    let customer_user_id = text(&mut m, "customerUserId", "customerUserId_invalid")?;
    let af_user_id = text(&mut m, "afUserId", "afUserId_invalid")?;
    let draft = match method {
        Method::Event => {
            if customer_user_id.is_none() && af_user_id.is_none() {
                return Err(Reason::VendorField("customerUserId_or_afUserId_required"));
            }
            event(m, received_at_ms)?
        }
        Method::SetCuid => {
            let cuid = customer_user_id
                .as_deref()
                .ok_or(Reason::VendorField("customerUserId_required"))?;
            let afuid = af_user_id
                .as_deref()
                .ok_or(Reason::VendorField("afUserId_required"))?;
            let sum = digest::digest(&digest::SHA256, format!("{cuid}\n{afuid}").as_bytes());
            Draft {
                event_id: Some(format!("setcuid_{}", hex(&sum.as_ref()[..16]))),
                event_name: SETCUID_EVENT.to_owned(),
                event_ts_ms: received_at_ms as i64,
                props: m,
                ..Draft::default()
            }
        }
    };
    let mut draft = draft;
    draft.user_id = customer_user_id;
    if let Some(af) = af_user_id {
        draft.ids.push(("af_user_id".to_owned(), af));
    }
    Ok(draft)
}

fn event(mut m: Map<String, Value>, received_at_ms: u64) -> Result<Draft, Reason> {
    match m.get("eventType") {
        None | Some(Value::Null) => return Err(Reason::VendorField("eventType_required")),
        Some(Value::String(t)) if t == "EVENT" => {}
        Some(_) => return Err(Reason::VendorField("eventType_must_be_EVENT")),
    }
    let event_name = text(&mut m, "eventName", "eventName_invalid")?
        .ok_or(Reason::VendorField("eventName_required"))?;
    let mut context = Map::new();
    let event_ts_ms = match m.get("timestamp") {
        None | Some(Value::Null) => {
            m.shift_remove("timestamp");
            received_at_ms as i64
        }
        Some(Value::Number(n)) => {
            let ts = n
                .as_i64()
                .filter(|t| (1_000_000_000_000..=9_999_999_999_999).contains(t))
                .ok_or(Reason::VendorField("timestamp_invalid"))?;
            match replaced(ts, received_at_ms as i64) {
                // Used as the event time: not kept twice.
                None => {
                    m.shift_remove("timestamp");
                    ts
                }
                // Replaced: the sender's value stays in props under its own name.
                Some(why) => {
                    context.insert("timestamp_replaced".into(), why.into());
                    received_at_ms as i64
                }
            }
        }
        Some(_) => return Err(Reason::VendorField("timestamp_invalid")),
    };
    match m.get("eventValue") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if s.chars().count() > MAX_EVENT_VALUE {
                return Err(Reason::VendorField("eventValue_too_long"));
            }
        }
        Some(v @ Value::Object(_)) => {
            if v.to_string().chars().count() > MAX_EVENT_VALUE {
                return Err(Reason::VendorField("eventValue_too_long"));
            }
        }
        Some(_) => return Err(Reason::VendorField("eventValue_invalid")),
    }
    let revenue = match m.shift_remove("eventRevenue") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite())
                .ok_or(Reason::VendorField("eventRevenue_invalid"))?,
        ),
        Some(_) => return Err(Reason::VendorField("eventRevenue_invalid")),
    };
    let currency = match text(
        &mut m,
        "eventRevenueCurrency",
        "eventRevenueCurrency_invalid",
    )? {
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => Some(c),
        Some(_) => return Err(Reason::VendorField("eventRevenueCurrency_invalid")),
        None => revenue.map(|_| "USD".to_owned()),
    };
    for (wire, canonical, invalid) in [
        ("ip", "ip", "ip_invalid"),
        ("userAgent", "user_agent", "userAgent_invalid"),
        ("referrer", "referrer", "referrer_invalid"),
    ] {
        if let Some(v) = text(&mut m, wire, invalid)? {
            context.insert(canonical.into(), Value::String(v));
        }
    }
    Ok(Draft {
        event_name,
        event_ts_ms,
        revenue,
        currency,
        props: m,
        context,
        ..Draft::default()
    })
}

/// Why an event time `ts` is replaced by the receive time `now`: `future` when it is ahead
/// of the server's clock, `late` when it arrives after midnight UTC of the day after it
/// happened; `None` when it is kept.
pub fn replaced(ts: i64, now: i64) -> Option<&'static str> {
    const DAY: i64 = 86_400_000;
    if ts > now {
        Some("future")
    } else if now >= Date::from_ms(ts).start_ms() + 2 * DAY {
        Some("late")
    } else {
        None
    }
}

/// Removes an optional string field; `null` and `""` count as absent, another type is
/// rejected with `invalid`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/v1/com.studio.web/event"),
            Some(("com.studio.web", Method::Event))
        );
        assert_eq!(parse_path("/v1/b/setCuId"), Some(("b", Method::SetCuid)));
        assert_eq!(parse_path("/v1/events"), None);
        assert_eq!(parse_path("/v1//event"), None);
        assert_eq!(parse_path("/v1/b/event/x"), None);
        assert_eq!(parse_path("/v2/b/event"), None);
    }

    /// 2026-11-26T12:00:00Z
    const NOW: u64 = 1_764_158_400_000;
    const KEY: &str = "srv_000000000000000000000000000000000000000000000000";

    fn body(extra: Value) -> Vec<u8> {
        let mut b = json!({
            "webDevKey": KEY, "customerUserId": "cu1", "eventType": "EVENT",
            "eventName": "web_purchase",
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().shift_remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b.to_string().into_bytes()
    }

    fn ev(extra: Value) -> Result<Draft, Reason> {
        decode(Method::Event, &body(extra), NOW).map(|d| d.draft)
    }

    fn err(extra: Value) -> &'static str {
        match ev(extra) {
            Err(Reason::VendorField(tag)) => tag,
            other => panic!("expected a vendor field error, got {other:?}"),
        }
    }

    #[test]
    fn maps_every_field() {
        let d = decode(
            Method::Event,
            &body(json!({
                "afUserId": "af1", "timestamp": NOW - 1000, "eventRevenue": -3.5,
                "eventRevenueCurrency": "EUR", "eventValue": {"sku": "A"},
                "ip": "203.0.113.1", "userAgent": "Chrome/80", "referrer": "https://g.co/",
                "eventCategory": "old",
            })),
            NOW,
        )
        .unwrap();
        assert_eq!(d.web_dev_key, KEY);
        let d = d.draft;
        assert_eq!(d.event_name, "web_purchase");
        assert_eq!(d.event_ts_ms, NOW as i64 - 1000);
        assert_eq!(d.user_id.as_deref(), Some("cu1"));
        assert_eq!(d.ids, vec![("af_user_id".into(), "af1".into())]);
        assert_eq!(d.revenue, Some(-3.5), "negative revenue is a refund");
        assert_eq!(d.currency.as_deref(), Some("EUR"));
        assert_eq!(d.event_id, None, "no id: generated later, no dedupe");
        assert_eq!(
            Value::Object(d.props),
            json!({"eventType": "EVENT", "eventValue": {"sku": "A"}, "eventCategory": "old"})
        );
        assert_eq!(
            Value::Object(d.context),
            json!({"ip": "203.0.113.1", "user_agent": "Chrome/80", "referrer": "https://g.co/"})
        );
    }

    #[test]
    fn currency_defaults_to_usd_only_with_revenue() {
        assert_eq!(
            ev(json!({"eventRevenue": 1})).unwrap().currency.as_deref(),
            Some("USD")
        );
        assert_eq!(
            ev(json!({"eventRevenue": "1234.20"})).unwrap().revenue,
            Some(1234.2)
        );
        assert_eq!(ev(json!({})).unwrap().currency, None);
        assert_eq!(
            err(json!({"eventRevenueCurrency": "EURO"})),
            "eventRevenueCurrency_invalid"
        );
        assert_eq!(err(json!({"eventRevenue": "lots"})), "eventRevenue_invalid");
        assert_eq!(err(json!({"eventRevenue": [1]})), "eventRevenue_invalid");
    }

    #[test]
    fn required_fields_are_named() {
        assert_eq!(err(json!({"webDevKey": null})), "webDevKey_required");
        assert_eq!(
            err(json!({"customerUserId": null})),
            "customerUserId_or_afUserId_required"
        );
        assert_eq!(
            err(json!({"customerUserId": ""})),
            "customerUserId_or_afUserId_required"
        );
        assert!(ev(json!({"customerUserId": null, "afUserId": "a"})).is_ok());
        assert_eq!(err(json!({"eventType": null})), "eventType_required");
        assert_eq!(
            err(json!({"eventType": "event"})),
            "eventType_must_be_EVENT"
        );
        assert_eq!(err(json!({"eventName": null})), "eventName_required");
        assert_eq!(err(json!({"eventName": 3})), "eventName_invalid");
        assert_eq!(err(json!({"customerUserId": 7})), "customerUserId_invalid");
        assert_eq!(err(json!({"ip": 7})), "ip_invalid");
        assert_eq!(
            decode(Method::Event, b"{\"a\":1", NOW).err(),
            Some(Reason::BadJson)
        );
    }

    #[test]
    fn timestamps_must_be_13_digit_ms() {
        assert_eq!(
            err(json!({"timestamp": 1_764_158_400})),
            "timestamp_invalid"
        );
        assert_eq!(
            err(json!({"timestamp": "1764158400000"})),
            "timestamp_invalid"
        );
        assert_eq!(err(json!({"timestamp": 1.5})), "timestamp_invalid");
        let d = ev(json!({})).unwrap();
        assert_eq!(d.event_ts_ms, NOW as i64, "no timestamp: server time");
        assert!(!d.props.contains_key("timestamp"));
    }

    #[test]
    fn late_and_future_events_get_the_server_time() {
        const DAY: i64 = 86_400_000;
        let now = NOW as i64;
        // Today's midnight, 2026-11-26T00:00:00Z.
        let midnight = now - 12 * 3_600_000;
        assert_eq!(replaced(now, now), None);
        assert_eq!(replaced(now + 1, now), Some("future"));
        assert_eq!(
            replaced(midnight - DAY, now),
            None,
            "yesterday 00:00 is on time"
        );
        assert_eq!(
            replaced(midnight - 1, now),
            None,
            "yesterday 23:59 is on time"
        );
        assert_eq!(
            replaced(midnight - DAY - 1, now),
            Some("late"),
            "two days ago"
        );
        // Monday's event must arrive before midnight UTC Tuesday.
        let monday_noon = Date::from_ms(now).start_ms() + 12 * 3_600_000;
        let wednesday = monday_noon + 2 * DAY - 12 * 3_600_000;
        assert_eq!(replaced(monday_noon, wednesday - 1), None);
        assert_eq!(replaced(monday_noon, wednesday), Some("late"));

        let d = ev(json!({"timestamp": 1_234_567_890_123u64})).unwrap();
        assert_eq!(d.event_ts_ms, now);
        assert_eq!(d.props["timestamp"], 1_234_567_890_123u64, "original kept");
        assert_eq!(d.context["timestamp_replaced"], "late");
        let d = ev(json!({"timestamp": NOW + 60_000})).unwrap();
        assert_eq!(d.event_ts_ms, now);
        assert_eq!(d.props["timestamp"], NOW + 60_000);
        assert_eq!(d.context["timestamp_replaced"], "future");
    }

    #[test]
    fn event_value_is_limited_to_1000_characters() {
        assert!(ev(json!({"eventValue": "é".repeat(1000)})).is_ok());
        assert_eq!(
            err(json!({"eventValue": "x".repeat(1001)})),
            "eventValue_too_long"
        );
        // {"k":"xxx..."}: 8 characters of JSON around the value.
        assert!(ev(json!({"eventValue": {"k": "x".repeat(992)}})).is_ok());
        assert_eq!(
            err(json!({"eventValue": {"k": "x".repeat(993)}})),
            "eventValue_too_long"
        );
        assert_eq!(err(json!({"eventValue": 5})), "eventValue_invalid");
    }

    #[test]
    fn setcuid_needs_both_ids_and_is_idempotent() {
        let b =
            br#"{"customerUserId":"1234567890abcdef","afUserId":"9999999-f848","webDevKey":"k"}"#;
        let d = decode(Method::SetCuid, b, NOW).unwrap().draft;
        assert_eq!(d.event_name, SETCUID_EVENT);
        assert_eq!(d.user_id.as_deref(), Some("1234567890abcdef"));
        assert_eq!(d.ids, vec![("af_user_id".into(), "9999999-f848".into())]);
        assert_eq!(d.event_ts_ms, NOW as i64);
        let again = decode(Method::SetCuid, b, NOW + 5).unwrap().draft;
        assert_eq!(d.event_id, again.event_id);
        assert!(d.event_id.as_deref().unwrap().starts_with("setcuid_"));
        let missing = br#"{"customerUserId":"c","webDevKey":"k"}"#;
        assert_eq!(
            decode(Method::SetCuid, missing, NOW).err(),
            Some(Reason::VendorField("afUserId_required"))
        );
        assert_eq!(Method::from_path("setCuId"), Some(Method::SetCuid));
        assert_eq!(Method::from_path("events"), None);
    }
}
