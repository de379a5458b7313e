//! What inlet nodes send each other through the engine, postcard with a version byte:
//! - a [`Batch`]: one group commit of a partition, appended to `inlet.events.<p>`: the
//!   accepted events of each submission, with what a rebuild needs (app, tenant, key, time
//!   received, each event's id, record and dialect state, the raw body);
//! - a forwarded submission (or dry run) on `inlet.submit.<p>`, and its answer;
//! - a [`PrivacyRecord`] on `inlet.events.<p>` (its own kind byte, [`PRIVACY_V1`]): an
//!   erasure or the lifting of its suppression, applied in order by every node
//!   (`cluster::erase`).

use crate::store::writer::{Outcome, Pending, Submission};
use serde::{Deserialize, Serialize};

/// The version byte of every message below.
pub const WIRE_V1: u8 = 1;

/// The kind-and-version byte of a [`PrivacyRecord`]: a build that does not know it refuses
/// the message as an unknown version instead of misreading it as a batch.
pub const PRIVACY_V1: u8 = 0x81;

/// An erasure or a lifted suppression, appended to the partition of the app's tenant.
#[derive(Debug, Serialize, Deserialize)]
pub enum PrivacyRecord {
    Erase {
        /// The ledger entry (salted digests, no identifier), as recorded by the owner.
        entry: crate::store::privacy::Erasure,
        /// Entries of earlier erasure records this one replaces (they held the subject's
        /// events in their rewritten batches and are deleted with the originals).
        carried: Vec<crate::store::privacy::Erasure>,
        /// Each message that held the subject's events (its sequence), rewritten without
        /// them: batch messages as [`encode_batch`] encodes them.
        rewritten: Vec<(u64, Vec<u8>)>,
    },
    /// Suppression of erasure `id` lifted.
    Lift { id: String },
}

/// Whether a message of `inlet.events.<p>` is a [`PrivacyRecord`].
pub fn is_privacy(bytes: &[u8]) -> bool {
    bytes.first() == Some(&PRIVACY_V1)
}

pub fn encode_privacy(r: &PrivacyRecord) -> Vec<u8> {
    let mut out = vec![PRIVACY_V1];
    out.extend(postcard::to_stdvec(r).expect("postcard encodes to a Vec"));
    out
}

pub fn decode_privacy(bytes: &[u8]) -> Result<PrivacyRecord, String> {
    match bytes.split_first() {
        Some((&PRIVACY_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| format!("an undecodable privacy record: {e}"))
        }
        _ => Err("not a privacy record".to_owned()),
    }
}

/// One submission as sent: borrowed from the writer's batch.
#[derive(Serialize)]
pub struct SubRef<'a> {
    pub app_id: u32,
    pub tenant_id: u32,
    pub key_id: u32,
    pub received_at_ms: u64,
    pub events: Vec<&'a Pending>,
    pub audit: Option<(&'a str, &'a [u8])>,
}

/// One submission as received.
#[derive(Deserialize)]
struct SubOwned {
    app_id: u32,
    tenant_id: u32,
    key_id: u32,
    received_at_ms: u64,
    events: Vec<Pending>,
    audit: Option<(String, Vec<u8>)>,
}

impl<'a> SubRef<'a> {
    /// All of `sub`.
    pub fn whole(sub: &'a Submission) -> SubRef<'a> {
        SubRef {
            app_id: sub.app_id,
            tenant_id: sub.tenant_id,
            key_id: sub.key_id,
            received_at_ms: sub.received_at_ms,
            events: sub.events.iter().collect(),
            audit: sub.audit.as_ref().map(|(k, b)| (k.as_str(), b.as_ref())),
        }
    }

    /// What of `sub` a commit stored: its accepted events, and its raw body when the writer
    /// kept it (some event accepted, none suppressed). `None` when nothing was accepted.
    pub fn stored(sub: &'a Submission, outcomes: &[Outcome]) -> Option<SubRef<'a>> {
        let events: Vec<&Pending> = sub
            .events
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| matches!(o, Outcome::Accepted { .. }))
            .map(|(e, _)| e)
            .collect();
        if events.is_empty() {
            return None;
        }
        let suppressed = outcomes.contains(&Outcome::Suppressed);
        Some(SubRef {
            events,
            audit: match suppressed {
                true => None,
                false => sub.audit.as_ref().map(|(k, b)| (k.as_str(), b.as_ref())),
            },
            ..SubRef::whole(sub)
        })
    }
}

impl SubOwned {
    fn into_submission(self) -> Submission {
        Submission {
            app_id: self.app_id,
            tenant_id: self.tenant_id,
            key_id: self.key_id,
            received_at_ms: self.received_at_ms,
            events: self.events,
            audit: self.audit.map(|(k, b)| (k, bytes::Bytes::from(b))),
        }
    }
}

fn versioned<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![WIRE_V1];
    // Serializing to a Vec cannot fail for these types.
    out.extend(postcard::to_stdvec(value).expect("postcard encodes to a Vec"));
    out
}

fn unversioned(bytes: &[u8]) -> Result<&[u8], String> {
    match bytes.split_first() {
        Some((&WIRE_V1, rest)) => Ok(rest),
        Some((v, _)) => Err(format!("message version {v} is not known to this build")),
        None => Err("an empty message".to_owned()),
    }
}

/// A batch of a partition, as appended.
pub fn encode_batch(subs: &[SubRef<'_>]) -> Vec<u8> {
    versioned(&subs)
}

/// A batch of a partition as messages of at most about `limit` bytes each, split between
/// submissions (a submission larger than `limit` is a message of its own).
pub fn encode_batches(subs: &[SubRef<'_>], limit: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0usize);
    for (i, sub) in subs.iter().enumerate() {
        let n = postcard::experimental::serialized_size(sub).unwrap_or(usize::MAX);
        if i > start && size.saturating_add(n) > limit {
            out.push(encode_batch(&subs[start..i]));
            (start, size) = (i, 0);
        }
        size = size.saturating_add(n);
    }
    if start < subs.len() {
        out.push(encode_batch(&subs[start..]));
    }
    out
}

/// A batch read back from the stream: its submissions.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Submission>, String> {
    let subs: Vec<SubOwned> = postcard::from_bytes(unversioned(bytes)?)
        .map_err(|e| format!("an undecodable batch: {e}"))?;
    Ok(subs.into_iter().map(SubOwned::into_submission).collect())
}

#[derive(Serialize)]
struct ForwardRef<'a> {
    body_bytes: u64,
    dry: bool,
    sub: SubRef<'a>,
}

#[derive(Deserialize)]
struct ForwardOwned {
    body_bytes: u64,
    dry: bool,
    sub: SubOwned,
}

/// A submission forwarded to its partition's owner (`body_bytes`: its request body's size,
/// for the owner's queue budget; `dry`: a dry run, judged by the owner and not stored).
pub fn encode_forward(sub: &Submission, body_bytes: usize, dry: bool) -> Vec<u8> {
    versioned(&ForwardRef {
        body_bytes: body_bytes as u64,
        dry,
        sub: SubRef::whole(sub),
    })
}

/// A forwarded submission: it, its body's size, whether it is a dry run.
pub fn decode_forward(bytes: &[u8]) -> Result<(Submission, usize, bool), String> {
    let f: ForwardOwned = postcard::from_bytes(unversioned(bytes)?)
        .map_err(|e| format!("an undecodable submission: {e}"))?;
    Ok((f.sub.into_submission(), f.body_bytes as usize, f.dry))
}

/// One event's outcome as answered by the owner.
#[derive(Serialize, Deserialize)]
enum WireOutcome {
    Accepted(u64),
    Duplicate(u64),
    OverQuota,
    OutOfOrder,
    Suppressed,
}

/// The owner's answer: each event's outcome, or why it could not take the submission.
pub fn encode_answer(answer: &Result<Vec<Outcome>, String>) -> Vec<u8> {
    let wire: Result<Vec<WireOutcome>, &str> = match answer {
        Ok(outcomes) => Ok(outcomes
            .iter()
            .map(|o| match *o {
                Outcome::Accepted { seq } => WireOutcome::Accepted(seq),
                Outcome::Duplicate { seq } => WireOutcome::Duplicate(seq),
                Outcome::OverQuota => WireOutcome::OverQuota,
                Outcome::OutOfOrder => WireOutcome::OutOfOrder,
                Outcome::Suppressed => WireOutcome::Suppressed,
            })
            .collect()),
        Err(e) => Err(e.as_str()),
    };
    versioned(&wire)
}

pub fn decode_answer(bytes: &[u8]) -> Result<Result<Vec<Outcome>, String>, String> {
    let wire: Result<Vec<WireOutcome>, String> = postcard::from_bytes(unversioned(bytes)?)
        .map_err(|e| format!("an undecodable answer: {e}"))?;
    Ok(wire.map(|outcomes| {
        outcomes
            .into_iter()
            .map(|o| match o {
                WireOutcome::Accepted(seq) => Outcome::Accepted { seq },
                WireOutcome::Duplicate(seq) => Outcome::Duplicate { seq },
                WireOutcome::OverQuota => Outcome::OverQuota,
                WireOutcome::OutOfOrder => Outcome::OutOfOrder,
                WireOutcome::Suppressed => Outcome::Suppressed,
            })
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_only_what_was_stored_and_reads_back() {
        let mut sub = crate::store::writer::tests::sub(&["a", "b", "c"]);
        sub.audit = Some(("k".to_owned(), bytes::Bytes::from_static(b"body")));
        let outcomes = [
            Outcome::Accepted { seq: 1 },
            Outcome::Duplicate { seq: 0 },
            Outcome::Accepted { seq: 2 },
        ];
        let stored = SubRef::stored(&sub, &outcomes).unwrap();
        let bytes = encode_batch(&[stored]);
        assert_eq!(bytes[0], WIRE_V1);
        let back = decode_batch(&bytes).unwrap();
        assert_eq!(back.len(), 1);
        let ids: Vec<&str> = back[0].events.iter().map(|e| e.event_id()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(back[0].events[1].record(), sub.events[2].record());
        assert_eq!(back[0].audit.as_ref().unwrap().1.as_ref(), b"body");
        // Split by size, between submissions; read back in order.
        let two = [
            SubRef::whole(&sub),
            SubRef::whole(&sub),
            SubRef::whole(&sub),
        ];
        assert_eq!(encode_batches(&two, usize::MAX).len(), 1);
        let split = encode_batches(&two, 10);
        assert_eq!(split.len(), 3);
        assert_eq!(decode_batch(&split[2]).unwrap()[0].events.len(), 3);
        // Nothing accepted: nothing to append.
        assert!(SubRef::stored(&sub, &[Outcome::OverQuota; 3]).is_none());
        // Another version is refused, not misread.
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(decode_batch(&other).is_err_and(|e| e.contains("version 9")));

        let fwd = encode_forward(&sub, 77, true);
        let (back, n, dry) = decode_forward(&fwd).unwrap();
        assert_eq!(
            (back.events.len(), n, back.tenant_id, dry),
            (3, 77, 1, true)
        );
        assert!(!decode_forward(&encode_forward(&sub, 77, false)).unwrap().2);
        let answer = decode_answer(&encode_answer(&Ok(outcomes.to_vec()))).unwrap();
        assert_eq!(answer.unwrap(), outcomes);
        let refused = decode_answer(&encode_answer(&Err("no".into()))).unwrap();
        assert_eq!(refused.unwrap_err(), "no");
    }
}
