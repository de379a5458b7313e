//! Alert rules against a running server: a webhook receiver on 127.0.0.1 sees one fire per
//! incident, a retry after a 500, a valid signature and a resolved message.

use crate::admin::Admin;
use crate::support::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// What the receiver got: (X-Inlet-Signature, body) per request.
type Got = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver answering 500 to its first request and 200 to the others.
fn receiver() -> (String, Got) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Got = Default::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let (mut len, mut sig) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-inlet-signature:") {
                    sig = line.split_once(':').unwrap().1.trim().to_owned();
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let first = {
                let mut g = g.lock().unwrap();
                g.push((sig, String::from_utf8_lossy(&body).into_owned()));
                g.len() == 1
            };
            let status = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (url, got)
}

/// Checks `t=<unix>,v1=<hex>` against HMAC-SHA256(secret, "<unix>.<body>").
fn verify(secret: &str, header: &str, body: &str) -> bool {
    let Some((t, v1)) = header.strip_prefix("t=").and_then(|r| r.split_once(",v1=")) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mac: Vec<u8> = (0..v1.len() / 2)
        .filter_map(|i| u8::from_str_radix(v1.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    ring::hmac::verify(&key, format!("{t}.{body}").as_bytes(), &mac).is_ok()
}

fn types(got: &Got, rule: u64) -> Vec<(String, Value)> {
    got.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, b)| serde_json::from_str::<Value>(b).ok())
        .filter(|v| v["rule"]["id"] == rule)
        .map(|v| (v["type"].as_str().unwrap().to_owned(), v))
        .collect()
}

#[test]
fn a_silence_fires_once_retries_after_a_500_is_signed_and_resolves() {
    let inlet = Inlet::start_with(&["--alert-interval-ms", "100"]);
    let mut admin = Admin::setup(&inlet);
    let key = inlet.mint("default");
    let (url, got) = receiver();
    let r = admin.post(
        "/admin/api/alerts",
        &json!({ "app": "default", "condition": { "kind": "silence", "secs": 1 }, "webhook": url }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let rule = r.json()["id"].as_u64().unwrap();
    let secret = r.json()["webhook_secret"].as_str().unwrap().to_owned();
    assert!(!admin.get("/admin/api/alerts").text().contains(&secret));
    assert!(!admin.get("/admin/api/alerts").text().contains("sealed"));

    // Silent since the start: it fires; the first attempt gets a 500 and is retried.
    wait_for("a fire delivered after a retry", || {
        types(&got, rule)
            .iter()
            .filter(|(t, _)| t == "alert.fired")
            .count()
            >= 2
    });
    let fired: Vec<Value> = types(&got, rule)
        .into_iter()
        .filter(|(t, _)| t == "alert.fired")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(fired[0], fired[1], "the retry carries the same message");
    for (sig, body) in got.lock().unwrap().iter() {
        assert!(verify(&secret, sig, body), "bad signature {sig} of {body}");
        assert!(!verify("another secret", sig, body));
    }
    let deliveries = admin.get("/admin/api/alerts").json();
    assert_eq!(deliveries["firing"][0]["rule"], rule);
    wait_for("the delivery shown as delivered", || {
        let d = admin.get("/admin/api/alerts").json();
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["state"] == "delivered" && d["attempts"] == 2 && d["kind"] == "alert.fired")
    });
    // Still silent: no second fire for the same incident.
    let m = inlet.client().get("/metrics").unwrap().text();
    assert!(m.contains("inlet_alerts_firing 1"), "{m}");
    // An event ends the incident.
    assert_eq!(
        inlet
            .client()
            .post_json("/s2s/event", &key, &event("e1"))
            .status,
        200
    );
    wait_for("the resolved message", || {
        types(&got, rule).iter().any(|(t, _)| t == "alert.resolved")
    });
    let seen = types(&got, rule);
    let until_resolved = seen
        .iter()
        .position(|(t, _)| t == "alert.resolved")
        .unwrap();
    assert_eq!(
        until_resolved, 2,
        "one fire (and its retry) per incident: {seen:?}"
    );
    let (sig, body) = got.lock().unwrap().last().unwrap().clone();
    assert!(verify(&secret, &sig, &body));

    // Removal; a missing rule is a 404; a bad rule a 400.
    assert_eq!(
        admin
            .post(&format!("/admin/api/alerts/{rule}/remove"), &json!({}))
            .status,
        200
    );
    assert_eq!(
        admin
            .post(&format!("/admin/api/alerts/{rule}/remove"), &json!({}))
            .status,
        404
    );
    let r = admin.post(
        "/admin/api/alerts",
        &json!({ "app": "default", "condition": { "kind": "silence", "secs": 1 }, "webhook": "https://x/" }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin.post(
        "/admin/api/alerts",
        &json!({ "app": "nope", "condition": { "kind": "quota", "pct": 80 } }),
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn a_rejection_share_fires_through_gamerebellion_and_resolves_with_accepted_events() {
    let inlet = Inlet::start_with(&["--alert-interval-ms", "100"]);
    let mut admin = Admin::setup(&inlet);
    let key = inlet.mint("default");
    let (url, got) = receiver();
    let r = admin.post(
        "/admin/api/alerts",
        &json!({
            "app": "default", "key": 1, "webhook": url,
            "condition": { "kind": "rejections", "pct": 50, "window_minutes": 5, "min_events": 2 },
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let rule = r.json()["id"].as_u64().unwrap();
    let mut c = inlet.client();
    let gr = |c: &mut Client, body: Value| {
        c.post(
            "/api/v1/event",
            &[
                ("X-API-Key", key.as_str()),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .unwrap()
    };
    for i in 0..3 {
        let r = gr(&mut c, json!({ "event_type": "x", "event_id": 7 + i }));
        assert_eq!(r.status, 400, "{}", r.text());
    }
    wait_for("the fire", || {
        types(&got, rule).iter().any(|(t, _)| t == "alert.fired")
    });
    for i in 0..10 {
        gr(
            &mut c,
            json!({ "event_type": "level_up", "event_id": format!("ok{i}") }),
        );
    }
    wait_for("the resolved message", || {
        types(&got, rule).iter().any(|(t, _)| t == "alert.resolved")
    });
    // The test message goes to the webhook too.
    assert_eq!(
        admin
            .post(&format!("/admin/api/alerts/{rule}/test"), &json!({}))
            .status,
        202
    );
    wait_for("the test message", || {
        types(&got, rule).iter().any(|(t, _)| t == "alert.test")
    });
}

#[test]
fn the_cli_adds_lists_tests_and_removes_rules() {
    let inlet = Inlet::start();
    let (url, got) = receiver();
    let out = inlet.cli_ok(&[
        "alerts",
        "add",
        "--app",
        "default",
        "--silent-for",
        "2h",
        "--webhook",
        &url,
    ]);
    assert!(
        out.contains("alert rule 1 added: no events for 7200 s"),
        "{out}"
    );
    let secret = out
        .split("(shown once): ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let out = inlet.cli_ok(&["alerts", "add", "--app", "default", "--quota-above", "80"]);
    assert!(out.contains("alert rule 2 added"), "{out}");
    let bad = inlet.cli(&["alerts", "add", "--app", "default"]);
    assert!(!bad.status.success());
    let list = inlet.cli_ok(&["alerts", "list"]);
    assert!(
        list.contains("app=default") && list.contains(&url),
        "{list}"
    );
    assert!(!list.contains(&secret));
    // The receiver answers its first request with a 500.
    let out = inlet.cli_ok(&["alerts", "test", "1"]);
    assert!(out.contains("webhook answered 500"), "{out}");
    let out = inlet.cli_ok(&["alerts", "test", "1"]);
    assert!(out.contains("webhook answered 200"), "{out}");
    let (sig, body) = got.lock().unwrap()[1].clone();
    assert!(body.contains("alert.test"));
    assert!(verify(&secret, &sig, &body));
    inlet.cli_ok(&["alerts", "remove", "1"]);
    let json: Value = serde_json::from_str(&inlet.cli_ok(&["alerts", "list", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert!(!inlet.cli(&["alerts", "remove", "1"]).status.success());
}
