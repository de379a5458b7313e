//! Admin accounts, their sessions, invitations and the audit log of admin actions: the
//! tables and their writes inside a caller's transaction, and the reads.
//!
//! Credentials are kept only in forms that cannot be used as they are: a password as its
//! PBKDF2 hash, a session or invitation token as its SHA-256, a TOTP secret sealed with the
//! data dir's key (`auth::secrets::Sealer`). The audit log is append-only and bounded: past
//! [`MAX_AUDIT`] entries the oldest go.

use crate::auth::password::PasswordHash;
use crate::store::codec::{decode_config, encode_config};
use crate::store::tables::META;
use crate::store::{Error, Result, Store};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

/// Account name → [`Account`] record.
pub const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("admin_accounts");
/// SHA-256 of a session token → [`SessionRecord`].
pub const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("admin_sessions");
/// SHA-256 of an invitation token → [`Invite`].
pub const INVITES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("admin_invites");
/// Sequence number (1, 2, ...) → [`AuditEntry`]. Appends only; the oldest are trimmed.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("admin_audit");

/// Audit entries kept at most.
pub const MAX_AUDIT: u64 = 10_000;
/// Sessions kept at most; the one closest to expiry goes first.
pub const MAX_SESSIONS: u64 = 1000;
/// Open invitations at most.
pub const MAX_INVITES: u64 = 100;
/// The name of the account the setup code (or an older version's single password) creates.
pub const FIRST_ACCOUNT: &str = "admin";
/// `meta` key of the single admin password of older versions (moved into [`ACCOUNTS`]).
const LEGACY_PASSWORD: &str = "admin_password";

/// One admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    /// Distinguishes accounts in the TOTP secret's seal (never reused within a database).
    pub id: u32,
    pub password: PasswordHash,
    pub created_ms: u64,
    /// Enabled second factor.
    #[serde(default)]
    pub totp: Option<Totp>,
    /// A secret shown at enrolment, not yet confirmed with a code (sealed, hex).
    #[serde(default)]
    pub totp_pending: Option<String>,
}

/// An enabled TOTP second factor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totp {
    /// The secret sealed for this account (hex).
    pub sealed: String,
    /// The last 30-second step whose code was accepted: that code and older ones are used up.
    pub last_step: u64,
}

/// A stored session: who, until when, and the password (by its salt) it was opened with.
/// Its CSRF token is derived from the session token, so it is not stored either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub account: String,
    pub expires_ms: u64,
    pub password_salt: String,
}

/// An open invitation: accepting it creates `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub name: String,
    pub by: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(default)]
    pub seq: u64,
    pub at_ms: u64,
    /// The account, or `cli` for a command run on the server's machine.
    pub actor: String,
    pub action: String,
    pub target: String,
}

/// Checks a new account name: 1-64 of `a-z A-Z 0-9 . _ - @`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "account name {name:?} must be 1-64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

/// Creates the tables, and moves an older version's single admin password into the account
/// [`FIRST_ACCOUNT`]. Part of `Store::init`.
pub fn init(txn: &WriteTransaction, now_ms: u64) -> Result<()> {
    txn.open_table(SESSIONS)?;
    txn.open_table(INVITES)?;
    txn.open_table(AUDIT)?;
    let mut accounts = txn.open_table(ACCOUNTS)?;
    let mut meta = txn.open_table(META)?;
    let legacy = meta.remove(LEGACY_PASSWORD)?.map(|v| v.value().to_vec());
    if let Some(bytes) = legacy
        && accounts.is_empty()?
    {
        let password: PasswordHash = decode_config("admin password", &bytes)?;
        let a = Account {
            name: FIRST_ACCOUNT.to_owned(),
            id: 1,
            password,
            created_ms: now_ms,
            totp: None,
            totp_pending: None,
        };
        accounts.insert(FIRST_ACCOUNT, encode_config(&a).as_slice())?;
    }
    Ok(())
}

/// The account `name`, in a write transaction.
pub fn get(txn: &WriteTransaction, name: &str) -> Result<Option<Account>> {
    let t = txn.open_table(ACCOUNTS)?;
    let v = t.get(name)?;
    Ok(match v {
        Some(b) => Some(decode_config("admin account", b.value())?),
        None => None,
    })
}

/// Stores `account` (new or changed).
pub fn put(txn: &WriteTransaction, account: &Account) -> Result<()> {
    txn.open_table(ACCOUNTS)?
        .insert(account.name.as_str(), encode_config(account).as_slice())?;
    Ok(())
}

/// A new account `name` with `password`; refused if the name is taken. With `only_first`,
/// only while there is no account at all (the setup code's account).
pub fn create(
    txn: &WriteTransaction,
    name: &str,
    password: PasswordHash,
    now_ms: u64,
    only_first: bool,
) -> Result<Account> {
    check_name(name)?;
    let t = txn.open_table(ACCOUNTS)?;
    if only_first && !t.is_empty()? {
        return Err(Error::Conflict("the first admin account exists".into()));
    }
    if t.get(name)?.is_some() {
        return Err(Error::Conflict(format!("account {name:?} exists")));
    }
    let mut id = 0;
    for row in t.iter()? {
        let a: Account = decode_config("admin account", row?.1.value())?;
        id = id.max(a.id);
    }
    drop(t);
    let a = Account {
        name: name.to_owned(),
        id: id + 1,
        password,
        created_ms: now_ms,
        totp: None,
        totp_pending: None,
    };
    put(txn, &a)?;
    Ok(a)
}

/// Sets the password of `name`, creating the account when absent (the operator's way back
/// in: `inlet admin set-password`). Ends the account's sessions.
pub fn set_password(
    txn: &WriteTransaction,
    name: &str,
    password: PasswordHash,
    now_ms: u64,
) -> Result<()> {
    match get(txn, name)? {
        Some(mut a) => {
            a.password = password;
            put(txn, &a)?;
            end_sessions_of(txn, name)?;
        }
        None => {
            create(txn, name, password, now_ms, false)?;
        }
    }
    Ok(())
}

/// Turns the TOTP second factor of `name` off (and any enrolment in progress); ends its
/// sessions.
pub fn reset_totp(txn: &WriteTransaction, name: &str) -> Result<()> {
    let mut a =
        get(txn, name)?.ok_or_else(|| Error::NotFound(format!("no admin account {name:?}")))?;
    a.totp = None;
    a.totp_pending = None;
    put(txn, &a)?;
    end_sessions_of(txn, name)?;
    Ok(())
}

/// Removes the account `name` and its sessions; never the last account.
pub fn remove(txn: &WriteTransaction, name: &str) -> Result<()> {
    let mut t = txn.open_table(ACCOUNTS)?;
    if t.get(name)?.is_none() {
        return Err(Error::NotFound(format!("no admin account {name:?}")));
    }
    if t.len()? <= 1 {
        return Err(Error::Conflict(
            "the last admin account cannot be removed".into(),
        ));
    }
    t.remove(name)?;
    drop(t);
    end_sessions_of(txn, name)?;
    Ok(())
}

/// Deletes every session of `name`.
pub fn end_sessions_of(txn: &WriteTransaction, name: &str) -> Result<u64> {
    let mut t = txn.open_table(SESSIONS)?;
    let mut n = 0;
    t.retain(|_, v| {
        let mine = decode_config::<SessionRecord>("admin session", v)
            .map(|s| s.account == name)
            .unwrap_or(false);
        n += u64::from(mine);
        !mine
    })?;
    Ok(n)
}

/// Stores a session under the SHA-256 of its token; drops expired ones, and the one closest
/// to expiry when [`MAX_SESSIONS`] are kept.
pub fn add_session(
    txn: &WriteTransaction,
    token_hash: &[u8; 32],
    s: &SessionRecord,
    now_ms: u64,
) -> Result<()> {
    let mut t = txn.open_table(SESSIONS)?;
    let live = |v: &[u8]| {
        decode_config::<SessionRecord>("admin session", v).is_ok_and(|s| s.expires_ms > now_ms)
    };
    t.retain(|_, v| live(v))?;
    if t.len()? >= MAX_SESSIONS {
        let mut oldest: Option<(Vec<u8>, u64)> = None;
        for row in t.iter()? {
            let (k, v) = row?;
            let e = decode_config::<SessionRecord>("admin session", v.value())?.expires_ms;
            if oldest.as_ref().is_none_or(|(_, o)| e < *o) {
                oldest = Some((k.value().to_vec(), e));
            }
        }
        if let Some((k, _)) = oldest {
            t.remove(k.as_slice())?;
        }
    }
    t.insert(token_hash.as_slice(), encode_config(s).as_slice())?;
    Ok(())
}

/// Deletes one session.
pub fn end_session(txn: &WriteTransaction, token_hash: &[u8; 32]) -> Result<()> {
    txn.open_table(SESSIONS)?.remove(token_hash.as_slice())?;
    Ok(())
}

/// Stores an invitation under the SHA-256 of its token (expired ones are dropped).
pub fn add_invite(
    txn: &WriteTransaction,
    token_hash: &[u8; 32],
    invite: &Invite,
    now_ms: u64,
) -> Result<()> {
    check_name(&invite.name)?;
    if get(txn, &invite.name)?.is_some() {
        return Err(Error::Conflict(format!("account {:?} exists", invite.name)));
    }
    let mut t = txn.open_table(INVITES)?;
    t.retain(|_, v| {
        decode_config::<Invite>("admin invite", v).is_ok_and(|i| i.expires_ms > now_ms)
    })?;
    if t.len()? >= MAX_INVITES {
        return Err(Error::Conflict(format!(
            "{MAX_INVITES} invitations are open: wait for some to be accepted or expire"
        )));
    }
    t.insert(token_hash.as_slice(), encode_config(invite).as_slice())?;
    Ok(())
}

/// Uses up the invitation of `token_hash` and creates its account with `password`.
pub fn accept_invite(
    txn: &WriteTransaction,
    token_hash: &[u8; 32],
    password: PasswordHash,
    now_ms: u64,
) -> Result<Account> {
    let invite = {
        let mut t = txn.open_table(INVITES)?;
        let v = t.remove(token_hash.as_slice())?;
        match v {
            Some(b) => decode_config::<Invite>("admin invite", b.value())?,
            None => return Err(Error::NotFound("unknown or used invitation".into())),
        }
    };
    if invite.expires_ms <= now_ms {
        return Err(Error::NotFound("the invitation has expired".into()));
    }
    create(txn, &invite.name, password, now_ms, false)
}

/// Appends an audit entry; the oldest go past [`MAX_AUDIT`].
pub fn audit(txn: &WriteTransaction, mut entry: AuditEntry) -> Result<()> {
    let mut t = txn.open_table(AUDIT)?;
    entry.seq = t.last()?.map_or(1, |(k, _)| k.value() + 1);
    t.insert(entry.seq, encode_config(&entry).as_slice())?;
    while t.len()? > MAX_AUDIT {
        t.pop_first()?;
    }
    Ok(())
}

impl Store {
    /// Whether any admin account exists (else the panel needs its setup).
    pub fn has_admin_accounts(&self) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(!txn.open_table(ACCOUNTS)?.is_empty()?)
    }

    /// The account `name`.
    pub fn admin_account(&self, name: &str) -> Result<Option<Account>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ACCOUNTS)?;
        let v = t.get(name)?;
        Ok(match v {
            Some(b) => Some(decode_config("admin account", b.value())?),
            None => None,
        })
    }

    /// Every account, by name.
    pub fn admin_accounts(&self) -> Result<Vec<Account>> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(ACCOUNTS)?.iter()? {
            out.push(decode_config("admin account", row?.1.value())?);
        }
        Ok(out)
    }

    /// Open invitations (not expired at `now_ms`), as (name, by, expires).
    pub fn admin_invites(&self, now_ms: u64) -> Result<Vec<Invite>> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(INVITES)?.iter()? {
            let i: Invite = decode_config("admin invite", row?.1.value())?;
            if i.expires_ms > now_ms {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Whether an invitation is open under `token_hash` at `now_ms`.
    pub fn admin_invite_open(&self, token_hash: &[u8; 32], now_ms: u64) -> Result<bool> {
        let txn = self.db.begin_read()?;
        let v = txn.open_table(INVITES)?.get(token_hash.as_slice())?;
        Ok(match v {
            Some(b) => decode_config::<Invite>("admin invite", b.value())?.expires_ms > now_ms,
            None => false,
        })
    }

    /// The session stored under `token_hash`, with its account, if both exist.
    pub fn admin_session(&self, token_hash: &[u8; 32]) -> Result<Option<(SessionRecord, Account)>> {
        let txn = self.db.begin_read()?;
        let v = txn.open_table(SESSIONS)?.get(token_hash.as_slice())?;
        let Some(v) = v else { return Ok(None) };
        let s: SessionRecord = decode_config("admin session", v.value())?;
        let a = txn.open_table(ACCOUNTS)?.get(s.account.as_str())?;
        Ok(match a {
            Some(a) => Some((s, decode_config("admin account", a.value())?)),
            None => None,
        })
    }

    /// Sessions stored (live or not yet swept).
    pub fn admin_session_count(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(SESSIONS)?.len()?)
    }

    /// Audit entries, newest first: at most `limit`, with seq below `before` when given.
    pub fn admin_audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for row in t.range(..before.unwrap_or(u64::MAX))?.rev().take(limit) {
            out.push(decode_config("audit entry", row?.1.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    fn hash() -> PasswordHash {
        PasswordHash {
            alg: "pbkdf2-hmac-sha256".into(),
            iterations: 1,
            salt: "00".into(),
            hash: "00".into(),
        }
    }

    /// An older version's single password becomes the account `admin`, once.
    #[test]
    fn the_single_password_of_older_versions_becomes_account_admin() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(LEGACY_PASSWORD, encode_config(&hash()).as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let a = store.admin_account(FIRST_ACCOUNT).unwrap().unwrap();
        assert_eq!(a.password, hash());
        let txn = store.db().unwrap().begin_read().unwrap();
        assert!(
            txn.open_table(META)
                .unwrap()
                .get(LEGACY_PASSWORD)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_last_account_stays_and_removal_ends_its_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let txn = db.begin_write().unwrap();
        create(&txn, "admin", hash(), 1, true).unwrap();
        assert!(
            create(&txn, "second", hash(), 1, true).is_err(),
            "first only"
        );
        let b = create(&txn, "bob", hash(), 1, false).unwrap();
        assert_eq!(b.id, 2);
        let s = |account: &str| SessionRecord {
            account: account.into(),
            expires_ms: 100,
            password_salt: "00".into(),
        };
        add_session(&txn, &[1; 32], &s("bob"), 1).unwrap();
        add_session(&txn, &[2; 32], &s("admin"), 1).unwrap();
        remove(&txn, "bob").unwrap();
        assert!(matches!(remove(&txn, "admin"), Err(Error::Conflict(_))));
        assert!(matches!(remove(&txn, "bob"), Err(Error::NotFound(_))));
        assert!(check_name("a b").is_err());
        for i in 0..(MAX_AUDIT + 5) {
            audit(
                &txn,
                AuditEntry {
                    seq: 0,
                    at_ms: i,
                    actor: "a".into(),
                    action: "x".into(),
                    target: String::new(),
                },
            )
            .unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(store.admin_session_count().unwrap(), 1);
        assert!(store.admin_session(&[1; 32]).unwrap().is_none());
        assert!(store.admin_session(&[2; 32]).unwrap().is_some());
        let log = store.admin_audit(None, 3).unwrap();
        assert_eq!(log[0].seq, MAX_AUDIT + 5);
        assert_eq!(log.len(), 3);
        let txn = store.db().unwrap().begin_read().unwrap();
        assert_eq!(txn.open_table(AUDIT).unwrap().len().unwrap(), MAX_AUDIT);
    }
}
