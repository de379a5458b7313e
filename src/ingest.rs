//! The ingest pipeline: the whole order of a request, top to bottom.
//!
//! headers → auth → body (limit) → dialect decode → validate → key's allowed events →
//! encode → group-commit writer (dedupe, quota, append, one fsync) → response.
//!
//! [`ingest`] is that order for every endpoint of every dialect, of one event or a batch, its
//! stages asked of the dialect's [`Ingest`] impl.

use crate::clock::{Date, next_month_start_ms, now_ms};
use crate::context::Context;
pub use crate::dialect::ResultReasons;
use crate::dialect::adjust::AdjustApp;
use crate::dialect::canon::write_str;
use crate::dialect::reflect;
use crate::dialect::{
    BatchItem, BodyLimit, Candidate, Credited, Dialect, Ingest, ItemGuard, Lookup, Native,
    OpenSession, Signer, Stored, Valid,
};
use crate::event::{Reason, random_id, time_ordered_id};
use crate::http::reply::Reply;
use crate::ratelimit::{RateLimiter, Verdict};
use crate::rules::{AppDrops, Hit};
use crate::stats::Counted;
use crate::store;
use crate::store::read::KeyCheck;
use crate::store::read::KeyInfo;
use crate::store::receipts::{Note, Noted};
use crate::store::tables::{ordering_key, session_key, skan_key};
use crate::store::writer::{Guard, Outcome, Pending, SkanUpdate, Submission, SubmitError};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use redact::AuditFormat;
use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;

#[cfg(test)]
mod native;
pub mod quarantine;
pub mod redact;

/// The one pipeline of a request that carries one event, for every dialect that implements
/// [`Ingest`], top to bottom. A refusal at any stage is counted (under the app, once a
/// lookup named one) and answered in the dialect's words (`refused`).
pub async fn ingest<D: Ingest>(ctx: &Context, mut req: Request<Incoming>) -> Reply {
    let mut app = None;
    let mut verdict = None;
    let dry = take_dry_run(&mut req);
    let mut seen = crate::watch::Seen::default();
    let result = ingest_inner::<D>(ctx, req, dry, &mut app, &mut verdict, &mut seen).await;
    if !dry {
        // watch: live tail and health (the batch form reports in `submit_prepared`)
        let refused = result.as_ref().err().copied();
        ctx.watch
            .single(app.as_deref(), D::SOURCE, now_ms(), seen, refused);
    }
    let mut reply = match result {
        Ok(reply) => reply,
        Err(reason) => {
            let reply = match dry {
                false => refused::<D>(ctx, app.as_deref(), reason),
                true => refusal::<D>(reason, now_ms()),
            };
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
    if dry {
        reply = marked_dry::<D>(reply);
    }
    reply
}

/// The header that asks for a dry run, and marks its answer.
pub const DRY_RUN_HEADER: &str = "x-inlet-dry-run";
/// The query parameter that asks for a dry run (for clients that cannot set headers).
pub const DRY_RUN_PARAM: &str = "inlet_dry_run";

/// Whether a request asks for a dry run: `X-Inlet-Dry-Run: 1` (or `true`), or
/// `inlet_dry_run=1` (or `true`) in the query string. The parameter is taken out of `uri`
/// whatever its value, so that no dialect sees it (Adjust's parameters make its event id).
pub fn take_dry_run<B>(req: &mut Request<B>) -> bool {
    let yes = |v: &str| v == "1" || v.eq_ignore_ascii_case("true");
    let header = req
        .headers()
        .get(DRY_RUN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| yes(v.trim()));
    let uri = req.uri();
    let Some(query) = uri.query() else {
        return header;
    };
    let (mut asked, mut named) = (false, false);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let ours = k == DRY_RUN_PARAM;
            named |= ours;
            asked |= ours && yes(v);
            !ours
        })
        .collect();
    if named {
        let rest = match kept.is_empty() {
            true => uri.path().to_owned(),
            false => format!("{}?{}", uri.path(), kept.join("&")),
        };
        let mut parts = uri.clone().into_parts();
        // Parts of a parsed URI parse again.
        parts.path_and_query = rest.parse().ok();
        if let Ok(stripped) = hyper::Uri::from_parts(parts) {
            *req.uri_mut() = stripped;
        }
    }
    header || asked
}

/// A dry run's answer: the `X-Inlet-Dry-Run: 1` header, and `"dry_run": true` first in a
/// JSON object body when the dialect's bodies are inlet's own ([`Dialect::DRY_RUN_FIELD`]).
fn marked_dry<D: Dialect>(mut reply: Reply) -> Reply {
    if D::DRY_RUN_FIELD && reply.body.first() == Some(&b'{') {
        let mut body = Vec::with_capacity(reply.body.len() + 16);
        body.extend_from_slice(br#"{"dry_run":true"#);
        if reply.body.get(1) != Some(&b'}') {
            body.push(b',');
        }
        body.extend_from_slice(&reply.body[1..]);
        reply.body = body.into();
    }
    reply.header(DRY_RUN_HEADER, "1".to_owned())
}

async fn ingest_inner<D: Ingest>(
    ctx: &Context,
    req: Request<Incoming>,
    dry: bool,
    app: &mut Option<String>,
    verdict: &mut Option<Verdict>,
    seen: &mut crate::watch::Seen,
) -> Result<Reply, Reason> {
    let head = D::head(req.method(), req.uri(), req.headers())?;
    // Enrichment: the request's own address, for apps that take it (`enrich::Enrich::apply`).
    let client = ctx.config.enrich.as_ref().and_then(|e| e.client_ip(&req));
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
    seen.key = Some(key.key_id); // watch
    if let Some(items) = D::decode_batch(&head, &payload, received_at_ms)? {
        return ingest_batch::<D>(ctx, &key, received_at_ms, items, &payload, dry, client).await;
    }
    let decoded = D::decode(&mut lookup, &head, auth, &payload, received_at_ms);
    // Quarantine: an event refused for a reason inlet's side can fix is kept.
    let keep = |reason, claimed: Option<&str>, then: Option<&D::Then>| {
        if !dry {
            let item = (&head, then, &payload[..]);
            quarantine::keep_one::<D>(ctx, &key, received_at_ms, reason, item, claimed);
        }
    };
    let decoded = decoded.inspect_err(|&reason| keep(reason, None, None))?;
    let claimed = decoded.draft.claimed_id().map(str::to_owned);
    let drops = drop_rules(ctx, &key);
    let prepared = prepare_one::<D>(&key, received_at_ms, decoded.draft, decoded.guard, &drops);
    let Prepared {
        audit_key,
        pending,
        dropped,
    } = prepared.inspect_err(|&reason| {
        keep(reason, claimed.as_deref(), Some(&decoded.then));
        if !dry && let Some(id) = claimed {
            note_rejected(ctx, &key, received_at_ms, [(id, reason)]);
        }
    })?;
    let event_id = pending.event_id().to_owned();
    // Drop rules (issue 21): answered, not stored (`crate::rules`).
    if let Some(hit) = dropped {
        if !dry {
            drops.count(hit);
            // receipts: the drop, under its rule
            ctx.writer.note(vec![Note::dropped(
                key.app_id,
                &event_id,
                received_at_ms,
                hit.rule,
            )]);
        }
        return answer_dropped::<D>(&mut lookup, decoded.then, &event_id, hit);
    }
    seen.event(&ctx.watch, &pending); // watch
    let kept = (audit_key.clone(), payload.clone());
    let outcome = submit(
        ctx,
        &key,
        received_at_ms,
        vec![pending],
        kept,
        D::AUDIT,
        dry,
        client,
    )
    .await?[0];
    seen.outcome = Some(outcome); // watch
    if !dry {
        count_outcomes(ctx, &key.app, D::SOURCE, &[outcome]);
    }
    let refused = |reason| {
        if !dry {
            note_rejected(ctx, &key, received_at_ms, [(event_id.clone(), reason)]);
        }
        keep(reason, Some(&event_id), Some(&decoded.then));
        Err(reason)
    };
    let duplicate_of = match outcome {
        Outcome::Accepted { .. } => None,
        Outcome::Duplicate { seq } => Some(seq),
        Outcome::OverQuota => return refused(Reason::CapExceeded),
        Outcome::OutOfOrder => return refused(Reason::EventOutOfOrder),
        Outcome::Suppressed => return refused(Reason::SubjectSuppressed),
    };
    let stored = Stored {
        event_id: &event_id,
        audit_key: &audit_key,
        duplicate_of,
    };
    D::ok(&mut lookup, decoded.then, &stored)
}

/// One event of dialect `D`, checked and encoded: where its payload is kept, and the
/// writer's form of it.
pub struct Prepared {
    pub audit_key: String,
    pub pending: Pending,
    /// The drop rule that matched it: not to be submitted.
    pub dropped: Option<Hit>,
}

/// The drop rules of the key's app, as of the current configuration generation.
fn drop_rules(ctx: &Context, key: &KeyInfo) -> Arc<AppDrops> {
    let generation = ctx
        .writer
        .stats()
        .config_generation
        .load(std::sync::atomic::Ordering::SeqCst);
    ctx.rules.of(&ctx.store, generation, key.app_id)
}

/// A single event a drop rule matched: inlet's own dialects say so
/// (`{"accepted": 0, "dropped": true, "event_id", "rule"}`); a vendor's endpoint answers
/// its normal success.
fn answer_dropped<D: Ingest>(
    lookup: &mut Lookups<'_>,
    then: D::Then,
    event_id: &str,
    hit: Hit,
) -> Result<Reply, Reason> {
    if D::DRY_RUN_FIELD {
        let mut body = br#"{"accepted":0,"dropped":true,"event_id":"#.to_vec();
        write_str(&mut body, event_id);
        let _ = write!(body, r#","rule":{}}}"#, hit.rule);
        return Ok(Reply::json_text(StatusCode::OK, body));
    }
    let stored = Stored {
        event_id,
        audit_key: "",
        duplicate_of: None,
    };
    D::ok(lookup, then, &stored)
}

/// The request side of one event once the key is known: validate → the key's allowed
/// events → encode, its payload named after its event id.
pub fn prepare_one<'a, D: Ingest>(
    key: &KeyInfo,
    received_at_ms: u64,
    event: D::Event<'a>,
    guard: Option<ItemGuard>,
    drops: &AppDrops,
) -> Result<Prepared, Reason> {
    let event = checked(key, event)?;
    let dropped = drops.matching(event.event_name(), D::SOURCE, key.key_id);
    let ts_ms = event.event_ts_ms();
    let audit_key = audit_key(
        D::AUDIT_PREFIX,
        received_at_ms,
        event.event_id(),
        D::AUDIT.ext(),
    );
    let mut pending = encode(key, D::SOURCE, received_at_ms, event, &audit_key);
    pending.set_guard(guard.map(|g| store_guard(g, ts_ms)));
    Ok(Prepared {
        audit_key,
        pending,
        dropped,
    })
}

/// The writer's form of a validated event, for either representation.
fn encode(
    key: &KeyInfo,
    source: &'static str,
    received_at_ms: u64,
    event: Valid<'_>,
    audit_key: &str,
) -> Pending {
    match event {
        Valid::Canonical(ev) => Pending::from_valid(key, source, received_at_ms, ev, audit_key),
        Valid::Native(ev) => Pending::from_native(key, source, received_at_ms, &ev, audit_key),
    }
}

/// The batch form of [`ingest`] once the request's events are decoded: per event, validate
/// → the key's allowed events → encode; the valid ones in one submission, the payload kept
/// under a time-ordered name; answered with the per-event results in request order.
async fn ingest_batch<'a, D: Ingest>(
    ctx: &Context,
    key: &KeyInfo,
    received_at_ms: u64,
    items: Vec<BatchItem<'a, D::Event<'a>>>,
    payload: &bytes::Bytes,
    dry: bool,
    client: Option<std::net::IpAddr>,
) -> Result<Reply, Reason> {
    let audit_key = audit_key(
        D::BATCH_AUDIT_PREFIX,
        received_at_ms,
        &time_ordered_id(),
        D::AUDIT.ext(),
    );
    let drops = drop_rules(ctx, key);
    let batch = prepare_batch(key, D::SOURCE, received_at_ms, items, &audit_key, &drops);
    if !dry {
        batch.count_dropped(&drops);
        if !drops.is_empty() {
            ctx.writer.note(batch.dropped_notes(key, received_at_ms)); // receipts
        }
    }
    let done = submit_prepared::<D>(
        ctx,
        key,
        received_at_ms,
        batch,
        audit_key,
        payload,
        (dry, client),
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
    ) -> Result<Option<OpenSession>, Reason> {
        let open = self.ctx.store.latest_open_session(app_id, identity);
        Ok(open.map_err(store_failed("session"))?.map(|o| OpenSession {
            session_id: o.session_id,
            started_ms: o.started_ms,
        }))
    }

    fn audit_key_of(&mut self, seq: u64) -> Option<String> {
        match self.ctx.store.event(seq) {
            Ok(Some(event)) => Some(event.audit_key),
            _ => None,
        }
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

/// The request side of `POST /s2s/event` once the key and body are known: the stages of
/// [`ingest`] between the credential and the writer (for the benchmark).
pub fn reflect_single_prepare(
    key: &KeyInfo,
    received_at_ms: u64,
    body: &[u8],
) -> Result<Prepared, Reason> {
    let none = AppDrops::default();
    prepare_one::<Native>(
        key,
        received_at_ms,
        reflect::decode_single(body)?,
        None,
        &none,
    )
}

/// The request side of `POST /s2s/events/bulk` once the key and body are known: the stages
/// of [`ingest`]'s batch form between the credential and the writer (for the benchmark).
pub fn reflect_bulk_prepare(
    key: &KeyInfo,
    received_at_ms: u64,
    body: &[u8],
    audit_key: &str,
) -> Result<PreparedBatch, Reason> {
    let items = reflect::decode_bulk(body)?;
    Ok(prepare_batch(
        key,
        Native::SOURCE,
        received_at_ms,
        items,
        audit_key,
        &AppDrops::default(),
    ))
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
                let reply = Reply::json_text(D::status(reason), self.body);
                with_retry(reply, reason, received_at_ms)
            }
            None => Reply::json_text(StatusCode::OK, self.body),
        }
    }
}

/// Per-event status of a batch, in request order.
enum ItemSlot {
    Rejected(Option<String>, Reason),
    /// Index into the submission's events.
    Queued(String, usize),
    /// A drop rule matched it: answered `dropped`, not submitted.
    Dropped(String, Hit),
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

    /// Counts the events drop rules matched, under each rule.
    fn count_dropped(&self, drops: &AppDrops) {
        for slot in &self.slots {
            if let ItemSlot::Dropped(_, hit) = slot {
                drops.count(*hit);
            }
        }
    }

    /// Receipts: a note of each event a drop rule matched, under its rule.
    fn dropped_notes(&self, key: &KeyInfo, at_ms: u64) -> Vec<Note> {
        let dropped = self.slots.iter().filter_map(|slot| match slot {
            ItemSlot::Dropped(id, hit) => Some(Note::dropped(key.app_id, id, at_ms, hit.rule)),
            _ => None,
        });
        dropped.collect()
    }
}

/// Validates each decoded event against the key and encodes the valid ones.
fn prepare_batch<'a, E: Candidate<'a>>(
    key: &KeyInfo,
    source: &'static str,
    received_at_ms: u64,
    items: Vec<BatchItem<'a, E>>,
    audit_key: &str,
    drops: &AppDrops,
) -> PreparedBatch {
    let mut slots = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    for BatchItem { event_id, draft } in items {
        match draft.and_then(|d| checked(key, d)) {
            Ok(ev)
                if !drops.is_empty()
                    && let Some(hit) = drops.matching(ev.event_name(), source, key.key_id) =>
            {
                slots.push(ItemSlot::Dropped(ev.event_id().to_owned(), hit));
            }
            Ok(ev) => {
                let pending = encode(key, source, received_at_ms, ev, audit_key);
                slots.push(ItemSlot::Queued(
                    pending.event_id().to_owned(),
                    events.len(),
                ));
                events.push(pending);
            }
            Err(reason) => slots.push(ItemSlot::Rejected(event_id.map(Cow::into_owned), reason)),
        }
    }
    PreparedBatch { slots, events }
}

/// Submits the valid events of a prepared batch of dialect `D` in one submission (the raw
/// body stored under `audit_key`, written as `D::AUDIT`) and builds the per-event results in
/// request order.
async fn submit_prepared<D: Ingest>(
    ctx: &Context,
    key: &KeyInfo,
    received_at_ms: u64,
    batch: PreparedBatch,
    audit_key: String,
    body: &bytes::Bytes,
    (dry, client): (bool, Option<std::net::IpAddr>),
) -> Result<BatchDone, Reason> {
    let source = D::SOURCE;
    let PreparedBatch { slots, events } = batch;
    let named = crate::watch::names(&ctx.watch, &events); // watch
    let outcomes = if events.is_empty() {
        Vec::new()
    } else {
        submit(
            ctx,
            key,
            received_at_ms,
            events,
            (audit_key.clone(), body.clone()),
            D::AUDIT,
            dry,
            client,
        )
        .await?
    };
    if !dry {
        count_outcomes(ctx, &key.app, source, &outcomes);
        quarantine::keep_batch::<D>(ctx, key, received_at_ms, body, &slots, &outcomes);
    }
    let mut refused = Vec::new();
    let (mut watched, tailed) = (Vec::new(), ctx.watch.tail.watched()); // watch
    let done = BatchSlots(slots).answer(&outcomes, &audit_key, D::RESULT_REASONS, |id, reason| {
        if !dry {
            count_rejected(ctx, Some(&key.app), source, reason, 1);
            watched.push((id.filter(|_| tailed).map(str::to_owned), reason)); // watch
            if let Some(id) = id {
                refused.push((id.to_owned(), reason));
            }
        }
    });
    note_rejected(ctx, key, received_at_ms, refused);
    if !dry {
        // watch: live tail and health
        let at = received_at_ms;
        ctx.watch
            .batch(&key.app, key.key_id, source, at, &outcomes, named, watched);
    }
    Ok(done)
}

/// Each event's status of a prepared batch, in request order.
pub struct BatchSlots(Vec<ItemSlot>);

impl BatchSlots {
    /// The answer once the writer decided `outcomes` (one per queued event, in order):
    /// `{"accepted", "duplicates", "rejected", "results": [{"event_id", "status",
    /// "reason"?, "field"?}], "audit_key"?}` in request order, reasons named as `reasons`
    /// says. Written as text: a tree of a thousand small maps cost about as much CPU as
    /// decoding the events. `on_rejected` is called with the id (when it had one) and the
    /// reason of each rejected event.
    /// The request's own `error` (all rejected) stays the first reason's tag, as the
    /// endpoint's error table names it.
    pub fn answer(
        self,
        outcomes: &[Outcome],
        audit_key: &str,
        reasons: ResultReasons,
        mut on_rejected: impl FnMut(Option<&str>, Reason),
    ) -> BatchDone {
        let (mut accepted, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);
        let mut dropped = 0u64;
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
                ItemSlot::Dropped(id, hit) => {
                    dropped += 1;
                    write_str(&mut results, &id);
                    let _ = write!(results, r#","status":"dropped","rule":{}}}"#, hit.rule);
                    continue;
                }
                ItemSlot::Rejected(id, reason) => (id, reason),
            };
            on_rejected(event_id.as_deref(), reason);
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
            r#"{{"accepted":{accepted},"duplicates":{duplicates},"rejected":{rejected},"#
        );
        if dropped > 0 {
            let _ = write!(body, r#""dropped":{dropped},"#);
        }
        body.extend_from_slice(br#""results":["#);
        body.extend_from_slice(&results);
        body.push(b']');
        if accepted > 0 {
            body.extend_from_slice(br#","audit_key":"#);
            write_str(&mut body, audit_key);
        }
        body.push(b'}');
        BatchDone {
            body,
            all_rejected: first_reason.filter(|_| accepted == 0 && duplicates == 0 && dropped == 0),
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

/// Tells the receipts of the key's app that these events (id, reason) were refused.
fn note_rejected(
    ctx: &Context,
    key: &KeyInfo,
    at_ms: u64,
    refused: impl IntoIterator<Item = (String, Reason)>,
) {
    // An erased subject's events leave no trace, not even their ids in a receipt.
    let notes = refused
        .into_iter()
        .filter(|(_, reason)| *reason != Reason::SubjectSuppressed)
        .map(|(event_id, reason)| Note {
            app_id: key.app_id,
            event_id,
            at_ms,
            what: Noted::Rejected(reason.tag().into_owned()),
        });
    ctx.writer.note(notes.collect());
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
fn checked<'a>(key: &KeyInfo, event: impl Candidate<'a>) -> Result<Valid<'a>, Reason> {
    let ev = event.validate(random_id)?;
    allowed(key, ev.event_name())?;
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
            | store::Error::Fenced(_)
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
/// commit; a `dry` run only for the writer's judgement (nothing is stored). `client`: the
/// request's address, for enrichment.
#[allow(clippy::too_many_arguments)] // the request's facts, each used once
pub(crate) async fn submit(
    ctx: &Context,
    key: &KeyInfo,
    received_at_ms: u64,
    events: Vec<Pending>,
    (audit_key, body): (String, bytes::Bytes),
    format: AuditFormat,
    dry: bool,
    client: Option<std::net::IpAddr>,
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
    // Privacy first: enrichment reads the full address and user agent here, in memory,
    // before the app's IP policy below truncates or drops them; only its result is stored.
    if let Some(enrich) = &ctx.config.enrich {
        let dict = ctx.enrichments.as_deref();
        enrich.apply(&key.app, client, &mut sub.events, dict);
    }
    let generation = ctx
        .writer
        .stats()
        .config_generation
        .load(std::sync::atomic::Ordering::SeqCst);
    let policy = ctx.store_less.of(&ctx.store, generation, key.app_id);
    crate::privacy::store_less(policy, &mut sub);
    let outcomes = match (dry, &ctx.cluster) {
        // Cluster mode: decided (and appended) by the partition's owner, dry runs too.
        (dry, Some(cluster)) => cluster.submit(&ctx.writer, sub, bytes, dry).await,
        (false, None) => ctx.writer.submit(sub, bytes).await,
        (true, None) => ctx.writer.submit_dry(sub, bytes).await,
    };
    outcomes.map_err(|e| match e {
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
    fn a_dry_run_is_asked_by_header_or_parameter_and_the_parameter_is_taken_out() {
        let ask = |uri: &str, header: Option<&str>| {
            let mut req = Request::builder().uri(uri);
            if let Some(v) = header {
                req = req.header(DRY_RUN_HEADER, v);
            }
            let mut req = req.body(()).unwrap();
            (take_dry_run(&mut req), req.uri().to_string())
        };
        assert_eq!(ask("/s2s/event", Some("1")), (true, "/s2s/event".into()));
        assert_eq!(ask("/s2s/event", Some("true")), (true, "/s2s/event".into()));
        assert_eq!(ask("/s2s/event", Some("0")), (false, "/s2s/event".into()));
        assert_eq!(ask("/event?a=1", None), (false, "/event?a=1".into()));
        assert_eq!(
            ask("/event?a=1&inlet_dry_run=1&b=2", None),
            (true, "/event?a=1&b=2".into())
        );
        assert_eq!(ask("/event?inlet_dry_run=1", None), (true, "/event".into()));
        assert_eq!(
            ask("/event?inlet_dry_run=no&b=2", None),
            (false, "/event?b=2".into())
        );
        assert_eq!(
            ask("/event?inlet_dry_run_x=1", None),
            (false, "/event?inlet_dry_run_x=1".into())
        );
    }

    #[test]
    fn a_dry_runs_answer_is_marked() {
        let body = |r: &Reply| String::from_utf8(r.body.to_vec()).unwrap();
        let dry = |r: &Reply| r.headers.contains(&(DRY_RUN_HEADER, "1".to_owned()));
        let r = marked_dry::<Native>(Reply::json_text(StatusCode::OK, br#"{"a":1}"#.to_vec()));
        assert_eq!(
            (body(&r), dry(&r)),
            (r#"{"dry_run":true,"a":1}"#.into(), true)
        );
        let r = marked_dry::<Native>(Reply::json_text(StatusCode::OK, b"{}".to_vec()));
        assert_eq!(body(&r), r#"{"dry_run":true}"#);
        // A vendor's own body keeps its shape.
        let r = marked_dry::<Datafly>(Reply::json_text(StatusCode::OK, b"{}".to_vec()));
        assert_eq!((body(&r), dry(&r)), ("{}".into(), true));
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
