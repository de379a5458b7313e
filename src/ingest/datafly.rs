//! The Datafly (Segment-style, signed) pipeline: `POST /v1/events`.
//!
//! body (limit) → headers (`X-Signature`, `X-Timestamp`) → HMAC-SHA256 over
//! `X-Timestamp + "." + body` against every active secret (401 when none matches) →
//! timestamp within ±5 minutes (403) → decode → event id (`messageId`, else derived from the
//! secret's id, `X-Timestamp` and the body) → validate → writer (dedupe on that id,
//! quota, append, one fsync; identity links follow from the log) → `200 {"success": true}`.
//!
//! The signature is checked before the time window, so only a holder of a valid secret
//! learns that a timestamp was stale.

use super::redact::AuditFormat;
use super::{audit_key, checked, count_outcomes, refused, store_failed, submit};
use crate::auth::secrets::{WINDOW_MS, parse_signature};
use crate::clock::now_ms;
use crate::context::Context;
use crate::dialect::datafly;
use crate::dialect::{Datafly, Dialect};
use crate::event::Reason;
use crate::http::reply::Reply;
use crate::store::writer::{Outcome, Pending};
use hyper::Request;
use hyper::body::Incoming;
use serde_json::Value;

const SOURCE: &str = Datafly::SOURCE;

/// `POST /v1/events`.
pub async fn handle(ctx: &Context, req: Request<Incoming>) -> Reply {
    let mut app = None;
    match inner(ctx, req, &mut app).await {
        Ok(reply) => reply,
        Err(reason) => refused::<Datafly>(ctx, app.as_deref(), reason),
    }
}

async fn inner(
    ctx: &Context,
    req: Request<Incoming>,
    app: &mut Option<String>,
) -> Result<Reply, Reason> {
    let headers = req.headers();
    let signature = headers
        .get("x-signature")
        .map(|v| v.to_str().ok().and_then(parse_signature));
    let timestamp = headers
        .get("x-timestamp")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()));
    // The body is read (within its limit) even for a request refused for its headers, so
    // that the connection stays usable for the client's next request.
    let body = ctx.read_body(req, ctx.config.limits.single_body).await?;
    let mac = signature
        .ok_or(Reason::SignatureRequired)?
        .ok_or(Reason::SignatureInvalid)?;
    let timestamp = timestamp.ok_or(Reason::TimestampRequired)?;
    let received_at_ms = now_ms();
    let signer = match ctx
        .store
        .verify_signature(&timestamp, &body, &mac, received_at_ms)
    {
        Ok(Some(signer)) => signer,
        Ok(None) => return Err(Reason::SignatureInvalid),
        Err(e) => return Err(store_failed("secret")(e)),
    };
    *app = Some(signer.app.clone());
    let sent_ms: u64 = timestamp.parse().map_err(|_| Reason::TimestampRequired)?;
    if sent_ms.abs_diff(received_at_ms) > WINDOW_MS {
        return Err(Reason::TimestampOutsideWindow);
    }
    let mut draft = datafly::decode(&body, received_at_ms)?;
    if draft.event_id.is_none() {
        draft.event_id = Some(datafly::derived_id(signer.secret_id, &timestamp, 0, &body));
    }
    draft
        .context
        .insert("secret_id".into(), Value::from(signer.secret_id));
    // Signed requests carry no key: key id 0, every event name allowed.
    let key = match ctx.store.keyless(signer.app_id) {
        Ok(Some(key)) => key,
        Ok(None) => return Err(Reason::SignatureInvalid),
        Err(e) => return Err(store_failed("app")(e)),
    };
    let event = checked(&key, draft)?;
    let audit_key = audit_key("datafly", received_at_ms, event.event_id(), "json");
    let outcome = submit(
        ctx,
        &key,
        received_at_ms,
        vec![Pending::from_valid(
            &key,
            SOURCE,
            received_at_ms,
            event,
            &audit_key,
        )],
        (audit_key, body.clone()),
        AuditFormat::Json,
    )
    .await?[0];
    count_outcomes(ctx, &key.app, SOURCE, &[outcome]);
    match outcome {
        // A retried message (same messageId, or the same signed request without one) is
        // stored once and answered alike.
        Outcome::Accepted { .. } | Outcome::Duplicate { .. } => Ok(datafly::ok()),
        Outcome::OverQuota => Err(Reason::CapExceeded),
        // Only Adjust events carry an ordering guard; none is set here.
        Outcome::OutOfOrder => Err(Reason::EventOutOfOrder),
    }
}
