//! Admin API routes of the Datafly signing secrets and the identity graph, next to `api`:
//!
//! - `GET /admin/api/secrets[?app=A]` → `{"secrets": [row]}` (never a secret)
//! - `POST /admin/api/secrets {"app", "label"}` → 201 `{"id", "secret"}` (shown once)
//! - `POST /admin/api/secrets/{id}/rotate {"grace": "24h"}` (grace optional, default 24h) →
//!   201 `{"id", "secret", "replaces", "old_expires_ms"}`
//! - `POST /admin/api/secrets/{id}/revoke` → `{"id", "revoked_ms"}`
//! - `GET /admin/api/profile?app=A&id=X[&kind=K][&limit=N]` → the document of
//!   `inlet profile --json`, 404 when no event of the app carries X
//!
//! They call the same store functions as the CLI (`store::secrets`, `Identity::profile_of_kind`).

use super::Env;
use super::Error;
use super::session::{AdminSession, WriteSession};
use super::{param, write};
use crate::auth::secrets::{Sealer, parse_duration_ms};
use crate::clock::now_ms;
use crate::http::reply::Reply;
use crate::store::secrets;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

/// Default grace period of a rotation.
const DEFAULT_GRACE: &str = "24h";
/// Most events a profile answer holds.
const MAX_PROFILE_EVENTS: usize = 500;

/// A secret id from the path.
pub fn id(text: &str) -> Result<u32, Error> {
    text.parse::<u32>()
        .map_err(|_| Error::BadRequest(format!("no secret {text:?}")))
}

pub fn list(state: &Env<'_>, _s: &AdminSession, query: &str) -> Result<Reply, Error> {
    let app = param(query, "app");
    let rows = state.store.secrets(app.as_deref(), now_ms())?;
    Ok(Reply::json(StatusCode::OK, &json!({ "secrets": rows })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    app: String,
    label: String,
}

pub async fn mint(state: &Env<'_>, _w: &WriteSession, b: NewSecret) -> Result<Reply, Error> {
    let dir = state.store.data_dir().to_owned();
    let app = b.app.clone();
    let m = write(state, move |txn| {
        let sealer = Sealer::load_or_create(&dir)?;
        secrets::mint_secret(txn, &sealer, &b.app, &b.label, now_ms())
    })
    .await?;
    tracing::info!(secret_id = m.id, app = %app, "admin: signing secret minted");
    Ok(Reply::json(
        StatusCode::CREATED,
        &json!({ "id": m.id, "secret": m.plaintext }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    #[serde(default)]
    grace: Option<String>,
}

pub async fn rotate(
    state: &Env<'_>,
    _w: &WriteSession,
    id: u32,
    b: Rotate,
) -> Result<Reply, Error> {
    let grace = b.grace.as_deref().unwrap_or(DEFAULT_GRACE);
    let grace_ms = parse_duration_ms(grace).ok_or_else(|| {
        Error::BadRequest(format!(
            "grace {grace:?} is not a duration like 24h, 30m or 90s"
        ))
    })?;
    let dir = state.store.data_dir().to_owned();
    let now = now_ms();
    let m = write(state, move |txn| {
        let sealer = Sealer::load_or_create(&dir)?;
        secrets::rotate_secret(txn, &sealer, id, grace_ms, now)
    })
    .await?;
    tracing::info!(
        secret_id = id,
        new_secret_id = m.id,
        grace_ms,
        "admin: signing secret rotated"
    );
    Ok(Reply::json(
        StatusCode::CREATED,
        &json!({
            "id": m.id, "secret": m.plaintext, "replaces": id,
            "old_expires_ms": now.saturating_add(grace_ms),
        }),
    ))
}

pub async fn revoke(state: &Env<'_>, _w: &WriteSession, id: u32) -> Result<Reply, Error> {
    let now = now_ms();
    let s = write(state, move |txn| secrets::revoke_secret(txn, id, now)).await?;
    tracing::info!(secret_id = id, "admin: signing secret revoked");
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "id": id, "revoked_ms": s.revoked_ms }),
    ))
}

pub fn profile(state: &Env<'_>, _s: &AdminSession, query: &str) -> Result<Reply, Error> {
    let app = param(query, "app").ok_or_else(|| Error::BadRequest("app is required".into()))?;
    let id = param(query, "id").ok_or_else(|| Error::BadRequest("id is required".into()))?;
    let kind = param(query, "kind");
    let limit = match param(query, "limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| Error::BadRequest("limit must be a number".into()))?
            .min(MAX_PROFILE_EVENTS),
    };
    let identity = state
        .indexer
        .as_ref()
        .map(|i| i.identity())
        .ok_or_else(|| {
            crate::store::Error::Internal("this server keeps no identity graph".into())
        })?;
    match identity.profile_of_kind(&app, kind.as_deref(), &id, limit)? {
        Some(p) => Ok(Reply::json(StatusCode::OK, &p.to_json(&app, &id))),
        None => Err(Error::NotFound),
    }
}
