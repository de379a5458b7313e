//! The live tail: what ingest decided, pushed to whoever watches (`GET /admin/api/tail`, as
//! Server-Sent Events).
//!
//! Free when nobody watches: ingest asks [`Tail::watched`] (one atomic load) and builds no
//! record otherwise. Bounded when someone does: records go into a `broadcast` channel of
//! fixed capacity, one message per request; a subscriber that falls behind loses the oldest
//! messages and is told how many (`event: lagged`), ingest never waits for it. Each
//! subscriber is a task that ends, releasing its receiver, as soon as its response body is
//! dropped (the client went away), the server shuts down, or the tail closes.

use crate::http::Body;
use bytes::Bytes;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// Messages (requests) kept for a slow subscriber before it lags.
const CAPACITY: usize = 1024;
/// A comment line this often, so that proxies do not close an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event as the tail shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub at_ms: u64,
    /// `-` when the request was refused before a key or signature named an app.
    pub app: String,
    /// The key's id (0: a signed request without a key); absent before authentication.
    pub key: Option<u32>,
    pub source: &'static str,
    /// The event name, when the event got as far as validation.
    pub event: Option<String>,
    pub event_id: Option<String>,
    /// The stored event's seq (accepted events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `accepted`, `duplicate` or `rejected`.
    pub outcome: &'static str,
    /// The rejection's reason tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a subscriber asked to see; every field set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub app: Option<String>,
    pub key: Option<u32>,
    pub source: Option<String>,
    pub event: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub event_id: Option<String>,
    pub install_uuid: Option<String>,
    pub user_id: Option<String>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        self.app.as_ref().is_none_or(|a| *a == r.app)
            && self.key.is_none_or(|k| Some(k) == r.key)
            && self.source.as_ref().is_none_or(|s| s == r.source)
            && self
                .event
                .as_ref()
                .is_none_or(|e| r.event.as_ref() == Some(e))
            && self.outcome.as_ref().is_none_or(|o| o == r.outcome)
            && self
                .reason
                .as_ref()
                .is_none_or(|x| r.reason.as_ref() == Some(x))
            && same(&self.event_id, &r.event_id)
            && same(&self.install_uuid, &r.install_uuid)
            && same(&self.user_id, &r.user_id)
    }
}

/// A filter's value, when set, equals the record's.
fn same(want: &Option<String>, have: &Option<String>) -> bool {
    want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max` tails are open already.
    Full { max: usize },
    /// The server is shutting down.
    Closed,
}

/// The tail's hub, in the shared state.
pub struct Tail {
    tx: broadcast::Sender<Arc<Vec<Record>>>,
    subscribers: Arc<AtomicUsize>,
    max: usize,
    closed: watch::Sender<bool>,
    keep_alive: Duration,
}

impl Tail {
    pub fn new(max: usize) -> Tail {
        Tail::with_keep_alive(max, KEEP_ALIVE)
    }

    pub fn with_keep_alive(max: usize, keep_alive: Duration) -> Tail {
        Tail {
            tx: broadcast::channel(CAPACITY).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
            max,
            closed: watch::channel(false).0,
            keep_alive,
        }
    }

    /// Whether anyone watches: ingest builds records only then.
    #[inline]
    pub fn watched(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Open tails (the `inlet_tail_subscribers` gauge).
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Most tails open at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Hands one request's records to the subscribers (never waits).
    pub fn publish(&self, records: Vec<Record>) {
        if !records.is_empty() {
            let _ = self.tx.send(Arc::new(records));
        }
    }

    /// Ends every open tail and refuses new ones (at shutdown, so that the drain does not
    /// wait for streams that never end).
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }

    /// A new subscriber: the SSE body of its response. Must run inside the tokio runtime.
    pub fn subscribe(&self, filter: Filter) -> Result<Body, Refused> {
        if *self.closed.borrow() {
            return Err(Refused::Closed);
        }
        // Counted before the check, so two at once cannot both pass the last slot.
        let slot = Slot::take(self.subscribers.clone());
        if slot.count > self.max {
            return Err(Refused::Full { max: self.max });
        }
        let rx = self.tx.subscribe();
        let (out, body) = mpsc::channel::<std::io::Result<Bytes>>(16);
        let closed = self.closed.subscribe();
        tokio::spawn(forward(rx, out, closed, filter, self.keep_alive, slot));
        Ok(body_of(body))
    }
}

/// One subscriber's place in the count; given back when dropped.
struct Slot {
    of: Arc<AtomicUsize>,
    count: usize,
}

impl Slot {
    fn take(of: Arc<AtomicUsize>) -> Slot {
        let count = of.fetch_add(1, Ordering::Relaxed) + 1;
        Slot { of, count }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.of.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The subscriber's task: broadcast → its filter → SSE frames into its body, until the body
/// is dropped, the tail closes or the hub is gone.
async fn forward(
    mut rx: broadcast::Receiver<Arc<Vec<Record>>>,
    out: mpsc::Sender<std::io::Result<Bytes>>,
    mut closed: watch::Receiver<bool>,
    filter: Filter,
    keep_alive: Duration,
    _slot: Slot,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    // The first frame: the client knows the stream is open (and the retry delay).
    if out
        .send(Ok(Bytes::from_static(b"retry: 3000\n: inlet tail\n\n")))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let chunk = tokio::select! {
            _ = out.closed() => return,
            _ = closed.wait_for(|c| *c) => return,
            _ = tick.tick() => Bytes::from_static(b": keep-alive\n\n"),
            r = rx.recv() => match r {
                Ok(records) => match frames(&filter, &records) {
                    Some(b) => b,
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Bytes::from(format!("event: lagged\ndata: {{\"skipped\":{n}}}\n\n"))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        tokio::select! {
            _ = closed.wait_for(|c| *c) => return,
            sent = out.send(Ok(chunk)) => if sent.is_err() { return },
        }
    }
}

/// The records `filter` lets through, as SSE `data:` frames (one JSON object each).
fn frames(filter: &Filter, records: &[Record]) -> Option<Bytes> {
    let mut buf = Vec::new();
    for r in records.iter().filter(|r| filter.matches(r)) {
        buf.extend_from_slice(b"data: ");
        serde_json::to_writer(&mut buf, r).ok()?;
        buf.extend_from_slice(b"\n\n");
    }
    (!buf.is_empty()).then(|| Bytes::from(buf))
}

/// A body that yields the chunks of an mpsc channel.
struct ChannelBody(mpsc::Receiver<std::io::Result<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|c| c.map(|c| c.map(hyper::body::Frame::data)))
    }
}

fn body_of(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    use http_body_util::BodyExt;
    ChannelBody(rx).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn record(app: &str, outcome: &'static str) -> Record {
        Record {
            at_ms: 1,
            app: app.into(),
            key: Some(3),
            source: "reflect",
            event: Some("purchase".into()),
            event_id: Some("e1".into()),
            seq: Some(1),
            install_uuid: None,
            user_id: Some("u1".into()),
            outcome,
            reason: None,
        }
    }

    #[test]
    fn filters_match_every_field_set() {
        let r = record("game", "accepted");
        assert!(Filter::default().matches(&r));
        let f = |f: Filter| f.matches(&r);
        assert!(f(Filter {
            app: Some("game".into()),
            key: Some(3),
            ..Default::default()
        }));
        assert!(!f(Filter {
            app: Some("other".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            outcome: Some("rejected".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            key: Some(4),
            ..Default::default()
        }));
        assert!(f(Filter {
            source: Some("reflect".into()),
            event: Some("purchase".into()),
            ..Default::default()
        }));
        assert!(f(Filter {
            event_id: Some("e1".into()),
            user_id: Some("u1".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            install_uuid: Some("i1".into()),
            ..Default::default()
        }));
    }

    #[tokio::test]
    async fn a_dropped_body_frees_its_slot_and_a_full_tail_refuses() {
        let tail = Tail::new(1);
        assert!(!tail.watched());
        let mut body = tail.subscribe(Filter::default()).unwrap();
        assert!(tail.watched());
        assert_eq!(
            tail.subscribe(Filter::default()).err(),
            Some(Refused::Full { max: 1 })
        );
        assert_eq!(tail.subscribers(), 1);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(first.starts_with(b"retry:"));
        tail.publish(vec![record("game", "accepted")]);
        let next = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(
            std::str::from_utf8(&next)
                .unwrap()
                .contains(r#""app":"game""#)
        );
        drop(body);
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        while tail.watched() {
            assert!(tokio::time::Instant::now() < end, "the slot was not freed");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_lags_and_is_told() {
        let tail = Tail::new(1);
        let mut body = tail.subscribe(Filter::default()).unwrap();
        let _ = body.frame().await;
        for _ in 0..CAPACITY + 100 {
            tail.publish(vec![record("game", "accepted")]);
        }
        let mut seen = String::new();
        while !seen.contains("event: lagged") {
            let f = body.frame().await.unwrap().unwrap().into_data().unwrap();
            seen.push_str(std::str::from_utf8(&f).unwrap());
        }
    }

    #[tokio::test]
    async fn closing_ends_the_streams() {
        let tail = Tail::new(2);
        let mut body = tail.subscribe(Filter::default()).unwrap();
        tail.close();
        while body.frame().await.is_some() {}
        assert_eq!(
            tail.subscribe(Filter::default()).err(),
            Some(Refused::Closed)
        );
    }
}
