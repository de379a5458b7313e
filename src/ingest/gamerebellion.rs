//! The GameRebellion endpoints, top to bottom:
//!
//! `X-API-Key` → key (401 missing/unknown, 403 revoked) → the key's per-minute window (429) →
//! body (limit) → dialect decode → validate → key's allowed events (403) → [session: the
//! session named, or the latest open one of the same identifiers (404 `no_open_session`),
//! and its start time] → writer (dedupe, quota, append, session tables; one fsync) → reply.
//! Every answer carries `X-RateLimit-Limit/Remaining/Reset`.

use super::redact::AuditFormat;
use super::{checked, count_outcomes, count_rejected, refusal, store_failed, submit, submit_batch};
use crate::clock::now_ms;
use crate::context::Context;
use crate::dialect::gamerebellion::{self as gr, SessionKind};
use crate::dialect::{Dialect, GameRebellion};
use crate::event::{Field, MAX_ID, Reason, random_id};
use crate::http::reply::Reply;
use crate::ratelimit::{RateLimiter, Verdict};
use crate::store::read::{KeyCheck, KeyInfo};
use crate::store::tables::session_key;
use crate::store::writer::{Guard, Outcome, Pending};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

const SOURCE: &str = GameRebellion::SOURCE;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/v1/event`
    Event,
    /// `POST /api/v1/events`
    Batch,
    /// `POST /api/v1/sessions/{start,stop,end}`
    Session(SessionKind),
}

/// Serves one GameRebellion request.
pub async fn handle(ctx: &Context, req: Request<Incoming>, endpoint: Endpoint) -> Reply {
    let now = now_ms();
    let key = match api_key(ctx, req.headers()) {
        Ok(key) => key,
        Err(reason) => {
            count_rejected(ctx, None, SOURCE, reason, 1);
            let verdict = RateLimiter::unkeyed(ctx.config.default_rate_limit, now);
            return with_rate_headers(refusal::<GameRebellion>(reason, now), &verdict);
        }
    };
    let limit = key.rate_limit.unwrap_or(ctx.config.default_rate_limit);
    let verdict = ctx.rate_limiter.hit(key.key_id, limit, now);
    if !verdict.allowed {
        count_rejected(ctx, Some(&key.app), SOURCE, Reason::RateLimited, 1);
        let reply = refusal::<GameRebellion>(Reason::RateLimited, now)
            .retry_after(verdict.retry_after(now));
        return with_rate_headers(reply, &verdict);
    }
    let result = match endpoint {
        Endpoint::Event => single(ctx, req, &key).await,
        Endpoint::Batch => batch(ctx, req, &key).await,
        Endpoint::Session(kind) => session(ctx, req, &key, kind).await,
    };
    let reply = result.unwrap_or_else(|reason| {
        count_rejected(ctx, Some(&key.app), SOURCE, reason, 1);
        refusal::<GameRebellion>(reason, now_ms())
    });
    with_rate_headers(reply, &verdict)
}

/// A refusal before any key was looked at (wrong method), with the rate limit headers every
/// GameRebellion answer carries.
pub fn refuse(ctx: &Context, reason: Reason) -> Reply {
    let verdict = RateLimiter::unkeyed(ctx.config.default_rate_limit, now_ms());
    with_rate_headers(refusal::<GameRebellion>(reason, now_ms()), &verdict)
}

/// The key named by `X-API-Key`; a revoked key is told apart (403) from an unknown one (401).
fn api_key(ctx: &Context, headers: &HeaderMap) -> Result<KeyInfo, Reason> {
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(Reason::MissingApiKey)?;
    match ctx.store.check_key(presented) {
        Ok(KeyCheck::Valid(key)) => Ok(key),
        Ok(KeyCheck::Revoked) => Err(Reason::RevokedApiKey),
        Ok(KeyCheck::Unknown) => Err(Reason::UnknownApiKey),
        Err(e) => Err(store_failed("key")(e)),
    }
}

async fn single(ctx: &Context, req: Request<Incoming>, key: &KeyInfo) -> Result<Reply, Reason> {
    let body = ctx.read_body(req, ctx.config.limits.single_body).await?;
    let received_at_ms = now_ms();
    let event = checked(key, gr::decode_single(&body, received_at_ms)?)?;
    let event_id = event.event_id().to_owned();
    let audit_key = audit_key(received_at_ms, &event_id);
    let outcome = submit(
        ctx,
        key,
        received_at_ms,
        vec![Pending::from_valid(
            key,
            SOURCE,
            received_at_ms,
            event,
            &audit_key,
        )],
        (audit_key.clone(), body.clone()),
        AuditFormat::Json,
    )
    .await?[0];
    count_outcomes(ctx, &key.app, SOURCE, &[outcome]);
    single_reply(outcome, json!({ "event_id": event_id }), &audit_key)
}

/// The answer to a request of one event: `{"accepted": 1, ..., "audit_key"}` or, for a
/// duplicate, `{"accepted": 0, "duplicate": true, ...}`; `fields` go in both.
fn single_reply(outcome: Outcome, mut fields: Value, audit_key: &str) -> Result<Reply, Reason> {
    match outcome {
        Outcome::Accepted { .. } => {
            fields["accepted"] = json!(1);
            fields["audit_key"] = json!(audit_key);
        }
        Outcome::Duplicate { .. } => {
            fields["accepted"] = json!(0);
            fields["duplicate"] = json!(true);
        }
        Outcome::OverQuota => return Err(Reason::CapExceeded),
        Outcome::OutOfOrder => return Err(Reason::EventOutOfOrder),
    }
    Ok(Reply::json(StatusCode::OK, &fields))
}

async fn batch(ctx: &Context, req: Request<Incoming>, key: &KeyInfo) -> Result<Reply, Reason> {
    let body = ctx.read_body(req, ctx.config.limits.bulk_body).await?;
    let received_at_ms = now_ms();
    let items = gr::decode_batch(&body, received_at_ms)?;
    let audit_key = super::audit_key(
        "gr/batch",
        received_at_ms,
        &crate::event::time_ordered_id(),
        "json",
    );
    let items = items.into_iter().map(|i| (i.event_id, i.draft));
    let done = submit_batch(ctx, key, SOURCE, received_at_ms, items, audit_key, &body).await?;
    Ok(done.reply::<GameRebellion>(received_at_ms))
}

async fn session(
    ctx: &Context,
    req: Request<Incoming>,
    key: &KeyInfo,
    kind: SessionKind,
) -> Result<Reply, Reason> {
    let body = ctx.read_body(req, ctx.config.limits.single_body).await?;
    let received_at_ms = now_ms();
    let session = gr::decode_session(kind, &body, received_at_ms)?;
    let identity = session.identity();
    let gr::Session {
        session_id,
        mut draft,
    } = session;
    if session_id
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_ID)
    {
        return Err(Reason::TooLong(Field::SessionId));
    }
    // A stop or end after an acknowledged start finds the start committed: by the id it
    // names, or else as the latest open session started with the same identifiers.
    let (session_id, started) = match (kind, session_id) {
        (SessionKind::Start, id) => (id.unwrap_or_else(random_id), None),
        (SessionKind::Stop | SessionKind::End, Some(id)) => {
            let started = ctx
                .store
                .session_start(key.app_id, &id)
                .map_err(store_failed("session"))?;
            (id, started)
        }
        (SessionKind::Stop | SessionKind::End, None) => {
            let identity = identity.ok_or(Reason::Required(Field::SessionId))?;
            let (id, start) = ctx
                .store
                .latest_open_session(key.app_id, &identity)
                .map_err(store_failed("session"))?
                .ok_or(Reason::NoOpenSession)?;
            (id, Some(start))
        }
    };
    let duration_ms = started.map(|start| (received_at_ms as i64 - start).max(0));
    gr::mark_session(&mut draft, &session_id, duration_ms);
    let event = checked(key, draft)?;
    let event_id = event.event_id().to_owned();
    let audit_key = audit_key(received_at_ms, &event_id);
    let mut p = Pending::from_valid(key, SOURCE, received_at_ms, event, &audit_key);
    let skey = session_key(key.app_id, &session_id);
    p.set_guard(match kind {
        SessionKind::Start => Some(Guard::SessionStart {
            key: skey,
            ts_ms: received_at_ms as i64,
            identity,
        }),
        SessionKind::Stop => None,
        SessionKind::End => Some(Guard::SessionEnd { key: skey }),
    });
    let outcome = submit(
        ctx,
        key,
        received_at_ms,
        vec![p],
        (audit_key.clone(), body.clone()),
        AuditFormat::Json,
    )
    .await?[0];
    count_outcomes(ctx, &key.app, SOURCE, &[outcome]);
    let mut fields = json!({ "event_id": event_id, "session_id": session_id });
    if let Some(d) = duration_ms {
        fields["duration_ms"] = json!(d);
    }
    single_reply(outcome, fields, &audit_key)
}

fn audit_key(received_at_ms: u64, event_id: &str) -> String {
    super::audit_key("gr", received_at_ms, event_id, "json")
}

fn with_rate_headers(mut reply: Reply, verdict: &Verdict) -> Reply {
    reply.headers.extend(verdict.headers());
    reply
}
