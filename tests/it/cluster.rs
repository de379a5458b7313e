//! Cluster mode's ground: the settings, the engine's preflight and the engine objects inlet
//! creates, against a real 3-node NATS JetStream cluster on loopback.

use crate::engine::Engine;
use crate::support::{cli, cli_ok};

/// `inlet cluster ARGS` with the engine's settings as flags.
fn cluster(
    data: &std::path::Path,
    cmd: &str,
    engine: &Engine,
    extra: &[&str],
) -> std::process::Output {
    let (urls, monitors) = (engine.urls(), engine.monitors());
    let mut args = vec![
        "cluster",
        cmd,
        "--cluster-engine",
        &urls,
        "--cluster-monitor",
        &monitors,
        "--cluster-node",
        "a",
    ];
    args.extend_from_slice(extra);
    cli(data, &args)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_cluster_is_created_once_with_its_partition_count_and_replication() {
    let engine = Engine::cluster();
    let data = tempfile::tempdir().unwrap();
    let out = cluster(
        data.path(),
        "check",
        &engine,
        &["--cluster-partitions", "4"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("3 node(s), nats-server 2."), "{said}");
    assert!(said.contains("replicated 3 times; 4 partitions"), "{said}");

    // Every node sees the same cluster; status names the engine's nodes and the partitions.
    let out = cluster(
        data.path(),
        "status",
        &engine,
        &["--cluster-partitions", "4", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["partitions"], 4);
    assert_eq!(status["stream_replicas"], 3);
    let names: Vec<&str> = status["engine"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["e1", "e2", "e3"]);
    assert!(
        status["engine"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["sync_always"] == true)
    );
    assert_eq!(status["owners"].as_array().unwrap().len(), 4);

    // The count is fixed at creation: another one is refused, and says which it was.
    let out = cluster(
        data.path(),
        "check",
        &engine,
        &["--cluster-partitions", "8"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("created with 4"), "{}", stderr(&out));

    // A node that names one engine node only is refused before it connects.
    let one = engine.nodes[0].monitor();
    let urls = engine.urls();
    let out = cli(
        data.path(),
        &[
            "cluster",
            "check",
            "--cluster-engine",
            &urls,
            "--cluster-monitor",
            &one,
            "--cluster-node",
            "a",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs 3"), "{}", stderr(&out));
}

#[test]
fn an_engine_that_acknowledges_before_fsync_is_refused() {
    // One node with JetStream's lazy default: even the test-only single-node setting refuses
    // it, since an acknowledged append could then be lost in a power failure.
    let engine = Engine::single(false);
    let data = tempfile::tempdir().unwrap();
    let out = cluster(
        data.path(),
        "check",
        &engine,
        &["--cluster-single-engine-node"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("fsyncs lazily"), "{}", stderr(&out));

    // The same node with `sync_interval: always` passes with the single-node setting, and
    // without it is refused for having one node.
    let engine = Engine::single(true);
    let out = cluster(
        data.path(),
        "check",
        &engine,
        &["--cluster-single-engine-node"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("replicated 1 times"));
    let out = cluster(data.path(), "check", &engine, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs 3"), "{}", stderr(&out));
}

#[test]
fn cluster_settings_are_checked_shown_and_not_yet_served() {
    let data = tempfile::tempdir().unwrap();
    let flags = [
        "--cluster-engine",
        "nats://127.0.0.1:4222",
        "--cluster-monitor",
        "http://127.0.0.1:8222,http://127.0.0.2:8222,http://127.0.0.3:8222",
        "--cluster-node",
        "node-1",
    ];
    let mut args = vec!["check-config"];
    args.extend_from_slice(&flags);
    let shown = cli_ok(data.path(), &args);
    assert!(
        shown.contains("cluster_engine = \"nats://127.0.0.1:4222\""),
        "{shown}"
    );
    assert!(shown.contains("cluster_node = \"node-1\""), "{shown}");
    assert!(shown.contains("cluster_partitions = 16"), "{shown}");

    for (bad, says) in [
        (
            vec!["check-config", "--cluster-node", "x"],
            "cluster_node: set without cluster_engine",
        ),
        (
            vec!["check-config", "--cluster-engine", "127.0.0.1:4222"],
            "cluster_engine",
        ),
        (
            vec!["check-config", "--cluster-engine", "nats://h:4222"],
            "cluster_monitor",
        ),
    ] {
        let out = cli(data.path(), &bad);
        assert!(!out.status.success(), "{bad:?}");
        assert!(stderr(&out).contains(says), "{bad:?}: {}", stderr(&out));
    }

    // Serving needs the partitioned writer: until then a node refuses, and says what works.
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(&flags);
    let out = cli(data.path(), &args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("inlet cluster check"),
        "{}",
        stderr(&out)
    );
}
