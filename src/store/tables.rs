//! Every redb table of the database, in one place.
//!
//! Values are records from [`super::codec`], each starting with a version byte.

use redb::{ReadableTable, TableDefinition};

/// The schema version this build reads and writes, stored under [`META`]
/// `"schema_version"`. The format is pinned by the committed data dir
/// `tests/fixtures/schema-1/` (opened by `tests/it/fixture.rs`): a change to any table or record
/// layout raises this number and comes with an upgrade path from every released version
/// and a fixture of its own. A file of another version is refused, never guessed at.
pub const SCHEMA_VERSION: u32 = 1;

/// Small settings: `"schema_version"` (u32 BE), `"admin_password"` (JSON config record of
/// [`crate::auth::password::PasswordHash`]), ...
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The append-only event log: seq (1, 2, 3, ... with no gaps) → event record.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Dedupe by full key, app id (u32 BE) ++ event_id bytes → seq, for the rare ids whose
/// fingerprint another id owns (see [`super::dedupe`]).
pub const DEDUPE: TableDefinition<&[u8], u64> = TableDefinition::new("dedupe");
/// Fingerprints not yet in a run, one row per commit: the commit's first new seq → version
/// byte ++ (fingerprint u128 BE ++ seq u64 BE)* (see [`super::dedupe`]). Appends only.
pub const DEDUPE_COMMITS: TableDefinition<u64, &[u8]> = TableDefinition::new("dedupe_commits");
/// Tenant id → tenant record.
pub const TENANTS: TableDefinition<u32, &[u8]> = TableDefinition::new("tenants");
/// App id → app record.
pub const APPS: TableDefinition<u32, &[u8]> = TableDefinition::new("apps");
/// Key id → key record (holds the SHA-256 of the key, never the key).
pub const KEYS: TableDefinition<u32, &[u8]> = TableDefinition::new("keys");
/// First 8 bytes of a key's SHA-256 (big-endian) → key id.
pub const KEY_LOOKUP: TableDefinition<u64, u32> = TableDefinition::new("key_lookup");
/// Key id → last time (ms) a request with it was committed.
pub const KEY_USED: TableDefinition<u32, u64> = TableDefinition::new("key_used");
/// [`usage_key`] (tenant, month) → events accepted that month.
pub const USAGE: TableDefinition<u64, u64> = TableDefinition::new("usage");
/// Raw request bodies (`store::audit`): seq of the request's first accepted event → u16 BE
/// key length ++ audit key ++ body. Appends only.
pub const AUDIT_BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_bodies");
/// Audit keys that do not name their event (batches) → seq of their body in [`AUDIT_BODIES`].
pub const AUDIT_BATCHES: TableDefinition<&str, u64> = TableDefinition::new("audit_batches");
/// Adjust ordering: [`ordering_key`] (app, event token, device) → timestamp (ms) of the last
/// accepted event. Written only by the writer, in the event's transaction.
pub const ORDERING: TableDefinition<&[u8], i64> = TableDefinition::new("adjust_order");
/// Adjust SKAdNetwork: [`skan_key`] (app, device) → the device's conversion value
/// ([`crate::skan::encode`]). Written only by the writer, in the event's transaction.
pub const SKAN_VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("adjust_skan");
/// GameRebellion sessions: [`session_key`] (app id ++ session id) → session record
/// ([`super::codec::encode_session`]: start time, and the identifiers it was started with) of
/// a session that has not ended. Written only by the writer, in the start or end event's
/// transaction.
pub const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("gr_sessions");
/// The open sessions of each set of identifiers, so that a stop or end that names no session
/// finds the latest: [`open_session_key`] (app id ++ identifiers key ++ start time ++ session
/// id) → (). Kept in step with [`SESSIONS`] by the writer.
pub const OPEN_SESSIONS: TableDefinition<&[u8], ()> = TableDefinition::new("gr_open_sessions");

/// [`app_period_key`] (app, UTC day number since the epoch) → events accepted that day.
pub const APP_DAYS: TableDefinition<u64, u64> = TableDefinition::new("app_days");
/// [`app_period_key`] (app, hour number since the epoch) → events accepted in that hour.
pub const APP_HOURS: TableDefinition<u64, u64> = TableDefinition::new("app_hours");

/// The [`APP_DAYS`] / [`APP_HOURS`] key of an app's day or hour.
pub fn app_period_key(app_id: u32, period: u32) -> u64 {
    (u64::from(app_id) << 32) | u64::from(period)
}

/// The [`USAGE`] key of a tenant's month (`month` as from [`crate::clock::month_key`]).
pub fn usage_key(tenant_id: u32, month: u32) -> u64 {
    (u64::from(tenant_id) << 32) | u64::from(month)
}

/// The [`ORDERING`] key of a device (`name=value` of its identifier) and event token.
pub fn ordering_key(app_id: u32, event_token: &str, device: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + event_token.len() + device.len());
    k.extend_from_slice(&app_id.to_be_bytes());
    k.extend_from_slice(event_token.as_bytes());
    k.push(0);
    k.extend_from_slice(device.as_bytes());
    k
}

/// The [`SKAN_VALUES`] key of a device (`name=value` of its identifier) of an app.
pub fn skan_key(app_id: u32, device: &str) -> Vec<u8> {
    dedupe_key(app_id, device)
}

/// The [`SESSIONS`] key of a session id within an app (the same layout as [`dedupe_key`]).
pub fn session_key(app_id: u32, session_id: &str) -> Vec<u8> {
    dedupe_key(app_id, session_id)
}

/// Length of the identifiers key of a session (first 16 bytes of a SHA-256).
pub const IDENTITY_LEN: usize = 16;

/// The prefix of [`OPEN_SESSIONS`] keys of one set of identifiers within an app.
pub fn open_sessions_prefix(app_id: u32, identity: &[u8; IDENTITY_LEN]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + IDENTITY_LEN + 8 + 32);
    k.extend_from_slice(&app_id.to_be_bytes());
    k.extend_from_slice(identity);
    k
}

/// The [`OPEN_SESSIONS`] key of a session (`session_key` as from [`session_key`]): sorted by
/// start time within its identifiers, so the last key of a prefix is the latest session.
pub fn open_session_key(
    session_key: &[u8],
    identity: &[u8; IDENTITY_LEN],
    start_ms: i64,
) -> Vec<u8> {
    let (app, session_id) = session_key.split_at(4);
    let mut k = Vec::with_capacity(4 + IDENTITY_LEN + 8 + session_id.len());
    k.extend_from_slice(app);
    k.extend_from_slice(identity);
    k.extend_from_slice(&(start_ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(session_id);
    k
}

/// The [`DEDUPE`] key of an event id within an app.
pub fn dedupe_key(app_id: u32, event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + event_id.len());
    k.extend_from_slice(&app_id.to_be_bytes());
    k.extend_from_slice(event_id.as_bytes());
    k
}

/// HMAC signing secret id → secret record (`store::secrets`): the secret sealed with the
/// data dir's key (AES-256-GCM), never the plaintext.
pub const SECRETS: TableDefinition<u32, &[u8]> = TableDefinition::new("secrets");

/// app_id u32 BE ++ event_id → its duplicate and rejection tallies (`store::receipts`).
pub const RECEIPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("receipts");
/// app_id u32 BE ++ ord u64 BE → event_id: an app's receipts, oldest first.
pub const RECEIPT_ORDER: TableDefinition<&[u8], &[u8]> = TableDefinition::new("receipt_order");
/// app_id → next ord u64 BE ++ receipts kept u64 BE.
pub const RECEIPT_APPS: TableDefinition<u32, &[u8]> = TableDefinition::new("receipt_apps");

/// Alert rule id → version byte ++ JSON rule (`watch::alerts`).
pub const ALERT_RULES: TableDefinition<u32, &[u8]> = TableDefinition::new("alert_rules");
/// Alert rule id → its open incident (version byte ++ postcard, `watch::alerts`).
pub const ALERT_INCIDENTS: TableDefinition<u32, &[u8]> = TableDefinition::new("alert_incidents");
/// Webhook delivery id → the delivery and its message (version byte ++ postcard), the
/// newest ones (`watch::alerts`).
pub const ALERT_DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("alert_deliveries");

/// Enrichment dictionary id → the members it stands for in an event's `context`
/// (`store::enrichments`): ids from 1, with no gaps.
pub const ENRICHMENTS: TableDefinition<u32, &str> = TableDefinition::new("enrichments");

/// [`META`] key: the highest seq retention removed (u64 BE).
pub const REMOVED_THROUGH: &str = "retention_removed_through";

/// The highest seq ever removed by retention (0 if none): the writer never hands it out again.
pub fn removed_through(txn: &redb::WriteTransaction) -> Result<u64, redb::Error> {
    let meta = txn.open_table(META)?;
    let v = meta.get(REMOVED_THROUGH)?;
    Ok(
        v.and_then(|b| b.value().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0),
    )
}

/// Erasure ledger (`store::privacy`): erasure id → JSON record (salted digests of the erased
/// identifiers, never the identifiers). Admin data: kept across a restore and re-applied.
pub const ERASURES: TableDefinition<&str, &[u8]> = TableDefinition::new("erasures");
/// Suppressed subjects: salted digest of an identifier (32 bytes) → the erasure id (UTF-8)
/// that suppressed it.
pub const SUPPRESSED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("suppressed");

/// app_id → JSON record of the app's rules: business-key dedupe on/off, drop rules
/// (`store::bizkey`).
pub const APP_RULES: TableDefinition<u32, &[u8]> = TableDefinition::new("app_rules");
/// Business-key dedupe: app_id u32 BE ++ u16 BE name length ++ event name ++ transaction id →
/// seq of the stored event that holds it (`store::bizkey`).
pub const BIZKEYS: TableDefinition<&[u8], u64> = TableDefinition::new("bizkeys");
/// app_id u32 BE ++ qid u64 BE → version byte ++ postcard `store::quarantine::Held`: an app's
/// quarantined events, oldest first (quarantine).
pub const QUARANTINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("quarantine");
/// app_id u32 BE ++ event_id → qid: the held event of an id (one per id: kept again, it
/// replaces the older one).
pub const QUARANTINE_IDS: TableDefinition<&[u8], u64> = TableDefinition::new("quarantine_ids");
/// app_id → next qid u64 BE ++ held u64 BE ++ bytes held u64 BE ++ dropped (ever) u64 BE.
pub const QUARANTINE_APPS: TableDefinition<u32, &[u8]> = TableDefinition::new("quarantine_apps");

/// Cluster mode: partition → the last engine sequence of its subject applied to this
/// database (written in the transaction of the batch it records; `cluster::node`).
pub const CLUSTER_APPLIED: TableDefinition<u32, u64> = TableDefinition::new("cluster_applied");
