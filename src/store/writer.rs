//! The group-commit writer: one thread owns every write transaction of a serving process.
//!
//! Requests hand their validated, pre-encoded events to [`Writer::submit`] and wait. The thread
//! takes everything queued (up to [`MAX_BATCH_EVENTS`]), runs dedupe check, append and quota
//! increment for all of it in one transaction, commits durably (fsync), and only then answers
//! each request. So many requests share one fsync, and no request is answered before the
//! commit holding its events returned.
//!
//! The queue is bounded by the bytes of the requests in it ([`Writer::start`]'s `queue_bytes`); a
//! request that does not fit gets [`SubmitError::Overloaded`] at once instead of waiting.
//!
//! A failed commit (I/O error, full disk, failed fsync) is never retried: every request of
//! that batch gets [`SubmitError::CommitFailed`], even though redb may have made part of it
//! durable (a client that retries then meets the dedupe entry). redb refuses every operation
//! after an I/O failure, so the writer then closes the database and opens it again (redb repairs it), retrying with backoff; until that succeeds
//! every submission gets `CommitFailed` at once and readiness reports the writer unhealthy.
//!
//! The writer knows nothing of what is derived from the log: it publishes each batch to the
//! [`CommitListener`]s it was started with (the panel's tallies, inside the transaction; the
//! identity indexer, after the commit).

use super::codec::{decode_session, encode_session};
use super::dedupe::{Check, Committed, Known, Precheck, Staged};
use super::tables::*;
use super::{Error, Result, Store};
use crate::clock::month_key;
use redb::{Database, ReadableTable, WriteTransaction};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Most events one commit takes (it may take one request more to finish a request whole).
pub const MAX_BATCH_EVENTS: usize = 16_384;
// The dedupe index sizes its tables of new fingerprints for batches of this size.
const _: () = assert!(MAX_BATCH_EVENTS <= super::dedupe::BATCH_ROOM);
/// Most requests one commit answers.
pub const MAX_BATCH_REQUESTS: usize = 4_096;
/// Default queue budget: bytes of request bodies waiting for the writer.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

/// Ids a submission may settle on its runtime thread; above, [`Writer::submit`] uses
/// `block_in_place`.
const SETTLE_IN_PLACE: usize = 32;

fn multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

pub use super::pending::{Guard, Pending, SkanUpdate};
use super::receipts::{Note, Noted, RECEIPTS_PER_APP};

/// The events of one request, all of the same key.
pub struct Submission {
    pub app_id: u32,
    pub tenant_id: u32,
    /// 0 when the request was not made with a key (signed Datafly requests).
    pub key_id: u32,
    pub received_at_ms: u64,
    pub events: Vec<Pending>,
    /// Audit key and raw body, stored when at least one event is accepted.
    pub audit: Option<(String, bytes::Bytes)>,
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted {
        seq: u64,
    },
    /// Its (app, event_id) was stored before, as `seq`.
    Duplicate {
        seq: u64,
    },
    /// The tenant's monthly quota is used up.
    OverQuota,
    /// Its [`Guard::NotBefore`] found a later timestamp already accepted.
    OutOfOrder,
    /// It carries an identifier of a suppressed subject (a [`CommitListener::gate`] refused
    /// it): not stored, not billed.
    Suppressed,
}

/// Asked of every new event of a batch: whether to refuse it (its encoded record).
pub type Gate = Box<dyn Fn(&[u8]) -> bool>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the writer queue is full")]
    Overloaded,
    #[error("the writer has stopped")]
    ShuttingDown,
    #[error("the commit failed")]
    CommitFailed,
}

/// The outcomes, and the submission itself handed back so that its buffers (records, raw
/// body) are freed on the request's thread rather than on the writer's. The records of
/// accepted events are not in it when a listener took them ([`CommitListener::stored`]).
type Answer = oneshot::Sender<(Result<Vec<Outcome>, SubmitError>, Submission)>;
type Job = Box<dyn FnOnce(&Database) + Send>;

enum Msg {
    /// A submission; `true`: a dry run (judged in a transaction that is aborted); `Some`:
    /// replayed (see [`Writer::submit_replayed`]).
    Ingest(
        Submission,
        Vec<Known>,
        Answer,
        OwnedSemaphorePermit,
        bool,
        Option<Replayed>,
    ),
    /// Receipt tallies, written with the next commit.
    Notes(Vec<Note>),
    Job(Job),
    /// A job after which the writer opens the database file again (it replaced the file).
    Reopen(Job),
    Stop,
}

/// Something derived from the log, told of every batch the writer commits.
pub trait CommitListener: Send + Sync {
    /// Inside the batch's write transaction, after its events are appended: what it writes
    /// here commits with the batch or not at all. An error fails the whole commit.
    fn in_commit(&self, _txn: &WriteTransaction, _accepted: &[Accepted]) -> Result<()> {
        Ok(())
    }

    /// A check of this batch's new events, made in its transaction (`None`: nothing to
    /// check). An event it refuses is answered [`Outcome::Suppressed`] and not stored; the
    /// raw body of its request is not kept either.
    fn gate(&self, _txn: &WriteTransaction) -> Result<Option<Gate>> {
        Ok(None)
    }

    /// Every event up to `seq` is durable (after each commit, when the writer starts and after
    /// it reopened the database).
    fn committed(&self, _seq: u64) {}

    /// Whether it takes the records of each committed batch ([`CommitListener::stored`]).
    fn wants_stored(&self) -> bool {
        false
    }

    /// The events a batch stored, after its commit returned and before
    /// [`CommitListener::committed`] reports it (only when [`CommitListener::wants_stored`]).
    /// They are exactly the log's seqs `first..` of the batch, as committed.
    fn stored(&self, _events: &Arc<Stored>) {}

    /// Called on the writer thread before it takes its next batch. A listener that must stay
    /// within a bounded distance of the log (the identity indexer) holds the writer here
    /// until it is within it again, for a bounded time: the requests wait in the queue
    /// meanwhile, and past the queue's bound they are answered 503 with a `Retry-After`.
    fn pace(&self) {}

    /// The writer opened its database again (after a failure, or a job replaced the file):
    /// what [`CommitListener::stored`] handed over before may differ from the file now.
    fn reopened(&self) {}

    /// The writer thread has stopped (its last batch is committed).
    fn writer_stopped(&self) {}
}

/// The enrichment dictionary stores the ids handed out since the last commit in each one
/// (`store::enrichments`).
impl CommitListener for super::enrichments::Dictionary {
    fn in_commit(&self, txn: &WriteTransaction, _accepted: &[Accepted]) -> Result<()> {
        self.store_new(txn)
    }
}

/// The events of one submission that a batch accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub app_id: u32,
    pub received_at_ms: u64,
    pub events: u64,
}

/// The listeners a writer publishes to.
pub type Listeners = Vec<Arc<dyn CommitListener>>;

/// The events one commit stored, handed to the listeners that ask for them, so that they
/// need not read back from the log what the writer just wrote.
#[derive(Debug, Default)]
pub struct Stored {
    /// (seq, app id, encoded record), in seq order, without gaps.
    pub events: Vec<(u64, u32, Vec<u8>)>,
}

impl Stored {
    /// Bytes of records it holds.
    pub fn bytes(&self) -> usize {
        self.events.iter().map(|(_, _, r)| r.len()).sum()
    }
}

/// A submission whose outcomes were decided elsewhere (cluster mode: by a partition's
/// earlier owner, read back from the engine). The writer applies it: only the dedupe check
/// runs (so applying it twice stores it once); no gate, ordering or quota refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Handed to the [`Commit`] hook with the batch (cluster mode: the engine sequence this
    /// submission completes).
    pub mark: Option<u64>,
}

/// One submission of a batch as the [`Commit`] hook sees it.
pub struct Decided<'a> {
    pub sub: &'a Submission,
    pub outcomes: &'a [Outcome],
    pub replayed: Option<Replayed>,
}

/// Called by the writer between deciding a batch and committing it (cluster mode's fenced
/// append to the engine). `before_commit` may write in the batch's transaction; an error
/// refuses the whole batch: nothing is committed, every request gets
/// [`SubmitError::CommitFailed`], and the database stays open. `settled` follows with
/// whether the commit then succeeded.
pub trait Commit: Send + Sync {
    fn before_commit(
        &self,
        txn: &WriteTransaction,
        batch: &[Decided<'_>],
    ) -> std::result::Result<(), String>;

    fn settled(&self, _committed: bool) {}
}

/// The one [`Commit`] hook of a writer, if any.
pub type CommitHook = Option<Arc<dyn Commit>>;

/// Handle to the writer thread.
pub struct Writer {
    tx: SyncSender<Msg>,
    budget: Arc<Semaphore>,
    budget_kib: u32,
    stats: Arc<Stats>,
    thread: Mutex<Option<JoinHandle<()>>>,
    listeners: Arc<Listeners>,
    /// Dedupe lookups on the submitting thread (shares the writer's filters).
    precheck: Arc<Precheck>,
}

/// Live figures of the writer, for readiness and metrics.
#[derive(Default)]
pub struct Stats {
    pub running: AtomicBool,
    /// False after a failed commit, true again after the database was reopened or a commit
    /// succeeded.
    pub healthy: AtomicBool,
    pub queued_requests: AtomicUsize,
    pub commits: AtomicUsize,
    /// Commit latency and batch size histograms.
    pub metrics: crate::metrics::WriterMetrics,
    /// Bumped after every job (admin writes run as jobs) before its caller is answered;
    /// caches of configuration (the key cache) are valid only within one generation.
    pub config_generation: AtomicU64,
    /// Commits that failed (nothing of them was acknowledged).
    pub failed_commits: AtomicUsize,
    /// Times the database was reopened after a failure.
    pub reopens: AtomicUsize,
    /// Duplicates the submitting threads found in a committed snapshot (the writer did not
    /// look them up).
    pub prechecked_duplicates: AtomicU64,
    /// Event ids the submitting threads checked against the dedupe filters, and those of
    /// them the filter of everything did not rule out (they read the runs for them): its
    /// false positives, and the duplicates.
    pub prechecked_ids: AtomicU64,
    pub prechecked_reads: AtomicU64,
    /// Receipt tallies dropped: the queue was full, or past a commit's share.
    pub dropped_notes: AtomicU64,
}

/// Longest wait between two attempts to reopen the database.
const MAX_REOPEN_BACKOFF: Duration = Duration::from_secs(5);
/// How long a reopen waits for reads that still hold the failed handle.
const REOPEN_PATIENCE: Duration = Duration::from_secs(2);

/// What the writer keeps of a database in memory, loaded when it (re)opens it: the next free
/// seq (one past the last stored event) and the staged dedupe fingerprints. Reloading both on
/// a reopen matters: a failed commit may still have reached the disk.
fn writer_state(db: &Database) -> Result<(u64, Staged)> {
    let txn = db.begin_write()?;
    let last = txn
        .open_table(EVENTS)?
        .last()?
        .map_or(0, |(k, _)| k.value());
    // Retention may have removed the newest events: never hand out their seqs again.
    let removed = removed_through(&txn)?;
    let staged = Staged::load(&txn)?;
    txn.abort()?;
    Ok((last.max(removed) + 1, staged))
}

/// Whether a batch holding `events` events from `requests` requests takes more.
pub fn keep_collecting(events: usize, requests: usize) -> bool {
    events < MAX_BATCH_EVENTS && requests < MAX_BATCH_REQUESTS
}

impl Writer {
    /// Starts the writer thread on `store`'s database, with a queue of at most `queue_bytes`
    /// of bodies, publishing every commit to `listeners`; after a failed commit it reopens
    /// the database.
    pub fn start(store: &Store, queue_bytes: usize, listeners: Listeners) -> Result<Writer> {
        Writer::start_with(store, queue_bytes, listeners, None)
    }

    /// [`Writer::start`] with a [`Commit`] hook called for every batch.
    pub fn start_with(
        store: &Store,
        queue_bytes: usize,
        listeners: Listeners,
        hook: CommitHook,
    ) -> Result<Writer> {
        let store = store.clone();
        let db = store.db()?;
        let (next_seq, mut staged) = writer_state(&db)?;
        staged.build_filter(db.clone());
        let precheck = staged.precheck();
        let listeners = Arc::new(listeners);
        for l in listeners.iter() {
            l.committed(next_seq - 1);
        }
        let thread_listeners = listeners.clone();
        let budget_kib = (queue_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS) as u32;
        let (tx, rx) = sync_channel(MAX_BATCH_REQUESTS * 2);
        let stats = Arc::new(Stats::default());
        stats.running.store(true, Ordering::SeqCst);
        stats.healthy.store(true, Ordering::SeqCst);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("inlet-writer".into())
            .spawn(move || {
                run(
                    &store,
                    db,
                    rx,
                    next_seq,
                    staged,
                    &thread_stats,
                    (&thread_listeners, &hook),
                );
                thread_stats.running.store(false, Ordering::SeqCst);
            })?;
        Ok(Writer {
            tx,
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
            stats,
            thread: Mutex::new(Some(thread)),
            listeners,
            precheck,
        })
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bytes of request bodies waiting for the writer (rounded up to KiB per request).
    pub fn queued_bytes(&self) -> u64 {
        let free = self.budget.available_permits() as u64;
        u64::from(self.budget_kib).saturating_sub(free) * 1024
    }

    /// Whether submissions' ids are looked up before they are queued (the dedupe filters are
    /// built; see [`Precheck`]).
    pub fn prechecking(&self) -> bool {
        self.precheck.ready()
    }

    /// Queues `sub` (whose request body was `body_bytes` long) and waits for its commit.
    ///
    /// First, on the calling thread, looks its ids up in a committed snapshot
    /// ([`Precheck`]): duplicates of stored events are settled there, so that the writer
    /// thread, the one serial stage, does not read their run and record itself.
    pub async fn submit(
        &self,
        sub: Submission,
        body_bytes: usize,
    ) -> Result<Vec<Outcome>, SubmitError> {
        self.submit_as(sub, body_bytes, false, None).await
    }

    /// Applies a submission decided elsewhere ([`Replayed`]) and waits for its commit.
    pub async fn submit_replayed(
        &self,
        sub: Submission,
        body_bytes: usize,
        replayed: Replayed,
    ) -> Result<Vec<Outcome>, SubmitError> {
        self.submit_as(sub, body_bytes, false, Some(replayed)).await
    }

    /// A dry run of [`Writer::submit`]: the same checks (dedupe, guards, quota) with the
    /// same outcomes, in a write transaction of its own that is aborted, so nothing of it is
    /// stored, counted or kept.
    pub async fn submit_dry(
        &self,
        sub: Submission,
        body_bytes: usize,
    ) -> Result<Vec<Outcome>, SubmitError> {
        self.submit_as(sub, body_bytes, true, None).await
    }

    async fn submit_as(
        &self,
        sub: Submission,
        body_bytes: usize,
        dry: bool,
        replayed: Option<Replayed>,
    ) -> Result<Vec<Outcome>, SubmitError> {
        let kib = (body_bytes / 1024 + 1).min(self.budget_kib as usize) as u32;
        let permit = match self.budget.clone().try_acquire_many_owned(kib) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(SubmitError::Overloaded),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(SubmitError::ShuttingDown),
        };
        let ids: Vec<&str> = sub.events.iter().map(|e| e.event_id()).collect();
        let pre = self.precheck.check(sub.app_id, &ids);
        let (checked, reads) = (ids.len() as u64, pre.to_settle() as u64);
        // Settling reads pages, tens of microseconds of CPU for a few dozen ids: many of them
        // move this runtime thread's other tasks elsewhere first.
        let known = if pre.to_settle() >= SETTLE_IN_PLACE && multi_thread_runtime() {
            tokio::task::block_in_place(|| self.precheck.settle(&ids, pre))
        } else {
            self.precheck.settle(&ids, pre)
        };
        drop(ids);
        let settled = known
            .iter()
            .filter(|k| matches!(k, Known::Stored(_)))
            .count();
        let (reply, rx) = oneshot::channel();
        match self
            .tx
            .try_send(Msg::Ingest(sub, known, reply, permit, dry, replayed))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::ShuttingDown),
        }
        // Counted once queued: a refused submission answered nothing (nor does a dry run).
        if !dry {
            let stats = &self.stats;
            stats
                .prechecked_duplicates
                .fetch_add(settled as u64, Ordering::Relaxed);
            stats.prechecked_ids.fetch_add(checked, Ordering::Relaxed);
            stats.prechecked_reads.fetch_add(reads, Ordering::Relaxed);
        }
        self.stats.queued_requests.fetch_add(1, Ordering::Relaxed);
        rx.await
            .map_or(Err(SubmitError::ShuttingDown), |(r, _sub)| r)
    }

    /// Queues receipt tallies (rejections seen before the writer) for the next commit;
    /// dropped (and counted) when the queue is full, never waited for.
    pub fn note(&self, notes: Vec<Note>) {
        if notes.is_empty() {
            return;
        }
        let n = notes.len() as u64;
        if self.tx.try_send(Msg::Notes(notes)).is_err() {
            self.stats.dropped_notes.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Quarantine: runs `f` on the writer thread between commits, never waited for and
    /// without bumping the configuration generation; `false` when the queue is full.
    pub fn later(&self, f: Box<dyn FnOnce(&Database) + Send>) -> bool {
        self.tx.try_send(Msg::Job(f)).is_ok()
    }

    /// Runs `f` on the writer thread, between commits, and returns its result. Blocking.
    pub fn run_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> R + Send + 'static,
    ) -> Result<R> {
        let rx = self.send_job(f)?;
        rx.blocking_recv().map_err(|_| Error::WriterGone)
    }

    /// Runs `f` on the writer thread, between commits, and returns its result.
    ///
    /// Never blocks the async thread: while the queue is full (ingest saturating the writer)
    /// it waits asynchronously for room.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> R + Send + 'static,
    ) -> Result<R> {
        let (mut msg, rx) = self.job(f);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    msg = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(Error::WriterGone),
            }
        }
        rx.await.map_err(|_| Error::WriterGone)
    }

    /// Runs `f` on the writer thread like [`Writer::run_blocking`]; then the writer drops its
    /// handle and opens the database file again, before the next commit: `f` put a new file
    /// in its place ([`super::copy::rewrite`]). Blocking.
    pub fn run_then_reopen<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> R + Send + 'static,
    ) -> Result<R> {
        let (msg, rx) = self.job(f);
        let Msg::Job(job) = msg else {
            unreachable!("job() makes jobs")
        };
        self.tx
            .send(Msg::Reopen(job))
            .map_err(|_| Error::WriterGone)?;
        rx.blocking_recv().map_err(|_| Error::WriterGone)
    }

    fn send_job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> R + Send + 'static,
    ) -> Result<oneshot::Receiver<R>> {
        let (msg, rx) = self.job(f);
        self.tx.send(msg).map_err(|_| Error::WriterGone)?;
        Ok(rx)
    }

    /// Wraps `f` as a job message whose result arrives on the returned receiver. The config
    /// generation is bumped before the caller hears back, so caches it invalidates are stale
    /// by then.
    fn job<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> R + Send + 'static,
    ) -> (Msg, oneshot::Receiver<R>) {
        let (tx, rx) = oneshot::channel();
        let stats = self.stats.clone();
        let job: Job = Box::new(move |db| {
            let r = f(db);
            stats.config_generation.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(r);
        });
        (Msg::Job(job), rx)
    }

    /// Commits what is queued, stops the thread and waits for it. Later submissions get
    /// [`SubmitError::ShuttingDown`].
    pub fn stop(&self) {
        self.budget.close();
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.lock().expect("writer thread lock").take() {
            let _ = t.join();
        }
        for l in self.listeners.iter() {
            l.writer_stopped();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Item {
    sub: Submission,
    /// What the submitting thread found of each event (see [`Precheck`]).
    known: Vec<Known>,
    reply: Answer,
    _permit: OwnedSemaphorePermit,
    replayed: Option<Replayed>,
}

/// Judges each dry-run submission of `dry` in a write transaction of its own, aborted (so one
/// dry run never sees another's events), and answers it.
fn judge_dry_runs(db: Option<&Database>, next_seq: u64, staged: &Staged, dry: Vec<Item>) {
    for item in dry {
        let one = std::slice::from_ref(&item);
        let result = match db {
            Some(d) => commit_batch(
                d,
                next_seq,
                staged,
                one,
                (&Vec::new(), &None),
                &[],
                Mode::DryRun,
            ),
            None => Err(Error::Reopening),
        };
        let answer = match result {
            Ok(mut appended) => Ok(appended.outcomes.pop().unwrap_or_default()),
            Err(e) => {
                tracing::warn!(error = %e, "a dry run could not be judged");
                Err(SubmitError::CommitFailed)
            }
        };
        let _ = item.reply.send((answer, item.sub));
    }
}

/// Whether a batch is committed or only judged.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Commit,
    DryRun,
}

fn run(
    store: &Store,
    db: Arc<Database>,
    rx: Receiver<Msg>,
    mut next_seq: u64,
    mut staged: Staged,
    stats: &Stats,
    (listeners, hook): (&Listeners, &CommitHook),
) {
    let mut db = Some(db);
    let mut jobs: Vec<Job> = Vec::new();
    let mut reopen_jobs: Vec<Job> = Vec::new();
    // The file was replaced by a reopen job (not failed): open the new one before letting
    // go of the old handle.
    let mut replaced = false;
    let mut stop = false;
    let mut retry_at = Instant::now();
    let mut backoff = Duration::from_millis(50);
    while !stop {
        if db.is_none() && Instant::now() >= retry_at {
            let opened = if replaced {
                store.reopen_replaced()
            } else {
                store.reopen(REOPEN_PATIENCE)
            };
            match opened.and_then(|d| Ok((writer_state(&d)?, d))) {
                Ok(((next, mut reloaded), d)) => {
                    if replaced {
                        tracing::info!(next_seq = next, "database file replaced and reopened");
                    } else {
                        tracing::warn!(
                            next_seq = next,
                            "database reopened after a storage failure"
                        );
                        stats.reopens.fetch_add(1, Ordering::Relaxed);
                    }
                    replaced = false;
                    next_seq = next;
                    // The submitting threads keep the pre-check they hold.
                    reloaded.share(staged.precheck());
                    staged = reloaded;
                    staged.build_filter(d.clone());
                    for l in listeners {
                        l.reopened();
                        l.committed(next - 1);
                    }
                    db = Some(d);
                    backoff = Duration::from_millis(50);
                    stats.healthy.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "reopening the database failed");
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_REOPEN_BACKOFF);
                }
            }
        }
        if db.is_some() {
            for l in listeners {
                l.pace();
            }
        }
        let mut batch: Vec<Item> = Vec::new();
        let mut dry: Vec<Item> = Vec::new();
        let mut notes: Vec<Note> = Vec::new();
        let mut events = 0;
        let mut block = true;
        while keep_collecting(events, batch.len()) {
            let msg = if block && db.is_none() {
                // Wake up for the next reopen attempt even when nothing arrives.
                let wait = retry_at.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        stop = true;
                        break;
                    }
                }
            } else if block {
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => {
                        stop = true;
                        break;
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                }
            };
            block = false;
            match msg {
                Msg::Ingest(sub, known, reply, permit, is_dry, replayed) => {
                    let item = Item {
                        sub,
                        known,
                        reply,
                        _permit: permit,
                        replayed,
                    };
                    if is_dry {
                        dry.push(item);
                    } else {
                        events += item.sub.events.len();
                        batch.push(item);
                    }
                }
                Msg::Job(job) => jobs.push(job),
                Msg::Notes(n) => notes.extend(n),
                Msg::Reopen(job) => reopen_jobs.push(job),
                Msg::Stop => {
                    stop = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            stats
                .queued_requests
                .fetch_sub(batch.len(), Ordering::Relaxed);
            let started = std::time::Instant::now();
            let result = match &db {
                Some(d) => commit_batch(
                    d,
                    next_seq,
                    &staged,
                    &batch,
                    (listeners, hook),
                    &std::mem::take(&mut notes),
                    Mode::Commit,
                ),
                None => Err(Error::Reopening),
            };
            if let Some(h) = hook {
                h.settled(result.is_ok());
            }
            match result {
                Ok(Appended {
                    outcomes,
                    next_seq: next,
                    index: merged,
                    skipped_notes,
                }) => {
                    stats
                        .dropped_notes
                        .fetch_add(skipped_notes, Ordering::Relaxed);
                    stats
                        .metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    stats.metrics.batch_events.observe(events as f64);
                    next_seq = next;
                    if let Some(merged) = merged {
                        staged.apply(merged);
                    }
                    hand_over_stored(listeners, &mut batch, &outcomes);
                    for l in listeners {
                        l.committed(next_seq - 1);
                    }
                    stats.healthy.store(true, Ordering::SeqCst);
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                    for (item, out) in batch.into_iter().zip(outcomes) {
                        let _ = item.reply.send((Ok(out), item.sub));
                    }
                }
                Err(Error::Fenced(e)) => {
                    // The hook refused the batch (cluster mode: no fenced append): nothing of
                    // it is stored, and the database is fine.
                    tracing::warn!(error = %e, requests = batch.len(), "batch refused before its commit");
                    for item in batch {
                        let _ = item.reply.send((Err(SubmitError::CommitFailed), item.sub));
                    }
                }
                Err(e) => {
                    if db.is_some() {
                        tracing::error!(error = %e, requests = batch.len(), "commit failed; nothing of the batch was acknowledged");
                        stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.healthy.store(false, Ordering::SeqCst);
                    for item in batch {
                        let _ = item.reply.send((Err(SubmitError::CommitFailed), item.sub));
                    }
                    if db.is_some() {
                        // Never retry the commit: drop the failed handle and reopen.
                        staged.precheck().detach();
                        db = None;
                        retry_at = Instant::now();
                    }
                }
            }
        }
        if let (false, Some(d)) = (notes.is_empty(), &db) {
            // Notes with no batch to ride along: a commit of their own.
            let (kept, skipped) = notes.split_at(notes.len().min(MAX_NOTES_PER_COMMIT));
            stats
                .dropped_notes
                .fetch_add(skipped.len() as u64, Ordering::Relaxed);
            let written = (|| -> Result<()> {
                let txn = super::begin_write(d)?;
                super::receipts::record(&txn, kept, RECEIPTS_PER_APP)?;
                Ok(txn.commit()?)
            })();
            if let Err(e) = written {
                tracing::warn!(error = %e, notes = notes.len(), "receipt notes were not written");
            }
        }
        if !dry.is_empty() {
            stats
                .queued_requests
                .fetch_sub(dry.len(), Ordering::Relaxed);
            judge_dry_runs(db.as_deref(), next_seq, &staged, dry);
        }
        match &db {
            Some(d) => {
                for job in jobs.drain(..) {
                    job(d);
                }
            }
            // Dropping a job answers its caller with `WriterGone`.
            None => jobs.clear(),
        }
        if !reopen_jobs.is_empty() {
            if let Some(d) = &db {
                for job in reopen_jobs.drain(..) {
                    job(d);
                }
                // The file was replaced: read it again, as after a failure (the next seq and
                // the dedupe state come from the new file).
                staged.precheck().detach();
                db = None;
                replaced = true;
                retry_at = Instant::now();
            } else {
                reopen_jobs.clear();
            }
        }
    }
}

/// Moves the records of the events a committed batch stored into one [`Stored`] for the
/// listeners that want them (the submissions go back to their requests without them).
fn hand_over_stored(listeners: &Listeners, batch: &mut [Item], outcomes: &[Vec<Outcome>]) {
    let takers: Vec<&Arc<dyn CommitListener>> =
        listeners.iter().filter(|l| l.wants_stored()).collect();
    if takers.is_empty() {
        return;
    }
    let mut stored = Stored::default();
    for (item, outcomes) in batch.iter_mut().zip(outcomes) {
        let app_id = item.sub.app_id;
        for (ev, o) in item.sub.events.iter_mut().zip(outcomes) {
            if let Outcome::Accepted { seq } = o {
                stored.events.push((*seq, app_id, ev.take_record()));
            }
        }
    }
    if stored.events.is_empty() {
        return;
    }
    let stored = Arc::new(stored);
    for l in takers {
        l.stored(&stored);
    }
}

/// Quota state of one (tenant, month) within a batch.
struct Quota {
    limit: u64,
    stored: u64,
    used: u64,
}

/// Removes session `key` from [`SESSIONS`] and its entry from [`OPEN_SESSIONS`].
fn forget_session(
    sessions: &mut redb::Table<&[u8], &[u8]>,
    open_sessions: &mut redb::Table<&[u8], ()>,
    key: &[u8],
) -> Result<()> {
    let old = sessions.remove(key)?.map(|v| decode_session(v.value()));
    // An undecodable record is dropped with its session rather than failing the commit.
    if let Some(Ok((start, Some(id)))) = old {
        open_sessions.remove(open_session_key(key, &id, start).as_slice())?;
    }
    Ok(())
}

/// What a committed batch leaves: each request's outcomes, the next free seq and what the
/// dedupe index must take in.
struct Appended {
    outcomes: Vec<Vec<Outcome>>,
    next_seq: u64,
    /// `None` after a dry run.
    index: Option<Committed>,
    /// Duplicate answers past [`MAX_NOTES_PER_COMMIT`], not tallied.
    skipped_notes: u64,
}

/// Most receipt tallies one commit writes: a flood of resent events costs the writer a
/// bounded amount per commit (duplicate answers past it are counted, not tallied). Each
/// tally updates the receipts at a random place (pages copied and written), so the bound is
/// kept low; a bulk load of half resent ids shows its cost (`bench/ab.sh … --dup-share 0.5`).
/// Commits of single events hold far fewer events than the bound.
pub const MAX_NOTES_PER_COMMIT: usize = 128;

/// Appends a batch in one durable transaction, with what `listeners` write in it; on error
/// nothing of the batch is stored. A dry run ([`Mode::DryRun`]) decides the same outcomes
/// and aborts the transaction.
fn commit_batch(
    db: &Database,
    mut seq: u64,
    staged: &Staged,
    batch: &[Item],
    (listeners, hook): (&Listeners, &CommitHook),
    notes: &[Note],
    mode: Mode,
) -> Result<Appended> {
    let txn = super::begin_write(db)?;
    let mut timing = CommitTiming::start();
    let mut skipped_notes = 0;
    let mut all = Vec::with_capacity(batch.len());
    let first_seq = seq;
    let index = {
        let mut events = txn.open_table(EVENTS)?;
        let mut dedupe = staged.begin(&txn)?;
        let mut audit_bodies = txn.open_table(AUDIT_BODIES)?;
        let mut audit_batches = txn.open_table(AUDIT_BATCHES)?;
        let mut key_used = txn.open_table(KEY_USED)?;
        let mut ordering = txn.open_table(ORDERING)?;
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut open_sessions = txn.open_table(OPEN_SESSIONS)?;
        let mut skan_values = txn.open_table(SKAN_VALUES)?;
        // Business-key dedupe (issue 21): the app's second dedupe key, `store::bizkey`.
        let mut bizkeys = super::bizkey::Index::new(&txn);
        let mut quotas: HashMap<u64, Quota> = HashMap::new();
        let mut accepted = Vec::with_capacity(batch.len());
        let mut gates = Vec::new();
        for l in listeners {
            if let Some(g) = l.gate(&txn)? {
                gates.push(g);
            }
        }
        for Item {
            sub,
            known,
            replayed,
            ..
        } in batch
        {
            // Decided elsewhere: applied, only deduplicated.
            let applying = replayed.is_some();
            let qkey = usage_key(sub.tenant_id, month_key(sub.received_at_ms));
            let quota = match quotas.entry(qkey) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(load_quota(&txn, sub.tenant_id, qkey)?),
            };
            let mut outcomes = Vec::with_capacity(sub.events.len());
            let mut first_accepted = None;
            let mut suppressed = false;
            for (i, ev) in sub.events.iter().enumerate() {
                let known = known.get(i).copied();
                let slot = match dedupe.check(&events, sub.app_id, ev.event_id(), known)? {
                    Check::Seen(seen) => {
                        outcomes.push(Outcome::Duplicate { seq: seen });
                        continue;
                    }
                    Check::New(slot) => slot,
                };
                let bizkey = match bizkeys.check(sub.app_id, ev.record())? {
                    super::bizkey::Check::Seen(seen) => {
                        outcomes.push(Outcome::Duplicate { seq: seen });
                        continue;
                    }
                    super::bizkey::Check::New(key) => key,
                };
                if !applying && gates.iter().any(|refuse| refuse(ev.record())) {
                    outcomes.push(Outcome::Suppressed);
                    suppressed = true;
                    continue;
                }
                if let Some(Guard::NotBefore { key, ts_ms, .. }) = ev.guard()
                    && !applying
                    && ordering
                        .get(key.as_slice())?
                        .is_some_and(|last| last.value() > *ts_ms)
                {
                    outcomes.push(Outcome::OutOfOrder);
                    continue;
                }
                if !applying && quota.limit != 0 && quota.used >= quota.limit {
                    outcomes.push(Outcome::OverQuota);
                    continue;
                }
                events.insert(seq, ev.record())?;
                dedupe.insert(slot, seq)?;
                bizkeys.insert(bizkey, seq)?;
                match ev.guard() {
                    None => {}
                    Some(Guard::NotBefore { key, ts_ms, skan }) => {
                        ordering.insert(key.as_slice(), *ts_ms)?;
                        if let Some(SkanUpdate { key, value }) = skan {
                            let stored = skan_values
                                .get(key.as_slice())?
                                .and_then(|v| crate::skan::decode(v.value()));
                            let merged = crate::skan::merge(stored, *value);
                            if stored != Some(merged) {
                                let bytes = crate::skan::encode(merged);
                                skan_values.insert(key.as_slice(), bytes.as_slice())?;
                            }
                        }
                    }
                    Some(Guard::SessionStart {
                        key,
                        ts_ms,
                        identity,
                    }) => {
                        forget_session(&mut sessions, &mut open_sessions, key)?;
                        let record = encode_session(*ts_ms, identity.as_ref());
                        sessions.insert(key.as_slice(), record.as_slice())?;
                        if let Some(id) = identity {
                            open_sessions
                                .insert(open_session_key(key, id, *ts_ms).as_slice(), ())?;
                        }
                    }
                    Some(Guard::SessionEnd { key }) => {
                        forget_session(&mut sessions, &mut open_sessions, key)?;
                    }
                }
                outcomes.push(Outcome::Accepted { seq });
                quota.used += 1;
                first_accepted.get_or_insert(seq);
                seq += 1;
            }
            if let Some(first) = first_accepted {
                accepted.push(Accepted {
                    app_id: sub.app_id,
                    received_at_ms: sub.received_at_ms,
                    events: seq - first,
                });
            }
            // A body that carried a suppressed subject's event is not kept for the others.
            if let Some(first) = first_accepted
                && !suppressed
                && let Some((k, body)) = &sub.audit
            {
                let only = match sub.events.as_slice() {
                    [one] => Some(one.event_id()),
                    _ => None,
                };
                let index_key = super::audit::needs_key_index(k, only);
                super::audit::store(
                    &mut audit_bodies,
                    &mut audit_batches,
                    k,
                    body,
                    first,
                    index_key,
                )?;
            }
            let last = key_used.get(sub.key_id)?.map_or(0, |v| v.value());
            if sub.key_id != 0 && sub.received_at_ms > last {
                key_used.insert(sub.key_id, sub.received_at_ms)?;
            }
            all.push(outcomes);
        }
        timing.mark();
        if mode == Mode::DryRun {
            drop(dedupe);
            drop((events, audit_bodies, audit_batches, key_used));
            drop((ordering, sessions, open_sessions, skan_values, bizkeys));
            None
        } else {
            skipped_notes = record_notes(&txn, batch, &all, notes)?;
            for l in listeners {
                l.in_commit(&txn, &accepted)?;
            }
            let mut usage = txn.open_table(USAGE)?;
            for (k, q) in quotas {
                if q.used != q.stored {
                    usage.insert(k, q.used)?;
                }
            }
            timing.mark();
            Some(dedupe.finish((seq - first_seq) as usize)?)
        }
    };
    if let (Mode::Commit, Some(h)) = (mode, hook) {
        let decided: Vec<Decided<'_>> = batch
            .iter()
            .zip(&all)
            .map(|(item, outcomes)| Decided {
                sub: &item.sub,
                outcomes,
                replayed: item.replayed,
            })
            .collect();
        h.before_commit(&txn, &decided).map_err(Error::Fenced)?;
    }
    timing.mark();
    match mode {
        Mode::Commit => txn.commit()?,
        Mode::DryRun => txn.abort()?,
    }
    timing.mark();
    timing.report(seq - first_seq);
    Ok(Appended {
        outcomes: all,
        next_seq: seq,
        index,
        skipped_notes,
    })
}

/// A commit slower than this is logged with its phases (`RUST_LOG=inlet::slow=debug`), to
/// tell what a latency tail waits for.
const SLOW_COMMIT: Duration = Duration::from_millis(15);

/// Where one commit's time went: deciding the events, the listeners' writes, the dedupe
/// index's rows, runs and merge step (and the hook), the commit itself (fsyncs).
struct CommitTiming {
    at: Instant,
    phases: [Duration; 4],
    n: usize,
}

impl CommitTiming {
    fn start() -> CommitTiming {
        CommitTiming {
            at: Instant::now(),
            phases: [Duration::ZERO; 4],
            n: 0,
        }
    }

    /// Ends the current phase.
    fn mark(&mut self) {
        let now = Instant::now();
        if let Some(p) = self.phases.get_mut(self.n) {
            *p = now - self.at;
        }
        self.n += 1;
        self.at = now;
    }

    fn report(&self, events: u64) {
        let total: Duration = self.phases.iter().sum();
        if total >= SLOW_COMMIT {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let [decide, listeners, index, commit] = self.phases.map(ms);
            tracing::debug!(target: "inlet::slow", events, total_ms = ms(total), decide, listeners, index, commit, "slow commit");
        }
    }
}

/// Writes `notes` and the batch's duplicate answers to the receipts, in the batch's
/// transaction, at most [`MAX_NOTES_PER_COMMIT`]; returns how many it left out.
fn record_notes(
    txn: &WriteTransaction,
    batch: &[Item],
    outcomes: &[Vec<Outcome>],
    notes: &[Note],
) -> Result<u64> {
    let mut skipped = notes.len().saturating_sub(MAX_NOTES_PER_COMMIT) as u64;
    let mut notes = notes[..notes.len().min(MAX_NOTES_PER_COMMIT)].to_vec();
    for (Item { sub, .. }, outcomes) in batch.iter().zip(outcomes) {
        for (ev, o) in sub.events.iter().zip(outcomes) {
            if let Outcome::Duplicate { seq } = o {
                if notes.len() >= MAX_NOTES_PER_COMMIT {
                    skipped += 1;
                    continue;
                }
                notes.push(Note {
                    app_id: sub.app_id,
                    event_id: ev.event_id().to_owned(),
                    at_ms: sub.received_at_ms,
                    what: Noted::Duplicate(*seq),
                });
            }
        }
    }
    super::receipts::record(txn, &notes, RECEIPTS_PER_APP)?;
    Ok(skipped)
}

fn load_quota(txn: &WriteTransaction, tenant_id: u32, qkey: u64) -> Result<Quota> {
    let limit = match txn.open_table(TENANTS)?.get(tenant_id)? {
        Some(b) => {
            super::codec::decode_config::<super::codec::Tenant>("tenant", b.value())?.monthly_quota
        }
        None => 0,
    };
    let stored = txn.open_table(USAGE)?.get(qkey)?.map_or(0, |v| v.value());
    Ok(Quota {
        limit,
        stored,
        used: stored,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Store;

    fn record(id: &str) -> Vec<u8> {
        crate::store::codec::encode_event(&crate::store::codec::EventRecord {
            received_at_ms: 1_764_000_000_000,
            ..crate::store::codec::EventRecord::for_test(id)
        })
    }

    pub(crate) fn sub(ids: &[&str]) -> Submission {
        Submission {
            app_id: 1,
            tenant_id: 1,
            key_id: 1,
            received_at_ms: 1_764_000_000_000,
            events: ids
                .iter()
                .map(|id| Pending::for_test(id, record(id)))
                .collect(),
            audit: None,
        }
    }

    #[test]
    fn batching_policy() {
        assert!(keep_collecting(0, 0));
        assert!(!keep_collecting(MAX_BATCH_EVENTS, 1));
        assert!(!keep_collecting(1, MAX_BATCH_REQUESTS));
    }

    #[tokio::test]
    async fn dedupes_within_and_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Writer::start(&store, DEFAULT_QUEUE_BYTES, vec![]).unwrap();
        let out = w.submit(sub(&["a", "b", "a"]), 10).await.unwrap();
        assert_eq!(
            out,
            vec![
                Outcome::Accepted { seq: 1 },
                Outcome::Accepted { seq: 2 },
                Outcome::Duplicate { seq: 1 }
            ]
        );
        let out = w.submit(sub(&["b", "c"]), 10).await.unwrap();
        assert_eq!(
            out,
            vec![Outcome::Duplicate { seq: 2 }, Outcome::Accepted { seq: 3 }]
        );
        assert_eq!(store.usage(1, 1_764_000_000_000).unwrap(), 3);
    }

    /// Once the dedupe filters are built, resubmitted ids are settled by the submitting
    /// threads (on a multi-thread runtime, through `block_in_place`), with the same outcomes
    /// as the writer's: the original seqs, a repeat within the request, new ids accepted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resubmitted_ids_are_settled_before_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Writer::start(&store, DEFAULT_QUEUE_BYTES, vec![]).unwrap();
        let old: Vec<String> = (0..2_000).map(|i| format!("old-{i}")).collect();
        for chunk in old.chunks(500) {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let out = w.submit(sub(&ids), 10).await.unwrap();
            assert!(out.iter().all(|o| matches!(o, Outcome::Accepted { .. })));
        }
        // Builds are taken in, and runs frozen a step, at commits: until the filters are in
        // and the last old id is in a run.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 0;
        while !w.prechecking() || w.precheck.check(1, &["old-1999"]).to_settle() == 0 {
            assert!(
                Instant::now() < deadline,
                "the dedupe filters were never built, or the old ids never frozen"
            );
            w.submit(sub(&[&format!("filler-{n}")]), 10).await.unwrap();
            n += 1;
        }
        let mut again: Vec<&str> = old.iter().map(String::as_str).collect();
        again.extend(["fresh", "old-7", "fresh"]);
        let out = w.submit(sub(&again), 10).await.unwrap();
        let next = 2_001 + n;
        for (i, o) in out[..2_000].iter().enumerate() {
            assert_eq!(*o, Outcome::Duplicate { seq: i as u64 + 1 }, "old-{i}");
        }
        assert_eq!(
            out[2_000..],
            [
                Outcome::Accepted { seq: next },
                Outcome::Duplicate { seq: 8 },
                Outcome::Duplicate { seq: next },
            ]
        );
        // Nearly all of the old ids are in runs by now (debug builds write one every 512).
        let settled = w.stats().prechecked_duplicates.load(Ordering::Relaxed);
        assert!(
            settled >= 1_000,
            "only {settled} duplicates were settled early"
        );
        assert_eq!(store.usage(1, 1_764_000_000_000).unwrap(), next);
    }

    /// A flood of resent events: one commit tallies at most [`MAX_NOTES_PER_COMMIT`] duplicate
    /// answers in the receipts; the others are answered all the same and counted as dropped.
    #[tokio::test]
    async fn a_commit_tallies_a_bounded_number_of_duplicate_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Writer::start(&store, DEFAULT_QUEUE_BYTES, vec![]).unwrap();
        let n = MAX_NOTES_PER_COMMIT + 50;
        let ids: Vec<String> = (0..n).map(|i| format!("flood-{i}")).collect();
        let mut twice: Vec<&str> = ids.iter().map(String::as_str).collect();
        twice.extend_from_within(..);
        let out = w.submit(sub(&twice), 10).await.unwrap();
        assert!(
            out[n..]
                .iter()
                .all(|o| matches!(o, Outcome::Duplicate { .. }))
        );
        assert_eq!(w.stats().dropped_notes.load(Ordering::Relaxed), 50);
        let tallied = ids
            .iter()
            .filter(|id| {
                let r = store.receipt("default", id).unwrap().unwrap();
                r.duplicate.is_some_and(|d| d.times == 1)
            })
            .count();
        assert_eq!(tallied, MAX_NOTES_PER_COMMIT);
    }

    /// An admin write while ingest has filled the queue must not block the (here single)
    /// async thread: other tasks keep running while it waits for room.
    #[tokio::test]
    async fn an_admin_job_waits_for_room_without_blocking_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Arc::new(Writer::start(&store, DEFAULT_QUEUE_BYTES, vec![]).unwrap());
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let _held = w
            .send_job(move |_| {
                entered_tx.send(()).unwrap();
                hold.recv().unwrap();
            })
            .unwrap();
        entered.recv().unwrap();
        while w.tx.try_send(Msg::Job(Box::new(|_| {}))).is_ok() {}
        // A watchdog frees the writer if the test itself cannot run any more.
        let released_by_watchdog = Arc::new(AtomicBool::new(false));
        let (flag, watchdog_release) = (released_by_watchdog.clone(), release.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(5));
            flag.store(true, Ordering::SeqCst);
            let _ = watchdog_release.send(());
        });
        let w2 = w.clone();
        let runner = tokio::spawn(async move { w2.run(|_| 42).await });
        tokio::task::yield_now().await;
        assert!(
            !released_by_watchdog.load(Ordering::SeqCst),
            "the runtime was blocked until the watchdog freed the writer"
        );
        assert!(!runner.is_finished(), "the queue is still full");
        release.send(()).unwrap();
        assert_eq!(runner.await.unwrap().unwrap(), 42);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_buffering() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Arc::new(Writer::start(&store, 4 * 1024, vec![]).unwrap());
        // Hold the writer thread inside a job so nothing drains the queue.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let blocker = w.send_job(move |_| {
            entered_tx.send(()).unwrap();
            hold.recv().unwrap();
        });
        assert!(blocker.is_ok());
        entered.recv().unwrap();
        let mut waiting = Vec::new();
        let mut refused = None;
        for i in 0..16 {
            let w2 = w.clone();
            let id = format!("e{i}");
            let h = tokio::spawn(async move { w2.submit(sub(&[&id]), 1500).await });
            tokio::task::yield_now().await;
            // Each takes 2 KiB of the 4 KiB budget: the third must be refused.
            if h.is_finished() {
                refused = Some(h.await.unwrap());
                break;
            }
            waiting.push(h);
        }
        assert_eq!(refused, Some(Err(SubmitError::Overloaded)));
        release.send(()).unwrap();
        for h in waiting {
            assert!(matches!(
                h.await.unwrap().unwrap()[0],
                Outcome::Accepted { .. }
            ));
        }
    }

    #[tokio::test]
    async fn ordering_guards_hold_within_and_across_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Writer::start(&store, DEFAULT_QUEUE_BYTES, vec![]).unwrap();
        let guarded = |ids: &[(&str, i64)]| {
            let mut s = sub(&ids.iter().map(|(id, _)| *id).collect::<Vec<_>>());
            for (p, (_, ts)) in s.events.iter_mut().zip(ids) {
                p.set_guard(Some(Guard::NotBefore {
                    key: b"dev".to_vec(),
                    ts_ms: *ts,
                    skan: None,
                }));
            }
            s
        };
        let out = w
            .submit(guarded(&[("a", 10), ("b", 5), ("c", 10), ("a", 1)]), 10)
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![
                Outcome::Accepted { seq: 1 },
                Outcome::OutOfOrder,
                Outcome::Accepted { seq: 2 },
                Outcome::Duplicate { seq: 1 },
            ]
        );
        let out = w.submit(guarded(&[("d", 9), ("e", 11)]), 10).await.unwrap();
        assert_eq!(out, vec![Outcome::OutOfOrder, Outcome::Accepted { seq: 3 }]);
        // A conversion value is merged into the device's with an accepted event only.
        use crate::skan::{Coarse, Value};
        let skan = |id: &str, ts_ms: i64, fine: u8| {
            let mut s = sub(&[id]);
            s.events[0].set_guard(Some(Guard::NotBefore {
                key: b"dev2".to_vec(),
                ts_ms,
                skan: Some(SkanUpdate {
                    key: b"skan-dev2".to_vec(),
                    value: Value {
                        fine,
                        coarse: Coarse::of_fine(fine),
                        lock: false,
                    },
                }),
            }));
            s
        };
        w.submit(skan("k1", 10, 30), 10).await.unwrap();
        w.submit(skan("k2", 5, 50), 10).await.unwrap(); // out of order: not merged
        w.submit(skan("k3", 11, 20), 10).await.unwrap(); // lower: the value stays
        assert_eq!(
            store.skan_value(b"skan-dev2").unwrap(),
            Some(Value {
                fine: 30,
                coarse: Coarse::Medium,
                lock: false
            })
        );
        // Sessions: a start is remembered with its event, an end forgets it.
        let alice = [1u8; IDENTITY_LEN];
        for (event, session, ts_ms) in [("s1", "x", 42), ("s1b", "y", 50), ("s1c", "x", 60)] {
            let mut s = sub(&[event]);
            s.events[0].set_guard(Some(Guard::SessionStart {
                key: crate::store::tables::session_key(1, session),
                ts_ms,
                identity: Some(alice),
            }));
            w.submit(s, 10).await.unwrap();
        }
        // "x" restarted at 60 replaced its start at 42, and is the latest of its identifiers.
        assert_eq!(store.session_start(1, "x").unwrap(), Some(60));
        assert_eq!(
            store.latest_open_session(1, &alice).unwrap(),
            Some(crate::store::read::OpenSession {
                session_id: "x".to_owned(),
                started_ms: 60
            })
        );
        assert_eq!(store.latest_open_session(2, &alice).unwrap(), None);
        assert_eq!(store.latest_open_session(1, &[2; 16]).unwrap(), None);
        let mut s = sub(&["s2"]);
        s.events[0].set_guard(Some(Guard::SessionEnd {
            key: crate::store::tables::session_key(1, "x"),
        }));
        w.submit(s, 10).await.unwrap();
        assert_eq!(store.session_start(1, "x").unwrap(), None);
        // Ending the latest makes the one before it the latest open one.
        assert_eq!(
            store.latest_open_session(1, &alice).unwrap(),
            Some(crate::store::read::OpenSession {
                session_id: "y".to_owned(),
                started_ms: 50
            })
        );
    }

    /// A dry run gets the outcomes a submission would (a repeat within it included) and
    /// leaves nothing: the next submission takes the seqs and quota it was shown.
    #[tokio::test]
    async fn a_dry_run_judges_without_storing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Writer::start(&store, DEFAULT_QUEUE_BYTES, vec![]).unwrap();
        w.submit(sub(&["a"]), 10).await.unwrap();
        let judged = vec![
            Outcome::Duplicate { seq: 1 },
            Outcome::Accepted { seq: 2 },
            Outcome::Duplicate { seq: 2 },
        ];
        for _ in 0..2 {
            let out = w.submit_dry(sub(&["a", "b", "b"]), 10).await.unwrap();
            assert_eq!(out, judged);
        }
        assert_eq!(store.usage(1, 1_764_000_000_000).unwrap(), 1);
        assert_eq!(w.submit(sub(&["a", "b", "b"]), 10).await.unwrap(), judged);
        assert_eq!(store.usage(1, 1_764_000_000_000).unwrap(), 2);
    }

    #[tokio::test]
    async fn quota_is_exact_within_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .db()
            .unwrap()
            .begin_write()
            .map(|t| {
                crate::store::admin::set_quota(&t, "default", 2).unwrap();
                t.commit().unwrap();
            })
            .unwrap();
        let w = Writer::start(&store, DEFAULT_QUEUE_BYTES, vec![]).unwrap();
        let out = w.submit(sub(&["a", "b", "c"]), 10).await.unwrap();
        assert_eq!(out[2], Outcome::OverQuota);
        assert_eq!(
            w.submit(sub(&["a"]), 10).await.unwrap()[0],
            Outcome::Duplicate { seq: 1 }
        );
        assert_eq!(store.usage(1, 1_764_000_000_000).unwrap(), 2);
    }
}
