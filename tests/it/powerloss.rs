//! Power-loss and fault-injection campaigns on a simulated disk ([`crate::simdisk`]), driving
//! the real store and group-commit writer in-process.
//!
//! Power loss: rounds of (writer under load from several tasks → the power goes out at a
//! random mutating disk operation → the image a disk could hold: unsynced writes dropped, or
//! a prefix of them kept with the last one torn → reopen → verify). Every event whose
//! submission was answered `Ok` must be in the reopened database exactly once, and
//! [`inlet::store::Store::verify`] must find the invariants intact.
//!
//! Faults: write errors, a full disk and failed fsyncs during commits → every affected
//! submission gets `CommitFailed` (never `Ok`), the writer reopens the database and works
//! again once the fault clears, and nothing acknowledged before is lost.
//!
//! `INLET_POWERLOSS_ROUNDS` (default 25 per variant) and `INLET_CRASH_SEED` replay or extend
//! it; `INLET_CAMPAIGN_REPORT=FILE` appends the figures.

use crate::crash::{Rng, env_u64, seed};
use crate::simdisk::{Fault, Image, SimDisk};
use inlet::event::Draft;
use inlet::store::read::KeyInfo;
use inlet::store::writer::{Outcome, Pending, Submission, SubmitError, Writer};
use inlet::store::{Store, builder};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn open(disk: &SimDisk) -> Store {
    let d = disk.clone();
    Store::open_with("sim.redb".into(), move || {
        builder().create_with_backend(d.backend()?)
    })
    .expect("the simulated database opens")
}

/// One event as a dialect hands it to the writer: a validated `Draft`, encoded.
fn pending(id: &str) -> Pending {
    let key = KeyInfo {
        key_id: 1,
        app_id: 1,
        app: "default".into(),
        tenant_id: 1,
        tenant: "default".into(),
        allowed_events: Vec::new(),
        rate_limit: None,
    };
    let mut props = serde_json::Map::new();
    props.insert("pad".into(), "x".repeat(200).into());
    let event = Draft {
        event_id: Some(id.into()),
        event_name: "purchase".into(),
        event_ts_ms: 1_735_999_999_000,
        install_uuid: Some("8f2a1c0e94d7423b8b53af7c9e21d630".into()),
        revenue: Some(1.5),
        currency: Some("EUR".into()),
        props,
        ..Draft::default()
    }
    .validate(|| unreachable!("the event has an id"))
    .expect("a valid event");
    let audit_key = format!("s2s/x/{id}.json");
    Pending::from_valid(&key, "reflect", inlet::clock::now_ms(), event, &audit_key)
}

fn submission(ids: &[String]) -> Submission {
    Submission {
        app_id: 1,
        tenant_id: 1,
        key_id: 1,
        received_at_ms: inlet::clock::now_ms(),
        events: ids.iter().map(|id| pending(id)).collect(),
        audit: Some((
            format!("s2s/bulk/x/{}.json", ids[0]),
            vec![b'{'; 300].into(),
        )),
    }
}

/// Results of one load: ids answered Ok, ids answered with an error.
#[derive(Default)]
struct Answers {
    acked: Vec<String>,
    failed: Vec<String>,
    failed_commits: u64,
}

/// Submits `plan` then fresh ids `{prefix}-{task}-{n}` from `tasks` tasks, each until its
/// first error or `max_per_task` submissions.
async fn load(
    writer: &Arc<Writer>,
    tasks: usize,
    prefix: &str,
    plan: &[String],
    max_per_task: usize,
    seed: u64,
) -> Answers {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let w = writer.clone();
        let mine: Vec<String> = plan.iter().skip(t).step_by(tasks).cloned().collect();
        let prefix = prefix.to_owned();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed ^ (t as u64 + 7).wrapping_mul(0x5851_f42d));
            let mut owed = mine.into_iter();
            let mut n = 0;
            let mut a = Answers::default();
            for _ in 0..max_per_task {
                let size = 1 + rng.below(8) as usize;
                let mut ids = Vec::new();
                while ids.len() < size {
                    ids.push(owed.next().unwrap_or_else(|| {
                        n += 1;
                        format!("{prefix}-{t}-{n}")
                    }));
                }
                match w.submit(submission(&ids), 2048).await {
                    Ok(outcomes) => {
                        for o in &outcomes {
                            assert!(
                                matches!(o, Outcome::Accepted { .. } | Outcome::Duplicate { .. }),
                                "{o:?}"
                            );
                        }
                        a.acked.extend(ids);
                    }
                    Err(e) => {
                        if e == SubmitError::CommitFailed {
                            a.failed_commits += 1;
                        }
                        a.failed.extend(ids);
                        break;
                    }
                }
            }
            a.failed.extend(owed);
            a
        }));
    }
    let mut all = Answers::default();
    for h in handles {
        let a = h.await.expect("task");
        all.acked.extend(a.acked);
        all.failed.extend(a.failed);
        all.failed_commits += a.failed_commits;
    }
    all
}

/// Verifies `store` against the acknowledged and sent ids; returns the stored count.
fn check(store: &Store, acked: &HashSet<String>, sent: &HashSet<String>) -> usize {
    let report = store.verify().expect("verify");
    assert!(
        report.problems.is_empty(),
        "invariants broken:\n{}",
        report.problems.join("\n")
    );
    let mut stored: HashMap<&str, u32> = HashMap::new();
    for (_, _, id) in &report.events {
        *stored.entry(id).or_default() += 1;
    }
    assert!(stored.values().all(|n| *n == 1), "an event stored twice");
    for id in acked {
        assert!(stored.contains_key(id.as_str()), "acknowledged {id} lost");
    }
    for id in stored.keys() {
        assert!(sent.contains(*id), "{id} stored but never sent");
    }
    report.events.len()
}

fn report(line: &str) {
    crate::support::report_campaign(line);
}

async fn power_loss_campaign(torn: bool) {
    let rounds = env_u64("INLET_POWERLOSS_ROUNDS", 25);
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut image = Vec::new();
    let (mut acked, mut sent, mut owed) = (HashSet::new(), HashSet::new(), Vec::<String>::new());
    let (mut torn_images, mut ops_total) = (0u64, 0u64);
    let mut stored = 0;
    for round in 0..rounds {
        let disk = SimDisk::with_image(image.clone());
        let store = open(&disk);
        stored = check(&store, &acked, &sent);
        let writer = Arc::new(Writer::start(&store, 64 << 20, listeners(&store)).expect("writer"));
        // The power goes out somewhere in the next ~800 mutating operations (a commit of
        // this load takes roughly 5-30).
        disk.cut_power_after(rng.below(800));
        // Resubmit what failed, and a sample of what was acknowledged (must be duplicates).
        let mut plan = std::mem::take(&mut owed);
        let mut sample: Vec<&String> = acked.iter().take(16).collect();
        sample.sort();
        plan.extend(sample.into_iter().cloned());
        let answers = load(&writer, 4, &format!("r{round}"), &plan, 100, rng.next()).await;
        assert!(disk.is_dead() || answers.failed.is_empty());
        writer.stop();
        drop(writer);
        drop(store);
        sent.extend(answers.acked.iter().cloned());
        sent.extend(answers.failed.iter().cloned());
        for id in answers.acked {
            acked.insert(id);
        }
        owed = answers
            .failed
            .into_iter()
            .filter(|id| !acked.contains(id))
            .collect();
        ops_total += disk.ops();
        let how = if torn && disk.unsynced_writes() > 0 {
            torn_images += 1;
            let n = disk.unsynced_writes();
            Image::Torn {
                keep: rng.below(n as u64) as usize,
                torn_bytes: rng.below(4096) as usize,
            }
        } else {
            Image::Drop
        };
        image = disk.crash_image(how);
    }
    let disk = SimDisk::with_image(image);
    let store = open(&disk);
    stored = stored.max(check(&store, &acked, &sent));
    report(&format!(
        "power-loss campaign ({}): seed {seed} rounds {rounds} acknowledged {} stored {stored} lost 0 doubled 0 torn-images {torn_images} disk-ops {ops_total}",
        if torn {
            "torn writes"
        } else {
            "unsynced writes dropped"
        },
        acked.len(),
    ));
    assert!(
        acked.len() > rounds as usize,
        "the load got events acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_drops_unsynced_writes() {
    power_loss_campaign(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_tears_unsynced_writes() {
    power_loss_campaign(true).await;
}

/// Runs load while `fault` is injected, then clears it; returns (faults injected, failed
/// commits, reopens).
async fn fault_round(fault: Fault) -> (u64, u64, usize) {
    let disk = SimDisk::default();
    let store = open(&disk);
    let writer = Arc::new(Writer::start(&store, 64 << 20, listeners(&store)).expect("writer"));
    let mut acked = HashSet::new();
    let mut sent = HashSet::new();

    let before = load(&writer, 3, "before", &[], 30, 1).await;
    assert!(before.failed.is_empty());
    acked.extend(before.acked.iter().cloned());
    sent.extend(before.acked);

    let fault = match fault {
        // "Full" means: no room beyond what the file holds now.
        Fault::Full(_) => Fault::Full(disk.backend_len()),
        f => f,
    };
    disk.set_fault(fault);
    let during = load(&writer, 3, "during", &[], 200, 2).await;
    assert!(
        !during.failed.is_empty(),
        "{fault:?}: the fault must make commits fail"
    );
    assert!(during.failed_commits > 0);
    acked.extend(during.acked.iter().cloned());
    sent.extend(during.acked.iter().cloned());
    sent.extend(during.failed.iter().cloned());
    // Readiness reports the failure until the writer has reopened the database (which may
    // already have happened by now: opening needs no room, and no commit was tried since).
    assert!(
        !writer.stats().healthy.load(Ordering::SeqCst)
            || writer.stats().reopens.load(Ordering::SeqCst) >= 1,
        "readiness reflects the failure"
    );
    // While the fault lasts, reads answer (or fail) without blocking.
    let _ = store.verify();

    disk.set_fault(Fault::None);
    // Once the fault clears the writer reopens the database by itself.
    crate::support::wait_for("the writer to recover", || {
        writer.stats().healthy.load(Ordering::SeqCst)
    });
    // Clients resubmit what failed, then send new events: all succeed.
    let after = load(&writer, 3, "after", &during.failed, 30, 3).await;
    assert!(after.failed.is_empty(), "recovered writer refused work");
    acked.extend(after.acked.iter().cloned());
    sent.extend(after.acked);
    let failed_commits = writer.stats().failed_commits.load(Ordering::SeqCst) as u64;
    let reopens = writer.stats().reopens.load(Ordering::SeqCst);
    assert!(reopens >= 1);
    check(&store, &acked, &sent);
    writer.stop();
    drop(writer);
    drop(store);
    // And it all survives a power cut right now (acknowledged means synced).
    let image = disk.crash_image(Image::Drop);
    check(&open(&SimDisk::with_image(image)), &acked, &sent);
    (disk.faults_injected(), failed_commits, reopens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_errors_full_disk_and_failed_fsync_never_acknowledge_and_recover() {
    for fault in [Fault::WriteError, Fault::Full(0), Fault::SyncError] {
        let (injected, failed, reopens) = fault_round(fault).await;
        report(&format!(
            "fault injection ({fault:?}): faults injected {injected} failed commits {failed} reopens {reopens} lost 0 doubled 0"
        ));
    }
}

/// The writer's listeners of a serving process: the panel's tallies and the identity indexer.
fn listeners(store: &Store) -> inlet::store::writer::Listeners {
    let identity = inlet::identity::Identity::in_memory(store);
    let indexer = inlet::identity::indexer::Indexer::start(identity).expect("indexer");
    vec![Arc::new(inlet::admin::panel::Tallies), Arc::new(indexer)]
}
