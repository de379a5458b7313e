//! The identity graph's own database file (`identity.redb` next to `inlet.redb`).
//!
//! The graph is derived data: the identity indexer rebuilds it from the log. Keeping it in a
//! file of its own lets the indexer write it from a thread of its own, with its own write
//! transactions and fsyncs, so the ingest writer never spends time on it (it was about a
//! third of the writer thread in bulk loads).
//!
//! Because it can always be rebuilt, the file is treated as disposable:
//! - it is bound to the log it was built from ([`BOUND`]: the seq and a hash of the last
//!   event it indexed); when the log no longer holds that event (another `inlet.redb` was put
//!   in place, a backup restored over the data dir), the graph is emptied on open;
//! - a graph file that cannot be opened for any reason but another process holding it
//!   (damaged, unreadable for this user) is replaced by an empty one;
//! - after a failed commit the indexer drops the handle and opens the file again later.

use crate::store::Result;
use crate::store::tables::{EVENTS, META};
use redb::{Database, DatabaseError, ReadableDatabase};
use ring::digest;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The graph's file inside the data dir.
pub const GRAPH_FILE: &str = "identity.redb";

/// Page cache of the graph database: merges stream through it, so little is needed.
pub const GRAPH_CACHE_BYTES: usize = 8 << 20;

/// [`META`] key of the graph: `seq u64 BE ++ first 16 bytes of SHA-256(record)` of the last
/// event indexed, absent while nothing is.
pub const BOUND: &str = "identity_bound";

/// Where the graph lives.
enum Home {
    File(PathBuf),
    /// A test's storage backend for the log: the graph is kept in memory (it is rebuilt
    /// after every reopen).
    Memory,
}

/// The graph database's handle, absent while it is being reopened.
pub struct Graph {
    home: Home,
    db: RwLock<Option<Arc<Database>>>,
    /// Bumped by [`Graph::replace`] before the new file is in place: what was handed to the
    /// indexer before may hold events an erasure removed.
    generation: AtomicU64,
}

impl Graph {
    /// The graph file in `dir`, not opened yet ([`Graph::reopen`]).
    pub fn file(dir: &std::path::Path) -> Graph {
        Graph {
            home: Home::File(dir.join(GRAPH_FILE)),
            db: RwLock::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// A graph kept in memory, not opened yet.
    pub fn in_memory() -> Graph {
        Graph {
            home: Home::Memory,
            db: RwLock::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// How many times the graph was replaced ([`Graph::replace`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The current handle; `None` after a failure until [`Graph::reopen`] succeeded.
    pub fn get(&self) -> Option<Arc<Database>> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drops the current handle (after a failed commit redb refuses every later operation).
    pub fn close(&self) {
        self.db.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Opens the database (again: redb repairs it if a commit did not complete). A file that
    /// cannot be opened for any reason but another holder (damaged, of a format redb does not
    /// read, not readable by this user) is removed and created anew: it holds nothing that
    /// cannot be rebuilt. A new file gets the owner of the log's file (a CLI run as root must
    /// not leave a file the service user cannot open).
    pub fn reopen(&self) -> Result<Arc<Database>> {
        self.close();
        let db = match &self.home {
            Home::Memory => builder().create_with_backend(redb::backends::InMemoryBackend::new())?,
            Home::File(path) => {
                let mut fresh = !path.exists();
                // A file this user cannot open is handled below, with the other unusable ones.
                let _ = crate::store::private_file(path);
                let db = match builder().create(path) {
                    Ok(db) => db,
                    Err(e @ DatabaseError::DatabaseAlreadyOpen) => {
                        return Err(crate::store::open_error(e));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path.display(), "the identity graph's file is unusable; starting it anew (the indexer rebuilds it from the log)");
                        std::fs::remove_file(path)?;
                        fresh = true;
                        crate::store::private_file(path)?;
                        builder().create(path)?
                    }
                };
                if fresh {
                    give_owner_of_log(path);
                }
                db
            }
        };
        // Read transactions never meet a missing table.
        let txn = crate::store::begin_write(&db)?;
        txn.open_table(META)?;
        txn.commit()?;
        let db = Arc::new(db);
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db.clone());
        Ok(db)
    }

    /// Replaces the graph by an empty one in a new file (an erasure: redb keeps the bytes of
    /// freed pages, so emptying the old file would leave erased identifiers in it). Holders of
    /// the old handle finish on the unlinked file; the indexer rebuilds from the log.
    pub fn replace(&self) -> Result<Arc<Database>> {
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        slot.take();
        self.generation.fetch_add(1, Ordering::SeqCst);
        let db = match &self.home {
            Home::Memory => builder().create_with_backend(redb::backends::InMemoryBackend::new())?,
            Home::File(path) => {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
                crate::store::private_file(path)?;
                give_owner_of_log(path);
                builder().create(path)?
            }
        };
        let txn = crate::store::begin_write(&db)?;
        txn.open_table(META)?;
        txn.commit()?;
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// The graph's database, or an error naming why there is none.
    pub fn db(&self) -> Result<Arc<Database>> {
        self.get().ok_or(crate::store::Error::Reopening)
    }
}

/// A redb builder for the graph: the appliance's settings with the graph's smaller cache.
fn builder() -> redb::Builder {
    let mut b = crate::store::builder();
    b.set_cache_size(GRAPH_CACHE_BYTES);
    b
}

/// Gives `path` the owner of the log's file next to it, when this process may (root).
fn give_owner_of_log(path: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let log = path.with_file_name(crate::store::DB_FILE);
    if let Ok(owner) = std::fs::metadata(log) {
        // Only root may give a file away; anyone else already owns what it creates.
        let _ = std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()));
    }
}

/// The [`BOUND`] value for the event `seq` stored as `record`.
pub fn bound(seq: u64, record: &[u8]) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&seq.to_be_bytes());
    out[8..].copy_from_slice(&digest::digest(&digest::SHA256, record).as_ref()[..16]);
    out
}

/// Whether the graph in `graph` was built from the log in `main`: its last indexed event is
/// still stored, unchanged (true for an empty graph).
pub fn matches_log(graph: &Database, main: &Database) -> Result<bool> {
    let g = graph.begin_read()?;
    let stored = g.open_table(META)?.get(BOUND)?.map(|v| v.value().to_vec());
    let Some(stored) = stored else {
        return Ok(true);
    };
    let Some(seq) = stored.get(..8).and_then(|b| b.try_into().ok()) else {
        return Ok(false);
    };
    let seq = u64::from_be_bytes(seq);
    let log = main.begin_read()?;
    let events = log.open_table(EVENTS)?;
    Ok(events
        .get(seq)?
        .is_some_and(|r| bound(seq, r.value())[..] == stored[..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::identity::catch_up;
    use crate::identity::tests::{append, cursor, graph_keys, stored};
    use crate::store::Store;

    fn with_user(seq: u64, user: &str) -> crate::store::codec::EventRecord {
        let mut r = stored(seq, &[("device_id", &format!("d{seq}"))]);
        r.user_id = Some(user.into());
        r
    }

    fn profile_events(store: &Identity, id: &str) -> usize {
        store
            .profile("default", id, 100)
            .unwrap()
            .map_or(0, |p| p.events.len())
    }

    /// The graph lives in its own file, survives a reopen, and is emptied when the log next to
    /// it is not the one it was built from.
    #[test]
    fn a_graph_of_another_log_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        {
            let store = Identity::open(&Store::open(dir.path()).unwrap());
            append(&store, &[with_user(1, "u"), with_user(2, "u")]);
            assert_eq!(catch_up(&store).unwrap(), 2);
            let store = Identity::open(&Store::open(other.path()).unwrap());
            append(&store, &[with_user(1, "v")]);
        }
        assert!(dir.path().join(GRAPH_FILE).is_file());
        let store = Identity::open(&Store::open(dir.path()).unwrap());
        assert_eq!((cursor(&store), graph_keys(&store).0), (2, 2), "kept");
        assert_eq!(profile_events(&store, "u"), 2);
        drop(store);

        // Another log put in place (as by hand, or a restore over the data dir).
        std::fs::copy(
            other.path().join(crate::store::DB_FILE),
            dir.path().join(crate::store::DB_FILE),
        )
        .unwrap();
        let store = Identity::open(&Store::open(dir.path()).unwrap());
        assert_eq!((cursor(&store), graph_keys(&store)), (0, (0, 0)), "emptied");
        assert_eq!(profile_events(&store, "u"), 0);
        assert_eq!(profile_events(&store, "v"), 1);
        assert_eq!(catch_up(&store).unwrap(), 1);
        // (The raw appends of this test have no dedupe entries or counters; the graph's part
        // of verify must be clean.)
        let problems = crate::ops::verify::with_graph(&store).unwrap().problems;
        assert!(
            !problems.iter().any(|p| p.contains("identity")),
            "{problems:?}"
        );
    }

    /// A damaged graph file does not stop the log from opening: it is replaced and rebuilt.
    #[test]
    fn a_damaged_graph_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Identity::open(&Store::open(dir.path()).unwrap());
            append(&store, &[with_user(1, "u"), with_user(2, "u")]);
            catch_up(&store).unwrap();
        }
        std::fs::write(dir.path().join(GRAPH_FILE), b"not a database at all").unwrap();
        let store = Identity::open(&Store::open(dir.path()).unwrap());
        assert_eq!(cursor(&store), 0);
        assert_eq!(profile_events(&store, "u"), 2, "the tail answers meanwhile");
        assert_eq!(catch_up(&store).unwrap(), 2);
        assert_eq!(graph_keys(&store).0, 2);
    }
}
