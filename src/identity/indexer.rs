//! The identity indexer's thread: keeps the graph ([`super`], in its own database file,
//! [`super::graph`]) caught up with the log, in parallel with the ingest writer.
//!
//! The writer tells it the newest committed seq after every commit: it is one of the writer's
//! [`CommitListener`]s.
//! It indexes one chunk ([`super::INDEX_CHUNK`] events, plus a bounded step of the runs'
//! merges) whenever a whole chunk is waiting, and the rest (and the merges left) once no
//! commit came for [`INDEX_WHEN_IDLE_FOR`]: small chunks would make many small runs, the
//! per-event cost the runs exist to avoid. Each step reads the log in a read transaction and
//! writes the graph in the graph's own write transaction, so the writer never waits for it.
//!
//! A failed step is logged and retried after a backoff. When the graph's own database refuses
//! a commit (after a failed one redb refuses them all), its file is opened again first; when
//! the log failed, the writer reopens it and the retry reads the reopened one.

use super::Fed;
use super::Identity;
use crate::store::writer::{CommitListener, Stored};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the log stays without a new commit before the indexer indexes a partial chunk
/// (and advances the merges left).
pub const INDEX_WHEN_IDLE_FOR: Duration = Duration::from_millis(50);

/// Most bytes of records handed over by the writer and not taken in yet; past it a batch is
/// left out, and its events are read from the log.
pub const FEED_BYTES: usize = 16 << 20;

/// Most events committed and not in the graph yet that the writer lets pile up: past it,
/// the writer waits for the indexer before it takes its next batch ([`Indexer::pace`]).
/// Indexing costs more per event than storing, so a load the cores cannot index as fast
/// as they store it (bulk on a small machine) would otherwise leave an ever longer tail,
/// and every profile read (and erasure) reads the whole tail from the log into memory.
/// Four chunks: the indexer steps at one, so it is never reached while it keeps up.
pub const MAX_LAG: u64 = 4 * super::INDEX_CHUNK as u64;

/// Longest the writer waits for the indexer before one batch: a step that takes longer
/// (a slow disk) slows ingest down but never stops it.
pub const PACE_WAIT_MAX: Duration = Duration::from_secs(2);

/// Most events held as keys, waiting for their step; past it a batch is left out (read from
/// the log later).
const FED_EVENTS: u64 = 2 * super::INDEX_CHUNK as u64;

/// Least time between two hand-backs of freed memory ([`return_freed_memory`]): a trim holds
/// each allocator arena's lock while it walks the arena, on a background-priority thread that
/// may be descheduled meanwhile, and every request thread allocating from that arena waits.
/// A step's freed memory is mostly taken again by the next step while the indexer catches up,
/// so trimming after every step bought little but those stalls.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// First wait after a failed step; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Handle to the indexer thread.
pub struct Indexer {
    identity: Identity,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<Progress>,
    wake: Condvar,
    /// Notified after every step (and on a failure or the stop): the writer waits on it in
    /// [`Indexer::pace`].
    stepped: Condvar,
    /// Microseconds the writer was held, in all.
    paced_us: AtomicU64,
}

struct Progress {
    /// The newest committed seq the writer reported.
    committed: u64,
    /// Batches the writer handed over, not taken in by the thread yet, with the graph's
    /// generation when each came; at most [`FEED_BYTES`] of records.
    handed: Vec<(Arc<Stored>, u64)>,
    handed_bytes: usize,
    /// The writer reopened its file: drop what was handed over before.
    reopened: bool,
    /// The graph's cursor after the last step (`None` before the first).
    indexed: Option<u64>,
    /// The lag the writer lets stand: [`MAX_LAG`], or more while a larger one found at the
    /// start (a graph rebuilt from the log, a lag left by an older build) is worked off. It
    /// only falls: the writer never lets a lag grow, it waits.
    allowed: u64,
    /// The last step failed: the indexer is in its backoff, and the writer does not wait.
    failing: bool,
    /// Most events a pace ([`Indexer::pace`]) lets stand (tests lower it).
    max_lag: u64,
    last_commit: Instant,
    stop: bool,
}

impl Indexer {
    /// Starts the thread for `identity`'s graph; the writer it listens to tells it the newest
    /// stored seq when it starts.
    pub fn start(identity: Identity) -> std::io::Result<Indexer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(Progress {
                committed: 0,
                handed: Vec::new(),
                handed_bytes: 0,
                reopened: false,
                indexed: None,
                allowed: u64::MAX,
                failing: false,
                max_lag: MAX_LAG,
                last_commit: Instant::now(),
                stop: false,
            }),
            wake: Condvar::new(),
            stepped: Condvar::new(),
            paced_us: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let thread_identity = identity.clone();
        let thread = std::thread::Builder::new()
            .name("inlet-indexer".into())
            .spawn(move || {
                crate::store::dedupe::run_in_background();
                // However the thread ends (a panic too), the writer no longer waits for it.
                let _released = Released(&thread_shared);
                run(&thread_identity, &thread_shared)
            })?;
        Ok(Indexer {
            identity,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Every event up to `seq` is committed.
    pub fn committed(&self, seq: u64) {
        let mut s = self.shared.lock();
        s.committed = s.committed.max(seq);
        s.last_commit = Instant::now();
        drop(s);
        self.shared.wake.notify_one();
    }

    /// The graph it keeps.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Events committed but not yet in the graph (all of them before the first step).
    pub fn lag(&self) -> u64 {
        let s = self.shared.lock();
        s.committed.saturating_sub(s.indexed.unwrap_or(0))
    }

    /// Holds the calling thread (the writer's, before it takes a batch) while more events
    /// than allowed wait for the graph ([`MAX_LAG`]), at most [`PACE_WAIT_MAX`]; not while
    /// the indexer is in a failure's backoff, nor before its first step. The time held adds
    /// to [`Indexer::paced`].
    pub fn pace(&self) {
        let started = Instant::now();
        let deadline = started + PACE_WAIT_MAX;
        let mut s = self.shared.lock();
        while let Some(indexed) = s.indexed
            && !s.stop
            && !s.failing
            && s.committed.saturating_sub(indexed) > s.allowed
        {
            let now = Instant::now();
            if now >= deadline {
                tracing::debug!(
                    target: "inlet::slow",
                    lag = s.committed.saturating_sub(indexed),
                    "the writer went on without the identity indexer"
                );
                break;
            }
            s = self
                .shared
                .stepped
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(s);
        self.shared
            .paced_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Time the writer spent held by [`Indexer::pace`] since the start.
    pub fn paced(&self) -> Duration {
        Duration::from_micros(self.shared.paced_us.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    fn set_max_lag(&self, max_lag: u64) {
        self.shared.lock().max_lag = max_lag;
    }

    #[cfg(test)]
    fn stepped_once(&self) -> bool {
        self.shared.lock().indexed.is_some()
    }

    /// Stops the thread (after the step in progress) and waits for it.
    pub fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        self.shared.stepped.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl CommitListener for Indexer {
    fn committed(&self, seq: u64) {
        Indexer::committed(self, seq);
    }

    fn wants_stored(&self) -> bool {
        true
    }

    fn pace(&self) {
        Indexer::pace(self);
    }

    fn stored(&self, events: &Arc<Stored>) {
        let bytes = events.bytes();
        let generation = self.identity.graph.generation();
        let mut s = self.shared.lock();
        if s.handed_bytes + bytes <= FEED_BYTES {
            s.handed_bytes += bytes;
            s.handed.push((events.clone(), generation));
        }
    }

    fn reopened(&self) {
        let mut s = self.shared.lock();
        s.handed.clear();
        s.handed_bytes = 0;
        s.reopened = true;
    }

    fn writer_stopped(&self) {
        self.stop();
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Marks the indexer stopped when dropped, and wakes a writer waiting in [`Indexer::pace`].
struct Released<'a>(&'a Shared);

impl Drop for Released<'_> {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.stepped.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Takes in the batches the writer handed over: their keys join `fed` when they continue it
/// (and it has room); otherwise they are left to the log.
fn take_in(handed: Vec<(Arc<Stored>, u64)>, fed: &mut Option<Fed>, indexed: Option<u64>) {
    for (stored, generation) in handed {
        // Already indexed (read from the log meanwhile).
        if stored
            .events
            .last()
            .is_some_and(|&(last, _, _)| indexed.is_some_and(|i| last <= i))
        {
            continue;
        }
        let taken = match fed {
            Some(f) if f.events() >= FED_EVENTS => Ok(false),
            Some(f) => f.add(&stored, generation),
            None => Fed::new(&stored, generation).map(|f| {
                *fed = f;
                true
            }),
        };
        if let Err(e) = taken {
            // Read from the log instead, where the error will be met and reported.
            tracing::debug!(error = %e, "a handed-over batch was left to the log");
        }
    }
}

fn run(identity: &Identity, shared: &Shared) {
    // The graph's cursor and whether merges wait; unknown until the first step.
    let mut indexed: Option<u64> = None;
    let mut merging = true;
    let mut backoff = FIRST_BACKOFF;
    let mut retry_at: Option<Instant> = None;
    // Keys of the events handed over by the writer, waiting for their step.
    let mut fed: Option<Fed> = None;
    let mut trim = Trim::default();
    loop {
        {
            let mut s = shared.lock();
            loop {
                if s.stop {
                    return;
                }
                if std::mem::take(&mut s.reopened) {
                    fed = None;
                }
                if !s.handed.is_empty() {
                    let handed = std::mem::take(&mut s.handed);
                    s.handed_bytes = 0;
                    drop(s);
                    take_in(handed, &mut fed, indexed);
                    s = shared.lock();
                    continue;
                }
                let now = Instant::now();
                let lag = indexed.map_or(u64::MAX, |i| s.committed.saturating_sub(i));
                let idle_at = s.last_commit + INDEX_WHEN_IDLE_FOR;
                let due = match retry_at {
                    Some(at) => (now >= at).then_some(()).ok_or(at),
                    None if lag >= super::INDEX_CHUNK as u64 => Ok(()),
                    None if lag > 0 || merging => (now >= idle_at).then_some(()).ok_or(idle_at),
                    // Nothing to do until the next commit.
                    None => Err(now + Duration::from_secs(3600)),
                };
                match due {
                    Ok(()) => break,
                    // Memory freed since the last trim is handed back once the indexer waits.
                    Err(_) if trim.due(now) => {
                        drop(s);
                        trim.run(Instant::now());
                        s = shared.lock();
                    }
                    Err(at) => {
                        let at = trim.owed_at().map_or(at, |t| t.min(at));
                        s = shared
                            .wake
                            .wait_timeout(s, at.saturating_duration_since(now))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
        }
        if retry_at.take().is_some()
            && identity.graph.get().is_none()
            && let Err(e) = identity.open_graph()
        {
            tracing::error!(error = %e, "reopening the identity graph failed");
            retry_at = Some(Instant::now() + backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        // Every seq up to this one is committed, so the step's snapshot of the log holds it.
        let committed = shared.lock().committed;
        // Handed-over events of an older graph (an erasure replaced it since) may hold
        // events it removed: read the log instead.
        if fed
            .as_ref()
            .is_some_and(|f| f.generation() != identity.graph.generation())
        {
            fed = None;
        }
        let started = Instant::now();
        // The handed-over events when they continue the cursor; the log up to them otherwise.
        let stepped = match (&mut fed, indexed) {
            (Some(f), Some(i)) if f.first() == i + 1 => match super::step_fed(identity, f) {
                Ok(Some(step)) => Ok((step, true)),
                Ok(None) => {
                    fed = None;
                    super::step(identity).map(|s| (s, false))
                }
                Err(e) => Err(e),
            },
            // Partly indexed already: the log has them.
            (Some(f), Some(i)) if f.first() <= i => {
                fed = None;
                super::step(identity).map(|s| (s, false))
            }
            (Some(f), _) => super::step_until(identity, f.first() - 1).map(|s| (s, true)),
            (None, _) => super::step(identity).map(|s| (s, false)),
        };
        match stepped {
            Ok((
                super::Step {
                    after:
                        super::Indexed {
                            cursor,
                            merging: more,
                        },
                    through,
                    ..
                },
                bounded,
            )) => {
                // A step that reached the end of its snapshot has indexed everything
                // committed: the newest seqs may be missing from the log (retention removed
                // them), and the cursor then stops short of `committed`. Not so for a step
                // that stopped where the handed-over events begin.
                let cursor = if cursor >= through && !bounded {
                    cursor.max(committed)
                } else {
                    cursor
                };
                if fed.as_ref().is_some_and(|f| f.last() <= cursor) {
                    fed = None;
                }
                let indexed_before = indexed;
                indexed = Some(cursor);
                {
                    let mut s = shared.lock();
                    let lag = s.committed.saturating_sub(cursor);
                    // A cursor that went back (a graph rebuilt from the log) brings a lag of
                    // its own: worked off, not waited for.
                    if indexed_before.is_some_and(|before| cursor < before) {
                        s.allowed = u64::MAX;
                    }
                    s.allowed = s.max_lag.max(s.allowed.min(lag));
                    s.indexed = Some(cursor);
                    s.failing = false;
                }
                shared.stepped.notify_all();
                merging = more;
                backoff = FIRST_BACKOFF;
                let stepped_at = Instant::now();
                trim.owed = true;
                let trim_ms = trim
                    .due(stepped_at)
                    .then(|| trim.run(stepped_at).as_secs_f64() * 1e3);
                tracing::debug!(
                    target: "inlet::slow",
                    events = cursor - indexed_before.unwrap_or(0),
                    step_ms = (stepped_at - started).as_secs_f64() * 1e3,
                    trim_ms,
                    fed = bounded,
                    "identity step"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "identity indexing failed");
                shared.lock().failing = true;
                shared.stepped.notify_all();
                // The log may be what failed (the writer reopens it); the graph's handle is
                // dropped only when it refuses a commit itself.
                if !graph_usable(identity) {
                    identity.graph.close();
                }
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// When the memory freed by the steps is handed back to the system: at most every
/// [`TRIM_EVERY`], and once the indexer waits after a step.
#[derive(Default)]
struct Trim {
    /// The last trim.
    at: Option<Instant>,
    /// A step freed memory since.
    owed: bool,
}

impl Trim {
    /// When the memory freed since the last trim may be handed back (after a trim).
    fn owed_at(&self) -> Option<Instant> {
        Some(self.at? + TRIM_EVERY).filter(|_| self.owed)
    }

    fn due(&self, now: Instant) -> bool {
        self.owed && self.at.is_none_or(|at| now >= at + TRIM_EVERY)
    }

    /// Trims; returns how long it took.
    fn run(&mut self, now: Instant) -> Duration {
        return_freed_memory();
        self.at = Some(now);
        self.owed = false;
        now.elapsed()
    }
}

/// Hands the memory freed by the steps (their chunks' key buffers, their transactions' dirty
/// pages) back to the system. Those are megabytes freed between smaller allocations of the
/// other threads, which glibc would otherwise keep inside its arenas: with the writer and the
/// indexer both allocating, that alone broke the memory bound of docs/design/memory.md.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether the graph's database takes a commit (after a failed one redb refuses them all).
fn graph_usable(identity: &Identity) -> bool {
    identity
        .graph
        .db()
        .and_then(|g| Ok(crate::store::begin_write(&g)?.commit()?))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::Indexer;
    use crate::identity::Identity;
    use crate::identity::tests::{append, cursor, stored};
    use crate::store::Store;
    use crate::store::writer::tests::sub;

    /// The first step's freed memory is handed back at once, later steps' at most every
    /// `TRIM_EVERY`, and nothing is owed after a trim.
    #[test]
    fn freed_memory_is_handed_back_at_most_every_trim_every() {
        use super::{TRIM_EVERY, Trim};
        let mut trim = Trim::default();
        let t0 = std::time::Instant::now();
        assert!(!trim.due(t0), "nothing freed yet");
        trim.owed = true;
        assert!(trim.due(t0));
        trim.run(t0);
        assert!(!trim.due(t0 + TRIM_EVERY), "nothing freed since");
        trim.owed = true;
        assert!(!trim.due(t0 + TRIM_EVERY / 2));
        assert_eq!(trim.owed_at(), Some(t0 + TRIM_EVERY));
        assert!(trim.due(t0 + TRIM_EVERY));
    }

    /// The newest committed seqs may be missing from the log (retention removed them): the
    /// indexer still counts itself caught up once it read the log to its end.
    #[test]
    fn seqs_missing_at_the_end_of_the_log_do_not_hold_the_indexer_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Identity::open(&Store::open(dir.path()).unwrap());
        append(&store, &[stored(1, &[]), stored(2, &[]), stored(3, &[])]);
        let indexer = Indexer::start(store.clone()).unwrap();
        indexer.committed(10);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while indexer.lag() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "still {} behind",
                indexer.lag()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(cursor(&store), 3);
    }

    /// Reads the indexer's lag after every commit.
    struct LagSeen {
        indexer: std::sync::Arc<Indexer>,
        max: std::sync::atomic::AtomicU64,
    }

    impl crate::store::writer::CommitListener for LagSeen {
        fn committed(&self, _seq: u64) {
            self.max
                .fetch_max(self.indexer.lag(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Past the lag it allows, the writer waits for a step before its next batch. Here steps
    /// come only once the log is idle for a while (the chunk is far larger than what is
    /// sent), so without the pace the lag would reach every event sent.
    #[tokio::test]
    async fn the_writer_waits_for_the_indexer_past_the_lag_it_allows() {
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let store = Identity::open(&Store::open(dir.path()).unwrap());
        let indexer = Arc::new(Indexer::start(store.clone()).unwrap());
        indexer.set_max_lag(30);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !indexer.stepped_once() {
            assert!(std::time::Instant::now() < deadline, "no first step");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let seen = Arc::new(LagSeen {
            indexer: indexer.clone(),
            max: Default::default(),
        });
        let w = crate::store::writer::Writer::start(
            store.store(),
            crate::store::writer::DEFAULT_QUEUE_BYTES,
            vec![indexer.clone(), seen.clone()],
        )
        .unwrap();
        for b in 0..40 {
            let ids: Vec<String> = (0..10).map(|i| format!("e{b}-{i}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            w.submit(sub(&ids), 10).await.unwrap();
        }
        let max = seen.max.load(std::sync::atomic::Ordering::Relaxed);
        assert!(max <= 30 + 10, "{max} events waited for the graph");
        assert!(indexer.paced() > std::time::Duration::ZERO);
        assert!(cursor(&store) >= 400 - 40, "the steps kept up");
    }

    #[tokio::test]
    async fn the_graph_catches_up_with_the_writer_once_the_log_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Identity::open(&Store::open(dir.path()).unwrap());
        let indexer = std::sync::Arc::new(Indexer::start(store.clone()).unwrap());
        let w = crate::store::writer::Writer::start(
            store.store(),
            crate::store::writer::DEFAULT_QUEUE_BYTES,
            vec![indexer],
        )
        .unwrap();
        let mut s = sub(&["a", "b", "c"]);
        for (i, p) in s.events.iter_mut().enumerate() {
            let mut r = crate::store::codec::decode_event(p.record()).unwrap();
            r.user_id = Some("u".into());
            r.install_uuid = Some(format!("i{i}"));
            let record = crate::store::codec::encode_event(&r);
            *p = crate::store::writer::Pending::for_test(&r.event_id, record);
        }
        w.submit(s, 10).await.unwrap();
        // Exact at once (the tail is read with the graph), indexed once no commit came for
        // a while (on the indexer's thread).
        let p = store.profile("default", "u", 10).unwrap().unwrap();
        assert_eq!((p.identifiers.len(), p.events.len()), (4, 3));
        let indexed = || crate::identity::tests::cursor(&store);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while indexed() < 3 {
            assert!(std::time::Instant::now() < deadline, "never indexed");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(crate::identity::tests::graph_keys(&store), (3, 6));
        let p = store.profile("default", "i2", 10).unwrap().unwrap();
        assert_eq!((p.identifiers.len(), p.events.len()), (4, 3));
    }
}
