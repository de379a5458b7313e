//! Record encodings. Every stored value starts with a version byte so that a later build can
//! still read what an earlier one wrote.
//!
//! - Events (the hot path, by far the most records) are postcard: compact, serde-based, with a
//!   documented stable wire format. Postcard is not self-describing, so any change of
//!   [`EventRecord`] needs a new version byte and a decoder for the old one.
//! - Configuration records (tenants, apps, keys; few, small, growing new optional fields as
//!   features land) are JSON, so a field added with `#[serde(default)]` keeps old records
//!   readable without a version bump.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;

pub const EVENT_V1: u8 = 1;
/// A v1 event followed by its [`Interned`] enrichment (two varints). Events without one are
/// written as v1, so a store that never enriched holds v1 records only.
pub const EVENT_V2: u8 = 2;
pub const CONFIG_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
#[error("undecodable {what} record: {detail}")]
pub struct CodecError {
    what: &'static str,
    detail: String,
}

/// One stored event. Its `seq` is the table key, not part of the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub received_at_ms: u64,
    pub tenant: String,
    pub app: String,
    pub key_id: u32,
    pub source: String,
    pub event_id: String,
    pub event_name: String,
    pub event_ts_ms: i64,
    pub install_uuid: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub ids: Vec<(String, String)>,
    pub revenue: Option<f64>,
    pub currency: Option<String>,
    pub transaction_id: Option<String>,
    pub product_id: Option<String>,
    /// JSON object text; `{}` when empty.
    pub props: String,
    /// JSON object text; `{}` when empty. Without the enrichment kept in `interned`.
    pub context: String,
    pub audit_key: String,
    /// The enrichment answers of this event kept once in the store's dictionary
    /// (`store::enrichments`) rather than in `context`: readers put them back
    /// (`store::enrichments::Expand`). Not part of the postcard body: v2 appends it.
    #[serde(skip)]
    pub interned: Interned,
}

/// Dictionary ids of an event's enrichment (`store::enrichments`); 0: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interned {
    /// `"geo":{..},"asn":{..}` (either or both).
    pub geo: u32,
    /// `"device":{..}`.
    pub device: u32,
}

impl Interned {
    pub fn is_none(&self) -> bool {
        *self == Interned::default()
    }

    /// The v2 suffix of a record: both ids, postcard varints.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        postcard::to_io(&(self.geo, self.device), out).expect("writing to a Vec cannot fail");
    }

    fn read(b: &[u8]) -> Option<Interned> {
        match postcard::take_from_bytes::<(u32, u32)>(b) {
            Ok(((geo, device), [])) => Some(Interned { geo, device }),
            _ => None,
        }
    }
}

pub fn encode_event(record: &EventRecord) -> Vec<u8> {
    // Sized up front: growing the Vec field by field was a visible share of the bulk path.
    let mut out = Vec::with_capacity(
        192 + record.props.len() + record.context.len() + record.audit_key.len(),
    );
    out.push(if record.interned.is_none() {
        EVENT_V1
    } else {
        EVENT_V2
    });
    postcard::to_io(record, &mut out).expect("writing to a Vec cannot fail");
    if !record.interned.is_none() {
        record.interned.append_to(&mut out);
    }
    out
}

/// The `event_id` of an encoded event, read without decoding the rest (the dedupe index
/// compares ids on its hot path). `None` when the bytes are not a v1 event.
pub fn event_id_of(bytes: &[u8]) -> Option<&str> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn string<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = usize::try_from(varint(b)?).ok()?;
        if len > b.len() {
            return None;
        }
        let (s, rest) = b.split_at(len);
        *b = rest;
        Some(s)
    }
    let (&(EVENT_V1 | EVENT_V2), mut b) = bytes.split_first()? else {
        return None;
    };
    // received_at_ms, tenant, app, key_id, source, then event_id (field order of v1).
    varint(&mut b)?;
    string(&mut b)?;
    string(&mut b)?;
    varint(&mut b)?;
    string(&mut b)?;
    std::str::from_utf8(string(&mut b)?).ok()
}

/// The fields of a stored event the identity graph reads, borrowed from the encoded bytes
/// (no allocation but the `ids` list): the indexer reads every event back from the log.
#[derive(Debug, PartialEq, Deserialize)]
pub struct IdentityView<'a> {
    pub received_at_ms: u64,
    pub tenant: &'a str,
    pub app: &'a str,
    pub key_id: u32,
    pub source: &'a str,
    pub event_id: &'a str,
    pub event_name: &'a str,
    pub event_ts_ms: i64,
    pub install_uuid: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub anonymous_id: Option<&'a str>,
    pub ids: Vec<(&'a str, &'a str)>,
}

/// The [`IdentityView`] of an encoded event (the leading fields of v1, in order; the rest of
/// the record is not read).
pub fn identity_view(bytes: &[u8]) -> Result<IdentityView<'_>, CodecError> {
    decode_event_v1(bytes).map(|(v, _)| v)
}

pub fn decode_event(bytes: &[u8]) -> Result<EventRecord, CodecError> {
    let (mut r, tail): (EventRecord, _) = decode_event_v1(bytes)?;
    match bytes[0] {
        EVENT_V1 if tail.is_empty() => {}
        EVENT_V2 => {
            r.interned = Interned::read(tail).ok_or_else(|| CodecError {
                what: "event",
                detail: "bad enrichment ids after a v2 record".into(),
            })?;
        }
        _ => {
            return Err(CodecError {
                what: "event",
                detail: format!("{} bytes after the record", tail.len()),
            });
        }
    }
    Ok(r)
}

/// An encoded event (version byte, then postcard) read as `T`: the whole record, or a view
/// of its leading fields, and the bytes after what `T` read (v2: the enrichment ids).
fn decode_event_v1<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<(T, &'a [u8]), CodecError> {
    match bytes.split_first() {
        Some((&(EVENT_V1 | EVENT_V2), rest)) => {
            postcard::take_from_bytes(rest).map_err(|e| CodecError {
                what: "event",
                detail: e.to_string(),
            })
        }
        other => Err(CodecError {
            what: "event",
            detail: format!("unknown version {:?}", other.map(|(v, _)| *v)),
        }),
    }
}

/// Version byte of a GameRebellion session record.
pub const SESSION_V1: u8 = 1;

/// A session record: version byte, start time (ms, i64 BE), then the 16-byte key of the
/// identifiers it was started with, when it had any.
pub fn encode_session(start_ms: i64, identity: Option<&[u8; 16]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.push(SESSION_V1);
    out.extend_from_slice(&start_ms.to_be_bytes());
    if let Some(id) = identity {
        out.extend_from_slice(id);
    }
    out
}

/// The start time and identifiers key of a session record.
pub fn decode_session(bytes: &[u8]) -> Result<(i64, Option<[u8; 16]>), CodecError> {
    let bad = |detail: String| CodecError {
        what: "session",
        detail,
    };
    match bytes.split_first() {
        Some((&SESSION_V1, rest)) if rest.len() == 8 || rest.len() == 24 => {
            let start = i64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let identity = rest[8..].try_into().ok();
            Ok((start, identity))
        }
        Some((&SESSION_V1, rest)) => Err(bad(format!("{} bytes after the version", rest.len()))),
        other => Err(bad(format!("unknown version {:?}", other.map(|(v, _)| *v)))),
    }
}

pub fn encode_config<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![CONFIG_V1];
    serde_json::to_writer(&mut out, record).expect("config records always serialize");
    out
}

pub fn decode_config<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, CodecError> {
    match bytes.split_first() {
        Some((&CONFIG_V1, rest)) => serde_json::from_slice(rest).map_err(|e| CodecError {
            what,
            detail: e.to_string(),
        }),
        other => Err(CodecError {
            what,
            detail: format!("unknown version {:?}", other.map(|(v, _)| *v)),
        }),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    /// Events accepted per calendar month (UTC); 0 = unlimited.
    pub monthly_quota: u64,
    pub created_ms: u64,
    /// Days its events are kept; `None` = the server's `retention_days`, `Some(0)` = forever.
    #[serde(default)]
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub tenant_id: u32,
    pub created_ms: u64,
    /// Adjust dialect: the `app_token` that names this app.
    #[serde(default)]
    pub adjust_app_token: Option<String>,
    /// AppsFlyer Web-S2S dialect: the bundle id in `/v1/{bundleId}/...` that names this app.
    #[serde(default)]
    pub appsflyer_bundle_id: Option<String>,
    /// Adjust dialect: `event_token` → event name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adjust_events: BTreeMap<String, String>,
    /// Adjust dialect: accept requests without an `Authorization: Bearer` key (they are
    /// attributed to key id 0). Off by default: the key is required.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adjust_token_optional: bool,
    /// Adjust dialect: SKAdNetwork conversion value rules for iOS 14+ requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjust_skan: Option<crate::skan::Rules>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Key {
    pub app_id: u32,
    pub label: String,
    /// SHA-256 of the key, lowercase hex.
    pub sha256: String,
    /// Event names this key may send; empty = all.
    #[serde(default)]
    pub allowed_events: Vec<String>,
    pub created_ms: u64,
    #[serde(default)]
    pub revoked_ms: Option<u64>,
    /// Requests per minute (GameRebellion dialect); `None` = the server default.
    #[serde(default)]
    pub rate_limit: Option<u32>,
}

#[cfg(test)]
impl EventRecord {
    /// A minimal record for tests: tenant and app `default`, source `reflect`, times 1,
    /// no optional fields. Tests override what they need with struct update syntax.
    pub fn for_test(event_id: &str) -> EventRecord {
        EventRecord {
            received_at_ms: 1,
            tenant: "default".into(),
            app: "default".into(),
            key_id: 1,
            source: "reflect".into(),
            event_id: event_id.into(),
            event_name: "x".into(),
            event_ts_ms: 1,
            install_uuid: None,
            user_id: None,
            anonymous_id: None,
            ids: Vec::new(),
            revenue: None,
            currency: None,
            transaction_id: None,
            product_id: None,
            props: "{}".into(),
            context: "{}".into(),
            audit_key: "a".into(),
            interned: Interned::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_read_without_decoding() {
        let mut r = sample();
        assert_eq!(event_id_of(&encode_event(&r)), Some("txn_abc123"));
        r.event_id = "é".repeat(200);
        r.received_at_ms = u64::MAX;
        assert_eq!(event_id_of(&encode_event(&r)), Some(r.event_id.as_str()));
        assert_eq!(event_id_of(&[]), None);
        assert_eq!(event_id_of(&[EVENT_V1, 0xff]), None);
    }

    fn sample() -> EventRecord {
        EventRecord {
            received_at_ms: 1_764_137_630_000,
            tenant: "default".into(),
            app: "default".into(),
            key_id: 1,
            source: "reflect".into(),
            event_id: "txn_abc123".into(),
            event_name: "purchase".into(),
            event_ts_ms: 1_735_999_999_000,
            install_uuid: Some("8f2a1c0e94d7423b8b53af7c9e21d630".into()),
            user_id: Some("user_42".into()),
            anonymous_id: None,
            ids: vec![("player_id".into(), "p1".into())],
            revenue: Some(9.99),
            currency: Some("USD".into()),
            transaction_id: Some("txn_abc123".into()),
            product_id: Some("sku_pro_pack".into()),
            props: r#"{"channel":"web_checkout"}"#.into(),
            context: "{}".into(),
            audit_key: "s2s/2025-01-04/txn_abc123.json".into(),
            interned: Interned::default(),
        }
    }

    /// Bytes a v1 build wrote. If this test fails, the event encoding changed: add a new
    /// version byte and keep decoding this one.
    const V1_FIXTURE: &str = "01b0f2aff6ab330764656661756c740764656661756c7401077265666c6563740a74786e5f61626331323308\
        7075726368617365b0b0ce9a8665012038663261316330653934643734323362386235336166376339653231\
        643633300107757365725f3432000109706c617965725f6964027031017b14ae47e1fa23400103555344010a\
        74786e5f616263313233010c736b755f70726f5f7061636b1a7b226368616e6e656c223a227765625f636865\
        636b6f7574227d027b7d1e7332732f323032352d30312d30342f74786e5f6162633132332e6a736f6e";

    #[test]
    fn identity_view_borrows_the_leading_fields() {
        let r = sample();
        let bytes = encode_event(&r);
        let v = identity_view(&bytes).unwrap();
        assert_eq!(
            (v.app, v.event_id, v.install_uuid, v.user_id, v.anonymous_id),
            (
                "default",
                "txn_abc123",
                r.install_uuid.as_deref(),
                Some("user_42"),
                None
            )
        );
        assert_eq!(v.ids, vec![("player_id", "p1")]);
        assert!(identity_view(&bytes[..20]).is_err());
        assert!(identity_view(&[2, 0]).is_err());
    }

    #[test]
    fn event_round_trip() {
        let r = sample();
        assert_eq!(decode_event(&encode_event(&r)).unwrap(), r);
        assert!(decode_event(&[9, 1, 2]).is_err());
        assert!(decode_event(&[]).is_err());
        assert!(decode_event(&[EVENT_V1, 0xff]).is_err());
    }

    #[test]
    fn v1_fixture_still_decodes() {
        let hex: String = V1_FIXTURE.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(decode_event(&bytes).unwrap(), sample());
        // v2 is v1's bytes, version 2, and the two enrichment ids.
        let mut v2 = bytes.clone();
        v2[0] = EVENT_V2;
        v2.extend_from_slice(&[0x05, 0x80, 0x01]);
        let interned = Interned {
            geo: 5,
            device: 128,
        };
        let r = EventRecord {
            interned,
            ..sample()
        };
        assert_eq!(decode_event(&v2).unwrap(), r);
        assert_eq!(encode_event(&r), v2);
        assert_eq!(event_id_of(&v2), Some("txn_abc123"));
        assert_eq!(identity_view(&v2).unwrap().user_id, Some("user_42"));
        // Without the ids, with one too many, or v1 with a tail: refused.
        for bad in [&v2[..bytes.len()], &[v2.as_slice(), &[1]].concat()] {
            assert!(decode_event(bad).is_err());
        }
        assert!(decode_event(&[bytes.as_slice(), &[0, 0]].concat()).is_err());
    }

    #[test]
    fn session_records_and_their_fixture() {
        let id = [7u8; 16];
        for (start, identity) in [(42, None), (1_764_137_630_000, Some(&id))] {
            let bytes = encode_session(start, identity);
            assert_eq!(decode_session(&bytes).unwrap(), (start, identity.copied()));
        }
        // Bytes this version writes; if this fails, add a version and keep decoding these.
        let v1 = [1u8, 0, 0, 0, 0, 0, 0, 0, 42];
        assert_eq!(decode_session(&v1).unwrap(), (42, None));
        assert!(decode_session(&[1, 0, 0]).is_err());
        assert!(decode_session(&[2; 9]).is_err());
        assert!(decode_session(&[]).is_err());
    }

    #[test]
    fn config_records_tolerate_new_fields_missing() {
        let old = [
            &[CONFIG_V1][..],
            br#"{"app_id":1,"label":"ci","sha256":"00","created_ms":5}"#,
        ]
        .concat();
        let key: Key = decode_config("key", &old).unwrap();
        assert!(key.allowed_events.is_empty() && key.revoked_ms.is_none());
        let t = Tenant {
            name: "t".into(),
            monthly_quota: 3,
            created_ms: 1,
            retention_days: Some(7),
        };
        assert_eq!(
            decode_config::<Tenant>("tenant", &encode_config(&t)).unwrap(),
            t
        );
        // An app record written before SKAdNetwork rules existed.
        let old_app = [
            &[CONFIG_V1][..],
            br#"{"name":"a","tenant_id":1,"created_ms":5,"adjust_app_token":"t"}"#,
        ]
        .concat();
        let app: App = decode_config("app", &old_app).unwrap();
        assert_eq!(app.adjust_skan, None);
        let with = App {
            adjust_skan: Some(crate::skan::Rules::from_specs(&["p=5".into()], &[], None).unwrap()),
            ..app
        };
        assert_eq!(
            decode_config::<App>("app", &encode_config(&with)).unwrap(),
            with
        );
    }
}
