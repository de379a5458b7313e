//! The request side of the native endpoints, in-process: decode → validate → the key's
//! allow-list → encode, on the bench's own event bodies, timed in CPU time of this thread
//! (not wall time), so that a busy shared machine changes the figures little.

use crate::load::{event_id, event_json};
use inlet::ingest::{reflect_bulk_prepare, reflect_single_prepare};
use inlet::store::read::KeyInfo;
use std::hint::black_box;

/// The figures of one run, in ns of thread CPU per event.
pub struct Figures {
    pub bulk: Vec<f64>,
    pub single: Vec<f64>,
}

impl Figures {
    pub fn summary(&self) -> String {
        format!(
            "bulk of 1000 (/s2s/events/bulk): {}\nsingle (/s2s/event):            {}",
            stats(&self.bulk),
            stats(&self.single)
        )
    }
}

/// "min X ns/event, median Y" over the rounds.
fn stats(rounds: &[f64]) -> String {
    let mut sorted = rounds.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "min {:.0} ns/event, median {:.0} ns/event ({} rounds)",
        sorted[0],
        sorted[sorted.len() / 2],
        sorted.len()
    )
}

/// CPU time this thread has used.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant libc knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn key() -> KeyInfo {
    KeyInfo {
        key_id: 1,
        app_id: 1,
        app: "default".into(),
        tenant_id: 1,
        tenant: "default".into(),
        allowed_events: Vec::new(),
        rate_limit: None,
    }
}

/// Runs `rounds` rounds of `events` events each through both endpoints' request side.
pub fn run(events: u64, rounds: usize) -> Figures {
    const BULK: u64 = 1000;
    const RECEIVED_AT_MS: u64 = 1_764_000_000_000;
    let key = key();
    let audit_key = "s2s/bulk/2025-11-24/0123456789abcdef0123456789abcdef.json";
    // Distinct bodies (unique ids), reused round after round: 20 bulks, 2000 singles.
    let bulks: Vec<String> = (0..20u64)
        .map(|b| {
            let mut body = String::from(r#"{"events":["#);
            for i in 0..BULK {
                if i > 0 {
                    body.push(',');
                }
                let n = b * BULK + i;
                event_json(&mut body, &event_id(1, n), n);
            }
            body.push_str("]}");
            body
        })
        .collect();
    let singles: Vec<String> = (0..2000u64)
        .map(|n| {
            let mut body = String::new();
            event_json(&mut body, &event_id(2, n), n);
            body
        })
        .collect();

    let mut figures = Figures {
        bulk: Vec::new(),
        single: Vec::new(),
    };
    for _ in 0..rounds {
        let requests = events.div_ceil(BULK);
        let start = thread_cpu_ns();
        for r in 0..requests {
            let body = bulks[r as usize % bulks.len()].as_bytes();
            let batch = reflect_bulk_prepare(&key, RECEIVED_AT_MS, body, audit_key)
                .expect("the bench's bulk decodes");
            assert_eq!(batch.events().len(), BULK as usize);
            black_box(batch);
        }
        figures
            .bulk
            .push((thread_cpu_ns() - start) as f64 / (requests * BULK) as f64);

        let start = thread_cpu_ns();
        for n in 0..events {
            let body = singles[n as usize % singles.len()].as_bytes();
            let prepared = reflect_single_prepare(&key, RECEIVED_AT_MS, body)
                .expect("the bench's event decodes");
            black_box(prepared);
        }
        figures
            .single
            .push((thread_cpu_ns() - start) as f64 / events as f64);
    }
    figures
}
