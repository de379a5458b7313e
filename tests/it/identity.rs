//! The identity graph across dialects: identifiers that appear together in any stored event
//! (Reflect, GameRebellion, Adjust, AppsFlyer, Datafly) are linked per app, and
//! `inlet profile` shows them.

use crate::support::*;
use inlet::auth::secrets::sign;
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn reflect(c: &mut Client, key: &str, body: Value) {
    let r = c.post_json("/s2s/event", key, &body);
    assert_eq!(r.status, 200, "{}", r.text());
}

fn appsflyer(c: &mut Client, method: &str, body: Value) {
    let r = c
        .post(
            &format!("/v1/web.bundle/{method}"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
}

fn datafly(c: &mut Client, secret: &str, body: Value) {
    let body = body.to_string();
    let ts = now_ms().to_string();
    let sig = sign(secret, &ts, body.as_bytes());
    let r = c
        .post(
            "/v1/events",
            &[("X-Signature", &sig), ("X-Timestamp", &ts)],
            body.as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

fn profile(inlet: &Inlet, app: &str, id: &str) -> Value {
    serde_json::from_str(&inlet.cli_ok(&["profile", app, id, "--json"])).unwrap()
}

fn identifiers(p: &Value) -> BTreeSet<(String, String)> {
    p["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn seqs(p: &Value) -> Vec<u64> {
    p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn identifiers_are_linked_across_every_dialect() {
    let mut inlet = Inlet::start();
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--appsflyer-bundle-id",
        "web.bundle",
    ]);
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-app-token",
        "4w565xzmb54d",
    ]);
    inlet.cli_ok(&["apps", "adjust-event", "default", "f0ob4r", "purchase"]);
    inlet.cli_ok(&["apps", "add", "other", "--tenant", "default"]);
    let key = inlet.mint("default");
    let other_key = inlet.mint("other");
    let secret = inlet
        .cli_ok(&["secrets", "mint", "--app", "default", "--label", "web"])
        .trim()
        .to_owned();
    let mut c = inlet.client();
    let event = |id: &str, install: &str| {
        let mut e = event(id);
        e["install_uuid"] = json!(install);
        e
    };

    // 1. Reflect: an install, its user and a game's player id.
    let mut e = event("r1", "I1");
    e["user_id"] = json!("U1");
    e["ids"] = json!({"player_id": "P1"});
    reflect(&mut c, &key, e.clone());
    reflect(&mut c, &key, e); // a duplicate: not stored, nothing new
    // 2. AppsFlyer setcuid: the same user and a web cookie id.
    appsflyer(
        &mut c,
        "setcuid",
        json!({"customerUserId": "U1", "afUserId": "AF1", "webDevKey": key}),
    );
    // 3. AppsFlyer event carrying only the cookie id.
    appsflyer(
        &mut c,
        "event",
        json!({"afUserId": "AF1", "webDevKey": key, "eventType": "EVENT", "eventName": "web_visit"}),
    );
    // 4. Datafly identify: the user and an anonymous id.
    datafly(
        &mut c,
        &secret,
        json!({"type": "identify", "userId": "U1", "anonymousId": "N1"}),
    );
    // 5. Datafly track with only the anonymous id.
    datafly(
        &mut c,
        &secret,
        json!({"type": "track", "event": "Viewed", "anonymousId": "N1"}),
    );
    // 6. GameRebellion: the user and the device's advertising id.
    let r = c
        .post(
            "/api/v1/event",
            &[("X-API-Key", &key), ("Content-Type", "application/json")],
            json!({"event_type": "level_up", "event_id": "g1",
                   "identifiers": {"user_id": "U1", "idfa": "IDFA-1"}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // 7. Adjust: an event of that device only.
    let auth = format!("Bearer {key}");
    let r = c
        .request(
            "GET",
            "/event?s2s=1&event_token=f0ob4r&app_token=4w565xzmb54d&idfa=IDFA-1",
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    // Someone else, the same user id in another app, and two installs sharing only the
    // zeroed advertising id (a placeholder, not an identifier).
    let mut e = event("r2", "I2");
    e["user_id"] = json!("U2");
    reflect(&mut c, &key, e);
    let mut e = event("r3", "I3");
    e["user_id"] = json!("U1");
    reflect(&mut c, &other_key, e);
    for (id, install) in [("r4", "I4"), ("r5", "I5")] {
        let mut e = event(id, install);
        e["ids"] = json!({"idfa": "00000000-0000-0000-0000-000000000000"});
        reflect(&mut c, &key, e);
    }

    let everyone = set(&[
        ("anonymous_id", "N1"),
        ("user_id", "U1"),
        ("install_uuid", "I1"),
        ("player_id", "P1"),
        ("af_user_id", "AF1"),
        ("idfa", "IDFA-1"),
    ]);
    for id in ["N1", "U1", "I1", "P1", "AF1", "IDFA-1"] {
        let p = profile(&inlet, "default", id);
        assert_eq!(identifiers(&p), everyone, "profile of {id}");
        assert_eq!(p["identifiers"][0]["value"], id, "the asked-for id first");
        assert_eq!(
            seqs(&p),
            [7, 6, 5, 4, 3, 2, 1],
            "most recently stored first"
        );
        let sources: BTreeSet<&str> = p["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["source"].as_str().unwrap())
            .collect();
        assert_eq!(
            sources,
            BTreeSet::from(["adjust", "appsflyer", "datafly", "gamerebellion", "reflect"])
        );
    }
    let p = profile(&inlet, "default", "U2");
    assert_eq!(
        identifiers(&p),
        set(&[("user_id", "U2"), ("install_uuid", "I2")])
    );
    assert_eq!(seqs(&p), [8]);
    let p = profile(&inlet, "other", "U1");
    assert_eq!(
        identifiers(&p),
        set(&[("user_id", "U1"), ("install_uuid", "I3")])
    );
    let p = profile(&inlet, "default", "I4");
    assert_eq!(
        identifiers(&p),
        set(&[("install_uuid", "I4")]),
        "placeholders link nothing"
    );
    let missing = inlet.cli(&["profile", "default", "00000000-0000-0000-0000-000000000000"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("carries the identifier"));

    // --kind narrows the start to one kind of the value.
    let p: Value = serde_json::from_str(
        &inlet.cli_ok(&["profile", "default", "U1", "--kind", "user_id", "--json"]),
    )
    .unwrap();
    assert_eq!(identifiers(&p), everyone);
    assert!(
        !inlet
            .cli(&["profile", "default", "U1", "--kind", "player_id"])
            .status
            .success()
    );

    // --limit, and the table form.
    let limited: Value = serde_json::from_str(
        &inlet.cli_ok(&["profile", "default", "N1", "--json", "--limit", "2"]),
    )
    .unwrap();
    assert_eq!(seqs(&limited), [7, 6]);
    let text = inlet.cli_ok(&["profile", "default", "AF1"]);
    assert!(
        text.starts_with("identifiers linked to AF1 in app default:\nKIND"),
        "{text}"
    );
    assert!(text.contains("player_id") && text.contains("events, most recently stored first"));
    assert!(
        text.contains("Viewed") && text.contains("setcuid"),
        "{text}"
    );

    // The admin API gives the same document.
    let mut admin = crate::admin::Admin::setup(&inlet);
    let r = admin.get("/admin/api/profile?app=default&id=AF1&limit=3");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(identifiers(&r.json()), everyone);
    assert_eq!(seqs(&r.json()), [7, 6, 5]);
    assert_eq!(
        admin.get("/admin/api/profile?app=default&id=nobody").status,
        404
    );
    assert_eq!(admin.get("/admin/api/profile?app=default").status, 400);

    // The same answer without a server.
    inlet.signal_and_wait("TERM");
    let p = profile(&inlet, "default", "P1");
    assert_eq!(identifiers(&p), everyone);
    let missing_app = inlet.cli(&["profile", "ghost", "U1"]);
    assert!(!missing_app.status.success());
}
