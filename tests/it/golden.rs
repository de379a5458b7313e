//! Golden fixtures per dialect: `tests/golden/<dialect>/*.json`, each a recorded request in and
//! the response and canonical events out, all checked by one function, [`check_fixtures`].
//!
//! A fixture:
//! ```json
//! {"request":  {"method": "POST", "path": "/api/v1/event", "headers": {"X-API-Key": "${KEY}"},
//!               "json": {...}  or  "text": "a=1&b=2"},
//!  "response": {"status": 200, "headers": {...}, "json": {...}  or  "text": "OK"},
//!  "events":   [ the canonical events the request added, as `inlet export` prints them ]}
//! ```
//! Fixtures run in file-name order against one server. Before parsing, `${KEY}`,
//! `${NOW_UNIX}` (an hour ago, in seconds), `${NOW_MS}` (the same in ms), `${NOW_ISO}` (the
//! same as URL-encoded ISO 8601), `${EARLIER_UNIX}` (a minute before that) and `${TODAY}` are
//! replaced. `"sign": true` adds Datafly's `X-Timestamp` (now) and `X-Signature` made with
//! the key passed in as the secret; `"gzip": true` sends the body gzip-compressed with
//! `Content-Encoding: gzip`. In an expected value the string
//! `"<any>"` matches any value that is present: receive times, generated ids, audit keys.
//! An expected `props` lists its keys in the order export must give them (the sender's).

use crate::support::*;
use serde_json::Value;
use std::path::Path;

/// Runs every fixture of `tests/golden/<dialect>/` against `inlet`, which must have no events
/// yet.
pub fn check_fixtures(dialect: &str, inlet: &Inlet, key: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dialect);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let date = |format: &str| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{now_unix}"), format])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let today = {
        let out = std::process::Command::new("date")
            .args(["-u", "+%F"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let now_iso = date("+%Y-%m-%dT%H:%M:%S.000+0000")
        .replace(':', "%3A")
        .replace('+', "%2B");
    let vars = [
        ("${KEY}", key.to_owned()),
        ("${NOW_UNIX}", now_unix.to_string()),
        ("${NOW_MS}", (now_unix * 1000).to_string()),
        ("${NOW_ISO}", now_iso),
        ("${EARLIER_UNIX}", (now_unix - 60).to_string()),
        ("${TODAY}", today),
    ];
    let mut client = inlet.client();
    let mut last_seq = 0u64;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let mut text = std::fs::read_to_string(file).unwrap();
        for (var, value) in &vars {
            text = text.replace(var, value);
        }
        let fixture: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let req = &fixture["request"];
        let mut headers: Vec<(String, String)> = req["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let mut body = match (&req["json"], &req["text"]) {
            (Value::Null, Value::Null) => Vec::new(),
            (Value::Null, Value::String(t)) => t.as_bytes().to_vec(),
            (json, _) => json.to_string().into_bytes(),
        };
        if req["sign"] == true {
            // Datafly: signed now, with `key` as the secret.
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                .to_string();
            let signature = inlet::auth::secrets::sign(key, &ts, &body);
            headers.push(("X-Timestamp".into(), ts));
            headers.push(("X-Signature".into(), signature));
        }
        if req["gzip"] == true {
            // Sent compressed, as backfill clients do; the signature (if any) is over the
            // JSON itself.
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&body).unwrap();
            body = gz.finish().unwrap();
            headers.push(("Content-Encoding".into(), "gzip".into()));
        }
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let resp = client
            .request(
                req["method"].as_str().unwrap(),
                req["path"].as_str().unwrap(),
                &headers,
                &body,
            )
            .unwrap();

        let want = &fixture["response"];
        assert_eq!(
            u64::from(resp.status),
            want["status"].as_u64().unwrap(),
            "{name}: status; body {}",
            resp.text()
        );
        if let Some(h) = want["headers"].as_object() {
            for (k, v) in h {
                let got = resp.header(k).map(|s| Value::String(s.to_owned()));
                assert_matches(&format!("{name}: header {k}"), got.as_ref(), v);
            }
        }
        match (&want["json"], &want["text"]) {
            (Value::Null, Value::String(t)) => assert_eq!(&resp.text(), t, "{name}: body"),
            (json, _) => assert_matches(&format!("{name}: body"), Some(&resp.json()), json),
        }

        let added = parse_ndjson(&inlet.cli_ok(&["export", "--after", &last_seq.to_string()]));
        let expected = fixture["events"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            added.len(),
            expected.len(),
            "{name}: events added: {added:#?}"
        );
        for (i, (got, want)) in added.iter().zip(&expected).enumerate() {
            assert_matches(&format!("{name}: event {i}"), Some(got), want);
        }
        if let Some(last) = added.last() {
            last_seq = last["seq"].as_u64().unwrap();
        }
    }
}

/// `got` equals `want`, where a `"<any>"` in `want` matches any present value and objects
/// must have exactly the same keys; within `props` in the same order too (the sender's).
fn assert_matches(at: &str, got: Option<&Value>, want: &Value) {
    assert_matches_in(at, got, want, false);
}

fn assert_matches_in(at: &str, got: Option<&Value>, want: &Value, ordered: bool) {
    if want == "<any>" {
        assert!(got.is_some_and(|g| !g.is_null()), "{at}: missing");
        return;
    }
    let got = got.unwrap_or_else(|| panic!("{at}: missing, want {want}"));
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            let mut gk: Vec<&String> = g.keys().collect();
            let mut wk: Vec<&String> = w.keys().collect();
            if !ordered {
                gk.sort();
                wk.sort();
            }
            assert_eq!(gk, wk, "{at}: keys of {got}");
            for (k, v) in w {
                let ordered = ordered || k == "props";
                assert_matches_in(&format!("{at}.{k}"), g.get(k), v, ordered);
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{at}: length of {got}");
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                assert_matches_in(&format!("{at}[{i}]"), Some(gv), wv, ordered);
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

#[test]
fn reflect_fixtures() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    check_fixtures("reflect", &inlet, &key);
}

#[test]
fn gamerebellion_fixtures() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    check_fixtures("gamerebellion", &inlet, &key);
}

#[test]
fn adjust_fixtures() {
    let inlet = Inlet::start();
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-app-token",
        "4w565xzmb54d",
    ]);
    inlet.cli_ok(&["apps", "adjust-event", "default", "f0ob4r", "purchase"]);
    inlet.cli_ok(&[
        "apps",
        "adjust-skan",
        "default",
        "--event",
        "purchase=20/medium",
        "--revenue",
        "100=42/high/lock",
    ]);
    let key = inlet.mint("default");
    check_fixtures("adjust", &inlet, &key);
}

#[test]
fn appsflyer_fixtures() {
    let inlet = Inlet::start();
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--appsflyer-bundle-id",
        "com.studio.web",
    ]);
    let key = inlet.mint("default");
    check_fixtures("appsflyer", &inlet, &key);
}

#[test]
fn datafly_fixtures() {
    let inlet = Inlet::start();
    let secret = inlet
        .cli_ok(&["secrets", "mint", "--app", "default", "--label", "golden"])
        .trim()
        .to_owned();
    check_fixtures("datafly", &inlet, &secret);
}
