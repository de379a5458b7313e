//! `inlet-bench all`: every figure of BENCHMARKS.md in one run, each inlet figure next to
//! the ceiling measured minutes before on the same machine.

use crate::ceiling::{self, Index};
use crate::cpu::{Meter, Used};
use crate::load::{self, IdPool, Report, Workload};
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The inlet binary (default: `inlet` next to this binary).
    #[arg(long)]
    pub inlet: Option<PathBuf>,
    /// Length of each timed run, in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Events stored before the bulk runs (the targets name 1M and 10M).
    #[arg(long, default_value_t = 1_000_000)]
    pub prefill: u64,
    /// Events appended by the storage ceiling run.
    #[arg(long, default_value_t = 300_000)]
    pub storage_events: u64,
    /// Where the databases go (default: the system temp dir). Must be on the disk under test.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub pg: crate::postgres::PgArgs,
}

/// The `inlet` binary built next to this one.
pub fn inlet_next_to_me() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("inlet")))
        .unwrap_or_else(|| PathBuf::from("inlet"))
}

/// A directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(base: &Path, name: &str) -> anyhow::Result<Scratch> {
        let p = base.join(format!("inlet-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process of the run (inlet or the bare server).
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// Time from spawn until `/readyz` (or, for the bare server, its address) answered.
    pub(crate) ready_after: Duration,
}

impl Server {
    pub(crate) fn inlet(bin: &Path, data: &Path) -> anyhow::Result<Server> {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .arg("--data")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let addr = watch_for_address(child.stderr.take().expect("piped"))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while http_status(addr, "/readyz") != Some(200) {
            if Instant::now() > deadline {
                bail!("inlet did not become ready");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Server {
            child,
            addr,
            ready_after: started.elapsed(),
        })
    }

    fn bare() -> anyhow::Result<Server> {
        Server::bench(&["bare-server".as_ref()])
    }

    /// The durable bare server (`durable-server`), appending to a file in `dir` that it
    /// first grows to `grow_to` bytes.
    fn durable(commit: ceiling::Commit, dir: &Path, grow_to: u64) -> anyhow::Result<Server> {
        let commit = clap::ValueEnum::to_possible_value(&commit).expect("named");
        Server::bench(&[
            "durable-server".as_ref(),
            "--commit".as_ref(),
            commit.get_name().as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
            "--grow-to".as_ref(),
            grow_to.to_string().as_ref(),
        ])
    }

    /// The durable floor (quick-repair) that also writes inlet's other tables
    /// (`durable-server --like-inlet`), in `dir`.
    fn durable_like_inlet(dir: &Path) -> anyhow::Result<Server> {
        Server::bench(&[
            "durable-server".as_ref(),
            "--like-inlet".as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
        ])
    }

    /// The bulk floor: `durable-server --per-event` (quick-repair commits) in `dir`.
    fn bulk_floor(dir: &Path) -> anyhow::Result<Server> {
        Server::bench(&[
            "durable-server".as_ref(),
            "--per-event".as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
        ])
    }

    /// This binary with `args`: a server that prints its address on stdout.
    fn bench(args: &[&std::ffi::OsStr]) -> anyhow::Result<Server> {
        let started = Instant::now();
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let addr = watch_for_address(child.stdout.take().expect("piped"))?;
        Ok(Server {
            child,
            addr,
            ready_after: started.elapsed(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait: a clean stop.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        signal(self.child.id(), "TERM")?;
        self.child.wait()?;
        Ok(())
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -{sig} {pid} failed");
    Ok(())
}

/// Reads a child's output until it names its address (`listening on http://ADDR`), then
/// keeps draining it in the background so the child never blocks on a full pipe.
fn watch_for_address(out: impl Read + Send + 'static) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on http://").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .context("the server did not say where it listens")?;
    Ok(addr.parse()?)
}

/// The counters of the event ids inlet's request threads checked against the dedupe
/// filters and of those the filter of everything did not rule out (they read the runs).
#[derive(Clone, Copy)]
pub(crate) struct PrecheckCounts {
    ids: f64,
    reads: f64,
}

impl PrecheckCounts {
    /// The counters on `addr`'s `/metrics`; `None` if they cannot be read.
    pub(crate) fn now(addr: SocketAddr) -> Option<PrecheckCounts> {
        let text = metrics_text(addr)?;
        let value = |name: &str| {
            (text.lines())
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        Some(PrecheckCounts {
            ids: value("inlet_dedupe_prechecked_ids_total")?,
            reads: value("inlet_dedupe_precheck_reads_total")?,
        })
    }

    /// "12.3%": the share of the ids checked between two snapshots that were read, or
    /// "–" if either could not be taken.
    pub(crate) fn read_share(before: Option<Self>, after: Option<Self>) -> String {
        match (before, after) {
            (Some(b), Some(a)) => {
                format!(
                    "{:.1}%",
                    100.0 * (a.reads - b.reads) / (a.ids - b.ids).max(1.0)
                )
            }
            _ => "–".into(),
        }
    }
}

fn metrics_text(addr: SocketAddr) -> Option<String> {
    let mut text = String::new();
    get(addr, "/metrics")?.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Status of a `GET path`, or `None` when nothing answered.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut line = String::new();
    BufReader::new(get(addr, path)?).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A connection to `addr` that has sent `GET path` and closes after the answer.
fn get(addr: SocketAddr, path: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    Some(s)
}

/// Runs the inlet CLI on `data` and returns stdout.
pub(crate) fn cli(inlet: &Path, data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(inlet)
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "inlet {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Events stored this month for tenant `default` (the quota counter, which the writer
/// updates in the same transaction as the events).
pub fn stored(inlet: &Path, data: &Path) -> anyhow::Result<u64> {
    let text = cli(inlet, data, &["tenants", "list", "--json"])?;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v["name"] == "default" {
            return v["used_this_month"].as_u64().context("used_this_month");
        }
    }
    bail!("no tenant default")
}

/// Lines of `inlet export` (every stored event), counted while streaming.
fn exported(inlet: &Path, data: &Path) -> anyhow::Result<u64> {
    let mut child = Command::new(inlet)
        .arg("--data")
        .arg(data)
        .arg("export")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut n = 0;
    let mut r = BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped"));
    let mut buf = Vec::new();
    while r.read_until(b'\n', &mut buf)? > 0 {
        n += 1;
        buf.clear();
    }
    anyhow::ensure!(child.wait()?.success(), "inlet export failed");
    Ok(n)
}

/// Largest VmRSS of a process, sampled every 50 ms from /proc while alive.
pub(crate) struct RssSampler {
    max_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> RssSampler {
        let max_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max_kib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match rss_kib(pid) {
                    Some(kib) => {
                        m.fetch_max(kib, Ordering::Relaxed);
                    }
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler { max_kib, stop }
    }

    pub(crate) fn max_mib(&self) -> f64 {
        self.max_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub(crate) fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{nproc} CPUs, MemTotal {mem}, kernel {}, load average at start {}",
        kernel.trim(),
        loadavg()
    )
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One row of the table.
struct Row {
    scenario: String,
    figure: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

fn row(scenario: &str, figure: String, ratio: String, target: &str, met: Option<bool>) -> Row {
    Row {
        scenario: scenario.into(),
        figure,
        ratio,
        target: target.into(),
        met,
    }
}

/// Single events × 64 connections for `seconds` against the floor server `srv` (no key),
/// which is then killed; says the run's summary under `label` and clears `ok` on an error
/// answer. The run, and the CPU it took.
fn floor_singles(
    srv: Server,
    run: &impl Fn(Workload) -> Report,
    seconds: f64,
    label: &str,
    ok: &mut bool,
) -> (Report, Used) {
    let meter = Meter::start(srv.pid());
    let r = run(workload(srv.addr, "none", 1, 64, seconds));
    let cpu = meter.stop(r.events_sent);
    srv.kill();
    say(format!("{label}: {}", r.summary()));
    *ok &= r.errors() == 0;
    (r, cpu)
}

pub(crate) fn say(msg: impl AsRef<str>) {
    eprintln!("[inlet-bench] {}", msg.as_ref());
}

pub(crate) fn workload(
    addr: SocketAddr,
    key: &str,
    bulk: usize,
    conns: usize,
    seconds: f64,
) -> Workload {
    Workload {
        addr,
        key: key.to_owned(),
        bulk,
        conns,
        requests: None,
        duration: Some(Duration::from_secs_f64(seconds)),
        dup_share: 0.0,
        dup_pool: None,
        seed: 1,
        first_unique: 0,
        rate: None,
    }
}

pub fn all(a: &Args) -> anyhow::Result<()> {
    let inlet = a.inlet.clone().unwrap_or_else(inlet_next_to_me);
    anyhow::ensure!(
        inlet.is_file(),
        "{} not found: build it first (cargo build --release --bins)",
        inlet.display()
    );
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = |w: Workload| -> Report { rt.block_on(load::run(w)) };
    let machine = machine();
    say(&machine);
    let mut rows = Vec::new();
    let mut all_ok = true;

    // 1. The HTTP ceiling: the same single-event bodies, 64 connections, a bare server.
    let bare = Server::bare()?;
    let http = run(workload(bare.addr, "none", 1, 64, a.seconds));
    bare.kill();
    say(format!("HTTP ceiling: {}", http.summary()));
    let http_rps = http.requests_per_sec();
    rows.push(row(
        "HTTP ceiling: bare hyper, single events, 64 conns",
        format!("{http_rps:.0} req/s"),
        "1".into(),
        "",
        None,
    ));

    // 2. The storage ceiling: durable raw redb appends, commits of 1000, no index.
    let scratch = Scratch::new(&base, "storage")?;
    let storage = ceiling::storage(&scratch.0, Index::None, 0, a.storage_events, 1000)?;
    drop(scratch);
    let storage_eps = storage.events_per_sec();
    let append_cpu_us = storage.cpu.as_secs_f64() * 1e6 / storage.events as f64;
    say(format!(
        "storage ceiling: {storage_eps:.0} events/s, {append_cpu_us:.2} µs of CPU per event"
    ));
    rows.push(row(
        "Storage ceiling: raw redb appends, commits of 1000, fsync each",
        format!("{storage_eps:.0} ev/s"),
        "1".into(),
        "",
        None,
    ));

    // The floor under every request's latency: one durable commit of one event.
    let scratch = Scratch::new(&base, "commit")?;
    let one = ceiling::storage(&scratch.0, Index::None, 0, 300, 1)?;
    drop(scratch);
    let commit_ms = one.elapsed.as_secs_f64() * 1000.0 / one.events as f64;
    say(format!("durable commit of one event: {commit_ms:.2} ms"));
    rows.push(row(
        "Durable commit latency: raw redb, one event per commit",
        format!(
            "{commit_ms:.2} ms ⇒ 64 connections can get at most {:.0} req/s durably",
            64.0 / commit_ms * 1000.0
        ),
        String::new(),
        "",
        None,
    ));

    // The durable floor of single events: the bare server, each request answered only after
    // a group commit holding it returned. Inlet's commit (redb, quick-repair), and a bare
    // write-ahead log (a plain file, fdatasync) for the cheapest durable write there is.
    let (mut floor_rps, mut floor_cpu) = (0.0, Default::default());
    for (commit, what) in [
        (
            ceiling::Commit::QuickRepair,
            "redb commits with quick-repair (inlet's)",
        ),
        (ceiling::Commit::File, "a plain file, fdatasync"),
    ] {
        let scratch = Scratch::new(&base, "durable")?;
        let srv = Server::durable(commit, &scratch.0, 0)?;
        let label = format!("durable floor, {commit:?}");
        let (r, cpu) = floor_singles(srv, &run, a.seconds, &label, &mut all_ok);
        drop(scratch);
        rows.push(row(
            &format!(
                "Durable floor: bare hyper + group commit into {what}, single events, 64 conns"
            ),
            format!(
                "{:.0} req/s (p99 {:.1} ms; server CPU {:.0} µs/request: {}; load generator {:.0})",
                r.requests_per_sec(),
                r.quantile_ms(0.99),
                cpu.server,
                cpu.split(),
                cpu.generator
            ),
            format!("{:.2} × HTTP", r.requests_per_sec() / http_rps),
            "",
            None,
        ));
        if commit == ceiling::Commit::QuickRepair {
            (floor_rps, floor_cpu) = (r.requests_per_sec(), cpu);
        }
    }

    // The same floor writing, in each commit, the tables inlet writes for single events
    // besides the log: what committing seven tables costs, with none of inlet's logic.
    let scratch = Scratch::new(&base, "durable-tables")?;
    let srv = Server::durable_like_inlet(&scratch.0)?;
    let label = "durable floor writing inlet's tables";
    let (r, tables_cpu) = floor_singles(srv, &run, a.seconds, label, &mut all_ok);
    drop(scratch);
    let tables_rps = r.requests_per_sec();
    rows.push(row(
        "Durable floor writing inlet's tables: the same quick-repair commits, each also \
         writing a dedupe commit row, the bodies again (audit), key use, usage, day and hour \
         tallies",
        format!(
            "{tables_rps:.0} req/s (p99 {:.1} ms; server CPU {:.0} µs/request: {}; load \
             generator {:.0})",
            r.quantile_ms(0.99),
            tables_cpu.server,
            tables_cpu.split(),
            tables_cpu.generator
        ),
        format!("{:.2} × the durable floor", tables_rps / floor_rps),
        "",
        None,
    ));

    // The durable floor of bulk: the same server taking bulk bodies, each event found by a
    // JSON parse and stored as its own row, quick-repair commits. What a durable bulk
    // server that keeps events one by one reaches here with the load generator beside it.
    let scratch = Scratch::new(&base, "bulk-floor")?;
    let srv = Server::bulk_floor(&scratch.0)?;
    let meter = Meter::start(srv.pid());
    let r = run(workload(srv.addr, "none", 1000, 16, a.seconds));
    let bulk_floor_cpu = meter.stop(r.events_sent).server;
    srv.kill();
    drop(scratch);
    say(format!("bulk floor: {}", r.summary()));
    all_ok &= r.errors() == 0;
    let bulk_floor_eps = r.events_per_sec();
    rows.push(row(
        "Bulk floor: the same, bulk 1000 × 16 conns, each event parsed out and stored as a row",
        format!(
            "{bulk_floor_eps:.0} ev/s (p99 {:.0} ms; server CPU {bulk_floor_cpu:.1} µs/event)",
            r.quantile_ms(0.99)
        ),
        format!("{:.2} × storage", bulk_floor_eps / storage_eps),
        "",
        None,
    ));

    // 3. inlet, single events.
    let data = Scratch::new(&base, "single")?;
    let srv = Server::inlet(&inlet, &data.0)?;
    let rss_single = RssSampler::start(srv.pid());
    let key = cli(
        &inlet,
        &data.0,
        &["keys", "mint", "--app", "default", "--label", "bench"],
    )?
    .trim()
    .to_owned();
    let meter = Meter::start(srv.pid());
    let single = run(workload(srv.addr, &key, 1, 64, a.seconds));
    let single_cpu = meter.stop(single.events_sent);
    say(format!("inlet single, 64 conns: {}", single.summary()));
    let ratio = single.requests_per_sec() / http_rps;
    rows.push(row(
        "inlet single events, 64 conns, unique ids, fresh log",
        format!(
            "{:.0} req/s (p99 {:.1} ms; server CPU {:.0} µs/event: {})",
            single.requests_per_sec(),
            single.quantile_ms(0.99),
            single_cpu.server,
            single_cpu.split()
        ),
        format!(
            "{ratio:.2} × HTTP; {:.2} × durable floor; {:.2} × the floor writing inlet's tables",
            single.requests_per_sec() / floor_rps,
            single.requests_per_sec() / tables_rps
        ),
        "≥ 0.9 × floor",
        Some(single.requests_per_sec() >= 0.9 * floor_rps),
    ));
    // What the singles target leaves the server per request, as for bulk below: the cores'
    // time at 0.9 × the floor's rate, less the load generator's per request. Both runs'
    // busy cores say whether the floor itself was held by the cores or by the commits.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let at_target = 1e6 * cores / (0.9 * floor_rps);
    let busy = |rps: f64, cpu: &crate::cpu::Used| rps * (cpu.server + cpu.generator) / 1e6;
    rows.push(row(
        &format!("CPU budget per request at the singles target (0.9 × floor, {cores:.0} cores)"),
        format!(
            "{at_target:.0} µs of the machine's CPU per request; the load generator takes \
             {:.0}, leaving {:.0} µs for the server (inlet used {:.0}, {:.1} of it in its one \
             writer thread; the durable floor's server {:.0}, {:.1} in its one committing \
             thread, {:.1} when it writes inlet's tables); cores busy: {:.2} in the floor's \
             run, {:.2} in inlet's",
            single_cpu.generator,
            at_target - single_cpu.generator,
            single_cpu.server,
            single_cpu.role("writer"),
            floor_cpu.server,
            floor_cpu.role("committer"),
            tables_cpu.role("committer"),
            busy(floor_rps, &floor_cpu),
            busy(single.requests_per_sec(), &single_cpu),
        ),
        String::new(),
        "",
        None,
    ));
    // Open-loop runs at a fixed rate: latency counts from each request's scheduled start.
    let paced_at = |rate: f64, seed: u64| -> (Report, String) {
        let mut w = workload(srv.addr, &key, 1, 64, a.seconds);
        w.rate = Some(rate);
        w.seed = seed;
        let r = run(w);
        say(format!("inlet single at {rate:.0} req/s: {}", r.summary()));
        let figure = format!(
            "p99 {:.1} ms (p50 {:.1}, max {:.1}; achieved {:.0} req/s)",
            r.quantile_ms(0.99),
            r.quantile_ms(0.5),
            r.quantile_ms(1.0),
            r.requests_per_sec()
        );
        (r, figure)
    };
    // Latency at half the durable floor: what the target's "half of that load" means on a
    // machine whose durable floor is below the target itself (informative, no target).
    // Before the run at the target's half load, which overloads inlet on this machine.
    let floor_rate = 0.5 * floor_rps;
    let (half_floor, figure) = paced_at(floor_rate, 3);
    rows.push(row(
        &format!(
            "inlet single at half the durable floor ({floor_rate:.0} req/s = {:.2} × HTTP), p99 latency",
            floor_rate / http_rps
        ),
        figure,
        String::new(),
        "p99 ≤ 15 ms",
        Some(
            half_floor.quantile_ms(0.99) <= 15.0
                && half_floor.requests_per_sec() >= 0.95 * floor_rate,
        ),
    ));
    let rate = 0.25 * http_rps;
    let (paced, figure) = paced_at(rate, 2);
    rows.push(row(
        &format!(
            "inlet single at half the target load ({rate:.0} req/s = 0.25 × HTTP), p99 latency"
        ),
        figure,
        String::new(),
        "",
        None,
    ));
    let acked = single.accepted + paced.accepted + half_floor.accepted;
    let stored_single = stored(&inlet, &data.0)?;
    all_ok &= stored_single == acked && single.errors() + paced.errors() + half_floor.errors() == 0;
    srv.stop()?;
    let rss_single_mib = rss_single.max_mib();
    drop(data);

    // 4. inlet, bulk of 1000 with 16 connections, into a log of `prefill` events.
    let data = Scratch::new(&base, "bulk")?;
    let srv = Server::inlet(&inlet, &data.0)?;
    let mut rss = RssSampler::start(srv.pid());
    let key = cli(
        &inlet,
        &data.0,
        &["keys", "mint", "--app", "default", "--label", "bench"],
    )?
    .trim()
    .to_owned();
    let prefill_seed = 10;
    let mut acked = 0;
    let mut errors = 0;
    let mut prefilled = 0u64;
    let started = Instant::now();
    let step = (a.prefill / 10).max(1000);
    let mut curve = Vec::new();
    while prefilled < a.prefill {
        let mut w = workload(srv.addr, &key, 1000, 16, 0.0);
        w.duration = None;
        w.requests = Some((step.min(a.prefill - prefilled)).div_ceil(1000));
        w.seed = prefill_seed;
        w.first_unique = prefilled;
        let r = run(w);
        acked += r.accepted;
        errors += r.errors();
        prefilled = r.unique_issued;
        curve.push(format!("{}k: {:.0}", prefilled / 1000, r.events_per_sec()));
        say(format!("prefill to {prefilled}: {}", r.summary()));
    }
    let prefill_secs = started.elapsed().as_secs_f64();
    rows.push(row(
        &format!("inlet bulk 1000 × 16 conns while filling 0 → {prefilled}"),
        format!(
            "{:.0} ev/s overall; per step (ev/s): {}",
            prefilled as f64 / prefill_secs,
            curve.join(", ")
        ),
        String::new(),
        "",
        None,
    ));
    let mut w = workload(srv.addr, &key, 1000, 16, a.seconds);
    w.seed = 11;
    let meter = Meter::start(srv.pid());
    let pre = PrecheckCounts::now(srv.addr);
    let unique = run(w);
    let cpu = meter.stop(unique.events_sent);
    let read_share = PrecheckCounts::read_share(pre, PrecheckCounts::now(srv.addr));
    let (unique_cpu, gen_cpu) = (cpu.server, cpu.generator);
    say(format!("bulk unique at {prefilled}: {}", unique.summary()));
    acked += unique.accepted;
    errors += unique.errors();
    let ratio = unique.events_per_sec() / storage_eps;
    // The targets: 0.5 × storage at 1M; at 10M, 0.8 × the 1M figure (0.4 × storage).
    let want = if prefilled >= 10_000_000 { 0.4 } else { 0.5 };
    let bulk_row = rows.len();
    rows.push(row(
        &format!("inlet bulk 1000 × 16 conns, unique ids, log at {prefilled}"),
        format!(
            "{:.0} ev/s (p99 {:.0} ms; server CPU {unique_cpu:.1} µs/event; ids the \
             dedupe filter of everything did not rule out {read_share})",
            unique.events_per_sec(),
            unique.quantile_ms(0.99)
        ),
        format!(
            "{ratio:.2} × storage; {:.2} × bulk floor",
            unique.events_per_sec() / bulk_floor_eps
        ),
        &format!("≥ {want} × storage, ≥ 2 × Postgres"),
        Some(ratio >= want),
    ));
    // What the bulk target leaves the server per event: the machine's CPU time at the
    // target rate, less the load generator's share (it runs on the same machine). The bare
    // append's own cost is shown for scale: it is part of what the server must do.
    let at_target = 1e6 * cores / (want * storage_eps);
    rows.push(row(
        &format!("CPU budget per event at the bulk target ({want} × storage, {cores:.0} cores)"),
        format!(
            "{at_target:.1} µs of the machine's CPU per event; the load generator takes \
             {gen_cpu:.1}, leaving {:.1} µs for the server (inlet used {unique_cpu:.1}: {}; \
             {:.1} without the identity indexer; the bulk floor {bulk_floor_cpu:.1}), of \
             which the bare log append (the storage ceiling's own) is {append_cpu_us:.1}",
            at_target - gen_cpu,
            cpu.split(),
            unique_cpu - cpu.role("identity indexer"),
        ),
        String::new(),
        "",
        None,
    ));
    let mut w = workload(srv.addr, &key, 1000, 16, a.seconds);
    w.seed = 12;
    w.dup_share = 0.5;
    w.dup_pool = Some(IdPool {
        seed: prefill_seed,
        count: prefilled,
    });
    let half = run(w);
    say(format!("bulk 50% resubmitted: {}", half.summary()));
    acked += half.accepted;
    errors += half.errors();
    let ratio = half.events_per_sec() / unique.events_per_sec();
    rows.push(row(
        "inlet bulk 1000 × 16 conns, 50% resubmitted ids (events/s incl. duplicates)",
        format!(
            "{:.0} ev/s ({} duplicates answered)",
            half.events_per_sec(),
            half.duplicates
        ),
        format!("{ratio:.2} × all-unique"),
        "≥ 0.8 × all-unique",
        Some(ratio >= 0.8),
    ));
    let counted = stored(&inlet, &data.0)?;
    all_ok &= counted == acked && errors == 0;
    say(format!("stored {counted}, acknowledged {acked}"));

    // 5. Restarts: clean, then SIGKILL in the middle of a bulk load; between them, single
    // events on the log the bulk runs left (`prefill` and all they added), against the floor
    // of a file of its size: a quick-repair commit writes the whole file's allocator state.
    srv.stop()?;
    // The fill, unique and resubmitted runs: the largest heap of all.
    let rss_fill_mib = rss.max_mib();
    drop(rss);
    let file_bytes = std::fs::metadata(data.0.join(inlet::store::DB_FILE))?.len();
    let scratch = Scratch::new(&base, "durable-grown")?;
    let srv = Server::durable(ceiling::Commit::QuickRepair, &scratch.0, file_bytes)?;
    let label = format!("durable floor, QuickRepair, file grown to {file_bytes} bytes");
    let (grown, _) = floor_singles(srv, &run, a.seconds, &label, &mut all_ok);
    drop(scratch);
    let grown_rps = grown.requests_per_sec();
    rows.push(row(
        &format!(
            "Durable floor at {counted} stored: the same, quick-repair, its redb file first \
             grown to {:.2} GiB (inlet's file then)",
            file_bytes as f64 / (1u64 << 30) as f64
        ),
        format!(
            "{grown_rps:.0} req/s (p99 {:.1} ms)",
            grown.quantile_ms(0.99)
        ),
        format!(
            "{:.2} × HTTP; {:.2} × the fresh file's floor",
            grown_rps / http_rps,
            grown_rps / floor_rps
        ),
        "",
        None,
    ));
    let srv = Server::inlet(&inlet, &data.0)?;
    let clean = srv.ready_after;
    rss = RssSampler::start(srv.pid());
    let mut w = workload(srv.addr, &key, 1, 64, a.seconds);
    w.seed = 14;
    let meter = Meter::start(srv.pid());
    let single_n = run(w);
    let single_n_cpu = meter.stop(single_n.events_sent);
    say(format!(
        "inlet single, 64 conns, log at {counted}: {}",
        single_n.summary()
    ));
    acked += single_n.accepted;
    all_ok &= single_n.errors() == 0;
    let single_row = rows.len();
    rows.push(row(
        &format!("inlet single events, 64 conns, unique ids, log at {counted}"),
        format!(
            "{:.0} req/s (p99 {:.1} ms; server CPU {:.0} µs/event: {})",
            single_n.requests_per_sec(),
            single_n.quantile_ms(0.99),
            single_n_cpu.server,
            single_n_cpu.split()
        ),
        format!(
            "{:.2} × its floor; {:.2} × the fresh file's",
            single_n.requests_per_sec() / grown_rps,
            single_n.requests_per_sec() / floor_rps
        ),
        "≥ 0.9 × floor, ≥ 3 × Postgres",
        Some(single_n.requests_per_sec() >= 0.9 * grown_rps),
    ));
    let rate = 0.5 * grown_rps;
    let mut w = workload(srv.addr, &key, 1, 64, a.seconds);
    w.seed = 15;
    w.rate = Some(rate);
    let paced_n = run(w);
    say(format!(
        "inlet single at {rate:.0} req/s, log at {counted}: {}",
        paced_n.summary()
    ));
    acked += paced_n.accepted;
    all_ok &= paced_n.errors() == 0;
    rows.push(row(
        &format!("inlet single at half its floor ({rate:.0} req/s), log at {counted}, p99 latency"),
        format!(
            "p99 {:.1} ms (p50 {:.1}, max {:.1}; achieved {:.0} req/s)",
            paced_n.quantile_ms(0.99),
            paced_n.quantile_ms(0.5),
            paced_n.quantile_ms(1.0),
            paced_n.requests_per_sec()
        ),
        String::new(),
        "p99 ≤ 15 ms",
        Some(paced_n.quantile_ms(0.99) <= 15.0 && paced_n.requests_per_sec() >= 0.95 * rate),
    ));
    let pid = srv.pid();
    let kill_after = a.seconds.min(2.0);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(kill_after));
        let _ = signal(pid, "KILL");
    });
    let mut w = workload(srv.addr, &key, 1000, 16, kill_after + 2.0);
    w.seed = 13;
    let killed = run(w);
    killer.join().expect("killer thread");
    let mut srv = srv;
    let _ = srv.child.wait();
    let rss_bulk_mib = rss.max_mib();
    drop(rss);
    say(format!("load cut by SIGKILL: {}", killed.summary()));
    let srv = Server::inlet(&inlet, &data.0)?;
    let after_kill = srv.ready_after;
    let counted_after = stored(&inlet, &data.0)?;
    // Acknowledged ⇒ stored; the killed run may have committed a last batch it never answered.
    let kill_ok = counted_after >= acked + killed.accepted;
    srv.stop()?;
    let exported = exported(&inlet, &data.0)?;
    all_ok &= kill_ok && exported == counted_after;
    say(format!(
        "after SIGKILL: stored {counted_after} (exported {exported}), acknowledged {}",
        acked + killed.accepted
    ));
    rows.push(row(
        &format!("Ready after a clean restart, {prefilled}+ events"),
        format!("{:.3} s", clean.as_secs_f64()),
        String::new(),
        "≤ 1 s",
        Some(clean <= Duration::from_secs(1)),
    ));
    rows.push(row(
        "Ready after SIGKILL under load",
        format!("{:.3} s", after_kill.as_secs_f64()),
        String::new(),
        "≤ 5 s",
        Some(after_kill <= Duration::from_secs(5)),
    ));
    say(format!(
        "peak RSS: fresh-log singles {rss_single_mib:.0} MiB, fill and bulk runs \
         {rss_fill_mib:.0} MiB, after the restart (singles, SIGKILL) {rss_bulk_mib:.0} MiB"
    ));
    let rss_max = rss_single_mib.max(rss_fill_mib).max(rss_bulk_mib);
    rows.push(row(
        "Peak RSS of inlet over all runs",
        format!("{rss_max:.0} MiB"),
        String::new(),
        "≤ 200 MiB",
        Some(rss_max <= 200.0),
    ));
    rows.push(row(
        "Stored = acknowledged (quota counter and export), no non-2xx",
        if all_ok { "yes" } else { "NO" }.into(),
        String::new(),
        "yes",
        Some(all_ok),
    ));
    drop(data);

    // 6. The PostgreSQL peer at the same number of stored events, no HTTP layer.
    let peer = crate::postgres::run(&a.pg, &[a.prefill], a.seconds, &base, "bulk single")?;
    use crate::postgres::Peer;
    match &peer {
        Peer::Ran(_) => {
            for (at, what, ours) in [
                (bulk_row, "bulk", unique.events_per_sec()),
                (single_row, "single", single_n.requests_per_sec()),
            ] {
                let r = peer.at(what, a.prefill).expect("ran");
                let times = ours / r.events_per_sec;
                rows[at].ratio = format!("{}; {times:.2} × Postgres", rows[at].ratio);
                let want = if what == "bulk" { 2.0 } else { 3.0 };
                if what == "single" {
                    // A target above the durable floor is out of reach of any server that
                    // commits before it answers.
                    rows[at].ratio = format!(
                        "{} (3 × Postgres = {:.2} × its floor)",
                        rows[at].ratio,
                        3.0 * r.events_per_sec / grown_rps
                    );
                }
                rows[at].met = rows[at].met.map(|m| m && times >= want);
                rows.push(row(
                    &format!(
                        "PostgreSQL peer: {}, {} rows stored, fsync + synchronous_commit, no HTTP",
                        if what == "bulk" {
                            "16 clients × 1000-row INSERT … ON CONFLICT DO NOTHING"
                        } else {
                            "64 clients × single-row INSERT … ON CONFLICT DO NOTHING"
                        },
                        r.stored
                    ),
                    format!(
                        "{:.0} ev/s (latency avg {:.1} ms; server CPU {:.1} µs/event)",
                        r.events_per_sec, r.latency_ms, r.cpu_us
                    ),
                    "1".into(),
                    "",
                    None,
                ));
            }
        }
        Peer::Skipped(why) => {
            say(format!("PostgreSQL peer skipped: {why}"));
            rows.push(row(
                &format!("PostgreSQL peer: skipped ({why})"),
                String::new(),
                String::new(),
                "",
                None,
            ));
        }
    }

    println!("Machine: {machine}");
    println!();
    println!("| scenario | figure | ratio | target | met |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {met} |",
            r.scenario, r.figure, r.ratio, r.target
        );
    }
    println!();
    println!("Load average at the end: {}", loadavg());
    anyhow::ensure!(
        all_ok,
        "stored and acknowledged events disagree (or errors)"
    );
    Ok(())
}
