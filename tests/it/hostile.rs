//! Hostile input: property tests over every decoder and the strict JSON parser (in-process),
//! random requests against a real server, slow clients, the connection cap.
//!
//! Each decoder must, for any bytes: not panic, and either produce events that validate or
//! refuse with a reason whose status is 4xx. A new dialect joins by adding one line to
//! [`DECODERS`]. (The native fast decoder is held to its reference decoder, a test-only
//! module of the library, by the unit tests of `ingest::native`, on damaged bodies too.)

use crate::support::*;
use inlet::dialect::gamerebellion::{self as gr, SessionKind};
use inlet::dialect::{adjust, appsflyer, datafly, json, reflect};
use inlet::event::{Reason, random_id};
use inlet::http::reply::status_of;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

type Decoder = fn(&[u8]) -> Vec<Reason>;

/// Every wire format: request body → the reasons its events were refused (empty = all valid).
/// Dialect decoders that need more than the body (query, headers) take them from a fixed
/// plausible context here.
const DECODERS: &[(&str, Decoder)] = &[
    ("reflect single", |b| match reflect::decode_single(b) {
        Ok(d) => d.validate(random_id).err().into_iter().collect(),
        Err(r) => vec![r],
    }),
    ("reflect bulk", |b| match reflect::decode_bulk(b) {
        Ok(items) => items
            .into_iter()
            .filter_map(|i| i.draft.and_then(|d| d.validate(random_id)).err())
            .collect(),
        Err(r) => vec![r],
    }),
    ("gamerebellion event", |b| match gr::decode_single(b, NOW) {
        Ok(d) => d.validate(random_id).err().into_iter().collect(),
        Err(r) => vec![r],
    }),
    ("gamerebellion batch", |b| match gr::decode_batch(b, NOW) {
        Ok(items) => items
            .into_iter()
            .filter_map(|i| i.draft.and_then(|d| d.validate(random_id)).err())
            .collect(),
        Err(r) => vec![r],
    }),
    ("gamerebellion session", |b| {
        [SessionKind::Start, SessionKind::Stop, SessionKind::End]
            .into_iter()
            .filter_map(|k| {
                gr::decode_session(k, b, NOW)
                    .and_then(|s| s.draft.validate(random_id))
                    .err()
            })
            .collect()
    }),
    // Adjust: the query string or form body (the app and event tokens map to a name).
    ("adjust params", |b| {
        match adjust::Params::parse(b).and_then(|p| p.into_event("purchase", NOW)) {
            Ok(d) => d.draft.validate(random_id).err().into_iter().collect(),
            Err(r) => vec![r],
        }
    }),
    ("appsflyer event", |b| {
        match appsflyer::decode(appsflyer::Method::Event, b, NOW) {
            Ok(d) => d.draft.validate(random_id).err().into_iter().collect(),
            Err(r) => vec![r],
        }
    }),
    ("appsflyer setcuid", |b| {
        match appsflyer::decode(appsflyer::Method::SetCuid, b, NOW) {
            Ok(d) => d.draft.validate(random_id).err().into_iter().collect(),
            Err(r) => vec![r],
        }
    }),
    ("datafly", |b| match datafly::decode(b, NOW) {
        Ok(d) => d.validate(random_id).err().into_iter().collect(),
        Err(r) => vec![r],
    }),
];

/// The fixed receive time given to dialects that need one.
const NOW: u64 = 1_764_000_000_000;

/// JSON values with the awkward parts: huge and odd numbers, unicode, nesting.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| if f.is_finite() {
            f.to_string()
        } else {
            "1e400".into()
        }),
        Just("1e400".to_owned()),
        Just("-0".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("123456789012345678901234567890".to_owned()),
        ".{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just(r#""\ud800""#.to_owned()),
        Just(r#""\u0000""#.to_owned()),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec((field_name(), inner), 0..6).prop_map(|kv| {
                let body: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

/// Names of real fields (so values reach the field checks) and of random ones.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("event_id".to_owned()),
        Just("event_name".to_owned()),
        Just("event_ts_ms".to_owned()),
        Just("install_uuid".to_owned()),
        Just("user_id".to_owned()),
        Just("revenue".to_owned()),
        Just("currency".to_owned()),
        Just("props".to_owned()),
        Just("ids".to_owned()),
        Just("context".to_owned()),
        Just("events".to_owned()),
        "[a-z_]{1,12}",
    ]
}

/// A near-valid event with one field replaced by any JSON value and maybe a duplicate key.
fn mutated_event() -> impl Strategy<Value = String> {
    (field_name(), json_value(), any::<bool>(), any::<bool>()).prop_map(
        |(field, value, dup, bulk)| {
            let mut fields = vec![
                ("event_id".to_owned(), r#""e1""#.to_owned()),
                ("event_name".to_owned(), r#""purchase""#.to_owned()),
                ("event_ts_ms".to_owned(), "1735999999000".to_owned()),
                ("install_uuid".to_owned(), r#""i1""#.to_owned()),
            ];
            match fields.iter_mut().find(|(k, _)| *k == field) {
                Some(slot) if !dup => slot.1 = value,
                _ => fields.push((field, value)),
            }
            let obj: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                .collect();
            let one = format!("{{{}}}", obj.join(","));
            if bulk {
                format!(r#"{{"events":[{one},{one}]}}"#)
            } else {
                one
            }
        },
    )
}

/// Any input: raw bytes, JSON-shaped text, mutated events, truncations and byte flips.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let shaped = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        json_value().prop_map(String::into_bytes),
        mutated_event().prop_map(String::into_bytes),
    ];
    (shaped, any::<u16>(), any::<u8>(), 0u8..4).prop_map(|(mut b, at, byte, how)| {
        if !b.is_empty() {
            let i = at as usize % b.len();
            match how {
                0 => b.truncate(i),
                1 => b[i] = byte,
                2 => b.insert(i, 0xff),
                _ => {}
            }
        }
        b
    })
}

fn check_decoders(body: &[u8]) -> Result<(), TestCaseError> {
    for (name, decode) in DECODERS {
        for reason in decode(body) {
            let status = status_of(reason);
            prop_assert!(
                status.is_client_error(),
                "{name}: {} answered {status}",
                reason.tag()
            );
        }
    }
    // The strict parser agrees with serde_json on everything it accepts.
    if let Ok(v) = json::parse(body) {
        let plain: serde_json::Value =
            serde_json::from_slice(body).expect("strict accepted what serde_json refuses");
        prop_assert_eq!(v, plain);
    }
    Ok(())
}

/// How many cases the in-process properties try (`PROPTEST_CASES` overrides).
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
fn decoders_refuse_hostile_bodies_with_a_4xx_reason_and_never_panic() {
    let mut runner = TestRunner::new(cases(4000));
    runner.run(&hostile_body(), |b| check_decoders(&b)).unwrap();
}

#[test]
fn extreme_shapes_are_refused_with_stable_reasons() {
    let deep_array = "[".repeat(100_000);
    let deep_object = r#"{"a":"#.repeat(10_000);
    let long_string = format!(r#"{{"event_name":"{}"}}"#, "x".repeat(1 << 20));
    let many_keys: String = format!(
        "{{{}}}",
        (0..50_000)
            .map(|i| format!(r#""k{i}":1"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    for body in [
        deep_array.as_bytes(),
        deep_object.as_bytes(),
        long_string.as_bytes(),
        many_keys.as_bytes(),
        b"{\"event_name\":\"\xc3\x28\"}",
        b"\xef\xbb\xbf{}",
        br#"{"event_ts_ms":1e400,"event_name":"x","install_uuid":"i"}"#,
        br#"{"event_ts_ms":18446744073709551616,"event_name":"x","install_uuid":"i"}"#,
        br#"{"event_name":"x","event_ts_ms":1,"install_uuid":"i","event_name":"y"}"#,
        br#"{"events":[{"event_name":"x","event_ts_ms":1,"install_uuid":"i","ids":{"a":"1","a":"2"}}]}"#,
    ] {
        check_decoders(body).unwrap();
        for (name, decode) in DECODERS {
            assert!(!decode(body).is_empty(), "{name} accepted a hostile body");
        }
    }
}

/// A raw HTTP exchange: sends `head` + `body`, returns (status, body) or None when the
/// server closed without answering.
fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body_at = out.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, out[body_at..].to_vec()))
}

#[test]
fn random_requests_never_get_a_500() {
    let inlet = Inlet::start_with(&["--body-timeout-secs", "2"]);
    let key = inlet.mint("default");
    let addr = inlet.addr;
    let request = (
        prop_oneof![
            Just("POST"),
            Just("GET"),
            Just("PUT"),
            Just("DELETE"),
            Just("OPTIONS"),
            Just("PATCH")
        ],
        prop_oneof![
            Just("/s2s/event".to_owned()),
            Just("/s2s/events/bulk".to_owned()),
            Just("/s2s/event?x=1&x=2".to_owned()),
            Just("//s2s/event".to_owned()),
            Just("/s2s/event/".to_owned()),
            Just("/%2e%2e/s2s/event".to_owned()),
            Just("/readyz".to_owned()),
            Just("/api/v1/event".to_owned()),
            Just("/api/v1/events".to_owned()),
            Just("/api/v1/sessions/start".to_owned()),
            Just("/api/v1/sessions/end".to_owned()),
            Just("/event?s2s=1&app_token=abc123&event_token=ev1".to_owned()),
            Just("/event".to_owned()),
            Just("/admin/api/keys".to_owned()),
            Just("/v1/com.example.game/event".to_owned()),
            Just("/v1/com.example.game/setcuid".to_owned()),
            Just("/v1/events".to_owned()),
            "/[a-z0-9/%._-]{0,40}",
        ],
        prop_oneof![
            Just(format!("Bearer {key}")),
            Just("Bearer".to_owned()),
            Just(format!("bearer  {key} ")),
            Just(format!("Basic {key}")),
            Just(format!("Bearer {}", &key[..key.len() - 1])),
            Just(format!("Bearer {}", key.to_uppercase())),
            "[ -~]{0,60}",
        ],
        prop_oneof![
            Just(None),
            Just(Some("gzip")),
            Just(Some("deflate")),
            Just(Some("br")),
            Just(Some("identity")),
            Just(Some("gzip, identity")),
            Just(Some("x-unknown")),
        ],
        prop_oneof![
            Just("application/json"),
            Just("text/plain"),
            Just("application/x-www-form-urlencoded"),
            Just("multipart/form-data; boundary=x"),
            Just("application/json; charset=latin1"),
        ],
        any::<bool>(),
        hostile_body(),
    );
    let mut runner = TestRunner::new(cases(300));
    let tried = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(
            &request,
            |(method, path, auth, encoding, ctype, chunked, body)| {
                tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let api_key = auth.rsplit(' ').next().unwrap_or_default();
                let mut head = format!(
                    "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nX-API-Key: {api_key}\r\nContent-Type: {ctype}\r\nConnection: close\r\n"
                );
                if let Some(e) = encoding {
                    head.push_str(&format!("Content-Encoding: {e}\r\n"));
                }
                let wire = if chunked {
                    head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                    let mut w = format!("{:x}\r\n", body.len()).into_bytes();
                    w.extend_from_slice(&body);
                    w.extend_from_slice(b"\r\n0\r\n\r\n");
                    if body.is_empty() {
                        w = b"0\r\n\r\n".to_vec();
                    }
                    w
                } else {
                    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                    body.clone()
                };
                let (status, resp) = raw(addr, &head, &wire).expect("an answer");
                prop_assert!(
                    status < 500 || status == 503,
                    "{method} {path} got {status}: {}",
                    String::from_utf8_lossy(&resp)
                );
                // Reflect's error body; the other dialects answer in their vendors' shapes.
                if status >= 400 && path.starts_with("/s2s/") {
                    let v: serde_json::Value = serde_json::from_slice(&resp)
                        .map_err(|e| TestCaseError::fail(format!("{status} not JSON: {e}")))?;
                    let reason = v["error"].as_str().unwrap_or_default();
                    prop_assert!(
                        !reason.is_empty()
                            && reason
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b == b'_'),
                        "unstable reason {v}"
                    );
                }
                // gzip and deflate are inflated (random bytes then are unreadable); any other
                // coding is refused.
                if encoding.is_some_and(|e| !matches!(e, "identity" | "gzip" | "deflate"))
                    && method == "POST"
                    && path.starts_with("/s2s/event")
                    && !path.starts_with("/s2s/event/")
                    && status != 401
                {
                    prop_assert_eq!(status, 415, "compressed body accepted");
                }
                Ok(())
            },
        )
        .unwrap();
    // The server is still up and serving.
    let r = inlet
        .client()
        .post_json("/s2s/event", &key, &event("after"));
    assert_eq!(r.status, 200);
    assert!(!inlet.log.lock().unwrap().contains("panicked"));
    eprintln!(
        "hostile http: {} random requests, no 500, no panic",
        tried.into_inner()
    );
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_capped() {
    let inlet = Inlet::start_with(&[
        "--header-timeout-secs",
        "1",
        "--body-timeout-secs",
        "1",
        "--max-connections",
        "2",
    ]);
    let key = inlet.mint("default");
    let started = Instant::now();

    // Headers trickled: the connection is closed once the header timeout passes.
    let mut s = TcpStream::connect(inlet.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"POST /s2s/event HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.contains("408"), "{text}");

    // Body trickled: 408 request_timeout.
    let mut s = TcpStream::connect(inlet.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let head = format!(
        "POST /s2s/event HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 100\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("HTTP/1.1 408") && text.contains("request_timeout"),
        "{text}"
    );

    // Two idle connections fill the cap: a third is not served until one goes.
    let inlet2 = Inlet::start_with(&["--max-connections", "2"]);
    let key2 = inlet2.mint("default");
    let hold: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(inlet2.addr).unwrap())
        .collect();
    // Both are accepted (a request on each is answered) and stay open.
    let mut held = Vec::new();
    for mut h in hold {
        h.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        h.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut b = [0u8; 64];
        let n = h.read(&mut b).unwrap();
        assert!(String::from_utf8_lossy(&b[..n]).contains("200"));
        held.push(h);
    }
    let mut third = TcpStream::connect(inlet2.addr).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut b = [0u8; 64];
    let early = third.read(&mut b);
    assert!(
        early.is_err(),
        "a connection over the cap was served: {early:?}"
    );
    drop(held);
    third.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = Vec::new();
    third.read_to_end(&mut out).unwrap();
    assert!(String::from_utf8_lossy(&out).contains("200 OK"));
    let _ = key2;
}
