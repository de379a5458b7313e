//! Copies of the whole database: every table of one read snapshot into a fresh redb file.
//! Backups are made this way (`ops::backup`), and so is an erasure's rewrite of the live file
//! ([`rewrite`]): a fresh file holds only live records, while redb leaves the bytes of freed
//! pages in place (an erased record would stay readable in the old file's free space).

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
        $m!(ERASURES);
        $m!(SUPPRESSED);
    };
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    dst: &Database,
    def: TableDefinition<K, V>,
) -> Result<u64> {
    let from = src.open_table(def)?;
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
    let tmp = dir.join(format!(
        "{}{}-{}",
        REWRITE_PREFIX,
        std::process::id(),
        crate::clock::now_ms()
    ));
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
