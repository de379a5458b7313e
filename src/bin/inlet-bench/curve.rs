//! `inlet-bench curve`: the cost curve. One inlet, one log, filled with bulk 1000 × 16 to
//! each point in turn; at each point a timed unique bulk run gives events/s, the server's
//! CPU per event (by thread), the share of ids the dedupe filter did not rule out and the
//! peak RSS so far. Then restarts at the largest point, and the PostgreSQL peer's bulk run
//! at its points.

use crate::ceiling::{self, Index};
use crate::cpu::{Meter, Used};
use crate::load::{self, Report, Workload};
use crate::postgres::{self, Peer, PgArgs};
use crate::suite::{
    PrecheckCounts, RssSampler, Scratch, Server, cli, inlet_next_to_me, loadavg, machine, say,
    signal, stored, workload,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The inlet binary (default: `inlet` next to this binary).
    #[arg(long)]
    pub inlet: Option<PathBuf>,
    /// Events stored at each measured point, ascending.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_000u64, 3_000_000, 10_000_000, 30_000_000])]
    pub points: Vec<u64>,
    /// Points at which the PostgreSQL peer runs its bulk workload.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_000u64, 10_000_000])]
    pub pg_points: Vec<u64>,
    /// Length of each timed run, in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Events appended by the storage ceiling run.
    #[arg(long, default_value_t = 300_000)]
    pub storage_events: u64,
    /// Where the databases go (default: the system temp dir). Must be on the disk under test.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub pg: PgArgs,
}

struct Point {
    stored: u64,
    fill_eps: f64,
    fill_cpu_us: f64,
    bulk: Report,
    /// The server's CPU in the timed bulk run, per event.
    cpu: Used,
    /// The share of its ids the dedupe filter of everything did not rule out.
    read_share: String,
    rss_mib: f64,
    load: String,
}

pub fn curve(a: &Args) -> anyhow::Result<()> {
    let inlet = a.inlet.clone().unwrap_or_else(inlet_next_to_me);
    anyhow::ensure!(inlet.is_file(), "{} not found", inlet.display());
    let mut points = a.points.clone();
    points.sort_unstable();
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = |w: Workload| -> Report { rt.block_on(load::run(w)) };
    let machine = machine();
    say(&machine);

    let scratch = Scratch::new(&base, "storage")?;
    let storage = ceiling::storage(&scratch.0, Index::None, 0, a.storage_events, 1000)?;
    drop(scratch);
    let storage_eps = storage.events_per_sec();
    say(format!("storage ceiling: {storage_eps:.0} events/s"));

    let data = Scratch::new(&base, "curve")?;
    let srv = Server::inlet(&inlet, &data.0)?;
    let rss = RssSampler::start(srv.pid());
    let key = cli(
        &inlet,
        &data.0,
        &["keys", "mint", "--app", "default", "--label", "bench"],
    )?
    .trim()
    .to_owned();
    let (mut filled, mut acked, mut errors) = (0u64, 0u64, 0u64);
    let mut rows = Vec::new();
    for (i, &point) in points.iter().enumerate() {
        // Fill with the prefill's id stream up to `point` stored (the timed runs count too).
        let started = Instant::now();
        let fill_cpu = Meter::start(srv.pid());
        let before = acked;
        while acked < point {
            let mut w = workload(srv.addr, &key, 1000, 16, 0.0);
            w.duration = None;
            w.requests = Some((point - acked).min(1_000_000).div_ceil(1000));
            w.seed = 10;
            w.first_unique = filled;
            let r = run(w);
            filled = r.unique_issued;
            acked += r.accepted;
            errors += r.errors();
            say(format!("filled to {acked}: {}", r.summary()));
            anyhow::ensure!(r.accepted > 0, "the fill stored nothing");
        }
        let fill_events = acked - before;
        let fill_eps = fill_events as f64 / started.elapsed().as_secs_f64();
        let fill_cpu_us = fill_cpu.stop(fill_events).server;
        let load = loadavg();
        let mut w = workload(srv.addr, &key, 1000, 16, a.seconds);
        w.seed = 100 + i as u64;
        let meter = Meter::start(srv.pid());
        let pre = PrecheckCounts::now(srv.addr);
        let bulk = run(w);
        let cpu = meter.stop(bulk.events_sent);
        let read_share = PrecheckCounts::read_share(pre, PrecheckCounts::now(srv.addr));
        say(format!("bulk unique at {acked}: {}", bulk.summary()));
        say(format!(
            "point {acked}: fill {fill_eps:.0} ev/s ({fill_cpu_us:.1} µs/ev), bulk {:.0} ev/s \
             ({:.1} µs/ev: {}; filter maybes {read_share}), peak RSS {:.0} MiB, data dir \
             {:.1} GiB, load {load}",
            bulk.events_per_sec(),
            cpu.server,
            cpu.split(),
            rss.max_mib(),
            dir_bytes(&data.0) as f64 / (1u64 << 30) as f64
        ));
        errors += bulk.errors();
        rows.push(Point {
            stored: acked,
            fill_eps,
            fill_cpu_us,
            cpu,
            read_share,
            rss_mib: rss.max_mib(),
            load: format!("{load} → {}", loadavg()),
            bulk,
        });
        acked += rows.last().map_or(0, |p| p.bulk.accepted);
    }
    let counted = stored(&inlet, &data.0)?;
    let mut ok = counted == acked && errors == 0;
    say(format!("stored {counted}, acknowledged {acked}"));

    // Restarts at the largest point: clean, then SIGKILL 2 s into a bulk load.
    srv.stop()?;
    let srv = Server::inlet(&inlet, &data.0)?;
    let clean = srv.ready_after;
    let rss_after = RssSampler::start(srv.pid());
    let pid = srv.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let _ = signal(pid, "KILL");
    });
    let mut w = workload(srv.addr, &key, 1000, 16, 4.0);
    w.seed = 99;
    let killed = run(w);
    killer.join().expect("killer thread");
    let mut srv = srv;
    let _ = srv.child.wait();
    let srv = Server::inlet(&inlet, &data.0)?;
    let after_kill = srv.ready_after;
    let counted_after = stored(&inlet, &data.0)?;
    ok &= counted_after >= acked + killed.accepted;
    srv.stop()?;
    let rss_max = rss.max_mib().max(rss_after.max_mib());
    let disk = dir_bytes(&data.0);
    drop(data);

    let mut pg_points = a.pg_points.clone();
    pg_points.sort_unstable();
    let peer = if pg_points.is_empty() {
        Peer::Skipped("no --pg-points".into())
    } else {
        postgres::run(&a.pg, &pg_points, a.seconds, &base, "bulk")?
    };

    println!("Machine: {machine}");
    println!();
    println!(
        "| stored | filling to here, ev/s (server CPU µs/ev) | bulk unique, ev/s | × storage | \
         × Postgres | server CPU µs/ev (by thread) | filter maybes, share of ids | p99 ms | \
         peak RSS so far, MiB | load avg |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for p in &rows {
        let eps = p.bulk.events_per_sec();
        let near = peer
            .at("bulk", p.stored)
            .filter(|r| (r.stored as f64 / p.stored as f64 - 1.0).abs() < 0.5);
        println!(
            "| {} | {} | {eps:.0} | {:.2} | {} | {:.1} ({}) | {} | {:.0} | {:.0} | {} |",
            p.stored,
            if p.fill_eps > 0.0 {
                format!("{:.0} ({:.1})", p.fill_eps, p.fill_cpu_us)
            } else {
                "–".into()
            },
            eps / storage_eps,
            near.map_or(String::new(), |r| format!("{:.2}", eps / r.events_per_sec)),
            p.cpu.server,
            p.cpu.split(),
            p.read_share,
            p.bulk.quantile_ms(0.99),
            p.rss_mib,
            p.load
        );
    }
    println!();
    println!("Storage ceiling: {storage_eps:.0} ev/s (raw redb appends, commits of 1000).");
    match &peer {
        Peer::Ran(runs) => {
            for r in runs {
                println!(
                    "PostgreSQL {} at {} rows: {:.0} ev/s (latency avg {:.1} ms; server CPU {:.1} µs/event)",
                    r.workload, r.stored, r.events_per_sec, r.latency_ms, r.cpu_us
                );
            }
        }
        Peer::Skipped(why) => println!("PostgreSQL: skipped ({why})."),
    }
    println!(
        "At {acked}: ready {:.3} s after a clean restart, {:.3} s after SIGKILL under load; \
         peak RSS over the whole run {rss_max:.0} MiB; data dir {:.1} GiB; stored = \
         acknowledged, no non-2xx: {}.",
        clean.as_secs_f64(),
        after_kill.as_secs_f64(),
        disk as f64 / (1u64 << 30) as f64,
        if ok { "yes" } else { "NO" }
    );
    anyhow::ensure!(ok, "stored and acknowledged events disagree (or errors)");
    Ok(())
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
