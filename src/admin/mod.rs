//! The admin panel: embedded assets under `/admin/`, the JSON API under `/admin/api/`, admin
//! sessions and the first-run setup code.
//!
//! Every response of this module passes through [`handle`], which adds the security headers
//! (CSP without inline script, `X-Frame-Options: DENY`, `Cache-Control: no-store`, ...).
//! [`Error::reply`] is the one place where admin errors become HTTP statuses and reasons.

pub mod accounts;
pub mod api;
pub mod assets;
pub mod erasures;
pub mod keys;
pub mod panel;
pub mod quarantine;
pub mod rules;
pub mod session;
pub mod signing;
pub mod totp;
pub mod watch;

use crate::config::AdminConfig;
use crate::context::Context;
use crate::event::Reason;
use crate::http::reply::{Reply, status_of};
use crate::store::{self, Store};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Mutex;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// Content-Security-Policy of every admin response: scripts, styles and fetches from this
/// origin only, no inline script or style, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// What an admin handler sees: the shared request context and the admin panel's own state.
/// Derefs to the context.
pub struct Env<'a> {
    pub ctx: &'a Context,
    pub admin: &'a AdminState,
}

impl std::ops::Deref for Env<'_> {
    type Target = Context;

    fn deref(&self) -> &Context {
        self.ctx
    }
}

/// The admin panel's state in a serving process.
pub struct AdminState {
    pub config: AdminConfig,
    pub sessions: session::Sessions,
    pub limiter: session::Limiter,
    /// SHA-256 of the normalized one-time setup code, while no password is set.
    setup_code: Mutex<Option<[u8; 32]>>,
    /// PBKDF2 runs at most this many at a time (it is slow on purpose).
    hashing: Semaphore,
    /// Start of this process: the outcome counters count from here.
    pub started_ms: u64,
}

impl AdminState {
    /// The admin state of a server on `store`. When no admin password is set yet it makes a
    /// one-time setup code and returns it (to be shown to whoever started the server); only
    /// its hash is kept.
    pub fn new(store: &Store, config: AdminConfig) -> store::Result<(AdminState, Option<String>)> {
        let code = match store.has_admin_accounts()? {
            true => None,
            false => Some(new_setup_code()),
        };
        let state = AdminState {
            sessions: session::Sessions::new(config.session_ttl),
            config,
            limiter: session::Limiter::default(),
            setup_code: Mutex::new(code.as_deref().map(code_hash)),
            hashing: Semaphore::new(2),
            started_ms: crate::clock::now_ms(),
        };
        Ok((state, code))
    }

    /// Uses up the setup code if `code` is it.
    fn take_setup_code(&self, code: &str) -> bool {
        let mut slot = self.setup_code.lock().unwrap_or_else(|p| p.into_inner());
        let matches = slot
            .as_ref()
            .is_some_and(|h| bool::from(h.ct_eq(&code_hash(code))));
        if matches {
            *slot = None;
        }
        matches
    }

    /// Puts back a setup code taken by a setup that then failed to store its password.
    fn restore_setup_code(&self, code: &str) {
        *self.setup_code.lock().unwrap_or_else(|p| p.into_inner()) = Some(code_hash(code));
    }
}

const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// 20 characters of a 32-letter alphabet (100 random bits), in four groups of five.
fn new_setup_code() -> String {
    let mut bytes = [0u8; 20];
    rand::fill(&mut bytes[..]);
    let mut code = String::with_capacity(23);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            code.push('-');
        }
        code.push(CODE_ALPHABET[(b & 31) as usize] as char);
    }
    code
}

/// SHA-256 of a setup code, ignoring case, dashes and spaces.
fn code_hash(code: &str) -> [u8; 32] {
    let norm: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    crate::auth::keys::sha256(norm.as_bytes())
}

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no admin session")]
    Unauthorized,
    #[error("cross-origin request")]
    CrossOrigin,
    #[error("missing or wrong CSRF token")]
    CsrfTokenInvalid,
    #[error("wrong password")]
    WrongPassword,
    #[error("wrong setup code")]
    SetupCodeInvalid,
    #[error("the admin password is already set")]
    AlreadySetUp,
    #[error("no admin password is set yet")]
    SetupRequired,
    #[error("this account needs its TOTP code")]
    TotpRequired,
    #[error("wrong TOTP code")]
    TotpInvalid,
    #[error("TOTP code already used")]
    TotpReused,
    #[error("unknown, used or expired invitation")]
    InviteInvalid,
    #[error("too many failed attempts")]
    TooManyAttempts(u64),
    #[error("{0}")]
    PasswordInvalid(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("bad JSON body")]
    BadJson,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("body: {0:?}")]
    Body(Reason),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// The HTTP answer: status, stable reason, and for validation errors a message meant for
    /// the person at the panel. Internal errors are logged and answered without detail.
    fn reply(self, setup_required: bool) -> Reply {
        let (status, reason, message) = match self {
            Error::Unauthorized => {
                let body = json!({
                    "error": "admin_session_required",
                    "setup_required": setup_required,
                });
                return Reply::json(StatusCode::UNAUTHORIZED, &body);
            }
            Error::CrossOrigin => (StatusCode::FORBIDDEN, "cross_origin_request", None),
            Error::CsrfTokenInvalid => (StatusCode::FORBIDDEN, "csrf_token_invalid", None),
            Error::WrongPassword => (StatusCode::UNAUTHORIZED, "wrong_password", None),
            Error::SetupCodeInvalid => (StatusCode::UNAUTHORIZED, "setup_code_invalid", None),
            Error::TotpRequired => (StatusCode::UNAUTHORIZED, "totp_required", None),
            Error::TotpInvalid => (StatusCode::UNAUTHORIZED, "totp_invalid", None),
            Error::TotpReused => (StatusCode::UNAUTHORIZED, "totp_reused", None),
            Error::InviteInvalid => (StatusCode::UNAUTHORIZED, "invite_invalid", None),
            Error::AlreadySetUp => (StatusCode::CONFLICT, "already_set_up", None),
            Error::SetupRequired => (StatusCode::CONFLICT, "setup_required", None),
            Error::TooManyAttempts(secs) => {
                return Reply::json(
                    StatusCode::TOO_MANY_REQUESTS,
                    &json!({ "error": "too_many_attempts" }),
                )
                .retry_after(secs);
            }
            Error::PasswordInvalid(m) => (StatusCode::BAD_REQUEST, "password_invalid", Some(m)),
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, "invalid", Some(m)),
            Error::BadJson => (StatusCode::BAD_REQUEST, "bad_json", None),
            Error::NotFound => (StatusCode::NOT_FOUND, "not_found", None),
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Error::Body(reason) => return Reply::error(reason),
            Error::Store(store::Error::NotFound(m)) => {
                (StatusCode::NOT_FOUND, "not_found", Some(m))
            }
            Error::Store(store::Error::Conflict(m)) => (StatusCode::CONFLICT, "conflict", Some(m)),
            Error::Store(store::Error::Refused(m)) => (StatusCode::BAD_REQUEST, "invalid", Some(m)),
            Error::Store(store::Error::WriterGone) => {
                return Reply::error(Reason::ShuttingDown);
            }
            // Cluster mode: the engine did not take an admin change (in time).
            Error::Store(store::Error::Fenced(e)) => {
                tracing::warn!(error = %e, "admin change not taken by the engine");
                return Reply::error(Reason::StorageUnavailable);
            }
            // Not the caller's doing (damaged data, a bug, the disk): the text is for the log,
            // never for the body. Listed, not matched with `_`, so a new variant is decided.
            Error::Store(
                e @ (store::Error::Db(_)
                | store::Error::Corrupt(_)
                | store::Error::Internal(_)
                | store::Error::AlreadyOpen
                | store::Error::NoDatabase(_)
                | store::Error::Io(_)
                | store::Error::Reopening),
            ) => {
                tracing::error!(error = %e, "admin request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", None)
            }
        };
        let mut body = json!({ "error": reason });
        if let Some(m) = message {
            body["message"] = m.into();
        }
        Reply::json(status, &body)
    }
}

impl From<Reason> for Error {
    fn from(r: Reason) -> Self {
        match status_of(r) {
            StatusCode::BAD_REQUEST if r == Reason::BadJson => Error::BadJson,
            _ => Error::Body(r),
        }
    }
}

/// Everything under `/admin`: the page, its assets and the API. Adds the security headers.
pub async fn handle(
    ctx: &Context,
    admin: &AdminState,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Reply {
    let state = &Env { ctx, admin };
    let path = req.uri().path().to_owned();
    let result = if let Some(rest) = path.strip_prefix("/admin/api/") {
        api::handle(state, req, peer, rest).await
    } else {
        assets::serve(&req, &path)
    };
    let reply = result.unwrap_or_else(|e| {
        let setup_required = matches!(e, Error::Unauthorized)
            && matches!(state.store.has_admin_accounts(), Ok(false));
        e.reply(setup_required)
    });
    secured(reply)
}

/// A body that yields the chunks of an export as they are produced.
struct ChunkBody(tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>);

impl hyper::body::Body for ChunkBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(hyper::body::Frame::data)))
    }
}

/// `GET /admin/api/export`: the events as NDJSON (`application/x-ndjson`), streamed from one
/// read snapshot while the client reads; refusals are the API's usual JSON errors.
pub async fn export(
    ctx: &Context,
    admin: &AdminState,
    req: Request<Incoming>,
) -> hyper::Response<crate::http::Body> {
    let state = &Env { ctx, admin };
    use http_body_util::BodyExt;
    let query = req.uri().query().unwrap_or_default().to_owned();
    let filter = match api::export_filter(state, req.headers(), &query) {
        Ok(f) => f,
        Err(e) => {
            let setup_required = matches!(e, Error::Unauthorized)
                && matches!(state.store.has_admin_accounts(), Ok(false));
            return crate::http::boxed(secured(e.reply(setup_required)).into_response());
        }
    };
    let head = secured(Reply {
        status: StatusCode::OK,
        content_type: "application/x-ndjson",
        body: bytes::Bytes::new(),
        retry_after: None,
        headers: Vec::new(),
    })
    .into_response();
    let (parts, _) = head.into_parts();
    let rx = state.store.export_stream(filter);
    hyper::Response::from_parts(parts, ChunkBody(rx).boxed())
}

/// Adds the admin security headers (`Cache-Control: no-store` is set on every response by
/// [`Reply::into_response`]).
fn secured(mut reply: Reply) -> Reply {
    reply.headers.extend([
        ("content-security-policy", CSP.to_owned()),
        ("x-frame-options", "DENY".to_owned()),
        ("x-content-type-options", "nosniff".to_owned()),
        ("referrer-policy", "no-referrer".to_owned()),
        ("cross-origin-opener-policy", "same-origin".to_owned()),
        ("cross-origin-resource-policy", "same-origin".to_owned()),
    ]);
    reply
}

/// Runs `f` in a write transaction on the writer thread and commits.
async fn write<R: Send + 'static>(
    state: &Env<'_>,
    f: impl FnOnce(&redb::WriteTransaction) -> store::Result<R> + Clone + Send + 'static,
) -> Result<R, Error> {
    // Cluster mode: admin data changes go through the engine (src/cluster/admin.rs).
    if let Some(cluster) = &state.cluster {
        return Ok(cluster.admin.write(&state.writer, f).await?);
    }
    let r = state
        .writer
        .run(move |db| -> store::Result<R> {
            let txn = crate::store::begin_write(db)?;
            let r = f(&txn)?;
            txn.commit()?;
            Ok(r)
        })
        .await??;
    Ok(r)
}

/// The decoded value of query parameter `name`; an empty value counts as absent.
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            crate::dialect::form::decode_text(v.as_bytes()).unwrap_or_else(|| v.to_owned())
        })
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_codes_are_random_grouped_and_forgiving_to_type() {
        let c = new_setup_code();
        assert_eq!(c.len(), 23);
        assert_eq!(c.matches('-').count(), 3);
        assert_ne!(c, new_setup_code());
        assert_eq!(
            code_hash(&c),
            code_hash(&c.to_lowercase().replace('-', " "))
        );
        assert_ne!(code_hash(&c), code_hash(&new_setup_code()));
    }

    /// Damaged data is answered 500 with a generic body (it once came back 400 with the
    /// internal text); a caller's mistake keeps its 4xx and the message meant for them.
    #[test]
    fn damaged_data_is_internal_and_mistakes_are_the_callers() {
        use crate::store::tables::{DEDUPE, DEDUPE_COMMITS, EVENTS, META};
        use redb::ReadableDatabase;
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(EVENTS).unwrap();
        txn.open_table(META).unwrap();
        txn.open_table(DEDUPE).unwrap();
        txn.open_table(DEDUPE_COMMITS)
            .unwrap()
            .insert(1, b"\xffgarbage".as_slice())
            .unwrap();
        txn.commit().unwrap();
        let e = store::dedupe::lookup_committed(&db.begin_read().unwrap(), 1, "e1").unwrap_err();
        assert!(matches!(e, store::Error::Corrupt(_)), "{e:?}");
        let r = Error::Store(e).reply(false);
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(&r.body[..], br#"{"error":"internal_error"}"#);

        let mistake = store::Error::Refused("tenant name \"a b\" must be 1-64 characters".into());
        let r = Error::Store(mistake).reply(false);
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "invalid");
        assert!(body["message"].as_str().unwrap().contains("must be"));
    }
}
