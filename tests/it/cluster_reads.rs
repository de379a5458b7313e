//! Cluster mode, reads (issue 19): every node follows every partition it does not own, so
//! the export, counters and profiles answer for the whole cluster from any node.

use crate::cluster::{
    Cluster, Node, TENANTS, send_until_answered, stream_events, tenant_partition,
};
use crate::engine::Engine;
use crate::support::{DEADLINE, parse_ndjson};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The install uuid of every event `support::event` makes: one profile per app.
const INSTALL: &str = "8f2a1c0e94d7423b8b53af7c9e21d630";

/// Polls `cond` every 200 ms until it holds, or fails with `what` and the last state.
fn eventually<T: std::fmt::Debug>(what: &str, mut cond: impl FnMut() -> Result<(), T>) {
    let end = Instant::now() + DEADLINE * 2;
    loop {
        match cond() {
            Ok(()) => return,
            Err(last) if Instant::now() >= end => panic!("timed out waiting for {what}: {last:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Removes every `seq` field: log sequences are each node's own (its log holds every
/// partition in the order it applied them).
fn without_seq(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.shift_remove("seq");
            m.values_mut().for_each(without_seq);
        }
        Value::Array(a) => a.iter_mut().for_each(without_seq),
        _ => {}
    }
}

/// A node's export, as sorted lines without their sequence.
fn export(node: &Node) -> Vec<String> {
    let mut lines: Vec<String> = parse_ndjson(&node.cli_ok(&["export"]))
        .into_iter()
        .map(|mut v| {
            without_seq(&mut v);
            v.to_string()
        })
        .collect();
    lines.sort_unstable();
    lines
}

/// Sends `n` new events of every tenant through the nodes `via` (a 503 is retried on the
/// next), checking each is accepted.
fn send(cluster: &Cluster, via: &[usize], round: &str, n: usize) {
    for (t, tenant) in TENANTS.iter().enumerate() {
        let ids: Vec<String> = (0..n).map(|i| format!("{tenant}-{round}-{i}")).collect();
        let nodes: Vec<(SocketAddr, String)> = via
            .iter()
            .map(|&i| (cluster.nodes[i].addr, cluster.keys[t].clone()))
            .collect();
        let r = send_until_answered(&nodes, 0, &ids);
        assert!(r.iter().all(|(_, s)| s == "accepted"), "{tenant}: {r:?}");
    }
}

/// Waits until every node of `nodes` exports exactly `expected` events, the same lines
/// on each, and counts them in its tenants' counters; returns the lines.
fn same_everywhere(cluster: &Cluster, nodes: &[usize], expected: usize) -> Vec<String> {
    let mut lines = Vec::new();
    eventually("every node to export every event", || {
        let exports: Vec<Vec<String>> = nodes.iter().map(|&i| export(&cluster.nodes[i])).collect();
        let sizes: Vec<usize> = exports.iter().map(Vec::len).collect();
        if sizes.iter().any(|&s| s != expected) || exports.windows(2).any(|w| w[0] != w[1]) {
            return Err(sizes);
        }
        lines = exports[0].clone();
        Ok(())
    });
    let per_tenant = expected / TENANTS.len();
    eventually("every node's counters to count every event", || {
        let used: Vec<HashMap<String, u64>> =
            nodes.iter().map(|&i| cluster.nodes[i].used()).collect();
        match used.iter().all(|u| {
            TENANTS
                .iter()
                .all(|t| u.get(*t) == Some(&(per_tenant as u64)))
        }) {
            true => Ok(()),
            false => Err(used),
        }
    });
    lines
}

/// `inlet profile` of tenant t1's install on `node`, without sequences.
fn profile(node: &Node) -> Value {
    let mut v: Value =
        serde_json::from_str(&node.cli_ok(&["profile", "app-t1", INSTALL, "--json"])).unwrap();
    without_seq(&mut v);
    v
}

#[test]
fn every_node_answers_reads_for_the_whole_cluster_and_takes_over_without_loss() {
    let engine = Engine::cluster();
    let mut cluster = Cluster::start(&engine);

    // Every tenant's events through n1 only: several partitions, owned by different nodes
    // (the first node to start holds them all until the others have taken their shares).
    send(&cluster, &[0], "a", 20);
    let mut owners: Vec<usize> = Vec::new();
    eventually(
        "the tenants' partitions to have more than one owner",
        || {
            let now: Vec<Option<usize>> = TENANTS
                .iter()
                .map(|t| {
                    let p = tenant_partition(&engine, t);
                    (0..3).find(|&i| cluster.nodes[i].owned().is_some_and(|o| o.contains(&p)))
                })
                .collect();
            let mut distinct: Vec<usize> = now.iter().flatten().copied().collect();
            distinct.sort_unstable();
            distinct.dedup();
            match now.iter().all(Option::is_some) && distinct.len() > 1 {
                true => {
                    owners = now.into_iter().flatten().collect();
                    Ok(())
                }
                false => Err(now),
            }
        },
    );
    let lines = same_everywhere(&cluster, &[0, 1, 2], TENANTS.len() * 20);
    // The events are the cluster's, as the engine holds them.
    assert_eq!(lines.len(), stream_events(&engine).len());

    // A profile answers the same on every node as on its partition's owner.
    let owner = owners[0];
    let on_owner = profile(&cluster.nodes[owner]);
    assert!(
        on_owner.to_string().contains("t1-a-0"),
        "the profile names no event: {on_owner}"
    );
    for i in 0..3 {
        assert_eq!(
            profile(&cluster.nodes[i]),
            on_owner,
            "profile on n{}",
            i + 1
        );
    }

    // The lag is a metric, and drains.
    for node in &cluster.nodes {
        eventually("the follow lag to drain", || {
            let mut c = crate::support::Client::new(node.addr);
            let text = c.get("/metrics").map(|r| r.text()).unwrap_or_default();
            match text.lines().any(|l| l == "inlet_cluster_follow_lag 0") {
                true => Ok(()),
                false => Err(text
                    .lines()
                    .filter(|l| l.contains("follow_lag"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()),
            }
        });
    }

    // n3 killed: events go on through n1 and n2; n3 comes back and catches up.
    cluster.nodes[2].kill();
    send(&cluster, &[0, 1], "b", 20);
    let data = cluster.nodes[2].data.clone();
    cluster.nodes[2] = Node::start("n3", &data, &engine);
    same_everywhere(&cluster, &[0, 1, 2], TENANTS.len() * 40);

    // n1 leaves: n2 and n3 take its partitions over after following them; the events sent
    // before are answered as duplicates, new ones stored once, every node alike.
    cluster.nodes[0].stop();
    cluster.wait_all_served(&[1, 2]);
    for (t, tenant) in TENANTS.iter().enumerate() {
        let ids: Vec<String> = (0..20).map(|i| format!("{tenant}-a-{i}")).collect();
        let nodes = [
            (cluster.nodes[1].addr, cluster.keys[t].clone()),
            (cluster.nodes[2].addr, cluster.keys[t].clone()),
        ];
        let r = send_until_answered(&nodes, t, &ids);
        assert!(r.iter().all(|(_, s)| s == "duplicate"), "{tenant}: {r:?}");
    }
    send(&cluster, &[1, 2], "c", 20);
    let lines = same_everywhere(&cluster, &[1, 2], TENANTS.len() * 60);
    let stored = stream_events(&engine);
    assert_eq!(lines.len(), stored.len());
    for ((t, id), n) in &stored {
        assert_eq!(*n, 1, "{t}/{id} stored {n} times in the engine");
    }
}
