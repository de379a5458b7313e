//! Quarantine and replay against a running server, through two dialects: refused events
//! are kept (the native bulk endpoint's own items, Adjust's parameters), listed by reason,
//! replayed after the fix and stored once however often they are replayed; dry runs keep
//! nothing; a revoked key's events are refused on replay; the bounds drop the oldest.

use crate::support::*;
use serde_json::{Value, json};

fn list(inlet: &Inlet, extra: &[&str]) -> Value {
    let mut args = vec!["quarantine", "list", "--app", "default", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&inlet.cli_ok(&args)).expect("quarantine list --json")
}

fn held(inlet: &Inlet) -> u64 {
    list(inlet, &[])["held"].as_u64().unwrap()
}

fn replay(inlet: &Inlet, extra: &[&str]) -> Value {
    let mut args = vec!["quarantine", "replay", "--app", "default", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&inlet.cli_ok(&args)).expect("quarantine replay --json")
}

fn named(ev: &str, id: &str) -> Value {
    let mut e = event(id);
    e["event_name"] = json!(ev);
    e
}

/// Stored events with this id.
fn stored(inlet: &Inlet, id: &str) -> usize {
    inlet
        .export()
        .iter()
        .filter(|e| e["event_id"] == id)
        .count()
}

fn key_id(inlet: &Inlet) -> String {
    let keys = parse_ndjson(&inlet.cli_ok(&["keys", "list", "--json"]));
    keys.last().unwrap()["id"].to_string()
}

#[test]
fn reflect_bulk_refusals_are_kept_replayed_after_the_fix_and_stored_once() {
    let inlet = Inlet::start();
    let key = inlet
        .cli_ok(&[
            "keys", "mint", "--app", "default", "--label", "t", "--events", "purchase",
        ])
        .trim()
        .to_owned();
    let id = key_id(&inlet);
    inlet.cli_ok(&["tenants", "set-quota", "default", "2"]);
    let mut c = inlet.client();
    // A dry run keeps nothing, whatever it would be refused for.
    let r = c
        .post(
            "/s2s/events/bulk",
            &[
                ("Authorization", &format!("Bearer {key}")),
                ("Content-Type", "application/json"),
                ("X-Inlet-Dry-Run", "1"),
            ],
            json!({"events": [named("level_up", "dry1")]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    // One accepted, one not allowed (with its key in the item: never kept), two over quota.
    let mut secret = named("level_up", "n1");
    secret["props"] = json!({ "note": key });
    let body = json!({"events": [
        event("a1"), secret, event("a2"), event("q1"), event("q2")
    ]});
    let r = c.post_json("/s2s/events/bulk", &key, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].clone();
    assert_eq!(results[1]["reason"], "event_not_allowed_by_key");
    assert_eq!(results[3]["reason"], "cap_exceeded");
    assert_eq!(results[4]["reason"], "cap_exceeded");
    wait_for("three events quarantined", || held(&inlet) == 3);
    let doc = list(&inlet, &[]);
    assert_eq!(
        doc["reasons"],
        json!([
            {"reason": "cap_exceeded", "count": 2},
            {"reason": "event_not_allowed_by_key", "count": 1}
        ])
    );
    let events = doc["events"].as_array().unwrap();
    let n1 = events.iter().find(|e| e["event_id"] == "n1").unwrap();
    assert_eq!(n1["event_name"], "level_up");
    assert_eq!(n1["source"], "reflect");
    assert_eq!(n1["key_id"].to_string(), id);
    // The item's own bytes, not the whole request; its key taken out.
    let raw: Value = serde_json::from_str(n1["raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw["event_id"], "n1");
    assert!(!n1["raw"].as_str().unwrap().contains(&key));
    assert!(files_contain(inlet.data(), key.as_bytes()).is_none());
    assert!(!doc.to_string().contains("dry1"));
    // The receipt says so.
    let receipt: Value =
        serde_json::from_str(&inlet.cli_ok(&["receipt", "default", "q1", "--json"])).unwrap();
    assert_eq!(receipt["status"], "quarantined");
    assert_eq!(receipt["quarantined"]["reason"], "cap_exceeded");

    // Replayed before the fix: still refused, still held.
    let r = replay(&inlet, &["--reason", "cap_exceeded"]);
    assert_eq!(r["released"], 0, "{r}");
    assert_eq!(r["results"][0]["reason"], "cap_exceeded");
    assert_eq!(held(&inlet), 3);

    // The fixes: the quota raised, the event allowed.
    inlet.cli_ok(&["tenants", "set-quota", "default", "100"]);
    let r = replay(&inlet, &["--reason", "cap_exceeded"]);
    assert_eq!(
        (r["replayed"].as_u64(), r["released"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    assert_eq!(r["results"][0]["outcome"], "accepted");
    // The CLI checks names as the API does.
    let long = "x".repeat(129);
    let out = inlet.cli(&["keys", "allow", &id, "--events", &long]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("longer than 128"));
    inlet.cli_ok(&["keys", "allow", &id, "--events", "purchase,level_up"]);
    let r = replay(&inlet, &["--id", "n1"]);
    assert_eq!(r["results"][0]["outcome"], "accepted", "{r}");
    assert_eq!(held(&inlet), 0);
    for id in ["a1", "a2", "q1", "q2", "n1"] {
        assert_eq!(stored(&inlet, id), 1, "{id}");
    }
    let receipt: Value =
        serde_json::from_str(&inlet.cli_ok(&["receipt", "default", "q1", "--json"])).unwrap();
    assert_eq!(receipt["status"], "accepted");

    // The sender retries what was refused: stored already, answered as duplicates; a
    // second refusal of an id kept again and replayed again stores nothing twice.
    inlet.cli_ok(&["tenants", "set-quota", "default", "1"]);
    let r = c.post_json(
        "/s2s/events/bulk",
        &key,
        &json!({"events": [event("q1"), event("z1")]}),
    );
    assert_eq!(
        r.json()["results"][0]["status"],
        "duplicate",
        "{}",
        r.text()
    );
    wait_for("z1 quarantined", || held(&inlet) == 1);
    inlet.cli_ok(&["tenants", "set-quota", "default", "0"]);
    assert_eq!(replay(&inlet, &["--id", "z1"])["released"], 1);
    assert_eq!(replay(&inlet, &["--id", "z1"])["replayed"], 0);
    assert_eq!(stored(&inlet, "z1"), 1);
}

#[test]
fn a_replay_twice_stores_once_and_a_revoked_keys_events_are_refused() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    inlet.cli_ok(&["tenants", "set-quota", "default", "1"]);
    let mut c = inlet.client();
    for id in ["e1", "e2", "e3"] {
        c.post_json("/s2s/event", &key, &event(id));
    }
    wait_for("two events quarantined", || held(&inlet) == 2);
    inlet.cli_ok(&["tenants", "set-quota", "default", "0"]);
    // Two replays at once: the dedupe stores each event once.
    let a = std::thread::spawn({
        let data = inlet.data().to_owned();
        move || {
            cli_ok(
                &data,
                &["quarantine", "replay", "--app", "default", "--id", "e2"],
            )
        }
    });
    let b = inlet.cli_ok(&["quarantine", "replay", "--app", "default", "--id", "e2"]);
    let a = a.join().unwrap();
    assert!(format!("{a}{b}").contains("e2 accepted"), "{a}\n{b}");
    assert_eq!(stored(&inlet, "e2"), 1);
    // e3's key is revoked: its replay is refused, and it stays.
    inlet.cli_ok(&["keys", "revoke", &key_id(&inlet)]);
    let r = replay(&inlet, &["--reason", "cap_exceeded"]);
    assert_eq!(r["results"][0]["event_id"], "e3", "{r}");
    assert_eq!(r["results"][0]["reason"], "key_revoked");
    assert_eq!(r["released"], 0);
    assert_eq!(stored(&inlet, "e3"), 0);
    assert_eq!(held(&inlet), 1);
    let out = inlet.cli_ok(&[
        "quarantine",
        "drop",
        "--app",
        "default",
        "--reason",
        "cap_exceeded",
    ]);
    assert!(out.contains("1 quarantined events dropped"), "{out}");
    assert_eq!(held(&inlet), 0);
}

#[test]
fn the_bounds_drop_the_oldest_and_count_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("inlet.toml");
    std::fs::write(&config, "[quarantine]\nmax_events = 2\n").unwrap();
    let inlet = Inlet::start_with(&["--config", config.to_str().unwrap()]);
    let shown = inlet.cli_ok(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(
        shown.contains("[quarantine]") && shown.contains("max_events = 2"),
        "{shown}"
    );
    let key = inlet
        .cli_ok(&[
            "keys", "mint", "--app", "default", "--label", "t", "--events", "x",
        ])
        .trim()
        .to_owned();
    let mut c = inlet.client();
    for id in ["o1", "o2", "o3", "o4"] {
        let r = c.post_json("/s2s/event", &key, &event(id));
        assert_eq!(r.status, 403, "{}", r.text());
    }
    wait_for("the bounds hold", || list(&inlet, &[])["dropped"] == 2);
    let doc = list(&inlet, &[]);
    let ids: Vec<&str> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["o3", "o4"]);
    let metrics = c.get("/metrics").unwrap().text();
    assert!(
        metrics.contains(r#"inlet_quarantine_dropped_total{app="default"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"inlet_quarantine_held{app="default"} 2"#),
        "{metrics}"
    );
}

const APP_TOKEN: &str = "4w565xzmb54d";
const IDFA: &str = "D2CADB5F-410F-4963-AC0C-2A78534BDF1E";

#[test]
fn an_unknown_adjust_event_token_is_kept_and_replayed_once_mapped() {
    let inlet = Inlet::start();
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-app-token",
        APP_TOKEN,
    ]);
    inlet.cli_ok(&["apps", "adjust-event", "default", "known1", "purchase"]);
    let key = inlet.mint("default");
    let auth = format!("Bearer {key}");
    let mut c = inlet.client();
    let secs = now_ms() / 1000;
    let query = |token: &str| {
        format!(
            "/event?s2s=1&app_token={APP_TOKEN}&event_token={token}&idfa={IDFA}&created_at_unix={secs}"
        )
    };
    // A dry run keeps nothing.
    let r = c
        .request(
            "GET",
            &format!("{}&inlet_dry_run=1", query("new001")),
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let r = c
        .request("GET", &query("new001"), &[("Authorization", &auth)], b"")
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    wait_for("the event quarantined", || held(&inlet) == 1);
    let doc = list(&inlet, &["--reason", "event_token_invalid"]);
    let e = &doc["events"][0];
    assert_eq!(
        (e["source"].as_str(), e["event_name"].as_str()),
        (Some("adjust"), Some("new001"))
    );
    assert!(e["raw"].as_str().unwrap().contains("event_token=new001"));
    assert!(!e["raw"].as_str().unwrap().contains(&key));
    let event_id = e["event_id"].as_str().unwrap().to_owned();
    assert!(event_id.starts_with("adj_"), "{event_id}");

    // Not mapped yet: refused again, held.
    let r = replay(&inlet, &["--reason", "event_token_invalid"]);
    assert_eq!(r["released"], 0, "{r}");
    inlet.cli_ok(&["apps", "adjust-event", "default", "new001", "level_up"]);
    let r = replay(&inlet, &["--reason", "event_token_invalid"]);
    assert_eq!(r["results"][0]["outcome"], "accepted", "{r}");
    assert_eq!(held(&inlet), 0);
    // The sender's retry now is a duplicate of the replayed event: stored once.
    let r = c
        .request("GET", &query("new001"), &[("Authorization", &auth)], b"")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let events: Vec<Value> = inlet
        .export()
        .into_iter()
        .filter(|e| e["event_id"] == event_id.as_str())
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_name"], "level_up");
    assert_eq!(events[0]["source"], "adjust");
}

/// Mints a key of app `default` that may send only `events`; its plaintext and id.
fn restricted(inlet: &Inlet, events: &str) -> (String, String) {
    let key = inlet
        .cli_ok(&[
            "keys", "mint", "--app", "default", "--label", "r", "--events", events,
        ])
        .trim()
        .to_owned();
    (key, key_id(inlet))
}

fn held_event<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == id)
        .unwrap_or_else(|| panic!("{id} held: {doc}"))
}

fn raw_of(doc: &Value, id: &str) -> Value {
    serde_json::from_str(held_event(doc, id)["raw"].as_str().unwrap()).unwrap()
}

#[test]
fn gamerebellion_events_batch_items_and_sessions_are_kept_and_replayed_once() {
    let inlet = Inlet::start();
    let (key, id) = restricted(&inlet, "purchase");
    let mut c = inlet.client();
    let mut gr = |path: &str, body: &Value| {
        c.post(
            path,
            &[("X-API-Key", &key), ("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap()
    };
    let r = gr(
        "/api/v1/event",
        &json!({"event_type": "level_up", "event_id": "gr-1", "identifiers": {"player_id": "p1"}}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = gr(
        "/api/v1/events",
        &json!({"events": [
            {"event_type": "purchase", "event_id": "gr-2", "payload": {"amount": 1.5}},
            {"event_type": "level_up", "event_id": "gr-3", "payload": {"note": key}},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][1]["reason"], "event_not_allowed_by_key");
    // Sessions: one named by the sender, started and ended; one whose id the server made.
    let r = gr(
        "/api/v1/sessions/start",
        &json!({"session_id": "s-7", "event_id": "st-7", "identifiers": {"player_id": "p1"}}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = gr(
        "/api/v1/sessions/end",
        &json!({"session_id": "s-7", "event_id": "en-7"}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = gr(
        "/api/v1/sessions/start",
        &json!({"event_id": "st-8", "identifiers": {"player_id": "p2"}}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    wait_for("five events quarantined", || held(&inlet) == 5);
    let doc = list(&inlet, &[]);
    assert!(!doc.to_string().contains(&key), "{doc}");
    // A batch's item: its own bytes.
    let item = raw_of(&doc, "gr-3");
    assert_eq!(item["event_type"], "level_up");
    assert!(item.get("events").is_none(), "{item}");
    assert_eq!(held_event(&doc, "gr-3")["source"], "gamerebellion");
    // A session request: its body, with the session it named or was given.
    assert_eq!(
        raw_of(&doc, "en-7"),
        json!({"session": "end", "session_id": "s-7", "body": {"session_id": "s-7", "event_id": "en-7"}})
    );
    let st8 = raw_of(&doc, "st-8");
    assert_eq!(st8["session"], "start");
    let s8 = st8["session_id"].as_str().unwrap().to_owned();
    assert_eq!(held_event(&doc, "st-8")["event_name"], "session_start");

    inlet.cli_ok(&[
        "keys",
        "allow",
        &id,
        "--events",
        "purchase,level_up,session_start,session_end,session_stop",
    ]);
    let r = replay(&inlet, &["--reason", "event_not_allowed_by_key"]);
    assert_eq!(
        (r["replayed"].as_u64(), r["released"].as_u64()),
        (Some(5), Some(5)),
        "{r}"
    );
    assert_eq!(
        replay(&inlet, &["--reason", "event_not_allowed_by_key"])["replayed"],
        0
    );
    for id in ["gr-1", "gr-2", "gr-3", "st-7", "en-7", "st-8"] {
        assert_eq!(stored(&inlet, id), 1, "{id}");
    }
    let events = inlet.export();
    let by_id = |id: &str| events.iter().find(|e| e["event_id"] == id).unwrap().clone();
    let (start, end) = (by_id("st-7"), by_id("en-7"));
    assert_eq!(start["props"]["session_id"], "s-7");
    assert_eq!(end["event_name"], "session_end");
    // The end was replayed after its start: the duration as it was on arrival.
    let received = |e: &Value| e["received_at_ms"].as_i64().unwrap();
    assert_eq!(
        end["props"]["duration_ms"].as_i64(),
        Some(received(&end) - received(&start)),
        "{end}"
    );
    assert_eq!(by_id("st-8")["props"]["session_id"], s8.as_str());
    assert_eq!(by_id("gr-1")["ids"]["player_id"], "p1");
    // A replayed start is not its identifiers' open session: a stop naming none finds none.
    let r = gr(
        "/api/v1/sessions/stop",
        &json!({"identifiers": {"player_id": "p2"}}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    // The sender's retry of a replayed event is a duplicate.
    let r = gr(
        "/api/v1/event",
        &json!({"event_type": "level_up", "event_id": "gr-1", "identifiers": {"player_id": "p1"}}),
    );
    assert_eq!(r.json()["duplicate"], true, "{}", r.text());
    assert_eq!(stored(&inlet, "gr-1"), 1);
}

#[test]
fn appsflyer_and_datafly_refusals_are_kept_without_credentials_and_replayed_once() {
    use inlet::auth::secrets::sign;
    let inlet = Inlet::start();
    let (_, secret) = inlet.every_dialect();
    let (key, id) = restricted(&inlet, "purchase");
    let mut c = inlet.client();
    let json_ct = ("Content-Type", "application/json");
    // AppsFlyer: the key in the body (`webDevKey`), not allowed to send these.
    let now = now_ms();
    let af_event = json!({"customerUserId": "cu-1", "webDevKey": key, "eventType": "EVENT",
        "eventName": "level_up", "timestamp": now, "eventValue": {"note": key}});
    let af_setcuid = json!({"customerUserId": "cu-1", "afUserId": "af-1", "webDevKey": key});
    for (path, body) in [("event", &af_event), ("setcuid", &af_setcuid)] {
        let r = c
            .post(
                &format!("/v1/web.bundle/{path}"),
                &[json_ct],
                body.to_string().as_bytes(),
            )
            .unwrap();
        assert_eq!(r.status, 403, "{path}: {}", r.text());
    }
    // Datafly: over the quota; with a messageId, without one, and a dry run.
    inlet.cli_ok(&["tenants", "set-quota", "default", "1"]);
    let mut dc = inlet.client();
    let mut df = |body: &Value, dry: bool| {
        let ts = now_ms().to_string();
        let body = body.to_string();
        let sig = sign(&secret, &ts, body.as_bytes());
        let mut h = vec![json_ct, ("X-Signature", &sig), ("X-Timestamp", &ts)];
        if dry {
            h.push(("X-Inlet-Dry-Run", "1"));
        }
        dc.post("/v1/events", &h, body.as_bytes()).unwrap()
    };
    let track = |id: Option<&str>| {
        let mut m = json!({"type": "track", "event": "Order Completed", "userId": "u-df",
            "writeKey": secret, "properties": {"order_id": "o-1"}});
        if let Some(id) = id {
            m["messageId"] = json!(id);
        }
        m
    };
    assert_eq!(df(&track(Some("m-1")), false).status, 200);
    assert_eq!(df(&track(Some("m-dry")), true).status, 429);
    assert_eq!(df(&track(Some("m-2")), false).status, 429);
    assert_eq!(df(&track(None), false).status, 429);
    wait_for("four events quarantined", || held(&inlet) == 4);
    let doc = list(&inlet, &[]);
    let text = doc.to_string();
    assert!(!text.contains(&key) && !text.contains(&secret), "{doc}");
    assert!(!text.contains("m-dry"), "{doc}");
    assert!(files_contain(inlet.data(), key.as_bytes()).is_none());
    assert!(files_contain(inlet.data(), secret.as_bytes()).is_none());
    let events = doc["events"].as_array().unwrap();
    let of =
        |source: &str| -> Vec<&Value> { events.iter().filter(|e| e["source"] == source).collect() };
    let (af, dfly) = (of("appsflyer"), of("datafly"));
    assert_eq!((af.len(), dfly.len()), (2, 2), "{doc}");
    let af_raw: Vec<Value> = af
        .iter()
        .map(|e| serde_json::from_str(e["raw"].as_str().unwrap()).unwrap())
        .collect();
    assert!(af_raw.iter().all(|r| !r.to_string().contains("webDevKey")));
    assert_eq!(af_raw[0]["eventName"], "level_up");
    assert_eq!(af_raw[1]["setcuid"]["afUserId"], "af-1");
    assert_eq!(af[1]["event_name"], "setcuid");
    let m2 = raw_of(&doc, "m-2");
    assert_eq!(m2["message"]["messageId"], "m-2");
    assert!(m2["secret_id"].is_u64(), "{m2}");
    let derived = dfly
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .find(|id| id != "m-2")
        .unwrap();
    assert!(derived.starts_with("datafly_"), "{derived}");

    // The fixes; two replays of the quota's events at once store each once.
    inlet.cli_ok(&["tenants", "set-quota", "default", "0"]);
    inlet.cli_ok(&[
        "keys",
        "allow",
        &id,
        "--events",
        "purchase,level_up,setcuid",
    ]);
    let other = std::thread::spawn({
        let data = inlet.data().to_owned();
        move || {
            cli_ok(
                &data,
                &[
                    "quarantine",
                    "replay",
                    "--app",
                    "default",
                    "--reason",
                    "cap_exceeded",
                ],
            )
        }
    });
    replay(&inlet, &["--reason", "cap_exceeded"]);
    other.join().unwrap();
    let r = replay(&inlet, &["--reason", "event_not_allowed_by_key"]);
    assert_eq!(r["released"], 2, "{r}");
    assert_eq!(held(&inlet), 0);
    let setcuid = af[1]["event_id"].as_str().unwrap().to_owned();
    let af_id = af[0]["event_id"].as_str().unwrap().to_owned();
    for id in ["m-1", "m-2", &derived, &setcuid, &af_id] {
        assert_eq!(stored(&inlet, id), 1, "{id}");
    }
    assert_eq!(stored(&inlet, "m-dry"), 0);
    let exported = inlet.export();
    let by_id = |id: &str| exported.iter().find(|e| e["event_id"] == id).unwrap();
    let level_up = by_id(&af_id);
    assert_eq!(
        (
            level_up["event_name"].as_str(),
            level_up["user_id"].as_str()
        ),
        (Some("level_up"), Some("cu-1"))
    );
    assert_eq!(level_up["event_ts_ms"].as_u64(), Some(now));
    assert_eq!(by_id("m-2")["context"]["secret_id"], m2["secret_id"]);
    assert_eq!(by_id("m-2")["transaction_id"], "o-1");
    // The senders' retries now are duplicates.
    let r = c
        .post(
            "/v1/web.bundle/setcuid",
            &[json_ct],
            af_setcuid.to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(df(&track(Some("m-2")), false).status, 200);
    assert_eq!(stored(&inlet, &setcuid), 1);
    assert_eq!(stored(&inlet, "m-2"), 1);
}

#[test]
fn a_datafly_message_whose_secret_was_revoked_is_not_replayed() {
    use inlet::auth::secrets::sign;
    let inlet = Inlet::start();
    let (_, secret) = inlet.every_dialect();
    inlet.cli_ok(&["tenants", "set-quota", "default", "1"]);
    let mut c = inlet.client();
    let mut send = |id: &str| {
        let ts = now_ms().to_string();
        let body = json!({"type": "track", "event": "Signed Up", "userId": "u-s",
            "messageId": id})
        .to_string();
        let sig = sign(&secret, &ts, body.as_bytes());
        let h = [
            ("Content-Type", "application/json"),
            ("X-Signature", sig.as_str()),
            ("X-Timestamp", ts.as_str()),
        ];
        c.post("/v1/events", &h, body.as_bytes()).unwrap().status
    };
    assert_eq!(send("s-1"), 200);
    assert_eq!(send("s-2"), 429);
    wait_for("s-2 quarantined", || held(&inlet) == 1);
    let secret_id = raw_of(&list(&inlet, &[]), "s-2")["secret_id"].to_string();
    inlet.cli_ok(&["secrets", "revoke", &secret_id]);
    inlet.cli_ok(&["tenants", "set-quota", "default", "0"]);
    let r = replay(&inlet, &["--reason", "cap_exceeded"]);
    assert_eq!(r["results"][0]["reason"], "secret_revoked", "{r}");
    assert_eq!(r["released"], 0, "{r}");
    assert_eq!(stored(&inlet, "s-2"), 0);
    assert_eq!(held(&inlet), 1);
}

#[test]
fn a_dropped_event_has_a_receipt_and_a_dry_run_notes_nothing() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let rule = inlet.cli_ok(&[
        "apps",
        "drop-rules",
        "add",
        "default",
        "--event",
        "debug_ping",
    ]);
    let rule: u64 = rule.trim().parse().unwrap();
    let mut c = inlet.client();
    let ping = |id: &str| named("debug_ping", id);
    let receipt = |id: &str| -> Value {
        serde_json::from_str(&inlet.cli_ok(&["receipt", "default", id, "--json"])).unwrap()
    };
    // A dry run first: noted, it would be before what follows.
    let r = c
        .post(
            "/s2s/event",
            &[
                ("Authorization", &format!("Bearer {key}")),
                ("Content-Type", "application/json"),
                ("X-Inlet-Dry-Run", "1"),
            ],
            ping("dry-1").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.json()["dropped"], true, "{}", r.text());
    // Native single (twice) and bulk; a GameRebellion batch.
    for _ in 0..2 {
        assert_eq!(
            c.post_json("/s2s/event", &key, &ping("d-1")).json()["dropped"],
            true
        );
    }
    let r = c.post_json(
        "/s2s/events/bulk",
        &key,
        &json!({"events": [ping("d-2"), event("ok-1")]}),
    );
    assert_eq!(r.json()["results"][0]["status"], "dropped", "{}", r.text());
    let r = c
        .post(
            "/api/v1/events",
            &[("X-API-Key", &key), ("Content-Type", "application/json")],
            json!({"events": [{"event_type": "debug_ping", "event_id": "d-3"}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.json()["results"][0]["status"], "dropped", "{}", r.text());
    wait_for("the drops noted", || receipt("d-3")["status"] == "dropped");
    let d1 = receipt("d-1");
    assert_eq!(d1["status"], "dropped", "{d1}");
    assert_eq!(d1["dropped"][0]["rule"], rule);
    assert_eq!(d1["dropped"][0]["times"], 2);
    assert!(d1["dropped"][0]["first_ms"].as_u64() <= d1["dropped"][0]["last_ms"].as_u64());
    assert_eq!(receipt("d-2")["dropped"][0]["times"], 1);
    assert_eq!(receipt("ok-1")["status"], "accepted");
    assert_eq!(receipt("dry-1")["status"], "unknown");
    let text = inlet.cli_ok(&["receipt", "default", "d-1"]);
    assert!(text.contains(": dropped"), "{text}");
    assert!(
        text.contains(&format!("dropped by rule {rule}: 2 time(s)")),
        "{text}"
    );
    // The admin API says the same.
    let mut admin = crate::admin::Admin::setup(&inlet);
    let r = admin.get("/admin/api/receipts/default/d-3");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "dropped");
    assert_eq!(r.json()["dropped"][0]["rule"], rule);
}

#[test]
fn a_keys_allowed_events_are_set_through_the_admin_api_and_audited() {
    let inlet = Inlet::start();
    let (key, id) = restricted(&inlet, "purchase");
    let mut c = inlet.client();
    let r = c.post_json("/s2s/event", &key, &named("level_up", "k-1"));
    assert_eq!(r.status, 403, "{}", r.text());
    wait_for("the event quarantined", || held(&inlet) == 1);
    let mut admin = crate::admin::Admin::setup(&inlet);
    let path = format!("/admin/api/keys/{id}/allow");
    // Refusals: a bad body, an unknown key, a name too long, a missing CSRF token.
    assert_eq!(
        admin.post(&path, &json!({"events": "level_up"})).status,
        400
    );
    assert_eq!(admin.post(&path, &json!({"event": ["x"]})).status, 400);
    let r = admin.post("/admin/api/keys/999/allow", &json!({"events": ["x"]}));
    assert_eq!(r.status, 404, "{}", r.text());
    let r = admin.post(&path, &json!({"events": ["x".repeat(129)]}));
    assert_eq!(r.status, 400, "{}", r.text());
    let r = c
        .post(
            &path,
            &[
                ("Cookie", &admin.cookie.clone()),
                ("Content-Type", "application/json"),
            ],
            br#"{"events":["level_up"]}"#,
        )
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let replayed = admin.post(
        "/admin/api/quarantine/default/replay",
        &json!({"ids": ["k-1"]}),
    );
    assert_eq!(
        replayed.json()["results"][0]["reason"],
        "event_not_allowed_by_key"
    );
    // The fix through the API: the event replays.
    let r = admin.post(
        &path,
        &json!({"events": ["purchase", " level_up", "purchase"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"id": id.parse::<u64>().unwrap(), "allowed_events": ["purchase", "level_up"]})
    );
    let keys = admin.get("/admin/api/keys").json();
    assert_eq!(
        keys["keys"][0]["allowed_events"],
        json!(["purchase", "level_up"])
    );
    let replayed = admin.post(
        "/admin/api/quarantine/default/replay",
        &json!({"ids": ["k-1"]}),
    );
    assert_eq!(
        replayed.json()["results"][0]["outcome"],
        "accepted",
        "{}",
        replayed.text()
    );
    assert_eq!(stored(&inlet, "k-1"), 1);
    // An empty list allows every event, from the next request on.
    let r = admin.post(&path, &json!({"events": []}));
    assert_eq!(r.json()["allowed_events"], json!([]));
    assert_eq!(
        c.post_json("/s2s/event", &key, &named("other", "k-2"))
            .status,
        200
    );
    // Audited like every key change.
    let audit = admin.get("/admin/api/audit").json().to_string();
    assert!(audit.contains(&format!("keys/{id}/allow")), "{audit}");
}
