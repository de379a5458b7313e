//! The dictionary of enrichment answers ([`crate::enrich`]). The members enrichment adds to
//! an event's `context` (`"geo":{..},"asn":{..}` and `"device":{..}`) are few distinct texts
//! repeated over millions of events, so each is stored once, in [`ENRICHMENTS`], and an
//! event keeps only their ids ([`Interned`]: a v2 record). Readers put the texts back
//! ([`Expand`]): what is exported is what storing them in every event would give.
//!
//! Ids are handed out on request threads ([`Dictionary::intern`]), before the event's batch
//! is queued for the writer, and the writer stores every id handed out so far in each commit
//! ([`Dictionary`] is a commit listener): the commit that stores an event stores its entries
//! too, or an earlier one did. Ids are never reused or changed, so a copy of the file
//! (backup, erasure rewrite) carries the entries its events need. The dictionary is bounded
//! ([`MAX_ENTRIES`]); an answer that finds it full stays in the event's `context`, as it is
//! in cluster mode, where records travel between nodes whose dictionaries differ.

use super::Result;
use super::codec::{EventRecord, Interned};
use super::tables::ENRICHMENTS;
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Entries the dictionary holds at most (in memory and in the file): a few MiB at most.
pub const MAX_ENTRIES: usize = 65_536;

/// Ids of the enrichment texts, shared by the request threads and the writer.
pub struct Dictionary {
    inner: RwLock<Inner>,
    max: usize,
    /// Unique in the process: what a [`Memo`] names this dictionary by.
    serial: u32,
    /// Answers that found the dictionary full (stored in their event).
    pub full: AtomicU64,
}

#[derive(Default)]
struct Inner {
    ids: HashMap<Arc<str>, u32>,
    /// The text of id `i + 1` at `i`.
    texts: Vec<Arc<str>>,
}

impl Dictionary {
    /// The entries stored in `db`.
    pub fn load(db: &redb::Database) -> Result<Dictionary> {
        Dictionary::load_bounded(db, MAX_ENTRIES)
    }

    fn load_bounded(db: &redb::Database, max: usize) -> Result<Dictionary> {
        let mut inner = Inner::default();
        let txn = db.begin_read()?;
        match txn.open_table(ENRICHMENTS) {
            Ok(table) => {
                for row in table.iter()? {
                    let (id, text) = row?;
                    if id.value() as usize != inner.texts.len() + 1 {
                        return Err(super::Error::Corrupt(format!(
                            "enrichment dictionary: id {} after {}",
                            id.value(),
                            inner.texts.len()
                        )));
                    }
                    let text: Arc<str> = text.value().into();
                    inner.ids.insert(text.clone(), id.value());
                    inner.texts.push(text);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(redb::Error::from(e).into()),
        }
        static SERIAL: AtomicU32 = AtomicU32::new(1);
        Ok(Dictionary {
            inner: RwLock::new(inner),
            max,
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            full: Default::default(),
        })
    }

    /// The id of `text`, handed out now if it has none; `None` when the dictionary is full.
    pub fn intern(&self, text: &str) -> Option<u32> {
        {
            let inner = self.read();
            if let Some(&id) = inner.ids.get(text) {
                return Some(id);
            }
            // Full: no write lock for every new answer from now on.
            if inner.texts.len() >= self.max {
                self.full.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = inner.ids.get(text) {
            return Some(id);
        }
        if inner.texts.len() >= self.max {
            self.full.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let text: Arc<str> = text.into();
        inner.texts.push(text.clone());
        let id = inner.texts.len() as u32;
        inner.ids.insert(text, id);
        Some(id)
    }

    /// The id of the text `text` makes, remembered in `memo` (kept beside a cached answer,
    /// so that an answer seen before costs neither its text, nor hashing, nor a lock).
    pub fn intern_memo(&self, memo: &Memo, text: impl FnOnce() -> String) -> Option<u32> {
        // Acquire: whoever reads an id sees it handed out (and so does the writer, after the
        // reader queued its batch); `intern` handed it out before the Release below.
        let known = memo.0.load(Ordering::Acquire);
        if known >> 32 == u64::from(self.serial) {
            return Some(known as u32);
        }
        let id = self.intern(&text())?;
        memo.0.store(
            u64::from(self.serial) << 32 | u64::from(id),
            Ordering::Release,
        );
        Some(id)
    }

    /// Ids handed out so far.
    pub fn len(&self) -> usize {
        self.read().texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the entries handed out since the last commit that stored some, in the
    /// writer's commit (the dictionary is its `CommitListener`, `store::writer`). The batch
    /// was taken from the queue before this runs, so every id its events carry is counted.
    pub fn store_new(&self, txn: &WriteTransaction) -> Result<()> {
        let handed = self.len();
        if handed == 0 {
            return Ok(());
        }
        let mut table = txn.open_table(ENRICHMENTS)?;
        let stored = table.last()?.map_or(0, |(id, _)| id.value() as usize);
        if stored >= handed {
            return Ok(());
        }
        let new: Vec<Arc<str>> = self.read().texts[stored..handed].to_vec();
        for (i, text) in new.iter().enumerate() {
            table.insert((stored + i + 1) as u32, &**text)?;
        }
        Ok(())
    }
}

/// The id a [`Dictionary`] gave a text, kept beside the text (the dictionary's serial and
/// the id; 0: none yet).
#[derive(Debug, Default)]
pub struct Memo(AtomicU64);

/// A memo is a cache beside a value, not part of it: values compare without it.
impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

/// Puts the dictionary's texts back into the records read in one transaction.
pub struct Expand {
    table: Option<redb::ReadOnlyTable<u32, &'static str>>,
    seen: HashMap<u32, String>,
}

impl Expand {
    pub fn new(txn: &ReadTransaction) -> Result<Expand> {
        let table = match txn.open_table(ENRICHMENTS) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(redb::Error::from(e).into()),
        };
        Ok(Expand {
            table,
            seen: HashMap::new(),
        })
    }

    /// `r`'s `context` with its interned enrichment, as it was when enriched.
    pub fn record(&mut self, r: &mut EventRecord) -> Result<()> {
        let Interned { geo, device } = std::mem::take(&mut r.interned);
        for id in [geo, device].into_iter().filter(|&id| id != 0) {
            let text = match self.seen.get(&id) {
                Some(t) => t,
                None => {
                    let text = self
                        .table
                        .as_ref()
                        .map(|t| t.get(id))
                        .transpose()?
                        .flatten()
                        .ok_or_else(|| {
                            super::Error::Corrupt(format!("enrichment {id} is not in the store"))
                        })?
                        .value()
                        .to_owned();
                    self.seen.entry(id).or_insert(text)
                }
            };
            append_members(&mut r.context, text);
        }
        Ok(())
    }
}

/// Appends `members` (`"k":v,...`) to the JSON object text `object`.
pub fn append_members(object: &mut String, members: &str) {
    let body = object.trim();
    let body = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .unwrap_or("")
        .trim();
    let mut out = String::with_capacity(body.len() + members.len() + 3);
    out.push('{');
    out.push_str(body);
    if !body.is_empty() {
        out.push(',');
    }
    out.push_str(members);
    out.push('}');
    *object = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn members_are_appended_to_any_object() {
        for (object, want) in [
            ("{}", r#"{"geo":1}"#),
            ("", r#"{"geo":1}"#),
            (r#"{"ip":"1.2.3.4"}"#, r#"{"ip":"1.2.3.4","geo":1}"#),
            (r#" { "a" : 2 } "#, r#"{"a" : 2,"geo":1}"#),
        ] {
            let mut o = object.to_owned();
            append_members(&mut o, r#""geo":1"#);
            assert_eq!(o, want, "{object:?}");
        }
    }

    #[test]
    fn ids_are_kept_across_a_restart_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let dict = Dictionary::load_bounded(&db, 2).unwrap();
        assert_eq!(dict.intern(r#""device":{"type":"bot"}"#), Some(1));
        assert_eq!(dict.intern(r#""geo":{"country":"GB"}"#), Some(2));
        assert_eq!(dict.intern(r#""device":{"type":"bot"}"#), Some(1));
        assert_eq!(dict.intern(r#""geo":{"country":"FR"}"#), None, "full");
        // A memo answers for the dictionary that filled it, and only for it.
        let memo = Memo::default();
        let text = |t: &str| {
            let t = t.to_owned();
            move || t
        };
        assert_eq!(
            dict.intern_memo(&memo, text(r#""geo":{"country":"GB"}"#)),
            Some(2)
        );
        assert_eq!(dict.intern_memo(&memo, || unreachable!()), Some(2));
        let other = Dictionary::load_bounded(&db, 2).unwrap();
        assert_eq!(
            other.intern_memo(&memo, text(r#""device":{"type":"bot"}"#)),
            Some(1)
        );
        // Stored by the next commit, once.
        for _ in 0..2 {
            let txn = db.begin_write().unwrap();
            dict.store_new(&txn).unwrap();
            txn.commit().unwrap();
        }
        let again = Dictionary::load(&db).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.intern(r#""geo":{"country":"GB"}"#), Some(2));
        assert_eq!(again.intern(r#""geo":{"country":"FR"}"#), Some(3));

        let mut r = EventRecord {
            context: r#"{"ip":"1.2.3.4"}"#.into(),
            interned: Interned { geo: 2, device: 1 },
            ..EventRecord::for_test("e")
        };
        let txn = db.begin_read().unwrap();
        let mut expand = Expand::new(&txn).unwrap();
        expand.record(&mut r).unwrap();
        assert_eq!(
            r.context,
            r#"{"ip":"1.2.3.4","geo":{"country":"GB"},"device":{"type":"bot"}}"#
        );
        assert!(r.interned.is_none());
        // An id never stored (3 was only handed out) is damage, not a silent loss.
        r.interned.geo = 3;
        assert!(expand.record(&mut r).is_err());
    }

    #[test]
    fn an_aborted_commit_leaves_its_entries_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let dict = Dictionary::load(&db).unwrap();
        dict.intern("\"device\":{}").unwrap();
        let txn = db.begin_write().unwrap();
        dict.store_new(&txn).unwrap();
        txn.abort().unwrap();
        dict.intern("\"geo\":{}").unwrap();
        let txn = db.begin_write().unwrap();
        dict.store_new(&txn).unwrap();
        txn.commit().unwrap();
        assert_eq!(Dictionary::load(&db).unwrap().len(), 2);
    }
}
