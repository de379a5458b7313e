//! The Adjust dialect against a running server: each request form of the spec with curl and
//! only the host changed, every rule broken once with Adjust's status and message, the
//! ordering rule under concurrency, configuration through the CLI.

use crate::support::*;
use serde_json::{Value, json};

const APP_TOKEN: &str = "4w565xzmb54d";
const EVENT_TOKEN: &str = "f0ob4r";
const IDFA: &str = "D2CADB5F-410F-4963-AC0C-2A78534BDF1E";
/// `{"f0o":"bar", "bar":"baz"}`, URL-encoded as in the spec.
const PARAMS: &str = "%7B%22f0o%22%3A%22bar%22%2C%20%22bar%22%3A%22baz%22%7D";

/// A server whose app `default` has the spec's app token and maps its event token to
/// `purchase`, and a key of that app.
fn adjust_inlet() -> (Inlet, String) {
    let inlet = Inlet::start();
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-app-token",
        APP_TOKEN,
    ]);
    inlet.cli_ok(&["apps", "adjust-event", "default", EVENT_TOKEN, "purchase"]);
    let key = inlet.mint("default");
    (inlet, key)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `secs` as the spec's `created_at` form, URL-encoded: `2026-11-26T06%3A13%3A50.000%2B0000`.
fn created_at(secs: i64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{secs}"),
            "+%Y-%m-%dT%H:%M:%S.000+0000",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .replace(':', "%3A")
        .replace('+', "%2B")
}

fn curl(script: &str, key: &str) -> (u16, String) {
    let out = std::process::Command::new("bash")
        .args(["-c", &format!("{script} -sS -w '\\n%{{http_code}}'")])
        .env("ADJUST_S2S_TOKEN", key)
        .output()
        .expect("bash + curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// The answer to a request without a token for an app that requires one.
const MISSING_TOKEN: &str = "Failed to authorize request: no Authorization: Bearer <S2S token>; \
send a key of this app (inlet keys mint --app APP), or accept requests without one with \
inlet apps configure APP --adjust-require-token false";

fn failed(message: &str) -> String {
    json!({ "error": format!("Event request failed ({message})") }).to_string()
}

#[test]
fn each_request_form_of_the_spec_with_curl() {
    let (inlet, key) = adjust_inlet();
    let url = inlet.url("");
    let auth = r#"-H "Authorization: Bearer $ADJUST_S2S_TOKEN""#;

    // The spec's example request, verbatim but for the host (and the S2S security header):
    // its created_at is from 2017, which Adjust's own 58-day rule refuses.
    let spec = format!(
        "curl --location '{url}/event?s2s=1&event_token=f0ob4r&app_token=4w565xzmb54d&idfa=D2CADB5F-410F-4963-AC0C-2A78534BDF1E&created_at=2017-01-02T15%3A04%3A05Z%2B0200&callback_params=%7B%22f0o%22%3A%22bar%22%2C%20%22bar%22%3A%22baz%22%7D&partner_params=%7B%22f0o%22%3A%22bar%22%2C%20%22bar%22%3A%22baz%22%7D&currency=EUR&revenue=123.4&environment=sandbox' {auth}"
    );
    assert_eq!(
        curl(&spec, &key),
        (
            400,
            failed("Bad event state: created_at is older than 58 days")
        )
    );

    // The same request with a current created_at, in each of the three forms.
    let t = now_secs() - 600;
    let query = |ts: i64, device: &str| {
        format!(
            "s2s=1&event_token={EVENT_TOKEN}&app_token={APP_TOKEN}&idfa={device}&created_at={}&callback_params={PARAMS}&partner_params={PARAMS}&currency=EUR&revenue=123.4&environment=sandbox",
            created_at(ts)
        )
    };
    let get = format!("curl --location '{url}/event?{}' {auth}", query(t, IDFA));
    let post_query = format!(
        "curl --location -X POST '{url}/event?{}' {auth}",
        query(t + 1, IDFA)
    );
    let post_form = format!(
        "curl --location -X POST '{url}/event' -H 'Content-Type: application/x-www-form-urlencoded' -d '{}' {auth}",
        query(t + 2, IDFA)
    );
    for form in [&get, &post_query, &post_form] {
        assert_eq!(curl(form, &key), (200, "OK".to_owned()), "{form}");
    }
    // The spec's callback_params and partner_params examples (their URLs quoted for the shell).
    for p in ["callback_params", "partner_params"] {
        let example = format!(
            "curl --location '{url}/event?s2s=1&event_token=f0ob4r&app_token=4w565xzmb54d&idfa=8A3CB124-5A79-4334-8802-F75FEC099C58&{p}=%7B%22f0o%22%3A%22bar%22%2C%20%22bar%22%3A%22baz%22%7D' {auth}"
        );
        assert_eq!(curl(&example, &key), (200, "OK".to_owned()), "{example}");
    }

    let events = inlet.export();
    assert_eq!(events.len(), 5);
    for (i, e) in events[..3].iter().enumerate() {
        let expected = json!({
            "tenant": "default", "app": "default", "key_id": 1, "source": "adjust",
            "event_name": "purchase", "event_ts_ms": (t + i as i64) * 1000,
            "ids": {"idfa": IDFA}, "revenue": 123.4, "currency": "EUR",
            "props": {
                "event_token": EVENT_TOKEN, "app_token": APP_TOKEN,
                "callback_params": {"f0o": "bar", "bar": "baz"},
                "partner_params": {"f0o": "bar", "bar": "baz"},
            },
            "context": {"environment": "sandbox"},
        });
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(&e[k], v, "field {k} of {e}");
        }
        assert!(e.get("install_uuid").is_none());
        let audit = e["audit_key"].as_str().unwrap();
        assert!(audit.starts_with("adjust/") && audit.ends_with(".txt"));
        // The raw parameters are kept under the audit key.
        let raw = inlet.cli_ok(&["audit", "get", audit]);
        assert!(raw.contains(&format!("idfa={IDFA}")), "{raw}");
    }
    // No timestamp: the receive time.
    let e = &events[3];
    assert_eq!(e["event_ts_ms"], e["received_at_ms"]);
    assert_eq!(
        e["props"]["callback_params"],
        json!({"f0o": "bar", "bar": "baz"})
    );
    assert_eq!(e["props"]["partner_params"], Value::Null);
    assert_eq!(
        events[4]["props"]["partner_params"],
        json!({"f0o": "bar", "bar": "baz"})
    );

    // An exact retry of a timestamped request is answered OK and stored once.
    assert_eq!(curl(&get, &key), (200, "OK".to_owned()));
    assert_eq!(inlet.export().len(), 5);
}

#[test]
fn every_rule_broken_once() {
    let (inlet, key) = adjust_inlet();
    inlet.cli_ok(&["apps", "add", "other", "--tenant", "default"]);
    inlet.cli_ok(&[
        "apps",
        "configure",
        "other",
        "--adjust-app-token",
        "otherapp123",
    ]);
    let other_key = inlet.mint("other");
    let scoped = inlet
        .cli_ok(&[
            "keys", "mint", "--app", "default", "--label", "s", "--events", "level_up",
        ])
        .trim()
        .to_owned();
    let mut c = inlet.client();
    let auth = format!("Bearer {key}");
    let now = now_secs();
    let ok = format!("s2s=1&app_token={APP_TOKEN}&event_token={EVENT_TOKEN}&gps_adid=g-1");
    let mut expect = |method: &str, query: &str, auth: &str, status: u16, message: &str| {
        let mut headers = vec![];
        if !auth.is_empty() {
            headers.push(("Authorization", auth));
        }
        let r = c
            .request(method, &format!("/event?{query}"), &headers, b"")
            .unwrap();
        let want = if status == 200 {
            "OK".to_owned()
        } else {
            failed(message)
        };
        assert_eq!((r.status, r.text()), (status, want), "{method} {query}");
    };
    let cases: Vec<(String, u16, &str)> = vec![
        (ok.replace("s2s=1&", ""), 400, "Missing parameter s2s=1"),
        (ok.replace("s2s=1", "s2s=0"), 400, "Missing parameter s2s=1"),
        (
            ok.replace(&format!("app_token={APP_TOKEN}&"), ""),
            400,
            "Invalid app token",
        ),
        (
            ok.replace(APP_TOKEN, "bad%20token"),
            400,
            "Invalid app token",
        ),
        (
            ok.replace(APP_TOKEN, "unknown1234"),
            404,
            "App token not found",
        ),
        (
            ok.replace(&format!("&event_token={EVENT_TOKEN}"), ""),
            400,
            "Invalid event token",
        ),
        (
            ok.replace(EVENT_TOKEN, "nope42"),
            400,
            "Invalid event token",
        ),
        (ok.replace("&gps_adid=g-1", ""), 404, "Device not found"),
        (
            ok.replace("gps_adid=g-1", "gps_adid="),
            404,
            "Device not found",
        ),
        (
            format!("{ok}&ip_address=2001:db8::1"),
            400,
            "Invalid IP address, only IPv4 is supported",
        ),
        (
            format!("{ok}&ip_address=10.0.0"),
            400,
            "Invalid IP address, only IPv4 is supported",
        ),
        (
            format!("{ok}&created_at=yesterday"),
            400,
            "Invalid created_at",
        ),
        (
            format!("{ok}&created_at_unix=1.5"),
            400,
            "Invalid created_at",
        ),
        (
            format!("{ok}&created_at_unix={}", now + 7200),
            400,
            "Invalid created_at",
        ),
        (
            format!("{ok}&created_at_unix={}", now - 59 * 86_400),
            400,
            "Bad event state: created_at is older than 58 days",
        ),
        (
            format!("{ok}&callback_params=%7B%22a%22%3A%7B%22b%22%3A1%7D%7D"),
            400,
            "Invalid callback parameters",
        ),
        (
            format!("{ok}&partner_params=%5B%22a%22%5D"),
            400,
            "Invalid callback parameters",
        ),
        (
            format!("{ok}&callback_params=not-json"),
            400,
            "Invalid callback parameters",
        ),
        (
            format!("{ok}&revenue=0.0009&currency=EUR"),
            400,
            "Invalid revenue",
        ),
        (
            format!("{ok}&revenue=100000000001&currency=EUR"),
            400,
            "Invalid revenue",
        ),
        (
            format!("{ok}&revenue=ten&currency=EUR"),
            400,
            "Invalid revenue",
        ),
        (format!("{ok}&revenue=1.5"), 400, "Invalid currency"),
        (
            format!("{ok}&revenue=1.5&currency=EURO"),
            400,
            "Invalid currency",
        ),
        (
            format!("{ok}&environment=staging"),
            400,
            "Invalid environment",
        ),
        (
            format!("{ok}&gps_adid=g-2"),
            400,
            "Bad event state: a parameter is given more than once",
        ),
    ];
    for (query, status, message) in &cases {
        expect("GET", query, &auth, *status, message);
    }
    // Authorization: missing, unknown, a key of another app, revoked.
    expect("GET", &ok, "", 401, MISSING_TOKEN);
    expect(
        "GET",
        &ok,
        "Bearer srv_nope",
        401,
        "Failed to authorize request",
    );
    expect(
        "GET",
        &ok,
        &format!("Bearer {other_key}"),
        401,
        "Failed to authorize request",
    );
    // A key that may not send this event.
    expect(
        "GET",
        &ok,
        &format!("Bearer {scoped}"),
        403,
        "Event token blocklisted",
    );
    // Limits within the range pass. The first sets the device's last timestamp to 57 days
    // ago: one a second earlier is then refused (Adjust's ordering rule).
    expect(
        "GET",
        &format!("{ok}&created_at_unix={}", now - 57 * 86_400),
        &auth,
        200,
        "",
    );
    expect(
        "GET",
        &format!("{ok}&created_at_unix={}", now - 57 * 86_400 - 1),
        &auth,
        400,
        "Bad event state: created_at is earlier than the last event of this device and event token",
    );
    for fine in [
        format!("{ok}&revenue=0.001&currency=EUR"),
        format!("{ok}&revenue=100000000000&currency=eur"),
        format!("{ok}&ip_address=192.0.0.1&user_agent=Mozilla%2F5.0"),
    ] {
        expect("GET", &fine, &auth, 200, "");
    }
    let stored = inlet.export();
    assert_eq!(stored.len(), 4, "only the valid requests were stored");
    assert_eq!(stored[1]["revenue"], 0.001);
    assert_eq!(stored[2]["currency"], "EUR");
    assert_eq!(
        stored[3]["context"],
        json!({"ip": "192.0.0.1", "user_agent": "Mozilla/5.0"})
    );

    // Body forms: too large, wrong content type; other methods.
    let big = format!("{ok}&pad={}", "x".repeat(70_000));
    let r = c
        .post(
            "/event",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            big.as_bytes(),
        )
        .unwrap();
    assert_eq!((r.status, r.text()), (413, failed("Request too large")));
    let r = c
        .post(
            "/event",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            br#"{"s2s":1}"#,
        )
        .unwrap();
    assert_eq!(
        (r.status, r.text()),
        (
            415,
            failed("Unsupported content type, use application/x-www-form-urlencoded")
        )
    );
    let r = c.request("PUT", "/event", &[], b"").unwrap();
    assert_eq!((r.status, r.text()), (405, failed("Method not allowed")));

    // A revoked key is refused like an unknown one.
    let id = parse_ndjson(&inlet.cli_ok(&["keys", "list", "--json", "--app", "default"]))[0]["id"]
        .to_string();
    inlet.cli_ok(&["keys", "revoke", &id]);
    let r = c
        .request(
            "GET",
            &format!("/event?{ok}"),
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap();
    assert_eq!(
        (r.status, r.text()),
        (401, failed("Failed to authorize request"))
    );
    assert_eq!(inlet.export().len(), 4);
}

#[test]
fn the_ordering_rule_holds_under_concurrency() {
    let (inlet, key) = adjust_inlet();
    let base = now_secs() - 3600;
    let (threads, per) = (8, 25);
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (inlet, key, accepted) = (&inlet, &key, &accepted);
            s.spawn(move || {
                let mut c = inlet.client();
                let auth = format!("Bearer {key}");
                for i in 0..per {
                    // Timestamps that interleave across threads: many arrive out of order.
                    let ts = base + ((i * threads + t) * 7 % 200) as i64;
                    let q = format!(
                        "/event?s2s=1&app_token={APP_TOKEN}&event_token={EVENT_TOKEN}&adid=dev-1&created_at_unix={ts}&n={t}-{i}"
                    );
                    let r = c.request("GET", &q, &[("Authorization", &auth)], b"").unwrap();
                    match r.status {
                        200 => {
                            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        400 => assert!(r.text().contains("earlier than the last"), "{}", r.text()),
                        s => panic!("unexpected {s}: {}", r.text()),
                    }
                }
            });
        }
    });
    let events = inlet.export();
    let accepted = accepted.into_inner();
    assert_eq!(events.len(), accepted, "every OK is stored, nothing else");
    assert!(accepted > 1 && accepted < threads * per, "{accepted}");
    let ts: Vec<i64> = events
        .iter()
        .map(|e| e["event_ts_ms"].as_i64().unwrap())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "log order never goes back in time for one device and token: {ts:?}"
    );
    // Another device, or another event token of the same device, has its own order.
    inlet.cli_ok(&["apps", "adjust-event", "default", "lvl001", "level_up"]);
    let mut c = inlet.client();
    let auth = format!("Bearer {key}");
    for q in [
        format!(
            "s2s=1&app_token={APP_TOKEN}&event_token={EVENT_TOKEN}&adid=dev-2&created_at_unix={base}"
        ),
        format!("s2s=1&app_token={APP_TOKEN}&event_token=lvl001&adid=dev-1&created_at_unix={base}"),
    ] {
        let r = c
            .request(
                "GET",
                &format!("/event?{q}"),
                &[("Authorization", &auth)],
                b"",
            )
            .unwrap();
        assert_eq!((r.status, r.text()), (200, "OK".to_owned()), "{q}");
    }
    assert_eq!(inlet.export().last().unwrap()["event_name"], "level_up");
}

#[test]
fn event_tokens_are_configured_with_and_without_a_server() {
    let mut inlet = Inlet::start();
    inlet.kill();
    let data = inlet.data();
    cli_ok(
        data,
        &[
            "apps",
            "configure",
            "default",
            "--adjust-app-token",
            APP_TOKEN,
        ],
    );
    let out = cli_ok(
        data,
        &["apps", "adjust-event", "default", "abc123", "purchase"],
    );
    assert_eq!(out, "app default: adjust event token abc123 -> purchase\n");
    cli_ok(
        data,
        &["apps", "adjust-event", "default", "zzz999", "tutorial_done"],
    );
    let apps = parse_ndjson(&cli_ok(data, &["apps", "list", "--json"]));
    assert_eq!(
        apps[0]["adjust_events"],
        json!({"abc123": "purchase", "zzz999": "tutorial_done"})
    );
    // An empty name removes a mapping; bad tokens and unknown apps are refused.
    cli_ok(data, &["apps", "adjust-event", "default", "zzz999", ""]);
    for bad in [
        &["apps", "adjust-event", "default", "bad token", "x"][..],
        &["apps", "adjust-event", "nope", "abc123", "x"][..],
        &["apps", "adjust-event", "default", "never1", ""][..],
    ] {
        let out = cli(data, bad);
        assert!(!out.status.success(), "{bad:?} should fail");
    }
    let apps = parse_ndjson(&cli_ok(data, &["apps", "list", "--json"]));
    assert_eq!(apps[0]["adjust_events"], json!({"abc123": "purchase"}));
    // A server started on that data dir uses the mapping.
    inlet.restart();
    let key = inlet.mint("default");
    let r = inlet
        .client()
        .request(
            "GET",
            &format!("/event?s2s=1&app_token={APP_TOKEN}&event_token=abc123&oaid=o1"),
            &[("Authorization", &format!("Bearer {key}"))],
            b"",
        )
        .unwrap();
    assert_eq!((r.status, r.text()), (200, "OK".to_owned()));
    assert_eq!(inlet.export()[0]["event_name"], "purchase");
}

#[test]
fn the_key_is_required_unless_the_app_says_otherwise() {
    let (inlet, key) = adjust_inlet();
    let mut c = inlet.client();
    let q = format!("/event?s2s=1&app_token={APP_TOKEN}&event_token={EVENT_TOKEN}&web_uuid=w-1");
    let r = c.request("GET", &q, &[], b"").unwrap();
    assert_eq!((r.status, r.text()), (401, failed(MISSING_TOKEN)));
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-require-token",
        "false",
    ]);
    let apps = parse_ndjson(&inlet.cli_ok(&["apps", "list", "--json"]));
    assert_eq!(apps[0]["adjust_token_optional"], true);
    let r = c.request("GET", &q, &[], b"").unwrap();
    assert_eq!((r.status, r.text()), (200, "OK".to_owned()));
    let e = &inlet.export()[0];
    assert_eq!(
        (e["key_id"].clone(), e["app"].clone()),
        (json!(0), json!("default"))
    );
    // A key that is given must still be right.
    let r = c
        .request("GET", &q, &[("Authorization", "Bearer srv_wrong")], b"")
        .unwrap();
    assert_eq!(r.status, 401);
    let r = c
        .request("GET", &q, &[("Authorization", "Basic dXNlcjpwdw==")], b"")
        .unwrap();
    assert_eq!(
        r.status, 401,
        "an Authorization header that is no bearer key"
    );
    let r = c
        .request(
            "GET",
            &q,
            &[("Authorization", &format!("Bearer {key}"))],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(inlet.export()[1]["key_id"], 1);
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-require-token",
        "true",
    ]);
    let r = c.request("GET", &q, &[], b"").unwrap();
    assert_eq!(r.status, 401);
}

#[test]
fn the_specs_snippet_without_a_token_is_told_which_setting_lets_it_in() {
    let (inlet, _key) = adjust_inlet();
    // The spec's callback_params example, verbatim but for the host: it sends no token.
    let script = format!(
        "curl --location '{}/event?s2s=1&event_token=f0ob4r&app_token=4w565xzmb54d&idfa=8A3CB124-5A79-4334-8802-F75FEC099C58&callback_params={PARAMS}'",
        inlet.url("")
    );
    let (status, body) = curl(&script, "");
    assert_eq!(
        (status, body.as_str()),
        (401, failed(MISSING_TOKEN).as_str())
    );
    // Still Adjust's error shape, and the body names the setting that turns the token off.
    let error: Value = serde_json::from_str(&body).unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(message.starts_with("Event request failed (Failed to authorize request"));
    assert!(message.contains("inlet apps configure APP --adjust-require-token false"));
    assert!(inlet.export().is_empty());
    // Doing what it says lets the same snippet in.
    inlet.cli_ok(&[
        "apps",
        "configure",
        "default",
        "--adjust-require-token",
        "false",
    ]);
    assert_eq!(curl(&script, ""), (200, "OK".to_owned()));
    assert_eq!(inlet.export().len(), 1);
    // A wrong token is not given the hint: no setting makes a wrong key right.
    let (status, body) = curl(&format!("{script} -H 'Authorization: Bearer srv_nope'"), "");
    assert_eq!((status, body), (401, failed("Failed to authorize request")));
}

#[test]
fn ios_14_requests_get_the_conversion_value_of_the_apps_rules() {
    let (inlet, key) = adjust_inlet();
    inlet.cli_ok(&["apps", "adjust-event", "default", "tut001", "tutorial_done"]);
    let out = inlet.cli_ok(&[
        "apps",
        "adjust-skan",
        "default",
        "--event",
        "tutorial_done=5",
        "--event",
        "purchase=20/medium",
        "--revenue",
        "9.99=40/high",
        "--revenue",
        "99=63/high/lock",
        "--window-hours",
        "48",
    ]);
    assert!(out.contains("adjust skan rules"), "{out}");
    let apps = parse_ndjson(&inlet.cli_ok(&["apps", "list", "--json"]));
    assert_eq!(
        apps[0]["adjust_skan"],
        json!({
            "events": {"purchase": {"fine": 20, "coarse": "medium"}, "tutorial_done": {"fine": 5}},
            "revenue": [{"min": 9.99, "fine": 40, "coarse": "high"},
                        {"min": 99.0, "fine": 63, "coarse": "high", "lock": true}],
            "window_hours": 48
        })
    );
    // Bad rules are refused with a reason, and change nothing.
    for bad in [
        &["--event", "purchase=64"][..],
        &["--event", "purchase=5/huge"],
        &["--revenue", "-1=5"],
        &["--window-hours", "0", "--event", "a=1"],
        &[],
    ] {
        let mut args = vec!["apps", "adjust-skan", "default"];
        args.extend_from_slice(bad);
        let o = inlet.cli(&args);
        assert!(!o.status.success(), "{bad:?} was accepted");
        assert!(!o.stderr.is_empty());
    }

    let mut c = inlet.client();
    let auth = format!("Bearer {key}");
    let registered = created_at(now_secs() - 3600);
    let mut get = |query: &str| {
        let r = c
            .request(
                "GET",
                &format!("/event?{query}"),
                &[("Authorization", &auth)],
                b"",
            )
            .unwrap();
        (
            r.status,
            r.header("content-type").unwrap_or_default().to_owned(),
            r.text(),
        )
    };
    let value = |fine: u8, coarse: &str, lock: bool| {
        (
            200,
            "application/json".to_owned(),
            json!({"skadn_conv_value": fine, "skadn_coarse_value": coarse, "skadn_lock_window": lock})
                .to_string(),
        )
    };
    let ok = (200, "text/plain; charset=utf-8".to_owned(), "OK".to_owned());
    let ios = |token: &str, extra: &str| {
        format!(
            "s2s=1&app_token={APP_TOKEN}&event_token={token}&idfa={IDFA}&skadn_registered_at={registered}{extra}"
        )
    };
    // Not iOS 14+ (no skadn_registered_at): `OK`, unchanged.
    assert_eq!(
        get(&format!(
            "s2s=1&app_token={APP_TOKEN}&event_token=tut001&gps_adid=g-1"
        )),
        ok
    );
    // iOS 14+: the value the event earns, and the device's value only goes up.
    assert_eq!(get(&ios("tut001", "")), value(5, "low", false));
    let t = now_secs() - 60;
    let purchase = ios(
        EVENT_TOKEN,
        &format!("&revenue=12&currency=EUR&created_at_unix={t}"),
    );
    assert_eq!(get(&purchase), value(40, "high", false));
    // An exact retry (a duplicate, stored once) is answered the same.
    assert_eq!(get(&purchase), value(40, "high", false));
    assert_eq!(get(&ios(EVENT_TOKEN, "")), value(40, "high", false));
    assert_eq!(get(&ios("tut001", "")), value(40, "high", false));
    // The lock rule: the window ends, nothing moves the value any more.
    assert_eq!(
        get(&ios(EVENT_TOKEN, "&revenue=150&currency=USD")),
        value(63, "high", true)
    );
    assert_eq!(get(&ios("tut001", "")), value(63, "high", true));
    // Another device registered three days ago is past the 48-hour window: no value yet.
    let old = format!(
        "s2s=1&app_token={APP_TOKEN}&event_token={EVENT_TOKEN}&idfa=11111111-2222-3333-4444-555555555555&skadn_registered_at={}",
        now_secs() - 3 * 86_400
    );
    assert_eq!(get(&old), ok);
    // A malformed registration time is refused in Adjust's format.
    let (status, _, body) = get(&ios("tut001", "x"));
    assert_eq!((status, body), (400, failed("Invalid skadn_registered_at")));
    // Every accepted request is stored, skadn_registered_at kept in props.
    let events = inlet.export();
    assert_eq!(events.len(), 8);
    assert!(events[1]["props"]["skadn_registered_at"].is_string());

    // Removing the rules: iOS 14+ requests are answered `OK` again.
    let out = inlet.cli_ok(&["apps", "adjust-skan", "default", "--clear"]);
    assert!(out.contains("removed"), "{out}");
    assert_eq!(get(&ios("tut001", "")), ok);
}
