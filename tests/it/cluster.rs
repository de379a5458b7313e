//! Cluster mode's ground: the settings, the engine's preflight and the engine objects inlet
//! creates, against a real 3-node NATS JetStream cluster on loopback.

use crate::engine::Engine;
use crate::support::{cli, cli_ok};

/// `inlet cluster ARGS` with the engine's settings as flags.
fn cluster(
    data: &std::path::Path,
    cmd: &str,
    engine: &Engine,
    extra: &[&str],
) -> std::process::Output {
    let (urls, monitors) = (engine.urls(), engine.monitors());
    let mut args = vec![
        "cluster",
        cmd,
        "--cluster-engine",
        &urls,
        "--cluster-monitor",
        &monitors,
        "--cluster-node",
        "a",
    ];
    args.extend_from_slice(extra);
    cli(data, &args)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_cluster_is_created_once_with_its_partition_count_and_replication() {
    let engine = Engine::cluster();
    let data = tempfile::tempdir().unwrap();
    let out = cluster(
        data.path(),
        "check",
        &engine,
        &["--cluster-partitions", "4"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("3 node(s), nats-server 2."), "{said}");
    assert!(said.contains("replicated 3 times; 4 partitions"), "{said}");

    // Every node sees the same cluster; status names the engine's nodes and the partitions.
    let out = cluster(
        data.path(),
        "status",
        &engine,
        &["--cluster-partitions", "4", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["partitions"], 4);
    assert_eq!(status["stream_replicas"], 3);
    // No node joined yet: no admin change.
    assert_eq!(status["admin_records"], 0);
    let names: Vec<&str> = status["engine"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["e1", "e2", "e3"]);
    assert!(
        status["engine"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["sync_always"] == true)
    );
    assert_eq!(status["owners"].as_array().unwrap().len(), 4);

    // The count is fixed at creation: another one is refused, and says which it was.
    let out = cluster(
        data.path(),
        "check",
        &engine,
        &["--cluster-partitions", "8"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("created with 4"), "{}", stderr(&out));

    // A node that names one engine node only is refused before it connects.
    let one = engine.nodes[0].monitor();
    let urls = engine.urls();
    let out = cli(
        data.path(),
        &[
            "cluster",
            "check",
            "--cluster-engine",
            &urls,
            "--cluster-monitor",
            &one,
            "--cluster-node",
            "a",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs 3"), "{}", stderr(&out));
}

#[test]
fn an_engine_that_acknowledges_before_fsync_is_refused() {
    // One node with JetStream's lazy default: even the test-only single-node setting refuses
    // it, since an acknowledged append could then be lost in a power failure.
    let engine = Engine::single(false);
    let data = tempfile::tempdir().unwrap();
    let out = cluster(
        data.path(),
        "check",
        &engine,
        &["--cluster-single-engine-node"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("fsyncs lazily"), "{}", stderr(&out));

    // The same node with `sync_interval: always` passes with the single-node setting, and
    // without it is refused for having one node.
    let engine = Engine::single(true);
    let out = cluster(
        data.path(),
        "check",
        &engine,
        &["--cluster-single-engine-node"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("replicated 1 times"));
    let out = cluster(data.path(), "check", &engine, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs 3"), "{}", stderr(&out));
}

#[test]
fn an_engine_whose_max_payload_cannot_hold_a_bulk_request_is_refused() {
    // The engine's default max_payload (1 MB) against the default max_body_bulk (5 MB): a
    // bulk request's batch could never be appended. Refused by `cluster check` and `serve`,
    // naming both figures and the fix; a max_body_bulk the engine can hold passes.
    let engine = Engine::single_default_payload();
    let data = tempfile::tempdir().unwrap();
    let single = ["--cluster-single-engine-node"];
    let out = cluster(data.path(), "check", &engine, &single);
    assert!(!out.status.success());
    for says in ["1048576", "5242880", "max_payload: 10MB", "max_body_bulk"] {
        assert!(stderr(&out).contains(says), "{says}: {}", stderr(&out));
    }
    let out = cli(
        data.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cluster-engine",
            &engine.urls(),
            "--cluster-monitor",
            &engine.monitors(),
            "--cluster-node",
            "a",
            "--cluster-single-engine-node",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("max_payload: 10MB"),
        "{}",
        stderr(&out)
    );
    let out = cluster(
        data.path(),
        "check",
        &engine,
        &["--cluster-single-engine-node", "--max-body-bulk", "524288"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_admin_lag_shows_a_node_behind_the_admin_stream() {
    let engine = Engine::cluster();
    let c = Cluster::start(&engine);
    let lag_metric = |n: usize| -> Option<u64> {
        let text = crate::support::Client::new(c.nodes[n].addr)
            .get("/metrics")
            .ok()?
            .text();
        text.lines()
            .find_map(|l| l.strip_prefix("inlet_cluster_admin_lag "))
            .and_then(|v| v.trim().parse().ok())
    };
    // `inlet cluster status`: each live node's applied admin record and its lag.
    let status = || -> Value {
        let data = tempfile::tempdir().unwrap();
        let out = cluster(
            data.path(),
            "status",
            &engine,
            &["--cluster-partitions", &PARTITIONS.to_string(), "--json"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let lag_of = |status: &Value, name: &str| -> Option<u64> {
        status["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == name)?["admin_lag"]
            .as_u64()
    };
    for n in 0..3 {
        wait_for("no admin lag", || lag_metric(n) == Some(0));
    }
    wait_for("every node announced with no lag", || {
        let s = status();
        ["n1", "n2", "n3"]
            .iter()
            .all(|name| lag_of(&s, name) == Some(0))
    });
    // n3 stopped: admin changes made on n1 are in the engine, not applied on n3.
    c.nodes[2].signal("STOP");
    c.nodes[0].cli_ok(&["tenants", "add", "lag-1"]);
    c.nodes[0].cli_ok(&["tenants", "add", "lag-2"]);
    // n1 announces what it applied twice a second; n3's last announcement stays until the
    // lease TTL removes it.
    let end = std::time::Instant::now() + DEADLINE;
    let mut s = status();
    while lag_of(&s, "n1") != Some(0) {
        assert!(
            std::time::Instant::now() < end,
            "n1 never announced no lag: {s}"
        );
        s = status();
    }
    assert_eq!(lag_of(&s, "n3"), Some(2), "{s}");
    c.nodes[2].signal("CONT");
    wait_for("n3 caught up", || lag_metric(2) == Some(0));
    wait_for("n3 announced no lag", || lag_of(&status(), "n3") == Some(0));
}

#[test]
fn cluster_settings_are_checked_and_shown() {
    let data = tempfile::tempdir().unwrap();
    let flags = [
        "--cluster-engine",
        "nats://127.0.0.1:4222",
        "--cluster-monitor",
        "http://127.0.0.1:8222,http://127.0.0.2:8222,http://127.0.0.3:8222",
        "--cluster-node",
        "node-1",
    ];
    let mut args = vec!["check-config"];
    args.extend_from_slice(&flags);
    let shown = cli_ok(data.path(), &args);
    assert!(
        shown.contains("cluster_engine = \"nats://127.0.0.1:4222\""),
        "{shown}"
    );
    assert!(shown.contains("cluster_node = \"node-1\""), "{shown}");
    assert!(shown.contains("cluster_partitions = 16"), "{shown}");

    for (bad, says) in [
        (
            vec!["check-config", "--cluster-node", "x"],
            "cluster_node: set without cluster_engine",
        ),
        (
            vec!["check-config", "--cluster-engine", "127.0.0.1:4222"],
            "cluster_engine",
        ),
        (
            vec!["check-config", "--cluster-engine", "nats://h:4222"],
            "cluster_monitor",
        ),
    ] {
        let out = cli(data.path(), &bad);
        assert!(!out.status.success(), "{bad:?}");
        assert!(stderr(&out).contains(says), "{bad:?}: {}", stderr(&out));
    }
}

// ---- Leases (M1) ----------------------------------------------------------------------------

pub(crate) fn settings(engine: &Engine, node: &str, partitions: u32) -> inlet::cluster::Settings {
    inlet::cluster::Settings::resolve(
        Some(&engine.urls()),
        Some(&engine.monitors()),
        Some(node),
        Some(partitions),
        None,
    )
    .unwrap()
    .unwrap()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_lease_has_one_owner_expires_without_renewal_and_refuses_a_stale_revision() {
    use inlet::cluster::engine::{self, LEASE_TTL};
    use inlet::cluster::lease::{Leases, Renewal};
    let engine = Engine::cluster();
    runtime().block_on(async {
        let s = settings(&engine, "a", 4);
        let e = engine::connect(&s).await.unwrap();
        let layout = engine::ensure_patiently(&e, &s, DEADLINE).await.unwrap();
        let a = Leases::new(layout.leases.clone(), "a");
        let b = Leases::new(layout.leases.clone(), "b");

        // Two contenders at the same moment: one owner.
        let (ta, tb) = tokio::join!(a.take(0), b.take(0));
        let (ta, tb) = (ta.unwrap(), tb.unwrap());
        assert!(ta.is_some() != tb.is_some(), "{ta:?} {tb:?}");
        let (owner, other, rev) = match (ta, tb) {
            (Some(r), None) => (&a, &b, r),
            (None, Some(r)) => (&b, &a, r),
            _ => unreachable!(),
        };
        assert_eq!(
            owner.owner(0).await.unwrap().as_deref(),
            Some(owner.node.as_str())
        );
        assert_eq!(other.take(0).await.unwrap(), None);

        // Renewal moves the revision on; the other node writing with any revision it saw is
        // refused. The owner renewing from the old revision (its answer was lost) finds its
        // own later revision and keeps it.
        let Renewal::Renewed(renewed) = owner.renew(0, rev).await else {
            panic!("renewal refused")
        };
        assert!(renewed > rev);
        assert_eq!(owner.renew(0, rev).await, Renewal::Renewed(renewed));
        assert!(matches!(other.renew(0, rev).await, Renewal::Lost(_)));
        // The owner, started again under its name, takes its key back at once (a new epoch)
        // instead of waiting out the TTL; the other still cannot.
        let again = Leases::new(layout.leases.clone(), &owner.node);
        let renewed = again.take(0).await.unwrap().expect("its own key");
        assert!(renewed > rev);
        assert_eq!(other.take(0).await.unwrap(), None);
        let owner = &again;

        // The owner stops renewing: the other takes the partition once the TTL passed (the
        // engine expires keys on a timer of its own, late on a loaded machine: the bound is
        // generous), with a later revision: a new epoch.
        let stopped = std::time::Instant::now();
        let taken = loop {
            if let Some(r) = other.take(0).await.unwrap() {
                break r;
            }
            assert!(
                stopped.elapsed() < LEASE_TTL * 3,
                "the lease outlived its TTL"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert!(taken > renewed);
        // (Read from any replica: one behind may not have the new key yet.)
        let asked = std::time::Instant::now();
        while other.owner(0).await.unwrap().as_deref() != Some(other.node.as_str()) {
            assert!(asked.elapsed() < DEADLINE, "the new owner never shows");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // The old owner's last revision no longer renews it.
        assert!(matches!(owner.renew(0, renewed).await, Renewal::Lost(_)));
    });
}

// ---- Three inlet nodes (M2, M3) ---------------------------------------------------------------

use crate::support::{DEADLINE, bin, event, parse_ndjson, wait_for};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub(crate) const PARTITIONS: u32 = 4;
pub(crate) const TENANTS: [&str; 4] = ["t1", "t2", "t3", "t4"];
/// The monthly quota of tenant t4.
pub(crate) const QUOTA: u64 = 200;

/// One `inlet serve` of the cluster, on its own data dir.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) data: PathBuf,
    child: Option<Child>,
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Mutex<String>>,
}

impl Node {
    pub(crate) fn start(name: &str, data: &Path, engine: &Engine) -> Node {
        Node::start_with_env(name, data, engine, &[])
    }

    /// [`Node::start`] with extra environment variables (test hooks).
    pub(crate) fn start_with_env(
        name: &str,
        data: &Path,
        engine: &Engine,
        env: &[(&str, &str)],
    ) -> Node {
        let mut child = Command::new(bin())
            .envs(env.iter().copied())
            .arg("--data")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--cluster-engine", &engine.urls()])
            .args(["--cluster-monitor", &engine.monitors()])
            .args(["--cluster-node", name])
            .args(["--cluster-partitions", &PARTITIONS.to_string()])
            .env("RUST_LOG", "info")
            .env("INLET_DEFAULT_CONFIG", crate::support::NO_DEFAULT_CONFIG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(DEADLINE) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => panic!("node {name} did not start:\n{}", log.lock().unwrap()),
        };
        Node {
            name: name.to_owned(),
            data: data.to_owned(),
            child: Some(child),
            addr,
            log,
        }
    }

    pub(crate) fn pid(&self) -> String {
        self.child.as_ref().unwrap().id().to_string()
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, and waits for the exit.
    pub(crate) fn stop(&mut self) {
        self.signal("TERM");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The partitions this node says it serves (`None`: it does not answer).
    pub(crate) fn owned(&self) -> Option<Vec<u32>> {
        let mut c = crate::support::Client::new(self.addr);
        let r = c.get("/readyz").ok()?;
        let text = r.text();
        let list = text.split("owns partitions [").nth(1)?.split(']').next()?;
        Some(
            list.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect(),
        )
    }

    pub(crate) fn cli_ok(&self, args: &[&str]) -> String {
        crate::support::cli_ok(&self.data, args)
    }

    pub(crate) fn used(&self) -> HashMap<String, u64> {
        parse_ndjson(&self.cli_ok(&["tenants", "list", "--json"]))
            .into_iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_owned(),
                    t["used_this_month"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = Command::new("kill").args(["-CONT", &self.pid()]).status();
        }
        self.kill();
        // A failing test shows what each node said: its warnings and its last lines.
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines.len().saturating_sub(30);
            eprintln!(
                "--- node {}: its warnings, then its last lines ---",
                self.name
            );
            for (i, line) in lines.iter().enumerate() {
                if i >= tail || line.contains(" WARN ") || line.contains(" ERROR ") {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Three nodes started on empty data dirs, with tenants t1..t4 (one app and key each) made
/// through different nodes (the engine shares them), once every partition is served and
/// every node takes every key.
pub(crate) struct Cluster {
    pub(crate) dirs: tempfile::TempDir,
    pub(crate) nodes: Vec<Node>,
    /// Per tenant: its app's key.
    pub(crate) keys: Vec<String>,
}

impl Cluster {
    pub(crate) fn start(engine: &Engine) -> Cluster {
        Cluster::start_with_env(engine, &[])
    }

    /// [`Cluster::start`] with extra environment variables for every node (test hooks).
    pub(crate) fn start_with_env(engine: &Engine, env: &[(&str, &str)]) -> Cluster {
        let dirs = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for name in ["n1", "n2", "n3"] {
            let data = dirs.path().join(name);
            std::fs::create_dir(&data).unwrap();
            nodes.push(Node::start_with_env(name, &data, engine, env));
        }
        let mut keys = Vec::new();
        for (i, t) in TENANTS.iter().enumerate() {
            // Tenant, app and key on one node, the next tenant on the next: t4, the quota
            // test's, on n2.
            let node = &nodes[(i + 1) % 3];
            // t4 has a quota (above what the other tests send it).
            let quota = if *t == "t4" { QUOTA } else { 0 }.to_string();
            node.cli_ok(&["tenants", "add", t, "--monthly-quota", &quota]);
            let app = format!("app-{t}");
            node.cli_ok(&["apps", "add", &app, "--tenant", t]);
            keys.push(
                node.cli_ok(&["keys", "mint", "--app", &app, "--label", "t"])
                    .trim()
                    .to_owned(),
            );
        }
        let cluster = Cluster { dirs, nodes, keys };
        cluster.wait_all_served(&[0, 1, 2]);
        for key in &cluster.keys {
            for node in &cluster.nodes {
                wait_for("every node to take every key", || takes(node.addr, key));
            }
        }
        cluster
    }

    /// Waits until the nodes `live` serve every partition between them, each once.
    pub(crate) fn wait_all_served(&self, live: &[usize]) {
        wait_for("every partition served by one node", || {
            let mut all = Vec::new();
            for &i in live {
                match self.nodes[i].owned() {
                    Some(o) => all.extend(o),
                    None => return false,
                }
            }
            all.sort_unstable();
            all == (0..PARTITIONS).collect::<Vec<_>>()
        });
    }

    /// The owner of `p` once ownership has spread over the three nodes (none above its share,
    /// so none gives a partition up any more): an owner picked while the nodes still join
    /// may hand `p` on a moment later.
    pub(crate) fn settled_owner(&self, p: u32) -> usize {
        let share = PARTITIONS.div_ceil(3) as usize;
        let mut owner = None;
        wait_for("ownership spread over the three nodes", || {
            let owned: Option<Vec<Vec<u32>>> = self.nodes.iter().map(Node::owned).collect();
            let Some(owned) = owned else { return false };
            let mut all: Vec<u32> = owned.concat();
            all.sort_unstable();
            owner = owned.iter().position(|o| o.contains(&p));
            all == (0..PARTITIONS).collect::<Vec<_>>() && owned.iter().all(|o| o.len() <= share)
        });
        owner.expect("found above")
    }

    /// The live node that owns `p`, waited for: while ownership moves (nodes joining, a
    /// takeover) no node may name it for a moment.
    pub(crate) fn owner_of(&self, live: &[usize], p: u32) -> usize {
        let mut owner = None;
        wait_for(&format!("an owner of partition {p}"), || {
            owner = live
                .iter()
                .copied()
                .find(|&i| self.nodes[i].owned().is_some_and(|o| o.contains(&p)));
            owner.is_some()
        });
        owner.expect("found above")
    }
}

/// Posts a bulk batch of tenant `t` to node `via`: `None` when the node did not answer or
/// answered 503 (retry elsewhere); else each id's outcome.
pub(crate) fn post(addr: SocketAddr, key: &str, ids: &[String]) -> Option<Vec<(String, String)>> {
    post_as(addr, key, ids, false)
}

/// [`post`], or a dry run of it.
pub(crate) fn post_as(
    addr: SocketAddr,
    key: &str,
    ids: &[String],
    dry: bool,
) -> Option<Vec<(String, String)>> {
    let events: Vec<Value> = ids.iter().map(|id| event(id)).collect();
    let mut c = crate::support::Client::new(addr);
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    if dry {
        headers.push(("X-Inlet-Dry-Run", "1"));
    }
    let r = c
        .post(
            "/s2s/events/bulk",
            &headers,
            json!({ "events": events }).to_string().as_bytes(),
        )
        .ok()?;
    assert_eq!(r.header("X-Inlet-Dry-Run").is_some(), dry);
    if r.status == 429 {
        // Every event over the tenant's quota.
        assert!(r.text().contains("cap_exceeded"), "{}", r.text());
        return Some(
            ids.iter()
                .map(|id| (id.clone(), "rejected".to_owned()))
                .collect(),
        );
    }
    if r.status == 503 {
        assert!(
            r.header("Retry-After").is_some(),
            "a 503 without Retry-After"
        );
        return None;
    }
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    Some(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["event_id"].as_str().unwrap().to_owned(),
                    r["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
    )
}

/// Every message of the event stream, raw (deleted ones are skipped by the engine).
pub(crate) fn raw_stream(engine: &Engine) -> Vec<(u64, Vec<u8>)> {
    runtime().block_on(async {
        let s = settings(engine, "reader", PARTITIONS);
        let e = inlet::cluster::engine::connect(&s).await.unwrap();
        let stream =
            e.js.get_stream(inlet::cluster::engine::STREAM)
                .await
                .unwrap();
        let mut out = Vec::new();
        let mut seq = 1;
        while let Ok(m) = stream
            .raw_message_builder()
            .sequence(seq)
            .next_by_subject("inlet.events.>")
            .send()
            .await
        {
            out.push((m.sequence, m.payload.to_vec()));
            seq = m.sequence + 1;
        }
        out
    })
}

/// Every stored event in the engine's stream's batches (not its erasure records): (tenant,
/// event id) → times stored.
pub(crate) fn stream_events(engine: &Engine) -> HashMap<(String, String), usize> {
    let mut out = HashMap::new();
    for (_, payload) in raw_stream(engine) {
        if inlet::cluster::wire::is_privacy(&payload) {
            continue;
        }
        for sub in inlet::cluster::wire::decode_batch(&payload).unwrap() {
            for ev in &sub.events {
                let rec = inlet::store::codec::decode_event(ev.record()).unwrap();
                *out.entry((rec.tenant.clone(), ev.event_id().to_owned()))
                    .or_default() += 1;
            }
        }
    }
    out
}

/// Sends `ids` of tenant `t` until some node answers 200, trying the nodes `via` in turn.
pub(crate) fn send_until_answered(
    nodes: &[(SocketAddr, String)],
    start: usize,
    ids: &[String],
) -> Vec<(String, String)> {
    let end = std::time::Instant::now() + DEADLINE * 2;
    let mut i = start;
    loop {
        let (addr, key) = &nodes[i % nodes.len()];
        if let Some(r) = post(*addr, key, ids) {
            return r;
        }
        assert!(std::time::Instant::now() < end, "no node took the batch");
        i += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The campaign's checks: every id stored once in the stream, every id answered (accepted
/// or duplicate) is stored, each accepted once in all, and each tenant's counter (on the
/// node serving its partition) equals its stored events.
fn check(
    engine: &Engine,
    cluster: &Cluster,
    live: &[usize],
    answers: &[(String, Vec<(String, String)>)],
) {
    let stored = stream_events(engine);
    for ((t, id), n) in &stored {
        assert_eq!(*n, 1, "{t}/{id} stored {n} times");
    }
    let mut accepted: HashMap<(String, String), usize> = HashMap::new();
    for (t, results) in answers {
        for (id, status) in results {
            let k = (t.clone(), id.clone());
            assert!(
                status == "rejected" || stored.contains_key(&k),
                "{t}/{id} answered {status} but not stored"
            );
            match status.as_str() {
                "accepted" => *accepted.entry(k).or_default() += 1,
                "duplicate" => {}
                // Over the quota (this answer; the same id may be stored through another).
                "rejected" if t == "t4" => {}
                other => panic!("{t}/{id}: {other}"),
            }
        }
    }
    for (k, n) in &accepted {
        assert_eq!(*n, 1, "{k:?} accepted {n} times");
    }
    cluster.wait_all_served(live);
    for (i, t) in TENANTS.iter().enumerate() {
        let in_stream = stored.keys().filter(|(tt, _)| tt == t).count() as u64;
        // The tenant's partition: found as the node whose counter moved (the others hold no
        // event of it, or an older replay).
        let best = live
            .iter()
            .map(|&n| cluster.nodes[n].used().get(*t).copied().unwrap_or(0))
            .max()
            .unwrap();
        assert_eq!(best, in_stream, "tenant {t} (#{i}): counter vs stored");
    }
}

#[test]
fn the_same_batches_through_three_nodes_are_stored_once() {
    let engine = Engine::cluster();
    let cluster = Cluster::start(&engine);
    let mut answers = Vec::new();
    // Concurrently: each batch sent to all three nodes at once.
    for round in 0..3 {
        let mut threads = Vec::new();
        for (t, tenant) in TENANTS.iter().enumerate() {
            let ids: Vec<String> = (0..50).map(|i| format!("{tenant}-r{round}-{i}")).collect();
            for n in 0..3 {
                let addr = cluster.nodes[n].addr;
                let key = cluster.keys[t].clone();
                let ids = ids.clone();
                let nodes: Vec<(SocketAddr, String)> = (0..3)
                    .map(|m| (cluster.nodes[m].addr, key.clone()))
                    .collect();
                let tenant = tenant.to_string();
                threads.push(std::thread::spawn(move || {
                    let _ = addr;
                    (tenant, send_until_answered(&nodes, n, &ids))
                }));
            }
        }
        answers.extend(threads.into_iter().map(|h| h.join().unwrap()));
    }
    // One after another: the same batches again, through each node: all duplicates.
    for (t, tenant) in TENANTS.iter().enumerate() {
        let ids: Vec<String> = (0..50).map(|i| format!("{tenant}-r0-{i}")).collect();
        for n in 0..3 {
            // A 503 (ownership still spreading as the nodes joined) is retried on this node.
            let only = [(cluster.nodes[n].addr, cluster.keys[t].clone())];
            let r = send_until_answered(&only, 0, &ids);
            assert!(r.iter().all(|(_, s)| s == "duplicate"), "{r:?}");
            answers.push((tenant.to_string(), r));
        }
    }
    check(&engine, &cluster, &[0, 1, 2], &answers);
    let stored = stream_events(&engine);
    assert_eq!(stored.len(), TENANTS.len() * 3 * 50);

    // A node's data dir deleted: it rebuilds from the engine. n1 starts again on an empty
    // data dir (the admin data comes from the engine too); the others stop, giving their
    // partitions up, so that n1 takes and replays every partition.
    let mut cluster = cluster;
    cluster.nodes[0].kill();
    let data = cluster.nodes[0].data.clone();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    cluster.nodes[0] = Node::start("n1", &data, &engine);
    cluster.nodes[1].stop();
    cluster.nodes[2].stop();
    cluster.wait_all_served(&[0]);
    let used = cluster.nodes[0].used();
    for t in TENANTS {
        let in_stream = stored.keys().filter(|(tt, _)| tt == t).count() as u64;
        assert_eq!(used[t], in_stream, "tenant {t} after the rebuild");
    }
    let exported = parse_ndjson(&cluster.nodes[0].cli_ok(&["export"]));
    let mut ids: Vec<&str> = exported
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((exported.len(), ids.len()), (stored.len(), stored.len()));
}

#[test]
fn a_killed_owner_loses_and_doubles_nothing_and_a_zombie_is_fenced() {
    let engine = Engine::cluster();
    let mut cluster = Cluster::start(&engine);
    let t = 0;
    // The tenant's partition: where its first batch went.
    let first: Vec<String> = (0..3).map(|i| format!("t1-first-{i}")).collect();
    let nodes_t: Vec<(SocketAddr, String)> = (0..3)
        .map(|n| (cluster.nodes[n].addr, cluster.keys[t].clone()))
        .collect();
    let mut answers = vec![("t1".to_owned(), send_until_answered(&nodes_t, 0, &first))];
    let p = tenant_partition(&engine, "t1");
    let owner = cluster.owner_of(&[0, 1, 2], p);
    let others: Vec<usize> = (0..3).filter(|&n| n != owner).collect();
    let via: Vec<(SocketAddr, String)> = others
        .iter()
        .map(|&n| (cluster.nodes[n].addr, cluster.keys[t].clone()))
        .collect();
    // A client sends batches through the other nodes while the owner is killed; a batch
    // refused (503, or no answer) is sent again through the next node.
    let sender = std::thread::spawn(move || {
        let mut answers = Vec::new();
        for b in 0..30 {
            let ids: Vec<String> = (0..20).map(|i| format!("t1-k{b}-{i}")).collect();
            answers.push(("t1".to_owned(), send_until_answered(&via, b, &ids)));
        }
        answers
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    cluster.nodes[owner].kill();
    answers.extend(sender.join().unwrap());
    check(&engine, &cluster, &others, &answers);

    // A zombie: stop the new owner past its lease; another takes over; the zombie wakes up
    // with a request in flight: the fence (or its lost lease) makes it step down, and
    // nothing is stored twice.
    let zombie = cluster.owner_of(&others, p);
    let survivor = *others.iter().find(|&&n| n != zombie).unwrap();
    cluster.nodes[zombie].signal("STOP");
    wait_for("the survivor to take the partition over", || {
        cluster.nodes[survivor]
            .owned()
            .is_some_and(|o| o.contains(&p))
    });
    // The survivor appends, so the zombie's last known sequence is stale.
    let ids: Vec<String> = (0..5).map(|i| format!("t1-s-{i}")).collect();
    let r = post(cluster.nodes[survivor].addr, &cluster.keys[t], &ids).expect("answered");
    answers.push(("t1".to_owned(), r));
    let zaddr = cluster.nodes[zombie].addr;
    let key = cluster.keys[t].clone();
    let in_flight = std::thread::spawn(move || {
        let ids: Vec<String> = (0..5).map(|i| format!("t1-z-{i}")).collect();
        post(zaddr, &key, &ids).map(|r| ("t1".to_owned(), r))
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    cluster.nodes[zombie].signal("CONT");
    if let Some(a) = in_flight.join().unwrap() {
        answers.push(a);
    }
    let name = cluster.nodes[zombie].name.clone();
    wait_for(&format!("{name}, the zombie, to step down"), || {
        cluster.nodes[zombie]
            .log
            .lock()
            .unwrap()
            .contains("stepping down")
    });
    check(&engine, &cluster, &others, &answers);
}

/// The partition holding tenant `tenant`'s batches in the stream.
pub(crate) fn tenant_partition(engine: &Engine, tenant: &str) -> u32 {
    runtime().block_on(async {
        let s = settings(engine, "reader", PARTITIONS);
        let e = inlet::cluster::engine::connect(&s).await.unwrap();
        let stream =
            e.js.get_stream(inlet::cluster::engine::STREAM)
                .await
                .unwrap();
        let mut seq = 1;
        loop {
            let m = stream
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject("inlet.events.>")
                .send()
                .await
                .expect("a batch of the tenant");
            // Erasure records and lifts name no tenant.
            let batch = (!inlet::cluster::wire::is_privacy(&m.payload))
                .then(|| inlet::cluster::wire::decode_batch(&m.payload).unwrap());
            for sub in batch.unwrap_or_default() {
                let rec = inlet::store::codec::decode_event(sub.events[0].record()).unwrap();
                if rec.tenant == tenant {
                    return m.subject.rsplit('.').next().unwrap().parse().unwrap();
                }
            }
            seq = m.sequence + 1;
        }
    })
}

#[test]
fn the_engine_refuses_a_stale_owners_append_and_answers_a_resend_with_the_first_sequence() {
    use async_nats::jetstream::context::PublishErrorKind;
    use inlet::cluster::engine;
    let engine = Engine::cluster();
    runtime().block_on(async {
        let s = settings(&engine, "a", 4);
        let e = engine::connect(&s).await.unwrap();
        engine::ensure_patiently(&e, &s, DEADLINE).await.unwrap();
        // What the owner's append sends: a message id and the expected last subject sequence.
        let append = |id: &str, expected: u64| {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", id);
            h.insert(
                "Nats-Expected-Last-Subject-Sequence",
                expected.to_string().as_str(),
            );
            let js = e.js.clone();
            async move {
                js.publish_with_headers("inlet.events.0", h, "batch".into())
                    .await
                    .unwrap()
                    .await
            }
        };
        // Another partition's subject does not move this one's expected sequence.
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", "1-1-1");
        e.js.publish_with_headers("inlet.events.1", h, "other".into())
            .await
            .unwrap()
            .await
            .unwrap();

        let first = append("0-1-1", 0).await.unwrap();
        assert!(!first.duplicate);
        // The ack was lost and the owner resends: the first sequence again, not a copy.
        let resent = append("0-1-1", 0).await.unwrap();
        assert!(resent.duplicate);
        assert_eq!(resent.sequence, first.sequence);
        // A new owner (epoch 2) appends after it.
        let new_owner = append("0-2-1", first.sequence).await.unwrap();
        assert!(new_owner.sequence > first.sequence);
        // The old owner's next batch still expects its own last sequence: refused (10071).
        let stale = append("0-1-2", first.sequence).await.unwrap_err();
        assert_eq!(stale.kind(), PublishErrorKind::WrongLastSequence, "{stale}");
        assert!(stale.to_string().contains("10071"), "{stale}");
        let mut stream = e.js.get_stream(engine::STREAM).await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 3);
    });
}

#[test]
fn a_quota_flood_through_every_node_stores_exactly_the_cap() {
    let engine = Engine::cluster();
    let cluster = Cluster::start(&engine);
    let t = 3;
    // Overlapping ranges of 300 distinct ids, through all three nodes at once.
    let mut threads = Vec::new();
    for n in 0..3 {
        let nodes: Vec<(SocketAddr, String)> = (0..3)
            .map(|m| (cluster.nodes[m].addr, cluster.keys[t].clone()))
            .collect();
        threads.push(std::thread::spawn(move || {
            let mut answers = Vec::new();
            for b in 0..5 {
                let from = n * 50 + b * 30;
                let ids: Vec<String> = (from..from + 50).map(|i| format!("q{i}")).collect();
                answers.push(("t4".to_owned(), send_until_answered(&nodes, n, &ids)));
            }
            answers
        }));
    }
    let answers: Vec<_> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let distinct: std::collections::HashSet<&str> = answers
        .iter()
        .flat_map(|(_, r)| r.iter().map(|(id, _)| id.as_str()))
        .collect();
    assert!(distinct.len() as u64 > QUOTA);
    check(&engine, &cluster, &[0, 1, 2], &answers);
    let stored = stream_events(&engine);
    let t4 = stored.keys().filter(|(tt, _)| tt == "t4").count() as u64;
    assert_eq!(t4, QUOTA.min(distinct.len() as u64));
}

// ---- Admin data through the engine (M4) -------------------------------------------------------

/// How soon an admin change made on one node takes effect on the others.
const PROPAGATION: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether node `addr` takes `key` (a dry run: judged by the partition's owner, nothing
/// stored; a 503 while the partition changes hands is asked again).
fn takes(addr: SocketAddr, key: &str) -> bool {
    let mut c = crate::support::Client::new(addr);
    let auth = format!("Bearer {key}");
    let body = json!({ "events": [event("probe")] }).to_string();
    let ask = |c: &mut crate::support::Client| {
        c.post(
            "/s2s/events/bulk",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("X-Inlet-Dry-Run", "1"),
            ],
            body.as_bytes(),
        )
        .unwrap()
    };
    let end = std::time::Instant::now() + DEADLINE;
    let mut r = ask(&mut c);
    while r.status == 503 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
        r = ask(&mut c);
    }
    match r.status {
        200 => true,
        401 => {
            assert!(r.text().contains("unknown_or_revoked_key"), "{}", r.text());
            false
        }
        s => panic!("{s}: {}", r.text()),
    }
}

/// Polls `cond` until it holds, failing after `limit`.
fn within(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A node's admin data as its CLI lists it, without what is local (counters, last use).
fn admin_data(node: &Node) -> Vec<Value> {
    let mut out = Vec::new();
    for list in [
        &["tenants", "list", "--json"][..],
        &["apps", "list", "--json"],
        &["keys", "list", "--json"],
    ] {
        for mut row in parse_ndjson(&node.cli_ok(list)) {
            let o = row.as_object_mut().unwrap();
            o.shift_remove("used_this_month");
            o.shift_remove("last_used_ms");
            out.push(row);
        }
    }
    out
}

#[test]
fn admin_changes_on_any_node_take_effect_on_every_node() {
    let engine = Engine::cluster();
    let mut cluster = Cluster::start(&engine);
    let [a, b, c] = [0, 1, 2].map(|i| cluster.nodes[i].addr);

    // A key minted on n1 is taken by n2 and n3 within a second.
    let key = cluster.nodes[0]
        .cli_ok(&["keys", "mint", "--app", "app-t1", "--label", "fresh"])
        .trim()
        .to_owned();
    assert!(
        takes(a, &key),
        "read-your-writes on the node that minted it"
    );
    for addr in [b, c] {
        within("a new key taken by every node", PROPAGATION, || {
            takes(addr, &key)
        });
    }
    // Revoked on n3: refused by n1 and n2 (which have it cached) within a second.
    let keys = parse_ndjson(&cluster.nodes[2].cli_ok(&["keys", "list", "--json"]));
    let id = keys
        .iter()
        .find(|k| k["label"] == "fresh")
        .expect("the fresh key listed on n3")["id"]
        .to_string();
    cluster.nodes[2].cli_ok(&["keys", "revoke", &id]);
    assert!(!takes(c, &key));
    for addr in [a, b] {
        within("a revoked key refused by every node", PROPAGATION, || {
            !takes(addr, &key)
        });
    }

    // Admin writes on two nodes at once (they race for the same next ids): every node ends
    // with the same admin data, ids included.
    let writers: Vec<_> = [0, 1]
        .into_iter()
        .map(|n| {
            let data = cluster.nodes[n].data.clone();
            std::thread::spawn(move || {
                for i in 0..4 {
                    let app = format!("race-{n}-{i}");
                    crate::support::cli_ok(&data, &["apps", "add", &app, "--tenant", "t2"]);
                    crate::support::cli_ok(&data, &["keys", "mint", "--app", &app, "--label", "r"]);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let first = admin_data(&cluster.nodes[0]);
    let apps = first
        .iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("race-")))
        .count();
    assert_eq!(apps, 8, "{first:#?}");
    let ids: std::collections::HashSet<String> = first
        .iter()
        .filter(|r| r.get("tenant").is_some() && r.get("label").is_none())
        .map(|r| r["id"].to_string())
        .collect();
    assert_eq!(
        ids.len(),
        TENANTS.len() + 1 + 8,
        "app ids are distinct: {first:#?}"
    );
    wait_for("the same admin data on every node", || {
        (1..3).all(|n| admin_data(&cluster.nodes[n]) == first)
    });

    // A new node on an empty data dir gets all of it from the engine, and takes the keys.
    let data = cluster.dirs.path().join("n4");
    std::fs::create_dir(&data).unwrap();
    cluster.nodes.push(Node::start("n4", &data, &engine));
    assert_eq!(admin_data(&cluster.nodes[3]), first);
    assert!(takes(cluster.nodes[3].addr, &cluster.keys[2]));
    assert!(!takes(cluster.nodes[3].addr, &key));

    // A data dir with admin data of its own (a single node's) does not join: it would have
    // other tenants, apps and keys under the same ids.
    let own = cluster.dirs.path().join("own");
    crate::support::cli_ok(&own, &["init"]);
    crate::support::cli_ok(&own, &["tenants", "add", "mine"]);
    let out = serve_to_exit(&own, &engine);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("admin data of its own (1 tenants)"), "{err}");
    // Nor is the CLI, without a running node, let past the engine on a node's data dir.
    cluster.nodes[3].stop();
    let refused = cli(&data, &["tenants", "add", "offline"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("running node"),
        "{}",
        stderr(&refused)
    );
}

/// `inlet serve` in cluster mode on `data`, expected to give up: its output once it exits.
fn serve_to_exit(data: &Path, engine: &Engine) -> std::process::Output {
    serve_to_exit_as(data, engine, "own")
}

/// [`serve_to_exit`] as node `node`.
fn serve_to_exit_as(data: &Path, engine: &Engine, node: &str) -> std::process::Output {
    let mut child = Command::new(bin())
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--cluster-engine", &engine.urls()])
        .args(["--cluster-monitor", &engine.monitors()])
        .args(["--cluster-node", node])
        .args(["--cluster-partitions", &PARTITIONS.to_string()])
        .env("INLET_DEFAULT_CONFIG", crate::support::NO_DEFAULT_CONFIG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("the node did not give up");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

// ---- Takeover marker, dry runs, node names, a node cut off (issue 19's last pieces) ---------

/// A stale owner's batch that reaches the engine after another node took its partition over,
/// before the new owner had any traffic: the new owner's takeover marker makes the fence
/// alone refuse it (10071), past the lease-time guard (the hook sends it late on purpose).
/// The stale node steps down; the batch is answered 503, nothing is lost or doubled, and the
/// counters equal the stored events.
#[test]
fn a_stale_owners_late_append_is_refused_by_the_takeover_marker() {
    let engine = Engine::cluster();
    let hold_dir = tempfile::tempdir().unwrap();
    let hold = hold_dir.path().join("hold");
    let env = [("INLET_TEST_HOLD_APPEND", hold.to_str().unwrap())];
    let cluster = Cluster::start_with_env(&engine, &env);
    let key = cluster.keys[0].clone();
    let all: Vec<(SocketAddr, String)> = cluster
        .nodes
        .iter()
        .map(|n| (n.addr, key.clone()))
        .collect();
    let first = send_until_answered(&all, 0, &["m0".to_owned()]);
    assert_eq!(first[0].1, "accepted");
    let p = tenant_partition(&engine, "t1");
    let stale = cluster.settled_owner(p);
    let others: Vec<usize> = (0..3).filter(|&n| n != stale).collect();
    // The owner passes its lease check with a batch, then is held before the append.
    std::fs::write(&hold, b"").unwrap();
    let addr = cluster.nodes[stale].addr;
    let k = key.clone();
    let late = std::thread::spawn(move || post(addr, &k, &["late".to_owned()]));
    wait_for("the owner to hold its batch", || {
        hold.with_extension("held").exists()
    });
    wait_for("another node to take the partition over", || {
        others
            .iter()
            .any(|&n| cluster.nodes[n].owned().is_some_and(|o| o.contains(&p)))
    });
    let steps_before = cluster.nodes[stale]
        .log
        .lock()
        .unwrap()
        .matches("stepping down")
        .count();
    // No traffic reached the new owner: only its marker is after the stale owner's sequence.
    std::fs::remove_file(&hold).unwrap();
    let answer = late.join().unwrap();
    assert!(answer.is_none(), "the stale batch was answered {answer:?}");
    let node = &cluster.nodes[stale];
    wait_for("the stale owner to step down, refused by the fence", || {
        let log = node.log.lock().unwrap();
        log.matches("stepping down").count() > steps_before && log.contains("10071")
    });
    assert!(!stream_events(&engine).contains_key(&("t1".to_owned(), "late".to_owned())));
    // The client's retry is stored once, through any node; again, a duplicate.
    let retried = send_until_answered(&all, others[0], &["late".to_owned()]);
    assert_eq!(retried[0].1, "accepted");
    let again = send_until_answered(&all, stale, &["late".to_owned(), "m0".to_owned()]);
    assert!(again.iter().all(|(_, s)| s == "duplicate"), "{again:?}");
    let stored = stream_events(&engine);
    assert!(stored.values().all(|&n| n == 1), "{stored:?}");
    let t1 = stored.keys().filter(|(t, _)| t == "t1").count() as u64;
    assert_eq!(t1, 2);
    cluster.wait_all_served(&[0, 1, 2]);
    for n in &cluster.nodes {
        wait_for(
            &format!("{}'s counter of t1 to equal the stored events", n.name),
            || n.used().get("t1") == Some(&t1),
        );
    }
}

/// A dry run answers what the partition's owner would, through any node, right after a
/// change made through another, however far behind that node's copy is: a duplicate of an
/// event just stored, `cap_exceeded` at the tenant's cap. Nothing of it is stored.
#[test]
fn dry_runs_are_answered_by_the_partitions_owner() {
    let engine = Engine::cluster();
    // Every node's copy of the partitions it does not own is behind.
    let cluster = Cluster::start_with_env(&engine, &[("INLET_TEST_FOLLOW_DELAY_MS", "300")]);
    // t1: the owner of its partition, one node to store through, another to ask.
    let first = send_until_answered(
        &[(cluster.nodes[0].addr, cluster.keys[0].clone())],
        0,
        &["d-first".to_owned()],
    );
    assert_eq!(first[0].1, "accepted");
    let p = tenant_partition(&engine, "t1");
    let owner = cluster.settled_owner(p);
    let (a, b) = match owner {
        0 => (1, 2),
        1 => (2, 0),
        _ => (0, 1),
    };
    let (via_a, via_b) = (cluster.nodes[a].addr, cluster.nodes[b].addr);
    // A 503 while ownership settles is asked again.
    let ask = |addr: SocketAddr, key: &str, ids: &[String], dry: bool| {
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(r) = post_as(addr, key, ids, dry) {
                return r;
            }
            assert!(std::time::Instant::now() < end, "no answer");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let stored_ok =
        |r: &[(String, String)]| r.iter().all(|(_, s)| s == "accepted" || s == "duplicate");
    for i in 0..20 {
        let id = vec![format!("d{i}")];
        let dry = ask(via_b, &cluster.keys[0], &id, true);
        assert_eq!(dry[0].1, "accepted", "a new id, dry: {dry:?}");
        let stored = ask(via_a, &cluster.keys[0], &id, false);
        assert!(stored_ok(&stored), "{stored:?}");
        let dry = ask(via_b, &cluster.keys[0], &id, true);
        assert_eq!(
            dry[0].1, "duplicate",
            "right after it was stored through another node"
        );
    }
    // t4's cap: reached through one node, a dry run through another says cap_exceeded.
    let t4 = cluster.keys[3].clone();
    let mut sent = 0;
    while sent < QUOTA {
        let ids: Vec<String> = (sent..(sent + 50).min(QUOTA))
            .map(|i| format!("c{i}"))
            .collect();
        let r = ask(via_a, &t4, &ids, false);
        assert!(stored_ok(&r), "{r:?}");
        sent += ids.len() as u64;
        let more = vec![format!("c-probe-{sent}")];
        let dry = ask(via_b, &t4, &more, true);
        let expected = if sent < QUOTA { "accepted" } else { "rejected" };
        assert_eq!(dry[0].1, expected, "at {sent} of {QUOTA}");
    }
    // Nothing of the dry runs is stored.
    let stored = stream_events(&engine);
    assert_eq!(stored.keys().filter(|(t, _)| t == "t1").count(), 21);
    assert_eq!(
        stored.keys().filter(|(t, _)| t == "t4").count() as u64,
        QUOTA
    );
}

/// A second node under a name a running node uses is refused, with the setting named; the
/// node itself restarted at once after a SIGKILL starts (the same data dir is the same
/// instance); started on a new data dir, it waits for its old claim to expire, then starts.
#[test]
fn a_node_name_in_use_is_refused_and_a_restarted_node_starts() {
    let engine = Engine::cluster();
    let dirs = tempfile::tempdir().unwrap();
    let dir = |name: &str| {
        let d = dirs.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let mut first = Node::start("twin", &dir("a"), &engine);
    wait_for("the node to serve every partition", || {
        first
            .owned()
            .is_some_and(|o| o.len() == PARTITIONS as usize)
    });
    let refused = serve_to_exit_as(&dir("b"), &engine, "twin");
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains("cluster_node") && err.contains("twin") && err.contains("in use"),
        "{err}"
    );
    // The first is unharmed.
    assert_eq!(first.owned().map(|o| o.len()), Some(PARTITIONS as usize));

    first.kill();
    let mut again = Node::start("twin", &first.data, &engine);
    wait_for("the restarted node to serve every partition", || {
        again
            .owned()
            .is_some_and(|o| o.len() == PARTITIONS as usize)
    });
    assert!(
        !again.log.lock().unwrap().contains("waiting up to"),
        "a restart waited"
    );

    again.kill();
    let rebuilt = Node::start("twin", &dir("c"), &engine);
    assert!(rebuilt.log.lock().unwrap().contains("waiting up to"));
    wait_for(
        "the node on a new data dir to serve every partition",
        || {
            rebuilt
                .owned()
                .is_some_and(|o| o.len() == PARTITIONS as usize)
        },
    );
}

/// A node cut off from the engine answers a request for another node's partition 503 with
/// `Retry-After` at once, not after the forward's timeout.
#[test]
fn a_node_cut_off_from_the_engine_answers_forwarded_requests_at_once() {
    let mut engine = Engine::cluster();
    let cluster = Cluster::start(&engine);
    let first = send_until_answered(
        &[(cluster.nodes[0].addr, cluster.keys[0].clone())],
        0,
        &["cut-0".to_owned()],
    );
    assert_eq!(first[0].1, "accepted");
    let p = tenant_partition(&engine, "t1");
    let owner = cluster.settled_owner(p);
    let via = (owner + 1) % 3;
    for n in &mut engine.nodes {
        n.kill();
    }
    // Once the node knows it is cut off (the engine's connections closed), its answers
    // come at once, well within the forward's timeout (5 s).
    let end = std::time::Instant::now() + DEADLINE;
    let mut fast = 0;
    while fast < 3 {
        let started = std::time::Instant::now();
        let r = post(
            cluster.nodes[via].addr,
            &cluster.keys[0],
            &["cut-1".to_owned()],
        );
        assert!(r.is_none(), "answered {r:?} without the engine");
        fast = match started.elapsed() < std::time::Duration::from_secs(2) {
            true => fast + 1,
            false => 0,
        };
        assert!(std::time::Instant::now() < end, "no 503 came at once");
    }
}
