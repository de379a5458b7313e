//! The two ceilings every inlet figure is divided by: a bare hyper server (HTTP) and raw
//! durable redb appends (storage). Also the storage-level dedupe index variants that
//! ARCHITECTURE.md's "Dedupe design" compares.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use inlet::store::codec::{EventRecord, encode_event};
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;
use std::time::{Duration, Instant};

/// Serves HTTP on `listener` like inlet's accept loop does (same hyper settings), reading
/// every body whole and answering 200 with a small JSON body. Never returns.
pub async fn bare_server(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
            let body = req.into_body().collect().await?.to_bytes();
            let reply = format!(r#"{{"accepted":0,"read":{}}}"#, body.len());
            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(reply))))
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// What a storage run appends besides the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Index {
    /// The log alone: the storage ceiling.
    None,
    /// Schema v1's index: a B-tree keyed by app ++ event id (random keys), one insert each.
    Random,
    /// A B-tree keyed by a 12-byte fingerprint (app, 64 bits of SHA-256(id)): smaller, still random.
    Fingerprint,
    /// A seq-ordered journal of fingerprints (appends only), as inlet's staged index writes
    /// per commit; its periodic sorted merge is not part of this figure.
    Journal,
}

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const RANDOM: TableDefinition<&[u8], u64> = TableDefinition::new("dedupe");
const FINGERPRINT: TableDefinition<u128, u64> = TableDefinition::new("dedupe_fp");
const JOURNAL: TableDefinition<u64, u128> = TableDefinition::new("dedupe_journal");

/// A realistic stored record of the bench's event `n`.
pub fn record(n: u64) -> (String, Vec<u8>) {
    let id = crate::load::event_id(0x5107, n);
    let mut json = String::new();
    crate::load::event_json(&mut json, &id, n);
    let rec = EventRecord {
        received_at_ms: 1_764_000_000_000 + n,
        tenant: "default".into(),
        app: "default".into(),
        key_id: 1,
        source: "reflect".into(),
        event_id: id.clone(),
        event_name: "purchase".into(),
        event_ts_ms: 1_764_000_000_000,
        install_uuid: Some(format!("{:032x}", n)),
        user_id: Some(format!("u{}", n % 100_000)),
        anonymous_id: None,
        ids: Vec::new(),
        revenue: Some(4.99),
        currency: Some("EUR".into()),
        transaction_id: None,
        product_id: None,
        props: r#"{"level":3,"store":"google"}"#.into(),
        context: "{}".into(),
        audit_key: "s2s/bulk/2025-11-26/5f0c7a1e2b3d4c5e6f708192a3b4c5d6.json".into(),
    };
    (id, encode_event(&rec))
}

/// Result of a storage run.
pub struct StorageRun {
    pub events: u64,
    pub elapsed: Duration,
    pub file_bytes: u64,
}

impl StorageRun {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// Appends `prefill` events without timing (commits of 10 000), then times `events` more in
/// durable commits of `commit` events, into a fresh redb file in `dir`.
pub fn storage(
    dir: &Path,
    index: Index,
    prefill: u64,
    events: u64,
    commit: u64,
) -> anyhow::Result<StorageRun> {
    let path = dir.join(format!("storage-{index:?}.redb"));
    let _ = std::fs::remove_file(&path);
    let db = Database::builder().set_cache_size(64 << 20).create(&path)?;
    let mut n = 0;
    // The timed records are made before the clock starts, so the ceiling is storage alone.
    let made: Vec<(String, Vec<u8>)> = (prefill..prefill + events).map(record).collect();
    let append = |n0: u64, count: u64| -> anyhow::Result<()> {
        let txn = db.begin_write()?;
        {
            let mut log = txn.open_table(EVENTS)?;
            let mut random = txn.open_table(RANDOM)?;
            let mut fp = txn.open_table(FINGERPRINT)?;
            let mut journal = txn.open_table(JOURNAL)?;
            for k in n0..n0 + count {
                let fresh;
                let (id, rec) = match k.checked_sub(prefill) {
                    Some(i) => &made[i as usize],
                    None => {
                        fresh = record(k);
                        &fresh
                    }
                };
                let seq = k + 1;
                log.insert(seq, rec.as_slice())?;
                match index {
                    Index::None => {}
                    Index::Random => {
                        let key = inlet::store::tables::dedupe_key(1, id);
                        if random.get(key.as_slice())?.is_none() {
                            random.insert(key.as_slice(), seq)?;
                        }
                    }
                    Index::Fingerprint => {
                        let key = inlet::store::dedupe::fingerprint(1, id);
                        if fp.get(key)?.is_none() {
                            fp.insert(key, seq)?;
                        }
                    }
                    Index::Journal => {
                        journal.insert(seq, inlet::store::dedupe::fingerprint(1, id))?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    };
    while n < prefill {
        let c = (prefill - n).min(10_000);
        append(n, c)?;
        n += c;
    }
    let started = Instant::now();
    let end = n + events;
    while n < end {
        let c = (end - n).min(commit);
        append(n, c)?;
        n += c;
    }
    let elapsed = started.elapsed();
    drop(db);
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    Ok(StorageRun {
        events,
        elapsed,
        file_bytes,
    })
}
