//! Admin API routes of a key beyond minting and revoking (`api` has those), for the
//! quarantine's "allow the event, then replay" ([docs/quarantine.md]):
//!
//! - `POST /admin/api/keys/{id}/allow {"events": [name, ...]}` → `{"id", "allowed_events"}`:
//!   replaces the event names the key may send (an empty list: every event), as `inlet keys
//!   allow`; from the next request on. Audited like every admin write.

use super::session::WriteSession;
use super::{Env, Error, write};
use crate::http::reply::Reply;
use crate::store::admin;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    events: Vec<String>,
}

pub async fn allow(state: &Env<'_>, _w: &WriteSession, id: &str, b: Allow) -> Result<Reply, Error> {
    let id = id
        .parse::<u32>()
        .map_err(|_| Error::BadRequest(format!("no key {id:?}")))?;
    let events = b.events;
    let k = write(state, move |txn| admin::set_allowed_events(txn, id, events)).await?;
    tracing::info!(
        key_id = id,
        events = k.allowed_events.len(),
        "admin: key's allowed events set"
    );
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "id": id, "allowed_events": k.allowed_events }),
    ))
}
