//! The raw request bodies ("audit"), stored with the events they carried.
//!
//! A body is appended under the seq of the request's first accepted event
//! ([`AUDIT_BODIES`]: `seq → u16 BE key length ++ audit key ++ body`), so storing it costs an
//! append, never a random insert: with one body per single-event request, a table keyed by
//! the audit key (`s2s/<date>/<event_id>.json`, random) rewrote about one page per request.
//!
//! Finding a body by its audit key:
//! - a per-event key (`<source>/<YYYY-MM-DD>/<event_id>.<ext>`, see [`named_event_id`]) names
//!   its event: the dedupe index gives the event's seq in each app, and the event's record
//!   confirms the key;
//! - any other key (a batch's `s2s/bulk/<date>/<id>.json`, `gr/batch/...`) is indexed in
//!   [`AUDIT_BATCHES`] (`key → seq`); batch ids are time-ordered, so that index grows at its
//!   end too.
//!
//! The events of one request get consecutive seqs (the writer assigns a request's seqs
//! together), so the body of any event is the entry at or before its seq.

use super::Result;
use super::tables::{APPS, AUDIT_BATCHES, AUDIT_BODIES, EVENTS};
use redb::{ReadTransaction, ReadableTable, Table};

/// The event id a per-event audit key names: `<source>/<YYYY-MM-DD>/<event_id>.<ext>`.
pub fn named_event_id(key: &str) -> Option<&str> {
    let (_, rest) = key.split_once('/')?;
    let (date, rest) = rest.split_once('/')?;
    let b = date.as_bytes();
    let is_date = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !is_date {
        return None;
    }
    Some(&rest[..rest.rfind('.')?])
}

/// Whether the body of a request must be indexed by its key: unless the request holds one
/// event (`only_event`, its id) and the key names it.
pub fn needs_key_index(key: &str, only_event: Option<&str>) -> bool {
    only_event.is_none() || named_event_id(key) != only_event
}

/// The stored value: key length, key, body.
pub fn encode(key: &str, body: &[u8]) -> Vec<u8> {
    let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    let mut v = Vec::with_capacity(2 + key.len() + body.len());
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.extend_from_slice(key);
    v.extend_from_slice(body);
    v
}

fn decode(v: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u16::from_be_bytes(v.get(..2)?.try_into().ok()?) as usize;
    Some((v.get(2..2 + len)?, v.get(2 + len..)?))
}

/// Stores the body of a request whose first accepted event is `seq`, in the writer's
/// transaction.
pub fn store(
    bodies: &mut Table<u64, &'static [u8]>,
    batches: &mut Table<&'static str, u64>,
    key: &str,
    body: &[u8],
    seq: u64,
    index_key: bool,
) -> Result<()> {
    bodies.insert(seq, encode(key, body).as_slice())?;
    if index_key {
        batches.insert(key, seq)?;
    }
    Ok(())
}

/// The body stored under `key`, as of `txn`.
pub fn get(txn: &ReadTransaction, key: &str) -> Result<Option<Vec<u8>>> {
    let bodies = txn.open_table(AUDIT_BODIES)?;
    let body_of = |seq: u64| -> Result<Option<Vec<u8>>> {
        if let Some(row) = bodies.range(..=seq)?.next_back() {
            let (_, v) = row?;
            if let Some((k, body)) = decode(v.value())
                && k == key.as_bytes()
            {
                return Ok(Some(body.to_vec()));
            }
        }
        Ok(None)
    };
    if let Some(seq) = txn.open_table(AUDIT_BATCHES)?.get(key)?
        && let Some(body) = body_of(seq.value())?
    {
        return Ok(Some(body));
    }
    if let Some(id) = named_event_id(key) {
        let events = txn.open_table(EVENTS)?;
        for row in txn.open_table(APPS)?.iter()? {
            let app_id = row?.0.value();
            let Some(seq) = super::dedupe::lookup_committed(txn, app_id, id)? else {
                continue;
            };
            let names_key = match events.get(seq)? {
                Some(r) => super::codec::decode_event(r.value())?.audit_key == key,
                None => false,
            };
            if names_key && let Some(body) = body_of(seq)? {
                return Ok(Some(body));
            }
        }
    }
    Ok(None)
}

/// Retention removed event `seq` whose audit key is `key`: drops the body stored under it (if
/// it was its request's first event) and the key's index entry pointing at it.
pub fn forget(txn: &redb::WriteTransaction, key: &str, seq: u64) -> Result<()> {
    txn.open_table(AUDIT_BODIES)?.remove(seq)?;
    let mut batches = txn.open_table(AUDIT_BATCHES)?;
    if batches.get(key)?.is_some_and(|s| s.value() == seq) {
        batches.remove(key)?;
    }
    Ok(())
}

/// An erasure removed event `seq` whose audit key is `key`: drops the body of its request
/// (stored at or before `seq` under the same key), whichever event of the request it is, and
/// the key's index entry. Returns whether a body was dropped.
pub fn erase(txn: &redb::WriteTransaction, key: &str, seq: u64) -> Result<bool> {
    let mut bodies = txn.open_table(AUDIT_BODIES)?;
    let at = match bodies.range(..=seq)?.next_back() {
        Some(row) => {
            let (at, v) = row?;
            decode(v.value())
                .is_some_and(|(k, _)| k == key.as_bytes())
                .then_some(at.value())
        }
        None => None,
    };
    let Some(at) = at else {
        return Ok(false);
    };
    bodies.remove(at)?;
    drop(bodies);
    forget(txn, key, at)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_event_keys_name_their_event() {
        assert_eq!(named_event_id("s2s/2026-11-26/abc.json"), Some("abc"));
        assert_eq!(named_event_id("adjust/2026-11-26/a.b/c.txt"), Some("a.b/c"));
        assert_eq!(named_event_id("s2s/bulk/2026-11-26/abc.json"), None);
        assert_eq!(named_event_id("gr/batch/2026-11-26/abc.json"), None);
        assert_eq!(named_event_id("s2s/2026-11-26/noext"), None);
        assert!(!needs_key_index("s2s/2026-11-26/e1.json", Some("e1")));
        assert!(needs_key_index("s2s/2026-11-26/e1.json", Some("e2")));
        assert!(needs_key_index("s2s/bulk/2026-11-26/x.json", Some("x")));
        assert!(needs_key_index("s2s/2026-11-26/e1.json", None));
    }

    #[test]
    fn values_round_trip() {
        let v = encode("k/1", b"{\"a\":1}");
        assert_eq!(decode(&v), Some((&b"k/1"[..], &b"{\"a\":1}"[..])));
        assert_eq!(decode(&[0, 9, b'x']), None);
    }

    /// Bodies of single-event and batch requests committed together are found by their keys;
    /// a key naming another event and a duplicate-only request behave.
    #[tokio::test]
    async fn bodies_are_found_by_key() {
        use crate::store::codec::{EventRecord, encode_event};
        use crate::store::writer::{DEFAULT_QUEUE_BYTES, Pending, Submission, Writer};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let w = std::sync::Arc::new(Writer::start(&store, DEFAULT_QUEUE_BYTES, vec![]).unwrap());
        let sub = |key: &str, ids: &[&str], body: &'static str| Submission {
            app_id: 1,
            tenant_id: 1,
            key_id: 1,
            received_at_ms: 1_764_000_000_000,
            events: ids
                .iter()
                .map(|id| {
                    Pending::for_test(
                        id,
                        encode_event(&EventRecord {
                            audit_key: key.into(),
                            ..EventRecord::for_test(id)
                        }),
                    )
                })
                .collect(),
            audit: Some((key.to_string(), bytes::Bytes::from_static(body.as_bytes()))),
        };
        let single = "s2s/2025-11-24/e1.json";
        let bulk = "s2s/bulk/2025-11-24/0190abc.json";
        // Several requests in flight at once, so that they share commits.
        let requests = [
            sub(single, &["e1"], "one"),
            sub(bulk, &["b1", "b2", "b3"], "many"),
            sub("s2s/2025-11-24/e2.json", &["e2"], "two"),
            sub("s2s/2025-11-24/e3.json", &["e1"], "dup"),
        ];
        let mut handles = Vec::new();
        for r in requests {
            let w = w.clone();
            handles.push(tokio::spawn(async move { w.submit(r, 10).await.unwrap() }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let get = |k: &str| {
            store
                .audit(k)
                .unwrap()
                .map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(get(single).as_deref(), Some("one"));
        assert_eq!(get(bulk).as_deref(), Some("many"));
        assert_eq!(get("s2s/2025-11-24/e2.json").as_deref(), Some("two"));
        // Its only event was a duplicate (of e1, whichever came first): nothing stored...
        let dup = get("s2s/2025-11-24/e3.json");
        assert!(dup.is_none() || get(single).is_none(), "both stored");
        assert_eq!(get("s2s/2025-11-24/nope.json"), None);
        assert_eq!(get("s2s/bulk/2025-11-24/nope.json"), None);
    }

    #[test]
    fn batch_ids_are_time_ordered() {
        let a = crate::event::time_ordered_id();
        let mut later = crate::event::time_ordered_id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while later[..12] == a[..12] {
            assert!(std::time::Instant::now() < deadline);
            later = crate::event::time_ordered_id();
        }
        assert!(later > a, "{later} after {a}");
        assert_eq!((a.len(), &a[12..13]), (32, "7"));
    }
}
