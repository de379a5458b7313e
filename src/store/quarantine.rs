//! Quarantine: events refused for a reason an operator can fix on inlet's side (not on the
//! key's allowed events, over quota, an unknown Adjust event token), kept with their raw
//! item so that they can be replayed after the fix ([docs/quarantine.md]). Written by the
//! writer thread (between commits, never on a request's path), bounded per app by count and
//! bytes, the oldest dropped first and counted.
//!
//! Tables: [`QUARANTINE`] (app ++ qid → record), [`QUARANTINE_IDS`] (app ++ event id → qid:
//! an id is held once, a later refusal replaces the older), [`QUARANTINE_APPS`] (app → next
//! qid, held, bytes, dropped).

use super::codec::{Key, decode_config};
use super::tables::{APPS, KEYS, QUARANTINE, QUARANTINE_APPS, QUARANTINE_IDS, TENANTS};
use super::{Error, Result, Store};
use crate::store::read::KeyInfo;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The version byte of a [`Held`] record.
pub const HELD_V1: u8 = 1;

/// One quarantined event: why, where from and its raw item (credentials taken out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The refusal's reason tag (`event_not_allowed_by_key`, `cap_exceeded`, ...).
    pub reason: String,
    /// The dialect's source (`reflect`, `adjust`, ...): how `raw` decodes.
    pub source: String,
    /// The key it arrived with (0: an app's keyless principal).
    pub key_id: u32,
    pub received_at_ms: u64,
    pub event_id: String,
    /// The event's name (Adjust: the event token when it maps to none).
    pub event_name: String,
    /// The item as the dialect decodes one event: a batch's own item, not the whole request.
    pub raw: Vec<u8>,
}

impl Held {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![HELD_V1];
        out.extend(postcard::to_stdvec(self).expect("a held record serializes"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Held> {
        match bytes.split_first() {
            Some((&HELD_V1, rest)) => postcard::from_bytes(rest)
                .map_err(|e| Error::Corrupt(format!("quarantined event: {e}"))),
            _ => Err(Error::Corrupt("quarantined event: unknown version".into())),
        }
    }

    /// What it costs against the app's byte bound.
    fn size(&self) -> u64 {
        (self.raw.len() + self.event_id.len() + self.event_name.len() + 64) as u64
    }
}

/// An event to keep, of an app.
#[derive(Debug, Clone)]
pub struct Keep {
    pub app_id: u32,
    pub held: Held,
}

/// Per-app bounds of the quarantine (`[quarantine]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_events: u64,
    pub max_bytes: u64,
}

/// What an app holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    #[serde(skip)]
    next: u64,
    pub held: u64,
    pub bytes: u64,
    /// Dropped to keep within the bounds, ever.
    pub dropped: u64,
}

impl Summary {
    fn decode(b: &[u8]) -> Summary {
        let n = |i: usize| {
            b.get(i * 8..i * 8 + 8)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u64::from_be_bytes)
        };
        Summary {
            next: n(0),
            held: n(1),
            bytes: n(2),
            dropped: n(3),
        }
    }

    fn encode(&self) -> [u8; 32] {
        let mut v = [0; 32];
        for (i, n) in [self.next, self.held, self.bytes, self.dropped]
            .into_iter()
            .enumerate()
        {
            v[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
        }
        v
    }
}

fn held_key(app_id: u32, qid: u64) -> [u8; 12] {
    let mut k = [0; 12];
    k[..4].copy_from_slice(&app_id.to_be_bytes());
    k[4..].copy_from_slice(&qid.to_be_bytes());
    k
}

fn id_key(app_id: u32, event_id: &str) -> Vec<u8> {
    let mut k = app_id.to_be_bytes().to_vec();
    k.extend_from_slice(event_id.as_bytes());
    k
}

/// Creates the quarantine's tables (at open).
pub fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(QUARANTINE)?;
    txn.open_table(QUARANTINE_IDS)?;
    txn.open_table(QUARANTINE_APPS)?;
    Ok(())
}

/// Keeps `items` inside the writer's transaction: an id already held is replaced; past the
/// app's bounds the oldest are dropped (counted in its summary).
pub fn record(txn: &WriteTransaction, items: &[Keep], bounds: Bounds) -> Result<()> {
    let mut table = txn.open_table(QUARANTINE)?;
    let mut ids = txn.open_table(QUARANTINE_IDS)?;
    let mut apps = txn.open_table(QUARANTINE_APPS)?;
    for Keep { app_id, held } in items {
        let app_id = *app_id;
        let mut s = apps
            .get(app_id)?
            .map_or_else(Summary::default, |v| Summary::decode(v.value()));
        let idk = id_key(app_id, &held.event_id);
        let old = ids.get(idk.as_slice())?.map(|v| v.value());
        if let Some(qid) = old
            && let Some(v) = table.remove(held_key(app_id, qid).as_slice())?
        {
            let gone = Held::decode(v.value())?;
            s.held = s.held.saturating_sub(1);
            s.bytes = s.bytes.saturating_sub(gone.size());
        }
        let qid = s.next;
        s.next += 1;
        s.held += 1;
        s.bytes += held.size();
        table.insert(held_key(app_id, qid).as_slice(), held.encode().as_slice())?;
        ids.insert(idk.as_slice(), qid)?;
        while s.held > bounds.max_events.max(1) || (s.bytes > bounds.max_bytes && s.held > 1) {
            let lo = held_key(app_id, 0);
            let hi = held_key(app_id, u64::MAX);
            let Some((k, v)) = table
                .range(lo.as_slice()..=hi.as_slice())?
                .next()
                .transpose()?
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            else {
                break;
            };
            let gone = Held::decode(&v)?;
            table.remove(k.as_slice())?;
            ids.remove(id_key(app_id, &gone.event_id).as_slice())?;
            s.held -= 1;
            s.bytes = s.bytes.saturating_sub(gone.size());
            s.dropped += 1;
        }
        apps.insert(app_id, s.encode().as_slice())?;
    }
    Ok(())
}

/// Takes the events `qids` of an app out of the quarantine (replayed or discarded); returns
/// how many were held.
pub fn remove(txn: &WriteTransaction, app_id: u32, qids: &[u64]) -> Result<u64> {
    let mut table = txn.open_table(QUARANTINE)?;
    let mut ids = txn.open_table(QUARANTINE_IDS)?;
    let mut apps = txn.open_table(QUARANTINE_APPS)?;
    let mut s = apps
        .get(app_id)?
        .map_or_else(Summary::default, |v| Summary::decode(v.value()));
    let mut n = 0;
    for &qid in qids {
        let Some(v) = table.remove(held_key(app_id, qid).as_slice())? else {
            continue;
        };
        let gone = Held::decode(v.value())?;
        let idk = id_key(app_id, &gone.event_id);
        if ids.get(idk.as_slice())?.map(|v| v.value()) == Some(qid) {
            ids.remove(idk.as_slice())?;
        }
        s.held = s.held.saturating_sub(1);
        s.bytes = s.bytes.saturating_sub(gone.size());
        n += 1;
    }
    apps.insert(app_id, s.encode().as_slice())?;
    Ok(n)
}

/// Sets the reason of the held event `qid` (a replay refused it again, for another reason).
pub fn set_reason(txn: &WriteTransaction, app_id: u32, qid: u64, reason: &str) -> Result<()> {
    let mut table = txn.open_table(QUARANTINE)?;
    let old = table
        .get(held_key(app_id, qid).as_slice())?
        .map(|v| v.value().to_vec());
    if let Some(bytes) = old {
        let mut held = Held::decode(&bytes)?;
        if held.reason != reason {
            held.reason = reason.to_owned();
            table.insert(held_key(app_id, qid).as_slice(), held.encode().as_slice())?;
        }
    }
    Ok(())
}

/// A held event with its place in the app's quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub qid: u64,
    pub held: Held,
}

/// Which held events of an app: all, those of one reason, and/or those of some event ids.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub reason: Option<String>,
    /// Empty: any id.
    pub ids: Vec<String>,
}

impl Selection {
    fn takes(&self, h: &Held) -> bool {
        self.reason.as_ref().is_none_or(|r| r == &h.reason)
            && (self.ids.is_empty() || self.ids.iter().any(|i| i == &h.event_id))
    }
}

/// The key a held event arrived with, as it is now.
pub enum KeyNow {
    Valid(KeyInfo),
    /// Revoked (or removed) since.
    Revoked,
}

impl Store {
    /// The app id of `app` (`NotFound` for an unknown app).
    pub fn quarantine_app(&self, app: &str) -> Result<u32> {
        let txn = self.db()?.begin_read()?;
        super::find_app(&txn.open_table(APPS)?, app)?
            .map(|(id, _)| id)
            .ok_or_else(|| Error::NotFound(format!("no app {app:?}")))
    }

    /// The held events of app `app_id` that `sel` takes, oldest first, at most `limit`.
    pub fn quarantined(&self, app_id: u32, sel: &Selection, limit: usize) -> Result<Vec<Entry>> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(QUARANTINE)?;
        let lo = held_key(app_id, 0);
        let hi = held_key(app_id, u64::MAX);
        let mut out = Vec::new();
        for row in table.range(lo.as_slice()..=hi.as_slice())? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row?;
            let held = Held::decode(v.value())?;
            if sel.takes(&held) {
                let qid = u64::from_be_bytes(k.value()[4..12].try_into().expect("12-byte key"));
                out.push(Entry { qid, held });
            }
        }
        Ok(out)
    }

    /// Held events of an app per reason, and its summary.
    pub fn quarantine_reasons(&self, app_id: u32) -> Result<(Vec<(String, u64)>, Summary)> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(QUARANTINE)?;
        let lo = held_key(app_id, 0);
        let hi = held_key(app_id, u64::MAX);
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for row in table.range(lo.as_slice()..=hi.as_slice())? {
            let (_, v) = row?;
            *counts.entry(Held::decode(v.value())?.reason).or_default() += 1;
        }
        let summary = txn
            .open_table(QUARANTINE_APPS)?
            .get(app_id)?
            .map_or_else(Summary::default, |v| Summary::decode(v.value()));
        Ok((counts.into_iter().collect(), summary))
    }

    /// Every app's summary (for `/metrics`), by app id.
    pub fn quarantine_summaries(&self) -> Result<Vec<(u32, Summary)>> {
        let txn = self.db()?.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(QUARANTINE_APPS)?.iter()? {
            let (k, v) = row?;
            out.push((k.value(), Summary::decode(v.value())));
        }
        Ok(out)
    }

    /// Whether `event_id` of app `app_id` is held, and why (for its receipt).
    pub fn quarantined_reason(&self, app_id: u32, event_id: &str) -> Result<Option<Held>> {
        held_in(&self.db()?.begin_read()?, app_id, event_id)
    }

    /// The key `key_id` of app `app_id` as it is now (0: the app's keyless principal).
    pub fn key_now(&self, app_id: u32, key_id: u32) -> Result<KeyNow> {
        if key_id == 0 {
            return Ok(self.keyless(app_id)?.map_or(KeyNow::Revoked, KeyNow::Valid));
        }
        let txn = self.db()?.begin_read()?;
        let Some(bytes) = txn.open_table(KEYS)?.get(key_id)? else {
            return Ok(KeyNow::Revoked);
        };
        let key: Key = decode_config("key", bytes.value())?;
        if key.revoked_ms.is_some() || key.app_id != app_id {
            return Ok(KeyNow::Revoked);
        }
        let Some(a) = txn.open_table(APPS)?.get(app_id)? else {
            return Ok(KeyNow::Revoked);
        };
        let app: super::codec::App = decode_config("app", a.value())?;
        let Some(t) = txn.open_table(TENANTS)?.get(app.tenant_id)? else {
            return Ok(KeyNow::Revoked);
        };
        let tenant: super::codec::Tenant = decode_config("tenant", t.value())?;
        Ok(KeyNow::Valid(KeyInfo {
            key_id,
            app_id,
            app: app.name,
            tenant_id: app.tenant_id,
            tenant: tenant.name,
            allowed_events: key.allowed_events,
            rate_limit: key.rate_limit,
        }))
    }
}

/// The held event of `event_id` of app `app_id`, in a read transaction (for receipts).
pub fn held_in(txn: &redb::ReadTransaction, app_id: u32, event_id: &str) -> Result<Option<Held>> {
    let ids = match txn.open_table(QUARANTINE_IDS) {
        Ok(t) => t,
        // A file no server of this build has opened yet.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(qid) = ids
        .get(id_key(app_id, event_id).as_slice())?
        .map(|v| v.value())
    else {
        return Ok(None);
    };
    txn.open_table(QUARANTINE)?
        .get(held_key(app_id, qid).as_slice())?
        .map(|v| Held::decode(v.value()))
        .transpose()
}

/// Events waiting to be kept: handed over by request threads, written by one writer job at
/// a time (queued when the first arrives), never waited for. Past [`Keeper::MAX_WAITING`]
/// bytes waiting, more are dropped and counted.
#[derive(Clone, Default)]
pub struct Keeper(Arc<Waiting>);

#[derive(Default)]
pub struct Waiting {
    items: Mutex<(Vec<Keep>, usize)>,
    queued: AtomicBool,
    /// Dropped before the writer saw them (too much waiting, the writer's queue full).
    pub dropped: std::sync::atomic::AtomicU64,
}

impl Keeper {
    /// Bytes of raw items waiting for the writer, at most.
    pub const MAX_WAITING: usize = 16 << 20;

    /// Hands `items` over; `schedule` queues the given job on the writer thread (`false`:
    /// its queue is full, the items stay for the next hand-over).
    pub fn keep(
        &self,
        items: Vec<Keep>,
        bounds: Bounds,
        schedule: impl FnOnce(Box<dyn FnOnce(&redb::Database) + Send>) -> bool,
    ) {
        if items.is_empty() {
            return;
        }
        {
            let mut w = self.0.items.lock().expect("quarantine lock");
            for k in items {
                if w.1 + k.held.raw.len() > Self::MAX_WAITING {
                    self.0.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                w.1 += k.held.raw.len();
                w.0.push(k);
            }
        }
        if self.0.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let waiting = self.0.clone();
        let job = Box::new(move |db: &redb::Database| {
            waiting.queued.store(false, Ordering::Release);
            let items = std::mem::take(&mut *waiting.items.lock().expect("quarantine lock")).0;
            let written = (|| -> Result<()> {
                let txn = super::begin_write(db)?;
                record(&txn, &items, bounds)?;
                Ok(txn.commit()?)
            })();
            if let Err(e) = written {
                waiting
                    .dropped
                    .fetch_add(items.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, events = items.len(), "quarantined events were not written");
            }
        });
        if !schedule(job) {
            self.0.queued.store(false, Ordering::Release);
        }
    }

    /// Events dropped before they reached the store.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(id: &str, reason: &str, raw: &[u8]) -> Keep {
        Keep {
            app_id: 1,
            held: Held {
                reason: reason.into(),
                source: "reflect".into(),
                key_id: 1,
                received_at_ms: 5,
                event_id: id.into(),
                event_name: "e".into(),
                raw: raw.to_vec(),
            },
        }
    }

    #[test]
    fn bounds_drop_the_oldest_and_an_id_is_held_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let bounds = Bounds {
            max_events: 2,
            max_bytes: 1 << 20,
        };
        let write = |items: &[Keep]| {
            let txn = db.begin_write().unwrap();
            record(&txn, items, bounds).unwrap();
            txn.commit().unwrap();
        };
        write(&[
            keep("a", "cap_exceeded", b"{}"),
            keep("b", "cap_exceeded", b"{}"),
        ]);
        write(&[keep("a", "event_not_allowed_by_key", b"{}")]);
        let all = store.quarantined(1, &Selection::default(), 10).unwrap();
        let ids: Vec<_> = all.iter().map(|e| e.held.event_id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        write(&[keep("c", "cap_exceeded", b"{}")]);
        let (reasons, s) = store.quarantine_reasons(1).unwrap();
        assert_eq!(
            reasons,
            [
                ("cap_exceeded".to_owned(), 1),
                ("event_not_allowed_by_key".to_owned(), 1)
            ]
        );
        assert_eq!((s.held, s.dropped), (2, 1));
        assert!(store.quarantined_reason(1, "b").unwrap().is_none());
        let sel = Selection {
            reason: Some("cap_exceeded".into()),
            ids: vec![],
        };
        let c = store.quarantined(1, &sel, 10).unwrap();
        assert_eq!(c.len(), 1);
        let txn = db.begin_write().unwrap();
        assert_eq!(remove(&txn, 1, &[c[0].qid]).unwrap(), 1);
        txn.commit().unwrap();
        assert!(store.quarantined_reason(1, "c").unwrap().is_none());
        assert_eq!(store.quarantine_reasons(1).unwrap().1.held, 1);
        // Bytes bound too.
        let tight = Bounds {
            max_events: 100,
            max_bytes: 200,
        };
        let txn = db.begin_write().unwrap();
        record(&txn, &[keep("d", "cap_exceeded", &[b'x'; 120])], tight).unwrap();
        record(&txn, &[keep("e", "cap_exceeded", &[b'x'; 120])], tight).unwrap();
        txn.commit().unwrap();
        let ids: Vec<_> = store
            .quarantined(1, &Selection::default(), 10)
            .unwrap()
            .into_iter()
            .map(|e| e.held.event_id)
            .collect();
        assert_eq!(ids, ["e"]);
    }
}
