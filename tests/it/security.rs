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
    // The key with its last character changed (to one it is not).
    let last = if key_b.ends_with('0') { '1' } else { '0' };
    let near = format!("{}{last}", &key_b[..key_b.len() - 1]);
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

/// GameRebellion's per-key rate limit holds whatever else the request varies: forwarding
/// headers, other credentials alongside, paths, key spelling. Only the key counts.
#[test]
fn the_rate_limit_cannot_be_bypassed_by_varying_headers() {
    let inlet = Inlet::start();
    let key = inlet
        .cli_ok(&[
            "keys",
            "mint",
            "--app",
            "default",
            "--label",
            "limited",
            "--rate-limit",
            "3",
        ])
        .trim()
        .to_owned();
    let now_secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // A window is a calendar minute: run well inside one.
    wait_for("not the last seconds of a minute", || now_secs() % 60 < 45);
    let mut c = inlet.client();
    let body = json!({"event_type": "tick"}).to_string();
    let send = |c: &mut Client, path: &str, extra: &[(&str, &str)], k: &str| -> u16 {
        let mut h: Vec<(&str, &str)> = vec![("X-API-Key", k), ("Content-Type", "application/json")];
        h.extend_from_slice(extra);
        c.post(path, &h, body.as_bytes()).expect("request").status
    };
    for _ in 0..3 {
        assert_eq!(send(&mut c, "/api/v1/event", &[], &key), 200);
    }
    let other = inlet.mint("default");
    let auth_other = format!("Bearer {other}");
    let spaced = format!(" {key} ");
    let upper = key.to_uppercase();
    type Variant<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let variants: Vec<Variant> = vec![
        (
            "/api/v1/event",
            vec![("X-Forwarded-For", "203.0.113.9")],
            &key,
        ),
        ("/api/v1/event", vec![("X-Real-IP", "198.51.100.7")], &key),
        ("/api/v1/event", vec![("Forwarded", "for=192.0.2.1")], &key),
        ("/api/v1/event", vec![("Authorization", &auth_other)], &key),
        ("/api/v1/event", vec![("User-Agent", "other/1.0")], &key),
        ("/api/v1/events", vec![], &key),
        ("/api/v1/sessions/start", vec![], &key),
        ("/api/v1/event", vec![], &spaced),
        ("/api/v1/event", vec![], &upper),
    ];
    for (path, extra, k) in &variants {
        let status = send(&mut c, path, extra, k);
        assert!(
            status == 429 || status == 401,
            "{path} {extra:?} {k:?} got {status}: the limit was bypassed"
        );
    }
}

/// Adjust names the app in the request (`app_token`): a key of another app is refused, and
/// nothing is stored in either app.
#[test]
fn an_adjust_app_token_of_another_app_is_refused() {
    let inlet = Inlet::start();
    inlet.cli_ok(&["apps", "add", "b", "--tenant", "default"]);
    inlet.cli_ok(&["apps", "configure", "b", "--adjust-app-token", "tokb"]);
    inlet.cli_ok(&["apps", "adjust-event", "b", "ev1", "purchase"]);
    let key_a = inlet.mint("default");
    let key_b = inlet.mint("b");
    let mut c = inlet.client();
    let path = "/event?s2s=1&app_token=tokb&event_token=ev1&adid=abc123";
    let r = c
        .request(
            "GET",
            path,
            &[("Authorization", &format!("Bearer {key_a}"))],
            b"",
        )
        .unwrap();
    assert!(
        (400..500).contains(&r.status),
        "key of app default wrote to app b: {} {}",
        r.status,
        r.text()
    );
    assert!(inlet.export().is_empty(), "nothing stored");
    // The right key works (so the refusal above was about the app).
    let r = c
        .request(
            "GET",
            path,
            &[("Authorization", &format!("Bearer {key_b}"))],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let events = inlet.export();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["app"], "b");
}

/// The admin password, session cookie, CSRF token and a key minted through the admin API
/// appear in no file of the data dir and in no log line, with debug logging on.
#[test]
fn admin_secrets_never_reach_disk_or_logs() {
    use crate::admin::{Admin, PASSWORD};
    let inlet = Inlet::start_logged("debug", &[]);
    let mut admin = Admin::setup(&inlet);
    let r = admin.post(
        "/admin/api/keys",
        &json!({ "app": "default", "label": "from the panel" }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(
        inlet
            .client()
            .post_json("/s2s/event", &key, &event("x"))
            .status,
        200
    );
    let wrong = Client::new(inlet.addr)
        .post(
            "/admin/api/login",
            &[("Content-Type", "application/json")],
            json!({ "password": "not the password" })
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(wrong.status, 401);
    let again = Admin::login(inlet.addr, PASSWORD);
    let token = |cookie: &str| cookie.split_once('=').map(|(_, v)| v.to_owned()).unwrap();
    let log = inlet.log.lock().unwrap().clone();
    assert!(log.contains("request"), "debug logging was on");
    for secret in [
        PASSWORD.to_owned(),
        "not the password".to_owned(),
        token(&admin.cookie),
        token(&again.cookie),
        admin.csrf.clone(),
        key.clone(),
        key[4..].to_owned(),
    ] {
        assert_eq!(
            files_contain(inlet.data(), secret.as_bytes()),
            None,
            "on disk"
        );
        assert!(!log.contains(&secret), "in the log: {secret}");
    }
}
