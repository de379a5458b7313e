//! Retention: removing events older than their tenant's retention period, together with their
//! dedupe entries, audit bodies and identity-graph index entries (the links between
//! identifiers stay).
//!
//! A pass finds victims in short read transactions ([`find_chunk`], never blocking ingest) and
//! deletes them in small write transactions ([`delete_chunk`], at most [`CHUNK`] events each)
//! that the serving process runs on its writer thread between ingest batches. So ingest waits
//! at most for one small deletion commit.
//!
//! Consequences (documented for users):
//! - A resubmitted event whose original was removed is accepted again (its dedupe entry is
//!   gone with it) and gets a new seq.
//! - Quota counters are not lowered: they count what was accepted in a month.
//! - The log stays append-only and its seqs increasing; removed seqs are never reused
//!   ([`removed_through`] keeps the highest removed seq for the writer's restart).

use crate::store::codec::{Tenant, decode_config, decode_event};
use crate::store::tables::*;
use crate::store::{Result, Store};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use std::collections::HashMap;

/// Events removed per write transaction.
pub const CHUNK: usize = 500;
/// Events examined per read transaction.
const SCAN: usize = 20_000;
/// How far past the newest cut a scan keeps looking. `received_at_ms` is taken before an
/// event waits for its commit, so log order and receive time can disagree by the wait;
/// ten minutes is far beyond any wait the body and queue limits allow.
pub const SLACK_MS: u64 = 10 * 60 * 1000;
const MS_PER_DAY: u64 = 86_400_000;

/// Per tenant name, the receive time (ms) before which its events are removed at `now_ms`.
/// Tenants that keep events forever are absent.
pub fn cuts(db: &Database, default_days: u32, now_ms: u64) -> Result<HashMap<String, u64>> {
    let txn = db.begin_read()?;
    let mut cuts = HashMap::new();
    for row in txn.open_table(TENANTS)?.iter()? {
        let (_, bytes) = row?;
        let t: Tenant = decode_config("tenant", bytes.value())?;
        let days = t.retention_days.unwrap_or(default_days);
        if days > 0 {
            cuts.insert(t.name, now_ms.saturating_sub(u64::from(days) * MS_PER_DAY));
        }
    }
    Ok(cuts)
}

pub use crate::store::Victim;

/// What one scan step found.
#[derive(Debug, Default)]
pub struct Chunk {
    pub victims: Vec<Victim>,
    /// Where the next step starts; `None` when the pass is complete.
    pub next: Option<u64>,
}

/// Scans the log from seq `from` for events older than their tenant's cut.
pub fn find_chunk(db: &Database, cuts: &HashMap<String, u64>, from: u64) -> Result<Chunk> {
    let Some(&newest_cut) = cuts.values().max() else {
        return Ok(Chunk::default());
    };
    let txn = db.begin_read()?;
    let mut app_ids = HashMap::new();
    for row in txn.open_table(APPS)?.iter()? {
        let (id, bytes) = row?;
        let app: crate::store::codec::App = decode_config("app", bytes.value())?;
        app_ids.insert(app.name, id.value());
    }
    let mut chunk = Chunk::default();
    for (scanned, row) in txn.open_table(EVENTS)?.range(from..)?.enumerate() {
        let (seq, bytes) = row?;
        let seq = seq.value();
        if scanned == SCAN || chunk.victims.len() == CHUNK {
            chunk.next = Some(seq);
            break;
        }
        let r = decode_event(bytes.value())?;
        if r.received_at_ms > newest_cut.saturating_add(SLACK_MS) {
            break;
        }
        if cuts
            .get(&r.tenant)
            .is_some_and(|&cut| r.received_at_ms < cut)
        {
            let app_id = app_ids.get(&r.app).copied().unwrap_or(0);
            chunk.victims.push(Victim {
                seq,
                dedupe_key: dedupe_key(app_id, &r.event_id),
                audit_key: r.audit_key,
            });
        }
    }
    Ok(chunk)
}

/// Removes `victims` in the caller's write transaction (`store::remove_events`). Every
/// event of one request shares its audit body, and all of them have the same tenant and
/// receive time, so they are all past the cut together. Returns how many were removed.
pub fn delete_chunk(txn: &WriteTransaction, victims: &[Victim]) -> Result<u64> {
    crate::store::remove_events(txn, victims, crate::store::BodyRule::Forget)
}

/// One whole pass on a database this process holds alone (no writer thread).
pub fn run_direct(store: &Store, default_days: u32, now_ms: u64) -> Result<u64> {
    let db = &*store.db()?;
    let cuts = cuts(db, default_days, now_ms)?;
    let mut from = 0;
    let mut removed = 0;
    loop {
        let chunk = find_chunk(db, &cuts, from)?;
        if !chunk.victims.is_empty() {
            let txn = crate::store::begin_write(db)?;
            removed += delete_chunk(&txn, &chunk.victims)?;
            txn.commit()?;
        }
        match chunk.next {
            Some(next) => from = next,
            None => return Ok(removed),
        }
    }
}

/// One whole pass while serving: scans in read transactions on the calling thread, deletes
/// through `writer` (between ingest batches). Blocking.
pub fn run_with_writer(
    store: &Store,
    writer: &crate::store::writer::Writer,
    default_days: u32,
    now_ms: u64,
) -> Result<u64> {
    let db = &*store.db()?;
    let cuts = cuts(db, default_days, now_ms)?;
    let mut from = 0;
    let mut removed = 0;
    loop {
        let chunk = find_chunk(db, &cuts, from)?;
        if !chunk.victims.is_empty() {
            let victims = chunk.victims;
            removed += writer.run_blocking(move |db| -> Result<u64> {
                let txn = crate::store::begin_write(db)?;
                let n = delete_chunk(&txn, &victims)?;
                txn.commit()?;
                Ok(n)
            })??;
        }
        match chunk.next {
            Some(next) => from = next,
            None => return Ok(removed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::{append, stored};
    use crate::identity::{Identity, catch_up};
    use crate::store::codec::EventRecord;

    #[test]
    fn retention_removes_index_entries_with_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Identity::open(&Store::open(dir.path()).unwrap());
        let records: Vec<EventRecord> = (1..=4u64)
            .map(|seq| {
                let mut r = stored(seq, &[]);
                r.install_uuid = Some(format!("i{seq}"));
                r.user_id = Some("u".into());
                r
            })
            .collect();
        append(&store, &records[..3]);
        catch_up(&store).unwrap();
        // The fourth is in the tail when retention removes it.
        append(&store, &records[3..]);
        assert_eq!(
            store
                .profile("default", "u", 10)
                .unwrap()
                .unwrap()
                .events
                .len(),
            4
        );
        let cuts = std::collections::HashMap::from([("default".to_owned(), 2u64)]);
        let chunk = find_chunk(&store.store().db().unwrap(), &cuts, 1).unwrap();
        assert_eq!(chunk.victims.len(), 4);
        let txn = store.store().db().unwrap().begin_write().unwrap();
        assert_eq!(delete_chunk(&txn, &chunk.victims).unwrap(), 4);
        txn.commit().unwrap();
        catch_up(&store).unwrap();
        // The links stay: the identifiers are still known to belong together (the removed
        // tail event was never indexed, so its own install uuid is gone with it).
        let p = store.profile("default", "u", 10).unwrap().unwrap();
        assert!(p.events.is_empty());
        assert_eq!(p.identifiers.len(), 4);
    }
}
