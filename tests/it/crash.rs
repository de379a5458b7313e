//! Crash campaign: cycles of (load from several clients → SIGKILL at a random moment →
//! restart → verify), on one data dir that keeps growing.
//!
//! After every kill the database is opened directly and checked ([`inlet::store::Store::verify`]:
//! contiguous seqs, one dedupe entry per event, usage counters equal to stored counts), and
//! every event that ever got a 2xx must be stored exactly once. Clients resubmit everything
//! that got no answer (or a 503) in the next cycle, plus a sample of acknowledged events, and
//! those must come back 200 accepted/duplicate without ever being stored twice.
//!
//! `INLET_CRASH_CYCLES` (default 20) and `INLET_CRASH_SEED` (default: from the clock, printed)
//! make it a long run; `INLET_CAMPAIGN_REPORT=FILE` appends the figures to FILE. See
//! RELIABILITY.md.

use crate::support::*;
use inlet::store::Store;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A small deterministic generator (splitmix64), so a failing seed can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The event sent under `id`: always the same body, so a resubmission is identical.
pub fn campaign_event(id: &str) -> Value {
    json!({
        "event_id": id,
        "event_name": "purchase",
        "event_ts_ms": 1_735_999_999_000u64,
        "install_uuid": "8f2a1c0e94d7423b8b53af7c9e21d630",
        "revenue": 1.5,
        "currency": "EUR",
        "props": {"id_again": id},
    })
}

/// What the clients of one cycle saw.
#[derive(Default)]
pub struct Seen {
    /// Ids answered 200 (accepted or duplicate).
    pub acked: Vec<String>,
    /// Ids sent without an answer, or answered 503: to be resubmitted.
    pub unanswered: Vec<String>,
    pub requests: u64,
    pub duplicates_answered: u64,
}

/// One cycle's load.
pub struct Load<'a> {
    pub addr: std::net::SocketAddr,
    pub key: &'a str,
    pub clients: usize,
    /// Fresh ids are `{prefix}-{thread}-{n}`.
    pub prefix: &'a str,
    /// Ids to resubmit first.
    pub plan: &'a [String],
    pub seed: u64,
}

/// Sends the load's plan and then fresh events from its client threads until a request
/// fails (the server died) or `stop` is set.
pub fn drive(load: &Load, stop: &AtomicBool, acked_counter: &AtomicU64) -> Seen {
    let Load {
        addr,
        key,
        clients,
        prefix,
        plan,
        seed: rng_seed,
    } = *load;
    let seen = Mutex::new(Seen::default());
    std::thread::scope(|s| {
        for t in 0..clients {
            let seen = &seen;
            let mine: Vec<String> = plan.iter().skip(t).step_by(clients).cloned().collect();
            s.spawn(move || {
                let mut rng = Rng::new(rng_seed ^ (t as u64 + 1).wrapping_mul(0x1234_5678_9abc));
                let mut c = Client::new(addr);
                let auth = format!("Bearer {key}");
                let mut resubmit = mine.into_iter().peekable();
                let mut n = 0u64;
                let mut local = Seen::default();
                while !stop.load(Ordering::SeqCst) {
                    let batch = if rng.below(4) == 0 {
                        1 + rng.below(20) as usize
                    } else {
                        1
                    };
                    let mut ids = Vec::with_capacity(batch);
                    while ids.len() < batch {
                        match resubmit.next() {
                            Some(id) => ids.push(id),
                            None => {
                                ids.push(format!("{prefix}-{t}-{n}"));
                                n += 1;
                            }
                        }
                    }
                    let single = ids.len() == 1 && rng.below(2) == 0;
                    let (path, body) = if single {
                        ("/s2s/event", campaign_event(&ids[0]))
                    } else {
                        let events: Vec<Value> = ids.iter().map(|i| campaign_event(i)).collect();
                        ("/s2s/events/bulk", json!({ "events": events }))
                    };
                    local.requests += 1;
                    let resp = c.post(
                        path,
                        &[
                            ("Authorization", &auth),
                            ("Content-Type", "application/json"),
                        ],
                        body.to_string().as_bytes(),
                    );
                    match resp {
                        Ok(r) if r.status == 200 => {
                            let b = r.json();
                            if single {
                                assert!(
                                    b["accepted"] == 1 || b["duplicate"] == true,
                                    "single answered {b}"
                                );
                                if b["duplicate"] == true {
                                    local.duplicates_answered += 1;
                                }
                            } else {
                                let results = b["results"].as_array().expect("results");
                                assert_eq!(results.len(), ids.len(), "{b}");
                                for (res, id) in results.iter().zip(&ids) {
                                    assert_eq!(res["event_id"], id.as_str(), "{b}");
                                    match res["status"].as_str() {
                                        Some("accepted") => {}
                                        Some("duplicate") => local.duplicates_answered += 1,
                                        other => panic!("bulk event {id} got {other:?}: {b}"),
                                    }
                                }
                            }
                            acked_counter.fetch_add(ids.len() as u64, Ordering::Relaxed);
                            local.acked.extend(ids);
                        }
                        Ok(r) if r.status == 503 => {
                            local.unanswered.extend(ids);
                        }
                        Ok(r) => panic!("unexpected {} {}", r.status, r.text()),
                        Err(_) => {
                            local.unanswered.extend(ids);
                            break;
                        }
                    }
                }
                // Whatever was planned but not sent is still owed.
                local.unanswered.extend(resubmit);
                let mut all = seen.lock().unwrap();
                all.acked.extend(local.acked);
                all.unanswered.extend(local.unanswered);
                all.requests += local.requests;
                all.duplicates_answered += local.duplicates_answered;
            });
        }
    });
    seen.into_inner().unwrap()
}

/// The running tally of a campaign.
#[derive(Default, Debug)]
pub struct Tally {
    pub cycles: u64,
    /// Distinct event ids that got a 2xx.
    pub acked: HashSet<String>,
    /// Every id ever sent.
    pub sent: HashSet<String>,
    /// Sent, no 2xx yet.
    pub owed: HashSet<String>,
    pub requests: u64,
    pub resubmitted: u64,
    pub duplicates_answered: u64,
    pub stored: u64,
}

/// Checks the database in `dir` (no server running) against what clients were told.
/// Returns the number of stored events.
pub fn verify_dir(dir: &std::path::Path, tally: &Tally) -> u64 {
    let store = Store::open(dir).expect("the database opens after the crash");
    let report = store.verify().expect("verify");
    assert!(
        report.problems.is_empty(),
        "invariants broken:\n{}",
        report.problems.join("\n")
    );
    let mut stored: HashMap<&str, u64> = HashMap::new();
    for (_, app, id) in &report.events {
        if app == "default" {
            *stored.entry(id.as_str()).or_default() += 1;
        }
    }
    let doubled: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");
    let lost: Vec<_> = tally
        .acked
        .iter()
        .filter(|id| !stored.contains_key(id.as_str()))
        .take(10)
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let phantom: Vec<_> = stored
        .keys()
        .filter(|id| !tally.sent.contains(**id))
        .take(10)
        .collect();
    assert!(phantom.is_empty(), "stored but never sent: {phantom:?}");
    report.events.len() as u64
}

pub fn campaign(cycles: u64, seed: u64) -> Tally {
    let clients = 4;
    let mut inlet = Inlet::start();
    let key = inlet.mint("default");
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let started = Instant::now();
    for cycle in 0..cycles {
        // Everything owed, plus a sample of acknowledged ids, is resubmitted first.
        let mut plan: Vec<String> = tally.owed.iter().cloned().collect();
        plan.sort();
        let mut acked_sample: Vec<&String> = tally.acked.iter().take(20).collect();
        acked_sample.sort();
        plan.extend(acked_sample.into_iter().cloned());
        tally.resubmitted += plan.len() as u64;
        let stop = AtomicBool::new(false);
        let acked_now = AtomicU64::new(0);
        // Kill after 0..400 ms of load; one cycle in 8 waits for at least 50 acknowledged
        // events first, so long-running load is killed too.
        let delay = Duration::from_millis(rng.below(400));
        let wait_for_acks = rng.below(8) == 0;
        let load_seed = rng.next();
        let addr = inlet.addr;
        let seen = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let load = Load {
                    addr,
                    key: &key,
                    clients,
                    prefix: &format!("c{cycle}"),
                    plan: &plan,
                    seed: load_seed,
                };
                drive(&load, &stop, &acked_now)
            });
            let t0 = Instant::now();
            if wait_for_acks {
                wait_for("50 acknowledged events", || {
                    acked_now.load(Ordering::Relaxed) >= 50
                });
            }
            // The kill moment is chosen, not awaited: nothing becomes true here.
            std::thread::sleep(delay.saturating_sub(t0.elapsed()));
            inlet.kill();
            stop.store(true, Ordering::SeqCst);
            h.join().expect("clients")
        });
        tally.requests += seen.requests;
        tally.duplicates_answered += seen.duplicates_answered;
        for id in plan.iter().chain(&seen.unanswered).chain(&seen.acked) {
            tally.sent.insert(id.clone());
        }
        for id in seen.acked {
            tally.owed.remove(&id);
            tally.acked.insert(id);
        }
        for id in seen.unanswered {
            if !tally.acked.contains(&id) {
                tally.owed.insert(id);
            }
        }
        tally.stored = verify_dir(inlet.data(), &tally);
        tally.cycles += 1;
        if (cycle + 1) % 25 == 0 {
            eprintln!(
                "crash campaign: cycle {} acked {} stored {} owed {} ({:?})",
                cycle + 1,
                tally.acked.len(),
                tally.stored,
                tally.owed.len(),
                started.elapsed()
            );
        }
        inlet.restart();
    }
    // Settle: resubmit what is still owed on a live server, then check the final state with
    // the server's own tools (export through the control socket, tenants list).
    let owed: Vec<String> = tally.owed.iter().cloned().collect();
    let mut c = inlet.client();
    for id in &owed {
        let r = c.post_json("/s2s/event", &key, &campaign_event(id));
        assert_eq!(r.status, 200, "{}", r.text());
        tally.acked.insert(id.clone());
    }
    tally.owed.clear();
    let exported = inlet.export();
    let mut ids = HashSet::new();
    for (i, e) in exported.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1), "contiguous seqs");
        assert!(
            ids.insert(e["event_id"].as_str().unwrap().to_owned()),
            "doubled {e}"
        );
    }
    for id in &tally.acked {
        assert!(ids.contains(id), "acknowledged {id} lost");
    }
    let used = parse_ndjson(&inlet.cli_ok(&["tenants", "list", "--json"]))[0]["used_this_month"]
        .as_u64()
        .unwrap();
    assert_eq!(used, exported.len() as u64, "quota counter = stored");
    tally.stored = exported.len() as u64;
    let line = format!(
        "crash campaign: seed {seed} cycles {} requests {} acknowledged {} stored {} lost 0 doubled 0 resubmitted {} duplicates-answered {} in {:?}",
        tally.cycles,
        tally.requests,
        tally.acked.len(),
        tally.stored,
        tally.resubmitted,
        tally.duplicates_answered,
        started.elapsed()
    );
    crate::support::report_campaign(&line);
    tally
}

pub fn seed() -> u64 {
    env_u64(
        "INLET_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    )
}

#[test]
fn crash_campaign() {
    let cycles = env_u64("INLET_CRASH_CYCLES", 20);
    let seed = seed();
    eprintln!("crash campaign: {cycles} cycles, INLET_CRASH_SEED={seed}");
    let tally = campaign(cycles, seed);
    assert_eq!(tally.cycles, cycles);
    assert!(
        tally.acked.len() > cycles as usize,
        "the load must get events acknowledged"
    );
}
