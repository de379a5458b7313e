//! Running it like an appliance: configuration layers, /metrics, /readyz, backup and
//! restore under load, export filters, retention, TLS, JSON logs, shutdown.

use crate::support::*;
use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// `inlet check-config` with the given environment and arguments; the parsed TOML it prints.
fn check_config(env: &[(&str, &str)], args: &[&str]) -> Result<toml::Table, String> {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("INLET_CONFIG")
        .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
        .env_remove("INLET_DATA")
        .env_remove("INLET_LISTEN")
        .env_remove("INLET_RETENTION_DAYS")
        .env_remove("INLET_MAX_BODY_BULK")
        .env_remove("INLET_METRICS_TOKEN")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null());
    let out = cmd.output().expect("run inlet");
    if out.status.success() {
        Ok(toml::from_str(&String::from_utf8(out.stdout).unwrap()).expect("TOML on stdout"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn flags_override_env_override_file_override_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inlet.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\nretention_days = 7\nmax_body_bulk = 1000000\n\
         data_dir = \"/srv/from-file\"\nmetrics_token = \"file-secret-123\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();

    let defaults = check_config(&[], &["check-config"]).unwrap();
    assert_eq!(defaults["listen"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(defaults["retention_days"].as_integer(), Some(0));
    assert_eq!(defaults["data_dir"].as_str(), Some("./inlet-data"));
    assert!(defaults.get("metrics_token").is_none());

    let from_file = check_config(&[("INLET_CONFIG", f)], &["check-config"]).unwrap();
    assert_eq!(from_file["listen"].as_str(), Some("127.0.0.1:1111"));
    assert_eq!(from_file["retention_days"].as_integer(), Some(7));
    assert_eq!(from_file["max_body_bulk"].as_integer(), Some(1_000_000));
    assert_eq!(from_file["data_dir"].as_str(), Some("/srv/from-file"));
    // A key the file does not set keeps its default.
    assert_eq!(from_file["max_body_single"].as_integer(), Some(65536));
    assert_eq!(from_file["metrics_token"].as_str(), Some("<redacted>"));

    let env = [
        ("INLET_CONFIG", f),
        ("INLET_LISTEN", "127.0.0.1:2222"),
        ("INLET_DATA", "/srv/from-env"),
        ("INLET_METRICS_TOKEN", "env-secret-456"),
    ];
    let from_env = check_config(&env, &["check-config"]).unwrap();
    assert_eq!(from_env["listen"].as_str(), Some("127.0.0.1:2222"));
    assert_eq!(from_env["data_dir"].as_str(), Some("/srv/from-env"));
    assert_eq!(from_env["retention_days"].as_integer(), Some(7));

    let from_flags = check_config(
        &env,
        &[
            "--data",
            "/srv/from-flag",
            "check-config",
            "--listen",
            "127.0.0.1:3333",
            "--retention-days",
            "9",
        ],
    )
    .unwrap();
    assert_eq!(from_flags["listen"].as_str(), Some("127.0.0.1:3333"));
    assert_eq!(from_flags["retention_days"].as_integer(), Some(9));
    assert_eq!(from_flags["data_dir"].as_str(), Some("/srv/from-flag"));
    assert_eq!(from_flags["max_body_bulk"].as_integer(), Some(1_000_000));

    // `--config` as a flag names the file too.
    let flag_file = check_config(&[], &["--config", f, "check-config"]).unwrap();
    assert_eq!(flag_file["listen"].as_str(), Some("127.0.0.1:1111"));
}

#[test]
fn check_config_refuses_unknown_keys_and_bad_values_and_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inlet.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nlisten_port = 8080\n").unwrap();
    let err = check_config(&[], &["--config", file.to_str().unwrap(), "check-config"]).unwrap_err();
    assert!(err.contains("unknown field `listen_port`"), "{err}");

    let err = check_config(&[], &["check-config", "--listen", "nowhere"]).unwrap_err();
    assert!(err.contains("listen"), "{err}");
    let err = check_config(&[], &["check-config", "--tls-cert", "/nonexistent.pem"]).unwrap_err();
    assert!(err.contains("tls_cert and tls_key"), "{err}");

    let out = Command::new(BIN)
        .args(["check-config", "--metrics-token", "very-secret-token"])
        .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
        .output()
        .unwrap();
    assert!(out.status.success());
    let all = [out.stdout, out.stderr].concat();
    assert!(
        !String::from_utf8_lossy(&all).contains("very-secret-token"),
        "the secret leaked"
    );
}

#[test]
fn the_example_config_is_valid_and_names_every_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/inlet.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let parsed = check_config(&[], &["--config", path, "check-config"]).unwrap();
    assert_eq!(parsed["data_dir"].as_str(), Some("/var/lib/inlet"));
    // Every key check-config prints, and the optional ones it leaves out, is in the
    // example, set or commented.
    let keys: Vec<String> = parsed.keys().cloned().collect();
    for key in keys
        .iter()
        .map(String::as_str)
        .chain(["tls_cert", "tls_key", "metrics_token"])
    {
        assert!(
            text.lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
            "packaging/inlet.toml does not mention {key}"
        );
    }
}

/// One sample of a Prometheus text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A small parser of the Prometheus / OpenMetrics text format: `# TYPE` lines declare
/// families, every sample belongs to a declared family, label values are quoted with
/// `\"` escapes, the exposition ends with `# EOF`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with("# EOF\n"), "no # EOF terminator");
    let mut families: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            families.push((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => line.split_at(line.find(' ').expect("name value")),
        };
        let mut labels = BTreeMap::new();
        let value_text = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '}' {
                    end = Some(i);
                    break;
                }
                if c == ',' || c == ' ' {
                    continue;
                }
                let key_start = i;
                let mut key_end = i;
                for (j, c) in chars.by_ref() {
                    if c == '=' {
                        key_end = j;
                        break;
                    }
                }
                let key = body[key_start..key_end].to_owned();
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "quoted value");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next().expect("escaped char").1),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
            }
            &body[end.expect("closing brace") + 1..]
        } else {
            rest
        };
        let value: f64 = match value_text.split_whitespace().next().expect("value") {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            families.iter().any(|(f, _)| name == f
                || ["_total", "_sum", "_count", "_bucket", "_created"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f))),
            "sample {name} has no # TYPE"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[test]
fn metrics_have_process_figures_and_build_info_and_answer_head() {
    let inlet = Inlet::start();
    let m = parse_exposition(&inlet.client().get("/metrics").unwrap().text());
    let one = |name: &str| {
        let found: Vec<f64> = m
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .collect();
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found[0]
    };
    assert_eq!(
        sum(
            &m,
            "inlet_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(one("process_resident_memory_bytes") > 1e6);
    assert!(one("process_virtual_memory_bytes") >= one("process_resident_memory_bytes"));
    assert!(one("process_cpu_seconds_total") >= 0.0);
    // The listener, the database file, the control socket at least.
    assert!(one("process_open_fds") >= 3.0);
    assert!(one("process_max_fds") >= one("process_open_fds"));
    let now = now_ms() as f64 / 1000.0;
    let started = one("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 300.0,
        "{started} vs {now}"
    );

    // HEAD: the headers of GET, no body.
    let mut s = std::net::TcpStream::connect(inlet.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("openmetrics-text"), "{out}");
    let (_, body) = out.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "", "{out}");
}

#[test]
fn metrics_parse_and_their_counters_equal_the_export() {
    let inlet = Inlet::start_with(&["--metrics-token", "scrape-me"]);
    inlet.cli_ok(&["tenants", "add", "acme", "--monthly-quota", "3"]);
    inlet.cli_ok(&["apps", "add", "game", "--tenant", "acme"]);
    let key = inlet.mint("default");
    let game_key = inlet.mint("game");
    let mut c = inlet.client();
    for i in 0..5 {
        assert_eq!(
            c.post_json("/s2s/event", &key, &event(&format!("d{i}")))
                .status,
            200
        );
    }
    for i in 0..2 {
        let r = c.post_json("/s2s/event", &key, &event(&format!("d{i}")));
        assert_eq!(r.json()["duplicate"], true);
    }
    let mut nameless = event("g-bad");
    nameless.as_object_mut().unwrap().shift_remove("event_name");
    let bulk = serde_json::json!({ "events": [
        event("g1"), event("g2"), nameless, event("g3"), event("g4"), event("g1")
    ]});
    let r = c.post_json("/s2s/events/bulk", &game_key, &bulk);
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = format!("Bearer {key}");
    let r = c
        .post("/s2s/event", &[("Authorization", &auth)], b"{not json")
        .unwrap();
    assert_eq!(r.status, 400);
    let bogus = format!("srv_{}", "0".repeat(48));
    assert_eq!(c.post_json("/s2s/event", &bogus, &event("x")).status, 401);
    // Paths of many shapes: each is labelled by the route that answered (or `unmatched`).
    for path in [
        "/v1/secret-bundle-1/event",
        "/api/v1/sessions/secret-2",
        "/secret-3",
        "/s2s/secret-4",
    ] {
        let r = c
            .post(path, &[("Content-Type", "application/json")], b"{}")
            .unwrap();
        assert!(r.status >= 400 && r.status < 500, "{path}: {}", r.status);
    }

    let r = c.get("/metrics").unwrap();
    assert_eq!(r.status, 401, "the token is required");
    let scrape = |c: &mut crate::support::Client| {
        c.request(
            "GET",
            "/metrics",
            &[("Authorization", "Bearer scrape-me")],
            b"",
        )
        .unwrap()
    };
    let r = scrape(&mut c);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .contains("openmetrics-text")
    );
    let m = parse_exposition(&r.text());

    let export = inlet.export();
    let stored_by_app = |app: &str| export.iter().filter(|e| e["app"] == app).count() as f64;
    for app in ["default", "game"] {
        assert_eq!(
            sum(&m, "inlet_events_accepted_total", &[("app", app)]),
            stored_by_app(app),
            "{app}"
        );
    }
    assert_eq!(stored_by_app("game"), 3.0, "the quota of 3 held");
    assert_eq!(
        sum(&m, "inlet_events_duplicate_total", &[("app", "default")]),
        2.0
    );
    assert_eq!(
        sum(&m, "inlet_events_duplicate_total", &[("app", "game")]),
        1.0
    );
    let rejected = |app: &str, reason: &str| {
        sum(
            &m,
            "inlet_events_rejected_total",
            &[("app", app), ("reason", reason), ("source", "reflect")],
        )
    };
    assert_eq!(rejected("game", "event_name_required"), 1.0);
    assert_eq!(rejected("game", "cap_exceeded"), 1.0);
    assert_eq!(rejected("default", "bad_json"), 1.0);
    assert_eq!(rejected("-", "unknown_or_revoked_key"), 1.0);
    // Quota use per tenant equals what is stored this month.
    assert_eq!(
        sum(&m, "inlet_tenant_events_this_month", &[("tenant", "acme")]),
        3.0
    );
    assert_eq!(
        sum(&m, "inlet_tenant_monthly_quota", &[("tenant", "acme")]),
        3.0
    );
    assert_eq!(
        sum(
            &m,
            "inlet_tenant_events_this_month",
            &[("tenant", "default")]
        ),
        stored_by_app("default")
    );
    // Every event that reached the writer is in some commit's batch.
    let submitted = export.len() as f64 + 3.0 /* duplicates */ + 1.0 /* over quota */;
    assert_eq!(sum(&m, "inlet_commit_batch_events_sum", &[]), submitted);
    assert!(sum(&m, "inlet_commit_duration_seconds_count", &[]) >= 1.0);
    // 5 + 2 + bulk + (metrics 401 is 4xx) ...: at least the 8 answered 200s.
    assert!(
        sum(
            &m,
            "inlet_request_duration_seconds_count",
            &[("code", "2xx")]
        ) >= 8.0
    );
    assert!(
        sum(
            &m,
            "inlet_request_duration_seconds_count",
            &[("code", "4xx")]
        ) >= 3.0
    );
    // Latency by route: the router's pattern, never the raw path.
    let latency = |endpoint: &str, code: &str| {
        sum(
            &m,
            "inlet_request_duration_seconds_count",
            &[("endpoint", endpoint), ("code", code)],
        )
    };
    assert_eq!(latency("/s2s/event", "2xx"), 7.0);
    assert_eq!(latency("/s2s/event", "4xx"), 2.0);
    assert_eq!(latency("/s2s/events/bulk", "2xx"), 1.0);
    assert_eq!(latency("/metrics", "4xx"), 1.0);
    assert_eq!(latency("/v1/{bundle_id}/{method}", "4xx"), 1.0);
    assert_eq!(latency("/api/v1/*", "4xx"), 1.0);
    assert_eq!(latency("unmatched", "4xx"), 2.0);
    let endpoints: std::collections::BTreeSet<&str> = m
        .iter()
        .filter(|s| s.name == "inlet_request_duration_seconds_count")
        .filter_map(|s| s.labels.get("endpoint"))
        .map(String::as_str)
        .collect();
    assert!(
        endpoints.iter().all(|e| !e.contains("secret-")),
        "a raw path became a label: {endpoints:?}"
    );
    assert_eq!(sum(&m, "inlet_queue_requests", &[]), 0.0);
    assert_eq!(sum(&m, "inlet_writer_up", &[]), 1.0);
    // Duplicates settled before the writer are among the duplicates (these three were
    // recent, so the writer found them itself).
    assert!(
        m.iter()
            .any(|s| s.name == "inlet_dedupe_prechecked_duplicates_total")
    );
    assert_eq!(
        sum(&m, "inlet_dedupe_prechecked_duplicates_total", &[]),
        0.0
    );
    // Every id the writer was handed was checked against the filters first; of a handful of
    // ids the filter of everything (built at once for an empty log) rules out nearly all.
    assert_eq!(sum(&m, "inlet_dedupe_prechecked_ids_total", &[]), submitted);
    let reads = sum(&m, "inlet_dedupe_precheck_reads_total", &[]);
    assert!(reads <= submitted, "{reads} of {submitted}");
    assert!(
        m.iter()
            .any(|s| s.name == "inlet_receipt_notes_dropped_total")
    );
    assert_eq!(sum(&m, "inlet_receipt_notes_dropped_total", &[]), 0.0);
    // The identity indexer catches up once the log is idle.
    assert!(m.iter().any(|s| s.name == "inlet_identity_lag_events"));
    crate::support::wait_for("the identity graph to catch up", || {
        let m = parse_exposition(&scrape(&mut c).text());
        sum(&m, "inlet_identity_lag_events", &[]) == 0.0
    });
    assert!(sum(&m, "inlet_database_bytes", &[]) > 0.0);
}

#[test]
fn readyz_fails_below_the_free_disk_floor() {
    let inlet = Inlet::start_with(&["--min-free-disk-mb", "999999999"]);
    let mut c = inlet.client();
    assert_eq!(c.get("/healthz").unwrap().status, 200);
    let r = c.get("/readyz").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("disk space low"), "{}", r.text());

    let ok = Inlet::start_with(&["--min-free-disk-mb", "1"]);
    let r = ok.client().get("/readyz").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn readyz_goes_unready_when_the_writer_stops() {
    use inlet::config::Config;

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().to_owned(), "127.0.0.1:0".parse().unwrap());
    config.min_free_disk_bytes = 1;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(async { inlet::server::start(config).await.map(|s| s.spawn()) })
        .unwrap();
    let state = server.state.clone();

    let mut c = Client::new(server.addr);
    assert_eq!(c.get("/readyz").unwrap().status, 200);
    state.writer.stop();
    wait_for("/readyz to fail", || {
        c.get("/readyz").is_ok_and(|r| r.status == 503)
    });
    let r = c.get("/readyz").unwrap();
    assert!(r.text().contains("writer unavailable"), "{}", r.text());
    // And ingest is refused, not acknowledged.
    let key = {
        let txn = state.store.db().unwrap().begin_write().unwrap();
        let k = inlet::store::admin::mint_key(&txn, "default", "t", vec![], None).unwrap();
        txn.commit().unwrap();
        k.plaintext
    };
    let r = c.post_json("/s2s/event", &key, &event("after-stop"));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "shutting_down");
    assert_eq!(state.store.event(1).unwrap(), None);
    runtime.block_on(server.stop()).unwrap();
}

/// Sends single events with ids `<prefix><n>` from `clients` threads until `stop`; every
/// acknowledged id is pushed to `acked` (answers other than 200 fail the test).
fn load(
    inlet: &Inlet,
    key: &str,
    prefix: &str,
    clients: usize,
    stop: &AtomicBool,
    acked: &Mutex<Vec<String>>,
) {
    std::thread::scope(|s| {
        for t in 0..clients {
            s.spawn(move || {
                let mut c = inlet.client();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("{prefix}{t}-{i}");
                    let r = c.post_json("/s2s/event", key, &event(&id));
                    assert_eq!(r.status, 200, "{}", r.text());
                    acked.lock().unwrap().push(id);
                    i += 1;
                }
            });
        }
    });
}

#[test]
fn a_backup_under_load_restores_exactly_a_prefix_holding_everything_acknowledged_before_it() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Vec::new());
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("backup.redb");
    let (before, during) = std::thread::scope(|s| {
        s.spawn(|| load(&inlet, &key, "b", 4, &stop, &acked));
        wait_for("acknowledged events", || acked.lock().unwrap().len() >= 300);
        let before: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
        inlet.cli_ok(&["backup", backup.to_str().unwrap()]);
        let during = acked.lock().unwrap().len();
        // Keep loading after the backup, so the live log grows past it.
        wait_for("more events", || {
            acked.lock().unwrap().len() >= during + 100
        });
        stop.store(true, Ordering::SeqCst);
        (before, during)
    });
    let all: HashSet<String> = acked.into_inner().unwrap().into_iter().collect();

    let fresh = tempfile::tempdir().unwrap();
    let out = cli(fresh.path(), &["restore", backup.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = parse_ndjson(&cli_ok(fresh.path(), &["export"]));
    let ids: Vec<&str> = restored
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let id_set: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(id_set.len(), ids.len(), "nothing twice");
    for id in &before {
        assert!(
            id_set.contains(id.as_str()),
            "{id} was acknowledged before the backup"
        );
    }
    for id in &ids {
        assert!(
            all.contains(*id),
            "{id} in the backup was never acknowledged"
        );
    }
    assert!(
        restored.len() < all.len() && restored.len() <= during + 8,
        "the backup is a snapshot, not the later log: {} of {}",
        restored.len(),
        all.len()
    );
    // No torn state: the backup is exactly a prefix of the live log, line for line ...
    let live = inlet.export();
    assert_eq!(restored[..], live[..restored.len()]);
    // ... and its quota counter and dedupe index match its events.
    let used =
        parse_ndjson(&cli_ok(fresh.path(), &["tenants", "list", "--json"]))[0]["used_this_month"]
            .as_u64()
            .unwrap();
    assert_eq!(used as usize, restored.len());
    let mut server = Inlet::start();
    server.kill();
    let out = cli(server.data(), &["restore", backup.to_str().unwrap()]);
    assert!(out.status.success());
    server.restart();
    let mut c = server.client();
    let r = c.post_json("/s2s/event", &server.mint("default"), &event(ids[0]));
    assert_eq!(r.json()["duplicate"], true, "the dedupe index came along");
    let r = c.post_json("/s2s/event", &server.mint("default"), &event("brand-new"));
    assert_eq!(r.status, 200);
    assert_eq!(
        server.export().last().unwrap()["seq"].as_u64().unwrap(),
        restored.len() as u64 + 1
    );
}

#[test]
fn restore_refuses_while_a_server_runs_and_refuses_a_bad_file() {
    let inlet = Inlet::start();
    let outside = tempfile::tempdir().unwrap();
    let backup = outside.path().join("copy.redb");
    inlet.cli_ok(&["backup", backup.to_str().unwrap()]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&backup).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "a backup is owner-only");
    let out = inlet.cli(&["restore", backup.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop it first"));

    let fresh = tempfile::tempdir().unwrap();
    let junk = fresh.path().join("junk.redb");
    std::fs::write(&junk, vec![7u8; 8192]).unwrap();
    let out = cli(fresh.path(), &["restore", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        !fresh.path().join("inlet.redb").exists(),
        "nothing was swapped in"
    );
}

#[test]
fn export_filters_and_gzip() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    let mut signup = event("e-signup");
    signup["event_name"] = "signup".into();
    assert_eq!(c.post_json("/s2s/event", &key, &signup).status, 200);
    assert_eq!(c.post_json("/s2s/event", &key, &event("e-p1")).status, 200);
    let first = inlet.export();
    let boundary = first[1]["received_at_ms"].as_u64().unwrap() + 1;
    wait_for("the clock to pass the boundary", || {
        inlet::clock::now_ms() > boundary
    });
    assert_eq!(c.post_json("/s2s/event", &key, &event("e-p2")).status, 200);
    let at = inlet::clock::rfc3339_ms(boundary);

    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["export"];
        all.extend_from_slice(args);
        parse_ndjson(&inlet.cli_ok(&all))
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&["--event", "purchase"]), ["e-p1", "e-p2"]);
    assert_eq!(
        ids(&["--event", "signup", "--source", "reflect"]),
        ["e-signup"]
    );
    assert!(ids(&["--source", "adjust"]).is_empty());
    assert_eq!(ids(&["--since", &at]), ["e-p2"]);
    assert_eq!(ids(&["--until", &at]), ["e-signup", "e-p1"]);
    assert_eq!(
        ids(&[
            "--since",
            "2000-01-01",
            "--event",
            "purchase",
            "--limit",
            "1"
        ]),
        ["e-p1"]
    );
    let bad = inlet.cli(&["export", "--since", "last tuesday"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));

    let gz = inlet.cli(&["export", "--gzip", "--event", "purchase"]);
    assert!(gz.status.success());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.stdout[..]), &mut text)
        .unwrap();
    assert_eq!(text, inlet.cli_ok(&["export", "--event", "purchase"]));
}

#[test]
fn retention_removes_exactly_the_events_older_than_the_cut() {
    let mut inlet = Inlet::start();
    inlet.cli_ok(&["tenants", "add", "keep"]);
    inlet.cli_ok(&["apps", "add", "kept", "--tenant", "keep"]);
    let key = inlet.mint("default");
    let kept_key = inlet.mint("kept");
    let mut c = inlet.client();
    let mut old_bulk = Vec::new();
    for i in 0..5 {
        assert_eq!(
            c.post_json("/s2s/event", &key, &event(&format!("old{i}")))
                .status,
            200
        );
        assert_eq!(
            c.post_json("/s2s/event", &kept_key, &event(&format!("k{i}")))
                .status,
            200
        );
    }
    let bulk: Vec<_> = (0..3).map(|i| event(&format!("oldbulk{i}"))).collect();
    let r = c.post_json(
        "/s2s/events/bulk",
        &key,
        &serde_json::json!({ "events": bulk }),
    );
    old_bulk.push(r.json()["audit_key"].as_str().unwrap().to_owned());
    let newest_old = inlet
        .export()
        .iter()
        .map(|e| e["received_at_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    let cut = newest_old + 1;
    wait_for("the clock to pass the cut", || inlet::clock::now_ms() > cut);
    for i in 0..4 {
        assert_eq!(
            c.post_json("/s2s/event", &key, &event(&format!("new{i}")))
                .status,
            200
        );
    }
    let before = inlet.export();
    let max_seq = before.last().unwrap()["seq"].as_u64().unwrap();

    // Tenant `default` keeps 2 days; `keep` (own setting 0) keeps forever although the
    // server default would remove too. Running the pass "as of cut + 2 days" sets the cut.
    inlet.cli_ok(&["tenants", "set-retention", "default", "2"]);
    inlet.cli_ok(&["tenants", "set-retention", "keep", "0"]);
    let at = inlet::clock::rfc3339_ms(cut + 2 * 86_400_000);
    let out = inlet.cli_ok(&["retention", "run", "--at", &at]);
    assert_eq!(out.trim(), "retention removed 8 events");

    let after = inlet.export();
    let expected: Vec<&serde_json::Value> = before
        .iter()
        .filter(|e| e["tenant"] != "default" || e["received_at_ms"].as_u64().unwrap() >= cut)
        .collect();
    assert_eq!(after.iter().collect::<Vec<_>>(), expected);
    assert!(
        after.iter().any(|e| e["event_id"] == "k0"),
        "tenant keep kept"
    );
    let audit = before[0]["audit_key"].as_str().unwrap();
    assert!(
        !inlet.cli(&["audit", "get", audit]).status.success(),
        "audit body removed"
    );
    assert!(!inlet.cli(&["audit", "get", &old_bulk[0]]).status.success());
    let new_audit = after.last().unwrap()["audit_key"].as_str().unwrap();
    assert!(inlet.cli(&["audit", "get", new_audit]).status.success());

    // A second pass finds nothing more.
    let out = inlet.cli_ok(&["retention", "run", "--at", &at]);
    assert_eq!(out.trim(), "retention removed 0 events");

    // The documented trade-off: a resubmit of a removed event is accepted again, with a new
    // seq; a resubmit of a kept one is still a duplicate.
    let r = c.post_json("/s2s/event", &key, &event("old0"));
    assert_eq!(r.json()["accepted"], 1);
    let r = c.post_json("/s2s/event", &key, &event("new0"));
    assert_eq!(r.json()["duplicate"], true);
    let last = inlet.export().last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(last, max_seq + 1);

    // Removed seqs are never handed out again, even when the newest events were removed.
    inlet.cli_ok(&["tenants", "set-retention", "keep", "1"]);
    let far = inlet::clock::rfc3339_ms(inlet::clock::now_ms() + 400 * 86_400_000);
    let out = inlet.signal_and_wait("TERM");
    assert!(out.success());
    let out = cli_ok(inlet.data(), &["retention", "run", "--at", &far]);
    assert!(out.starts_with("retention removed "), "{out}");
    assert!(parse_ndjson(&cli_ok(inlet.data(), &["export"])).is_empty());
    inlet.restart();
    let r = inlet
        .client()
        .post_json("/s2s/event", &key, &event("after-everything"));
    assert_eq!(r.status, 200);
    assert_eq!(inlet.export()[0]["seq"].as_u64().unwrap(), last + 1);
}

#[test]
fn tls_serves_requests_with_a_test_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let inlet = Inlet::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    wait_for("the log line", || {
        inlet.log.lock().unwrap().contains("listening on https://")
    });
    let srv_key = inlet.mint("default");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let request = |raw: String| -> String {
        let conn =
            rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap();
        let sock = std::net::TcpStream::connect(inlet.addr).unwrap();
        sock.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        std::io::Write::write_all(&mut tls, raw.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut tls, &mut out);
        out
    };
    let health =
        request("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".into());
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let body = event("over-tls").to_string();
    let posted = request(format!(
        "POST /s2s/event HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {srv_key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(posted.starts_with("HTTP/1.1 200"), "{posted}");
    assert_eq!(inlet.export()[0]["event_id"], "over-tls");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = inlet.client().get("/healthz");
    assert!(plain.is_err() || plain.unwrap().status != 200);
}

/// The certificate a new TLS connection to `addr` presents (trusting `roots`).
fn presented_certificate(addr: std::net::SocketAddr, roots: &[Vec<u8>]) -> Vec<u8> {
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store.add(der.clone().into()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(config.into(), "localhost".try_into().unwrap()).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn sighup_reloads_the_tls_certificate_and_keeps_the_old_one_when_the_new_is_bad() {
    let pair = || rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (a, b) = (pair(), pair());
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, a.cert.pem()).unwrap();
    std::fs::write(&key, a.signing_key.serialize_pem()).unwrap();
    let mut inlet = Inlet::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let roots = [a.cert.der().to_vec(), b.cert.der().to_vec()];
    assert_eq!(presented_certificate(inlet.addr, &roots), roots[0]);
    let hup = |inlet: &Inlet| {
        let ok = Command::new("kill")
            .args(["-HUP", &inlet.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };

    // Renewed in place (as certbot's deploy hook sees it), then SIGHUP: new connections get B.
    std::fs::write(&cert, b.cert.pem()).unwrap();
    std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
    hup(&inlet);
    wait_for("the renewed certificate", || {
        presented_certificate(inlet.addr, &roots) == roots[1]
    });
    // The pair is swapped in before the line is logged, and the log is read by another thread.
    wait_for("the reload in the log", || {
        inlet
            .log
            .lock()
            .unwrap()
            .contains("TLS certificate reloaded")
    });

    // A key that does not match the certificate: logged, and B is still served.
    std::fs::write(&key, a.signing_key.serialize_pem()).unwrap();
    hup(&inlet);
    wait_for("the failed reload in the log", || {
        inlet.log.lock().unwrap().contains("TLS reload failed")
    });
    assert_eq!(presented_certificate(inlet.addr, &roots), roots[1]);
    assert!(inlet.alive());
}

#[test]
fn sighup_without_tls_is_logged_and_the_server_goes_on() {
    // `systemctl reload inlet` on a server without TLS: SIGHUP's default would end it.
    let mut inlet = Inlet::start();
    let ok = Command::new("kill")
        .args(["-HUP", &inlet.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_for("the SIGHUP line", || {
        inlet
            .log
            .lock()
            .unwrap()
            .contains("no TLS certificate to reload")
    });
    assert!(inlet.alive());
    assert_eq!(inlet.client().get("/healthz").unwrap().status, 200);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let inlet = Inlet::start_with(&["--log-format", "json"]);
    wait_for("the log line", || {
        inlet.log.lock().unwrap().contains("listening on")
    });
    let line = inlet
        .log
        .lock()
        .unwrap()
        .lines()
        .find(|l| l.contains("listening on"))
        .unwrap()
        .to_owned();
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["level"], "INFO");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("listening on http://")
    );
    assert!(v["fields"]["data"].is_string());
}

/// Every line a JSON-logging `inlet serve` wrote, on stdout and stderr, as JSON.
fn json_lines(out: &std::path::Path, err: &std::path::Path) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for f in [out, err] {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            lines.push(v);
        }
    }
    lines
}

#[test]
fn json_log_mode_prints_only_json_lines_from_the_setup_banner_to_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = |tag: &str| {
        let (out, err) = (
            dir.path().join(format!("{tag}.out")),
            dir.path().join(format!("{tag}.err")),
        );
        let child = Command::new(bin())
            .arg("--data")
            .arg(&data)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("RUST_LOG", "info")
            .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        (child, out, err)
    };
    let (mut child, out, err) = serve("first");
    let logged = |what: &str| std::fs::read_to_string(&err).unwrap().contains(what);
    wait_for("the listening line", || logged("listening on"));

    // An admin command through the control socket is logged with its name, once encoded.
    cli_ok(
        &data,
        &["backup", dir.path().join("b.redb").to_str().unwrap()],
    );
    wait_for("the admin command line", || logged("admin command"));

    // A second server on the same data dir fails; its error is a JSON line too.
    let (mut second, out2, err2) = serve("second");
    assert!(!second.wait().unwrap().success());
    let failed = json_lines(&out2, &err2);
    let last = failed.last().expect("the error is logged");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("another inlet server is serving"),
        "{last}"
    );

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(child.wait().unwrap().success());
    let lines = json_lines(&out, &err);
    let banner = lines
        .iter()
        .find(|l| l["fields"]["setup_code"].is_string())
        .expect("the setup banner");
    let code = banner["fields"]["setup_code"].as_str().unwrap();
    assert!(
        banner["fields"]["setup_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/admin/#setup={code}")),
        "{banner}"
    );
    let next = banner["fields"]["next_command"].as_str().unwrap();
    assert!(next.contains("keys mint --app default"), "{banner}");
    let command = lines
        .iter()
        .find(|l| l["fields"]["message"] == "admin command")
        .unwrap();
    assert_eq!(command["fields"]["op"], "backup", "{command}");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "stopped"));
}

#[test]
fn sigterm_answers_or_refuses_a_request_in_flight_and_exits_promptly() {
    let mut inlet = Inlet::start();
    let key = inlet.mint("default");
    // A request whose body is still arriving when SIGTERM comes.
    let body = event("in-flight").to_string();
    let mut sock = std::net::TcpStream::connect(inlet.addr).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    // A first request on the connection proves the server accepted it.
    std::io::Write::write_all(&mut sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 512];
    let n = std::io::Read::read(&mut sock, &mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    let head = format!(
        "POST /s2s/event HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    std::io::Write::write_all(&mut sock, head.as_bytes()).unwrap();
    std::io::Write::write_all(&mut sock, &body.as_bytes()[..10]).unwrap();
    let started = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &inlet.pid().to_string()])
        .status()
        .unwrap();
    // The listener closes first: then the shutdown has begun, with our request in flight.
    wait_for("the listener to close", || {
        std::net::TcpStream::connect(inlet.addr).is_err()
    });
    let _ = std::io::Write::write_all(&mut sock, &body.as_bytes()[10..]);
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut sock, &mut answer);
    let status = inlet.signal_and_wait_exited();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "bounded shutdown"
    );
    inlet.restart();
    let stored = inlet.export().iter().any(|e| e["event_id"] == "in-flight");
    if answer.starts_with("HTTP/1.1 200") {
        assert!(stored, "acknowledged, so stored");
    } else {
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
            "refused: {answer}"
        );
    }
}

#[test]
fn systemd_is_notified_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("--data")
        .arg(data.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path)
        .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    // Ready means serving: the address it names answers at once.
    let addr = ready.split("http://").nth(1).unwrap().trim();
    let r = Client::new(addr.parse().unwrap()).get("/readyz").unwrap();
    assert_eq!(r.status, 200);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}

/// GET with a cookie, `Connection: close`; returns status line, headers and the de-chunked
/// body (the export is streamed with chunked transfer encoding).
fn get_streamed(addr: std::net::SocketAddr, path: &str, cookie: &str) -> (String, String, Vec<u8>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(sock);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut headers = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        headers.push_str(&line.to_ascii_lowercase());
    }
    let mut body = Vec::new();
    if headers.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    (status, headers, body)
}

#[test]
fn the_admin_api_streams_the_same_export() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut c = inlet.client();
    // Enough events for several chunks of the stream.
    for b in 0..6 {
        let events: Vec<_> = (0..200)
            .map(|i| {
                let mut e = event(&format!("s{b}-{i}"));
                e["props"] = serde_json::json!({ "pad": "x".repeat(300) });
                if i % 3 == 0 {
                    e["event_name"] = "signup".into();
                }
                e
            })
            .collect();
        let r = c.post_json(
            "/s2s/events/bulk",
            &key,
            &serde_json::json!({ "events": events }),
        );
        assert_eq!(r.status, 200);
    }
    let (status, _, body) = get_streamed(inlet.addr, "/admin/api/export", "none=1");
    assert!(status.contains(" 401 "), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("admin_session_required"));

    let admin = crate::admin::Admin::setup(&inlet);
    let (status, headers, body) = get_streamed(inlet.addr, "/admin/api/export", &admin.cookie);
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains("content-type: application/x-ndjson"),
        "{headers}"
    );
    assert!(headers.contains("content-security-policy"), "{headers}");
    assert!(
        headers.contains("transfer-encoding: chunked"),
        "streamed: {headers}"
    );
    assert_eq!(String::from_utf8(body).unwrap(), inlet.cli_ok(&["export"]));

    let (_, _, body) = get_streamed(
        inlet.addr,
        "/admin/api/export?event=signup&after=10&limit=50",
        &admin.cookie,
    );
    assert_eq!(
        String::from_utf8(body).unwrap(),
        inlet.cli_ok(&[
            "export", "--event", "signup", "--after", "10", "--limit", "50"
        ])
    );
    let (status, _, body) = get_streamed(
        inlet.addr,
        "/admin/api/export?since=yesterday",
        &admin.cookie,
    );
    assert!(status.contains(" 400 "), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("since"));
}
