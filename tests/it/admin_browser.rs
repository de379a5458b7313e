//! The admin panel in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
//! installed by `.ci/run`), driven over WebDriver: the whole first-day story of a studio.
//! Screenshots of each page land in `test-artifacts/admin/`.

use crate::admin::{PASSWORD, setup_code};
use crate::support::*;
use fantoccini::elements::Element;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the browser test needs Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver; .ci/run does it)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _profile: tempfile::tempdir().expect("profile dir"),
        };
        let mut c = Client::new(([127, 0, 0, 1], port).into());
        wait_for("chromedriver to be ready", || {
            c.get("/status")
                .is_ok_and(|r| r.status == 200 && r.json()["value"]["ready"] == true)
        });
        driver
    }

    async fn browser(&self) -> Browser {
        let profile = format!("--user-data-dir={}", self._profile.path().display());
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,900", profile,
                ],
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/admin");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

async fn screenshot(b: &Browser, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join(format!("{name}.png")), png).expect("write screenshot");
}

async fn find(b: &Browser, css: &str) -> Element {
    b.wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
}

async fn fill(b: &Browser, css: &str, text: &str) {
    let el = find(b, css).await;
    el.clear().await.expect("clear");
    el.send_keys(text).await.expect("type");
}

async fn click(b: &Browser, css: &str) {
    find(b, css).await.click().await.expect("click");
}

/// Waits until the element's text contains `text`.
async fn wait_text(b: &Browser, css: &str, text: &str) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(el) = b.find(Locator::Css(css)).await
            && el.text().await.is_ok_and(|t| t.contains(text))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "{css} never showed {text:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_studio_sets_up_inlet_in_the_browser() {
    let mut inlet = Inlet::start();
    let code = setup_code(&inlet);
    let driver = Driver::start();
    let b = driver.browser().await;
    // Run the story as its own task so that the browser is closed even when it fails.
    let (b2, base, addr) = (b.clone(), inlet.url(""), inlet.addr);
    let mut result = tokio::spawn(async move { story(&b2, &base, addr, &code).await }).await;
    if result.is_ok() {
        // Sessions are stored: after a restart the second admin is still logged in.
        inlet.kill();
        inlet.restart();
        let (b2, base) = (b.clone(), inlet.url(""));
        result = tokio::spawn(async move { still_logged_in(&b2, &base).await }).await;
    }
    if result.is_err() {
        screenshot(&b, "failure").await;
    }
    b.close().await.expect("close the browser");
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn story(b: &Browser, base: &str, addr: std::net::SocketAddr, code: &str) {
    // First run: the setup form, with the code typed in by hand.
    b.goto(&format!("{base}/admin/")).await.unwrap();
    fill(b, "#setup-code", code).await;
    let nav = find(b, "#nav").await;
    assert!(
        !nav.is_displayed().await.unwrap(),
        "no navigation before login"
    );
    fill(b, "#setup-password", PASSWORD).await;
    fill(b, "#setup-password2", PASSWORD).await;
    screenshot(b, "01-setup").await;
    click(b, "#setup-submit").await;
    find(b, "#apps-today").await;

    // Log out and back in.
    click(b, "#logout").await;
    fill(b, "#login-password", "not the password").await;
    click(b, "#login-submit").await;
    wait_text(b, "#login-form .error", "Wrong password").await;
    screenshot(b, "02-login").await;
    fill(b, "#login-password", PASSWORD).await;
    click(b, "#login-submit").await;
    find(b, "#apps-today").await;

    // A tenant with a quota, and an app.
    click(b, "a[data-page=tenants]").await;
    fill(b, "#tenant-name", "acme").await;
    fill(b, "#tenant-quota", "1000").await;
    click(b, "#tenant-create").await;
    find(b, "tr[data-tenant=acme]").await;
    fill(b, "#app-name", "game").await;
    find(b, "#app-tenant")
        .await
        .select_by_value("acme")
        .await
        .unwrap();
    click(b, "#app-create").await;
    wait_text(b, "#apps-table", "game").await;
    screenshot(b, "03-tenants").await;

    // A key that may send purchases only.
    click(b, "a[data-page=keys]").await;
    find(b, "#key-app")
        .await
        .select_by_value("game")
        .await
        .unwrap();
    fill(b, "#key-label", "billing backend").await;
    fill(b, "#key-events", "purchase, subscribe").await;
    click(b, "#key-mint").await;
    let key = find(b, "#minted-key").await.text().await.unwrap();
    assert!(key.starts_with("srv_") && key.len() == 52, "{key:?}");
    click(b, "#copy-key").await;
    wait_text(b, "#copy-key", "Copied").await;
    wait_text(b, "#keys-table", "purchase, subscribe").await;
    screenshot(b, "04-keys").await;

    // The Events page is open when the event arrives: it appears without a reload.
    click(b, "a[data-page=events]").await;
    find(b, "#events-table[data-loaded]").await;
    let empty = find(b, "#no-events").await;
    assert!(empty.is_displayed().await.unwrap(), "no events yet");
    wait_text(b, "#live", "live").await;
    let mut c = Client::new(addr);
    let mut ev = event("order-7781");
    ev["user_id"] = "user_42".into();
    ev["revenue"] = 9.99.into();
    ev["currency"] = "USD".into();
    let r = c.post_json("/s2s/event", &key, &ev);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut not_allowed = event("open-1");
    not_allowed["event_name"] = "app_open".into();
    assert_eq!(c.post_json("/s2s/event", &key, &not_allowed).status, 403);
    wait_text(b, "#events-table tbody", "order-7781").await;
    screenshot(b, "05-events").await;

    // Filtering draws the page again: its live poll replaces the old one instead of adding
    // to it (each used to keep polling, and after a logout their 401s redrew the login form).
    // Count the page's timers from here on: setInterval adds one, clearInterval removes one.
    b.execute(
        "window.__timers = 0;
         const set = window.setInterval, clear = window.clearInterval;
         window.setInterval = (f, ms) => { window.__timers++; return set(f, ms); };
         window.clearInterval = (id) => { window.__timers--; return clear(id); };",
        vec![],
    )
    .await
    .unwrap();
    for i in 0..3 {
        fill(b, "#f-event_name", "purchase").await;
        click(b, "#filter-form button[type=submit]").await;
        find(b, "#events-table[data-loaded]").await;
        wait_text(b, "#events-table tbody", "order-7781").await;
        let timers = b.execute("return window.__timers", vec![]).await.unwrap();
        assert!(
            timers.as_i64().is_some_and(|n| n <= 0),
            "after {} filters the page runs {timers} more timers than before",
            i + 1
        );
    }
    click(b, "#f-clear").await;
    wait_text(b, "#events-table tbody", "order-7781").await;
    // Logged out after filtering, the login form stays as the user types into it.
    click(b, "#logout").await;
    fill(b, "#login-password", PASSWORD).await;
    let timers = b.execute("return window.__timers", vec![]).await.unwrap();
    assert!(
        timers.as_i64().is_some_and(|n| n < 0),
        "a poll outlived the logout: {timers}"
    );
    click(b, "#login-submit").await;
    // Back on the page it was on.
    wait_text(b, "#events-table tbody", "order-7781").await;

    // Its detail: the canonical event and the raw request.
    click(b, "#events-table tr[data-seq='1']").await;
    wait_text(b, "#event-json", "\"tenant\": \"acme\"").await;
    wait_text(b, "#audit-body", "order-7781").await;
    screenshot(b, "06-event").await;

    // The overview counts it.
    click(b, "a[data-page=overview]").await;
    wait_text(b, "#apps-today", "game").await;
    wait_text(b, "#quotas", "1 / 1,000").await;
    wait_text(b, "#rejections", "event_not_allowed_by_key").await;
    screenshot(b, "00-overview").await;

    // Revoke the key (two clicks: arm, confirm); the next request with it gets 401.
    click(b, "a[data-page=keys]").await;
    click(b, "button.revoke").await;
    wait_text(b, "button.revoke", "Really").await;
    click(b, "button.revoke").await;
    wait_text(b, "#keys-table", "revoked").await;
    screenshot(b, "07-revoked").await;
    let r = c.post_json("/s2s/event", &key, &event("order-7782"));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unknown_or_revoked_key");

    second_admin_with_totp(b, base).await;
}

/// The first admin invites a second from the Admins page; the second accepts the link, sets up
/// TOTP, logs out and back in with a code; the audit log shows it.
async fn second_admin_with_totp(b: &Browser, base: &str) {
    use inlet::admin::totp::{code_at, step_of};
    click(b, "a[data-page=admins]").await;
    fill(b, "#invite-name", "bob").await;
    click(b, "#invite-new button[type=submit]").await;
    wait_text(b, "#invite-link", "#invite=").await;
    let link = find(b, "#invite-link").await.text().await.unwrap();
    screenshot(b, "08-admins").await;
    click(b, "#logout").await;
    find(b, "#login-form").await;
    b.goto(&format!("{base}/admin/")).await.unwrap();
    b.goto(link.trim()).await.unwrap();
    b.refresh().await.unwrap();
    fill(b, "#invite-password", "bob's own password").await;
    fill(b, "#invite-password2", "bob's own password").await;
    click(b, "#invite-submit").await;
    wait_text(b, "#admins-table", "bob (you)").await;
    click(b, "#totp-start").await;
    let secret = find(b, "#totp-secret").await.text().await.unwrap();
    let secret = crate::accounts::base32_decode(secret.trim());
    let step = step_of(now_ms());
    fill(b, "#totp-code", &format!("{:06}", code_at(&secret, step))).await;
    click(b, "#totp-confirm button[type=submit]").await;
    wait_text(b, "#totp-done", "Two-factor login is on").await;
    click(b, "#logout").await;
    fill(b, "#login-name", "bob").await;
    fill(b, "#login-password", "bob's own password").await;
    click(b, "#login-submit").await;
    wait_text(b, "#login-form .error", "6-digit code").await;
    fill(
        b,
        "#login-totp",
        &format!("{:06}", code_at(&secret, step + 1)),
    )
    .await;
    screenshot(b, "09-totp-login").await;
    click(b, "#login-submit").await;
    // Back on the page it was on.
    wait_text(b, "#admins-table", "bob (you)").await;
    click(b, "a[data-page=audit]").await;
    wait_text(b, "#audit-table", "enable_totp").await;
    screenshot(b, "10-audit").await;
}

async fn still_logged_in(b: &Browser, base: &str) {
    b.goto(&format!("{base}/admin/#admins")).await.unwrap();
    wait_text(b, "#admins-table", "bob (you)").await;
}
