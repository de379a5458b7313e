//! Seeing and recovering events (issue 21): dry runs through every dialect, receipts.

use crate::support::*;
use inlet::auth::secrets::sign;
use serde_json::{Value, json};

const APP_TOKEN: &str = "4w565xzmb54d";
const EVENT_TOKEN: &str = "f0ob4r";
const BUNDLE: &str = "com.studio.web";
const DRY: (&str, &str) = ("X-Inlet-Dry-Run", "1");

/// A server whose app `default` speaks every dialect: a key, an Adjust app and event token,
/// an AppsFlyer bundle id and a Datafly signing secret.
struct Setup {
    inlet: Inlet,
    key: String,
    secret: String,
    /// Adjust's `created_at_unix` (its event id is made from the parameters).
    created: u64,
}

fn setup() -> Setup {
    let inlet = Inlet::start();
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-app-token",
        APP_TOKEN,
        "--appsflyer-bundle-id",
        BUNDLE,
    ]);
    inlet.cli_ok(&["apps", "adjust-event", "default", EVENT_TOKEN, "purchase"]);
    let key = inlet.mint("default");
    let secret = inlet
        .cli_ok(&["secrets", "mint", "--app", "default", "--label", "backend"])
        .trim()
        .to_owned();
    let created = now_ms() / 1000 - 3600;
    Setup {
        inlet,
        key,
        secret,
        created,
    }
}

/// Everything a request could have left behind: the stored events (the export, byte for
/// byte), the tenants' usage, the keys' last use, and the outcome counters of `/metrics`.
fn footprint(inlet: &Inlet) -> (String, String, String, Vec<String>) {
    let export = inlet.cli_ok(&["export"]);
    let tenants = inlet.cli_ok(&["tenants", "list", "--json"]);
    let keys = inlet.cli_ok(&["keys", "list", "--json"]);
    let metrics = inlet.client().get("/metrics").unwrap().text();
    let mut counters: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with("inlet_events_") || l.starts_with("inlet_dedupe_prechecked"))
        .map(str::to_owned)
        .collect();
    counters.sort();
    (export, tenants, keys, counters)
}

fn headers<'a>(pairs: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

impl Setup {
    fn native(&self, c: &mut Client, dry: bool, event: &Value) -> Resp {
        let mut h = vec![
            ("Authorization", format!("Bearer {}", self.key)),
            ("Content-Type", "application/json".to_owned()),
        ];
        if dry {
            h.push((DRY.0, DRY.1.to_owned()));
        }
        c.post("/s2s/event", &headers(&h), event.to_string().as_bytes())
            .unwrap()
    }

    fn bulk(&self, c: &mut Client, ids: &[&str]) -> Resp {
        let events: Vec<Value> = ids.iter().map(|id| event(id)).collect();
        let h = vec![
            ("Authorization", format!("Bearer {}", self.key)),
            ("Content-Type", "application/json".to_owned()),
            (DRY.0, DRY.1.to_owned()),
        ];
        let body = json!({ "events": events }).to_string();
        c.post("/s2s/events/bulk", &headers(&h), body.as_bytes())
            .unwrap()
    }

    fn gr(&self, c: &mut Client, dry: bool, id: &str) -> Resp {
        let mut h = vec![
            ("X-API-Key", self.key.clone()),
            ("Content-Type", "application/json".to_owned()),
        ];
        if dry {
            h.push((DRY.0, DRY.1.to_owned()));
        }
        let body = json!({"event_type": "level_up", "event_id": id});
        c.post("/api/v1/event", &headers(&h), body.to_string().as_bytes())
            .unwrap()
    }

    /// An Adjust GET; a dry run says so in the query string (Adjust's clients set no
    /// headers).
    fn adjust(&self, c: &mut Client, dry: Option<&str>, idfa: &str) -> Resp {
        let mut path = format!(
            "/event?s2s=1&app_token={APP_TOKEN}&event_token={EVENT_TOKEN}&idfa={idfa}&created_at_unix={}",
            self.created
        );
        if let Some(value) = dry {
            path.push_str(&format!("&inlet_dry_run={value}"));
        }
        let auth = format!("Bearer {}", self.key);
        c.request("GET", &path, &[("Authorization", &auth)], b"")
            .unwrap()
    }

    fn appsflyer(&self, c: &mut Client, dry: bool, customer: &str) -> Resp {
        let body = json!({
            "customerUserId": customer, "webDevKey": self.key, "eventType": "EVENT",
            "eventName": "web_purchase", "timestamp": now_ms(),
        });
        let mut h = vec![("Content-Type", "application/json".to_owned())];
        if dry {
            h.push((DRY.0, DRY.1.to_owned()));
        }
        c.post(
            &format!("/v1/{BUNDLE}/event"),
            &headers(&h),
            body.to_string().as_bytes(),
        )
        .unwrap()
    }

    fn datafly(&self, c: &mut Client, dry: bool, id: &str) -> Resp {
        let body = json!({"type": "track", "event": "Order Completed", "userId": "user_1", "messageId": id})
            .to_string();
        let ts = now_ms().to_string();
        let sig = sign(&self.secret, &ts, body.as_bytes());
        let mut h = vec![
            ("Content-Type", "application/json".to_owned()),
            ("X-Signature", sig),
            ("X-Timestamp", ts),
        ];
        if dry {
            h.push((DRY.0, DRY.1.to_owned()));
        }
        c.post("/v1/events", &headers(&h), body.as_bytes()).unwrap()
    }
}

fn marked(r: &Resp) -> &Resp {
    assert_eq!(
        r.header("x-inlet-dry-run"),
        Some("1"),
        "a dry run's answer says so: {} {}",
        r.status,
        r.text()
    );
    r
}

fn unmarked(r: &Resp) -> &Resp {
    assert_eq!(r.header("x-inlet-dry-run"), None, "{}", r.text());
    r
}

#[test]
fn a_dry_run_answers_like_the_real_request_and_leaves_nothing_behind() {
    let s = setup();
    let mut c = s.inlet.client();
    // One stored event per dialect (AppsFlyer's and Adjust's ids are derived from the body).
    assert_eq!(
        unmarked(&s.native(&mut c, false, &event("n-1"))).status,
        200
    );
    assert_eq!(unmarked(&s.gr(&mut c, false, "g-1")).status, 200);
    assert_eq!(unmarked(&s.adjust(&mut c, None, "IDFA-1")).text(), "OK");
    assert_eq!(unmarked(&s.appsflyer(&mut c, false, "cu-1")).status, 200);
    assert_eq!(unmarked(&s.datafly(&mut c, false, "d-1")).status, 200);
    let stored = s.inlet.export().len();
    assert_eq!(stored, 5);
    let scoped = s
        .inlet
        .cli_ok(&[
            "keys", "mint", "--app", "default", "--label", "s", "--events", "open",
        ])
        .trim()
        .to_owned();
    let before = footprint(&s.inlet);

    // New events: answered as accepted, marked, where the body is inlet's with a field.
    let r = s.native(&mut c, true, &event("n-2"));
    let body = marked(&r).json();
    assert_eq!(
        (r.status, &body["dry_run"], &body["accepted"]),
        (200, &json!(true), &json!(1))
    );
    assert!(
        r.text().starts_with(r#"{"dry_run":true,"accepted":1,"#),
        "{}",
        r.text()
    );
    let r = s.gr(&mut c, true, "g-2");
    let body = marked(&r).json();
    assert_eq!((r.status, &body["dry_run"]), (200, &json!(true)));
    assert_eq!(body["accepted"], 1);
    let r = s.adjust(&mut c, Some("1"), "IDFA-2");
    assert_eq!((marked(&r).status, r.text().as_str()), (200, "OK"));
    let r = s.appsflyer(&mut c, true, "cu-2");
    assert_eq!((marked(&r).status, r.text().as_str()), (200, "OK"));
    let r = s.datafly(&mut c, true, "d-2");
    assert_eq!(
        (marked(&r).status, r.json()),
        (200, json!({"success": true}))
    );

    // Stored ids: answered as duplicates, with the original's audit key.
    let r = s.native(&mut c, true, &event("n-1"));
    let body = marked(&r).json();
    assert_eq!(
        (&body["duplicate"], &body["dry_run"]),
        (&json!(true), &json!(true))
    );
    assert!(body["audit_key"].as_str().unwrap().ends_with("/n-1.json"));
    let r = s.gr(&mut c, true, "g-1");
    assert_eq!(marked(&r).json()["duplicate"], true);

    // A batch: a stored id, a new one twice (the second a duplicate of the first, within
    // the request), a refused one.
    let r = s.bulk(&mut c, &["n-1", "n-3", "n-3"]);
    let body = marked(&r).json();
    assert_eq!(body["dry_run"], true);
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["duplicate", "accepted", "duplicate"]);
    assert_eq!(
        (&body["accepted"], &body["duplicates"]),
        (&json!(1), &json!(2))
    );

    // Refusals are answered as the real request would be, marked, and not counted.
    let r = s.native(&mut c, true, &json!({"event_name": "x"}));
    assert_eq!(marked(&r).status, 400);
    assert_eq!(r.json()["dry_run"], true);
    let r = c
        .post(
            "/s2s/event",
            &[("Authorization", &format!("Bearer {scoped}")), DRY],
            event("n-4").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(marked(&r).json()["error"], "event_not_allowed_by_key");
    let r = c
        .post(
            "/s2s/event",
            &[("Authorization", "Bearer srv_nope"), DRY],
            b"{}",
        )
        .unwrap();
    assert_eq!(marked(&r).status, 401);

    assert_eq!(
        footprint(&s.inlet),
        before,
        "a dry run stores, counts and records nothing"
    );
    assert!(
        s.inlet
            .cli(&["audit", "get", &format!("s2s/{}/n-2.json", today())])
            .status
            .code()
            != Some(0),
        "a dry run's body is not kept"
    );

    // `inlet_dry_run` is taken out of the parameters whatever its value: with `0` this is
    // the real request, the same event as the stored one (Adjust's id is made from them).
    let r = s.adjust(&mut c, Some("0"), "IDFA-1");
    assert_eq!((unmarked(&r).status, r.text().as_str()), (200, "OK"));
    assert_eq!(s.inlet.export().len(), stored);

    // What the dry runs judged new is new to the real requests too.
    let r = s.native(&mut c, false, &event("n-2"));
    assert_eq!(unmarked(&r).json()["accepted"], 1);
    assert_eq!(s.gr(&mut c, false, "g-2").json()["accepted"], 1);
    assert_eq!(s.datafly(&mut c, false, "d-2").status, 200);
    assert_eq!(s.inlet.export().len(), stored + 3);
    let kept = s
        .inlet
        .cli_ok(&["audit", "get", &format!("s2s/{}/n-2.json", today())]);
    assert!(kept.contains("n-2"), "{kept}");
}

#[test]
fn a_dry_run_meets_the_quota_without_using_it() {
    let s = setup();
    s.inlet.cli_ok(&["tenants", "set-quota", "default", "1"]);
    let mut c = s.inlet.client();
    // With one event of room, a dry run is accepted and the room stays.
    for _ in 0..2 {
        let r = s.native(&mut c, true, &event("q-1"));
        assert_eq!((marked(&r).status, &r.json()["accepted"]), (200, &json!(1)));
    }
    assert_eq!(s.native(&mut c, false, &event("q-1")).status, 200);
    let before = footprint(&s.inlet);
    let r = s.native(&mut c, true, &event("q-2"));
    assert_eq!(
        (marked(&r).status, &r.json()["error"]),
        (429, &json!("cap_exceeded"))
    );
    assert!(r.header("retry-after").is_some());
    let r = s.gr(&mut c, true, "q-3");
    assert_eq!(marked(&r).status, 429);
    let r = s.datafly(&mut c, true, "q-4");
    assert_eq!(
        (marked(&r).status, &r.json()["error"]),
        (429, &json!("cap_exceeded"))
    );
    assert_eq!(footprint(&s.inlet), before);
}

fn today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `inlet receipt APP EVENT_ID --json`.
fn receipt(inlet: &Inlet, id: &str) -> Value {
    serde_json::from_str(&inlet.cli_ok(&["receipt", "default", id, "--json"])).unwrap()
}

#[test]
fn a_receipt_tells_what_became_of_an_event_through_every_path() {
    let s = setup();
    s.inlet.cli_ok(&["tenants", "set-quota", "default", "2"]);
    let mut c = s.inlet.client();
    // Native: accepted, then answered as a duplicate twice.
    for _ in 0..3 {
        assert_eq!(s.native(&mut c, false, &event("r-1")).status, 200);
    }
    // GameRebellion: accepted (the quota's last event), then a duplicate (no quota needed)
    // and one over the quota.
    assert_eq!(s.gr(&mut c, false, "r-2").json()["accepted"], 1);
    assert_eq!(s.gr(&mut c, false, "r-2").json()["duplicate"], true);
    assert_eq!(s.gr(&mut c, false, "r-3").status, 429);
    // Refused before the writer: a bulk event without a name, twice; Datafly over quota.
    let scoped = s
        .inlet
        .cli_ok(&[
            "keys", "mint", "--app", "default", "--label", "s", "--events", "open",
        ])
        .trim()
        .to_owned();
    for _ in 0..2 {
        let r = c.post_json(
            "/s2s/events/bulk",
            &scoped,
            &json!({"events": [{"event_id": "r-4", "event_ts_ms": 1_735_999_999_000u64}, event("r-5")]}),
        );
        assert_eq!(r.status, 400, "{}", r.text());
    }
    assert_eq!(s.datafly(&mut c, false, "r-6").status, 429);
    // A dry run leaves no receipt.
    assert_eq!(s.gr(&mut c, true, "r-7").status, 429);

    // The tallies reach the receipts with the writer's next commit; the events over quota
    // are kept in the quarantine (GameRebellion and Datafly keep them too).
    wait_for("the rejections' receipts", || {
        let r6 = receipt(&s.inlet, "r-6");
        r6["status"] == "quarantined"
            && r6["rejected"][0]["times"] == 1
            && receipt(&s.inlet, "r-3")["status"] == "quarantined"
            && receipt(&s.inlet, "r-3")["rejected"][0]["times"] == 1
            && receipt(&s.inlet, "r-4")["rejected"][0]["times"] == 2
    });
    let r1 = receipt(&s.inlet, "r-1");
    assert_eq!(r1["status"], "accepted");
    assert_eq!(
        (
            &r1["accepted"]["seq"],
            &r1["accepted"]["source"],
            &r1["accepted"]["key_id"]
        ),
        (&json!(1), &json!("reflect"), &json!(1))
    );
    assert_eq!(
        (&r1["duplicate"]["of_seq"], &r1["duplicate"]["times"]),
        (&json!(1), &json!(2))
    );
    let r2 = receipt(&s.inlet, "r-2");
    assert_eq!(
        (&r2["accepted"]["source"], &r2["duplicate"]["times"]),
        (&json!("gamerebellion"), &json!(1))
    );
    let r3 = receipt(&s.inlet, "r-3");
    assert_eq!(
        (
            &r3["status"],
            &r3["rejected"][0]["reason"],
            &r3["rejected"][0]["times"]
        ),
        (&json!("quarantined"), &json!("cap_exceeded"), &json!(1))
    );
    assert_eq!(
        receipt(&s.inlet, "r-4")["rejected"][0]["reason"],
        "event_name_required"
    );
    assert_eq!(
        receipt(&s.inlet, "r-5")["rejected"][0]["reason"],
        "event_not_allowed_by_key"
    );
    assert_eq!(
        receipt(&s.inlet, "r-6")["rejected"][0]["reason"],
        "cap_exceeded"
    );
    assert_eq!(receipt(&s.inlet, "r-7")["status"], "unknown");
    let text = s.inlet.cli_ok(&["receipt", "default", "r-1"]);
    assert!(
        text.contains("accepted") && text.contains("duplicate of seq 1 2 time(s)"),
        "{text}"
    );
    assert!(!s.inlet.cli(&["receipt", "nope", "r-1"]).status.success());

    // The admin API answers the same document.
    let mut admin = crate::admin::Admin::setup(&s.inlet);
    let r = admin.get("/admin/api/receipts/default/r-3");
    assert_eq!((r.status, r.json()), (200, r3));
    assert_eq!(admin.get("/admin/api/receipts/nope/r-3").status, 404);
}
