//! The admin JSON API under `/admin/api/`. The panel uses it; so can scripts (with the session
//! cookie and the CSRF token from `login`).
//!
//! Only `setup` and `login` work without a session. Every other route, known or not, answers
//! 401 without one: the session is checked before the route is looked at. Writes run on the
//! writer thread (the one owner of write transactions) through [`write`].

use super::panel::{EventQuery, set_first_admin_password};
use super::session::{
    AdminSession, NewSession, WriteSession, clear_cookie, same_origin, set_cookie,
};
use super::{AdminState, Error, signing};
use super::{Env, param, write};
use crate::auth::password::{self, PasswordHash};
use crate::clock::now_ms;
use crate::http::reply::Reply;
use crate::stats::Counted;
use crate::store::read::Canonical;
use crate::store::{self, admin};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// Largest admin request body.
const MAX_BODY: usize = 64 << 10;
/// Largest part of a raw audit body the event detail returns.
const MAX_AUDIT_SHOWN: usize = 256 << 10;
/// Hours on the overview's chart.
const CHART_HOURS: u32 = 48;

/// Routes `/admin/api/<path>`.
pub async fn handle(
    state: &Env<'_>,
    req: Request<Incoming>,
    peer: SocketAddr,
    path: &str,
) -> Result<Reply, Error> {
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers = req.headers().clone();
    // Read the (small) body before answering anything, so that a refusal does not leave it
    // unread and the connection can be kept alive.
    let body = state.read_body(req, MAX_BODY).await?;
    match (&method, path) {
        (&Method::POST, "setup") => return setup(state, &headers, &body, peer).await,
        (&Method::POST, "login") => return login(state, &headers, &body, peer).await,
        _ => {}
    }
    let salt = state.store.admin_password()?.map(|p| p.salt);
    let session = state
        .admin
        .sessions
        .authenticate(&headers, now_ms(), salt.as_deref())?;
    let segs: Vec<&str> = path.split('/').collect();
    if method == Method::GET {
        return match segs.as_slice() {
            ["session"] => Ok(session_info(&session)),
            ["overview"] => overview(state, &session),
            ["tenants"] => Ok(Reply::json(
                StatusCode::OK,
                &json!({ "tenants": state.store.tenants(now_ms())? }),
            )),
            ["apps"] => Ok(Reply::json(
                StatusCode::OK,
                &json!({ "apps": state.store.apps()? }),
            )),
            ["keys"] => {
                let app = param(&query, "app");
                Ok(Reply::json(
                    StatusCode::OK,
                    &json!({ "keys": state.store.keys(app.as_deref())? }),
                ))
            }
            ["events"] => events(state, &session, &query),
            ["events", seq] => event(state, &session, seq),
            ["secrets"] => signing::list(state, &session, &query),
            ["profile"] => signing::profile(state, &session, &query),
            ["erasures"] => super::erasures::list(state, &session),
            _ => Err(not_found_or_method(&segs, true)),
        };
    }
    if method != Method::POST {
        return Err(not_found_or_method(&segs, false));
    }
    let w = session.for_write(&headers)?;
    match segs.as_slice() {
        ["logout"] => {
            state.admin.sessions.close(w);
            let mut r = Reply::json(StatusCode::OK, &json!({ "ok": true }));
            r.headers
                .push(("set-cookie", clear_cookie(state.admin.config.secure_cookie)));
            Ok(r)
        }
        ["tenants"] => {
            let b: NewTenant = parse(&body)?;
            create_tenant(state, &w, b).await
        }
        ["tenants", name, "quota"] => {
            let name = (*name).to_owned();
            let b: Quota = parse(&body)?;
            set_quota(state, &w, name, b).await
        }
        ["apps"] => {
            let b: NewApp = parse(&body)?;
            create_app(state, &w, b).await
        }
        ["apps", name, "configure"] => {
            let name = (*name).to_owned();
            configure_app(state, &w, name, parse(&body)?).await
        }
        ["apps", name, "adjust-events"] => {
            let name = (*name).to_owned();
            map_adjust_event(state, &w, name, parse(&body)?).await
        }
        ["apps", name, "adjust-skan"] => {
            let name = (*name).to_owned();
            set_adjust_skan(state, &w, name, parse(&body)?).await
        }
        ["keys"] => {
            let b: NewKey = parse(&body)?;
            mint_key(state, &w, b).await
        }
        ["keys", id, "revoke"] => {
            let id = id
                .parse::<u32>()
                .map_err(|_| Error::BadRequest(format!("no key {id:?}")))?;
            revoke_key(state, &w, id).await
        }
        ["erasures"] => super::erasures::erase(state, &w, parse(&body)?).await,
        ["erasures", id, "unsuppress"] => super::erasures::unsuppress(state, &w, id).await,
        ["secrets"] => signing::mint(state, &w, parse(&body)?).await,
        ["secrets", id, "revoke"] => signing::revoke(state, &w, signing::id(id)?).await,
        ["secrets", id, "rotate"] => {
            let id = signing::id(id)?;
            signing::rotate(state, &w, id, parse(&body)?).await
        }
        _ => Err(not_found_or_method(&segs, false)),
    }
}

/// 405 for a known route asked with the other method, else 404.
fn not_found_or_method(segs: &[&str], was_get: bool) -> Error {
    let get = matches!(
        segs,
        ["session"
            | "overview"
            | "tenants"
            | "apps"
            | "keys"
            | "events"
            | "export"
            | "secrets"
            | "profile"
            | "erasures"]
            | ["events", _]
    );
    let post = matches!(
        segs,
        ["logout" | "tenants" | "apps" | "keys" | "setup" | "login"]
            | ["tenants", _, "quota"]
            | ["apps", _, "configure" | "adjust-events" | "adjust-skan"]
            | ["keys", _, "revoke"]
            | ["secrets"]
            | ["secrets", _, "revoke" | "rotate"]
            | ["erasures"]
            | ["erasures", _, "unsuppress"]
    );
    let other_method = if was_get { post } else { get || post };
    if other_method {
        Error::MethodNotAllowed
    } else {
        Error::NotFound
    }
}

/// Parses a JSON body (unknown fields refused).
pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|_| Error::BadJson)
}

/// Runs PBKDF2 off the async threads, at most two at a time. `None` if the task failed.
async fn hashing<R: Send + 'static>(
    admin: &AdminState,
    f: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    let _permit = admin.hashing.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

fn session_reply(state: &Env<'_>, s: NewSession) -> Reply {
    let mut r = Reply::json(
        StatusCode::OK,
        &json!({ "csrf_token": s.csrf, "expires_ms": s.expires_ms }),
    );
    r.headers.push((
        "set-cookie",
        set_cookie(
            &s,
            state.admin.config.session_ttl,
            state.admin.config.secure_cookie,
        ),
    ));
    r
}

fn session_info(s: &AdminSession) -> Reply {
    Reply::json(
        StatusCode::OK,
        &json!({ "csrf_token": s.csrf(), "expires_ms": s.expires_ms() }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Setup {
    code: String,
    password: String,
}

/// `POST /admin/api/setup {"code","password"}`: first run, once.
async fn setup(
    state: &Env<'_>,
    headers: &HeaderMap,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Reply, Error> {
    same_origin(headers)?;
    let limiter = &state.admin.limiter;
    limiter
        .check(peer.ip(), now_ms())
        .map_err(Error::TooManyAttempts)?;
    let b: Setup = parse(body)?;
    if state.store.admin_password()?.is_some() {
        return Err(Error::AlreadySetUp);
    }
    password::check_new(&b.password).map_err(Error::PasswordInvalid)?;
    if !state.admin.take_setup_code(&b.code) {
        if let Some(secs) = limiter.failed(peer.ip(), now_ms()) {
            return Err(Error::TooManyAttempts(secs));
        }
        return Err(Error::SetupCodeInvalid);
    }
    limiter.succeeded(peer.ip());
    let pw = b.password;
    let Some(hash) = hashing(state.admin, move || PasswordHash::new(&pw)).await else {
        state.admin.restore_setup_code(&b.code);
        return Err(Error::Store(store::Error::WriterGone));
    };
    let salt = hash.salt.clone();
    match write(state, move |txn| set_first_admin_password(txn, &hash)).await {
        Ok(true) => {}
        Ok(false) => return Err(Error::AlreadySetUp),
        Err(e) => {
            state.admin.restore_setup_code(&b.code);
            return Err(e);
        }
    }
    tracing::info!(peer = %peer.ip(), "admin password set up");
    Ok(session_reply(
        state,
        state.admin.sessions.open(now_ms(), &salt),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    password: String,
}

/// `POST /admin/api/login {"password"}`.
async fn login(
    state: &Env<'_>,
    headers: &HeaderMap,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Reply, Error> {
    same_origin(headers)?;
    let limiter = &state.admin.limiter;
    limiter
        .check(peer.ip(), now_ms())
        .map_err(Error::TooManyAttempts)?;
    let b: Login = parse(body)?;
    let Some(hash) = state.store.admin_password()? else {
        return Err(Error::SetupRequired);
    };
    let ip = peer.ip();
    let salt = hash.salt.clone();
    // Check the limit again once it is this request's turn to hash: parallel guesses queue
    // on the hashing permits, and must not all get past the check made before they queued.
    let _permit = state
        .admin
        .hashing
        .acquire()
        .await
        .map_err(|_| store::Error::WriterGone)?;
    limiter
        .check(ip, now_ms())
        .map_err(Error::TooManyAttempts)?;
    let ok = tokio::task::spawn_blocking(move || hash.verify(&b.password))
        .await
        .unwrap_or(false);
    if !ok {
        tracing::warn!(peer = %ip, "admin login failed");
        if let Some(secs) = limiter.failed(ip, now_ms()) {
            tracing::warn!(peer = %ip, secs, "admin login locked out");
            return Err(Error::TooManyAttempts(secs));
        }
        return Err(Error::WrongPassword);
    }
    limiter.succeeded(ip);
    tracing::info!(peer = %ip, "admin logged in");
    Ok(session_reply(
        state,
        state.admin.sessions.open(now_ms(), &salt),
    ))
}

fn overview(state: &Env<'_>, _s: &AdminSession) -> Result<Reply, Error> {
    let now = now_ms();
    let apps = state.store.apps()?;
    let counts = state.store.app_counts(now)?;
    let apps: Vec<Value> = apps
        .iter()
        .map(|a| {
            let c = counts.iter().find(|c| c.app_id == a.id);
            json!({
                "app": a.name,
                "tenant": a.tenant,
                "today": c.map_or(0, |c| c.today),
                "this_month": c.map_or(0, |c| c.this_month),
            })
        })
        .collect();
    let tenants: Vec<Value> = state
        .store
        .tenants(now)?
        .into_iter()
        .map(|t| {
            json!({
                "name": t.name,
                "monthly_quota": t.monthly_quota,
                "used_this_month": t.used_this_month,
            })
        })
        .collect();
    let hourly = state.store.hourly(now, CHART_HOURS)?;
    let first_hour_ms = (now / 3_600_000 + 1 - hourly.len() as u64) * 3_600_000;
    let mut rejections: Vec<(String, u64)> = Vec::new();
    let (mut accepted, mut duplicate) = (0, 0);
    for row in state.counters.snapshot() {
        match row.outcome {
            Counted::Accepted => accepted += row.count,
            Counted::Duplicate => duplicate += row.count,
            Counted::Rejected(reason) => {
                let reason = reason.tag();
                match rejections.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, n)) => *n += row.count,
                    None => rejections.push((reason.into_owned(), row.count)),
                }
            }
        }
    }
    rejections.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Reply::json(
        StatusCode::OK,
        &json!({
            "now_ms": now,
            "apps": apps,
            "tenants": tenants,
            "hourly": { "first_hour_ms": first_hour_ms, "counts": hourly },
            "since_ms": state.admin.started_ms,
            "accepted": accepted,
            "duplicates": duplicate,
            "rejections": rejections
                .into_iter()
                .map(|(reason, count)| json!({ "reason": reason, "count": count }))
                .collect::<Vec<_>>(),
        }),
    ))
}

/// `GET /admin/api/events?app=&event_name=&event_id=&install_uuid=&user_id=&before=&after=&limit=`
fn events(state: &Env<'_>, _s: &AdminSession, query: &str) -> Result<Reply, Error> {
    let num = |name: &str| -> Result<Option<u64>, Error> {
        param(query, name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| Error::BadRequest(format!("{name} must be a number")))
            })
            .transpose()
    };
    let q = EventQuery {
        app: param(query, "app"),
        event_name: param(query, "event_name"),
        event_id: param(query, "event_id"),
        install_uuid: param(query, "install_uuid"),
        user_id: param(query, "user_id"),
        before: num("before")?,
        after: num("after")?.unwrap_or(0),
        limit: num("limit")?.unwrap_or(50).clamp(1, 500) as usize,
    };
    let page = state.store.list_events(&q)?;
    let events: Vec<Value> = page
        .events
        .iter()
        .map(|(seq, r)| {
            let mut v = json!({
                "seq": seq,
                "received_at_ms": r.received_at_ms,
                "app": r.app,
                "source": r.source,
                "event_name": r.event_name,
                "event_id": r.event_id,
                "key_id": r.key_id,
            });
            if let Some(i) = &r.install_uuid {
                v["install_uuid"] = i.as_str().into();
            }
            if let Some(u) = &r.user_id {
                v["user_id"] = u.as_str().into();
            }
            v
        })
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "events": events, "next_before": page.next_before, "last_seq": page.last_seq }),
    ))
}

/// `GET /admin/api/events/{seq}`: the canonical event and its raw audit body.
fn event(state: &Env<'_>, _s: &AdminSession, seq: &str) -> Result<Reply, Error> {
    let seq: u64 = seq.parse().map_err(|_| Error::NotFound)?;
    let record = state.store.event(seq)?.ok_or(Error::NotFound)?;
    let canonical =
        serde_json::to_value(Canonical::new(seq, &record)).map_err(|_| Error::NotFound)?;
    let audit = match state.store.audit(&record.audit_key)? {
        Some(body) => {
            let shown = &body[..body.len().min(MAX_AUDIT_SHOWN)];
            json!({
                "key": record.audit_key,
                "body": String::from_utf8_lossy(shown),
                "bytes": body.len(),
                "truncated": shown.len() < body.len(),
            })
        }
        None => Value::Null,
    };
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "event": canonical, "audit": audit }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    monthly_quota: u64,
}

async fn create_tenant(state: &Env<'_>, _w: &WriteSession, b: NewTenant) -> Result<Reply, Error> {
    let t = write(state, move |txn| {
        admin::add_tenant(txn, &b.name, b.monthly_quota)
    })
    .await?;
    tracing::info!(tenant = %t.name, quota = t.monthly_quota, "admin: tenant added");
    Ok(Reply::json(
        StatusCode::CREATED,
        &json!({ "name": t.name, "monthly_quota": t.monthly_quota }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Quota {
    monthly_quota: u64,
}

async fn set_quota(
    state: &Env<'_>,
    _w: &WriteSession,
    name: String,
    b: Quota,
) -> Result<Reply, Error> {
    let name = percent_decode(&name);
    let t = write(state, move |txn| {
        admin::set_quota(txn, &name, b.monthly_quota)
    })
    .await?;
    tracing::info!(tenant = %t.name, quota = t.monthly_quota, "admin: quota set");
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "name": t.name, "monthly_quota": t.monthly_quota }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    name: String,
    tenant: String,
}

async fn create_app(state: &Env<'_>, _w: &WriteSession, b: NewApp) -> Result<Reply, Error> {
    let a = write(state, move |txn| admin::add_app(txn, &b.name, &b.tenant)).await?;
    tracing::info!(app = %a.name, "admin: app added");
    Ok(Reply::json(StatusCode::CREATED, &json!({ "name": a.name })))
}

/// Dialect settings of an app, as `inlet apps configure`: absent fields stay as they are, an
/// empty string clears a setting.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSettings {
    #[serde(default)]
    adjust_app_token: Option<String>,
    #[serde(default)]
    appsflyer_bundle_id: Option<String>,
    #[serde(default)]
    adjust_require_token: Option<bool>,
}

async fn configure_app(
    state: &Env<'_>,
    _w: &WriteSession,
    name: String,
    b: AppSettings,
) -> Result<Reply, Error> {
    let a = write(state, move |txn| {
        let a = admin::configure_app(txn, &name, b.adjust_app_token, b.appsflyer_bundle_id)?;
        match b.adjust_require_token {
            Some(required) => admin::set_adjust_token_required(txn, &name, required),
            None => Ok(a),
        }
    })
    .await?;
    tracing::info!(app = %a.name, "admin: app configured");
    let app = state.store.apps()?.into_iter().find(|r| r.name == a.name);
    Ok(Reply::json(StatusCode::OK, &json!({ "app": app })))
}

/// An Adjust `event_token` → event name mapping, as `inlet apps adjust-event` (an empty
/// `event` removes it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustEvent {
    token: String,
    event: String,
}

async fn map_adjust_event(
    state: &Env<'_>,
    _w: &WriteSession,
    name: String,
    b: AdjustEvent,
) -> Result<Reply, Error> {
    let a = write(state, move |txn| {
        admin::map_adjust_event(txn, &name, &b.token, &b.event)
    })
    .await?;
    tracing::info!(app = %a.name, "admin: adjust event mapping changed");
    let app = state.store.apps()?.into_iter().find(|r| r.name == a.name);
    Ok(Reply::json(StatusCode::OK, &json!({ "app": app })))
}

/// An app's SKAdNetwork conversion value rules, as `inlet apps adjust-skan`: the rules
/// (`{"events": {...}, "revenue": [...], "window_hours"}`, see [`crate::skan::Rules`]) or
/// `null` to remove them.
async fn set_adjust_skan(
    state: &Env<'_>,
    _w: &WriteSession,
    name: String,
    rules: Option<crate::skan::Rules>,
) -> Result<Reply, Error> {
    let a = write(state, move |txn| admin::set_adjust_skan(txn, &name, rules)).await?;
    tracing::info!(app = %a.name, "admin: adjust skan rules changed");
    let app = state.store.apps()?.into_iter().find(|r| r.name == a.name);
    Ok(Reply::json(StatusCode::OK, &json!({ "app": app })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    app: String,
    label: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    rate_limit: Option<u32>,
}

/// Mints a key; the answer holds the key itself, the only time it is ever shown.
async fn mint_key(state: &Env<'_>, _w: &WriteSession, b: NewKey) -> Result<Reply, Error> {
    let events: Vec<String> = b
        .events
        .iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    let app = b.app.clone();
    let k = write(state, move |txn| {
        admin::mint_key(txn, &b.app, &b.label, events, b.rate_limit)
    })
    .await?;
    tracing::info!(key_id = k.id, app = %app, "admin: key minted");
    Ok(Reply::json(
        StatusCode::CREATED,
        &json!({ "id": k.id, "key": k.plaintext }),
    ))
}

async fn revoke_key(state: &Env<'_>, _w: &WriteSession, id: u32) -> Result<Reply, Error> {
    let k = write(state, move |txn| admin::revoke_key(txn, id)).await?;
    tracing::info!(key_id = id, "admin: key revoked");
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "id": id, "revoked_ms": k.revoked_ms }),
    ))
}

/// Decodes `%XX` escapes (a path segment: `+` stays); a non-UTF-8 result is kept as it came.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map_or_else(|_| s.to_owned(), std::borrow::Cow::into_owned)
}

/// `GET /admin/api/export?app=&after=&limit=&since=&until=&source=&event=`: checks the
/// session and reads the filter of the export the caller then streams (the same NDJSON as
/// `inlet export`; `since`/`until` RFC 3339 or a date).
pub fn export_filter(
    state: &Env<'_>,
    headers: &HeaderMap,
    query: &str,
) -> Result<crate::store::read::ExportFilter, Error> {
    let salt = state.store.admin_password()?.map(|p| p.salt);
    state
        .admin
        .sessions
        .authenticate(headers, now_ms(), salt.as_deref())?;
    let number = |name: &str| -> Result<Option<u64>, Error> {
        param(query, name)
            .map(|v| {
                v.parse()
                    .map_err(|_| Error::BadRequest(format!("{name}: {v:?} is not a number")))
            })
            .transpose()
    };
    let time = |name: &str| -> Result<Option<u64>, Error> {
        param(query, name)
            .map(|v| {
                crate::clock::parse_rfc3339_ms(&v)
                    .and_then(|ms| u64::try_from(ms).ok())
                    .ok_or_else(|| {
                        Error::BadRequest(format!("{name}: {v:?} is not an RFC 3339 time"))
                    })
            })
            .transpose()
    };
    let app = param(query, "app");
    if let Some(name) = &app
        && !state.store.apps()?.iter().any(|a| &a.name == name)
    {
        return Err(Error::Store(store::Error::NotFound(format!(
            "no app {name:?}"
        ))));
    }
    Ok(crate::store::read::ExportFilter {
        app,
        after: number("after")?.unwrap_or(0),
        limit: number("limit")?,
        since_ms: time("since")?,
        until_ms: time("until")?,
        source: param(query, "source"),
        event: param(query, "event"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_decode() {
        let q = "app=my%20app&event_name=a+b&user_id=&x&event_id=%E2%82%AC%zz";
        assert_eq!(param(q, "app").as_deref(), Some("my app"));
        assert_eq!(param(q, "event_name").as_deref(), Some("a b"));
        assert_eq!(param(q, "user_id"), None);
        assert_eq!(param(q, "x"), None);
        assert_eq!(param(q, "event_id").as_deref(), Some("€%zz"));
        assert_eq!(param(q, "missing"), None);
    }

    #[test]
    fn wrong_methods_are_told_apart_from_unknown_routes() {
        assert!(matches!(
            not_found_or_method(&["overview"], false),
            Error::MethodNotAllowed
        ));
        assert!(matches!(
            not_found_or_method(&["logout"], true),
            Error::MethodNotAllowed
        ));
        assert!(matches!(
            not_found_or_method(&["nope"], true),
            Error::NotFound
        ));
        assert!(matches!(
            not_found_or_method(&["events", "1"], false),
            Error::MethodNotAllowed
        ));
    }
}
