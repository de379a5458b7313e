//! The index's storage: each commit's new fingerprints as one row of [`DEDUPE_COMMITS`]
//! (and in the writer's memory), frozen into a sorted run every [`FREEZE_AT`] fingerprints
//! (sorted off the writer thread, written a bounded step per commit: [`Freeze`]), runs
//! merged geometrically a bounded step per commit ([`super::super::runs`]); ids whose
//! fingerprint another id owns under their full key in [`DEDUPE`].

use super::super::Result;
use super::super::runs::{Run, RunSet, keys_per_block};
use super::super::tables::{DEDUPE, DEDUPE_COMMITS, META};
use super::filters::{Builder, Filters, FpFilter};
use super::lookup::{Check, Id, Runs, Slot, Unstaged, find, find_in_memory, removed_through};
use super::precheck::{Known, Precheck};
use super::rows::{COMMIT_ROW_V2, EntryBytes, FpMap, Owner, RUNS, commit_row_entries, split_entry};
use redb::{Database, ReadTransaction, ReadableTable, Table, WriteTransaction};
use std::collections::HashMap;
use std::sync::mpsc;

use std::sync::{Arc, RwLockReadGuard};

/// Fingerprints kept in memory (and in [`DEDUPE_COMMITS`]) before they become a run. Larger
/// means fewer, larger level-0 runs, and a start reads back at most that many. Chosen so
/// that `active` and `frozen` each fit a table of 2^18 slots ([`TABLE_ROOM`]). Debug builds
/// (the test suites and the crash and power-loss campaigns) write a run every 512
/// fingerprints, so that their few thousand events go through run writes and merges of
/// several levels too.
pub const FREEZE_AT: usize = if cfg!(debug_assertions) {
    512
} else {
    192 * 1024
};
/// Most fingerprints one commit adds that the tables allow for: the writer stops taking
/// requests into a batch at this size (`store::writer::MAX_BATCH_EVENTS`, checked there).
/// One bulk request can take a batch past it; a table that grows then shrinks back once its
/// freeze is written.
pub const BATCH_ROOM: usize = 16 * 1024;
/// Fingerprints `active` and `frozen` are sized for: [`FREEZE_AT`], the batch that takes
/// `active` past it, and the batches committed while the freeze is written. A hash table
/// holds 7/8 of its slots (a power of two) before it doubles, and a table's slots are 33
/// bytes: this is 7/8 of 2^18, 8.25 MiB a table. A `FREEZE_AT` just past that fit doubles
/// both tables to 16.5 MiB each, half of it empty.
const TABLE_ROOM: usize = FREEZE_AT + 2 * BATCH_ROOM;
// A change to either constant keeps the tables full: TABLE_ROOM is 7/8 of a power of two.
const _: () = assert!(
    cfg!(debug_assertions)
        || (TABLE_ROOM.is_multiple_of(7) && (TABLE_ROOM / 7 * 8).is_power_of_two())
);

/// A table for `active` or `frozen`, with the room they need, so that it never grows (a
/// growth copies every entry, on the writer thread, and holds both copies meanwhile).
fn fingerprint_table() -> FpMap {
    FpMap::with_capacity_and_hasher(TABLE_ROOM, Default::default())
}

/// Merge work a commit earns: this many keys per event it added. Each id is rewritten once
/// per level it passes through, so 4 keeps merges ahead of new runs.
const MERGE_PER_EVENT: usize = 4;
/// The least work of a step ([`step_budget`]): commits earn their share until it adds up to
/// this, then one commit does it all. A step has a fixed cost (the run set's record read and
/// written, the tables opened, their paths rewritten by the commit), too much to pay on every
/// commit of a few single events; a floor on every commit instead made a commit of 30 single
/// events carry 2,048 keys, 70 per event against 4 in a bulk commit, for as long as a large
/// merge ran. Debug builds: 64, so that the test suites and campaigns go through commits
/// that step and commits that only earn.
const MIN_STEP: usize = if cfg!(debug_assertions) { 64 } else { 2048 };
/// redb holds a transaction's dirty pages in memory until it commits: 64Ki keys are some
/// 1.7 MB of blocks.
const MAX_MERGE_STEP: usize = 64 * 1024;
/// Keys of a full block: a step's last block is written as it is, so steps of whole blocks
/// keep the runs in full blocks.
pub(super) const KEYS_PER_BLOCK: usize = keys_per_block(std::mem::size_of::<EntryBytes>());

/// The keys of merges (and of a freeze) a commit writes, given the work `earned` by it and
/// the commits since the last step: none below [`MIN_STEP`], else all of it in whole blocks,
/// at most [`MAX_MERGE_STEP`].
pub(super) fn step_budget(earned: usize) -> usize {
    if earned < MIN_STEP {
        return 0;
    }
    let most = MAX_MERGE_STEP / KEYS_PER_BLOCK * KEYS_PER_BLOCK;
    earned.next_multiple_of(KEYS_PER_BLOCK).min(most)
}

/// A freeze of fewer fingerprints than this is sorted on the writer thread, in the
/// [`Staged::apply`] that starts it (under a millisecond); larger ones on a thread of their own.
/// Debug builds sort their runs of 512 on the thread too, so that the test suites and
/// campaigns go through it.
const SORT_INLINE_BELOW: usize = if cfg!(debug_assertions) {
    256
} else {
    16 * 1024
};
/// Most keys of a freeze one step writes: the merge step's budget, and in debug builds 128,
/// so that the campaigns' runs of 512 take several commits (and crashes fall between them).
fn freeze_budget(merge_budget: usize) -> usize {
    if cfg!(debug_assertions) {
        128
    } else {
        merge_budget
    }
}

/// `active` becoming a run. Writing a run of [`FREEZE_AT`] fingerprints in one commit held
/// the writer for tens of milliseconds (sorting, some 8 MB of blocks, the filter), and every
/// request waiting on it with it. So when `active` is full it becomes [`Staged::frozen`]
/// (and `active` starts anew), its fingerprints are copied and sorted off the writer thread,
/// then written a bounded step per commit ([`RunSet::add_step`]). Until the commit that
/// writes the last of them they stay in `frozen` and their rows in [`DEDUPE_COMMITS`]:
/// lookups, a restart and a crash see them there, and no reader sees the unfinished run.
pub(super) enum Freeze {
    /// With the largest seq among the fingerprints being sorted.
    Sorting(mpsc::Receiver<Frozen>, u64),
    /// `started`: a committed step wrote part of the run (else the next step begins it
    /// anew, dropping what a step of an earlier freeze left).
    Writing { frozen: Frozen, started: bool },
}

/// The fingerprints of one freeze, sorted as run keys, and the run's filter.
pub(super) struct Frozen {
    keys: Vec<EntryBytes>,
    filter: FpFilter,
    /// The largest seq among them: the rows the run replaces are those up to it.
    upto: u64,
}

impl Frozen {
    fn sort(entries: Vec<(u128, Owner)>, upto: u64) -> Frozen {
        let mut filter = FpFilter::for_run(entries.len());
        let mut keys: Vec<EntryBytes> = entries
            .into_iter()
            .map(|(fp, owner)| {
                filter.insert(fp);
                EntryBytes::new(fp, owner)
            })
            .collect();
        // Entries of older builds (24 bytes) sort among the others by their fingerprint.
        keys.sort_unstable();
        Frozen { keys, filter, upto }
    }
}

fn fingerprints(keys: &[EntryBytes]) -> impl Iterator<Item = u128> + '_ {
    keys.iter()
        .filter_map(|k| split_entry(k.as_slice()).map(|(fp, _)| fp))
}

impl Freeze {
    /// Copies `active` and sorts it, inline when small, else on a background thread.
    fn start(active: &FpMap, upto: u64, inline_below: usize) -> Freeze {
        let entries: Vec<(u128, Owner)> = active.iter().map(|(&fp, &o)| (fp, o)).collect();
        if entries.len() < inline_below {
            return Freeze::Writing {
                frozen: Frozen::sort(entries, upto),
                started: false,
            };
        }
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("dedupe-freeze".into())
            .spawn(move || {
                super::run_in_background();
                let _ = tx.send(Frozen::sort(entries, upto));
            });
        match spawned {
            Ok(_) => Freeze::Sorting(rx, upto),
            // No thread: the next apply starts the freeze again.
            Err(e) => {
                tracing::warn!(error = %e, "no thread to sort a dedupe run");
                let (_, rx) = mpsc::channel();
                Freeze::Sorting(rx, upto)
            }
        }
    }
}

/// The writer thread's part of the index: what is not in a run yet, and the filters (shared
/// with the request threads' [`Precheck`]).
pub struct Staged {
    /// [`FREEZE_AT`] (tests make runs of a few keys).
    pub(super) freeze_at: usize,
    pub(super) shared: Arc<Precheck>,
    pub(super) builder: Option<Builder>,
    /// Fingerprint → seq, committed but not in a run yet, and not being frozen into one:
    /// with `frozen`, all of [`DEDUPE_COMMITS`].
    pub(super) active: FpMap,
    /// Largest seq in `active`: the rows a run of it replaces are those up to it.
    pub(super) active_upto: u64,
    /// What `active` held when the [`Freeze`] under way began (empty when none is): asked
    /// by lookups like `active` until the commit that completes the run, then emptied.
    pub(super) frozen: FpMap,
    /// The runs as of the last commit.
    pub(super) runs: RunSet,
    /// `active` becoming a run, if it is.
    pub(super) freeze: Option<Freeze>,
    /// [`SORT_INLINE_BELOW`] (tests sort on the background thread too).
    pub(super) sort_inline_below: usize,
    /// Merge work earned by the commits since the last step, while a freeze or a merge waits
    /// for steps ([`step_budget`]).
    pub(super) earned: usize,
}

impl Default for Staged {
    fn default() -> Staged {
        Staged {
            freeze_at: FREEZE_AT,
            shared: Arc::default(),
            builder: None,
            active: fingerprint_table(),
            active_upto: 0,
            frozen: fingerprint_table(),
            runs: RunSet::default(),
            freeze: None,
            sort_inline_below: SORT_INLINE_BELOW,
            earned: 0,
        }
    }
}

impl Staged {
    /// Reads back everything not in a run yet, and the list of runs.
    pub fn load(txn: &WriteTransaction) -> Result<Staged> {
        let mut staged = Staged::default();
        for row in txn.open_table(DEDUPE_COMMITS)?.iter()? {
            let (_, pairs) = row?;
            for (fp, owner) in commit_row_entries(pairs.value())? {
                staged.remember(fp, owner);
            }
        }
        staged.runs = RunSet::load(&txn.open_table(META)?, RUNS)?;
        Ok(staged)
    }

    fn remember(&mut self, fp: u128, owner: Owner) {
        self.active.insert(fp, owner);
        self.active_upto = self.active_upto.max(owner.seq);
    }

    /// Starts building the filters of every run from `db` in the background; later merges'
    /// outputs get theirs the same way. Until a filter is in, its run is read on every
    /// lookup. The pre-checks read `db` from now on.
    pub fn build_filter(&mut self, db: Arc<Database>) {
        let builder = Builder::new(Arc::downgrade(&db));
        builder.spawn_all();
        self.shared.filters_mut().rebuild();
        self.shared.attach(Arc::downgrade(&db));
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
        self.active.len() + self.frozen.len()
    }

    /// Starts the index work of one write transaction.
    pub fn begin<'s, 't>(&'s self, txn: &'t WriteTransaction) -> Result<Batch<'s, 't>> {
        let meta = txn.open_table(META)?;
        let (runs, removed) = (RunSet::load(&meta, RUNS)?, removed_through(&meta)?);
        drop(meta);
        Ok(Batch {
            staged: self,
            filters: self.shared.filters(),
            txn,
            added: FpMap::default(),
            runs,
            removed,
            run_tables: HashMap::new(),
            overflow: txn.open_table(DEDUPE)?,
        })
    }

    /// Takes in what a committed [`Batch`] did.
    pub fn apply(&mut self, done: Committed) {
        let new_run = done.new_run;
        self.earned = done.earned;
        if done.freeze_step
            && let Some(Freeze::Writing { started, .. }) = &mut self.freeze
        {
            *started = true;
        }
        // Runs that merges completed: read on lookups until their filter is built (the
        // oldest gets none: `Filters::keep_live`).
        let mut appeared: Vec<Run> = done
            .after
            .runs
            .iter()
            .filter(|r| Some(r.id) != new_run && !self.runs.runs.iter().any(|o| o.id == r.id))
            .cloned()
            .collect();
        let built = self.builder.as_ref().map(Builder::finished);
        let built = built.unwrap_or_default();
        // The pre-checks share the filters: lock only when they change (rarely).
        if new_run.is_some() || !built.is_empty() || done.after.runs != self.runs.runs {
            let mut filters = self.shared.filters_mut();
            if let Some(id) = new_run
                && let Some(Freeze::Writing { frozen, .. }) = self.freeze.take()
            {
                filters.add_run(id, frozen.filter, fingerprints(&frozen.keys));
                // Emptied, not freed: the next freeze swaps it in as `active`, so that the
                // two tables take turns instead of a new one growing by doublings each time.
                // One that grew past its room (a sort starved for long) shrinks back.
                self.frozen.clear();
                self.frozen.shrink_to(TABLE_ROOM);
            }
            built.into_iter().for_each(|b| filters.take(b));
            filters.keep_live(&done.after);
            appeared.retain(|r| filters.wants(&done.after, r.id));
        }
        for (fp, owner) in done.added {
            self.remember(fp, owner);
        }
        if let Some(&Freeze::Sorting(ref rx, upto)) = self.freeze.as_ref() {
            match rx.try_recv() {
                Ok(frozen) => {
                    self.freeze = Some(Freeze::Writing {
                        frozen,
                        started: false,
                    })
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    // The sort never came back: its fingerprints join `active` again, for
                    // the next freeze.
                    self.active.extend(self.frozen.drain());
                    self.active_upto = self.active_upto.max(upto);
                    self.freeze = None;
                }
            }
        }
        if self.freeze.is_none() && self.active.len() >= self.freeze_at {
            // `active` starts anew (in the emptied table of the last freeze); what it held is
            // read as `frozen` until its run is in.
            std::mem::swap(&mut self.frozen, &mut self.active);
            let upto = std::mem::take(&mut self.active_upto);
            self.freeze = Some(Freeze::start(&self.frozen, upto, self.sort_inline_below));
        }
        if let Some(b) = &self.builder {
            appeared.into_iter().for_each(|run| b.spawn_run(run));
        }
        self.runs = done.after;
    }
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
    /// The highest seq removed from the log, as of the transaction's start: a batch removes
    /// nothing.
    removed: u64,
    /// Run tables opened so far (only the runs a filter could not rule out are opened).
    run_tables: HashMap<u32, RunTableMut<'t>>,
    overflow: Table<'t, &'static [u8], u64>,
}

/// What a committed batch changed in memory.
pub struct Committed {
    added: FpMap,
    /// The batch wrote a step of the [`Freeze`] ...
    freeze_step: bool,
    /// ... and this is the run it completed.
    new_run: Option<u32>,
    /// The runs after the commit.
    after: RunSet,
    /// [`Staged::earned`] after the commit.
    earned: usize,
}

impl Batch<'_, '_> {
    /// Looks `event_id` of `app_id` up ([`find`]); `events` is the log as this transaction
    /// sees it, `known` what a [`Precheck`] found (a duplicate it settled, or the
    /// fingerprint it computed).
    pub fn check(
        &mut self,
        events: &impl ReadableTable<u64, &'static [u8]>,
        app_id: u32,
        event_id: &str,
        known: Option<Known>,
    ) -> Result<Check> {
        let (fp, check, in_no_run) = match known {
            Some(Known::Stored(seq)) => return Ok(Check::Seen(seq)),
            Some(Known::Absent { fp, check, epoch }) => (fp, check, epoch == self.filters.epoch()),
            Some(Known::Fingerprint { fp, check }) => (fp, check, false),
            None => {
                let (fp, check) = super::lookup::hashes(app_id, event_id);
                (fp, check, false)
            }
        };
        let id = Id {
            app_id,
            event_id,
            fp,
            check,
        };
        let removed = self.removed;
        if in_no_run {
            // No run has gained an id since the pre-check found none holding this one:
            // only what was committed since (memory) and this transaction can hold it.
            let maps = [&self.added, &self.staged.active, &self.staged.frozen];
            return find_in_memory(id, removed, &maps, events, &self.overflow);
        }
        let mut runs = Runs::with_tables(
            &self.runs,
            &self.filters,
            std::mem::take(&mut self.run_tables),
            |name| self.txn.open_table(super::super::runs::def(name)),
        );
        let maps = [&self.added, &self.staged.active, &self.staged.frozen];
        let unstaged = Unstaged::Memory(&maps);
        let check = find(id, removed, unstaged, &mut runs, events, &self.overflow);
        self.run_tables = runs.into_tables();
        check
    }

    /// Records a new id stored as `seq` (in this transaction).
    pub fn insert(&mut self, slot: Slot, seq: u64) -> Result<()> {
        match slot {
            Slot::Fingerprint { fp, check } => {
                self.added.insert(fp, Owner { seq, check });
            }
            Slot::FullKey(key) => {
                self.overflow.insert(key.as_slice(), seq)?;
            }
        }
        Ok(())
    }

    /// Ends the index work of a transaction that added `added_events` events: writes its
    /// commit row, a step of the run being frozen ([`Freeze`]) and a merge step. Hand the
    /// result to [`Staged::apply`] once the commit succeeded.
    pub fn finish(self, added_events: usize) -> Result<Committed> {
        let Batch {
            staged,
            filters,
            txn,
            added,
            runs: before,
            run_tables,
            overflow,
            ..
        } = self;
        // Merges open (and delete) run tables themselves.
        drop((filters, run_tables, overflow));
        if !added.is_empty() {
            let mut entries: Vec<(u64, u128, Owner)> =
                (added.iter()).map(|(&fp, &o)| (o.seq, fp, o)).collect();
            entries.sort_unstable_by_key(|&(seq, _, _)| seq);
            let mut row = Vec::with_capacity(1 + 32 * entries.len());
            row.push(COMMIT_ROW_V2);
            for &(_, fp, owner) in &entries {
                // Added by this build: every entry has its check bits (32 bytes).
                row.extend_from_slice(EntryBytes::new(fp, owner).as_slice());
            }
            txn.open_table(DEDUPE_COMMITS)?
                .insert(entries[0].0, row.as_slice())?;
        }
        // Merge work is earned while there is some to do, and done in steps of at least
        // MIN_STEP keys. A commit that stored nothing (duplicates only) earns as one event,
        // so that the work still ends under such traffic.
        let writing = matches!(staged.freeze, Some(Freeze::Writing { .. }));
        let earned = if writing || before.merging() {
            staged.earned + MERGE_PER_EVENT * added_events.max(1)
        } else {
            0
        };
        let budget = step_budget(earned);
        let mut freeze_step = false;
        let mut new_run = None;
        if budget > 0
            && let Some(Freeze::Writing { frozen, started }) = &staged.freeze
        {
            freeze_step = true;
            let step = freeze_budget(budget);
            new_run = RunSet::add_step(txn, RUNS, &frozen.keys, step, !started)?;
            if new_run.is_some() {
                // Rows are keyed by their first seq: those of the commits since the freeze
                // began, this one's included, start past `upto`.
                txn.open_table(DEDUPE_COMMITS)?
                    .retain_in(..=frozen.upto, |_, _| false)?;
            }
        }
        let after = if budget > 0 && (new_run.is_some() || before.merging()) {
            RunSet::merge_step(txn, RUNS, budget)?;
            RunSet::load(&txn.open_table(META)?, RUNS)?
        } else if freeze_step {
            RunSet::load(&txn.open_table(META)?, RUNS)?
        } else {
            before
        };
        let earned = if budget > 0 { 0 } else { earned };
        Ok(Committed {
            added,
            freeze_step,
            new_run,
            after,
            earned,
        })
    }
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
    use super::super::runs;
    let mut out = Entries::default();
    let set = RunSet::load(&txn.open_table(META)?, RUNS)?;
    for run in &set.runs {
        let table = txn.open_table(runs::def(&runs::table_name(RUNS, run.id)))?;
        let mut bad = false;
        runs::for_each_key(&table, |k| match split_entry(k) {
            Some((fp, owner)) => out.runs.push((owner.seq, fp)),
            None => bad = true,
        })?;
        if bad {
            return Err(super::super::Error::Corrupt(format!(
                "dedupe run {}: a key of the wrong size",
                run.id
            )));
        }
    }
    for row in txn.open_table(DEDUPE_COMMITS)?.iter()? {
        let (_, pairs) = row?;
        out.unmerged
            .extend(commit_row_entries(pairs.value())?.map(|(fp, o)| (o.seq, fp)));
    }
    Ok(out)
}
