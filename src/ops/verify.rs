//! Whole-database consistency check: the invariants of ARCHITECTURE.md read back from disk.
//!
//! Used by the crash, power-loss and fault campaigns after every (simulated) crash, and usable
//! on any database: it only reads. It checks what the writer promises on every commit:
//!
//! - the log's seqs are 1, 2, 3, … with no gap, and every record decodes;
//! - no (app, event_id) is stored twice;
//! - the dedupe index finds every stored event (under its fingerprint in a run, in the rows
//!   not yet in a run, or under its full key after a fingerprint collision), exactly once, and none of its entries points at an event that is not there
//!   or has another fingerprint or id;
//! - every (tenant, month) usage counter equals the number of stored events of that tenant
//!   received in that month;
//! - the identity graph's runs decode and hold every event up to the graph's cursor, and
//!   nothing past it (`identity::check`);
//! - every stored audit body belongs to a stored event.
//!
//! Once retention has removed events (`meta` `retention_removed_through`), seqs up to that
//! mark may be missing and counters count removed events too, so only the seqs above the
//! mark are checked for gaps and the counter and dedupe-count checks are skipped.

use crate::clock::month_key;
use crate::identity::Identity;
use crate::store::codec::{App, Tenant, decode_config, decode_event};
use crate::store::dedupe::fingerprint;
use crate::store::tables::*;
use crate::store::{Result, Store};
use redb::{ReadableDatabase, ReadableTable};
use std::collections::HashMap;

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Stored events: (seq, app, event_id), in log order.
    pub events: Vec<(u64, String, String)>,
    /// Broken invariants, one line each; empty when the database is consistent.
    pub problems: Vec<String>,
}

impl Store {
    /// Reads the whole database in one read transaction and checks its invariants.
    pub fn verify(&self) -> Result<Report> {
        verify(self, None)
    }
}

/// [`Store::verify`] of `identity`'s store, checking its identity graph against the log too.
pub fn with_graph(identity: &Identity) -> Result<Report> {
    verify(identity.store(), Some(identity))
}

fn verify(store: &Store, identity: Option<&Identity>) -> Result<Report> {
    // The graph's snapshot before the log's (as profile reads take them): the log then
    // holds every event up to the graph's cursor.
    let graph = match identity {
        Some(i) => Some(i.graph_db()?.begin_read()?),
        None => None,
    };
    let txn = store.db()?.begin_read()?;
    let mut report = Report::default();
    let problems = &mut report.problems;

    let mut tenant_ids = HashMap::new();
    for row in txn.open_table(TENANTS)?.iter()? {
        let (id, bytes) = row?;
        let t: Tenant = decode_config("tenant", bytes.value())?;
        tenant_ids.insert(t.name, id.value());
    }
    let mut app_ids = HashMap::new();
    for row in txn.open_table(APPS)?.iter()? {
        let (id, bytes) = row?;
        let a: App = decode_config("app", bytes.value())?;
        app_ids.insert(a.name, id.value());
    }

    let removed_through = txn
        .open_table(META)?
        .get("retention_removed_through")?
        .and_then(|b| b.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    // The dedupe index, read whole (campaign databases are small): seq → how it is indexed.
    let entries = crate::store::dedupe::entries(&txn)?;
    let mut by_fp: HashMap<u64, u128> = HashMap::new();
    let mut by_journal: HashMap<u64, u128> = HashMap::new();
    for (to, list) in [
        (&mut by_fp, &entries.runs),
        (&mut by_journal, &entries.unmerged),
    ] {
        for &(seq, fp) in list {
            if to.insert(seq, fp).is_some() {
                problems.push(format!("seq {seq}: indexed twice by fingerprint"));
            }
        }
    }
    if let Some(seq) = by_fp.keys().find(|s| by_journal.contains_key(s)) {
        problems.push(format!("seq {seq}: both in a run and not yet in one"));
    }
    let mut by_full: HashMap<u64, Vec<u8>> = HashMap::new();
    for row in txn.open_table(DEDUPE)?.iter()? {
        let (key, seq) = row?;
        by_full.insert(seq.value(), key.value().to_vec());
    }
    let mut seen_ids: HashMap<(u32, String), u64> = HashMap::new();
    let mut counted: HashMap<u64, u64> = HashMap::new();
    let mut expand = crate::store::enrichments::Expand::new(&txn)?;
    let mut expected_seq = 1;
    for row in txn.open_table(EVENTS)?.iter()? {
        let (seq, bytes) = row?;
        let seq = seq.value();
        if seq != expected_seq && seq > removed_through + 1 {
            problems.push(format!("seq gap: expected {expected_seq}, found {seq}"));
        }
        expected_seq = seq + 1;
        let record = match decode_event(bytes.value()) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("seq {seq}: {e}"));
                continue;
            }
        };
        if !record.interned.is_none()
            && let Err(e) = expand.record(&mut record.clone())
        {
            problems.push(format!("seq {seq}: {e}"));
        }
        match app_ids.get(&record.app) {
            Some(&app_id) => {
                if let Some(first) = seen_ids.insert((app_id, record.event_id.clone()), seq) {
                    problems.push(format!(
                        "seq {seq} ({}/{}): stored twice, first as seq {first}",
                        record.app, record.event_id
                    ));
                }
                let fp = fingerprint(app_id, &record.event_id);
                let full = dedupe_key(app_id, &record.event_id);
                let entries = [
                    by_fp.get(&seq).map(|f| *f == fp),
                    by_journal.get(&seq).map(|f| *f == fp),
                    by_full.get(&seq).map(|k| *k == full),
                ];
                if entries.contains(&Some(false)) {
                    problems.push(format!(
                        "seq {seq} ({}/{}): a dedupe entry for it has another fingerprint or id",
                        record.app, record.event_id
                    ));
                }
                if entries.iter().all(Option::is_none) {
                    problems.push(format!(
                        "seq {seq} ({}/{}): no dedupe entry finds it",
                        record.app, record.event_id
                    ));
                }
            }
            None => problems.push(format!("seq {seq}: unknown app {}", record.app)),
        }
        match tenant_ids.get(&record.tenant) {
            Some(&tenant_id) => {
                let k = usage_key(tenant_id, month_key(record.received_at_ms));
                *counted.entry(k).or_default() += 1;
            }
            None => problems.push(format!("seq {seq}: unknown tenant {}", record.tenant)),
        }
        report.events.push((seq, record.app, record.event_id));
    }
    if let Some(graph) = &graph {
        let log = txn.open_table(EVENTS)?;
        let mut rows = log
            .iter()?
            .map(|row| -> Result<(u64, Option<u32>, Vec<u8>)> {
                let (seq, bytes) = row?;
                let app = crate::store::codec::identity_view(bytes.value())
                    .ok()
                    .and_then(|v| app_ids.get(v.app).copied());
                Ok((seq.value(), app, bytes.value().to_vec()))
            });
        crate::identity::check(graph, &mut rows, problems)?;
    }
    if removed_through > 0 {
        return Ok(report);
    }
    let stored: std::collections::HashSet<u64> =
        report.events.iter().map(|(seq, _, _)| *seq).collect();
    let mut dangling: Vec<u64> = by_fp
        .keys()
        .chain(by_journal.keys())
        .chain(by_full.keys())
        .filter(|seq| !stored.contains(seq))
        .copied()
        .collect();
    for row in txn.open_table(AUDIT_BODIES)?.iter()? {
        let seq = row?.0.value();
        if !stored.contains(&seq) {
            problems.push(format!(
                "an audit body is stored under seq {seq}, which is not stored"
            ));
        }
    }
    dangling.sort_unstable();
    dangling.dedup();
    if !dangling.is_empty() {
        problems.push(format!(
            "{} events but dedupe entries point to {} missing seqs (first {})",
            report.events.len(),
            dangling.len(),
            dangling[0]
        ));
    }

    let mut stored_usage = HashMap::new();
    for row in txn.open_table(USAGE)?.iter()? {
        let (k, v) = row?;
        stored_usage.insert(k.value(), v.value());
    }
    for (k, n) in &counted {
        let stored = stored_usage.get(k).copied().unwrap_or(0);
        if stored != *n {
            problems.push(format!(
                "usage of tenant {} month {}: counter {stored}, stored events {n}",
                k >> 32,
                k & 0xffff_ffff
            ));
        }
    }
    for (k, stored) in &stored_usage {
        if *stored != 0 && !counted.contains_key(k) {
            problems.push(format!(
                "usage of tenant {} month {}: counter {stored}, stored events 0",
                k >> 32,
                k & 0xffff_ffff
            ));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::{DEFAULT_QUEUE_BYTES, Pending, Submission, Writer};

    #[tokio::test]
    async fn a_consistent_log_passes_and_a_tampered_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Writer::start(&store, DEFAULT_QUEUE_BYTES, vec![]).unwrap();
        let record = |id: &str| crate::store::codec::EventRecord {
            received_at_ms: 1_764_000_000_000,
            ..crate::store::codec::EventRecord::for_test(id)
        };
        let sub = Submission {
            app_id: 1,
            tenant_id: 1,
            key_id: 1,
            received_at_ms: 1_764_000_000_000,
            events: ["a", "b", "c"]
                .iter()
                .map(|id| Pending::for_test(id, crate::store::codec::encode_event(&record(id))))
                .collect(),
            audit: None,
        };
        w.submit(sub, 10).await.unwrap();
        let report = store.verify().unwrap();
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!(report.events.len(), 3);

        // Each kind of damage is reported.
        w.run(|db| {
            let txn = db.begin_write().unwrap();
            txn.open_table(EVENTS).unwrap().remove(2).unwrap();
            txn.open_table(USAGE)
                .unwrap()
                .insert(usage_key(1, month_key(1_764_000_000_000)), 7)
                .unwrap();
            txn.commit().unwrap();
        })
        .await
        .unwrap();
        let problems = store.verify().unwrap().problems.join("\n");
        assert!(problems.contains("seq gap"), "{problems}");
        assert!(problems.contains("dedupe entries"), "{problems}");
        assert!(
            problems.contains("counter 7, stored events 2"),
            "{problems}"
        );
    }

    /// Graph damage is reported: an indexed event missing from the runs, and an audit body
    /// whose event is gone.
    #[test]
    fn a_damaged_identity_graph_or_audit_table_fails() {
        use crate::store::codec::{EventRecord, encode_event};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let identity = Identity::open(&store);
        let db = store.db().unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(EVENTS).unwrap();
            let mut full = txn.open_table(DEDUPE).unwrap();
            for (seq, id) in [(1u64, "a"), (2, "b")] {
                let r = EventRecord {
                    user_id: Some(format!("u-{id}")),
                    // An enriched event whose answer is kept in the dictionary.
                    interned: crate::store::codec::Interned {
                        geo: 0,
                        device: (seq - 1) as u32,
                    },
                    ..EventRecord::for_test(id)
                };
                log.insert(seq, encode_event(&r).as_slice()).unwrap();
                full.insert(dedupe_key(1, id).as_slice(), seq).unwrap();
            }
            txn.open_table(USAGE)
                .unwrap()
                .insert(usage_key(1, month_key(1)), 2)
                .unwrap();
            txn.open_table(crate::store::tables::ENRICHMENTS)
                .unwrap()
                .insert(1, "\"device\":{}")
                .unwrap();
        }
        txn.commit().unwrap();
        crate::identity::catch_up(&identity).unwrap();
        assert_eq!(
            with_graph(&identity).unwrap().problems,
            Vec::<String>::new()
        );

        let g = identity.graph_db().unwrap().begin_write().unwrap();
        crate::store::runs::clear(&g, &mut g.open_table(META).unwrap(), "identity").unwrap();
        g.commit().unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(AUDIT_BODIES)
            .unwrap()
            .insert(9, &b"\0\0{}"[..])
            .unwrap();
        txn.open_table(crate::store::tables::ENRICHMENTS)
            .unwrap()
            .remove(1)
            .unwrap();
        txn.commit().unwrap();
        let problems = with_graph(&identity).unwrap().problems.join("\n");
        assert!(
            problems.contains("seq 2: damaged data: enrichment 1 is not in the store"),
            "{problems}"
        );
        assert!(
            problems.contains("seq 2: indexed (cursor 2) but not in the identity graph"),
            "{problems}"
        );
        assert!(
            problems.contains("audit body is stored under seq 9"),
            "{problems}"
        );
    }
}
