//! The erasure ledger and the suppression list: admin data of the log's file that holds no
//! personal data. An identifier is kept only as a salted digest ([`digest`]): SHA-256 of the
//! database's random salt, the app and the encoded identifier. Whoever holds the file can test
//! a guessed identifier only with the salt, which is in the same file: the digests say "this
//! was erased", not who.
//!
//! A ledger entry is written (pending) before an erasure deletes anything and marked applied
//! after the rewritten file is in place, so an interrupted erasure is found and finished when
//! the database is opened next (`privacy::resume`), and a restored backup gets every erasure
//! of the ledger applied again (`ops::backup::restore`).

use super::codec::{decode_config, encode_config};
use super::tables::{ERASURES, META, SUPPRESSED};
use super::{Error, Result};
use crate::event::{hex, unhex};
use redb::{ReadableTable, WriteTransaction};
use ring::digest::{SHA256, digest as sha256};
use serde::{Deserialize, Serialize};

/// [`META`] key of the salt of the digests (32 random bytes).
pub const SALT: &str = "privacy_salt";

/// One erasure, as the ledger keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Erasure {
    pub id: String,
    pub app: String,
    pub at_ms: u64,
    /// The salt of `identifiers` (hex): the database's salt when the erasure was made.
    pub salt: String,
    /// Salted digests (hex) of every identifier of the erased profile, sorted.
    pub identifiers: Vec<String>,
    /// The kinds of those identifiers (`user_id`, `idfa`, ...), sorted, without values.
    pub kinds: Vec<String>,
    /// Events erased (by the first application; a re-application adds what it found).
    pub events: u64,
    /// Later events carrying one of the identifiers are refused.
    pub suppress: bool,
    /// False until every store has been rewritten without the erased data.
    pub applied: bool,
    /// SHA-256 (hex) over the receipt's fields: what a studio keeps to show what was done.
    pub digest: String,
}

impl Erasure {
    /// The receipt digest: SHA-256 of `id \n app \n at_ms \n events \n digests...`.
    pub fn receipt_digest(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n{}", self.id, self.app, self.at_ms, self.events);
        for d in &self.identifiers {
            text.push('\n');
            text.push_str(d);
        }
        hex(sha256(&SHA256, text.as_bytes()).as_ref())
    }

    /// The salt of the entry's digests.
    pub fn salt_bytes(&self) -> Result<Vec<u8>> {
        unhex(&self.salt).ok_or_else(|| Error::Corrupt(format!("erasure {}: bad salt", self.id)))
    }
}

/// The salted digest of an encoded identifier (`identity::encode`) of `app`.
pub fn digest(salt: &[u8], app: &str, identifier: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&SHA256);
    ctx.update(salt);
    ctx.update(&(app.len() as u32).to_be_bytes());
    ctx.update(app.as_bytes());
    ctx.update(identifier);
    ctx.finish().as_ref().try_into().expect("32 bytes")
}

/// The database's salt, made on first use.
pub fn salt(txn: &WriteTransaction) -> Result<Vec<u8>> {
    let mut meta = txn.open_table(META)?;
    if let Some(s) = meta.get(SALT)? {
        return Ok(s.value().to_vec());
    }
    let mut s = [0u8; 32];
    rand::fill(&mut s[..]);
    meta.insert(SALT, &s[..])?;
    Ok(s.to_vec())
}

/// The salt, if one was made (read side).
pub fn read_salt(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<Vec<u8>>> {
    Ok(meta.get(SALT)?.map(|s| s.value().to_vec()))
}

/// Writes (or replaces) a ledger entry.
pub fn put(txn: &WriteTransaction, e: &Erasure) -> Result<()> {
    txn.open_table(ERASURES)?
        .insert(e.id.as_str(), encode_config(e).as_slice())?;
    Ok(())
}

/// Every ledger entry, oldest first (ids are time-ordered).
pub fn list(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Vec<Erasure>> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, v) = row?;
        out.push(decode_config("erasure", v.value())?);
    }
    Ok(out)
}

/// Adds the digests of `e` to the suppression list.
pub fn suppress(txn: &WriteTransaction, e: &Erasure) -> Result<()> {
    let mut t = txn.open_table(SUPPRESSED)?;
    for d in &e.identifiers {
        let d = unhex(d).ok_or_else(|| Error::Corrupt("bad digest".into()))?;
        t.insert(d.as_slice(), e.id.as_bytes())?;
    }
    suppression_changed(txn)
}

/// [`META`] key of the suppression list's version (u64 BE), bumped by every change to it, so
/// a reader may keep the list in memory while the version stays.
const SUPPRESSION_VERSION: &str = "suppression_version";

/// Bumps the suppression list's version: call in every transaction that changes the list.
pub fn suppression_changed(txn: &WriteTransaction) -> Result<()> {
    let mut meta = txn.open_table(META)?;
    let next = suppression_version(&meta)? + 1;
    meta.insert(SUPPRESSION_VERSION, next.to_be_bytes().as_slice())?;
    Ok(())
}

/// The suppression list's version (0: never changed).
pub fn suppression_version(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    Ok(meta
        .get(SUPPRESSION_VERSION)?
        .and_then(|v| v.value().try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

/// What an app keeps of a request's client (`inlet apps store-less`): applied on arrival to
/// `context.ip` and `context.user_agent` of every event and to the raw body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreLess {
    #[serde(default)]
    pub ip: IpPolicy,
    #[serde(default)]
    pub drop_user_agent: bool,
    /// Per-field retention: events older than this many days lose `context.ip`,
    /// `context.user_agent`, their device ids (`ids`) and their raw bodies (retention pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpPolicy {
    #[default]
    Keep,
    /// IPv4 to its /24, IPv6 to its /48 (the rest zero).
    Truncate,
    Drop,
}

impl StoreLess {
    pub fn is_keep_all(&self) -> bool {
        *self == StoreLess::default()
    }
}

/// [`META`] key prefix of an app's [`StoreLess`] (`store_less.<app id>` → JSON).
const STORE_LESS: &str = "store_less.";

/// Sets `app`'s policy (by name); returns it.
pub fn set_store_less(txn: &WriteTransaction, app: &str, policy: StoreLess) -> Result<StoreLess> {
    let (id, _) = super::find_app(&txn.open_table(super::tables::APPS)?, app)?
        .ok_or_else(|| Error::NotFound(format!("no app {app:?}")))?;
    let key = format!("{STORE_LESS}{id}");
    let mut meta = txn.open_table(META)?;
    if policy.is_keep_all() {
        meta.remove(key.as_str())?;
    } else {
        meta.insert(key.as_str(), encode_config(&policy).as_slice())?;
    }
    Ok(policy)
}

/// Every app's policy that keeps less than all: app id → policy.
pub fn store_less_all(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<std::collections::HashMap<u32, StoreLess>> {
    let mut out = std::collections::HashMap::new();
    for row in meta.range(STORE_LESS..)? {
        let (k, v) = row?;
        let Some(id) = k.value().strip_prefix(STORE_LESS) else {
            break;
        };
        if let Ok(id) = id.parse() {
            out.insert(id, decode_config("store_less", v.value())?);
        }
    }
    Ok(out)
}

/// Lifts the suppression made by erasure `id`; returns how many identifiers it freed.
pub fn lift(txn: &WriteTransaction, id: &str) -> Result<u64> {
    let mut t = txn.open_table(SUPPRESSED)?;
    let mine: Vec<Vec<u8>> = t
        .iter()?
        .filter_map(|r| r.ok())
        .filter(|(_, v)| v.value() == id.as_bytes())
        .map(|(k, _)| k.value().to_vec())
        .collect();
    for k in &mine {
        t.remove(k.as_slice())?;
    }
    drop(t);
    suppression_changed(txn)?;
    let mut ledger = txn.open_table(ERASURES)?;
    let Some(bytes) = ledger.get(id)?.map(|v| v.value().to_vec()) else {
        return Err(Error::NotFound(format!("no erasure {id:?}")));
    };
    let mut e: Erasure = decode_config("erasure", &bytes)?;
    e.suppress = false;
    ledger.insert(id, encode_config(&e).as_slice())?;
    Ok(mine.len() as u64)
}
