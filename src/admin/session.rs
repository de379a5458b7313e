//! Admin sessions, the same-origin + CSRF check, and the login rate limit.
//!
//! The admin capability is a type: [`AdminSession`] can only be made by
//! [`Sessions::authenticate`] from a valid session cookie, and [`WriteSession`] only by
//! [`AdminSession::for_write`] after the same-origin and CSRF checks. Handlers take one of
//! them as an argument, so a handler cannot be reached without the check it needs.
//!
//! Session tokens are 256 random bits; only their SHA-256 is kept, in the database
//! (`store::accounts`), so sessions survive a restart. A session ends when it expires, at
//! logout, when its account is removed, and when the account's password changes (it
//! remembers the salt of the password it was opened with).

use super::Error;
use crate::event::hex;
use crate::store::Store;
use crate::store::accounts::SessionRecord;
use hyper::HeaderMap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "inlet_admin";
/// The request header that carries the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How sessions are made and checked; the sessions themselves are in the store.
pub struct Sessions {
    ttl: Duration,
}

/// Proof that the request carried a valid session cookie.
#[derive(Debug)]
pub struct AdminSession {
    token_hash: [u8; 32],
    csrf: String,
    expires_ms: u64,
    account: String,
}

/// Proof that the request carried a valid session and passed the same-origin and CSRF checks:
/// what state-changing handlers take.
#[derive(Debug)]
pub struct WriteSession(AdminSession);

/// A new session: the cookie value (sent once, never stored) and its CSRF token.
pub struct NewSession {
    pub token: String,
    pub csrf: String,
    pub expires_ms: u64,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes[..]);
    hex(&bytes)
}

/// SHA-256 of a token (sessions, invitations): what the store keeps.
pub fn token_hash(token: &str) -> [u8; 32] {
    crate::auth::keys::sha256(token.as_bytes())
}

/// The CSRF token of the session whose cookie holds `token`: derived, never stored.
fn csrf_of(token: &str) -> String {
    hex(&crate::auth::keys::sha256(
        format!("inlet-csrf:{token}").as_bytes(),
    ))
}

/// A new random token (64 hex digits).
pub fn new_token() -> String {
    random_hex()
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions { ttl }
    }

    /// A new session of `account`, whose password hash has `password_salt`: what the client
    /// gets, and what the store keeps under the returned token hash (the caller writes it,
    /// `store::accounts::add_session`).
    pub fn open(
        &self,
        now_ms: u64,
        account: &str,
        password_salt: &str,
    ) -> (NewSession, [u8; 32], SessionRecord) {
        let token = random_hex();
        let csrf = csrf_of(&token);
        let expires_ms = now_ms + self.ttl.as_millis() as u64;
        let record = SessionRecord {
            account: account.to_owned(),
            expires_ms,
            password_salt: password_salt.to_owned(),
        };
        let hash = token_hash(&token);
        (
            NewSession {
                token,
                csrf,
                expires_ms,
            },
            hash,
            record,
        )
    }

    /// The session of the request's cookie, if it is stored, live, its account exists and
    /// it was opened with the account's current password.
    pub fn authenticate(
        &self,
        store: &Store,
        headers: &HeaderMap,
        now_ms: u64,
    ) -> Result<AdminSession, Error> {
        let token = cookie(headers, COOKIE).ok_or(Error::Unauthorized)?;
        let hash = token_hash(token);
        let Some((s, account)) = store.admin_session(&hash)? else {
            return Err(Error::Unauthorized);
        };
        if s.expires_ms <= now_ms || s.password_salt != account.password.salt {
            return Err(Error::Unauthorized);
        }
        Ok(AdminSession {
            token_hash: hash,
            csrf: csrf_of(token),
            expires_ms: s.expires_ms,
            account: s.account,
        })
    }
}

impl WriteSession {
    /// The token hash of the session (to end it).
    pub fn token_hash(&self) -> [u8; 32] {
        self.0.token_hash
    }

    /// The account acting.
    pub fn account(&self) -> &str {
        &self.0.account
    }
}

impl AdminSession {
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub fn expires_ms(&self) -> u64 {
        self.expires_ms
    }

    /// The account this session belongs to.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Checks that a state-changing request is same-origin and carries this session's CSRF
    /// token.
    pub fn for_write(self, headers: &HeaderMap) -> Result<WriteSession, Error> {
        same_origin(headers)?;
        let sent = headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(sent.ct_eq(self.csrf.as_bytes())) {
            return Err(Error::CsrfTokenInvalid);
        }
        Ok(WriteSession(self))
    }
}

/// Refuses a request a browser marks as coming from another site: `Sec-Fetch-Site` other
/// than `same-origin`, or an `Origin` that is not this server's. A request with neither header
/// comes from a non-browser client (curl, scripts), which cross-site requests cannot be.
pub fn same_origin(headers: &HeaderMap) -> Result<(), Error> {
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Err(Error::CrossOrigin);
    }
    if let Some(origin) = headers.get(hyper::header::ORIGIN) {
        let host = headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or(Error::CrossOrigin)?;
        let origin = origin.to_str().map_err(|_| Error::CrossOrigin)?;
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !same {
            return Err(Error::CrossOrigin);
        }
    }
    Ok(())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie(s: &NewSession, ttl: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={}; Path=/admin; Max-Age={}; HttpOnly; SameSite=Strict{}",
        s.token,
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Failed logins in a row before a client is locked out.
pub const MAX_FAILURES: u32 = 10;
/// First lockout; each further one (one more failure after a lockout ended) doubles it.
const LOCKOUT: Duration = Duration::from_secs(60);
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Clients tracked at most; when full of locked clients, new ones are refused too (fail
/// closed rather than forget a lockout).
const MAX_CLIENTS: usize = 10_000;

#[derive(Default)]
struct Failures {
    in_a_row: u32,
    lockouts: u32,
    locked_until_ms: u64,
    last_ms: u64,
}

/// Failed login (and setup) attempts per client address (IPv6 per /64).
#[derive(Default)]
pub struct Limiter {
    inner: Mutex<HashMap<IpAddr, Failures>>,
}

fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

fn secs_until(until_ms: u64, now_ms: u64) -> u64 {
    until_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

impl Limiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(seconds to wait)` while `ip` is locked out.
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        let mut m = self.lock();
        if let Some(f) = m.get(&client(ip)) {
            return match f.locked_until_ms > now_ms {
                true => Err(secs_until(f.locked_until_ms, now_ms)),
                false => Ok(()),
            };
        }
        if m.len() >= MAX_CLIENTS {
            let stale = now_ms.saturating_sub(MAX_LOCKOUT.as_millis() as u64);
            m.retain(|_, f| f.locked_until_ms > now_ms || f.last_ms > stale);
            if m.len() >= MAX_CLIENTS {
                return Err(LOCKOUT.as_secs());
            }
        }
        Ok(())
    }

    /// Records a failure; `Some(seconds)` when it locked the client out.
    pub fn failed(&self, ip: IpAddr, now_ms: u64) -> Option<u64> {
        let mut m = self.lock();
        let f = m.entry(client(ip)).or_default();
        f.in_a_row += 1;
        f.last_ms = now_ms;
        if f.in_a_row < MAX_FAILURES {
            return None;
        }
        f.lockouts += 1;
        let lock = LOCKOUT
            .saturating_mul(1 << (f.lockouts - 1).min(10))
            .min(MAX_LOCKOUT);
        f.locked_until_ms = now_ms + lock.as_millis() as u64;
        // One more failure after this lockout ends locks again, for longer.
        f.in_a_row = MAX_FAILURES - 1;
        Some(lock.as_secs())
    }

    /// A success forgets the client's failures.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().remove(&client(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::accounts;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// A store with accounts `admin` (password salt `s1`) and a session opener.
    fn store_with_account(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        let hash = crate::auth::password::PasswordHash {
            alg: "pbkdf2-hmac-sha256".into(),
            iterations: 1,
            salt: "s1".into(),
            hash: "00".into(),
        };
        accounts::create(&txn, "admin", hash, 0, true).unwrap();
        txn.commit().unwrap();
        store
    }

    fn open(store: &Store, s: &Sessions, now: u64, salt: &str) -> NewSession {
        let (new, hash, record) = s.open(now, "admin", salt);
        let txn = store.db().unwrap().begin_write().unwrap();
        accounts::add_session(&txn, &hash, &record, now).unwrap();
        txn.commit().unwrap();
        new
    }

    #[test]
    fn sessions_need_the_cookie_a_live_expiry_and_the_same_password() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_account(dir.path());
        let s = Sessions::new(Duration::from_secs(60));
        let new = open(&store, &s, 1000, "s1");
        let ok = headers(&[("cookie", &format!("a=b; {COOKIE}={}", new.token))]);
        let session = s.authenticate(&store, &ok, 2000).unwrap();
        assert_eq!(session.csrf(), new.csrf);
        assert_eq!(session.account(), "admin");
        assert!(s.authenticate(&store, &headers(&[]), 2000).is_err());
        let wrong = headers(&[("cookie", &format!("{COOKIE}={}", "0".repeat(64)))]);
        assert!(s.authenticate(&store, &wrong, 2000).is_err());
        assert!(s.authenticate(&store, &ok, 61_000).is_err(), "expired");
        let stale = open(&store, &s, 1000, "s0");
        let stale = headers(&[("cookie", &format!("{COOKIE}={}", stale.token))]);
        assert!(
            s.authenticate(&store, &stale, 2000).is_err(),
            "password changed"
        );
    }

    #[test]
    fn writes_need_same_origin_and_the_csrf_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_account(dir.path());
        let s = Sessions::new(Duration::from_secs(60));
        let new = open(&store, &s, 0, "s1");
        let cookie = format!("{COOKIE}={}", new.token);
        let auth = |extra: &[(&'static str, &str)]| {
            let mut pairs = vec![("cookie", cookie.as_str()), ("host", "inlet.test:8080")];
            pairs.extend_from_slice(extra);
            let h = headers(&pairs);
            s.authenticate(&store, &h, 1).unwrap().for_write(&h)
        };
        assert!(auth(&[("x-csrf-token", &new.csrf)]).is_ok());
        assert!(matches!(auth(&[]), Err(Error::CsrfTokenInvalid)));
        assert!(matches!(
            auth(&[("x-csrf-token", "nope")]),
            Err(Error::CsrfTokenInvalid)
        ));
        let csrf = new.csrf.as_str();
        for bad in [
            vec![("origin", "http://evil.test"), ("x-csrf-token", csrf)],
            vec![("origin", "null"), ("x-csrf-token", csrf)],
            vec![("sec-fetch-site", "cross-site"), ("x-csrf-token", csrf)],
            vec![("sec-fetch-site", "same-site"), ("x-csrf-token", csrf)],
        ] {
            assert!(matches!(auth(&bad), Err(Error::CrossOrigin)), "{bad:?}");
        }
        assert!(
            auth(&[
                ("origin", "http://inlet.test:8080"),
                ("sec-fetch-site", "same-origin"),
                ("x-csrf-token", csrf)
            ])
            .is_ok()
        );
    }

    #[test]
    fn ten_failures_lock_out_and_lockouts_grow() {
        let l = Limiter::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 1..MAX_FAILURES {
            assert!(l.check(ip, 0).is_ok());
            assert_eq!(l.failed(ip, 0), None, "failure {i}");
        }
        assert_eq!(l.failed(ip, 0), Some(60));
        assert_eq!(l.check(ip, 1000), Err(59));
        assert!(l.check("192.0.2.8".parse().unwrap(), 1000).is_ok());
        assert!(l.check(ip, 60_000).is_ok());
        assert_eq!(l.failed(ip, 60_000), Some(120));
        l.succeeded(ip);
        assert!(l.check(ip, 60_001).is_ok());
        assert_eq!(l.failed(ip, 60_001), None);
        // IPv6 clients are counted per /64.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            l.failed(a, 0);
        }
        assert!(l.check(b, 1).is_err());
    }
}
