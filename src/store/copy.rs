//! Copies of the whole database: every table of one read snapshot into a fresh redb file.
//! Backups are made this way (`ops::backup`), and so is an erasure's rewrite of the live file
//! ([`rewrite`]): a fresh file holds only live records, while redb leaves the bytes of freed
//! pages in place (an erased record would stay readable in the old file's free space).

use super::accounts::{
    ACCOUNTS as ADMIN_ACCOUNTS, AUDIT as ADMIN_AUDIT, INVITES as ADMIN_INVITES,
    SESSIONS as ADMIN_SESSIONS,
};
use super::tables::*;
use super::{Error, Result};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableHandle,
};
use std::path::Path;

/// Rows per destination transaction while copying.
const ROWS_PER_TXN: u64 = 50_000;

/// Calls `$f!(TABLE)` for every table of the schema. A table missing here makes every backup
/// fail loudly (see [`copy_all`]), so it cannot be forgotten silently.
macro_rules! each_table {
    ($m:ident) => {
        $m!(META);
        $m!(EVENTS);
        $m!(DEDUPE);
        $m!(DEDUPE_COMMITS);
        $m!(TENANTS);
        $m!(APPS);
        $m!(KEYS);
        $m!(KEY_LOOKUP);
        $m!(KEY_USED);
        $m!(USAGE);
        $m!(AUDIT_BODIES);
        $m!(AUDIT_BATCHES);
        $m!(ORDERING);
        $m!(SESSIONS);
        $m!(OPEN_SESSIONS);
        $m!(SKAN_VALUES);
        $m!(APP_DAYS);
        $m!(APP_HOURS);
        $m!(SECRETS);
        $m!(ADMIN_ACCOUNTS);
        $m!(ADMIN_SESSIONS);
        $m!(ADMIN_INVITES);
        $m!(ADMIN_AUDIT);
        $m!(RECEIPTS);
        $m!(RECEIPT_ORDER);
        $m!(RECEIPT_APPS);
        $m!(ERASURES);
        $m!(SUPPRESSED);
        $m!(APP_RULES);
        $m!(BIZKEYS);
        $m!(QUARANTINE);
        $m!(QUARANTINE_IDS);
        $m!(QUARANTINE_APPS);
        $m!(ALERT_RULES);
        $m!(ALERT_INCIDENTS);
        $m!(ALERT_DELIVERIES);
        $m!(CLUSTER_APPLIED);
        $m!(ENRICHMENTS);
    };
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    dst: &Database,
    def: TableDefinition<K, V>,
) -> Result<u64> {
    let from = match src.open_table(def) {
        Ok(t) => t,
        // A file an earlier build wrote (a running server backed up by the next version's
        // binary, before an upgrade) lacks the tables added since: nothing to copy.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(redb::Error::from(e).into()),
    };
    let mut rows = from.iter()?;
    let mut copied = 0;
    loop {
        let mut txn = dst.begin_write()?;
        txn.set_durability(Durability::None)?;
        let mut n = 0;
        {
            let mut to = txn.open_table(def)?;
            for row in rows.by_ref() {
                let (k, v) = row?;
                to.insert(k.value(), v.value())?;
                n += 1;
                if n == ROWS_PER_TXN {
                    break;
                }
            }
        }
        txn.commit()?;
        copied += n;
        if n < ROWS_PER_TXN {
            return Ok(copied);
        }
    }
}

/// Copies every table of `src` (one snapshot) into the empty database `dst`.
pub fn copy_all(src: &ReadTransaction, dst: &Database) -> Result<u64> {
    let mut known = Vec::new();
    let mut rows = 0;
    macro_rules! copy {
        ($t:ident) => {
            known.push($t.name().to_owned());
            rows += copy_table(src, dst, $t)?;
        };
    }
    each_table!(copy);
    // Sorted runs (`store::runs`): tables named at run time, including the output of a merge
    // in progress: the dedupe index's fingerprints (`run.dedupe.*`). The identity graph has
    // a file of its own, which backups leave out: it is rebuilt from the log.
    for name in src.list_tables()?.map(|t| t.name().to_owned()) {
        if crate::store::runs::is_run_table(&name) {
            rows += copy_table(src, dst, super::runs::def(&name))?;
            known.push(name);
        }
    }
    if let Some(unknown) = src
        .list_tables()?
        .find(|t| !known.iter().any(|k| k == t.name()))
    {
        return Err(Error::Internal(format!(
            "backup does not know table {:?}; add it to store::copy",
            unknown.name()
        )));
    }
    // Make everything durable at once.
    let mut txn = dst.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    Ok(rows)
}

/// Replaces the database file `path` (held open as `db`, which no one writes meanwhile) by a
/// fresh copy of its current snapshot: written next to it, made durable, renamed over it. The
/// caller then opens `path` again; `db` keeps the old, unlinked file until dropped.
pub fn rewrite(db: &Database, path: &Path) -> Result<u64> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = super::temp_name(dir, REWRITE_PREFIX, "");
    let result = (|| {
        super::private_file(&tmp)?;
        let rows = {
            let dst = super::builder().create(&tmp)?;
            let snapshot = db.begin_read()?;
            copy_all(&snapshot, &dst)?
        };
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(rows)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Name prefix of [`rewrite`]'s temporary file: one left by a crash is removed on open.
pub const REWRITE_PREFIX: &str = ".rewrite-";

/// Removes temporary files of rewrites a crash interrupted (in `dir`, the data dir).
pub fn remove_stale(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(REWRITE_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// A copy of a snapshot, made away from the writer ([`prepare`]), brought up to date and put in
/// place by [`finish`] on the writer thread: the writer then waits only for what changed since
/// the snapshot, not for the whole copy.
pub struct Prepared {
    tmp: std::path::PathBuf,
    dst: Option<Database>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.dst.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Copies a snapshot of `db` into a new file next to `path` (any thread; the writer goes on).
pub fn prepare(db: &Database, path: &Path) -> Result<Prepared> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = super::temp_name(dir, REWRITE_PREFIX, "");
    super::private_file(&tmp)?;
    let mut prepared = Prepared {
        dst: Some(super::builder().create(&tmp)?),
        tmp,
    };
    let snapshot = db.begin_read()?;
    copy_all(&snapshot, prepared.dst.as_ref().expect("just made"))?;
    drop(snapshot);
    let _ = &mut prepared;
    Ok(prepared)
}

/// On the writer thread (nothing writes `db` meanwhile): applies to the copy what changed in
/// `db` since its snapshot, makes it durable and renames it over `path`. The caller then opens
/// `path` again.
pub fn finish(db: &Database, mut prepared: Prepared, path: &Path) -> Result<()> {
    let dst = prepared.dst.take().expect("prepared once");
    let result = (|| {
        let src = db.begin_read()?;
        let txn = dst.begin_write()?;
        tail_sync(&src, &txn, EVENTS)?;
        tail_sync(&src, &txn, AUDIT_BODIES)?;
        macro_rules! sync {
            ($t:ident) => {
                if $t.name() != EVENTS.name() && $t.name() != AUDIT_BODIES.name() {
                    sync_table(&src, &txn, $t)?;
                }
            };
        }
        each_table!(sync);
        let runs: Vec<String> = src
            .list_tables()?
            .map(|t| t.name().to_owned())
            .filter(|n| super::runs::is_run_table(n))
            .collect();
        for name in &runs {
            sync_table(&src, &txn, super::runs::def(name))?;
        }
        let stale: Vec<String> = txn
            .list_tables()?
            .map(|t| t.name().to_owned())
            .filter(|n| super::runs::is_run_table(n) && !runs.contains(n))
            .collect();
        for name in stale {
            txn.delete_table(super::runs::def(&name))?;
        }
        txn.commit()?;
        drop(dst);
        std::fs::File::open(&prepared.tmp)?.sync_all()?;
        std::fs::rename(&prepared.tmp, path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&prepared.tmp);
    }
    result
}

/// A seq-keyed table that only grows at its end between snapshot and now (the log, the raw
/// bodies): its new tail is copied; when the lengths still differ (something was deleted),
/// the whole table is compared.
fn tail_sync(
    src: &ReadTransaction,
    dst: &redb::WriteTransaction,
    def: TableDefinition<u64, &'static [u8]>,
) -> Result<()> {
    let from = src.open_table(def)?;
    {
        let mut to = dst.open_table(def)?;
        let after = to.last()?.map(|(k, _)| k.value());
        let range = match after {
            Some(a) => from.range(a + 1..)?,
            None => from.range(0..)?,
        };
        for row in range {
            let (k, v) = row?;
            to.insert(k.value(), v.value())?;
        }
        if redb::ReadableTableMetadata::len(&to)? == redb::ReadableTableMetadata::len(&from)? {
            return Ok(());
        }
    }
    drop(from);
    sync_table(src, dst, def)
}

/// Makes table `def` of `dst` equal to `src`'s: inserts what differs, removes what is gone.
fn sync_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    dst: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<()> {
    let from = src.open_table(def)?;
    let mut to = dst.open_table(def)?;
    for row in from.iter()? {
        let (k, v) = row?;
        let kb = K::as_bytes(&k.value()).as_ref().to_vec();
        let vb = V::as_bytes(&v.value()).as_ref().to_vec();
        let same = match to.get(K::from_bytes(&kb))? {
            Some(old) => V::as_bytes(&old.value()).as_ref() == vb.as_slice(),
            None => false,
        };
        if !same {
            to.insert(K::from_bytes(&kb), V::from_bytes(&vb))?;
        }
    }
    let mut gone: Vec<Vec<u8>> = Vec::new();
    for row in to.iter()? {
        let (k, _) = row?;
        let kb = K::as_bytes(&k.value()).as_ref().to_vec();
        if from.get(K::from_bytes(&kb))?.is_none() {
            gone.push(kb);
        }
    }
    for kb in gone {
        to.remove(K::from_bytes(&kb))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    /// A table's rows as bytes.
    type Rows = Vec<(Vec<u8>, Vec<u8>)>;

    /// What the compared tables hold, for comparing two files.
    fn rows(db: &Database) -> Vec<(String, Rows)> {
        let txn = db.begin_read().unwrap();
        let mut out = Vec::new();
        for t in txn.list_tables().unwrap() {
            let name = t.name().to_owned();
            let mut r = Vec::new();
            macro_rules! dump {
                ($def:expr) => {{
                    let table = txn.open_table($def).unwrap();
                    for row in table.iter().unwrap() {
                        let (k, v) = row.unwrap();
                        r.push((k.value().to_be_bytes().to_vec(), v.value().to_vec()));
                    }
                }};
            }
            match name.as_str() {
                "events" => dump!(EVENTS),
                "audit_bodies" => dump!(AUDIT_BODIES),
                "meta" => {
                    let table = txn.open_table(META).unwrap();
                    for row in table.iter().unwrap() {
                        let (k, v) = row.unwrap();
                        r.push((k.value().as_bytes().to_vec(), v.value().to_vec()));
                    }
                }
                _ => continue,
            }
            out.push((name, r));
        }
        out.sort();
        out
    }

    /// Changes made after the snapshot (appends, a deletion, an update) reach the copy.
    #[test]
    fn a_prepared_copy_is_brought_up_to_date_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let write = |f: &dyn Fn(&redb::WriteTransaction)| {
            let txn = db.begin_write().unwrap();
            f(&txn);
            txn.commit().unwrap();
        };
        write(&|txn| {
            let mut e = txn.open_table(EVENTS).unwrap();
            let mut a = txn.open_table(AUDIT_BODIES).unwrap();
            for seq in 1..=100u64 {
                e.insert(seq, format!("event {seq}").as_bytes()).unwrap();
                a.insert(seq, format!("body {seq}").as_bytes()).unwrap();
            }
        });
        let prepared = prepare(&db, store.path()).unwrap();
        write(&|txn| {
            let mut e = txn.open_table(EVENTS).unwrap();
            for seq in 101..=120u64 {
                e.insert(seq, format!("event {seq}").as_bytes()).unwrap();
            }
            e.remove(7).unwrap();
            txn.open_table(AUDIT_BODIES).unwrap().remove(50).unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("k", &b"after"[..])
                .unwrap();
        });
        let want = rows(&db);
        finish(&db, prepared, store.path()).unwrap();
        drop(db);
        drop(store);
        let copy = Database::open(dir.path().join(crate::store::DB_FILE)).unwrap();
        assert_eq!(rows(&copy), want);
        let txn = copy.begin_read().unwrap();
        assert_eq!(txn.open_table(EVENTS).unwrap().len().unwrap(), 119);
    }

    /// Two erasures rewriting at once (same process, same millisecond) each prepare their own
    /// copy: the time alone named both files alike, and the second found the first's locked.
    #[test]
    fn copies_prepared_at_once_have_files_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let names: std::collections::HashSet<_> = (0..1000)
            .map(|_| crate::store::temp_name(dir.path(), REWRITE_PREFIX, ""))
            .collect();
        assert_eq!(names.len(), 1000);
        let store = crate::store::Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let first = prepare(&db, store.path()).unwrap();
        let second = prepare(&db, store.path()).unwrap();
        assert_ne!(first.tmp, second.tmp);
        finish(&db, first, store.path()).unwrap();
        finish(&db, second, store.path()).unwrap();
    }
}
