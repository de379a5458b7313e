//! The live tail (`GET /admin/api/tail`, Server-Sent Events) and health per app and key,
//! against a running server, through the native and GameRebellion dialects.

use crate::admin::Admin;
use crate::support::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An open tail: what arrived so far, read by a thread.
struct Tail {
    stream: TcpStream,
    seen: Arc<Mutex<String>>,
}

impl Tail {
    fn open(inlet: &Inlet, admin: &Admin, query: &str) -> (u16, Tail) {
        let mut stream = TcpStream::connect(inlet.addr).unwrap();
        write!(
            stream,
            "GET /admin/api/tail{query} HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nAccept: text/event-stream\r\n\r\n",
            admin.cookie
        )
        .unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let (mut r, s) = (stream.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let tail = Tail { stream, seen };
        wait_for("the tail's head", || tail.text().contains("\r\n\r\n"));
        let status = tail.text()[9..12].parse().unwrap();
        (status, tail)
    }

    fn text(&self) -> String {
        self.seen.lock().unwrap().clone()
    }

    /// The `data:` records so far.
    fn records(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    }

    /// Waits (at most a second) for a record with this event id.
    fn within_a_second(&self, event_id: &str) -> Value {
        let end = Instant::now() + Duration::from_secs(1);
        loop {
            if let Some(r) = self
                .records()
                .into_iter()
                .find(|r| r["event_id"] == event_id)
            {
                return r;
            }
            assert!(
                Instant::now() < end,
                "{event_id} not in the tail within a second:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn subscribers(inlet: &Inlet) -> u64 {
    let text = inlet.client().get("/metrics").unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix("inlet_tail_subscribers "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn gr(c: &mut Client, path: &str, key: &str, body: &Value) -> Resp {
    c.post(
        path,
        &[("X-API-Key", key), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap()
}

#[test]
fn the_tail_pushes_events_within_a_second_filtered_with_rejections_and_reasons() {
    let inlet = Inlet::start_with(&["--max-tails", "2"]);
    let mut admin = Admin::setup(&inlet);
    let key = inlet.mint("default");
    let (status, all) = Tail::open(&inlet, &admin, "");
    assert_eq!(status, 200, "{}", all.text());
    assert!(
        all.text()
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream")
    );
    let (status, rejected) = Tail::open(&inlet, &admin, "?outcome=rejected&source=reflect");
    assert_eq!(status, 200);
    wait_for("two subscribers", || subscribers(&inlet) == 2);
    // A third is refused, with its reason.
    let (status, third) = Tail::open(&inlet, &admin, "");
    assert_eq!(status, 429, "{}", third.text());
    assert!(third.text().contains("too_many_tails"));

    let mut c = inlet.client();
    assert_eq!(c.post_json("/s2s/event", &key, &event("t1")).status, 200);
    let r = all.within_a_second("t1");
    assert_eq!(
        (
            r["outcome"].as_str(),
            r["app"].as_str(),
            r["source"].as_str()
        ),
        (Some("accepted"), Some("default"), Some("reflect"))
    );
    assert_eq!(r["event"], "purchase");
    assert_eq!(r["key"], 1);
    c.post_json("/s2s/event", &key, &event("t1"));
    let mut bad = event("t2");
    bad["event_ts_ms"] = json!("not a time");
    assert_eq!(c.post_json("/s2s/event", &key, &bad).status, 400);
    // Native bulk: one accepted, one rejected.
    let bulk = json!({ "events": [event("t3"), { "event_id": "t4" }] });
    c.post_json("/s2s/events/bulk", &key, &bulk);
    let r4 = rejected.within_a_second("t4");
    assert_eq!(r4["outcome"], "rejected");
    assert!(r4["reason"].as_str().is_some_and(|r| !r.is_empty()), "{r4}");
    // GameRebellion, single and batch.
    let r = gr(
        &mut c,
        "/api/v1/event",
        &key,
        &json!({ "event_type": "level_up", "event_id": "g1" }),
    );
    assert!(r.status < 300, "{}", r.text());
    gr(
        &mut c,
        "/api/v1/events",
        &key,
        &json!({ "events": [{ "event_type": "level_up", "event_id": "g2" }] }),
    );
    let g = all.within_a_second("g2");
    assert_eq!(
        (g["source"].as_str(), g["event"].as_str()),
        (Some("gamerebellion"), Some("level_up"))
    );
    all.within_a_second("g1");
    all.within_a_second("t3");
    // The filtered tail saw only native rejections.
    let recs = rejected.records();
    assert!(
        recs.iter()
            .all(|r| r["outcome"] == "rejected" && r["source"] == "reflect"),
        "{recs:?}"
    );
    assert!(
        all.records()
            .iter()
            .any(|r| r["outcome"] == "duplicate" && r["event_id"] == "t1")
    );
    assert!(
        all.records()
            .iter()
            .any(|r| r["outcome"] == "rejected" && r["reason"].is_string())
    );
    // A dry run is not in the tail.
    let r = c
        .post(
            "/s2s/event",
            &[
                ("Authorization", &format!("Bearer {key}")),
                ("X-Inlet-Dry-Run", "1"),
            ],
            event("dry1").to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    c.post_json("/s2s/event", &key, &event("after-dry"));
    all.within_a_second("after-dry");
    assert!(!all.text().contains("dry1"));

    // A closed tab releases its subscriber.
    drop(rejected.stream.shutdown(std::net::Shutdown::Both));
    drop(rejected);
    wait_for("one subscriber", || subscribers(&inlet) == 1);
    let (status, again) = Tail::open(&inlet, &admin, "?app=default&event=purchase");
    assert_eq!(status, 200);
    // A bad filter is a 400 with a reason.
    let (status, bad) = Tail::open(&inlet, &admin, "?outcome=maybe");
    assert_eq!(status, 400, "{}", bad.text());
    drop(again);
    drop(all);

    // Health: per app and key, and in /metrics.
    let h = admin.get("/admin/api/health").json();
    let app = &h["apps"][0];
    assert_eq!(app["name"], "default");
    assert!(app["accepted"].as_u64().unwrap() >= 4, "{h}");
    assert!(app["duplicate"].as_u64().unwrap() >= 1, "{h}");
    assert!(app["events_last_hour"].as_u64().unwrap() >= 7, "{h}");
    assert!(
        app["rejected"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
            >= 2,
        "{h}"
    );
    assert!(app["last_event_ms"].as_u64().unwrap() > now_ms() - 60_000);
    assert_eq!(h["keys"][0]["key"], "1");
    let metrics = inlet.client().get("/metrics").unwrap().text();
    assert!(
        metrics.contains("inlet_app_last_event_timestamp_seconds{app=\"default\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("inlet_key_last_event_timestamp_seconds{key=\"1\",app=\"default\"}"),
        "{metrics}"
    );
    // Per key: outcomes (rejections by reason) and the current minute, as the panel shows.
    let value = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line}: {metrics}"))
    };
    let keyed = |outcome: &str, reason: &str| {
        format!(
            "inlet_key_events_total{{key=\"1\",app=\"default\",outcome=\"{outcome}\",reason=\"{reason}\"}} "
        )
    };
    assert_eq!(
        value(&keyed("accepted", "")),
        h["keys"][0]["health"]["accepted"].as_u64().unwrap()
    );
    assert!(value(&keyed("duplicate", "")) >= 1);
    let reasons = h["keys"][0]["health"]["rejected"].as_object().unwrap();
    assert!(!reasons.is_empty(), "{h}");
    for (reason, n) in reasons {
        assert_eq!(value(&keyed("rejected", reason)), n.as_u64().unwrap());
    }
    assert!(value("inlet_key_events_this_minute{key=\"1\",app=\"default\"} ") <= 100);
    assert!(value("inlet_app_events_this_minute{app=\"default\"} ") <= 100);
    assert!(!metrics.contains(&key));
}

#[test]
fn the_tail_needs_a_session() {
    let inlet = Inlet::start();
    let r = inlet.client().get("/admin/api/tail").unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(subscribers(&inlet), 0);
}
