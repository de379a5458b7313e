//! The Adjust endpoint (`GET /event`, `POST /event`), top to bottom:
//!
//! parameters (query string, then a form body within the limit) → `s2s=1`, `app_token`,
//! `event_token` present → the app of the `app_token` (404) → `Authorization: Bearer` key of
//! that app (401; may be absent if the app is configured with `--adjust-require-token false`,
//! the event is then attributed to key id 0) → `event_token` → event name of that app (400) → the rest of the event
//! (device, timestamp, params, revenue, ...) → validate → key's allowed events (403) → writer
//! (dedupe, ordering rule per device and event token, quota, append, an iOS 14+ request's
//! conversion value merged into the device's; one fsync) → `OK`, or for an iOS 14+ request
//! (`skadn_registered_at`) of an app with conversion value rules, the device's value as
//! JSON ([`crate::skan`]).

use super::redact::AuditFormat;
use super::{audit_key, checked, count_outcomes, lookup_key, refused, store_failed, submit};
use crate::clock::now_ms;
use crate::context::Context;
use crate::dialect::adjust::Params;
use crate::dialect::{Adjust, Dialect};
use crate::event::Reason;
use crate::http::reply::Reply;
use crate::store::tables::{ordering_key, skan_key};
use crate::store::writer::{Guard, Outcome, Pending, SkanUpdate};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};

const SOURCE: &str = Adjust::SOURCE;

/// `GET /event`, `POST /event`.
pub async fn event(ctx: &Context, req: Request<Incoming>) -> Reply {
    let mut app = None;
    match event_inner(ctx, req, &mut app).await {
        Ok(reply) => reply,
        Err(reason) => refused::<Adjust>(ctx, app.as_deref(), reason),
    }
}

async fn event_inner(
    ctx: &Context,
    req: Request<Incoming>,
    app: &mut Option<String>,
) -> Result<Reply, Reason> {
    let has_authorization = req.headers().contains_key(AUTHORIZATION);
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        })
        .filter(|t| !t.is_empty());
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let mut raw = req.uri().query().unwrap_or_default().as_bytes().to_vec();
    if req.method() == Method::POST {
        let body = ctx.read_body(req, ctx.config.limits.single_body).await?;
        if !body.is_empty() {
            if !is_form {
                return Err(Reason::UnsupportedContentType);
            }
            if !raw.is_empty() {
                raw.push(b'&');
            }
            raw.extend_from_slice(&body);
        }
    }
    let received_at_ms = now_ms();
    let params = Params::parse(&raw)?;

    let (app_id, app_record) = ctx
        .store
        .app_where(|a| a.adjust_app_token.as_deref() == Some(params.app_token.as_str()))
        .map_err(store_failed("app"))?
        .ok_or(Reason::UnknownAppToken)?;
    *app = Some(app_record.name.clone());
    // A key that is given must be right even where none is required.
    let key = match bearer {
        Some(token) => lookup_key(ctx, &token)?,
        None if app_record.adjust_token_optional && !has_authorization => ctx
            .store
            .keyless(app_id)
            .map_err(store_failed("app"))?
            .ok_or(Reason::UnknownAppToken)?,
        None => return Err(Reason::MissingBearerToken),
    };
    if key.app_id != app_id {
        return Err(Reason::KeyNotForApp);
    }
    let event_name = app_record
        .adjust_events
        .get(&params.event_token)
        .ok_or(Reason::Invalid(crate::event::Field::EventToken))?;

    let decoded = params.into_event(event_name, received_at_ms)?;
    // iOS 14+: the conversion value this event earns under the app's rules, within the
    // window after the app registered for SKAdNetwork.
    let skan_key = match (&app_record.adjust_skan, decoded.skadn_registered_at) {
        (Some(_), Some(_)) => Some(skan_key(app_id, &decoded.device)),
        _ => None,
    };
    let earned = match (&app_record.adjust_skan, decoded.skadn_registered_at) {
        (Some(rules), Some(registered)) if rules.in_window(registered, received_at_ms as i64) => {
            rules.value_of(&decoded.draft.event_name, decoded.draft.revenue)
        }
        _ => None,
    };
    let event = checked(&key, decoded.draft)?;
    let ts_ms = event.get().event_ts_ms;
    let audit_key = audit_key("adjust", received_at_ms, event.event_id(), "txt");
    let mut p = Pending::from_valid(&key, SOURCE, received_at_ms, event, &audit_key);
    p.set_guard(Some(Guard::NotBefore {
        key: ordering_key(app_id, &decoded.event_token, &decoded.device),
        ts_ms,
        skan: skan_key
            .clone()
            .zip(earned)
            .map(|(key, value)| SkanUpdate { key, value }),
    }));
    let outcome = submit(
        ctx,
        &key,
        received_at_ms,
        vec![p],
        (audit_key, raw.into()),
        AuditFormat::Form,
    )
    .await?[0];
    count_outcomes(ctx, &key.app, SOURCE, &[outcome]);
    match outcome {
        // An exact retry of an accepted request is answered like the original.
        Outcome::Accepted { .. } | Outcome::Duplicate { .. } => skan_answer(ctx, skan_key),
        Outcome::OverQuota => Err(Reason::CapExceeded),
        Outcome::OutOfOrder => Err(Reason::EventOutOfOrder),
    }
}

/// `OK`, or for an iOS 14+ request of an app with conversion value rules whose device has a
/// value, the value as Adjust's SDK reads it (read after the commit: it includes this event).
fn skan_answer(ctx: &Context, skan_key: Option<Vec<u8>>) -> Result<Reply, Reason> {
    let Some(key) = skan_key else {
        return Ok(crate::dialect::adjust::ok());
    };
    let value = ctx
        .store
        .skan_value(&key)
        .map_err(store_failed("conversion value"))?;
    Ok(match value {
        Some(v) => Reply::json(StatusCode::OK, &crate::skan::answer(v)),
        None => crate::dialect::adjust::ok(),
    })
}
