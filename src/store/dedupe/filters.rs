//! The Bloom filters in front of the sorted runs: one of everything, which rules out almost
//! every new id in one cache line, and one per run, which picks the run to read for the
//! others. A run without a filter (until its build is in) is read on every lookup that gets
//! that far: exact, only slower. Filters are built on threads of their own, from read
//! transactions.

use super::super::Result;
use super::super::runs::{self, Run, RunSet};
use super::super::tables::META;
use super::rows::{RUNS, split_entry};
use redb::{Database, ReadTransaction};
use std::collections::HashMap;
use std::sync::Weak;
use std::sync::mpsc::{Receiver, Sender, channel};

/// A blocked Bloom filter over a known number of fingerprints: "no" is exact, "maybe" costs
/// a read. All probes of a fingerprint fall in one 64-byte block, so a lookup touches one
/// cache line. Fingerprints are uniformly random already: the block and the bits are taken
/// from them.
pub struct FpFilter {
    blocks: Vec<[u64; 8]>,
    probes: u32,
    /// Fingerprints added (a growing filter starts a new part past the capacity).
    len: usize,
    capacity: usize,
}

/// Bits per fingerprint and probes (within a 512-bit block) of the filter of everything:
/// about 1.5% false "maybe" (10 bits made it 1%, for a tenth more of the memory that grows
/// with the log; a false "maybe" costs the run filters' probes and the oldest run's read).
const FILTER_BITS_PER_KEY: usize = 9;
const FILTER_PROBES: u32 = 6;
/// The same for a run's filter, asked only after the filter of everything said "maybe"
/// (mostly for resubmitted ids): about 6% false "maybe", for 40% less memory.
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

/// A filter that grows by adding parts, so that it never has to be rebuilt: the filter of
/// every fingerprint in a run. Each new part holds half as many as the parts before it
/// together, so the filter grows 1.5 times and at most a third of it is headroom: parts
/// that doubled were half headroom right after each growth. The price is more parts to
/// probe (nine at 30M ids against six).
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
            let held: usize = self.parts.iter().map(|p| p.capacity).sum();
            let capacity = (held / 2).max(GROWING_FIRST_CAPACITY);
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

/// The filters of the runs, as the lookup asks them. `Filters::default()` has none: every
/// run is read.
#[derive(Default)]
pub struct Filters {
    all: All,
    runs: HashMap<u32, FpFilter>,
    /// Moves whenever ids enter the runs (a run written from the writer's memory) or the
    /// filters are rebuilt: a pre-check's "in no run" ([`super::Known::Absent`]) holds
    /// while it stands.
    epoch: u64,
}

impl Filters {
    /// Filters whose filter of everything is being built (see [`Builder::spawn_all`]).
    pub fn building() -> Filters {
        Filters {
            all: All::Building { missed: Vec::new() },
            runs: HashMap::new(),
            epoch: 0,
        }
    }

    /// Replaced by filters being built ([`Filters::building`]), in a new epoch.
    pub fn rebuild(&mut self) {
        let epoch = self.epoch + 1;
        *self = Filters::building();
        self.epoch = epoch;
    }

    /// See [`Filters::epoch`]'s field: the same epoch, the same ids in runs (merges only
    /// move them).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether `fp` is certainly in no run.
    pub fn surely_absent(&self, fp: u128) -> bool {
        match &self.all {
            All::Ready(f) => !f.may_contain(fp),
            _ => false,
        }
    }

    /// Whether run `run` may hold `fp` (a run without a filter may).
    pub fn may_contain(&self, run: u32, fp: u128) -> bool {
        self.runs.get(&run).is_none_or(|f| f.may_contain(fp))
    }

    /// Whether the filter of everything is built.
    pub fn ready(&self) -> bool {
        matches!(self.all, All::Ready(_))
    }

    /// Whether every run of `set` has its filter but the one [`Filters::keep_live`] drops.
    #[cfg(test)]
    pub fn cover(&self, set: &RunSet) -> bool {
        set.runs
            .iter()
            .all(|r| !self.wants(set, r.id) || self.runs.contains_key(&r.id))
    }

    /// Run `id` of `fps` was written, with `filter`.
    pub fn add_run(&mut self, id: u32, filter: FpFilter, fps: impl Iterator<Item = u128>) {
        self.epoch += 1;
        match &mut self.all {
            All::Ready(f) => fps.for_each(|fp| f.insert(fp)),
            All::Building { missed } => missed.extend(fps),
            All::Off => {}
        }
        self.runs.insert(id, filter);
    }

    /// Takes in a finished build.
    pub fn take(&mut self, built: Built) {
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
            }
            Built::Run(id, Err(e)) => {
                tracing::warn!(run = id, error = %e, "building a dedupe run's filter failed; lookups read that run");
            }
        }
    }

    /// Drops the filters of runs not listed in `set` (merged away), and, once the filter of
    /// everything is in, the oldest run's: lookups read the runs newest first, so that run's
    /// filter only spares a read to the ids the filter of everything let through and no
    /// newer run holds (its own ids read it anyway; a new id gets there about once in
    /// seventy), and it is among the largest (merges make the oldest runs the biggest: 6 bits
    /// for a large share of the ids). A merge's output that becomes the oldest gets no filter
    /// built ([`Filters::wants`]).
    pub fn keep_live(&mut self, set: &RunSet) {
        let unfiltered = self.unfiltered(set);
        self.runs
            .retain(|id, _| Some(*id) != unfiltered && set.runs.iter().any(|r| r.id == *id));
    }

    /// Whether run `run` of `set` should have a filter of its own (see
    /// [`Filters::keep_live`]).
    pub fn wants(&self, set: &RunSet, run: u32) -> bool {
        self.unfiltered(set) != Some(run)
    }

    /// The run of `set` that keeps no filter of its own: the oldest, once the filter of
    /// everything is in.
    fn unfiltered(&self, set: &RunSet) -> Option<u32> {
        set.runs.first().map(|r| r.id).filter(|_| self.ready())
    }
}

/// What a background build made.
pub enum Built {
    /// The filter of one run.
    Run(u32, Result<FpFilter>),
    /// The filter of everything in runs as of the build's snapshot.
    All(Result<GrowingFilter>),
}

/// Builds filters on threads of their own, from read transactions of the database. It holds
/// the database weakly: after a storage failure the writer reopens the file, which waits for
/// every handle of the failed one to go (a build holds one only while it runs).
pub struct Builder {
    db: Weak<Database>,
    tx: Sender<Built>,
    rx: Receiver<Built>,
}

impl Builder {
    pub fn new(db: Weak<Database>) -> Builder {
        let (tx, rx) = channel();
        Builder { db, tx, rx }
    }

    /// The builds finished since the last call.
    pub fn finished(&self) -> Vec<Built> {
        self.rx.try_iter().collect()
    }

    /// Builds, in one snapshot, the filter of every run listed in it but the oldest
    /// (smallest first, each sent when done; see [`Filters::keep_live`]) and then the filter
    /// of everything, sized for the ids in runs and an eighth more.
    pub fn spawn_all(&self) {
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
                let mut all = GrowingFilter::with_capacity((keys + keys / 8) as usize);
                let oldest = runs.first().map(|r| r.id);
                runs.sort_by_key(|r| r.keys);
                for r in runs {
                    if Some(r.id) == oldest {
                        for_each_fingerprint(&txn, &r, |fp| all.insert(fp))?;
                        continue;
                    }
                    let built = run_filter(&txn, &r, Some(&mut all));
                    let failed = built.is_err();
                    if tx.send(Built::Run(r.id, built)).is_err() || failed {
                        return Err(super::super::Error::Internal(
                            "a run's filter failed".into(),
                        ));
                    }
                }
                Ok(all)
            })();
            let _ = tx.send(Built::All(all));
        });
    }

    /// Builds the filter of one run (the output of a merge).
    pub fn spawn_run(&self, run: Run) {
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
            .spawn(|| {
                run_in_background();
                let started = std::time::Instant::now();
                work();
                let ms = started.elapsed().as_secs_f64() * 1e3;
                tracing::debug!(target: "inlet::slow", ms, "dedupe filter built");
            });
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
    let mut filter = FpFilter::for_run(run.keys as usize);
    for_each_fingerprint(txn, run, |fp| {
        filter.insert(fp);
        if let Some(all) = all.as_deref_mut() {
            all.insert(fp);
        }
    })?;
    Ok(filter)
}

fn for_each_fingerprint(txn: &ReadTransaction, run: &Run, mut f: impl FnMut(u128)) -> Result<()> {
    let table = txn.open_table(runs::def(&runs::table_name(RUNS, run.id)))?;
    runs::for_each_key(&table, |k| {
        if let Some((fp, _)) = split_entry(k) {
            f(fp);
        }
    })
}

/// Nice value of background threads (identity indexing, dedupe filter builds): below the
/// request threads and the writer, so that on a busy machine their work waits for requests
/// rather than requests for it.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICE`] (Linux: a thread's own
/// nice value). Best effort: nothing changes where that is not possible.
pub fn run_in_background() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority only changes this thread's nice value.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dedupe::fingerprint;

    /// The growing filter's parts: each holds half as many as those before it together, so
    /// at most a third of what it holds is headroom past its first part.
    #[test]
    fn a_growing_filter_is_at_most_a_third_headroom() {
        // Uniform fingerprints without hashing millions of ids (splitmix64).
        let fp = |i: u64| {
            let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            1u128 << 64 | u128::from(z ^ (z >> 31))
        };
        let first = GROWING_FIRST_CAPACITY;
        let mut g = GrowingFilter::default();
        let mut parts = 0;
        for i in 0..6 * first as u64 {
            g.insert(fp(i));
            if g.parts.len() > parts {
                parts = g.parts.len();
                let held: usize = g.parts.iter().map(|p| p.capacity).sum();
                let stored = i as usize + 1;
                assert!(
                    held <= (stored + stored / 2).max(stored + first),
                    "{held} held for {stored} after growing to {parts} parts"
                );
            }
        }
        // Parts of 1, 1, 1, 1.5 and 2.25 times the first capacity hold 6.75 of it: five.
        assert_eq!(g.parts.len(), 5);
        assert!(
            (0..6 * first as u64)
                .step_by(997)
                .all(|i| g.may_contain(fp(i)))
        );
    }

    /// Once the filter of everything is in, the oldest run (read last) has no filter of its
    /// own and is read; the others keep theirs, and a run becoming the oldest loses its.
    #[test]
    fn the_oldest_run_has_no_filter_once_everything_is_in() {
        let run = |id| Run {
            id,
            level: 0,
            keys: 10,
        };
        let set = |ids: &[u32]| RunSet {
            runs: ids.iter().map(|&id| run(id)).collect(),
            ..RunSet::default()
        };
        let in_run = |id: u32| fingerprint(1, &format!("in-{id}"));
        let mut f = Filters::building();
        for id in [1, 2, 3] {
            let mut filter = FpFilter::for_run(10);
            filter.insert(in_run(id));
            f.add_run(id, filter, std::iter::once(in_run(id)));
        }
        let absent = (0..100)
            .map(|i| fingerprint(1, &format!("absent-{i}")))
            .find(|&fp| ![1, 2, 3].iter().any(|&id| f.may_contain(id, fp)))
            .expect("an id no run's filter holds");
        // While the filter of everything is built, every run keeps its filter.
        f.keep_live(&set(&[1, 2, 3]));
        assert!(f.cover(&set(&[1, 2, 3])));
        assert!((1..=3).all(|id| f.runs.contains_key(&id) && f.wants(&set(&[1, 2, 3]), id)));
        f.take(Built::All(Ok(GrowingFilter::default())));
        f.keep_live(&set(&[1, 2, 3]));
        assert!(f.ready());
        assert!(!f.runs.contains_key(&1) && f.runs.contains_key(&2) && f.runs.contains_key(&3));
        assert!(f.may_contain(1, absent), "a run without a filter is read");
        assert!(!f.may_contain(2, absent) && !f.may_contain(3, absent));
        assert!(!f.wants(&set(&[1, 2, 3]), 1) && f.wants(&set(&[1, 2, 3]), 2));
        // Run 1 merged away (say into 3, now the oldest): 3 loses its filter, 2 keeps it.
        f.keep_live(&set(&[3, 2]));
        assert!(!f.runs.contains_key(&3) && f.runs.contains_key(&2));
        assert!(f.cover(&set(&[3, 2])));
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
}
