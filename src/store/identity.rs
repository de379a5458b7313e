//! The identity graph: per app, identifiers that appear together in one stored event are
//! linked, whatever dialect the event came in.
//!
//! An identifier is a (kind, value) pair: the canonical field it came from (`install_uuid`,
//! `user_id`, `anonymous_id`, or the name of an `ids` entry such as `af_user_id`,
//! `player_id`, `device_id`). Kinds keep `player_id "1"` and `device_id "1"` apart.
//!
//! Storage is an adjacency table plus an event index, both written by the writer in the same
//! transaction as the event:
//! - [`ID_EVENTS`]: app ++ identifier ++ seq → (): every stored event under its first
//!   identifier (one entry per event: all of an event's identifiers are in one profile, and a
//!   profile's events are read under all of its identifiers).
//! - [`ID_LINKS`]: app ++ a ++ b → (), both directions. An event with identifiers
//!   `i0, i1, ..., ik` links `i0` with each other one (a star: connected with k edges instead
//!   of k² pairs). An edge already present is only looked up (once per commit), not
//!   rewritten.
//!
//! A profile is the connected component of an identifier, found by a breadth-first walk at
//! read time. Merging two profiles therefore costs nothing at write time (no relabelling
//! under the writer lock, unlike a union-find with stored roots), and the hot path pays one
//! index insert per event plus, for events with several identifiers, a lookup per edge.
//!
//! Placeholder values (`""`, all zeros like the zeroed IDFA
//! `00000000-0000-0000-0000-000000000000`, `null`, `undefined`, `unknown`, `none`) are not
//! identifiers: linking them would merge unrelated people.

use super::tables::{EVENTS, ID_EVENTS, ID_LINKS};
use super::{Result, Store, find_app};
use crate::event::Draft;
use crate::store::codec::{EventRecord, decode_event};
use crate::store::read::Canonical;
use redb::{ReadableTable, Table};
use std::collections::{BTreeSet, HashSet, VecDeque};

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

/// The encoded identifiers of a canonical event, first occurrence of each, placeholders
/// left out: `install_uuid`, `user_id`, `anonymous_id`, then `ids` in order.
pub fn identifiers(d: &Draft) -> Vec<Vec<u8>> {
    identifiers_of(
        d.install_uuid.as_deref(),
        d.user_id.as_deref(),
        d.anonymous_id.as_deref(),
        &d.ids,
    )
}

/// The [`ID_EVENTS`] key of a stored event (under its first identifier), if it has one.
pub fn index_key(app_id: u32, seq: u64, r: &EventRecord) -> Option<Vec<u8>> {
    let idents = identifiers_of(
        r.install_uuid.as_deref(),
        r.user_id.as_deref(),
        r.anonymous_id.as_deref(),
        &r.ids,
    );
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

/// Per-commit working memory of [`record`].
#[derive(Default)]
pub struct Scratch {
    buf: Vec<u8>,
    /// Links known to exist in this transaction (found or inserted), so that a batch with
    /// many events of one person looks each up once.
    linked: HashSet<Vec<u8>>,
}

/// Writer side: indexes event `seq` of `app_id` under its first identifier and links that
/// one with each other identifier of the event.
///
/// One index entry per event suffices: all identifiers of an event end up in one profile,
/// and a profile's events are read under every identifier of it. An identifier that is
/// never first still has its links, so lookups by value search both tables.
pub fn record(
    id_events: &mut Table<&[u8], ()>,
    id_links: &mut Table<&[u8], ()>,
    app_id: u32,
    seq: u64,
    idents: &[Vec<u8>],
    scratch: &mut Scratch,
) -> Result<()> {
    let Some((first, rest)) = idents.split_first() else {
        return Ok(());
    };
    let buf = &mut scratch.buf;
    buf.clear();
    buf.extend_from_slice(&app_id.to_be_bytes());
    buf.extend_from_slice(first);
    buf.extend_from_slice(&seq.to_be_bytes());
    id_events.insert(buf.as_slice(), ())?;
    for other in rest {
        buf.clear();
        buf.extend_from_slice(&app_id.to_be_bytes());
        buf.extend_from_slice(first);
        buf.extend_from_slice(other);
        if scratch.linked.contains(buf.as_slice()) {
            continue;
        }
        // Links are always written in pairs: one lookup tells whether both exist.
        if id_links.get(buf.as_slice())?.is_none() {
            id_links.insert(buf.as_slice(), ())?;
            let mut back = Vec::with_capacity(buf.len());
            back.extend_from_slice(&app_id.to_be_bytes());
            back.extend_from_slice(other);
            back.extend_from_slice(first);
            id_links.insert(back.as_slice(), ())?;
        }
        scratch.linked.insert(buf.clone());
    }
    Ok(())
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
        }
        let events_table = txn.open_table(EVENTS)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let d = Draft {
            install_uuid: Some("i1".into()),
            user_id: Some("u1".into()),
            anonymous_id: Some("u1".into()),
            ids: vec![
                ("idfa".into(), "00000000-0000-0000-0000-000000000000".into()),
                ("player_id".into(), "p1".into()),
                ("device_id".into(), "unknown".into()),
            ],
            ..Draft::default()
        };
        let ids: Vec<_> = identifiers(&d)
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

    #[test]
    fn profiles_are_connected_components() {
        use crate::store::codec::encode_event;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let events: &[&[(&str, &str)]] = &[
            &[("install_uuid", "i1"), ("user_id", "42")],
            &[("user_id", "42"), ("af_user_id", "af1")],
            &[("af_user_id", "af1")],
            &[("player_id", "42")],
            &[("install_uuid", "i2"), ("player_id", "42")],
        ];
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            let mut log = txn.open_table(EVENTS).unwrap();
            let mut ev = txn.open_table(ID_EVENTS).unwrap();
            let mut links = txn.open_table(ID_LINKS).unwrap();
            let mut scratch = Scratch::default();
            for (i, ids) in events.iter().enumerate() {
                let seq = i as u64 + 1;
                let record = EventRecord {
                    received_at_ms: 1,
                    tenant: "default".into(),
                    app: "default".into(),
                    key_id: 1,
                    source: "reflect".into(),
                    event_id: format!("e{seq}"),
                    event_name: "x".into(),
                    event_ts_ms: 1,
                    install_uuid: None,
                    user_id: None,
                    anonymous_id: None,
                    ids: Vec::new(),
                    revenue: None,
                    currency: None,
                    transaction_id: None,
                    product_id: None,
                    props: "{}".into(),
                    context: "{}".into(),
                    audit_key: String::new(),
                };
                log.insert(seq, encode_event(&record).as_slice()).unwrap();
                let idents: Vec<Vec<u8>> = ids.iter().map(|(k, v)| encode(k, v)).collect();
                record_twice(&mut ev, &mut links, seq, &idents, &mut scratch);
            }
        }
        txn.commit().unwrap();
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
    }

    /// Recording an event twice (as a retried commit would) changes nothing.
    fn record_twice(
        ev: &mut Table<&[u8], ()>,
        links: &mut Table<&[u8], ()>,
        seq: u64,
        idents: &[Vec<u8>],
        scratch: &mut Scratch,
    ) {
        record(ev, links, 1, seq, idents, scratch).unwrap();
        record(ev, links, 1, seq, idents, scratch).unwrap();
    }

    #[test]
    fn retention_removes_index_entries_with_their_events() {
        use crate::store::codec::encode_event;
        use crate::store::retention;
        use redb::ReadableTableMetadata;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            let mut log = txn.open_table(EVENTS).unwrap();
            let mut ev = txn.open_table(ID_EVENTS).unwrap();
            let mut links = txn.open_table(ID_LINKS).unwrap();
            let mut scratch = Scratch::default();
            for seq in 1..=3u64 {
                let record = EventRecord {
                    received_at_ms: 1,
                    tenant: "default".into(),
                    app: "default".into(),
                    key_id: 1,
                    source: "reflect".into(),
                    event_id: format!("e{seq}"),
                    event_name: "x".into(),
                    event_ts_ms: 1,
                    install_uuid: Some(format!("i{seq}")),
                    user_id: Some("u".into()),
                    anonymous_id: None,
                    ids: Vec::new(),
                    revenue: None,
                    currency: None,
                    transaction_id: None,
                    product_id: None,
                    props: "{}".into(),
                    context: "{}".into(),
                    audit_key: format!("a{seq}"),
                };
                log.insert(seq, encode_event(&record).as_slice()).unwrap();
                let d = Draft {
                    install_uuid: record.install_uuid.clone(),
                    user_id: record.user_id.clone(),
                    ..Draft::default()
                };
                record_twice(&mut ev, &mut links, seq, &identifiers(&d), &mut scratch);
            }
        }
        txn.commit().unwrap();
        assert_eq!(
            store
                .profile("default", "u", 10)
                .unwrap()
                .unwrap()
                .events
                .len(),
            3
        );
        let cuts = std::collections::HashMap::from([("default".to_owned(), 2u64)]);
        let chunk = retention::find_chunk(&store.db().unwrap(), &cuts, 1).unwrap();
        assert_eq!(chunk.victims.len(), 3);
        let txn = store.db().unwrap().begin_write().unwrap();
        assert_eq!(retention::delete_chunk(&txn, &chunk.victims).unwrap(), 3);
        txn.commit().unwrap();
        let read = store.db.begin_read().unwrap();
        assert!(read.open_table(ID_EVENTS).unwrap().is_empty().unwrap());
        // The links stay: the identifiers are still known to belong together.
        let p = store.profile("default", "u", 10).unwrap().unwrap();
        assert!(p.events.is_empty());
        assert_eq!(p.identifiers.len(), 4);
    }
}
