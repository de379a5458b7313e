//! No credential in anything inlet stores, shows or exports (issue 16, item 1): after traffic
//! through all five dialects, with keys and secrets where clients put them (AppsFlyer's
//! `webDevKey`, and by mistake in fields, parameters and ids; also in a gzip body), no minted
//! key or secret is in any file of the data dir, a backup, an export, an audit copy, the
//! admin API or the server's log; the stored copies say what was redacted and which key it
//! was.

use crate::support::*;
use inlet::auth::secrets::sign;
use serde_json::{Value, json};
use std::path::Path;

const BUNDLE: &str = "com.studio.web";
const APP_TOKEN: &str = "4w565xzmb54d";
const EVENT_TOKEN: &str = "f0ob4r";

/// Mints a key labelled `label` and returns it with its id.
fn mint(inlet: &Inlet, label: &str) -> (String, u64) {
    let key = inlet
        .cli_ok(&["keys", "mint", "--app", "default", "--label", label])
        .trim()
        .to_owned();
    let id = parse_ndjson(&inlet.cli_ok(&["keys", "list", "--json"]))
        .into_iter()
        .find(|k| k["label"] == label)
        .expect("the minted key is listed")["id"]
        .as_u64()
        .unwrap();
    (key, id)
}

/// Form encoding of every byte but the unreserved ones.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `s` with its first `_` written as a JSON `\u005f` escape (a JSON reader decodes it back).
fn json_escaped(s: &str) -> String {
    s.replacen('_', "\\u005f", 1)
}

/// The credentials found in `bytes`, by name.
fn leaks<'a>(bytes: &[u8], credentials: &'a [(&'a str, String)]) -> Vec<&'a str> {
    credentials
        .iter()
        .filter(|(_, c)| bytes.windows(c.len()).any(|w| w == c.as_bytes()))
        .map(|(name, _)| *name)
        .collect()
}

/// Every regular file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files(&p));
        } else if kind.is_file() {
            // Not the control socket: it holds nothing.
            out.push(p);
        }
    }
    out
}

#[test]
fn no_key_or_secret_in_the_data_dir_a_backup_an_export_an_audit_copy_or_the_log() {
    let inlet = Inlet::start_logged("debug", &[]);
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--appsflyer-bundle-id",
        BUNDLE,
        "--adjust-app-token",
        APP_TOKEN,
    ]);
    inlet.cli_ok(&["apps", "adjust-event", "default", EVENT_TOKEN, "purchase"]);
    let (reflect, _) = mint(&inlet, "reflect");
    let (gr, gr_id) = mint(&inlet, "gamerebellion");
    let (adjust, adjust_id) = mint(&inlet, "adjust");
    let (af, af_id) = mint(&inlet, "appsflyer");
    // A key that authenticates nothing here, only pasted into a body; then revoked.
    let (pasted, pasted_id) = mint(&inlet, "pasted");
    inlet.cli_ok(&["keys", "revoke", &pasted_id.to_string()]);
    let secret = inlet
        .cli_ok(&["secrets", "mint", "--app", "default", "--label", "backend"])
        .trim()
        .to_owned();
    let secret_id = parse_ndjson(&inlet.cli_ok(&["secrets", "list", "--json"]))[0]["id"]
        .as_u64()
        .unwrap();
    let credentials = [
        ("reflect key", reflect.clone()),
        ("gamerebellion key", gr.clone()),
        ("adjust key", adjust.clone()),
        ("appsflyer key", af.clone()),
        ("pasted key", pasted.clone()),
        ("datafly secret", secret.clone()),
    ];
    let mut c = inlet.client();

    // Reflect: a key echoed in a field, another one spelled with a JSON escape.
    let mut ev = event("reflect-1");
    ev["debug_auth"] = json!(format!("Bearer {reflect}"));
    ev["user_id"] = json!("user_redaction_1");
    let r = c.post_json("/s2s/event", &reflect, &ev);
    assert_eq!(r.status, 200, "{}", r.text());
    let bulk = format!(
        r#"{{"events": [{}, {{"event_id": "reflect-3", "event_name": "purchase", "event_ts_ms": 1735999999000, "install_uuid": "u-1", "note": "{}"}}]}}"#,
        event("reflect-2"),
        json_escaped(&pasted)
    );
    let r = c
        .post(
            "/s2s/events/bulk",
            &[("Authorization", &format!("Bearer {reflect}"))],
            bulk.as_bytes(),
        )
        .unwrap();
    assert_eq!(r.json()["accepted"], 2, "{}", r.text());

    // GameRebellion: a client that also puts its key in the body, and in a session id.
    let gr_post = |c: &mut Client, path: &str, body: &Value| {
        let r = c
            .post(
                path,
                &[("X-API-Key", &gr), ("Content-Type", "application/json")],
                body.to_string().as_bytes(),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r
    };
    gr_post(
        &mut c,
        "/api/v1/event",
        &json!({"event_type": "level_up", "api_key": gr, "payload": {"level": 3}}),
    );
    gr_post(
        &mut c,
        "/api/v1/events",
        &json!({"events": [{"event_type": "a", "payload": {"k": gr}}, {"event_type": "b"}]}),
    );
    gr_post(
        &mut c,
        "/api/v1/sessions/start",
        &json!({"session_id": format!("sess-{gr}"), "identifiers": {"player_id": "p1"}}),
    );
    // A gzip body: the copy kept is the inflated body, redacted like any other.
    let gz_event = json!({"event_type": "gz", "api_key": gr}).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, gz_event.as_bytes()).unwrap();
    let r = c
        .post(
            "/api/v1/event",
            &[
                ("X-API-Key", &gr),
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            &gz.finish().unwrap(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // Adjust: the key as a parameter of the query, percent-encoded in a form body, and inside
    // callback_params; the real credential in the Authorization header.
    let auth = format!("Bearer {adjust}");
    let ts = now_ms() / 1000;
    let callback = form_encode(&json!({"token": adjust}).to_string());
    let query = format!(
        "/event?s2s=1&app_token={APP_TOKEN}&event_token={EVENT_TOKEN}&adid=dev-1\
         &created_at_unix={ts}&s2s_token={adjust}&callback_params={callback}"
    );
    let r = c
        .request("GET", &query, &[("Authorization", &auth)], b"")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let form = format!(
        "s2s=1&app_token={APP_TOKEN}&event_token={EVENT_TOKEN}&adid=dev-1&created_at_unix={}\
         &s2s_token={}",
        ts + 1,
        adjust.replace('_', "%5F")
    );
    let r = c
        .post(
            "/event",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            form.as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // AppsFlyer: the key is the body's credential, on both methods.
    let af_event = json!({
        "customerUserId": "cuid-1", "webDevKey": af, "eventType": "EVENT",
        "eventName": "af_purchase", "eventValue": {"note": "x"}, "timestamp": now_ms(),
    })
    .to_string();
    let af_setcuid =
        format!(r#"{{ "customerUserId": "cuid-1", "afUserId":"af-1", "webDevKey" : "{af}"}}"#);
    for (path, body) in [("event", &af_event), ("setcuid", &af_setcuid)] {
        let r = c
            .post(
                &format!("/v1/{BUNDLE}/{path}"),
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
            .unwrap();
        assert_eq!((r.status, r.text()), (200, "OK".to_owned()), "{path}");
    }

    // Datafly: a Segment-style client sends its secret as `writeKey`; with and without a
    // messageId.
    for body in [
        json!({"type": "track", "event": "Signed Up", "userId": "user_df", "messageId": "m-1",
               "writeKey": secret, "context": {"ip": "203.0.113.7"}}),
        json!({"type": "identify", "userId": "user_df", "anonymousId": "anon-1",
               "traits": {"secret": secret}}),
    ] {
        let body = body.to_string();
        let ts = now_ms().to_string();
        let r = c
            .post(
                "/v1/events",
                &[
                    ("Content-Type", "application/json"),
                    ("X-Signature", &sign(&secret, &ts, body.as_bytes())),
                    ("X-Timestamp", &ts),
                ],
                body.as_bytes(),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }

    // Everything inlet stores, shows or exports, scanned for every credential; each place
    // that holds one is listed.
    let mut leaked: Vec<String> = Vec::new();
    let mut scan = |what: &str, bytes: &[u8]| {
        let found = leaks(bytes, &credentials);
        if !found.is_empty() {
            leaked.push(format!("{what}: {found:?}"));
        }
    };

    // The export.
    let export = inlet.cli_ok(&["export"]);
    let events = parse_ndjson(&export);
    assert_eq!(events.len(), 3 + 5 + 2 + 2 + 2, "{export}");
    scan("the export", export.as_bytes());

    // Each audit copy.
    let mut copies = std::collections::HashMap::new();
    for e in &events {
        let key = e["audit_key"].as_str().unwrap().to_owned();
        if let std::collections::hash_map::Entry::Vacant(slot) = copies.entry(key) {
            let copy = inlet.cli_ok(&["audit", "get", slot.key()]);
            scan(&format!("audit copy {}", slot.key()), copy.as_bytes());
            slot.insert(copy);
        }
    }

    // What the admin API (and the panel's pages built on it) shows: the event list and each
    // event with its audit copy.
    let mut admin = crate::admin::Admin::setup(&inlet);
    let list = admin.get("/admin/api/events");
    assert_eq!(list.status, 200, "{}", list.text());
    scan("GET /admin/api/events", &list.body);
    for e in &events {
        let seq = e["seq"].as_u64().unwrap();
        let r = admin.get(&format!("/admin/api/events/{seq}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["audit"]["body"].is_string(), "{}", r.text());
        scan(&format!("GET /admin/api/events/{seq}"), &r.body);
    }

    // A backup, taken while serving.
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("backup.redb");
    inlet.cli_ok(&["backup", backup.to_str().unwrap()]);
    let backup_bytes = std::fs::read(&backup).unwrap();
    assert!(!backup_bytes.is_empty());
    scan("the backup", &backup_bytes);

    // Every file of the data dir, byte by byte; the scan does see what is stored.
    let on_disk = files(inlet.data());
    for name in ["inlet.redb", "identity.redb"] {
        assert!(
            on_disk
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == name)),
            "{name} in {on_disk:?}"
        );
    }
    assert!(
        files_contain(inlet.data(), b"user_redaction_1").is_some(),
        "the stored events are readable in the data dir"
    );
    for path in &on_disk {
        scan(&path.display().to_string(), &std::fs::read(path).unwrap());
    }

    // The server's log, at debug.
    let log = inlet.log.lock().unwrap().clone();
    assert!(log.contains("request"), "debug request lines are logged");
    scan("the server's log", log.as_bytes());
    assert!(
        leaked.is_empty(),
        "credentials in plain text:\n{}",
        leaked.join("\n")
    );

    // The stored copies say what was redacted, and which key or secret it was.
    let copy_of = |source: &str, n: usize| -> &String {
        let e = events
            .iter()
            .filter(|e| e["source"] == source)
            .nth(n)
            .unwrap();
        &copies[e["audit_key"].as_str().unwrap()]
    };
    // The AppsFlyer copies are the bodies as sent, the key replaced by its marker.
    let marker = format!("[redacted: key {af_id}]");
    assert_eq!(copy_of("appsflyer", 0), &af_event.replace(&af, &marker));
    assert_eq!(copy_of("appsflyer", 1), &af_setcuid.replace(&af, &marker));
    // A key spelled with an escape is redacted too, and named though revoked.
    assert!(
        copy_of("reflect", 1).contains(&format!(r#""note": "[redacted: key {pasted_id}]""#)),
        "{}",
        copy_of("reflect", 1)
    );
    assert!(
        copy_of("gamerebellion", 0).contains(&format!(r#""api_key":"[redacted: key {gr_id}]""#))
    );
    assert_eq!(
        copy_of("gamerebellion", 4),
        &gz_event.replace(&gr, &format!("[redacted: key {gr_id}]"))
    );
    // Adjust's copies stay form-encoded.
    let adjust_marker = format!("%5Bredacted%3A+key+{adjust_id}%5D");
    let get = copy_of("adjust", 0);
    assert!(
        get.contains(&format!("&s2s_token={adjust_marker}&")),
        "{get}"
    );
    assert!(get.contains(&format!("%22{adjust_marker}%22")), "{get}");
    let post = copy_of("adjust", 1);
    assert!(
        post.ends_with(&format!("&s2s_token={adjust_marker}")),
        "{post}"
    );
    let df = copy_of("datafly", 0);
    assert!(
        df.contains(&format!(r#""writeKey":"[redacted: secret {secret_id}]""#)),
        "{df}"
    );
    // The canonical events say it too.
    let af_ev = events.iter().find(|e| e["source"] == "appsflyer").unwrap();
    assert!(af_ev["props"].get("webDevKey").is_none(), "{af_ev}");
    let df_ev = events.iter().find(|e| e["source"] == "datafly").unwrap();
    assert_eq!(
        df_ev["props"]["writeKey"],
        format!("[redacted: secret {secret_id}]")
    );
    let escaped = events
        .iter()
        .find(|e| e["event_id"] == "reflect-3")
        .unwrap();
    assert_eq!(
        escaped["props"]["note"],
        format!("[redacted: key {pasted_id}]")
    );
    let adjust_ev = events.iter().find(|e| e["source"] == "adjust").unwrap();
    assert_eq!(
        adjust_ev["props"]["s2s_token"],
        format!("[redacted: key {adjust_id}]")
    );
}
