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
use super::lookup::{Check, Id, Runs, Unstaged, find, fingerprint};
use super::rows::RUNS;
use redb::Database;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

/// What a request thread learnt about one event id before handing it to the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Its fingerprint; whether it was stored before is left to the writer.
    Fingerprint(u128),
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
        let fps: Vec<u128> = ids.iter().map(|id| fingerprint(app_id, id)).collect();
        let filters = self.filters();
        let maybe = match filters.ready() {
            true => (fps.iter().enumerate())
                .filter(|&(_, &fp)| !filters.surely_absent(fp))
                .map(|(i, &fp)| (i, fp))
                .collect(),
            false => Vec::new(),
        };
        drop(filters);
        let known = fps.into_iter().map(Known::Fingerprint).collect();
        Prechecked {
            app_id,
            known,
            maybe,
        }
    }

    /// Settles the ids of `pre` that may be stored (about two random page reads each) and
    /// returns what is known of every id, in order. Never fails: an id it cannot settle (for
    /// any reason, errors included) is left to the writer.
    pub fn settle(&self, ids: &[&str], pre: Prechecked) -> Vec<Known> {
        let mut known = pre.known;
        if pre.maybe.is_empty() {
            return known;
        }
        let db = self.db.read().unwrap_or_else(|e| e.into_inner()).upgrade();
        if let Some(db) = db
            && let Err(e) = self.settle_in(&db, pre.app_id, ids, &pre.maybe, &mut known)
        {
            tracing::debug!(error = %e, "dedupe pre-check skipped; the writer looks the ids up");
        }
        known
    }

    /// Settles the ids at `maybe` (index in `ids`, fingerprint) that a snapshot of `db`
    /// holds.
    fn settle_in(
        &self,
        db: &Database,
        app_id: u32,
        ids: &[&str],
        maybe: &[(usize, u128)],
        known: &mut [Known],
    ) -> Result<()> {
        use redb::ReadableDatabase;
        let txn = db.begin_read()?;
        let set = RunSet::load(&txn.open_table(META)?, RUNS)?;
        let events = txn.open_table(EVENTS)?;
        let overflow = txn.open_table(DEDUPE)?;
        for chunk in maybe.chunks(SETTLE_PER_LOCK) {
            let filters = self.filters();
            let mut runs = Runs::new(&set, &filters, |name| txn.open_table(runs::def(name)));
            for &(i, fp) in chunk {
                let id = Id {
                    app_id,
                    event_id: ids[i],
                    fp,
                };
                if let Check::Seen(seq) =
                    find(id, Unstaged::Unknown, &mut runs, &events, &overflow)?
                {
                    known[i] = Known::Stored(seq);
                }
            }
        }
        Ok(())
    }
}

/// [`Precheck::check`]'s answer: a fingerprint for every id, and which ids may be stored.
pub struct Prechecked {
    app_id: u32,
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
