//! Soak: steady load at half the measured maximum, recording RSS, latency and file size over
//! time. CI runs a few seconds of it; `INLET_SOAK_SECS=1800` is the long run of
//! RELIABILITY.md (`INLET_SOAK_RATE` fixes the rate in events/s instead of measuring,
//! `INLET_SOAK_CSV=FILE` writes the samples, `INLET_TEST_BIN` picks e.g. a release binary).

use crate::crash::env_u64;
use crate::support::*;
use serde_json::json;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Shared {
    stop: AtomicBool,
    acked: AtomicU64,
    refused: AtomicU64,
    /// Latencies (µs) since the last sample.
    lat: Mutex<Vec<u32>>,
}

/// Runs `clients` client threads; each sends one request per `gap` (or back to back when
/// `gap` is zero): one in four a bulk of 20, else a single event.
fn run_load(
    addr: std::net::SocketAddr,
    key: &str,
    clients: usize,
    gap: Duration,
    prefix: &str,
    shared: &Shared,
) {
    std::thread::scope(|s| {
        for t in 0..clients {
            s.spawn(move || {
                let mut c = Client::new(addr);
                let auth = format!("Bearer {key}");
                let mut next = Instant::now();
                for i in 0u64.. {
                    if shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("{prefix}-{t}-{i}");
                    let (path, body, n) = if i % 4 == 3 {
                        let events: Vec<_> = (0..20).map(|j| event(&format!("{id}-{j}"))).collect();
                        ("/s2s/events/bulk", json!({ "events": events }), 20)
                    } else {
                        ("/s2s/event", event(&id), 1)
                    };
                    let t0 = Instant::now();
                    let r = c
                        .post(
                            path,
                            &[("Authorization", &auth)],
                            body.to_string().as_bytes(),
                        )
                        .expect("request");
                    let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    if r.status == 200 {
                        shared.acked.fetch_add(n, Ordering::Relaxed);
                    } else {
                        shared.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.lat.lock().unwrap().push(us);
                    if !gap.is_zero() {
                        // Pacing: the next send time is scheduled, not awaited on a condition.
                        next += gap;
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                }
            });
        }
    });
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[test]
fn soak_at_half_the_maximum_levels_off() {
    let secs = env_u64("INLET_SOAK_SECS", 6);
    let clients = 4;
    let mut inlet = Inlet::start();
    let key = inlet.mint("default");
    let addr = inlet.addr;

    // Maximum: back-to-back requests for a while.
    let probe = Shared {
        stop: AtomicBool::new(false),
        acked: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        lat: Mutex::new(Vec::new()),
    };
    let probe_for = Duration::from_secs((secs / 10).clamp(2, 30));
    let max_rate = std::thread::scope(|s| {
        s.spawn(|| run_load(addr, &key, clients, Duration::ZERO, "max", &probe));
        let t0 = Instant::now();
        std::thread::sleep(probe_for);
        probe.stop.store(true, Ordering::SeqCst);
        probe.acked.load(Ordering::SeqCst) as f64 / t0.elapsed().as_secs_f64()
    });
    // Events per request average (3 singles + 1 bulk of 20) / 4 = 5.75.
    let rate = match env_u64("INLET_SOAK_RATE", 0) {
        0 => max_rate / 2.0,
        r => r as f64,
    };
    let requests_per_sec = rate / 5.75;
    let gap = Duration::from_secs_f64(clients as f64 / requests_per_sec.max(1.0));

    let shared = Shared {
        stop: AtomicBool::new(false),
        acked: AtomicU64::new(probe.acked.load(Ordering::SeqCst)),
        refused: AtomicU64::new(0),
        lat: Mutex::new(Vec::new()),
    };
    let interval = Duration::from_secs((secs / 30).max(1));
    let db_file = inlet.data().join("inlet.redb");
    let pid = inlet.pid();
    let mut samples: Vec<(f64, u64, u64, u64, u32, u32, u32)> = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| run_load(addr, &key, clients, gap, "soak", &shared));
        let t0 = Instant::now();
        let mut last_acked = shared.acked.load(Ordering::SeqCst);
        while t0.elapsed() < Duration::from_secs(secs) {
            // Sampling period: a measurement interval, not a wait for a condition.
            std::thread::sleep(interval);
            let mut lat = std::mem::take(&mut *shared.lat.lock().unwrap());
            lat.sort_unstable();
            let acked = shared.acked.load(Ordering::SeqCst);
            samples.push((
                t0.elapsed().as_secs_f64(),
                rss_kib(pid),
                std::fs::metadata(&db_file).map_or(0, |m| m.len()),
                acked - last_acked,
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                lat.last().copied().unwrap_or(0),
            ));
            last_acked = acked;
        }
        shared.stop.store(true, Ordering::SeqCst);
    });

    let mut csv = String::from("t_s,rss_kib,db_bytes,events_in_interval,p50_us,p99_us,max_us\n");
    for (t, rss, db, n, p50, p99, max) in &samples {
        csv.push_str(&format!("{t:.1},{rss},{db},{n},{p50},{p99},{max}\n"));
    }
    if let Ok(path) = std::env::var("INLET_SOAK_CSV") {
        std::fs::write(path, &csv).expect("csv");
    }
    let acked = shared.acked.load(Ordering::SeqCst);
    let refused = shared.refused.load(Ordering::SeqCst);
    let first = samples[samples.len() / 4].1;
    let last = samples.last().unwrap().1;
    let peak = samples.iter().map(|s| s.1).max().unwrap();
    let worst_p99 = samples.iter().map(|s| s.5).max().unwrap();
    eprintln!(
        "soak: {secs}s, max {max_rate:.0} ev/s, target {rate:.0} ev/s, acknowledged {acked}, refused {refused}, RSS {first} -> {last} KiB (peak {peak}), worst p99 {worst_p99} us\n{csv}"
    );
    assert_eq!(refused, 0, "no request refused at half the maximum");
    // Levels off: over the second half, RSS grows by at most 4 MiB + 10%, unless it is still
    // within what the two page caches (log and identity graph) may take on top of the start
    // (they fill for the first 10-20 s at this rate; the short CI run ends before that).
    let mid = samples[samples.len() / 2].1;
    let caches_kib =
        ((inlet::store::CACHE_BYTES + inlet::identity::graph::GRAPH_CACHE_BYTES) / 1024) as u64;
    let start = samples[0].1;
    assert!(
        last <= mid + mid / 10 + 4 * 1024 || last <= start + caches_kib + 16 * 1024,
        "RSS kept growing: {first} KiB at a quarter, {mid} KiB at half time, {last} KiB at the end (start {start} KiB, page caches {caches_kib} KiB)"
    );
    inlet.kill();
    let report = inlet::store::Store::open(inlet.data())
        .and_then(|s| inlet::ops::verify::with_graph(&inlet::identity::Identity::open(&s)))
        .expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        report.events.len() as u64,
        acked,
        "every acknowledged event stored once"
    );
}
