//! The GameRebellion dialect against a running server: the spec's cURL and Python client with
//! only the host changed, every rule broken once, the per-key rate limit, sessions.

use crate::support::*;
use serde_json::{Value, json};

fn gr_headers(key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-API-Key", key.to_owned()),
        ("Content-Type", "application/json".to_owned()),
    ]
}

fn post(c: &mut Client, path: &str, key: &str, body: &[u8]) -> Resp {
    let h = gr_headers(key);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.post(path, &h, body).expect("request")
}

fn post_json(c: &mut Client, path: &str, key: &str, body: &Value) -> Resp {
    post(c, path, key, body.to_string().as_bytes())
}

/// Asserts status and `{"error": reason}`, and that the rate limit headers are there.
fn expect_error(r: &Resp, status: u16, reason: &str) {
    assert_eq!(
        (r.status, r.json()["error"].as_str().unwrap_or_default()),
        (status, reason),
        "{}",
        r.text()
    );
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(r.header(h).is_some(), "{h} missing on a {status}");
    }
}

#[test]
fn the_specs_curl_example_works_with_only_the_host_changed() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let script = r#"curl -sS -i -X POST URL/api/v1/event \
-H "X-API-Key: <YOUR_API_KEY>" \
-H "Content-Type: application/json" \
-d '{
"event_type": "feature_use",
"identifiers": {"player_id": "player-12345"},
"payload": {
"type": "test",
"name": "first_event",
"category": "setup"
}
}'"#
    .replace("URL", &inlet.url(""))
    .replace("<YOUR_API_KEY>", &key);
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash + curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("x-ratelimit-limit: 1000\r\n"), "{text}");
    assert!(lower.contains("x-ratelimit-remaining: 999\r\n"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["accepted"], 1);

    let events = inlet.export();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["source"], "gamerebellion");
    assert_eq!(e["event_name"], "feature_use");
    assert_eq!(e["event_id"], body["event_id"]);
    assert_eq!(e["ids"], json!({"player_id": "player-12345"}));
    assert_eq!(
        e["props"],
        json!({"type": "test", "name": "first_event", "category": "setup"})
    );
    assert!(e.get("install_uuid").is_none(), "no install_uuid: omitted");
    assert_eq!(e["event_ts_ms"], e["received_at_ms"]);
    // The raw body is kept under the audit key.
    let raw = inlet.cli_ok(&["audit", "get", body["audit_key"].as_str().unwrap()]);
    assert!(raw.contains("\"feature_use\""));
}

/// The spec's Python client, verbatim but for its default base URL, and its usage lines.
const PYTHON_CLIENT: &str = r#"
import os
import requests
import time

class GameRebellionS2SClient:
    def __init__(self, api_key: str, base_url: str = "https://sdk-api.gamerebellion.com"):
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers.update({
            "X-API-Key": api_key,
            "Content-Type": "application/json"
        })

    def track_event(self, event_type: str, payload: dict, identifiers: dict = None, utm: dict = None):
        body = {"event_type": event_type, "payload": payload}
        if identifiers:
            body["identifiers"] = identifiers
        if utm:
            body["utm"] = utm
        return self.session.post(f"{self.base_url}/api/v1/event", json=body)

    def track_batch(self, events: list):
        return self.session.post(f"{self.base_url}/api/v1/events", json={"events": events})

    def track_impression(self, campaign_id: str, **kwargs):
        return self.track_event("impression", {"campaign_id": campaign_id, **kwargs})

    def track_click(self, campaign_id: str, **kwargs):
        return self.track_event("click", {"campaign_id": campaign_id, **kwargs})

    def track_conversion(self, campaign_id: str, conversion_type: str, **kwargs):
        return self.track_event("conversion", {
            "campaign_id": campaign_id,
            "conversion_type": conversion_type,
            **kwargs
        })

# Usage — load credentials from environment, never hardcode
client = GameRebellionS2SClient(os.environ["GR_API_KEY"])

# (test only: print every response)
client.session.hooks["response"].append(lambda r, *a, **k: print(r.status_code, r.headers.get("X-RateLimit-Remaining")))

# Track a single event
client.track_event("transaction", {
    "amount": 4.99,
    "currency": "USD",
    "type": "iap",
    "status": "success"
}, identifiers={"player_id": "player-12345"})

# Track marketing attribution chain
client.track_impression("summer_2026", platform="facebook", creative_id="video_v3")
client.track_click("summer_2026", creative_id="video_v3")
client.track_conversion("summer_2026", "install")

# The batch method, with the spec's batch example's event types
client.track_batch([
    {"event_type": "impression", "payload": {"campaign_id": "c1"}},
    {"event_type": "click", "payload": {"campaign_id": "c1"}},
    {"event_type": "conversion", "payload": {"campaign_id": "c1"}},
])
"#;

#[test]
fn the_specs_python_client_works_with_only_the_host_changed() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let script = PYTHON_CLIENT.replace("https://sdk-api.gamerebellion.com", &inlet.url(""));
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .env("GR_API_KEY", &key)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        ["200 999", "200 998", "200 997", "200 996", "200 995"],
        "status and remaining requests of each call"
    );
    let events = inlet.export();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "transaction",
            "impression",
            "click",
            "conversion",
            "impression",
            "click",
            "conversion"
        ]
    );
    let tx = &events[0];
    assert_eq!(tx["revenue"], 4.99);
    assert_eq!(tx["currency"], "USD");
    assert_eq!(tx["ids"], json!({"player_id": "player-12345"}));
    assert_eq!(tx["props"], json!({"type": "iap", "status": "success"}));
    assert_eq!(
        events[1]["props"],
        json!({"campaign_id": "summer_2026", "platform": "facebook", "creative_id": "video_v3"})
    );
    assert_eq!(
        events[3]["props"],
        json!({"campaign_id": "summer_2026", "conversion_type": "install"})
    );
    assert!(events.iter().all(|e| e["source"] == "gamerebellion"));
}

#[test]
fn every_rule_broken_once() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let scoped = inlet
        .cli_ok(&[
            "keys", "mint", "--app", "default", "--label", "s", "--events", "purchase",
        ])
        .trim()
        .to_owned();
    let mut c = inlet.client();
    let ev = json!({"event_type": "level_up", "payload": {"level": 3}});

    // 401: no key, an unknown key, a malformed key.
    let r = c
        .post(
            "/api/v1/event",
            &[("Content-Type", "application/json")],
            ev.to_string().as_bytes(),
        )
        .unwrap();
    expect_error(&r, 401, "missing_api_key");
    expect_error(
        &post_json(
            &mut c,
            "/api/v1/event",
            &format!("srv_{}", "0".repeat(48)),
            &ev,
        ),
        401,
        "unknown_api_key",
    );
    expect_error(
        &post_json(&mut c, "/api/v1/event", "garbage", &ev),
        401,
        "unknown_api_key",
    );
    // A bearer token is not GameRebellion's credential.
    let r = c
        .post(
            "/api/v1/event",
            &[("Authorization", &format!("Bearer {key}"))],
            ev.to_string().as_bytes(),
        )
        .unwrap();
    expect_error(&r, 401, "missing_api_key");

    // 403: an event the key may not send.
    expect_error(
        &post_json(&mut c, "/api/v1/event", &scoped, &ev),
        403,
        "event_not_allowed_by_key",
    );

    // 400: body and field rules.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"payload": {}}), "event_type_required"),
        (json!({"event_type": ""}), "event_type_required"),
        (json!({"event_type": 5}), "event_type_invalid"),
        (
            json!({"event_type": "x".repeat(129)}),
            "event_name_too_long",
        ),
        (
            json!({"event_type": "x", "identifiers": ["p"]}),
            "identifiers_invalid",
        ),
        (
            json!({"event_type": "x", "identifiers": {"player_id": {"a": 1}}}),
            "identifiers_invalid",
        ),
        (
            json!({"event_type": "x", "identifiers": {"player_id": "p".repeat(257)}}),
            "ids_too_long",
        ),
        (json!({"event_type": "x", "utm": "facebook"}), "utm_invalid"),
        (
            json!({"event_type": "x", "payload": [1]}),
            "payload_invalid",
        ),
        (
            json!({"event_type": "x", "payload": {"amount": "4.99"}}),
            "amount_invalid",
        ),
        (
            json!({"event_type": "x", "payload": {"amount": 1, "currency": "DOLLARS"}}),
            "currency_invalid",
        ),
        (
            json!({"event_type": "x", "event_id": 7}),
            "event_id_invalid",
        ),
        (
            json!({"event_type": "x", "type": "a", "payload": {"type": "b"}}),
            "payload_invalid",
        ),
    ];
    for (body, reason) in cases {
        expect_error(
            &post_json(&mut c, "/api/v1/event", &key, &body),
            400,
            reason,
        );
    }
    expect_error(
        &post(&mut c, "/api/v1/event", &key, br#"{"event_type": "x""#),
        400,
        "bad_json",
    );
    expect_error(
        &post(
            &mut c,
            "/api/v1/event",
            &key,
            br#"{"event_type":"x","event_type":"y"}"#,
        ),
        400,
        "bad_json",
    );

    // Batches: at most 100, at least one.
    let many: Vec<Value> = (0..101).map(|_| ev.clone()).collect();
    expect_error(
        &post_json(&mut c, "/api/v1/events", &key, &json!({ "events": many })),
        400,
        "too_many_events",
    );
    expect_error(
        &post_json(&mut c, "/api/v1/events", &key, &json!({"events": []})),
        400,
        "events_required",
    );
    // Exactly 100 pass.
    let hundred: Vec<Value> = (0..100).map(|_| ev.clone()).collect();
    let r = post_json(
        &mut c,
        "/api/v1/events",
        &key,
        &json!({ "events": hundred }),
    );
    assert_eq!((r.status, r.json()["accepted"].clone()), (200, json!(100)));

    // 413: over the single-event body limit.
    let big = json!({"event_type": "x", "payload": {"pad": "x".repeat(70_000)}});
    expect_error(
        &post_json(&mut c, "/api/v1/event", &key, &big),
        413,
        "body_too_large",
    );

    // 405 and 404 on the dialect's paths.
    let r = c.get("/api/v1/event").unwrap();
    expect_error(&r, 405, "method_not_allowed");
    assert_eq!(c.get("/api/v1/sessions/start").unwrap().status, 405);
    expect_error(
        &post_json(&mut c, "/api/v1/sessions/pause", &key, &json!({})),
        404,
        "not_found",
    );

    assert_eq!(
        inlet.export().len(),
        100,
        "only the batch of 100 was stored"
    );

    // 403: a revoked key (told apart from an unknown one).
    let id = parse_ndjson(&inlet.cli_ok(&["keys", "list", "--json"]))[0]["id"].to_string();
    inlet.cli_ok(&["keys", "revoke", &id]);
    expect_error(
        &post_json(&mut c, "/api/v1/event", &key, &ev),
        403,
        "api_key_revoked",
    );
}

#[test]
fn batches_report_per_event_and_event_ids_dedupe() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    let body = json!({"events": [
        {"event_type": "impression", "event_id": "imp-1", "payload": {"campaign_id": "c"}},
        {"payload": {}},
        {"event_type": "click", "event_id": "clk-1", "utm": {"source": "fb"}},
    ]});
    let r = post_json(&mut c, "/api/v1/events", &key, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(
        (
            b["accepted"].clone(),
            b["duplicates"].clone(),
            b["rejected"].clone()
        ),
        (json!(2), json!(0), json!(1))
    );
    assert_eq!(
        b["results"][1],
        json!({"event_id": null, "status": "rejected", "reason": "event_type_required"})
    );
    // The same batch again: the events with ids are duplicates, nothing new is stored.
    let r = post_json(&mut c, "/api/v1/events", &key, &body);
    let b = r.json();
    assert_eq!(
        (r.status, b["accepted"].clone(), b["duplicates"].clone()),
        (200, json!(0), json!(2))
    );
    // A single event with a known id is a duplicate too.
    let r = post_json(
        &mut c,
        "/api/v1/event",
        &key,
        &json!({"event_type": "impression", "event_id": "imp-1"}),
    );
    assert_eq!(
        r.json(),
        json!({"event_id": "imp-1", "accepted": 0, "duplicate": true})
    );
    let events = inlet.export();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["context"], json!({"utm": {"source": "fb"}}));
    // A batch where nothing is stored answers with the first reason's status.
    let r = post_json(
        &mut c,
        "/api/v1/events",
        &key,
        &json!({"events": [{"event_type": 1}]}),
    );
    expect_error(&r, 400, "event_type_invalid");
}

#[test]
fn the_rate_limit_is_per_key_with_headers_on_every_response() {
    let inlet = Inlet::start_with(&["--default-rate-limit", "50"]);
    let limited = inlet
        .cli_ok(&[
            "keys",
            "mint",
            "--app",
            "default",
            "--label",
            "free",
            "--rate-limit",
            "3",
        ])
        .trim()
        .to_owned();
    let other = inlet.mint("default");
    let mut c = inlet.client();
    let ev = json!({"event_type": "tick"});
    // A window is a calendar minute: start the run well inside one.
    let now_secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    wait_for("not the last seconds of a minute", || now_secs() % 60 < 50);
    let runs: Vec<Resp> = (0..5)
        .map(|i| {
            if i == 2 {
                // Unknown keys in between count against nobody.
                let r = post_json(&mut c, "/api/v1/event", "srv_nope", &ev);
                assert_eq!(r.status, 401);
                assert_eq!(r.header("x-ratelimit-limit"), Some("50"));
            }
            post_json(&mut c, "/api/v1/event", &limited, &ev)
        })
        .collect();
    let seen: Vec<(u16, &str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r.status,
                r.header("x-ratelimit-limit").unwrap(),
                r.header("x-ratelimit-remaining").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (200, "3", "2"),
            (200, "3", "1"),
            (200, "3", "0"),
            (429, "3", "0"),
            (429, "3", "0")
        ]
    );
    expect_error(&runs[3], 429, "rate_limit_exceeded");
    let reset: u64 = runs[0]
        .header("x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        runs.iter()
            .all(|r| r.header("x-ratelimit-reset") == Some(&reset.to_string()))
    );
    let now = now_secs();
    assert!(
        reset > now && reset <= now + 60 && reset.is_multiple_of(60),
        "{reset} vs {now}"
    );
    let retry: u64 = runs[3].header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // Another key has its own window and the server's default limit.
    let r = post_json(&mut c, "/api/v1/event", &other, &ev);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("50"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("49"));
    // Refused requests stored nothing.
    assert_eq!(inlet.export().len(), 4);
}

#[test]
fn sessions_are_events_and_an_end_after_a_start_has_a_duration() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    let r = post_json(
        &mut c,
        "/api/v1/sessions/start",
        &key,
        &json!({"session_id": "sess-1", "identifiers": {"player_id": "p1"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["session_id"], "sess-1");
    // Wait until measurable time passed since the start was committed.
    let started = inlet.export()[0]["received_at_ms"].as_u64().unwrap();
    wait_for("a few ms to pass", || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            > started + 5
    });
    let r = post_json(
        &mut c,
        "/api/v1/sessions/stop",
        &key,
        &json!({"session_id": "sess-1"}),
    );
    assert_eq!(r.status, 200);
    let r = post_json(
        &mut c,
        "/api/v1/sessions/end",
        &key,
        &json!({"session_id": "sess-1", "identifiers": {"player_id": "p1"}, "payload": {"reason": "logout"}}),
    );
    assert_eq!(r.status, 200);
    let duration = r.json()["duration_ms"].as_i64().expect("a duration");
    let events = inlet.export();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["session_start", "session_stop", "session_end"]);
    let end = &events[2];
    assert_eq!(end["props"]["session_id"], "sess-1");
    assert_eq!(end["props"]["reason"], "logout");
    assert_eq!(end["props"]["duration_ms"], duration);
    assert_eq!(
        duration,
        end["received_at_ms"].as_i64().unwrap() - started as i64
    );
    assert!(duration >= 5);
    assert!(events[1]["props"]["duration_ms"].as_i64().is_some());
    assert!(events[0]["props"].get("duration_ms").is_none());

    // An end without a known start is stored without a duration; stop/end need an id.
    let r = post_json(
        &mut c,
        "/api/v1/sessions/end",
        &key,
        &json!({"session_id": "sess-1"}),
    );
    assert_eq!(r.status, 200);
    assert!(r.json().get("duration_ms").is_none(), "the session ended");
    expect_error(
        &post_json(&mut c, "/api/v1/sessions/end", &key, &json!({})),
        400,
        "session_id_required",
    );
    // A start without an id gets a generated one, and no body at all is fine.
    let r = post(&mut c, "/api/v1/sessions/start", &key, b"");
    assert_eq!(r.status, 200);
    let generated = r.json()["session_id"].as_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    let r = post_json(
        &mut c,
        "/api/v1/sessions/end",
        &key,
        &json!({"session_id": generated}),
    );
    assert!(r.json()["duration_ms"].as_i64().is_some());
}

/// Waits until the wall clock is past `ms` (ms since the epoch).
fn wait_past(ms: u64) {
    wait_for("time to pass", || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            > ms
    });
}

#[test]
fn sessions_by_identifiers_or_the_clients_own_id_survive_a_restart() {
    let mut inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    // Only identifiers, as for events: a generated session id.
    let r = post_json(
        &mut c,
        "/api/v1/sessions/start",
        &key,
        &json!({"identifiers": {"player_id": "p9", "device_id": "d9"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let generated = r.json()["session_id"].as_str().unwrap().to_owned();
    // The client's own id in `payload`, or in `identifiers`, is the session id.
    let r = post_json(
        &mut c,
        "/api/v1/sessions/start",
        &key,
        &json!({"identifiers": {"player_id": "p7"}, "payload": {"session_id": "client-s1", "map": "forest"}}),
    );
    assert_eq!(
        (r.status, r.json()["session_id"].clone()),
        (200, json!("client-s1"))
    );
    let r = post_json(
        &mut c,
        "/api/v1/sessions/start",
        &key,
        &json!({"identifiers": {"player_id": "p8", "session_id": "client-s2"}}),
    );
    assert_eq!(r.json()["session_id"], "client-s2");
    let started = inlet.export()[2]["received_at_ms"].as_u64().unwrap();

    // Acknowledged sessions outlive the process, even a SIGKILL.
    inlet.kill();
    inlet.restart();
    let mut c = inlet.client();
    wait_past(started + 5);

    // A stop naming no session finds the open one of the same identifiers (in any order) and
    // leaves it open; the end closes it.
    let ids = json!({"identifiers": {"device_id": "d9", "player_id": "p9"}});
    for path in ["/api/v1/sessions/stop", "/api/v1/sessions/end"] {
        let r = post_json(&mut c, path, &key, &ids);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["session_id"], generated.as_str(), "{path}");
        assert!(r.json()["duration_ms"].as_i64().unwrap() >= 5, "{path}");
    }
    // Nothing open any more for those identifiers: a stable 404.
    expect_error(
        &post_json(&mut c, "/api/v1/sessions/end", &key, &ids),
        404,
        "no_open_session",
    );
    // Other identifiers, or none at all, are no match.
    expect_error(
        &post_json(
            &mut c,
            "/api/v1/sessions/stop",
            &key,
            &json!({"identifiers": {"player_id": "p9"}}),
        ),
        404,
        "no_open_session",
    );
    expect_error(
        &post_json(
            &mut c,
            "/api/v1/sessions/end",
            &key,
            &json!({"payload": {}}),
        ),
        400,
        "session_id_required",
    );
    // The client's id in `payload` closes its session, with the duration kept over the
    // restart; its identifiers have nothing open afterwards.
    let r = post_json(
        &mut c,
        "/api/v1/sessions/end",
        &key,
        &json!({"payload": {"session_id": "client-s1"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["session_id"], "client-s1");
    assert!(r.json()["duration_ms"].as_i64().unwrap() >= 5);
    expect_error(
        &post_json(
            &mut c,
            "/api/v1/sessions/end",
            &key,
            &json!({"identifiers": {"player_id": "p7"}}),
        ),
        404,
        "no_open_session",
    );
    // Identifiers alone close a session the client started with its own id.
    let r = post_json(
        &mut c,
        "/api/v1/sessions/end",
        &key,
        &json!({"identifiers": {"player_id": "p8"}}),
    );
    assert_eq!(r.json()["session_id"], "client-s2");
    // Two different ids for one request: refused, not guessed.
    expect_error(
        &post_json(
            &mut c,
            "/api/v1/sessions/end",
            &key,
            &json!({"session_id": "a", "payload": {"session_id": "b"}}),
        ),
        400,
        "session_id_invalid",
    );

    // Two open sessions of the same identifiers: the latest closes first.
    for id in ["older", "newer"] {
        let r = post_json(
            &mut c,
            "/api/v1/sessions/start",
            &key,
            &json!({"session_id": id, "identifiers": {"player_id": "p5"}}),
        );
        assert_eq!(r.status, 200);
        let at = inlet.export().last().unwrap()["received_at_ms"]
            .as_u64()
            .unwrap();
        wait_past(at);
    }
    for id in ["newer", "older"] {
        let r = post_json(
            &mut c,
            "/api/v1/sessions/end",
            &key,
            &json!({"identifiers": {"player_id": "p5"}}),
        );
        assert_eq!(r.json()["session_id"], id);
    }

    // What was stored: every session event carries its session id in props, never as an
    // identifier, and the client's other payload fields stay.
    let events = inlet.export();
    let by_session = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["props"]["session_id"] == id)
            .map(|e| e["event_name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        by_session(&generated),
        ["session_start", "session_stop", "session_end"]
    );
    assert_eq!(by_session("client-s1"), ["session_start", "session_end"]);
    assert_eq!(by_session("client-s2"), ["session_start", "session_end"]);
    assert_eq!(events[1]["props"]["map"], "forest");
    assert_eq!(events[2]["ids"], json!({"player_id": "p8"}));
    let end = events
        .iter()
        .find(|e| {
            e["event_name"] == "session_end" && e["props"]["session_id"] == generated.as_str()
        })
        .unwrap();
    assert_eq!(end["ids"], json!({"device_id": "d9", "player_id": "p9"}));
    assert!(end["props"]["duration_ms"].as_i64().unwrap() >= 5);
}

/// `props` come back from `inlet export` in the sender's order: what is left of `payload`
/// (nested objects too), then the other top-level fields, each as written.
#[test]
fn export_gives_props_in_the_senders_order() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let body = br#"{"zeta":1,"event_type":"purchase","event_id":"gr-order-1",
        "payload":{"z":1,"amount":2.5,"a":{"y":1,"b":2},"currency":"EUR","m":"x","b":[{"z":0,"a":0}]},
        "identifiers":{"player_id":"p1"},"beta":2,"alpha":3}"#;
    let resp = post(&mut inlet.client(), "/api/v1/event", &key, body);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let export = inlet.cli_ok(&["export"]);
    let want = r#""props":{"z":1,"a":{"y":1,"b":2},"m":"x","b":[{"z":0,"a":0}],"zeta":1,"beta":2,"alpha":3}"#;
    assert!(
        export.contains(want),
        "props not in the sender's order:\n{export}"
    );
}
