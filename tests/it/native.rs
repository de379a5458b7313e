//! The native (Reflect) dialect against a running server: the spec's examples, every row of
//! its error table, bulk semantics, dedupe, quotas, concurrency.

use crate::support::*;
use serde_json::{Value, json};

fn today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

const SPEC_EXAMPLE: &str = r#"{
"event_id": "txn_abc123",
"event_name": "purchase",
"event_ts_ms": 1735999999000,
"install_uuid": "8f2a1c0e94d7423b8b53af7c9e21d630",
"user_id": "user_42",
"revenue": 9.99,
"currency": "USD",
"transaction_id": "txn_abc123",
"product_id": "sku_pro_pack",
"props": {
"channel": "web_checkout",
"ab_variant": "B"
}
}"#;

#[test]
fn spec_example_is_stored_with_every_field() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let auth = format!("Bearer {key}");
    let resp = inlet
        .client()
        .post(
            "/s2s/event",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            SPEC_EXAMPLE.as_bytes(),
        )
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let audit_key = format!("s2s/{}/txn_abc123.json", today());
    assert_eq!(
        resp.json(),
        json!({"accepted": 1, "event_id": "txn_abc123", "audit_key": audit_key})
    );

    let events = inlet.export();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    let expected = json!({
        "seq": 1, "tenant": "default", "app": "default", "key_id": 1, "source": "reflect",
        "event_id": "txn_abc123", "event_name": "purchase", "event_ts_ms": 1735999999000u64,
        "install_uuid": "8f2a1c0e94d7423b8b53af7c9e21d630", "user_id": "user_42",
        "revenue": 9.99, "currency": "USD", "transaction_id": "txn_abc123",
        "product_id": "sku_pro_pack",
        "props": {"channel": "web_checkout", "ab_variant": "B"},
        "audit_key": audit_key,
    });
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&e[k], v, "field {k} of {e}");
    }
    assert!(e["received_at_ms"].as_u64().unwrap() > 1_700_000_000_000);

    // The raw request is kept byte for byte under its audit key.
    let raw = inlet.cli(&["audit", "get", &audit_key]);
    assert!(raw.status.success());
    assert_eq!(raw.stdout, SPEC_EXAMPLE.as_bytes());
}

#[test]
fn the_specs_curl_example_works_with_only_the_url_changed() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    // The spec's snippet, verbatim but for the host.
    let script = r#"curl -sS -X POST URL/s2s/event \
-H "Authorization: Bearer $REFLECT_S2S_KEY" \
-H "Content-Type: application/json" \
-d '{
"event_name": "purchase",
"event_ts_ms": '"$(date +%s)000"',
"install_uuid": "8f2a1c0e94d7423b8b53af7c9e21d630",
"user_id": "user_42",
"revenue": 9.99,
"currency": "USD",
"transaction_id": "txn_abc"
}'"#
    .replace("URL", &inlet.url(""));
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("REFLECT_S2S_KEY", &key)
        .output()
        .expect("bash + curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["accepted"], 1);
    let id = body["event_id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "a generated id");
    assert_eq!(body["audit_key"], format!("s2s/{}/{id}.json", today()));
    let e = &inlet.export()[0];
    assert_eq!(e["event_id"], id);
    assert_eq!(e["transaction_id"], "txn_abc");
    assert_eq!(e["revenue"], 9.99);
    assert_eq!(e["user_id"], "user_42");
}

#[test]
fn the_specs_python_example_works_with_only_the_url_changed() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let script = r#"
import os, time, uuid, requests
def send(event_name: str, install_uuid: str, **fields):
    body = {
        "event_id": str(uuid.uuid4()).replace("-", ""),
        "event_name": event_name,
        "event_ts_ms": int(time.time() * 1000),
        "install_uuid": install_uuid,
        **fields,
    }
    r = requests.post(
        "URL/s2s/event",
        headers={"Authorization": f"Bearer {os.environ['REFLECT_S2S_KEY']}"},
        json=body, timeout=10,
    )
    r.raise_for_status()
    return r.json()
# After verifying an iOS receipt server-side:
import json
print(json.dumps(send("purchase",
     install_uuid="8f2a1c0e94d7423b8b53af7c9e21d630",
     user_id="user_42",
     revenue=9.99, currency="USD",
     transaction_id="apple_tx_xyz")))
"#
    .replace("URL", &inlet.url(""));
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .env("REFLECT_S2S_KEY", &key)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["accepted"], 1);
    let e = &inlet.export()[0];
    assert_eq!(e["event_id"], body["event_id"]);
    assert_eq!(e["transaction_id"], "apple_tx_xyz");
    assert_eq!(e["currency"], "USD");
}

fn check(
    c: &mut Client,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    status: u16,
    reason: &str,
) -> Resp {
    let r = c.post(path, headers, body).unwrap();
    assert_eq!(
        (r.status, error_of(&r).as_str()),
        (status, reason),
        "{}",
        r.text()
    );
    r
}

fn error_of(resp: &Resp) -> String {
    resp.json()["error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn every_row_of_the_error_table() {
    let inlet = Inlet::start();
    inlet.cli_ok(&["tenants", "add", "small", "--monthly-quota", "1"]);
    inlet.cli_ok(&["apps", "add", "capped", "--tenant", "small"]);
    let key = inlet.mint("default");
    let scoped = inlet.cli_ok(&[
        "keys",
        "mint",
        "--app",
        "default",
        "--label",
        "billing",
        "--events",
        "purchase,subscribe",
    ]);
    let scoped = scoped.trim();
    let capped = inlet.mint("capped");
    let mut c = inlet.client();
    let auth = format!("Bearer {key}");
    let h: &[(&str, &str)] = &[("Authorization", &auth)];

    check(
        &mut c,
        "/s2s/event",
        h,
        br#"{"event_name":"x","event_ts_ms":1}"#,
        400,
        "install_uuid_required",
    );
    check(
        &mut c,
        "/s2s/event",
        h,
        br#"{"event_name":"x","install_uuid":"i"}"#,
        400,
        "event_ts_ms_required",
    );
    check(
        &mut c,
        "/s2s/event",
        h,
        br#"{"event_ts_ms":1,"install_uuid":"i"}"#,
        400,
        "event_name_required",
    );
    check(
        &mut c,
        "/s2s/event",
        h,
        br#"{"event_name": "x""#,
        400,
        "bad_json",
    );
    check(&mut c, "/s2s/event", h, b"\xff\xfe", 400, "bad_json");
    let too_many = json!({"events": vec![event("x"); 1001]}).to_string();
    check(
        &mut c,
        "/s2s/events/bulk",
        h,
        too_many.as_bytes(),
        400,
        "too_many_events",
    );

    check(
        &mut c,
        "/s2s/event",
        &[],
        SPEC_EXAMPLE.as_bytes(),
        401,
        "missing_bearer_token",
    );
    check(
        &mut c,
        "/s2s/event",
        &[("Authorization", "Basic abc")],
        SPEC_EXAMPLE.as_bytes(),
        401,
        "missing_bearer_token",
    );
    let unknown = format!("Bearer srv_{}", "0".repeat(48));
    check(
        &mut c,
        "/s2s/event",
        &[("Authorization", &unknown)],
        SPEC_EXAMPLE.as_bytes(),
        401,
        "unknown_or_revoked_key",
    );
    check(
        &mut c,
        "/s2s/event",
        &[("Authorization", "Bearer nonsense")],
        SPEC_EXAMPLE.as_bytes(),
        401,
        "unknown_or_revoked_key",
    );

    let scoped_auth = format!("Bearer {scoped}");
    let level = json!({"event_name": "level_up", "event_ts_ms": 1, "install_uuid": "i"});
    check(
        &mut c,
        "/s2s/event",
        &[("Authorization", &scoped_auth)],
        level.to_string().as_bytes(),
        403,
        "event_not_allowed_by_key",
    );
    let purchase = json!({"event_name": "purchase", "event_ts_ms": 1, "install_uuid": "i"});
    let r = c
        .post(
            "/s2s/event",
            &[("Authorization", &scoped_auth)],
            purchase.to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "an allowed event passes the scoped key");

    let mut big = event("big");
    big["props"] = json!({"pad": "x".repeat(70_000)});
    check(
        &mut c,
        "/s2s/event",
        h,
        big.to_string().as_bytes(),
        413,
        "body_too_large",
    );

    let capped_auth = format!("Bearer {capped}");
    let r = c
        .post(
            "/s2s/event",
            &[("Authorization", &capped_auth)],
            event("c1").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let r = check(
        &mut c,
        "/s2s/event",
        &[("Authorization", &capped_auth)],
        event("c2").to_string().as_bytes(),
        429,
        "cap_exceeded",
    );
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(
        retry > 0 && retry <= 31 * 86_400,
        "until the month turns: {retry}"
    );
    // A duplicate of an accepted event is still a duplicate, not over quota.
    let r = c
        .post(
            "/s2s/event",
            &[("Authorization", &capped_auth)],
            event("c1").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(
        (r.status, r.json()["duplicate"].clone()),
        (200, json!(true))
    );
}

#[test]
fn field_limits_have_clear_reasons() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    let cases = [
        (
            json!({"event_name": "x".repeat(129)}),
            "event_name_too_long",
        ),
        (json!({"user_id": "u".repeat(257)}), "user_id_too_long"),
        (json!({"event_id": "e".repeat(257)}), "event_id_too_long"),
        (json!({"event_ts_ms": 1.5}), "event_ts_ms_invalid"),
        (
            json!({"event_ts_ms": "1735999999000"}),
            "event_ts_ms_invalid",
        ),
        (json!({"revenue": "9.99"}), "revenue_invalid"),
        (json!({"currency": "DOLLARS"}), "currency_invalid"),
    ];
    for (patch, reason) in cases {
        let mut body = event("limits");
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = c.post_json("/s2s/event", &key, &body);
        assert_eq!((r.status, error_of(&r)), (400, reason.to_owned()), "{body}");
    }
    assert!(inlet.export().is_empty());
}

#[test]
fn bulk_accepts_a_thousand_reports_per_event_and_is_idempotent() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    let events: Vec<Value> = (0..1000).map(|i| event(&format!("b{i}"))).collect();
    let r = c.post_json("/s2s/events/bulk", &key, &json!({ "events": events }));
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(
        (body["accepted"].clone(), body["rejected"].clone()),
        (json!(1000), json!(0))
    );
    assert!(
        body["audit_key"]
            .as_str()
            .unwrap()
            .starts_with(&format!("s2s/bulk/{}/", today()))
    );
    let used = || {
        let rows = parse_ndjson(&inlet.cli_ok(&["tenants", "list", "--json"]));
        rows[0]["used_this_month"].as_u64().unwrap()
    };
    assert_eq!(used(), 1000);

    // Resubmitting stores nothing twice and leaves the quota counter alone.
    let r = c.post_json("/s2s/events/bulk", &key, &json!({ "events": events }));
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["duplicates"], 1000);
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "duplicate")
    );
    assert_eq!(inlet.export().len(), 1000);
    assert_eq!(used(), 1000);

    // Some bad events: 200, and a reason for each bad one.
    let mixed = json!({"events": [
        event("m1"),
        {"event_id": "m2", "event_ts_ms": 1, "install_uuid": "i"},
        {"event_id": "m3", "event_name": "x", "install_uuid": "i"},
        "not an object",
        event("b0"),
    ]});
    let r = c.post_json("/s2s/events/bulk", &key, &mixed);
    assert_eq!(r.status, 200);
    let b = r.json();
    // A missing field as the spec's bulk example names it, and which field.
    assert_eq!(
        b["results"],
        json!([
            {"event_id": "m1", "status": "accepted"},
            {"event_id": "m2", "status": "rejected", "reason": "missing_required_fields",
             "field": "event_name"},
            {"event_id": "m3", "status": "rejected", "reason": "missing_required_fields",
             "field": "event_ts_ms"},
            {"event_id": null, "status": "rejected", "reason": "bad_json"},
            {"event_id": "b0", "status": "duplicate"},
        ])
    );
    assert_eq!(
        (b["accepted"].clone(), b["rejected"].clone()),
        (json!(1), json!(3))
    );

    // Nothing accepted at all: the first reason is the request's status, and its `error` the
    // error table's reason.
    let r = c.post_json(
        "/s2s/events/bulk",
        &key,
        &json!({"events": [{"event_name": "x"}]}),
    );
    assert_eq!(
        (r.status, error_of(&r)),
        (400, "event_ts_ms_required".to_owned())
    );
    assert_eq!(r.json()["results"][0]["reason"], "missing_required_fields");
}

#[test]
fn bulk_names_a_missing_field_as_the_specs_example_and_single_keeps_the_table() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    let mut no_uuid = event("n1");
    no_uuid
        .as_object_mut()
        .unwrap()
        .shift_remove("install_uuid");
    let mut null_ts = event("n2");
    null_ts["event_ts_ms"] = Value::Null;
    let mut bad_ts = event("n3");
    bad_ts["event_ts_ms"] = json!("soon");
    let r = c.post_json(
        "/s2s/events/bulk",
        &key,
        &json!({"events": [event("ok1"), no_uuid, null_ts, bad_ts]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(
        (b["accepted"].clone(), b["rejected"].clone()),
        (json!(1), json!(3))
    );
    assert_eq!(
        b["results"],
        json!([
            {"event_id": "ok1", "status": "accepted"},
            {"event_id": "n1", "status": "rejected", "reason": "missing_required_fields",
             "field": "install_uuid"},
            {"event_id": "n2", "status": "rejected", "reason": "missing_required_fields",
             "field": "event_ts_ms"},
            // A field that is there but wrong keeps its own reason.
            {"event_id": "n3", "status": "rejected", "reason": "event_ts_ms_invalid"},
        ])
    );
    // The single endpoint answers the error table's per-field reason.
    let mut single = event("s1");
    single.as_object_mut().unwrap().shift_remove("install_uuid");
    let r = c.post_json("/s2s/event", &key, &single);
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "install_uuid_required"}))
    );
    assert_eq!(inlet.export().len(), 1);
}

#[test]
fn a_bulk_that_crosses_the_cap_accepts_up_to_it() {
    let inlet = Inlet::start();
    inlet.cli_ok(&["tenants", "add", "t", "--monthly-quota", "5"]);
    inlet.cli_ok(&["apps", "add", "a", "--tenant", "t"]);
    let key = inlet.mint("a");
    let mut c = inlet.client();
    let events: Vec<Value> = (0..8).map(|i| event(&format!("q{i}"))).collect();
    let r = c.post_json("/s2s/events/bulk", &key, &json!({ "events": events }));
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(
        (b["accepted"].clone(), b["rejected"].clone()),
        (json!(5), json!(3))
    );
    for (i, res) in b["results"].as_array().unwrap().iter().enumerate() {
        let want = if i < 5 { "accepted" } else { "rejected" };
        assert_eq!(res["status"], want);
        if i >= 5 {
            assert_eq!(res["reason"], "cap_exceeded");
        }
    }
    // Entirely over the cap: 429 with Retry-After.
    let r = c.post_json("/s2s/events/bulk", &key, &json!({"events": [event("q9")]}));
    assert_eq!((r.status, error_of(&r)), (429, "cap_exceeded".to_owned()));
    assert!(r.header("retry-after").is_some());
    // Raising the quota takes effect at once.
    inlet.cli_ok(&["tenants", "set-quota", "t", "0"]);
    let r = c.post_json("/s2s/events/bulk", &key, &json!({"events": [event("q9")]}));
    assert_eq!(r.status, 200);
    assert_eq!(inlet.export().len(), 6);
}

#[test]
fn concurrent_clients_land_exactly_once_each() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let (clients, per) = (64, 500);
    std::thread::scope(|s| {
        for t in 0..clients {
            let (inlet, key) = (&inlet, &key);
            s.spawn(move || {
                let mut c = inlet.client();
                for i in 0..per {
                    let r = c.post_json("/s2s/event", key, &event(&format!("c{t}-{i}")));
                    assert_eq!(r.status, 200, "{}", r.text());
                    assert_eq!(r.json()["accepted"], 1);
                }
            });
        }
    });
    let events = inlet.export();
    assert_eq!(events.len(), clients * per);
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), clients * per);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=(clients * per) as u64).collect::<Vec<_>>(),
        "contiguous log"
    );
    let rows = parse_ndjson(&inlet.cli_ok(&["tenants", "list", "--json"]));
    assert_eq!(rows[0]["used_this_month"], (clients * per) as u64);
}

#[test]
fn revocation_and_storage_of_keys() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    assert_eq!(c.post_json("/s2s/event", &key, &event("r1")).status, 200);
    let list = inlet.cli_ok(&["keys", "list", "--json"]);
    let id = parse_ndjson(&list)[0]["id"].to_string();
    assert!(!list.contains(&key[4..]), "keys list never shows the key");
    inlet.cli_ok(&["keys", "revoke", &id]);
    let r = c.post_json("/s2s/event", &key, &event("r2"));
    assert_eq!(
        (r.status, error_of(&r)),
        (401, "unknown_or_revoked_key".to_owned())
    );
    let listed = parse_ndjson(&inlet.cli_ok(&["keys", "list", "--json"]));
    assert!(listed[0]["revoked_ms"].is_u64() && listed[0]["last_used_ms"].is_u64());
    assert_eq!(
        files_contain(inlet.data(), key.as_bytes()),
        None,
        "the key is on disk in plaintext"
    );
    assert_eq!(files_contain(inlet.data(), &key.as_bytes()[4..]), None);
}

#[test]
fn router_and_transport_edges() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    assert_eq!(c.get("/healthz").unwrap().status, 200);
    assert_eq!(c.get("/readyz").unwrap().status, 200);
    assert_eq!(c.get("/nope").unwrap().status, 404);
    let r = c.get("/s2s/event").unwrap();
    assert_eq!(
        (r.status, error_of(&r)),
        (405, "method_not_allowed".to_owned())
    );
    let auth = format!("Bearer {key}");
    let r = c
        .post(
            "/s2s/event",
            &[("Authorization", &auth), ("Content-Encoding", "br")],
            b"\x1f\x8b",
        )
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r)),
        (415, "unsupported_content_encoding".to_owned())
    );
    // A gzip body that ends inside its header cannot be read.
    let r = c
        .post(
            "/s2s/event",
            &[("Authorization", &auth), ("Content-Encoding", "gzip")],
            b"\x1f\x8b",
        )
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r)),
        (400, "body_unreadable".to_owned())
    );
    // A declared length over the limit is refused before the body is read.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(inlet.addr).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(raw, "POST /s2s/events/bulk HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 99999999\r\n\r\n").unwrap();
    let mut answer = [0u8; 12];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
}

/// `props` come back from `inlet export` as the sender wrote them: the `props` object's keys
/// in their order (nested objects too), then the unknown top-level fields in theirs, though
/// the known fields sit between them. The order is checked on the exported line's text.
#[test]
fn export_gives_props_in_the_senders_order() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let auth = format!("Bearer {key}");
    let event = |id: &str| {
        format!(
            r#"{{"zeta":1,"event_id":"{id}","event_name":"purchase","alpha":{{"z":1,"a":[{{"y":1,"b":2}}]}},
            "event_ts_ms":1735999999000,"mid":"m","install_uuid":"i1",
            "props":{{"z":"first","a":{{"zz":1,"aa":2}},"m":3,"b":null}},
            "beta":true,"currency":"EUR","omega":-0.5}}"#
        )
    };
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let mut client = inlet.client();
    let single = client
        .post("/s2s/event", &headers, event("order-1").as_bytes())
        .unwrap();
    assert_eq!(single.status, 200, "{}", single.text());
    let bulk = format!(r#"{{"events":[{}]}}"#, event("order-2"));
    let bulk = client
        .post("/s2s/events/bulk", &headers, bulk.as_bytes())
        .unwrap();
    assert_eq!(bulk.status, 200, "{}", bulk.text());

    let want = r#""props":{"z":"first","a":{"zz":1,"aa":2},"m":3,"b":null,"zeta":1,"alpha":{"z":1,"a":[{"y":1,"b":2}]},"mid":"m","beta":true,"omega":-0.5}"#;
    let export = inlet.cli_ok(&["export"]);
    let lines: Vec<&str> = export.lines().collect();
    assert_eq!(lines.len(), 2, "{export}");
    for line in lines {
        assert!(
            line.contains(want),
            "props not in the sender's order:\n{line}"
        );
    }
}
