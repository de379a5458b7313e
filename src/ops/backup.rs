//! Backup and restore of the whole database.
//!
//! A backup copies every table, as of one read transaction (a consistent snapshot: the log,
//! dedupe entries and quota counters of exactly the same commits), into a fresh redb file.
//! Read transactions never block the writer, so the server keeps serving while it runs.
//! The copy is built in the data dir (where the serving process may write) and then streamed
//! to the caller, which may be a CLI process on the other end of the control socket.
//!
//! A restore first checks the file (redb integrity, schema version, every record decodes,
//! every dedupe entry points at a stored event) and then swaps it in, keeping the previous
//! database next to it as `inlet.redb.pre-restore-<ms>`.

use crate::store::accounts::ACCOUNTS as ADMIN_ACCOUNTS;
use crate::store::codec::{App, Key, Tenant, decode_config, decode_event};
use crate::store::tables::*;
use crate::store::{DB_FILE, Error, Result, Store};
use redb::{Database, ReadableDatabase, ReadableTable};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Removes a file when dropped (temporary copies, also on error paths).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_path(dir: &Path, what: &str) -> PathBuf {
    crate::store::temp_name(dir, &format!(".{what}-"), ".tmp")
}

/// Writes a consistent copy of the database to `out`. Returns its size in bytes.
pub fn backup(store: &Store, out: &mut dyn Write) -> Result<u64> {
    let dir = store.path().parent().unwrap_or(Path::new("."));
    let tmp = TempFile(temp_path(dir, "backup"));
    {
        // Owner-only whatever the umask: the copy holds key hashes and audit bodies.
        crate::store::private_file(&tmp.0)?;
        let dst = Database::builder()
            .set_cache_size(16 << 20)
            .create(&tmp.0)?;
        let snapshot = store.db.begin_read()?;
        crate::store::copy::copy_all(&snapshot, &dst)?;
    }
    let mut file = std::fs::File::open(&tmp.0)?;
    Ok(std::io::copy(&mut file, out)?)
}

/// Prefix and suffix of the files of scheduled backups (`inlet-<UTC time>.redb`).
pub const SCHEDULED_PREFIX: &str = "inlet-";
pub const SCHEDULED_SUFFIX: &str = ".redb";

/// The scheduled backups in `dir`, oldest first (their names sort by time).
pub fn scheduled_backups(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SCHEDULED_PREFIX) && name.ends_with(SCHEDULED_SUFFIX) {
            found.push(e.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Milliseconds until the next scheduled backup is due: `every` after the newest one in
/// `dir` (by its time of last change), at once when none is there or it is overdue.
pub fn next_due_ms(dir: &Path, every_ms: u64, now_ms: u64) -> u64 {
    let newest = scheduled_backups(dir)
        .ok()
        .and_then(|f| f.last().cloned())
        .and_then(|p| std::fs::metadata(p).ok()?.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64);
    match newest {
        Some(at) => (at + every_ms).saturating_sub(now_ms).min(every_ms),
        None => 0,
    }
}

/// A scheduled backup: written to `dir` (created owner-only when missing) as
/// `inlet-<UTC time>.redb` (0600), checked with [`verify`] before it gets its name, then only
/// the newest `keep` are kept. Refuses a `dir` inside the data dir.
pub fn scheduled(store: &Store, dir: &Path, keep: u32, now_ms: u64) -> Result<(PathBuf, Summary)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let data = std::fs::canonicalize(store.data_dir())?;
    if dir.starts_with(&data) || dir.starts_with(store.data_dir()) {
        return Err(Error::Refused(format!(
            "backup.dir {} is inside the data dir {}",
            dir.display(),
            data.display()
        )));
    }
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        crate::store::give_owner_of_dir(dir, &data);
    }
    let real = std::fs::canonicalize(dir)?;
    if real.starts_with(&data) {
        return Err(Error::Refused(format!(
            "backup.dir {} is inside the data dir {}",
            dir.display(),
            data.display()
        )));
    }
    let name = format!(
        "{SCHEDULED_PREFIX}{}{SCHEDULED_SUFFIX}",
        crate::clock::rfc3339_ms(now_ms)
            .replace([':', '-'], "")
            .replace('.', "")
    );
    let target = real.join(&name);
    let partial = TempFile(real.join(format!(".{name}.partial")));
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial.0)?;
        backup(store, &mut file)?;
        file.sync_all()?;
    }
    let summary = verify(&partial.0)?;
    std::fs::rename(&partial.0, &target)?;
    std::fs::File::open(&real)?.sync_all()?;
    let all = scheduled_backups(&real)?;
    let excess = all.len().saturating_sub(keep as usize);
    for old in &all[..excess] {
        std::fs::remove_file(old)?;
    }
    Ok((target, summary))
}

/// What a checked backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub tenants: u64,
    pub apps: u64,
    pub keys: u64,
}

/// Checks the database file at `path`: redb integrity, schema version, every event and config
/// record decodes (with the enrichment entries it names), every dedupe entry points at a
/// stored event. Opens it for writing (redb may repair an unclean file), so pass a copy.
pub fn verify(path: &Path) -> Result<Summary> {
    let mut db = Database::open(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::AlreadyOpen,
        e => Error::Refused(format!("not a readable inlet database: {e}")),
    })?;
    if !db.check_integrity().map_err(|e| Error::Db(e.into()))? {
        return Err(Error::Corrupt(
            "the database failed redb's integrity check".into(),
        ));
    }
    let txn = db.begin_read()?;
    let version = txn
        .open_table(META)
        .map_err(|_| Error::Refused("no schema version: not an inlet database".into()))?
        .get("schema_version")?
        .and_then(|v| v.value().try_into().ok().map(u32::from_be_bytes));
    if version != Some(SCHEMA_VERSION) {
        return Err(Error::Refused(format!(
            "schema version {version:?}, this build reads {SCHEMA_VERSION}"
        )));
    }
    let mut s = Summary {
        events: 0,
        tenants: 0,
        apps: 0,
        keys: 0,
    };
    let events = txn.open_table(EVENTS)?;
    let mut expand = crate::store::enrichments::Expand::new(&txn)?;
    for row in events.iter()? {
        let (seq, bytes) = row?;
        let corrupt =
            |e: &dyn std::fmt::Display| Error::Corrupt(format!("event {}: {e}", seq.value()));
        let mut r = decode_event(bytes.value()).map_err(|e| corrupt(&e))?;
        // Its enrichment answers kept in the dictionary (`store::enrichments`) are there too.
        expand.record(&mut r).map_err(|e| corrupt(&e))?;
        s.events += 1;
    }
    for row in txn.open_table(DEDUPE)?.iter()? {
        let (_, seq) = row?;
        if events.get(seq.value())?.is_none() {
            return Err(Error::Corrupt(format!(
                "a dedupe entry points at missing event {}",
                seq.value()
            )));
        }
    }
    for row in txn.open_table(TENANTS)?.iter()? {
        decode_config::<Tenant>("tenant", row?.1.value())?;
        s.tenants += 1;
    }
    for row in txn.open_table(APPS)?.iter()? {
        decode_config::<App>("app", row?.1.value())?;
        s.apps += 1;
    }
    for row in txn.open_table(KEYS)?.iter()? {
        decode_config::<Key>("key", row?.1.value())?;
        s.keys += 1;
    }
    // Admin accounts (absent from files of versions before them).
    if let Ok(t) = txn.open_table(ADMIN_ACCOUNTS) {
        for row in t.iter()? {
            decode_config::<crate::store::accounts::Account>("admin account", row?.1.value())?;
        }
    }
    Ok(s)
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct Restored {
    /// Where the previous database was kept, if there was one.
    pub kept: Option<PathBuf>,
    /// What the restored database holds.
    pub summary: Summary,
    /// Erasures of the ledger applied to it again (made after the backup was taken).
    pub reapplied: usize,
}

/// Replaces the database of `data_dir` with the backup `file`, after checking it. Fails if
/// another process (a server) holds the current database. The previous database is kept as
/// `inlet.redb.pre-restore-<ms>`.
pub fn restore(data_dir: &Path, file: &Path) -> Result<Restored> {
    let current = data_dir.join(DB_FILE);
    // Hold the current database (if any) for the whole swap: proves no server is running.
    let held = if current.exists() {
        Some(Database::open(&current).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::AlreadyOpen,
            e => Error::Db(e.into()),
        })?)
    } else if data_dir.is_dir() {
        None
    } else {
        // Like every command but `serve` and `init`: a mistyped --data creates nothing.
        return Err(Error::Refused(format!(
            "the data dir {} does not exist (create it with `inlet init`, or name the right one with --data)",
            data_dir.display()
        )));
    };
    let staged = TempFile(temp_path(data_dir, "restore"));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut from = std::fs::File::open(file)?;
        // Owner-only whatever the umask (0600 is only ever narrowed by it).
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged.0)?;
        std::io::copy(&mut from, &mut to)?;
        to.sync_all()?;
    }
    let summary = verify(&staged.0)?;
    // The erasure ledger is admin data that outlives a restore: the current database's
    // entries go into the restored one, pending where it lacks them, and are applied below.
    if let Some(db) = &held {
        carry_ledger(db, &staged.0)?;
    }
    std::fs::File::open(&staged.0)?.sync_all()?;
    // Run as root for a service user: the restored file gets the owner of the data dir (the
    // service's user, with the packaged unit's StateDirectory), so the service can open it;
    // not the owner of the file it replaces, which an earlier slip may have left to root.
    crate::store::give_owner_of_dir(&staged.0, data_dir);
    let kept = match held {
        Some(_) => {
            let kept = data_dir.join(format!("{DB_FILE}.pre-restore-{}", crate::clock::now_ms()));
            std::fs::rename(&current, &kept)?;
            Some(kept)
        }
        None => None,
    };
    std::fs::rename(&staged.0, &current)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    drop(held);
    let store = Store::open_existing(data_dir)?;
    let identity = crate::identity::Identity::open(&store);
    let reapplied = crate::privacy::resume(&identity, crate::privacy::Via::Direct)?;
    Ok(Restored {
        kept,
        summary,
        reapplied,
    })
}

/// Copies the erasure ledger, its salt and the suppression list of `from` into the database
/// file `to`; an erasure `to` does not hold arrives pending (not applied there yet).
fn carry_ledger(from: &Database, to: &Path) -> Result<()> {
    use crate::store::privacy::{self as ledger, SALT};
    let src = from.begin_read()?;
    let (Ok(erasures), Ok(suppressed), Ok(meta)) = (
        src.open_table(ERASURES),
        src.open_table(SUPPRESSED),
        src.open_table(META),
    ) else {
        // A database of a build before the ledger: nothing to carry.
        return Ok(());
    };
    let entries = ledger::list(&erasures)?;
    let salt = ledger::read_salt(&meta)?;
    let dst = Database::open(to)?;
    let txn = crate::store::begin_write(&dst)?;
    {
        if let Some(salt) = &salt {
            txn.open_table(META)?.insert(SALT, salt.as_slice())?;
        }
        let mut table = txn.open_table(ERASURES)?;
        let have: std::collections::HashSet<String> =
            ledger::list(&table)?.into_iter().map(|e| e.id).collect();
        for mut e in entries {
            if !have.contains(&e.id) {
                e.applied = false;
                table.insert(
                    e.id.as_str(),
                    crate::store::codec::encode_config(&e).as_slice(),
                )?;
            }
        }
        let mut sup = txn.open_table(SUPPRESSED)?;
        sup.retain(|_, _| false)?;
        for row in suppressed.iter()? {
            let (k, v) = row?;
            sup.insert(k.value(), v.value())?;
        }
    }
    ledger::suppression_changed(&txn)?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a file of this build's schema version restores, and only into an existing data
    /// dir.
    #[test]
    fn restore_checks_the_version_and_creates_no_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        drop(Store::open(&old).unwrap());
        let file = old.join(DB_FILE);
        verify(&file).unwrap();
        let data = dir.path().join("new");
        assert!(
            matches!(restore(&data, &file), Err(Error::Refused(_))),
            "no data dir is created by a restore"
        );
        assert!(!data.exists());
        std::fs::create_dir(&data).unwrap();
        restore(&data, &file).unwrap();
        drop(Store::open(&data).unwrap());
        // A file of any other version (older, or from the future) is refused.
        for other in [0, SCHEMA_VERSION + 1] {
            let store = Store::open(&old).unwrap();
            let txn = store.db().unwrap().begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", &other.to_be_bytes()[..])
                .unwrap();
            txn.commit().unwrap();
            drop(store);
            assert!(verify(&file).is_err(), "version {other}");
            assert!(Store::open(&old).is_err(), "version {other}");
            // Put it back for the next round.
            let db = redb::Database::open(&file).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", &SCHEMA_VERSION.to_be_bytes()[..])
                .unwrap();
            txn.commit().unwrap();
        }
    }

    #[test]
    fn backup_then_verify_then_restore() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut bytes = Vec::new();
        backup(&store, &mut bytes).unwrap();
        let file = dir.path().join("b.redb");
        std::fs::write(&file, &bytes).unwrap();
        let s = verify(&file).unwrap();
        assert_eq!((s.tenants, s.apps, s.events), (1, 1, 0));
        // No stray temp files are left in the data dir.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        // A server (here: this open store) holds the database: restore refuses.
        assert!(matches!(
            restore(dir.path(), &file),
            Err(Error::AlreadyOpen)
        ));
        drop(store);
        let kept = restore(dir.path(), &file).unwrap().kept;
        assert!(kept.unwrap().exists());
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn scheduled_backups_are_verified_private_and_rotated() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = Store::open(&data).unwrap();
        let out = dir.path().join("backups");
        assert_eq!(next_due_ms(&out, 60_000, 1_000), 0, "none yet: due now");
        let mut made = Vec::new();
        for i in 0..4u64 {
            let (path, s) = scheduled(&store, &out, 2, 1_800_000_000_000 + i * 1000).unwrap();
            assert_eq!(s.tenants, 1);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{path:?}");
            made.push(path);
        }
        assert_eq!(scheduled_backups(&out).unwrap(), made[2..].to_vec());
        let dir_mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let now = crate::clock::now_ms();
        let due = next_due_ms(&out, 3_600_000, now);
        assert!(due > 3_500_000 && due <= 3_600_000, "{due}");
        // Never inside the data dir.
        assert!(matches!(
            scheduled(&store, &data.join("b"), 2, 1),
            Err(Error::Refused(_))
        ));
    }

    #[test]
    fn verify_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("junk");
        std::fs::write(&file, b"not a database at all").unwrap();
        assert!(verify(&file).is_err());
    }
}
