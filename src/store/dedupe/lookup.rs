//! The one lookup: "is `(app, event_id)` stored, and as which seq?" ([`find`]). The writer's
//! batch, the request threads' pre-check and readers all go through it, each with the view
//! of the index it has.

use super::super::Result;
use super::super::codec::event_id_of;
use super::super::runs::{self, Run, RunSet};
use super::super::tables::{DEDUPE, DEDUPE_COMMITS, EVENTS, META, REMOVED_THROUGH, dedupe_key};
use super::filters::Filters;
use super::rows::{FpMap, Owner, RUNS, commit_row_entries, lowest_key, split_entry};
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, TableError};
use ring::digest;
use std::collections::HashMap;

/// `app_id << 64 | the first 64 bits of SHA-256(event_id)`. Stored on disk: never change.
pub fn fingerprint(app_id: u32, event_id: &str) -> u128 {
    hashes(app_id, event_id).0
}

/// The [`fingerprint`] and the check bits of an id (the next 64 bits of its SHA-256, the
/// lowest set: never [`super::rows::NO_CHECK`]), from one hash. Both are stored on disk:
/// never change.
pub fn hashes(app_id: u32, event_id: &str) -> (u128, u64) {
    let digest = digest::digest(&digest::SHA256, event_id.as_bytes());
    let bits = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&digest.as_ref()[r]);
        u64::from_be_bytes(b)
    };
    (
        (u128::from(app_id) << 64) | u128::from(bits(0..8)),
        bits(8..16) | 1,
    )
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
    /// Its fingerprint is free: a commit row + memory, with the id's check bits.
    Fingerprint { fp: u128, check: u64 },
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
    /// Its check bits ([`hashes`]): stored with the fingerprint, so that a duplicate is known
    /// without reading the stored record (see [`confirm`]).
    pub check: u64,
}

impl<'a> Id<'a> {
    pub fn new(app_id: u32, event_id: &'a str) -> Id<'a> {
        let (fp, check) = hashes(app_id, event_id);
        Id {
            app_id,
            event_id,
            fp,
            check,
        }
    }
}

/// The fingerprints not in a run yet, as a view knows them.
pub enum Unstaged<'a> {
    /// The writer's memory: this transaction's additions, then the committed ones (those
    /// not frozen, those being frozen into a run).
    Memory(&'a [&'a FpMap; 3]),
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

    /// The entry `fp` is stored under in a run, if any.
    fn owner(&mut self, fp: u128) -> Result<Option<Owner>> {
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
            let found = runs::seek(table, &lowest_key(fp), split_entry)?.flatten();
            if let Some((f, owner)) = found
                && f == fp
            {
                return Ok(Some(owner));
            }
        }
        Ok(None)
    }
}

/// Looks `id` up. A fingerprint is stored once (in memory, a commit row or a run); when its
/// owner is another id (a 64-bit collision) or is gone (retention, erasure), the full key
/// in [`DEDUPE`] decides. A record whose id cannot be read is an error, never a guess (a
/// guess could store a duplicate). `removed_through` is the log's [`removed_through`] as
/// the caller's transaction sees it.
pub fn find<T, F>(
    id: Id<'_>,
    removed_through: u64,
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
        Unstaged::Memory(maps) => match in_memory(maps, id.fp) {
            Some(owner) => Some(owner),
            None => runs.owner(id.fp)?,
        },
        Unstaged::Rows(rows) => match runs.owner(id.fp)? {
            Some(seq) => Some(seq),
            None => in_rows(rows, id.fp)?,
        },
        Unstaged::Unknown => runs.owner(id.fp)?,
    };
    confirm(id, owner, removed_through, events, overflow)
}

/// [`find`] when no run can hold `id` (a pre-check's [`super::Known::Absent`] still stands):
/// only the writer's memory is asked ([`Unstaged::Memory`]'s maps).
pub fn find_in_memory(
    id: Id<'_>,
    removed_through: u64,
    maps: &[&FpMap; 3],
    events: &impl ReadableTable<u64, &'static [u8]>,
    overflow: &impl ReadableTable<&'static [u8], u64>,
) -> Result<Check> {
    confirm(
        id,
        in_memory(maps, id.fp),
        removed_through,
        events,
        overflow,
    )
}

/// The owner of `fp` in the first of `maps` that holds it (a fingerprint is in one at most).
fn in_memory(maps: &[&FpMap; 3], fp: u128) -> Option<Owner> {
    maps.iter().find_map(|m| m.get(&fp).copied())
}

/// The answer for `id` once its fingerprint's `owner` (if any) is known.
///
/// - An owner with `id`'s check bits whose seq is past `removed_through` is `id` itself,
///   stored (nothing past it was ever removed): a duplicate, known without reading the
///   record. The fingerprint and the check are 127 bits of the id's SHA-256, app id aside.
/// - Otherwise the owner's record decides (it holds `id`, another id, or is gone), then the
///   full key.
fn confirm(
    id: Id<'_>,
    owner: Option<Owner>,
    removed_through: u64,
    events: &impl ReadableTable<u64, &'static [u8]>,
    overflow: &impl ReadableTable<&'static [u8], u64>,
) -> Result<Check> {
    let Some(Owner { seq: owner, check }) = owner else {
        return Ok(Check::New(Slot::Fingerprint {
            fp: id.fp,
            check: id.check,
        }));
    };
    if check == id.check && owner > removed_through {
        return Ok(Check::Seen(owner));
    }
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

/// The entry `fp` is stored under in a commit row (at most `FREEZE_AT` entries to scan).
fn in_rows(rows: &impl ReadableTable<u64, &'static [u8]>, fp: u128) -> Result<Option<Owner>> {
    for row in rows.iter()? {
        let (_, entries) = row?;
        for (f, owner) in commit_row_entries(entries.value())? {
            if f == fp {
                return Ok(Some(owner));
            }
        }
    }
    Ok(None)
}

/// The highest seq ever removed from the log by retention or erasure (0 if none;
/// `tables::REMOVED_THROUGH`): every event past it is still stored.
pub fn removed_through(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    let v = meta.get(REMOVED_THROUGH)?;
    Ok(
        v.and_then(|b| b.value().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0),
    )
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
        removed_through(&txn.open_table(META)?)?,
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
