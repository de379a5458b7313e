//! The AppsFlyer Web-S2S pipeline: `POST /v1/{bundleId}/event` and `POST /v1/{bundleId}/setcuid`.
//!
//! body (≤ 1 KiB, the vendor's limit) → bundle id → app (404 when none) → decode →
//! `webDevKey` authenticates as a key of that app → validate → key's allowed events →
//! writer (dedupe, quota, append, one fsync; identity links follow from the log) → `200 OK`.

use super::redact::AuditFormat;
use super::{audit_key, checked, count_outcomes, lookup_key, refused, store_failed, submit};
use crate::clock::now_ms;
use crate::context::Context;
use crate::dialect::appsflyer::{self, MAX_PAYLOAD, Method};
use crate::dialect::{AppsFlyer, Dialect};
use crate::event::Reason;
use crate::http::reply::Reply;
use crate::store::writer::{Outcome, Pending};
use hyper::body::Incoming;
use hyper::{Method as HttpMethod, Request};

const SOURCE: &str = AppsFlyer::SOURCE;

/// The bundle id and method of a `/v1/{bundleId}/{event|setcuid}` path.
pub fn parse_path(path: &str) -> Option<(&str, Method)> {
    let rest = path.strip_prefix("/v1/")?;
    let (bundle, method) = rest.split_once('/')?;
    if bundle.is_empty() || method.contains('/') {
        return None;
    }
    Some((bundle, Method::from_path(method)?))
}

/// Handles a request whose path [`parse_path`] accepted.
pub async fn handle(ctx: &Context, req: Request<Incoming>) -> Reply {
    let mut app = None;
    match inner(ctx, req, &mut app).await {
        Ok(reply) => reply,
        Err(reason) => refused::<AppsFlyer>(ctx, app.as_deref(), reason),
    }
}

async fn inner(
    ctx: &Context,
    req: Request<Incoming>,
    app: &mut Option<String>,
) -> Result<Reply, Reason> {
    if req.method() != HttpMethod::POST {
        return Err(Reason::MethodNotAllowed);
    }
    let path = req.uri().path().to_owned();
    let (bundle, method) = parse_path(&path).ok_or(Reason::NotFound)?;
    // Read first (it is at most 1 KiB), so that a refused request leaves the connection
    // usable for the client's next one.
    let body = ctx.read_body(req, MAX_PAYLOAD).await?;
    let (app_id, found) = match ctx
        .store
        .app_where(|a| a.appsflyer_bundle_id.as_deref() == Some(bundle))
    {
        Ok(Some(found)) => found,
        Ok(None) => return Err(Reason::UnknownBundleId),
        Err(e) => return Err(store_failed("app")(e)),
    };
    *app = Some(found.name);
    let received_at_ms = now_ms();
    let decoded = appsflyer::decode(method, &body, received_at_ms)?;
    let key = lookup_key(ctx, &decoded.web_dev_key)?;
    if key.app_id != app_id {
        return Err(Reason::KeyNotForApp);
    }
    let event = checked(&key, decoded.draft)?;
    let audit_key = audit_key("appsflyer", received_at_ms, event.event_id(), "json");
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
        // A repeated setcuid is a duplicate: the link exists, the answer is the same.
        Outcome::Accepted { .. } | Outcome::Duplicate { .. } => Ok(appsflyer::ok()),
        Outcome::OverQuota => Err(Reason::CapExceeded),
        // Only Adjust events carry an ordering guard; none is set here.
        Outcome::OutOfOrder => Err(Reason::EventOutOfOrder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/v1/com.studio.web/event"),
            Some(("com.studio.web", Method::Event))
        );
        assert_eq!(parse_path("/v1/b/setCuId"), Some(("b", Method::SetCuid)));
        assert_eq!(parse_path("/v1/events"), None);
        assert_eq!(parse_path("/v1//event"), None);
        assert_eq!(parse_path("/v1/b/event/x"), None);
        assert_eq!(parse_path("/v2/b/event"), None);
    }
}
