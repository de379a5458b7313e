//! Partition leases in the engine's bucket [`LEASES`](super::engine::LEASES): key `p<N>`,
//! value the owner's node name. A node takes an unowned partition with `create` (refused
//! while the key exists), keeps it with `update` against the revision it last wrote
//! (refused once anyone else wrote the key), and loses it when an update fails or the
//! bucket's TTL removes a key nobody renewed. The revision a take-over got is the owner's
//! epoch. A lease only says who should append: the fence is the stream's expected
//! sequence (see `super::node`).
//!
//! Live nodes announce themselves under `node.<name>` in the same bucket (so a dead node's
//! announcement expires with the TTL), the value the last admin record each applied; each
//! takes at most its share of the partitions.
//!
//! A node's name is claimed under `claim.<name>` (value: the node's instance id, kept in its
//! data dir, so a restart on the same data dir is the same instance), renewed with the
//! leases: a second node started under a name a live node uses is refused, since both would
//! take "their" leases back (see [`Leases::take`]).

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
    /// `None` while another node holds it. A key still holding this node's name (a lease it
    /// gave up on while the engine did not answer, or held before a restart) is taken again
    /// at once with a compare-and-set on its revision rather than waited out.
    pub async fn take(&self, p: u32) -> Result<Option<u64>, String> {
        let value = Bytes::from(self.node.clone());
        match tokio::time::timeout(OP_TIMEOUT, self.kv.create(lease_key(p), value.clone())).await {
            Ok(Ok(rev)) => Ok(Some(rev)),
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.take_own(p, value).await
            }
            // The create (an update expecting no revision) lost to another writer, and the
            // read that would have said so was served by a replica not yet caught up: the
            // key exists all the same.
            Ok(Err(e)) if e.to_string().contains("wrong last sequence") => Ok(None),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the engine did not answer in time".to_owned()),
        }
    }

    async fn take_own(&self, p: u32, value: Bytes) -> Result<Option<u64>, String> {
        let Some(rev) = self.mine(p).await? else {
            return Ok(None);
        };
        match timed(self.kv.update(lease_key(p), value, rev)).await {
            Ok(rev) => Ok(Some(rev)),
            // Someone else wrote it since, or the read was a replica's behind: not ours.
            Err(_) => Ok(None),
        }
    }

    /// Renews the lease of `p` held at revision `rev`. Only a refusal of the revision is a
    /// lost lease, and even then the key may hold this node's name at a later revision: an
    /// earlier renewal went through and its answer was lost, so that revision is taken up.
    /// A timeout or an engine error (a bucket whose leader moves, a connection being
    /// replaced) leaves the lease's fate unknown: the caller tries again while it has time.
    pub async fn renew(&self, p: u32, rev: u64) -> Renewal {
        let value = Bytes::from(self.node.clone());
        let refused = match tokio::time::timeout(
            OP_TIMEOUT,
            self.kv.update(lease_key(p), value, rev),
        )
        .await
        {
            Ok(Ok(rev)) => return Renewal::Renewed(rev),
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => e.to_string(),
            Ok(Err(e)) => return Renewal::Unknown(e.to_string()),
            Err(_) => return Renewal::Unknown("the engine did not answer in time".to_owned()),
        };
        match self.mine(p).await {
            Ok(Some(now)) if now > rev => Renewal::Renewed(now),
            // A replica behind the bucket's leader may still show the revision refused.
            Ok(Some(_)) => Renewal::Unknown(refused),
            Ok(None) => Renewal::Lost(refused),
            Err(e) => Renewal::Unknown(e),
        }
    }

    /// The revision of `p`'s key when it holds this node's name.
    async fn mine(&self, p: u32) -> Result<Option<u64>, String> {
        let entry = timed(self.kv.entry(lease_key(p))).await?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put && e.value == self.node.as_bytes())
            .map(|e| e.revision))
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

    /// Says this node is alive (renewed with the leases), with the last admin record it
    /// applied (`inlet cluster status` shows each node's admin lag from it).
    pub async fn announce(&self, admin_applied: u64) -> Result<(), String> {
        let key = format!("node.{}", self.node);
        timed(self.kv.put(key, Bytes::from(admin_applied.to_string())))
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

/// The key claiming node name `node`.
fn claim_key(node: &str) -> String {
    format!("claim.{node}")
}

impl Leases {
    /// Claims this node's name for `instance`, at startup: its revision. A claim of another
    /// instance that the engine still holds is waited on: renewed meanwhile, another node
    /// runs under this name (refused); expired (at most a TTL), it was a stopped node's.
    pub async fn claim(&self, instance: &str) -> Result<u64, String> {
        let deadline = tokio::time::Instant::now() + LEASE_TTL + Duration::from_secs(3);
        let mut seen: Option<u64> = None;
        loop {
            let claimed = match self.claim_once(instance).await {
                // An engine that just formed (or a bucket just created) may not answer yet.
                Err(e)
                    if super::engine::not_answering_yet(&e)
                        && tokio::time::Instant::now() < deadline =>
                {
                    crate::warn_throttled!(
                        "cluster engine not answering",
                        error = %e,
                        "the engine does not answer yet; asking again"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                r => r?,
            };
            match claimed {
                Claimed::Yes(rev) => return Ok(rev),
                Claimed::Other(rev) if seen.is_some_and(|s| s != rev) => {
                    return Err(format!(
                        "cluster_node: {:?} is in use by another running inlet node (its \
                         claim in the engine was renewed while this one waited); give every \
                         node its own cluster_node",
                        self.node
                    ));
                }
                Claimed::Other(rev) => {
                    if seen.is_none() {
                        tracing::warn!(
                            node = %self.node,
                            "cluster_node {:?} is claimed in the engine by another instance \
                             (this node's data dir is new, or another node has this name): \
                             waiting up to {}s for the claim to expire; renewed meanwhile, \
                             this node is refused",
                            self.node,
                            LEASE_TTL.as_secs()
                        );
                    }
                    seen = Some(rev);
                }
                Claimed::Gone => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "cluster_node: {:?} is claimed by another instance and its claim did \
                     not expire",
                    self.node
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One try at claiming this node's name for `instance`.
    pub async fn claim_once(&self, instance: &str) -> Result<Claimed, String> {
        let (key, value) = (claim_key(&self.node), Bytes::from(instance.to_owned()));
        match tokio::time::timeout(OP_TIMEOUT, self.kv.create(&key, value.clone())).await {
            Ok(Ok(rev)) => return Ok(Claimed::Yes(rev)),
            Ok(Err(e))
                if e.kind() == kv::CreateErrorKind::AlreadyExists
                    || e.to_string().contains("wrong last sequence") => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("the engine did not answer in time".to_owned()),
        }
        let entry = timed(self.kv.entry(&key)).await?;
        match entry.filter(|e| e.operation == kv::Operation::Put) {
            None => Ok(Claimed::Gone),
            Some(e) if e.value == instance.as_bytes() => {
                match timed(self.kv.update(&key, value, e.revision)).await {
                    Ok(rev) => Ok(Claimed::Yes(rev)),
                    Err(_) => Ok(Claimed::Gone),
                }
            }
            Some(e) => Ok(Claimed::Other(e.revision)),
        }
    }

    /// Renews this node's claim held at `rev`.
    pub async fn renew_claim(&self, instance: &str, rev: u64) -> Renewal {
        let (key, value) = (claim_key(&self.node), Bytes::from(instance.to_owned()));
        match tokio::time::timeout(OP_TIMEOUT, self.kv.update(&key, value, rev)).await {
            Ok(Ok(rev)) => return Renewal::Renewed(rev),
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Ok(Err(e)) => return Renewal::Unknown(e.to_string()),
            Err(_) => return Renewal::Unknown("the engine did not answer in time".to_owned()),
        }
        // Expired (this node was cut off for a TTL): claimed again if nobody took the name.
        match self.claim_once(instance).await {
            Ok(Claimed::Yes(rev)) => Renewal::Renewed(rev),
            Ok(Claimed::Other(_)) => Renewal::Lost(format!(
                "cluster_node {:?} is claimed by another running instance",
                self.node
            )),
            Ok(Claimed::Gone) => Renewal::Unknown("the claim is being rewritten".to_owned()),
            Err(e) => Renewal::Unknown(e),
        }
    }

    /// Gives the name up (the node stops).
    pub async fn unclaim(&self, rev: u64) {
        let _ = timed(
            self.kv
                .delete_expect_revision(claim_key(&self.node), Some(rev)),
        )
        .await;
    }
}

/// What a try at claiming a node name found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claimed {
    /// Claimed, at this revision.
    Yes(u64),
    /// Held by another instance, at this revision.
    Other(u64),
    /// Held by nobody now (expired or being rewritten): try again.
    Gone,
}

/// What a renewal found.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Held, at this revision.
    Renewed(u64),
    /// Another node wrote the key, or it expired.
    Lost(String),
    /// No answer, or an error that says nothing of the key.
    Unknown(String),
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
