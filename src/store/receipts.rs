//! Receipts: what became of an (app, event_id) besides being stored. An accepted event is
//! found in the log (through the dedupe index); duplicate answers, rejections and drops (a
//! drop rule matched it) leave a tally here, written by the writer thread in its next commit (duplicates from the commit
//! itself), bounded per app by count, the oldest receipt dropped first.

use super::codec::{decode_config, encode_config};
use super::tables::{APPS, EVENTS, RECEIPT_APPS, RECEIPT_ORDER, RECEIPTS};
use super::{Result, Store};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

/// Receipts kept per app; past it the oldest is dropped.
pub const RECEIPTS_PER_APP: u64 = 100_000;

/// Something to tally for an event of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub app_id: u32,
    pub event_id: String,
    pub at_ms: u64,
    pub what: Noted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noted {
    /// Answered as a duplicate of the stored event `seq`.
    Duplicate(u64),
    /// Refused for the reason with this tag.
    Rejected(String),
    /// Answered `dropped` by the app's drop rule with this id (`crate::rules`).
    Dropped(u32),
}

impl Note {
    /// An event of app `app_id` a drop rule (`rule`) answered `dropped` at `at_ms`.
    pub fn dropped(app_id: u32, event_id: &str, at_ms: u64, rule: u32) -> Note {
        Note {
            app_id,
            event_id: event_id.to_owned(),
            at_ms,
            what: Noted::Dropped(rule),
        }
    }
}

/// The tallies of one (app, event_id) (JSON record, versioned).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tallies {
    /// Its place in the app's order of receipts (the oldest is dropped first).
    #[serde(default)]
    ord: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<Duplicates>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejections>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<Drops>,
}

/// Duplicate answers of an event: of which stored seq, how many, the last one's time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Duplicates {
    pub of_seq: u64,
    pub times: u64,
    pub last_ms: u64,
}

/// Rejections of an event for one reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejections {
    pub reason: String,
    pub times: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// Drops of an event by one drop rule of its app: answered `dropped`, not stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drops {
    /// The rule's id within the app (`inlet apps drop-rules list`).
    pub rule: u32,
    pub times: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// The stored event an id names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptedAs {
    pub seq: u64,
    pub received_at_ms: u64,
    pub key_id: u32,
    pub source: String,
    pub audit_key: String,
}

/// All inlet knows of an (app, event_id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub app: String,
    pub event_id: String,
    pub accepted: Option<AcceptedAs>,
    pub duplicate: Option<Duplicates>,
    pub rejected: Vec<Rejections>,
    /// Answered `dropped` by a drop rule, per rule.
    #[serde(default)]
    pub dropped: Vec<Drops>,
    /// Held in the quarantine, to be replayed (`store::quarantine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<Quarantined>,
}

/// A held event's reason, source and receive time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    pub reason: String,
    pub source: String,
    pub received_at_ms: u64,
}

impl Receipt {
    /// One JSON document: `{"app", "event_id", "status", "accepted", "duplicate",
    /// "rejected": [...], "dropped": [...], "quarantined"?}` (`inlet receipt --json`, the
    /// admin API).
    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = serde_json::to_value(self).expect("a receipt serializes");
        doc["status"] = self.status().into();
        doc
    }

    /// One word for it: `accepted`, `quarantined`, `rejected` or `dropped` (whichever
    /// happened last, when both did), `duplicate` (only duplicate answers are known: the
    /// original is gone) or `unknown`.
    pub fn status(&self) -> &'static str {
        let last = |times: &mut dyn Iterator<Item = u64>| times.max();
        let rejected = last(&mut self.rejected.iter().map(|r| r.last_ms));
        let dropped = last(&mut self.dropped.iter().map(|d| d.last_ms));
        match (&self.accepted, rejected, dropped) {
            (Some(_), _, _) => "accepted",
            (None, _, _) if self.quarantined.is_some() => "quarantined",
            (None, Some(r), Some(d)) if d > r => "dropped",
            (None, Some(_), _) => "rejected",
            (None, None, Some(_)) => "dropped",
            (None, None, None) if self.duplicate.is_some() => "duplicate",
            (None, None, None) => "unknown",
        }
    }
}

fn receipt_key(app_id: u32, event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + event_id.len());
    k.extend_from_slice(&app_id.to_be_bytes());
    k.extend_from_slice(event_id.as_bytes());
    k
}

fn order_key(app_id: u32, ord: u64) -> [u8; 12] {
    let mut k = [0; 12];
    k[..4].copy_from_slice(&app_id.to_be_bytes());
    k[4..].copy_from_slice(&ord.to_be_bytes());
    k
}

/// Adds `notes` to their events' tallies inside the writer's transaction, keeping at most
/// `per_app` receipts per app (the oldest dropped).
pub fn record(txn: &WriteTransaction, notes: &[Note], per_app: u64) -> Result<()> {
    if notes.is_empty() {
        return Ok(());
    }
    let mut receipts = txn.open_table(RECEIPTS)?;
    let mut order = txn.open_table(RECEIPT_ORDER)?;
    let mut apps = txn.open_table(RECEIPT_APPS)?;
    for note in notes {
        let key = receipt_key(note.app_id, &note.event_id);
        let old = receipts.get(key.as_slice())?.map(|v| v.value().to_vec());
        let mut t = match old {
            Some(bytes) => decode_config::<Tallies>("receipt", &bytes)?,
            None => {
                // next ord ++ count of the app's receipts
                let (next, count) = apps.get(note.app_id)?.map_or((0, 0), |v| {
                    let b = v.value();
                    let n = |r: std::ops::Range<usize>| {
                        b.get(r)
                            .and_then(|s| s.try_into().ok())
                            .map_or(0, u64::from_be_bytes)
                    };
                    (n(0..8), n(8..16))
                });
                let mut count = count + 1;
                order.insert(
                    order_key(note.app_id, next).as_slice(),
                    note.event_id.as_bytes(),
                )?;
                while count > per_app.max(1) {
                    let lo = order_key(note.app_id, 0);
                    let hi = order_key(note.app_id, u64::MAX);
                    let Some((k, id)) = order
                        .range(lo.as_slice()..=hi.as_slice())?
                        .next()
                        .transpose()?
                        .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                    else {
                        break;
                    };
                    order.remove(k.as_slice())?;
                    let mut gone = note.app_id.to_be_bytes().to_vec();
                    gone.extend_from_slice(&id);
                    receipts.remove(gone.as_slice())?;
                    count -= 1;
                }
                let mut v = [0; 16];
                v[..8].copy_from_slice(&(next + 1).to_be_bytes());
                v[8..].copy_from_slice(&count.to_be_bytes());
                apps.insert(note.app_id, v.as_slice())?;
                Tallies {
                    ord: next,
                    ..Tallies::default()
                }
            }
        };
        match &note.what {
            Noted::Duplicate(seq) => {
                let d = t.duplicate.get_or_insert(Duplicates {
                    of_seq: *seq,
                    times: 0,
                    last_ms: 0,
                });
                d.of_seq = *seq;
                d.times += 1;
                d.last_ms = d.last_ms.max(note.at_ms);
            }
            Noted::Dropped(rule) => match t.dropped.iter_mut().find(|d| d.rule == *rule) {
                Some(d) => {
                    d.times += 1;
                    d.last_ms = d.last_ms.max(note.at_ms);
                }
                None => t.dropped.push(Drops {
                    rule: *rule,
                    times: 1,
                    first_ms: note.at_ms,
                    last_ms: note.at_ms,
                }),
            },
            Noted::Rejected(reason) => match t.rejected.iter_mut().find(|r| &r.reason == reason) {
                Some(r) => {
                    r.times += 1;
                    r.last_ms = r.last_ms.max(note.at_ms);
                }
                None => t.rejected.push(Rejections {
                    reason: reason.clone(),
                    times: 1,
                    first_ms: note.at_ms,
                    last_ms: note.at_ms,
                }),
            },
        }
        receipts.insert(key.as_slice(), encode_config(&t).as_slice())?;
    }
    Ok(())
}

/// Forgets the receipt of the event whose [`receipt_key`] (the same bytes as its dedupe key)
/// is `key`: its tallies and its place in the app's order. For an erasure.
pub fn forget(txn: &WriteTransaction, key: &[u8]) -> Result<()> {
    let Some(app_id) = key
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return Ok(());
    };
    let mut receipts = txn.open_table(RECEIPTS)?;
    let Some(bytes) = receipts.remove(key)?.map(|v| v.value().to_vec()) else {
        return Ok(());
    };
    let t = decode_config::<Tallies>("receipt", &bytes)?;
    txn.open_table(RECEIPT_ORDER)?
        .remove(order_key(app_id, t.ord).as_slice())?;
    let mut apps = txn.open_table(RECEIPT_APPS)?;
    let counts = apps.get(app_id)?.map(|v| v.value().to_vec());
    if let Some(mut v) = counts.filter(|v| v.len() == 16) {
        let count = u64::from_be_bytes(v[8..].try_into().expect("8 bytes"));
        v[8..].copy_from_slice(&count.saturating_sub(1).to_be_bytes());
        apps.insert(app_id, v.as_slice())?;
    }
    Ok(())
}

impl Store {
    /// The receipt of `event_id` of app `app` (`None`: no such app).
    pub fn receipt(&self, app: &str, event_id: &str) -> Result<Option<Receipt>> {
        let txn = self.db()?.begin_read()?;
        let Some((app_id, _)) = super::find_app(&txn.open_table(APPS)?, app)? else {
            return Ok(None);
        };
        let accepted = match super::dedupe::lookup_committed(&txn, app_id, event_id)? {
            Some(seq) => match txn.open_table(EVENTS)?.get(seq)? {
                Some(bytes) => {
                    let r = super::codec::decode_event(bytes.value())?;
                    Some(AcceptedAs {
                        seq,
                        received_at_ms: r.received_at_ms,
                        key_id: r.key_id,
                        source: r.source,
                        audit_key: r.audit_key,
                    })
                }
                None => None,
            },
            None => None,
        };
        let tallies = match txn.open_table(RECEIPTS) {
            Ok(t) => match t.get(receipt_key(app_id, event_id).as_slice())? {
                Some(v) => decode_config::<Tallies>("receipt", v.value())?,
                None => Tallies::default(),
            },
            Err(redb::TableError::TableDoesNotExist(_)) => Tallies::default(),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(Receipt {
            app: app.to_owned(),
            event_id: event_id.to_owned(),
            accepted,
            duplicate: tallies.duplicate,
            rejected: tallies.rejected,
            dropped: tallies.dropped,
            quarantined: super::quarantine::held_in(&txn, app_id, event_id)?.map(|h| Quarantined {
                reason: h.reason,
                source: h.source,
                received_at_ms: h.received_at_ms,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(id: &str, what: Noted, at_ms: u64) -> Note {
        Note {
            app_id: 1,
            event_id: id.to_owned(),
            at_ms,
            what,
        }
    }

    #[test]
    fn tallies_add_up_and_the_oldest_receipt_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let write = |notes: &[Note], per_app| {
            let txn = db.begin_write().unwrap();
            record(&txn, notes, per_app).unwrap();
            txn.commit().unwrap();
        };
        let cap = || Noted::Rejected("cap_exceeded".into());
        write(&[note("a", cap(), 10), note("a", cap(), 20)], 2);
        write(
            &[note("a", Noted::Duplicate(7), 30), note("b", cap(), 5)],
            2,
        );
        let a = store.receipt("default", "a").unwrap().unwrap();
        assert_eq!(
            a.rejected,
            [Rejections {
                reason: "cap_exceeded".into(),
                times: 2,
                first_ms: 10,
                last_ms: 20
            }]
        );
        assert_eq!(
            a.duplicate,
            Some(Duplicates {
                of_seq: 7,
                times: 1,
                last_ms: 30
            })
        );
        assert_eq!((a.status(), a.accepted), ("rejected", None));
        // A third event drops "a", the oldest.
        write(&[note("c", cap(), 40)], 2);
        let gone = store.receipt("default", "a").unwrap().unwrap();
        assert_eq!((gone.status(), gone.duplicate), ("unknown", None));
        assert_eq!(
            store
                .receipt("default", "b")
                .unwrap()
                .unwrap()
                .rejected
                .len(),
            1
        );
        assert_eq!(
            store
                .receipt("default", "c")
                .unwrap()
                .unwrap()
                .rejected
                .len(),
            1
        );
        assert_eq!(store.receipt("nope", "a").unwrap(), None);
    }

    #[test]
    fn drops_are_tallied_per_rule_and_the_newest_outcome_names_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let write = |notes: &[Note]| {
            let txn = db.begin_write().unwrap();
            record(&txn, notes, 10).unwrap();
            txn.commit().unwrap();
        };
        write(&[note("a", Noted::Rejected("cap_exceeded".into()), 20)]);
        write(&[
            Note::dropped(1, "a", 25, 3),
            Note::dropped(1, "a", 35, 3),
            Note::dropped(1, "d", 36, 4),
        ]);
        let a = store.receipt("default", "a").unwrap().unwrap();
        assert_eq!(
            a.dropped,
            [Drops {
                rule: 3,
                times: 2,
                first_ms: 25,
                last_ms: 35
            }]
        );
        assert_eq!(a.status(), "dropped");
        assert_eq!(a.to_json()["dropped"][0]["rule"], 3);
        write(&[note("a", Noted::Rejected("cap_exceeded".into()), 50)]);
        let a = store.receipt("default", "a").unwrap().unwrap();
        assert_eq!(a.status(), "rejected");
        let d = store.receipt("default", "d").unwrap().unwrap();
        assert_eq!((d.status(), d.dropped[0].times), ("dropped", 1));
        let unknown = store.receipt("default", "zz").unwrap().unwrap();
        assert_eq!(unknown.status(), "unknown");
    }
}
