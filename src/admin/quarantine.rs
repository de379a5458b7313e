//! Admin API routes of the quarantine (`crate::quarantine`), next to `api`:
//!
//! - `GET /admin/api/quarantine/{app}?reason=R&limit=N` → the app's held events by reason
//!   and those of `reason` (all without it), oldest first
//! - `POST /admin/api/quarantine/{app}/replay {"reason"?, "ids"?: [event id]}` → the
//!   result of each replayed event
//! - `POST /admin/api/quarantine/{app}/discard {"reason"?, "ids"?}` → `{"discarded": n}`

use super::session::{AdminSession, WriteSession};
use super::{Env, Error, param, write};
use crate::http::reply::Reply;
use crate::store::quarantine::Selection;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

/// Which held events a replay or discard takes: those of `reason`, of `ids`, or both; at
/// least one must be given (a whole app is `"reason"` per reason, on purpose).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Select {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    ids: Vec<String>,
}

impl Select {
    fn selection(self) -> Result<Selection, Error> {
        if self.reason.is_none() && self.ids.is_empty() {
            return Err(Error::BadRequest("give a reason or ids".into()));
        }
        Ok(Selection {
            reason: self.reason,
            ids: self.ids,
        })
    }
}

pub fn list(state: &Env<'_>, _s: &AdminSession, app: &str, query: &str) -> Result<Reply, Error> {
    let sel = Selection {
        reason: param(query, "reason"),
        ids: Vec::new(),
    };
    let limit = match param(query, "limit") {
        Some(n) => n
            .parse()
            .map_err(|_| Error::BadRequest(format!("limit {n:?}: not a number")))?,
        None => 200,
    };
    let doc = crate::quarantine::list(&state.store, app, &sel, limit)?;
    Ok(Reply::json(StatusCode::OK, &doc))
}

pub async fn replay(
    state: &Env<'_>,
    _w: &WriteSession,
    app: &str,
    b: Select,
) -> Result<Reply, Error> {
    let sel = b.selection()?;
    let results = crate::quarantine::replay(state.ctx, app, &sel).await?;
    Ok(Reply::json(
        StatusCode::OK,
        &crate::quarantine::replay_json(&results),
    ))
}

pub async fn discard(
    state: &Env<'_>,
    _w: &WriteSession,
    app: &str,
    b: Select,
) -> Result<Reply, Error> {
    let sel = b.selection()?;
    let (app_id, ids) = crate::quarantine::discard_ids(&state.store, app, &sel)?;
    let n = write(state, move |txn| {
        crate::store::quarantine::remove(txn, app_id, &ids)
    })
    .await?;
    tracing::info!(app, discarded = n, "admin: quarantine discarded");
    Ok(Reply::json(StatusCode::OK, &json!({ "discarded": n })))
}
