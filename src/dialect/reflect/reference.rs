//! The native dialect decoded through a `serde_json::Value` tree: the straightforward
//! reading of the spec, kept (in test builds only) as the reference the fast decoder
//! ([`super`]) is tested against: same results, same reasons, same stored record.
//!
//! Known fields map to the canonical event; every unknown top-level field is kept in `props`
//! (a name that is also a key of the sender's own `props` object is refused as
//! `props_invalid`, since keeping both would need a rename the sender did not ask for).
//! Known fields are taken out with `shift_remove`, so what is left, and then `props`, stays
//! in the sender's order (`Map::remove` would be `swap_remove` under `preserve_order`).

use crate::dialect::json;
use crate::event::{Draft, Field, Reason};
use serde_json::{Map, Value};

use super::MAX_BULK;

/// Decodes the body of `POST /s2s/event`.
pub fn decode_single(body: &[u8]) -> Result<Draft, Reason> {
    let object = json::parse_object(body).ok_or(Reason::BadJson)?;
    decode_event(object)
}

/// One event of a bulk request.
pub type BulkItem = crate::dialect::BatchItem<'static>;

/// Decodes the body of `POST /s2s/events/bulk`: the request fails as a whole only when it is
/// not a JSON object with a non-empty `events` array of at most [`MAX_BULK`]; each event then
/// gets its own result.
pub fn decode_bulk(body: &[u8]) -> Result<Vec<BulkItem>, Reason> {
    crate::dialect::decode_events(body, MAX_BULK, decode_event)
}

fn decode_event(mut m: Map<String, Value>) -> Result<Draft, Reason> {
    let event_name = take_str(&mut m, Field::EventName)?
        .filter(|s| !s.is_empty())
        .ok_or(Reason::Required(Field::EventName))?;
    let event_ts_ms = match m.shift_remove("event_ts_ms") {
        None | Some(Value::Null) => return Err(Reason::Required(Field::EventTsMs)),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|ms| *ms >= 0)
            .ok_or(Reason::Invalid(Field::EventTsMs))?,
        Some(_) => return Err(Reason::Invalid(Field::EventTsMs)),
    };
    let install_uuid = take_str(&mut m, Field::InstallUuid)?
        .filter(|s| !s.is_empty())
        .ok_or(Reason::Required(Field::InstallUuid))?;
    let revenue = match m.shift_remove("revenue") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_f64().ok_or(Reason::Invalid(Field::Revenue))?),
        Some(_) => return Err(Reason::Invalid(Field::Revenue)),
    };
    let mut draft = Draft {
        event_id: take_str(&mut m, Field::EventId)?,
        event_name,
        event_ts_ms,
        install_uuid: Some(install_uuid),
        user_id: take_str(&mut m, Field::UserId)?,
        anonymous_id: take_str(&mut m, Field::AnonymousId)?,
        revenue,
        currency: take_str(&mut m, Field::Currency)?,
        transaction_id: take_str(&mut m, Field::TransactionId)?,
        product_id: take_str(&mut m, Field::ProductId)?,
        ids: take_ids(&mut m)?,
        context: take_object(&mut m, "context", Field::Props)?,
        props: take_object(&mut m, "props", Field::Props)?,
    };
    for (name, value) in m {
        if draft.props.contains_key(&name) {
            return Err(Reason::Invalid(Field::Props));
        }
        draft.props.insert(name, value);
    }
    Ok(draft)
}

/// Removes an optional string field; `null` counts as absent, any other type is invalid.
fn take_str(m: &mut Map<String, Value>, field: Field) -> Result<Option<String>, Reason> {
    match m.shift_remove(field.name()) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reason::Invalid(field)),
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

/// `ids`: an optional object of further identifiers, each a string.
fn take_ids(m: &mut Map<String, Value>) -> Result<Vec<(String, String)>, Reason> {
    take_object(m, "ids", Field::Ids)?
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(Reason::Invalid(Field::Ids)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC_EXAMPLE: &str = r#"{
        "event_id": "txn_abc123", "event_name": "purchase", "event_ts_ms": 1735999999000,
        "install_uuid": "8f2a1c0e94d7423b8b53af7c9e21d630", "user_id": "user_42",
        "revenue": 9.99, "currency": "USD", "transaction_id": "txn_abc123",
        "product_id": "sku_pro_pack", "props": {"channel": "web_checkout", "ab_variant": "B"}
    }"#;

    #[test]
    fn decodes_the_spec_example_completely() {
        let d = decode_single(SPEC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(d.event_id.as_deref(), Some("txn_abc123"));
        assert_eq!(d.event_name, "purchase");
        assert_eq!(d.event_ts_ms, 1_735_999_999_000);
        assert_eq!(
            d.install_uuid.as_deref(),
            Some("8f2a1c0e94d7423b8b53af7c9e21d630")
        );
        assert_eq!(d.user_id.as_deref(), Some("user_42"));
        assert_eq!(d.revenue, Some(9.99));
        assert_eq!(d.currency.as_deref(), Some("USD"));
        assert_eq!(d.transaction_id.as_deref(), Some("txn_abc123"));
        assert_eq!(d.product_id.as_deref(), Some("sku_pro_pack"));
        assert_eq!(
            Value::Object(d.props),
            json!({"channel": "web_checkout", "ab_variant": "B"})
        );
    }

    #[test]
    fn unknown_fields_go_to_props() {
        let body =
            br#"{"event_name":"x","event_ts_ms":1,"install_uuid":"i","level":7,"props":{"a":1}}"#;
        let d = decode_single(body).unwrap();
        assert_eq!(Value::Object(d.props), json!({"a": 1, "level": 7}));
        let clash =
            br#"{"event_name":"x","event_ts_ms":1,"install_uuid":"i","a":2,"props":{"a":1}}"#;
        assert_eq!(decode_single(clash), Err(Reason::Invalid(Field::Props)));
    }

    #[test]
    fn required_fields_and_types() {
        let cases: &[(&str, Reason)] = &[
            (
                r#"{"event_ts_ms":1,"install_uuid":"i"}"#,
                Reason::Required(Field::EventName),
            ),
            (
                r#"{"event_name":"","event_ts_ms":1,"install_uuid":"i"}"#,
                Reason::Required(Field::EventName),
            ),
            (
                r#"{"event_name":"x","install_uuid":"i"}"#,
                Reason::Required(Field::EventTsMs),
            ),
            (
                r#"{"event_name":"x","event_ts_ms":1}"#,
                Reason::Required(Field::InstallUuid),
            ),
            (
                r#"{"event_name":"x","event_ts_ms":1.5,"install_uuid":"i"}"#,
                Reason::Invalid(Field::EventTsMs),
            ),
            (
                r#"{"event_name":"x","event_ts_ms":"1","install_uuid":"i"}"#,
                Reason::Invalid(Field::EventTsMs),
            ),
            (
                r#"{"event_name":"x","event_ts_ms":-1,"install_uuid":"i"}"#,
                Reason::Invalid(Field::EventTsMs),
            ),
            (
                r#"{"event_name":"x","event_ts_ms":1,"install_uuid":"i","revenue":"9"}"#,
                Reason::Invalid(Field::Revenue),
            ),
            (
                r#"{"event_name":7,"event_ts_ms":1,"install_uuid":"i"}"#,
                Reason::Invalid(Field::EventName),
            ),
            (
                r#"{"event_name":"x","event_ts_ms":1,"install_uuid":"i","props":[]}"#,
                Reason::Invalid(Field::Props),
            ),
            (r#"[1]"#, Reason::BadJson),
            (r#"{"event_name":"x""#, Reason::BadJson),
        ];
        for (body, reason) in cases {
            assert_eq!(
                decode_single(body.as_bytes()).err(),
                Some(*reason),
                "{body}"
            );
        }
    }

    #[test]
    fn bulk_limits() {
        let one = r#"{"event_name":"x","event_ts_ms":1,"install_uuid":"i"}"#;
        let body = |n: usize| format!(r#"{{"events":[{}]}}"#, vec![one; n].join(","));
        assert_eq!(
            decode_bulk(body(MAX_BULK).as_bytes()).unwrap().len(),
            MAX_BULK
        );
        assert_eq!(
            decode_bulk(body(MAX_BULK + 1).as_bytes()).err(),
            Some(Reason::TooManyEvents)
        );
        assert_eq!(
            decode_bulk(br#"{"events":[]}"#).err(),
            Some(Reason::Required(Field::Events))
        );
        assert_eq!(
            decode_bulk(br#"{}"#).err(),
            Some(Reason::Required(Field::Events))
        );
        let mixed = decode_bulk(
            br#"{"events":[{"event_name":"x","event_ts_ms":1,"install_uuid":"i"},{},3]}"#,
        )
        .unwrap();
        assert!(mixed[0].draft.is_ok());
        assert_eq!(
            mixed[1].draft.as_ref().err(),
            Some(&Reason::Required(Field::EventName))
        );
        assert_eq!(mixed[2].draft.as_ref().err(), Some(&Reason::BadJson));
        let named = decode_bulk(br#"{"events":[{"event_id":"e1"}]}"#).unwrap();
        assert_eq!(named[0].event_id.as_deref(), Some("e1"));
    }
}
