//! The admin CLI, with and without a server running on the same data dir.

use crate::support::*;

fn is_key(s: &str) -> bool {
    s.len() == 52
        && s.starts_with("srv_")
        && s[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The same sequence of commands, run by `run` against some data dir.
fn admin_sequence(data: &std::path::Path) {
    let out = cli_ok(data, &["tenants", "add", "acme", "--monthly-quota", "100"]);
    assert!(out.contains("acme"));
    let out = cli(data, &["tenants", "add", "acme"]);
    assert!(!out.status.success(), "a tenant name is unique");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    cli_ok(data, &["tenants", "set-quota", "acme", "250"]);
    cli_ok(data, &["apps", "add", "game", "--tenant", "acme"]);
    let out = cli(data, &["apps", "add", "ghost", "--tenant", "nobody"]);
    assert!(!out.status.success());

    let key = cli_ok(
        data,
        &[
            "keys",
            "mint",
            "--app",
            "game",
            "--label",
            "ci",
            "--events",
            "purchase, subscribe",
        ],
    );
    assert!(key.ends_with('\n'));
    assert!(
        is_key(key.trim_end()),
        "stdout is the key and only the key: {key:?}"
    );

    let tenants = parse_ndjson(&cli_ok(data, &["tenants", "list", "--json"]));
    let names: Vec<&str> = tenants
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "acme"]);
    assert_eq!(tenants[1]["monthly_quota"], 250);
    let table = cli_ok(data, &["tenants", "list"]);
    assert!(table.starts_with("ID  NAME"), "{table}");
    assert!(table.contains("unlimited"));

    let apps = parse_ndjson(&cli_ok(data, &["apps", "list", "--json"]));
    assert_eq!(apps[1]["name"], "game");
    assert_eq!(apps[1]["tenant"], "acme");

    cli_ok(
        data,
        &[
            "apps",
            "configure",
            "game",
            "--adjust-app-token",
            "abc123",
            "--appsflyer-bundle-id",
            "com.acme.game",
        ],
    );
    let clash = cli(
        data,
        &[
            "apps",
            "configure",
            "default",
            "--adjust-app-token",
            "abc123",
        ],
    );
    assert!(!clash.status.success(), "a token names one app");
    let apps = parse_ndjson(&cli_ok(data, &["apps", "list", "--json"]));
    assert_eq!(apps[1]["adjust_app_token"], "abc123");
    assert_eq!(apps[1]["appsflyer_bundle_id"], "com.acme.game");
    cli_ok(
        data,
        &["apps", "configure", "game", "--adjust-app-token", ""],
    );
    let apps = parse_ndjson(&cli_ok(data, &["apps", "list", "--json"]));
    assert!(apps[1].get("adjust_app_token").is_none(), "cleared");
    assert_eq!(
        apps[1]["appsflyer_bundle_id"], "com.acme.game",
        "left alone"
    );

    let keys = parse_ndjson(&cli_ok(data, &["keys", "list", "--app", "game", "--json"]));
    assert_eq!(keys.len(), 1);
    assert_eq!(
        keys[0]["allowed_events"],
        serde_json::json!(["purchase", "subscribe"])
    );
    let id = keys[0]["id"].to_string();
    cli_ok(data, &["keys", "revoke", &id]);
    let keys = parse_ndjson(&cli_ok(data, &["keys", "list", "--json"]));
    assert!(keys[0]["revoked_ms"].is_u64());
    assert!(!cli(data, &["keys", "revoke", "999"]).status.success());
    assert!(!cli(data, &["export", "--app", "nope"]).status.success());
    assert!(
        !cli(data, &["audit", "get", "s2s/none.json"])
            .status
            .success()
    );
}

#[test]
fn admin_commands_work_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    cli_ok(dir.path(), &["init"]);
    admin_sequence(dir.path());
    // The database it made is the one a server then serves.
    let inlet_dir = dir.path().to_owned();
    let out = cli_ok(&inlet_dir, &["apps", "list"]);
    assert!(out.contains("game"));
}

#[test]
fn admin_commands_work_while_a_server_runs() {
    let inlet = Inlet::start();
    admin_sequence(inlet.data());
    assert!(
        inlet.log.lock().unwrap().contains("admin command"),
        "went through the server"
    );
}

#[test]
fn a_key_minted_offline_works_once_the_server_starts() {
    let dir = tempfile::tempdir().unwrap();
    cli_ok(dir.path(), &["init"]);
    let key = cli_ok(
        dir.path(),
        &["keys", "mint", "--app", "default", "--label", "x"],
    );
    // Serve that same directory.
    let mut inlet = Inlet::start();
    inlet.kill();
    let _ = std::fs::remove_dir_all(inlet.data());
    std::fs::create_dir_all(inlet.data()).unwrap();
    for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
        std::fs::copy(f.path(), inlet.data().join(f.file_name())).unwrap();
    }
    inlet.restart();
    let r = inlet
        .client()
        .post_json("/s2s/event", key.trim(), &event("offline"));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn export_filters() {
    let inlet = Inlet::start();
    inlet.cli_ok(&["apps", "add", "other", "--tenant", "default"]);
    let k1 = inlet.mint("default");
    let k2 = inlet.mint("other");
    let mut c = inlet.client();
    for i in 0..5 {
        assert_eq!(
            c.post_json("/s2s/event", &k1, &event(&format!("d{i}")))
                .status,
            200
        );
        assert_eq!(
            c.post_json("/s2s/event", &k2, &event(&format!("o{i}")))
                .status,
            200
        );
    }
    // The same event_id in another app is another event.
    assert_eq!(
        c.post_json("/s2s/event", &k2, &event("d0")).json()["accepted"],
        1
    );
    let other = parse_ndjson(&inlet.cli_ok(&["export", "--app", "other"]));
    assert_eq!(other.len(), 6);
    assert!(other.iter().all(|e| e["app"] == "other"));
    let page = parse_ndjson(&inlet.cli_ok(&["export", "--after", "3", "--limit", "2"]));
    let seqs: Vec<u64> = page.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [4, 5]);
}
