//! The packaged example cluster (packaging/cluster/): its three engine configurations start
//! as they are on the loopback addresses 127.0.0.1..3 (only the ports and store dirs moved,
//! so that tests running at once do not meet) and form one JetStream cluster that
//! `inlet cluster check` accepts with the shipped inlet configurations; `inlet check-config`
//! accepts those; the units verify with systemd-analyze.

use crate::engine::{get_json_at, nats_server, three_node_turn};
use crate::support::{BIN, DEADLINE, NO_DEFAULT_CONFIG};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn shipped(name: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join("packaging/cluster").join(name)).unwrap()
}

/// A port free on every loopback address.
fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The example's ports, moved.
struct Ports {
    client: u16,
    route: u16,
    monitor: u16,
}

impl Ports {
    fn rewrite(&self, text: &str) -> String {
        text.replace(":4222", &format!(":{}", self.client))
            .replace(":6222", &format!(":{}", self.route))
            .replace(":8222", &format!(":{}", self.monitor))
    }
}

struct Engines(Vec<Child>);

impl Drop for Engines {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The INFO an engine node sends a client on connecting.
fn client_info(host: &str, port: u16) -> serde_json::Value {
    let s = std::net::TcpStream::connect((host, port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line).unwrap();
    let json = line.strip_prefix("INFO ").expect("an INFO line");
    serde_json::from_str(json.trim()).unwrap()
}

fn inlet(config: &Path, data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(args)
        .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
        .output()
        .unwrap()
}

/// Starts the three shipped engine configurations with fresh ports under `dir`, each
/// node's output in `engine-N.log`; Err with a node's log when one exits before the meta
/// group forms (a port picked by [`free_port`] can be taken by another test meanwhile).
fn start_example(dir: &Path) -> Result<(Ports, Engines), String> {
    let ports = Ports {
        client: free_port(),
        route: free_port(),
        monitor: free_port(),
    };
    let mut children = Engines(Vec::new());
    let log_of = |i: usize| dir.join(format!("engine-{i}.log"));
    for i in 1..=3 {
        let text = shipped(&format!("engine-{i}.conf"));
        let store = format!("/var/lib/nats/engine-{i}");
        assert!(text.contains(&store), "engine-{i}.conf: store_dir");
        assert!(text.contains("sync_interval: always"), "engine-{i}.conf");
        let moved = dir.join(format!("engine-{i}"));
        let text = ports
            .rewrite(&text)
            .replace(&store, moved.to_str().unwrap());
        let config = dir.join(format!("engine-{i}.conf"));
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(log_of(i)).unwrap();
        children.0.push(
            Command::new(nats_server())
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let tail = |i: usize| {
        let text = std::fs::read_to_string(log_of(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "engine-{i}: {}",
            lines[lines.len().saturating_sub(8)..].join("\n")
        )
    };
    let end = Instant::now() + DEADLINE;
    loop {
        for (i, child) in children.0.iter_mut().enumerate() {
            if child.try_wait().ok().flatten().is_some() {
                return Err(tail(i + 1));
            }
        }
        let formed = (1..=3).all(|i| {
            get_json_at(&host(i), ports.monitor, "/jsz").is_some_and(|j| {
                j["meta_cluster"]["cluster_size"] == 3
                    && j["meta_cluster"]["leader"]
                        .as_str()
                        .is_some_and(|l| !l.is_empty())
            })
        });
        if formed {
            return Ok((ports, children));
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for the example engine's JetStream meta group of three:\n{}",
            (1..=3).map(tail).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn host(i: usize) -> String {
    format!("127.0.0.{i}")
}

#[test]
fn the_example_cluster_forms_and_passes_inlet_cluster_check() {
    // One three-node engine at a time, as for the other cluster tests: two of them at once
    // on two cores can take longer than the deadline to form.
    let _turn = three_node_turn();
    let dir = tempfile::tempdir().unwrap();
    let mut exits = Vec::new();
    let (ports, _children) = loop {
        let attempt = dir.path().join(format!("attempt-{}", exits.len()));
        std::fs::create_dir(&attempt).unwrap();
        match start_example(&attempt) {
            Ok(started) => break started,
            Err(exit) if exits.len() < 2 => exits.push(exit),
            Err(exit) => panic!("the example engine's nodes exited three times: {exits:#?} {exit}"),
        }
    };
    for i in 1..=3 {
        let info = client_info(&host(i), ports.client);
        assert_eq!(info["server_name"], format!("engine-{i}"));
        // Twice inlet's default max_body_bulk at least.
        let max_payload = info["max_payload"].as_u64().unwrap();
        assert!(max_payload >= 2 * 5_242_880, "{max_payload}");
    }

    // Each shipped inlet configuration is accepted as it is, and with the ports moved passes
    // `inlet cluster check` against the running example engine (the first creates the
    // cluster's objects, the others find them).
    for i in 1..=3 {
        let name = format!("inlet-{i}.toml");
        let d = dir.path().join(format!("inlet-{i}"));
        let out = inlet(
            &Path::new(REPO).join("packaging/cluster").join(&name),
            &d,
            &["check-config"],
        );
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            shown.contains(&format!("cluster_node = \"inlet-{i}\"")),
            "{shown}"
        );
        assert!(shown.contains("cluster_partitions = 16"), "{shown}");
        let moved = dir.path().join(&name);
        std::fs::write(&moved, ports.rewrite(&shipped(&name))).unwrap();
        let out = inlet(&moved, &d, &["cluster", "check"]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("3 node(s), nats-server 2."), "{said}");
        assert!(said.contains("replicated 3 times; 16 partitions"), "{said}");
    }
}

/// `systemd-analyze verify` on a unit (its binaries pointed at ones that exist).
fn verify(name: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join(name);
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{name}: systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_example_cluster_units_verify() {
    let nats = Command::new("sh")
        .args(["-c", &format!("command -v {}", nats_server())])
        .output()
        .unwrap();
    let nats = String::from_utf8(nats.stdout).unwrap();
    let unit = shipped("nats-server.service");
    assert!(unit.contains("ExecStart=/usr/bin/nats-server -c /etc/nats/engine.conf"));
    verify(
        "nats-server.service",
        &unit.replace("/usr/bin/nats-server", nats.trim()),
    );
    // inlet's unit with the cluster drop-in appended, as systemd merges it.
    let inlet_unit = std::fs::read_to_string(Path::new(REPO).join("packaging/inlet.service"))
        .unwrap()
        .replace("/usr/bin/inlet", BIN);
    let dropin = shipped("inlet-cluster.conf");
    assert!(dropin.contains("After=nats-server.service"));
    verify("inlet.service", &format!("{inlet_unit}\n{dropin}"));
}
