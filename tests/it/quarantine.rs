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
