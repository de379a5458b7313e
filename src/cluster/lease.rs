//! Partition leases in the engine's bucket [`LEASES`](super::engine::LEASES): key `p<N>`,
//! value the owner's node name. A node takes an unowned partition with `create` (refused
//! while the key exists), keeps it with `update` against the revision it last wrote
//! (refused once anyone else wrote the key), and loses it when an update fails or the
//! bucket's TTL removes a key nobody renewed. The revision a take-over got is the owner's
//! epoch. A lease only says who should append: the fence is the stream's expected
//! sequence (see `super::node`).
//!
//! Live nodes announce themselves under `node.<name>` in the same bucket (so a dead node's
//! announcement expires with the TTL); each takes at most its share of the partitions.

use super::engine::{LEASE_TTL, lease_key};
use async_nats::jetstream::kv;
use bytes::Bytes;
use std::time::Duration;

/// How often a held lease is renewed: a third of the TTL.
pub const RENEW_EVERY: Duration = Duration::from_millis(LEASE_TTL.as_millis() as u64 / 3);
/// How long one lease operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// The lease bucket as one node uses it.
#[derive(Clone)]
pub struct Leases {
    pub kv: kv::Store,
    pub node: String,
}

async fn timed<T, E: std::fmt::Display>(
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the engine did not answer in time".to_owned()),
    }
}

impl Leases {
    pub fn new(kv: kv::Store, node: &str) -> Leases {
        Leases {
            kv,
            node: node.to_owned(),
        }
    }

    /// Takes partition `p` if nobody holds it: its revision (the new owner's epoch), or
    /// `None` while another node holds it.
    pub async fn take(&self, p: u32) -> Result<Option<u64>, String> {
        let value = Bytes::from(self.node.clone());
        match tokio::time::timeout(OP_TIMEOUT, self.kv.create(lease_key(p), value)).await {
            Ok(Ok(rev)) => Ok(Some(rev)),
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            // The create (an update expecting no revision) lost to another writer, and the
            // read that would have said so was served by a replica not yet caught up: the
            // key exists all the same.
            Ok(Err(e)) if e.to_string().contains("wrong last sequence") => Ok(None),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the engine did not answer in time".to_owned()),
        }
    }

    /// Renews the lease of `p` held at revision `rev`: the new revision, or an error when
    /// the lease is lost (another node wrote it, it expired, the engine is unreachable).
    pub async fn renew(&self, p: u32, rev: u64) -> Result<u64, String> {
        timed(
            self.kv
                .update(lease_key(p), Bytes::from(self.node.clone()), rev),
        )
        .await
    }

    /// Gives `p` up (only if still held at `rev`), so another node can take it at once.
    pub async fn release(&self, p: u32, rev: u64) {
        let _ = timed(self.kv.delete_expect_revision(lease_key(p), Some(rev))).await;
    }

    /// The owner of `p`, if any.
    pub async fn owner(&self, p: u32) -> Result<Option<String>, String> {
        let v = timed(self.kv.get(lease_key(p))).await?;
        Ok(v.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Says this node is alive (renewed with the leases).
    pub async fn announce(&self) -> Result<(), String> {
        let key = format!("node.{}", self.node);
        timed(self.kv.put(key, Bytes::from_static(b"1")))
            .await
            .map(|_| ())
    }

    /// Withdraws this node's announcement (it stops): the others count it out at once.
    pub async fn withdraw(&self) {
        let _ = timed(self.kv.delete(format!("node.{}", self.node))).await;
    }

    /// The nodes that announced themselves within the TTL (this one included).
    pub async fn live_nodes(&self) -> Result<usize, String> {
        use futures_util::StreamExt;
        let mut keys = timed(self.kv.keys()).await?;
        let mut n = 0;
        let count = async {
            while let Some(k) = keys.next().await {
                if k.map_err(|e| e.to_string())?.starts_with("node.") {
                    n += 1;
                }
            }
            Ok::<_, String>(())
        };
        tokio::time::timeout(OP_TIMEOUT, count)
            .await
            .map_err(|_| "the engine did not answer in time".to_owned())??;
        Ok(n.max(1))
    }
}

/// The most partitions one of `live` nodes takes.
pub fn share(partitions: u32, live: usize) -> u32 {
    partitions.div_ceil(live.max(1) as u32)
}

/// The order in which node `node` looks at partitions: starting at a point of its own, so
/// that nodes starting together reach for different partitions first.
pub fn preference(node: &str, partitions: u32) -> impl Iterator<Item = u32> {
    let start = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) % u64::from(partitions.max(1));
    (0..partitions).map(move |i| (start as u32 + i) % partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_preferences() {
        assert_eq!(share(4, 3), 2);
        assert_eq!(share(16, 3), 6);
        assert_eq!(share(4, 0), 4);
        let order: Vec<u32> = preference("a", 4).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3]);
        assert_eq!(
            RENEW_EVERY * 3,
            LEASE_TTL - Duration::from_millis(LEASE_TTL.as_millis() as u64 % 3)
        );
    }
}
