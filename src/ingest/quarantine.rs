//! The ingest side of the quarantine ([`crate::store::quarantine`]): which refusals keep
//! their event, what is kept (the item's own bytes, credentials taken out), and the replay
//! of a kept event through the same stages as on arrival (`prepare_one`, `submit`), the
//! credential check excepted.

use super::{ItemSlot, Lookups, count_outcomes, prepare_one, submit};
use crate::auth::redact::{self, Kind};
use crate::context::Context;
use crate::dialect::{
    Adjust, AppsFlyer, AuditFormat, Candidate, Datafly, Dialect, GameRebellion, Ingest, Native,
    batch_item_bytes,
};
use crate::event::{Field, Reason, random_id};
use crate::store::quarantine::{Entry, Held, Keep, KeyNow};
use crate::store::read::KeyInfo;
use crate::store::receipts::Note;
use crate::store::writer::Outcome;
use std::borrow::Cow;

/// Refusals an operator can fix on inlet's side: the key's allowed events, the tenant's
/// quota, an Adjust event token mapped to no event. An erased subject's events
/// (`subject_suppressed`) are never kept; malformed input is only counted.
pub fn keepable(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::EventNotAllowedByKey | Reason::CapExceeded | Reason::Invalid(Field::EventToken)
    )
}

/// Keeps the event of a single request refused for `reason`, if that reason is
/// [`keepable`] and dialect `D` keeps events: its item is the payload, as
/// [`Ingest::kept_item`] writes it with what the request's `head` and its decoding (`then`)
/// told. Never waits: the writer writes it between commits.
pub(crate) fn keep_one<D: Ingest>(
    ctx: &Context,
    key: &KeyInfo,
    received_at_ms: u64,
    reason: Reason,
    (head, then, payload): (&D::Head, Option<&D::Then>, &[u8]),
    claimed: Option<&str>,
) {
    if !D::KEEPS || !keepable(reason) {
        return;
    }
    let Some(item) = D::kept_item(head, then, payload) else {
        return;
    };
    let held = held::<D>(ctx, key, received_at_ms, reason, &item, claimed);
    hand_over(ctx, key, vec![held]);
}

/// Keeps the [`keepable`] refusals of a batch (`slots` in request order, `outcomes` of its
/// queued events), each with its own item of `payload`.
pub(super) fn keep_batch<D: Ingest>(
    ctx: &Context,
    key: &KeyInfo,
    received_at_ms: u64,
    payload: &[u8],
    slots: &[ItemSlot],
    outcomes: &[Outcome],
) {
    if !D::KEEPS {
        return;
    }
    let refused = slots.iter().enumerate().filter_map(|(n, slot)| match slot {
        ItemSlot::Rejected(id, reason) if keepable(*reason) => Some((n, id.as_deref(), *reason)),
        ItemSlot::Queued(id, i) if outcomes.get(*i) == Some(&Outcome::OverQuota) => {
            Some((n, Some(id.as_str()), Reason::CapExceeded))
        }
        _ => None,
    });
    let refused: Vec<_> = refused.collect();
    if refused.is_empty() {
        return;
    }
    let Some(items) = batch_item_bytes(payload) else {
        return;
    };
    let kept = refused
        .into_iter()
        .filter_map(|(n, id, reason)| {
            let item = items.get(n)?;
            Some(held::<D>(ctx, key, received_at_ms, reason, item, id))
        })
        .collect();
    hand_over(ctx, key, kept);
}

fn hand_over(ctx: &Context, key: &KeyInfo, held: Vec<Held>) {
    let items = held
        .into_iter()
        .map(|held| Keep {
            app_id: key.app_id,
            held,
        })
        .collect();
    let writer = &ctx.writer;
    ctx.quarantine
        .keep(items, ctx.config.quarantine, |job| writer.later(job));
}

/// The record of a refused item: its id (the sender's, else the one it would get, else a
/// new one a replay keeps), its name (decoded again, or the dialect's label) and its bytes,
/// credentials taken out.
fn held<D: Ingest>(
    ctx: &Context,
    key: &KeyInfo,
    received_at_ms: u64,
    reason: Reason,
    item: &[u8],
    claimed: Option<&str>,
) -> Held {
    let raw = clean(ctx, item, D::AUDIT);
    let (label_id, label_name) = D::kept_label(&raw, received_at_ms);
    let event_id = claimed
        .map(str::to_owned)
        .or(label_id)
        .unwrap_or_else(random_id);
    let mut app = None;
    let mut lookup = Lookups { ctx, app: &mut app };
    let name = D::redecode(&mut lookup, key, &raw, &event_id, received_at_ms)
        .ok()
        .and_then(|(event, _)| {
            let valid = event.validate(random_id).ok()?;
            Some(valid.event_name().to_owned())
        });
    Held {
        reason: reason.tag().into_owned(),
        source: D::SOURCE.to_owned(),
        key_id: key.key_id,
        received_at_ms,
        event_id,
        event_name: name.or(label_name).unwrap_or_default(),
        raw,
    }
}

/// `item` with every credential replaced by its marker (as in a stored raw body).
fn clean(ctx: &Context, item: &[u8], format: AuditFormat) -> Vec<u8> {
    let mut namer = |kind: Kind, credential: &str| {
        match kind {
            Kind::Key => ctx.store.key_id_of(credential),
            Kind::Secret => ctx.store.secret_id_of(credential),
        }
        .unwrap_or(None)
    };
    let clean = match format {
        AuditFormat::Json => redact::json(item, &mut namer),
        AuditFormat::Form => redact::form(item, &mut namer),
    };
    match clean {
        Cow::Borrowed(b) => b.to_vec(),
        Cow::Owned(b) => b,
    }
}

/// What a replay made of one held event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    pub id: u64,
    pub event_id: String,
    /// `accepted`, `duplicate` (both leave the quarantine) or `refused`.
    pub outcome: &'static str,
    /// Why it was refused (`key_revoked`: its key was revoked since; `secret_revoked`: the
    /// signing secret of its message was revoked since; `not_replayable`: its
    /// dialect's events are not replayed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The stored event (accepted) or the one it duplicates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Whether it left the quarantine.
    pub released: bool,
}

/// Replays one held event of app `app_id` through its dialect's pipeline: decoded again with
/// its key as it is now and its original event id and receive time, validated, checked
/// against the key's allowed events, submitted (quota, dedupe, store).
pub async fn replay(ctx: &Context, app_id: u32, entry: &Entry) -> Replayed {
    let held = &entry.held;
    let refused = |reason: String, released| Replayed {
        id: entry.qid,
        event_id: held.event_id.clone(),
        outcome: "refused",
        reason: Some(reason),
        seq: None,
        released,
    };
    let key = match ctx.store.key_now(app_id, held.key_id) {
        Ok(KeyNow::Valid(key)) => key,
        Ok(KeyNow::Revoked) => return refused("key_revoked".into(), false),
        Err(e) => return refused(format!("storage: {e}"), false),
    };
    // A signed message stands on its secret as a keyed one on its key.
    if held.source == Datafly::SOURCE
        && let Some(secret) = crate::dialect::datafly::kept_secret_id(&held.raw)
    {
        match ctx.store.secret_unrevoked(secret) {
            Ok(true) => {}
            Ok(false) => return refused("secret_revoked".into(), false),
            Err(e) => return refused(format!("storage: {e}"), false),
        }
    }
    let outcome = match held.source.as_str() {
        s if s == Native::SOURCE => replay_as::<Native>(ctx, &key, held).await,
        s if s == Adjust::SOURCE => replay_as::<Adjust>(ctx, &key, held).await,
        s if s == AppsFlyer::SOURCE => replay_as::<AppsFlyer>(ctx, &key, held).await,
        s if s == Datafly::SOURCE => replay_as::<Datafly>(ctx, &key, held).await,
        s if s == GameRebellion::SOURCE => replay_as::<GameRebellion>(ctx, &key, held).await,
        _ => Err(Reason::NotFound),
    };
    match outcome {
        // A drop rule added since matches it: answered as dropped, nothing stored.
        Ok(None) => Replayed {
            id: entry.qid,
            event_id: held.event_id.clone(),
            outcome: "dropped",
            reason: None,
            seq: None,
            released: true,
        },
        Ok(Some(Outcome::Accepted { seq })) => Replayed {
            id: entry.qid,
            event_id: held.event_id.clone(),
            outcome: "accepted",
            reason: None,
            seq: Some(seq),
            released: true,
        },
        Ok(Some(Outcome::Duplicate { seq })) => Replayed {
            id: entry.qid,
            event_id: held.event_id.clone(),
            outcome: "duplicate",
            reason: None,
            seq: Some(seq),
            released: true,
        },
        Ok(Some(Outcome::OverQuota)) => refused(Reason::CapExceeded.tag().into_owned(), false),
        Ok(Some(Outcome::OutOfOrder)) => refused(Reason::EventOutOfOrder.tag().into_owned(), false),
        // An erased subject's event: never stored, and no longer kept.
        Ok(Some(Outcome::Suppressed)) => {
            refused(Reason::SubjectSuppressed.tag().into_owned(), true)
        }
        Err(Reason::NotFound) => refused("not_replayable".into(), false),
        Err(reason) => refused(reason.tag().into_owned(), false),
    }
}

async fn replay_as<D: Ingest>(
    ctx: &Context,
    key: &KeyInfo,
    held: &Held,
) -> Result<Option<Outcome>, Reason> {
    if !D::KEEPS {
        return Err(Reason::NotFound);
    }
    let received_at_ms = held.received_at_ms;
    let mut app = None;
    let mut lookup = Lookups { ctx, app: &mut app };
    let (event, guard) = D::redecode(&mut lookup, key, &held.raw, &held.event_id, received_at_ms)?;
    let drops = super::drop_rules(ctx, key);
    let prepared = prepare_one::<D>(key, received_at_ms, event, guard, &drops)?;
    if let Some(hit) = prepared.dropped {
        drops.count(hit);
        let id = prepared.pending.event_id();
        let note = Note::dropped(key.app_id, id, crate::clock::now_ms(), hit.rule);
        ctx.writer.note(vec![note]);
        return Ok(None);
    }
    let body = bytes::Bytes::copy_from_slice(&held.raw);
    let outcomes = submit(
        ctx,
        key,
        received_at_ms,
        vec![prepared.pending],
        (prepared.audit_key, body),
        D::AUDIT,
        false,
        None,
    )
    .await?;
    let outcome = *outcomes.first().ok_or(Reason::Internal)?;
    count_outcomes(ctx, &key.app, D::SOURCE, &[outcome]);
    Ok(Some(outcome))
}
