//! The request side of the native endpoints, in-process: decode → validate → the key's
//! allow-list → encode, on the bench's own event bodies, timed in CPU time of this thread
//! (not wall time), so that a busy shared machine changes the figures little.

use crate::load::{event_id, event_json};
use inlet::dialect::reflect::accepted as single_accepted;
use inlet::ingest::{ResultReasons, reflect_bulk_prepare, reflect_single_prepare};
use inlet::store::read::KeyInfo;
use inlet::store::writer::Outcome;
use serde_json::{Value, json};
use std::hint::black_box;

/// The figures of one run, in ns of thread CPU per event, one per round.
#[derive(Default)]
pub struct Figures {
    /// Decode → validate → encode.
    pub bulk: Vec<f64>,
    pub single: Vec<f64>,
    /// The answer once every event is accepted, as the server writes it ...
    pub bulk_answer: Vec<f64>,
    pub single_answer: Vec<f64>,
    /// ... and built as a `serde_json::Value` tree, as the server did before (for comparison).
    pub bulk_answer_tree: Vec<f64>,
    pub single_answer_tree: Vec<f64>,
}

impl Figures {
    pub fn summary(&self) -> String {
        [
            ("bulk of 1000, decode → validate → encode", &self.bulk),
            ("bulk of 1000, answer", &self.bulk_answer),
            (
                "bulk of 1000, answer as a Value tree",
                &self.bulk_answer_tree,
            ),
            ("single, decode → validate → encode", &self.single),
            ("single, answer", &self.single_answer),
            ("single, answer as a Value tree", &self.single_answer_tree),
        ]
        .iter()
        .map(|(what, rounds)| format!("{what:<42} {}", stats(rounds)))
        .collect::<Vec<_>>()
        .join("\n")
    }
}

/// Builds the bulk answer as a `Value` tree and serialises it (the former way).
fn tree_answer(ids: &[String], audit_key: &str) -> Vec<u8> {
    let results: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "event_id": id, "status": "accepted" }))
        .collect();
    let mut body = json!({
        "accepted": ids.len(),
        "duplicates": 0,
        "rejected": 0,
        "results": results,
    });
    body["audit_key"] = Value::String(audit_key.to_owned());
    serde_json::to_vec(&body).expect("a Value serialises")
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
pub(crate) fn thread_cpu_ns() -> u64 {
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

    let mut figures = Figures::default();
    let per = |start: u64, n: u64| (thread_cpu_ns() - start) as f64 / n as f64;
    for _ in 0..rounds {
        // Decode → validate → encode, the batch freed in the loop (as the old bench did).
        let requests = events.div_ceil(BULK);
        let start = thread_cpu_ns();
        for r in 0..requests {
            let body = bulks[r as usize % bulks.len()].as_bytes();
            let batch = reflect_bulk_prepare(&key, RECEIVED_AT_MS, body, audit_key)
                .expect("the bench's bulk decodes");
            assert_eq!(batch.events().len(), BULK as usize);
            black_box(batch);
        }
        figures.bulk.push(per(start, requests * BULK));

        // The answers, from batches prepared untimed.
        let accepted: Vec<Outcome> = (0..BULK).map(|seq| Outcome::Accepted { seq }).collect();
        let mut parts: Vec<_> = (0..requests)
            .map(|r| {
                let body = bulks[r as usize % bulks.len()].as_bytes();
                let (slots, events) = reflect_bulk_prepare(&key, RECEIVED_AT_MS, body, audit_key)
                    .expect("the bench's bulk decodes")
                    .into_parts();
                let ids: Vec<String> = events.iter().map(|p| p.event_id().to_owned()).collect();
                (Some(slots), ids)
            })
            .collect();
        let start = thread_cpu_ns();
        for (slots, _) in &mut parts {
            let slots = slots.take().expect("answered once");
            black_box(slots.answer(&accepted, audit_key, ResultReasons::Reflect, |_, _| {}));
        }
        figures.bulk_answer.push(per(start, requests * BULK));
        let start = thread_cpu_ns();
        for (_, ids) in &parts {
            black_box(tree_answer(ids, audit_key));
        }
        figures.bulk_answer_tree.push(per(start, requests * BULK));

        let start = thread_cpu_ns();
        for n in 0..events {
            let body = singles[n as usize % singles.len()].as_bytes();
            let prepared = reflect_single_prepare(&key, RECEIVED_AT_MS, body)
                .expect("the bench's event decodes");
            black_box(prepared);
        }
        figures.single.push(per(start, events));

        let replies: Vec<(String, String)> = singles
            .iter()
            .map(|body| {
                let prepared = reflect_single_prepare(&key, RECEIVED_AT_MS, body.as_bytes())
                    .expect("the bench's event decodes");
                (prepared.pending.event_id().to_owned(), prepared.audit_key)
            })
            .collect();
        let start = thread_cpu_ns();
        for n in 0..events {
            let (event_id, audit_key) = &replies[n as usize % replies.len()];
            black_box(single_accepted(event_id, audit_key));
        }
        figures.single_answer.push(per(start, events));
        let start = thread_cpu_ns();
        for n in 0..events {
            let (event_id, audit_key) = &replies[n as usize % replies.len()];
            let body = json!({ "accepted": 1, "event_id": event_id, "audit_key": audit_key });
            black_box(serde_json::to_vec(&body).expect("a Value serialises"));
        }
        figures.single_answer_tree.push(per(start, events));
    }
    figures
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tiny_run_reports_every_figure() {
        let f = super::run(1000, 1);
        let summary = f.summary();
        assert_eq!(summary.lines().count(), 6, "{summary}");
        for rounds in [&f.bulk, &f.bulk_answer, &f.single, &f.single_answer] {
            assert!(rounds.len() == 1 && rounds[0] > 0.0, "{summary}");
        }
    }
}
