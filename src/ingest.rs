//! The ingest pipeline: the whole order of a request, top to bottom.
//!
//! headers → auth → body (limit) → dialect decode → validate → key's allowed events →
//! encode → group-commit writer (dedupe, quota, append, one fsync) → response.
//!
//! [`ingest`] is that order for every vendor endpoint, of one event or a batch, its stages
//! asked of the vendor's [`Ingest`] impl; the native endpoints (fast decoder) keep their own
//! functions.

use crate::clock::{Date, next_month_start_ms, now_ms};
use crate::context::Context;
pub use crate::dialect::ResultReasons;
use crate::dialect::adjust::AdjustApp;
use crate::dialect::canon::write_str;
use crate::dialect::reflect;
use crate::dialect::{
    BatchItem, BodyLimit, Credited, Dialect, Ingest, ItemGuard, Lookup, Native, Signer, Stored,
};
use crate::event::{Draft, Reason, ValidEvent, random_id, time_ordered_id};
use crate::http::reply::Reply;
use crate::ratelimit::{RateLimiter, Verdict};
use crate::stats::Counted;
use crate::store;
use crate::store::read::KeyCheck;
use crate::store::read::KeyInfo;
use crate::store::tables::{ordering_key, session_key, skan_key};
use crate::store::writer::{Guard, Outcome, Pending, SkanUpdate, Submission, SubmitError};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderMap};
use hyper::{Request, StatusCode};
use redact::AuditFormat;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::io::Write as _;

#[cfg(test)]
mod native;
pub mod redact;

/// The one pipeline of a request that carries one event, for every dialect that implements
/// [`Ingest`], top to bottom. A refusal at any stage is counted (under the app, once a
/// lookup named one) and answered in the dialect's words (`refused`).
pub async fn ingest<D: Ingest>(ctx: &Context, req: Request<Incoming>) -> Reply {
    let mut app = None;
    let mut verdict = None;
    let mut reply = match ingest_inner::<D>(ctx, req, &mut app, &mut verdict).await {
        Ok(reply) => reply,
        Err(reason) => {
            let reply = refused::<D>(ctx, app.as_deref(), reason);
            match &verdict {
                Some(v) if reason == Reason::RateLimited => {
                    reply.retry_after(v.retry_after(now_ms()))
                }
                _ => reply,
            }
        }
    };
    if D::RATE_LIMITED {
        let verdict = verdict
            .unwrap_or_else(|| RateLimiter::unkeyed(ctx.config.default_rate_limit, now_ms()));
        reply.headers.extend(verdict.headers());
    }
    reply
}

async fn ingest_inner<D: Ingest>(
    ctx: &Context,
    req: Request<Incoming>,
    app: &mut Option<String>,
    verdict: &mut Option<Verdict>,
) -> Result<Reply, Reason> {
    let head = D::head(req.method(), req.uri(), req.headers())?;
    let mut lookup = Lookups { ctx, app };
    let early = D::early_credential(&mut lookup, &head)?;
    if let Some(key) = early.as_ref().filter(|_| D::RATE_LIMITED) {
        let limit = key.rate_limit.unwrap_or(ctx.config.default_rate_limit);
        let v = verdict.insert(ctx.rate_limiter.hit(key.key_id, limit, now_ms()));
        if !v.allowed {
            return Err(Reason::RateLimited);
        }
    }
    let body = match D::body_limit(&head) {
        BodyLimit::Single => ctx.read_body(req, ctx.config.limits.single_body).await?,
        BodyLimit::Bulk => ctx.read_body(req, ctx.config.limits.bulk_body).await?,
        BodyLimit::Bytes(n) => ctx.read_body(req, n).await?,
        BodyLimit::None => bytes::Bytes::new(),
    };
    let payload = D::payload(&head, body)?;
    let received_at_ms = now_ms();
    let Credited { key, auth } =
        D::credential(&mut lookup, &head, early, &payload, received_at_ms)?;
    if let Some(items) = D::decode_batch(&head, &payload, received_at_ms)? {
        return ingest_batch::<D>(ctx, &key, received_at_ms, items, payload).await;
    }
    let decoded = D::decode(&mut lookup, &head, auth, &payload, received_at_ms)?;
    let event = checked(&key, decoded.draft)?;
    let ts_ms = event.get().event_ts_ms;
    let event_id = event.event_id().to_owned();
    let audit_key = audit_key(
        D::AUDIT_PREFIX,
        received_at_ms,
        event.event_id(),
        D::AUDIT.ext(),
    );
    let mut pending = Pending::from_valid(&key, D::SOURCE, received_at_ms, event, &audit_key);
    pending.set_guard(decoded.guard.map(|g| store_guard(g, ts_ms)));
    let kept = (audit_key.clone(), payload);
    let outcome = submit(ctx, &key, received_at_ms, vec![pending], kept, D::AUDIT).await?[0];
    count_outcomes(ctx, &key.app, D::SOURCE, &[outcome]);
    let duplicate = match outcome {
        Outcome::Accepted { .. } => false,
        Outcome::Duplicate { .. } => true,
        Outcome::OverQuota => return Err(Reason::CapExceeded),
        Outcome::OutOfOrder => return Err(Reason::EventOutOfOrder),
        Outcome::Suppressed => return Err(Reason::SubjectSuppressed),
    };
    let stored = Stored {
        event_id: &event_id,
        audit_key: &audit_key,
        duplicate,
    };
    D::ok(&mut lookup, decoded.then, &stored)
}

/// The batch form of [`ingest`] once the request's events are decoded: per event, validate
/// → the key's allowed events → encode; the valid ones in one submission, the payload kept
/// under a time-ordered name; answered with the per-event results in request order.
async fn ingest_batch<D: Ingest>(
    ctx: &Context,
    key: &KeyInfo,
    received_at_ms: u64,
    items: Vec<BatchItem>,
    payload: bytes::Bytes,
) -> Result<Reply, Reason> {
    let audit_key = audit_key(
        D::BATCH_AUDIT_PREFIX,
        received_at_ms,
        &time_ordered_id(),
        D::AUDIT.ext(),
    );
    let items = items.into_iter().map(|i| (i.event_id, i.draft));
    let batch = prepare_batch(key, D::SOURCE, received_at_ms, items, &audit_key);
    let done = submit_prepared::<D>(
        ctx,
        key,
        received_at_ms,
        batch,
        audit_key,
        &payload,
        D::AUDIT,
    )
    .await?;
    Ok(done.reply::<D>(received_at_ms))
}

/// The writer's form of a dialect's [`ItemGuard`] for an event of time `ts_ms`.
fn store_guard(guard: ItemGuard, ts_ms: i64) -> Guard {
    match guard {
        ItemGuard::NotBefore {
            app_id,
            event_token,
            device,
            skan,
        } => Guard::NotBefore {
            key: ordering_key(app_id, &event_token, &device),
            ts_ms,
            skan: skan.map(|value| SkanUpdate {
                key: skan_key(app_id, &device),
                value,
            }),
        },
        ItemGuard::SessionStart {
            app_id,
            session_id,
            ts_ms,
            identity,
        } => Guard::SessionStart {
            key: session_key(app_id, &session_id),
            ts_ms,
            identity,
        },
        ItemGuard::SessionEnd { app_id, session_id } => Guard::SessionEnd {
            key: session_key(app_id, &session_id),
        },
    }
}

/// The store lookups of a dialect's credential stage; each app found is named in `app`.
struct Lookups<'a> {
    ctx: &'a Context,
    app: &'a mut Option<String>,
}

impl Lookup for Lookups<'_> {
    type Key = KeyInfo;

    fn key(&mut self, token: &str) -> Result<KeyInfo, Reason> {
        let key = lookup_key(self.ctx, token)?;
        self.app.get_or_insert_with(|| key.app.clone());
        Ok(key)
    }

    fn api_key(&mut self, token: &str) -> Result<KeyInfo, Reason> {
        match self.ctx.store.check_key(token) {
            Ok(KeyCheck::Valid(key)) => {
                self.app.get_or_insert_with(|| key.app.clone());
                Ok(key)
            }
            Ok(KeyCheck::Revoked) => Err(Reason::RevokedApiKey),
            Ok(KeyCheck::Unknown) => Err(Reason::UnknownApiKey),
            Err(e) => Err(store_failed("key")(e)),
        }
    }

    fn session_start(&mut self, app_id: u32, session_id: &str) -> Result<Option<i64>, Reason> {
        self.ctx
            .store
            .session_start(app_id, session_id)
            .map_err(store_failed("session"))
    }

    fn latest_open_session(
        &mut self,
        app_id: u32,
        identity: &[u8; 16],
    ) -> Result<Option<(String, i64)>, Reason> {
        self.ctx
            .store
            .latest_open_session(app_id, identity)
            .map_err(store_failed("session"))
    }

    fn keyless(&mut self, app_id: u32) -> Result<Option<KeyInfo>, Reason> {
        self.ctx.store.keyless(app_id).map_err(store_failed("app"))
    }

    fn adjust_app(&mut self, app_token: &str) -> Result<AdjustApp, Reason> {
        let (app_id, app) = self
            .ctx
            .store
            .app_where(|a| a.adjust_app_token.as_deref() == Some(app_token))
            .map_err(store_failed("app"))?
            .ok_or(Reason::UnknownAppToken)?;
        self.app.get_or_insert(app.name);
        Ok(AdjustApp {
            app_id,
            token_optional: app.adjust_token_optional,
            events: app.adjust_events,
            skan: app.adjust_skan,
        })
    }

    fn skan_value(
        &mut self,
        app_id: u32,
        device: &str,
    ) -> Result<Option<crate::skan::Value>, Reason> {
        self.ctx
            .store
            .skan_value(&skan_key(app_id, device))
            .map_err(store_failed("conversion value"))
    }

    fn app_of(key: &KeyInfo) -> u32 {
        key.app_id
    }

    fn app_by_bundle(&mut self, bundle: &str) -> Result<u32, Reason> {
        let (app_id, found) = self
            .ctx
            .store
            .app_where(|a| a.appsflyer_bundle_id.as_deref() == Some(bundle))
            .map_err(store_failed("app"))?
            .ok_or(Reason::UnknownBundleId)?;
        self.app.get_or_insert(found.name);
        Ok(app_id)
    }

    fn signer(
        &mut self,
        timestamp: &str,
        body: &[u8],
        mac: &[u8],
        now_ms: u64,
    ) -> Result<Signer<KeyInfo>, Reason> {
        let store = &self.ctx.store;
        let signer = store
            .verify_signature(timestamp, body, mac, now_ms)
            .map_err(store_failed("secret"))?
            .ok_or(Reason::SignatureInvalid)?;
        self.app.get_or_insert_with(|| signer.app.clone());
        let key = store
            .keyless(signer.app_id)
            .map_err(store_failed("app"))?
            .ok_or(Reason::SignatureInvalid)?;
        Ok(Signer {
            key,
            secret_id: signer.secret_id,
        })
    }
}

/// `POST /s2s/event`.
pub async fn reflect_single(ctx: &Context, req: Request<Incoming>) -> Reply {
    let mut app = None;
    match reflect_single_inner(ctx, req, &mut app).await {
        Ok(reply) => reply,
        Err(reason) => refused::<Native>(ctx, app.as_deref(), reason),
    }
}

async fn reflect_single_inner(
    ctx: &Context,
    req: Request<Incoming>,
    app: &mut Option<String>,
) -> Result<Reply, Reason> {
    let key = bearer_key(ctx, req.headers())?;
    *app = Some(key.app.clone());
    let body = ctx.read_body(req, ctx.config.limits.single_body).await?;
    let received_at_ms = now_ms();
    let (event_id, audit_key, pending) = reflect_single_prepare(&key, received_at_ms, &body)?;
    let outcome = submit(
        ctx,
        &key,
        received_at_ms,
        vec![pending],
        (audit_key.clone(), body.clone()),
        AuditFormat::Json,
    )
    .await?[0];
    count_outcomes(ctx, &key.app, "reflect", &[outcome]);
    Ok(match outcome {
        Outcome::Accepted { .. } => {
            json_text(StatusCode::OK, single_accepted(&event_id, &audit_key))
        }
        Outcome::Duplicate { seq } => {
            let mut body = json!({ "accepted": 0, "duplicate": true, "event_id": event_id });
            if let Ok(Some(original)) = ctx.store.event(seq) {
                body["audit_key"] = Value::String(original.audit_key);
            }
            Reply::json(StatusCode::OK, &body)
        }
        Outcome::OverQuota => return Err(Reason::CapExceeded),
        Outcome::OutOfOrder => return Err(Reason::EventOutOfOrder),
        Outcome::Suppressed => return Err(Reason::SubjectSuppressed),
    })
}

/// The answer to an accepted single event, `{"accepted": 1, "event_id", "audit_key"}`,
/// written as text.
pub fn single_accepted(event_id: &str, audit_key: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(48 + event_id.len() + audit_key.len());
    body.extend_from_slice(br#"{"accepted":1,"event_id":"#);
    write_str(&mut body, event_id);
    body.extend_from_slice(br#","audit_key":"#);
    write_str(&mut body, audit_key);
    body.push(b'}');
    body
}

/// `POST /s2s/events/bulk`.
pub async fn reflect_bulk(ctx: &Context, req: Request<Incoming>) -> Reply {
    let mut app = None;
    match reflect_bulk_inner(ctx, req, &mut app).await {
        Ok(reply) => reply,
        Err(reason) => refused::<Native>(ctx, app.as_deref(), reason),
    }
}

async fn reflect_bulk_inner(
    ctx: &Context,
    req: Request<Incoming>,
    app: &mut Option<String>,
) -> Result<Reply, Reason> {
    let key = bearer_key(ctx, req.headers())?;
    *app = Some(key.app.clone());
    let body = ctx.read_body(req, ctx.config.limits.bulk_body).await?;
    let received_at_ms = now_ms();
    let audit_key = audit_key("s2s/bulk", received_at_ms, &time_ordered_id(), "json");
    let batch = reflect_bulk_prepare(&key, received_at_ms, &body, &audit_key)?;
    let done = submit_prepared::<Native>(
        ctx,
        &key,
        received_at_ms,
        batch,
        audit_key,
        &body,
        AuditFormat::Json,
    )
    .await?;
    Ok(done.reply::<Native>(received_at_ms))
}

/// The request side of `POST /s2s/event` once the key and body are known: decode →
/// validate → the key's allow-list → encode. Returns the event id, the audit key and the
/// encoded event.
pub fn reflect_single_prepare(
    key: &KeyInfo,
    received_at_ms: u64,
    body: &[u8],
) -> Result<(String, String, Pending), Reason> {
    let event = reflect::decode_single(body)?.validate(random_id)?;
    allowed(key, &event.get().event_name)?;
    let audit_key = audit_key("s2s", received_at_ms, event.event_id(), "json");
    let pending = Pending::from_native(key, "reflect", received_at_ms, &event, &audit_key);
    Ok((pending.event_id().to_owned(), audit_key, pending))
}

/// The request side of `POST /s2s/events/bulk` once the key and body are known: decode →
/// validate → the key's allow-list → encode, per event.
pub fn reflect_bulk_prepare(
    key: &KeyInfo,
    received_at_ms: u64,
    body: &[u8],
    audit_key: &str,
) -> Result<PreparedBatch, Reason> {
    let items = reflect::decode_bulk(body)?;
    let mut slots = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    for reflect::BulkItem { event_id, draft } in items {
        let checked = draft
            .and_then(|d| d.validate(random_id))
            .and_then(|ev| allowed(key, &ev.get().event_name).map(|()| ev));
        match checked {
            Ok(ev) => {
                let pending = Pending::from_native(key, "reflect", received_at_ms, &ev, audit_key);
                slots.push(ItemSlot::Queued(
                    pending.event_id().to_owned(),
                    events.len(),
                ));
                events.push(pending);
            }
            Err(reason) => slots.push(ItemSlot::Rejected(event_id.map(Cow::into_owned), reason)),
        }
    }
    Ok(PreparedBatch { slots, events })
}

/// What a batch endpoint answers: the per-event results (JSON text), and the first rejection
/// when no event was accepted or a duplicate (the request then fails with that reason's
/// status).
pub struct BatchDone {
    body: Vec<u8>,
    pub all_rejected: Option<Reason>,
}

impl BatchDone {
    /// The results as JSON text.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// 200 with the results, or the first rejection's status in dialect `D` with the same
    /// results and an `error` field.
    pub fn reply<D: Dialect>(mut self, received_at_ms: u64) -> Reply {
        match self.all_rejected {
            Some(reason) => {
                self.body.pop(); // the closing brace
                self.body.extend_from_slice(br#","error":"#);
                write_str(&mut self.body, &reason.tag());
                self.body.push(b'}');
                let reply = json_text(D::status(reason), self.body);
                with_retry(reply, reason, received_at_ms)
            }
            None => json_text(StatusCode::OK, self.body),
        }
    }
}

/// A JSON reply whose body was written as text.
fn json_text(status: StatusCode, body: Vec<u8>) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: body.into(),
        retry_after: None,
        headers: Vec::new(),
    }
}

/// Per-event status of a batch, in request order.
enum ItemSlot {
    Rejected(Option<String>, Reason),
    /// Index into the submission's events.
    Queued(String, usize),
}

/// A decoded batch: each event's status in request order, and the encoded valid ones.
pub struct PreparedBatch {
    slots: Vec<ItemSlot>,
    events: Vec<Pending>,
}

impl PreparedBatch {
    /// The encoded events to submit.
    pub fn events(&self) -> &[Pending] {
        &self.events
    }

    /// The per-event statuses (to answer with once the writer decided) and the events.
    pub fn into_parts(self) -> (BatchSlots, Vec<Pending>) {
        (BatchSlots(self.slots), self.events)
    }
}

/// Validates each decoded event against the key and encodes the valid ones.
fn prepare_batch(
    key: &KeyInfo,
    source: &'static str,
    received_at_ms: u64,
    items: impl Iterator<Item = (Option<String>, Result<Draft, Reason>)>,
    audit_key: &str,
) -> PreparedBatch {
    let mut slots = Vec::new();
    let mut events = Vec::new();
    for (event_id, draft) in items {
        match draft.and_then(|d| checked(key, d)) {
            Ok(ev) => {
                slots.push(ItemSlot::Queued(ev.event_id().to_owned(), events.len()));
                events.push(Pending::from_valid(
                    key,
                    source,
                    received_at_ms,
                    ev,
                    audit_key,
                ));
            }
            Err(reason) => slots.push(ItemSlot::Rejected(event_id, reason)),
        }
    }
    PreparedBatch { slots, events }
}

/// Submits the valid events of a prepared batch of dialect `D` in one submission (the raw
/// body stored under `audit_key`, written as `format`) and builds the per-event results in
/// request order.
async fn submit_prepared<D: Dialect>(
    ctx: &Context,
    key: &KeyInfo,
    received_at_ms: u64,
    batch: PreparedBatch,
    audit_key: String,
    body: &bytes::Bytes,
    format: AuditFormat,
) -> Result<BatchDone, Reason> {
    let source = D::SOURCE;
    let PreparedBatch { slots, events } = batch;
    let outcomes = if events.is_empty() {
        Vec::new()
    } else {
        submit(
            ctx,
            key,
            received_at_ms,
            events,
            (audit_key.clone(), body.clone()),
            format,
        )
        .await?
    };
    count_outcomes(ctx, &key.app, source, &outcomes);
    Ok(
        BatchSlots(slots).answer(&outcomes, &audit_key, D::RESULT_REASONS, |reason| {
            count_rejected(ctx, Some(&key.app), source, reason, 1)
        }),
    )
}

/// Each event's status of a prepared batch, in request order.
pub struct BatchSlots(Vec<ItemSlot>);

impl BatchSlots {
    /// The answer once the writer decided `outcomes` (one per queued event, in order):
    /// `{"accepted", "duplicates", "rejected", "results": [{"event_id", "status",
    /// "reason"?, "field"?}], "audit_key"?}` in request order, reasons named as `reasons`
    /// says. Written as text: a tree of a thousand small maps cost about as much CPU as
    /// decoding the events. `on_rejected` is called with the reason of each rejected event.
    /// The request's own `error` (all rejected) stays the first reason's tag, as the
    /// endpoint's error table names it.
    pub fn answer(
        self,
        outcomes: &[Outcome],
        audit_key: &str,
        reasons: ResultReasons,
        mut on_rejected: impl FnMut(Reason),
    ) -> BatchDone {
        let (mut accepted, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);
        let mut first_reason = None;
        let mut results = Vec::with_capacity(self.0.len() * 64);
        for (n, slot) in self.0.into_iter().enumerate() {
            if n > 0 {
                results.push(b',');
            }
            results.extend_from_slice(br#"{"event_id":"#);
            let (event_id, reason) = match slot {
                ItemSlot::Queued(id, i) => match outcomes[i] {
                    Outcome::Accepted { .. } => {
                        accepted += 1;
                        write_str(&mut results, &id);
                        results.extend_from_slice(br#","status":"accepted"}"#);
                        continue;
                    }
                    Outcome::Duplicate { .. } => {
                        duplicates += 1;
                        write_str(&mut results, &id);
                        results.extend_from_slice(br#","status":"duplicate"}"#);
                        continue;
                    }
                    Outcome::OverQuota => (Some(id), Reason::CapExceeded),
                    Outcome::OutOfOrder => (Some(id), Reason::EventOutOfOrder),
                    Outcome::Suppressed => (Some(id), Reason::SubjectSuppressed),
                },
                ItemSlot::Rejected(id, reason) => (id, reason),
            };
            on_rejected(reason);
            rejected += 1;
            first_reason.get_or_insert(reason);
            match event_id {
                Some(id) => write_str(&mut results, &id),
                None => results.extend_from_slice(b"null"),
            }
            results.extend_from_slice(br#","status":"rejected","reason":"#);
            match (reasons, reason) {
                (ResultReasons::Reflect, Reason::Required(field)) => {
                    results.extend_from_slice(br#""missing_required_fields","field":"#);
                    write_str(&mut results, field.name());
                }
                _ => write_str(&mut results, &reason.tag()),
            }
            results.push(b'}');
        }
        let mut body = Vec::with_capacity(results.len() + audit_key.len() + 128);
        let _ = write!(
            body,
            r#"{{"accepted":{accepted},"duplicates":{duplicates},"rejected":{rejected},"results":["#
        );
        body.extend_from_slice(&results);
        body.push(b']');
        if accepted > 0 {
            body.extend_from_slice(br#","audit_key":"#);
            write_str(&mut body, audit_key);
        }
        body.push(b'}');
        BatchDone {
            body,
            all_rejected: first_reason.filter(|_| accepted == 0 && duplicates == 0),
        }
    }
}

/// Counts accepted and duplicate outcomes (over-quota ones are counted as rejections by the
/// caller, which knows them as `cap_exceeded`).
pub(crate) fn count_outcomes(ctx: &Context, app: &str, source: &'static str, outcomes: &[Outcome]) {
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Accepted { .. }))
        .count();
    let duplicate = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Duplicate { .. }))
        .count();
    ctx.counters
        .add(app, source, Counted::Accepted, accepted as u64);
    ctx.counters
        .add(app, source, Counted::Duplicate, duplicate as u64);
}

/// Counts `n` events rejected for `reason` (app `-` when no key named one).
pub fn count_rejected(
    ctx: &Context,
    app: Option<&str>,
    source: &'static str,
    reason: Reason,
    n: u64,
) {
    ctx.counters
        .add(app.unwrap_or("-"), source, Counted::Rejected(reason), n);
}

/// Validation and the key's event allow-list, for one decoded event.
pub(crate) fn checked(key: &KeyInfo, draft: Draft) -> Result<ValidEvent, Reason> {
    let ev = draft.validate(random_id)?;
    allowed(key, &ev.get().event_name)?;
    Ok(ev)
}

/// The key's event allow-list: the one check, for every dialect.
pub(crate) fn allowed(key: &KeyInfo, event_name: &str) -> Result<(), Reason> {
    if key.allows(event_name) {
        Ok(())
    } else {
        Err(Reason::EventNotAllowedByKey)
    }
}

/// The key named by `Authorization: Bearer srv_...`.
fn bearer_key(ctx: &Context, headers: &HeaderMap) -> Result<KeyInfo, Reason> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(Reason::MissingBearerToken)?;
    lookup_key(ctx, token)
}

/// Authenticates a presented key; a revoked or unknown key is refused alike.
pub fn lookup_key(ctx: &Context, token: &str) -> Result<KeyInfo, Reason> {
    let generation = ctx
        .writer
        .stats()
        .config_generation
        .load(std::sync::atomic::Ordering::SeqCst);
    match ctx.store.authenticate_cached(token, generation) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(Reason::UnknownOrRevokedKey),
        Err(e) => Err(store_failed("key")(e)),
    }
}

/// The one mapping of a failed store read while a request is judged (its key, app, session,
/// secret): logged with the detail, answered without it. Damaged data or a bug is
/// [`Reason::Internal`] (500: retrying cannot help); the database being unavailable is
/// [`Reason::StorageUnavailable`] (503, retry).
pub(crate) fn store_failed(lookup: &'static str) -> impl FnOnce(store::Error) -> Reason {
    move |e| {
        tracing::error!(error = %e, lookup, "store read failed");
        match e {
            store::Error::Db(_)
            | store::Error::Io(_)
            | store::Error::Reopening
            | store::Error::WriterGone
            | store::Error::AlreadyOpen
            | store::Error::NoDatabase(_) => Reason::StorageUnavailable,
            // A read that answers a caller's mistake is a bug here too.
            store::Error::Corrupt(_)
            | store::Error::Internal(_)
            | store::Error::NotFound(_)
            | store::Error::Conflict(_)
            | store::Error::Refused(_) => Reason::Internal,
        }
    }
}

/// The one place a request becomes a [`Submission`]: the key's app, tenant and key id (0 for
/// a signed, keyless request), its encoded events, and its raw body kept under the audit key
/// (written as `format`, credentials taken out). Hands it to the writer and waits for its
/// commit.
pub(crate) async fn submit(
    ctx: &Context,
    key: &KeyInfo,
    received_at_ms: u64,
    events: Vec<Pending>,
    (audit_key, body): (String, bytes::Bytes),
    format: AuditFormat,
) -> Result<Vec<Outcome>, Reason> {
    let bytes = body.len();
    let mut sub = Submission {
        app_id: key.app_id,
        tenant_id: key.tenant_id,
        key_id: key.key_id,
        received_at_ms,
        events,
        audit: Some((audit_key, body)),
    };
    redact::submission(ctx, &mut sub, format);
    let generation = ctx
        .writer
        .stats()
        .config_generation
        .load(std::sync::atomic::Ordering::SeqCst);
    let policy = ctx.store_less.of(&ctx.store, generation, key.app_id);
    crate::privacy::store_less(policy, &mut sub);
    ctx.writer.submit(sub, bytes).await.map_err(|e| match e {
        SubmitError::Overloaded => Reason::Overloaded,
        SubmitError::ShuttingDown => Reason::ShuttingDown,
        SubmitError::CommitFailed => Reason::StorageUnavailable,
    })
}

/// Where a request's raw body is kept: `<prefix>/<UTC date>/<name>.<ext>`, the name being the
/// event id of a single event or a time-ordered id of a batch.
pub fn audit_key(prefix: &str, received_at_ms: u64, name: &str, ext: &str) -> String {
    format!(
        "{prefix}/{}/{name}.{ext}",
        Date::from_ms(received_at_ms as i64).iso()
    )
}

/// The answer of the router to a request on dialect `D`'s paths that no handler takes (an
/// unknown path under its prefix, another method), with the unkeyed rate limit headers
/// when `D`'s answers carry them.
pub fn unrouted<D: Dialect>(ctx: &Context, reason: Reason) -> Reply {
    let mut reply = refusal::<D>(reason, now_ms());
    if D::RATE_LIMITED {
        let verdict = RateLimiter::unkeyed(ctx.config.default_rate_limit, now_ms());
        reply.headers.extend(verdict.headers());
    }
    reply
}

/// Counts a refused request (app `-` when no key named one) and answers it: see
/// [`refusal`].
pub(crate) fn refused<D: Dialect>(ctx: &Context, app: Option<&str>, reason: Reason) -> Reply {
    count_rejected(ctx, app, D::SOURCE, reason, 1);
    refusal::<D>(reason, now_ms())
}

/// The one mapping of an ingest refusal to HTTP: the dialect's status (the default
/// [`status_of`](crate::http::reply::status_of) unless its table says otherwise) and its
/// error body, with `Retry-After` as [`with_retry`] says.
pub fn refusal<D: Dialect>(reason: Reason, now: u64) -> Reply {
    with_retry(D::error(reason, D::status(reason)), reason, now)
}

/// `Retry-After` until the month turns for `cap_exceeded`, a short one for transient
/// refusals (queue full, storage down, shutting down).
fn with_retry(reply: Reply, reason: Reason, now: u64) -> Reply {
    let reply = reply.with_default_retry(reason);
    if reason == Reason::CapExceeded {
        let secs = (next_month_start_ms(now) - now).div_ceil(1000);
        reply.retry_after(secs)
    } else {
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::{Adjust, AppsFlyer, Datafly, GameRebellion};
    use crate::event::Field;
    use crate::http::reply::{RETRY_SOON_SECS, status_of};

    /// `Retry-After` follows one rule whatever the dialect.
    fn retries_alike<D: Dialect>() {
        let now = 1_700_000_000_000;
        let month = (next_month_start_ms(now) - now).div_ceil(1000);
        assert_eq!(
            refusal::<D>(Reason::CapExceeded, now).retry_after,
            Some(month)
        );
        assert_eq!(
            refusal::<D>(Reason::Overloaded, now).retry_after,
            Some(RETRY_SOON_SECS)
        );
        assert_eq!(refusal::<D>(Reason::BadJson, now).retry_after, None);
        assert_eq!(
            refusal::<D>(Reason::BadJson, now).status,
            status_of(Reason::BadJson)
        );
    }

    #[test]
    fn a_refusal_takes_the_dialects_status_and_body() {
        retries_alike::<Native>();
        retries_alike::<GameRebellion>();
        retries_alike::<Adjust>();
        retries_alike::<AppsFlyer>();
        retries_alike::<Datafly>();
        // Adjust's one exception to the default status.
        let missing_device = Reason::Required(Field::DeviceId);
        assert_eq!(
            refusal::<Adjust>(missing_device, 0).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            refusal::<Native>(missing_device, 0).status,
            StatusCode::BAD_REQUEST
        );
        let tag = Reason::BadJson.tag();
        let body = |r: Reply| String::from_utf8(r.body.to_vec()).unwrap();
        assert_eq!(
            body(refusal::<Datafly>(Reason::BadJson, 0)),
            format!(r#"{{"success":false,"error":"{tag}"}}"#)
        );
        assert_eq!(
            body(refusal::<AppsFlyer>(Reason::BadJson, 0)),
            format!("Bad request: {tag}")
        );
    }
}
