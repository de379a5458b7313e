//! The one lookup: "is `(app, event_id)` stored, and as which seq?" ([`find`]). The writer's
//! batch, the request threads' pre-check and readers all go through it, each with the view
//! of the index it has.

use super::super::Result;
use super::super::codec::event_id_of;
use super::super::runs::{self, Run, RunSet};
use super::super::tables::{DEDUPE, DEDUPE_COMMITS, EVENTS, META, dedupe_key};
use super::filters::Filters;
use super::rows::{FpMap, RUNS, commit_row_pairs, pair_bytes, split_pair};
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, TableError};
use ring::digest;
use std::collections::HashMap;

/// `app_id << 64 | the first 64 bits of SHA-256(event_id)`. Stored on disk: never change.
pub fn fingerprint(app_id: u32, event_id: &str) -> u128 {
    let digest = digest::digest(&digest::SHA256, event_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    (u128::from(app_id) << 64) | u128::from(u64::from_be_bytes(first))
}

/// Whether an event id was stored before.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    Seen(u64),
    /// Not as far as this view knows; only the writer's view is sure (see [`Unstaged`]).
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

/// The id looked up.
#[derive(Clone, Copy)]
pub struct Id<'a> {
    pub app_id: u32,
    pub event_id: &'a str,
    /// `fingerprint(app_id, event_id)`.
    pub fp: u128,
}

impl<'a> Id<'a> {
    pub fn new(app_id: u32, event_id: &'a str) -> Id<'a> {
        Id {
            app_id,
            event_id,
            fp: fingerprint(app_id, event_id),
        }
    }
}

/// The fingerprints not in a run yet, as a view knows them.
pub enum Unstaged<'a> {
    /// The writer's memory: this transaction's additions, then the committed ones.
    Memory(&'a FpMap, &'a FpMap),
    /// The commit rows, scanned after the runs (a reader outside the writer).
    Rows(&'a ReadOnlyTable<u64, &'static [u8]>),
    /// Unknown (the pre-check): an id not found is left to the writer.
    Unknown,
}

/// The sorted runs as one transaction sees them, behind their filters; run tables are
/// opened once, when first read.
pub struct Runs<'a, T, F> {
    /// Oldest first (read newest first).
    runs: &'a [Run],
    filters: &'a Filters,
    tables: HashMap<u32, T>,
    open: F,
}

impl<'a, T, F> Runs<'a, T, F>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
    F: Fn(&str) -> std::result::Result<T, TableError>,
{
    pub fn new(set: &'a RunSet, filters: &'a Filters, open: F) -> Self {
        Runs::with_tables(set, filters, HashMap::new(), open)
    }

    /// With the tables an earlier [`Runs`] of the same transaction opened.
    pub fn with_tables(
        set: &'a RunSet,
        filters: &'a Filters,
        tables: HashMap<u32, T>,
        open: F,
    ) -> Self {
        Runs {
            runs: &set.runs,
            filters,
            tables,
            open,
        }
    }

    pub fn into_tables(self) -> HashMap<u32, T> {
        self.tables
    }

    /// The seq `fp` is stored under in a run, if any.
    fn owner(&mut self, fp: u128) -> Result<Option<u64>> {
        if self.filters.surely_absent(fp) {
            return Ok(None);
        }
        for id in self.runs.iter().rev().map(|r| r.id) {
            if !self.filters.may_contain(id, fp) {
                continue;
            }
            let table = match self.tables.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert((self.open)(&runs::table_name(RUNS, id))?)
                }
            };
            let found = runs::seek(table, &pair_bytes(fp, 0), split_pair)?.flatten();
            if let Some((f, seq)) = found
                && f == fp
            {
                return Ok(Some(seq));
            }
        }
        Ok(None)
    }
}

/// Looks `id` up. A fingerprint is stored once (in memory, a commit row or a run); when its
/// owner's record holds another id (a 64-bit collision) or is gone (retention), the full key
/// in [`DEDUPE`] decides. A record whose id cannot be read is an error, never a guess (a
/// guess could store a duplicate).
pub fn find<T, F>(
    id: Id<'_>,
    unstaged: Unstaged<'_>,
    runs: &mut Runs<'_, T, F>,
    events: &impl ReadableTable<u64, &'static [u8]>,
    overflow: &impl ReadableTable<&'static [u8], u64>,
) -> Result<Check>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
    F: Fn(&str) -> std::result::Result<T, TableError>,
{
    let owner = match unstaged {
        Unstaged::Memory(added, committed) => {
            match added.get(&id.fp).or_else(|| committed.get(&id.fp)) {
                Some(&seq) => Some(seq),
                None => runs.owner(id.fp)?,
            }
        }
        Unstaged::Rows(rows) => match runs.owner(id.fp)? {
            Some(seq) => Some(seq),
            None => in_rows(rows, id.fp)?,
        },
        Unstaged::Unknown => runs.owner(id.fp)?,
    };
    confirm(id, owner, events, overflow)
}

/// [`find`] when no run can hold `id` (a pre-check's [`super::Known::Absent`] still stands):
/// only `added` (this transaction's) and `committed` (not in a run yet) are asked.
pub fn find_in_memory(
    id: Id<'_>,
    added: &FpMap,
    committed: &FpMap,
    events: &impl ReadableTable<u64, &'static [u8]>,
    overflow: &impl ReadableTable<&'static [u8], u64>,
) -> Result<Check> {
    let owner = added.get(&id.fp).or_else(|| committed.get(&id.fp));
    confirm(id, owner.copied(), events, overflow)
}

/// The answer for `id` once its fingerprint's `owner` (if any) is known: the owner's record
/// decides, then the full key.
fn confirm(
    id: Id<'_>,
    owner: Option<u64>,
    events: &impl ReadableTable<u64, &'static [u8]>,
    overflow: &impl ReadableTable<&'static [u8], u64>,
) -> Result<Check> {
    let Some(owner) = owner else {
        return Ok(Check::New(Slot::Fingerprint(id.fp)));
    };
    if let Some(record) = events.get(owner)? {
        let owner_id = event_id_of(record.value()).ok_or_else(|| {
            super::super::Error::Corrupt(format!("event {owner}: unreadable event id"))
        })?;
        if owner_id == id.event_id {
            return Ok(Check::Seen(owner));
        }
    }
    let full = dedupe_key(id.app_id, id.event_id);
    Ok(match overflow.get(full.as_slice())? {
        Some(seq) => Check::Seen(seq.value()),
        None => Check::New(Slot::FullKey(full)),
    })
}

/// The seq `fp` is stored under in a commit row (at most `FREEZE_AT` pairs to scan).
fn in_rows(rows: &impl ReadableTable<u64, &'static [u8]>, fp: u128) -> Result<Option<u64>> {
    for row in rows.iter()? {
        let (_, pairs) = row?;
        for (f, seq) in commit_row_pairs(pairs.value())? {
            if f == fp {
                return Ok(Some(seq));
            }
        }
    }
    Ok(None)
}

/// The seq of `(app_id, event_id)` as committed, for readers outside the writer thread (the
/// admin panel's lookup by id, audit keys): [`find`] without filters, the commit rows
/// scanned.
pub fn lookup_committed(txn: &ReadTransaction, app_id: u32, event_id: &str) -> Result<Option<u64>> {
    let set = RunSet::load(&txn.open_table(META)?, RUNS)?;
    let no_filters = Filters::default();
    let mut runs = Runs::new(&set, &no_filters, |name| txn.open_table(runs::def(name)));
    let rows = txn.open_table(DEDUPE_COMMITS)?;
    let check = find(
        Id::new(app_id, event_id),
        Unstaged::Rows(&rows),
        &mut runs,
        &txn.open_table(EVENTS)?,
        &txn.open_table(DEDUPE)?,
    )?;
    Ok(match check {
        Check::Seen(seq) => Some(seq),
        Check::New(_) => None,
    })
}
