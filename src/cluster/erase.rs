//! Erasure in cluster mode (`privacy` on every node, and in the engine's stream).
//!
//! A tenant's events are in one partition, so an erasure (of one app's subject) concerns one
//! partition, and is run by its owner (a request taken on another node is forwarded on
//! `inlet.erase.<p>`; no owner answers: 503):
//! 1. the subject's linked profile from the owner's graph, and its ledger entry (salted
//!    digests, as on a single inlet);
//! 2. the partition's messages read back from the engine; each that holds one of the
//!    subject's events is rewritten without them (and without the raw body of a request that
//!    carried one);
//! 3. on the writer thread, between commits (so no batch slips in unseen): the messages
//!    appended since step 2 read too, then one [`PrivacyRecord::Erase`] appended with the
//!    partition's fence, holding the entry and the rewritten messages, and the entry recorded
//!    (with its suppression) in the same local commit that marks the record applied;
//! 4. the local erasure (`privacy::apply_recorded`: log, graph, free space);
//! 5. the original messages deleted from the stream (the engine overwrites a deleted
//!    message's bytes);
//! 6. the receipt, answered to the node that took the request.
//!
//! Every node that applies the partition's stream meets the record in order
//! ([`Cluster::apply_privacy`]): it applies the rewritten messages (events it holds already
//! are duplicates; a node that never read the originals, deleted before it came, gets the
//! other events of those batches from them), deletes the originals again, which finishes the
//! erasure of an owner that died between steps 3 and 5 (deleting a deleted message is a
//! no-op; a deletion that fails leaves the record unapplied, to be tried again), then makes
//! the same local erasure (whatever it holds of the subject goes), so both paths end in the
//! same state.
//!
//! The owner also tells the other nodes (a notice on `inlet.erased.<p>`, at most once): a
//! node that held the partition before erases its old copy and records the entry in its
//! ledger at once, rather than when it next reads the partition.
//!
//! An earlier erasure record whose rewritten messages hold the new subject's events is itself
//! rewritten and deleted: its ledger entries travel on in the new record (`carried`).
//! Lifting a suppression is a [`PrivacyRecord::Lift`], the same way.

use super::{Appending, Cluster, Role, events_subject, partition_of};
use crate::cluster::wire::{self, PrivacyRecord};
use crate::identity::Identity;
use crate::privacy::{self, Receipt, Request, Via};
use crate::store::privacy::Erasure;
use crate::store::writer::{Replayed, Writer};
use crate::store::{Error, Result};
use async_nats::jetstream::stream;
use futures_util::StreamExt;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long a forwarded erasure may take (an erasure rewrites the owner's database file).
const ASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Test-only: abort the owner between appending an erasure record and the rest.
const CRASH_ENV: &str = "INLET_TEST_CRASH_AFTER_ERASURE_RECORD";
/// Test-only: this node's first deletion of an original message fails (an engine that did
/// not answer it), to show that a node applying the record tries again.
const FAIL_DELETE_ENV: &str = "INLET_TEST_FAIL_FIRST_DELETE";
static DELETE_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The subject on which partition `p`'s owner takes erasures and lifts.
pub fn erase_subject(p: u32) -> String {
    format!("inlet.erase.{p}")
}

/// The subject on which `p`'s owner tells the other nodes of a privacy record.
fn notice_subject(p: u32) -> String {
    format!("inlet.erased.{p}")
}

/// What the node reaches of its own process for an erasure: its identity graph and writer,
/// on a blocking thread (the job reports through what it captures).
pub type PrivacyJob = Box<dyn FnOnce(&Identity, &Writer) + Send>;

#[derive(Serialize, Deserialize)]
enum Ask {
    Erase(Request),
    Lift(String),
}

#[derive(Serialize, Deserialize)]
enum Answer {
    Erased(Receipt),
    Lifted(u64),
    NotFound(String),
    Refused(String),
    /// Not done (no owner, the engine did not take the record): 503.
    Failed(String),
}

impl Answer {
    fn of(r: Result<Answer>) -> Answer {
        match r {
            Ok(a) => a,
            Err(Error::NotFound(m)) => Answer::NotFound(m),
            Err(Error::Refused(m) | Error::Conflict(m)) => Answer::Refused(m),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    fn into_result(self) -> Result<Answer> {
        match self {
            Answer::NotFound(m) => Err(Error::NotFound(m)),
            Answer::Refused(m) => Err(Error::Refused(m)),
            Answer::Failed(m) => Err(Error::Fenced(m)),
            a => Ok(a),
        }
    }
}

/// The partition of `app`'s tenant.
fn partition_of_app(store: &crate::store::Store, app: &str, partitions: u32) -> Result<u32> {
    use redb::ReadableDatabase;
    let txn = store.db()?.begin_read()?;
    let table = txn.open_table(crate::store::tables::APPS)?;
    let (_, a) = crate::store::find_app(&table, app)?
        .ok_or_else(|| Error::NotFound(format!("no app {app:?}")))?;
    Ok(partition_of(a.tenant_id, partitions))
}

/// A partition's messages that held an erasure's subject, rewritten.
#[derive(Default)]
struct Scanned {
    rewritten: Vec<(u64, Vec<u8>)>,
    carried: Vec<Erasure>,
    /// The last sequence read.
    to: u64,
}

/// Batch `payload` without the events `hit` matches (and without the raw body of a
/// submission that had one); `None` when it has none.
fn rewrite_batch(payload: &[u8], hit: &dyn Fn(&[u8]) -> bool) -> Result<Option<Vec<u8>>> {
    let mut subs = wire::decode_batch(payload).map_err(Error::Corrupt)?;
    let mut touched = false;
    for sub in &mut subs {
        let before = sub.events.len();
        sub.events.retain(|e| !hit(e.record()));
        if sub.events.len() != before {
            touched = true;
            sub.audit = None;
        }
    }
    if !touched {
        return Ok(None);
    }
    subs.retain(|s| !s.events.is_empty());
    let refs: Vec<wire::SubRef<'_>> = subs.iter().map(wire::SubRef::whole).collect();
    Ok(Some(wire::encode_batch(&refs)))
}

impl Cluster {
    fn me(&self) -> Result<Arc<Cluster>> {
        self.this
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| Error::Fenced("the node is not started".into()))
    }

    /// Erases `req`'s subject in the whole cluster (blocking: call it off the runtime, or
    /// inside `block_in_place`): here when this node owns the app's partition, else by its
    /// owner.
    pub fn erase(&self, identity: &Identity, writer: &Writer, req: Request) -> Result<Receipt> {
        let p = partition_of_app(identity.store(), &req.app, self.partitions)?;
        let answer = match self.serving(p) {
            true => self.erase_owned(identity, writer, p, req),
            false => self.ask(p, &Ask::Erase(req)),
        };
        match answer? {
            Answer::Erased(r) => Ok(r),
            _ => Err(Error::Internal("an erasure answered something else".into())),
        }
    }

    /// Lifts the suppression of erasure `id` in the whole cluster (blocking, as [`erase`]).
    pub fn lift(&self, store: &crate::store::Store, writer: &Writer, id: &str) -> Result<u64> {
        let app = privacy::list(store)?
            .into_iter()
            .find(|e| e.id == id)
            .map(|e| e.app)
            .ok_or_else(|| Error::NotFound(format!("no erasure {id:?}")))?;
        let p = partition_of_app(store, &app, self.partitions)?;
        let answer = match self.serving(p) {
            true => self.lift_owned(writer, p, id.to_owned()),
            false => self.ask(p, &Ask::Lift(id.to_owned())),
        };
        match answer? {
            Answer::Lifted(n) => Ok(n),
            _ => Err(Error::Internal("a lift answered something else".into())),
        }
    }

    /// Forwards `ask` to `p`'s owner and waits for its answer.
    fn ask(&self, p: u32, ask: &Ask) -> Result<Answer> {
        let payload = serde_json::to_vec(ask).map_err(|e| Error::Internal(e.to_string()))?;
        let client = self.engine.client.clone();
        let answered = self.rt.block_on(async move {
            let request = async_nats::Request::new()
                .payload(payload.into())
                .timeout(Some(ASK_TIMEOUT));
            tokio::time::timeout(
                ASK_TIMEOUT + Duration::from_secs(1),
                client.send_request(erase_subject(p), request),
            )
            .await
        });
        let msg = match answered {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => {
                return Err(Error::Fenced(format!(
                    "no owner of partition {p} took the erasure: {e}"
                )));
            }
            Err(_) => {
                return Err(Error::Fenced(format!(
                    "the owner of partition {p} did not answer in time"
                )));
            }
        };
        let answer: Answer = serde_json::from_slice(&msg.payload)
            .map_err(|e| Error::Internal(format!("an undecodable answer: {e}")))?;
        answer.into_result()
    }

    /// Takes erasures forwarded for the partitions this node serves (every node listens to
    /// every partition's subject; only the owner answers).
    pub(super) async fn take_erasures(self: Arc<Self>) {
        let client = self.engine.client.clone();
        let mut sub = match client.subscribe("inlet.erase.*").await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot take forwarded erasures");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let Some(p) = msg
                .subject
                .rsplit('.')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .filter(|&p| p < self.partitions)
            else {
                continue;
            };
            if !self.serving(p) {
                continue;
            }
            let Ok(ask) = serde_json::from_slice::<Ask>(&msg.payload) else {
                continue;
            };
            let (tx, rx) = tokio::sync::oneshot::channel::<Answer>();
            let me = self.clone();
            let job: PrivacyJob = Box::new(move |identity, writer| {
                let r = match ask {
                    Ask::Erase(req) => me.erase_owned(identity, writer, p, req),
                    Ask::Lift(id) => me.lift_owned(writer, p, id),
                };
                let _ = tx.send(Answer::of(r));
            });
            let ran = match self.local.get() {
                Some(l) => l.privacy(job),
                None => Err("the node is not started".to_owned()),
            };
            let client = client.clone();
            tokio::spawn(async move {
                let answer = match ran {
                    Ok(()) => rx
                        .await
                        .unwrap_or_else(|_| Answer::Failed("the erasure stopped".into())),
                    Err(e) => Answer::Failed(e),
                };
                let bytes = serde_json::to_vec(&answer).unwrap_or_default();
                let _ = client.publish(reply, bytes.into()).await;
            });
        }
    }

    /// Steps 1–6 on `p`'s owner (blocking).
    fn erase_owned(
        &self,
        identity: &Identity,
        writer: &Writer,
        p: u32,
        req: Request,
    ) -> Result<Answer> {
        let via = Via::Writer(writer);
        let subject = privacy::Subject::of(identity, &req)?;
        let salt = writer.run_blocking(|db| -> Result<Vec<u8>> {
            let txn = crate::store::begin_write(db)?;
            let salt = crate::store::privacy::salt(&txn)?;
            txn.commit()?;
            Ok(salt)
        })??;
        let entry = subject.entry(&salt, &req);
        let hit = Arc::new(privacy::matcher(std::slice::from_ref(&entry))?);
        let upto = self.rt.block_on(self.last_of(p)).map_err(Error::Fenced)?;
        let mut scanned = {
            let hit = hit.clone();
            self.rt
                .block_on(self.scan(p, Scanned::default(), upto, &*hit))?
        };
        let me = self.me()?;
        let recorded = entry.clone();
        let (seq, scanned) = writer.run_blocking(move |db| -> Result<(u64, Scanned)> {
            let (expected, id, lease_end) = me.append_slot(p)?;
            // What was appended since the first read, up to this owner's last append.
            scanned = me.rt.block_on(me.scan(p, scanned, expected, &*hit))?;
            let mut carried = scanned.carried.clone();
            // A suppression lifted since is not brought back by carrying the entry on.
            let ledger = crate::privacy::list_in(db)?;
            for c in &mut carried {
                if let Some(now) = ledger.iter().find(|e| e.id == c.id) {
                    c.suppress = now.suppress;
                }
            }
            let record = PrivacyRecord::Erase {
                entry: recorded.clone(),
                carried: carried.clone(),
                rewritten: scanned.rewritten.clone(),
            };
            let payload = bytes::Bytes::from(wire::encode_privacy(&record));
            let seq = me.append_record(p, (id, expected, lease_end), payload)?;
            let txn = crate::store::begin_write(db)?;
            privacy::record(&txn, &recorded)?;
            for c in &carried {
                privacy::record(&txn, c)?;
            }
            txn.open_table(super::APPLIED)?.insert(p, seq)?;
            txn.commit()?;
            Ok((seq, scanned))
        })??;
        tracing::info!(erasure_id = %entry.id, partition = p, seq, messages = scanned.rewritten.len(), "erasure record appended");
        if std::env::var_os(CRASH_ENV).is_some() {
            tracing::warn!("{CRASH_ENV}: aborting after the erasure record");
            std::process::abort();
        }
        let (done, events) = privacy::apply_recorded(identity, via, &entry)?;
        let originals: Vec<u64> = scanned.rewritten.iter().map(|(s, _)| *s).collect();
        self.rt.block_on(self.delete_originals(p, &originals))?;
        let mut all = vec![entry.clone()];
        all.extend(scanned.carried.iter().cloned());
        self.notify(
            p,
            all.into_iter().map(|entry| PrivacyRecord::Erase {
                entry,
                carried: Vec::new(),
                rewritten: Vec::new(),
            }),
        );
        tracing::info!(erasure_id = %done.id, events, "erasure applied in the cluster");
        Ok(Answer::Erased(subject.receipt(&done, events)))
    }

    /// What the next append of a privacy record to `p` needs, as this node's owner: the
    /// expected last sequence, the message id and the lease's end. Refused when the node
    /// does not serve `p`, or when its lease may have run out (as a group commit's append).
    fn append_slot(&self, p: u32) -> Result<(u64, String, std::time::Instant)> {
        let mut parts = self.parts();
        let part = &mut parts[p as usize];
        if part.role != Role::Serving {
            return Err(Error::Fenced(format!("partition {p} changed hands")));
        }
        if part.last_renew.elapsed() + super::RENEW_MARGIN >= super::LEASE_TTL {
            return Err(Error::Fenced(format!(
                "partition {p}: its lease may have expired"
            )));
        }
        part.batch += 1;
        Ok((
            part.last_seq,
            format!("{p}-{}-{}", part.epoch, part.batch),
            part.last_renew + super::LEASE_TTL,
        ))
    }

    /// Appends a privacy record to `p` in the slot [`Cluster::append_slot`] gave, from a
    /// blocking thread: its sequence. A refused fence steps down; no answer catches up.
    fn append_record(
        &self,
        p: u32,
        (id, expected, lease_end): (String, u64, std::time::Instant),
        payload: bytes::Bytes,
    ) -> Result<u64> {
        let js = self.engine.js.clone();
        let seq = match self
            .rt
            .block_on(Cluster::append(js, p, id, expected, payload, lease_end))
        {
            Ok(seq) => seq,
            Err(Appending::Fenced(e)) => {
                self.step_down(p, &e);
                return Err(Error::Fenced(e));
            }
            Err(Appending::Unknown(e)) => {
                self.catch_up(p);
                return Err(Error::Fenced(e));
            }
        };
        self.parts()[p as usize].last_seq = seq;
        Ok(seq)
    }

    /// A lift on `p`'s owner: the record appended, then lifted here in the same commit.
    fn lift_owned(&self, writer: &Writer, p: u32, lifted: String) -> Result<Answer> {
        let me = self.me()?;
        let lifted_id = lifted.clone();
        let n = writer.run_blocking(move |db| -> Result<u64> {
            let (expected, id, lease_end) = me.append_slot(p)?;
            // Checked before the append: an unknown id appends nothing.
            if !crate::privacy::list_in(db)?.iter().any(|e| e.id == lifted) {
                return Err(Error::NotFound(format!("no erasure {lifted:?}")));
            }
            let payload = wire::encode_privacy(&PrivacyRecord::Lift { id: lifted.clone() });
            let seq = me.append_record(p, (id, expected, lease_end), payload.into())?;
            let txn = crate::store::begin_write(db)?;
            let n = crate::store::privacy::lift(&txn, &lifted)?;
            txn.open_table(super::APPLIED)?.insert(p, seq)?;
            txn.commit()?;
            Ok(n)
        })??;
        self.notify(p, [PrivacyRecord::Lift { id: lifted_id }]);
        Ok(Answer::Lifted(n))
    }

    /// Tells the other nodes (at most once, on `inlet.erased.<p>`) what the owner of `p` just
    /// recorded: a node that held `p` before keeps its events until it reads `p` again, so
    /// it erases (or lifts) locally now. The record in the stream stays the reference.
    fn notify(&self, p: u32, records: impl IntoIterator<Item = PrivacyRecord>) {
        let client = self.engine.client.clone();
        let payloads: Vec<Vec<u8>> = records
            .into_iter()
            .map(|r| wire::encode_privacy(&r))
            .collect();
        self.rt.spawn(async move {
            for payload in payloads {
                let _ = client.publish(notice_subject(p), payload.into()).await;
            }
            let _ = client.flush().await;
        });
    }

    /// Applies the notices of other partitions' owners to this node's database (not the
    /// partitions it serves: their records come through the stream).
    pub(super) async fn take_notices(self: Arc<Self>) {
        let mut sub = match self.engine.client.subscribe("inlet.erased.*").await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot take erasure notices");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            let Some(p) = msg
                .subject
                .rsplit('.')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .filter(|&p| p < self.partitions)
            else {
                continue;
            };
            if self.serving(p) {
                continue;
            }
            let Ok(record) = wire::decode_privacy(&msg.payload) else {
                continue;
            };
            let Some(local) = self.local.get() else {
                continue;
            };
            let job: PrivacyJob = Box::new(move |identity, writer| {
                if let Err(e) = apply_locally(identity, writer, None, record) {
                    tracing::warn!(partition = p, error = %e, "an erasure notice was not applied");
                }
            });
            if let Err(e) = local.privacy(job) {
                tracing::warn!(partition = p, error = %e, "an erasure notice was not applied");
            }
        }
    }

    /// Reads `p`'s messages after `s.to` up to `upto` and adds those that hold events `hit`
    /// matches, rewritten.
    async fn scan(
        &self,
        p: u32,
        mut s: Scanned,
        upto: u64,
        hit: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> Result<Scanned> {
        let subject = events_subject(p);
        while s.to < upto {
            let m = match self
                .stream
                .raw_message_builder()
                .sequence(s.to + 1)
                .next_by_subject(subject.clone())
                .send()
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                Err(e) => {
                    return Err(Error::Fenced(format!(
                        "reading {subject} after {}: {e}",
                        s.to
                    )));
                }
            };
            if m.sequence > upto {
                break;
            }
            s.to = m.sequence;
            if !wire::is_privacy(&m.payload) {
                if let Some(b) = rewrite_batch(&m.payload, hit)? {
                    s.rewritten.push((m.sequence, b));
                }
                continue;
            }
            let PrivacyRecord::Erase {
                entry,
                carried,
                rewritten,
            } = wire::decode_privacy(&m.payload).map_err(Error::Corrupt)?
            else {
                continue;
            };
            let mut out = Vec::with_capacity(rewritten.len());
            let mut touched = false;
            for (_, b) in rewritten {
                match rewrite_batch(&b, hit)? {
                    Some(nb) => {
                        touched = true;
                        out.push((m.sequence, nb));
                    }
                    None => out.push((m.sequence, b)),
                }
            }
            if touched {
                s.rewritten.extend(out);
                s.carried.push(entry);
                s.carried.extend(carried);
            }
        }
        Ok(s)
    }

    /// Deletes the messages an erasure record replaced (deleted ones are skipped: the owner
    /// and the nodes applying the record delete the same messages, at the same time too).
    async fn delete_originals(&self, p: u32, seqs: &[u64]) -> Result<()> {
        use async_nats::jetstream::ErrorCode;
        use async_nats::jetstream::stream::DeleteMessageErrorKind as Kind;
        let mut seqs = seqs.to_vec();
        seqs.dedup();
        for seq in seqs {
            if std::env::var_os(FAIL_DELETE_ENV).is_some()
                && !DELETE_FAILED.swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!("{FAIL_DELETE_ENV}: failing the deletion of message {seq}");
                return Err(Error::Fenced(format!(
                    "deleting message {seq} of partition {p}: {FAIL_DELETE_ENV}"
                )));
            }
            match self.stream.delete_message(seq).await {
                Ok(_) => {}
                Err(e) => match e.kind() {
                    Kind::JetStream(j)
                        if j.error_code() == ErrorCode::NO_MESSAGE_FOUND
                            || j.error_code() == ErrorCode::SEQUENCE_NOT_FOUND
                            || (j.error_code() == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
                                && j.to_string().contains("not found")) => {}
                    _ => {
                        return Err(Error::Fenced(format!(
                            "deleting message {seq} of partition {p}: {e}"
                        )));
                    }
                },
            }
        }
        Ok(())
    }

    /// A [`PrivacyRecord`] met at `seq` while applying `p`'s stream: the rewritten messages,
    /// the originals deleted, then the local erasure (or lift) with `seq` marked applied. A
    /// deletion that fails leaves `seq` unapplied, so this node tries the record again.
    pub(super) async fn apply_privacy(&self, p: u32, seq: u64, payload: &[u8]) -> Result<()> {
        let local = self
            .local
            .get()
            .ok_or_else(|| Error::Fenced("the node is not started".into()))?
            .clone();
        let record = wire::decode_privacy(payload).map_err(Error::Corrupt)?;
        let mut originals = Vec::new();
        if let PrivacyRecord::Erase { rewritten, .. } = &record {
            for (orig, b) in rewritten {
                originals.push(*orig);
                let subs = wire::decode_batch(b).map_err(Error::Corrupt)?;
                let waiting: Vec<_> = subs
                    .into_iter()
                    .map(|sub| local.submit(sub, 0, Some(Replayed { mark: None })))
                    .collect();
                for w in waiting {
                    w.await.map_err(|e| {
                        Error::Fenced(format!("applying erasure record {seq} of {p}: {e}"))
                    })?;
                }
            }
        }
        self.delete_originals(p, &originals).await?;
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let job: PrivacyJob = Box::new(move |identity, writer| {
            let _ = tx.send(apply_locally(identity, writer, Some((p, seq)), record));
        });
        local.privacy(job).map_err(Error::Fenced)?;
        rx.await
            .map_err(|_| Error::Fenced("the erasure stopped".into()))?
    }
}

/// The local part of a privacy record (blocking): recorded, applied, and marked as applied
/// at `mark` (partition, sequence) when read from the stream.
fn apply_locally(
    identity: &Identity,
    writer: &Writer,
    mark: Option<(u32, u64)>,
    record: PrivacyRecord,
) -> Result<()> {
    let via = Via::Writer(writer);
    match record {
        PrivacyRecord::Erase { entry, carried, .. } => {
            let mut all = vec![entry];
            all.extend(carried);
            let recorded = all.clone();
            writer.run_blocking(move |db| -> Result<()> {
                let txn = crate::store::begin_write(db)?;
                for e in &recorded {
                    privacy::record(&txn, e)?;
                }
                txn.commit()?;
                Ok(())
            })??;
            for e in &all {
                privacy::apply_recorded(identity, via, e)?;
            }
        }
        PrivacyRecord::Lift { id } => {
            writer.run_blocking(move |db| -> Result<()> {
                let txn = crate::store::begin_write(db)?;
                match crate::store::privacy::lift(&txn, &id) {
                    // Its erasure record was replaced by a later one that carries its entry
                    // as lifted.
                    Ok(_) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                txn.commit()?;
                Ok(())
            })??;
        }
    }
    let Some((p, seq)) = mark else {
        return Ok(());
    };
    writer.run_blocking(move |db| -> Result<()> {
        let txn = crate::store::begin_write(db)?;
        let mut t = txn.open_table(super::APPLIED)?;
        let now = t.get(p)?.map_or(0, |v| v.value());
        t.insert(p, now.max(seq))?;
        drop(t);
        txn.commit()?;
        Ok(())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_rewritten_without_the_subjects_events_and_the_record_reads_back() {
        let mut one = crate::store::writer::tests::sub(&["a", "b", "c"]);
        one.audit = Some(("k".to_owned(), bytes::Bytes::from_static(b"body with b")));
        let mut two = crate::store::writer::tests::sub(&["d"]);
        two.audit = Some(("k2".to_owned(), bytes::Bytes::from_static(b"body of d")));
        let three = crate::store::writer::tests::sub(&["b"]);
        let batch = wire::encode_batch(&[
            wire::SubRef::whole(&one),
            wire::SubRef::whole(&two),
            wire::SubRef::whole(&three),
        ]);
        let b = one.events[1].record().to_vec();
        let hit = move |r: &[u8]| r == b.as_slice();
        let rewritten = rewrite_batch(&batch, &hit).unwrap().unwrap();
        let back = wire::decode_batch(&rewritten).unwrap();
        // The subject's events gone, with the raw body of the request that carried one; a
        // submission left empty is dropped; the others as they were.
        assert_eq!(back.len(), 2);
        let ids: Vec<&str> = back[0].events.iter().map(|e| e.event_id()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert!(back[0].audit.is_none());
        assert_eq!(back[1].audit.as_ref().unwrap().1.as_ref(), b"body of d");
        // Nothing of the subject: nothing to rewrite.
        assert!(rewrite_batch(&rewritten, &hit).unwrap().is_none());

        // The record's own kind byte: never read as a batch, and read back whole.
        let lift = wire::encode_privacy(&PrivacyRecord::Lift { id: "e1".into() });
        assert!(wire::is_privacy(&lift) && !wire::is_privacy(&batch));
        assert!(wire::decode_batch(&lift).is_err());
        assert!(matches!(
            wire::decode_privacy(&lift).unwrap(),
            PrivacyRecord::Lift { id } if id == "e1"
        ));
        assert!(wire::decode_privacy(&batch).is_err());
    }
}
