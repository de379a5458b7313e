//! The dedupe index: an exact answer to "was (app, event_id) stored before, and as which
//! seq?" that stays cheap as the log grows. ARCHITECTURE.md "Dedupe design" has the
//! measurements behind it.
//!
//! A B-tree keyed by random ids dirties about one page per insert, so every commit rewrote
//! about one page per event and ingest slowed as the index grew. Here the per-commit writes are
//! appends, and the random-key B-tree is only touched in large sorted merges:
//!
//! - Every event id gets a **fingerprint**: `app_id << 64 | first 64 bits of SHA-256(id)`.
//! - A new id's fingerprint is appended to [`DEDUPE_JOURNAL`] (seq → fingerprint, so the
//!   insert is an append) in the same transaction as the event, and kept in memory
//!   ([`Staged`]'s `active` map) once that transaction committed.
//! - When `active` holds [`FREEZE_AT`] fingerprints it is frozen (sorted) and merged into
//!   [`DEDUPE_FP`] (fingerprint → seq) a chunk per commit, in key order, so each page of the
//!   big B-tree is rewritten once per merge instead of once per event. The commit that
//!   merges the last chunk also deletes the frozen range from the journal.
//! - A fingerprint is not an id: when one is found, the stored event's id is compared
//!   (exact). A different id with an already-owned fingerprint (a 64-bit collision) is kept
//!   under its full key in [`DEDUPE`], which is then consulted too. So a "duplicate" is never
//!   false and a duplicate is never stored.
//! - After a restart the journal (everything not yet merged) is read back into memory; a
//!   merge cut short by a crash is simply done again (inserting the same key → seq twice
//!   changes nothing).

use super::Result;
use super::codec::event_id_of;
use super::tables::{DEDUPE, DEDUPE_FP, DEDUPE_JOURNAL, dedupe_key};
use redb::{ReadableTable, Table, WriteTransaction};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Fingerprints kept in memory before they are frozen and merged into [`DEDUPE_FP`]. With
/// the frozen copy being merged, memory holds at most about twice this (some 25 MiB), and a
/// start reads back at most that much journal. Larger means fewer merges (each rewrites up
/// to every page of `dedupe_fp` once: at 10M events the merges were a quarter of the writer
/// thread's time with 128Ki) but more memory and a slower start (512Ki once measured
/// 211 MiB peak RSS and 1.7 s to ready at 1M events).
pub const FREEZE_AT: usize = 256 * 1024;
/// Fewest frozen fingerprints merged per commit; a commit merges at least twice as many as
/// it adds, so a merge is over before `active` fills again.
const MIN_MERGE_CHUNK: usize = 4096;
/// Most frozen fingerprints merged per commit. A chunk of the sorted frozen vector dirties
/// about (chunk / frozen) of all `dedupe_fp` leaves, and redb holds a transaction's dirty
/// pages in memory until it commits: at 10M events, 32Ki per commit held ~40 MiB. With full
/// batches (16Ki events) the cap still merges as fast as `active` fills.
const MAX_MERGE_CHUNK: usize = FREEZE_AT / 16;

/// `app_id << 64 | the first 64 bits of SHA-256(event_id)`. Stored on disk: never change.
pub fn fingerprint(app_id: u32, event_id: &str) -> u128 {
    let digest = Sha256::digest(event_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u128::from(app_id) << 64) | u128::from(u64::from_be_bytes(first))
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

/// A Bloom filter over fingerprints that grows by adding parts (each twice the capacity of
/// the last), so it never has to be rebuilt. "No" is exact; "maybe" costs a B-tree lookup.
/// Fingerprints are uniformly random already: the probes are taken from their bits.
#[derive(Default)]
pub struct FpFilter {
    parts: Vec<FilterPart>,
}

struct FilterPart {
    bits: Vec<u64>,
    /// Bit count (a multiple of 64; probes are mapped onto it by multiply-shift, so it
    /// need not be a power of two).
    nbits: u64,
    capacity: usize,
    len: usize,
}

/// Bits per fingerprint and probes: about 1% false "maybe".
const FILTER_BITS_PER_KEY: usize = 10;
const FILTER_PROBES: u64 = 7;
/// Capacity of the first part.
const FILTER_FIRST_CAPACITY: usize = 1 << 20;

impl FilterPart {
    fn new(capacity: usize) -> FilterPart {
        let words = (capacity * FILTER_BITS_PER_KEY).div_ceil(64).max(1);
        FilterPart {
            bits: vec![0; words],
            nbits: words as u64 * 64,
            capacity,
            len: 0,
        }
    }

    fn probes(&self, fp: u128) -> impl Iterator<Item = u64> + use<> {
        // The app id (high half) is mixed in: the same id in two apps is two fingerprints.
        let h = (fp as u64) ^ ((fp >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let (a, b) = (h, h.rotate_left(32) | 1);
        let n = u128::from(self.nbits);
        (0..FILTER_PROBES).map(move |i| {
            let x = a.wrapping_add(i.wrapping_mul(b));
            ((u128::from(x) * n) >> 64) as u64
        })
    }

    fn insert(&mut self, fp: u128) {
        for bit in self.probes(fp) {
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.len += 1;
    }

    fn may_contain(&self, fp: u128) -> bool {
        self.probes(fp)
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

impl FpFilter {
    pub fn insert(&mut self, fp: u128) {
        let full = self.parts.last().is_none_or(|p| p.len >= p.capacity);
        if full {
            let capacity = self
                .parts
                .last()
                .map_or(FILTER_FIRST_CAPACITY, |p| p.capacity * 2);
            self.parts.push(FilterPart::new(capacity));
        }
        self.parts.last_mut().expect("a part").insert(fp);
    }

    pub fn may_contain(&self, fp: u128) -> bool {
        self.parts.iter().any(|p| p.may_contain(fp))
    }

    /// A filter of every fingerprint in [`DEDUPE_FP`] as of one read transaction.
    pub fn build(db: &redb::Database) -> Result<FpFilter> {
        use redb::ReadableDatabase;
        let txn = db.begin_read()?;
        let table = txn.open_table(DEDUPE_FP)?;
        let mut filter = FpFilter::default();
        let n = redb::ReadableTableMetadata::len(&table)? as usize;
        if n > 0 {
            // Room for growth before a second part is needed.
            filter
                .parts
                .push(FilterPart::new((n + n / 4).max(FILTER_FIRST_CAPACITY)));
        }
        for row in table.iter()? {
            filter.insert(row?.0.value());
        }
        Ok(filter)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bits.len() * 8).sum()
    }
}

/// The filter in front of [`DEDUPE_FP`]: built from the table in the background after the
/// writer starts (a start does not wait for a scan of millions of entries). Until it is
/// ready, every lookup goes to the B-tree, and the fingerprints frozen for merging meanwhile
/// are kept to be added to it.
#[derive(Default)]
enum Filter {
    /// No filter: every lookup goes to the B-tree (tests, or the build failed).
    #[default]
    Off,
    Building {
        done: std::sync::mpsc::Receiver<Result<FpFilter>>,
        /// Frozen since the build started (a superset of what it may have missed).
        missed: Vec<u128>,
    },
    Ready(FpFilter),
}

/// The committed, not yet merged part of the index, owned by the writer thread.
#[derive(Default)]
pub struct Staged {
    /// Holds every fingerprint of [`DEDUPE_FP`] and of `frozen` (when ready).
    filter: Filter,
    /// Fingerprint → seq, committed since the last freeze.
    active: FpMap,
    /// Sorted fingerprints being merged into [`DEDUPE_FP`].
    frozen: Vec<(u128, u64)>,
    /// How many of `frozen` are already in [`DEDUPE_FP`] (committed).
    merged: usize,
    /// Largest seq in `frozen`: the journal range the end of the merge deletes.
    frozen_upto: u64,
}

impl Staged {
    /// Reads back the journal (all fingerprints not yet merged).
    pub fn load(txn: &WriteTransaction) -> Result<Staged> {
        let mut staged = Staged::default();
        for row in txn.open_table(DEDUPE_JOURNAL)?.iter()? {
            let (seq, fp) = row?;
            staged.active.insert(fp.value(), seq.value());
        }
        staged.maybe_freeze();
        Ok(staged)
    }

    /// Starts building the filter of [`DEDUPE_FP`] from `db` on a thread of its own; it is
    /// used once a later [`Staged::apply`] finds it ready. Fingerprints frozen from now on are
    /// added to it then, so it misses nothing merged after its snapshot.
    pub fn build_filter(&mut self, db: std::sync::Arc<redb::Database>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("inlet-dedupe-filter".into())
            .spawn(move || {
                let _ = tx.send(FpFilter::build(&db));
            });
        if spawned.is_ok() {
            let missed = self.frozen.iter().map(|&(fp, _)| fp).collect();
            self.filter = Filter::Building { done: rx, missed };
        }
    }

    /// Installs the filter when its build has finished.
    fn poll_filter(&mut self) {
        let Filter::Building { done, missed } = &mut self.filter else {
            return;
        };
        match done.try_recv() {
            Ok(Ok(mut filter)) => {
                for &fp in missed.iter() {
                    filter.insert(fp);
                }
                tracing::info!(bytes = filter.bytes(), "dedupe filter ready");
                self.filter = Filter::Ready(filter);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "building the dedupe filter failed; lookups go to the index");
                self.filter = Filter::Off;
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
            Err(std::sync::mpsc::TryRecvError::Disconnected) => self.filter = Filter::Off,
        }
    }

    /// Whether `fp` is certainly not in [`DEDUPE_FP`].
    fn surely_not_merged(&self, fp: u128) -> bool {
        match &self.filter {
            Filter::Ready(f) => !f.may_contain(fp),
            _ => false,
        }
    }

    /// Fingerprints held in memory (active and frozen).
    pub fn in_memory(&self) -> usize {
        self.active.len() + self.frozen.len()
    }

    /// Starts the index work of one write transaction.
    pub fn begin<'s, 't>(&'s self, txn: &'t WriteTransaction) -> Result<Batch<'s, 't>> {
        Ok(Batch {
            staged: self,
            added: FpMap::default(),
            merged_to: self.merged,
            fp: txn.open_table(DEDUPE_FP)?,
            journal: txn.open_table(DEDUPE_JOURNAL)?,
            overflow: txn.open_table(DEDUPE)?,
        })
    }

    /// Takes in what a committed [`Batch`] did.
    pub fn apply(&mut self, done: Committed) {
        self.active.extend(done.added);
        self.merged = done.merged_to;
        if !self.frozen.is_empty() && self.merged >= self.frozen.len() {
            self.frozen = Vec::new();
            self.merged = 0;
        }
        self.maybe_freeze();
        self.poll_filter();
    }

    fn maybe_freeze(&mut self) {
        if self.frozen.is_empty() && self.active.len() >= FREEZE_AT {
            let mut frozen: Vec<(u128, u64)> = self.active.drain().collect();
            frozen.sort_unstable_by_key(|&(k, _)| k);
            self.frozen_upto = frozen.iter().map(|&(_, s)| s).max().unwrap_or(0);
            // Into the filter before any of them reaches `dedupe_fp`.
            match &mut self.filter {
                Filter::Ready(f) => frozen.iter().for_each(|&(fp, _)| f.insert(fp)),
                Filter::Building { missed, .. } => missed.extend(frozen.iter().map(|&(fp, _)| fp)),
                Filter::Off => {}
            }
            self.frozen = frozen;
            self.merged = 0;
            self.active.shrink_to(FREEZE_AT / 4);
        }
    }

    fn get(&self, fp: u128) -> Option<u64> {
        if let Some(&seq) = self.active.get(&fp) {
            return Some(seq);
        }
        self.frozen
            .binary_search_by_key(&fp, |&(k, _)| k)
            .ok()
            .map(|i| self.frozen[i].1)
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
    /// Its fingerprint is free: journal + memory.
    Fingerprint(u128),
    /// Its fingerprint belongs to another id: full key in [`DEDUPE`].
    FullKey(Vec<u8>),
}

/// The index inside one write transaction.
pub struct Batch<'s, 't> {
    staged: &'s Staged,
    /// Fingerprints added by this transaction (not in `staged` until it commits).
    added: FpMap,
    merged_to: usize,
    fp: Table<'t, u128, u64>,
    journal: Table<'t, u64, u128>,
    overflow: Table<'t, &'static [u8], u64>,
}

/// What a committed batch changed in memory.
pub struct Committed {
    added: FpMap,
    merged_to: usize,
}

impl Batch<'_, '_> {
    /// Looks `event_id` of `app_id` up; `events` is the log as this transaction sees it.
    pub fn check(
        &self,
        events: &impl ReadableTable<u64, &'static [u8]>,
        app_id: u32,
        event_id: &str,
    ) -> Result<Check> {
        let fp = fingerprint(app_id, event_id);
        let owner = match self.added.get(&fp).copied().or_else(|| self.staged.get(fp)) {
            Some(seq) => Some(seq),
            None if self.staged.surely_not_merged(fp) => None,
            None => self.fp.get(fp)?.map(|v| v.value()),
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
                super::Error::Invalid(format!("event {owner}: unreadable event id"))
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

    /// Records a new id stored as `seq` (in this transaction).
    pub fn insert(&mut self, slot: Slot, seq: u64) -> Result<()> {
        match slot {
            Slot::Fingerprint(fp) => {
                self.journal.insert(seq, fp)?;
                self.added.insert(fp, seq);
            }
            Slot::FullKey(key) => {
                self.overflow.insert(key.as_slice(), seq)?;
            }
        }
        Ok(())
    }

    /// Merges the next chunk of the frozen fingerprints (a commit that added `added_events`
    /// events merges twice as many, within [`MIN_MERGE_CHUNK`]..[`MAX_MERGE_CHUNK`]); the
    /// last chunk also clears the journal range.
    pub fn merge_step(&mut self, added_events: usize) -> Result<()> {
        let frozen = &self.staged.frozen;
        if self.merged_to >= frozen.len() {
            return Ok(());
        }
        let chunk = (2 * added_events).clamp(MIN_MERGE_CHUNK, MAX_MERGE_CHUNK);
        let end = frozen.len().min(self.merged_to + chunk);
        for &(fp, seq) in &frozen[self.merged_to..end] {
            self.fp.insert(fp, seq)?;
        }
        if end == frozen.len() {
            self.journal
                .retain_in(..=self.staged.frozen_upto, |_, _| false)?;
        }
        self.merged_to = end;
        Ok(())
    }

    /// Ends the index work; hand the result to [`Staged::apply`] once the commit succeeded.
    pub fn finish(self) -> Committed {
        Committed {
            added: self.added,
            merged_to: self.merged_to,
        }
    }
}

/// Retention removed the event `seq` whose full key (`dedupe_key`) is `full`: drops its
/// fingerprint entries when they point at it. The writer's in-memory copy may still name the
/// seq; a lookup that finds the owner's record gone falls back to the full key, so a
/// resubmission is accepted again (retention's documented behaviour), never miscounted.
pub fn forget(txn: &WriteTransaction, full: &[u8], seq: u64) -> Result<()> {
    let (app, id) = full.split_at(4.min(full.len()));
    let (Ok(app), Ok(id)) = (<[u8; 4]>::try_from(app), std::str::from_utf8(id)) else {
        return Ok(());
    };
    let fp = fingerprint(u32::from_be_bytes(app), id);
    let mut fp_table = txn.open_table(DEDUPE_FP)?;
    if fp_table.get(fp)?.is_some_and(|s| s.value() == seq) {
        fp_table.remove(fp)?;
    }
    let mut journal = txn.open_table(DEDUPE_JOURNAL)?;
    if journal.get(seq)?.is_some_and(|f| f.value() == fp) {
        journal.remove(seq)?;
    }
    Ok(())
}

/// The seq of `(app_id, event_id)` as committed, for readers outside the writer thread (the
/// admin panel's lookup by id): `dedupe_fp`, then the full-key table, then a scan of the
/// unmerged journal (at most about two freezes' worth of small entries).
pub fn lookup_committed(
    txn: &redb::ReadTransaction,
    app_id: u32,
    event_id: &str,
) -> Result<Option<u64>> {
    let fp = fingerprint(app_id, event_id);
    let events = txn.open_table(super::tables::EVENTS)?;
    let is_it = |seq: u64| -> Result<bool> {
        Ok(match events.get(seq)? {
            Some(r) => event_id_of(r.value()) == Some(event_id),
            None => false,
        })
    };
    if let Some(seq) = txn.open_table(DEDUPE_FP)?.get(fp)?.map(|v| v.value())
        && is_it(seq)?
    {
        return Ok(Some(seq));
    }
    let full = dedupe_key(app_id, event_id);
    if let Some(seq) = txn.open_table(DEDUPE)?.get(full.as_slice())? {
        return Ok(Some(seq.value()));
    }
    for row in txn.open_table(DEDUPE_JOURNAL)?.iter()? {
        let (seq, f) = row?;
        if f.value() == fp && is_it(seq.value())? {
            return Ok(Some(seq.value()));
        }
    }
    Ok(None)
}

/// Schema v1 → v2: v1 kept every id under its full key in [`DEDUPE`]. Moves each into
/// [`DEDUPE_FP`] by fingerprint (the journal is only for what is not merged yet), keeping
/// in [`DEDUPE`] only ids whose fingerprint another id owns.
pub fn migrate_v1(txn: &WriteTransaction) -> Result<()> {
    let mut overflow = txn.open_table(DEDUPE)?;
    let mut fp_table = txn.open_table(DEDUPE_FP)?;
    let mut moved: Vec<Vec<u8>> = Vec::new();
    for row in overflow.iter()? {
        let (key, seq) = row?;
        let key = key.value();
        let (app, id) = key.split_at(4.min(key.len()));
        let (Ok(app), Ok(id)) = (<[u8; 4]>::try_from(app), std::str::from_utf8(id)) else {
            continue;
        };
        let fp = fingerprint(u32::from_be_bytes(app), id);
        if fp_table.get(fp)?.is_none() {
            fp_table.insert(fp, seq.value())?;
            moved.push(key.to_vec());
        }
    }
    for key in moved {
        overflow.remove(key.as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::EVENTS;
    use redb::Database;

    fn record(id: &str) -> Vec<u8> {
        crate::store::codec::encode_event(&crate::store::codec::EventRecord::for_test(id))
    }

    /// Stores `ids` through the staged index the way the writer does; returns which were new.
    fn ingest(db: &Database, staged: &mut Staged, seq: &mut u64, ids: &[&str]) -> Vec<bool> {
        let txn = db.begin_write().unwrap();
        let mut fresh = Vec::new();
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
            batch.merge_step(ids.len()).unwrap();
            batch.finish()
        };
        txn.commit().unwrap();
        staged.apply(done);
        fresh
    }

    #[test]
    fn a_v1_database_is_migrated_and_keeps_its_duplicates() {
        use crate::store::tables::{META, SCHEMA_VERSION};
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(crate::store::DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("schema_version", &1u32.to_be_bytes()[..])
                    .unwrap();
                let mut events = txn.open_table(EVENTS).unwrap();
                let mut v1 = txn.open_table(DEDUPE).unwrap();
                for (seq, id) in [(1u64, "old-1"), (2, "old-2")] {
                    events.insert(seq, record(id).as_slice()).unwrap();
                    v1.insert(dedupe_key(1, id).as_slice(), seq).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = crate::store::Store::open(dir.path()).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        let version = txn
            .open_table(META)
            .unwrap()
            .get("schema_version")
            .unwrap()
            .map(|v| v.value().to_vec());
        assert_eq!(version, Some(SCHEMA_VERSION.to_be_bytes().to_vec()));
        let mut staged = Staged::load(&txn).unwrap();
        txn.abort().unwrap();
        let mut seq = 3;
        let fresh = ingest(
            &store.db().unwrap(),
            &mut staged,
            &mut seq,
            &["old-2", "new", "old-1"],
        );
        assert_eq!(fresh, [false, true, false]);
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
        use redb::ReadableDatabase;
        let overflow = txn.open_table(DEDUPE).unwrap();
        assert_eq!(
            overflow
                .get(dedupe_key(1, "b").as_slice())
                .unwrap()
                .map(|v| v.value()),
            Some(2)
        );
    }

    #[test]
    fn frozen_fingerprints_merge_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let mut staged = Staged::default();
        let mut seq = 1;
        let ids: Vec<String> = (0..3000).map(|i| format!("id-{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert!(ingest(&db, &mut staged, &mut seq, &refs).iter().all(|&n| n));
        // Freeze by hand (FREEZE_AT is large) and merge in steps.
        let mut frozen: Vec<(u128, u64)> = staged.active.drain().collect();
        frozen.sort_unstable();
        staged.frozen_upto = frozen.iter().map(|f| f.1).max().unwrap();
        staged.frozen = frozen;
        // Half-merged, then "crash": reload from the journal.
        staged.merged = 0;
        {
            let txn = db.begin_write().unwrap();
            let done = {
                let mut b = staged.begin(&txn).unwrap();
                b.merged_to = 0;
                for &(fp, s) in &staged.frozen[..1500] {
                    b.fp.insert(fp, s).unwrap();
                }
                b.merged_to = 1500;
                b.finish()
            };
            txn.commit().unwrap();
            staged.apply(done);
        }
        let txn = db.begin_write().unwrap();
        let mut reloaded = Staged::load(&txn).unwrap();
        txn.abort().unwrap();
        assert_eq!(reloaded.in_memory(), 3000);
        // Everything is still a duplicate, and new ids are new.
        let mut again: Vec<&str> = refs.clone();
        again.push("brand-new");
        let out = ingest(&db, &mut reloaded, &mut seq, &again);
        assert!(out[..3000].iter().all(|&n| !n));
        assert!(out[3000]);
        // Finish the merge on the original: the journal range is cleared.
        while !staged.frozen.is_empty() {
            ingest(&db, &mut staged, &mut seq, &["id-0"]);
        }
        let txn = db.begin_write().unwrap();
        let journal_len = txn.open_table(DEDUPE_JOURNAL).unwrap().len().unwrap();
        let fp_len = txn.open_table(DEDUPE_FP).unwrap().len().unwrap();
        txn.abort().unwrap();
        use redb::ReadableTableMetadata;
        assert_eq!(fp_len, 3000);
        assert_eq!(journal_len, 1, "only brand-new is unmerged");
        // Readers find merged, journaled and missing ids alike.
        use redb::ReadableDatabase;
        let read = db.begin_read().unwrap();
        assert_eq!(lookup_committed(&read, 1, "id-5").unwrap(), Some(6));
        assert_eq!(lookup_committed(&read, 1, "brand-new").unwrap(), Some(3001));
        assert_eq!(lookup_committed(&read, 1, "missing").unwrap(), None);
        assert_eq!(lookup_committed(&read, 2, "id-5").unwrap(), None);
    }

    #[test]
    fn the_filter_has_no_false_no_and_few_false_maybe() {
        let mut f = FpFilter::default();
        let fp = |i: u64| fingerprint((i % 3) as u32, &format!("id-{i}"));
        // Past the first part's capacity, so that it grows.
        let n = FILTER_FIRST_CAPACITY as u64 + 50_000;
        for i in 0..n {
            f.insert(fp(i));
        }
        assert_eq!(f.parts.len(), 2);
        assert!((0..n).all(|i| f.may_contain(fp(i))));
        let false_maybe = (n..n + 100_000).filter(|&i| f.may_contain(fp(i))).count();
        assert!(
            false_maybe < 3_000,
            "{false_maybe} of 100000 absent ids said maybe"
        );
    }

    /// With the filter built in the background from a database holding merged fingerprints,
    /// every merged id is still a duplicate and new ids are new.
    #[test]
    fn the_filter_never_hides_a_merged_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(Database::create(dir.path().join("t.redb")).unwrap());
        let mut staged = Staged::default();
        let mut seq = 1;
        let ids: Vec<String> = (0..3000).map(|i| format!("id-{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        ingest(&db, &mut staged, &mut seq, &refs);
        // Merge all of them into `dedupe_fp` (FREEZE_AT is large: freeze by hand).
        let mut frozen: Vec<(u128, u64)> = staged.active.drain().collect();
        frozen.sort_unstable();
        staged.frozen_upto = frozen.iter().map(|f| f.1).max().unwrap();
        staged.frozen = frozen;
        while !staged.frozen.is_empty() {
            ingest(&db, &mut staged, &mut seq, &["id-0"]);
        }
        let txn = db.begin_write().unwrap();
        let mut fresh = Staged::load(&txn).unwrap();
        txn.abort().unwrap();
        assert_eq!(fresh.in_memory(), 0, "everything is merged");
        fresh.build_filter(db.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut n = 0;
        while !matches!(fresh.filter, Filter::Ready(_)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the filter was never built"
            );
            // Each commit polls the build.
            assert_eq!(
                ingest(&db, &mut fresh, &mut seq, &[&format!("new-{n}")]),
                [true]
            );
            n += 1;
        }
        let out = ingest(&db, &mut fresh, &mut seq, &refs);
        assert!(out.iter().all(|&new| !new), "a merged id passed as new");
        let novel: Vec<String> = (0..3000).map(|i| format!("novel-{i}")).collect();
        let novel: Vec<&str> = novel.iter().map(String::as_str).collect();
        assert!(
            ingest(&db, &mut fresh, &mut seq, &novel)
                .iter()
                .all(|&new| new)
        );
        // And the filter really answered for most of them.
        let Filter::Ready(f) = &fresh.filter else {
            unreachable!()
        };
        let passed = novel
            .iter()
            .filter(|id| !f.may_contain(fingerprint(1, id)))
            .count();
        assert!(
            passed > 2_500,
            "the filter excluded only {passed} of 3000 new ids"
        );
    }
}
