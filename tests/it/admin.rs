//! The admin API over real HTTP: sessions, setup, CSRF and origin checks, security headers,
//! the login rate limit, the separate admin listener, and what the panel reads and writes.

use crate::support::*;
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

pub const PASSWORD: &str = "correct horse battery";

/// The one-time setup code the server printed on stderr.
pub fn setup_code(inlet: &Inlet) -> String {
    setup_code_in(&inlet.log)
}

/// The one-time setup code a server printed in `log` (its stderr, as collected).
pub fn setup_code_in(log: &std::sync::Mutex<String>) -> String {
    let mut code = String::new();
    wait_for("the setup code on stderr", || {
        let log = log.lock().unwrap();
        match log.split("setup code ").nth(1) {
            Some(rest) => {
                code = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                true
            }
            None => false,
        }
    });
    code
}

/// An admin API client holding a session cookie and its CSRF token.
pub struct Admin {
    pub client: Client,
    pub cookie: String,
    pub csrf: String,
}

fn post_raw(client: &mut Client, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    client
        .post(path, &h, body.to_string().as_bytes())
        .expect("request")
}

/// The `name=value` part of a `Set-Cookie` answer.
fn cookie_of(r: &Resp) -> String {
    let set = r.header("set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().to_owned()
}

impl Admin {
    fn from_session(client: Client, r: &Resp) -> Admin {
        assert_eq!(r.status, 200, "{}", r.text());
        Admin {
            cookie: cookie_of(r),
            csrf: r.json()["csrf_token"].as_str().unwrap().to_owned(),
            client,
        }
    }

    /// Completes first-run setup with [`PASSWORD`].
    pub fn setup(inlet: &Inlet) -> Admin {
        let code = setup_code(inlet);
        let mut client = Client::new(inlet.addr);
        let r = post_raw(
            &mut client,
            "/admin/api/setup",
            &[],
            &json!({ "code": code, "password": PASSWORD }),
        );
        Admin::from_session(client, &r)
    }

    pub fn login(addr: SocketAddr, password: &str) -> Admin {
        let mut client = Client::new(addr);
        let r = post_raw(
            &mut client,
            "/admin/api/login",
            &[],
            &json!({ "password": password }),
        );
        Admin::from_session(client, &r)
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.client
            .request("GET", path, &[("Cookie", &self.cookie.clone())], b"")
            .expect("request")
    }

    pub fn post(&mut self, path: &str, body: &Value) -> Resp {
        let (cookie, csrf) = (self.cookie.clone(), self.csrf.clone());
        post_raw(
            &mut self.client,
            path,
            &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
            body,
        )
    }
}

/// Every route of the API but `setup` and `login`.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/api/session"),
    ("GET", "/admin/api/overview"),
    ("GET", "/admin/api/tenants"),
    ("GET", "/admin/api/apps"),
    ("GET", "/admin/api/keys"),
    ("GET", "/admin/api/keys?app=default"),
    ("GET", "/admin/api/events"),
    ("GET", "/admin/api/events?app=default&before=10"),
    ("GET", "/admin/api/events/1"),
    ("POST", "/admin/api/logout"),
    ("POST", "/admin/api/tenants"),
    ("POST", "/admin/api/tenants/default/quota"),
    ("POST", "/admin/api/tenants/default/retention"),
    ("POST", "/admin/api/tenants/default/rename"),
    ("POST", "/admin/api/tenants/default/delete"),
    ("POST", "/admin/api/apps/default/rename"),
    ("POST", "/admin/api/apps/default/delete"),
    ("POST", "/admin/api/apps/default/store-less"),
    ("POST", "/admin/api/apps"),
    ("POST", "/admin/api/apps/default/configure"),
    ("POST", "/admin/api/apps/default/adjust-events"),
    ("POST", "/admin/api/keys"),
    ("POST", "/admin/api/keys/1/revoke"),
    ("POST", "/admin/api/keys/1/allow"),
    ("GET", "/admin/api/secrets"),
    ("POST", "/admin/api/secrets"),
    ("POST", "/admin/api/secrets/1/rotate"),
    ("POST", "/admin/api/secrets/1/revoke"),
    ("GET", "/admin/api/profile?app=default&id=u1"),
    ("GET", "/admin/api/admins"),
    ("GET", "/admin/api/audit"),
    ("POST", "/admin/api/admins/invite"),
    ("POST", "/admin/api/admins/admin/remove"),
    ("POST", "/admin/api/account/totp"),
    ("POST", "/admin/api/account/totp/confirm"),
    ("GET", "/admin/api/receipts/default/e1"),
    ("GET", "/admin/api/tail"),
    ("GET", "/admin/api/health"),
    ("GET", "/admin/api/alerts"),
    ("POST", "/admin/api/alerts"),
    ("POST", "/admin/api/alerts/1/remove"),
    ("POST", "/admin/api/alerts/1/test"),
    ("GET", "/admin/api/no-such-route"),
    ("DELETE", "/admin/api/keys/1"),
];

fn assert_all_401(addr: SocketAddr, cookie: Option<&str>) {
    let mut c = Client::new(addr);
    for (method, path) in ROUTES {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(k) = cookie {
            headers.push(("Cookie", k));
        }
        let r = c
            .request(method, path, &headers, b"{\"name\":\"x\"}")
            .unwrap();
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
        assert_eq!(
            r.json()["error"],
            "admin_session_required",
            "{method} {path}"
        );
    }
}

#[test]
fn every_api_route_answers_401_without_a_session() {
    let inlet = Inlet::start();
    assert_all_401(inlet.addr, None);
    let r = Client::new(inlet.addr).get("/admin/api/tenants").unwrap();
    assert_eq!(r.json()["setup_required"], true);
    let mut admin = Admin::setup(&inlet);
    assert_all_401(
        inlet.addr,
        Some(&format!("inlet_admin={}", "ab".repeat(32))),
    );
    assert_eq!(admin.get("/admin/api/tenants").status, 200);
    let old = admin.cookie.clone();
    assert_eq!(admin.post("/admin/api/logout", &json!({})).status, 200);
    assert_all_401(inlet.addr, Some(&old));
    let r = Client::new(inlet.addr).get("/admin/api/tenants").unwrap();
    assert_eq!(r.json()["setup_required"], false);
    // Nothing was created by the refused writes.
    let admin = &mut Admin::login(inlet.addr, PASSWORD);
    assert_eq!(
        admin.get("/admin/api/tenants").json()["tenants"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        admin.get("/admin/api/keys").json()["keys"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_setup_code_works_once() {
    let inlet = Inlet::start();
    let code = setup_code(&inlet);
    let mut c = inlet.client();
    let r = post_raw(
        &mut c,
        "/admin/api/setup",
        &[],
        &json!({ "code": "AAAAA-AAAAA-AAAAA-AAAAA", "password": PASSWORD }),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("setup_code_invalid"))
    );
    let r = post_raw(
        &mut c,
        "/admin/api/setup",
        &[],
        &json!({ "code": code, "password": "short" }),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("password_invalid"))
    );
    let r = post_raw(
        &mut c,
        "/admin/api/login",
        &[],
        &json!({ "password": PASSWORD }),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (409, json!("setup_required"))
    );
    // Typed in lower case without dashes: still the code.
    let typed = code.replace('-', "").to_lowercase();
    let r = post_raw(
        &mut c,
        "/admin/api/setup",
        &[],
        &json!({ "code": typed, "password": PASSWORD }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag: {set}");
    let token = cookie_of(&r).split_once('=').unwrap().1.to_owned();
    assert_eq!(token.len(), 64, "256 random bits");
    let r = post_raw(
        &mut c,
        "/admin/api/setup",
        &[],
        &json!({ "code": code, "password": "another password" }),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (409, json!("already_set_up"))
    );
    // The first password stands; the second never took.
    Admin::login(inlet.addr, PASSWORD);
    let r = post_raw(
        &mut c,
        "/admin/api/login",
        &[],
        &json!({ "password": "another password" }),
    );
    assert_eq!(r.status, 401);
    // Neither the password nor the session token is anywhere on disk.
    assert_eq!(files_contain(inlet.data(), PASSWORD.as_bytes()), None);
    assert_eq!(files_contain(inlet.data(), token.as_bytes()), None);
    // A restart with a password set prints no new code.
    let mut inlet = inlet;
    inlet.kill();
    inlet.restart();
    Admin::login(inlet.addr, PASSWORD);
    assert!(!inlet.log.lock().unwrap().contains("setup code"));
}

#[test]
fn cross_origin_and_tokenless_writes_are_refused() {
    let inlet = Inlet::start();
    let mut admin = Admin::setup(&inlet);
    let host = inlet.addr.to_string();
    let same = format!("http://{host}");
    let (cookie, csrf) = (admin.cookie.clone(), admin.csrf.clone());
    let body = json!({ "name": "evil", "monthly_quota": 0 });
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("Cookie", &cookie),
                ("X-CSRF-Token", &csrf),
                ("Origin", "http://evil.example"),
            ],
            "cross_origin_request",
        ),
        (
            vec![
                ("Cookie", &cookie),
                ("X-CSRF-Token", &csrf),
                ("Origin", "null"),
            ],
            "cross_origin_request",
        ),
        (
            vec![
                ("Cookie", &cookie),
                ("X-CSRF-Token", &csrf),
                ("Sec-Fetch-Site", "cross-site"),
            ],
            "cross_origin_request",
        ),
        (
            vec![
                ("Cookie", &cookie),
                ("X-CSRF-Token", &csrf),
                ("Sec-Fetch-Site", "same-site"),
            ],
            "cross_origin_request",
        ),
        (
            vec![("Cookie", &cookie), ("Origin", &same)],
            "csrf_token_invalid",
        ),
        (
            vec![("Cookie", &cookie), ("X-CSRF-Token", "0000")],
            "csrf_token_invalid",
        ),
    ];
    for (headers, reason) in cases {
        let r = post_raw(&mut admin.client, "/admin/api/tenants", &headers, &body);
        assert_eq!(
            (r.status, r.json()["error"].as_str().unwrap()),
            (403, reason),
            "{headers:?}"
        );
    }
    let r = post_raw(
        &mut admin.client,
        "/admin/api/login",
        &[("Origin", "http://evil.example")],
        &json!({ "password": PASSWORD }),
    );
    assert_eq!(r.status, 403);
    let tenants = admin.get("/admin/api/tenants").json();
    assert!(!tenants.to_string().contains("evil"), "{tenants}");
    // What a browser on the page sends passes.
    let r = post_raw(
        &mut admin.client,
        "/admin/api/tenants",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Origin", &same),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &body,
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

fn assert_secured(r: &Resp, what: &str) {
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
}

#[test]
fn admin_responses_carry_the_security_headers_and_assets_their_types() {
    let inlet = Inlet::start();
    let mut c = inlet.client();
    for (path, status, ctype) in [
        ("/admin", 200, "text/html; charset=utf-8"),
        ("/admin/", 200, "text/html; charset=utf-8"),
        ("/admin/app.js", 200, "text/javascript; charset=utf-8"),
        ("/admin/app.css", 200, "text/css; charset=utf-8"),
        ("/admin/favicon.svg", 200, "image/svg+xml"),
        ("/admin/nope.js", 404, "application/json"),
        ("/admin/api/tenants", 401, "application/json"),
    ] {
        let r = c.get(path).unwrap();
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("content-type"), Some(ctype), "{path}");
        assert_secured(&r, path);
    }
    // The page loads its script from a file: no inline script for the CSP to block.
    let html = c.get("/admin/").unwrap().text();
    assert!(html.contains(r#"<script src="/admin/app.js""#), "{html}");
    assert_eq!(html.matches("<script").count(), 1);
    // ETags: a matching If-None-Match gets 304 without a body.
    let js = c.get("/admin/app.js").unwrap();
    let etag = js.header("etag").expect("etag").to_owned();
    let again = c
        .request("GET", "/admin/app.js", &[("If-None-Match", &etag)], b"")
        .unwrap();
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_secured(&again, "304");
    let mut admin = Admin::setup(&inlet);
    for path in ["/admin/api/overview", "/admin/api/keys"] {
        let r = admin.get(path);
        assert_eq!(r.status, 200);
        assert_secured(&r, path);
    }
    let r = admin.post(
        "/admin/api/apps",
        &json!({ "name": "x", "tenant": "nobody" }),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("not_found"))
    );
    assert_secured(&r, "404 from the API");
    // Ingest responses are not admin responses: no admin CSP there.
    let r = c.post("/s2s/event", &[], b"{}").unwrap();
    assert!(r.header("content-security-policy").is_none());
}

#[test]
fn the_secure_cookie_flag_marks_the_cookie() {
    let inlet = Inlet::start_with(&["--admin-secure-cookie"]);
    let code = setup_code(&inlet);
    let mut c = inlet.client();
    let r = post_raw(
        &mut c,
        "/admin/api/setup",
        &[],
        &json!({ "code": code, "password": PASSWORD }),
    );
    assert!(r.header("set-cookie").unwrap().contains("; Secure"));
}

#[test]
fn ten_wrong_passwords_in_a_row_get_429() {
    let inlet = Inlet::start();
    Admin::setup(&inlet);
    let mut c = inlet.client();
    let mut login =
        |pw: &str| post_raw(&mut c, "/admin/api/login", &[], &json!({ "password": pw }));
    for i in 1..10 {
        let r = login("wrong password");
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (401, json!("wrong_password")),
            "attempt {i}"
        );
    }
    let r = login("wrong password");
    assert_eq!(r.status, 429, "the 10th failure in a row");
    assert_eq!(r.json()["error"], "too_many_attempts");
    let secs: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    // Locked out: even the right password is not checked.
    let r = login(PASSWORD);
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    // Setup attempts are refused too while the address is locked out.
    let r = post_raw(
        &mut inlet.client(),
        "/admin/api/setup",
        &[],
        &json!({ "code": "x", "password": "whatever12" }),
    );
    assert_eq!(r.status, 429);
}

/// Runs `inlet admin set-password` with `password` on stdin.
fn set_password(data: &std::path::Path, password: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("--data")
        .arg(data)
        .args(["admin", "set-password"])
        .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn set_password_works_with_and_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    cli_ok(dir.path(), &["init"]);
    let out = set_password(dir.path(), "short");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8"));
    let out = set_password(dir.path(), "offline password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files_contain(dir.path(), b"offline password"), None);

    // A server on that data dir has a password: no setup code, login works.
    let mut inlet = Inlet::start();
    inlet.kill();
    std::fs::remove_dir_all(inlet.data()).unwrap();
    copy_dir(dir.path(), inlet.data());
    inlet.restart();
    let mut admin = Admin::login(inlet.addr, "offline password");
    assert!(!inlet.log.lock().unwrap().contains("setup code"));
    let r = inlet
        .client()
        .post(
            "/admin/api/setup",
            &[("Content-Type", "application/json")],
            br#"{"code":"x","password":"whatever12"}"#,
        )
        .unwrap();
    assert_eq!(r.status, 409);

    // While it runs: the new password works at once and every session ends.
    let out = set_password(inlet.data(), "online password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(admin.get("/admin/api/session").status, 401);
    let r = inlet
        .client()
        .post(
            "/admin/api/login",
            &[("Content-Type", "application/json")],
            br#"{"password":"offline password"}"#,
        )
        .unwrap();
    assert_eq!(r.status, 401);
    Admin::login(inlet.addr, "online password");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The admin listener's address from the log.
pub fn admin_addr(inlet: &Inlet) -> SocketAddr {
    let mut addr = None;
    wait_for("the admin address in the log", || {
        let log = inlet.log.lock().unwrap();
        addr = log
            .split("admin panel on http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.parse().ok());
        addr.is_some()
    });
    addr.unwrap()
}

#[test]
fn a_separate_admin_listener_takes_the_panel_off_the_ingest_port() {
    let inlet = Inlet::start_with(&["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&inlet);
    assert_ne!(admin, inlet.addr);
    let mut main = inlet.client();
    for path in ["/admin", "/admin/", "/admin/api/session", "/admin/app.js"] {
        assert_eq!(
            main.get(path).unwrap().status,
            404,
            "{path} on the ingest port"
        );
    }
    let r = main.post("/s2s/event", &[], b"{}").unwrap();
    assert_eq!(r.status, 401, "ingest stays on the main port");
    assert_eq!(main.get("/").unwrap().status, 404, "no panel to lead to");
    let mut side = Client::new(admin);
    let r = side.get("/").unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/admin/"));
    assert_eq!(side.get("/admin/").unwrap().status, 200);
    assert_eq!(side.get("/admin/api/session").unwrap().status, 401);
    assert_eq!(
        side.post("/s2s/event", &[], b"{}").unwrap().status,
        404,
        "no ingest on the admin port"
    );
    assert!(
        inlet
            .log
            .lock()
            .unwrap()
            .contains(&format!("http://{admin}/admin/#setup="))
    );
    let code = setup_code(&inlet);
    let r = post_raw(
        &mut side,
        "/admin/api/setup",
        &[],
        &json!({ "code": code, "password": PASSWORD }),
    );
    assert_eq!(r.status, 200);
    // The panel learns where events go: not its own origin.
    let cookie = cookie_of(&r);
    let o = side
        .request("GET", "/admin/api/overview", &[("Cookie", &cookie)], b"")
        .unwrap()
        .json();
    assert_eq!(o["ingest_url"], format!("http://{}", inlet.addr), "{o}");
    // SIGTERM stops both listeners and the process exits cleanly.
    let mut inlet = inlet;
    assert!(inlet.signal_and_wait("TERM").success());
    assert!(
        std::net::TcpStream::connect(admin).is_err(),
        "the admin port is closed"
    );
}

#[test]
fn the_api_manages_tenants_apps_keys_and_shows_what_arrived() {
    let inlet = Inlet::start();
    let mut admin = Admin::setup(&inlet);
    let r = admin.post(
        "/admin/api/tenants",
        &json!({ "name": "acme", "monthly_quota": 5 }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin.post("/admin/api/tenants", &json!({ "name": "acme" }));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (409, json!("conflict"))
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    let r = admin.post("/admin/api/tenants", &json!({ "name": "bad name!" }));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("invalid"))
    );
    let r = admin.post("/admin/api/tenants", &json!({ "name": "x", "extra": 1 }));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("bad_json"))
    );
    let r = admin.post(
        "/admin/api/tenants/acme/quota",
        &json!({ "monthly_quota": 2 }),
    );
    assert_eq!(r.status, 200);
    let r = admin.post(
        "/admin/api/apps",
        &json!({ "name": "game", "tenant": "acme" }),
    );
    assert_eq!(r.status, 201);
    let r = admin.post(
        "/admin/api/keys",
        &json!({ "app": "game", "label": "billing", "events": ["purchase", " "] }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_owned();
    let key_id = r.json()["id"].as_u64().unwrap();
    assert!(key.starts_with("srv_") && key.len() == 52);
    assert_eq!(files_contain(inlet.data(), key.as_bytes()), None);

    let mut c = inlet.client();
    for (id, user) in [("e1", "u1"), ("e2", "u2"), ("e3", "u1")] {
        let mut ev = event(id);
        ev["user_id"] = user.into();
        c.post_json("/s2s/event", &key, &ev);
    }
    let mut other = event("e4");
    other["event_name"] = "open".into();
    assert_eq!(c.post_json("/s2s/event", &key, &other).status, 403);
    c.post_json("/s2s/event", &key, &event("e1"));

    let keys = admin.get("/admin/api/keys?app=game").json();
    assert_eq!(keys["keys"][0]["allowed_events"], json!(["purchase"]));
    assert!(keys["keys"][0]["last_used_ms"].is_u64());
    assert!(!keys.to_string().contains(&key[4..]), "never the key");

    let tenants = admin.get("/admin/api/tenants").json();
    assert_eq!(tenants["tenants"][1]["used_this_month"], 2);
    let page = admin.get("/admin/api/events?limit=1").json();
    assert_eq!(page["events"][0]["seq"], 2);
    assert_eq!(page["events"][0]["event_id"], "e2");
    assert_eq!(page["last_seq"], 2);
    assert_eq!(page["next_before"], 2);
    let older = admin.get("/admin/api/events?limit=10&before=2").json();
    assert_eq!(older["events"][0]["event_id"], "e1");
    assert_eq!(older["next_before"], Value::Null);
    let by_user = admin.get("/admin/api/events?user_id=u2&app=game").json();
    assert_eq!(by_user["events"].as_array().unwrap().len(), 1);
    let none = admin.get("/admin/api/events?event_name=open").json();
    assert!(none["events"].as_array().unwrap().is_empty());
    let newer = admin.get("/admin/api/events?after=1").json();
    assert_eq!(newer["events"].as_array().unwrap().len(), 1);
    let by_id = admin.get("/admin/api/events?app=game&event_id=e1").json();
    assert_eq!(by_id["events"][0]["seq"], 1);
    let r = admin.get("/admin/api/events?before=x");
    assert_eq!(r.status, 400);

    let detail = admin.get("/admin/api/events/1").json();
    assert_eq!(detail["event"]["event_id"], "e1");
    assert_eq!(detail["event"]["tenant"], "acme");
    let audit_key = detail["event"]["audit_key"].as_str().unwrap();
    assert_eq!(detail["audit"]["key"], audit_key);
    let raw: Value = serde_json::from_str(detail["audit"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(raw["user_id"], "u1");
    assert_eq!(admin.get("/admin/api/events/99").status, 404);

    let o = admin.get("/admin/api/overview").json();
    let game = o["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == "game")
        .unwrap()
        .clone();
    assert_eq!(
        (game["today"].clone(), game["this_month"].clone()),
        (json!(2), json!(2))
    );
    let hourly: u64 = o["hourly"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(hourly, 2);
    assert_eq!(o["hourly"]["counts"].as_array().unwrap().len(), 48);
    assert_eq!(o["tenants"][1]["used_this_month"], 2);
    assert_eq!(o["accepted"], 2);
    assert_eq!(o["duplicates"], 1);
    let reasons: Vec<(String, u64)> = o["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(reasons.contains(&("cap_exceeded".into(), 1)), "{reasons:?}");
    assert!(
        reasons.contains(&("event_not_allowed_by_key".into(), 1)),
        "{reasons:?}"
    );

    let r = admin.post(&format!("/admin/api/keys/{key_id}/revoke"), &json!({}));
    assert_eq!(r.status, 200);
    assert!(r.json()["revoked_ms"].is_u64());
    assert_eq!(c.post_json("/s2s/event", &key, &event("e9")).status, 401);
    assert_eq!(
        admin.post("/admin/api/keys/999/revoke", &json!({})).status,
        404
    );
    // The CLI sees what the panel did.
    let listed = parse_ndjson(&inlet.cli_ok(&["keys", "list", "--json"]));
    assert!(listed[0]["revoked_ms"].is_u64());
}

#[test]
fn the_api_configures_the_adjust_and_appsflyer_settings_of_an_app() {
    let inlet = Inlet::start();
    let mut admin = Admin::setup(&inlet);
    let r = admin.post(
        "/admin/api/apps/default/configure",
        &json!({ "adjust_app_token": "abc123abc123", "appsflyer_bundle_id": "com.acme.game" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["app"]["adjust_app_token"], "abc123abc123");
    let r = admin.post(
        "/admin/api/apps/default/adjust-events",
        &json!({ "token": "f2e728", "event": "purchase" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["app"]["adjust_events"]["f2e728"], "purchase");
    let r = admin.post(
        "/admin/api/apps/nope/adjust-events",
        &json!({ "token": "f2e728", "event": "purchase" }),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = admin.post(
        "/admin/api/apps/default/adjust-events",
        &json!({ "token": "bad token!", "event": "purchase" }),
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // The mapping is what the Adjust endpoint uses.
    let key = inlet.mint("default");
    let auth = format!("Bearer {key}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!(
        "/event?s2s=1&app_token=abc123abc123&event_token=f2e728&gps_adid=38400000-8cf0-11bd-b23e-10b96e40000d&created_at_unix={now}"
    );
    let r = inlet
        .client()
        .request("GET", &path, &[("Authorization", &auth)], b"")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let events = inlet.export();
    assert_eq!(events.last().unwrap()["event_name"], "purchase");
    assert_eq!(events.last().unwrap()["source"], "adjust");

    // Unmapping through the API: the same token is unknown again.
    let r = admin.post(
        "/admin/api/apps/default/adjust-events",
        &json!({ "token": "f2e728", "event": "" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = inlet
        .client()
        .request("GET", &path, &[("Authorization", &auth)], b"")
        .unwrap();
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            r#"{"error":"Event request failed (Invalid event token)"}"#.to_owned()
        )
    );
}

#[test]
fn the_api_sets_the_skadnetwork_rules_of_an_app() {
    let inlet = Inlet::start();
    let mut admin = Admin::setup(&inlet);
    let rules = json!({
        "events": {"purchase": {"fine": 20, "coarse": "medium"}},
        "revenue": [{"min": 9.99, "fine": 40, "lock": true}],
        "window_hours": 72
    });
    let r = admin.post("/admin/api/apps/default/adjust-skan", &rules);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["app"]["adjust_skan"], rules);
    // Checked like the CLI's: a fine value above 63, an unknown field, no rules at all.
    for bad in [
        json!({"events": {"purchase": {"fine": 64}}}),
        json!({"events": {"purchase": {"fine": 1, "coarse": "huge"}}}),
        json!({"events": {"purchase": {"fine": 1}}, "windows": 3}),
        json!({}),
    ] {
        let r = admin.post("/admin/api/apps/default/adjust-skan", &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = admin.post("/admin/api/apps/nope/adjust-skan", &rules);
    assert_eq!(r.status, 404, "{}", r.text());
    let apps = parse_ndjson(&inlet.cli_ok(&["apps", "list", "--json"]));
    assert_eq!(apps[0]["adjust_skan"], rules);
    // `null` removes them.
    let r = admin.post("/admin/api/apps/default/adjust-skan", &Value::Null);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["app"].get("adjust_skan").is_none());
}

/// Damaged data is the server's problem, not the caller's: the admin API and ingest answer
/// 500 with a generic body and log the detail, while a caller's mistake keeps its 4xx and
/// message.
#[test]
fn damaged_records_answer_500_without_detail_and_mistakes_keep_their_4xx() {
    let mut inlet = Inlet::start();
    drop(Admin::setup(&inlet));
    let key = inlet.mint("default");
    let mut c = inlet.client();
    for id in ["e1", "e2"] {
        assert_eq!(c.post_json("/s2s/event", &key, &event(id)).status, 200);
    }
    assert!(inlet.signal_and_wait("TERM").success());
    {
        // What a bad disk or a stray write leaves: an event record and a key record that do
        // not decode.
        use redb::ReadableTable;
        let db = redb::Database::open(inlet.data().join("inlet.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(inlet::store::tables::EVENTS)
            .unwrap()
            .insert(2, b"\xffgarbage".as_slice())
            .unwrap();
        let mut keys = txn.open_table(inlet::store::tables::KEYS).unwrap();
        let ids: Vec<u32> = keys.iter().unwrap().map(|r| r.unwrap().0.value()).collect();
        assert_eq!(ids.len(), 1);
        keys.insert(ids[0], b"\xffgarbage".as_slice()).unwrap();
        drop(keys);
        txn.commit().unwrap();
    }
    inlet.restart();
    let mut admin = Admin::login(inlet.addr, PASSWORD);
    for path in [
        "/admin/api/events",
        "/admin/api/events/2",
        "/admin/api/keys",
    ] {
        let r = admin.get(path);
        assert_eq!(
            (r.status, r.text()),
            (500, r#"{"error":"internal_error"}"#.to_owned()),
            "{path}"
        );
    }
    // Ingest alike: 500 in the dialect's own shape, not a 503 that invites a retry.
    let r = inlet.client().post_json("/s2s/event", &key, &event("e3"));
    assert_eq!(
        (r.status, r.text()),
        (500, r#"{"error":"internal"}"#.to_owned())
    );
    for line in ["admin request failed", "store read failed", "damaged data"] {
        inlet.wait_log(line);
    }
    // A caller's mistake: its 4xx, and a message that says what is wrong.
    let r = admin.post("/admin/api/apps", &json!({ "name": "g", "tenant": "nope" }));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("not_found")),
        "{}",
        r.text()
    );
    assert!(r.json()["message"].as_str().unwrap().contains("no tenant"));
    let r = admin.post("/admin/api/tenants", &json!({ "name": "bad name!" }));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("invalid"))
    );
    assert!(r.json()["message"].as_str().unwrap().contains("must be"));
}

/// The first minutes: `/` leads to the panel, the banner says what is there and what to run
/// next, and that command works.
#[test]
fn the_first_run_leads_to_the_panel_and_says_what_to_do_next() {
    let inlet = Inlet::start();
    let mut c = inlet.client();
    let r = c.get("/").unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/admin/"));
    assert_eq!(c.post("/", &[], b"{}").unwrap().status, 404);
    setup_code(&inlet);
    let log = inlet.log.lock().unwrap().clone();
    assert!(
        log.contains("with tenant \"default\" and app \"default\""),
        "{log}"
    );
    let command = log
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("inlet ") && l.contains("keys mint"))
        .unwrap_or_else(|| panic!("no next command in {log}"));
    assert!(
        command.contains(&format!("--data {}", inlet.data().display())),
        "{command}"
    );
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let key = inlet.cli_ok(&args[args.iter().position(|a| *a == "keys").unwrap()..]);
    assert!(key.trim().starts_with("srv_"), "{key}");
    // The overview tells the panel whether an event is stored yet (it then offers to send one).
    let mut a = Admin::setup(&inlet);
    let o = a.get("/admin/api/overview").json();
    assert_eq!(o["last_seq"], 0, "{o}");
    assert_eq!(
        o["ingest_url"],
        Value::Null,
        "the panel shares the ingest origin"
    );
    let r = c.post_json("/s2s/event", key.trim(), &event("e1"));
    assert_eq!(r.status, 200);
    assert_eq!(a.get("/admin/api/overview").json()["last_seq"], 1);
}

#[test]
fn the_api_renames_and_deletes_tenants_and_apps_and_sets_retention() {
    let inlet = Inlet::start();
    let mut a = Admin::setup(&inlet);
    assert_eq!(
        a.post("/admin/api/tenants", &json!({ "name": "acme" }))
            .status,
        201
    );
    for app in ["game", "spare"] {
        let r = a.post("/admin/api/apps", &json!({ "name": app, "tenant": "acme" }));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // Retention: days, forever, the server default; a bad value is a 400.
    let r = a.post("/admin/api/tenants/acme/retention", &json!({ "days": 30 }));
    assert_eq!(r.json()["retention_days"], 30, "{}", r.text());
    let t = a.get("/admin/api/tenants").json();
    let acme = t["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme")
        .unwrap();
    assert_eq!(acme["retention_days"], 30);
    assert_eq!(t["default_retention_days"], 0);
    let r = a.post(
        "/admin/api/tenants/acme/retention",
        &json!({ "days": null }),
    );
    assert_eq!(r.json()["retention_days"], Value::Null);
    let r = a.post(
        "/admin/api/tenants/acme/retention",
        &json!({ "days": 99999 }),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        a.post("/admin/api/tenants/nope/retention", &json!({ "days": 1 }))
            .status,
        404
    );

    // Store less, as `inlet apps store-less`: shown with the app, checked like the CLI's.
    let r = a.post(
        "/admin/api/apps/game/store-less",
        &json!({ "ip": "truncate", "drop_user_agent": true, "fields_days": 30 }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["app"]["store_less"],
        json!({ "ip": "truncate", "drop_user_agent": true, "fields_days": 30 })
    );
    for bad in [
        json!({ "ip": "truncate", "drop_user_agent": true, "fields_days": 0 }),
        json!({ "ip": "mask", "drop_user_agent": true, "fields_days": null }),
        json!({ "ip": "drop", "drop_user_agent": true, "fields_days": null, "x": 1 }),
    ] {
        let r = a.post("/admin/api/apps/game/store-less", &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = a.post(
        "/admin/api/apps/game/store-less",
        &json!({ "ip": "keep", "drop_user_agent": false, "fields_days": null }),
    );
    assert!(r.json()["app"].get("store_less").is_none(), "{}", r.text());

    // An app without events is renamed; its key goes on working under the new name.
    let key = inlet.mint("game");
    let r = a.post("/admin/api/apps/game/rename", &json!({ "name": "game2" }));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = a.post("/admin/api/apps/game2/rename", &json!({ "name": "spare" }));
    assert_eq!(r.status, 409, "the name is taken");
    let r = a.post(
        "/admin/api/apps/game2/rename",
        &json!({ "name": "bad name" }),
    );
    assert_eq!(r.status, 400);
    let mut c = inlet.client();
    assert_eq!(c.post_json("/s2s/event", &key, &event("e1")).status, 200);
    assert_eq!(inlet.export()[0]["app"], "game2");
    // Once it has events, neither it nor its tenant is renamed or deleted.
    for (path, body) in [
        ("/admin/api/apps/game2/rename", json!({ "name": "g3" })),
        ("/admin/api/tenants/acme/rename", json!({ "name": "acme2" })),
        ("/admin/api/apps/game2/delete", json!({})),
        ("/admin/api/tenants/acme/delete", json!({ "dry_run": true })),
    ] {
        let r = a.post(path, &body);
        assert_eq!(r.status, 409, "{path}: {}", r.text());
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("received 1 events")
        );
    }
    // An app without events is deleted with its key and secret: asked first, then done.
    let spare_key = inlet.mint("spare");
    let r = a.post(
        "/admin/api/secrets",
        &json!({ "app": "spare", "label": "s" }),
    );
    assert_eq!(r.status, 201);
    let r = a.post("/admin/api/apps/spare/delete", &json!({ "dry_run": true }));
    assert_eq!(
        r.json(),
        json!({ "dry_run": true, "removed": { "tenants": [], "apps": ["spare"], "keys": 1, "secrets": 1 } })
    );
    assert_eq!(
        c.post_json("/s2s/event", &spare_key, &event("s1")).status,
        200
    );
    let r = a.post("/admin/api/apps/spare/delete", &json!({}));
    assert_eq!(r.status, 409, "it has an event now: {}", r.text());

    // A tenant whose apps have no events goes with them.
    a.post("/admin/api/tenants", &json!({ "name": "trial" }));
    a.post(
        "/admin/api/apps",
        &json!({ "name": "demo", "tenant": "trial" }),
    );
    let demo_key = inlet.mint("demo");
    let r = a.post(
        "/admin/api/tenants/trial/rename",
        &json!({ "name": "trial2" }),
    );
    assert_eq!(r.json()["name"], "trial2", "{}", r.text());
    let r = a.post("/admin/api/tenants/trial2/delete", &json!({}));
    assert_eq!(
        r.json(),
        json!({ "dry_run": false, "removed": { "tenants": ["trial2"], "apps": ["demo"], "keys": 1, "secrets": 0 } })
    );
    let apps = a.get("/admin/api/apps").json();
    assert!(!apps.to_string().contains("demo"), "{apps}");
    let keys = a.get("/admin/api/keys").json();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2, "{keys}");
    let r = c.post_json("/s2s/event", &demo_key, &event("d1"));
    assert_eq!(r.status, 401, "the deleted app's key is gone");
    assert_eq!(
        a.post("/admin/api/tenants/trial2/delete", &json!({}))
            .status,
        404
    );
}
