//! Admin API routes of erasures (`privacy`), next to `api`:
//!
//! - `POST /admin/api/erasures {"app", "id": "KIND=VALUE", "suppress": bool}` → 201, the
//!   receipt (`inlet erase`)
//! - `GET /admin/api/erasures` → `{"erasures": [row]}` (the ledger: no identifiers)
//! - `POST /admin/api/erasures/{id}/unsuppress` → `{"id", "lifted"}`

use super::session::{AdminSession, WriteSession};
use super::{Env, Error, write};
use crate::http::reply::Reply;
use crate::privacy::{self, Listed, Request, Via};
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewErasure {
    app: String,
    id: String,
    #[serde(default)]
    suppress: bool,
}

pub fn list(state: &Env<'_>, _s: &AdminSession) -> Result<Reply, Error> {
    let rows: Vec<Listed> = privacy::list(&state.store)?
        .iter()
        .map(Into::into)
        .collect();
    Ok(Reply::json(StatusCode::OK, &json!({ "erasures": rows })))
}

pub async fn erase(state: &Env<'_>, _w: &WriteSession, b: NewErasure) -> Result<Reply, Error> {
    let (kind, value) =
        b.id.split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or_else(|| Error::BadRequest(format!("id {:?}: expected KIND=VALUE", b.id)))?;
    let identity = state
        .indexer
        .as_ref()
        .map(|i| i.identity())
        .ok_or_else(|| {
            crate::store::Error::Internal("this server keeps no identity graph".into())
        })?;
    let req = Request {
        app: b.app.clone(),
        kind: kind.to_owned(),
        value: value.to_owned(),
        suppress: b.suppress,
    };
    // Writer jobs, waited for on this thread: the runtime moves its other tasks elsewhere.
    // Cluster mode: run by the owner of the app's partition, on every node (cluster::erase).
    let receipt = tokio::task::block_in_place(|| match &state.cluster {
        Some(c) => c.erase(identity, &state.writer, req),
        None => privacy::erase(identity, Via::Writer(&state.writer), req),
    })?;
    tracing::info!(erasure_id = %receipt.erasure_id, app = %receipt.app, events = receipt.events, "admin: erasure");
    let body =
        serde_json::to_value(&receipt).map_err(|e| crate::store::Error::Internal(e.to_string()))?;
    Ok(Reply::json(StatusCode::CREATED, &body))
}

pub async fn unsuppress(state: &Env<'_>, _w: &WriteSession, id: &str) -> Result<Reply, Error> {
    let owned = id.to_owned();
    // Cluster mode: in the event stream, after the erasure it lifts (cluster::erase).
    let lifted = match &state.cluster {
        Some(c) => tokio::task::block_in_place(|| c.lift(&state.store, &state.writer, id))?,
        None => write(state, move |txn| crate::store::privacy::lift(txn, &owned)).await?,
    };
    tracing::info!(erasure_id = %id, lifted, "admin: suppression lifted");
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "id": id, "lifted": lifted }),
    ))
}
