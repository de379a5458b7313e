//! Following: every node applies the batches of the partitions it does not own to its own
//! database as the engine's stream gets them, so that each node's database is a whole,
//! slightly late copy of the cluster's events: the export, the panel's pages, counters and
//! profiles answer for the whole cluster from any node, and a take-over has only the last
//! few batches to replay.
//!
//! One ordered consumer per node over every partition's subject (`inlet.events.>`), not one
//! per partition: the engine keeps one cursor per node whatever the partition count, and the
//! stream's order is kept. A message of a partition this node owns (or is replaying) is
//! passed over: the owner applies its own batches, the replay reads them back itself. A
//! message of a followed partition is applied through [`Cluster::apply_batch`] under the
//! partition's apply lock, once its sequence is past the partition's applied sequence.
//!
//! The consumer starts at the first message any followed partition lacks. A message is
//! applied as it comes when this consumer delivered no other message of its partition
//! between the applied sequence and it (and started early enough to have); otherwise (the
//! partition was owned here then, or the consumer started after them) the partition is read
//! up to this message one by one first. A deleted message is simply never seen.

use super::node::{Cluster, Role, events_subject};
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The longest wait before the follower starts again after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Test-only: milliseconds the follower waits before applying each message (a node whose
/// copy of other partitions is behind).
const DELAY_ENV: &str = "INLET_TEST_FOLLOW_DELAY_MS";

impl Cluster {
    /// Follows the stream for as long as the node runs, starting again after a failure.
    pub(super) async fn follow_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            if let Err(e) = self.follow().await {
                crate::warn_throttled!(
                    "cluster follow",
                    error = %e,
                    "following the event stream failed; starting again"
                );
            }
            if started.elapsed() > MAX_BACKOFF * 2 {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One run of the follower: from the first message a followed partition lacks, until the
    /// consumer or an apply fails.
    async fn follow(&self) -> Result<(), String> {
        let local = self.local.get().ok_or("the node is not started")?.clone();
        let start = self.follow_start().await?;
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: "inlet.events.>".to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating the follow consumer: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("reading the event stream: {e}"))?;
        // Per partition: the sequence of its last message this consumer delivered.
        let mut seen = vec![0u64; self.partitions as usize];
        let delay = std::env::var(DELAY_ENV)
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis);
        while let Some(m) = messages.next().await {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let m = m.map_err(|e| format!("reading the event stream: {e}"))?;
            let info = m.info().map_err(|e| e.to_string())?;
            let seq = info.stream_sequence;
            self.follow_lag.store(info.pending, Ordering::Relaxed);
            let Some(p) = m
                .subject
                .as_str()
                .strip_prefix("inlet.events.")
                .and_then(|p| p.parse::<u32>().ok())
                .filter(|&p| p < self.partitions)
            else {
                continue;
            };
            let before = std::mem::replace(&mut seen[p as usize], seq);
            let _applying = self.applying[p as usize].lock().await;
            if self.role(p) != Role::Following {
                continue;
            }
            let applied = local.applied(p)?;
            if seq <= applied {
                continue;
            }
            if applied + 1 >= start && before <= applied {
                self.apply_message(&local, p, seq, &m.payload).await?;
            } else {
                let still = || self.role(p) == Role::Following;
                self.apply_until(p, seq, &still).await?;
            }
        }
        Err("the event stream's consumer ended".to_owned())
    }

    /// The first sequence a followed partition lacks (the stream's next one when none
    /// lacks anything): one read per partition behind.
    async fn follow_start(&self) -> Result<u64, String> {
        let local = self.local.get().ok_or("the node is not started")?.clone();
        let mut info = self.stream.clone();
        let last = info
            .info()
            .await
            .map_err(|e| format!("reading the event stream's state: {e}"))?
            .state
            .last_sequence;
        let mut start = last + 1;
        for p in 0..self.partitions {
            let applied = local.applied(p)?;
            if applied + 1 >= start {
                continue;
            }
            let subject = events_subject(p);
            match self
                .stream
                .raw_message_builder()
                .sequence(applied + 1)
                .next_by_subject(subject.clone())
                .send()
                .await
            {
                Ok(m) => start = start.min(m.sequence),
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(format!("reading {subject} after {applied}: {e}")),
            }
        }
        self.follow_lag
            .store(last.saturating_sub(start - 1), Ordering::Relaxed);
        Ok(start)
    }
}
