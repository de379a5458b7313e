//! Erasure in cluster mode (src/cluster/erase.rs): asked on a node that does not own the
//! subject's partition, it reaches every node's database, the engine's stream (raw bytes of
//! every message), the suppression list of whichever node serves the partition, and a fresh
//! node rebuilt from the engine; an owner killed between the erasure record and the deletion
//! of the originals, or whose deletion failed, still ends with the subject gone.

use crate::cluster::{Cluster, Node, raw_stream, tenant_partition};
use crate::engine::Engine;
use crate::support::{Client, DEADLINE, Resp, cli, event, files_contain, parse_ndjson, wait_for};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;

/// The subject: long, distinct strings, so a byte scan finds them only where they are.
const USER: &str = "subj-user-c7e19a";
const INSTALL: &str = "subj-inst-5d20bf";
const SUBJ_EVENT: &str = "ev-subj-e8";

fn needles() -> [&'static str; 3] {
    [USER, INSTALL, SUBJ_EVENT]
}

fn subject_event(n: usize) -> Value {
    let mut e = event(&format!("{SUBJ_EVENT}-{n}"));
    e["user_id"] = json!(USER);
    e["install_uuid"] = json!(INSTALL);
    e
}

fn kept_event(id: &str) -> Value {
    let mut e = event(id);
    // Each its own person (the helper's events share one install id, hence one profile).
    e["install_uuid"] = json!(format!("keep-inst-{id}"));
    e
}

fn bulk(addr: SocketAddr, key: &str, events: &[Value]) -> Resp {
    let auth = format!("Bearer {key}");
    Client::new(addr)
        .post(
            "/s2s/events/bulk",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            json!({ "events": events }).to_string().as_bytes(),
        )
        .unwrap()
}

/// Sends `events` through `node`, retrying through the others while the cluster answers 503.
fn send(cluster: &Cluster, live: &[usize], first: usize, key: &str, events: &[Value]) -> Value {
    let end = std::time::Instant::now() + DEADLINE * 2;
    let mut i = first;
    loop {
        let r = bulk(cluster.nodes[live[i % live.len()]].addr, key, events);
        if r.status == 200 {
            return r.json();
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(std::time::Instant::now() < end, "no node took the batch");
        i += 1;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The first needle in any message of the stream.
fn stream_leftover(engine: &Engine) -> Option<(&'static str, u64)> {
    let messages = raw_stream(engine);
    needles().into_iter().find_map(|n| {
        messages
            .iter()
            .find(|(_, m)| m.windows(n.len()).any(|w| w == n.as_bytes()))
            .map(|(seq, _)| (n, *seq))
    })
}

/// A node's export of app `app`: event id → times exported (`None`: the node does not answer).
fn exported(node: &Node, app: &str) -> Option<(HashMap<String, usize>, String)> {
    let out = cli(&node.data, &["export", "--app", app]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ids = HashMap::new();
    for e in parse_ndjson(&text) {
        *ids.entry(e["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    Some((ids, text))
}

/// An admin session on `node` (its first-run setup code, from its log): (client, cookie, csrf).
fn admin(node: &Node) -> (Client, String, String) {
    let code = crate::admin::setup_code_in(&node.log);
    let mut client = Client::new(node.addr);
    let r = client
        .post(
            "/admin/api/setup",
            &[("Content-Type", "application/json")],
            json!({ "code": code, "password": "a long enough password" })
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = r.json()["csrf_token"].as_str().unwrap().to_owned();
    (client, cookie, csrf)
}

/// Events of the subject and of others for tenant t1, in batches through every node, and
/// some of tenant t2. Returns the kept ids of t1 and the number of the subject's events.
fn fill(cluster: &Cluster, live: &[usize]) -> (Vec<String>, usize) {
    let (mut kept, mut subj) = (Vec::new(), 0);
    for round in 0..3 {
        for n in 0..live.len() {
            let mut batch = vec![subject_event(subj)];
            subj += 1;
            for k in 0..2 {
                let id = format!("ev-keep-{round}-{n}-{k}");
                batch.push(kept_event(&id));
                kept.push(id);
            }
            let body = send(cluster, live, n, &cluster.keys[0], &batch);
            assert_eq!(body["accepted"], 3, "{body}");
            let other: Vec<Value> = (0..2)
                .map(|k| kept_event(&format!("ev-t2-{round}-{n}-{k}")))
                .collect();
            send(cluster, live, n, &cluster.keys[1], &other);
        }
    }
    // A batch of the subject alone, and one single event of theirs.
    let only: Vec<Value> = (subj..subj + 2).map(subject_event).collect();
    subj += 2;
    send(cluster, live, 1, &cluster.keys[0], &only);
    (kept, subj)
}

/// After the erasure: `node` (serving t1's partition) exports every kept event once and
/// nothing of the subject, and refuses the subject's events.
fn check_node(node: &Node, kept: &[String], key: &str) {
    wait_for("the node's export without the subject", || {
        let Some((ids, text)) = exported(node, "app-t1") else {
            return false;
        };
        needles().iter().all(|n| !text.contains(n))
            && kept.iter().all(|k| ids.get(k) == Some(&1))
            && ids.len() == kept.len()
    });
    // A resent erased event and a new event of a suppressed identifier: refused, as a single
    // inlet refuses them.
    let mut fresh = kept_event("ev-new-of-subject");
    fresh["install_uuid"] = json!(INSTALL);
    for e in [subject_event(0), fresh] {
        let r = bulk(node.addr, key, &[e]);
        assert!(r.text().contains("subject_suppressed"), "{}", r.text());
    }
}

#[test]
fn an_erasure_asked_on_any_node_reaches_every_node_the_engine_and_a_rebuilt_node() {
    let engine = Engine::cluster();
    let mut cluster = Cluster::start(&engine);
    let live = [0, 1, 2];
    let (kept, subject_events) = fill(&cluster, &live);
    let p = tenant_partition(&engine, "t1");
    let owner = cluster.settled_owner(p);
    let asked = (owner + 1) % 3;
    assert!(
        stream_leftover(&engine).is_some(),
        "the subject is in the stream first"
    );

    // Through the admin API of a node that does not own the partition.
    let (mut client, cookie, csrf) = admin(&cluster.nodes[asked]);
    let r = client
        .post(
            "/admin/api/erasures",
            &[
                ("Content-Type", "application/json"),
                ("Cookie", &cookie),
                ("X-CSRF-Token", &csrf),
            ],
            json!({ "app": "app-t1", "id": format!("user_id={USER}"), "suppress": true })
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let receipt = r.json();
    assert_eq!(receipt["events"], subject_events as u64, "{receipt}");
    assert!(receipt.to_string().contains(INSTALL), "{receipt}");
    let erasure_id = receipt["erasure_id"].as_str().unwrap().to_owned();

    // The engine: no byte of the subject in any message; the other events still there.
    assert_eq!(stream_leftover(&engine), None);
    // The owner's database and export; the suppression, through every node.
    check_node(&cluster.nodes[owner], &kept, &cluster.keys[0]);
    for n in live {
        let mut again = kept_event(&format!("ev-new-via-{n}"));
        again["user_id"] = json!(USER);
        let r = bulk(cluster.nodes[n].addr, &cluster.keys[0], &[again]);
        assert!(
            r.text().contains("subject_suppressed"),
            "node {n}: {}",
            r.text()
        );
        // A node that held the partition before (ownership moves while nodes join) erases
        // its old copy too.
        wait_for("no node's export holds the subject", || {
            exported(&cluster.nodes[n], "app-t1")
                .is_some_and(|(_, text)| needles().iter().all(|s| !text.contains(s)))
        });
        let ledger = cluster.nodes[n].cli_ok(&["erasures", "list", "--json"]);
        assert!(ledger.contains(&erasure_id), "node {n}: {ledger}");
    }
    for n in live {
        // Once its file is rewritten (the erasure's last step on that node).
        wait_for("no file of any node holds the subject", || {
            files_contain(&cluster.nodes[n].data, USER.as_bytes()).is_none()
        });
    }
    let ledger = cluster.nodes[owner].cli_ok(&["erasures", "list", "--json"]);
    assert!(ledger.contains(&erasure_id), "{ledger}");

    // Tenant t2's events are untouched.
    let t2 = exported(
        &cluster.nodes[cluster.owner_of(&live, tenant_partition(&engine, "t2"))],
        "app-t2",
    )
    .unwrap()
    .0;
    assert_eq!(t2.len(), 3 * 3 * 2);

    // A fresh node on an empty data dir, alone: it rebuilds every partition from the engine
    // (the originals are gone; the erasure record holds the rest of their batches).
    for n in live {
        cluster.nodes[n].stop();
    }
    let data = cluster.dirs.path().join("n4");
    std::fs::create_dir(&data).unwrap();
    cluster.nodes.push(Node::start("n4", &data, &engine));
    cluster.wait_all_served(&[3]);
    check_node(&cluster.nodes[3], &kept, &cluster.keys[0]);
    let ledger = cluster.nodes[3].cli_ok(&["erasures", "list", "--json"]);
    assert!(ledger.contains(&erasure_id), "{ledger}");
    for n in needles() {
        assert_eq!(files_contain(&data, n.as_bytes()), None, "{n}");
    }

    // The suppression lifted (a record of its own, after the erasure): accepted again.
    let said = cluster.nodes[3].cli_ok(&["erasures", "unsuppress", &erasure_id]);
    assert!(said.contains("suppression lifted"), "{said}");
    let r = bulk(cluster.nodes[3].addr, &cluster.keys[0], &[subject_event(0)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 1, "{}", r.text());
    assert!(raw_stream(&engine).iter().any(|(_, m)| {
        inlet::cluster::wire::decode_privacy(m)
            .is_ok_and(|r| matches!(r, inlet::cluster::wire::PrivacyRecord::Lift { .. }))
    }));
}

/// A filled cluster whose nodes run with the test hook `hook`, and the subject erased (with
/// its suppression) through the CLI of t1's partition's owner, which the hook makes fail
/// after the erasure record. Returns the cluster, the kept ids, the partition and its owner.
fn erase_failing_on_owner(engine: &Engine, hook: &str) -> (Cluster, Vec<String>, u32, usize) {
    let cluster = Cluster::start_with_env(engine, &[(hook, "1")]);
    let (kept, _) = fill(&cluster, &[0, 1, 2]);
    let p = tenant_partition(engine, "t1");
    let owner = cluster.settled_owner(p);
    let out = cli(
        &cluster.nodes[owner].data,
        &[
            "erase",
            "--app",
            "app-t1",
            &format!("--id=user_id={USER}"),
            "--suppress",
        ],
    );
    assert!(
        !out.status.success(),
        "{hook}: the owner's erasure was to fail"
    );
    (cluster, kept, p, owner)
}

#[test]
fn an_owner_killed_between_the_erasure_record_and_the_deletes_still_erases() {
    let engine = Engine::cluster();
    // The owner aborts once the record is appended.
    let (mut cluster, kept, p, owner) =
        erase_failing_on_owner(&engine, "INLET_TEST_CRASH_AFTER_ERASURE_RECORD");
    cluster.nodes[owner].kill();
    assert!(
        stream_leftover(&engine).is_some(),
        "the originals outlive the owner's crash"
    );
    let others: Vec<usize> = [0, 1, 2].into_iter().filter(|&n| n != owner).collect();
    cluster.wait_all_served(&others);
    let new_owner = cluster.owner_of(&others, p);
    // The new owner applies the record and deletes the originals.
    wait_for("the originals deleted by the next owner", || {
        stream_leftover(&engine).is_none()
    });
    check_node(&cluster.nodes[new_owner], &kept, &cluster.keys[0]);
}

#[test]
fn a_deletion_that_fails_is_tried_again_by_the_nodes_that_apply_the_record() {
    let engine = Engine::cluster();
    // Each node's first deletion of an original fails: the owner's, after the record (the
    // erasure is recorded, its answer an error), and that of every node applying the record.
    let (cluster, kept, _, owner) = erase_failing_on_owner(&engine, "INLET_TEST_FAIL_FIRST_DELETE");
    // They try again.
    wait_for(
        "the originals deleted by the nodes applying the record",
        || stream_leftover(&engine).is_none(),
    );
    for (n, node) in cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|&(n, _)| n != owner)
    {
        let failed = node.log.lock().unwrap().contains("failing the deletion");
        assert!(
            failed,
            "node {n} applied the record without failing a deletion"
        );
    }
    check_node(&cluster.nodes[owner], &kept, &cluster.keys[0]);
}
