//! The admin panel in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
//! installed by `.ci/run`), driven over WebDriver: the whole first-day story of a studio.
//! Screenshots of each page, 1280 px wide and 390 px (a phone), land in
//! `target/screenshots/`.

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
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
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

/// Types `text` into the element. A page redraw can replace the element between finding and
/// typing (stale, or not interactable yet): it is found again until the deadline.
async fn fill(b: &Browser, css: &str, text: &str) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let el = find(b, css).await;
        let typed = async {
            el.clear().await?;
            el.send_keys(text).await
        };
        match typed.await {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() >= end => panic!("typing into {css}: {e}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// Clicks the element, found again (as [`fill`] does) when a redraw replaced it.
async fn click(b: &Browser, css: &str) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        match find(b, css).await.click().await {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() >= end => panic!("clicking {css}: {e}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
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
    let _ = std::fs::remove_file(artifacts().join("failure.png"));
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

/// Sets the viewport's width (CSS pixels) and checks that the page got it.
async fn viewport(b: &Browser, width: u32) {
    b.set_window_size(width, 900).await.expect("window size");
    let inner = b.execute("return window.innerWidth", vec![]).await.unwrap();
    assert_eq!(inner.as_u64(), Some(u64::from(width)), "viewport width");
}

/// The page does not scroll sideways: what is wider (tables) scrolls inside its own box.
async fn assert_no_sideways_scroll(b: &Browser, page: &str) {
    let r = b
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            vec![],
        )
        .await
        .unwrap();
    let (scroll, inner) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
    assert!(
        scroll <= inner,
        "{page}: the page is {scroll} px wide in a {inner} px window"
    );
}

/// The element's `title` attribute.
async fn title_of(b: &Browser, css: &str) -> String {
    find(b, css)
        .await
        .attr("title")
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn story(b: &Browser, base: &str, addr: std::net::SocketAddr, code: &str) {
    // First run: the first URL the log shows leads to the panel, which asks for the setup
    // code (typed in by hand here).
    b.goto(&format!("{base}/")).await.unwrap();
    fill(b, "#setup-code", code).await;
    assert!(
        b.current_url().await.unwrap().path().starts_with("/admin/"),
        "/ leads to the panel"
    );
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

    // Nothing is stored yet: the overview offers to send a first event. The button mints a
    // key and shows a request with this server's URL; running it stores the event.
    click(b, "#first-mint").await;
    let command = find(b, "#snippet-native pre").await.text().await.unwrap();
    assert!(
        command.starts_with(&format!("curl -X POST {base}/s2s/event")),
        "{command}"
    );
    for dialect in ["gamerebellion", "adjust", "appsflyer", "datafly"] {
        find(b, &format!("#snippet-{dialect}")).await;
    }
    wait_text(b, "#first-waiting", "Waiting").await;
    screenshot(b, "02-first-event").await;
    let out = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .output()
        .expect("run curl");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("\"accepted\":1"), "{command}\n{answer}");
    wait_text(b, "#first-arrived", "It arrived").await;
    click(b, "#first-arrived a").await;
    wait_text(b, "#events-table tbody", "user_42").await;

    // Log out and back in.
    click(b, "#logout").await;
    fill(b, "#login-password", "not the password").await;
    click(b, "#login-submit").await;
    wait_text(b, "#login-form .error", "Wrong password").await;
    screenshot(b, "03-login").await;
    fill(b, "#login-password", PASSWORD).await;
    click(b, "#login-submit").await;
    find(b, "#events-table[data-loaded]").await;

    // A tenant with a quota, and an app.
    click(b, "a[data-page=tenants]").await;
    fill(b, "#tenant-name", "acme").await;
    fill(b, "#tenant-quota", "1000").await;
    click(b, "#tenant-create").await;
    find(b, "tr[data-tenant=acme]").await;
    for app in ["game", "scratch"] {
        fill(b, "#app-name", app).await;
        find(b, "#app-tenant")
            .await
            .select_by_value("acme")
            .await
            .unwrap();
        click(b, "#app-create").await;
        wait_text(b, "#apps-table", app).await;
    }
    // Times read as dates, the raw value on hover.
    let created = title_of(b, "tr[data-tenant=acme] time").await;
    assert!(created.contains("ms since the epoch"), "{created}");
    screenshot(b, "04-tenants").await;

    // The tenant's retention.
    click(b, "tr[data-tenant=acme] a").await;
    find(b, "#retention-mode")
        .await
        .select_by_value("days")
        .await
        .unwrap();
    fill(b, "#retention-days", "30").await;
    click(b, "#retention-form button[type=submit]").await;
    wait_text(b, "#retention-saved", "Saved").await;
    screenshot(b, "05-tenant").await;
    click(b, "a[data-page=tenants]").await;
    wait_text(b, "tr[data-tenant=acme]", "30 days").await;

    // An app made by mistake: renamed, then deleted (the page says what goes with it).
    click(b, "tr[data-app=scratch] a").await;
    fill(b, "#rename-name", "scratch2").await;
    click(b, "#rename-form button[type=submit]").await;
    wait_text(b, "h1", "App scratch2").await;
    click(b, "#delete").await;
    wait_text(
        b,
        "#delete-what",
        "This removes app scratch2, 0 keys, 0 signing secrets.",
    )
    .await;
    click(b, "#delete").await;
    wait_text(b, "#apps-table", "game").await;
    let apps = find(b, "#apps-table").await.text().await.unwrap();
    assert!(!apps.contains("scratch"), "{apps}");

    // The app's dialect settings: Adjust app token and an event token, AppsFlyer bundle id.
    click(b, "tr[data-app=game] a").await;
    fill(b, "#adjust-app-token", "4w565xzmb54d").await;
    fill(b, "#appsflyer-bundle-id", "com.studio.web").await;
    click(b, "#settings-save").await;
    wait_text(b, "#settings-saved", "Saved").await;
    // Store less: IPs truncated, client fields kept 30 days; still so after a reload.
    find(b, "#store-less-ip")
        .await
        .select_by_value("truncate")
        .await
        .unwrap();
    fill(b, "#store-less-days", "30").await;
    click(b, "#store-less-form button[type=submit]").await;
    wait_text(b, "#store-less-saved", "Saved").await;
    b.refresh().await.unwrap();
    wait_text(b, "main h1", "App game").await;
    for (css, want) in [("#store-less-ip", "truncate"), ("#store-less-days", "30")] {
        let got = find(b, css).await.prop("value").await.unwrap();
        assert_eq!(got.as_deref(), Some(want), "{css}");
    }
    fill(b, "#adjust-event-token", "f0ob4r").await;
    fill(b, "#adjust-event-name", "purchase").await;
    click(b, "#adjust-event-form button[type=submit]").await;
    wait_text(b, "#adjust-events", "f0ob4r").await;
    assert_eq!(
        find(b, "#adjust-app-token")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("4w565xzmb54d"),
        "the page drawn again shows the saved token"
    );
    screenshot(b, "06-app").await;

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
    screenshot(b, "07-keys").await;

    // The settings are live: an Adjust request with the app token and the mapped event token.
    let mut c = Client::new(addr);
    let auth = format!("Bearer {key}");
    let adjust = format!(
        "/event?s2s=1&app_token=4w565xzmb54d&event_token=f0ob4r\
         &idfa=D2CADB5F-410F-4963-AC0C-2A78534BDF1E&created_at_unix={}",
        now_ms() / 1000
    );
    let r = c
        .request("GET", &adjust, &[("Authorization", &auth)], b"")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // The Events page is open when the event arrives: it appears without a reload.
    click(b, "a[data-page=events]").await;
    find(b, "#events-table[data-loaded]").await;
    wait_text(b, "#live", "live").await;
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
    screenshot(b, "08-events").await;

    // A filter that matches nothing says so (and only then).
    fill(b, "#f-event_name", "no-such-event").await;
    click(b, "#filter-form button[type=submit]").await;
    wait_text(b, "#no-events", "No events match these filters").await;

    // Filtering draws the page again: its stream replaces the old one instead of adding to
    // it (one EventSource per tab: the server counts one tail subscriber), and the page runs
    // no polling timer.
    b.execute(
        "window.__timers = 0;
         const set = window.setInterval;
         window.setInterval = (f, ms) => { window.__timers++; return set(f, ms); };",
        vec![],
    )
    .await
    .unwrap();
    for _ in 0..3 {
        fill(b, "#f-event_name", "purchase").await;
        click(b, "#filter-form button[type=submit]").await;
        find(b, "#events-table[data-loaded]").await;
        wait_text(b, "#events-table tbody", "order-7781").await;
    }
    wait_text(b, "#live", "live").await;
    let timers = b.execute("return window.__timers", vec![]).await.unwrap();
    assert_eq!(timers, json!(0), "the Events page polls");
    let mut m = Client::new(addr);
    wait_for("one tail subscriber", || tail_subscribers(&mut m) == 1);
    click(b, "#f-clear").await;
    wait_text(b, "#events-table tbody", "order-7781").await;
    // Logged out, the stream is closed and the login form stays as the user types into it.
    click(b, "#logout").await;
    fill(b, "#login-password", PASSWORD).await;
    wait_for("no tail subscriber", || tail_subscribers(&mut m) == 0);
    click(b, "#login-submit").await;
    // Back on the page it was on.
    wait_text(b, "#events-table tbody", "order-7781").await;

    // Its detail: readable times (raw on hover), the canonical event and the raw request.
    let seq = find(b, "#events-table tbody tr[data-seq]")
        .await
        .attr("data-seq")
        .await
        .unwrap()
        .unwrap();
    click(b, &format!("#events-table tr[data-seq='{seq}']")).await;
    wait_text(b, "#event-json", "\"tenant\": \"acme\"").await;
    wait_text(b, "#audit-body", "order-7781").await;
    wait_text(b, "#event-times", "received_at_ms").await;
    let raw = title_of(b, "#event-times time").await;
    assert!(raw.contains("ms since the epoch"), "{raw}");
    screenshot(b, "09-event").await;

    // A profile: the ids linked to user_42 and its latest events.
    click(b, "a[data-page=profiles]").await;
    find(b, "#profile-app")
        .await
        .select_by_value("game")
        .await
        .unwrap();
    fill(b, "#profile-id", "nobody").await;
    click(b, "#profile-lookup").await;
    wait_text(b, "#profile-none", "No event of app game carries nobody").await;
    fill(b, "#profile-id", "user_42").await;
    click(b, "#profile-lookup").await;
    wait_text(b, "#profile-ids", "user_42").await;
    wait_text(b, "#profile-events", "order-7781").await;
    screenshot(b, "10-profile").await;

    // Signing secrets: mint (shown once), rotate with a grace period, revoke the old one.
    click(b, "a[data-page=secrets]").await;
    wait_text(b, "#secrets-table", "No signing secrets yet").await;
    find(b, "#secret-app")
        .await
        .select_by_value("game")
        .await
        .unwrap();
    fill(b, "#secret-label", "backend").await;
    click(b, "#secret-mint").await;
    let secret = find(b, "#minted-secret").await.text().await.unwrap();
    assert!(secret.starts_with("sk_"), "{secret}");
    click(b, "tr[data-secret-id='1'] .rotate").await;
    wait_text(b, "tr[data-secret-id='1']", "valid until").await;
    wait_text(b, "tr[data-secret-id='2']", "active").await;
    let rotated = find(b, "#minted-secret").await.text().await.unwrap();
    assert!(rotated.starts_with("sk_") && rotated != secret);
    click(b, "tr[data-secret-id='1'] .revoke").await;
    wait_text(b, "tr[data-secret-id='1'] .revoke", "Really").await;
    click(b, "tr[data-secret-id='1'] .revoke").await;
    wait_text(b, "tr[data-secret-id='1']", "revoked").await;
    screenshot(b, "11-secrets").await;

    // The overview counts it; the first-event card is gone once its event arrived.
    click(b, "a[data-page=overview]").await;
    wait_text(b, "#apps-today", "game").await;
    assert!(
        b.find(Locator::Css("#first-event")).await.is_err(),
        "the first-event card outlived its event"
    );
    let text = find(b, "main").await.text().await.unwrap();
    for stray in ["null", "undefined", "[object"] {
        assert!(!text.contains(stray), "{stray:?} on the overview: {text}");
    }
    wait_text(b, "#quotas", "2 / 1,000").await;
    wait_text(b, "#rejections", "event_not_allowed_by_key").await;
    screenshot(b, "00-overview").await;

    // Revoke the key (two clicks: arm, confirm); the next request with it gets 401.
    click(b, "a[data-page=keys]").await;
    click(b, "tr[data-key-id='2'] button.revoke").await;
    wait_text(b, "tr[data-key-id='2'] button.revoke", "Really").await;
    click(b, "tr[data-key-id='2'] button.revoke").await;
    wait_text(b, "tr[data-key-id='2']", "revoked").await;
    screenshot(b, "12-revoked").await;
    let r = c.post_json("/s2s/event", &key, &event("order-7782"));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unknown_or_revoked_key");

    // A phone, 390 px wide: every page fits, Log out is reachable, tables scroll in their box.
    viewport(b, 390).await;
    for page in [
        "overview", "events", "events/3", "keys", "tenants", "secrets", "profiles", "erasures",
        "app/game",
    ] {
        b.goto(&format!("{base}/admin/#{page}")).await.unwrap();
        find(b, "main h1").await;
        let sel = match page {
            "events" => "#events-table[data-loaded]",
            "profiles" => "#profile-events",
            "events/3" => "#audit-body",
            _ => "main h1",
        };
        find(b, sel).await;
        assert_no_sideways_scroll(b, page).await;
        let text = find(b, "main").await.text().await.unwrap();
        for stray in ["null", "undefined", "[object", "NaN"] {
            assert!(!text.contains(stray), "{stray:?} on {page}: {text}");
        }
        assert!(
            find(b, "#logout").await.is_displayed().await.unwrap(),
            "{page}: Log out"
        );
        screenshot(b, &format!("390-{}", page.replace('/', "-"))).await;
    }
    click(b, "#logout").await;
    find(b, "#login-form").await;
    viewport(b, 1280).await;
    fill(b, "#login-password", PASSWORD).await;
    click(b, "#login-submit").await;
    // Back on the page it was on, logged in.
    wait_text(b, "main h1", "App game").await;
    second_admin_with_totp(b, base).await;
    erase_a_person(b).await;
}

/// A person's data erased from the Erasures page, with their later events refused: the
/// receipt shows, the ledger lists it, and the profile lookup finds nothing of them.
async fn erase_a_person(b: &Browser) {
    click(b, "a[data-page=erasures]").await;
    wait_text(b, "#erasures-table", "No erasures yet").await;
    find(b, "#erase-app")
        .await
        .select_by_value("game")
        .await
        .unwrap();
    fill(b, "#erase-id", "user_id=user_42").await;
    click(b, "#erase-suppress").await;
    click(b, "#erase-submit").await;
    wait_text(b, "#erasure-done", "Erased").await;
    wait_text(b, "#erasure-done", "user_id=user_42").await;
    wait_text(b, "#erasures-table", "erased, suppressed").await;
    screenshot(b, "13-erasures").await;
    click(b, "a[data-page=profiles]").await;
    find(b, "#profile-app")
        .await
        .select_by_value("game")
        .await
        .unwrap();
    fill(b, "#profile-id", "user_42").await;
    click(b, "#profile-lookup").await;
    wait_text(b, "#profile-none", "No event of app game carries user_42").await;
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

/// The receipt search box on the Events page (issue 21), and an app's rules on its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_is_found_and_rules_are_kept_in_the_browser() {
    let inlet = Inlet::start();
    let code = setup_code(&inlet);
    let key = inlet.mint("default");
    let mut c = inlet.client();
    assert_eq!(
        c.post_json("/s2s/event", &key, &event("rcpt-1")).status,
        200
    );
    let again = c.post_json("/s2s/event", &key, &event("rcpt-1"));
    assert_eq!(again.json()["duplicate"], true);
    let only_purchases = inlet
        .cli_ok(&[
            "keys", "mint", "--app", "default", "--label", "p", "--events", "purchase",
        ])
        .trim()
        .to_owned();
    let mut bad = event("rcpt-bad");
    bad["event_name"] = json!("refund");
    assert_eq!(c.post_json("/s2s/event", &only_purchases, &bad).status, 403);
    // A refused event of a fixable kind is kept for a replay, off the request's path.
    wait_for("the refused event held", || {
        inlet
            .cli_ok(&["receipt", "default", "rcpt-bad"])
            .contains("quarantined")
    });
    let driver = Driver::start();
    let b = driver.browser().await;
    let (b2, base) = (b.clone(), inlet.url(""));
    let result = tokio::spawn(async move { receipts_and_rules(&b2, &base, &code).await }).await;
    if result.is_err() {
        screenshot(&b, "failure-receipts").await;
    }
    b.close().await.expect("close the browser");
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    wait_for("the business key switched on in the browser", || {
        inlet
            .cli_ok(&["apps", "drop-rules", "list", "default"])
            .contains("business-key dedupe: on")
    });
    // The rule added in the browser drops events.
    let mut noise = event("noise-1");
    noise["event_name"] = json!("noise");
    let r = c.post_json("/s2s/event", &key, &noise);
    assert_eq!(r.json()["dropped"], true, "{}", r.text());
}

async fn receipts_and_rules(b: &Browser, base: &str, code: &str) {
    b.goto(&format!("{base}/")).await.unwrap();
    fill(b, "#setup-code", code).await;
    fill(b, "#setup-password", PASSWORD).await;
    fill(b, "#setup-password2", PASSWORD).await;
    click(b, "#setup-submit").await;
    find(b, "#apps-today").await;
    b.goto(&format!("{base}/admin/#events")).await.unwrap();
    fill(b, "#receipt-id", "rcpt-1").await;
    click(b, "#receipt-search").await;
    wait_text(b, "#receipt-status", "accepted").await;
    wait_text(b, "#receipt-result", "of seq 1, answered 1 time").await;
    screenshot(b, "receipt").await;
    fill(b, "#receipt-id", "rcpt-bad").await;
    click(b, "#receipt-search").await;
    wait_text(b, "#receipt-status", "quarantined").await;
    wait_text(b, "#receipt-result", "event_not_allowed_by_key").await;
    fill(b, "#receipt-id", "never-sent").await;
    click(b, "#receipt-search").await;
    wait_text(b, "#receipt-result", "knows nothing").await;

    b.goto(&format!("{base}/admin/#app/default")).await.unwrap();
    wait_text(b, "#drop-rules", "No drop rules").await;
    click(b, "#business-key").await;
    fill(b, "#drop-event", "noise").await;
    click(b, "#drop-rule-form button").await;
    wait_text(b, "#drop-rules tbody", "noise").await;
    screenshot(b, "app-rules").await;
}

/// Quarantine on the panel: an event refused as not allowed by its key is listed under its
/// reason; replayed before the fix it stays, after the fix (the key's allowed events edited
/// on the Keys page) it is stored and leaves the quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_replayed_from_the_quarantine_page() {
    let inlet = Inlet::start();
    let code = setup_code(&inlet);
    let key = inlet
        .cli_ok(&[
            "keys", "mint", "--app", "default", "--label", "t", "--events", "purchase",
        ])
        .trim()
        .to_owned();
    let mut ev = event("q-browser-1");
    ev["event_name"] = json!("level_up");
    let r = inlet.client().post_json("/s2s/event", &key, &ev);
    assert_eq!(r.status, 403, "{}", r.text());
    let driver = Driver::start();
    let b = driver.browser().await;
    let (b2, base, data) = (b.clone(), inlet.url(""), inlet.data().to_owned());
    let result = tokio::spawn(async move {
        b2.goto(&format!("{base}/")).await.unwrap();
        fill(&b2, "#setup-code", &code).await;
        fill(&b2, "#setup-password", PASSWORD).await;
        fill(&b2, "#setup-password2", PASSWORD).await;
        click(&b2, "#setup-submit").await;
        find(&b2, "#apps-today").await;
        click(&b2, "a[data-page=quarantine]").await;
        wait_text(&b2, "#quarantine-reasons", "event_not_allowed_by_key").await;
        click(&b2, "#quarantine-reasons .q-show").await;
        // The page of that reason (drawn anew: the list before it showed the event too).
        find(&b2, "#quarantine-replay-reason").await;
        wait_text(&b2, "#quarantine-events", "q-browser-1").await;
        // Before the fix: refused again, still held.
        click(&b2, ".q-select[data-event-id=q-browser-1]").await;
        click(&b2, "#quarantine-replay").await;
        wait_text(&b2, "#quarantine-results", "still held").await;
        wait_text(&b2, "#quarantine-events", "q-browser-1").await;
        // The fix on the key's row of the Keys page, then the whole reason replayed.
        let keys = parse_ndjson(&cli_ok(&data, &["keys", "list", "--json"]));
        let id = keys[0]["id"].to_string();
        // The reason's row links to where it is fixed.
        click(
            &b2,
            "#quarantine-reasons tr[data-reason=event_not_allowed_by_key] .q-fix",
        )
        .await;
        click(&b2, &format!(".key-allow-edit[data-id='{id}']")).await;
        let form = format!(".key-allow-form[data-id='{id}']");
        fill(
            &b2,
            &format!("{form} .key-allow-events"),
            "purchase, level_up",
        )
        .await;
        click(&b2, &format!("{form} .key-allow-save")).await;
        wait_text(
            &b2,
            &format!("#keys-table tr[data-key-id='{id}']"),
            "level_up",
        )
        .await;
        let listed = parse_ndjson(&cli_ok(&data, &["keys", "list", "--json"]));
        assert_eq!(listed[0]["allowed_events"], json!(["purchase", "level_up"]));
        click(&b2, "a[data-page=quarantine]").await;
        click(&b2, "#quarantine-replay-reason").await;
        wait_text(&b2, "#quarantine-results", "accepted").await;
        wait_text(&b2, "#quarantine-results", "left the quarantine").await;
        wait_text(&b2, "#quarantine-reasons", "Nothing held").await;
        screenshot(&b2, "14-quarantine").await;
        // The key's change is in the audit log, as every admin write.
        click(&b2, "a[data-page=audit]").await;
        wait_text(&b2, "#audit-table", &format!("keys/{id}/allow")).await;
    })
    .await;
    if result.is_err() {
        screenshot(&b, "failure-quarantine").await;
    }
    b.close().await.expect("close the browser");
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    let stored: Vec<_> = inlet
        .export()
        .into_iter()
        .filter(|e| e["event_id"] == "q-browser-1")
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["event_name"], "level_up");
}

/// `inlet_tail_subscribers` in `/metrics` (served to loopback peers).
fn tail_subscribers(c: &mut Client) -> i64 {
    let text = c.get("/metrics").expect("metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix("inlet_tail_subscribers "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the inlet_tail_subscribers gauge")
}

/// The Events page is pushed to: an event sent after the page opened appears within a
/// second without a reload, and a rejected one with its reason; the page's filters apply to
/// what is pushed; leaving the page releases its stream (`inlet_tail_subscribers`). The
/// Health & alerts page shows the app's figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_page_is_pushed_new_events_as_they_arrive() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    crate::admin::Admin::setup(&inlet);
    let driver = Driver::start();
    let b = driver.browser().await;
    let (b2, base, addr) = (b.clone(), inlet.url(""), inlet.addr);
    let result = tokio::spawn(async move {
        let send = |body: serde_json::Value| {
            let key = key.clone();
            tokio::task::spawn_blocking(move || {
                let sent_ms = now_ms();
                let status = Client::new(addr).post_json("/s2s/event", &key, &body).status;
                (sent_ms, status)
            })
        };
        let subscribers = || tokio::task::spawn_blocking(move || tail_subscribers(&mut Client::new(addr)));
        b2.goto(&format!("{base}/admin/#events")).await.unwrap();
        fill(&b2, "#login-password", PASSWORD).await;
        click(&b2, "#login-submit").await;
        find(&b2, "#events-table[data-loaded]").await;
        wait_text(&b2, "#live", "live").await;
        wait_text(&b2, "#no-events", "No events yet").await;
        // The page notes when each row first shows (its own clock: no polling delay counts).
        b2.execute(
            "window.__seen = {};
             const body = document.querySelector('#events-table tbody');
             new MutationObserver(() => {
               if (!window.__seen.accepted && body.textContent.includes('tail-live-1')) window.__seen.accepted = Date.now();
               if (!window.__seen.rejected && body.querySelector('tr[data-outcome=rejected]')) window.__seen.rejected = Date.now();
             }).observe(body, { childList: true, subtree: true });",
            vec![],
        )
        .await
        .unwrap();
        let (ok_at, ok) = send(event("tail-live-1")).await.unwrap();
        assert_eq!(ok, 200);
        let mut bad = event("tail-live-2");
        bad["event_name"] = json!("");
        let (bad_at, refused) = send(bad).await.unwrap();
        assert_eq!(refused, 400);
        wait_text(&b2, "#events-table tbody", "tail-live-1").await;
        wait_text(&b2, "#events-table tbody tr[data-outcome=rejected]", "rejected: ").await;
        let seen = b2.execute("return window.__seen", vec![]).await.unwrap();
        let within = |at: u64, what: &str| {
            let shown = seen[what].as_u64().unwrap_or_else(|| panic!("{what}: {seen}"));
            assert!(shown.saturating_sub(at) < 1000, "{what} shown {} ms after it was sent", shown.saturating_sub(at));
        };
        within(ok_at, "accepted");
        within(bad_at, "rejected");
        // The accepted one is the stored event: its row opens its detail.
        find(&b2, "#events-table tbody tr[data-seq='1']").await;
        screenshot(&b2, "20-events-pushed").await;

        // Filtered by event name: another name sent before a matching one never shows.
        fill(&b2, "#f-event_name", "purchase").await;
        click(&b2, "#filter-form button[type=submit]").await;
        find(&b2, "#events-table[data-loaded]").await;
        wait_text(&b2, "#live", "live").await;
        let mut other = event("tail-other-1");
        other["event_name"] = json!("level_up");
        assert_eq!(send(other).await.unwrap().1, 200);
        assert_eq!(send(event("tail-live-3")).await.unwrap().1, 200);
        wait_text(&b2, "#events-table tbody", "tail-live-3").await;
        let text = find(&b2, "#events-table tbody").await.text().await.unwrap();
        assert!(!text.contains("tail-other-1"), "{text}");
        // One stream for the tab, however often the page was drawn.
        assert_eq!(subscribers().await.unwrap(), 1);

        // Leaving the page closes it.
        click(&b2, "a[data-page=health]").await;
        let end = std::time::Instant::now() + DEADLINE;
        while subscribers().await.unwrap() != 0 {
            assert!(std::time::Instant::now() < end, "the stream outlived the page");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        wait_text(&b2, "#health-apps", "default").await;
        wait_text(&b2, "#alert-rules", "No alert rules yet").await;
        fill(&b2, "#al-value", "15").await;
        click(&b2, "#alert-form button[type=submit]").await;
        wait_text(&b2, "#alert-rules", "no events for 15 min").await;
    })
    .await;
    if result.is_err() {
        screenshot(&b, "failure-events-pushed").await;
    }
    b.close().await.expect("close the browser");
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
