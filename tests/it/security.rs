//! Security checks: no key in the database or in any log line, and a key of one app cannot
//! write into another app (every dialect in this build: Reflect).

use crate::support::*;
use serde_json::json;

#[test]
fn keys_never_reach_disk_or_logs_and_apps_stay_apart() {
    let inlet = Inlet::start_logged("debug", &[]);
    inlet.cli_ok(&["tenants", "add", "t2", "--monthly-quota", "5"]);
    inlet.cli_ok(&["apps", "add", "b", "--tenant", "t2"]);
    let key_a = inlet.mint("default");
    let key_b = inlet.mint("b");
    let revoked = inlet.mint("b");
    let id = parse_ndjson(&inlet.cli_ok(&["keys", "list", "--json"]))
        .into_iter()
        .find(|k| k["app"] == "b" && k["id"].as_u64() == Some(3))
        .expect("third key")["id"]
        .to_string();
    inlet.cli_ok(&["keys", "revoke", &id]);
    let mut c = inlet.client();

    // Key A names its app; fields claiming another app or tenant are just data.
    let mut ev = event("same-id");
    ev["app"] = json!("b");
    ev["tenant"] = json!("t2");
    assert_eq!(c.post_json("/s2s/event", &key_a, &ev).status, 200);
    // The same event id in app b is a different event, not a duplicate of a's.
    let r = c.post_json("/s2s/event", &key_b, &event("same-id"));
    assert_eq!(r.json()["accepted"], 1, "{}", r.text());
    let bulk = json!({"events": [event("b-1"), event("b-2")]});
    assert_eq!(c.post_json("/s2s/events/bulk", &key_b, &bulk).status, 200);
    // Near misses and the revoked key are refused.
    let near = format!("{}0", &key_b[..key_b.len() - 1]);
    for bad in [&near, &revoked, &key_a.to_uppercase()] {
        let r = c.post_json("/s2s/event", bad, &event("nope"));
        assert_eq!(r.status, 401, "{}", r.text());
    }

    let events = inlet.export();
    let apps: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["app"].as_str().unwrap(),
                e["tenant"].as_str().unwrap(),
                e["event_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        apps,
        [
            ("default", "default", "same-id"),
            ("b", "t2", "same-id"),
            ("b", "t2", "b-1"),
            ("b", "t2", "b-2")
        ]
    );
    assert_eq!(events[0]["props"]["app"], "b", "kept as data");
    let tenants = parse_ndjson(&inlet.cli_ok(&["tenants", "list", "--json"]));
    let used: Vec<u64> = tenants
        .iter()
        .map(|t| t["used_this_month"].as_u64().unwrap())
        .collect();
    assert_eq!(used, [1, 3], "each tenant counts only its own app's events");

    // No key (nor its hex part) in any file of the data dir, nor in any log line.
    let log = inlet.log.lock().unwrap().clone();
    assert!(log.contains("request"), "debug logging was on: {log}");
    for key in [&key_a, &key_b, &revoked, &near] {
        for needle in [key.as_str(), &key[4..]] {
            assert_eq!(files_contain(inlet.data(), needle.as_bytes()), None);
            assert!(!log.contains(needle), "a key in the log");
        }
    }
}
