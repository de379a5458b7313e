//! The two ceilings every inlet figure is divided by: a bare hyper server (HTTP) and raw
//! durable redb appends (storage). Also the storage-level dedupe index variants that
//! docs/design/dedupe.md compares, and the durable bare server: the bare server
//! with a group-commit thread behind it, what any durable single-event server on this disk
//! and these cores can reach whatever it does per request.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use inlet::store::codec::{EventRecord, encode_event};
use redb::{Database, ReadableTable, TableDefinition};
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

/// Serves HTTP on `listener` like inlet's accept loop does (same hyper settings), reading
/// every body whole and answering 200 with a small JSON body. Never returns.
pub async fn bare_server(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    serve(listener, || {
        service_fn(|req: Request<hyper::body::Incoming>| async move {
            let body = req.into_body().collect().await?.to_bytes();
            let reply = format!(r#"{{"accepted":0,"read":{}}}"#, body.len());
            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(reply))))
        })
    })
    .await
}

/// The accept loop of the bench's servers, with inlet's connection settings: each
/// connection is served by the service `make` returns for it. Never returns.
async fn serve<S>(listener: tokio::net::TcpListener, make: impl Fn() -> S) -> std::io::Result<()>
where
    S: hyper::service::Service<
            Request<hyper::body::Incoming>,
            Response = Response<Full<Bytes>>,
            Error = hyper::Error,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), make());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// How the durable bare server makes a group of bodies durable before it answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Commit {
    /// A redb commit with quick-repair (two-phase, allocator state saved): inlet's setting,
    /// the one that keeps the restart after a SIGKILL in milliseconds.
    QuickRepair,
    /// A plain durable redb commit (one phase): a SIGKILL then means a full repair on open.
    Redb,
    /// Appended to a plain file, then `fdatasync`: a bare write-ahead log.
    File,
}

/// The bare server with a durable group commit behind it: each request's body goes to one
/// writer thread, which takes everything queued, makes it durable in one commit into `sink`
/// and only then lets the requests answer. No auth, parsing or index: the floor of a durable
/// single-event server on this machine. With `per_event`, each body must be a bulk body
/// (`{"events":[…]}`), and each of its events is stored as its own row: the floor of a
/// durable bulk server that keeps events one by one (the JSON parse that finds them, a row
/// each, the commit; no validation, dedupe or index). Never returns.
pub async fn durable_server(
    listener: tokio::net::TcpListener,
    mut sink: Sink,
    per_event: bool,
) -> anyhow::Result<()> {
    type Pending = (Bytes, Vec<Range<usize>>, tokio::sync::oneshot::Sender<u64>);
    let (tx, rx) = std::sync::mpsc::channel::<Pending>();
    std::thread::Builder::new()
        .name("group-commit".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                group.extend(rx.try_iter());
                let rows = group
                    .iter()
                    .flat_map(|(body, events, _)| events.iter().map(|r| &body[r.clone()]));
                let last = sink.append(rows).expect("durable append");
                let stored: u64 = group.iter().map(|(_, e, _)| e.len() as u64).sum();
                let mut next = last + 1 - stored;
                for (_, events, reply) in group {
                    next += events.len() as u64;
                    let _ = reply.send(next - 1);
                }
            }
        })?;
    serve(listener, || {
        let tx = tx.clone();
        service_fn(move |req: Request<hyper::body::Incoming>| {
            let tx = tx.clone();
            async move {
                let body = req.into_body().collect().await?.to_bytes();
                let events = if per_event {
                    event_ranges(&body)
                } else {
                    Some(std::iter::once(0..body.len()).collect())
                };
                let Some(events) = events else {
                    let mut res = Response::new(Full::new(Bytes::from_static(
                        br#"{"error":"not a bulk body"}"#,
                    )));
                    *res.status_mut() = hyper::StatusCode::BAD_REQUEST;
                    return Ok(res);
                };
                let accepted = events.len();
                let (reply, answer) = tokio::sync::oneshot::channel();
                let status = match tx.send((body, events, reply)) {
                    Ok(()) => answer.await.ok(),
                    Err(_) => None,
                };
                let mut res = Response::new(Full::new(Bytes::from(match status {
                    Some(seq) => format!(r#"{{"accepted":{accepted},"seq":{seq}}}"#),
                    None => r#"{"error":"not stored"}"#.to_owned(),
                })));
                if status.is_none() {
                    *res.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                }
                Ok::<_, hyper::Error>(res)
            }
        })
    })
    .await?;
    Ok(())
}

/// Where each event of a bulk body (`{"events":[…]}`) lies in it; `None` if it is not one.
fn event_ranges(body: &[u8]) -> Option<Vec<Range<usize>>> {
    #[derive(serde::Deserialize)]
    struct Bulk<'a> {
        #[serde(borrow)]
        events: Vec<&'a serde_json::value::RawValue>,
    }
    let text = std::str::from_utf8(body).ok()?;
    let bulk: Bulk = serde_json::from_str(text).ok()?;
    let base = text.as_ptr() as usize;
    Some(
        bulk.events
            .iter()
            .map(|e| {
                let start = e.get().as_ptr() as usize - base;
                start..start + e.get().len()
            })
            .collect(),
    )
}

/// Where the durable bare server's groups go.
pub enum Sink {
    Redb {
        db: Database,
        quick_repair: bool,
        /// Also write, in each commit, the rows inlet's writer writes beside the log for
        /// single events ([`Sink::like_inlet`]).
        like_inlet: bool,
        seq: u64,
    },
    File {
        file: std::fs::File,
        buf: Vec<u8>,
        seq: u64,
    },
}

impl Sink {
    /// A fresh file in `dir` for commits made `how`. A redb file is first grown to at least
    /// `grow_to` bytes (untimed filler, one durable commit at the end): redb's quick-repair
    /// commit writes the allocator state of the whole file, so its cost grows with the file,
    /// and a floor meant for a log of some size needs a file of that size.
    pub fn create(dir: &Path, how: Commit, grow_to: u64) -> anyhow::Result<Sink> {
        Ok(match how {
            Commit::QuickRepair | Commit::Redb => {
                let path = dir.join("durable.redb");
                let _ = std::fs::remove_file(&path);
                let db = Database::builder().set_cache_size(64 << 20).create(&path)?;
                let seq = grow(&db, &path, grow_to)?;
                Sink::Redb {
                    db,
                    quick_repair: how == Commit::QuickRepair,
                    like_inlet: false,
                    seq,
                }
            }
            Commit::File => Sink::File {
                file: std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(dir.join("durable.log"))?,
                buf: Vec::new(),
                seq: 0,
            },
        })
    }

    /// A redb sink that also writes, in each commit, the tables inlet's writer writes for
    /// single events besides the log: the dedupe index's commit row (32 bytes per event),
    /// each raw body again (the audit), the key's last use, the tenant's usage counter and
    /// the app's day and hour tallies. Plain rows, none of inlet's logic: what committing
    /// seven tables instead of one costs. No effect on a file sink.
    pub fn like_inlet(mut self) -> Sink {
        if let Sink::Redb { like_inlet, .. } = &mut self {
            *like_inlet = true;
        }
        self
    }

    /// Makes `bodies` durable in one commit; returns the seq of the last.
    fn append<'a>(&mut self, bodies: impl Iterator<Item = &'a [u8]>) -> anyhow::Result<u64> {
        match self {
            Sink::Redb {
                db,
                quick_repair,
                like_inlet,
                seq,
            } => {
                let mut txn = db.begin_write()?;
                txn.set_quick_repair(*quick_repair);
                let first = *seq + 1;
                {
                    let mut log = txn.open_table(EVENTS)?;
                    let mut audit = match like_inlet {
                        true => Some(txn.open_table(AUDIT)?),
                        false => None,
                    };
                    for body in bodies {
                        *seq += 1;
                        log.insert(*seq, body)?;
                        if let Some(audit) = &mut audit {
                            audit.insert(*seq, body)?;
                        }
                    }
                }
                if *like_inlet && *seq >= first {
                    let n = *seq + 1 - first;
                    let row: Vec<u8> = (first..=*seq).flat_map(|s| [s as u8; 32]).collect();
                    txn.open_table(COMMIT_ROWS)?.insert(first, row.as_slice())?;
                    // The key's last use is a time: it changes with every commit.
                    txn.open_table(KEY_USED)?.insert(1, *seq)?;
                    for (table, key) in [(USAGE, 1), (DAYS, 20_000), (HOURS, 480_000)] {
                        let mut t = txn.open_table(table)?;
                        let old = t.get(key)?.map_or(0, |v| v.value());
                        t.insert(key, old + n)?;
                    }
                }
                txn.commit()?;
                Ok(*seq)
            }
            Sink::File { file, buf, seq } => {
                use std::io::Write;
                buf.clear();
                for body in bodies {
                    *seq += 1;
                    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
                    buf.extend_from_slice(body);
                }
                file.write_all(buf)?;
                file.sync_data()?;
                Ok(*seq)
            }
        }
    }
}

/// Appends 1 KB filler records to `db` (at `path`) until the file holds at least `to` bytes,
/// in non-durable commits ended by one durable quick-repair commit; returns the last seq.
fn grow(db: &Database, path: &Path, to: u64) -> anyhow::Result<u64> {
    let filler = [0x5a_u8; 1000];
    let mut seq = 0;
    while std::fs::metadata(path)?.len() < to {
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut log = txn.open_table(EVENTS)?;
            for _ in 0..10_000 {
                seq += 1;
                log.insert(seq, filler.as_slice())?;
            }
        }
        txn.commit()?;
    }
    if seq > 0 {
        let mut txn = db.begin_write()?;
        txn.set_quick_repair(true);
        txn.commit()?;
    }
    Ok(seq)
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
// The tables `Sink::like_inlet` writes besides the log.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const COMMIT_ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("commit_rows");
const KEY_USED: TableDefinition<u64, u64> = TableDefinition::new("key_used");
const USAGE: TableDefinition<u64, u64> = TableDefinition::new("usage");
const DAYS: TableDefinition<u64, u64> = TableDefinition::new("days");
const HOURS: TableDefinition<u64, u64> = TableDefinition::new("hours");
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
        interned: Default::default(),
    };
    (id, encode_event(&rec))
}

/// Result of a storage run.
pub struct StorageRun {
    pub events: u64,
    pub elapsed: Duration,
    /// CPU time of the appending thread over the timed part (user and kernel).
    pub cpu: Duration,
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
    let cpu0 = crate::decode::thread_cpu_ns();
    let end = n + events;
    while n < end {
        let c = (end - n).min(commit);
        append(n, c)?;
        n += c;
    }
    let cpu = Duration::from_nanos(crate::decode::thread_cpu_ns() - cpu0);
    let elapsed = started.elapsed();
    drop(db);
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    Ok(StorageRun {
        events,
        elapsed,
        cpu,
        file_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Opens the floor's redb file once the commit thread has let go of it (it ends when the
    /// runtime that held its senders is dropped).
    fn open_once_closed(path: &Path) -> Database {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Database::open(path) {
                Ok(db) => return db,
                Err(e) if Instant::now() < deadline => {
                    assert!(matches!(e, redb::DatabaseError::DatabaseAlreadyOpen), "{e}");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("the commit thread kept the file open: {e}"),
            }
        }
    }

    /// Every body the durable floor answered is in its file, under the seq it answered: the
    /// floor measures real appends, not answers.
    #[test]
    fn the_durable_floor_stores_every_body_it_answers() {
        for how in [Commit::QuickRepair, Commit::Redb, Commit::File] {
            let dir = tempfile::tempdir().unwrap();
            let rt = runtime();
            let bodies: Vec<String> = (0..40).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
            let answered: Vec<(u64, String)> = rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let sink = Sink::create(dir.path(), how, 0).unwrap();
                tokio::spawn(durable_server(listener, sink, false));
                let sends: Vec<_> = bodies
                    .iter()
                    .map(|b| {
                        let b = b.clone();
                        tokio::spawn(async move {
                            let req = Request::post("/")
                                .header(hyper::header::HOST, addr.to_string())
                                .body(Full::new(Bytes::from(b.clone())))
                                .unwrap();
                            (crate::load::send(&mut None, addr, req).await, b)
                        })
                    })
                    .collect();
                let mut answered = Vec::new();
                for s in sends {
                    let (answer, body) = s.await.unwrap();
                    let (status, reply) = answer.expect("answered");
                    assert_eq!(status, 200, "{how:?}");
                    let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
                    answered.push((v["seq"].as_u64().unwrap(), body));
                }
                answered
            });
            // Dropping the runtime drops every sender, so the commit thread ends and closes
            // the file.
            rt.shutdown_timeout(Duration::from_secs(5));
            let stored: Vec<(u64, String)> = match how {
                Commit::File => {
                    let bytes = std::fs::read(dir.path().join("durable.log")).unwrap();
                    let mut rest = bytes.as_slice();
                    let mut out = Vec::new();
                    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                        let (body, tail) = tail.split_at(u32::from_le_bytes(*len) as usize);
                        out.push((
                            out.len() as u64 + 1,
                            String::from_utf8(body.to_vec()).unwrap(),
                        ));
                        rest = tail;
                    }
                    out
                }
                Commit::QuickRepair | Commit::Redb => {
                    let db = open_once_closed(&dir.path().join("durable.redb"));
                    let txn = db.begin_read().unwrap();
                    let log = txn.open_table(EVENTS).unwrap();
                    log.iter()
                        .unwrap()
                        .map(|row| {
                            let (k, v) = row.unwrap();
                            (k.value(), String::from_utf8(v.value().to_vec()).unwrap())
                        })
                        .collect()
                }
            };
            let mut answered = answered;
            answered.sort();
            assert_eq!(stored, answered, "{how:?}");
        }
    }

    /// The floor that writes inlet's tables writes each of them in every commit: the
    /// bodies twice, a commit row of 32 bytes per body, the counters summed, the key's use;
    /// the plain floor writes the log alone.
    #[test]
    fn the_floor_like_inlet_writes_its_tables_in_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = Sink::create(dir.path(), Commit::QuickRepair, 0)
            .unwrap()
            .like_inlet();
        let bodies: Vec<Vec<u8>> = (0..5u8).map(|n| vec![b'a' + n; 10 + n as usize]).collect();
        assert_eq!(
            sink.append(bodies[..3].iter().map(|b| b.as_slice()))
                .unwrap(),
            3
        );
        assert_eq!(
            sink.append(bodies[3..].iter().map(|b| b.as_slice()))
                .unwrap(),
            5
        );
        let Sink::Redb { db, .. } = &sink else {
            panic!("a redb sink")
        };
        let txn = db.begin_read().unwrap();
        let rows = |t: TableDefinition<u64, &[u8]>| -> Vec<(u64, Vec<u8>)> {
            let t = txn.open_table(t).unwrap();
            (t.iter().unwrap())
                .map(|r| r.unwrap())
                .map(|(k, v)| (k.value(), v.value().to_vec()))
                .collect()
        };
        let numbered: Vec<(u64, Vec<u8>)> = (1..).zip(bodies.iter().cloned()).collect();
        assert_eq!(rows(EVENTS), numbered);
        assert_eq!(rows(AUDIT), numbered);
        let commits: Vec<(u64, usize)> = (rows(COMMIT_ROWS).into_iter())
            .map(|(k, v)| (k, v.len()))
            .collect();
        assert_eq!(commits, [(1, 3 * 32), (4, 2 * 32)]);
        for (table, want) in [(USAGE, 5), (DAYS, 5), (HOURS, 5), (KEY_USED, 5)] {
            let t = txn.open_table(table).unwrap();
            let values: Vec<u64> = (t.iter().unwrap()).map(|r| r.unwrap().1.value()).collect();
            assert_eq!(values, [want]);
        }
        drop(txn);

        let dir = tempfile::tempdir().unwrap();
        let mut plain = Sink::create(dir.path(), Commit::QuickRepair, 0).unwrap();
        plain.append(bodies.iter().map(|b| b.as_slice())).unwrap();
        let Sink::Redb { db, .. } = &plain else {
            panic!("a redb sink")
        };
        let txn = db.begin_read().unwrap();
        assert!(
            txn.open_table(AUDIT).is_err(),
            "the plain floor writes the log alone"
        );
    }

    /// The bulk floor stores each event of a body as its own row, the body's events under
    /// consecutive seqs ending at the one it answered; a body that is not a bulk body is
    /// refused with a 400 and stores nothing.
    #[test]
    fn the_bulk_floor_stores_each_event_as_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let event = |b: usize, k: usize| format!(r#"{{"b":{b},"k":[{k}, "x"]}}"#);
        let bodies: Vec<String> = (0..12)
            .map(|b| {
                format!(
                    r#"{{"events": [{}, {} ,{}]}}"#,
                    event(b, 0),
                    event(b, 1),
                    event(b, 2)
                )
            })
            .collect();
        let (answered, refused) = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let sink = Sink::create(dir.path(), Commit::QuickRepair, 0).unwrap();
            tokio::spawn(durable_server(listener, sink, true));
            let post = move |body: String| {
                tokio::spawn(async move {
                    let req = Request::post("/")
                        .header(hyper::header::HOST, addr.to_string())
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    crate::load::send(&mut None, addr, req)
                        .await
                        .expect("answered")
                })
            };
            let sends: Vec<_> = bodies.iter().map(|b| post(b.clone())).collect();
            let mut answered = Vec::new();
            for (b, s) in sends.into_iter().enumerate() {
                let (status, reply) = s.await.unwrap();
                assert_eq!(status, 200);
                let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
                assert_eq!(v["accepted"], 3);
                answered.push((b, v["seq"].as_u64().unwrap()));
            }
            let refused = post(r#"{"event":{"b":99}}"#.to_owned()).await.unwrap();
            (answered, refused)
        });
        rt.shutdown_timeout(Duration::from_secs(5));
        assert_eq!(refused.0, 400);
        let db = open_once_closed(&dir.path().join("durable.redb"));
        let txn = db.begin_read().unwrap();
        let log = txn.open_table(EVENTS).unwrap();
        assert_eq!(log.len().unwrap(), 36);
        for (b, last) in answered {
            for k in 0..3 {
                let row = log.get(last - 2 + k as u64).unwrap().unwrap();
                assert_eq!(std::str::from_utf8(row.value()).unwrap(), event(b, k));
            }
        }
    }

    /// A floor for a log of some size: the file is grown first, and the bodies then go after
    /// the filler, each under the seq the append returned.
    #[test]
    fn a_grown_floor_file_is_that_large_and_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let want = 4 << 20;
        let mut sink = Sink::create(dir.path(), Commit::QuickRepair, want).unwrap();
        let path = dir.path().join("durable.redb");
        assert!(std::fs::metadata(&path).unwrap().len() >= want);
        let last = sink
            .append([b"a".as_slice(), b"b".as_slice()].into_iter())
            .unwrap();
        assert!(last > 2, "the filler comes first");
        drop(sink);
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let log = txn.open_table(EVENTS).unwrap();
        assert_eq!(log.get(last - 1).unwrap().unwrap().value(), b"a");
        assert_eq!(log.get(last).unwrap().unwrap().value(), b"b");
        assert_eq!(log.last().unwrap().unwrap().0.value(), last);
    }
}
