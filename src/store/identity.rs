//! The identity graph: per app, identifiers that appear together in one stored event are
//! linked, whatever dialect the event came in.
//!
//! An identifier is a (kind, value) pair: the canonical field it came from (`install_uuid`,
//! `user_id`, `anonymous_id`, or the name of an `ids` entry such as `af_user_id`,
//! `player_id`, `device_id`). Kinds keep `player_id "1"` and `device_id "1"` apart.
//!
//! Storage is an adjacency table plus an event index, derived from the log by the identity
//! indexer ([`index_step`]), which the writer thread runs between ingest batches, never in
//! an ingest commit:
//! - [`ID_EVENTS`]: app ++ identifier ++ seq → (): every stored event under its first
//!   identifier (one entry per event: all of an event's identifiers are in one profile, and a
//!   profile's events are read under all of its identifiers).
//! - [`ID_LINKS`]: app ++ a ++ b → (), both directions. An event with identifiers
//!   `i0, i1, ..., ik` links `i0` with each other one (a star: connected with k edges instead
//!   of k² pairs). An edge already present is only looked up, not rewritten.
//! - [`META`] [`INDEXED_SEQ`]: the cursor. Every event up to it is in the two tables; it
//!   advances in the transaction that indexed the events, so graph and cursor always agree.
//!
//! The indexer reads up to [`INDEX_CHUNK`] events after the cursor, sorts their entries and
//! inserts them in one transaction: a random-key insert per event inside every ingest commit
//! (each dirtying its own page, like the v1 dedupe index) becomes one sorted pass per chunk.
//!
//! A profile is the connected component of an identifier, found by a breadth-first walk at
//! read time over the indexed graph *plus* the tail (the events after the cursor, read from
//! the log in the same read transaction), so it is exact however far the indexer is behind.
//! Merging two profiles costs nothing at write time (no relabelling, unlike a union-find
//! with stored roots).
//!
//! Placeholder values (`""`, all zeros like the zeroed IDFA
//! `00000000-0000-0000-0000-000000000000`, `null`, `undefined`, `unknown`, `none`) are not
//! identifiers: linking them would merge unrelated people.

use super::tables::{APPS, EVENTS, ID_EVENTS, ID_LINKS, META};
use super::{Result, Store, find_app};
use crate::store::codec::{App, EventRecord, decode_config, decode_event};
use crate::store::read::Canonical;
use redb::{ReadableTable, WriteTransaction};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

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

/// The encoded identifiers of a stored event, first occurrence of each, placeholders left
/// out: `install_uuid`, `user_id`, `anonymous_id`, then `ids` in order (the canonical
/// fields every dialect fills).
pub fn record_identifiers(r: &EventRecord) -> Vec<Vec<u8>> {
    identifiers_of(
        r.install_uuid.as_deref(),
        r.user_id.as_deref(),
        r.anonymous_id.as_deref(),
        &r.ids,
    )
}

/// The [`ID_EVENTS`] key of a stored event (under its first identifier), if it has one.
pub fn index_key(app_id: u32, seq: u64, r: &EventRecord) -> Option<Vec<u8>> {
    let idents = record_identifiers(r);
    let first = idents.first()?;
    Some([&app_id.to_be_bytes()[..], first, &seq.to_be_bytes()].concat())
}

fn identifiers_of(
    install_uuid: Option<&str>,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
    ids: &[(String, String)],
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
        .chain(ids.iter().map(|(k, v)| (k.as_str(), v.as_str())));
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

/// Most events one [`index_step`] indexes (one write transaction).
pub const INDEX_CHUNK: usize = 20_000;

/// The graph's cursor: every stored event with a seq up to it is indexed (0: none).
pub fn indexed_seq(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    Ok(meta
        .get(INDEXED_SEQ)?
        .and_then(|b| b.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0))
}

/// The graph entries of one stored event: its [`ID_EVENTS`] key (under its first
/// identifier) and its star of links (`first ++ other`, for each other identifier).
fn entries(
    app_id: u32,
    seq: u64,
    idents: &[Vec<u8>],
    events: &mut Vec<Vec<u8>>,
    links: &mut Vec<Vec<u8>>,
) {
    let Some((first, rest)) = idents.split_first() else {
        return;
    };
    let app = app_id.to_be_bytes();
    events.push([&app[..], first, &seq.to_be_bytes()].concat());
    for other in rest {
        links.push([&app[..], first, other].concat());
    }
}

/// Indexes the events after the cursor, up to `through` (the newest committed seq) and at
/// most [`INDEX_CHUNK`] of them, and advances the cursor, all in `txn`: the graph and its
/// cursor commit together, so after a crash the next step starts where the last committed
/// one ended (re-indexing is idempotent anyway). Entries are sorted before they are
/// inserted, so a chunk touches each B-tree page once; a link already present is only
/// looked up. Returns the new cursor.
pub fn index_step(txn: &WriteTransaction, through: u64) -> Result<u64> {
    let mut meta = txn.open_table(META)?;
    let from = indexed_seq(&meta)?;
    if from >= through {
        return Ok(from);
    }
    let app_ids: HashMap<String, u32> = {
        let apps = txn.open_table(APPS)?;
        let mut m = HashMap::new();
        for row in apps.iter()? {
            let (id, bytes) = row?;
            let app: App = decode_config("app", bytes.value())?;
            m.insert(app.name, id.value());
        }
        m
    };
    let mut ev_keys = Vec::new();
    let mut link_keys = Vec::new();
    let mut cursor = through;
    {
        let log = txn.open_table(EVENTS)?;
        for (n, row) in log.range(from + 1..=through)?.enumerate() {
            let (seq, bytes) = row?;
            let seq = seq.value();
            if n == INDEX_CHUNK {
                // The chunk is full: everything before this event is indexed.
                cursor = seq - 1;
                break;
            }
            let r = decode_event(bytes.value())?;
            // An app is never deleted while it has events; a missing one has nothing to link.
            let Some(&app_id) = app_ids.get(&r.app) else {
                continue;
            };
            entries(
                app_id,
                seq,
                &record_identifiers(&r),
                &mut ev_keys,
                &mut link_keys,
            );
        }
    }
    ev_keys.sort_unstable();
    link_keys.sort_unstable();
    link_keys.dedup();
    let mut id_events = txn.open_table(ID_EVENTS)?;
    for k in &ev_keys {
        id_events.insert(k.as_slice(), ())?;
    }
    let mut missing = Vec::new();
    {
        let mut id_links = txn.open_table(ID_LINKS)?;
        // Links are always written in pairs: one lookup tells whether both exist.
        for k in &link_keys {
            if id_links.get(k.as_slice())?.is_none() {
                missing.push(k);
            }
        }
        let mut pairs: Vec<Vec<u8>> = Vec::with_capacity(missing.len() * 2);
        for k in missing {
            let (a, b) = split_link(k);
            pairs.push(k.clone());
            pairs.push([&k[..4], b, a].concat());
        }
        pairs.sort_unstable();
        for k in &pairs {
            id_links.insert(k.as_slice(), ())?;
        }
    }
    meta.insert(INDEXED_SEQ, &cursor.to_be_bytes()[..])?;
    Ok(cursor)
}

/// The two identifiers of a link key (`app ++ a ++ b`).
fn split_link(key: &[u8]) -> (&[u8], &[u8]) {
    let rest = &key[4..];
    let len = decode(rest).map_or(rest.len(), |(_, n)| n);
    (&rest[..len], &rest[len..])
}

/// Indexes everything stored so far, in steps of [`INDEX_CHUNK`] events: for a process that
/// holds the database alone (no writer thread), and for tests.
pub fn catch_up(db: &redb::Database) -> Result<u64> {
    loop {
        let txn = db.begin_write()?;
        let through = txn
            .open_table(EVENTS)?
            .last()?
            .map_or(0, |(k, _)| k.value());
        let before = indexed_seq(&txn.open_table(META)?)?;
        let cursor = index_step(&txn, through)?;
        txn.commit()?;
        if cursor >= through || cursor == before {
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

impl Store {
    /// The profile of identifier value `id` (of any kind) in `app`, with at most `limit`
    /// events; `None` when no stored event of the app carries that identifier.
    pub fn profile(&self, app: &str, id: &str, limit: usize) -> Result<Option<Profile>> {
        self.profile_of_kind(app, None, id, limit)
    }

    /// Like [`Store::profile`], starting only from the identifier of that kind when `kind` is
    /// given (a value known under several kinds, such as user id `42` and player id `42`,
    /// otherwise shows all of their profiles together).
    pub fn profile_of_kind(
        &self,
        app: &str,
        kind: Option<&str>,
        id: &str,
        limit: usize,
    ) -> Result<Option<Profile>> {
        let txn = self.db.begin_read()?;
        let app_id = find_app(&txn.open_table(super::tables::APPS)?, app)?
            .ok_or_else(|| super::Error::NotFound(format!("no app {app:?}")))?
            .0;
        let id_events = txn.open_table(ID_EVENTS)?;
        let id_links = txn.open_table(ID_LINKS)?;
        let app_prefix = app_id.to_be_bytes();
        let events_table = txn.open_table(EVENTS)?;
        let tail = Tail::read(&events_table, indexed_seq(&txn.open_table(META)?)?, app)?;

        // Every kind this value is known under: one seek per kind, in the event index and
        // in the links (an identifier that was never first in an event is only there).
        let mut value_prefix = app_prefix.to_vec();
        push_part(&mut value_prefix, id);
        let mut start: Vec<Vec<u8>> = Vec::new();
        for table in [&id_events, &id_links] {
            let mut lower = value_prefix.clone();
            loop {
                let next = match table.range(lower.as_slice()..)?.next() {
                    Some(row) => row?.0.value().to_vec(),
                    None => break,
                };
                if !next.starts_with(&value_prefix) {
                    break;
                }
                let Some(((found_kind, _), len)) = decode(&next[4..]) else {
                    break;
                };
                let ident = next[4..4 + len].to_vec();
                // Past every key of this identifier: what follows it (a seq, or another
                // identifier whose length prefix is below 0xFF00) is below 0xFF ×9.
                lower = [&app_prefix[..], &ident, &[0xFF; 9]].concat();
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
        while let Some(node) = queue.pop_front() {
            let prefix = [&app_prefix[..], &node].concat();
            for row in id_links.range(prefix.as_slice()..)? {
                let (k, _) = row?;
                let k = k.value();
                if !k.starts_with(&prefix) {
                    break;
                }
                let neighbour = k[prefix.len()..].to_vec();
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
            for neighbour in tail.links.get(&node).into_iter().flatten() {
                if seen.contains(neighbour) {
                    continue;
                }
                if seen.len() >= MAX_PROFILE_IDENTIFIERS {
                    truncated = true;
                    break;
                }
                seen.insert(neighbour.clone());
                order.push(neighbour.clone());
                queue.push_back(neighbour.clone());
            }
        }

        // The newest `limit` seqs under each identifier, merged.
        let mut seqs: BTreeSet<u64> = BTreeSet::new();
        for ident in &order {
            let lo = [&app_prefix[..], ident, &0u64.to_be_bytes()].concat();
            let hi = [&app_prefix[..], ident, &u64::MAX.to_be_bytes()].concat();
            for row in id_events
                .range(lo.as_slice()..=hi.as_slice())?
                .rev()
                .take(limit)
            {
                let (k, _) = row?;
                let k = k.value();
                let seq = u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8 bytes"));
                seqs.insert(seq);
            }
            seqs.extend(tail.events.get(ident).into_iter().flatten());
        }
        let mut events = Vec::new();
        for seq in seqs.into_iter().rev().take(limit) {
            if let Some(bytes) = events_table.get(seq)? {
                events.push((seq, decode_event(bytes.value())?));
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
            let r = decode_event(bytes.value())?;
            if r.app != app {
                continue;
            }
            let idents = record_identifiers(&r);
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
mod tests {
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
        let ids: Vec<_> = record_identifiers(&r)
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

    fn stored(seq: u64, ids: &[(&str, &str)]) -> EventRecord {
        EventRecord {
            ids: ids
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            audit_key: format!("a{seq}"),
            ..EventRecord::for_test(&format!("e{seq}"))
        }
    }

    fn append(store: &Store, records: &[EventRecord]) {
        let txn = store.db().unwrap().begin_write().unwrap();
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

    fn cursor(store: &Store) -> u64 {
        let txn = store.db().unwrap().begin_read().unwrap();
        indexed_seq(&txn.open_table(META).unwrap()).unwrap()
    }

    fn reset_cursor(store: &Store) {
        let txn = store.db().unwrap().begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(INDEXED_SEQ, &0u64.to_be_bytes()[..])
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn profiles_are_connected_components() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
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
        assert_eq!(catch_up(&store.db().unwrap()).unwrap(), 3);
        append(&store, &records[3..]);
        let check = |store: &Store| {
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
        assert_eq!(catch_up(&store.db().unwrap()).unwrap(), 5);
        check(&store);
        let count = |store: &Store| {
            use redb::ReadableTableMetadata;
            let txn = store.db().unwrap().begin_read().unwrap();
            (
                txn.open_table(ID_EVENTS).unwrap().len().unwrap(),
                txn.open_table(ID_LINKS).unwrap().len().unwrap(),
            )
        };
        assert_eq!(count(&store), (5, 6));
        reset_cursor(&store);
        assert_eq!(catch_up(&store.db().unwrap()).unwrap(), 5);
        assert_eq!(count(&store), (5, 6));
        check(&store);
    }

    #[test]
    fn indexing_goes_in_chunks_and_past_removed_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let n = INDEX_CHUNK as u64 + 5;
        let mut records: Vec<EventRecord> = (1..=n)
            .map(|seq| stored(seq, &[("user_id", "u")]))
            .collect();
        // Only the newest links a second identifier (first, so the tail indexes it under it).
        records[n as usize - 1] = stored(n, &[("device_id", "dz"), ("user_id", "u")]);
        append(&store, &records);
        let txn = store.db().unwrap().begin_write().unwrap();
        assert_eq!(index_step(&txn, n + 3).unwrap(), INDEX_CHUNK as u64);
        txn.commit().unwrap();
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
        let txn = store.db().unwrap().begin_write().unwrap();
        assert_eq!(index_step(&txn, n + 3).unwrap(), n + 3);
        txn.commit().unwrap();
        assert_eq!(cursor(&store), n + 3);
        assert_eq!(newest("dz"), (2, vec![n, n - 1, n - 2]));
    }

    #[test]
    fn retention_removes_index_entries_with_their_events() {
        use crate::store::retention;
        use redb::ReadableTableMetadata;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let records: Vec<EventRecord> = (1..=4u64)
            .map(|seq| {
                let mut r = stored(seq, &[]);
                r.install_uuid = Some(format!("i{seq}"));
                r.user_id = Some("u".into());
                r
            })
            .collect();
        append(&store, &records[..3]);
        catch_up(&store.db().unwrap()).unwrap();
        // The fourth is in the tail when retention removes it.
        append(&store, &records[3..]);
        assert_eq!(
            store
                .profile("default", "u", 10)
                .unwrap()
                .unwrap()
                .events
                .len(),
            4
        );
        let cuts = std::collections::HashMap::from([("default".to_owned(), 2u64)]);
        let chunk = retention::find_chunk(&store.db().unwrap(), &cuts, 1).unwrap();
        assert_eq!(chunk.victims.len(), 4);
        let txn = store.db().unwrap().begin_write().unwrap();
        assert_eq!(retention::delete_chunk(&txn, &chunk.victims).unwrap(), 4);
        txn.commit().unwrap();
        catch_up(&store.db().unwrap()).unwrap();
        let read = store.db().unwrap().begin_read().unwrap();
        assert!(read.open_table(ID_EVENTS).unwrap().is_empty().unwrap());
        // The links stay: the identifiers are still known to belong together (the removed
        // tail event was never indexed, so its own install uuid is gone with it).
        let p = store.profile("default", "u", 10).unwrap().unwrap();
        assert!(p.events.is_empty());
        assert_eq!(p.identifiers.len(), 4);
    }
}
