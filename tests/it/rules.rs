//! An app's rules against a running server: business-key dedupe (a resend of a purchase with
//! a new event id is a duplicate) and drop rules (answered `dropped`, nothing stored).

use crate::admin::Admin;
use crate::support::*;
use serde_json::{Value, json};

/// A native purchase with event id `id` and transaction id `tx`.
fn purchase(id: &str, tx: &str) -> Value {
    let mut e = event(id);
    e["transaction_id"] = json!(tx);
    e
}

fn ids(inlet: &Inlet) -> Vec<String> {
    inlet
        .export()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn statuses(r: &Resp) -> Vec<String> {
    r.json()["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {}", r.text()))
        .iter()
        .map(|x| x["status"].as_str().unwrap().to_owned())
        .collect()
}

fn used_this_month(inlet: &Inlet) -> u64 {
    parse_ndjson(&inlet.cli_ok(&["tenants", "list", "--json"]))[0]["used_this_month"]
        .as_u64()
        .unwrap()
}

fn verify(data: &std::path::Path) {
    let store = inlet::store::Store::open(data).expect("the database opens");
    let report = store.verify().expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn a_resent_purchase_with_a_new_event_id_is_a_duplicate_on_reflect() {
    let mut inlet = Inlet::start();
    let key = inlet.mint("default");
    let said = inlet.cli_ok(&["apps", "business-key", "default", "on"]);
    assert!(said.contains("business-key dedupe on"), "{said}");
    let mut c = inlet.client();
    let first = c.post_json("/s2s/event", &key, &purchase("p-1", "tx-1"));
    assert_eq!(first.json()["accepted"], 1, "{}", first.text());
    let original_audit = first.json()["audit_key"].clone();
    // A new event id, the same purchase: the native duplicate answer names the original.
    let again = c.post_json("/s2s/event", &key, &purchase("p-2", "tx-1"));
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(
        again.json(),
        json!({"accepted": 0, "duplicate": true, "event_id": "p-2", "audit_key": original_audit})
    );
    let receipt: Value =
        serde_json::from_str(&inlet.cli_ok(&["receipt", "default", "p-2", "--json"])).unwrap();
    assert_eq!(receipt["duplicate"]["of_seq"], 1, "{receipt}");
    // Another event name with the same transaction id is another business key.
    let mut refund = purchase("p-3", "tx-1");
    refund["event_name"] = json!("refund");
    assert_eq!(
        c.post_json("/s2s/event", &key, &refund).json()["accepted"],
        1
    );
    // Two resends of one purchase in one batch: one stored.
    let batch = json!({"events": [purchase("b-1", "tx-2"), purchase("b-2", "tx-2")]});
    let r = c.post_json("/s2s/events/bulk", &key, &batch);
    assert_eq!(statuses(&r), ["accepted", "duplicate"], "{}", r.text());
    // The same batch twice: nothing new.
    let r = c.post_json("/s2s/events/bulk", &key, &batch);
    assert_eq!(statuses(&r), ["duplicate", "duplicate"], "{}", r.text());
    // Concurrent resends with new ids: one is stored.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (addr, key) = (inlet.addr, key.clone());
            std::thread::spawn(move || {
                Client::new(addr)
                    .post_json("/s2s/event", &key, &purchase(&format!("c-{i}"), "tx-3"))
                    .json()["accepted"]
                    .as_u64()
                    .unwrap()
            })
        })
        .collect();
    let stored: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(stored, 1);
    // Events without a transaction id are deduped by event id alone.
    assert_eq!(
        c.post_json("/s2s/event", &key, &event("plain-1")).json()["accepted"],
        1
    );
    assert_eq!(
        c.post_json("/s2s/event", &key, &event("plain-2")).json()["accepted"],
        1
    );
    assert_eq!(ids(&inlet).len(), 6, "{:?}", ids(&inlet));
    assert_eq!(used_this_month(&inlet), 6, "duplicates are not billed");
    // The index survives a restart ...
    inlet.kill();
    inlet.restart();
    let r = inlet
        .client()
        .post_json("/s2s/event", &key, &purchase("p-9", "tx-1"));
    assert_eq!(r.json()["duplicate"], true, "{}", r.text());
    // ... and a backup restored elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("rules-backup.redb");
    inlet.cli_ok(&["backup", backup.to_str().unwrap()]);
    inlet.kill();
    verify(inlet.data());
    let mut restored = Inlet::start();
    restored.kill();
    cli_ok(restored.data(), &["restore", backup.to_str().unwrap()]);
    restored.restart();
    let key = restored.mint("default");
    let r = restored
        .client()
        .post_json("/s2s/event", &key, &purchase("p-10", "tx-2"));
    assert_eq!(r.json()["duplicate"], true, "{}", r.text());
}

#[test]
fn business_key_is_off_unless_asked_and_holds_on_adjust_and_gamerebellion() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    // Off (the default): both purchases stored.
    c.post_json("/s2s/event", &key, &purchase("off-1", "tx-off"));
    c.post_json("/s2s/event", &key, &purchase("off-2", "tx-off"));
    assert_eq!(ids(&inlet).len(), 2);

    inlet.cli_ok(&["apps", "business-key", "default", "on"]);
    // GameRebellion: `payload.transaction_id`.
    let gr = [
        ("X-API-Key", key.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = json!({"events": [
        {"event_type": "transaction", "event_id": "gr-1", "payload": {"transaction_id": "g-tx"}},
        {"event_type": "transaction", "event_id": "gr-2", "payload": {"transaction_id": "g-tx"}},
    ]});
    let r = c
        .post("/api/v1/events", &gr, body.to_string().as_bytes())
        .unwrap();
    assert_eq!(statuses(&r), ["accepted", "duplicate"], "{}", r.text());
    let single = json!({"event_type": "transaction", "event_id": "gr-3",
                        "payload": {"transaction_id": "g-tx"}});
    let r = c
        .post("/api/v1/event", &gr, single.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.json()["duplicate"], true, "{}", r.text());

    // Adjust: the `transaction_id` parameter; each `created_at_unix` makes a new event id.
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-app-token",
        "apptok",
    ]);
    inlet.cli_ok(&["apps", "adjust-event", "default", "evtok", "purchase"]);
    let auth = format!("Bearer {key}");
    let now = now_ms() / 1000;
    let adjust = |c: &mut Client, at: u64, tx: &str| {
        let q = format!(
            "/event?s2s=1&app_token=apptok&event_token=evtok&idfa=IDFA-1&created_at_unix={at}&transaction_id={tx}&revenue=0.99&currency=EUR"
        );
        let r = c
            .request("GET", &q, &[("Authorization", &auth)], b"")
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    };
    adjust(&mut c, now - 10, "a-tx");
    adjust(&mut c, now - 5, "a-tx");
    adjust(&mut c, now - 1, "a-tx-2");
    let adjust_ids: Vec<_> = inlet
        .export()
        .into_iter()
        .filter(|e| e["source"] == "adjust")
        .collect();
    assert_eq!(adjust_ids.len(), 2, "{adjust_ids:?}");
    assert_eq!(ids(&inlet).len(), 5);
}

#[test]
fn removed_events_free_their_business_key() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    inlet.cli_ok(&["apps", "business-key", "default", "on"]);
    let mut c = inlet.client();
    // Erasure: the erased purchase's key goes with it.
    let mut erased = purchase("er-1", "tx-erased");
    erased["user_id"] = json!("subject-1");
    assert_eq!(
        c.post_json("/s2s/event", &key, &erased).json()["accepted"],
        1
    );
    let receipt: Value = serde_json::from_str(&inlet.cli_ok(&[
        "erase",
        "--app",
        "default",
        "--id=user_id=subject-1",
    ]))
    .unwrap();
    assert_eq!(receipt["events"], 1, "{receipt}");
    let r = c.post_json("/s2s/event", &key, &purchase("er-2", "tx-erased"));
    assert_eq!(r.json()["accepted"], 1, "{}", r.text());
    // Retention: so does a retained one.
    assert_eq!(
        c.post_json("/s2s/event", &key, &purchase("old-1", "tx-old"))
            .json()["accepted"],
        1
    );
    inlet.cli_ok(&["tenants", "set-retention", "default", "1"]);
    let later = inlet::clock::rfc3339_ms(now_ms() + 3 * 86_400_000);
    inlet.cli_ok(&["retention", "run", "--at", &later]);
    assert!(ids(&inlet).is_empty(), "{:?}", ids(&inlet));
    let r = c.post_json("/s2s/event", &key, &purchase("old-2", "tx-old"));
    assert_eq!(r.json()["accepted"], 1, "{}", r.text());
    // A removed event's key is freed only when it pointed at it.
    let r = c.post_json("/s2s/event", &key, &purchase("old-3", "tx-old"));
    assert_eq!(r.json()["duplicate"], true, "{}", r.text());
}

#[test]
fn drop_rules_answer_dropped_and_store_nothing() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let other = inlet.mint("default");
    let rule = inlet.cli_ok(&[
        "apps",
        "drop-rules",
        "add",
        "default",
        "--event",
        "debug_ping",
    ]);
    assert_eq!(rule.trim(), "1");
    let mut c = inlet.client();
    let mut ping = event("ping-1");
    ping["event_name"] = json!("debug_ping");
    // Native bulk: a distinct status per event.
    let body = json!({"events": [ping, event("buy-1")]});
    let r = c.post_json("/s2s/events/bulk", &key, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(statuses(&r), ["dropped", "accepted"]);
    assert_eq!(r.json()["results"][0]["rule"], 1);
    assert_eq!(r.json()["dropped"], 1);
    // Native single: said so; a dry run too, not counted.
    let r = c.post_json("/s2s/event", &key, &ping);
    assert_eq!(
        r.json(),
        json!({"accepted": 0, "dropped": true, "event_id": "ping-1", "rule": 1})
    );
    let auth = format!("Bearer {key}");
    let dry = c
        .post(
            "/s2s/event",
            &[("Authorization", &auth), ("X-Inlet-Dry-Run", "1")],
            ping.to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(dry.json()["dropped"], true, "{}", dry.text());
    assert_eq!(dry.json()["dry_run"], true);
    // Only the one accepted event is stored and billed.
    assert_eq!(ids(&inlet), ["buy-1"]);
    assert_eq!(used_this_month(&inlet), 1);

    // By source: GameRebellion's batch says `dropped`; the whole batch dropped is still 200.
    inlet.cli_ok(&[
        "apps",
        "drop-rules",
        "add",
        "default",
        "--source",
        "gamerebellion",
    ]);
    let gr = [
        ("X-API-Key", key.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = json!({"events": [{"event_type": "a", "event_id": "g-1"},
                                 {"event_type": "b", "event_id": "g-2"}]});
    let r = c
        .post("/api/v1/events", &gr, body.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(statuses(&r), ["dropped", "dropped"]);
    // By key: another key's Adjust events get Adjust's own success, and are not stored.
    // Keys are numbered as minted: `other` is key 2.
    let other_id = 2;
    inlet.cli_ok(&[
        "apps",
        "drop-rules",
        "add",
        "default",
        "--key",
        &other_id.to_string(),
    ]);
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-app-token",
        "apptok",
    ]);
    inlet.cli_ok(&["apps", "adjust-event", "default", "evtok", "purchase"]);
    let q = "/event?s2s=1&app_token=apptok&event_token=evtok&idfa=IDFA-2";
    let by_other = format!("Bearer {other}");
    let r = c
        .request("GET", q, &[("Authorization", &by_other)], b"")
        .unwrap();
    assert_eq!(
        (r.status, r.text().trim().to_owned()),
        (200, "OK".to_owned())
    );
    assert_eq!(ids(&inlet), ["buy-1"], "the other key's event is dropped");
    let r = c
        .request("GET", q, &[("Authorization", &auth)], b"")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ids(&inlet).len(), 2, "the first key's event is stored");

    // Counted per rule.
    let metrics = c.get("/metrics").unwrap().text();
    for (rule, n) in [(1, 2), (2, 2), (3, 1)] {
        let line = format!("inlet_dropped_total{{app=\"default\",rule=\"{rule}\"}} {n}");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    // A dropped event was not deduped: without the rule it is stored.
    inlet.cli_ok(&["apps", "drop-rules", "remove", "default", "1"]);
    assert_eq!(c.post_json("/s2s/event", &key, &ping).json()["accepted"], 1);
    let listed = inlet.cli_ok(&["apps", "drop-rules", "list", "default"]);
    assert!(
        listed.contains("rule 2: drop source=gamerebellion"),
        "{listed}"
    );
    assert!(!listed.contains("rule 1:"), "{listed}");
}

#[test]
fn rules_are_kept_through_the_admin_api() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut admin = Admin::setup(&inlet);
    let r = admin.post(
        "/admin/api/apps/default/drop-rules",
        &json!({"event": "noise", "source": "reflect"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_u64().unwrap();
    for bad in [
        json!({}),
        json!({"source": "segment"}),
        json!({"key_id": 99}),
        json!({"event": "x", "extra": 1}),
    ] {
        let r = admin.post("/admin/api/apps/default/drop-rules", &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = admin.post("/admin/api/apps/nope/drop-rules", &json!({"event": "x"}));
    assert_eq!(r.status, 404, "{}", r.text());
    let r = admin.post("/admin/api/apps/default/business-key", &json!({"on": true}));
    assert_eq!(r.json()["business_key"], true, "{}", r.text());
    let mut noise = event("n-1");
    noise["event_name"] = json!("noise");
    inlet.client().post_json("/s2s/event", &key, &noise);
    let rules = admin.get("/admin/api/apps/default/rules").json();
    assert_eq!(
        rules["drop"],
        json!([{"id": id, "event": "noise", "source": "reflect", "dropped": 1}]),
        "{rules}"
    );
    let r = admin.post(
        &format!("/admin/api/apps/default/drop-rules/{id}/remove"),
        &json!({}),
    );
    assert_eq!(r.json()["drop"], json!([]), "{}", r.text());
    let r = admin.post(
        &format!("/admin/api/apps/default/drop-rules/{id}/remove"),
        &json!({}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(inlet.export().is_empty());
}
