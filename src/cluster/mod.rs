//! Cluster mode: inlet nodes on a NATS JetStream engine (issue "When a studio outgrows one
//! VM"):
//! - [`Settings`]: the `cluster_*` configuration keys, checked;
//! - [`engine`]: the engine's preflight (version, fsync before ack, the meta leader, enough
//!   nodes), checked on every node before it joins, and the engine objects inlet owns (the
//!   event stream, the meta bucket holding the partition count fixed at creation, the lease
//!   bucket), created once and verified afterwards; `inlet cluster check` and `status`;
//! - [`lease`]: partition leases (one owner per partition, its epoch);
//! - [`node`]: a serving node: the fenced append of each group commit (the writer's
//!   `Commit` hook), the replay of a partition taken over, routing to a partition's owner;
//! - [`follow`]: every node applies the partitions it does not own as the stream gets them,
//!   so that reads (export, panel, profiles, counters) answer for the whole cluster;
//! - [`wire`]: what nodes send each other through the engine;
//! - [`admin`]: the admin data (tenants, apps, keys, secrets, settings) through the engine's
//!   admin stream, applied in order by every node.

pub mod admin;
pub mod engine;
pub mod follow;
pub mod lease;
pub mod node;
pub mod wire;

pub use node::Cluster;

use serde::Serialize;

/// Partitions when `cluster_partitions` is not set.
pub const DEFAULT_PARTITIONS: u32 = 16;
/// Most partitions: each has an owner, a lease and a subject.
pub const MAX_PARTITIONS: u32 = 1024;

/// The cluster settings, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// The engine's client URLs.
    pub engine: Vec<String>,
    /// The engine nodes' monitoring URLs, one per node.
    pub monitor: Vec<String>,
    /// This node's name.
    pub node: String,
    /// Partitions of the event log.
    pub partitions: u32,
    /// A one-node engine with unreplicated streams is allowed (tests only).
    pub single_engine_node: bool,
}

impl Settings {
    /// The engine's replicas of every stream and bucket inlet creates.
    pub fn replicas(&self) -> usize {
        if self.single_engine_node { 1 } else { 3 }
    }

    /// The settings from the configuration keys; `None` without `cluster_engine`.
    pub fn resolve(
        engine: Option<&str>,
        monitor: Option<&str>,
        node: Option<&str>,
        partitions: Option<u32>,
        single_engine_node: Option<bool>,
    ) -> Result<Option<Settings>, String> {
        let list = |text: Option<&str>| -> Vec<String> {
            text.unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let engine = list(engine);
        let monitor = list(monitor);
        if engine.is_empty() {
            let set = [
                ("cluster_monitor", !monitor.is_empty()),
                ("cluster_node", node.is_some()),
                ("cluster_partitions", partitions.is_some()),
                ("cluster_single_engine_node", single_engine_node.is_some()),
            ];
            return match set.iter().find(|(_, set)| *set) {
                Some((key, _)) => Err(format!("{key}: set without cluster_engine")),
                None => Ok(None),
            };
        }
        for url in &engine {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                return Err(format!(
                    "cluster_engine: {url:?} is not a URL like nats://10.0.0.1:4222"
                ));
            }
        }
        let single_engine_node = single_engine_node.unwrap_or(false);
        if monitor.is_empty() {
            return Err(
                "cluster_monitor: needed with cluster_engine, one monitoring URL \
                 (http://HOST:8222) per engine node: inlet checks each node's version and \
                 fsync setting before it joins"
                    .to_owned(),
            );
        }
        for url in &monitor {
            if !url.starts_with("http://") {
                return Err(format!(
                    "cluster_monitor: {url:?} is not a URL like http://10.0.0.1:8222"
                ));
            }
        }
        if !single_engine_node && monitor.len() < 3 {
            return Err(format!(
                "cluster_monitor: {} engine node(s) named; a cluster needs 3 (streams are \
                 replicated 3 times)",
                monitor.len()
            ));
        }
        let node = match node {
            Some(n) => n.trim().to_owned(),
            None => host_name().ok_or("cluster_node: not set, and the host name is unknown")?,
        };
        if node.is_empty()
            || node.len() > 64
            || !node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "cluster_node: {node:?} must be 1-64 letters, digits, '-' or '_'"
            ));
        }
        let partitions = partitions.unwrap_or(DEFAULT_PARTITIONS);
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(format!(
                "cluster_partitions: {partitions} is outside 1..={MAX_PARTITIONS}"
            ));
        }
        Ok(Some(Settings {
            engine,
            monitor,
            node,
            partitions,
            single_engine_node,
        }))
    }
}

/// This machine's host name, if it has a usable one.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(engine: &str, monitor: &str) -> Result<Option<Settings>, String> {
        Settings::resolve(Some(engine), Some(monitor), Some("a"), None, None)
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(Settings::resolve(None, None, None, None, None), Ok(None));
        let three = "http://h1:8222, http://h2:8222,http://h3:8222";
        let s = resolve("nats://h1:4222,nats://h2:4222", three)
            .unwrap()
            .unwrap();
        assert_eq!(s.engine, ["nats://h1:4222", "nats://h2:4222"]);
        assert_eq!(s.monitor.len(), 3);
        assert_eq!((s.partitions, s.replicas()), (DEFAULT_PARTITIONS, 3));

        let err = |r: Result<Option<Settings>, String>| r.unwrap_err();
        assert!(err(resolve("h1:4222", three)).starts_with("cluster_engine"));
        assert!(err(resolve("nats://h1:4222", "")).starts_with("cluster_monitor"));
        assert!(err(resolve("nats://h1:4222", "http://h1:8222")).contains("needs 3"));
        assert!(
            err(Settings::resolve(None, None, Some("a"), None, None)).starts_with("cluster_node")
        );
        assert!(
            err(Settings::resolve(
                Some("nats://h"),
                Some(three),
                Some("a b"),
                None,
                None
            ))
            .starts_with("cluster_node")
        );
        assert!(
            err(Settings::resolve(
                Some("nats://h"),
                Some(three),
                Some("a"),
                Some(0),
                None
            ))
            .starts_with("cluster_partitions")
        );
        // One engine node only when asked for, and then unreplicated.
        let one = Settings::resolve(
            Some("nats://h"),
            Some("http://h:8222"),
            Some("a"),
            Some(4),
            Some(true),
        )
        .unwrap()
        .unwrap();
        assert_eq!((one.partitions, one.replicas()), (4, 1));
    }
}
