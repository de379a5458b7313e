//! Admin API routes of an app's rules (`crate::rules`, `store::bizkey`), next to `api`:
//!
//! - `GET /admin/api/apps/{app}/rules` → `{"app", "business_key", "drop": [{"id", "event"?,
//!   "source"?, "key_id"?, "dropped"}]}` (`dropped`: events the rule dropped in this process)
//! - `POST /admin/api/apps/{app}/business-key {"on": bool}` → the same
//! - `POST /admin/api/apps/{app}/drop-rules {"event"?, "source"?, "key_id"?}` → 201 `{"id"}`
//! - `POST /admin/api/apps/{app}/drop-rules/{id}/remove` → the rules

use super::session::{AdminSession, WriteSession};
use super::{Env, Error, write};
use crate::http::reply::Reply;
use crate::store::bizkey::{self, AppRules, NewDropRule};
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessKey {
    on: bool,
}

fn shown(state: &Env<'_>, app: &str, app_id: u32, r: &AppRules) -> Reply {
    let drop: Vec<_> = r
        .drop
        .iter()
        .map(|d| {
            let mut v = json!(d);
            v["dropped"] = json!(state.rules.dropped(app_id, d.id));
            v
        })
        .collect();
    Reply::json(
        StatusCode::OK,
        &json!({ "app": app, "business_key": r.business_key, "drop": drop }),
    )
}

fn read(state: &Env<'_>, app: &str) -> Result<Reply, Error> {
    let (id, rules) = bizkey::of_app(&state.store, app)?
        .ok_or_else(|| crate::store::Error::NotFound(format!("no app {app:?}")))?;
    Ok(shown(state, app, id, &rules))
}

pub fn get(state: &Env<'_>, _s: &AdminSession, app: &str) -> Result<Reply, Error> {
    read(state, app)
}

pub async fn business_key(
    state: &Env<'_>,
    _w: &WriteSession,
    app: String,
    b: BusinessKey,
) -> Result<Reply, Error> {
    let a = app.clone();
    write(state, move |txn| bizkey::set_business_key(txn, &a, b.on)).await?;
    tracing::info!(app = %app, on = b.on, "admin: business-key dedupe set");
    read(state, &app)
}

pub async fn add(
    state: &Env<'_>,
    _w: &WriteSession,
    app: String,
    rule: NewDropRule,
) -> Result<Reply, Error> {
    let a = app.clone();
    let id = write(state, move |txn| bizkey::add_drop_rule(txn, &a, rule)).await?;
    tracing::info!(app = %app, rule = id, "admin: drop rule added");
    Ok(Reply::json(StatusCode::CREATED, &json!({ "id": id })))
}

pub async fn remove(
    state: &Env<'_>,
    _w: &WriteSession,
    app: String,
    id: &str,
) -> Result<Reply, Error> {
    let id: u32 = id
        .parse()
        .map_err(|_| Error::BadRequest(format!("no drop rule {id:?}")))?;
    let a = app.clone();
    write(state, move |txn| bizkey::remove_drop_rule(txn, &a, id)).await?;
    tracing::info!(app = %app, rule = id, "admin: drop rule removed");
    read(state, &app)
}
