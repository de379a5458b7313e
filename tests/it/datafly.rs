//! Datafly signed server-side events against a running server: the spec's curl, Python and
//! Node signing code with only the URL and the secret changed; replay, tampering, wrong
//! secrets, rotation with a grace period, and secrets at rest.

use crate::support::*;
use inlet::auth::secrets::sign;
use serde_json::{Value, json};
use std::process::Command;

fn mint_secret(inlet: &Inlet, app: &str) -> String {
    let s = inlet
        .cli_ok(&["secrets", "mint", "--app", app, "--label", "backend"])
        .trim()
        .to_owned();
    assert!(
        s.len() == 51
            && s.starts_with("sk_")
            && s[3..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "stdout is the secret and only the secret: {s:?}"
    );
    s
}

/// Posts `body` to `/v1/events` signed with `secret` at time `ts`.
fn send(c: &mut Client, secret: &str, ts: u64, body: &str) -> Resp {
    let ts = ts.to_string();
    let sig = sign(secret, &ts, body.as_bytes());
    c.post(
        "/v1/events",
        &[
            ("Content-Type", "application/json"),
            ("X-Signature", &sig),
            ("X-Timestamp", &ts),
        ],
        body.as_bytes(),
    )
    .unwrap()
}

fn track(id: &str) -> String {
    json!({"type": "track", "event": "Order Completed", "userId": "user_1", "messageId": id})
        .to_string()
}

fn outcome(r: &Resp) -> (u16, Value) {
    (r.status, r.json())
}

fn ok() -> (u16, Value) {
    (200, json!({"success": true}))
}

fn refused(status: u16, reason: &str) -> (u16, Value) {
    (status, json!({"success": false, "error": reason}))
}

const SPEC_SECRET: &str = "sk_live_your_secret_key";
const SPEC_ENDPOINT: &str = "https://data.example.com/v1/events";

#[test]
fn the_specs_curl_python_and_node_examples_work_with_only_the_url_and_secret_changed() {
    let inlet = Inlet::start();
    let secret = mint_secret(&inlet, "default");
    let endpoint = inlet.url("/v1/events");
    let adapt = |code: &str| {
        code.replace(SPEC_SECRET, &secret)
            .replace(SPEC_ENDPOINT, &endpoint)
    };

    let curl = r#"SECRET_KEY="sk_live_your_secret_key"
TIMESTAMP=$(date +%s000)
BODY='{"type":"track","event":"Order Completed","userId":"user_98765","properties":{"order_id":"ORD-2026-1234","revenue":149.99,"currency":"USD"}}'
SIGNATURE=$(printf '%s.%s' "$TIMESTAMP" "$BODY" | openssl dgst -sha256 -hmac "$SECRET_KEY" | awk '{print $2}')
curl -X POST https://data.example.com/v1/events \
-H "Content-Type: application/json" \
-H "X-Signature: sha256=$SIGNATURE" \
-H "X-Timestamp: $TIMESTAMP" \
-d "$BODY""#;
    let out = Command::new("bash")
        .args(["-c", &adapt(curl)])
        .output()
        .expect("bash, openssl, curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"success":true}"#);

    let dir = tempfile::tempdir().unwrap();
    let python = r#"import hashlib
import hmac
import json
import time
import requests
SECRET_KEY = "sk_live_your_secret_key"
ENDPOINT = "https://data.example.com/v1/events"
def send_event(event: dict) -> dict:
    timestamp = str(int(time.time() * 1000))
    body = json.dumps(event, separators=(",", ":"))
    signature = hmac.new(
        SECRET_KEY.encode(),
        f"{timestamp}.{body}".encode(),
        hashlib.sha256,
    ).hexdigest()
    response = requests.post(
        ENDPOINT,
        headers={
            "Content-Type": "application/json",
            "X-Signature": f"sha256={signature}",
            "X-Timestamp": timestamp,
        },
        data=body,
    )
    return response.json()
send_event({
    "type": "track",
    "event": "Order Completed",
    "userId": "user_98765",
    "properties": {
        "order_id": "ORD-2026-1234",
        "revenue": 149.99,
        "currency": "USD",
    },
})
"#;
    let spec = dir.path().join("example.py");
    std::fs::write(&spec, adapt(python)).unwrap();
    // Prints what the server answered, leaving the example untouched.
    let runner = format!(
        "import requests, runpy\n\
         real = requests.post\n\
         def post(*a, **k):\n    r = real(*a, **k)\n    print(r.status_code, r.text)\n    return r\n\
         requests.post = post\n\
         runpy.run_path({:?})\n",
        spec.display().to_string()
    );
    let out = Command::new("python3")
        .args(["-c", &runner])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"200 {"success":true}"#
    );

    let node = r#"import crypto from "node:crypto";
const SECRET_KEY = "sk_live_your_secret_key";
const ENDPOINT = "https://data.example.com/v1/events";
async function sendEvent(event) {
const timestamp = Date.now().toString();
const body = JSON.stringify(event);
const signature = crypto
.createHmac("sha256", SECRET_KEY)
.update(`${timestamp}.${body}`)
.digest("hex");
const response = await fetch(ENDPOINT, {
method: "POST",
headers: {
"Content-Type": "application/json",
"X-Signature": `sha256=${signature}`,
"X-Timestamp": timestamp,
},
body,
});
return response.json();
}
await sendEvent({
type: "track",
event: "Order Completed",
userId: "user_98765",
properties: {
order_id: "ORD-2026-1234",
revenue: 149.99,
currency: "USD",
},
});
"#;
    let spec = dir.path().join("example.mjs");
    std::fs::write(&spec, adapt(node)).unwrap();
    // Prints what the server answered, then runs the example untouched.
    let wrap = dir.path().join("wrap.mjs");
    let script = format!(
        "const real = globalThis.fetch;\n\
         globalThis.fetch = async (...a) => {{\n\
           const r = await real(...a);\n\
           console.log(r.status, await r.clone().text());\n\
           return r;\n\
         }};\n\
         await import({:?});\n",
        format!("file://{}", spec.display())
    );
    std::fs::write(&wrap, script).unwrap();
    let out = Command::new("node").arg(&wrap).output().expect("node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"200 {"success":true}"#
    );

    let events = inlet.export();
    assert_eq!(events.len(), 3);
    for e in &events {
        assert_eq!(e["source"], "datafly");
        assert_eq!(e["event_name"], "Order Completed");
        assert_eq!(e["user_id"], "user_98765");
        assert_eq!(e["revenue"], 149.99);
        assert_eq!(e["currency"], "USD");
        assert_eq!(e["transaction_id"], "ORD-2026-1234");
        assert_eq!(e["props"]["type"], "track");
        assert_eq!(e["props"]["properties"]["order_id"], "ORD-2026-1234");
        assert_eq!(e["key_id"], 0, "signed, not keyed");
        assert_eq!(e["context"]["secret_id"], 1);
        // No timestamp in the message: the receive time.
        assert_eq!(e["event_ts_ms"], e["received_at_ms"]);
        let raw = inlet.cli_ok(&["audit", "get", e["audit_key"].as_str().unwrap()]);
        assert!(raw.starts_with(r#"{"type":"track""#), "{raw}");
    }
}

#[test]
fn signatures_and_the_time_window() {
    let inlet = Inlet::start();
    let secret = mint_secret(&inlet, "default");
    let mut c = inlet.client();
    let now = now_ms();
    let minute = 60_000;

    // Replays outside ±5 minutes: 403, and nothing stored.
    assert_eq!(
        outcome(&send(&mut c, &secret, now - 6 * minute, &track("old"))),
        refused(403, "timestamp_outside_window")
    );
    assert_eq!(
        outcome(&send(&mut c, &secret, now + 6 * minute, &track("ahead"))),
        refused(403, "timestamp_outside_window")
    );
    assert_eq!(
        outcome(&send(&mut c, &secret, now - 4 * minute, &track("recent"))),
        ok()
    );
    // An unsigned request learns nothing about the window: 401 first.
    assert_eq!(
        outcome(&send(&mut c, "sk_wrong", now - 6 * minute, &track("x"))),
        refused(401, "signature_invalid")
    );

    // Tampered body, altered timestamp, wrong secret, missing or malformed headers.
    let body = track("t1");
    let ts = now_ms().to_string();
    let sig = sign(&secret, &ts, body.as_bytes());
    let tampered = body.replace("user_1", "user_2");
    let post = |c: &mut Client, headers: &[(&str, &str)], body: &str| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        outcome(&c.post("/v1/events", &h, body.as_bytes()).unwrap())
    };
    assert_eq!(
        post(
            &mut c,
            &[("X-Signature", &sig), ("X-Timestamp", &ts)],
            &tampered
        ),
        refused(401, "signature_invalid")
    );
    let later = (now_ms() + 1).to_string();
    assert_eq!(
        post(
            &mut c,
            &[("X-Signature", &sig), ("X-Timestamp", &later)],
            &body
        ),
        refused(401, "signature_invalid")
    );
    let other = format!("sk_{}", "a".repeat(48));
    assert_eq!(
        outcome(&send(&mut c, &other, now_ms(), &body)),
        refused(401, "signature_invalid")
    );
    assert_eq!(
        post(&mut c, &[("X-Timestamp", &ts)], &body),
        refused(401, "signature_required")
    );
    assert_eq!(
        post(
            &mut c,
            &[("X-Signature", "sha256=zz"), ("X-Timestamp", &ts)],
            &body
        ),
        refused(401, "signature_invalid")
    );
    let upper = sig.to_uppercase().replace("SHA256=", "sha256=");
    assert_eq!(
        post(
            &mut c,
            &[("X-Signature", &upper), ("X-Timestamp", &ts)],
            &body
        ),
        ok(),
        "hex in either case"
    );
    assert_eq!(
        post(&mut c, &[("X-Signature", &sig)], &body),
        refused(401, "timestamp_required")
    );
    assert_eq!(
        post(
            &mut c,
            &[("X-Signature", &sig), ("X-Timestamp", "soon")],
            &body
        ),
        refused(401, "timestamp_required")
    );

    // The original, untouched, was accepted above (as the uppercase-hex copy); sending it
    // again is a duplicate of its messageId: 200 and stored once.
    assert_eq!(
        post(
            &mut c,
            &[("X-Signature", &sig), ("X-Timestamp", &ts)],
            &body
        ),
        ok()
    );
    let events = inlet.export();
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["recent", "t1"]);

    // Payload rules, signed.
    for (body, reason) in [
        (r#"{"event":"x","userId":"u"}"#, "type_required"),
        (r#"{"type":"alias","userId":"u"}"#, "type_invalid"),
        (r#"{"type":"track","userId":"u"}"#, "event_required"),
        (
            r#"{"type":"track","event":"x"}"#,
            "userId_or_anonymousId_required",
        ),
        (
            r#"{"type":"track","event":"x","userId":"u","timestamp":"2026-02-30T00:00:00Z"}"#,
            "timestamp_invalid",
        ),
        (r#"{"type":"track","event":"x","userId":"u""#, "bad_json"),
    ] {
        assert_eq!(
            outcome(&send(&mut c, &secret, now_ms(), body)),
            refused(400, reason),
            "{body}"
        );
    }
    let big = format!(
        r#"{{"type":"track","event":"x","userId":"u","pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    assert_eq!(
        outcome(&send(&mut c, &secret, now_ms(), &big)),
        refused(413, "body_too_large")
    );
    let r = c.get("/v1/events").unwrap();
    assert_eq!(outcome(&r), refused(405, "method_not_allowed"));

    // A timestamp in the message is the event time; identify and page are stored too.
    let body = r#"{"type":"identify","userId":"u9","anonymousId":"a9","traits":{"plan":"pro"},"timestamp":"2026-02-25T14:30:00.000Z","context":{"ip":"203.0.113.42","userAgent":"Mozilla/5.0"}}"#;
    assert_eq!(outcome(&send(&mut c, &secret, now_ms(), body)), ok());
    let e = inlet.export().pop().unwrap();
    assert_eq!(e["event_name"], "identify");
    assert_eq!(e["event_ts_ms"], 1_772_029_800_000u64);
    assert_eq!(e["anonymous_id"], "a9");
    assert_eq!(e["props"]["traits"], json!({"plan": "pro"}));
    assert_eq!(e["context"]["user_agent"], "Mozilla/5.0");
    assert_eq!(e["context"]["ip"], "203.0.113.42");
}

fn status_with(inlet: &Inlet, secret: &str) -> u16 {
    let body = json!({"type": "track", "event": "ping", "anonymousId": "a"}).to_string();
    send(&mut inlet.client(), secret, now_ms(), &body).status
}

fn states(inlet: &Inlet) -> Vec<(u64, String)> {
    parse_ndjson(&inlet.cli_ok(&["secrets", "list", "--json"]))
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().unwrap(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn rotation_keeps_both_secrets_valid_during_the_grace_period_only() {
    let mut inlet = Inlet::start();
    let s1 = mint_secret(&inlet, "default");
    assert_eq!(status_with(&inlet, &s1), 200);

    // A long grace: old and new both verify.
    let s2 = inlet
        .cli_ok(&["secrets", "rotate", "1", "--grace", "24h"])
        .trim()
        .to_owned();
    assert!(s2.starts_with("sk_") && s2 != s1);
    assert_eq!(status_with(&inlet, &s1), 200);
    assert_eq!(status_with(&inlet, &s2), 200);
    assert_eq!(
        states(&inlet),
        [(1, "expiring".into()), (2, "active".into())]
    );
    let table = inlet.cli_ok(&["secrets", "list"]);
    assert!(table.starts_with("ID  APP"), "{table}");
    assert!(
        !table.contains(&s1) && !table.contains(&s2),
        "never the secret"
    );
    let again = inlet.cli(&["secrets", "rotate", "1"]);
    assert!(
        !again.status.success(),
        "a rotated secret is not rotated twice"
    );

    // A short grace: the old one stops verifying when it ends; the new one goes on.
    let s3 = inlet
        .cli_ok(&["secrets", "rotate", "2", "--grace", "1s"])
        .trim()
        .to_owned();
    assert_eq!(status_with(&inlet, &s3), 200);
    wait_for("the grace period of secret 2 to end", || {
        status_with(&inlet, &s2) == 401
    });
    assert_eq!(status_with(&inlet, &s3), 200);
    assert_eq!(
        status_with(&inlet, &s1),
        200,
        "secret 1 is still in its 24h grace"
    );
    assert_eq!(states(&inlet)[1], (2, "expired".into()));

    // No grace: the old one stops at once.
    let s4 = inlet
        .cli_ok(&["secrets", "rotate", "3", "--grace", "0s"])
        .trim()
        .to_owned();
    assert_eq!(status_with(&inlet, &s3), 401);
    assert_eq!(status_with(&inlet, &s4), 200);

    // Revocation ends a grace period early.
    inlet.cli_ok(&["secrets", "revoke", "1"]);
    assert_eq!(status_with(&inlet, &s1), 401);
    let bad = inlet.cli(&["secrets", "rotate", "1", "--grace", "1w"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("duration"));

    // Secrets survive a restart (the sealing key is read back from the data dir).
    inlet.signal_and_wait("TERM");
    inlet.restart();
    assert_eq!(status_with(&inlet, &s4), 200);
    assert_eq!(status_with(&inlet, &s1), 401);
}

#[test]
fn secrets_are_never_stored_in_plaintext() {
    let mut inlet = Inlet::start();
    let served = mint_secret(&inlet, "default");
    let rotated = inlet.cli_ok(&["secrets", "rotate", "1"]).trim().to_owned();
    assert_eq!(status_with(&inlet, &rotated), 200);
    // Without a server: the CLI opens the database itself.
    inlet.signal_and_wait("TERM");
    let direct = mint_secret(&inlet, "default");
    for s in [&served, &rotated, &direct] {
        assert_eq!(
            files_contain(inlet.data(), s.as_bytes()),
            None,
            "{s} found on disk"
        );
        // Nor the hex of its bytes, in case a record stored it encoded.
        let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(files_contain(inlet.data(), hex.as_bytes()), None);
    }
    // Nor in what the server logged while minting, rotating and verifying with them.
    let log = inlet.log.lock().unwrap().clone();
    for s in [&served, &rotated] {
        assert!(!log.contains(s.as_str()), "{s} found in the server log");
        assert!(
            !log.contains(&s[3..]),
            "the hex of {s} found in the server log"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let key_file = inlet.data().join("secrets.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the sealing key is owner-only");
    inlet.restart();
    assert_eq!(status_with(&inlet, &direct), 200);
    assert_eq!(status_with(&inlet, &served), 200, "in its rotation grace");

    // The database copied next to another key reveals nothing and verifies nothing.
    inlet.signal_and_wait("TERM");
    let mut other = Inlet::start();
    other.kill();
    std::fs::copy(
        inlet.data().join("inlet.redb"),
        other.data().join("inlet.redb"),
    )
    .unwrap();
    let foreign = Inlet::start();
    mint_secret(&foreign, "default");
    std::fs::copy(
        foreign.data().join("secrets.key"),
        other.data().join("secrets.key"),
    )
    .unwrap();
    other.restart();
    assert_eq!(status_with(&other, &direct), 401);
    assert_eq!(status_with(&other, &served), 401);
}

#[test]
fn a_lost_sealing_key_is_reported_and_new_secrets_recover() {
    let mut inlet = Inlet::start();
    let old = mint_secret(&inlet, "default");
    inlet.signal_and_wait("TERM");
    std::fs::remove_file(inlet.data().join("secrets.key")).unwrap();
    inlet.restart();
    let body = json!({"type": "track", "event": "ping", "anonymousId": "a"}).to_string();
    let r = send(&mut inlet.client(), &old, now_ms(), &body);
    assert_eq!(outcome(&r), refused(503, "storage_unavailable"));
    assert!(r.header("retry-after").is_some());
    wait_for("the reason in the log", || {
        inlet.log.lock().unwrap().contains("secrets.key is missing")
    });
    // A new secret brings a new key file; the old secret no longer opens and is skipped.
    let new = mint_secret(&inlet, "default");
    assert_eq!(status_with(&inlet, &new), 200);
    assert_eq!(status_with(&inlet, &old), 401);
}

#[test]
fn secrets_through_the_admin_api() {
    use crate::admin::Admin;
    let inlet = Inlet::start();
    let mut admin = Admin::setup(&inlet);
    let r = admin.post(
        "/admin/api/secrets",
        &json!({"app": "default", "label": "panel"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let old = r.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["id"], 1);
    assert_eq!(status_with(&inlet, &old), 200);

    let r = admin.post("/admin/api/secrets/1/rotate", &json!({"grace": "24h"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let new = r.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["replaces"], 1);
    assert_eq!(status_with(&inlet, &old), 200, "in its grace period");
    assert_eq!(status_with(&inlet, &new), 200);
    let list = admin.get("/admin/api/secrets?app=default").json();
    let states: Vec<&str> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["expiring", "active"]);
    let text = list.to_string();
    assert!(
        !text.contains(&old) && !text.contains(&new),
        "never the secret"
    );

    let r = admin.post("/admin/api/secrets/2/rotate", &json!({"grace": "soon"}));
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin.post("/admin/api/secrets/1/rotate", &json!({}));
    assert_eq!(r.status, 409, "already rotated: {}", r.text());
    let r = admin.post("/admin/api/secrets/1/revoke", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(status_with(&inlet, &old), 401);
    let r = admin.post("/admin/api/secrets/9/revoke", &json!({}));
    assert_eq!(r.status, 404);
    let r = admin.post("/admin/api/secrets", &json!({"app": "ghost", "label": "x"}));
    assert_eq!(r.status, 404);
}

/// `inlet_events_duplicate_total` of the Datafly source, from `/metrics`.
fn datafly_duplicates(c: &mut Client) -> f64 {
    let r = c
        .request(
            "GET",
            "/metrics",
            &[("Authorization", "Bearer scrape-me")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .filter(|l| {
            l.starts_with("inlet_events_duplicate_total{") && l.contains("source=\"datafly\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn an_exact_retry_without_a_message_id_is_a_duplicate_and_stored_once() {
    let inlet = Inlet::start_with(&["--metrics-token", "scrape-me"]);
    let secret = mint_secret(&inlet, "default");
    let mut c = inlet.client();
    let body = json!({"type": "track", "event": "Order Completed", "userId": "user_1",
                      "properties": {"order_id": "ORD-1"}})
    .to_string();
    let ts = now_ms();
    assert_eq!(outcome(&send(&mut c, &secret, ts, &body)), ok());
    // The client timed out before the answer and sends the same signed request again.
    assert_eq!(outcome(&send(&mut c, &secret, ts, &body)), ok());
    assert_eq!(datafly_duplicates(&mut c), 1.0, "the retry is a duplicate");
    let events = inlet.export();
    assert_eq!(events.len(), 1, "stored once: {events:?}");
    let id = events[0]["event_id"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with("datafly_") && id.len() == "datafly_".len() + 32,
        "{id}"
    );

    // Not a retry: the same body at another time, another body at the same time, and the
    // same request signed with another secret of the app are new messages.
    let other_secret = mint_secret(&inlet, "default");
    let other_body = body.replace("ORD-1", "ORD-2");
    for (s, t, b) in [
        (&secret, ts + 1, &body),
        (&secret, ts, &other_body),
        (&other_secret, ts, &body),
    ] {
        assert_eq!(outcome(&send(&mut c, s, t, b)), ok());
    }
    assert_eq!(datafly_duplicates(&mut c), 1.0);
    let events = inlet.export();
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{events:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "four distinct ids");
    assert!(ids.iter().all(|i| i.starts_with("datafly_")));
    // The id names no secret.
    assert!(events.iter().all(|e| {
        let text = e.to_string();
        !text.contains(&secret) && !text.contains(&other_secret)
    }));
}
