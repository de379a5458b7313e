//! Erasure of a data subject: every event of the linked profile of one identifier, in every
//! store of the data dir, with a receipt; and the resumption of erasures a crash interrupted
//! or a restore undid ([`resume`]).
//!
//! How an erasure reaches each store, in order (each step idempotent, so [`resume`] simply
//! runs them all again):
//! 1. **Ledger first.** A pending entry ([`crate::store::privacy::Erasure`]: salted digests of
//!    the profile's identifiers, no values) commits before anything is deleted; with
//!    suppression, the digests join the suppression list in the same commit.
//! 2. **Log.** Events carrying one of the digested identifiers are found by scanning the log
//!    in read transactions and deleted in small writer jobs (like retention): the record,
//!    its dedupe entry, the raw body of its request (the whole body, also of a batch that
//!    carried other events), the Adjust ordering and SKAdNetwork state of its devices.
//!    Panel listings, exports and audit reads read these tables, so they stop showing them.
//! 3. **Identity graph.** Its file is replaced by an empty one and rebuilt from the log.
//! 4. **Free space.** redb keeps the bytes of freed pages, so the log's file is rewritten:
//!    a fresh copy of the current snapshot renamed over it ([`crate::store::copy::rewrite`]);
//!    while serving, the copy is made beside ingest and the writer applies only what changed
//!    since its snapshot before the rename ([`crate::store::copy::finish`]).
//! 5. **Kept copies.** Steps 2 and 4 again in each database `inlet restore` kept in the data
//!    dir (`inlet.redb.pre-restore-<ms>`).
//! 6. **Ledger applied.** The entry is marked applied in the new file.
//!
//! Suppression ([`Suppression`]): the writer asks it of every new event, in the batch's
//! transaction, next to the dedupe check, so every dialect gets the same refusal
//! (`subject_suppressed`), and nothing of the event is stored or billed.

use crate::clock::{now_ms, rfc3339_ms};
use crate::event::{hex, unhex};
use crate::identity::{Identity, encode, view_identifiers};
use crate::store::codec::identity_view;
use crate::store::privacy::{self as ledger, Erasure, IpPolicy, StoreLess};
use crate::store::tables::*;
use crate::store::writer::{CommitListener, Gate, Writer};
use crate::store::{Error, Result, Store};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Events examined per read transaction while looking for an erasure's events.
const SCAN: usize = 20_000;
/// Events deleted per write transaction.
const CHUNK: usize = 500;
/// How far past the newest cut a per-field retention scan looks (receive time and log order
/// differ by at most the commit wait; as retention's `SLACK_MS`).
const SLACK_MS: u64 = 10 * 60 * 1000;

/// Where writes go: this process holds the database, or a serving process's writer thread
/// owns every write transaction.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    Direct,
    Writer(&'a Writer),
}

impl Via<'_> {
    fn write<R: Send + 'static>(
        self,
        store: &Store,
        f: impl FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let in_txn = move |db: &Database| -> Result<R> {
            let txn = crate::store::begin_write(db)?;
            let r = f(&txn)?;
            txn.commit()?;
            Ok(r)
        };
        match self {
            Via::Direct => in_txn(&*store.db()?),
            Via::Writer(w) => w.run_blocking(in_txn)?,
        }
    }

    /// Rewrites the log's file without its free space and opens it again.
    fn rewrite(self, store: &Store) -> Result<()> {
        let path = store.path().to_owned();
        match self {
            Via::Direct => {
                crate::store::copy::rewrite(&*store.db()?, &path)?;
                store.reopen_replaced()?;
            }
            Via::Writer(w) => {
                // The copy of a snapshot is made here, beside ingest; the writer then waits
                // only for the changes since that snapshot to be applied to it.
                let prepared = crate::store::copy::prepare(&*store.db()?, &path)?;
                w.run_then_reopen(move |db| crate::store::copy::finish(db, prepared, &path))??;
            }
        }
        Ok(())
    }
}

/// What an erasure asks for.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Request {
    pub app: String,
    pub kind: String,
    pub value: String,
    /// Refuse later events carrying any of the erased identifiers.
    pub suppress: bool,
}

/// One identifier of a receipt.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Identifier {
    pub kind: String,
    pub value: String,
}

/// What an erasure answers: the only place the erased identifiers are named afterwards (the
/// ledger keeps digests). `digest` is the ledger entry's, so a studio that keeps the receipt
/// can show which entry was its erasure.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Receipt {
    pub erasure_id: String,
    pub at: String,
    pub at_ms: u64,
    pub app: String,
    pub identifiers: Vec<Identifier>,
    pub events: u64,
    pub suppressed: bool,
    pub digest: String,
}

/// A row of the ledger as listed (no personal data in it).
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub erasure_id: String,
    pub at: String,
    pub app: String,
    pub kinds: Vec<String>,
    pub identifiers: usize,
    pub events: u64,
    pub suppressed: bool,
    pub applied: bool,
    pub digest: String,
}

impl From<&Erasure> for Listed {
    fn from(e: &Erasure) -> Listed {
        Listed {
            erasure_id: e.id.clone(),
            at: rfc3339_ms(e.at_ms),
            app: e.app.clone(),
            kinds: e.kinds.clone(),
            identifiers: e.identifiers.len(),
            events: e.events,
            suppressed: e.suppress,
            applied: e.applied,
            digest: e.digest.clone(),
        }
    }
}

/// Erases the linked profile of `req`'s identifier everywhere, and answers with the receipt.
/// An identifier no stored event carries is still recorded (and suppressed, if asked).
/// (Cluster mode goes through `cluster::erase`, which runs the same steps on every node.)
pub fn erase(identity: &Identity, via: Via, req: Request) -> Result<Receipt> {
    let store = identity.store();
    if in_cluster(store)? {
        return Err(Error::Refused(
            "this database is a cluster node's: its events also live in the engine's stream, \
             so an erasure goes through the running node (docs/cluster.md)"
                .into(),
        ));
    }
    let subject = Subject::of(identity, &req)?;
    let salt = via.write(store, ledger::salt)?;
    let entry = subject.entry(&salt, &req);
    let recorded = entry.clone();
    via.write(store, move |txn| record(txn, &recorded))?;
    tracing::info!(erasure_id = %entry.id, app = %entry.app, identifiers = entry.identifiers.len(), "erasure recorded");
    let (done, events) = apply_recorded(identity, via, &entry)?;
    tracing::info!(erasure_id = %done.id, events, "erasure applied");
    Ok(subject.receipt(&done, events))
}

/// The identifiers of an erasure: the asked one and its linked profile's.
pub struct Subject {
    pub identifiers: Vec<Identifier>,
    encoded: Vec<Vec<u8>>,
    kinds: Vec<String>,
}

impl Subject {
    /// Checks `req` and finds the linked profile of its identifier.
    pub fn of(identity: &Identity, req: &Request) -> Result<Subject> {
        if !identity.store().apps()?.iter().any(|a| a.name == req.app) {
            return Err(Error::NotFound(format!("no app {:?}", req.app)));
        }
        if req.kind.is_empty() || req.value.is_empty() {
            return Err(Error::Refused(
                "the identifier needs a kind and a value".into(),
            ));
        }
        let mut identifiers: Vec<Identifier> = vec![Identifier {
            kind: req.kind.clone(),
            value: req.value.clone(),
        }];
        if let Some(p) = identity.profile_of_kind(&req.app, Some(&req.kind), &req.value, 0)? {
            if p.truncated {
                return Err(Error::Refused(format!(
                    "the profile of {:?} links more than {} identifiers: erase them one by one",
                    req.value,
                    crate::identity::MAX_PROFILE_IDENTIFIERS
                )));
            }
            for (kind, value) in p.identifiers {
                let i = Identifier { kind, value };
                if !identifiers.contains(&i) {
                    identifiers.push(i);
                }
            }
        }
        let encoded = identifiers
            .iter()
            .map(|i| encode(&i.kind, &i.value))
            .collect();
        let mut kinds: Vec<String> = identifiers.iter().map(|i| i.kind.clone()).collect();
        kinds.sort();
        kinds.dedup();
        Ok(Subject {
            identifiers,
            encoded,
            kinds,
        })
    }

    /// A new (pending) ledger entry for the subject, its digests salted with `salt`.
    pub fn entry(&self, salt: &[u8], req: &Request) -> Erasure {
        let mut digests: Vec<String> = self
            .encoded
            .iter()
            .map(|i| hex(&ledger::digest(salt, &req.app, i)))
            .collect();
        digests.sort();
        digests.dedup();
        let mut e = Erasure {
            id: crate::event::time_ordered_id(),
            app: req.app.clone(),
            at_ms: now_ms(),
            salt: hex(salt),
            identifiers: digests,
            kinds: self.kinds.clone(),
            events: 0,
            suppress: req.suppress,
            applied: false,
            digest: String::new(),
        };
        e.digest = e.receipt_digest();
        e
    }

    /// The receipt of `done`, which erased `events` events.
    pub fn receipt(self, done: &Erasure, events: u64) -> Receipt {
        Receipt {
            erasure_id: done.id.clone(),
            at: rfc3339_ms(done.at_ms),
            at_ms: done.at_ms,
            app: done.app.clone(),
            identifiers: self.identifiers,
            events,
            suppressed: done.suppress,
            digest: done.digest.clone(),
        }
    }
}

/// Step 1: puts ledger entry `e` (pending) unless the ledger has it already, and its
/// suppression. Idempotent: a cluster node applies an erasure record again after a crash.
pub fn record(txn: &WriteTransaction, e: &Erasure) -> Result<()> {
    if txn.open_table(ERASURES)?.get(e.id.as_str())?.is_some() {
        return Ok(());
    }
    ledger::put(txn, e)?;
    if e.suppress {
        ledger::suppress(txn, e)?;
    }
    Ok(())
}

/// Steps 2–6 for a recorded entry: the ledger entry as marked applied, and the events erased.
pub fn apply_recorded(identity: &Identity, via: Via, entry: &Erasure) -> Result<(Erasure, u64)> {
    let events = apply(identity, via, std::slice::from_ref(entry))?;
    let done = finish(identity.store(), via, entry.id.clone(), events)?;
    Ok((done, events))
}

/// Whether an encoded event record carries an identifier of one of `entries` (of the app the
/// record names): what a cluster's erasure looks for in the engine's stream.
pub fn matcher(entries: &[Erasure]) -> Result<impl Fn(&[u8]) -> bool + use<>> {
    let targets = Targets::of(entries)?;
    Ok(move |record: &[u8]| {
        identity_view(record)
            .is_ok_and(|v| view_identifiers(&v).iter().any(|i| targets.hit(v.app, i)))
    })
}

/// A subject access request: everything stored about the linked profile of `kind=value` in
/// `app`, as NDJSON: a `{"type": "profile", "app", "identifiers"}` line, then each event
/// (`{"type": "event", "event": canonical}`, in log order) and each raw body of their requests
/// (`{"type": "audit", "audit_key", "body"}`, text, lossy UTF-8).
pub fn export(
    identity: &Identity,
    app: &str,
    kind: &str,
    value: &str,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let Some(p) = identity.profile_of_kind(app, Some(kind), value, usize::MAX)? else {
        return Err(Error::NotFound(format!(
            "no event of app {app:?} carries {kind}={value}"
        )));
    };
    let line = |out: &mut dyn std::io::Write, v: serde_json::Value| -> Result<()> {
        serde_json::to_writer(&mut *out, &v).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        Ok(())
    };
    let identifiers: Vec<Identifier> = p
        .identifiers
        .iter()
        .map(|(kind, value)| Identifier {
            kind: kind.clone(),
            value: value.clone(),
        })
        .collect();
    line(
        out,
        serde_json::json!({ "type": "profile", "app": app, "identifiers": identifiers }),
    )?;
    let mut keys: Vec<String> = Vec::new();
    for (seq, r) in p.events.iter().rev() {
        let event = serde_json::to_value(crate::store::read::Canonical::new(*seq, r))
            .map_err(|e| Error::Internal(e.to_string()))?;
        line(out, serde_json::json!({ "type": "event", "event": event }))?;
        if !keys.contains(&r.audit_key) {
            keys.push(r.audit_key.clone());
        }
    }
    for key in keys {
        if let Some(body) = identity.store().audit(&key)? {
            line(
                out,
                serde_json::json!({
                    "type": "audit", "audit_key": key,
                    "body": String::from_utf8_lossy(&body),
                }),
            )?;
        }
    }
    Ok(())
}

/// Marks erasure `id` applied, with `events` erased, and returns it.
fn finish(store: &Store, via: Via, id: String, events: u64) -> Result<Erasure> {
    via.write(store, move |txn| {
        let mut e = ledger::list(&txn.open_table(ERASURES)?)?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| Error::Internal(format!("erasure {id} left the ledger")))?;
        if !e.applied {
            // The digest covers the receipt's count, fixed by the first application.
            e.events = events;
            e.digest = e.receipt_digest();
            e.applied = true;
        }
        ledger::put(txn, &e)?;
        Ok(e)
    })
}

/// The ledger, oldest first.
pub fn list(store: &Store) -> Result<Vec<Erasure>> {
    list_in(&*store.db()?)
}

/// The ledger of `db`, oldest first.
pub fn list_in(db: &Database) -> Result<Vec<Erasure>> {
    let txn = db.begin_read()?;
    ledger::list(&txn.open_table(ERASURES)?)
}

/// Finishes every erasure of the ledger not marked applied (one a crash interrupted): run when
/// a server starts. Returns how many it finished.
pub fn resume(identity: &Identity, via: Via) -> Result<usize> {
    crate::store::copy::remove_stale(identity.store().data_dir());
    let pending: Vec<Erasure> = list(identity.store())?
        .into_iter()
        .filter(|e| !e.applied)
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    let events = apply(identity, via, &pending)?;
    for e in &pending {
        finish(identity.store(), via, e.id.clone(), events)?;
        tracing::warn!(erasure_id = %e.id, "an interrupted erasure was completed");
    }
    Ok(pending.len())
}

/// Applies every erasure of the ledger again (a restored backup may predate some): the log,
/// the graph and the free space. Returns the events erased.
pub fn reapply_all(identity: &Identity, via: Via) -> Result<u64> {
    let all = list(identity.store())?;
    if all.is_empty() {
        return Ok(0);
    }
    apply(identity, via, &all)
}

/// Steps 2–4 for `entries`: deletes their events, replaces the graph, rewrites the log's file;
/// then the same for every copy a restore kept in the data dir. Returns the events erased
/// from the live log.
fn apply(identity: &Identity, via: Via, entries: &[Erasure]) -> Result<u64> {
    let store = identity.store();
    let targets = Targets::of(entries)?;
    let erased = remove_matching(&Live(store, via), &targets)?;
    identity.forget_graph()?;
    via.rewrite(store)?;
    for copy in kept_copies(store.data_dir())? {
        let db = Arc::new(Database::open(&copy)?);
        remove_matching(&Kept(db.clone()), &targets)?;
        crate::store::copy::rewrite(&db, &copy)?;
        tracing::info!(file = %copy.display(), "erasures applied to a copy kept by a restore");
    }
    Ok(erased)
}

/// The databases `inlet restore` kept beside the live one (`inlet.redb.pre-restore-<ms>`):
/// they are in the data dir, so an erasure reaches them too.
fn kept_copies(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let prefix = format!("{}.pre-restore-", crate::store::DB_FILE);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Where an erasure deletes: the live log (writes through the writer when serving) or a copy
/// a restore kept (no one else has it open).
trait Log {
    fn db(&self) -> Result<Arc<Database>>;
    fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    ) -> Result<R>;
}

struct Live<'a>(&'a Store, Via<'a>);

impl Log for Live<'_> {
    fn db(&self) -> Result<Arc<Database>> {
        self.0.db()
    }
    fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.1.write(self.0, f)
    }
}

struct Kept(Arc<Database>);

impl Log for Kept {
    fn db(&self) -> Result<Arc<Database>> {
        Ok(self.0.clone())
    }
    fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let txn = crate::store::begin_write(&self.0)?;
        let r = f(&txn)?;
        txn.commit()?;
        Ok(r)
    }
}

/// Step 2 in `log`: the events carrying an erased identifier, and their devices' state.
/// Returns the events deleted.
fn remove_matching(log: &impl Log, targets: &Targets) -> Result<u64> {
    let mut erased = 0;
    let mut from = 0;
    loop {
        let (victims, next) = find_chunk(&*log.db()?, targets, from)?;
        for part in victims.chunks(CHUNK) {
            let part = part.to_vec();
            erased += log.write(move |txn| delete(txn, &part))?;
        }
        match next {
            Some(n) => from = n,
            None => break,
        }
    }
    let held = find_held(&*log.db()?, targets)?;
    if !held.is_empty() {
        log.write(move |txn| {
            for (app_id, qids) in held {
                crate::store::quarantine::remove(txn, app_id, &qids)?;
            }
            Ok(())
        })?;
    }
    let devices = find_devices(&*log.db()?, targets)?;
    if !devices.is_empty() {
        log.write(move |txn| {
            let mut order = txn.open_table(ORDERING)?;
            let mut skan = txn.open_table(SKAN_VALUES)?;
            for (table, key) in devices {
                match table {
                    Device::Order => order.remove(key.as_slice())?.map(|_| ()),
                    Device::Skan => skan.remove(key.as_slice())?.map(|_| ()),
                };
            }
            Ok(())
        })?;
    }
    Ok(erased)
}

/// Salted digests of identifiers, each with its app.
type Digests = HashSet<(String, [u8; 32])>;

/// The digests of a set of erasures, per salt, and the kinds of the identifiers they name.
struct Targets(Vec<(Vec<u8>, Digests)>, HashSet<String>);

impl Targets {
    fn of(entries: &[Erasure]) -> Result<Targets> {
        let mut by_salt: HashMap<Vec<u8>, Digests> = HashMap::new();
        let kinds = entries
            .iter()
            .flat_map(|e| e.kinds.iter().cloned())
            .collect();
        for e in entries {
            let set = by_salt.entry(e.salt_bytes()?).or_default();
            for d in &e.identifiers {
                let d: [u8; 32] = unhex(d)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| Error::Corrupt(format!("erasure {}: bad digest", e.id)))?;
                set.insert((e.app.clone(), d));
            }
        }
        Ok(Targets(by_salt.into_iter().collect(), kinds))
    }

    /// Whether identifier `ident` (encoded) of `app` is erased.
    fn hit(&self, app: &str, ident: &[u8]) -> bool {
        self.0
            .iter()
            .any(|(salt, set)| set.contains(&(app.to_owned(), ledger::digest(salt, app, ident))))
    }
}

/// An event to delete.
#[derive(Debug, Clone)]
struct Victim {
    event: crate::store::Victim,
    /// The GameRebellion session it started, stopped or ended (its `session_key`): the
    /// session tables name it, and the open ones a digest of its identifiers.
    session: Option<Vec<u8>>,
}

/// Scans the log from seq `from` for events carrying an erased identifier.
fn find_chunk(db: &Database, targets: &Targets, from: u64) -> Result<(Vec<Victim>, Option<u64>)> {
    let txn = db.begin_read()?;
    let app_ids: HashMap<String, u32> = app_names(&txn)?
        .into_iter()
        .map(|(id, name)| (name, id))
        .collect();
    let mut victims = Vec::new();
    for (scanned, row) in txn.open_table(EVENTS)?.range(from..)?.enumerate() {
        let (seq, bytes) = row?;
        if scanned == SCAN {
            return Ok((victims, Some(seq.value())));
        }
        let v = identity_view(bytes.value())?;
        if view_identifiers(&v).iter().any(|i| targets.hit(v.app, i)) {
            let app_id = app_ids.get(v.app).copied().unwrap_or(0);
            let record = crate::store::codec::decode_event(bytes.value())?;
            let session = (record.source
                == <crate::dialect::GameRebellion as crate::dialect::Dialect>::SOURCE)
                .then(|| {
                    let props: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(&record.props).ok()?;
                    Some(session_key(app_id, props.get("session_id")?.as_str()?))
                })
                .flatten();
            victims.push(Victim {
                event: crate::store::Victim {
                    seq: seq.value(),
                    dedupe_key: dedupe_key(app_id, v.event_id),
                    audit_key: record.audit_key,
                },
                session,
            });
        }
    }
    Ok((victims, None))
}

/// Deletes `victims` in `txn` (`store::remove_events`, each request's raw body at once),
/// their receipts and the GameRebellion sessions they name. Returns how many events it
/// deleted.
fn delete(txn: &WriteTransaction, victims: &[Victim]) -> Result<u64> {
    let events = victims.iter().map(|v| &v.event);
    let removed = crate::store::remove_events(txn, events, crate::store::BodyRule::Erase)?;
    for v in victims {
        crate::store::receipts::forget(txn, &v.event.dedupe_key)?;
    }
    let mut sessions = txn.open_table(SESSIONS)?;
    let mut open = txn.open_table(OPEN_SESSIONS)?;
    for key in victims.iter().filter_map(|v| v.session.as_deref()) {
        let started = sessions
            .remove(key)?
            .map(|v| crate::store::codec::decode_session(v.value()))
            .transpose()?;
        if let Some((start_ms, Some(identity))) = started {
            open.remove(open_session_key(key, &identity, start_ms).as_slice())?;
        }
    }
    Ok(removed)
}

/// Quarantined events (refused, kept for replay) of the erased, per app id. A held item is
/// the request's own item, not a stored record: each of its values (JSON leaves, or form
/// values) is tried as each kind of identifier the erasures name.
fn find_held(db: &Database, targets: &Targets) -> Result<Vec<(u32, Vec<u64>)>> {
    use crate::store::tables::QUARANTINE;
    let txn = db.begin_read()?;
    let apps = app_names(&txn)?;
    let mut out: Vec<(u32, Vec<u64>)> = Vec::new();
    let table = match txn.open_table(QUARANTINE) {
        Ok(t) => t,
        // A copy a restore kept may come from a database without a quarantine.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for row in table.iter()? {
        let (k, v) = row?;
        let k = k.value();
        let (Some(app_id), Some(qid)) = (
            k.get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes),
            k.get(4..12)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes),
        ) else {
            continue;
        };
        let Some(app) = apps.get(&app_id) else {
            continue;
        };
        let held = crate::store::quarantine::Held::decode(v.value())?;
        let hit = item_values(&held.raw).iter().any(|value| {
            targets
                .1
                .iter()
                .any(|kind| targets.hit(app, &encode(kind, value)))
        });
        if hit {
            match out.last_mut() {
                Some((a, qids)) if *a == app_id => qids.push(qid),
                _ => out.push((app_id, vec![qid])),
            }
        }
    }
    Ok(out)
}

/// Every value of a raw request item: a JSON document's strings and numbers at any depth
/// (a string that is itself JSON, such as AppsFlyer's `eventValue`, too), else a form's values.
fn item_values(raw: &[u8]) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => {
                if let Ok(inner @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) =
                    serde_json::from_str(s)
                {
                    walk(&inner, out);
                }
                out.push(s.clone());
            }
            serde_json::Value::Number(n) => out.push(n.to_string()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(m) => m.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(v) => walk(&v, &mut out),
        Err(_) => {
            for pair in raw.split(|&b| b == b'&') {
                let value = pair.splitn(2, |&b| b == b'=').nth(1).unwrap_or_default();
                if let Some(v) = crate::dialect::form::decode_text(value) {
                    out.push(v);
                }
            }
        }
    }
    // Identifiers some dialects normalise (device ids) are tried in both cases too.
    let cased: Vec<String> = out
        .iter()
        .flat_map(|v| [v.to_lowercase(), v.to_uppercase()])
        .filter(|c| !out.contains(c))
        .collect();
    out.extend(cased);
    out
}

/// Whether this database is a cluster node's (it applied batches of the engine's stream).
fn in_cluster(store: &Store) -> Result<bool> {
    let txn = store.db()?.begin_read()?;
    match txn.open_table(CLUSTER_APPLIED) {
        Ok(t) => Ok(t.first()?.is_some()),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Every app's name by its id.
fn app_names(txn: &redb::ReadTransaction) -> Result<HashMap<u32, String>> {
    let mut apps = HashMap::new();
    for row in txn.open_table(APPS)?.iter()? {
        let (id, bytes) = row?;
        let app: crate::store::codec::App =
            crate::store::codec::decode_config("app", bytes.value())?;
        apps.insert(id.value(), app.name);
    }
    Ok(apps)
}

enum Device {
    Order,
    Skan,
}

/// Adjust's per-device state (ordering guard, SKAdNetwork value) of erased device ids: keys
/// ending in `name=value`.
fn find_devices(db: &Database, targets: &Targets) -> Result<Vec<(Device, Vec<u8>)>> {
    let txn = db.begin_read()?;
    let apps = app_names(&txn)?;
    let erased = |key: &[u8], device: &[u8]| -> bool {
        let Some(app) = key
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .and_then(|b| apps.get(&u32::from_be_bytes(b)))
        else {
            return false;
        };
        let Ok(device) = std::str::from_utf8(device) else {
            return false;
        };
        device
            .split_once('=')
            .is_some_and(|(name, value)| targets.hit(app, &encode(name, value)))
    };
    let mut out = Vec::new();
    for row in txn.open_table(ORDERING)?.iter()? {
        let (k, _) = row?;
        let k = k.value();
        let device = k
            .get(4..)
            .and_then(|rest| rest.iter().position(|&b| b == 0).map(|i| &rest[i + 1..]));
        if device.is_some_and(|d| erased(k, d)) {
            out.push((Device::Order, k.to_vec()));
        }
    }
    for row in txn.open_table(SKAN_VALUES)?.iter()? {
        let (k, _) = row?;
        let k = k.value();
        if k.get(4..).is_some_and(|d| erased(k, d)) {
            out.push((Device::Skan, k.to_vec()));
        }
    }
    Ok(out)
}

/// The suppression check of the writer (a [`CommitListener`] whose gate refuses new events
/// carrying a suppressed identifier), in the batch's own transaction: a suppression or its
/// lifting acts from the next batch on, on every dialect. The list is kept in memory while
/// its version (`meta["suppression_version"]`, bumped in every commit that changes it) stays.
#[derive(Default)]
pub struct Suppression(std::sync::Mutex<Option<(u64, Arc<Suppressed>)>>);

/// The suppression list as of one version: its digests, by the salt they were made with
/// (empty: no suppression). A cluster node's list holds digests made by other nodes, each
/// with its own salt; the salt of a digest is its erasure's (the list names the erasure).
type Suppressed = Vec<(Vec<u8>, HashSet<[u8; 32]>)>;

impl Suppression {
    fn read(txn: &WriteTransaction) -> Result<Suppressed> {
        let table = txn.open_table(SUPPRESSED)?;
        let ledger_table = txn.open_table(ERASURES)?;
        let local = ledger::read_salt(&txn.open_table(META)?)?;
        let mut salt_of: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut by_salt: HashMap<Vec<u8>, HashSet<[u8; 32]>> = HashMap::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let Ok(d) = <[u8; 32]>::try_from(k.value()) else {
                continue;
            };
            let id = v.value().to_vec();
            if !salt_of.contains_key(&id) {
                let of_entry = match std::str::from_utf8(&id)
                    .ok()
                    .map(|id| ledger_table.get(id))
                    .transpose()?
                    .flatten()
                {
                    Some(bytes) => {
                        let e: Erasure =
                            crate::store::codec::decode_config("erasure", bytes.value())?;
                        Some(e.salt_bytes()?)
                    }
                    // A list carried over by a restore may name an erasure the ledger lost.
                    None => local.clone(),
                };
                salt_of.insert(id.clone(), of_entry);
            }
            if let Some(salt) = salt_of[&id].clone() {
                by_salt.entry(salt).or_default().insert(d);
            }
        }
        Ok(by_salt.into_iter().collect())
    }
}

impl CommitListener for Suppression {
    fn gate(&self, txn: &WriteTransaction) -> Result<Option<Gate>> {
        let version = ledger::suppression_version(&txn.open_table(META)?)?;
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list = match cached.as_ref() {
            Some((v, list)) if *v == version => list.clone(),
            _ => {
                let list = Arc::new(Suppression::read(txn)?);
                *cached = Some((version, list.clone()));
                list
            }
        };
        if list.is_empty() {
            return Ok(None);
        }
        Ok(Some(Box::new(move |record: &[u8]| {
            identity_view(record).is_ok_and(|v| {
                view_identifiers(&v).iter().any(|i| {
                    list.iter()
                        .any(|(salt, digests)| digests.contains(&ledger::digest(salt, v.app, i)))
                })
            })
        })))
    }
}

/// Each app's [`StoreLess`] policy, read again when the configuration generation changed (the
/// writer bumps it after every admin job).
#[derive(Default)]
pub struct Policies(std::sync::Mutex<Option<(u64, HashMap<u32, StoreLess>)>>);

impl Policies {
    /// The policy of `app_id` as of configuration `generation`.
    pub fn of(&self, store: &Store, generation: u64, app_id: u32) -> StoreLess {
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cached.as_ref().is_none_or(|(g, _)| *g != generation) {
            let all = store
                .db()
                .and_then(|db| Ok(db.begin_read()?))
                .and_then(|txn| ledger::store_less_all(&txn.open_table(META)?));
            match all {
                Ok(all) => *cached = Some((generation, all)),
                // Unreadable now (the store is being reopened): keep less rather than more.
                Err(_) => {
                    return StoreLess {
                        ip: IpPolicy::Drop,
                        drop_user_agent: true,
                        fields_days: None,
                    };
                }
            }
        }
        cached
            .as_ref()
            .and_then(|(_, all)| all.get(&app_id).copied())
            .unwrap_or_default()
    }
}

/// `ip` truncated: IPv4 to its /24, IPv6 to its /48; `None` when it is no address.
pub fn truncate_ip(ip: &str) -> Option<String> {
    match ip.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(std::net::Ipv4Addr::new(a, b, c, 0).to_string())
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string())
        }
    }
}

/// Applies `policy` to what `sub` will store, on arrival: `context.ip` truncated or dropped,
/// `context.user_agent` dropped, in each event and in the raw body (as written, JSON-escaped
/// or percent-encoded). A value that is not an address is dropped under `truncate`.
pub fn store_less(policy: StoreLess, sub: &mut crate::store::writer::Submission) {
    if policy.is_keep_all() {
        return;
    }
    // (stored value, what replaces it in the raw body)
    let mut replaced: Vec<(String, String)> = Vec::new();
    for p in &mut sub.events {
        p.map_record(|r| {
            let Ok(mut ctx) =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&r.context)
            else {
                return false;
            };
            let mut changed = false;
            if policy.ip != IpPolicy::Keep
                && let Some(slot) = ctx.get_mut("ip")
            {
                changed = true;
                let old = slot.as_str().unwrap_or_default().to_owned();
                let new = match policy.ip {
                    IpPolicy::Truncate => truncate_ip(&old),
                    _ => None,
                };
                // In place: the sender's order of fields is kept.
                match &new {
                    Some(new) => *slot = serde_json::Value::String(new.clone()),
                    None => {
                        ctx.shift_remove("ip");
                    }
                }
                replaced.push((old, new.unwrap_or_default()));
            }
            if policy.drop_user_agent
                && let Some(old) = ctx.shift_remove("user_agent")
            {
                changed = true;
                replaced.push((old.as_str().unwrap_or_default().to_owned(), String::new()));
            }
            if changed {
                r.context = serde_json::Value::Object(ctx).to_string();
            }
            changed
        });
    }
    if let Some((_, body)) = &mut sub.audit {
        let mut text = body.to_vec();
        for (old, new) in replaced.iter().filter(|(old, _)| !old.is_empty()) {
            let escaped = |s: &str| {
                let q = serde_json::Value::String(s.to_owned()).to_string();
                q[1..q.len() - 1].to_owned()
            };
            let pct = |s: &str| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            for (from, to) in [
                (old.clone(), new.clone()),
                (escaped(old), escaped(new)),
                (pct(old), pct(new)),
                (old.replace(' ', "+"), new.replace(' ', "+")),
            ] {
                if !from.is_empty() {
                    text = replace_all(&text, from.as_bytes(), to.as_bytes());
                }
            }
        }
        *body = text.into();
    }
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut rest = hay;
    while let Some(i) = memchr::memmem::find(rest, from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Per-field retention (one pass as of `now_ms`): events of apps with
/// [`StoreLess::fields_days`] older than that lose `context.ip`, `context.user_agent`, their
/// device ids and their raw bodies; the graph is then rebuilt and the log's file rewritten
/// (as for an erasure), so the old values are nowhere in the data dir. Returns the events
/// changed.
pub fn field_retention(identity: &Identity, via: Via, now_ms: u64) -> Result<u64> {
    let store = identity.store();
    let (cuts, by_id): (HashMap<String, u64>, HashMap<u32, u64>) = {
        let txn = store.db()?.begin_read()?;
        let policies = ledger::store_less_all(&txn.open_table(META)?)?;
        let (mut cuts, mut by_id) = (HashMap::new(), HashMap::new());
        for row in txn.open_table(APPS)?.iter()? {
            let (id, bytes) = row?;
            let app: crate::store::codec::App =
                crate::store::codec::decode_config("app", bytes.value())?;
            if let Some(days) = policies.get(&id.value()).and_then(|p| p.fields_days) {
                let cut = now_ms.saturating_sub(u64::from(days) * 86_400_000);
                cuts.insert(app.name, cut);
                by_id.insert(id.value(), cut);
            }
        }
        (cuts, by_id)
    };
    if cuts.is_empty() {
        return Ok(0);
    }
    let newest_cut = cuts.values().copied().max().unwrap_or(0);
    // Adjust's ordering state names devices: rows whose last event is past the cut go.
    let stale: Vec<Vec<u8>> = {
        let txn = store.db()?.begin_read()?;
        let mut stale = Vec::new();
        for row in txn.open_table(ORDERING)?.iter()? {
            let (k, ts) = row?;
            let cut = k
                .value()
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .and_then(|b| by_id.get(&u32::from_be_bytes(b)));
            if cut.is_some_and(|&cut| ts.value() < cut as i64) {
                stale.push(k.value().to_vec());
            }
        }
        stale
    };
    let mut changed = 0;
    let ordering_changed = !stale.is_empty();
    if ordering_changed {
        via.write(store, move |txn| {
            let mut t = txn.open_table(ORDERING)?;
            for k in &stale {
                t.remove(k.as_slice())?;
            }
            Ok(())
        })?;
    }
    let mut from = 0;
    loop {
        let (victims, next) = {
            let txn = store.db()?.begin_read()?;
            let mut victims: Vec<(u64, String)> = Vec::new();
            let mut next = None;
            for (scanned, row) in txn.open_table(EVENTS)?.range(from..)?.enumerate() {
                let (seq, bytes) = row?;
                if scanned == SCAN {
                    next = Some(seq.value());
                    break;
                }
                let r = crate::store::codec::decode_event(bytes.value())?;
                // The log is in receive order (up to the commit wait): nothing later is due.
                if r.received_at_ms > newest_cut.saturating_add(SLACK_MS) {
                    break;
                }
                let old = cuts.get(&r.app).is_some_and(|&cut| r.received_at_ms < cut);
                if old && (has_client_fields(&r.context) || !r.ids.is_empty()) {
                    victims.push((seq.value(), r.audit_key));
                }
            }
            (victims, next)
        };
        for part in victims.chunks(CHUNK) {
            let part = part.to_vec();
            changed += via.write(store, move |txn| {
                let mut events = txn.open_table(EVENTS)?;
                let mut n = 0;
                for (seq, audit_key) in &part {
                    let Some(bytes) = events.get(*seq)?.map(|b| b.value().to_vec()) else {
                        continue;
                    };
                    let mut r = crate::store::codec::decode_event(&bytes)?;
                    r.ids.clear();
                    if let Ok(mut ctx) = serde_json::from_str::<
                        serde_json::Map<String, serde_json::Value>,
                    >(&r.context)
                    {
                        ctx.shift_remove("ip");
                        ctx.shift_remove("user_agent");
                        r.context = serde_json::Value::Object(ctx).to_string();
                    }
                    events.insert(*seq, crate::store::codec::encode_event(&r).as_slice())?;
                    crate::store::audit::erase(txn, audit_key, *seq)?;
                    n += 1;
                }
                Ok(n)
            })?;
        }
        match next {
            Some(n) => from = n,
            None => break,
        }
    }
    if changed > 0 || ordering_changed {
        identity.forget_graph()?;
        via.rewrite(store)?;
    }
    Ok(changed)
}

fn has_client_fields(context: &str) -> bool {
    context.contains("\"ip\"") || context.contains("\"user_agent\"")
}
