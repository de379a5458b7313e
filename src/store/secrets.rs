//! HMAC signing secrets of the Datafly dialect: records, writes (inside a caller's write
//! transaction, like `admin`), listing, and request verification with an in-memory cache.
//!
//! A record holds the secret sealed by [`Sealer`] (see `crate::auth::secrets`), never the
//! plaintext. Every write bumps `meta["secrets_version"]` in the same transaction; a verifying
//! request reads that version (one small read) and reloads its cache of unsealed secrets only
//! when it changed, so a revocation or rotation takes effect on the next request without any
//! cross-module invalidation.
//!
//! Which secret signed a request? Datafly's protocol carries no key id: the secret itself
//! names the source. inlet tries every active secret (an installation has a handful) and
//! takes the first whose MAC matches; each comparison is constant-time.

use super::codec::{App, Tenant, decode_config, encode_config};
use super::tables::*;
use super::{Error, Result, Store, find_app, next_id};
use crate::auth::secrets::{Sealer, Verifier, mint};
use crate::event::{hex, unhex};
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

const VERSION_KEY: &str = "secrets_version";
const MAX_LABEL: usize = 64;

/// One stored signing secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Secret {
    pub app_id: u32,
    pub label: String,
    /// nonce ++ AES-256-GCM ciphertext ++ tag, lowercase hex.
    pub sealed: String,
    pub created_ms: u64,
    #[serde(default)]
    pub revoked_ms: Option<u64>,
    /// Set by a rotation: the secret verifies only before this time.
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// Set by a rotation: the secret that replaced this one.
    #[serde(default)]
    pub replaced_by: Option<u32>,
}

impl Secret {
    fn valid_at(&self, now_ms: u64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// A freshly minted secret: its id and the plaintext, shown once.
pub struct Minted {
    pub id: u32,
    pub plaintext: String,
}

fn bump_version(txn: &WriteTransaction) -> Result<()> {
    let mut meta = txn.open_table(META)?;
    let v = meta
        .get(VERSION_KEY)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    meta.insert(VERSION_KEY, &(v + 1).to_be_bytes()[..])?;
    Ok(())
}

fn load(txn: &WriteTransaction, id: u32) -> Result<Secret> {
    match txn.open_table(SECRETS)?.get(id)? {
        Some(bytes) => Ok(decode_config("secret", bytes.value())?),
        None => Err(Error::NotFound(format!("no secret {id}"))),
    }
}

fn insert_new(
    txn: &WriteTransaction,
    sealer: &Sealer,
    app_id: u32,
    label: &str,
    now_ms: u64,
) -> Result<Minted> {
    let mut table = txn.open_table(SECRETS)?;
    let id = next_id(txn, &table, "secret")?;
    let plaintext = mint();
    let record = Secret {
        app_id,
        label: label.to_owned(),
        sealed: hex(&sealer.seal(id, &plaintext)),
        created_ms: now_ms,
        revoked_ms: None,
        expires_ms: None,
        replaced_by: None,
    };
    table.insert(id, encode_config(&record).as_slice())?;
    Ok(Minted { id, plaintext })
}

/// Removes every secret of app `app_id` (the app is being deleted); how many there were.
pub(crate) fn remove_of_app(txn: &WriteTransaction, app_id: u32, dry_run: bool) -> Result<u32> {
    let mut table = txn.open_table(SECRETS)?;
    let mut ids = Vec::new();
    for row in table.iter()? {
        let (id, bytes) = row?;
        let s: Secret = decode_config("secret", bytes.value())?;
        if s.app_id == app_id {
            ids.push(id.value());
        }
    }
    if !dry_run && !ids.is_empty() {
        for id in &ids {
            table.remove(id)?;
        }
        drop(table);
        bump_version(txn)?;
    }
    Ok(ids.len() as u32)
}

/// Mints a secret for `app`.
pub fn mint_secret(
    txn: &WriteTransaction,
    sealer: &Sealer,
    app: &str,
    label: &str,
    now_ms: u64,
) -> Result<Minted> {
    if label.is_empty() || label.chars().count() > MAX_LABEL {
        return Err(Error::Refused(format!(
            "secret label must be 1-{MAX_LABEL} characters"
        )));
    }
    let app_id = find_app(&txn.open_table(APPS)?, app)?
        .ok_or_else(|| Error::NotFound(format!("no app {app:?}")))?
        .0;
    let minted = insert_new(txn, sealer, app_id, label, now_ms)?;
    bump_version(txn)?;
    Ok(minted)
}

/// Revokes a secret at once (also one still in its rotation grace period). Revoking a
/// revoked secret is not an error.
pub fn revoke_secret(txn: &WriteTransaction, id: u32, now_ms: u64) -> Result<Secret> {
    let mut secret = load(txn, id)?;
    if secret.revoked_ms.is_none() {
        secret.revoked_ms = Some(now_ms);
        txn.open_table(SECRETS)?
            .insert(id, encode_config(&secret).as_slice())?;
        bump_version(txn)?;
    }
    Ok(secret)
}

/// Replaces secret `id` by a new one of the same app and label; the old one keeps verifying
/// for `grace_ms` more (0: stops at once).
pub fn rotate_secret(
    txn: &WriteTransaction,
    sealer: &Sealer,
    id: u32,
    grace_ms: u64,
    now_ms: u64,
) -> Result<Minted> {
    let mut old = load(txn, id)?;
    if old.revoked_ms.is_some() {
        return Err(Error::Conflict(format!("secret {id} is revoked")));
    }
    if let Some(new) = old.replaced_by {
        return Err(Error::Conflict(format!(
            "secret {id} was already rotated (replaced by {new})"
        )));
    }
    let minted = insert_new(txn, sealer, old.app_id, &old.label, now_ms)?;
    old.expires_ms = Some(now_ms.saturating_add(grace_ms));
    old.replaced_by = Some(minted.id);
    txn.open_table(SECRETS)?
        .insert(id, encode_config(&old).as_slice())?;
    bump_version(txn)?;
    Ok(minted)
}

/// One row of `secrets list`; never the secret.
#[derive(Debug, Clone, Serialize)]
pub struct SecretRow {
    pub id: u32,
    pub app: String,
    pub label: String,
    pub created_ms: u64,
    /// `active`, `expiring` (rotated, in its grace period), `expired` or `revoked`.
    pub state: &'static str,
    pub expires_ms: Option<u64>,
    pub replaced_by: Option<u32>,
    pub revoked_ms: Option<u64>,
}

/// The app a verified request belongs to.
#[derive(Debug, Clone)]
pub struct Signer {
    pub secret_id: u32,
    pub app_id: u32,
    pub app: String,
    pub tenant_id: u32,
    pub tenant: String,
}

/// Unsealed secrets of unrevoked records, as of one `secrets_version`.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<Option<(u64, Arc<Vec<Entry>>)>>,
}

struct Entry {
    signer: Signer,
    expires_ms: Option<u64>,
    verifier: Verifier,
}

impl Store {
    /// Secrets, optionally of one app.
    pub fn secrets(&self, app: Option<&str>, now_ms: u64) -> Result<Vec<SecretRow>> {
        let txn = self.db.begin_read()?;
        let apps = txn.open_table(APPS)?;
        let only = match app {
            Some(name) => Some(
                find_app(&apps, name)?
                    .ok_or_else(|| Error::NotFound(format!("no app {name:?}")))?
                    .0,
            ),
            None => None,
        };
        let mut rows = Vec::new();
        for row in txn.open_table(SECRETS)?.iter()? {
            let (id, bytes) = row?;
            let s: Secret = decode_config("secret", bytes.value())?;
            if only.is_some_and(|a| a != s.app_id) {
                continue;
            }
            let app = match apps.get(s.app_id)? {
                Some(a) => decode_config::<App>("app", a.value())?.name,
                None => String::new(),
            };
            let state = if s.revoked_ms.is_some() {
                "revoked"
            } else if !s.valid_at(now_ms) {
                "expired"
            } else if s.expires_ms.is_some() {
                "expiring"
            } else {
                "active"
            };
            rows.push(SecretRow {
                id: id.value(),
                app,
                label: s.label,
                created_ms: s.created_ms,
                state,
                expires_ms: s.expires_ms,
                replaced_by: s.replaced_by,
                revoked_ms: s.revoked_ms,
            });
        }
        Ok(rows)
    }

    /// The app whose secret, valid at `now_ms`, made `mac` over `timestamp.body`; `None`
    /// when no such secret exists.
    pub fn verify_signature(
        &self,
        timestamp: &str,
        body: &[u8],
        mac: &[u8],
        now_ms: u64,
    ) -> Result<Option<Signer>> {
        let entries = self.active_secrets()?;
        Ok(entries
            .iter()
            .filter(|e| e.expires_ms.is_none_or(|x| now_ms < x))
            .find(|e| e.verifier.verify(timestamp, body, mac))
            .map(|e| e.signer.clone()))
    }

    /// Whether secret `id` is unrevoked (a rotated one still counts: it signed validly in its
    /// time); for a quarantine replay of a message it signed.
    pub fn secret_unrevoked(&self, id: u32) -> Result<bool> {
        Ok(self
            .active_secrets()?
            .iter()
            .any(|e| e.signer.secret_id == id))
    }

    /// The id of the unrevoked secret `plain` is (to name it where it is redacted).
    pub fn secret_id_of(&self, plain: &str) -> Result<Option<u32>> {
        Ok(self
            .active_secrets()?
            .iter()
            .find(|e| e.verifier.is(plain))
            .map(|e| e.signer.secret_id))
    }

    fn active_secrets(&self) -> Result<Arc<Vec<Entry>>> {
        let txn = self.db.begin_read()?;
        let version = txn
            .open_table(META)?
            .get(VERSION_KEY)?
            .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let mut cache = self
            .secret_cache
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((v, entries)) = cache.as_ref()
            && *v == version
        {
            return Ok(entries.clone());
        }
        let mut entries = Vec::new();
        let table = txn.open_table(SECRETS)?;
        if !table.is_empty()? {
            // A file the operator can put back: unavailable storage, not damaged records.
            let sealer = Sealer::load(self.data_dir())?.ok_or_else(|| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "signing secrets exist but {} is missing from the data dir",
                        crate::auth::secrets::KEY_FILE
                    ),
                ))
            })?;
            let apps = txn.open_table(APPS)?;
            let tenants = txn.open_table(TENANTS)?;
            for row in table.iter()? {
                let (id, bytes) = row?;
                let id = id.value();
                let s: Secret = decode_config("secret", bytes.value())?;
                if s.revoked_ms.is_some() {
                    continue;
                }
                let Some(plain) = unhex(&s.sealed).and_then(|b| sealer.open(id, &b)) else {
                    tracing::error!(
                        secret = id,
                        "a signing secret does not unseal with this data dir's key; skipped"
                    );
                    continue;
                };
                let Some(app_bytes) = apps.get(s.app_id)? else {
                    continue;
                };
                let app: App = decode_config("app", app_bytes.value())?;
                let Some(t_bytes) = tenants.get(app.tenant_id)? else {
                    continue;
                };
                let tenant: Tenant = decode_config("tenant", t_bytes.value())?;
                entries.push(Entry {
                    signer: Signer {
                        secret_id: id,
                        app_id: s.app_id,
                        app: app.name,
                        tenant_id: app.tenant_id,
                        tenant: tenant.name,
                    },
                    expires_ms: s.expires_ms,
                    verifier: Verifier::new(&plain),
                });
            }
        }
        let entries = Arc::new(entries);
        *cache = Some((version, entries.clone()));
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::secrets::{parse_signature, sign};

    fn write<R>(store: &Store, f: impl FnOnce(&WriteTransaction) -> Result<R>) -> R {
        let txn = store.db().unwrap().begin_write().unwrap();
        let r = f(&txn).unwrap();
        txn.commit().unwrap();
        r
    }

    #[test]
    fn rotation_grace_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sealer = Sealer::load_or_create(dir.path()).unwrap();
        let t0 = 1_000_000;
        let old = write(&store, |t| mint_secret(t, &sealer, "default", "web", t0));
        let check = |secret: &str, now: u64| {
            let mac = parse_signature(&sign(secret, "1", b"{}")).unwrap();
            store
                .verify_signature("1", b"{}", &mac, now)
                .unwrap()
                .map(|s| s.secret_id)
        };
        assert_eq!(check(&old.plaintext, t0), Some(old.id));
        assert_eq!(check("sk_wrong", t0), None);
        let new = write(&store, |t| rotate_secret(t, &sealer, old.id, 1000, t0));
        assert_eq!(check(&old.plaintext, t0 + 999), Some(old.id));
        assert_eq!(check(&new.plaintext, t0 + 999), Some(new.id));
        assert_eq!(check(&old.plaintext, t0 + 1000), None, "grace over");
        assert_eq!(check(&new.plaintext, t0 + 1000), Some(new.id));
        let rows = store.secrets(None, t0 + 1).unwrap();
        assert_eq!(rows[0].state, "expiring");
        assert_eq!(rows[1].state, "active");
        assert_eq!(store.secrets(None, t0 + 1000).unwrap()[0].state, "expired");
        assert!(matches!(
            store
                .db()
                .unwrap()
                .begin_write()
                .map_err(Error::from)
                .and_then(|t| rotate_secret(&t, &sealer, old.id, 0, t0)),
            Err(Error::Conflict(_))
        ));
        write(&store, |t| revoke_secret(t, new.id, t0));
        assert_eq!(
            check(&new.plaintext, t0 + 1),
            None,
            "revoked: cache reloaded"
        );
        // Nowhere in the database file.
        let db = std::fs::read(store.path()).unwrap();
        for s in [&old.plaintext, &new.plaintext] {
            assert!(!db.windows(s.len()).any(|w| w == s.as_bytes()));
        }
    }
}
