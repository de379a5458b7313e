//! Alert rules against a running server: a webhook receiver on 127.0.0.1 sees one fire per
//! incident, a retry after a 500, a valid signature and a resolved message; over HTTPS
//! (verified: a receiver whose certificate is not trusted gets nothing); and across a
//! restart (an open incident does not fire again, a delivery not yet made is made).

use crate::admin::Admin;
use crate::support::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering as AtomicOrdering};
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
        &json!({ "app": "default", "condition": { "kind": "silence", "secs": 1 }, "webhook": "ftp://x/" }),
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

/// What a [`Hook`] got: (X-Inlet-Signature, body, the status it answered) per request.
type Answered = Arc<Mutex<Vec<(String, String, u16)>>>;

/// A webhook receiver on 127.0.0.1, plain or TLS, answering `status` (which a test may
/// change while it runs).
struct Hook {
    url: String,
    got: Answered,
    status: Arc<AtomicU16>,
}

impl Hook {
    fn start(tls: Option<Arc<rustls::ServerConfig>>, status: u16) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
        let got: Answered = Default::default();
        let status = Arc::new(AtomicU16::new(status));
        let (g, st) = (got.clone(), status.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (g, st) = (g.clone(), st.clone());
                match &tls {
                    Some(config) => {
                        let Ok(server) = rustls::ServerConnection::new(config.clone()) else {
                            continue;
                        };
                        let mut s = rustls::StreamOwned::new(server, conn);
                        answer(&mut s, &g, &st);
                    }
                    None => answer(&mut { conn }, &g, &st),
                }
            }
        });
        Hook { url, got, status }
    }

    /// Messages of `kind` for `rule`, as parsed JSON with the status they were answered.
    fn messages(&self, rule: u64, kind: &str) -> Vec<(Value, u16)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, b, st)| Some((serde_json::from_str::<Value>(b).ok()?, *st)))
            .filter(|(v, _)| v["rule"]["id"] == rule && v["type"] == kind)
            .collect()
    }
}

/// Reads one request from `conn` (a failed TLS handshake reads nothing) and answers it.
fn answer(conn: &mut (impl Read + Write), got: &Answered, status: &AtomicU16) {
    let mut r = BufReader::new(conn);
    let (mut len, mut sig) = (0usize, String::new());
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
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
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let code = status.load(AtomicOrdering::SeqCst);
    got.lock()
        .unwrap()
        .push((sig, String::from_utf8_lossy(&body).into_owned(), code));
    let conn = r.into_inner();
    let _ = write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = conn.flush();
}

/// A test CA (its PEM) and a server certificate it issued for 127.0.0.1.
fn test_ca() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "inlet test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (
        ca_cert.pem(),
        server_config(leaf.der().clone(), leaf_key.serialize_der()),
    )
}

fn server_config(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
) -> Arc<rustls::ServerConfig> {
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key).into();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    Arc::new(config)
}

fn add_rule(admin: &mut Admin, secs: u64, url: &str) -> (u64, String) {
    let r = admin.post(
        "/admin/api/alerts",
        &json!({ "app": "default", "condition": { "kind": "silence", "secs": secs }, "webhook": url }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["webhook_secret"].as_str().unwrap().to_owned();
    (r.json()["id"].as_u64().unwrap(), secret)
}

fn metric(inlet: &Inlet, line_start: &str) -> Option<f64> {
    let m = inlet.client().get("/metrics").unwrap().text();
    m.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn https_webhooks_are_verified_against_the_roots_and_the_configured_ca() {
    let (ca_pem, trusted_tls) = test_ca();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let config = dir.path().join("inlet.toml");
    std::fs::write(
        &config,
        format!("[alerts]\nwebhook_ca = {:?}\n", ca.to_str().unwrap()),
    )
    .unwrap();
    // check-config shows it; a missing or broken CA file stops the server at its start.
    let shown = cli_ok(
        dir.path(),
        &["--config", config.to_str().unwrap(), "check-config"],
    );
    assert!(
        shown.contains("[alerts]") && shown.contains(ca.to_str().unwrap()),
        "{shown}"
    );
    for (name, text) in [
        ("missing", None),
        ("junk", Some("not a certificate")),
        (
            "broken",
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        ),
    ] {
        let file = dir.path().join(format!("{name}.pem"));
        if let Some(t) = text {
            std::fs::write(&file, t).unwrap();
        }
        let bad = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &bad,
            format!("[alerts]\nwebhook_ca = {:?}\n", file.to_str().unwrap()),
        )
        .unwrap();
        let out = std::process::Command::new(bin())
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--config", bad.to_str().unwrap()])
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {err}");
        assert!(
            err.contains("alerts.webhook_ca") && err.contains(&format!("{name}.pem")),
            "{name}: {err}"
        );
    }

    let inlet = Inlet::start_with(&[
        "--config",
        config.to_str().unwrap(),
        "--alert-interval-ms",
        "100",
    ]);
    let mut admin = Admin::setup(&inlet);
    let trusted = Hook::start(Some(trusted_tls), 200);
    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let untrusted = Hook::start(
        Some(server_config(
            stranger.cert.der().clone(),
            stranger.signing_key.serialize_der(),
        )),
        200,
    );
    let (good, secret) = add_rule(&mut admin, 1, &trusted.url);
    let (bad, _) = add_rule(&mut admin, 1, &untrusted.url);
    wait_for("the fire over https", || {
        !trusted.messages(good, "alert.fired").is_empty()
    });
    for (sig, body, _) in trusted.got.lock().unwrap().iter() {
        assert!(verify(&secret, sig, body), "bad signature {sig} of {body}");
    }
    // The other receiver's certificate is not trusted: no message reaches it, and the
    // failure shows on the panel and in the metrics.
    wait_for("the refused delivery on the panel", || {
        admin.get("/admin/api/alerts").json()["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| {
                d["rule"] == bad
                    && d["attempts"].as_u64() >= Some(2)
                    && d["last"]
                        .as_str()
                        .is_some_and(|l| l.contains("tls") && l.contains("certificate"))
            })
    });
    assert!(untrusted.got.lock().unwrap().is_empty());
    let failed = metric(
        &inlet,
        "inlet_alert_webhook_deliveries_total{result=\"failed_attempt\"} ",
    );
    assert!(failed.is_some_and(|n| n >= 2.0), "{failed:?}");
    // `inlet alerts test` from the command line trusts the same CA (through the server).
    let out = inlet.cli_ok(&["alerts", "test", &good.to_string()]);
    assert!(out.contains("webhook answered 200"), "{out}");
}

#[test]
fn an_open_incident_survives_a_restart_without_firing_again_and_resolves_once() {
    let mut inlet = Inlet::start_with(&["--alert-interval-ms", "100"]);
    let mut admin = Admin::setup(&inlet);
    let key = inlet.mint("default");
    let hook = Hook::start(None, 200);
    let (rule, _) = add_rule(&mut admin, 1, &hook.url);
    wait_for("the fire", || {
        !hook.messages(rule, "alert.fired").is_empty()
    });
    let since = admin.get("/admin/api/alerts").json()["firing"][0]["since_ms"].clone();
    assert!(since.is_u64());
    assert_eq!(inlet.signal_and_wait("TERM").code(), Some(0));
    inlet.restart();
    let mut admin = Admin::login(inlet.addr, crate::admin::PASSWORD);
    let firing = admin.get("/admin/api/alerts").json()["firing"].clone();
    assert_eq!(firing[0]["since_ms"], since, "{firing}");
    // Longer than the rule's second of silence after the restart, with evaluations every
    // 100 ms: a rule that forgot its incident would have resolved and fired again by now.
    wait_for("1.5 s of the new server", || {
        let h = admin.get("/admin/api/health").json();
        h["now_ms"].as_u64().unwrap() > h["since_ms"].as_u64().unwrap() + 1500
    });
    assert_eq!(metric(&inlet, "inlet_alerts_firing "), Some(1.0));
    assert_eq!(hook.messages(rule, "alert.fired").len(), 1);
    assert!(hook.messages(rule, "alert.resolved").is_empty());
    // An event ends it: resolved once, with the id of this incident.
    let r = inlet.client().post_json("/s2s/event", &key, &event("e1"));
    assert_eq!(r.status, 200);
    wait_for("the resolved message", || {
        !hook.messages(rule, "alert.resolved").is_empty()
    });
    let fired = &hook.messages(rule, "alert.fired")[0].0;
    let resolved = &hook.messages(rule, "alert.resolved")[0].0;
    assert_eq!(fired["id"], format!("{rule}-{since}-fired"));
    assert_eq!(resolved["id"], format!("{rule}-{since}-resolved"));
    assert_eq!(resolved["incident"]["since_ms"], since);
    assert_eq!(metric(&inlet, "inlet_alerts_firing "), Some(0.0));
}

#[test]
fn a_delivery_not_made_before_a_restart_is_made_after_it_with_the_same_id() {
    let mut inlet = Inlet::start_with(&["--alert-interval-ms", "100"]);
    let mut admin = Admin::setup(&inlet);
    let hook = Hook::start(None, 503);
    let (rule, secret) = add_rule(&mut admin, 1, &hook.url);
    wait_for("a refused attempt", || {
        !hook.messages(rule, "alert.fired").is_empty()
    });
    let pending = admin.get("/admin/api/alerts").json()["deliveries"][0].clone();
    assert_eq!(pending["state"], "pending", "{pending}");
    assert_eq!(inlet.signal_and_wait("TERM").code(), Some(0));
    hook.status.store(200, AtomicOrdering::SeqCst);
    inlet.restart();
    wait_for("the delivery after the restart", || {
        hook.messages(rule, "alert.fired")
            .iter()
            .any(|(_, st)| *st == 200)
    });
    // Every attempt carried the same message: one id for the receiver to keep once.
    let fired = hook.messages(rule, "alert.fired");
    assert!(fired.len() >= 2, "{fired:?}");
    assert!(fired.iter().all(|(m, _)| *m == fired[0].0), "{fired:?}");
    assert_eq!(pending["message_id"], fired[0].0["id"]);
    for (sig, body, _) in hook.got.lock().unwrap().iter() {
        assert!(verify(&secret, sig, body));
    }
    let mut admin = Admin::login(inlet.addr, crate::admin::PASSWORD);
    wait_for("the delivery shown as delivered", || {
        let d = admin.get("/admin/api/alerts").json()["deliveries"].clone();
        d.as_array().unwrap().iter().any(|d| {
            d["id"] == pending["id"]
                && d["state"] == "delivered"
                && d["attempts"].as_u64() > Some(1)
        })
    });
    assert_eq!(
        hook.messages(rule, "alert.fired")
            .iter()
            .filter(|(_, st)| *st == 200)
            .count(),
        1
    );
}
