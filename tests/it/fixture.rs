//! The pinned storage format: `tests/fixtures/schema-1/` is a data dir written by the build
//! that pinned schema 1 (`tests/fixtures/make-schema-1.py`). Every later build must open it,
//! verify it, read back exactly what it holds and go on from its state. A change that breaks
//! this test changes the format: it needs a new schema version and an upgrade path, and a
//! fixture of its own (ARCHITECTURE.md, invariant "Versioned records").

use crate::support::*;
use serde_json::json;
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/schema-1")
        .join(name)
}

/// A server on a copy of the fixture's data dir.
fn serve_fixture() -> Inlet {
    let mut inlet = Inlet::start();
    inlet.kill();
    for entry in std::fs::read_dir(inlet.data()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::remove_file(p).unwrap();
        }
    }
    for name in ["inlet.redb", "secrets.key"] {
        std::fs::copy(fixture(name), inlet.data().join(name)).unwrap();
    }
    inlet.restart();
    inlet
}

#[test]
fn the_pinned_format_restores_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("schema-1.redb");
    std::fs::copy(fixture("inlet.redb"), &copy).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // A restore checks the whole file first: redb integrity, the schema version, every
    // record decodes, every stored event is found by the dedupe index, counters match.
    let out = cli(&data, &["restore", copy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("9 events, 2 tenants, 2 apps, 3 keys"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_pinned_format_reads_back_and_goes_on_from_its_state() {
    let inlet = serve_fixture();
    // Every stored event, exactly as when the fixture was written.
    let want = std::fs::read_to_string(fixture("export.ndjson")).unwrap();
    assert_eq!(inlet.cli_ok(&["export"]), want);

    let keys = inlet.cli_ok(&["keys", "list", "--json"]);
    let keys = parse_ndjson(&keys);
    let labels: Vec<&str> = keys.iter().map(|k| k["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["backend", "limited", "old"]);
    assert!(keys[2]["revoked_ms"].is_u64(), "{}", keys[2]);
    assert_eq!(keys[1]["allowed_events"], json!(["level_up", "purchase"]));
    assert_eq!(keys[1]["rate_limit"], 600);
    let apps = parse_ndjson(&inlet.cli_ok(&["apps", "list", "--json"]));
    let game = apps.iter().find(|a| a["name"] == "game").unwrap();
    assert_eq!(game["adjust_events"], json!({"f0ob4r": "purchase"}));
    assert_eq!(game["adjust_skan"]["window_hours"], 48);
    assert_eq!(game["appsflyer_bundle_id"], "com.studio.game");
    let tenants = parse_ndjson(&inlet.cli_ok(&["tenants", "list", "--json"]));
    assert_eq!(tenants[1]["name"], "studio");
    assert_eq!(tenants[1]["retention_days"], 400);
    assert!(inlet.cli_ok(&["secrets", "list"]).contains("web"));
    // The raw body of a request, with the key it carried redacted.
    let body = inlet.cli_ok(&["audit", "get", "s2s/2026-12-03/fx-single.json"]);
    assert!(body.contains("gems_100"), "{body}");
    // The identity graph is rebuilt from the log.
    let profile = inlet.cli_ok(&["profile", "game", "user_1"]);
    assert!(profile.contains("anon_1"), "{profile}");

    // The dedupe index: ids stored then are duplicates now, singly and in bulk.
    let key = inlet.mint("game");
    let mut c = inlet.client();
    let again = json!({"event_id": "fx-single", "event_name": "purchase",
        "event_ts_ms": 1_764_000_000_000u64, "install_uuid": "8f2a1c0e94d7423b8b53af7c9e21d630"});
    let r = c.post_json("/s2s/event", &key, &again);
    assert_eq!(r.json()["duplicate"], true, "{}", r.text());
    let mut bulk = again.clone();
    bulk["event_id"] = json!("fx-bulk-2");
    let r = c.post_json("/s2s/events/bulk", &key, &json!({"events": [bulk]}));
    assert_eq!(
        r.json()["results"][0]["status"],
        "duplicate",
        "{}",
        r.text()
    );
    // The open GameRebellion session is closed by its identifiers.
    let r = c
        .post(
            "/api/v1/sessions/end",
            &[("X-API-Key", &key), ("Content-Type", "application/json")],
            br#"{"identifiers":{"player_id":"player-1"}}"#,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["session_id"], "fx-session");
    // Quota counting goes on from the stored count (the fixture's month may be over: then
    // this month starts at the one event just stored).
    let studio = parse_ndjson(&inlet.cli_ok(&["tenants", "list", "--json"]))
        .into_iter()
        .find(|t| t["name"] == "studio")
        .unwrap();
    assert_eq!(studio["monthly_quota"], 1000);
    assert!(studio["used_this_month"].as_u64().unwrap() >= 1, "{studio}");
    assert_eq!(inlet.export().len(), 10);
}
