//! Whole-database consistency check: the invariants of ARCHITECTURE.md read back from disk.
//!
//! Used by the crash, power-loss and fault campaigns after every (simulated) crash, and usable
//! on any database: it only reads. It checks what the writer promises on every commit:
//!
//! - the log's seqs are 1, 2, 3, … with no gap, and every record decodes;
//! - every stored event has exactly one dedupe entry, pointing at its seq, and no dedupe entry
//!   points elsewhere (so an event id is stored at most once per app);
//! - every (tenant, month) usage counter equals the number of stored events of that tenant
//!   received in that month.
//!
//! Once retention has removed events (`meta` `retention_removed_through`), seqs up to that
//! mark may be missing and counters count removed events too, so only the seqs above the
//! mark are checked for gaps and the counter and dedupe-count checks are skipped.

use super::codec::{App, Tenant, decode_config, decode_event};
use super::tables::*;
use super::{Result, Store};
use crate::clock::month_key;
use redb::{ReadableTable, ReadableTableMetadata};
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
        let txn = self.db.begin_read()?;
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
        let dedupe = txn.open_table(DEDUPE)?;
        let mut counted: HashMap<u64, u64> = HashMap::new();
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
            match app_ids.get(&record.app) {
                Some(&app_id) => {
                    let points_to = dedupe
                        .get(dedupe_key(app_id, &record.event_id).as_slice())?
                        .map(|v| v.value());
                    if points_to != Some(seq) {
                        problems.push(format!(
                            "seq {seq} ({}/{}): dedupe entry points to {points_to:?}",
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
        if removed_through > 0 {
            return Ok(report);
        }
        let dedupe_len = dedupe.len()?;
        if dedupe_len != report.events.len() as u64 {
            problems.push(format!(
                "{} events but {dedupe_len} dedupe entries",
                report.events.len()
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::{DEFAULT_QUEUE_BYTES, Pending, Submission, Writer};

    #[tokio::test]
    async fn a_consistent_log_passes_and_a_tampered_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Writer::start_store(&store, DEFAULT_QUEUE_BYTES).unwrap();
        let record = |id: &str| crate::store::codec::EventRecord {
            received_at_ms: 1_764_000_000_000,
            tenant: "default".into(),
            app: "default".into(),
            key_id: 1,
            source: "reflect".into(),
            event_id: id.into(),
            event_name: "x".into(),
            event_ts_ms: 1,
            install_uuid: None,
            user_id: None,
            anonymous_id: None,
            ids: vec![],
            revenue: None,
            currency: None,
            transaction_id: None,
            product_id: None,
            props: "{}".into(),
            context: "{}".into(),
            audit_key: "a".into(),
        };
        let sub = Submission {
            app_id: 1,
            tenant_id: 1,
            key_id: 1,
            received_at_ms: 1_764_000_000_000,
            events: ["a", "b", "c"]
                .iter()
                .map(|id| Pending {
                    event_id: id.to_string(),
                    record: crate::store::codec::encode_event(&record(id)),
                    guard: None,
                    idents: Default::default(),
                })
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
}
