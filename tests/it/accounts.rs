//! Admin accounts over real HTTP and the real CLI: an invitation accepted, TOTP enrolment
//! and login (a used code refused, a wrong one refused), sessions that outlive a restart,
//! removal that ends an account's sessions, and the audit log of it all.

use crate::admin::{Admin, PASSWORD};
use crate::support::*;
use inlet::admin::totp::{code_at, step_of};
use serde_json::{Value, json};

fn post(inlet: &Inlet, path: &str, body: &Value) -> Resp {
    inlet
        .client()
        .post(
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap()
}

/// A session from a successful login/accept answer.
fn admin_of(inlet: &Inlet, r: &Resp) -> Admin {
    assert_eq!(r.status, 200, "{}", r.text());
    Admin {
        client: inlet.client(),
        cookie: r
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned(),
        csrf: r.json()["csrf_token"].as_str().unwrap().to_owned(),
    }
}

pub fn base32_decode(s: &str) -> Vec<u8> {
    let (mut buf, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {s}"),
        };
        buf = (buf << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

fn code(secret: &[u8], step: u64) -> String {
    format!("{:06}", code_at(secret, step))
}

#[test]
fn invite_totp_restart_remove_and_the_audit_log() {
    let mut inlet = Inlet::start();
    let mut admin = Admin::setup(&inlet);

    // The CLI's invitation link (through the running server's control socket).
    let origin = format!("http://{}", inlet.addr);
    let out = inlet.cli_ok(&["admin", "invite", "bob", "--url", &origin]);
    let link = out.lines().next().unwrap();
    assert!(
        link.starts_with(&format!("http://{}/admin/#invite=", inlet.addr)),
        "{out}"
    );
    let token = link.split("#invite=").nth(1).unwrap();
    let weak = post(
        &inlet,
        "/admin/api/invite/accept",
        &json!({ "token": token, "password": "short" }),
    );
    assert_eq!(weak.status, 400, "{}", weak.text());
    let r = post(
        &inlet,
        "/admin/api/invite/accept",
        &json!({ "token": token, "password": "bob's own password" }),
    );
    let mut bob = admin_of(&inlet, &r);
    assert_eq!(r.json()["account"], "bob");
    let again = post(
        &inlet,
        "/admin/api/invite/accept",
        &json!({ "token": token, "password": "bob's own password" }),
    );
    assert_eq!(again.status, 401);
    assert_eq!(again.json()["error"], "invite_invalid");

    // TOTP enrolment: a secret and its otpauth URI, confirmed with a code.
    let r = bob.post("/admin/api/account/totp", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let b32 = r.json()["secret"].as_str().unwrap().to_owned();
    let uri = r.json()["uri"].as_str().unwrap().to_owned();
    assert!(
        uri.starts_with("otpauth://totp/inlet%3Abob?secret=") && uri.contains(&b32),
        "{uri}"
    );
    let secret = base32_decode(&b32);
    assert_eq!(secret.len(), 20);
    let wrong = bob.post(
        "/admin/api/account/totp/confirm",
        &json!({ "code": "12345" }),
    );
    assert_eq!(wrong.json()["error"], "totp_invalid");
    let step = step_of(now_ms());
    let r = bob.post(
        "/admin/api/account/totp/confirm",
        &json!({ "code": code(&secret, step) }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The secret is not stored as it is.
    assert_eq!(files_contain(inlet.data(), b32.as_bytes()), None);
    assert_eq!(files_contain(inlet.data(), &secret), None);

    // Login: the password alone is not enough; a code of a later step is.
    let login = |totp: Option<&str>| {
        let mut body = json!({ "name": "bob", "password": "bob's own password" });
        if let Some(t) = totp {
            body["totp"] = t.into();
        }
        post(&inlet, "/admin/api/login", &body)
    };
    let r = login(None);
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("totp_required"))
    );
    let next = code(&secret, step + 1);
    let r = login(Some(&next));
    let bob2 = admin_of(&inlet, &r);
    // The same code again is a replay.
    let r = login(Some(&next));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("totp_reused"))
    );
    // A code of no step around now.
    let valid: Vec<String> = (step.saturating_sub(2)..step + 3)
        .map(|s| code(&secret, s))
        .collect();
    let bad = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !valid.contains(c))
        .unwrap();
    let r = login(Some(&bad));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("totp_invalid"))
    );
    // A wrong password with a good code is still a wrong password.
    let r = post(
        &inlet,
        "/admin/api/login",
        &json!({ "name": "bob", "password": "not bob's password", "totp": code(&secret, step + 2) }),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("wrong_password"))
    );

    // Sessions are stored: a restart keeps them.
    let list = inlet.cli_ok(&["admin", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("bob ") && l.contains(" yes ")),
        "{list}"
    );
    let (admin_cookie, bob_cookie) = (admin.cookie.clone(), bob2.cookie.clone());
    inlet.kill();
    inlet.restart();
    let reconnect = |cookie: &str, csrf: &str| Admin {
        client: inlet.client(),
        cookie: cookie.to_owned(),
        csrf: csrf.to_owned(),
    };
    admin = reconnect(&admin_cookie, &admin.csrf);
    let mut bob2 = reconnect(&bob_cookie, &bob2.csrf);
    let r = bob2.get("/admin/api/session");
    assert_eq!(r.status, 200, "bob is still logged in: {}", r.text());
    assert_eq!(admin.get("/admin/api/session").status, 200);
    // No setup code after a restart: the accounts are there.
    assert!(!inlet.log.lock().unwrap().contains("setup code"));

    let list = admin.get("/admin/api/admins").json();
    let names: Vec<(&str, bool)> = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["totp"].as_bool().unwrap()))
        .collect();
    assert_eq!(names, [("admin", false), ("bob", true)]);
    assert_eq!(list["me"], "admin");

    // An invitation from the panel.
    let r = admin.post("/admin/api/admins/invite", &json!({ "name": "carol" }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["path"]
            .as_str()
            .unwrap()
            .starts_with("/admin/#invite=")
    );
    let dup = admin.post("/admin/api/admins/invite", &json!({ "name": "bob" }));
    assert_eq!(dup.status, 409, "{}", dup.text());
    assert_eq!(
        admin.get("/admin/api/admins").json()["invites"][0]["name"],
        "carol"
    );

    // An audited write of the rest of the API.
    let r = admin.post("/admin/api/tenants", &json!({ "name": "acme" }));
    assert_eq!(r.status, 201, "{}", r.text());
    // A refused write is not an action.
    let r = admin.post("/admin/api/tenants", &json!({ "name": "acme" }));
    assert_eq!(r.status, 409, "{}", r.text());

    // A lost phone: the CLI turns the second factor off (and ends the sessions).
    inlet.cli_ok(&["admin", "reset-totp", "bob"]);
    assert_eq!(bob2.get("/admin/api/session").status, 401);
    let r = post(
        &inlet,
        "/admin/api/login",
        &json!({ "name": "bob", "password": "bob's own password" }),
    );
    bob = admin_of(&inlet, &r);

    // Removal ends every session of the account, and the last account stays.
    let r = admin.post("/admin/api/admins/bob/remove", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(bob.get("/admin/api/session").status, 401);
    assert_eq!(bob2.get("/admin/api/session").status, 401);
    let r = post(
        &inlet,
        "/admin/api/login",
        &json!({ "name": "bob", "password": "bob's own password" }),
    );
    assert_eq!(r.status, 401);
    let r = admin.post("/admin/api/admins/admin/remove", &json!({}));
    assert_eq!(r.status, 409, "{}", r.text());
    let out = inlet.cli(&["admin", "remove", "admin"]);
    assert!(!out.status.success());

    // The audit log: who did what to whom, newest first, in the API and the CLI.
    let log = admin.get("/admin/api/audit").json();
    let rows: Vec<(String, String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["at_ms"].as_u64().unwrap() > 0);
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (s("actor"), s("action"), s("target"))
        })
        .rev()
        .collect();
    let want = [
        ("admin", "setup", "admin"),
        ("cli", "invite", "bob"),
        ("bob", "accept_invite", "bob"),
        ("bob", "enable_totp", "bob"),
        ("bob", "login", "bob"),
        ("admin", "invite", "carol"),
        ("admin", "tenants", "acme"),
        ("cli", "reset_totp", "bob"),
        ("bob", "login", "bob"),
        ("admin", "remove_account", "bob"),
    ];
    let got: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(got, want);
    let cli = inlet.cli_ok(&["admin", "audit", "--json"]);
    assert_eq!(parse_ndjson(&cli).len(), want.len());
    assert!(inlet.cli_ok(&["admin", "list"]).contains("admin"));

    // Logout deletes the session (a copy of the cookie no longer works).
    let r = admin.post("/admin/api/logout", &json!({}));
    assert_eq!(r.status, 200);
    assert_eq!(admin.get("/admin/api/session").status, 401);
}

/// `set-password --name` adds an account from the CLI; the first account still logs in
/// without naming itself.
#[test]
fn the_cli_sets_passwords_of_named_accounts() {
    let inlet = Inlet::start();
    let _admin = Admin::setup(&inlet);
    let mut child = std::process::Command::new(BIN)
        .arg("--data")
        .arg(inlet.data())
        .args(["admin", "set-password", "--name", "ops"])
        .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ops password 1\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = post(
        &inlet,
        "/admin/api/login",
        &json!({ "name": "ops", "password": "ops password 1" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The first account still logs in without naming itself.
    let r = post(&inlet, "/admin/api/login", &json!({ "password": PASSWORD }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["account"], "admin");
}
