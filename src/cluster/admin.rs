//! Admin data through the engine: tenants, apps, keys, signing secrets, dialect settings,
//! business-key and drop rules, store-less settings and alert rules are the same on every
//! node, because every change to them is a record of the stream [`STREAM`] and every node
//! applies that stream, in order, to its own database.
//!
//! A record ([`AdminOp`]) is not an intent ("mint a key for app x") but the rows one admin
//! write set or removed in the [shared tables](SHARED): the node that takes the write runs
//! the ordinary admin function (`store::admin`, `store::secrets`, ...) in a write transaction
//! at its applied sequence, takes the difference of the shared rows, aborts the transaction
//! and appends the difference with `Nats-Expected-Last-Sequence` = that sequence. So every
//! input that is not deterministic (a minted key's hash, a secret, a timestamp, the ids
//! allocated) is in the record, applying it is copying rows, and the ids are the same on every
//! node. The fence makes the writes serial: a write validated against an older state than the
//! stream's last is refused by the engine (10071), and is run again once the node has applied
//! what it missed. The writer is answered once its own node applied the record
//! (read-your-writes on that node).
//!
//! The stream's first record is a [`AdminOp::Snapshot`] of the shared rows of the first node
//! that joined a new cluster (its data dir's admin data, or a new one's `default` tenant and
//! app); a node that joins later must have no admin data of its own (see [`check_joinable`]).
//!
//! An admin write changes shared rows only or local rows only (accounts, the audit log,
//! quarantine): a local-only one (no shared row changed) is committed locally as before.

use crate::store::tables::{
    ALERT_RULES, APP_RULES, APPS, CLUSTER_APPLIED, KEY_LOOKUP, KEYS, META, SECRETS, TENANTS,
};
use crate::store::writer::Writer;
use crate::store::{self, Error};
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use redb::{Key, ReadableTable, TableDefinition, Value, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;

/// The stream of admin records, one subject.
pub const STREAM: &str = "INLET_ADMIN";
/// Its subject.
pub const SUBJECT: &str = "inlet.admin";
/// The version byte of an admin record.
pub const ADMIN_V1: u8 = 1;
/// The key of [`CLUSTER_APPLIED`] holding the last applied admin sequence (partitions are
/// numbered far below it).
pub const APPLIED_KEY: u32 = u32::MAX;

/// The shared tables, by their number in a record. A change to their layout is a change of
/// the record format (a new version byte).
pub const SHARED: [&str; 8] = [
    "tenants",
    "apps",
    "keys",
    "key_lookup",
    "secrets",
    "alert_rules",
    "app_rules",
    "meta",
];

/// The keys of [`META`] that are admin data: the id counters of shared records, the
/// secrets' cache version, the apps' store-less settings. The rest of `meta` is local.
fn shared_meta(key: &[u8]) -> bool {
    const EXACT: [&[u8]; 5] = [
        b"next_id/tenant",
        b"next_id/app",
        b"next_id/key",
        b"next_id/secret",
        b"secrets_version",
    ];
    EXACT.contains(&key) || key.starts_with(b"store_less.")
}

/// One shared row set (`value: Some`) or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub table: u8,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One record of [`STREAM`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// Every shared row: the state of the cluster's first node (the stream's first record).
    Snapshot { node: String, rows: Vec<Row> },
    /// The shared rows one admin write changed.
    Change { node: String, rows: Vec<Row> },
}

impl AdminOp {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ADMIN_V1];
        out.extend(postcard::to_stdvec(self).expect("postcard encodes to a Vec"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<AdminOp, String> {
        match bytes.split_first() {
            Some((&ADMIN_V1, rest)) => {
                postcard::from_bytes(rest).map_err(|e| format!("an undecodable admin record: {e}"))
            }
            Some((v, _)) => Err(format!(
                "admin record version {v} is not known to this build"
            )),
            None => Err("an empty admin record".to_owned()),
        }
    }

    pub fn rows(&self) -> &[Row] {
        match self {
            AdminOp::Snapshot { rows, .. } | AdminOp::Change { rows, .. } => rows,
        }
    }
}

/// Shared rows: (table, key) → value.
pub type Rows = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

fn dump_table<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    t: u8,
    def: TableDefinition<K, V>,
    out: &mut Rows,
) -> store::Result<()> {
    let table = txn.open_table(def)?;
    for row in table.iter()? {
        let (k, v) = row?;
        let key = K::as_bytes(&k.value()).as_ref().to_vec();
        if t == 7 && !shared_meta(&key) {
            continue;
        }
        out.insert((t, key), V::as_bytes(&v.value()).as_ref().to_vec());
    }
    Ok(())
}

fn put_row<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<K, V>,
    key: &[u8],
    value: Option<&[u8]>,
) -> store::Result<()> {
    let mut table = txn.open_table(def)?;
    match value {
        Some(v) => {
            table.insert(K::from_bytes(key), V::from_bytes(v))?;
        }
        None => {
            table.remove(K::from_bytes(key))?;
        }
    }
    Ok(())
}

/// Every shared row of the database, as `txn` sees it.
pub fn dump(txn: &WriteTransaction) -> store::Result<Rows> {
    let mut out = Rows::new();
    dump_table(txn, 0, TENANTS, &mut out)?;
    dump_table(txn, 1, APPS, &mut out)?;
    dump_table(txn, 2, KEYS, &mut out)?;
    dump_table(txn, 3, KEY_LOOKUP, &mut out)?;
    dump_table(txn, 4, SECRETS, &mut out)?;
    dump_table(txn, 5, ALERT_RULES, &mut out)?;
    dump_table(txn, 6, APP_RULES, &mut out)?;
    dump_table(txn, 7, META, &mut out)?;
    Ok(out)
}

fn put(txn: &WriteTransaction, row: &Row) -> store::Result<()> {
    let (k, v) = (row.key.as_slice(), row.value.as_deref());
    match row.table {
        0 => put_row(txn, TENANTS, k, v),
        1 => put_row(txn, APPS, k, v),
        2 => put_row(txn, KEYS, k, v),
        3 => put_row(txn, KEY_LOOKUP, k, v),
        4 => put_row(txn, SECRETS, k, v),
        5 => put_row(txn, ALERT_RULES, k, v),
        6 => put_row(txn, APP_RULES, k, v),
        7 if shared_meta(k) => put_row(txn, META, k, v),
        t => Err(Error::Corrupt(format!(
            "an admin record names table {t}, key {k:?}, which is not shared"
        ))),
    }
}

/// The rows that turn `before` into `after`.
pub fn diff(before: &Rows, after: &Rows) -> Vec<Row> {
    let mut out = Vec::new();
    for ((t, k), v) in after {
        if before.get(&(*t, k.clone())) != Some(v) {
            out.push(Row {
                table: *t,
                key: k.clone(),
                value: Some(v.clone()),
            });
        }
    }
    for (t, k) in before.keys() {
        if !after.contains_key(&(*t, k.clone())) {
            out.push(Row {
                table: *t,
                key: k.clone(),
                value: None,
            });
        }
    }
    out
}

/// The snapshot's rows.
pub fn as_rows(rows: Rows) -> Vec<Row> {
    rows.into_iter()
        .map(|((table, key), v)| Row {
            table,
            key,
            value: Some(v),
        })
        .collect()
}

/// The last admin sequence applied to the database (0: none).
pub fn applied(txn: &WriteTransaction) -> store::Result<u64> {
    Ok(txn
        .open_table(CLUSTER_APPLIED)?
        .get(APPLIED_KEY)?
        .map_or(0, |v| v.value()))
}

/// Applies record `seq` in `txn`: the next one, or one applied already (`false`, nothing
/// done). A gap is an error: records are applied in order, each once.
pub fn apply(txn: &WriteTransaction, seq: u64, op: &AdminOp) -> store::Result<bool> {
    let at = applied(txn)?;
    if seq <= at {
        return Ok(false);
    }
    if seq != at + 1 {
        return Err(Error::Internal(format!(
            "admin record {seq} after {at}: the records between are missing"
        )));
    }
    if let AdminOp::Snapshot { rows, .. } = op {
        // The cluster's state replaces this node's.
        let wanted: std::collections::BTreeSet<(u8, &[u8])> =
            rows.iter().map(|r| (r.table, r.key.as_slice())).collect();
        for (t, k) in dump(txn)?.into_keys() {
            if !wanted.contains(&(t, k.as_slice())) {
                put(
                    txn,
                    &Row {
                        table: t,
                        key: k,
                        value: None,
                    },
                )?;
            }
        }
    }
    for row in op.rows() {
        put(txn, row)?;
    }
    txn.open_table(CLUSTER_APPLIED)?.insert(APPLIED_KEY, seq)?;
    Ok(true)
}

/// Whether a database that applied no admin record may take the cluster's: it holds no
/// admin data of its own beyond what a new data dir has (the `default` tenant and app).
pub fn check_joinable(rows: &Rows) -> Result<(), String> {
    let count = |t: u8| rows.keys().filter(|(tt, _)| *tt == t).count();
    let store_less = rows
        .keys()
        .filter(|(t, k)| *t == 7 && k.starts_with(b"store_less."))
        .count();
    let own = [
        ("tenants", count(0).saturating_sub(1)),
        ("apps", count(1).saturating_sub(1)),
        ("keys", count(2)),
        ("signing secrets", count(4)),
        ("alert rules", count(5)),
        ("app rules", count(6)),
        ("store-less settings", store_less),
    ];
    let held: Vec<String> = own
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(format!(
        "this data dir holds admin data of its own ({}) and has never applied the cluster's: \
         a node joins an existing cluster with an empty data dir (it gets the admin data from \
         the engine); a single node's data dir can only start a new cluster, as its first node",
        held.join(", ")
    ))
}

/// Runs `f` in a write transaction of `db` and returns its result with the shared rows it
/// changed and the admin sequence it ran at. With no shared row changed the transaction is
/// committed (a local write); else it is aborted: the change goes through the engine.
pub fn run_and_diff<R>(
    db: &redb::Database,
    f: impl FnOnce(&WriteTransaction) -> store::Result<R>,
) -> store::Result<(R, Vec<Row>, u64)> {
    let txn = store::begin_write(db)?;
    let at = applied(&txn)?;
    let before = dump(&txn)?;
    let r = f(&txn)?;
    let change = diff(&before, &dump(&txn)?);
    if change.is_empty() {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok((r, change, at))
}

/// A write straight into a database no server holds (the CLI without a running node): a
/// cluster node's database refuses one that changes admin data, which only goes through the
/// engine.
pub fn direct_write<R>(
    db: &redb::Database,
    f: impl FnOnce(&WriteTransaction) -> store::Result<R>,
) -> store::Result<R> {
    let txn = store::begin_write(db)?;
    if applied(&txn)? == 0 {
        let r = f(&txn)?;
        txn.commit()?;
        return Ok(r);
    }
    let before = dump(&txn)?;
    let r = f(&txn)?;
    if !diff(&before, &dump(&txn)?).is_empty() {
        txn.abort()?;
        return Err(Error::Refused(
            "this data dir is a cluster node's: admin changes go through a running node \
             (start it, then run the command again), which shares them with every node"
                .to_owned(),
        ));
    }
    txn.commit()?;
    Ok(r)
}

/// A job on the local database, run by the writer (an admin record's apply).
pub type AdminJob = Box<dyn FnOnce(&redb::Database) -> Result<(), String> + Send>;
/// Runs an [`AdminJob`] on the writer thread, between commits.
pub type Applied = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How long an admin write may take (races and resends included), and how long its writer
/// waits for its own node to apply it.
const WAIT: Duration = Duration::from_secs(10);

/// This node's end of [`STREAM`]: appending admin writes, following everyone's.
pub struct AdminLog {
    stream: stream::Stream,
    js: jetstream::Context,
    node: String,
    /// The last record applied to the local database.
    applied: watch::Sender<u64>,
    /// One admin write of this node at a time (they would only race each other).
    writing: tokio::sync::Mutex<()>,
    /// The stream's last record as last seen here (by the apply loop, from each record's
    /// count of those after it, and by a periodic sample): the lag's other end.
    last_seen: std::sync::atomic::AtomicU64,
}

/// How often the admin stream's last sequence is asked for, for the lag.
const LAG_SAMPLE: Duration = Duration::from_secs(5);

/// Why an append of an admin record did not go through.
enum Publishing {
    /// Another record was appended since the sequence it expected (10071).
    Raced,
    Failed(String),
}

impl AdminLog {
    pub fn new(stream: stream::Stream, js: jetstream::Context, node: &str) -> AdminLog {
        AdminLog {
            stream,
            js,
            node: node.to_owned(),
            applied: watch::channel(0).0,
            writing: tokio::sync::Mutex::new(()),
            last_seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Admin records in the engine not yet applied here (`inlet_cluster_admin_lag`): the
    /// stream's last sequence as last seen minus the last applied one.
    pub fn lag(&self) -> u64 {
        let last = self.last_seen.load(std::sync::atomic::Ordering::Relaxed);
        last.saturating_sub(self.applied())
    }

    fn saw_last(&self, seq: u64) {
        self.last_seen
            .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// Asks for the stream's last sequence every [`LAG_SAMPLE`] (a record appended while
    /// the apply loop is stuck shows as lag).
    async fn sample_last(&self) {
        loop {
            if let Ok(last) = self.last_seq().await {
                self.saw_last(last);
            }
            tokio::time::sleep(LAG_SAMPLE).await;
        }
    }

    /// The last admin record applied here.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    async fn last_seq(&self) -> Result<u64, String> {
        let mut stream = self.stream.clone();
        let info = tokio::time::timeout(WAIT, stream.info())
            .await
            .map_err(|_| format!("the engine did not answer about {STREAM} in time"))?
            .map_err(|e| format!("{STREAM}: {e}"))?;
        Ok(info.state.last_sequence)
    }

    /// Before the node serves anything: brings the database's admin data up to the stream's
    /// last record, starting the stream with this node's snapshot on a new cluster; refuses a
    /// database whose admin data is not the cluster's. `db` is not written by anyone else
    /// meanwhile (the writer has not started).
    pub async fn join(&self, db: &redb::Database) -> Result<(), String> {
        let (at, rows) = {
            let txn = store::begin_write(db).map_err(|e| e.to_string())?;
            let at = applied(&txn).map_err(|e| e.to_string())?;
            let rows = dump(&txn).map_err(|e| e.to_string())?;
            txn.abort().map_err(|e| e.to_string())?;
            (at, rows)
        };
        let last = self.last_seq().await?;
        if at > last {
            return Err(format!(
                "this data dir applied admin record {at}, but the engine's {STREAM} ends at \
                 {last}: the data dir belongs to another cluster (or the engine's streams were \
                 created anew); start this node with an empty data dir"
            ));
        }
        if at == 0 {
            let seeded = last == 0 && {
                let op = AdminOp::Snapshot {
                    node: self.node.clone(),
                    rows: as_rows(rows.clone()),
                };
                match self.publish(&op, 0).await {
                    Ok(_) => true,
                    Err(Publishing::Raced) => false,
                    Err(Publishing::Failed(e)) => return Err(format!("{STREAM}: {e}")),
                }
            };
            if seeded {
                tracing::info!("a new cluster: its admin data is this node's");
            } else if let Err(e) = check_joinable(&rows) {
                // Unless the cluster's first record is this very data (this node seeded
                // the stream and stopped before applying it).
                let first = self.stream.raw_message_builder().sequence(1).send().await;
                let same = first.is_ok_and(|m| {
                    AdminOp::decode(&m.payload).is_ok_and(|op| {
                        matches!(&op, AdminOp::Snapshot { .. })
                            && op.rows() == as_rows(rows).as_slice()
                    })
                });
                if !same {
                    return Err(e);
                }
            }
        }
        // Every record up to the stream's end, each in its own transaction.
        let mut at = at;
        loop {
            let m = match self
                .stream
                .raw_message_builder()
                .sequence(at + 1)
                .send()
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(format!("reading {STREAM} #{}: {e}", at + 1)),
            };
            let op = AdminOp::decode(&m.payload)?;
            let txn = store::begin_write(db).map_err(|e| e.to_string())?;
            apply(&txn, m.sequence, &op).map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())?;
            at = m.sequence;
        }
        tracing::info!(applied = at, "admin data caught up with the cluster");
        self.applied.send_replace(at);
        Ok(())
    }

    /// Applies every record appended from now on, as it comes, through the writer (so the
    /// caches keyed by the configuration generation, the key cache first, see it).
    pub async fn follow(&self, run: impl Fn(AdminJob) -> Applied) {
        let apply = async {
            let mut backoff = Duration::from_millis(100);
            loop {
                if let Err(e) = self.follow_once(&run).await {
                    tracing::warn!(error = %e, "following {STREAM} failed; following again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        tokio::join!(apply, self.sample_last());
    }

    async fn follow_once(&self, run: &impl Fn(AdminJob) -> Applied) -> Result<(), String> {
        let from = self.applied() + 1;
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: SUBJECT.to_owned(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| e.to_string())?;
            let info = m.info().map_err(|e| e.to_string())?;
            let seq = info.stream_sequence;
            self.saw_last(seq + info.pending);
            let op = AdminOp::decode(&m.payload)?;
            run(Box::new(move |db| {
                let txn = store::begin_write(db).map_err(|e| e.to_string())?;
                apply(&txn, seq, &op).map_err(|e| e.to_string())?;
                txn.commit().map_err(|e| e.to_string())
            }))
            .await?;
            self.applied.send_modify(|a| *a = (*a).max(seq));
        }
        Err("the consumer ended".to_owned())
    }

    /// Waits until record `seq` is applied here.
    async fn wait_applied(&self, seq: u64) -> store::Result<()> {
        let mut rx = self.applied.subscribe();
        match tokio::time::timeout(WAIT, rx.wait_for(|&a| a >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::Fenced(format!(
                "admin record {seq} is in the engine but not applied on this node yet"
            ))),
        }
    }

    /// Appends `op`, expecting the stream's last record to be `expected`; resends the same
    /// message id after a lost ack.
    async fn publish(&self, op: &AdminOp, expected: u64) -> Result<u64, Publishing> {
        let id = format!("{}-{:016x}", self.node, rand::random::<u64>());
        let payload = bytes::Bytes::from(op.encode());
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert("Nats-Expected-Last-Sequence", expected.to_string().as_str());
            let sent = async {
                self.js
                    .publish_with_headers(SUBJECT, headers, payload.clone())
                    .await?
                    .await
            };
            match tokio::time::timeout_at(deadline, sent).await {
                Ok(Ok(ack)) => return Ok(ack.sequence),
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(Publishing::Raced);
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(Publishing::Failed(format!(
                        "the admin change is larger than the engine's max_payload: {e}"
                    )));
                }
                Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "admin record not acknowledged; resending");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => return Err(Publishing::Failed(e.to_string())),
                Err(_) => return Err(Publishing::Failed("no ack in time".to_owned())),
            }
        }
    }

    /// An admin write of this node: `f` is validated and run against the admin data at this
    /// node's last applied record, its changed rows appended with the fence, and the answer
    /// given once this node applied them. Raced by another node's write, `f` runs again on
    /// the newer state. A write of local rows only is committed here as before.
    pub async fn write<R, F>(&self, writer: &Writer, f: F) -> store::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> store::Result<R> + Clone + Send + 'static,
    {
        let _one = self.writing.lock().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let g = f.clone();
            let (r, rows, at) = writer.run(move |db| run_and_diff(db, g)).await??;
            if rows.is_empty() {
                return Ok(r);
            }
            let op = AdminOp::Change {
                node: self.node.clone(),
                rows,
            };
            match self.publish(&op, at).await {
                Ok(seq) => {
                    self.wait_applied(seq).await?;
                    return Ok(r);
                }
                Err(Publishing::Raced) if tokio::time::Instant::now() < deadline => {
                    let last = self.last_seq().await.map_err(Error::Fenced)?;
                    self.wait_applied(last).await?;
                }
                Err(Publishing::Raced) => {
                    return Err(Error::Fenced(
                        "other nodes' admin writes kept coming first".to_owned(),
                    ));
                }
                Err(Publishing::Failed(e)) => return Err(Error::Fenced(format!("{STREAM}: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::admin;

    fn db() -> (
        tempfile::TempDir,
        crate::store::Store,
        std::sync::Arc<redb::Database>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        (dir, store, db)
    }

    fn shared(db: &redb::Database) -> Rows {
        let txn = db.begin_write().unwrap();
        let rows = dump(&txn).unwrap();
        txn.abort().unwrap();
        rows
    }

    #[test]
    fn a_change_applied_elsewhere_gives_the_same_rows_and_ids() {
        let (_a, _sa, origin) = db();
        let (_b, _sb, other) = db();
        // The cluster starts from the origin's snapshot.
        let snap = AdminOp::Snapshot {
            node: "a".into(),
            rows: as_rows(shared(&origin)),
        };
        for d in [&origin, &other] {
            let txn = d.begin_write().unwrap();
            assert!(apply(&txn, 1, &snap).unwrap());
            txn.commit().unwrap();
        }
        assert_eq!(shared(&origin), shared(&other));
        // A tenant, an app and a key made on the origin: validated and diffed there, not
        // committed; applied (through the record's encoding) on both.
        let (minted, rows, at) = run_and_diff(&origin, |txn| {
            admin::add_tenant(txn, "t", 5)?;
            admin::add_app(txn, "x", "t")?;
            admin::mint_key(txn, "x", "k", Vec::new(), None)
        })
        .unwrap();
        assert_eq!(at, 1);
        assert!(rows.iter().any(|r| r.table == 3), "the key's lookup row");
        let op = AdminOp::decode(
            &AdminOp::Change {
                node: "a".into(),
                rows,
            }
            .encode(),
        )
        .unwrap();
        for d in [&origin, &other] {
            let txn = d.begin_write().unwrap();
            assert!(apply(&txn, 2, &op).unwrap());
            // Applied once only.
            assert!(!apply(&txn, 2, &op).unwrap());
            txn.commit().unwrap();
        }
        assert_eq!(shared(&origin), shared(&other));
        let txn = other.begin_write().unwrap();
        assert!(
            txn.open_table(KEYS)
                .unwrap()
                .get(minted.id)
                .unwrap()
                .is_some()
        );
        txn.abort().unwrap();
        // A gap is refused, not skipped over.
        let txn = other.begin_write().unwrap();
        assert!(apply(&txn, 9, &op).is_err());
    }

    #[test]
    fn a_node_with_admin_data_of_its_own_cannot_take_the_clusters() {
        let (_a, _s, d) = db();
        assert_eq!(check_joinable(&shared(&d)), Ok(()));
        let txn = d.begin_write().unwrap();
        admin::mint_key(&txn, "default", "k", Vec::new(), None).unwrap();
        txn.commit().unwrap();
        let e = check_joinable(&shared(&d)).unwrap_err();
        assert!(e.contains("1 keys"), "{e}");
        // A local-only write commits; an admin write on a cluster node's database without
        // the engine is refused.
        let txn = d.begin_write().unwrap();
        txn.open_table(CLUSTER_APPLIED)
            .unwrap()
            .insert(APPLIED_KEY, 3)
            .unwrap();
        txn.commit().unwrap();
        let e = direct_write(&d, |txn| admin::add_tenant(txn, "t", 0)).unwrap_err();
        assert!(e.to_string().contains("running node"), "{e}");
        direct_write(&d, |_| Ok(())).unwrap();
        // Another version is refused, not misread.
        let mut bytes = AdminOp::Change {
            node: "a".into(),
            rows: Vec::new(),
        }
        .encode();
        bytes[0] = 7;
        assert!(AdminOp::decode(&bytes).is_err_and(|e| e.contains("version 7")));
    }
}
