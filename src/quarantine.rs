//! Quarantine and replay, as the operator sees them (the admin API, the control socket,
//! `inlet quarantine`): an app's held events by reason, the replay of a selection or a whole
//! reason, the discard. The keeping is `ingest::quarantine`'s, the storage
//! `store::quarantine`'s ([docs/quarantine.md]).

use crate::context::Context;
pub use crate::ingest::quarantine::Replayed;
use crate::store::quarantine::{Entry, Selection, Summary};
use crate::store::{self, Store};
use serde::Serialize;
use serde_json::{Value, json};

/// Most events one replay or listing takes (call again for more).
pub const MAX_BATCH: usize = 1000;
/// Largest part of a raw item a listing shows.
const MAX_RAW_SHOWN: usize = 4096;

/// One held event as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: u64,
    pub event_id: String,
    pub event_name: String,
    pub reason: String,
    pub source: String,
    pub key_id: u32,
    pub received_at_ms: u64,
    pub bytes: usize,
    /// The item as text (lossy, cut at a few KiB).
    pub raw: String,
}

impl From<&Entry> for Listed {
    fn from(e: &Entry) -> Listed {
        let h = &e.held;
        let shown = &h.raw[..h.raw.len().min(MAX_RAW_SHOWN)];
        Listed {
            id: e.qid,
            event_id: h.event_id.clone(),
            event_name: h.event_name.clone(),
            reason: h.reason.clone(),
            source: h.source.clone(),
            key_id: h.key_id,
            received_at_ms: h.received_at_ms,
            bytes: h.raw.len(),
            raw: String::from_utf8_lossy(shown).into_owned(),
        }
    }
}

/// `{"app", "held", "bytes", "dropped", "reasons": [{"reason", "count"}], "events": [...]}`:
/// the app's held events by reason, and those `sel` takes (oldest first, at most `limit`).
pub fn list(store: &Store, app: &str, sel: &Selection, limit: usize) -> store::Result<Value> {
    let app_id = store.quarantine_app(app)?;
    let (
        reasons,
        Summary {
            held,
            bytes,
            dropped,
            ..
        },
    ) = store.quarantine_reasons(app_id)?;
    let events: Vec<Listed> = store
        .quarantined(app_id, sel, limit.min(MAX_BATCH))?
        .iter()
        .map(Listed::from)
        .collect();
    let reasons: Vec<Value> = reasons
        .into_iter()
        .map(|(reason, count)| json!({ "reason": reason, "count": count }))
        .collect();
    Ok(json!({
        "app": app,
        "held": held,
        "bytes": bytes,
        "dropped": dropped,
        "reasons": reasons,
        "events": events,
    }))
}

/// Replays the held events of `app` that `sel` takes (at most [`MAX_BATCH`], oldest first),
/// each through its dialect's pipeline; those accepted or found stored leave the
/// quarantine, those refused again stay with the new reason.
pub async fn replay(ctx: &Context, app: &str, sel: &Selection) -> store::Result<Vec<Replayed>> {
    let app_id = ctx.store.quarantine_app(app)?;
    let entries = ctx.store.quarantined(app_id, sel, MAX_BATCH)?;
    let mut results = Vec::with_capacity(entries.len());
    let mut reasons = Vec::new();
    for entry in &entries {
        let r = crate::ingest::quarantine::replay(ctx, app_id, entry).await;
        // Refused again: held under the new reason (a revoked key or a store failure says
        // nothing new of the event).
        if let Some(reason) = r.reason.as_deref().filter(|_| !r.released)
            && !matches!(
                reason,
                "key_revoked"
                    | "secret_revoked"
                    | "not_replayable"
                    | "overloaded"
                    | "shutting_down"
                    | "internal"
            )
            && !reason.starts_with("storage")
        {
            reasons.push((entry.qid, reason.to_owned()));
        }
        results.push(r);
    }
    let released: Vec<u64> = results
        .iter()
        .filter(|r| r.released)
        .map(|r| r.id)
        .collect();
    if !released.is_empty() || !reasons.is_empty() {
        ctx.writer
            .run(move |db| -> store::Result<()> {
                let txn = store::begin_write(db)?;
                store::quarantine::remove(&txn, app_id, &released)?;
                for (qid, reason) in &reasons {
                    store::quarantine::set_reason(&txn, app_id, *qid, reason)?;
                }
                Ok(txn.commit()?)
            })
            .await??;
    }
    tracing::info!(app, replayed = results.len(), "quarantine replayed");
    Ok(results)
}

/// The answer of a replay: `{"replayed", "released", "held", "results": [...]}`.
pub fn replay_json(results: &[Replayed]) -> Value {
    let released = results.iter().filter(|r| r.released).count();
    json!({
        "replayed": results.len(),
        "released": released,
        "held": results.len() - released,
        "results": results,
    })
}

/// Discards the held events of `app` that `sel` takes (at most [`MAX_BATCH`]); returns how
/// many. `write` runs the removal in a write transaction (the writer's, or this process's).
pub fn discard_ids(store: &Store, app: &str, sel: &Selection) -> store::Result<(u32, Vec<u64>)> {
    let app_id = store.quarantine_app(app)?;
    let ids = store
        .quarantined(app_id, sel, MAX_BATCH)?
        .iter()
        .map(|e| e.qid)
        .collect();
    Ok((app_id, ids))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct AppLabel {
    app: String,
}

/// `inlet_quarantine_dropped_total{app}` (over the bounds, ever), `inlet_quarantine_held{app}`
/// and `inlet_quarantine_bytes{app}`, read from the store at scrape time, and
/// `inlet_quarantine_lost_total` (refused events never kept: too many waiting for the writer,
/// this process).
pub fn register_metrics(
    store: &Store,
    keeper: &store::quarantine::Keeper,
    reg: &mut prometheus_client::registry::Registry,
) {
    use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
    let lost = Counter::<u64>::default();
    lost.inc_by(keeper.dropped());
    reg.register(
        "inlet_quarantine_lost",
        "Refused events that were to be quarantined but were not: too many waited for the writer",
        lost,
    );
    let (Ok(summaries), Ok(apps)) = (store.quarantine_summaries(), store.apps()) else {
        return;
    };
    let dropped = Family::<AppLabel, Counter>::default();
    let held = Family::<AppLabel, Gauge>::default();
    let bytes = Family::<AppLabel, Gauge>::default();
    for (app_id, s) in summaries {
        let Some(app) = apps.iter().find(|a| a.id == app_id) else {
            continue;
        };
        let label = AppLabel {
            app: app.name.clone(),
        };
        dropped.get_or_create(&label).inc_by(s.dropped);
        held.get_or_create(&label)
            .set(i64::try_from(s.held).unwrap_or(i64::MAX));
        bytes
            .get_or_create(&label)
            .set(i64::try_from(s.bytes).unwrap_or(i64::MAX));
    }
    reg.register(
        "inlet_quarantine_dropped",
        "Quarantined events dropped (the oldest) to keep an app within its bounds",
        dropped,
    );
    reg.register(
        "inlet_quarantine_held",
        "Events held in an app's quarantine, to be replayed or discarded",
        held,
    );
    reg.register(
        "inlet_quarantine_bytes",
        "Bytes held in an app's quarantine",
        bytes,
    );
}
