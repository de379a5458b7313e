//! "Acknowledged means durable, exactly once" across a SIGKILL and a graceful stop.

use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Sends events from `clients` threads until `stop`; returns the ids that got a 2xx and
/// the ids that were sent without an answer.
fn load(
    inlet: &Inlet,
    key: &str,
    clients: usize,
    stop: &AtomicBool,
    acked_count: &AtomicUsize,
) -> (Vec<String>, Vec<String>) {
    let acked = Mutex::new(Vec::new());
    let unanswered = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..clients {
            let (acked, unanswered) = (&acked, &unanswered);
            s.spawn(move || {
                let mut c = inlet.client();
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let id = format!("k{t}-{i}");
                    // Alternate single events and small bulks.
                    let (path, body) = if i % 4 == 3 {
                        let ids: Vec<String> = (0..5).map(|j| format!("{id}-{j}")).collect();
                        let events: Vec<_> = ids.iter().map(|i| event(i)).collect();
                        ("/s2s/events/bulk", serde_json::json!({ "events": events }))
                    } else {
                        ("/s2s/event", event(&id))
                    };
                    let auth = format!("Bearer {key}");
                    let sent_ids: Vec<String> = if path == "/s2s/event" {
                        vec![id.clone()]
                    } else {
                        (0..5).map(|j| format!("{id}-{j}")).collect()
                    };
                    match c.post(
                        path,
                        &[("Authorization", &auth)],
                        body.to_string().as_bytes(),
                    ) {
                        Ok(r) if r.status == 200 => {
                            acked_count.fetch_add(sent_ids.len(), Ordering::SeqCst);
                            acked.lock().unwrap().extend(sent_ids);
                        }
                        Ok(r) => panic!("unexpected {} {}", r.status, r.text()),
                        Err(_) => {
                            unanswered.lock().unwrap().extend(sent_ids);
                            break;
                        }
                    }
                }
            });
        }
    });
    (
        acked.into_inner().unwrap(),
        unanswered.into_inner().unwrap(),
    )
}

fn counts(events: &[serde_json::Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in events {
        *m.entry(e["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    m
}

#[test]
fn every_acknowledged_event_survives_sigkill_exactly_once() {
    let mut inlet = Inlet::start();
    let key = inlet.mint("default");
    let stop = AtomicBool::new(false);
    let acked_count = AtomicUsize::new(0);
    let (acked, unanswered) = std::thread::scope(|s| {
        let h = s.spawn(|| load(&inlet, &key, 8, &stop, &acked_count));
        wait_for("some acknowledged events", || {
            acked_count.load(Ordering::SeqCst) >= 500
        });
        // SIGKILL in the middle of the load.
        let pid = inlet.pid();
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        stop.store(true, Ordering::SeqCst);
        h.join().unwrap()
    });
    inlet.kill();
    inlet.restart();

    let events = inlet.export();
    let stored = counts(&events);
    for id in &acked {
        assert_eq!(
            stored.get(id),
            Some(&1),
            "acknowledged event {id} must be stored exactly once"
        );
    }
    assert!(stored.values().all(|n| *n == 1), "nothing stored twice");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "contiguous log"
    );

    // Clients resubmit everything that got no answer: still exactly once.
    let mut c = inlet.client();
    for id in unanswered.iter().chain(&acked) {
        let r = c.post_json("/s2s/event", &key, &event(id));
        assert_eq!(r.status, 200);
    }
    let after = counts(&inlet.export());
    let expected: HashSet<&String> = acked.iter().chain(&unanswered).collect();
    for id in expected {
        assert_eq!(after.get(id), Some(&1), "{id}");
    }
    assert!(after.values().all(|n| *n == 1));
    let used = parse_ndjson(&inlet.cli_ok(&["tenants", "list", "--json"]))[0]["used_this_month"]
        .as_u64()
        .unwrap();
    assert_eq!(
        used as usize,
        after.len(),
        "the quota counter equals the stored count"
    );
}

#[test]
fn sigterm_commits_in_flight_work_and_exits_zero() {
    let mut inlet = Inlet::start();
    let key = inlet.mint("default");
    let stop = AtomicBool::new(false);
    let acked_count = AtomicUsize::new(0);
    let (acked, _) = std::thread::scope(|s| {
        let h = s.spawn(|| load(&inlet, &key, 4, &stop, &acked_count));
        wait_for("some acknowledged events", || {
            acked_count.load(Ordering::SeqCst) >= 200
        });
        let pid = inlet.pid();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        stop.store(true, Ordering::SeqCst);
        h.join().unwrap()
    });
    let status = inlet.signal_and_wait_exited();
    assert!(status.success(), "exit status {status:?}");
    inlet.restart();
    let stored = counts(&inlet.export());
    for id in &acked {
        assert_eq!(stored.get(id), Some(&1), "{id}");
    }
}
