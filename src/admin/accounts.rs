//! Admin accounts in the API: setup (the first account), login (password, then the TOTP
//! code when the account has one), logout, invitations, removal, TOTP enrolment, and the
//! audit log of admin actions.
//!
//! Every change is one write transaction on the writer thread that also appends its audit
//! entry. A TOTP code is checked against the account's last used step inside that
//! transaction, so one code opens at most one session even when sent twice at once.

use super::session::{WriteSession, new_token, same_origin, token_hash};
use super::{AdminState, Env, Error, param, totp, write};
use crate::auth::password::{self, PasswordHash};
use crate::auth::secrets::Sealer;
use crate::clock::now_ms;
use crate::event::{hex, unhex};
use crate::http::reply::Reply;
use crate::store::accounts::{self, Account, AuditEntry, FIRST_ACCOUNT, Invite};
use crate::store::{self, Store};
use hyper::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// How long an invitation link works.
pub const INVITE_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Audit entries one page shows at most.
const AUDIT_PAGE: usize = 200;
/// Actor of the actions of CLI commands (run by whoever may use the data dir).
pub const CLI_ACTOR: &str = "cli";
/// The TOTP secret's seal is bound to its account's id in this range (signing secrets use
/// the range below).
const TOTP_SEAL_BASE: u32 = 0x8000_0000;

/// An audit entry of `actor` doing `action` to `target` now.
pub fn entry(actor: &str, action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at_ms: now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
    }
}

/// Parses a JSON body (unknown fields refused).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|_| Error::BadJson)
}

/// Runs PBKDF2 off the async threads, at most two at a time.
async fn hashing<R: Send + 'static>(
    admin: &AdminState,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Error> {
    let _permit = admin
        .hashing
        .acquire()
        .await
        .map_err(|_| store::Error::WriterGone)?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Store(store::Error::WriterGone))
}

/// The reply that hands a new session to the client (cookie + CSRF token).
fn session_reply(state: &Env<'_>, s: super::session::NewSession, account: &str) -> Reply {
    let mut r = Reply::json(
        StatusCode::OK,
        &json!({ "csrf_token": s.csrf, "expires_ms": s.expires_ms, "account": account }),
    );
    r.headers.push((
        "set-cookie",
        super::session::set_cookie(
            &s,
            state.admin.config.session_ttl,
            state.admin.config.secure_cookie,
        ),
    ));
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Setup {
    code: String,
    password: String,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /admin/api/setup {"code","password"[,"name"]}`: the first account (default name
/// `admin`), once.
pub async fn setup(
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
    if state.store.has_admin_accounts()? {
        return Err(Error::AlreadySetUp);
    }
    let name = b.name.unwrap_or_else(|| FIRST_ACCOUNT.to_owned());
    accounts::check_name(&name)?;
    password::check_new(&b.password).map_err(Error::PasswordInvalid)?;
    if !state.admin.take_setup_code(&b.code) {
        if let Some(secs) = limiter.failed(peer.ip(), now_ms()) {
            return Err(Error::TooManyAttempts(secs));
        }
        return Err(Error::SetupCodeInvalid);
    }
    limiter.succeeded(peer.ip());
    let pw = b.password;
    let hash = match hashing(state.admin, move || PasswordHash::new(&pw)).await {
        Ok(h) => h,
        Err(e) => {
            state.admin.restore_setup_code(&b.code);
            return Err(e);
        }
    };
    let now = now_ms();
    let (new, th, record) = state.admin.sessions.open(now, &name, &hash.salt);
    let n = name.clone();
    let made = write(state, move |txn| {
        accounts::create(txn, &n, hash, now, true)?;
        accounts::add_session(txn, &th, &record, now)?;
        accounts::audit(txn, entry(&n, "setup", &n))
    })
    .await;
    match made {
        Ok(()) => {}
        Err(Error::Store(store::Error::Conflict(_))) => return Err(Error::AlreadySetUp),
        Err(e) => {
            state.admin.restore_setup_code(&b.code);
            return Err(e);
        }
    }
    tracing::info!(peer = %peer.ip(), account = %name, "admin account set up");
    Ok(session_reply(state, new, &name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    password: String,
    /// The account (default `admin`, the setup code's account).
    #[serde(default)]
    name: Option<String>,
    /// The TOTP code, for an account that has the second factor.
    #[serde(default)]
    totp: Option<String>,
}

/// A hash to verify against when the account does not exist, so that an unknown name costs
/// as long as a wrong password.
fn dummy_hash() -> &'static PasswordHash {
    static DUMMY: OnceLock<PasswordHash> = OnceLock::new();
    DUMMY.get_or_init(|| PasswordHash::new("not a password of any account"))
}

/// The TOTP secret of `account` (enabled, or pending when `pending`).
fn totp_secret(store: &Store, account: &Account, pending: bool) -> Result<Vec<u8>, Error> {
    let sealed = match pending {
        true => account.totp_pending.as_deref(),
        false => account.totp.as_ref().map(|t| t.sealed.as_str()),
    };
    let sealed = sealed
        .and_then(unhex)
        .ok_or_else(|| store::Error::Corrupt(format!("TOTP secret of {:?}", account.name)))?;
    let sealer = Sealer::load(store.data_dir())
        .map_err(store::Error::Io)?
        .ok_or_else(|| {
            store::Error::Corrupt("the TOTP secrets' key file secrets.key is missing".into())
        })?;
    let secret = sealer
        .open(TOTP_SEAL_BASE | account.id, &sealed)
        .and_then(|s| unhex(&s))
        .ok_or_else(|| store::Error::Corrupt(format!("TOTP secret of {:?}", account.name)))?;
    Ok(secret)
}

/// Checks `code` against the account's TOTP in `txn` and uses up its step.
fn use_totp_code(
    txn: &redb::WriteTransaction,
    name: &str,
    secret: &[u8],
    code: &str,
    now: u64,
) -> store::Result<Result<(), totp::Refused>> {
    let Some(mut a) = accounts::get(txn, name)? else {
        return Err(store::Error::NotFound(format!("no admin account {name:?}")));
    };
    let Some(t) = a.totp.as_mut() else {
        return Ok(Ok(()));
    };
    match totp::check(secret, code, now, t.last_step) {
        Ok(step) => {
            t.last_step = step;
            accounts::put(txn, &a)?;
            Ok(Ok(()))
        }
        Err(r) => Ok(Err(r)),
    }
}

/// `POST /admin/api/login {"password"[,"name"][,"totp"]}`.
pub async fn login(
    state: &Env<'_>,
    headers: &HeaderMap,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Reply, Error> {
    same_origin(headers)?;
    let limiter = &state.admin.limiter;
    let ip = peer.ip();
    limiter
        .check(ip, now_ms())
        .map_err(Error::TooManyAttempts)?;
    let b: Login = parse(body)?;
    if !state.store.has_admin_accounts()? {
        return Err(Error::SetupRequired);
    }
    let name = b.name.unwrap_or_else(|| FIRST_ACCOUNT.to_owned());
    let account = state.store.admin_account(&name)?;
    let hash = account
        .as_ref()
        .map_or_else(|| dummy_hash().clone(), |a| a.password.clone());
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
    let pw = b.password;
    let ok = tokio::task::spawn_blocking(move || hash.verify(&pw))
        .await
        .unwrap_or(false);
    let failed = |e: Error| {
        if let Some(secs) = limiter.failed(ip, now_ms()) {
            tracing::warn!(peer = %ip, secs, "admin login locked out");
            return Error::TooManyAttempts(secs);
        }
        e
    };
    let account = match account {
        Some(a) if ok => a,
        _ => {
            tracing::warn!(peer = %ip, account = %name, "admin login failed");
            return Err(failed(Error::WrongPassword));
        }
    };
    let secret = match (&account.totp, b.totp.as_deref()) {
        (None, _) => None,
        (Some(_), None | Some("")) => return Err(Error::TotpRequired),
        (Some(_), Some(code)) => {
            Some((totp_secret(&state.store, &account, false)?, code.to_owned()))
        }
    };
    let now = now_ms();
    let (new, th, record) = state
        .admin
        .sessions
        .open(now, &name, &account.password.salt);
    let n = name.clone();
    let checked = write(state, move |txn| {
        if let Some((secret, code)) = &secret
            && let Err(r) = use_totp_code(txn, &n, secret, code, now)?
        {
            return Ok(Err(r));
        }
        accounts::add_session(txn, &th, &record, now)?;
        accounts::audit(txn, entry(&n, "login", &n))?;
        Ok(Ok(()))
    })
    .await?;
    match checked {
        Ok(()) => {}
        Err(r) => {
            tracing::warn!(peer = %ip, account = %name, "admin login: TOTP code refused");
            return Err(failed(match r {
                totp::Refused::Invalid => Error::TotpInvalid,
                totp::Refused::Reused => Error::TotpReused,
            }));
        }
    }
    limiter.succeeded(ip);
    tracing::info!(peer = %ip, account = %name, "admin logged in");
    Ok(session_reply(state, new, &name))
}

/// `POST /admin/api/logout`: ends the session (in the store).
pub async fn logout(state: &Env<'_>, w: WriteSession) -> Result<Reply, Error> {
    let th = w.token_hash();
    let who = w.account().to_owned();
    write(state, move |txn| {
        accounts::end_session(txn, &th)?;
        accounts::audit(txn, entry(&who, "logout", &who))
    })
    .await?;
    let mut r = Reply::json(StatusCode::OK, &json!({ "ok": true }));
    r.headers.push((
        "set-cookie",
        super::session::clear_cookie(state.admin.config.secure_cookie),
    ));
    Ok(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Accept {
    token: String,
    password: String,
}

/// `POST /admin/api/invite/accept {"token","password"}`: creates the invited account with
/// its password and logs it in. A wrong token counts as a failed login.
pub async fn accept_invite(
    state: &Env<'_>,
    headers: &HeaderMap,
    body: &[u8],
    peer: SocketAddr,
) -> Result<Reply, Error> {
    same_origin(headers)?;
    let limiter = &state.admin.limiter;
    let ip = peer.ip();
    limiter
        .check(ip, now_ms())
        .map_err(Error::TooManyAttempts)?;
    let b: Accept = parse(body)?;
    password::check_new(&b.password).map_err(Error::PasswordInvalid)?;
    let th = token_hash(b.token.trim());
    let invalid = || match limiter.failed(ip, now_ms()) {
        Some(secs) => Error::TooManyAttempts(secs),
        None => Error::InviteInvalid,
    };
    // Checked again when it is used up; this spares a hash for a wrong token.
    if !state.store.admin_invite_open(&th, now_ms())? {
        return Err(invalid());
    }
    let pw = b.password;
    let hash = hashing(state.admin, move || PasswordHash::new(&pw)).await?;
    let now = now_ms();
    let sessions = &state.admin.sessions;
    let salt = hash.salt.clone();
    let made = write(state, move |txn| {
        let a = accounts::accept_invite(txn, &th, hash, now)?;
        accounts::audit(txn, entry(&a.name, "accept_invite", &a.name))?;
        Ok(a)
    })
    .await;
    let account = match made {
        Ok(a) => a,
        Err(Error::Store(store::Error::NotFound(_))) => return Err(invalid()),
        Err(e) => return Err(e),
    };
    limiter.succeeded(ip);
    let (new, th, record) = sessions.open(now, &account.name, &salt);
    write(state, move |txn| {
        accounts::add_session(txn, &th, &record, now)
    })
    .await?;
    tracing::info!(peer = %ip, account = %account.name, "admin invitation accepted");
    Ok(session_reply(state, new, &account.name))
}

/// Stores a new invitation of `name` by `by`; returns its token (shown once).
pub fn invite(
    txn: &redb::WriteTransaction,
    name: &str,
    by: &str,
    now: u64,
    ttl_ms: u64,
) -> store::Result<(String, u64)> {
    let token = new_token();
    let expires_ms = now + ttl_ms;
    let i = Invite {
        name: name.to_owned(),
        by: by.to_owned(),
        created_ms: now,
        expires_ms,
    };
    accounts::add_invite(txn, &token_hash(&token), &i, now)?;
    accounts::audit(txn, entry(by, "invite", name))?;
    Ok((token, expires_ms))
}

/// The link (path and fragment) that accepts an invitation: the token stays in the
/// fragment, out of request lines and logs.
pub fn invite_path(token: &str) -> String {
    format!("/admin/#invite={token}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInvite {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
}

/// `GET /admin/api/admins`: accounts and open invitations.
pub fn list(state: &Env<'_>, me: &str) -> Result<Reply, Error> {
    let now = now_ms();
    let accounts: Vec<_> = state
        .store
        .admin_accounts()?
        .into_iter()
        .map(|a| json!({ "name": a.name, "created_ms": a.created_ms, "totp": a.totp.is_some() }))
        .collect();
    let invites: Vec<_> = state
        .store
        .admin_invites(now)?
        .into_iter()
        .map(|i| json!({ "name": i.name, "by": i.by, "expires_ms": i.expires_ms }))
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "me": me, "accounts": accounts, "invites": invites }),
    ))
}

/// `GET /admin/api/audit[?before=SEQ]`: admin actions, newest first.
pub fn audit_log(state: &Env<'_>, query: &str) -> Result<Reply, Error> {
    let before = match param(query, "before") {
        Some(b) => Some(
            b.parse::<u64>()
                .map_err(|_| Error::BadRequest(format!("before {b:?} is not a number")))?,
        ),
        None => None,
    };
    let entries = state.store.admin_audit(before, AUDIT_PAGE)?;
    let next = (entries.len() == AUDIT_PAGE)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "entries": entries, "next_before": next }),
    ))
}

/// The write routes of this module (after the session, same-origin and CSRF checks);
/// `None` when `segs` is not one of them.
pub async fn post(
    state: &Env<'_>,
    w: &WriteSession,
    segs: &[&str],
    body: &[u8],
) -> Option<Result<Reply, Error>> {
    let me = w.account().to_owned();
    let now = now_ms();
    Some(match segs {
        ["admins", "invite"] => {
            let b: NewInvite = match parse(body) {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            let name = b.name;
            write(state, move |txn| invite(txn, &name, &me, now, INVITE_TTL_MS))
                .await
                .map(|(token, expires_ms)| {
                    Reply::json(
                        StatusCode::OK,
                        &json!({ "token": token, "path": invite_path(&token), "expires_ms": expires_ms }),
                    )
                })
        }
        ["admins", name, "remove"] => {
            let name = (*name).to_owned();
            write(state, move |txn| {
                accounts::remove(txn, &name)?;
                accounts::audit(txn, entry(&me, "remove_account", &name))
            })
            .await
            .map(|()| Reply::json(StatusCode::OK, &json!({ "ok": true })))
        }
        ["account", "totp"] => totp_begin(state, me).await,
        ["account", "totp", "confirm"] => match parse::<Code>(body) {
            Ok(c) => totp_confirm(state, me, c.code).await,
            Err(e) => Err(e),
        },
        _ => return None,
    })
}

/// Starts TOTP enrolment: a new secret, sealed as the account's pending one; answers the
/// secret in base32 and the `otpauth://` URI (shown once).
async fn totp_begin(state: &Env<'_>, me: String) -> Result<Reply, Error> {
    let account = state.store.admin_account(&me)?.ok_or(Error::Unauthorized)?;
    let secret = totp::new_secret();
    let sealer = Sealer::load_or_create(state.store.data_dir()).map_err(store::Error::Io)?;
    let sealed = hex(&sealer.seal(TOTP_SEAL_BASE | account.id, &hex(&secret)));
    let who = me.clone();
    write(state, move |txn| {
        let mut a = accounts::get(txn, &who)?
            .ok_or_else(|| store::Error::NotFound(format!("no admin account {who:?}")))?;
        a.totp_pending = Some(sealed);
        accounts::put(txn, &a)
    })
    .await?;
    Ok(Reply::json(
        StatusCode::OK,
        &json!({
            "secret": totp::base32(&secret),
            "uri": totp::uri(&me, &secret),
            "enabled": account.totp.is_some(),
        }),
    ))
}

/// Confirms enrolment with a code of the pending secret, which then replaces any earlier one.
async fn totp_confirm(state: &Env<'_>, me: String, code: String) -> Result<Reply, Error> {
    let account = state.store.admin_account(&me)?.ok_or(Error::Unauthorized)?;
    if account.totp_pending.is_none() {
        return Err(Error::BadRequest(
            "start the enrolment first (POST account/totp)".into(),
        ));
    }
    let secret = totp_secret(&state.store, &account, true)?;
    let now = now_ms();
    let step = totp::check(&secret, &code, now, 0).map_err(|_| Error::TotpInvalid)?;
    write(state, move |txn| {
        let mut a = accounts::get(txn, &me)?
            .ok_or_else(|| store::Error::NotFound(format!("no admin account {me:?}")))?;
        let Some(sealed) = a.totp_pending.take() else {
            return Err(store::Error::Conflict("no enrolment in progress".into()));
        };
        a.totp = Some(accounts::Totp {
            sealed,
            last_step: step,
        });
        accounts::put(txn, &a)?;
        accounts::audit(txn, entry(&me, "enable_totp", &me))
    })
    .await?;
    Ok(Reply::json(StatusCode::OK, &json!({ "ok": true })))
}

/// Records a write of the admin API that this module does not audit itself: `action` is the
/// route, `target` the named object.
pub async fn record(state: &Env<'_>, who: &str, action: String, target: String) {
    let e = entry(who, &action, &target);
    if let Err(err) = write(state, move |txn| accounts::audit(txn, e)).await {
        tracing::warn!(error = %err, "admin audit entry not written");
    }
}
