//! The admin JSON API under `/admin/api/`. The panel uses it; so can scripts (with the session
//! cookie and the CSRF token from `login`).
//!
//! Only `setup` and `login` work without a session. Every other route, known or not, answers
//! 401 without one: the session is checked before the route is looked at. Writes run on the
//! writer thread (the one owner of write transactions) through [`write`].

use super::panel::EventQuery;
use super::session::{AdminSession, WriteSession};
use super::{Env, param, write};
use super::{Error, accounts, signing};
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
        (&Method::POST, "setup") => return accounts::setup(state, &headers, &body, peer).await,
        (&Method::POST, "login") => return accounts::login(state, &headers, &body, peer).await,
        (&Method::POST, "invite/accept") => {
            return accounts::accept_invite(state, &headers, &body, peer).await;
        }
        _ => {}
    }
    let session = state
        .admin
        .sessions
        .authenticate(&state.store, &headers, now_ms())?;
    let segs: Vec<&str> = path.split('/').collect();
    if method == Method::GET {
        return match segs.as_slice() {
            ["session"] => Ok(session_info(&session)),
            ["overview"] => overview(state, &session),
            ["tenants"] => Ok(Reply::json(
                StatusCode::OK,
                &json!({
                    "tenants": state.store.tenants(now_ms())?,
                    "default_retention_days": state.config.retention_days,
                }),
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
            ["admins"] => accounts::list(state, session.account()),
            ["audit"] => accounts::audit_log(state, &query),
            ["receipts", app, event_id] => receipt(state, &session, app, event_id),
            ["apps", app, "rules"] => super::rules::get(state, &session, &percent_decode(app)),
            ["erasures"] => super::erasures::list(state, &session),
            ["quarantine", app] => {
                super::quarantine::list(state, &session, &percent_decode(app), &query)
            }
            ["health"] => super::watch::health(state),
            ["alerts"] => super::watch::list(state),
            _ => Err(not_found_or_method(&segs, true)),
        };
    }
    if method != Method::POST {
        return Err(not_found_or_method(&segs, false));
    }
    let w = session.for_write(&headers)?;
    if let ["logout"] = segs.as_slice() {
        return accounts::logout(state, w).await;
    }
    if let Some(r) = accounts::post(state, &w, &segs, &body).await {
        return r;
    }
    let who = w.account().to_owned();
    let target = segs.get(1).map(|s| s.to_string()).unwrap_or_else(|| {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|b| {
                ["name", "app", "label"]
                    .iter()
                    .find_map(|k| b[k].as_str().map(str::to_owned))
            })
            .unwrap_or_default()
    });
    let r = writes(state, w, segs, body).await;
    if r.is_ok() {
        accounts::record(state, &who, path.to_owned(), target).await;
    }
    r
}

/// The admin API's writes other than the accounts' (audited by [`handle`]).
async fn writes(
    state: &Env<'_>,
    w: WriteSession,
    segs: Vec<&str>,
    body: bytes::Bytes,
) -> Result<Reply, Error> {
    match segs.as_slice() {
        ["tenants"] => {
            let b: NewTenant = parse(&body)?;
            create_tenant(state, &w, b).await
        }
        ["tenants", name, "quota"] => {
            let name = (*name).to_owned();
            let b: Quota = parse(&body)?;
            set_quota(state, &w, name, b).await
        }
        ["tenants", name, "retention"] => {
            retention(state, &w, percent_decode(name), parse(&body)?).await
        }
        ["tenants", name, "rename"] => {
            rename(state, &w, Kind::Tenant, percent_decode(name), parse(&body)?).await
        }
        ["tenants", name, "delete"] => {
            delete(state, &w, Kind::Tenant, percent_decode(name), parse(&body)?).await
        }
        ["apps"] => {
            let b: NewApp = parse(&body)?;
            create_app(state, &w, b).await
        }
        ["apps", name, "rename"] => {
            rename(state, &w, Kind::App, percent_decode(name), parse(&body)?).await
        }
        ["apps", name, "delete"] => {
            delete(state, &w, Kind::App, percent_decode(name), parse(&body)?).await
        }
        ["apps", name, "configure"] => {
            let name = (*name).to_owned();
            configure_app(state, &w, name, parse(&body)?).await
        }
        ["apps", name, "adjust-events"] => {
            let name = (*name).to_owned();
            map_adjust_event(state, &w, name, parse(&body)?).await
        }
        ["apps", name, "store-less"] => {
            let name = percent_decode(name);
            set_store_less(state, &w, name, parse(&body)?).await
        }
        ["apps", name, "business-key"] => {
            super::rules::business_key(state, &w, percent_decode(name), parse(&body)?).await
        }
        ["apps", name, "drop-rules"] => {
            super::rules::add(state, &w, percent_decode(name), parse(&body)?).await
        }
        ["apps", name, "drop-rules", id, "remove"] => {
            super::rules::remove(state, &w, percent_decode(name), id).await
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
        ["keys", id, "allow"] => super::keys::allow(state, &w, id, parse(&body)?).await,
        ["erasures"] => super::erasures::erase(state, &w, parse(&body)?).await,
        ["quarantine", app, "replay"] => {
            super::quarantine::replay(state, &w, &percent_decode(app), parse(&body)?).await
        }
        ["quarantine", app, "discard"] => {
            super::quarantine::discard(state, &w, &percent_decode(app), parse(&body)?).await
        }
        ["erasures", id, "unsuppress"] => super::erasures::unsuppress(state, &w, id).await,
        ["secrets"] => signing::mint(state, &w, parse(&body)?).await,
        ["secrets", id, "revoke"] => signing::revoke(state, &w, signing::id(id)?).await,
        ["secrets", id, "rotate"] => {
            let id = signing::id(id)?;
            signing::rotate(state, &w, id, parse(&body)?).await
        }
        ["alerts"] => super::watch::add(state, &w, parse(&body)?).await,
        ["alerts", id, "remove"] => super::watch::remove(state, &w, id).await,
        ["alerts", id, "test"] => super::watch::test(state, &w, id),
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
            | "admins"
            | "audit"
            | "erasures"
            | "health"
            | "tail"]
            | ["events", _]
            | ["receipts", _, _]
            | ["apps", _, "rules"]
            | ["quarantine", _]
    );
    let post = matches!(
        segs,
        ["logout" | "tenants" | "apps" | "keys" | "setup" | "login" | "alerts"]
            | ["invite", "accept"]
            | ["admins", "invite"]
            | ["admins", _, "remove"]
            | ["account", "totp"]
            | ["account", "totp", "confirm"]
            | ["tenants", _, "quota" | "retention" | "rename" | "delete"]
            | [
                "apps",
                _,
                "configure" | "adjust-events" | "adjust-skan" | "rename" | "delete" | "store-less"
            ]
            | ["apps", _, "business-key" | "drop-rules"]
            | ["apps", _, "drop-rules", _, "remove"]
            | ["keys", _, "revoke" | "allow"]
            | ["secrets"]
            | ["secrets", _, "revoke" | "rotate"]
            | ["erasures"]
            | ["erasures", _, "unsuppress"]
            | ["quarantine", _, "replay" | "discard"]
            | ["alerts", _, "remove" | "test"]
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

fn session_info(s: &AdminSession) -> Reply {
    Reply::json(
        StatusCode::OK,
        &json!({ "csrf_token": s.csrf(), "expires_ms": s.expires_ms() }),
    )
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
    // The newest seq: 0 until the first event is stored (the panel then offers to send one).
    let last_seq = state
        .store
        .list_events(&EventQuery {
            limit: 1,
            ..EventQuery::default()
        })?
        .last_seq;
    // Where clients send events, when it is not where the panel is served.
    let ingest_url = state.admin.config.listen.map(|_| {
        let scheme = if state.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", state.config.listen)
    });
    Ok(Reply::json(
        StatusCode::OK,
        &json!({
            "now_ms": now,
            "last_seq": last_seq,
            "ingest_url": ingest_url,
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

/// `POST /admin/api/tenants/{name}/retention {"days": N | null}`, as `inlet tenants
/// set-retention`: N days (0 = forever), or `null` for the server's `retention_days`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Retention {
    days: Option<u32>,
}

async fn retention(
    state: &Env<'_>,
    _w: &WriteSession,
    name: String,
    b: Retention,
) -> Result<Reply, Error> {
    let t = write(state, move |txn| admin::set_retention(txn, &name, b.days)).await?;
    tracing::info!(tenant = %t.name, days = ?t.retention_days, "admin: retention set");
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "name": t.name, "retention_days": t.retention_days }),
    ))
}

/// What a rename or a delete names.
#[derive(Clone, Copy)]
enum Kind {
    Tenant,
    App,
}

/// `POST /admin/api/{tenants|apps}/{name}/rename {"name"}`: refused (409) once the app (a
/// tenant: any of its apps) has received events, whose records carry the names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    name: String,
}

async fn rename(
    state: &Env<'_>,
    _w: &WriteSession,
    kind: Kind,
    name: String,
    b: Rename,
) -> Result<Reply, Error> {
    let old = name.clone();
    let new = write(state, move |txn| match kind {
        Kind::Tenant => admin::rename_tenant(txn, &name, &b.name).map(|t| t.name),
        Kind::App => admin::rename_app(txn, &name, &b.name).map(|a| a.name),
    })
    .await?;
    tracing::info!(from = %old, to = %new, "admin: renamed");
    Ok(Reply::json(StatusCode::OK, &json!({ "name": new })))
}

/// `POST /admin/api/{tenants|apps}/{name}/delete {"dry_run": bool}`: removes the tenant (with
/// its apps) or the app, with their keys and signing secrets, and answers what it removed;
/// with `dry_run`, what it would remove. Refused (409) once an app concerned has received
/// events.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    #[serde(default)]
    dry_run: bool,
}

async fn delete(
    state: &Env<'_>,
    _w: &WriteSession,
    kind: Kind,
    name: String,
    b: Delete,
) -> Result<Reply, Error> {
    let dry_run = b.dry_run;
    let removal = write(state, move |txn| match kind {
        Kind::Tenant => admin::delete_tenant(txn, &name, dry_run),
        Kind::App => admin::delete_app(txn, &name, dry_run),
    })
    .await?;
    if !dry_run {
        tracing::info!(
            tenants = ?removal.tenants,
            apps = ?removal.apps,
            keys = removal.keys,
            secrets = removal.secrets,
            "admin: deleted"
        );
    }
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "dry_run": dry_run, "removed": removal }),
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

/// What an app keeps less of, as `inlet apps store-less`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreLessBody {
    ip: crate::store::privacy::IpPolicy,
    drop_user_agent: bool,
    fields_days: Option<u32>,
}

async fn set_store_less(
    state: &Env<'_>,
    _w: &WriteSession,
    name: String,
    b: StoreLessBody,
) -> Result<Reply, Error> {
    if let Some(d) = b.fields_days
        && !(1..=crate::store::admin::MAX_RETENTION_DAYS).contains(&d)
    {
        return Err(Error::BadRequest(format!(
            "fields_days: {d} is outside 1..={}",
            crate::store::admin::MAX_RETENTION_DAYS
        )));
    }
    let policy = crate::store::privacy::StoreLess {
        ip: b.ip,
        drop_user_agent: b.drop_user_agent,
        fields_days: b.fields_days,
    };
    let n = name.clone();
    write(state, move |txn| {
        crate::store::privacy::set_store_less(txn, &n, policy)
    })
    .await?;
    tracing::info!(app = %name, "admin: store-less policy set");
    let app = state.store.apps()?.into_iter().find(|r| r.name == name);
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

/// `GET /admin/api/receipts/{app}/{event_id}` (both percent-encoded): what became of the
/// event, the document of `inlet receipt --json`; 404 for an unknown app.
fn receipt(state: &Env<'_>, _s: &AdminSession, app: &str, id: &str) -> Result<Reply, Error> {
    match state
        .store
        .receipt(&percent_decode(app), &percent_decode(id))?
    {
        Some(r) => Ok(Reply::json(StatusCode::OK, &r.to_json())),
        None => Err(Error::NotFound),
    }
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
    state
        .admin
        .sessions
        .authenticate(&state.store, headers, now_ms())?;
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
