//! Erasure of a person (issue "privacy you can prove"): a profile linked across all five
//! dialects is erased, and nothing of it is left in any file of the data dir, in exports,
//! audit reads, profiles or the panel's API; a backup taken before and restored after gets
//! the erasure applied again.

use crate::admin::Admin;
use crate::support::*;
use inlet::auth::secrets::sign;
use serde_json::{Value, json};

/// The subject's identifiers and event ids: long and distinct, so a byte scan finds them only
/// where they were stored.
const U: &str = "user-subj-5b1e9d";
const I: &str = "inst-subj-77c2a0";
const P: &str = "player-subj-6e0d";
const AF: &str = "afuid-subj-90d1f";
const N: &str = "anon-subj-3c4f7e";
const IDFA: &str = "IDFA-SUBJ-12AB-34CD";
const MARK: &str = "mark-subj-props-zz";
/// Someone else, who stays.
const OTHER: &str = "user-keep-a41b88";

fn needles() -> Vec<&'static str> {
    vec![
        U,
        I,
        P,
        AF,
        N,
        IDFA,
        MARK,
        "ev-subj-r1",
        "ev-subj-r2",
        "ev-subj-g1",
    ]
}

/// The first needle found in a file under `dir`, and where.
fn leftover(dir: &std::path::Path) -> Option<(String, std::path::PathBuf)> {
    needles()
        .into_iter()
        .find_map(|n| files_contain(dir, n.as_bytes()).map(|p| (n.to_owned(), p)))
}

fn post_ok(c: &mut Client, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let r = c.post(path, headers, body).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r
}

fn datafly(c: &mut Client, secret: &str, body: Value) -> Resp {
    let body = body.to_string();
    let ts = now_ms().to_string();
    let sig = sign(secret, &ts, body.as_bytes());
    c.post(
        "/v1/events",
        &[("X-Signature", &sig), ("X-Timestamp", &ts)],
        body.as_bytes(),
    )
    .unwrap()
}

/// A server whose app `default` takes all five dialects; returns it, a key and a secret.
fn server() -> (Inlet, String, String) {
    let inlet = Inlet::start();
    let (key, secret) = inlet.every_dialect();
    (inlet, key, secret)
}

/// The subject's events through every dialect (six stored events, one of them in a bulk
/// request with someone else's), and two events of someone else.
fn send_profile(inlet: &Inlet, key: &str, secret: &str) {
    let mut c = inlet.client();
    let json_h = [
        ("Authorization", &*format!("Bearer {key}")),
        ("Content-Type", "application/json"),
    ];
    let mut e = event("ev-subj-r1");
    e["install_uuid"] = json!(I);
    e["user_id"] = json!(U);
    e["ids"] = json!({ "player_id": P });
    e["props"] = json!({ "note": MARK });
    post_ok(&mut c, "/s2s/event", &json_h, e.to_string().as_bytes());
    let mut mine = event("ev-subj-r2");
    mine["install_uuid"] = json!(I);
    let mut theirs = event("ev-keep-r1");
    theirs["install_uuid"] = json!("inst-keep-0001");
    theirs["user_id"] = json!(OTHER);
    post_ok(
        &mut c,
        "/s2s/events/bulk",
        &json_h,
        json!({ "events": [mine, theirs] }).to_string().as_bytes(),
    );
    let af = |method: &str, body: Value| {
        let mut c = inlet.client();
        post_ok(
            &mut c,
            &format!("/v1/web.bundle/{method}"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
    };
    af(
        "setcuid",
        json!({"customerUserId": U, "afUserId": AF, "webDevKey": key}),
    );
    let r = datafly(
        &mut c,
        secret,
        json!({"type": "identify", "userId": U, "anonymousId": N}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    post_ok(
        &mut c,
        "/api/v1/event",
        &[("X-API-Key", key), ("Content-Type", "application/json")],
        json!({"event_type": "level_up", "event_id": "ev-subj-g1",
               "identifiers": {"user_id": U, "idfa": IDFA}})
        .to_string()
        .as_bytes(),
    );
    let auth = format!("Bearer {key}");
    let r = c
        .request(
            "GET",
            &format!("/event?s2s=1&event_token=f0ob4r&app_token=4w565xzmb54d&idfa={IDFA}"),
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let mut e = event("ev-keep-r2");
    e["install_uuid"] = json!("inst-keep-0001");
    e["user_id"] = json!(OTHER);
    post_ok(&mut c, "/s2s/event", &json_h, e.to_string().as_bytes());
}

fn user_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["user_id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn an_erasure_leaves_nothing_of_the_profile_and_survives_a_restore() {
    let (mut inlet, key, secret) = server();
    let mut admin = Admin::setup(&inlet);
    send_profile(&inlet, &key, &secret);
    let before = inlet.export();
    assert_eq!(before.len(), 8, "six of the subject, two of someone else");
    let audit_keys: Vec<String> = before
        .iter()
        .filter(|e| e["user_id"] != OTHER)
        .map(|e| e["audit_key"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        leftover(inlet.data()).is_some(),
        "the scan must see stored data"
    );
    // Subject access: everything stored about them, from any of their identifiers.
    let dsar =
        parse_ndjson(&inlet.cli_ok(&["export", "--app", "default", &format!("--id=idfa={IDFA}")]));
    assert_eq!(dsar[0]["type"], "profile");
    assert_eq!(dsar[0]["identifiers"].as_array().unwrap().len(), 6);
    let kinds = |t: &str| dsar.iter().filter(|l| l["type"] == t).count();
    assert_eq!((kinds("event"), kinds("audit")), (6, 6), "{dsar:?}");
    assert!(
        dsar.iter()
            .all(|l| !l.to_string().contains(OTHER) || l["type"] == "audit")
    );
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("before.redb");
    inlet.cli_ok(&["backup", backup.to_str().unwrap()]);

    // The erasure, through the admin API, from an identifier only Datafly carried.
    let r = admin.post(
        "/admin/api/erasures",
        &json!({ "app": "default", "id": format!("anonymous_id={N}") }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let receipt = r.json();
    assert_eq!(receipt["events"], 6, "{receipt}");
    let mut matched: Vec<String> = receipt["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}={}",
                i["kind"].as_str().unwrap(),
                i["value"].as_str().unwrap()
            )
        })
        .collect();
    matched.sort();
    let mut expected = vec![
        format!("af_user_id={AF}"),
        format!("anonymous_id={N}"),
        format!("idfa={IDFA}"),
        format!("install_uuid={I}"),
        format!("player_id={P}"),
        format!("user_id={U}"),
    ];
    expected.sort();
    assert_eq!(matched, expected);
    let id = receipt["erasure_id"].as_str().unwrap().to_owned();
    assert_eq!(receipt["digest"].as_str().unwrap().len(), 64);

    // Every reader: export, audit, profile, the panel's listing, the ledger.
    let after = inlet.export();
    assert!(
        !inlet
            .cli(&["export", "--app", "default", &format!("--id=user_id={U}")])
            .status
            .success()
    );
    assert_eq!(user_ids(&after), [OTHER, OTHER], "{after:?}");
    for k in &audit_keys {
        assert!(
            !inlet.cli(&["audit", "get", k]).status.success(),
            "audit {k}"
        );
    }
    for id in [U, I, N, AF, IDFA] {
        assert!(
            !inlet.cli(&["profile", "default", id]).status.success(),
            "profile {id}"
        );
    }
    let listing = admin.get("/admin/api/events?app=default").text();
    let ledger = admin.get("/admin/api/erasures").text();
    assert!(ledger.contains(&id), "{ledger}");
    for n in needles() {
        assert!(!listing.contains(n), "panel listing shows {n}");
        assert!(!ledger.contains(n), "the ledger names {n}");
    }
    // The other user is intact, and so is their profile.
    assert!(inlet.cli(&["profile", "default", OTHER]).status.success());
    // Not a byte of it in any file of the data dir (the log, its free space, the graph).
    assert_eq!(leftover(inlet.data()), None);

    // Restore the backup taken before: the erasure is applied again from the ledger.
    inlet.signal_and_wait("TERM");
    let out = cli(inlet.data(), &["restore", backup.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("1 erasures made since the backup were applied again"),
        "{said}"
    );
    assert_eq!(leftover(inlet.data()), None);
    inlet.restart();
    assert_eq!(user_ids(&inlet.export()), [OTHER, OTHER]);
    assert!(inlet.cli_ok(&["erasures", "list"]).contains(&id));
    assert_eq!(leftover(inlet.data()), None);
}

/// Crash campaign during erasures: the server is SIGKILLed at a random moment of an erasure
/// (`INLET_ERASURE_CRASH_CYCLES`, default 6; `INLET_CRASH_SEED`). After the restart the erasure
/// is either complete (ledger entry applied, nothing of the subject in any file) or cleanly
/// absent (no entry, every event of the subject still stored): never half-applied.
#[test]
fn an_erasure_killed_midway_completes_after_restart_or_never_happened() {
    use crate::crash::Rng;
    let cycles: u64 = std::env::var("INLET_ERASURE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed = std::env::var("INLET_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(now_ms);
    eprintln!("erasure crash campaign: seed {seed}");
    let mut rng = Rng::new(seed);
    let mut inlet = Inlet::start();
    let key = inlet.mint("default");
    let auth = format!("Bearer {key}");
    let h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    // Someone else's events, so that scans and the rewrite take a while.
    let mut c = inlet.client();
    for b in 0..10 {
        let events: Vec<Value> = (0..1000)
            .map(|i| {
                let mut e = event(&format!("filler-{b}-{i}"));
                e["install_uuid"] = json!(format!("inst-filler-{}", i % 50));
                e
            })
            .collect();
        post_ok(
            &mut c,
            "/s2s/events/bulk",
            &h,
            json!({ "events": events }).to_string().as_bytes(),
        );
    }
    let mut outcomes = (0, 0);
    let mut took = std::time::Duration::from_millis(300);
    for cycle in 0..cycles {
        let user = format!("user-crash-{cycle}-9f8e7d");
        let mut c = inlet.client();
        for i in 0..3 {
            let mut e = event(&format!("ev-crash-{cycle}-{i}"));
            e["install_uuid"] = json!(format!("inst-crash-{cycle}-{i}"));
            e["user_id"] = json!(user);
            post_ok(&mut c, "/s2s/event", &h, e.to_string().as_bytes());
        }
        let mut erase = std::process::Command::new(bin());
        erase
            .args([
                "--data",
                inlet.data().to_str().unwrap(),
                "erase",
                "--app",
                "default",
            ])
            .arg(format!("--id=user_id={user}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let started = std::time::Instant::now();
        let mut child = if cycle == 0 {
            None
        } else {
            Some(erase.spawn().unwrap())
        };
        // The first cycle runs to the end: its duration bounds the kill moments of the rest.
        if cycle == 0 {
            let out = cli(
                inlet.data(),
                &["erase", "--app", "default", &format!("--id=user_id={user}")],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            took = started.elapsed();
            inlet.kill();
        } else {
            // The kill moment is chosen, not awaited: nothing becomes true here.
            let delay = std::time::Duration::from_millis(rng.below(took.as_millis() as u64 + 1));
            std::thread::sleep(delay.saturating_sub(started.elapsed()));
            inlet.kill();
            if let Some(c) = child.as_mut() {
                let _ = c.wait();
            }
        }
        inlet.restart();
        // An interrupted erasure is finished by the restarted server.
        let ledger =
            || -> Vec<Value> { parse_ndjson(&inlet.cli_ok(&["erasures", "list", "--json"])) };
        wait_for("no pending erasure", || {
            ledger().iter().all(|e| e["applied"] == true)
        });
        let recorded = ledger().len() as u64 > cycle - outcomes.1;
        let left = inlet
            .export()
            .iter()
            .filter(|e| e["user_id"] == user.as_str())
            .count();
        if recorded {
            assert_eq!(left, 0, "cycle {cycle}: an applied erasure left events");
            assert_eq!(
                files_contain(inlet.data(), user.as_bytes()),
                None,
                "cycle {cycle}"
            );
            outcomes.0 += 1;
        } else {
            assert_eq!(
                left, 3,
                "cycle {cycle}: no erasure recorded, yet events are gone"
            );
            outcomes.1 += 1;
        }
    }
    eprintln!(
        "erasure crash campaign: {} completed, {} cleanly absent",
        outcomes.0, outcomes.1
    );
    inlet.kill();
    let report = inlet::store::Store::open_existing(inlet.data())
        .unwrap()
        .verify()
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A suppressed subject's next events are refused on every dialect (`subject_suppressed`),
/// not stored (not even in the raw body of a batch they shared), and accepted again once the
/// suppression is lifted.
#[test]
fn a_suppressed_subject_is_refused_on_every_dialect_until_lifted() {
    let (inlet, key, secret) = server();
    send_profile(&inlet, &key, &secret);
    let receipt: Value = serde_json::from_str(&inlet.cli_ok(&[
        "erase",
        "--app",
        "default",
        &format!("--id=user_id={U}"),
        "--suppress",
    ]))
    .unwrap();
    assert_eq!(
        (receipt["events"].as_u64(), receipt["suppressed"].as_bool()),
        (Some(6), Some(true))
    );
    let stored = inlet.export().len();
    let mut c = inlet.client();
    let auth = format!("Bearer {key}");
    let json_h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let refused = |r: Resp, what: &str| {
        assert!(
            r.status >= 400 && r.status < 500,
            "{what}: {} {}",
            r.status,
            r.text()
        );
        r
    };
    let mut e = event("ev-subj-again-1");
    e["install_uuid"] = json!("inst-new-device");
    e["user_id"] = json!(U);
    let r = refused(
        c.post("/s2s/event", &json_h, e.to_string().as_bytes())
            .unwrap(),
        "reflect",
    );
    assert!(r.text().contains("subject_suppressed"), "{}", r.text());
    // A batch: the subject's event refused, someone else's accepted; the shared body is not kept.
    let mut mine = event("ev-subj-again-2");
    mine["install_uuid"] = json!(I);
    let mut theirs = event("ev-keep-again");
    theirs["user_id"] = json!(OTHER);
    let r = post_ok(
        &mut c,
        "/s2s/events/bulk",
        &json_h,
        json!({ "events": [mine, theirs] }).to_string().as_bytes(),
    );
    let body = r.json();
    assert!(body.to_string().contains("subject_suppressed"), "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    // Refused events of a suppressed subject leave no receipt, unlike any other rejection: a
    // refusal noted after them is written, and theirs are not there.
    let mut bad = event("ev-bad-control");
    bad["currency"] = json!("dollars");
    let r = c
        .post("/s2s/event", &json_h, bad.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let status = |id: &str| -> Value {
        let doc: Value =
            serde_json::from_str(&inlet.cli_ok(&["receipt", "default", id, "--json"])).unwrap();
        doc["status"].clone()
    };
    crate::support::wait_for("the control rejection's receipt", || {
        status("ev-bad-control") == "rejected"
    });
    for id in ["ev-subj-again-1", "ev-subj-again-2"] {
        assert_eq!(status(id), "unknown", "{id}");
    }
    let r = refused(
        c.post(
            "/api/v1/event",
            &[("X-API-Key", &key), ("Content-Type", "application/json")],
            json!({"event_type": "level_up", "event_id": "ev-subj-again-3",
                   "identifiers": {"idfa": IDFA}})
            .to_string()
            .as_bytes(),
        )
        .unwrap(),
        "gamerebellion",
    );
    assert!(r.text().contains("subject_suppressed"), "{}", r.text());
    refused(
        c.request(
            "GET",
            &format!("/event?s2s=1&event_token=f0ob4r&app_token=4w565xzmb54d&idfa={IDFA}"),
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap(),
        "adjust",
    );
    refused(
        c.post(
            "/v1/web.bundle/setcuid",
            &[("Content-Type", "application/json")],
            json!({"customerUserId": "someone-new", "afUserId": AF, "webDevKey": key})
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
        "appsflyer",
    );
    let r = refused(
        datafly(
            &mut c,
            &secret,
            json!({"type": "track", "event": "Viewed", "anonymousId": N}),
        ),
        "datafly",
    );
    assert!(r.text().contains("subject_suppressed"), "{}", r.text());
    let now: Vec<Value> = inlet.export();
    assert_eq!(
        now.len(),
        stored + 1,
        "only someone else's event was stored"
    );
    assert_eq!(now.last().unwrap()["user_id"], OTHER);
    assert!(
        !inlet
            .cli(&[
                "audit",
                "get",
                now.last().unwrap()["audit_key"].as_str().unwrap()
            ])
            .status
            .success(),
        "the body that carried the subject's event is not kept"
    );
    assert_eq!(files_contain(inlet.data(), b"ev-subj-again"), None);

    // Lifted: accepted again.
    let id = receipt["erasure_id"].as_str().unwrap();
    inlet.cli_ok(&["erasures", "unsuppress", id]);
    let mut e = event("ev-subj-back");
    e["user_id"] = json!(U);
    post_ok(&mut c, "/s2s/event", &json_h, e.to_string().as_bytes());
    assert_eq!(inlet.export().len(), stored + 2);
}

/// Store less: an app set to truncate IP addresses and drop user agents keeps IPv4 /24 and
/// IPv6 /48 and no user agent, in exported events and in the raw bodies on disk; `drop`
/// keeps no address at all.
#[test]
fn ip_addresses_are_truncated_or_dropped_and_user_agents_dropped_on_arrival() {
    let (inlet, key, secret) = server();
    let said = inlet.cli_ok(&[
        "apps",
        "store-less",
        "default",
        "--ip",
        "truncate",
        "--user-agent",
        "drop",
    ]);
    assert!(said.contains("ip truncate, user agent dropped"), "{said}");
    let mut c = inlet.client();
    post_ok(
        &mut c,
        "/v1/web.bundle/event",
        &[("Content-Type", "application/json")],
        json!({"afUserId": "af-ip-1", "webDevKey": key, "eventType": "EVENT",
               "eventName": "visit", "ip": "203.0.113.77", "userAgent": "Agent/9.9 (sl-ua)"})
        .to_string()
        .as_bytes(),
    );
    let r = datafly(
        &mut c,
        &secret,
        json!({"type": "track", "event": "Viewed", "anonymousId": "anon-ip-1",
               "context": {"ip": "2001:db8:abcd:12:34:56:78:9a", "userAgent": "Agent/9.9 (sl-ua)"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let events = inlet.export();
    let ips: Vec<&Value> = events.iter().map(|e| &e["context"]["ip"]).collect();
    assert_eq!(
        ips,
        [&json!("203.0.113.0"), &json!("2001:db8:abcd::")],
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["context"].get("user_agent").is_none()),
        "{events:?}"
    );
    for needle in ["203.0.113.77", "2001:db8:abcd:12", "sl-ua"] {
        assert_eq!(
            files_contain(inlet.data(), needle.as_bytes()),
            None,
            "{needle}"
        );
    }
    inlet.cli_ok(&["apps", "store-less", "default", "--ip", "drop"]);
    post_ok(
        &mut c,
        "/v1/web.bundle/event",
        &[("Content-Type", "application/json")],
        json!({"afUserId": "af-ip-2", "webDevKey": key, "eventType": "EVENT",
               "eventName": "visit", "ip": "198.51.100.9", "userAgent": "Agent/1"})
        .to_string()
        .as_bytes(),
    );
    let last = inlet.export().pop().unwrap();
    assert!(last["context"].get("ip").is_none(), "{last}");
    assert_eq!(last["context"]["user_agent"], "Agent/1");
    assert_eq!(files_contain(inlet.data(), b"198.51.100"), None);
}

/// Per-field retention: past `--fields-days`, the retention pass strips the IP address, user
/// agent and device ids of events (which stay) and drops their raw bodies; nothing of the
/// values is left in the data dir.
#[test]
fn per_field_retention_strips_client_fields_and_device_ids() {
    let (inlet, key, _) = server();
    inlet.cli_ok(&["apps", "store-less", "default", "--fields-days", "30"]);
    let mut c = inlet.client();
    post_ok(
        &mut c,
        "/v1/web.bundle/event",
        &[("Content-Type", "application/json")],
        json!({"afUserId": "af-old-1", "webDevKey": key, "eventType": "EVENT",
               "eventName": "visit", "ip": "192.0.2.201", "userAgent": "Agent/old-ua"})
        .to_string()
        .as_bytes(),
    );
    let auth = format!("Bearer {key}");
    let r = c
        .request(
            "GET",
            "/event?s2s=1&event_token=f0ob4r&app_token=4w565xzmb54d&idfa=IDFA-OLD-77&ip_address=192.0.2.202",
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Not yet due: everything stays.
    inlet.cli_ok(&["retention", "run"]);
    assert_eq!(inlet.export()[0]["context"]["ip"], "192.0.2.201");
    let later = inlet::clock::rfc3339_ms(now_ms() + 31 * 86_400_000);
    let said = inlet.cli_ok(&["retention", "run", "--at", &later]);
    assert!(
        said.contains("client fields and device ids of 2 events"),
        "{said}"
    );
    let events = inlet.export();
    assert_eq!(events.len(), 2, "the events stay");
    for e in &events {
        assert!(e["context"].get("ip").is_none(), "{e}");
        assert!(e["context"].get("user_agent").is_none(), "{e}");
        assert!(
            e.get("ids")
                .is_none_or(|ids| ids.as_object().is_none_or(|o| o.is_empty())),
            "{e}"
        );
    }
    for needle in ["192.0.2.20", "old-ua", "IDFA-OLD-77"] {
        assert_eq!(
            files_contain(inlet.data(), needle.as_bytes()),
            None,
            "{needle}"
        );
    }
}

/// A GameRebellion session of the subject is forgotten with them: its id is in no file, and a
/// stop by their identifiers finds no open session.
#[test]
fn an_erasure_forgets_the_subjects_game_sessions() {
    let (inlet, key, _secret) = server();
    let mut c = inlet.client();
    let gr = [("X-API-Key", &*key), ("Content-Type", "application/json")];
    let player = json!({"player_id": "sess-player-7"});
    let start = json!({"session_id": "sess-of-subject-1", "identifiers": player});
    post_ok(
        &mut c,
        "/api/v1/sessions/start",
        &gr,
        start.to_string().as_bytes(),
    );
    let session_id = b"sess-of-subject-1";
    assert!(files_contain(inlet.data(), session_id).is_some());
    let receipt: Value = serde_json::from_str(&inlet.cli_ok(&[
        "erase",
        "--app",
        "default",
        "--id=player_id=sess-player-7",
    ]))
    .unwrap();
    assert_eq!(receipt["events"], 1, "{receipt}");
    assert_eq!(files_contain(inlet.data(), session_id), None);
    // A stop that names only the identifiers looks for their open session: there is none.
    let stop = json!({"identifiers": player});
    let r = c
        .post("/api/v1/sessions/stop", &gr, stop.to_string().as_bytes())
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("no_open_session"), "{}", r.text());
}

/// The receipt of an erased event (its duplicate answers) goes with it: its id is in no file.
#[test]
fn an_erasure_forgets_the_receipts_of_the_subjects_events() {
    let (inlet, key, _secret) = server();
    let mut c = inlet.client();
    let json_h = [
        ("Authorization", &*format!("Bearer {key}")),
        ("Content-Type", "application/json"),
    ];
    let mut e = event("ev-receipted-subject");
    e["user_id"] = json!("receipt-subject-9");
    for _ in 0..2 {
        post_ok(&mut c, "/s2s/event", &json_h, e.to_string().as_bytes());
    }
    let status = || -> Value {
        let out = inlet.cli_ok(&["receipt", "default", "ev-receipted-subject", "--json"]);
        serde_json::from_str::<Value>(&out).unwrap()["duplicate"].clone()
    };
    crate::support::wait_for("the duplicate's tally", || status()["times"] == 1);
    inlet.cli_ok(&[
        "erase",
        "--app",
        "default",
        "--id=user_id=receipt-subject-9",
    ]);
    assert_eq!(status(), Value::Null);
    assert_eq!(files_contain(inlet.data(), b"ev-receipted-subject"), None);
}

/// Erasures made at the same moment (three through the admin API, one through the CLI) while
/// events keep arriving: each completes with its own receipt, nothing of any subject is left in
/// any file, and every event acknowledged meanwhile is stored exactly once.
#[test]
fn concurrent_erasures_each_complete_while_events_keep_arriving() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};

    let (mut inlet, key, _secret) = server();
    drop(Admin::setup(&inlet));
    let subjects: Vec<String> = (0..4).map(|n| format!("conc-subject-{n}-e81f")).collect();
    let bearer = format!("Bearer {key}");
    let json_h = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let mut c = inlet.client();
    for (n, s) in subjects.iter().enumerate() {
        for k in 0..3 {
            let mut e = event(&format!("ev-conc-{n}-{k}"));
            e["install_uuid"] = json!(format!("inst-conc-{n}-d2a9"));
            e["user_id"] = json!(s);
            post_ok(&mut c, "/s2s/event", &json_h, e.to_string().as_bytes());
        }
        let gr = json!({"event_type": "level_up", "event_id": format!("ev-conc-g{n}"),
                        "identifiers": {"user_id": s}});
        post_ok(
            &mut c,
            "/api/v1/event",
            &[("X-API-Key", &key), ("Content-Type", "application/json")],
            gr.to_string().as_bytes(),
        );
    }

    // Someone else's events, sent one after another for as long as the erasures run.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (stop, addr, bearer) = (stop.clone(), inlet.addr, bearer.clone());
        std::thread::spawn(move || {
            let mut c = Client::new(addr);
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                let id = format!("ev-bg-{n}");
                let mut e = event(&id);
                e["install_uuid"] = json!(format!("inst-bg-{n}"));
                let h = [
                    ("Authorization", bearer.as_str()),
                    ("Content-Type", "application/json"),
                ];
                let r = c.post("/s2s/event", &h, e.to_string().as_bytes()).unwrap();
                if r.status == 200 {
                    acked.push(id);
                }
                n += 1;
            }
            acked
        })
    };

    let start = Arc::new(Barrier::new(subjects.len()));
    let erasures: Vec<_> = subjects
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let (start, id) = (start.clone(), format!("user_id={s}"));
            let (addr, data) = (inlet.addr, inlet.data().to_owned());
            std::thread::spawn(move || -> Value {
                let mut admin = (n > 0).then(|| Admin::login(addr, crate::admin::PASSWORD));
                start.wait();
                match admin.as_mut() {
                    Some(admin) => {
                        let r = admin.post(
                            "/admin/api/erasures",
                            &json!({ "app": "default", "id": id }),
                        );
                        assert_eq!(r.status, 201, "{}", r.text());
                        r.json()
                    }
                    None => serde_json::from_str(&cli_ok(
                        &data,
                        &["erase", "--app", "default", &format!("--id={id}")],
                    ))
                    .unwrap(),
                }
            })
        })
        .collect();
    let receipts: Vec<Value> = erasures.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let acked = sender.join().unwrap();

    let mut ids: Vec<&str> = receipts
        .iter()
        .map(|r| {
            assert_eq!(r["events"], 4, "{r}");
            r["erasure_id"].as_str().unwrap()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), subjects.len(), "one receipt each: {receipts:?}");
    let ledger = inlet.cli_ok(&["erasures", "list"]);
    assert!(ids.iter().all(|id| ledger.contains(id)), "{ledger}");

    let stored = inlet.export();
    let mut seen = std::collections::HashMap::new();
    for e in &stored {
        *seen
            .entry(e["event_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "stored twice: {seen:?}");
    assert!(
        acked.iter().all(|id| seen.contains_key(id)),
        "an acknowledged event is missing"
    );
    assert_eq!(
        stored.len(),
        acked.len(),
        "only the others' events are left"
    );
    for s in &subjects {
        assert_eq!(files_contain(inlet.data(), s.as_bytes()), None, "{s}");
    }
    assert_eq!(files_contain(inlet.data(), b"ev-conc-"), None);

    inlet.signal_and_wait("TERM");
    let store = inlet::store::Store::open(inlet.data()).unwrap();
    let report = store.verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A copy `inlet restore` kept in the data dir (`inlet.redb.pre-restore-*`) holds the subject
/// too: a later erasure reaches it.
#[test]
fn an_erasure_reaches_the_copy_a_restore_kept() {
    let (mut inlet, key, secret) = server();
    send_profile(&inlet, &key, &secret);
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("b.redb");
    inlet.cli_ok(&["backup", backup.to_str().unwrap()]);
    inlet.signal_and_wait("TERM");
    cli_ok(inlet.data(), &["restore", backup.to_str().unwrap()]);
    let kept: Vec<_> = std::fs::read_dir(inlet.data())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("inlet.redb.pre-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept = inlet.data().join(&kept[0]);
    let holds = |needle: &str| {
        let bytes = std::fs::read(&kept).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    };
    assert!(
        holds(U),
        "the kept copy holds the subject before the erasure"
    );
    inlet.restart();
    let receipt: Value = serde_json::from_str(&inlet.cli_ok(&[
        "erase",
        "--app",
        "default",
        &format!("--id=user_id={U}"),
    ]))
    .unwrap();
    assert_eq!(receipt["events"], 6, "{receipt}");
    assert_eq!(leftover(inlet.data()), None);
    assert!(kept.exists(), "the kept copy stays, without the subject");
    assert!(
        !holds(U) && holds(OTHER),
        "only the subject left the kept copy"
    );
}

/// An erased subject's quarantined events (refused, kept for a replay) go too: a replay must
/// not bring them back, and no file keeps them.
#[test]
fn an_erasure_reaches_the_quarantine() {
    const SUBJECT: &str = "held-subject-4c1e";
    let (inlet, key, _secret) = server();
    let only_purchases = inlet
        .cli_ok(&[
            "keys", "mint", "--app", "default", "--label", "p", "--events", "purchase",
        ])
        .trim()
        .to_owned();
    let mut c = inlet.client();
    let mut stored = event("ev-held-ok");
    stored["install_uuid"] = json!("inst-held-1a2b");
    stored["user_id"] = json!(SUBJECT);
    assert_eq!(c.post_json("/s2s/event", &key, &stored).status, 200);
    // Refused as not allowed by the key, so held: one alone, one in a bulk beside someone else's.
    let mut alone = event("ev-held-1");
    alone["event_name"] = json!("refund");
    alone["user_id"] = json!(SUBJECT);
    alone["install_uuid"] = json!("inst-held-9f8e");
    assert_eq!(
        c.post_json("/s2s/event", &only_purchases, &alone).status,
        403
    );
    let mut linked = event("ev-held-2");
    linked["event_name"] = json!("refund");
    linked["install_uuid"] = json!("inst-held-1a2b");
    let mut other = event("ev-held-other");
    other["event_name"] = json!("refund");
    other["install_uuid"] = json!("inst-keep-7788");
    let bulk = json!({ "events": [linked, other] });
    let r = c.post_json("/s2s/events/bulk", &only_purchases, &bulk);
    assert_eq!(r.json()["rejected"], 2, "{}", r.text());
    let held = || -> Vec<String> {
        let out = inlet.cli_ok(&["quarantine", "list", "--app", "default", "--json"]);
        let doc: Value = serde_json::from_str(&out).unwrap();
        let mut ids: Vec<String> = doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    wait_for("three events held", || held().len() == 3);

    let receipt: Value = serde_json::from_str(&inlet.cli_ok(&[
        "erase",
        "--app",
        "default",
        &format!("--id=user_id={SUBJECT}"),
    ]))
    .unwrap();
    assert_eq!(receipt["events"], 1, "{receipt}");
    assert_eq!(held(), ["ev-held-other"]);
    for needle in [SUBJECT, "inst-held-1a2b", "inst-held-9f8e"] {
        assert_eq!(
            files_contain(inlet.data(), needle.as_bytes()),
            None,
            "{needle}"
        );
    }
}

/// On a cluster node's database the events also live in the engine's stream, which only the
/// running node's erasure reaches (tests/it/cluster_erase.rs): an erasure on the stopped
/// node's files is refused with its reason rather than half done.
#[test]
fn an_erasure_on_a_cluster_nodes_database_is_refused() {
    let (mut inlet, key, _secret) = server();
    let mut e = event("ev-cluster-node");
    e["user_id"] = json!("cluster-subject");
    assert_eq!(inlet.client().post_json("/s2s/event", &key, &e).status, 200);
    inlet.signal_and_wait("TERM");
    {
        let store = inlet::store::Store::open(inlet.data()).unwrap();
        let db = store.db().unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(inlet::store::tables::CLUSTER_APPLIED)
            .unwrap()
            .insert(0u32, 1u64)
            .unwrap();
        txn.commit().unwrap();
    }
    let out = cli(
        inlet.data(),
        &["erase", "--app", "default", "--id=user_id=cluster-subject"],
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("through the running node"), "{said}");
    assert!(files_contain(inlet.data(), b"cluster-subject").is_some());
}
