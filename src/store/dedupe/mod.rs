//! The dedupe index: an exact answer to "was `(app, event_id)` stored before, and as which
//! seq?" that stays cheap as the log grows. The reasoning is in `docs/design/dedupe.md`.
//!
//! - `lookup`: the one lookup (`lookup::find`), which the writer's [`Batch`], the request
//!   threads' [`Precheck`] and readers ([`lookup_committed`]) all go through, each with the
//!   view of the index it has. A [`fingerprint`] finds a candidate seq; the stored record's
//!   id decides; an id whose fingerprint another id owns is kept under its full key.
//! - `index`: what is stored, all of it written sequentially: each commit's new fingerprints
//!   as one row (and in the writer's memory, [`Staged`]), frozen into sorted runs that merge
//!   geometrically a bounded step per commit.
//! - `filters`: Bloom filters in memory, so that a new id reads no run and a resubmitted
//!   one about one; built on threads of their own.
//! - `precheck`: duplicates of stored events settled on the request's thread, before the
//!   writer.

mod filters;
mod index;
mod lookup;
mod precheck;
mod rows;

pub use filters::{BACKGROUND_NICE, run_in_background};
pub use index::{BATCH_ROOM, Batch, Committed, Entries, Staged, entries};
pub use lookup::{Check, Slot, fingerprint, lookup_committed};
pub use precheck::{Known, Precheck, Prechecked};

#[cfg(test)]
mod tests;
