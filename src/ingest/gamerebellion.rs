//! GameRebellion's batch endpoint, `POST /api/v1/events` (its single event and session
//! endpoints go through [`super::ingest`]): `X-API-Key` → key (401 missing/unknown, 403
//! revoked) → the key's per-minute window (429) → body (limit) → decode → per event: validate
//! → key's allowed events → writer (dedupe, quota, append; one fsync) → per-event results.
//! Every answer carries `X-RateLimit-Limit/Remaining/Reset`.

use super::{count_rejected, refusal, store_failed, submit_batch};
use crate::clock::now_ms;
use crate::context::Context;
use crate::dialect::gamerebellion as gr;
use crate::dialect::{Dialect, GameRebellion};
use crate::event::Reason;
use crate::http::reply::Reply;
use crate::ratelimit::{RateLimiter, Verdict};
use crate::store::read::{KeyCheck, KeyInfo};
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::HeaderMap;

const SOURCE: &str = GameRebellion::SOURCE;

/// Serves `POST /api/v1/events`.
pub async fn handle_batch(ctx: &Context, req: Request<Incoming>) -> Reply {
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
    let reply = batch(ctx, req, &key).await.unwrap_or_else(|reason| {
        count_rejected(ctx, Some(&key.app), SOURCE, reason, 1);
        refusal::<GameRebellion>(reason, now_ms())
    });
    with_rate_headers(reply, &verdict)
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

fn with_rate_headers(mut reply: Reply, verdict: &Verdict) -> Reply {
    reply.headers.extend(verdict.headers());
    reply
}
