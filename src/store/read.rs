//! Reads: authentication lookups, listings, export. Each runs in its own read transaction and
//! never waits for the writer.

use super::codec::{App, EventRecord, Key, Tenant, decode_config, decode_event};
use super::enrichments::Expand;
use super::tables::*;
use super::{Result, Store, find_app};
use crate::auth::keys;
use crate::clock::month_key;
use redb::{ReadTransaction, ReadableTable};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
use std::io::Write;

/// An authenticated, unrevoked key and where its events go.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub key_id: u32,
    pub app_id: u32,
    pub app: String,
    pub tenant_id: u32,
    pub tenant: String,
    /// Empty = every event name.
    pub allowed_events: Vec<String>,
    pub rate_limit: Option<u32>,
}

impl KeyInfo {
    pub fn allows(&self, event_name: &str) -> bool {
        self.allowed_events.is_empty() || self.allowed_events.iter().any(|e| e == event_name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantRow {
    pub id: u32,
    pub name: String,
    pub monthly_quota: u64,
    /// Events accepted in the current calendar month (UTC).
    pub used_this_month: u64,
    pub created_ms: u64,
    /// Its own retention in days (0 = forever); `None` = the server's `retention_days`.
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppRow {
    pub id: u32,
    pub name: String,
    pub tenant: String,
    pub created_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjust_app_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appsflyer_bundle_id: Option<String>,
    /// Adjust `event_token` → event name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub adjust_events: std::collections::BTreeMap<String, String>,
    /// Adjust requests may come without a key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub adjust_token_optional: bool,
    /// SKAdNetwork conversion value rules for Adjust iOS 14+ requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjust_skan: Option<crate::skan::Rules>,
    /// What it keeps less of (`inlet apps store-less`), when anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_less: Option<super::privacy::StoreLess>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    pub id: u32,
    pub app: String,
    pub label: String,
    pub allowed_events: Vec<String>,
    pub rate_limit: Option<u32>,
    pub created_ms: u64,
    pub last_used_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
}

/// What `export` selects.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub app: Option<String>,
    /// Only events with a larger seq.
    pub after: u64,
    pub limit: Option<u64>,
    /// Only events received at or after this time (ms).
    pub since_ms: Option<u64>,
    /// Only events received before this time (ms).
    pub until_ms: Option<u64>,
    /// Only events of this source (`reflect`, ...).
    pub source: Option<String>,
    /// Only events with this name.
    pub event: Option<String>,
}

impl ExportFilter {
    fn selects(&self, r: &EventRecord) -> bool {
        self.app.as_ref().is_none_or(|a| *a == r.app)
            && self.source.as_ref().is_none_or(|s| *s == r.source)
            && self.event.as_ref().is_none_or(|e| *e == r.event_name)
            && self.since_ms.is_none_or(|t| r.received_at_ms >= t)
            && self.until_ms.is_none_or(|t| r.received_at_ms < t)
    }
}

/// What a presented key turned out to be.
#[derive(Debug, Clone)]
pub enum KeyCheck {
    Valid(KeyInfo),
    /// A key of this server that was revoked. Only someone holding the key itself learns this.
    Revoked,
    Unknown,
}

/// The key record whose SHA-256 is that of `presented` (compared in constant time).
fn find_key(txn: &ReadTransaction, presented: &str) -> Result<Option<(u32, Key)>> {
    if !keys::well_formed(presented) {
        return Ok(None);
    }
    let hash = keys::hash(presented);
    let Some(id) = txn
        .open_table(KEY_LOOKUP)?
        .get(keys::lookup_prefix(&hash))?
        .map(|v| v.value())
    else {
        return Ok(None);
    };
    let Some(bytes) = txn.open_table(KEYS)?.get(id)? else {
        return Ok(None);
    };
    let key: Key = decode_config("key", bytes.value())?;
    let stored = crate::event::hex(&hash);
    let same = subtle::ConstantTimeEq::ct_eq(stored.as_bytes(), key.sha256.as_bytes());
    Ok(bool::from(same).then_some((id, key)))
}

/// A GameRebellion session that started and has not ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    pub session_id: String,
    pub started_ms: i64,
}

impl Store {
    /// [`Store::authenticate`] through the key cache: `generation` is the writer's current
    /// configuration generation ([`crate::store::writer::Stats::config_generation`]).
    pub fn authenticate_cached(&self, presented: &str, generation: u64) -> Result<Option<KeyInfo>> {
        if !keys::well_formed(presented) {
            return Ok(None);
        }
        let hash = keys::hash(presented);
        self.keys
            .get_or_load(generation, hash, || self.authenticate(presented))
    }

    /// Finds the unrevoked key whose SHA-256 is `hash`; the hash is compared in constant time.
    pub fn authenticate(&self, presented: &str) -> Result<Option<KeyInfo>> {
        Ok(match self.check_key(presented)? {
            KeyCheck::Valid(k) => Some(k),
            KeyCheck::Revoked | KeyCheck::Unknown => None,
        })
    }

    /// Like [`Store::authenticate`], but tells a revoked key from an unknown one (for dialects
    /// whose answers differ, GameRebellion's 401 vs 403).
    pub fn check_key(&self, presented: &str) -> Result<KeyCheck> {
        let txn = self.db.begin_read()?;
        let Some((id, key)) = find_key(&txn, presented)? else {
            return Ok(KeyCheck::Unknown);
        };
        if key.revoked_ms.is_some() {
            return Ok(KeyCheck::Revoked);
        }
        let apps = txn.open_table(APPS)?;
        let Some(app_bytes) = apps.get(key.app_id)? else {
            return Ok(KeyCheck::Unknown);
        };
        let app: App = decode_config("app", app_bytes.value())?;
        let Some(t_bytes) = txn.open_table(TENANTS)?.get(app.tenant_id)? else {
            return Ok(KeyCheck::Unknown);
        };
        let tenant: Tenant = decode_config("tenant", t_bytes.value())?;
        Ok(KeyCheck::Valid(KeyInfo {
            key_id: id,
            app_id: key.app_id,
            app: app.name,
            tenant_id: app.tenant_id,
            tenant: tenant.name,
            allowed_events: key.allowed_events,
            rate_limit: key.rate_limit,
        }))
    }

    /// The id of the key `presented` is, revoked or not (to name it where it is redacted).
    pub fn key_id_of(&self, presented: &str) -> Result<Option<u32>> {
        let txn = self.db.begin_read()?;
        Ok(find_key(&txn, presented)?.map(|(id, _)| id))
    }

    pub fn tenants(&self, now_ms: u64) -> Result<Vec<TenantRow>> {
        let txn = self.db.begin_read()?;
        let usage = txn.open_table(USAGE)?;
        let month = month_key(now_ms);
        let mut rows = Vec::new();
        for row in txn.open_table(TENANTS)?.iter()? {
            let (id, bytes) = row?;
            let t: Tenant = decode_config("tenant", bytes.value())?;
            let used = usage
                .get(usage_key(id.value(), month))?
                .map_or(0, |v| v.value());
            rows.push(TenantRow {
                id: id.value(),
                name: t.name,
                monthly_quota: t.monthly_quota,
                used_this_month: used,
                created_ms: t.created_ms,
                retention_days: t.retention_days,
            });
        }
        Ok(rows)
    }

    pub fn apps(&self) -> Result<Vec<AppRow>> {
        let txn = self.db.begin_read()?;
        let tenants = txn.open_table(TENANTS)?;
        let mut store_less = super::privacy::store_less_all(&txn.open_table(META)?)?;
        let mut rows = Vec::new();
        for row in txn.open_table(APPS)?.iter()? {
            let (id, bytes) = row?;
            let a: App = decode_config("app", bytes.value())?;
            let tenant = match tenants.get(a.tenant_id)? {
                Some(t) => decode_config::<Tenant>("tenant", t.value())?.name,
                None => String::new(),
            };
            rows.push(AppRow {
                id: id.value(),
                name: a.name,
                tenant,
                created_ms: a.created_ms,
                adjust_app_token: a.adjust_app_token,
                appsflyer_bundle_id: a.appsflyer_bundle_id,
                adjust_events: a.adjust_events,
                adjust_token_optional: a.adjust_token_optional,
                adjust_skan: a.adjust_skan,
                store_less: store_less.remove(&id.value()),
            });
        }
        Ok(rows)
    }

    /// The first app (by id) for which `pred` holds, e.g. the one with a given Adjust app token.
    pub fn app_where(&self, pred: impl Fn(&App) -> bool) -> Result<Option<(u32, App)>> {
        let txn = self.db.begin_read()?;
        for row in txn.open_table(APPS)?.iter()? {
            let (id, bytes) = row?;
            let app: App = decode_config("app", bytes.value())?;
            if pred(&app) {
                return Ok(Some((id.value(), app)));
            }
        }
        Ok(None)
    }

    /// Keys, optionally of one app. Never includes the key or its hash.
    pub fn keys(&self, app: Option<&str>) -> Result<Vec<KeyRow>> {
        let txn = self.db.begin_read()?;
        let apps = txn.open_table(APPS)?;
        let only = match app {
            Some(name) => match find_app(&apps, name)? {
                Some((id, _)) => Some(id),
                None => return Err(super::Error::NotFound(format!("no app {name:?}"))),
            },
            None => None,
        };
        let used = txn.open_table(KEY_USED)?;
        let mut rows = Vec::new();
        for row in txn.open_table(KEYS)?.iter()? {
            let (id, bytes) = row?;
            let k: Key = decode_config("key", bytes.value())?;
            if only.is_some_and(|a| a != k.app_id) {
                continue;
            }
            let app = match apps.get(k.app_id)? {
                Some(a) => decode_config::<App>("app", a.value())?.name,
                None => String::new(),
            };
            rows.push(KeyRow {
                id: id.value(),
                app,
                label: k.label,
                allowed_events: k.allowed_events,
                rate_limit: k.rate_limit,
                created_ms: k.created_ms,
                last_used_ms: used.get(id.value())?.map(|v| v.value()),
                revoked_ms: k.revoked_ms,
            });
        }
        Ok(rows)
    }

    /// Where a request of `app_id` that carries no key goes: the app and its tenant, key id 0,
    /// no event restriction (Adjust apps configured not to require a key).
    pub fn keyless(&self, app_id: u32) -> Result<Option<KeyInfo>> {
        let txn = self.db.begin_read()?;
        let Some(a) = txn.open_table(APPS)?.get(app_id)? else {
            return Ok(None);
        };
        let app: App = decode_config("app", a.value())?;
        let Some(t) = txn.open_table(TENANTS)?.get(app.tenant_id)? else {
            return Ok(None);
        };
        let tenant: Tenant = decode_config("tenant", t.value())?;
        Ok(Some(KeyInfo {
            key_id: 0,
            app_id,
            app: app.name,
            tenant_id: app.tenant_id,
            tenant: tenant.name,
            allowed_events: Vec::new(),
            rate_limit: None,
        }))
    }

    /// Start time (ms) of a GameRebellion session that has not ended.
    pub fn session_start(&self, app_id: u32, session_id: &str) -> Result<Option<i64>> {
        let txn = self.db.begin_read()?;
        let v = txn
            .open_table(SESSIONS)?
            .get(session_key(app_id, session_id).as_slice())?;
        match v {
            Some(v) => Ok(Some(super::codec::decode_session(v.value())?.0)),
            None => Ok(None),
        }
    }

    /// The latest started GameRebellion session of `app_id` that has not ended and was
    /// started with the identifiers whose key is `identity`: its id and start time (ms).
    pub fn latest_open_session(
        &self,
        app_id: u32,
        identity: &[u8; IDENTITY_LEN],
    ) -> Result<Option<OpenSession>> {
        let txn = self.db.begin_read()?;
        let prefix = open_sessions_prefix(app_id, identity);
        // Keys continue with 8 bytes of start time and a UTF-8 session id, which never holds
        // a 0xff byte: the prefix followed by nine 0xff bytes is past every key of it.
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xff; 9]);
        let table = txn.open_table(OPEN_SESSIONS)?;
        let Some(last) = table.range(prefix.as_slice()..end.as_slice())?.next_back() else {
            return Ok(None);
        };
        let (key, _) = last?;
        let rest = &key.value()[prefix.len()..];
        let started_ms = i64::try_from(u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")))
            .unwrap_or(i64::MAX);
        let session_id = String::from_utf8_lossy(&rest[8..]).into_owned();
        Ok(Some(OpenSession {
            session_id,
            started_ms,
        }))
    }

    /// The SKAdNetwork conversion value stored for a device ([`skan_key`]) of an Adjust app.
    pub fn skan_value(&self, key: &[u8]) -> Result<Option<crate::skan::Value>> {
        let txn = self.db.begin_read()?;
        let v = txn.open_table(SKAN_VALUES)?.get(key)?;
        Ok(v.and_then(|v| crate::skan::decode(v.value())))
    }

    /// Events accepted this month by `tenant_id`.
    pub fn usage(&self, tenant_id: u32, now_ms: u64) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let v = txn
            .open_table(USAGE)?
            .get(usage_key(tenant_id, month_key(now_ms)))?;
        Ok(v.map_or(0, |v| v.value()))
    }

    /// One stored event, as enriched ([`Expand`]).
    pub fn event(&self, seq: u64) -> Result<Option<EventRecord>> {
        let txn = self.db.begin_read()?;
        let v = txn.open_table(EVENTS)?.get(seq)?;
        Ok(match v {
            Some(bytes) => {
                let mut r = decode_event(bytes.value())?;
                Expand::new(&txn)?.record(&mut r)?;
                Some(r)
            }
            None => None,
        })
    }

    /// The raw request body stored under an audit key.
    pub fn audit(&self, audit_key: &str) -> Result<Option<Vec<u8>>> {
        super::audit::get(&self.db.begin_read()?, audit_key)
    }

    /// Writes the selected events as NDJSON canonical events, in log order, streaming from one
    /// read transaction (a consistent snapshot). Returns how many. The admin API's export
    /// route streams the same lines.
    pub fn export(&self, filter: &ExportFilter, out: &mut dyn Write) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut expand = Expand::new(&txn)?;
        let mut written = 0;
        let start = filter.after.saturating_add(1);
        for row in events.range(start..)? {
            if filter.limit.is_some_and(|l| written >= l) {
                break;
            }
            let (seq, bytes) = row?;
            let mut record = decode_event(bytes.value())?;
            if !filter.selects(&record) {
                continue;
            }
            expand.record(&mut record)?;
            serde_json::to_writer(&mut *out, &Canonical::new(seq.value(), &record))
                .map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        Ok(written)
    }
}

/// One canonical event as exported (field order and names of PRODUCT.md; absent omitted).
pub struct Canonical<'a> {
    seq: u64,
    r: &'a EventRecord,
}

impl<'a> Canonical<'a> {
    pub fn new(seq: u64, r: &'a EventRecord) -> Self {
        Canonical { seq, r }
    }
}

impl Serialize for Canonical<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let r = self.r;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("received_at_ms", &r.received_at_ms)?;
        m.serialize_entry("tenant", &r.tenant)?;
        m.serialize_entry("app", &r.app)?;
        m.serialize_entry("key_id", &r.key_id)?;
        m.serialize_entry("source", &r.source)?;
        m.serialize_entry("event_id", &r.event_id)?;
        m.serialize_entry("event_name", &r.event_name)?;
        m.serialize_entry("event_ts_ms", &r.event_ts_ms)?;
        for (k, v) in [
            ("install_uuid", &r.install_uuid),
            ("user_id", &r.user_id),
            ("anonymous_id", &r.anonymous_id),
        ] {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        if !r.ids.is_empty() {
            m.serialize_entry("ids", &Pairs(&r.ids))?;
        }
        if let Some(v) = r.revenue {
            m.serialize_entry("revenue", &v)?;
        }
        for (k, v) in [
            ("currency", &r.currency),
            ("transaction_id", &r.transaction_id),
            ("product_id", &r.product_id),
        ] {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        for (k, v) in [("props", &r.props), ("context", &r.context)] {
            if v != "{}" && !v.is_empty() {
                let raw: &RawValue = serde_json::from_str(v).map_err(serde::ser::Error::custom)?;
                m.serialize_entry(k, raw)?;
            }
        }
        m.serialize_entry("audit_key", &r.audit_key)?;
        m.end()
    }
}

struct Pairs<'a>(&'a [(String, String)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// A `Write` that sends what it is given as chunks of about `chunk` bytes into a bounded
/// channel, blocking while the receiver lags (so a slow HTTP client slows the export instead
/// of buffering it).
struct ChannelWriter {
    buf: Vec<u8>,
    chunk: usize,
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = bytes::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.chunk),
        ));
        self.tx
            .blocking_send(Ok(data))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "receiver gone"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.chunk {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Store {
    /// The same NDJSON as [`Store::export`], streamed as chunks of about 64 KiB through a
    /// bounded channel from a blocking thread: for an HTTP route that streams the export
    /// (the admin API), e.g. as a `StreamBody`. A failure mid-way arrives as an `Err` item;
    /// dropping the receiver stops the export. Call from within a tokio runtime.
    pub fn export_stream(
        &self,
        filter: ExportFilter,
    ) -> tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>> {
        const CHUNK: usize = 64 << 10;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = ChannelWriter {
                buf: Vec::with_capacity(CHUNK),
                chunk: CHUNK,
                tx: tx.clone(),
            };
            let result = store
                .export(&filter, &mut w)
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|_| w.flush());
            if let Err(e) = result
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                let _ = tx.blocking_send(Err(e));
            }
        });
        rx
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use crate::store::writer::{Pending, Submission, Writer};

    #[tokio::test(flavor = "multi_thread")]
    async fn the_stream_equals_the_export() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Writer::start(&store, 1 << 20, vec![]).unwrap();
        let record = |i: u64| super::super::codec::EventRecord {
            received_at_ms: 1_764_000_000_000 + i,
            event_name: if i.is_multiple_of(2) { "even" } else { "odd" }.into(),
            install_uuid: Some("u".repeat(200)),
            ..super::super::codec::EventRecord::for_test(&format!("e{i}"))
        };
        let events = (0..2000)
            .map(|i| {
                Pending::for_test(
                    &format!("e{i}"),
                    super::super::codec::encode_event(&record(i)),
                )
            })
            .collect();
        let sub = Submission {
            app_id: 1,
            tenant_id: 1,
            key_id: 1,
            received_at_ms: 1_764_000_000_000,
            events,
            audit: None,
        };
        w.submit(sub, 10).await.unwrap();
        let filter = ExportFilter {
            event: Some("even".into()),
            ..ExportFilter::default()
        };
        let mut expected = Vec::new();
        assert_eq!(store.export(&filter, &mut expected).unwrap(), 1000);
        let mut rx = store.export_stream(filter);
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = rx.recv().await {
            got.extend_from_slice(&chunk.unwrap());
            chunks += 1;
        }
        assert!(chunks > 1, "streamed in chunks");
        assert_eq!(got, expected);
    }
}
