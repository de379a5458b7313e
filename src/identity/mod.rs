//! The identity graph: per app, identifiers that appear together in one stored event are
//! linked, whatever dialect the event came in.
//!
//! An identifier is a (kind, value) pair: the canonical field it came from (`install_uuid`,
//! `user_id`, `anonymous_id`, or the name of an `ids` entry such as `af_user_id`,
//! `player_id`, `device_id`). Kinds keep `player_id "1"` and `device_id "1"` apart.
//!
//! Storage is one set of sorted runs ([`crate::store::runs`], named [`RUNS`]) in the graph's
//! own database file ([`graph`]), holding two kinds of keys, derived from the log by the
//! identity indexer ([`index_step`]), which runs on a thread of its own ([`indexer`], a
//! listener of the writer), never in an ingest commit. The store knows nothing of it:
//! [`Identity`] holds the store and the graph.
//!
//! - event entries, [`TAG_EVENT`] ++ app ++ identifier ++ seq: every stored event under its
//!   first identifier (one entry per event: all of an event's identifiers are in one
//!   profile, and a profile's events are read under all of its identifiers);
//! - links, [`TAG_LINK`] ++ app ++ a ++ b, both directions. An event with identifiers
//!   `i0, i1, ..., ik` links `i0` with each other one (a star: connected with k edges instead
//!   of k² pairs).
//! - the graph's [`META`] [`INDEXED_SEQ`]: the cursor. Every event up to it is in the runs;
//!   it advances in the transaction that wrote the run, so graph and cursor always agree
//!   (with [`graph::BOUND`], which ties the graph to the log it was built from).
//!
//! The indexer reads up to [`INDEX_CHUNK`] events after the cursor, sorts their keys and
//! writes them as a new run (appends), then advances the background merges of the runs by a
//! bounded number of keys. Random-key inserts into one big B-tree (each dirtying its own
//! page) were a quarter of all server CPU at 1M events and grew with the graph; sorted runs
//! cost a few sequential rewrites per key instead.
//!
//! A profile is the connected component of an identifier, found by a breadth-first walk at
//! read time over the indexed graph *plus* the tail (the events after the cursor, read from
//! the log in a read transaction begun after the graph's), so it is exact however far the
//! indexer is behind.
//! Merging two profiles costs nothing at write time (no relabelling, unlike a union-find
//! with stored roots).
//!
//! Placeholder values (`""`, all zeros like the zeroed IDFA
//! `00000000-0000-0000-0000-000000000000`, `null`, `undefined`, `unknown`, `none`) are not
//! identifiers: linking them would merge unrelated people.

pub mod graph;
pub mod indexer;

use crate::store::codec::{
    App, EventRecord, IdentityView, decode_config, decode_event, identity_view,
};
use crate::store::read::Canonical;
use crate::store::runs::{Reader, RunSet};
use crate::store::tables::{APPS, EVENTS, META};
use crate::store::{Result, Store, find_app};
use graph::{BOUND, Graph, bound};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Most identifiers a profile walk visits; a larger component is reported truncated.
pub const MAX_PROFILE_IDENTIFIERS: usize = 10_000;

/// `u16 BE len ++ value ++ u16 BE len ++ kind`: self-delimiting, value first so that every
/// kind of one value shares a key prefix.
pub fn encode(kind: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + kind.len() + value.len());
    push_part(&mut out, value);
    push_part(&mut out, kind);
    out
}

fn push_part(out: &mut Vec<u8>, part: &str) {
    // Identifiers and kinds are at most 256 characters (event validation): far below u16.
    let len = part.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&part.as_bytes()[..len]);
}

/// The (kind, value) of an encoded identifier at the start of `bytes`, and its length.
pub fn decode(bytes: &[u8]) -> Option<((String, String), usize)> {
    let (value, a) = part(bytes)?;
    let (kind, b) = part(&bytes[a..])?;
    Some(((kind, value), a + b))
}

fn part(bytes: &[u8]) -> Option<(String, usize)> {
    let len = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
    let s = std::str::from_utf8(bytes.get(2..2 + len)?).ok()?;
    Some((s.to_owned(), 2 + len))
}

/// Whether `value` is a placeholder rather than an identifier.
pub fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    v.bytes().all(|b| b == b'0' || b == b'-')
        || ["null", "undefined", "unknown", "none", "nil"]
            .iter()
            .any(|p| v.eq_ignore_ascii_case(p))
}

/// The encoded identifiers of a stored event (read through [`IdentityView`]), first
/// occurrence of each, placeholders left out: `install_uuid`, `user_id`, `anonymous_id`,
/// then `ids` in order (the canonical fields every dialect fills). The one function that
/// decides what the graph links: the indexer, the tail of profile reads and `verify` use it.
pub fn view_identifiers(v: &IdentityView<'_>) -> Vec<Vec<u8>> {
    identifiers_of(
        v.install_uuid,
        v.user_id,
        v.anonymous_id,
        v.ids.iter().copied(),
    )
}

fn identifiers_of<'a>(
    install_uuid: Option<&'a str>,
    user_id: Option<&'a str>,
    anonymous_id: Option<&'a str>,
    ids: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<Vec<u8>> {
    let named = [
        ("install_uuid", install_uuid),
        ("user_id", user_id),
        ("anonymous_id", anonymous_id),
    ];
    let mut out: Vec<Vec<u8>> = Vec::new();
    let all = named
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .chain(ids);
    for (kind, value) in all {
        if is_placeholder(value) {
            continue;
        }
        let enc = encode(kind, value);
        if !out.contains(&enc) {
            out.push(enc);
        }
    }
    out
}

/// [`META`] key: every event with a seq up to this one (u64 BE) is in the graph. Events
/// after it are the tail that [`index_step`] catches up and that profile reads scan.
pub const INDEXED_SEQ: &str = "identity_indexed_seq";

/// Most events one [`index_step`] indexes (one write transaction, one new run).
pub const INDEX_CHUNK: usize = 20_000;

/// The name of the graph's run set (in [`META`], and in its run tables' names).
pub const RUNS: &str = "identity";

/// Keys of the run set: an event under its first identifier, or a link.
pub const TAG_EVENT: u8 = 0;
pub const TAG_LINK: u8 = 1;

/// Most keys of background merges one [`index_step`] writes: enough for merges to keep up
/// with the new runs (each key is rewritten about log_8(keys / chunk) times; a step follows
/// every chunk, and steps continue while the log is idle), small enough that the dirty
/// pages a step holds until its commit stay a few MiB (the graph's transactions run beside
/// the writer's, so both hold theirs at once).
pub const MERGE_STEP_KEYS: usize = 100_000;

/// The graph's cursor: every stored event with a seq up to it is indexed (0: none).
pub fn indexed_seq(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    Ok(meta
        .get(INDEXED_SEQ)?
        .and_then(|b| b.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// The run keys of a chunk of events, in one buffer (a chunk has tens of thousands of keys:
/// one allocation each, and their sorting and freeing, were most of the indexer's time).
#[derive(Default)]
struct ChunkKeys {
    bytes: Vec<u8>,
    /// (first 16 bytes of the key as two big-endian halves, zero-padded; start; end) of
    /// each key: 24 bytes, where a `u128` head (16-byte aligned) made it 32.
    keys: Vec<([u64; 2], u32, u32)>,
}

impl ChunkKeys {
    fn push(&mut self, parts: &[&[u8]]) {
        let start = self.bytes.len();
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        let key = &self.bytes[start..];
        let mut head = [0u8; 16];
        let n = key.len().min(16);
        head[..n].copy_from_slice(&key[..n]);
        let head = u128::from_be_bytes(head);
        self.keys.push((
            [(head >> 64) as u64, head as u64],
            start as u32,
            self.bytes.len() as u32,
        ));
    }

    fn key(&self, k: &([u64; 2], u32, u32)) -> &[u8] {
        &self.bytes[k.1 as usize..k.2 as usize]
    }

    /// The run keys of one stored event: its event entry (under its first identifier) and
    /// its star of links, both directions.
    fn add_event(&mut self, app_id: u32, seq: u64, idents: &[Vec<u8>]) {
        let Some((first, rest)) = idents.split_first() else {
            return;
        };
        let app = app_id.to_be_bytes();
        self.push(&[&[TAG_EVENT], &app, first, &seq.to_be_bytes()]);
        for other in rest {
            self.push(&[&[TAG_LINK], &app, first, other]);
            self.push(&[&[TAG_LINK], &app, other, first]);
        }
    }

    /// The keys sorted, each once.
    fn sorted(&mut self) -> Vec<&[u8]> {
        let mut keys = std::mem::take(&mut self.keys);
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| self.key(a).cmp(self.key(b))));
        let mut out: Vec<&[u8]> = keys.iter().map(|k| self.key(k)).collect();
        out.dedup();
        out
    }
}

/// Indexes the events of the log (read in `log`) after the cursor, up to `through` (the
/// newest committed seq) and at most [`INDEX_CHUNK`] of them, as one new run, advances the
/// cursor, and advances the runs' merges by at most [`MERGE_STEP_KEYS`], all in `txn` (a
/// write transaction of the graph's database): the graph and its cursor commit together, so
/// after a crash the next step starts where the last committed one ended (re-indexing is
/// idempotent anyway: the run set is a set). Returns the new cursor and whether merge work
/// is left.
pub fn index_step(
    log: &redb::ReadTransaction,
    txn: &WriteTransaction,
    through: u64,
) -> Result<Indexed> {
    let from = indexed_seq(&txn.open_table(META)?)?;
    let mut cursor = from;
    if from < through {
        let app_ids: HashMap<String, u32> = {
            let apps = log.open_table(APPS)?;
            let mut m = HashMap::new();
            for row in apps.iter()? {
                let (id, bytes) = row?;
                let app: App = decode_config("app", bytes.value())?;
                m.insert(app.name, id.value());
            }
            m
        };
        let mut keys = ChunkKeys::default();
        cursor = through;
        let last_read = {
            let events = log.open_table(EVENTS)?;
            // The last event read (its record is hashed into the graph's binding once).
            let mut last = None;
            for (n, row) in events.range(from + 1..=through)?.enumerate() {
                let (seq, bytes) = row?;
                let seq = seq.value();
                if n == INDEX_CHUNK {
                    // The chunk is full: everything before this event is indexed.
                    cursor = seq - 1;
                    break;
                }
                let v = identity_view(bytes.value())?;
                // An app is never deleted while it has events; a missing one has nothing to
                // link.
                if let Some(&app_id) = app_ids.get(v.app) {
                    keys.add_event(app_id, seq, &view_identifiers(&v));
                }
                last = Some((seq, bytes));
            }
            last.map(|(seq, bytes)| bound(seq, bytes.value()))
        };
        write_chunk(txn, &mut keys, cursor, last_read)?;
    }
    let merging = RunSet::merge_step(txn, RUNS, MERGE_STEP_KEYS)?;
    Ok(Indexed { cursor, merging })
}

/// Writes a chunk's keys as one new run and moves the cursor (and the binding, when the
/// chunk read an event) with it.
fn write_chunk(
    txn: &WriteTransaction,
    keys: &mut ChunkKeys,
    cursor: u64,
    bound: Option<[u8; 24]>,
) -> Result<()> {
    RunSet::add(txn, RUNS, keys.sorted())?;
    let mut meta = txn.open_table(META)?;
    meta.insert(INDEXED_SEQ, &cursor.to_be_bytes()[..])?;
    if let Some(b) = bound {
        meta.insert(BOUND, &b[..])?;
    }
    Ok(())
}

/// The graph keys of events the writer handed over after their commit
/// ([`crate::store::writer::Stored`]): seqs `first..=last` of the log, without gaps, made
/// from the records as committed, so that indexing them reads nothing back from the log.
/// Indexed by [`step_fed`] when they continue the graph's cursor; otherwise the log is read.
pub struct Fed {
    first: u64,
    last: u64,
    /// [`graph::Graph::generation`] when the first of them was handed over.
    generation: u64,
    keys: ChunkKeys,
    bound: Option<[u8; 24]>,
}

impl Fed {
    /// The events handed over in `stored` (seqs without gaps, in order), of graph
    /// generation `generation`.
    pub fn new(stored: &crate::store::writer::Stored, generation: u64) -> Result<Option<Fed>> {
        let Some(&(first, _, _)) = stored.events.first() else {
            return Ok(None);
        };
        let mut fed = Fed {
            first,
            last: first - 1,
            generation,
            keys: ChunkKeys::default(),
            bound: None,
        };
        fed.extend(stored)?;
        Ok(Some(fed))
    }

    /// Adds `stored` when it continues these events in the same generation; `false` (and
    /// nothing added) otherwise.
    pub fn add(&mut self, stored: &crate::store::writer::Stored, generation: u64) -> Result<bool> {
        match stored.events.first() {
            Some(&(seq, _, _)) if seq == self.last + 1 && generation == self.generation => {
                self.extend(stored)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn extend(&mut self, stored: &crate::store::writer::Stored) -> Result<()> {
        for (seq, app_id, record) in &stored.events {
            debug_assert_eq!(*seq, self.last + 1, "handed over with a gap");
            let v = identity_view(record)?;
            self.keys.add_event(*app_id, *seq, &view_identifiers(&v));
            self.last = *seq;
        }
        if let Some((seq, _, record)) = stored.events.last() {
            self.bound = Some(bound(*seq, record));
        }
        Ok(())
    }

    /// The first seq it holds.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The last seq it holds.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Events it holds.
    pub fn events(&self) -> u64 {
        self.last + 1 - self.first
    }

    /// The generation of the graph it was handed over in.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Indexes `fed` as one new run when it continues the graph's cursor exactly and the graph
/// is still of `fed`'s generation (an erasure replaced none since), then a bounded merge
/// step, all in one commit of the graph; `Ok(None)` (nothing written) when it does not fit,
/// and the log is read instead ([`step`]).
pub fn step_fed(identity: &Identity, fed: &mut Fed) -> Result<Option<Step>> {
    // The handle first: a replaced graph's generation is bumped before its new handle is in
    // place, so a new handle always comes with the new generation.
    let graph = identity.graph.db()?;
    if identity.graph.generation() != fed.generation {
        return Ok(None);
    }
    let txn = crate::store::begin_write(&graph)?;
    let before = indexed_seq(&txn.open_table(META)?)?;
    if before + 1 != fed.first {
        return Ok(None);
    }
    write_chunk(&txn, &mut fed.keys, fed.last, fed.bound)?;
    let merging = RunSet::merge_step(&txn, RUNS, MERGE_STEP_KEYS)?;
    txn.commit()?;
    Ok(Some(Step {
        before,
        after: Indexed {
            cursor: fed.last,
            merging,
        },
        through: fed.last,
    }))
}

/// Where an indexing step left the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    /// The graph's cursor: every event up to it is indexed.
    pub cursor: u64,
    /// Merges of the runs are left.
    pub merging: bool,
}

/// What one [`step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The cursor before the step.
    pub before: u64,
    /// The cursor after it, and whether merges are left.
    pub after: Indexed,
    /// The newest seq of the log's snapshot the step read.
    pub through: u64,
}

/// The graph's part of [`Store::verify`]: the runs decode, and they hold exactly the events
/// up to the cursor (each with an identifier under its first one; none after the cursor).
/// `txn` reads the graph's database; `events` are the stored (seq, app id, encoded record)
/// in log order, read after it.
pub(crate) fn check(
    txn: &redb::ReadTransaction,
    events: &mut dyn Iterator<Item = Result<(u64, Option<u32>, Vec<u8>)>>,
    problems: &mut Vec<String>,
) -> Result<()> {
    let cursor = indexed_seq(&txn.open_table(META)?)?;
    let runs = match Reader::open(txn, RUNS) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("identity runs: {e}"));
            return Ok(());
        }
    };
    let keys = match runs.with_prefix(&[TAG_EVENT]) {
        Ok(k) => k,
        Err(e) => {
            problems.push(format!("identity runs: {e}"));
            return Ok(());
        }
    };
    let indexed: HashSet<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    if let Some(k) = keys
        .iter()
        .map(|k| u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8 bytes")))
        .max()
        .filter(|&seq| seq > cursor)
    {
        problems.push(format!(
            "identity graph holds seq {k}, past its cursor {cursor}"
        ));
    }
    for row in events {
        let (seq, app_id, bytes) = row?;
        let Some(app_id) = app_id.filter(|_| seq <= cursor) else {
            continue;
        };
        let v = identity_view(&bytes)?;
        let idents = view_identifiers(&v);
        let Some(first) = idents.first() else {
            continue;
        };
        let key = [
            &[TAG_EVENT][..],
            &app_id.to_be_bytes(),
            first,
            &seq.to_be_bytes(),
        ]
        .concat();
        if !indexed.contains(key.as_slice()) {
            problems.push(format!(
                "seq {seq}: indexed (cursor {cursor}) but not in the identity graph"
            ));
        }
    }
    Ok(())
}

/// Empties the graph (in `txn`, a write transaction of the graph's database): its runs, its
/// cursor and its binding to the log. The indexer then rebuilds it from the first event.
pub fn reset(txn: &WriteTransaction) -> Result<()> {
    let mut meta = txn.open_table(META)?;
    crate::store::runs::clear(txn, &mut meta, RUNS)?;
    meta.remove(INDEXED_SEQ)?;
    meta.remove(BOUND)?;
    Ok(())
}

/// One indexing step of `store`'s graph (a read of the log, a commit of the graph's
/// database) up to the newest stored event.
pub fn step(identity: &Identity) -> Result<Step> {
    step_until(identity, u64::MAX)
}

/// [`step`], reading the log no further than `until` (where events handed over begin).
pub fn step_until(identity: &Identity, until: u64) -> Result<Step> {
    let graph = identity.graph.db()?;
    // The graph's transaction first: it is the only writer of the graph, and the log's
    // snapshot then holds at least every event up to the graph's cursor.
    let txn = crate::store::begin_write(&graph)?;
    let log = identity.store.db()?.begin_read()?;
    let through = log
        .open_table(EVENTS)?
        .last()?
        .map_or(0, |(k, _)| k.value())
        .min(until);
    let before = indexed_seq(&txn.open_table(META)?)?;
    let after = index_step(&log, &txn, through)?;
    drop(log);
    txn.commit()?;
    Ok(Step {
        before,
        after,
        through,
    })
}

/// Indexes everything stored so far, in steps of [`INDEX_CHUNK`] events (the tests' way to
/// bring the graph up to date without an indexer thread).
#[cfg(test)]
pub(crate) fn catch_up(identity: &Identity) -> Result<u64> {
    loop {
        let Step {
            before,
            after: Indexed { cursor, merging },
            through,
        } = step(identity)?;
        if (cursor >= through || cursor == before) && !merging {
            return Ok(cursor);
        }
    }
}

/// Every identifier linked to a given one, and the profile's events.
#[derive(Debug, Clone)]
pub struct Profile {
    /// (kind, value), in the order the walk found them (the asked-for one first).
    pub identifiers: Vec<(String, String)>,
    /// The profile's events, most recently stored first: (seq, record).
    pub events: Vec<(u64, EventRecord)>,
    /// The walk stopped at [`MAX_PROFILE_IDENTIFIERS`].
    pub truncated: bool,
}

impl Profile {
    /// The JSON document of `inlet profile --json` (and the admin API):
    /// `{"app", "id", "identifiers": [{"kind", "value"}], "truncated", "events": [canonical]}`.
    pub fn to_json(&self, app: &str, id: &str) -> serde_json::Value {
        let events: Vec<serde_json::Value> = self
            .events
            .iter()
            .filter_map(|(seq, r)| serde_json::to_value(Canonical::new(*seq, r)).ok())
            .collect();
        let identifiers: Vec<serde_json::Value> = self
            .identifiers
            .iter()
            .map(|(k, v)| serde_json::json!({ "kind": k, "value": v }))
            .collect();
        serde_json::json!({
            "app": app, "id": id, "identifiers": identifiers, "truncated": self.truncated,
            "events": events,
        })
    }
}

/// The identity graph of a store: the store and the graph's own database, derived from its
/// log. Clones share both.
#[derive(Clone)]
pub struct Identity {
    /// Declared before the store so that it is closed first: a process that then gets the
    /// log's lock finds the graph's free too.
    graph: Arc<Graph>,
    store: Store,
}

impl Identity {
    /// The graph of `store`, in its file next to the log ([`graph::GRAPH_FILE`]).
    pub fn open(store: &Store) -> Identity {
        Identity::with(store, Graph::file(store.data_dir()))
    }

    /// The graph of `store` kept in memory (rebuilt from the log by each process): for a
    /// store opened on a test's storage backend.
    pub fn in_memory(store: &Store) -> Identity {
        Identity::with(store, Graph::in_memory())
    }

    fn with(store: &Store, graph: Graph) -> Identity {
        let identity = Identity {
            graph: Arc::new(graph),
            store: store.clone(),
        };
        // The log does not depend on its derived graph: a graph that cannot be opened now
        // (e.g. no room for a new file on a full disk) leaves profiles unavailable, and the
        // indexer tries again.
        if let Err(e) = identity.open_graph() {
            tracing::error!(error = %e, "opening the identity graph failed; profiles are unavailable until it opens");
        }
        identity
    }

    /// The store whose log the graph is derived from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The graph's database, or an error naming why there is none.
    pub fn graph_db(&self) -> Result<Arc<redb::Database>> {
        self.graph.db()
    }

    /// Opens the graph's database (again). A graph built from another log (a different
    /// `inlet.redb` put in place, a backup restored over the data dir) is emptied: the
    /// indexer rebuilds it from this one.
    pub(crate) fn open_graph(&self) -> Result<()> {
        let g = self.graph.reopen()?;
        if !graph::matches_log(&g, &*self.store.db()?)? {
            tracing::warn!("the identity graph was built from another log; rebuilding it");
            let txn = crate::store::begin_write(&g)?;
            reset(&txn)?;
            txn.commit()?;
        }
        Ok(())
    }

    /// Starts the graph anew in a fresh file (after an erasure removed events from the log):
    /// nothing of the old file is kept; the indexer rebuilds it, and profiles stay exact
    /// meanwhile (they walk the log after the cursor).
    pub fn forget_graph(&self) -> Result<()> {
        self.graph.replace()?;
        Ok(())
    }

    /// The profile of identifier value `id` (of any kind) in `app`, with at most `limit`
    /// events; `None` when no stored event of the app carries that identifier.
    pub fn profile(&self, app: &str, id: &str, limit: usize) -> Result<Option<Profile>> {
        self.profile_of_kind(app, None, id, limit)
    }

    /// Like [`Identity::profile`], starting only from the identifier of that kind when `kind` is
    /// given (a value known under several kinds, such as user id `42` and player id `42`,
    /// otherwise shows all of their profiles together).
    pub fn profile_of_kind(
        &self,
        app: &str,
        kind: Option<&str>,
        id: &str,
        limit: usize,
    ) -> Result<Option<Profile>> {
        // The graph's snapshot first, then the log's: the log then holds every event up to
        // the graph's cursor, and the tail after it.
        let graph = self.graph.db()?.begin_read()?;
        let runs = Reader::open(&graph, RUNS)?;
        let cursor = indexed_seq(&graph.open_table(META)?)?;
        let txn = self.store.db()?.begin_read()?;
        let app_id = find_app(&txn.open_table(APPS)?, app)?
            .ok_or_else(|| crate::store::Error::NotFound(format!("no app {app:?}")))?
            .0;
        let app_prefix = app_id.to_be_bytes();
        let events_table = txn.open_table(EVENTS)?;
        let tail = Tail::read(&events_table, cursor, app)?;

        // Every kind this value is known under: one seek per kind, among the event entries
        // and among the links (an identifier that was never first in an event is only there).
        let mut start: Vec<Vec<u8>> = Vec::new();
        for tag in [TAG_EVENT, TAG_LINK] {
            let head = [&[tag][..], &app_prefix].concat();
            let mut value_prefix = head.clone();
            push_part(&mut value_prefix, id);
            let mut lower = value_prefix.clone();
            while let Some(next) = runs.first_from(&lower)? {
                if !next.starts_with(&value_prefix) {
                    break;
                }
                let Some(((found_kind, _), len)) = decode(&next[head.len()..]) else {
                    break;
                };
                let ident = next[head.len()..head.len() + len].to_vec();
                // Past every key of this identifier: what follows it (a seq, or another
                // identifier whose length prefix is below 0xFF00) is below 0xFF ×9.
                lower = [&head[..], &ident, &[0xFF; 9]].concat();
                if kind.is_none_or(|k| k == found_kind) && !start.contains(&ident) {
                    start.push(ident);
                }
            }
        }
        let mut from_tail: Vec<&Vec<u8>> = tail
            .identifiers()
            .filter(|ident| {
                decode(ident).is_some_and(|((found_kind, value), _)| {
                    value == id && kind.is_none_or(|k| k == found_kind)
                })
            })
            .collect();
        from_tail.sort();
        for ident in from_tail {
            if !start.contains(ident) {
                start.push(ident.clone());
            }
        }
        if start.is_empty() {
            return Ok(None);
        }

        let mut seen: HashSet<Vec<u8>> = start.iter().cloned().collect();
        let mut order: Vec<Vec<u8>> = start.clone();
        let mut queue: VecDeque<Vec<u8>> = start.into();
        let mut truncated = false;
        let link_head = [&[TAG_LINK][..], &app_prefix].concat();
        while let Some(node) = queue.pop_front() {
            let prefix = [&link_head[..], &node].concat();
            let indexed = runs
                .with_prefix(&prefix)?
                .into_iter()
                .map(|k| k[prefix.len()..].to_vec());
            let from_tail = tail.links.get(&node).into_iter().flatten().cloned();
            for neighbour in indexed.chain(from_tail) {
                if seen.contains(&neighbour) {
                    continue;
                }
                if seen.len() >= MAX_PROFILE_IDENTIFIERS {
                    truncated = true;
                    break;
                }
                seen.insert(neighbour.clone());
                order.push(neighbour.clone());
                queue.push_back(neighbour);
            }
        }

        // The newest `limit` stored seqs under each identifier, merged. Entries of events
        // that retention removed are skipped (the runs keep them).
        let mut seqs: BTreeSet<u64> = BTreeSet::new();
        let event_head = [&[TAG_EVENT][..], &app_prefix].concat();
        for ident in &order {
            let prefix = [&event_head[..], ident].concat();
            let mut mine: Vec<u64> = runs
                .with_prefix(&prefix)?
                .into_iter()
                .filter(|k| k.len() == prefix.len() + 8)
                .map(|k| u64::from_be_bytes(k[prefix.len()..].try_into().expect("8 bytes")))
                .collect();
            mine.extend(tail.events.get(ident).into_iter().flatten());
            mine.sort_unstable_by(|a, b| b.cmp(a));
            mine.dedup();
            let mut kept = 0;
            for seq in mine {
                if kept == limit {
                    break;
                }
                if events_table.get(seq)?.is_some() {
                    seqs.insert(seq);
                    kept += 1;
                }
            }
        }
        let mut events = Vec::new();
        let mut expand = crate::store::enrichments::Expand::new(&txn)?;
        for seq in seqs.into_iter().rev().take(limit) {
            if let Some(bytes) = events_table.get(seq)? {
                let mut r = decode_event(bytes.value())?;
                expand.record(&mut r)?;
                events.push((seq, r));
            }
        }
        let identifiers = order
            .iter()
            .filter_map(|i| decode(i).map(|(pair, _)| pair))
            .collect();
        Ok(Some(Profile {
            identifiers,
            events,
            truncated,
        }))
    }
}

/// The graph of the events after the cursor, not indexed yet: built in memory from the log at
/// read time, so that a profile is exact however far the indexer is behind.
#[derive(Default)]
struct Tail {
    /// Identifier → the seqs of the tail events indexed under it (their first identifier).
    events: HashMap<Vec<u8>, Vec<u64>>,
    /// Identifier → its tail neighbours (the same star of links the indexer writes).
    links: HashMap<Vec<u8>, Vec<Vec<u8>>>,
}

impl Tail {
    fn read(log: &impl ReadableTable<u64, &'static [u8]>, cursor: u64, app: &str) -> Result<Tail> {
        let mut tail = Tail::default();
        for row in log.range(cursor.saturating_add(1)..)? {
            let (seq, bytes) = row?;
            let v = identity_view(bytes.value())?;
            if v.app != app {
                continue;
            }
            let idents = view_identifiers(&v);
            let Some((first, rest)) = idents.split_first() else {
                continue;
            };
            tail.events
                .entry(first.clone())
                .or_default()
                .push(seq.value());
            for other in rest {
                tail.links
                    .entry(first.clone())
                    .or_default()
                    .push(other.clone());
                tail.links
                    .entry(other.clone())
                    .or_default()
                    .push(first.clone());
            }
        }
        Ok(tail)
    }

    fn identifiers(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.events.keys().chain(self.links.keys())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn encoding_round_trips_and_groups_by_value() {
        let e = encode("user_id", "u:1\0x");
        assert_eq!(
            decode(&e),
            Some(((("user_id".into()), "u:1\0x".into()), e.len()))
        );
        let a = encode("user_id", "42");
        let b = encode("player_id", "42");
        let c = encode("user_id", "421");
        let value_prefix = &a[..4];
        assert!(b.starts_with(value_prefix));
        assert!(
            !c.starts_with(value_prefix),
            "length prefix separates 42 from 421"
        );
        assert_eq!(decode(&[0, 5, b'a']), None);
    }

    #[test]
    fn identifiers_of_an_event() {
        let mut r = stored(
            1,
            &[
                ("idfa", "00000000-0000-0000-0000-000000000000"),
                ("player_id", "p1"),
                ("device_id", "unknown"),
            ],
        );
        r.install_uuid = Some("i1".into());
        r.user_id = Some("u1".into());
        r.anonymous_id = Some("u1".into());
        let bytes = crate::store::codec::encode_event(&r);
        let ids: Vec<_> = view_identifiers(&identity_view(&bytes).unwrap())
            .iter()
            .map(|i| decode(i).unwrap().0)
            .collect();
        assert_eq!(
            ids,
            vec![
                ("install_uuid".into(), "i1".into()),
                ("user_id".into(), "u1".into()),
                ("anonymous_id".into(), "u1".into()),
                ("player_id".into(), "p1".into()),
            ]
        );
        assert!(is_placeholder("0") && is_placeholder("NULL") && !is_placeholder("u0"));
    }

    pub(crate) fn stored(seq: u64, ids: &[(&str, &str)]) -> EventRecord {
        EventRecord {
            ids: ids
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            audit_key: format!("a{seq}"),
            ..EventRecord::for_test(&format!("e{seq}"))
        }
    }

    pub(crate) fn append(store: &Identity, records: &[EventRecord]) {
        let txn = store.store().db().unwrap().begin_write().unwrap();
        {
            let mut log = txn.open_table(EVENTS).unwrap();
            let next = log.last().unwrap().map_or(0, |(k, _)| k.value()) + 1;
            for (i, r) in records.iter().enumerate() {
                let bytes = crate::store::codec::encode_event(r);
                log.insert(next + i as u64, bytes.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    pub(crate) fn cursor(store: &Identity) -> u64 {
        let txn = store.graph.db().unwrap().begin_read().unwrap();
        indexed_seq(&txn.open_table(META).unwrap()).unwrap()
    }

    /// One [`index_step`] up to `through`; the new cursor.
    fn step_to(store: &Identity, through: u64) -> u64 {
        let graph = store.graph.db().unwrap();
        let txn = graph.begin_write().unwrap();
        let log = store.store().db().unwrap().begin_read().unwrap();
        let cursor = index_step(&log, &txn, through).unwrap().cursor;
        txn.commit().unwrap();
        cursor
    }

    /// Distinct event entries and links in the graph's runs.
    pub(crate) fn graph_keys(store: &Identity) -> (usize, usize) {
        let txn = store.graph.db().unwrap().begin_read().unwrap();
        let runs = Reader::open(&txn, RUNS).unwrap();
        (
            runs.with_prefix(&[TAG_EVENT]).unwrap().len(),
            runs.with_prefix(&[TAG_LINK]).unwrap().len(),
        )
    }

    fn reset_cursor(store: &Identity) {
        let txn = store.graph.db().unwrap().begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(INDEXED_SEQ, &0u64.to_be_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn profiles_are_connected_components() {
        let dir = tempfile::tempdir().unwrap();
        let store = Identity::open(&Store::open(dir.path()).unwrap());
        let events: &[&[(&str, &str)]] = &[
            &[("install_uuid", "i1"), ("user_id", "42")],
            &[("user_id", "42"), ("af_user_id", "af1")],
            &[("af_user_id", "af1")],
            &[("player_id", "42")],
            &[("install_uuid", "i2"), ("player_id", "42")],
        ];
        let records: Vec<EventRecord> = events
            .iter()
            .enumerate()
            .map(|(i, ids)| stored(i as u64 + 1, ids))
            .collect();
        // Three events indexed, two in the tail: profiles are the same either way.
        append(&store, &records[..3]);
        assert_eq!(catch_up(&store).unwrap(), 3);
        append(&store, &records[3..]);
        let check = |store: &Identity| {
            let kinds = |id: &str| -> Vec<(String, String)> {
                let mut v = store
                    .profile("default", id, 10)
                    .unwrap()
                    .unwrap()
                    .identifiers;
                v.sort();
                v
            };
            let seqs = |id: &str| -> Vec<u64> {
                let p = store.profile("default", id, 10).unwrap().unwrap();
                p.events.iter().map(|(s, _)| *s).collect()
            };
            // "42" is both a user id and a player id: two profiles meet in the lookup.
            assert_eq!(kinds("42").len(), 5);
            let players = store
                .profile_of_kind("default", Some("player_id"), "42", 10)
                .unwrap()
                .unwrap();
            assert_eq!(players.identifiers.len(), 2, "{:?}", players.identifiers);
            assert!(
                store
                    .profile_of_kind("default", Some("device_id"), "42", 10)
                    .unwrap()
                    .is_none()
            );
            // af1 was never the first identifier of a two-id event: found through its link.
            assert_eq!(
                kinds("af1"),
                vec![
                    ("af_user_id".into(), "af1".into()),
                    ("install_uuid".into(), "i1".into()),
                    ("user_id".into(), "42".into()),
                ]
            );
            assert_eq!(seqs("af1"), [3, 2, 1], "newest first, each once");
            assert_eq!(seqs("i2"), [5, 4]);
            assert!(store.profile("default", "nobody", 10).unwrap().is_none());
            assert!(store.profile("ghost", "42", 10).is_err());
            assert_eq!(
                store
                    .profile("default", "af1", 2)
                    .unwrap()
                    .unwrap()
                    .events
                    .len(),
                2
            );
        };
        check(&store);
        reset_cursor(&store);
        check(&store);
        // Indexing everything, and again from scratch (as after a crash before the cursor
        // was committed), changes nothing.
        assert_eq!(catch_up(&store).unwrap(), 5);
        check(&store);
        assert_eq!(graph_keys(&store), (5, 6));
        reset_cursor(&store);
        assert_eq!(catch_up(&store).unwrap(), 5);
        assert_eq!(graph_keys(&store), (5, 6));
        check(&store);
    }

    /// What the writer hands over for `records` stored from seq `first` on.
    fn handed(
        store: &Identity,
        first: u64,
        records: &[EventRecord],
    ) -> crate::store::writer::Stored {
        let txn = store.store().db().unwrap().begin_read().unwrap();
        let app = find_app(&txn.open_table(APPS).unwrap(), "default")
            .unwrap()
            .unwrap()
            .0;
        crate::store::writer::Stored {
            events: (first..)
                .zip(records)
                .map(|(seq, r)| (seq, app, crate::store::codec::encode_event(r)))
                .collect(),
        }
    }

    /// Every key of the graph's runs, and its cursor and binding.
    fn graph_state(store: &Identity) -> (Vec<Vec<u8>>, u64, Option<Vec<u8>>) {
        let txn = store.graph.db().unwrap().begin_read().unwrap();
        let keys = Reader::open(&txn, RUNS).unwrap().with_prefix(&[]).unwrap();
        let meta = txn.open_table(META).unwrap();
        let bound = meta.get(BOUND).unwrap().map(|v| v.value().to_vec());
        (keys, indexed_seq(&meta).unwrap(), bound)
    }

    /// Events handed over by the writer index to exactly what reading them from the log
    /// gives, and only when they continue the cursor in the graph's generation.
    #[test]
    fn handed_over_events_index_as_the_log_does() {
        let events: Vec<EventRecord> = (1..=40u64)
            .map(|seq| {
                let mut r = stored(seq, &[("player_id", &format!("p{}", seq % 7))]);
                r.user_id = (seq % 3 == 0).then(|| format!("u{}", seq % 5));
                r.install_uuid = Some(if seq % 4 == 0 {
                    "0".into()
                } else {
                    format!("i{seq}")
                });
                r
            })
            .collect();
        let from_log = {
            let dir = tempfile::tempdir().unwrap();
            let store = Identity::open(&Store::open(dir.path()).unwrap());
            append(&store, &events);
            catch_up(&store).unwrap();
            graph_state(&store)
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Identity::open(&Store::open(dir.path()).unwrap());
        append(&store, &events);
        // The first ten from the log, the rest handed over in two batches.
        assert_eq!(step_until(&store, 10).unwrap().after.cursor, 10);
        let generation = store.graph.generation();
        // A batch that does not continue the cursor is not indexed.
        let mut ahead = Fed::new(&handed(&store, 12, &events[11..20]), generation)
            .unwrap()
            .unwrap();
        assert!(step_fed(&store, &mut ahead).unwrap().is_none());
        let mut fed = Fed::new(&handed(&store, 11, &events[10..25]), generation)
            .unwrap()
            .unwrap();
        assert!(
            !fed.add(&handed(&store, 27, &events[26..]), generation)
                .unwrap()
        );
        assert!(
            fed.add(&handed(&store, 26, &events[25..]), generation)
                .unwrap()
        );
        assert_eq!((fed.first(), fed.last(), fed.events()), (11, 40, 30));
        let done = step_fed(&store, &mut fed).unwrap().unwrap();
        assert_eq!((done.before, done.after.cursor), (10, 40));
        while step(&store).unwrap().after.merging {}
        assert_eq!(graph_state(&store), from_log);
        // Handed over before the graph was replaced (an erasure): never indexed.
        let mut stale = Fed::new(&handed(&store, 1, &events[..5]), generation)
            .unwrap()
            .unwrap();
        store.forget_graph().unwrap();
        assert!(step_fed(&store, &mut stale).unwrap().is_none());
        assert_eq!(cursor(&store), 0);
    }

    #[test]
    fn indexing_goes_in_chunks_and_past_removed_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Identity::open(&Store::open(dir.path()).unwrap());
        let n = INDEX_CHUNK as u64 + 5;
        let mut records: Vec<EventRecord> = (1..=n)
            .map(|seq| stored(seq, &[("user_id", "u")]))
            .collect();
        // Only the newest links a second identifier (first, so the tail indexes it under it).
        records[n as usize - 1] = stored(n, &[("device_id", "dz"), ("user_id", "u")]);
        append(&store, &records);
        assert_eq!(step_to(&store, n + 3), INDEX_CHUNK as u64);
        assert_eq!(cursor(&store), INDEX_CHUNK as u64);
        let newest = |id: &str| -> (usize, Vec<u64>) {
            let p = store.profile("default", id, 3).unwrap().unwrap();
            (
                p.identifiers.len(),
                p.events.iter().map(|(s, _)| *s).collect(),
            )
        };
        assert_eq!(
            newest("dz"),
            (2, vec![n, n - 1, n - 2]),
            "the tail is walked too"
        );
        assert_eq!(newest("u"), (2, vec![n, n - 1, n - 2]));
        // Seqs up to `through` that are not in the log (removed by retention) are passed.
        assert_eq!(step_to(&store, n + 3), n + 3);
        assert_eq!(cursor(&store), n + 3);
        assert_eq!(newest("dz"), (2, vec![n, n - 1, n - 2]));
    }
}
