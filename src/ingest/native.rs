//! Tests of the native fast path: [`reflect`]'s decoder and [`Pending::from_native`] write
//! the same bytes as the reference decoder and [`Pending::from_valid`] for every body.

use crate::dialect::reflect;
use crate::store::pending::native_record as record;
use crate::store::read::KeyInfo;
use crate::store::writer::Pending;
use std::borrow::Cow;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::reflect::reference;
    use crate::event::{Field, Reason};
    use crate::store::codec::{decode_event, encode_event};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const AT: u64 = 1_700_000_000_123;
    const AUDIT: &str = "s2s/2023-11-14/e.json";

    fn key() -> KeyInfo {
        KeyInfo {
            key_id: 300,
            app_id: 2,
            app: "game".into(),
            tenant_id: 3,
            tenant: "studio".into(),
            allowed_events: Vec::new(),
            rate_limit: None,
        }
    }

    /// What a single body becomes through the fast path: the stored bytes, or the reason.
    fn fast_single(body: &[u8]) -> Result<Vec<u8>, Reason> {
        let ev = reflect::decode_single(body)?.validate(|| "generated".into())?;
        Ok(Pending::from_native(&key(), "reflect", AT, &ev, AUDIT)
            .record()
            .to_vec())
    }

    /// ... and through the reference decoder and the `Draft` path.
    fn reference_single(body: &[u8]) -> Result<Vec<u8>, Reason> {
        let ev = reference::decode_single(body)?.validate(|| "generated".into())?;
        Ok(Pending::from_valid(&key(), "reflect", AT, ev, AUDIT)
            .record()
            .to_vec())
    }

    type Items = Vec<(Option<String>, Result<Vec<u8>, Reason>)>;

    fn fast_bulk(body: &[u8]) -> Result<Items, Reason> {
        Ok(reflect::decode_bulk(body)?
            .into_iter()
            .map(|i| {
                let stored = i
                    .draft
                    .and_then(|d| d.validate(|| "generated".into()))
                    .map(|ev| {
                        Pending::from_native(&key(), "reflect", AT, &ev, AUDIT)
                            .record()
                            .to_vec()
                    });
                (i.event_id.map(Cow::into_owned), stored)
            })
            .collect())
    }

    fn reference_bulk(body: &[u8]) -> Result<Items, Reason> {
        Ok(reference::decode_bulk(body)?
            .into_iter()
            .map(|i| {
                let stored = i
                    .draft
                    .and_then(|d| d.validate(|| "generated".into()))
                    .map(|ev| {
                        Pending::from_valid(&key(), "reflect", AT, ev, AUDIT)
                            .record()
                            .to_vec()
                    });
                (i.event_id.map(Cow::into_owned), stored)
            })
            .collect())
    }

    fn same(body: &str) -> Result<Vec<u8>, Reason> {
        let fast = fast_single(body.as_bytes());
        assert_eq!(fast, reference_single(body.as_bytes()), "{body}");
        let bulk = format!(r#"{{"events":[{body}]}}"#);
        assert_eq!(
            fast_bulk(bulk.as_bytes()),
            reference_bulk(bulk.as_bytes()),
            "{bulk}"
        );
        fast
    }

    fn props_of(body: &str) -> String {
        decode_event(&same(body).unwrap()).unwrap().props
    }

    const BASE: &str = r#""event_name":"x","event_ts_ms":1,"install_uuid":"i""#;

    #[test]
    fn writes_the_bytes_of_the_event_record() {
        let key = key();
        for body in [
            r#"{"event_name":"x","event_ts_ms":1,"install_uuid":"i"}"#,
            r#"{"event_id":"e\u00e9","event_name":"purchase","event_ts_ms":1735999999000,
                "install_uuid":"u","user_id":"p","anonymous_id":"a","revenue":-1e300,
                "currency":"usd","transaction_id":"t","product_id":"s",
                "ids":{"idfa":"x","gaid":null,"k":"v"},"context":{"ip":"1.2.3.4"},
                "props":{"a":[1,2.5,{"b":null}]},"level":7}"#,
        ] {
            let event = reflect::decode_single(body.as_bytes())
                .unwrap()
                .validate(|| "generated".into())
                .unwrap();
            let record = record(&key, "reflect", AT, &event, AUDIT);
            let p = Pending::from_native(&key, "reflect", AT, &event, AUDIT);
            assert_eq!(p.record(), encode_event(&record), "{body}");
            assert_eq!(decode_event(p.record()).unwrap(), record);
            assert_eq!(p.event_id(), record.event_id);
            assert_eq!(same(body), Ok(p.record().to_vec()));
        }
    }

    #[test]
    fn unknown_fields_join_props_in_the_senders_order() {
        // The sender's `props` first, then the unknown fields, each as written.
        let body = format!(
            r#"{{"z":1,{BASE},"y":[true],"props":{{"p":"q","c":{{"z":0,"b":1}}}},"a":{{"n":null,"m":2}}}}"#
        );
        assert_eq!(
            props_of(&body),
            r#"{"p":"q","c":{"z":0,"b":1},"z":1,"y":[true],"a":{"n":null,"m":2}}"#
        );
        let body = format!(r#"{{"m":1,"event_id":"e","b":2,{BASE},"a":3,"currency":"EUR","z":4}}"#);
        assert_eq!(props_of(&body), r#"{"m":1,"b":2,"a":3,"z":4}"#);
        let body = format!(r#"{{"b":"\u0062",{BASE},"c":2}}"#);
        assert_eq!(props_of(&body), r#"{"b":"b","c":2}"#);
        let body = format!(r#"{{{BASE},"props":null,"context":null,"k":-0}}"#);
        assert_eq!(props_of(&body), r#"{"k":-0.0}"#);
        let clash = format!(r#"{{{BASE},"a":1,"props":{{"a":2}}}}"#);
        assert_eq!(same(&clash), Err(Reason::Invalid(Field::Props)));
        let escaped_clash = format!(r#"{{{BASE},"\u0061":1,"props":{{"a":2}}}}"#);
        assert_eq!(same(&escaped_clash), Err(Reason::Invalid(Field::Props)));
        // A known field spelled with an escape is that field.
        let escaped_known = r#"{"event\u005fname":"x","event_ts_ms":1,"install_uuid":"i"}"#;
        assert_eq!(props_of(escaped_known), "{}");
        let twice = format!(r#"{{{BASE},"event\u005fname":"y"}}"#);
        assert_eq!(same(&twice), Err(Reason::BadJson));
    }

    #[test]
    fn duplicate_keys_are_bad_json_at_any_depth() {
        for body in [
            format!(r#"{{{BASE},"props":{{"a":1,"a":2}}}}"#),
            format!(r#"{{{BASE},"props":{{"a":{{"b":[{{"c":1,"c":1}}]}}}}}}"#),
            format!(r#"{{{BASE},"context":{{"ip":"x","\u0069p":"y"}}}}"#),
            format!(r#"{{{BASE},"ids":{{"k":null,"k":"v"}}}}"#),
            format!(r#"{{{BASE},"u":1,"u":2}}"#),
            format!(r#"{{{BASE},"event_id":null,"event_id":"e"}}"#),
            format!(r#"{{{BASE},"user_id":{{"a":1,"a":1}}}}"#),
            format!(r#"{{{BASE},"w":[{{"a":1,"a":1}}]}}"#),
        ] {
            assert_eq!(same(&body), Err(Reason::BadJson), "{body}");
        }
        let bulk = format!(r#"{{"events":[{{{BASE}}}],"x":{{"a":1,"a":1}}}}"#);
        assert_eq!(fast_bulk(bulk.as_bytes()), Err(Reason::BadJson));
        let bulk = format!(r#"{{"events":[{{{BASE}}}],"events":[{{{BASE}}}]}}"#);
        assert_eq!(fast_bulk(bulk.as_bytes()), Err(Reason::BadJson));
    }

    #[test]
    fn escapes_and_numbers_survive_exactly() {
        let body = r#"{"event_id":"\ud83d\ude00-\u00e9\/","event_name":"caf\u00e9",
            "event_ts_ms":9223372036854775807,"install_uuid":"\"q\"",
            "ids":{"\u0041":"\t"},"revenue":123456789012345678901234567890,
            "props":{"big":18446744073709551615,"bigger":18446744073709551616,
            "neg":-9223372036854775808,"f":0.30000000000000004,"e":1E-7,"s":"\u001f\u00e9"}}"#;
        let r = decode_event(&same(body).unwrap()).unwrap();
        assert_eq!(r.event_id, "\u{1f600}-\u{e9}/");
        assert_eq!(r.event_name, "caf\u{e9}");
        assert_eq!(r.event_ts_ms, i64::MAX);
        assert_eq!(r.install_uuid.as_deref(), Some("\"q\""));
        assert_eq!(r.ids, [("A".to_owned(), "\t".to_owned())]);
        assert_eq!(r.revenue, Some(1.2345678901234568e29));
        assert_eq!(
            r.props,
            r#"{"big":18446744073709551615,"bigger":1.8446744073709552e+19,"neg":-9223372036854775808,"f":0.30000000000000004,"e":1e-7,"s":"\u001fé"}"#
        );
    }

    #[test]
    fn nulls_and_wrong_types_give_the_reference_reasons() {
        let fields = FIELDS;
        let values = [
            "null",
            "true",
            "1",
            "-1",
            "1.5",
            r#""s""#,
            r#""""#,
            "[]",
            "{}",
            r#"{"a":"b"}"#,
            r#"{"a":1}"#,
            r#"{"a":null}"#,
            "18446744073709551615",
            "-0",
            "1e2",
        ];
        let base = r#""event_name":"x","event_ts_ms":1,"install_uuid":"i","currency":"EUR""#;
        for field in fields {
            for value in values {
                let alone = format!(r#"{{"{field}":{value}}}"#);
                let _ = same(&alone);
                let rest: Vec<&str> = base
                    .split(',')
                    .filter(|kv| !kv.starts_with(&format!(r#""{field}""#)))
                    .collect();
                let body = format!(r#"{{{},"{field}":{value}}}"#, rest.join(","));
                let _ = same(&body);
                let first = format!(r#"{{"{field}":{value},{}}}"#, rest.join(","));
                let _ = same(&first);
            }
        }
    }

    /// JSON text of a string: plain characters and every kind of escape.
    fn string_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => "[a-z_]{1,6}",
            1 => Just(r"\u00e9".to_owned()),
            1 => Just(r"\ud83d\ude00".to_owned()),
            1 => Just(r#"\n\\\"\/"#.to_owned()),
            1 => Just(r"\u0000\u001f".to_owned()),
            1 => Just("é😀".to_owned()),
            1 => Just(r"\u0061".to_owned()),
        ];
        prop::collection::vec(piece, 0..4).prop_map(|p| format!(r#""{}""#, p.concat()))
    }

    fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => any::<u32>().prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => any::<u64>().prop_map(|n| n.to_string()),
            1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| f.to_string()),
            1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
            1 => prop::sample::select(vec![
                "-0", "0.0", "1e3", "1E-7", "9.99", "18446744073709551616",
                "9223372036854775808", "-9223372036854775809",
                "123456789012345678901234567890", "1e400", "0.1e1",
            ]).prop_map(str::to_owned),
        ]
    }

    /// Object keys: mostly distinct, sometimes (`"a"` and `"\u0061"`, or a repeat) the same.
    const KEYS: &[&str] = &[
        r#""a""#,
        r#""b""#,
        r#""level""#,
        r#""é""#,
        r#""""#,
        r#""k\n""#,
        r#""store""#,
        r#""x""#,
    ];

    /// The text of an object with these values: distinct keys, sometimes one key twice.
    fn object_text<S: Strategy<Value = String>>(values: S) -> impl Strategy<Value = String> {
        (
            prop::sample::subsequence(KEYS, 0..5).prop_shuffle(),
            prop::collection::vec(values, 5),
            prop::option::weighted(0.1, prop::sample::select(vec![r#""a""#, r#""\u0061""#])),
        )
            .prop_map(|(keys, values, again)| {
                let mut kv: Vec<String> = keys
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                if let Some(k) = again {
                    kv.push(format!("{k}:{}", values[4]));
                }
                format!("{{{}}}", kv.join(" , "))
            })
    }

    fn value_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            number_text(),
            string_text(),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                object_text(inner),
            ]
        })
    }

    /// A value that is usually right for the field, sometimes anything.
    fn field_value(name: &'static str) -> BoxedStrategy<String> {
        let typical: BoxedStrategy<String> = match name {
            "event_ts_ms" => prop_oneof![
                4 => (0u64..=2_000_000_000_000).prop_map(|n| n.to_string()),
                1 => number_text(),
            ]
            .boxed(),
            "revenue" => number_text().boxed(),
            "currency" => {
                prop::sample::select(vec![r#""EUR""#, r#""usd""#, r#""Us""#, r#""E\u0055R""#])
                    .prop_map(str::to_owned)
                    .boxed()
            }
            "ids" => object_text(prop_oneof![
                6 => string_text(),
                1 => Just("null".to_owned()),
                1 => number_text(),
            ])
            .boxed(),
            "props" | "context" => object_text(value_text()).boxed(),
            _ => string_text().boxed(),
        };
        prop_oneof![8 => typical, 1 => Just("null".to_owned()), 1 => value_text()].boxed()
    }

    const FIELDS: &[&str] = &[
        "event_id",
        "event_name",
        "event_ts_ms",
        "install_uuid",
        "user_id",
        "anonymous_id",
        "revenue",
        "currency",
        "transaction_id",
        "product_id",
        "ids",
        "context",
        "props",
    ];

    fn field(name: &'static str) -> impl Strategy<Value = String> {
        field_value(name).prop_map(move |v| format!(r#""{name}":{v}"#))
    }

    /// An event object: usually the required fields, some others, some unknown ones (which
    /// may clash with `props`), in any order, sometimes a key twice.
    fn event_text() -> impl Strategy<Value = String> {
        (
            prop::sample::subsequence(FIELDS, 0..8),
            prop::sample::subsequence(KEYS, 0..3),
            prop::option::weighted(0.05, prop::sample::select(FIELDS)),
            prop::bool::weighted(0.7),
        )
            .prop_flat_map(|(mut names, unknown, again, required)| {
                let base: &[&str] = &["event_name", "event_ts_ms", "install_uuid"];
                if required {
                    names.retain(|n| !base.contains(n));
                }
                names.extend(again);
                let known: Vec<_> = names.into_iter().map(field).collect();
                let unknown: Vec<_> = unknown
                    .into_iter()
                    .map(|k| value_text().prop_map(move |v| format!("{k}:{v}")))
                    .collect();
                (known, unknown, Just(required))
            })
            .prop_flat_map(|(mut entries, unknown, required)| {
                if required {
                    entries.extend([
                        r#""event_name":"purchase""#.to_owned(),
                        r#""event_ts_ms":1735999999000"#.to_owned(),
                        r#""install_uuid":"8f2a""#.to_owned(),
                    ]);
                }
                entries.extend(unknown);
                Just(entries).prop_shuffle()
            })
            .prop_map(|entries| format!("{{{}}}", entries.join(",")))
    }

    fn unknown_field() -> impl Strategy<Value = String> {
        (prop::sample::select(KEYS), value_text()).prop_map(|(k, v)| format!("{k}:{v}"))
    }

    fn cases(default: u32) -> Config {
        Config {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default),
            failure_persistence: None,
            ..Config::default()
        }
    }

    #[test]
    fn fast_path_stores_what_the_reference_stores() {
        // Outcomes seen: stored, bad_json, another reason, and stored with unknown fields.
        let seen: [AtomicUsize; 4] = Default::default();
        let mut runner = TestRunner::new(cases(3000));
        runner
            .run(&event_text(), |body| {
                let fast = fast_single(body.as_bytes());
                prop_assert_eq!(&fast, &reference_single(body.as_bytes()), "{}", body);
                if let Ok(record) = &fast {
                    let stored = decode_event(record).unwrap().props;
                    prop_assert_eq!(stored, senders_props(&body), "{}", body);
                }
                let i = match &fast {
                    Ok(r) if decode_event(r).unwrap().props.len() > 2 => 3,
                    Ok(_) => 0,
                    Err(Reason::BadJson) => 1,
                    Err(_) => 2,
                };
                seen[i].fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        // The generator reaches every kind of outcome (else the comparison proves little).
        let seen = seen.map(AtomicUsize::into_inner);
        assert!(seen.iter().all(|n| *n * 20 > seen.iter().sum()), "{seen:?}");
    }

    /// The `props` a stored event should have, worked out from the body independently of
    /// both decoders: the `props` object's entries, then the unknown top-level fields, each in
    /// the order of the body.
    fn senders_props(body: &str) -> String {
        let serde_json::Value::Object(sent) = crate::dialect::json::parse(body.as_bytes()).unwrap()
        else {
            panic!("not an object: {body}")
        };
        let mut props = match sent.get("props") {
            Some(serde_json::Value::Object(p)) => p.clone(),
            _ => serde_json::Map::new(),
        };
        for (k, v) in &sent {
            if !FIELDS.contains(&k.as_str()) {
                props.insert(k.clone(), v.clone());
            }
        }
        serde_json::Value::Object(props).to_string()
    }

    /// A body cut short, with a byte changed, or with bytes put in that are never valid
    /// (`0xff`, a lone surrogate).
    fn damaged(body: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
        (body, any::<u16>(), any::<u8>(), 0u8..5).prop_map(|(body, at, byte, how)| {
            let mut b = body.into_bytes();
            let i = at as usize % (b.len() + 1);
            match how {
                0 => b.truncate(i),
                1 if i < b.len() => b[i] = byte,
                2 => b.insert(i, 0xff),
                3 => drop(b.splice(i..i, *br"\ud800")),
                _ => {}
            }
            b
        })
    }

    #[test]
    fn fast_answers_what_the_reference_answers_on_damaged_bodies() {
        let single = damaged(event_text());
        let bulk = damaged(
            prop::collection::vec(event_text(), 1..3)
                .prop_map(|events| format!(r#"{{"events":[{}]}}"#, events.join(","))),
        );
        let mut runner = TestRunner::new(cases(2000));
        runner
            .run(&(single, bulk), |(single, bulk)| {
                prop_assert_eq!(fast_single(&single), reference_single(&single));
                prop_assert_eq!(fast_bulk(&bulk), reference_bulk(&bulk));
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn fast_bulk_answers_what_the_reference_answers() {
        let element = prop_oneof![6 => event_text(), 1 => value_text()];
        let body = (
            prop::collection::vec(element, 0..5),
            prop::collection::vec(unknown_field(), 0..2),
        )
            .prop_map(|(events, extra)| {
                let mut members = vec![format!(r#""events":[{}]"#, events.join(","))];
                members.extend(extra);
                format!("{{{}}}", members.join(","))
            });
        let mut runner = TestRunner::new(cases(1000));
        runner
            .run(&body, |body| {
                prop_assert_eq!(
                    fast_bulk(body.as_bytes()),
                    reference_bulk(body.as_bytes()),
                    "{}",
                    body
                );
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn bulk_envelope_reasons_match() {
        let one = format!("{{{BASE}}}");
        let n = |n: usize| format!(r#"{{"events":[{}]}}"#, vec![one.as_str(); n].join(","));
        for body in [
            n(reflect::MAX_BULK),
            n(reflect::MAX_BULK + 1),
            format!(
                r#"{{"events":[{}],"x":{{"a":1,"a":2}}}}"#,
                vec![one.as_str(); 1001].join(",")
            ),
            r#"{"events":[]}"#.to_owned(),
            r#"{"events":null}"#.to_owned(),
            r#"{"events":{"a":1}}"#.to_owned(),
            r#"{"events":"x"}"#.to_owned(),
            r#"{}"#.to_owned(),
            r#"[]"#.to_owned(),
            r#"{"events":[1,"x",null,[{"a":1}],{}]}"#.to_owned(),
            r#"{"events":[{"event_id":"e1"}]} x"#.to_owned(),
            r#"{"events":[{"event_id":"e\u0031","event_id":"e2"}]}"#.to_owned(),
            r#"{"events":[{"event_id":"e\u0031"}]}"#.to_owned(),
        ] {
            assert_eq!(
                fast_bulk(body.as_bytes()),
                reference_bulk(body.as_bytes()),
                "{body}"
            );
        }
    }
}

#[cfg(test)]
mod answer_tests {
    use crate::dialect::Native;
    use crate::dialect::reflect::accepted as single_accepted;
    use crate::event::{Field, Reason};
    use crate::ingest::{BatchSlots, ItemSlot, ResultReasons};
    use crate::store::writer::Outcome;
    use serde_json::{Value, json};

    /// The answer as the server built it before, as a `Value` tree.
    fn tree_answer(rows: &[(Option<&str>, &str, Option<Reason>)], audit_key: &str) -> Value {
        let count = |status| rows.iter().filter(|r| r.1 == status).count();
        let results: Vec<Value> = rows
            .iter()
            .map(|(id, status, reason)| match reason {
                None => json!({ "event_id": id, "status": status }),
                Some(r) => json!({ "event_id": id, "status": status, "reason": r.tag() }),
            })
            .collect();
        let mut body = json!({
            "accepted": count("accepted"),
            "duplicates": count("duplicate"),
            "rejected": count("rejected"),
            "results": results,
        });
        if count("accepted") > 0 {
            body["audit_key"] = Value::String(audit_key.into());
        }
        body
    }

    #[test]
    fn answers_are_the_bytes_of_the_tree() {
        let audit = "s2s/bulk/2025-01-01/\"x\".json";
        let slots = || {
            BatchSlots(vec![
                ItemSlot::Queued("a".into(), 0),
                ItemSlot::Rejected(None, Reason::BadJson),
                ItemSlot::Queued("b\"é\u{1}".into(), 1),
                ItemSlot::Rejected(Some("x\\".into()), Reason::Required(Field::EventName)),
                ItemSlot::Queued("c".into(), 2),
                ItemSlot::Queued("d".into(), 3),
            ])
        };
        let outcomes = [
            Outcome::Accepted { seq: 1 },
            Outcome::Duplicate { seq: 0 },
            Outcome::OverQuota,
            Outcome::OutOfOrder,
        ];
        let mut seen = Vec::new();
        let done = slots().answer(&outcomes, audit, ResultReasons::Tags, |_, r| seen.push(r));
        let rows = [
            (Some("a"), "accepted", None),
            (None, "rejected", Some(Reason::BadJson)),
            (Some("b\"é\u{1}"), "duplicate", None),
            (
                Some("x\\"),
                "rejected",
                Some(Reason::Required(Field::EventName)),
            ),
            (Some("c"), "rejected", Some(Reason::CapExceeded)),
            (Some("d"), "rejected", Some(Reason::EventOutOfOrder)),
        ];
        let tree = serde_json::to_vec(&tree_answer(&rows, audit)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(done.body()),
            String::from_utf8_lossy(&tree)
        );
        assert_eq!(done.all_rejected, None);
        assert_eq!(seen.len(), 4);
        assert_eq!(done.reply::<Native>(0).body, tree);

        // All rejected: the first reason's status, and an `error` field last.
        let none_queued = BatchSlots(vec![
            ItemSlot::Rejected(Some("e".into()), Reason::Invalid(Field::Props)),
            ItemSlot::Rejected(None, Reason::BadJson),
        ]);
        let done = none_queued.answer(&[], audit, ResultReasons::Tags, |_, _| {});
        let rows = [
            (Some("e"), "rejected", Some(Reason::Invalid(Field::Props))),
            (None, "rejected", Some(Reason::BadJson)),
        ];
        let mut tree = tree_answer(&rows, audit);
        tree["error"] = Value::String("props_invalid".into());
        let reply = done.reply::<Native>(0);
        assert_eq!(reply.status, hyper::StatusCode::BAD_REQUEST);
        assert_eq!(reply.body, serde_json::to_vec(&tree).unwrap());

        // Reflect's bulk names a missing field as its example does, and which field.
        let reflect = BatchSlots(vec![
            ItemSlot::Rejected(Some("r".into()), Reason::Required(Field::InstallUuid)),
            ItemSlot::Rejected(None, Reason::Invalid(Field::EventTsMs)),
        ]);
        let done = reflect.answer(&[], audit, ResultReasons::Reflect, |_, _| {});
        let body: Value = serde_json::from_slice(done.body()).unwrap();
        assert_eq!(
            body["results"],
            json!([
                {"event_id": "r", "status": "rejected", "reason": "missing_required_fields",
                 "field": "install_uuid"},
                {"event_id": null, "status": "rejected", "reason": "event_ts_ms_invalid"},
            ])
        );
        assert_eq!(
            done.all_rejected,
            Some(Reason::Required(Field::InstallUuid))
        );

        assert_eq!(
            single_accepted("i\"d", "s2s/k"),
            serde_json::to_vec(&json!({ "accepted": 1, "event_id": "i\"d", "audit_key": "s2s/k" }))
                .unwrap()
        );
    }
}
