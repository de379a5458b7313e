//! The admin routes of `watch`: the live tail (`GET /admin/api/tail`, Server-Sent Events),
//! health per app and key, alert rules, incidents and deliveries.

use super::session::WriteSession;
use super::{Env, Error, param, secured, write};
use crate::clock::now_ms;
use crate::context::Context;
use crate::http::reply::Reply;
use crate::watch::alerts::{self, NewRule};
use crate::watch::tail::{Filter, Refused};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;

/// `GET /admin/api/tail?app=&key=&source=&event=&outcome=&reason=&event_id=&install_uuid=&user_id=`:
/// an event stream of what ingest decides, filtered. 429 when `max_tails` are open, 503 while shutting down.
pub async fn tail(
    ctx: &Context,
    admin: &super::AdminState,
    req: Request<Incoming>,
) -> hyper::Response<crate::http::Body> {
    let state = &Env { ctx, admin };
    let refused = |e: Error| {
        let setup_required = matches!(e, Error::Unauthorized)
            && matches!(state.store.has_admin_accounts(), Ok(false));
        crate::http::boxed(secured(e.reply(setup_required)).into_response())
    };
    let headers = req.headers().clone();
    let query = req.uri().query().unwrap_or_default().to_owned();
    // Read any (small) body first, as the other admin routes do, so that the connection
    // can be kept alive after a refusal.
    if let Err(e) = state.read_body(req, 64 << 10).await {
        return refused(e.into());
    }
    if let Err(e) = state
        .admin
        .sessions
        .authenticate(&state.store, &headers, now_ms())
    {
        return refused(e);
    }
    let filter = match filter(&query) {
        Ok(f) => f,
        Err(e) => return refused(e),
    };
    let body = match ctx.watch.tail.subscribe(filter) {
        Ok(body) => body,
        Err(Refused::Full { max }) => {
            let reply = Reply::json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({
                    "error": "too_many_tails",
                    "message": format!("{max} live tails are open already (max_tails); close one"),
                }),
            )
            .retry_after(5);
            return crate::http::boxed(secured(reply).into_response());
        }
        Err(Refused::Closed) => {
            let reply = Reply::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "error": "shutting_down" }),
            );
            return crate::http::boxed(secured(reply).into_response());
        }
    };
    let head = secured(Reply {
        status: StatusCode::OK,
        content_type: "text/event-stream",
        body: bytes::Bytes::new(),
        retry_after: None,
        headers: vec![("x-accel-buffering", "no".to_owned())],
    })
    .into_response();
    let (parts, _) = head.into_parts();
    hyper::Response::from_parts(parts, body)
}

/// The tail's filter from its query string.
fn filter(query: &str) -> Result<Filter, Error> {
    let key = match param(query, "key") {
        Some(k) => Some(
            k.parse::<u32>()
                .map_err(|_| Error::BadRequest(format!("key: {k:?} is not a key id")))?,
        ),
        None => None,
    };
    let outcome = param(query, "outcome");
    if let Some(o) = &outcome
        && !["accepted", "duplicate", "rejected"].contains(&o.as_str())
    {
        return Err(Error::BadRequest(format!(
            "outcome: {o:?} is not accepted, duplicate or rejected"
        )));
    }
    Ok(Filter {
        app: param(query, "app"),
        key,
        source: param(query, "source"),
        event: param(query, "event"),
        outcome,
        reason: param(query, "reason"),
        event_id: param(query, "event_id"),
        install_uuid: param(query, "install_uuid"),
        user_id: param(query, "user_id"),
    })
}

/// `GET /admin/api/health`: every app's and key's figures since the start.
pub fn health(state: &Env<'_>) -> Result<Reply, Error> {
    let now = now_ms();
    let keys: Vec<_> = state
        .watch
        .health
        .keys(now)
        .into_iter()
        .map(|(app, v)| json!({ "app": app, "key": v.name, "health": v }))
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        &json!({
            "now_ms": now,
            "since_ms": state.admin.started_ms,
            "apps": state.watch.health.apps(now),
            "keys": keys,
            "tail_subscribers": state.watch.tail.subscribers(),
        }),
    ))
}

/// `GET /admin/api/alerts`: rules (without secrets), open incidents, recent deliveries.
pub fn list(state: &Env<'_>) -> Result<Reply, Error> {
    let rules: Vec<_> = alerts::list(&state.store)?
        .iter()
        .map(alerts::public)
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        &json!({
            "rules": rules,
            "firing": state.watch.alerts.incidents(),
            "deliveries": state.watch.alerts.deliveries(),
            "interval_ms": state.config.alert_interval.as_millis() as u64,
        }),
    ))
}

/// `POST /admin/api/alerts`: a new rule; its webhook secret is in the answer, once.
pub async fn add(state: &Env<'_>, _w: &WriteSession, new: NewRule) -> Result<Reply, Error> {
    let now = now_ms();
    let (new, sealed) = alerts::prepare(&state.store, new)?;
    let secret = sealed.as_ref().map(|(s, _)| s.clone());
    let rule = write(state, move |txn| alerts::insert(txn, new, sealed, now)).await?;
    tracing::info!(rule = rule.id, app = %rule.app, "admin: alert rule added");
    let mut out = alerts::public(&rule);
    out["webhook_secret"] = json!(secret);
    Ok(Reply::json(StatusCode::CREATED, &out))
}

pub async fn remove(state: &Env<'_>, _w: &WriteSession, id: &str) -> Result<Reply, Error> {
    let id = rule_id(id)?;
    write(state, move |txn| alerts::remove(txn, id)).await?;
    tracing::info!(rule = id, "admin: alert rule removed");
    Ok(Reply::json(StatusCode::OK, &json!({ "removed": id })))
}

/// `POST /admin/api/alerts/{id}/test`: an `alert.test` message to the rule's webhook.
pub fn test(state: &Env<'_>, _w: &WriteSession, id: &str) -> Result<Reply, Error> {
    let id = rule_id(id)?;
    let queued = alerts::test(&state.store, &state.watch, id, now_ms())?;
    if !queued {
        return Err(Error::BadRequest(format!("alert rule {id} has no webhook")));
    }
    Ok(Reply::json(StatusCode::ACCEPTED, &json!({ "queued": id })))
}

fn rule_id(id: &str) -> Result<u32, Error> {
    id.parse()
        .map_err(|_| Error::BadRequest(format!("no alert rule {id:?}")))
}
