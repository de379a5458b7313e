//! HTTP details a client library hits: compressed bodies on every dialect, HTTP/2 (h2c with
//! prior knowledge and ALPN `h2` over TLS), trailing slashes, and GameRebellion's rate limit
//! headers on every answer under its prefix.

use crate::support::*;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A server with every dialect set up for app `default`: (server, key, Datafly secret).
fn all_dialects() -> (Inlet, String, String) {
    let inlet = Inlet::start();
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-app-token",
        "4w565xzmb54d",
        "--appsflyer-bundle-id",
        "com.studio.web",
    ]);
    inlet.cli_ok(&["apps", "adjust-event", "default", "f0ob4r", "purchase"]);
    let key = inlet.mint("default");
    let secret = inlet
        .cli_ok(&["secrets", "mint", "--app", "default", "--label", "gz"])
        .trim()
        .to_owned();
    (inlet, key, secret)
}

#[test]
fn gzip_bodies_from_python_reach_every_dialect() {
    let (inlet, key, secret) = all_dialects();
    // Each dialect's body, gzip-compressed by Python's gzip module and sent with requests.
    let script = r#"
import gzip, hashlib, hmac, json, sys, time, zlib, requests
base, key, secret = sys.argv[1], sys.argv[2], sys.argv[3]
def post(path, body, headers, coding="gzip"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    data = gzip.compress(raw) if coding == "gzip" else zlib.compress(raw)
    r = requests.post(base + path, data=data, headers={**headers, "Content-Encoding": coding})
    print(path, r.status_code, r.text.replace("\n", " "))
now = int(time.time() * 1000)
post("/s2s/events/bulk", {"events": [
    {"event_id": f"gz-{i}", "event_name": "level_up", "event_ts_ms": now,
     "install_uuid": "8f2a1c0e94d7423b8b53af7c9e21d630", "props": {"pad": "z" * 2000}}
    for i in range(100)]},
    {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
post("/api/v1/events", {"events": [
    {"event_type": "click", "event_id": "gr-gz", "identifiers": {"player_id": "p1"}, "payload": {}}]},
    {"X-API-Key": key, "Content-Type": "application/json"}, coding="deflate")
post("/event", ("s2s=1&event_token=f0ob4r&app_token=4w565xzmb54d"
    "&idfa=D2CADB5F-410F-4963-AC0C-2A78534BDF1E&created_at_unix=%d" % (now // 1000)).encode(),
    {"Authorization": "Bearer " + key, "Content-Type": "application/x-www-form-urlencoded"})
post("/v1/com.studio.web/event", {"customerUserId": "cu_gz", "webDevKey": key,
    "eventType": "EVENT", "eventName": "web_purchase"}, {"Content-Type": "application/json"})
body = json.dumps({"type": "track", "event": "Order Completed", "userId": "u_gz",
    "messageId": "df-gz"}).encode()
ts = str(now)
sig = hmac.new(secret.encode(), (ts + ".").encode() + body, hashlib.sha256).hexdigest()
post("/v1/events", body, {"Content-Type": "application/json", "X-Timestamp": ts,
    "X-Signature": "sha256=" + sig})
"#;
    let out = run(Command::new("python3").args(["-c", script, &inlet.url(""), &key, &secret]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    for line in &lines {
        assert!(line.split(' ').nth(1) == Some("200"), "{out}");
    }
    let events = inlet.export();
    let sources: Vec<&str> = events
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert_eq!(events.len(), 104, "{sources:?}");
    for source in ["reflect", "gamerebellion", "adjust", "appsflyer", "datafly"] {
        assert!(sources.contains(&source), "{source} missing: {sources:?}");
    }
    // The inflated bytes are what is stored and judged.
    let first = events.iter().find(|e| e["event_id"] == "gz-0").unwrap();
    assert_eq!(first["props"]["pad"].as_str().unwrap().len(), 2000);
}

#[test]
fn curl_sends_a_gzip_file_and_limits_apply_to_the_inflated_bytes() {
    let (inlet, key, _) = all_dialects();
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<serde_json::Value> = (0..10).map(|i| event(&format!("curl-gz-{i}"))).collect();
    let plain = dir.path().join("batch.json");
    std::fs::write(&plain, serde_json::json!({ "events": events }).to_string()).unwrap();
    run(Command::new("gzip").arg("-k").arg(&plain));
    let curl = |file: &str, path: &str| -> (u16, String) {
        let out = run(Command::new("curl").args([
            "-sS",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            &inlet.url(path),
            "-H",
            &format!("Authorization: Bearer {key}"),
            "-H",
            "Content-Type: application/json",
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            &format!("@{file}"),
        ]));
        let (body, code) = out.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_owned())
    };
    let gz = format!("{}.gz", plain.display());
    let (status, body) = curl(&gz, "/s2s/events/bulk");
    assert_eq!(status, 200, "{body}");
    assert_eq!(inlet.export().len(), 10);

    // A gigabyte of zeros in about a megabyte: refused once the inflated bytes pass the
    // limit, without the server growing or slowing down.
    let bomb = dir.path().join("bomb.gz");
    run(Command::new("sh").args([
        "-c",
        &format!(
            "head -c 1073741824 /dev/zero | gzip -1 > {}",
            bomb.display()
        ),
    ]));
    let started = std::time::Instant::now();
    let (status, body) = curl(bomb.to_str().unwrap(), "/s2s/events/bulk");
    assert_eq!(
        (status, body.as_str()),
        (413, r#"{"error":"body_too_large"}"#)
    );
    assert!(started.elapsed() < DEADLINE);
    let status = std::fs::read_to_string(format!("/proc/{}/status", inlet.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(hwm_kb < 200 * 1024, "peak RSS {} MiB", hwm_kb / 1024);

    // AppsFlyer's 1 KB payload limit counts inflated bytes too.
    let big = dir.path().join("af.json");
    std::fs::write(
        &big,
        serde_json::json!({"customerUserId": "cu", "webDevKey": key, "eventType": "EVENT",
            "eventName": "web_purchase", "eventValue": "a".repeat(900)})
        .to_string(),
    )
    .unwrap();
    run(Command::new("gzip").arg(&big));
    let af = format!("{}.gz", big.display());
    assert!(std::fs::metadata(&af).unwrap().len() < 1024);
    let (status, _) = curl(&af, "/v1/com.studio.web/event");
    assert_eq!(status, 413);

    // Broken and unknown encodings get stable reasons.
    std::fs::write(dir.path().join("junk.gz"), b"not gzip at all").unwrap();
    let (status, body) = curl(
        dir.path().join("junk.gz").to_str().unwrap(),
        "/s2s/events/bulk",
    );
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"error":"body_unreadable"}"#)
    );
    let mut c = inlet.client();
    let auth = format!("Bearer {key}");
    let r = c
        .post(
            "/s2s/event",
            &[("Authorization", &auth), ("Content-Encoding", "br")],
            b"{}",
        )
        .unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (415, r#"{"error":"unsupported_content_encoding"}"#)
    );
    assert_eq!(inlet.export().len(), 10);
}

/// `curl` with `args`: (HTTP version, status, body).
fn curl_version(args: &[&str]) -> (String, u16, String) {
    let out = run(Command::new("curl")
        .args(["-sS", "-w", "\n%{http_version} %{http_code}"])
        .args(args));
    let (body, tail) = out.rsplit_once('\n').unwrap();
    let (version, code) = tail.split_once(' ').unwrap();
    (version.to_owned(), code.parse().unwrap(), body.to_owned())
}

#[test]
fn http2_with_prior_knowledge_and_over_tls() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let auth = format!("Authorization: Bearer {key}");
    let body = event("over-h2c").to_string();
    let (version, status, answer) = curl_version(&[
        "--http2-prior-knowledge",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
        &inlet.url("/s2s/event"),
    ]);
    assert_eq!((version.as_str(), status), ("2", 200), "{answer}");
    // HTTP/1.1 still works on the same port.
    let (version, status, _) = curl_version(&["--http1.1", &inlet.url("/healthz")]);
    assert_eq!((version.as_str(), status), ("1.1", 200));

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let tls_key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&tls_key, certified.signing_key.serialize_pem()).unwrap();
    let tls = Inlet::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        tls_key.to_str().unwrap(),
    ]);
    let key = tls.mint("default");
    let url = format!("https://localhost:{}/s2s/event", tls.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", tls.addr.port());
    let body = event("over-h2").to_string();
    let (version, status, answer) = curl_version(&[
        "--http2",
        "--cacert",
        cert.to_str().unwrap(),
        "--resolve",
        &resolve,
        "-H",
        &format!("Authorization: Bearer {key}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
        &url,
    ]);
    assert_eq!((version.as_str(), status), ("2", 200), "{answer}");
    let ids: Vec<String> = inlet
        .export()
        .into_iter()
        .chain(tls.export())
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["over-h2c", "over-h2"]);
}

#[test]
fn a_trailing_slash_is_the_same_endpoint() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    assert_eq!(
        c.post_json("/s2s/event/", &key, &event("slash")).status,
        200
    );
    let r = c
        .post(
            "/api/v1/event/",
            &[("X-API-Key", &key), ("Content-Type", "application/json")],
            br#"{"event_type":"click","identifiers":{"player_id":"p1"},"payload":{}}"#,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.get("/healthz/").unwrap().status, 200);
    assert_eq!(inlet.export().len(), 2);
    // Only one slash: a path that is not an endpoint stays unknown.
    assert_eq!(c.post_json("/s2s/event//", &key, &event("x")).status, 404);
}

#[test]
fn every_answer_under_the_gamerebellion_prefix_has_rate_limit_headers() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    for (method, path) in [
        ("GET", "/api/v1/nothing"),
        ("POST", "/api/v1/sessions/pause"),
        ("POST", "/api/v1/"),
        ("GET", "/api/v1/event"),
    ] {
        let r = c
            .request(method, path, &[("X-API-Key", &key)], b"")
            .unwrap();
        assert!(
            matches!(r.status, 404 | 405),
            "{method} {path}: {}",
            r.status
        );
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(r.header(h).is_some(), "{method} {path}: no {h}");
        }
    }
}

#[test]
fn an_idle_http2_connection_is_closed_after_the_header_timeout() {
    use std::io::{Read, Write};
    let inlet = Inlet::start_with(&["--header-timeout-secs", "1"]);
    let mut s = std::net::TcpStream::connect(inlet.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    // The client preface and an empty SETTINGS frame, then nothing.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let waited = started.elapsed();
    // The server spoke HTTP/2 (its SETTINGS frame, type 4), then hung up on the idle peer.
    assert!(got.len() >= 9 && got[3] == 4, "{got:?}");
    assert!(
        waited >= std::time::Duration::from_millis(900) && waited < DEADLINE,
        "closed after {waited:?}"
    );
}
