//! The index end to end: the writer's batches, reloads after crashes, the pre-check and
//! readers, on real redb files.

use super::lookup::hashes;
use super::rows::{Owner, RUNS};
use super::*;
use crate::store::runs::RunSet;
use crate::store::tables::{DEDUPE, DEDUPE_COMMITS, EVENTS, META, dedupe_key};
use redb::{Database, ReadableDatabase};
use std::sync::Arc;

/// What a pre-check that settled nothing knows of app 1's `id`.
fn hashed(id: &str) -> Known {
    let (fp, check) = hashes(1, id);
    Known::Fingerprint { fp, check }
}

/// The slot of a new id of app 1 whose fingerprint is free.
fn free_slot(id: &str) -> Slot {
    let (fp, check) = hashes(1, id);
    Slot::Fingerprint { fp, check }
}

/// An index entry forging a 64-bit collision: `id`'s fingerprint stored as the event `seq`
/// holds (whose id has other check bits).
fn forge(staged: &mut Staged, id: &str, seq: u64, owner_id: &str) {
    let check = hashes(1, owner_id).1;
    staged
        .active
        .insert(fingerprint(1, id), Owner { seq, check });
}

fn record(id: &str) -> Vec<u8> {
    crate::store::codec::encode_event(&crate::store::codec::EventRecord::for_test(id))
}

/// Stores `ids` through the staged index the way the writer does, committing only with
/// `commit` (else the transaction is dropped, as by a crash before its commit); returns
/// which were new.
fn ingest_or_crash(
    db: &Database,
    staged: &mut Staged,
    seq: &mut u64,
    ids: &[&str],
    commit: bool,
) -> Vec<bool> {
    let txn = db.begin_write().unwrap();
    let mut fresh = Vec::new();
    let first = *seq;
    let done = {
        let mut events = txn.open_table(EVENTS).unwrap();
        let mut batch = staged.begin(&txn).unwrap();
        for id in ids {
            match batch.check(&events, 1, id, None).unwrap() {
                Check::Seen(_) => fresh.push(false),
                Check::New(slot) => {
                    events.insert(*seq, record(id).as_slice()).unwrap();
                    batch.insert(slot, *seq).unwrap();
                    *seq += 1;
                    fresh.push(true);
                }
            }
        }
        batch.finish((*seq - first) as usize).unwrap()
    };
    if commit {
        txn.commit().unwrap();
        staged.apply(done);
    } else {
        *seq = first;
    }
    fresh
}

fn ingest(db: &Database, staged: &mut Staged, seq: &mut u64, ids: &[&str]) -> Vec<bool> {
    ingest_or_crash(db, staged, seq, ids, true)
}

/// Stores `ids`, all of them new.
fn store_new(db: &Database, staged: &mut Staged, seq: &mut u64, ids: &[String]) {
    assert!(ingest(db, staged, seq, &refs(ids)).iter().all(|&n| n));
}

/// A staged index that writes a run every 100 fingerprints.
fn small_runs() -> Staged {
    Staged {
        freeze_at: 100,
        ..Staged::default()
    }
}

fn reload(db: &Database, freeze_at: usize) -> Staged {
    let txn = db.begin_write().unwrap();
    let mut s = Staged::load(&txn).unwrap();
    txn.abort().unwrap();
    s.freeze_at = freeze_at;
    s
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn refs(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

/// A database with the index's tables (as `Store::open` makes them).
fn fresh_db(dir: &std::path::Path) -> Database {
    let db = Database::create(dir.join("t.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(DEDUPE_COMMITS).unwrap();
    txn.open_table(META).unwrap();
    txn.commit().unwrap();
    db
}

fn runs_of(db: &Database) -> RunSet {
    let txn = db.begin_read().unwrap();
    RunSet::load(&txn.open_table(META).unwrap(), RUNS).unwrap()
}

/// Commits one new id at a time until no freeze is under way (what filled memory is in a
/// run), every run has its filter and the filter of everything is in (sorts and builds are
/// taken in at commits).
fn commit_until_filtered(db: &Database, staged: &mut Staged, seq: &mut u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut n = 0;
    loop {
        let set = runs_of(db);
        let filters = staged.shared.filters();
        if staged.freeze.is_none() && filters.cover(&set) && filters.ready() {
            return;
        }
        drop(filters);
        assert!(
            std::time::Instant::now() < deadline,
            "the filters were never built"
        );
        assert_eq!(ingest(db, staged, seq, &[&format!("filler-{n}")]), [true]);
        n += 1;
    }
}

/// The pre-check settles an id only when a committed snapshot holds that very id (in a
/// run, as the seq it was stored as); everything else is left to the writer with its
/// fingerprint: ids not in a run yet, new ids, another app's, a forged fingerprint
/// collision, and every id while the filters are not built or the database is detached.
#[test]
fn the_precheck_settles_only_ids_a_snapshot_holds() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(fresh_db(dir.path()));
    let mut staged = small_runs();
    let pre = staged.precheck();
    let mut seq = 1;
    let stored = ids("id", 1_000);
    store_new(&db, &mut staged, &mut seq, &stored);
    // No filters yet: nothing is settled.
    let p = pre.check(1, &["id-3"]);
    assert_eq!(p.to_settle(), 0);
    assert_eq!(pre.settle(&["id-3"], p), [hashed("id-3")]);

    staged.build_filter(db.clone());
    // A forged collision: "forged"'s fingerprint points at "id-0"'s event (seq 1), and
    // goes into the next run with the ids below.
    forge(&mut staged, "forged", 1, "id-0");
    let more = ids("more", 150);
    assert!(
        ingest(&db, &mut staged, &mut seq, &refs(&more))
            .iter()
            .all(|&n| n)
    );
    commit_until_filtered(&db, &mut staged, &mut seq);
    let recent = format!("recent-{seq}");
    assert_eq!(ingest(&db, &mut staged, &mut seq, &[&recent]), [true]);
    assert!(staged.active.contains_key(&fingerprint(1, &recent)));

    let asked = [
        "id-0",
        "id-517",
        "more-149",
        "never-stored",
        recent.as_str(),
        "forged",
    ];
    let p = pre.check(1, &asked);
    let known = pre.settle(&asked, p);
    let fp = hashed;
    let epoch = staged.shared.filters().epoch();
    let absent = |id: &str| Known::Absent {
        fp: fingerprint(1, id),
        check: hashes(1, id).1,
        epoch,
    };
    // An id not in a run yet (`recent`) is absent from the runs: the writer's memory has it.
    assert_eq!(
        known,
        [
            Known::Stored(1),
            Known::Stored(518),
            Known::Stored(1_150),
            absent("never-stored"),
            absent(&recent),
            fp("forged"),
        ]
    );
    // Another app's ids are other ids.
    let p = pre.check(2, &["id-0"]);
    assert_eq!(
        pre.settle(&["id-0"], p),
        [Known::Absent {
            fp: fingerprint(2, "id-0"),
            check: hashes(2, "id-0").1,
            epoch
        }]
    );
    // The writer takes a settled id as a duplicate without looking, and a fingerprint
    // as the one to look up.
    let txn = db.begin_write().unwrap();
    {
        let events = txn.open_table(EVENTS).unwrap();
        let mut batch = staged.begin(&txn).unwrap();
        let mut check = |id: &str, k| batch.check(&events, 1, id, Some(k)).unwrap();
        assert_eq!(check("id-0", Known::Stored(1)), Check::Seen(1));
        assert_eq!(check("id-5", fp("id-5")), Check::Seen(6));
        assert_eq!(check(&recent, fp(&recent)), Check::Seen(seq - 1));
        assert_eq!(
            check("forged", fp("forged")),
            Check::New(Slot::FullKey(dedupe_key(1, "forged")))
        );
        assert_eq!(
            check("never-stored", fp("never-stored")),
            Check::New(free_slot("never-stored"))
        );
        assert_eq!(check(&recent, absent(&recent)), Check::Seen(seq - 1));
    }
    txn.abort().unwrap();
    // Detached (the writer is reopening the database): nothing is settled.
    pre.detach();
    let p = pre.check(1, &["id-0"]);
    assert_eq!(p.to_settle(), 1);
    assert_eq!(pre.settle(&["id-0"], p), [fp("id-0")]);
}

/// The writer's batch and a reader (`lookup_committed`) go through the one lookup with
/// their own views (memory and filters; commit rows, no filters) and give the same
/// answers: ids in runs and ids not in a run yet as the seq they were stored as; a new id,
/// another app's and a forged fingerprint collision as not stored.
#[test]
fn the_writer_and_readers_get_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(fresh_db(dir.path()));
    let mut staged = small_runs();
    let mut seq = 1;
    let stored = ids("id", 1_000);
    store_new(&db, &mut staged, &mut seq, &stored);
    staged.build_filter(db.clone());
    // A forged collision: "forged"'s fingerprint points at "id-0"'s event (seq 1), and
    // goes into the next run with the ids below.
    forge(&mut staged, "forged", 1, "id-0");
    let more = ids("more", 150);
    assert!(
        ingest(&db, &mut staged, &mut seq, &refs(&more))
            .iter()
            .all(|&n| n)
    );
    commit_until_filtered(&db, &mut staged, &mut seq);
    let recent = format!("recent-{seq}");
    assert_eq!(ingest(&db, &mut staged, &mut seq, &[&recent]), [true]);
    assert!(staged.active.contains_key(&fingerprint(1, &recent)));

    let asked: [(u32, &str, Option<u64>); 7] = [
        (1, "id-0", Some(1)),
        (1, "id-517", Some(518)),
        (1, "more-149", Some(1_150)),
        (1, recent.as_str(), Some(seq - 1)),
        (1, "never-stored", None),
        (1, "forged", None),
        (2, "id-0", None),
    ];
    let read = db.begin_read().unwrap();
    let txn = db.begin_write().unwrap();
    {
        let events = txn.open_table(EVENTS).unwrap();
        let mut batch = staged.begin(&txn).unwrap();
        for (app, id, want) in asked {
            let by_reader = lookup_committed(&read, app, id).unwrap();
            assert_eq!(by_reader, want, "reader: {app}/{id}");
            let by_writer = match batch.check(&events, app, id, None).unwrap() {
                Check::Seen(seq) => Some(seq),
                Check::New(_) => None,
            };
            assert_eq!(by_writer, want, "writer: {app}/{id}");
        }
        assert_eq!(
            batch.check(&events, 1, "forged", None).unwrap(),
            Check::New(Slot::FullKey(dedupe_key(1, "forged")))
        );
        assert_eq!(
            batch.check(&events, 1, "never-stored", None).unwrap(),
            Check::New(free_slot("never-stored"))
        );
    }
    txn.abort().unwrap();
}

#[test]
fn a_fingerprint_collision_is_neither_a_false_duplicate_nor_a_double() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("t.redb")).unwrap();
    let mut staged = Staged::default();
    let mut seq = 1;
    assert_eq!(ingest(&db, &mut staged, &mut seq, &["a"]), [true]);
    // Forge a collision: make "b"'s fingerprint point at "a"'s event.
    forge(&mut staged, "b", 1, "a");
    assert_eq!(
        ingest(&db, &mut staged, &mut seq, &["b", "b", "a"]),
        [true, false, false]
    );
    assert_eq!(ingest(&db, &mut staged, &mut seq, &["b"]), [false]);
    let txn = db.begin_read().unwrap();
    let overflow = txn.open_table(DEDUPE).unwrap();
    assert_eq!(
        overflow
            .get(dedupe_key(1, "b").as_slice())
            .unwrap()
            .map(|v| v.value()),
        Some(2)
    );
}

/// Thousands of ids through runs of 100 (so that runs are written and merged across
/// levels), with commits lost to "crashes" on the way: every id stays a duplicate, for
/// the writer, after a reload and for readers; the index holds each seq once.
#[test]
fn runs_are_written_merged_and_survive_crashes_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path());
    let mut staged = small_runs();
    let mut seq = 1;
    let all = ids("id", 12_000);
    // Commits of varied sizes, single events among them (a run then replaces rows that
    // start at its very last seq).
    let sizes = [60, 1, 37, 1, 1, 13, 59, 2];
    let mut chunks = Vec::new();
    let mut rest = all.as_slice();
    while !rest.is_empty() {
        let n = sizes[chunks.len() % sizes.len()].min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        chunks.push(chunk);
        rest = tail;
    }
    for (i, chunk) in chunks.into_iter().enumerate() {
        if i % 7 == 3 {
            // Lost before its commit, then reloaded as after a restart.
            ingest_or_crash(&db, &mut staged, &mut seq, &refs(chunk), false);
            staged = reload(&db, 100);
        }
        let out = ingest(&db, &mut staged, &mut seq, &refs(chunk));
        assert!(out.iter().all(|&n| n), "chunk {i}");
        // After every commit, each seq is indexed once.
        let e = entries(&db.begin_read().unwrap()).unwrap();
        let mut m: Vec<u64> = e.runs.iter().chain(&e.unmerged).map(|p| p.0).collect();
        m.sort_unstable();
        m.dedup();
        assert_eq!(m.len(), e.runs.len() + e.unmerged.len(), "chunk {i}");
        assert_eq!(m.len() as u64, seq - 1, "chunk {i}");
    }
    let set = runs_of(&db);
    assert!(set.runs.iter().any(|r| r.level >= 2), "{set:?}");
    assert!(set.runs.len() < 30, "{} runs", set.runs.len());
    assert!(staged.in_memory() < 100 + 60);
    // (One writer at a time: the reload comes after the original's last commit.)
    let out = ingest(&db, &mut staged, &mut seq, &refs(&all));
    assert!(out.iter().all(|&n| !n), "an id passed as new");
    let mut staged = reload(&db, 100);
    let out = ingest(&db, &mut staged, &mut seq, &refs(&all));
    assert!(
        out.iter().all(|&n| !n),
        "an id passed as new after a reload"
    );
    assert_eq!(
        ingest(&db, &mut staged, &mut seq, &["brand-new", "id-5"]),
        [true, false]
    );
    let txn = db.begin_read().unwrap();
    assert_eq!(lookup_committed(&txn, 1, "id-5").unwrap(), Some(6));
    assert_eq!(lookup_committed(&txn, 1, "id-11999").unwrap(), Some(12_000));
    assert_eq!(
        lookup_committed(&txn, 1, "brand-new").unwrap(),
        Some(12_001)
    );
    assert_eq!(lookup_committed(&txn, 1, "missing").unwrap(), None);
    assert_eq!(lookup_committed(&txn, 2, "id-5").unwrap(), None);
    let e = entries(&txn).unwrap();
    let mut seqs: Vec<u64> = e.runs.iter().chain(&e.unmerged).map(|p| p.0).collect();
    seqs.sort_unstable();
    let n = seqs.len();
    seqs.dedup();
    assert_eq!(n, seqs.len(), "a seq is indexed twice");
    assert_eq!(seqs.first(), Some(&1));
    assert_eq!((seqs.len(), seqs.last()), (12_001, Some(&12_001)));
}

/// With filters built in the background (at a start, and for each merge's output while
/// merges go on), every stored id is still a duplicate, and the filters do answer for
/// new ids.
#[test]
fn the_filters_never_hide_a_stored_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(fresh_db(dir.path()));
    let mut staged = small_runs();
    staged.build_filter(db.clone());
    let mut seq = 1;
    let all = ids("id", 6_000);
    for chunk in all.chunks(50) {
        assert!(
            ingest(&db, &mut staged, &mut seq, &refs(chunk))
                .iter()
                .all(|&n| n)
        );
        // Every stored id so far, through whatever filters are in.
        assert!(!ingest(&db, &mut staged, &mut seq, &[chunk[7].as_str()])[0]);
    }
    assert!(
        ingest(&db, &mut staged, &mut seq, &refs(&all))
            .iter()
            .all(|&n| !n)
    );
    // A start: one writer at a time, so the original is done with.
    drop(staged);
    let mut fresh = reload(&db, 100);
    fresh.build_filter(db.clone());
    commit_until_filtered(&db, &mut fresh, &mut seq);
    assert!(
        ingest(&db, &mut fresh, &mut seq, &refs(&all))
            .iter()
            .all(|&n| !n)
    );
    let novel = ids("novel", 3000);
    let set = runs_of(&db);
    let fps: Vec<u128> = novel.iter().map(|id| fingerprint(1, id)).collect();
    let ruled_out = fps
        .iter()
        .filter(|&&fp| fresh.shared.filters().surely_absent(fp))
        .count();
    assert!(
        ruled_out > 2_500,
        "the filter of everything excluded only {ruled_out} of 3000 new ids"
    );
    // Each run's own filter too, but the oldest's: it has none, and is read.
    let (oldest, newer) = set.runs.split_first().expect("runs");
    assert!(newer.len() > 1, "{set:?}");
    for r in newer {
        let excluded = fps
            .iter()
            .filter(|&&fp| !fresh.shared.filters().may_contain(r.id, fp))
            .count();
        assert!(
            excluded > 2_500,
            "run {}'s filter excluded only {excluded} of 3000 new ids",
            r.id
        );
    }
    assert!(
        fps.iter()
            .all(|&fp| fresh.shared.filters().may_contain(oldest.id, fp))
    );
    assert!(
        ingest(&db, &mut fresh, &mut seq, &refs(&novel))
            .iter()
            .all(|&n| n)
    );
}

/// The writer trusts a pre-check's "in no run" ([`Known::Absent`]) only while no run gained
/// ids since (the same filters' epoch), and always asks its memory and its own transaction:
/// the same id judged absent for two requests is stored once, within a batch and across
/// batches; an id committed between the pre-check and the write is a duplicate, whether it
/// is still in memory or went into a run meanwhile; a rebuild of the filters (a reopen)
/// voids every token.
#[test]
fn a_precheck_token_never_lets_a_duplicate_through() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(fresh_db(dir.path()));
    let mut staged = small_runs();
    let pre = staged.precheck();
    let mut seq = 1;
    let stored = ids("id", 300);
    ingest(&db, &mut staged, &mut seq, &refs(&stored));
    staged.build_filter(db.clone());
    commit_until_filtered(&db, &mut staged, &mut seq);
    let token = |id: &str| {
        let p = pre.check(1, &[id]);
        let known = pre.settle(&[id], p);
        assert!(matches!(known[0], Known::Absent { .. }), "{id}: {known:?}");
        known[0]
    };
    // Writes `items` (id, what its pre-check knew) in one transaction, as the writer does;
    // returns which were new.
    let write = |staged: &mut Staged, seq: &mut u64, items: &[(&str, Known)]| -> Vec<bool> {
        let txn = db.begin_write().unwrap();
        let first = *seq;
        let mut fresh = Vec::new();
        let done = {
            let mut events = txn.open_table(EVENTS).unwrap();
            let mut batch = staged.begin(&txn).unwrap();
            for &(id, known) in items {
                match batch.check(&events, 1, id, Some(known)).unwrap() {
                    Check::Seen(_) => fresh.push(false),
                    Check::New(slot) => {
                        events.insert(*seq, record(id).as_slice()).unwrap();
                        batch.insert(slot, *seq).unwrap();
                        *seq += 1;
                        fresh.push(true);
                    }
                }
            }
            batch.finish((*seq - first) as usize).unwrap()
        };
        txn.commit().unwrap();
        staged.apply(done);
        fresh
    };

    // The same id in two requests, judged in the same epoch: once in one batch...
    let (a1, a2) = (token("twice-a"), token("twice-a"));
    assert_eq!(a1, a2);
    let got = write(&mut staged, &mut seq, &[("twice-a", a1), ("twice-a", a2)]);
    assert_eq!(got, [true, false]);
    // ...and across two batches.
    let (b1, b2) = (token("twice-b"), token("twice-b"));
    assert_eq!(write(&mut staged, &mut seq, &[("twice-b", b1)]), [true]);
    assert_eq!(write(&mut staged, &mut seq, &[("twice-b", b2)]), [false]);

    // Committed between the pre-check and the write, still in memory.
    let c = token("between-c");
    assert_eq!(ingest(&db, &mut staged, &mut seq, &["between-c"]), [true]);
    assert_eq!(write(&mut staged, &mut seq, &[("between-c", c)]), [false]);

    // Committed between them and gone into a run since (memory no longer has it).
    let d = token("between-d");
    let Known::Absent { epoch: judged, .. } = d else {
        unreachable!()
    };
    assert_eq!(ingest(&db, &mut staged, &mut seq, &["between-d"]), [true]);
    let runs_before = runs_of(&db).runs.len();
    let mut n = 0;
    let in_memory = |s: &Staged| {
        let fp = fingerprint(1, "between-d");
        s.active.contains_key(&fp) || s.frozen.contains_key(&fp)
    };
    while in_memory(&staged) {
        ingest(&db, &mut staged, &mut seq, &[&format!("push-{n}")]);
        n += 1;
    }
    assert!(runs_of(&db).runs.len() + 1 > runs_before);
    assert_ne!(staged.shared.filters().epoch(), judged);
    assert_eq!(write(&mut staged, &mut seq, &[("between-d", d)]), [false]);

    // A token still standing is trusted: a new id is new.
    let f = token("new-f");
    assert_eq!(write(&mut staged, &mut seq, &[("new-f", f)]), [true]);

    // A rebuild of the filters (as after a reopen) voids older tokens.
    let e = token("rebuilt-e");
    assert_eq!(ingest(&db, &mut staged, &mut seq, &["rebuilt-e"]), [true]);
    let mut reloaded = reload(&db, 100);
    reloaded.share(staged.precheck());
    reloaded.build_filter(db.clone());
    assert_eq!(write(&mut reloaded, &mut seq, &[("rebuilt-e", e)]), [false]);
}

/// An id's check bits stored with its fingerprint answer "duplicate" without the record,
/// but only for an event nothing removed: after retention or erasure removed it (and with
/// it its full key), the same id is new again, to the writer, the pre-check and readers
/// alike, although its run entry with the same check bits stays.
#[test]
fn a_removed_event_is_new_again_although_its_check_bits_match() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(fresh_db(dir.path()));
    let mut staged = small_runs();
    let pre = staged.precheck();
    let mut seq = 1;
    let stored = ids("id", 300);
    store_new(&db, &mut staged, &mut seq, &stored);
    staged.build_filter(db.clone());
    commit_until_filtered(&db, &mut staged, &mut seq);
    let recent = format!("recent-{seq}");
    assert_eq!(ingest(&db, &mut staged, &mut seq, &[&recent]), [true]);
    let recent_seq = seq - 1;
    assert!(staged.active.contains_key(&fingerprint(1, &recent)));

    // In a run and in memory, with their check bits: duplicates.
    let asked = ["id-7", recent.as_str()];
    let p = pre.check(1, &asked);
    assert_eq!(pre.settle(&asked, p)[0], Known::Stored(8));
    // Removed as retention and erasure do (the event and its full key, if any).
    let txn = db.begin_write().unwrap();
    let victims = [8, recent_seq].map(|seq| crate::store::Victim {
        seq,
        dedupe_key: dedupe_key(1, if seq == 8 { "id-7" } else { &recent }),
        audit_key: format!("audit-{seq}"),
    });
    let removed =
        crate::store::remove_events(&txn, &victims, crate::store::BodyRule::Forget).unwrap();
    assert_eq!(removed, 2);
    txn.commit().unwrap();

    let p = pre.check(1, &asked);
    let known = pre.settle(&asked, p);
    assert!(
        known.iter().all(|k| !matches!(k, Known::Stored(_))),
        "{known:?}"
    );
    let read = db.begin_read().unwrap();
    let txn = db.begin_write().unwrap();
    {
        let events = txn.open_table(EVENTS).unwrap();
        let mut batch = staged.begin(&txn).unwrap();
        for (id, k) in asked.iter().zip(known) {
            assert_eq!(
                lookup_committed(&read, 1, id).unwrap(),
                None,
                "reader: {id}"
            );
            assert_eq!(
                batch.check(&events, 1, id, Some(k)).unwrap(),
                Check::New(Slot::FullKey(dedupe_key(1, id))),
                "writer: {id}"
            );
        }
        // Another stored id still is a duplicate.
        assert_eq!(
            batch.check(&events, 1, "id-8", None).unwrap(),
            Check::Seen(9)
        );
    }
    txn.abort().unwrap();
}

/// The check bits are what answers "duplicate" (the record is not read); an entry without
/// them (written by an older build) still has its record read.
#[test]
fn a_duplicate_is_answered_from_the_index_entry_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(fresh_db(dir.path()));
    let mut staged = small_runs();
    let mut seq = 1;
    let stored = ids("id", 300);
    store_new(&db, &mut staged, &mut seq, &stored);
    // An older build's entry: no check bits.
    staged.active.insert(
        fingerprint(1, "old"),
        Owner {
            seq: 9,
            check: super::rows::NO_CHECK,
        },
    );
    // Records gone without a removal (never done outside this test): only the index
    // entry can answer.
    let txn = db.begin_write().unwrap();
    {
        let mut events = txn.open_table(EVENTS).unwrap();
        events.remove(8).unwrap();
        events.remove(9).unwrap();
    }
    txn.commit().unwrap();
    let read = db.begin_read().unwrap();
    assert_eq!(lookup_committed(&read, 1, "id-7").unwrap(), Some(8));
    let txn = db.begin_write().unwrap();
    {
        let events = txn.open_table(EVENTS).unwrap();
        let mut batch = staged.begin(&txn).unwrap();
        assert_eq!(
            batch.check(&events, 1, "id-7", None).unwrap(),
            Check::Seen(8)
        );
        assert_eq!(
            batch.check(&events, 1, "old", None).unwrap(),
            Check::New(Slot::FullKey(dedupe_key(1, "old")))
        );
    }
    txn.abort().unwrap();
}

/// A freeze is sorted off the writer thread and written a step per commit: until its last
/// step no reader sees the run and every id stays a duplicate (memory and the commit rows
/// still hold them); a crash midway leaves a partial table that the next freeze drops; the
/// finished run replaces exactly the rows it holds.
#[test]
fn a_run_is_frozen_in_steps_and_a_crash_midway_starts_it_again() {
    use crate::store::runs::is_run_table;
    use redb::TableHandle;
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path());
    let background = |freeze_at| Staged {
        freeze_at,
        sort_inline_below: 0,
        ..Staged::default()
    };
    let mut staged = background(5_000);
    let mut seq = 1;
    let first = ids("first", 5_000);
    store_new(&db, &mut staged, &mut seq, &first);
    let run_tables = |db: &Database| -> Vec<String> {
        let txn = db.begin_read().unwrap();
        let names = txn.list_tables().unwrap().map(|t| t.name().to_owned());
        names.filter(|n| is_run_table(n)).collect()
    };
    // Single events until a step is written (the sort runs on its own thread).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut n = 0;
    let mut new_one = |db: &Database, staged: &mut Staged, seq: &mut u64| {
        n += 1;
        assert_eq!(ingest(db, staged, seq, &[&format!("single-{n}")]), [true]);
    };
    while runs_of(&db).adding.is_none() {
        assert!(std::time::Instant::now() < deadline, "no step was written");
        new_one(&db, &mut staged, &mut seq);
    }
    let set = runs_of(&db);
    assert!(set.runs.is_empty(), "a partial run is listed: {set:?}");
    let partial = set.adding.clone().unwrap();
    assert!(
        partial.written > 0 && partial.written < 5_000,
        "{partial:?}"
    );
    assert_eq!(run_tables(&db).len(), 1);
    assert!(
        ingest(&db, &mut staged, &mut seq, &refs(&first))
            .iter()
            .all(|&n| !n)
    );

    // A crash: the freeze is lost with the writer's memory; the reload finds every id in
    // the commit rows, and the next freeze drops the partial table.
    let mut staged = reload(&db, 5_000);
    staged.sort_inline_below = 0;
    assert!(
        ingest(&db, &mut staged, &mut seq, &refs(&first))
            .iter()
            .all(|&n| !n)
    );
    while runs_of(&db).runs.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run was never completed"
        );
        new_one(&db, &mut staged, &mut seq);
    }
    let set = runs_of(&db);
    assert_eq!(set.adding, None);
    assert_eq!(set.runs.len(), 1);
    assert_ne!(set.runs[0].id, partial.id, "the partial run was continued");
    assert!(set.runs[0].keys >= 5_000, "{set:?}");
    let listed = crate::store::runs::table_name(RUNS, set.runs[0].id);
    assert_eq!(run_tables(&db), [listed], "the partial table is left");
    // Every seq is indexed once, the run's entries left memory and the commit rows, and
    // every id is still a duplicate, for the writer and after a reload.
    let e = entries(&db.begin_read().unwrap()).unwrap();
    let mut seqs: Vec<u64> = e.runs.iter().chain(&e.unmerged).map(|p| p.0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), e.runs.len() + e.unmerged.len());
    assert_eq!(seqs.len() as u64, seq - 1);
    assert_eq!(staged.in_memory(), e.unmerged.len());
    assert!(
        ingest(&db, &mut staged, &mut seq, &refs(&first))
            .iter()
            .all(|&n| !n)
    );
    let mut staged = reload(&db, 5_000);
    assert!(
        ingest(&db, &mut staged, &mut seq, &refs(&first))
            .iter()
            .all(|&n| !n)
    );
    assert_eq!(staged.in_memory(), e.unmerged.len());
}

/// A sort that never comes back (its thread gone) gives its fingerprints back to memory, and
/// the freeze that follows replaces exactly their commit rows, even when the commit that
/// notices it added nothing.
#[test]
fn a_lost_sort_is_frozen_again_with_its_rows() {
    use super::index::Freeze;
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path());
    let mut staged = Staged {
        freeze_at: 500,
        sort_inline_below: 0,
        ..Staged::default()
    };
    let mut seq = 1;
    let first = ids("first", 600);
    store_new(&db, &mut staged, &mut seq, &first);
    let Some(Freeze::Sorting(_, upto)) = staged.freeze else {
        panic!("no sort under way");
    };
    assert_eq!(upto, 600);
    let (_, dead) = std::sync::mpsc::channel();
    staged.freeze = Some(Freeze::Sorting(dead, upto));
    // Duplicates only: the commits add nothing to memory.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while runs_of(&db).runs.is_empty() {
        assert!(std::time::Instant::now() < deadline, "never frozen again");
        assert_eq!(ingest(&db, &mut staged, &mut seq, &["first-1"]), [false]);
    }
    let e = entries(&db.begin_read().unwrap()).unwrap();
    assert_eq!(e.runs.len(), 600);
    assert!(e.unmerged.is_empty(), "{} rows left", e.unmerged.len());
    assert_eq!(staged.in_memory(), 0);
    assert!(
        ingest(&db, &mut staged, &mut seq, &refs(&first))
            .iter()
            .all(|&n| !n)
    );
}

/// Merge work is done in steps of at least a floor and whole blocks, within the cap: the
/// commits in between only earn it.
#[test]
fn merge_steps_are_whole_blocks_past_a_floor() {
    use super::index::{KEYS_PER_BLOCK, step_budget};
    assert_eq!(step_budget(0), 0);
    let floor = (1..100_000).find(|&k| step_budget(k) > 0).unwrap();
    assert!(floor > 1, "every commit steps");
    let mut last = 0;
    for earned in [
        floor,
        floor + 1,
        4 * 30,
        4 * 1000,
        4 * 4000,
        4 * 16 * 1024,
        1 << 22,
    ] {
        let budget = step_budget(earned);
        if earned < floor {
            assert_eq!(budget, 0);
            continue;
        }
        assert_eq!(budget % KEYS_PER_BLOCK, 0, "{earned} earned: {budget}");
        assert!(budget >= last, "{earned} earned: {budget} < {last}");
        assert!(budget <= 64 * 1024, "{earned} earned: {budget}");
        if earned <= 64 * 1024 - KEYS_PER_BLOCK {
            assert!(budget >= earned, "{earned} earned: {budget}");
            assert!(
                budget < earned + KEYS_PER_BLOCK,
                "{earned} earned: {budget}"
            );
        }
        last = budget;
    }
}
