//! The embedded redb database: tables, record codec, the group-commit writer, admin writes
//! and reads. The store knows nothing of HTTP, nor of what listens to the writer's commits.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod bizkey;
pub mod codec;
pub mod copy;
pub mod dedupe;
pub mod enrichments;
pub mod key_cache;
pub mod pending;
pub mod privacy;
pub mod quarantine;
pub mod read;
pub mod receipts;
pub mod runs;
pub mod secrets;
pub mod tables;
pub mod writer;

use crate::clock::now_ms;
use codec::{App, CodecError, Tenant, decode_config};
use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError, TransactionError, WriteTransaction,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tables::*;

/// The database file inside the data dir.
pub const DB_FILE: &str = "inlet.redb";
/// Page cache of the log's database. redb's default is far larger than this appliance needs;
/// with the identity graph's 8 MiB (`identity::graph::GRAPH_CACHE_BYTES`) it is what the 200 MiB
/// bound of docs/design/memory.md allows once the indexer runs beside the writer; no larger
/// cache (24, 40 MiB and more) raised the ingest rate, resubmitted ids included
/// (docs/design/memory.md).
pub const CACHE_BYTES: usize = 16 << 20;

/// What a store operation can fail with. Only [`Error::NotFound`], [`Error::Conflict`] and
/// [`Error::Refused`] are the caller's doing: their text is written for the person who asked
/// and may be shown to them. Every other variant is internal: an HTTP surface answers it 500
/// without detail and logs it; the CLI, run by the operator, prints it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// Stored data that does not decode or does not agree with itself: an undecodable
    /// record, a broken index entry.
    #[error("damaged data: {0}")]
    Corrupt(String),
    /// A broken invariant of this build (a bug), never the caller's doing.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the database is open in another process")]
    AlreadyOpen,
    /// [`Store::open_existing`] found no database: only `serve` and `init` create one.
    #[error("no inlet database in {}", .0.display())]
    NoDatabase(PathBuf),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A request or setting the caller can correct (a bad name, a value out of range, a file
    /// that is not an inlet database); the text says what is wrong.
    #[error("{0}")]
    Refused(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the writer has stopped")]
    WriterGone,
    #[error("the database is being reopened after a storage failure")]
    Reopening,
    /// The writer's commit hook refused a batch (cluster mode: the engine did not take it).
    #[error("refused before commit: {0}")]
    Fenced(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::SetDurabilityError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);

/// A record that does not decode is damaged data.
impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An open database.
///
/// Clones share one handle. After a failed commit redb refuses every later operation
/// (`PreviousIo`), so the writer thread closes the handle and opens the file again
/// ([`Store::reopen`]); meanwhile reads get [`Error::Reopening`] (through [`Slot`]) instead of
/// waiting.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<Slot>,
    path: PathBuf,
    /// Unsealed signing secrets, reloaded when their version in `meta` changes.
    secret_cache: Arc<secrets::Cache>,
    keys: Arc<key_cache::KeyCache>,
    opener: Arc<Opener>,
}

/// Opens the database file (or a test's storage backend) again.
type Opener = dyn Fn() -> Result<Database, DatabaseError> + Send + Sync;

/// The current database handle, absent while it is being reopened.
pub struct Slot(RwLock<Option<Arc<Database>>>);

impl Slot {
    /// The current handle, if the database is open.
    pub fn get(&self) -> Option<Arc<Database>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, db: Option<Arc<Database>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = db;
    }

    fn reopening() -> TransactionError {
        TransactionError::Storage(StorageError::Io(std::io::Error::other(
            "the database is being reopened after a storage failure",
        )))
    }

    /// A read transaction on the current handle.
    pub fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        self.get().ok_or_else(Slot::reopening)?.begin_read()
    }

    /// A write transaction on the current handle (only where no writer thread runs).
    pub fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        begin_write(&*self.get().ok_or_else(Slot::reopening)?)
    }
}

/// A write transaction with this appliance's commit settings: **quick-repair** on, so that
/// opening the file after a crash (SIGKILL, power loss) loads the allocator state the last
/// commit saved instead of walking every page of the file (seconds per GB; the file holds
/// about 1 KiB per event). It costs a second fsync per commit (two-phase commit) and the
/// allocator state written with each commit. Every production write goes through here: one
/// commit without it, as the last before a crash, means a full repair.
pub fn begin_write(db: &Database) -> Result<WriteTransaction, TransactionError> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// A redb builder with this appliance's settings.
pub fn builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(CACHE_BYTES);
    b
}

impl Store {
    /// Opens (creating if needed) the database in `dir`. A new database gets its tables, the
    /// schema version, tenant `default` (no quota) and app `default`.
    pub fn open(dir: &Path) -> Result<Store> {
        create_private_dir(dir)?;
        let path = dir.join(DB_FILE);
        let file = path.clone();
        Store::open_parts(path, move || {
            private_file(&file)?;
            builder().create(&file)
        })
    }

    /// Opens the database in `dir`, which must exist: the admin commands' way in. A mistyped
    /// or missing data dir is [`Error::NoDatabase`], never a new, empty database that the
    /// running service does not know (and nothing is created in or for `dir`).
    pub fn open_existing(dir: &Path) -> Result<Store> {
        let path = dir.join(DB_FILE);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            // Not "no database": one this user may not see (the service's 0700 data dir).
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                )));
            }
            _ => return Err(Error::NoDatabase(dir.to_owned())),
        }
        let file = path.clone();
        Store::open_parts(path, move || {
            private_file(&file)?;
            builder().open(&file)
        })
    }

    /// Opens a database through `open` (e.g. a storage backend of a test), which is called
    /// again whenever the database must be reopened. `path` only names it.
    pub fn open_with(
        path: PathBuf,
        open: impl Fn() -> Result<Database, DatabaseError> + Send + Sync + 'static,
    ) -> Result<Store> {
        Store::open_parts(path, open)
    }

    fn open_parts(
        path: PathBuf,
        open: impl Fn() -> Result<Database, DatabaseError> + Send + Sync + 'static,
    ) -> Result<Store> {
        let db = open().map_err(open_error)?;
        let store = Store {
            db: Arc::new(Slot(RwLock::new(Some(Arc::new(db))))),
            path,
            secret_cache: Default::default(),
            keys: Default::default(),
            opener: Arc::new(open),
        };
        store.init()?;
        Ok(store)
    }

    /// The current database handle.
    pub fn db(&self) -> Result<Arc<Database>> {
        self.db.get().ok_or(Error::Reopening)
    }

    /// Closes the current handle and opens the database again (redb repairs it if the last
    /// commit did not complete). Only the writer thread calls this, between commits. Reads
    /// started before keep their handle until they end; the file is opened again once they
    /// have, waiting at most `patience`.
    pub fn reopen(&self, patience: std::time::Duration) -> Result<Arc<Database>> {
        let old = self.db.0.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(old);
        let deadline = std::time::Instant::now() + patience;
        let db = loop {
            match (self.opener)() {
                Ok(db) => break Arc::new(db),
                // Readers still hold the old handle.
                Err(DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(e) => return Err(open_error(e)),
            }
        };
        self.db.set(Some(db.clone()));
        Ok(db)
    }

    /// Opens the database file again after it was replaced by a new file (`copy::rewrite`),
    /// then puts the new handle in place of the old one: reads never find the slot empty.
    /// Only the writer thread (or a process holding the store alone) calls this.
    pub fn reopen_replaced(&self) -> Result<Arc<Database>> {
        let db = Arc::new((self.opener)().map_err(open_error)?);
        let old = self
            .db
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(db.clone());
        drop(old);
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The data dir holding the database file (and the secrets' sealing key).
    pub fn data_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn init(&self) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let version = meta
                .get("schema_version")?
                .map(|v| u32::from_be_bytes(v.value().try_into().unwrap_or([0; 4])));
            match version {
                Some(SCHEMA_VERSION) => {}
                Some(v) => {
                    return Err(Error::Refused(format!(
                        "database schema version {v} is not supported by this build (it writes {SCHEMA_VERSION})"
                    )));
                }
                None => {
                    meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes()[..])?;
                }
            }
        }
        open_all_tables(&txn)?;
        accounts::init(&txn, now_ms())?;
        if txn.open_table(TENANTS)?.is_empty()? {
            let t = admin::add_tenant(&txn, "default", 0)?;
            admin::add_app(&txn, "default", &t.name)?;
        }
        txn.commit()?;
        Ok(())
    }
}

pub(crate) fn open_error(e: DatabaseError) -> Error {
    match e {
        DatabaseError::DatabaseAlreadyOpen => Error::AlreadyOpen,
        e => Error::Db(e.into()),
    }
}

/// Creates every table so that read transactions never meet a missing one.
fn open_all_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(EVENTS)?;
    txn.open_table(DEDUPE)?;
    txn.open_table(DEDUPE_COMMITS)?;
    txn.open_table(TENANTS)?;
    txn.open_table(APPS)?;
    txn.open_table(KEYS)?;
    txn.open_table(KEY_LOOKUP)?;
    txn.open_table(KEY_USED)?;
    txn.open_table(USAGE)?;
    txn.open_table(AUDIT_BODIES)?;
    txn.open_table(AUDIT_BATCHES)?;
    txn.open_table(ORDERING)?;
    txn.open_table(SESSIONS)?;
    txn.open_table(OPEN_SESSIONS)?;
    txn.open_table(SKAN_VALUES)?;
    txn.open_table(APP_DAYS)?;
    txn.open_table(APP_HOURS)?;
    txn.open_table(SECRETS)?;
    txn.open_table(RECEIPTS)?;
    txn.open_table(RECEIPT_ORDER)?;
    txn.open_table(RECEIPT_APPS)?;
    txn.open_table(ERASURES)?;
    txn.open_table(SUPPRESSED)?;
    txn.open_table(APP_RULES)?;
    txn.open_table(BIZKEYS)?;
    quarantine::create_tables(txn)?;
    txn.open_table(ALERT_RULES)?;
    txn.open_table(ALERT_INCIDENTS)?; // watch::alerts
    txn.open_table(ALERT_DELIVERIES)?; // watch::alerts
    txn.open_table(CLUSTER_APPLIED)?;
    txn.open_table(ENRICHMENTS)?; // store::enrichments
    Ok(())
}

/// A name for a temporary file in `dir` that no other temporary file of this process has:
/// `{prefix}{pid}-{n}-{ms}{suffix}`. Two erasures or backups in the same millisecond each get
/// their own file (the time alone gave them one, and the second `create` found it locked).
pub(crate) fn temp_name(dir: &Path, prefix: &str, suffix: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        "{prefix}{}-{n}-{}{suffix}",
        std::process::id(),
        crate::clock::now_ms()
    ))
}

/// Makes `path` owner-only (0600) whatever the umask: creates it empty when absent (redb
/// initializes an empty file), giving it the data dir's owner when this process may (root:
/// `sudo inlet ...` must not leave a file the service's user cannot open), and takes the
/// group's and others' bits away from an existing file (one an older version made 0644).
/// Every file inlet keeps in the data dir goes through here before it is opened. A file of
/// another owner keeps its mode (only its owner or root may change it; opening it then fails
/// on its own terms).
pub(crate) fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {
            if let Some(dir) = path.parent() {
                give_owner_of_dir(path, dir);
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path).map_err(named)?.permissions().mode();
            if mode & 0o077 != 0 {
                let _ =
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700));
            }
            Ok(())
        }
        Err(e) => Err(named(e)),
    }
}

/// Gives `path` the owner of the data dir `dir` when this process may (root): a command run
/// with sudo must not leave a file the service's user cannot open. Anyone else already owns
/// what it creates.
pub fn give_owner_of_dir(path: &Path, dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(owner) = std::fs::metadata(dir) {
        let _ = std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()));
    }
}

/// Creates `dir` (and parents) readable by the owner only.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Finds a tenant by name in any readable table of tenants.
pub(crate) fn find_tenant(
    table: &impl ReadableTable<u32, &'static [u8]>,
    name: &str,
) -> Result<Option<(u32, Tenant)>> {
    for row in table.iter()? {
        let (id, bytes) = row?;
        let t: Tenant = decode_config("tenant", bytes.value())?;
        if t.name == name {
            return Ok(Some((id.value(), t)));
        }
    }
    Ok(None)
}

/// Finds an app by name.
pub(crate) fn find_app(
    table: &impl ReadableTable<u32, &'static [u8]>,
    name: &str,
) -> Result<Option<(u32, App)>> {
    for row in table.iter()? {
        let (id, bytes) = row?;
        let a: App = decode_config("app", bytes.value())?;
        if a.name == name {
            return Ok(Some((id.value(), a)));
        }
    }
    Ok(None)
}

/// The next id of a table keyed by u32 ids (`kind` names it): one past the largest ever
/// given, kept under `meta["next_id/<kind>"]`, so that an id freed by a delete is never given
/// again (ids name keys and secrets in redaction markers and the audit log).
pub(crate) fn next_id(
    txn: &redb::WriteTransaction,
    table: &impl ReadableTable<u32, &'static [u8]>,
    kind: &str,
) -> Result<u32> {
    let past_rows = table.last()?.map_or(1, |(k, _)| k.value() + 1);
    let mut meta = txn.open_table(tables::META)?;
    let key = format!("next_id/{kind}");
    let past_given = meta
        .get(key.as_str())?
        .and_then(|v| v.value().try_into().ok().map(u32::from_be_bytes))
        .unwrap_or(1);
    let id = past_rows.max(past_given);
    let next = id
        .checked_add(1)
        .ok_or_else(|| Error::Refused(format!("no {kind} ids left")))?;
    meta.insert(key.as_str(), &next.to_be_bytes()[..])?;
    Ok(id)
}

pub(crate) fn now() -> u64 {
    now_ms()
}

/// An event to remove from the log (retention, erasure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub seq: u64,
    pub dedupe_key: Vec<u8>,
    pub audit_key: String,
}

/// What becomes of the raw body of a removed event's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRule {
    /// Retention: the body goes with the request's first event (all of a request's events
    /// pass the cut together).
    Forget,
    /// Erasure: the body goes now, whichever event of the request this is.
    Erase,
}

/// Removes `victims` in the caller's write transaction: the event, its dedupe entry and its
/// business key (`bizkey`; each when it still points at this event) and its request's raw body as `body` says; a removed seq is
/// never handed out again. The event's fingerprint (in a run or a commit row) stays: runs are
/// immutable, and a lookup that finds the owner's record gone falls back to the full key, so
/// a resubmission is a new event. Returns how many events were removed.
pub fn remove_events<'a>(
    txn: &WriteTransaction,
    victims: impl IntoIterator<Item = &'a Victim>,
    body: BodyRule,
) -> Result<u64> {
    let mut events = txn.open_table(EVENTS)?;
    let mut dedupe = txn.open_table(DEDUPE)?;
    let mut bizkeys = bizkey::Forget::new(txn)?;
    let (mut removed, mut highest) = (0, 0);
    for v in victims {
        let Some(record) = events.remove(v.seq)? else {
            continue;
        };
        // Its business key (`store::bizkey`) goes with it; the dedupe key starts with the app id.
        if let Some(app) = v.dedupe_key.first_chunk::<4>() {
            bizkeys.event(u32::from_be_bytes(*app), v.seq, record.value())?;
        }
        drop(record);
        removed += 1;
        highest = highest.max(v.seq);
        let points_here = dedupe
            .get(v.dedupe_key.as_slice())?
            .is_some_and(|s| s.value() == v.seq);
        if points_here {
            dedupe.remove(v.dedupe_key.as_slice())?;
        }
        match body {
            BodyRule::Forget => audit::forget(txn, &v.audit_key, v.seq)?,
            BodyRule::Erase => drop(audit::erase(txn, &v.audit_key, v.seq)?),
        }
    }
    drop((events, dedupe, bizkeys));
    if highest > removed_through(txn)? {
        txn.open_table(META)?
            .insert(REMOVED_THROUGH, &highest.to_be_bytes()[..])?;
    }
    Ok(removed)
}
