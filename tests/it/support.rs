//! Shared test support: a real `inlet` process on 127.0.0.1:0 with a real redb file in a temp
//! dir, the real CLI against the same data dir, and a small blocking HTTP/1.1 client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_inlet");

/// The `inlet` binary under test: `$INLET_TEST_BIN` when set (so a long campaign can run a
/// copy while the tree is rebuilt), else the one cargo built.
pub fn bin() -> String {
    std::env::var("INLET_TEST_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// Where every process a test starts looks for the packaged configuration file instead of
/// `/etc/inlet/inlet.toml` (`INLET_DEFAULT_CONFIG`): nowhere, so no test depends on the
/// host's /etc.
pub const NO_DEFAULT_CONFIG: &str = "/nonexistent/inlet-test/inlet.toml";

/// Sets the child's umask before it runs (the test process's own is left alone).
pub fn with_umask(cmd: &mut Command, umask: u32) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: umask(2) is async-signal-safe and changes only the forked child.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        })
    }
}

/// How long anything in a test may take to become true.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds or [`DEADLINE`] passes.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `inlet serve`.
pub struct Inlet {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
    pub log: Arc<Mutex<String>>,
    extra: Vec<String>,
    log_level: String,
    /// The server's umask, when a test sets one.
    umask: Option<u32>,
}

impl Inlet {
    /// Starts a server on a fresh data dir.
    pub fn start() -> Inlet {
        Inlet::start_with(&[])
    }

    /// Starts a server with extra `serve` flags.
    pub fn start_with(extra: &[&str]) -> Inlet {
        Inlet::start_logged("info", extra)
    }

    /// Starts a server with `RUST_LOG=level` and extra `serve` flags.
    pub fn start_logged(level: &str, extra: &[&str]) -> Inlet {
        Inlet::start_in(&std::env::temp_dir(), level, extra)
    }

    /// Starts a server whose data dir is a new temp dir inside `parent`.
    pub fn start_in(parent: &Path, level: &str, extra: &[&str]) -> Inlet {
        Inlet::start_full(parent, level, extra, None)
    }

    /// Starts a server with this umask (kept across restarts).
    pub fn start_umask(umask: u32) -> Inlet {
        Inlet::start_full(&std::env::temp_dir(), "info", &[], Some(umask))
    }

    fn start_full(parent: &Path, level: &str, extra: &[&str], umask: Option<u32>) -> Inlet {
        let dir = tempfile::tempdir_in(parent).expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr, log) = spawn(dir.path(), &extra, level, umask);
        Inlet {
            dir,
            addr,
            child: Some(child),
            log,
            extra,
            log_level: level.to_owned(),
            umask,
        }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Runs `inlet --data <dir> args...` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(self.data(), args)
    }

    /// Runs the CLI and returns stdout, failing the test on a non-zero exit.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        cli_ok(self.data(), args)
    }

    /// Mints a key for `app` (no event restriction).
    pub fn mint(&self, app: &str) -> String {
        self.cli_ok(&["keys", "mint", "--app", app, "--label", "test"])
            .trim()
            .to_owned()
    }

    /// Sets app `default` up for every dialect (AppsFlyer bundle `web.bundle`, Adjust app
    /// token `4w565xzmb54d` with event token `f0ob4r` → `purchase`); returns a key and a
    /// Datafly signing secret of it.
    pub fn every_dialect(&self) -> (String, String) {
        self.cli_ok(&[
            "apps",
            "configure",
            "default",
            "--appsflyer-bundle-id",
            "web.bundle",
            "--adjust-app-token",
            "4w565xzmb54d",
        ]);
        self.cli_ok(&["apps", "adjust-event", "default", "f0ob4r", "purchase"]);
        let key = self.mint("default");
        let secret = self
            .cli_ok(&["secrets", "mint", "--app", "default", "--label", "web"])
            .trim()
            .to_owned();
        (key, secret)
    }

    /// Every exported event as JSON.
    pub fn export(&self) -> Vec<serde_json::Value> {
        parse_ndjson(&self.cli_ok(&["export"]))
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal and waits for the exit status.
    pub fn signal_and_wait(&mut self, sig: &str) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &c.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        c.wait().expect("wait")
    }

    /// Waits until the server's log (read by a thread, so a line can trail the response
    /// that followed it) contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        wait_for(&format!("{needle:?} in the log"), || {
            self.log.lock().unwrap().contains(needle)
        });
    }

    /// Starts the server again on the same data dir (after `kill` or a signal).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let (child, addr, log) = spawn(self.dir.path(), &self.extra, &self.log_level, self.umask);
        self.child = Some(child);
        self.addr = addr;
        self.log = log;
    }
}

impl Drop for Inlet {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what the server said, so a red CI run can be read.
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- the server's last log lines ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn spawn(
    dir: &Path,
    extra: &[String],
    level: &str,
    umask: Option<u32>,
) -> (Child, SocketAddr, Arc<Mutex<String>>) {
    let mut cmd = Command::new(bin());
    if let Some(umask) = umask {
        with_umask(&mut cmd, umask);
    }
    let mut child = cmd
        .arg("--data")
        .arg(dir)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", level)
        .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn inlet");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // Plain or TLS, text or JSON log lines.
            let rest = line
                .split("listening on http://")
                .nth(1)
                .or_else(|| line.split("listening on https://").nth(1));
            if let Some(rest) = rest
                && let Some(tx) = tx.take()
            {
                let addr = rest
                    .split(|c: char| c.is_whitespace() || c == '"')
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
    let addr = recv_addr(&rx, &log);
    (child, addr, log)
}

fn recv_addr(rx: &Receiver<String>, log: &Arc<Mutex<String>>) -> SocketAddr {
    match rx.recv_timeout(DEADLINE) {
        Ok(a) => a.parse().expect("listen address"),
        Err(_) => panic!("inlet did not start:\n{}", log.lock().unwrap()),
    }
}

pub fn cli(data: &Path, args: &[&str]) -> Output {
    cli_command(Command::new(bin()), data, args)
}

/// Runs the CLI through `cmd` (a `Command` of the binary, perhaps with a umask set) on `data`.
pub fn cli_command(mut cmd: Command, data: &Path, args: &[&str]) -> Output {
    cmd.arg("--data")
        .arg(data)
        .args(args)
        .env("INLET_DEFAULT_CONFIG", NO_DEFAULT_CONFIG)
        .stdin(Stdio::null())
        .output()
        .expect("run inlet")
}

/// Now, in ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn cli_ok(data: &Path, args: &[&str]) -> String {
    let out = cli(data, args);
    assert!(
        out.status.success(),
        "inlet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

pub fn parse_ndjson(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect()
}

/// A response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client over one TCP connection (reconnects when needed).
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    pub fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        self.request("POST", path, headers, body)
    }

    /// `POST` with a bearer key and a JSON body.
    pub fn post_json(&mut self, path: &str, key: &str, body: &serde_json::Value) -> Resp {
        let auth = format!("Bearer {key}");
        self.post(
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .expect("request")
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Resp> {
        self.request("GET", path, &[], b"")
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        // A pooled connection may have been closed by the server: retry once on a fresh one
        // only when nothing of the answer arrived.
        for attempt in 0..2 {
            if self.conn.is_none() {
                let s = TcpStream::connect(self.addr)?;
                s.set_read_timeout(Some(DEADLINE))?;
                s.set_nodelay(true)?;
                self.conn = Some(BufReader::new(s));
            }
            let conn = self.conn.as_mut().expect("connected");
            // A server may answer (413, 401) before taking the whole body: read its answer
            // even when writing failed.
            let sent = conn
                .get_mut()
                .write_all(head.as_bytes())
                .and_then(|()| conn.get_mut().write_all(body));
            let result = read_response(conn).map_err(|e| sent.err().unwrap_or(e));
            match result {
                Ok((resp, keep)) => {
                    if !keep {
                        self.conn = None;
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    self.conn = None;
                    // A server that answered without reading a body (401, 404) closes the
                    // connection; the next write on it may fail instead of the read.
                    let closed = matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::BrokenPipe
                            | std::io::ErrorKind::ConnectionReset
                    );
                    if attempt == 1 || !closed {
                        return Err(e);
                    }
                }
            }
        }
        unreachable!()
    }
}

fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(Resp, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = HashMap::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let keep = headers
        .get("connection")
        .is_none_or(|v| !v.eq_ignore_ascii_case("close"));
    Ok((
        Resp {
            status,
            headers,
            body,
        },
        keep,
    ))
}

/// A canonical native event with the given id.
pub fn event(id: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id,
        "event_name": "purchase",
        "event_ts_ms": 1_735_999_999_000u64,
        "install_uuid": "8f2a1c0e94d7423b8b53af7c9e21d630",
    })
}

/// Bytes of every file under `dir`, for "is this secret anywhere on disk" checks.
pub fn files_contain(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if let Some(hit) = files_contain(&p, needle) {
                return Some(hit);
            }
        } else if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            return Some(p);
        }
    }
    None
}

impl Inlet {
    /// Waits for a server that was sent a signal some other way to exit.
    pub fn signal_and_wait_exited(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        c.wait().expect("wait")
    }
}

/// Prints a campaign's figures and appends them to the file `INLET_CAMPAIGN_REPORT` names.
pub fn report_campaign(line: &str) {
    eprintln!("{line}");
    if let Ok(path) = std::env::var("INLET_CAMPAIGN_REPORT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("report file");
        writeln!(f, "{line}").unwrap();
    }
}
