//! A serving node of a cluster: which partitions it owns, the fenced append of each group
//! commit (the writer's [`Commit`] hook), the replay of a partition it takes over, and the
//! routing of every submission to its partition's owner.
//!
//! A partition of this node is in one [`Role`]: `Following` (another node's, or nobody's:
//! its batches are applied here as the stream gets them, so every node's database holds every
//! partition's events, see `super::follow`), `Replaying` (its lease is held; the stream is
//! being applied to the local database up to its end, no requests are taken) or `Serving`
//! (requests are decided here and appended with the fence). Every batch read back from the
//! engine goes through [`Cluster::apply_batch`], under the partition's apply lock, so a batch
//! is applied once, in order, whichever of the follower and the replay reads it.
//! Every failed append, and every append whose local commit then failed, sends the
//! partition back to `Replaying`, since the stream may hold a batch the local database does
//! not; a refused fence (error 10071: another owner appended) makes the node step down.
//! A replay ends with the ownership's marker (an empty batch appended with the fence, see
//! [`Cluster::mark`]), so that every append of an earlier owner is refused by the fence
//! alone, however late it reaches the engine.

#[path = "erase.rs"]
pub mod erase;

use super::admin::{AdminJob, AdminLog};
use super::engine::{self, Engine, LEASE_TTL};
use super::lease::{self, Leases, RENEW_EVERY, Renewal};
use super::{Settings, wire};
use crate::store::writer::{Commit, Decided, Outcome, Replayed, Submission, SubmitError};
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream;
use futures_util::StreamExt;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use redb::{ReadableDatabase, WriteTransaction};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Per partition, the last engine sequence applied to this node's database.
pub use crate::store::tables::CLUSTER_APPLIED as APPLIED;
/// The file in the data dir holding the node's instance id (see [`Cluster::claim`]).
pub const INSTANCE_FILE: &str = "cluster-instance";
/// How long a forwarded submission waits for its owner's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the appends of one batch may take, resends after a lost ack included.
const APPEND_DEADLINE: Duration = Duration::from_secs(5);
/// Room left in a message for its headers, under the engine's `max_payload`.
const PAYLOAD_HEADROOM: usize = 4096;
/// How often the lease loop looks for partitions to take or give up.
const TICK: Duration = Duration::from_millis(500);
/// An owner whose renewals go unanswered steps down this long before its lease could
/// expire in the engine: a renewal try and a round of the loop.
const RENEW_MARGIN: Duration = Duration::from_millis(2500);
/// How long one append waits for its ack before it is sent again (same message id): a
/// stream whose leader stopped answers once a new one is elected, and only to a resend.
const APPEND_TRY: Duration = Duration::from_millis(1500);
/// An append is not sent later than this before its lease's end (the time the message
/// takes to reach the engine).
const LEASE_SLACK: Duration = Duration::from_secs(1);
/// How long one read of a replay waits for its answer before the replay is tried again.
const READ_TRY: Duration = Duration::from_secs(2);

/// Test-only: a file path; while the file exists, a batch's appends wait before they are
/// sent and the lease loop stands still (an owner paused between its lease check and its
/// append, so that the others take its partitions over); the batch is then sent past the
/// lease-time guard, as if it reached the engine late: only the fence can refuse it.
const HOLD_ENV: &str = "INLET_TEST_HOLD_APPEND";
/// Set while [`HOLD_ENV`] holds a batch.
static HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Holds the writer thread while [`HOLD_ENV`]'s file exists (writing `<file>.held` once it
/// holds); whether it held.
fn hold_for_test() -> bool {
    let Some(path) = std::env::var_os(HOLD_ENV).map(std::path::PathBuf::from) else {
        return false;
    };
    if !path.exists() {
        return false;
    }
    HELD.store(true, Ordering::Relaxed);
    tracing::warn!("{HOLD_ENV}: holding a batch before its append");
    let _ = std::fs::write(path.with_extension("held"), b"");
    while path.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    HELD.store(false, Ordering::Relaxed);
    true
}

/// The subject of partition `p`'s batches.
pub fn events_subject(p: u32) -> String {
    format!("inlet.events.{p}")
}

/// The subject on which partition `p`'s owner takes forwarded submissions.
pub fn submit_subject(p: u32) -> String {
    format!("inlet.submit.{p}")
}

/// The partition of a tenant.
pub fn partition_of(tenant_id: u32, partitions: u32) -> u32 {
    // splitmix64: tenants with near ids spread.
    let mut z = u64::from(tenant_id).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % u64::from(partitions.max(1))) as u32
}

/// What a submission to the local writer resolves to.
pub type Submitted = Pin<Box<dyn Future<Output = Result<Vec<Outcome>, SubmitError>> + Send>>;

/// What the node reaches of its own process: the writer and the database (given once the
/// server state exists; holding no strong reference to it).
pub trait Local: Send + Sync {
    fn submit(&self, sub: Submission, body_bytes: usize, replayed: Option<Replayed>) -> Submitted;
    /// A dry run of `sub` by the writer: judged, not stored.
    fn submit_dry(&self, sub: Submission, body_bytes: usize) -> Submitted;
    /// The last engine sequence of `p` applied to the local database (0: none).
    fn applied(&self, p: u32) -> Result<u64, String>;
    /// Runs `job` on the writer thread, between commits (an admin record's apply).
    fn run(&self, job: AdminJob) -> super::admin::Applied;
    /// Runs `job` on a blocking thread with the identity graph and the writer (an erasure).
    fn privacy(&self, job: erase::PrivacyJob) -> Result<(), String>;
}

/// Reads partition `p`'s applied sequence from `db`.
pub fn read_applied(db: &redb::Database, p: u32) -> Result<u64, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    match txn.open_table(APPLIED) {
        Ok(t) => Ok(t
            .get(p)
            .map_err(|e| e.to_string())?
            .map_or(0, |v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Another node's, or nobody's: its batches are applied here as the stream gets them
    /// (`super::follow`).
    Following,
    Replaying,
    Serving,
}

struct Part {
    role: Role,
    /// The lease's revision as last written by this node (0: not held).
    lease_rev: u64,
    /// The revision of the take-over: this ownership's epoch.
    epoch: u64,
    /// The last sequence on the partition's subject this owner knows of.
    last_seq: u64,
    /// Batches appended in this epoch.
    batch: u64,
    /// Bumped by every change of ownership, so that a replay or a subscription of an
    /// earlier one notices it is stale.
    generation: u64,
    last_renew: Instant,
    subscription: Option<tokio::task::JoinHandle<()>>,
}

/// This node's view of the cluster.
pub struct Cluster {
    pub settings: Settings,
    pub partitions: u32,
    /// The admin records: this node's writes, everyone's applied here.
    pub admin: AdminLog,
    engine: Engine,
    pub(super) stream: stream::Stream,
    leases: Leases,
    rt: tokio::runtime::Handle,
    parts: Mutex<Vec<Part>>,
    /// Partitions appended by the batch whose commit is under way.
    in_flight: Mutex<Vec<u32>>,
    pub(super) local: OnceLock<Arc<dyn Local>>,
    /// Per partition: held while a batch read back from the engine is applied (by the
    /// follower or a replay), so that each is applied once and in order.
    pub(super) applying: Vec<tokio::sync::Mutex<()>>,
    /// Messages of the event stream the follower has not read yet (as of its last one).
    pub follow_lag: AtomicU64,
    /// Itself, for the writer thread's hook (which holds a `&self`) to spawn replays.
    this: OnceLock<std::sync::Weak<Cluster>>,
    /// Partitions taken over by this node.
    pub takeovers: AtomicU64,
    /// Seconds from an append's send to its ack.
    pub append_seconds: Histogram,
    /// This process's instance id (kept in the data dir), once its node name is claimed.
    instance: OnceLock<String>,
    /// The name's claim: its revision (0: not held) and when it was last renewed.
    claim: Mutex<(u64, Instant)>,
}

impl Cluster {
    /// Checks the engine (preflight, for request bodies up to `max_body_bulk`), connects, and
    /// creates or checks inlet's objects.
    pub async fn join(settings: &Settings, max_body_bulk: usize) -> Result<Arc<Cluster>, String> {
        engine::preflight(settings, max_body_bulk).await?;
        let engine = engine::connect(settings).await?;
        let layout = engine::ensure_patiently(&engine, settings, Duration::from_secs(30)).await?;
        let parts = (0..layout.partitions)
            .map(|_| Part {
                role: Role::Following,
                lease_rev: 0,
                epoch: 0,
                last_seq: 0,
                batch: 0,
                generation: 0,
                last_renew: Instant::now(),
                subscription: None,
            })
            .collect();
        Ok(Arc::new(Cluster {
            settings: settings.clone(),
            partitions: layout.partitions,
            admin: AdminLog::new(layout.admin, engine.js.clone(), &settings.node),
            leases: Leases::new(layout.leases, &settings.node),
            stream: layout.stream,
            engine,
            rt: tokio::runtime::Handle::current(),
            parts: Mutex::new(parts),
            in_flight: Mutex::new(Vec::new()),
            local: OnceLock::new(),
            applying: (0..layout.partitions)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            follow_lag: AtomicU64::new(0),
            this: OnceLock::new(),
            takeovers: AtomicU64::new(0),
            append_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            instance: OnceLock::new(),
            claim: Mutex::new((0, Instant::now())),
        }))
    }

    /// Claims this node's name in the engine before it serves (see [`lease`]): refused
    /// while another running node uses it. The instance id is kept in `data` (the file
    /// [`INSTANCE_FILE`]), so a restart on the same data dir, even right after a crash, is
    /// the same instance and claims at once; a new data dir waits for the old claim to
    /// expire (at most the lease TTL).
    pub async fn claim(&self, data: &std::path::Path) -> Result<(), String> {
        let path = data.join(INSTANCE_FILE);
        let instance = match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
            _ => {
                let mut bytes = [0u8; 16];
                rand::fill(&mut bytes[..]);
                let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                std::fs::write(&path, format!("{id}\n"))
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                id
            }
        };
        let rev = self.leases.claim(&instance).await?;
        *self.claim.lock().expect("claim lock") = (rev, Instant::now());
        let _ = self.instance.set(instance);
        Ok(())
    }

    /// Renews the name's claim when due. `false`: not held (another running node took the
    /// name, or it could not be claimed again): every partition is given up, none taken.
    async fn keep_claim(&self) -> bool {
        let Some(instance) = self.instance.get() else {
            return true;
        };
        let (rev, last) = *self.claim.lock().expect("claim lock");
        if rev != 0 && last.elapsed() < RENEW_EVERY {
            return true;
        }
        let sent = Instant::now();
        let renewed = match rev {
            0 => match self.leases.claim_once(instance).await {
                Ok(lease::Claimed::Yes(rev)) => Renewal::Renewed(rev),
                Ok(_) => Renewal::Lost("claimed by another instance".to_owned()),
                Err(e) => Renewal::Unknown(e),
            },
            rev => self.leases.renew_claim(instance, rev).await,
        };
        match renewed {
            Renewal::Renewed(rev) => {
                *self.claim.lock().expect("claim lock") = (rev, sent);
                true
            }
            Renewal::Unknown(e) if rev != 0 => {
                tracing::warn!(error = %e, "the node name's claim was not renewed; trying again");
                true
            }
            Renewal::Lost(e) | Renewal::Unknown(e) => {
                crate::warn_throttled!(
                    "cluster claim",
                    error = %e,
                    "cluster_node {:?}: this node's name is not claimed; serving no partition \
                     (is another node running under this name?)",
                    self.settings.node
                );
                *self.claim.lock().expect("claim lock") = (0, sent);
                let mut parts = self.parts();
                for part in parts.iter_mut() {
                    if part.lease_rev != 0 || part.role != Role::Following {
                        self.drop_part(part);
                    }
                }
                false
            }
        }
    }

    /// Starts taking partitions (the lease loop), once the node can reach its writer.
    pub fn start(self: &Arc<Self>, local: Arc<dyn Local>) {
        let _ = self.local.set(local.clone());
        let _ = self.this.set(Arc::downgrade(self));
        let me = self.clone();
        self.rt
            .spawn(async move { me.admin.follow(move |job| local.run(job)).await });
        let me = self.clone();
        self.rt.spawn(async move { me.lease_loop().await });
        let me = self.clone();
        self.rt.spawn(async move { me.follow_loop().await });
        self.rt.spawn(self.clone().take_erasures());
        self.rt.spawn(self.clone().take_notices());
    }

    /// [`AdminLog::write`] from a thread outside the runtime (the control socket's).
    pub fn admin_write_blocking<R, F>(
        &self,
        writer: &crate::store::writer::Writer,
        f: F,
    ) -> crate::store::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> crate::store::Result<R> + Clone + Send + 'static,
    {
        self.rt.block_on(self.admin.write(writer, f))
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, Vec<Part>> {
        self.parts.lock().expect("cluster parts lock")
    }

    /// The partitions this node serves now.
    pub fn owned(&self) -> Vec<u32> {
        let parts = self.parts();
        (0..self.partitions)
            .filter(|&p| parts[p as usize].role == Role::Serving)
            .collect()
    }

    fn serving(&self, p: u32) -> bool {
        self.parts()[p as usize].role == Role::Serving
    }

    pub(super) fn role(&self, p: u32) -> Role {
        self.parts()[p as usize].role
    }

    /// Gives up every lease (the node stops): others take the partitions at once instead
    /// of after the TTL.
    pub async fn leave(&self) {
        let held: Vec<(u32, u64)> = {
            let mut parts = self.parts();
            (0..self.partitions)
                .filter_map(|p| {
                    let rev = parts[p as usize].lease_rev;
                    self.drop_part(&mut parts[p as usize]);
                    (rev != 0).then_some((p, rev))
                })
                .collect()
        };
        for (p, rev) in held {
            self.leases.release(p, rev).await;
        }
        self.leases.withdraw().await;
        let claim = std::mem::take(&mut self.claim.lock().expect("claim lock").0);
        if claim != 0 {
            self.leases.unclaim(claim).await;
        }
    }

    /// Forgets the ownership of a partition (its lease is not renewed any more).
    fn drop_part(&self, part: &mut Part) {
        part.role = Role::Following;
        part.lease_rev = 0;
        part.generation += 1;
        if let Some(s) = part.subscription.take() {
            s.abort();
        }
    }

    /// Steps down from `p` at once (the lease was lost or the fence refused an append).
    fn step_down(&self, p: u32, why: &str) {
        let mut parts = self.parts();
        let part = &mut parts[p as usize];
        if part.role != Role::Following {
            tracing::warn!(partition = p, why, "stepping down as the partition's owner");
            self.drop_part(part);
        }
    }

    async fn lease_loop(self: Arc<Self>) {
        loop {
            if HELD.load(Ordering::Relaxed) {
                tokio::time::sleep(TICK).await;
                continue;
            }
            if let Err(e) = self.lease_tick().await {
                tracing::warn!(error = %e, "cluster lease round failed");
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// One round: renew held leases that are due, announce this node, give up partitions
    /// above this node's share, take unowned ones up to it.
    async fn lease_tick(self: &Arc<Self>) -> Result<(), String> {
        if !self.keep_claim().await {
            return Ok(());
        }
        let due: Vec<(u32, u64, u64)> =
            {
                let parts = self.parts();
                (0..self.partitions)
                    .filter_map(|p| {
                        let part = &parts[p as usize];
                        (part.lease_rev != 0 && part.last_renew.elapsed() >= RENEW_EVERY)
                            .then_some((p, part.lease_rev, part.generation))
                    })
                    .collect()
            };
        // All at once: one unanswered renewal must not hold up the others' tries.
        // The key lives a TTL from when the engine stored it, which is after `sent`.
        let sent = Instant::now();
        let renewals = due.iter().map(|&(p, rev, _)| self.leases.renew(p, rev));
        let renewed = futures_util::future::join_all(renewals).await;
        for ((p, _, generation), renewed) in due.into_iter().zip(renewed) {
            let mut parts = self.parts();
            let part = &mut parts[p as usize];
            if part.generation != generation {
                continue;
            }
            match renewed {
                Renewal::Renewed(rev) => {
                    part.lease_rev = rev;
                    part.last_renew = sent;
                }
                Renewal::Lost(e) => {
                    drop(parts);
                    self.step_down(p, &format!("lease lost: {e}"));
                }
                // Not a lost lease: tried again next round while the lease has time left
                // (a bucket electing a leader, a connection being replaced). Meanwhile the
                // fence still refuses an append if another node took over after all.
                Renewal::Unknown(e) if part.last_renew.elapsed() + RENEW_MARGIN < LEASE_TTL => {
                    tracing::warn!(partition = p, error = %e, "lease renewal unanswered; trying again");
                }
                Renewal::Unknown(e) => {
                    drop(parts);
                    self.step_down(p, &format!("lease not renewed in time: {e}"));
                }
            }
        }
        self.leases.announce(self.admin.applied()).await?;
        let live = self.leases.live_nodes().await?;
        let share = lease::share(self.partitions, live);
        let held: Vec<u32> = {
            let parts = self.parts();
            (0..self.partitions)
                .filter(|&p| parts[p as usize].lease_rev != 0)
                .collect()
        };
        let mut owned = held.len() as u32;
        // Above the share: give up the last ones (another node takes them next round).
        for &p in held.iter().rev() {
            if owned <= share {
                break;
            }
            let rev = {
                let mut parts = self.parts();
                let rev = parts[p as usize].lease_rev;
                self.drop_part(&mut parts[p as usize]);
                rev
            };
            tracing::info!(
                partition = p,
                share,
                "giving the partition up to spread ownership"
            );
            self.leases.release(p, rev).await;
            owned -= 1;
        }
        for p in lease::preference(&self.settings.node, self.partitions) {
            if owned >= share {
                break;
            }
            if self.parts()[p as usize].lease_rev != 0 {
                continue;
            }
            if let Some(rev) = self.leases.take(p).await? {
                owned += 1;
                self.take(p, rev);
            }
        }
        Ok(())
    }

    /// Partition `p`'s lease was taken at revision `rev`: replay, then serve.
    fn take(self: &Arc<Self>, p: u32, rev: u64) {
        let generation = {
            let mut parts = self.parts();
            let part = &mut parts[p as usize];
            part.role = Role::Replaying;
            part.lease_rev = rev;
            part.epoch = rev;
            part.batch = 0;
            part.last_renew = Instant::now();
            part.generation += 1;
            part.generation
        };
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        tracing::info!(partition = p, epoch = rev, "took the partition's lease");
        self.spawn_replay(p, generation);
    }

    /// Applies `p`'s stream to the local database from its last applied sequence, then
    /// serves it (if it is still this node's, in the same generation).
    fn spawn_replay(self: &Arc<Self>, p: u32, generation: u64) {
        let me = self.clone();
        self.rt.spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                if me.parts()[p as usize].generation != generation {
                    return;
                }
                match me.replay(p, generation).await {
                    Ok(last) => {
                        me.serve(p, generation, last);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "replay failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(LEASE_TTL / 4);
                    }
                }
            }
        });
    }

    /// Applies `p`'s stream to the local database up to its last message, then appends the
    /// takeover's marker after it: the marker's sequence.
    async fn replay(&self, p: u32, generation: u64) -> Result<u64, String> {
        let _applying = self.applying[p as usize].lock().await;
        let last = self.last_of(p).await?;
        let still = || self.parts()[p as usize].generation == generation;
        let from = self.apply_until(p, last, &still).await?;
        if !still() {
            return Err("the partition changed hands during its replay".to_owned());
        }
        if last > from {
            tracing::info!(
                partition = p,
                from,
                to = last,
                "partition replayed from the engine"
            );
        }
        self.mark(p, generation, last).await
    }

    /// Appends the marker of this ownership to `p` (an empty batch, its message id naming
    /// the epoch), expecting `last`, the message the replay ended at, and applies it here.
    /// From then on any append of an earlier owner, however late it reaches the engine, is
    /// refused by the fence: it expects a sequence before the marker. A refused marker means
    /// another node appended after `last`: the replay runs again (and the lease loop finds
    /// out whether this node is still the owner).
    async fn mark(&self, p: u32, generation: u64, last: u64) -> Result<u64, String> {
        let local = self.local.get().ok_or("the node is not started")?.clone();
        let (id, lease_end) = {
            let mut parts = self.parts();
            let part = &mut parts[p as usize];
            if part.generation != generation {
                return Err("the partition changed hands during its replay".to_owned());
            }
            part.batch += 1;
            (
                format!("{p}-{}-{}", part.epoch, part.batch),
                part.last_renew + LEASE_TTL,
            )
        };
        let payload = bytes::Bytes::from(wire::encode_batch(&[]));
        let js = self.engine.js.clone();
        match Cluster::append(js, p, id, last, payload.clone(), lease_end).await {
            Ok(seq) => {
                Self::apply_batch(&local, p, seq, &payload).await?;
                Ok(seq)
            }
            Err(Appending::Fenced(e)) => Err(format!(
                "the takeover's marker was refused (another node appended after {last}): {e}"
            )),
            Err(Appending::Unknown(e)) => Err(format!("the takeover's marker: {e}")),
        }
    }

    /// The sequence of the last message on `p`'s subject (0: none).
    pub(super) async fn last_of(&self, p: u32) -> Result<u64, String> {
        let subject = events_subject(p);
        match read_bounded(
            self.stream
                .raw_message_builder()
                .last_by_subject(subject.clone())
                .send(),
        )
        .await?
        {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(format!("reading {subject}: {e}")),
        }
    }

    /// Applies `p`'s messages after its applied sequence up to `until`, read one by one
    /// from the engine (a message deleted since is passed over), while `still()` holds
    /// (the partition's role or ownership did not change).
    /// The caller holds `p`'s apply lock. The applied sequence it started from.
    pub(super) async fn apply_until(
        &self,
        p: u32,
        until: u64,
        still: &(dyn Fn() -> bool + Sync),
    ) -> Result<u64, String> {
        let local = self.local.get().ok_or("the node is not started")?.clone();
        let subject = events_subject(p);
        let mut at = local.applied(p)?;
        let from = at;
        while at < until {
            if !still() {
                break;
            }
            let m = match read_bounded(
                self.stream
                    .raw_message_builder()
                    .sequence(at + 1)
                    .next_by_subject(subject.clone())
                    .send(),
            )
            .await?
            {
                Ok(m) if m.sequence <= until => m,
                Ok(_) => break,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(format!("reading {subject} after {at}: {e}")),
            };
            self.apply_message(&local, p, m.sequence, &m.payload)
                .await?;
            at = m.sequence;
        }
        Ok(from)
    }

    /// Applies one message of `p`'s stream read back from the engine: a batch
    /// ([`Cluster::apply_batch`]), or an erasure or a lift (src/cluster/erase.rs). The
    /// caller holds `p`'s apply lock and has checked that `seq` is past the applied sequence.
    pub(super) async fn apply_message(
        &self,
        local: &Arc<dyn Local>,
        p: u32,
        seq: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        if wire::is_privacy(payload) {
            return self
                .apply_privacy(p, seq, payload)
                .await
                .map_err(|e| e.to_string());
        }
        Self::apply_batch(local, p, seq, payload).await
    }

    /// Applies one message of `p`'s stream (engine sequence `seq`) to the local database
    /// and waits for its commit, which records `seq` as `p`'s applied sequence. The one path
    /// of every batch read back from the engine (takeover replay and following); the caller
    /// holds `p`'s apply lock and has checked that `seq` is past the applied sequence.
    pub(super) async fn apply_batch(
        local: &Arc<dyn Local>,
        p: u32,
        seq: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        let failed = |e: SubmitError| format!("applying {} #{seq}: {e}", events_subject(p));
        let mut subs = wire::decode_batch(payload)?;
        let Some(last) = subs.pop() else {
            // An empty batch (a takeover's marker): only its sequence to record.
            return Self::mark_applied(local, p, seq).await;
        };
        // All but the last queued at once, in order (each is queued when first polled), so
        // that they share group commits; the last, which records `seq`, only once they are
        // all committed: a failure leaves the applied sequence before this message.
        let first: Vec<Submitted> = subs
            .into_iter()
            .map(|sub| local.submit(sub, 0, Some(Replayed { mark: None })))
            .collect();
        for r in futures_util::future::join_all(first).await {
            r.map_err(failed)?;
        }
        local
            .submit(last, 0, Some(Replayed { mark: Some(seq) }))
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// Records `seq` as `p`'s applied sequence (never moving it back), between commits.
    async fn mark_applied(local: &Arc<dyn Local>, p: u32, seq: u64) -> Result<(), String> {
        local
            .run(Box::new(move |db| {
                use redb::ReadableTable;
                let txn = crate::store::begin_write(db).map_err(|e| e.to_string())?;
                {
                    let mut t = txn.open_table(APPLIED).map_err(|e| e.to_string())?;
                    let now = t
                        .get(p)
                        .map_err(|e| e.to_string())?
                        .map_or(0, |v| v.value());
                    t.insert(p, now.max(seq)).map_err(|e| e.to_string())?;
                }
                txn.commit().map_err(|e| e.to_string())
            }))
            .await
            .map_err(|e| format!("recording {} #{seq} applied: {e}", events_subject(p)))
    }

    fn serve(self: &Arc<Self>, p: u32, generation: u64, last: u64) {
        let mut parts = self.parts();
        let part = &mut parts[p as usize];
        if part.generation != generation {
            return;
        }
        part.role = Role::Serving;
        part.last_seq = last;
        if part.subscription.is_none() {
            let me = self.clone();
            part.subscription = Some(self.rt.spawn(async move { me.take_forwarded(p).await }));
        }
        tracing::info!(partition = p, last_seq = last, "serving the partition");
    }

    /// Answers submissions forwarded for `p` by other nodes (one queue group: whichever
    /// subscriber gets one answers it).
    async fn take_forwarded(self: Arc<Self>, p: u32) {
        let client = self.engine.client.clone();
        let mut sub = match client
            .queue_subscribe(submit_subject(p), "owner".into())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(partition = p, error = %e, "cannot take forwarded submissions");
                self.step_down(p, "no subscription for forwarded submissions");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            let (me, client) = (self.clone(), client.clone());
            tokio::spawn(async move {
                let Some(reply) = msg.reply else { return };
                let answer = match wire::decode_forward(&msg.payload) {
                    Err(e) => Err(e),
                    Ok((sub, ..)) if partition_of(sub.tenant_id, me.partitions) != p => {
                        Err("a submission for another partition".to_owned())
                    }
                    Ok(_) if !me.serving(p) => Err("not the partition's owner".to_owned()),
                    Ok((sub, bytes, dry)) => match me.local.get() {
                        Some(l) if dry => l.submit_dry(sub, bytes).await.map_err(|e| e.to_string()),
                        Some(l) => l.submit(sub, bytes, None).await.map_err(|e| e.to_string()),
                        None => Err("the node is not started".to_owned()),
                    },
                };
                let _ = client
                    .publish(reply, wire::encode_answer(&answer).into())
                    .await;
            });
        }
    }

    /// A submission of any partition: written here when this node serves it, else
    /// forwarded to its owner. No owner, or no answer in time: the commit failed (503).
    /// A `dry` run goes the same way, so that its answer is the owner's, exact as on a
    /// single inlet (this node's copy of the partition may be a few batches behind).
    pub async fn submit(
        &self,
        writer: &crate::store::writer::Writer,
        sub: Submission,
        body_bytes: usize,
        dry: bool,
    ) -> Result<Vec<Outcome>, SubmitError> {
        let p = partition_of(sub.tenant_id, self.partitions);
        if self.serving(p) {
            return match dry {
                true => writer.submit_dry(sub, body_bytes).await,
                false => writer.submit(sub, body_bytes).await,
            };
        }
        // Cut off from the engine (the client knows it): no owner can be reached, so the
        // answer is 503 at once rather than after the forward's timeout.
        if self.engine.client.connection_state() != async_nats::connection::State::Connected {
            crate::warn_throttled!(
                "cluster disconnected",
                partition = p,
                "not connected to the engine: a submission for another node's partition is refused"
            );
            return Err(SubmitError::CommitFailed);
        }
        let payload = wire::encode_forward(&sub, body_bytes, dry);
        drop(sub);
        let asked = self
            .engine
            .client
            .request(submit_subject(p), payload.into());
        match tokio::time::timeout(FORWARD_TIMEOUT, asked).await {
            Ok(Ok(msg)) => match wire::decode_answer(&msg.payload) {
                Ok(Ok(outcomes)) => Ok(outcomes),
                Ok(Err(e)) | Err(e) => {
                    crate::warn_throttled!(format!("cluster refused {p}"), partition = p, error = %e, "the partition's owner refused a submission");
                    Err(SubmitError::CommitFailed)
                }
            },
            Ok(Err(e)) => {
                crate::warn_throttled!(format!("cluster no owner {p}"), partition = p, error = %e, "no owner took a forwarded submission");
                Err(SubmitError::CommitFailed)
            }
            Err(_) => {
                crate::warn_throttled!(
                    format!("cluster no answer {p}"),
                    partition = p,
                    "the partition's owner did not answer in time"
                );
                Err(SubmitError::CommitFailed)
            }
        }
    }

    /// Appends one batch of `p` with the fence; resends the same message id after a lost
    /// ack. The sequence it got, or whether the fence refused it.
    async fn append(
        js: async_nats::jetstream::Context,
        p: u32,
        id: String,
        expected: u64,
        payload: bytes::Bytes,
        lease_end: Instant,
    ) -> Result<u64, Appending> {
        // Not past the lease either: a batch that reaches the engine after another node
        // took the partition over, but before it appended, would pass the fence.
        let lease_end = tokio::time::Instant::from_std(lease_end)
            .checked_sub(LEASE_SLACK)
            .unwrap_or_else(tokio::time::Instant::now);
        let deadline = lease_end.min(tokio::time::Instant::now() + APPEND_DEADLINE);
        loop {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                expected.to_string().as_str(),
            );
            let sent = async {
                js.publish_with_headers(events_subject(p), headers, payload.clone())
                    .await?
                    .await
            };
            let try_until = deadline.min(tokio::time::Instant::now() + APPEND_TRY);
            match tokio::time::timeout_at(try_until, sent).await {
                Ok(Ok(ack)) => return Ok(ack.sequence),
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(Appending::Fenced(e.to_string()));
                }
                // Never sent: resending would not help.
                Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(Appending::Unknown(e.to_string()));
                }
                Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(partition = p, error = %e, "append not acknowledged; resending");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => return Err(Appending::Unknown(e.to_string())),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(partition = p, "append not acknowledged in time; resending");
                }
                Err(_) => return Err(Appending::Unknown("no ack in time".to_owned())),
            }
        }
    }
}

/// A read of the stream, given up after [`READ_TRY`] (the replay tries again): a read sent
/// while the stream elects a leader is never answered, and the client's own timeout is long.
async fn read_bounded<T>(read: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(READ_TRY, read)
        .await
        .map_err(|_| "the engine did not answer a read in time".to_owned())
}

/// One message of a partition's batch: its id and payload.
type Message = (String, bytes::Bytes);

/// Why an append did not go through.
enum Appending {
    /// Another owner appended since (error 10071): step down.
    Fenced(String),
    /// No ack: the batch may or may not be in the stream.
    Unknown(String),
}

impl Commit for Cluster {
    fn before_commit(&self, txn: &WriteTransaction, batch: &[Decided<'_>]) -> Result<(), String> {
        let mut applied: BTreeMap<u32, u64> = BTreeMap::new();
        let mut groups: BTreeMap<u32, Vec<wire::SubRef<'_>>> = BTreeMap::new();
        let mut live: Vec<u32> = Vec::new();
        for d in batch {
            let p = partition_of(d.sub.tenant_id, self.partitions);
            if let Some(r) = d.replayed {
                if let Some(mark) = r.mark {
                    let e = applied.entry(p).or_default();
                    *e = (*e).max(mark);
                }
                continue;
            }
            live.push(p);
            if let Some(s) = wire::SubRef::stored(d.sub, d.outcomes) {
                groups.entry(p).or_default().push(s);
            }
        }
        // A message stays under the engine's payload limit: a partition's group may take
        // several, appended in order, each expecting the one before.
        let limit = self
            .engine
            .client
            .server_info()
            .max_payload
            .saturating_sub(PAYLOAD_HEADROOM)
            .max(1);
        let messages: BTreeMap<u32, Vec<Vec<u8>>> = groups
            .iter()
            .map(|(&p, subs)| (p, wire::encode_batches(subs, limit)))
            .collect();
        // Every live submission's partition must be served here: its decisions were made on
        // this node's state of it.
        let appends: Vec<(u32, Vec<Message>, u64, Instant)> = {
            let mut parts = self.parts();
            if let Some(p) = live
                .iter()
                .find(|&&p| parts[p as usize].role != Role::Serving)
            {
                return Err(format!("partition {p} is not served by this node"));
            }
            // Nor on a lease that may have run out (the process was paused past it): another
            // node may own the partition without having appended yet, so the fence alone
            // would let this stale batch through and leave the new owner behind the stream.
            if let Some(&p) = live
                .iter()
                .find(|&&p| parts[p as usize].last_renew.elapsed() + RENEW_MARGIN >= LEASE_TTL)
            {
                let part = &mut parts[p as usize];
                tracing::warn!(
                    partition = p,
                    "stepping down as the partition's owner: its lease was not renewed in time"
                );
                self.drop_part(part);
                return Err(format!("partition {p}: its lease may have expired"));
            }
            messages
                .into_iter()
                .map(|(p, payloads)| {
                    let part = &mut parts[p as usize];
                    let msgs = payloads
                        .into_iter()
                        .map(|payload| {
                            part.batch += 1;
                            let id = format!("{p}-{}-{}", part.epoch, part.batch);
                            (id, bytes::Bytes::from(payload))
                        })
                        .collect();
                    (p, msgs, part.last_seq, part.last_renew + LEASE_TTL)
                })
                .collect()
        };
        let appends = match !appends.is_empty() && hold_for_test() {
            // Past the lease-time guard: as if the batch reached the engine late.
            true => appends
                .into_iter()
                .map(|(p, msgs, expected, _)| (p, msgs, expected, Instant::now() + LEASE_TTL))
                .collect(),
            false => appends,
        };
        let started = Instant::now();
        let js = self.engine.js.clone();
        let handles: Vec<_> = appends
            .into_iter()
            .map(|(p, msgs, expected, lease_end)| {
                let js = js.clone();
                let task = async move {
                    let mut last = expected;
                    for (id, payload) in msgs {
                        last = Cluster::append(js.clone(), p, id, last, payload, lease_end).await?;
                    }
                    Ok(last)
                };
                (p, self.rt.spawn(task))
            })
            .collect();
        let results: Vec<(u32, Result<u64, Appending>)> = self.rt.block_on(async {
            let mut out = Vec::new();
            for (p, h) in handles {
                let r = h
                    .await
                    .unwrap_or_else(|e| Err(Appending::Unknown(e.to_string())));
                out.push((p, r));
            }
            out
        });
        self.append_seconds.observe(started.elapsed().as_secs_f64());
        let mut failed = None;
        {
            let mut parts = self.parts();
            for (p, r) in &results {
                match r {
                    Ok(seq) => {
                        parts[*p as usize].last_seq = *seq;
                        applied.insert(*p, *seq);
                    }
                    Err(Appending::Fenced(e)) | Err(Appending::Unknown(e)) => {
                        failed.get_or_insert_with(|| format!("partition {p}: {e}"));
                    }
                }
            }
        }
        let appended: Vec<u32> = results.iter().map(|(p, _)| *p).collect();
        if let Some(e) = failed {
            for (p, r) in results {
                match r {
                    Err(Appending::Fenced(why)) => {
                        tracing::warn!(partition = p, error = %why, "the engine refused an append: another node took the partition over");
                        self.step_down(p, &why)
                    }
                    // In the stream, or perhaps: the local database must catch up first.
                    _ => self.catch_up(p),
                }
            }
            return Err(e);
        }
        let mut table = txn.open_table(APPLIED).map_err(|e| e.to_string())?;
        for (p, seq) in applied {
            table.insert(p, seq).map_err(|e| e.to_string())?;
        }
        *self.in_flight.lock().expect("in flight lock") = appended;
        Ok(())
    }

    fn settled(&self, committed: bool) {
        let appended = std::mem::take(&mut *self.in_flight.lock().expect("in flight lock"));
        if !committed {
            for p in appended {
                self.catch_up(p);
            }
        }
    }
}

impl Cluster {
    /// `p`'s stream may hold a batch the local database lacks: replay before serving again.
    fn catch_up(&self, p: u32) {
        let generation = {
            let mut parts = self.parts();
            let part = &mut parts[p as usize];
            if part.role != Role::Serving {
                return;
            }
            part.role = Role::Replaying;
            part.generation
        };
        if let Some(me) = self.this.get().and_then(std::sync::Weak::upgrade) {
            me.spawn_replay(p, generation);
        }
    }
}
