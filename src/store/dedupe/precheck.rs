//! The request threads' pre-check: [`Writer::submit`](super::super::writer::Writer::submit)
//! settles, before queueing, the ids a committed snapshot of the log holds, through the one
//! lookup ([`find`]) with the writer's filters, so that the writer thread (the one serial
//! stage of ingest) does not read their run block and record itself.
//!
//! It only ever says "duplicate", of an event a committed (hence durable) snapshot holds
//! under that very id; everything else goes to the writer with its fingerprint computed:
//! ids the filters rule out, ids not in a run yet (the writer's memory), and every id while
//! the filter of everything is being built or the database is being reopened. So only the
//! writer decides that an id is new.

use super::super::Result;
use super::super::runs::{self, RunSet};
use super::super::tables::{DEDUPE, EVENTS, META};
use super::filters::Filters;
use super::lookup::{Check, Id, Runs, Slot, Unstaged, find, hashes, removed_through};
use super::rows::RUNS;
use redb::Database;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

/// What a request thread learnt about one event id before handing it to the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Its fingerprint and check bits ([`hashes`]); whether it was stored before is left to
    /// the writer.
    Fingerprint { fp: u128, check: u64 },
    /// Its fingerprint, in no run when the filters were at `epoch` ([`Filters::epoch`]): while
    /// that epoch stands, the writer asks only what was committed since (its memory) and its
    /// own transaction. An id committed in between is there, or in a run written since,
    /// which moved the epoch (then the writer looks the id up in full).
    Absent { fp: u128, check: u64, epoch: u64 },
    /// A committed snapshot holds it, as this seq: a duplicate.
    Stored(u64),
}

/// Ids settled per hold of the filters' read lock: the writer waits for it when the filters
/// change (a run written, a merge completed, a build finished).
const SETTLE_PER_LOCK: usize = 64;

/// The filters the writer and the pre-checks share, and the database the writer uses.
#[derive(Default)]
pub struct Precheck {
    filters: RwLock<Filters>,
    /// Empty while the writer reopens the database.
    db: RwLock<Weak<Database>>,
}

impl Precheck {
    pub(super) fn filters(&self) -> RwLockReadGuard<'_, Filters> {
        self.filters.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn filters_mut(&self) -> RwLockWriteGuard<'_, Filters> {
        self.filters.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `db` from now on.
    pub(super) fn attach(&self, db: Weak<Database>) {
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = db;
    }

    /// Stops reading the database (the writer found it failed and will reopen it).
    pub fn detach(&self) {
        self.attach(Weak::new());
    }

    /// Whether the filter of everything is built (before, every id goes to the writer).
    pub fn ready(&self) -> bool {
        self.filters().ready()
    }

    /// What the filters alone tell of each id of `ids` (events of app `app_id`): its
    /// fingerprint, and whether it may be stored. Cheap (a hash and a cache line per id);
    /// [`Precheck::settle`] does the reads.
    pub fn check(&self, app_id: u32, ids: &[&str]) -> Prechecked {
        // Hashed before the lock, so the writer never waits for a request's hashing.
        let fps: Vec<(u128, u64)> = ids.iter().map(|id| hashes(app_id, id)).collect();
        let filters = self.filters();
        let epoch = filters.epoch();
        if !filters.ready() {
            drop(filters);
            let known = (fps.into_iter())
                .map(|(fp, check)| Known::Fingerprint { fp, check })
                .collect();
            return Prechecked {
                app_id,
                known,
                maybe: Vec::new(),
                epoch,
            };
        }
        let mut maybe = Vec::new();
        let known = (fps.into_iter().enumerate())
            .map(|(i, (fp, check))| match filters.surely_absent(fp) {
                true => Known::Absent { fp, check, epoch },
                false => {
                    maybe.push((i, fp, check));
                    Known::Fingerprint { fp, check }
                }
            })
            .collect();
        drop(filters);
        Prechecked {
            app_id,
            known,
            maybe,
            epoch,
        }
    }

    /// Settles the ids of `pre` that may be stored (about two random page reads each) and
    /// returns what is known of every id, in order. Never fails: an id it cannot settle (for
    /// any reason, errors included) is left to the writer.
    pub fn settle(&self, ids: &[&str], mut pre: Prechecked) -> Vec<Known> {
        let mut known = std::mem::take(&mut pre.known);
        if pre.maybe.is_empty() {
            return known;
        }
        let db = self.db.read().unwrap_or_else(|e| e.into_inner()).upgrade();
        if let Some(db) = db
            && let Err(e) = self.settle_in(&db, &pre, ids, &mut known)
        {
            tracing::debug!(error = %e, "dedupe pre-check skipped; the writer looks the ids up");
        }
        known
    }

    /// Settles the ids at `pre.maybe` (index in `ids`, hashes) that a snapshot of `db`
    /// holds; those whose fingerprint no run of it holds are [`Known::Absent`] in `pre`'s
    /// epoch (the snapshot is younger: it has every run of that epoch).
    fn settle_in(
        &self,
        db: &Database,
        pre: &Prechecked,
        ids: &[&str],
        known: &mut [Known],
    ) -> Result<()> {
        use redb::ReadableDatabase;
        let (app_id, maybe, epoch) = (pre.app_id, &pre.maybe, pre.epoch);
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let (set, removed) = (RunSet::load(&meta, RUNS)?, removed_through(&meta)?);
        drop(meta);
        let events = txn.open_table(EVENTS)?;
        let overflow = txn.open_table(DEDUPE)?;
        for chunk in maybe.chunks(SETTLE_PER_LOCK) {
            let filters = self.filters();
            let mut runs = Runs::new(&set, &filters, |name| txn.open_table(runs::def(name)));
            for &(i, fp, check) in chunk {
                let id = Id {
                    app_id,
                    event_id: ids[i],
                    fp,
                    check,
                };
                let unstaged = Unstaged::Unknown;
                known[i] = match find(id, removed, unstaged, &mut runs, &events, &overflow)? {
                    Check::Seen(seq) => Known::Stored(seq),
                    // No run holds the fingerprint at all (a taken one needs its full key).
                    Check::New(Slot::Fingerprint { fp, check }) => {
                        Known::Absent { fp, check, epoch }
                    }
                    Check::New(Slot::FullKey(_)) => continue,
                };
            }
        }
        Ok(())
    }
}

/// [`Precheck::check`]'s answer: a fingerprint for every id, and which ids may be stored.
pub struct Prechecked {
    app_id: u32,
    known: Vec<Known>,
    /// (index, fingerprint, check) of the ids the filter of everything did not rule out.
    maybe: Vec<(usize, u128, u64)>,
    /// The filters' epoch the ids were judged in.
    epoch: u64,
}

impl Prechecked {
    /// How many ids [`Precheck::settle`] would look up.
    pub fn to_settle(&self) -> usize {
        self.maybe.len()
    }
}
