//! The dedupe index: an exact answer to "was (app, event_id) stored before, and as which
//! seq?" that stays cheap as the log grows. ARCHITECTURE.md "Dedupe design" has the
//! measurements behind it.
//!
//! A B-tree keyed by random ids dirties about one page per insert, so every commit rewrote
//! about one page per event and ingest slowed as the index grew. Here every write is
//! sequential:
//!
//! - Every event id gets a **fingerprint**: `app_id << 64 | first 64 bits of SHA-256(id)`.
//! - A commit's new fingerprints are written as **one row** of [`DEDUPE_COMMITS`] (the
//!   commit's first new seq → its (fingerprint, seq) pairs) in the same transaction as the
//!   events, and kept in memory (`active`) once that transaction committed.
//! - When `active` holds [`FREEZE_AT`] fingerprints, the next commit writes them, sorted, as a
//!   new **sorted run** ([`super::runs`], set [`RUNS`], keys `fingerprint ++ seq`, both
//!   big-endian) and deletes the rows they came from. Runs are merged geometrically, a
//!   bounded step per commit, so a fingerprint is rewritten about log8(ids / FREEZE_AT)
//!   times, each time sequentially. (One merged B-tree instead rewrote most of its pages
//!   per merge: at 10M ids, about 1 KB per new id.)
//! - **Bloom filters** in memory: one of everything (10 bits per fingerprint, about 1% false
//!   "maybe") and one per run (6 bits, about 6%), so a new id reads no run at all, and a
//!   resubmitted one reads about one. They are built in the background after a start (until
//!   then every run is read), and for a merge's output while its inputs' filters answer for
//!   it.
//! - A fingerprint is not an id: when one is found, the stored event's id is compared
//!   (exact). A different id with an already-owned fingerprint (a 64-bit collision), or an id
//!   whose fingerprint points at an event retention removed, is kept under its full key in
//!   [`DEDUPE`], which is then consulted too. So a "duplicate" is never false and a duplicate
//!   is never stored. A fingerprint is stored once: a new id with a taken one goes to
//!   [`DEDUPE`].
//! - **Before the writer**, the request's thread computes the fingerprints and settles the
//!   ids a committed snapshot holds ([`Precheck`]); the writer takes those as duplicates and
//!   looks up the rest as above.
//! - After a restart the rows not yet in a run are read back into memory. A run write or
//!   merge step cut short by a crash never committed, so it is simply done again.

use super::Result;
use super::codec::event_id_of;
use super::runs::{self, Run, RunSet};
use super::tables::{DEDUPE, DEDUPE_COMMITS, META, dedupe_key};
use redb::{Database, ReadTransaction, ReadableTable, Table, WriteTransaction};
use ring::digest;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, RwLock, RwLockReadGuard, Weak};

/// The name of the dedupe index's set of sorted runs (in the log's file).
pub const RUNS: &str = "dedupe";

/// Fingerprints kept in memory (and in [`DEDUPE_COMMITS`]) before they become a run. Larger
/// means fewer, larger level-0 runs; memory holds about 40 bytes per fingerprint (some
/// 10 MiB), and a start reads back at most that many. Debug builds (the test suites and
/// the crash and power-loss campaigns) write a run every 512 fingerprints, so that their few
/// thousand events go through run writes and merges of several levels too.
pub const FREEZE_AT: usize = if cfg!(debug_assertions) {
    512
} else {
    256 * 1024
};
/// Merge work per commit: this many keys per event the commit added, within
/// [`MIN_MERGE_STEP`]..[`MAX_MERGE_STEP`]. Each id is rewritten once per level it passes
/// through (two or three levels at 10M ids), so 4 keeps merges ahead of new runs.
const MERGE_PER_EVENT: usize = 4;
const MIN_MERGE_STEP: usize = 2048;
/// redb holds a transaction's dirty pages in memory until it commits: 64Ki keys are some
/// 1.7 MB of blocks.
const MAX_MERGE_STEP: usize = 64 * 1024;

const COMMIT_ROW_V1: u8 = 1;

/// `app_id << 64 | the first 64 bits of SHA-256(event_id)`. Stored on disk: never change.
pub fn fingerprint(app_id: u32, event_id: &str) -> u128 {
    let digest = digest::digest(&digest::SHA256, event_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    (u128::from(app_id) << 64) | u128::from(u64::from_be_bytes(first))
}

/// A run key (and a pair of a [`DEDUPE_COMMITS`] row): fingerprint ++ seq, big-endian, so
/// that runs sort by fingerprint.
fn pair_bytes(fp: u128, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&fp.to_be_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn split_pair(k: &[u8]) -> Option<(u128, u64)> {
    let fp = u128::from_be_bytes(k.get(..16)?.try_into().ok()?);
    let seq = u64::from_be_bytes(k.get(16..24)?.try_into().ok()?);
    (k.len() == 24).then_some((fp, seq))
}

/// The (fingerprint, seq) pairs of one [`DEDUPE_COMMITS`] row.
fn commit_row_pairs(row: &[u8]) -> Result<impl Iterator<Item = (u128, u64)> + '_> {
    match row.split_first() {
        Some((&COMMIT_ROW_V1, pairs)) if pairs.len() % 24 == 0 => {
            Ok(pairs.chunks_exact(24).filter_map(split_pair))
        }
        _ => Err(super::Error::Corrupt(
            "undecodable dedupe commit row".into(),
        )),
    }
}

/// The seq stored under `fp` in one run, if any.
fn probe(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    fp: u128,
) -> Result<Option<u64>> {
    let found = runs::seek(table, &pair_bytes(fp, 0), split_pair)?.flatten();
    Ok(found.and_then(|(f, seq)| (f == fp).then_some(seq)))
}

/// The seq `fp` is stored under: in the first of `runs` (run ids, newest first) that holds
/// it. Run tables are opened once per transaction, kept in `tables`.
/// The writer ([`Batch`]) and the pre-check ([`Precheck`]) both look up this way, on a write
/// and on a read transaction.
fn owner_in_runs<T: ReadableTable<&'static [u8], &'static [u8]>>(
    fp: u128,
    runs: impl IntoIterator<Item = u32>,
    tables: &mut HashMap<u32, T>,
    open: impl Fn(&str) -> std::result::Result<T, redb::TableError>,
) -> Result<Option<u64>> {
    for id in runs {
        let table = match tables.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(open(&runs::table_name(RUNS, id))?)
            }
        };
        if let Some(seq) = probe(table, fp)? {
            return Ok(Some(seq));
        }
    }
    Ok(None)
}

/// Fingerprints are already uniformly random: hashing them again is wasted work.
#[derive(Default)]
pub struct FpHasher(u64);

impl Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u128(&mut self, k: u128) {
        self.0 = (k as u64) ^ ((k >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type FpMap = HashMap<u128, u64, BuildHasherDefault<FpHasher>>;

/// A blocked Bloom filter over a known number of fingerprints: "no" is exact, "maybe" costs
/// a read. All probes of a fingerprint fall in one 64-byte block, so a lookup touches one
/// cache line (the filters are megabytes: a miss per probe was most of a lookup's time).
/// Fingerprints are uniformly random already: the block and the bits are taken from them.
pub struct FpFilter {
    blocks: Vec<[u64; 8]>,
    probes: u32,
    /// Fingerprints added (a growing filter starts a new part past the capacity).
    len: usize,
    capacity: usize,
}

/// Bits per fingerprint and probes (within a 512-bit block) of the filter of everything:
/// about 1% false "maybe".
const FILTER_BITS_PER_KEY: usize = 10;
const FILTER_PROBES: u32 = 7;
/// The same for a run's filter, asked only after the filter of everything said "maybe"
/// (mostly for resubmitted ids): about 6% false "maybe", for 40% less memory (a 10M suite
/// peaked at 203 MiB with 10 bits here).
const RUN_FILTER_BITS_PER_KEY: usize = 6;
const RUN_FILTER_PROBES: u32 = 4;

impl FpFilter {
    pub fn with_capacity(keys: usize) -> FpFilter {
        FpFilter::sized(keys, FILTER_BITS_PER_KEY, FILTER_PROBES)
    }

    /// A filter for one run.
    pub fn for_run(keys: usize) -> FpFilter {
        FpFilter::sized(keys, RUN_FILTER_BITS_PER_KEY, RUN_FILTER_PROBES)
    }

    fn sized(keys: usize, bits_per_key: usize, probes: u32) -> FpFilter {
        let blocks = (keys * bits_per_key).div_ceil(512).max(1);
        FpFilter {
            blocks: vec![[0; 8]; blocks],
            probes,
            len: 0,
            capacity: keys,
        }
    }

    /// The block of `fp` and the bits to probe in it (9 bits each).
    fn locate(&self, fp: u128) -> (usize, u64) {
        // The app id (high half) is mixed in: the same id in two apps is two fingerprints.
        let h = (fp as u64) ^ ((fp >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let block = ((u128::from(h) * self.blocks.len() as u128) >> 64) as usize;
        // The low bits, mixed, for the probes (the block came from the high ones).
        let mut bits = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        bits ^= bits >> 29;
        (block, bits)
    }

    pub fn insert(&mut self, fp: u128) {
        let (b, bits) = self.locate(fp);
        let block = &mut self.blocks[b];
        for i in 0..self.probes {
            let bit = (bits >> (9 * i)) & 511;
            block[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.len += 1;
    }

    pub fn may_contain(&self, fp: u128) -> bool {
        let (b, bits) = self.locate(fp);
        let block = &self.blocks[b];
        (0..self.probes).all(|i| {
            let bit = (bits >> (9 * i)) & 511;
            block[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.blocks.len() * 64
    }
}

/// A filter that grows by adding parts, each twice the capacity of the last, so that it
/// never has to be rebuilt: the filter of every fingerprint in a run.
#[derive(Default)]
pub struct GrowingFilter {
    parts: Vec<FpFilter>,
}

/// Capacity of a growing filter's first part.
const GROWING_FIRST_CAPACITY: usize = 1 << 20;

impl GrowingFilter {
    fn with_capacity(keys: usize) -> GrowingFilter {
        GrowingFilter {
            parts: vec![FpFilter::with_capacity(keys.max(GROWING_FIRST_CAPACITY))],
        }
    }

    pub fn insert(&mut self, fp: u128) {
        let full = self.parts.last().is_none_or(|p| p.len >= p.capacity);
        if full {
            let capacity = self
                .parts
                .last()
                .map_or(GROWING_FIRST_CAPACITY, |p| p.capacity * 2);
            self.parts.push(FpFilter::with_capacity(capacity));
        }
        if let Some(p) = self.parts.last_mut() {
            p.insert(fp);
        }
    }

    pub fn may_contain(&self, fp: u128) -> bool {
        self.parts.iter().any(|p| p.may_contain(fp))
    }

    fn bytes(&self) -> usize {
        self.parts.iter().map(FpFilter::bytes).sum()
    }
}

/// What a background build made.
enum Built {
    /// The filter of one run.
    Run(u32, Result<FpFilter>),
    /// The filter of everything in runs as of the build's snapshot.
    All(Result<GrowingFilter>),
}

/// Builds filters on threads of their own, from read transactions of the database. It holds
/// the database weakly: after a storage failure the writer reopens the file, which waits for
/// every handle of the failed one to go (a build holds one only while it runs).
struct Builder {
    db: Weak<Database>,
    tx: Sender<Built>,
    rx: Receiver<Built>,
}

impl Builder {
    /// Builds, in one snapshot, the filter of every run listed in it (smallest first, each
    /// sent when done) and then the filter of everything.
    fn spawn_all(&self) {
        let (db, tx) = (self.db.clone(), self.tx.clone());
        self.spawn(move || {
            let Some(db) = db.upgrade() else {
                return;
            };
            use redb::ReadableDatabase;
            let all = (|| -> Result<GrowingFilter> {
                let txn = db.begin_read()?;
                let mut runs = RunSet::load(&txn.open_table(META)?, RUNS)?.runs;
                let keys = runs.iter().map(|r| r.keys).sum::<u64>();
                let mut all = GrowingFilter::with_capacity((keys + keys / 4) as usize);
                runs.sort_by_key(|r| r.keys);
                for r in runs {
                    let built = run_filter(&txn, &r, Some(&mut all));
                    let failed = built.is_err();
                    if tx.send(Built::Run(r.id, built)).is_err() || failed {
                        return Err(super::Error::Internal("a run's filter failed".into()));
                    }
                }
                Ok(all)
            })();
            let _ = tx.send(Built::All(all));
        });
    }

    /// Builds the filter of one run (the output of a merge).
    fn spawn_run(&self, run: Run) {
        let (db, tx) = (self.db.clone(), self.tx.clone());
        self.spawn(move || {
            let Some(db) = db.upgrade() else {
                return;
            };
            use redb::ReadableDatabase;
            let built = db
                .begin_read()
                .map_err(Into::into)
                .and_then(|txn| run_filter(&txn, &run, None));
            let _ = tx.send(Built::Run(run.id, built));
        });
    }

    fn spawn(&self, work: impl FnOnce() + Send + 'static) {
        let spawned = std::thread::Builder::new()
            .name("inlet-dedupe-filter".into())
            .spawn(work);
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to build a dedupe filter; lookups read the runs");
        }
    }
}

/// The filter of one run; its fingerprints also go into `all`.
fn run_filter(
    txn: &ReadTransaction,
    run: &Run,
    mut all: Option<&mut GrowingFilter>,
) -> Result<FpFilter> {
    let table = txn.open_table(runs::def(&runs::table_name(RUNS, run.id)))?;
    let mut filter = FpFilter::for_run(run.keys as usize);
    runs::for_each_key(&table, |k| {
        if let Some((fp, _)) = split_pair(k) {
            filter.insert(fp);
            if let Some(all) = all.as_deref_mut() {
                all.insert(fp);
            }
        }
    })?;
    Ok(filter)
}

/// The filter of everything in runs.
#[derive(Default)]
enum All {
    /// None (tests, or its build failed): lookups ask each run's filter.
    #[default]
    Off,
    Building {
        /// Fingerprints of runs written since the build's snapshot.
        missed: Vec<u128>,
    },
    Ready(GrowingFilter),
}

/// The filters in front of the runs: one of everything, which rules out
/// almost every new id in one cache line, and one per run, which picks the run to read for
/// the others. A run without a filter is read on every lookup that gets that far: exact,
/// only slower.
#[derive(Default)]
struct Filters {
    all: All,
    runs: HashMap<u32, FpFilter>,
    /// A merge's output whose own filter is being built → the merge's inputs: their filters
    /// answer for it meanwhile (it holds exactly their keys).
    proxies: HashMap<u32, Vec<u32>>,
}

impl Filters {
    /// Whether `fp` is certainly in no run.
    fn surely_absent(&self, fp: u128) -> bool {
        match &self.all {
            All::Ready(f) => !f.may_contain(fp),
            _ => false,
        }
    }

    fn may_contain(&self, run: u32, fp: u128) -> bool {
        if let Some(f) = self.runs.get(&run) {
            return f.may_contain(fp);
        }
        match self.proxies.get(&run) {
            Some(inputs) => inputs.iter().any(|&i| self.may_contain(i, fp)),
            None => true,
        }
    }

    /// A run of `fps` was written (its own filter is in already).
    fn add_run(&mut self, fps: impl Iterator<Item = u128>) {
        match &mut self.all {
            All::Ready(f) => fps.for_each(|fp| f.insert(fp)),
            All::Building { missed } => missed.extend(fps),
            All::Off => {}
        }
    }

    /// Takes in a finished build.
    fn take(&mut self, built: Built) {
        match built {
            Built::All(Ok(mut f)) => {
                if let All::Building { missed } = &self.all {
                    missed.iter().for_each(|&fp| f.insert(fp));
                }
                tracing::info!(bytes = f.bytes(), "dedupe filter ready");
                self.all = All::Ready(f);
            }
            Built::All(Err(e)) => {
                tracing::warn!(error = %e, "building the dedupe filter failed; lookups ask each run's filter");
                self.all = All::Off;
            }
            Built::Run(id, Ok(f)) => {
                self.runs.insert(id, f);
                self.proxies.remove(&id);
            }
            Built::Run(id, Err(e)) => {
                tracing::warn!(run = id, error = %e, "building a dedupe run's filter failed; lookups read that run");
            }
        }
    }

    /// Keeps the filters and proxies of the runs listed in `set` and of the inputs that
    /// answer for them.
    fn keep_live(&mut self, set: &RunSet) {
        let mut live: Vec<u32> = set.runs.iter().map(|r| r.id).collect();
        let mut i = 0;
        while i < live.len() {
            if let Some(inputs) = self.proxies.get(&live[i]) {
                for id in inputs {
                    if !live.contains(id) {
                        live.push(*id);
                    }
                }
            }
            i += 1;
        }
        self.runs.retain(|id, _| live.contains(id));
        self.proxies.retain(|id, _| live.contains(id));
    }
}

/// What a request thread learnt about one event id before handing it to the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Its fingerprint; whether it was stored before is left to the writer.
    Fingerprint(u128),
    /// A committed snapshot holds it, as this seq: a duplicate.
    Stored(u64),
}

/// Looks event ids up on the request threads, before the writer, in a read transaction of
/// the log (the writer thread is the one serial stage of ingest, and a resubmitted old id
/// costs it two random page reads: its run's block and the original record).
///
/// Only ids that the committed snapshot holds are settled here, each by comparing the stored
/// record's id (exact, as the writer does). Everything else goes to the writer as before,
/// with its fingerprint computed: ids the filters rule out, ids not in a run yet (the
/// writer's memory), ids whose fingerprint belongs to another id, and every id while the
/// filter of everything is being built or the database is being reopened. So the writer
/// stays the only one to decide that an id is new, and a duplicate found here is one as of
/// its snapshot (an event stays stored until retention removes it; the answer is then that
/// of a request checked just before retention ran).
///
/// The filters are the writer's (`Staged` changes them under the lock, rarely: when a run is
/// written, a merge completes or a build finishes); the lock is never held over a read.
#[derive(Default)]
pub struct Precheck {
    filters: RwLock<Filters>,
    /// The database the writer uses; empty while it is being reopened.
    db: RwLock<Weak<Database>>,
}

impl Precheck {
    fn filters(&self) -> RwLockReadGuard<'_, Filters> {
        self.filters.read().unwrap_or_else(|e| e.into_inner())
    }

    fn filters_mut(&self) -> std::sync::RwLockWriteGuard<'_, Filters> {
        self.filters.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops reading the database (the writer found it failed and will reopen it).
    pub fn detach(&self) {
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Weak::new();
    }

    /// Whether the filter of everything is built (before, every id goes to the writer).
    pub fn ready(&self) -> bool {
        matches!(self.filters().all, All::Ready(_))
    }

    /// What the filters alone tell of each id of `ids` (events of app `app_id`): its
    /// fingerprint, and whether it may be stored. Cheap (a hash and a cache line per id);
    /// [`Precheck::settle`] does the reads.
    pub fn check(&self, app_id: u32, ids: &[&str]) -> Prechecked {
        // Hashed before the lock, so the writer never waits for a request's hashing.
        let fps: Vec<u128> = ids.iter().map(|id| fingerprint(app_id, id)).collect();
        let mut maybe = Vec::new();
        let filters = self.filters();
        if matches!(filters.all, All::Ready(_)) {
            for (i, &fp) in fps.iter().enumerate() {
                if !filters.surely_absent(fp) {
                    maybe.push((i, fp));
                }
            }
        }
        drop(filters);
        let known = fps.into_iter().map(Known::Fingerprint).collect();
        Prechecked { known, maybe }
    }

    /// Settles the ids of `pre` that may be stored (about two random page reads each) and
    /// returns what is known of every id, in order. Never fails: an id it cannot settle (for
    /// any reason, errors included) is left to the writer.
    pub fn settle(&self, ids: &[&str], pre: Prechecked) -> Vec<Known> {
        let Prechecked { mut known, maybe } = pre;
        if maybe.is_empty() {
            return known;
        }
        let db = self.db.read().unwrap_or_else(|e| e.into_inner()).upgrade();
        if let Some(db) = db
            && let Err(e) = self.find(&db, ids, &maybe, &mut known)
        {
            tracing::debug!(error = %e, "dedupe pre-check skipped; the writer looks the ids up");
        }
        known
    }

    /// Settles the ids at `maybe` (index in `ids`, fingerprint) that a snapshot of `db`
    /// holds.
    fn find(
        &self,
        db: &Database,
        ids: &[&str],
        maybe: &[(usize, u128)],
        known: &mut [Known],
    ) -> Result<()> {
        use redb::ReadableDatabase;
        let txn = db.begin_read()?;
        let set = RunSet::load(&txn.open_table(META)?, RUNS)?;
        // The runs each id may be in, newest first: decided under the lock, read after it.
        let plans: Vec<(usize, u128, Vec<u32>)> = {
            let filters = self.filters();
            maybe
                .iter()
                .map(|&(i, fp)| {
                    let runs = set.runs.iter().rev().map(|r| r.id);
                    (
                        i,
                        fp,
                        runs.filter(|&r| filters.may_contain(r, fp)).collect(),
                    )
                })
                .collect()
        };
        let events = txn.open_table(super::tables::EVENTS)?;
        let mut tables = HashMap::new();
        let open = |name: &str| txn.open_table(runs::def(name));
        for (i, fp, runs) in plans {
            let owner = owner_in_runs(fp, runs, &mut tables, open)?;
            // A fingerprint is stored once: the owner's record says whether it is this id.
            if let Some(seq) = owner
                && let Some(record) = events.get(seq)?
                && event_id_of(record.value()) == Some(ids[i])
            {
                known[i] = Known::Stored(seq);
            }
        }
        Ok(())
    }
}

/// [`Precheck::check`]'s answer: a fingerprint for every id, and which ids may be stored.
pub struct Prechecked {
    known: Vec<Known>,
    /// (index, fingerprint) of the ids the filter of everything did not rule out.
    maybe: Vec<(usize, u128)>,
}

impl Prechecked {
    /// How many ids [`Precheck::settle`] would look up.
    pub fn to_settle(&self) -> usize {
        self.maybe.len()
    }
}

/// The writer thread's part of the index: what is not in a run yet, and the filters (shared
/// with the request threads' [`Precheck`]).
pub struct Staged {
    /// [`FREEZE_AT`] (tests make runs of a few keys).
    freeze_at: usize,
    shared: Arc<Precheck>,
    builder: Option<Builder>,
    /// Fingerprint → seq, committed but not in a run yet (all of [`DEDUPE_COMMITS`]).
    active: FpMap,
    /// Largest seq in `active`: the rows a run of it replaces are those up to it.
    active_upto: u64,
    /// The runs as of the last commit.
    runs: RunSet,
}

impl Default for Staged {
    fn default() -> Staged {
        Staged {
            freeze_at: FREEZE_AT,
            shared: Arc::default(),
            builder: None,
            active: FpMap::default(),
            active_upto: 0,
            runs: RunSet::default(),
        }
    }
}

impl Staged {
    /// Reads back everything not in a run yet, and the list of runs.
    pub fn load(txn: &WriteTransaction) -> Result<Staged> {
        let mut staged = Staged::default();
        for row in txn.open_table(DEDUPE_COMMITS)?.iter()? {
            let (_, pairs) = row?;
            for (fp, seq) in commit_row_pairs(pairs.value())? {
                staged.remember(fp, seq);
            }
        }
        staged.runs = RunSet::load(&txn.open_table(META)?, RUNS)?;
        Ok(staged)
    }

    fn remember(&mut self, fp: u128, seq: u64) {
        self.active.insert(fp, seq);
        self.active_upto = self.active_upto.max(seq);
    }

    /// Starts building the filters of every run from `db` in the
    /// background; later merges' outputs get theirs the same way. Until a filter is in, its
    /// run is read on every lookup. The pre-checks read `db` from now on.
    pub fn build_filter(&mut self, db: Arc<Database>) {
        let (tx, rx) = channel();
        let builder = Builder {
            db: Arc::downgrade(&db),
            tx,
            rx,
        };
        builder.spawn_all();
        *self.shared.filters_mut() = Filters {
            all: All::Building { missed: Vec::new() },
            ..Filters::default()
        };
        *self.shared.db.write().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&db);
        self.builder = Some(builder);
    }

    /// The pre-check sharing this index's filters.
    pub fn precheck(&self) -> Arc<Precheck> {
        self.shared.clone()
    }

    /// Shares `precheck` (the one handed out before a reload) instead of its own: call before
    /// [`Staged::build_filter`], which resets it.
    pub fn share(&mut self, precheck: Arc<Precheck>) {
        self.shared = precheck;
    }

    /// Fingerprints held in memory (not in a run yet).
    pub fn in_memory(&self) -> usize {
        self.active.len()
    }

    /// Starts the index work of one write transaction.
    pub fn begin<'s, 't>(&'s self, txn: &'t WriteTransaction) -> Result<Batch<'s, 't>> {
        Ok(Batch {
            staged: self,
            filters: self.shared.filters(),
            txn,
            added: FpMap::default(),
            runs: RunSet::load(&txn.open_table(META)?, RUNS)?,
            run_tables: RefCell::new(HashMap::new()),
            overflow: txn.open_table(DEDUPE)?,
        })
    }

    /// Takes in what a committed [`Batch`] did.
    pub fn apply(&mut self, done: Committed) {
        let new_run = done.new_run.as_ref().map(|(id, _)| *id);
        // Runs that merges completed: their inputs' filters answer until their own is built.
        let appeared: Vec<Run> = done
            .after
            .runs
            .iter()
            .filter(|r| Some(r.id) != new_run && !self.runs.runs.iter().any(|o| o.id == r.id))
            .cloned()
            .collect();
        let built: Vec<Built> = match &self.builder {
            Some(b) => b.rx.try_iter().collect(),
            None => Vec::new(),
        };
        // The pre-checks share the filters: lock only when they change (rarely).
        if new_run.is_some() || !built.is_empty() || done.after.runs != self.runs.runs {
            let mut filters = self.shared.filters_mut();
            if let Some((id, filter)) = done.new_run {
                filters.add_run(self.active.keys().copied());
                self.active.clear();
                self.active_upto = 0;
                filters.runs.insert(id, filter);
            }
            for run in &appeared {
                if let Some(m) = self.runs.merges.iter().find(|m| m.output == run.id) {
                    filters.proxies.insert(run.id, m.inputs.clone());
                }
            }
            built.into_iter().for_each(|b| filters.take(b));
            filters.keep_live(&done.after);
        }
        for (fp, seq) in done.added {
            self.remember(fp, seq);
        }
        if let Some(b) = &self.builder {
            appeared.into_iter().for_each(|run| b.spawn_run(run));
        }
        self.runs = done.after;
    }
}

/// Whether an event id was stored before.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    Seen(u64),
    New(Slot),
}

/// Where a new id will be indexed.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    /// Its fingerprint is free: a commit row + memory.
    Fingerprint(u128),
    /// Its fingerprint is taken: full key in [`DEDUPE`].
    FullKey(Vec<u8>),
}

type RunTableMut<'t> = Table<'t, &'static [u8], &'static [u8]>;

/// The index inside one write transaction.
pub struct Batch<'s, 't> {
    staged: &'s Staged,
    /// The filters, read-locked for the transaction ([`Staged::apply`] changes them after).
    filters: RwLockReadGuard<'s, Filters>,
    txn: &'t WriteTransaction,
    /// Fingerprints added by this transaction (not in `staged` until it commits).
    added: FpMap,
    /// The runs as this transaction sees them, oldest first.
    runs: RunSet,
    /// Run tables opened so far (only the runs a filter could not rule out are opened).
    run_tables: RefCell<HashMap<u32, RunTableMut<'t>>>,
    overflow: Table<'t, &'static [u8], u64>,
}

/// What a committed batch changed in memory.
pub struct Committed {
    added: FpMap,
    /// The run written from `active`, and its filter.
    new_run: Option<(u32, FpFilter)>,
    /// The runs after the commit.
    after: RunSet,
}

impl Batch<'_, '_> {
    /// Looks `event_id` of `app_id` up; `events` is the log as this transaction sees it.
    pub fn check(
        &self,
        events: &impl ReadableTable<u64, &'static [u8]>,
        app_id: u32,
        event_id: &str,
    ) -> Result<Check> {
        self.check_known(events, app_id, event_id, None)
    }

    /// [`Batch::check`], taking what a [`Precheck`] found: a duplicate it settled, or the
    /// fingerprint it computed.
    pub fn check_known(
        &self,
        events: &impl ReadableTable<u64, &'static [u8]>,
        app_id: u32,
        event_id: &str,
        known: Option<Known>,
    ) -> Result<Check> {
        let fp = match known {
            Some(Known::Stored(seq)) => return Ok(Check::Seen(seq)),
            Some(Known::Fingerprint(fp)) => fp,
            None => fingerprint(app_id, event_id),
        };
        let owner = match self.added.get(&fp).or_else(|| self.staged.active.get(&fp)) {
            Some(&seq) => Some(seq),
            None => self.stored(fp)?,
        };
        let Some(owner) = owner else {
            return Ok(Check::New(Slot::Fingerprint(fp)));
        };
        // The fingerprint is taken: by this very id, or (rarely) by another one. An owner
        // whose record is gone is treated like another id: only the full key can say. A
        // record whose id cannot be read is an error, never a guess (a guess could store a
        // duplicate).
        if let Some(record) = events.get(owner)? {
            let owner_id = event_id_of(record.value()).ok_or_else(|| {
                super::Error::Corrupt(format!("event {owner}: unreadable event id"))
            })?;
            if owner_id == event_id {
                return Ok(Check::Seen(owner));
            }
        }
        let full = dedupe_key(app_id, event_id);
        Ok(match self.overflow.get(full.as_slice())? {
            Some(seq) => Check::Seen(seq.value()),
            None => Check::New(Slot::FullKey(full)),
        })
    }

    /// The seq `fp` is stored under in a run, newest run first.
    fn stored(&self, fp: u128) -> Result<Option<u64>> {
        let filters = &self.filters;
        if filters.surely_absent(fp) {
            return Ok(None);
        }
        let runs = self.runs.runs.iter().rev().map(|r| r.id);
        owner_in_runs(
            fp,
            runs.filter(|&id| filters.may_contain(id, fp)),
            &mut self.run_tables.borrow_mut(),
            |name| self.txn.open_table(runs::def(name)),
        )
    }

    /// Records a new id stored as `seq` (in this transaction).
    pub fn insert(&mut self, slot: Slot, seq: u64) -> Result<()> {
        match slot {
            Slot::Fingerprint(fp) => {
                self.added.insert(fp, seq);
            }
            Slot::FullKey(key) => {
                self.overflow.insert(key.as_slice(), seq)?;
            }
        }
        Ok(())
    }

    /// Ends the index work of a transaction that added `added_events` events: writes its
    /// commit row, the run of everything in memory once that is large enough, and a merge
    /// step. Hand the result to [`Staged::apply`] once the commit succeeded.
    pub fn finish(self, added_events: usize) -> Result<Committed> {
        let Batch {
            staged,
            filters,
            txn,
            added,
            runs: before,
            run_tables,
            overflow,
        } = self;
        // Merges open (and delete) run tables themselves.
        drop((filters, run_tables, overflow));
        if !added.is_empty() {
            let mut pairs: Vec<(u64, u128)> = added.iter().map(|(&fp, &seq)| (seq, fp)).collect();
            pairs.sort_unstable();
            let mut row = Vec::with_capacity(1 + 24 * pairs.len());
            row.push(COMMIT_ROW_V1);
            for &(seq, fp) in &pairs {
                row.extend_from_slice(&pair_bytes(fp, seq));
            }
            txn.open_table(DEDUPE_COMMITS)?
                .insert(pairs[0].0, row.as_slice())?;
        }
        let new_run = if staged.active.len() >= staged.freeze_at {
            Some(write_run(txn, &staged.active, staged.active_upto)?)
        } else {
            None
        };
        let after = if new_run.is_some() || before.merging() {
            let budget = (MERGE_PER_EVENT * added_events).clamp(MIN_MERGE_STEP, MAX_MERGE_STEP);
            RunSet::merge_step(txn, RUNS, budget)?;
            RunSet::load(&txn.open_table(META)?, RUNS)?
        } else {
            before
        };
        Ok(Committed {
            added,
            new_run,
            after,
        })
    }
}

/// Writes `active` as a new run and deletes the rows it came from (every row up to `upto`:
/// rows are keyed by their first seq, and this transaction's own row starts past `upto`).
fn write_run(txn: &WriteTransaction, active: &FpMap, upto: u64) -> Result<(u32, FpFilter)> {
    let mut keys: Vec<[u8; 24]> = active
        .iter()
        .map(|(&fp, &seq)| pair_bytes(fp, seq))
        .collect();
    keys.sort_unstable();
    let id = RunSet::add(txn, RUNS, keys.iter().map(|k| k.as_slice()))?
        .ok_or_else(|| super::Error::Internal("an empty dedupe run".into()))?;
    let mut filter = FpFilter::for_run(keys.len());
    for &fp in active.keys() {
        filter.insert(fp);
    }
    txn.open_table(DEDUPE_COMMITS)?
        .retain_in(..=upto, |_, _| false)?;
    Ok((id, filter))
}

/// Every fingerprint entry of the index as one read transaction sees it (for
/// `Store::verify`).
#[derive(Default)]
pub struct Entries {
    /// (seq, fingerprint) in a run.
    pub runs: Vec<(u64, u128)>,
    /// (seq, fingerprint) in [`DEDUPE_COMMITS`], not in a run yet.
    pub unmerged: Vec<(u64, u128)>,
}

pub fn entries(txn: &ReadTransaction) -> Result<Entries> {
    let mut out = Entries::default();
    let set = RunSet::load(&txn.open_table(META)?, RUNS)?;
    for run in &set.runs {
        let table = txn.open_table(runs::def(&runs::table_name(RUNS, run.id)))?;
        let mut bad = false;
        runs::for_each_key(&table, |k| match split_pair(k) {
            Some((fp, seq)) => out.runs.push((seq, fp)),
            None => bad = true,
        })?;
        if bad {
            return Err(super::Error::Corrupt(format!(
                "dedupe run {}: a key of the wrong size",
                run.id
            )));
        }
    }
    for row in txn.open_table(DEDUPE_COMMITS)?.iter()? {
        let (_, pairs) = row?;
        out.unmerged
            .extend(commit_row_pairs(pairs.value())?.map(|(fp, seq)| (seq, fp)));
    }
    Ok(out)
}

/// The seq of `(app_id, event_id)` as committed, for readers outside the writer thread (the
/// admin panel's lookup by id, audit keys): the runs (newest first), the full-key table, then a scan of the rows not in a run yet (at most [`FREEZE_AT`] small
/// entries).
pub fn lookup_committed(txn: &ReadTransaction, app_id: u32, event_id: &str) -> Result<Option<u64>> {
    let fp = fingerprint(app_id, event_id);
    let events = txn.open_table(super::tables::EVENTS)?;
    let is_it = |seq: u64| -> Result<bool> {
        Ok(match events.get(seq)? {
            Some(r) => event_id_of(r.value()) == Some(event_id),
            None => false,
        })
    };
    let set = RunSet::load(&txn.open_table(META)?, RUNS)?;
    for run in set.runs.iter().rev() {
        let table = txn.open_table(runs::def(&runs::table_name(RUNS, run.id)))?;
        if let Some(seq) = probe(&table, fp)?
            && is_it(seq)?
        {
            return Ok(Some(seq));
        }
    }
    let full = dedupe_key(app_id, event_id);
    if let Some(seq) = txn.open_table(DEDUPE)?.get(full.as_slice())? {
        return Ok(Some(seq.value()));
    }
    for row in txn.open_table(DEDUPE_COMMITS)?.iter()? {
        let (_, pairs) = row?;
        for (f, seq) in commit_row_pairs(pairs.value())? {
            if f == fp && is_it(seq)? {
                return Ok(Some(seq));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::EVENTS;
    use redb::ReadableDatabase;

    fn record(id: &str) -> Vec<u8> {
        crate::store::codec::encode_event(&crate::store::codec::EventRecord::for_test(id))
    }

    /// Stores `ids` through the staged index the way the writer does, committing only with
    /// `commit` (else the transaction is dropped, as by a crash before its commit); returns
    /// which were new.
    fn ingest_or_crash(
        db: &Database,
        staged: &mut Staged,
        seq: &mut u64,
        ids: &[&str],
        commit: bool,
    ) -> Vec<bool> {
        let txn = db.begin_write().unwrap();
        let mut fresh = Vec::new();
        let first = *seq;
        let done = {
            let mut events = txn.open_table(EVENTS).unwrap();
            let mut batch = staged.begin(&txn).unwrap();
            for id in ids {
                match batch.check(&events, 1, id).unwrap() {
                    Check::Seen(_) => fresh.push(false),
                    Check::New(slot) => {
                        events.insert(*seq, record(id).as_slice()).unwrap();
                        batch.insert(slot, *seq).unwrap();
                        *seq += 1;
                        fresh.push(true);
                    }
                }
            }
            batch.finish((*seq - first) as usize).unwrap()
        };
        if commit {
            txn.commit().unwrap();
            staged.apply(done);
        } else {
            *seq = first;
        }
        fresh
    }

    fn ingest(db: &Database, staged: &mut Staged, seq: &mut u64, ids: &[&str]) -> Vec<bool> {
        ingest_or_crash(db, staged, seq, ids, true)
    }

    fn reload(db: &Database, freeze_at: usize) -> Staged {
        let txn = db.begin_write().unwrap();
        let mut s = Staged::load(&txn).unwrap();
        txn.abort().unwrap();
        s.freeze_at = freeze_at;
        s
    }

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    fn refs(ids: &[String]) -> Vec<&str> {
        ids.iter().map(String::as_str).collect()
    }

    /// A database with the index's tables (as `Store::open` makes them).
    fn fresh_db(dir: &std::path::Path) -> Database {
        let db = Database::create(dir.join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(DEDUPE_COMMITS).unwrap();
        txn.open_table(META).unwrap();
        txn.commit().unwrap();
        db
    }

    fn runs_of(db: &Database) -> RunSet {
        let txn = db.begin_read().unwrap();
        RunSet::load(&txn.open_table(META).unwrap(), RUNS).unwrap()
    }

    /// Commits one new id at a time until every run has its filter and the filter of
    /// everything is in (builds are taken in at commits).
    fn commit_until_filtered(db: &Database, staged: &mut Staged, seq: &mut u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut n = 0;
        loop {
            let set = runs_of(db);
            let filters = staged.shared.filters();
            if set.runs.iter().all(|r| filters.runs.contains_key(&r.id))
                && matches!(filters.all, All::Ready(_))
            {
                return;
            }
            drop(filters);
            assert!(
                std::time::Instant::now() < deadline,
                "the filters were never built"
            );
            assert_eq!(ingest(db, staged, seq, &[&format!("filler-{n}")]), [true]);
            n += 1;
        }
    }

    /// The pre-check settles an id only when a committed snapshot holds that very id (in a
    /// run, as the seq it was stored as); everything else is left to the writer with its
    /// fingerprint: ids not in a run yet, new ids, another app's, a forged fingerprint
    /// collision, and every id while the filters are not built or the database is detached.
    #[test]
    fn the_precheck_settles_only_ids_a_snapshot_holds() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(fresh_db(dir.path()));
        let mut staged = Staged {
            freeze_at: 100,
            ..Staged::default()
        };
        let pre = staged.precheck();
        let mut seq = 1;
        let stored = ids("id", 1_000);
        assert!(
            ingest(&db, &mut staged, &mut seq, &refs(&stored))
                .iter()
                .all(|&n| n)
        );
        // No filters yet: nothing is settled.
        let p = pre.check(1, &["id-3"]);
        assert_eq!(p.to_settle(), 0);
        assert_eq!(
            pre.settle(&["id-3"], p),
            [Known::Fingerprint(fingerprint(1, "id-3"))]
        );

        staged.build_filter(db.clone());
        // A forged collision: "forged"'s fingerprint points at "id-0"'s event (seq 1), and
        // goes into the next run with the ids below.
        staged.active.insert(fingerprint(1, "forged"), 1);
        let more = ids("more", 150);
        assert!(
            ingest(&db, &mut staged, &mut seq, &refs(&more))
                .iter()
                .all(|&n| n)
        );
        commit_until_filtered(&db, &mut staged, &mut seq);
        let recent = format!("recent-{seq}");
        assert_eq!(ingest(&db, &mut staged, &mut seq, &[&recent]), [true]);
        assert!(staged.active.contains_key(&fingerprint(1, &recent)));

        let asked = [
            "id-0",
            "id-517",
            "more-149",
            "never-stored",
            recent.as_str(),
            "forged",
        ];
        let p = pre.check(1, &asked);
        let known = pre.settle(&asked, p);
        let fp = |id: &str| Known::Fingerprint(fingerprint(1, id));
        assert_eq!(
            known,
            [
                Known::Stored(1),
                Known::Stored(518),
                Known::Stored(1_150),
                fp("never-stored"),
                fp(&recent),
                fp("forged"),
            ]
        );
        // Another app's ids are other ids.
        let p = pre.check(2, &["id-0"]);
        assert_eq!(
            pre.settle(&["id-0"], p),
            [Known::Fingerprint(fingerprint(2, "id-0"))]
        );
        // The writer takes a settled id as a duplicate without looking, and a fingerprint
        // as the one to look up.
        let txn = db.begin_write().unwrap();
        {
            let events = txn.open_table(EVENTS).unwrap();
            let batch = staged.begin(&txn).unwrap();
            let check = |id: &str, k| batch.check_known(&events, 1, id, Some(k)).unwrap();
            assert_eq!(check("id-0", Known::Stored(1)), Check::Seen(1));
            assert_eq!(check("id-5", fp("id-5")), Check::Seen(6));
            assert_eq!(check(&recent, fp(&recent)), Check::Seen(seq - 1));
            let forged = fingerprint(1, "forged");
            assert_eq!(
                check("forged", Known::Fingerprint(forged)),
                Check::New(Slot::FullKey(dedupe_key(1, "forged")))
            );
            assert_eq!(
                check("never-stored", fp("never-stored")),
                Check::New(Slot::Fingerprint(fingerprint(1, "never-stored")))
            );
        }
        txn.abort().unwrap();
        // Detached (the writer is reopening the database): nothing is settled.
        pre.detach();
        let p = pre.check(1, &["id-0"]);
        assert_eq!(p.to_settle(), 1);
        assert_eq!(pre.settle(&["id-0"], p), [fp("id-0")]);
    }

    #[test]
    fn a_fingerprint_collision_is_neither_a_false_duplicate_nor_a_double() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let mut staged = Staged::default();
        let mut seq = 1;
        assert_eq!(ingest(&db, &mut staged, &mut seq, &["a"]), [true]);
        // Forge a collision: make "b"'s fingerprint point at "a"'s event.
        let fp_b = fingerprint(1, "b");
        staged.active.insert(fp_b, 1);
        assert_eq!(
            ingest(&db, &mut staged, &mut seq, &["b", "b", "a"]),
            [true, false, false]
        );
        assert_eq!(ingest(&db, &mut staged, &mut seq, &["b"]), [false]);
        let txn = db.begin_read().unwrap();
        let overflow = txn.open_table(DEDUPE).unwrap();
        assert_eq!(
            overflow
                .get(dedupe_key(1, "b").as_slice())
                .unwrap()
                .map(|v| v.value()),
            Some(2)
        );
    }

    /// Thousands of ids through runs of 100 (so that runs are written and merged across
    /// levels), with commits lost to "crashes" on the way: every id stays a duplicate, for
    /// the writer, after a reload and for readers; the index holds each seq once.
    #[test]
    fn runs_are_written_merged_and_survive_crashes_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let db = fresh_db(dir.path());
        let mut staged = Staged {
            freeze_at: 100,
            ..Staged::default()
        };
        let mut seq = 1;
        let all = ids("id", 12_000);
        // Commits of varied sizes, single events among them (a run then replaces rows that
        // start at its very last seq).
        let sizes = [60, 1, 37, 1, 1, 13, 59, 2];
        let mut chunks = Vec::new();
        let mut rest = all.as_slice();
        while !rest.is_empty() {
            let n = sizes[chunks.len() % sizes.len()].min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            chunks.push(chunk);
            rest = tail;
        }
        for (i, chunk) in chunks.into_iter().enumerate() {
            if i % 7 == 3 {
                // Lost before its commit, then reloaded as after a restart.
                ingest_or_crash(&db, &mut staged, &mut seq, &refs(chunk), false);
                staged = reload(&db, 100);
            }
            let out = ingest(&db, &mut staged, &mut seq, &refs(chunk));
            assert!(out.iter().all(|&n| n), "chunk {i}");
            // After every commit, each seq is indexed once.
            let e = entries(&db.begin_read().unwrap()).unwrap();
            let mut m: Vec<u64> = e.runs.iter().chain(&e.unmerged).map(|p| p.0).collect();
            m.sort_unstable();
            m.dedup();
            assert_eq!(m.len(), e.runs.len() + e.unmerged.len(), "chunk {i}");
            assert_eq!(m.len() as u64, seq - 1, "chunk {i}");
        }
        let set = runs_of(&db);
        assert!(set.runs.iter().any(|r| r.level >= 2), "{set:?}");
        assert!(set.runs.len() < 30, "{} runs", set.runs.len());
        assert!(staged.in_memory() < 100 + 60);
        // (One writer at a time: the reload comes after the original's last commit.)
        let out = ingest(&db, &mut staged, &mut seq, &refs(&all));
        assert!(out.iter().all(|&n| !n), "an id passed as new");
        let mut staged = reload(&db, 100);
        let out = ingest(&db, &mut staged, &mut seq, &refs(&all));
        assert!(
            out.iter().all(|&n| !n),
            "an id passed as new after a reload"
        );
        assert_eq!(
            ingest(&db, &mut staged, &mut seq, &["brand-new", "id-5"]),
            [true, false]
        );
        let txn = db.begin_read().unwrap();
        assert_eq!(lookup_committed(&txn, 1, "id-5").unwrap(), Some(6));
        assert_eq!(lookup_committed(&txn, 1, "id-11999").unwrap(), Some(12_000));
        assert_eq!(
            lookup_committed(&txn, 1, "brand-new").unwrap(),
            Some(12_001)
        );
        assert_eq!(lookup_committed(&txn, 1, "missing").unwrap(), None);
        assert_eq!(lookup_committed(&txn, 2, "id-5").unwrap(), None);
        let e = entries(&txn).unwrap();
        let mut seqs: Vec<u64> = e.runs.iter().chain(&e.unmerged).map(|p| p.0).collect();
        seqs.sort_unstable();
        let n = seqs.len();
        seqs.dedup();
        assert_eq!(n, seqs.len(), "a seq is indexed twice");
        assert_eq!(seqs.first(), Some(&1));
        assert_eq!((seqs.len(), seqs.last()), (12_001, Some(&12_001)));
    }

    #[test]
    fn the_filters_have_no_false_no_and_few_false_maybe() {
        let fp = |i: u64| fingerprint((i % 3) as u32, &format!("id-{i}"));
        let n = 200_000;
        let mut f = FpFilter::with_capacity(n as usize);
        // Past the first part's capacity, so that it grows.
        let grown = GROWING_FIRST_CAPACITY as u64 + 50_000;
        let mut g = GrowingFilter::default();
        for i in 0..grown {
            if i < n {
                f.insert(fp(i));
            }
            g.insert(fp(i));
        }
        assert_eq!(g.parts.len(), 2);
        assert!((0..n).all(|i| f.may_contain(fp(i))));
        let mut run = FpFilter::for_run(n as usize);
        (0..n).for_each(|i| run.insert(fp(i)));
        assert!((0..n).all(|i| run.may_contain(fp(i))));
        let false_maybe = (grown..grown + 100_000)
            .filter(|&i| run.may_contain(fp(i)))
            .count();
        assert!(
            false_maybe < 9_000,
            "{false_maybe} of 100000 absent ids said maybe (a run's filter)"
        );
        assert!((0..grown).all(|i| g.may_contain(fp(i))));
        let absent = grown..grown + 100_000;
        let false_maybe = absent.clone().filter(|&i| f.may_contain(fp(i))).count();
        assert!(
            false_maybe < 2_000,
            "{false_maybe} of 100000 absent ids said maybe"
        );
        let false_maybe = absent.filter(|&i| g.may_contain(fp(i))).count();
        assert!(
            false_maybe < 4_000,
            "{false_maybe} of 100000 absent ids said maybe (two parts)"
        );
    }

    /// With filters built in the background (at a start, and for each merge's output while
    /// merges go on), every stored id is still a duplicate, and the filters do answer for
    /// new ids.
    #[test]
    fn the_filters_never_hide_a_stored_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(fresh_db(dir.path()));
        let mut staged = Staged {
            freeze_at: 100,
            ..Staged::default()
        };
        staged.build_filter(db.clone());
        let mut seq = 1;
        let all = ids("id", 6_000);
        for chunk in all.chunks(50) {
            assert!(
                ingest(&db, &mut staged, &mut seq, &refs(chunk))
                    .iter()
                    .all(|&n| n)
            );
            // Every stored id so far, through whatever filters are in.
            assert!(!ingest(&db, &mut staged, &mut seq, &[chunk[7].as_str()])[0]);
        }
        assert!(
            ingest(&db, &mut staged, &mut seq, &refs(&all))
                .iter()
                .all(|&n| !n)
        );
        // A start: one writer at a time, so the original is done with.
        drop(staged);
        let mut fresh = reload(&db, 100);
        fresh.build_filter(db.clone());
        commit_until_filtered(&db, &mut fresh, &mut seq);
        assert!(
            ingest(&db, &mut fresh, &mut seq, &refs(&all))
                .iter()
                .all(|&n| !n)
        );
        let novel = ids("novel", 3000);
        let set = runs_of(&db);
        let fps: Vec<u128> = novel.iter().map(|id| fingerprint(1, id)).collect();
        let ruled_out = fps
            .iter()
            .filter(|&&fp| fresh.shared.filters().surely_absent(fp))
            .count();
        assert!(
            ruled_out > 2_500,
            "the filter of everything excluded only {ruled_out} of 3000 new ids"
        );
        for r in &set.runs {
            let excluded = fps
                .iter()
                .filter(|&&fp| !fresh.shared.filters().may_contain(r.id, fp))
                .count();
            assert!(
                excluded > 2_500,
                "run {}'s filter excluded only {excluded} of 3000 new ids",
                r.id
            );
        }
        assert!(
            ingest(&db, &mut fresh, &mut seq, &refs(&novel))
                .iter()
                .all(|&n| n)
        );
    }
}
