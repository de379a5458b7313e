//! Alert rules on the health figures ([`super::health`]): per app or key, "no events for N"
//! (a dead man's switch), "rejection share above X% over a window", "quota use above Y%".
//!
//! Rules are admin data in the database (table `alert_rules`, a version byte then JSON),
//! each with an optional webhook and its own signing secret, sealed with the data dir's key
//! like the other secrets. A background task ([`run`]) evaluates them every interval; a
//! rule that starts to hold opens an incident and sends `alert.fired` once, and
//! `alert.resolved` when it stops holding. Open incidents and deliveries are kept in the
//! database too (`alert_incidents`, `alert_deliveries`: a version byte then postcard),
//! written by that task through the writer thread between commits: after a restart an
//! open incident stays open (it does not fire again) and a delivery not yet made is made.
//!
//! A delivery is a JSON POST ([`super::webhook`]: `http://` or verified `https://`) signed
//! with HMAC-SHA256 over `<unix time>.<body>`, header `X-Inlet-Signature: t=<unix
//! time>,v1=<hex>`, retried with exponential backoff (from the evaluation interval,
//! doubling, at most [`MAX_BACKOFF`]) up to [`MAX_ATTEMPTS`] times. Its `id` is the same at
//! every attempt, so that a receiver can drop one it already handled.

use super::{Watch, webhook};
use crate::auth::secrets::{Sealer, mint};
use crate::event::{hex, unhex};
use crate::store::codec::{decode_config, encode_config};
use crate::store::tables::{ALERT_DELIVERIES, ALERT_INCIDENTS, ALERT_RULES};
use crate::store::writer::Writer;
use crate::store::{self, Store};
use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Attempts of one delivery at most.
pub const MAX_ATTEMPTS: u32 = 8;
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Deliveries kept for the panel (the newest).
const DELIVERIES_KEPT: usize = 200;
/// Rules at most.
pub const MAX_RULES: usize = 1000;
/// Sealed secrets of rules are bound to `id | SEAL_DOMAIN`, apart from signing secrets' ids.
const SEAL_DOMAIN: u32 = 0x8000_0000;

/// What a rule watches for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// No event (of any outcome) for `secs` seconds.
    Silence { secs: u64 },
    /// Rejected events above `pct` percent of all events over the last `window_minutes`
    /// minutes, once at least `min_events` arrived in it.
    Rejections {
        pct: u32,
        window_minutes: u64,
        #[serde(default = "one")]
        min_events: u64,
    },
    /// The app's tenant used at least `pct` percent of its monthly quota.
    Quota { pct: u32 },
}

fn one() -> u64 {
    1
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: u32,
    pub app: String,
    /// A key of the app (by id): the rule watches that key alone.
    #[serde(default)]
    pub key: Option<u32>,
    pub condition: Condition,
    #[serde(default)]
    pub webhook: Option<String>,
    /// The webhook's signing secret, sealed (hex); never shown after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<String>,
    pub created_ms: u64,
}

/// What a caller asks for (admin API body, CLI).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    pub app: String,
    #[serde(default)]
    pub key: Option<u32>,
    pub condition: Condition,
    #[serde(default)]
    pub webhook: Option<String>,
}

/// A rule as listed (without its secret).
pub fn public(rule: &Rule) -> serde_json::Value {
    let mut r = rule.clone();
    r.sealed_secret = None;
    serde_json::to_value(r).unwrap_or_default()
}

impl Condition {
    fn check(&self) -> Result<(), String> {
        match self {
            Condition::Silence { secs } if !(1..=30 * 86_400).contains(secs) => {
                Err("silence: secs must be within 1..=2592000".into())
            }
            Condition::Rejections {
                pct,
                window_minutes,
                min_events,
            } if !(1..=100).contains(pct)
                || !(1..=super::health::MINUTES as u64).contains(window_minutes)
                || *min_events == 0 =>
            {
                Err("rejections: pct 1..=100, window_minutes 1..=60, min_events ≥ 1".into())
            }
            Condition::Quota { pct } if !(1..=100).contains(pct) => {
                Err("quota: pct must be within 1..=100".into())
            }
            _ => Ok(()),
        }
    }

    /// In words, for messages.
    pub fn describe(&self) -> String {
        match self {
            Condition::Silence { secs } => format!("no events for {secs} s"),
            Condition::Rejections {
                pct,
                window_minutes,
                min_events,
            } => format!(
                "rejections above {pct}% over {window_minutes} min (at least {min_events} events)"
            ),
            Condition::Quota { pct } => format!("quota use at or above {pct}%"),
        }
    }
}

fn refused(m: String) -> store::Error {
    store::Error::Refused(m)
}

/// Every rule, by id.
pub fn list(store: &Store) -> store::Result<Vec<Rule>> {
    let txn = store.db()?.begin_read()?;
    let table = txn.open_table(ALERT_RULES)?;
    let mut rules = Vec::new();
    for row in table.iter()? {
        let (_, v) = row?;
        rules.push(decode_config::<Rule>("alert rule", v.value())?);
    }
    Ok(rules)
}

/// `inlet alerts list`: a line per rule, or JSON.
pub fn print(store: &Store, json: bool, out: &mut dyn std::io::Write) -> store::Result<()> {
    let rules = list(store)?;
    if json {
        let v: Vec<_> = rules.iter().map(public).collect();
        writeln!(out, "{}", serde_json::Value::from(v))?;
        return Ok(());
    }
    for r in rules {
        let key = r.key.map_or_else(|| "-".to_owned(), |k| k.to_string());
        let hook = r.webhook.as_deref().unwrap_or("-");
        writeln!(
            out,
            "{}\tapp={}\tkey={key}\t{}\twebhook={hook}",
            r.id,
            r.app,
            r.condition.describe()
        )?;
    }
    Ok(())
}

/// `inlet alerts test`: one signed `alert.test` POST from this process; the HTTP status or
/// why there was none. `webhook_ca`: the `[alerts] webhook_ca` of the configuration.
pub fn test_now(
    store: &Store,
    id: u32,
    webhook_ca: Option<&Path>,
    now_ms: u64,
) -> store::Result<String> {
    let rule = list(store)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| store::Error::NotFound(format!("no alert rule {id}")))?;
    let url = rule
        .webhook
        .as_deref()
        .ok_or_else(|| refused(format!("alert rule {id} has no webhook")))?;
    let target = webhook::Target::parse(url).map_err(refused)?;
    let tls = match target.tls {
        true => Some(webhook::tls_client(webhook_ca).map_err(refused)?),
        false => None,
    };
    let incident = Incident {
        rule: id,
        app: rule.app.clone(),
        key: rule.key,
        since_ms: now_ms,
        detail: "a test message".into(),
    };
    let id = message_id("alert.test", &incident, 0);
    let body = Bytes::from(message(&rule, "alert.test", &id, &incident, now_ms));
    let headers = secret_of(store, &rule)
        .map(|s| ("x-inlet-signature", signature(&s, now_ms / 1000, &body)))
        .into_iter()
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(
        match rt.block_on(webhook::post(&target, tls.as_ref(), body, headers)) {
            Ok(status) => status.to_string(),
            Err(e) => format!("nothing ({e})"),
        },
    )
}

/// Checks a new rule against the store (its app, its key) and seals a fresh webhook
/// secret: the rule to insert with [`insert`] and the secret to show once.
pub fn prepare(store: &Store, new: NewRule) -> store::Result<(NewRule, Option<Sealed>)> {
    new.condition.check().map_err(refused)?;
    if !store.apps()?.iter().any(|a| a.name == new.app) {
        return Err(store::Error::NotFound(format!("no app {:?}", new.app)));
    }
    if let Some(id) = new.key
        && !store.keys(Some(&new.app))?.iter().any(|k| k.id == id)
    {
        return Err(store::Error::NotFound(format!(
            "no key {id} of app {:?}",
            new.app
        )));
    }
    let sealer = match &new.webhook {
        Some(url) => {
            webhook::Target::parse(url).map_err(refused)?;
            Some((mint(), Sealer::load_or_create(store.data_dir())?))
        }
        None => None,
    };
    Ok((new, sealer))
}

/// A new webhook secret and the key that seals it.
pub type Sealed = (String, Sealer);

/// Inserts a prepared rule in `txn`; returns it.
pub fn insert(
    txn: &WriteTransaction,
    new: NewRule,
    secret: Option<Sealed>,
    now_ms: u64,
) -> store::Result<Rule> {
    let mut table = txn.open_table(ALERT_RULES)?;
    if table.len()? as usize >= MAX_RULES {
        return Err(refused(format!("at most {MAX_RULES} alert rules")));
    }
    let id = table.last()?.map_or(1, |(k, _)| k.value() + 1);
    let rule = Rule {
        id,
        app: new.app,
        key: new.key,
        condition: new.condition,
        webhook: new.webhook,
        sealed_secret: secret.map(|(s, sealer)| hex(&sealer.seal(id | SEAL_DOMAIN, &s))),
        created_ms: now_ms,
    };
    table.insert(id, encode_config(&rule).as_slice())?;
    Ok(rule)
}

/// Removes rule `id`.
pub fn remove(txn: &WriteTransaction, id: u32) -> store::Result<()> {
    let mut table = txn.open_table(ALERT_RULES)?;
    match table.remove(id)? {
        Some(_) => Ok(()),
        None => Err(store::Error::NotFound(format!("no alert rule {id}"))),
    }
}

/// The plaintext webhook secret of `rule`.
fn secret_of(store: &Store, rule: &Rule) -> Option<String> {
    let sealed = unhex(rule.sealed_secret.as_deref()?)?;
    let sealer = Sealer::load(store.data_dir()).ok()??;
    sealer.open(rule.id | SEAL_DOMAIN, &sealed)
}

/// `X-Inlet-Signature` of `body` sent at `unix` seconds.
pub fn signature(secret: &str, unix: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(unix.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={unix},v1={}", hex(ctx.sign().as_ref()))
}

/// An open incident of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub rule: u32,
    pub app: String,
    pub key: Option<u32>,
    pub since_ms: u64,
    pub detail: String,
}

/// One webhook delivery and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub rule: u32,
    /// `alert.fired`, `alert.resolved` or `alert.test`.
    pub kind: String,
    /// The message's `id`: the same for every attempt, before and after a restart, so that
    /// a receiver can drop a message it already handled.
    pub message_id: String,
    pub url: String,
    /// `pending` (attempts left), `delivered` or `failed`.
    pub state: String,
    pub attempts: u32,
    /// Last HTTP status or connection error.
    pub last: Option<String>,
    pub created_ms: u64,
    pub next_attempt_ms: Option<u64>,
    /// The message, as sent at every attempt (only its signature is made again); stored
    /// beside the record, not shown.
    #[serde(skip)]
    pub body: Vec<u8>,
}

/// Version byte of the alert state records (`alert_incidents`, `alert_deliveries`), then
/// postcard.
const STATE_V1: u8 = 1;

fn encode_state<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![STATE_V1];
    postcard::to_io(v, &mut out).expect("writing to a Vec cannot fail");
    out
}

fn decode_state<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> store::Result<T> {
    match bytes.split_first() {
        Some((&STATE_V1, rest)) => postcard::from_bytes(rest)
            .map_err(|e| store::Error::Corrupt(format!("undecodable {what} record: {e}"))),
        other => Err(store::Error::Corrupt(format!(
            "undecodable {what} record: unknown version {:?}",
            other.map(|(v, _)| *v)
        ))),
    }
}

/// What changed since the last write to the database.
#[derive(Default, Clone)]
struct Dirty {
    incidents: HashSet<u32>,
    deliveries: HashSet<u64>,
}

/// The alerts' memory in a serving process: open incidents and recent deliveries, mirrored
/// in the database by the alert task (off the request path) so that a restart neither fires
/// an open incident again nor loses a delivery not yet made.
#[derive(Default)]
pub struct State {
    started_ms: AtomicU64,
    /// First wait between attempts (the evaluation interval).
    retry_ms: AtomicU64,
    incidents: Mutex<HashMap<u32, Incident>>,
    deliveries: Mutex<VecDeque<Delivery>>,
    next_delivery: AtomicU64,
    /// Deliveries that succeeded, attempts that failed.
    counts: [AtomicU64; 2],
    dirty: Mutex<Dirty>,
    /// A delivery was queued (a test message): the task looks at its queue now.
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    pub fn incidents(&self) -> Vec<Incident> {
        let mut v: Vec<Incident> = lock(&self.incidents).values().cloned().collect();
        v.sort_by_key(|i| i.rule);
        v
    }

    /// Deliveries, newest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.deliveries).iter().rev().cloned().collect()
    }

    /// (deliveries that succeeded, attempts that failed) since the start.
    pub fn delivery_counts(&self) -> (u64, u64) {
        (
            self.counts[0].load(Ordering::Relaxed),
            self.counts[1].load(Ordering::Relaxed),
        )
    }

    /// Reads the incidents and deliveries a previous run left in the database.
    fn restore(&self, store: &Store) -> store::Result<()> {
        let txn = store.db()?.begin_read()?;
        let mut incidents = HashMap::new();
        if let Some(t) = open_if_present(&txn, ALERT_INCIDENTS)? {
            for row in t.iter()? {
                let (k, v) = row?;
                incidents.insert(k.value(), decode_state("alert incident", v.value())?);
            }
        }
        let mut deliveries = VecDeque::new();
        if let Some(t) = open_if_present(&txn, ALERT_DELIVERIES)? {
            for row in t.iter()? {
                let (_, v) = row?;
                let (mut d, body): (Delivery, Vec<u8>) = decode_state("alert delivery", v.value())?;
                d.body = body;
                deliveries.push_back(d);
            }
        }
        let last = deliveries.back().map_or(0, |d| d.id);
        self.next_delivery.fetch_max(last, Ordering::Relaxed);
        *lock(&self.incidents) = incidents;
        *lock(&self.deliveries) = deliveries;
        Ok(())
    }

    fn mark_incident(&self, rule: u32) {
        lock(&self.dirty).incidents.insert(rule);
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Delivery)) {
        if let Some(d) = lock(&self.deliveries).iter_mut().find(|d| d.id == id) {
            f(d);
        }
        lock(&self.dirty).deliveries.insert(id);
    }

    /// The changes not yet written, as rows; `None` when there are none.
    fn changes(&self) -> Option<Changes> {
        let dirty = std::mem::take(&mut *lock(&self.dirty));
        if dirty.incidents.is_empty() && dirty.deliveries.is_empty() {
            return None;
        }
        let incidents = lock(&self.incidents);
        let deliveries = lock(&self.deliveries);
        Some(Changes {
            incidents: dirty
                .incidents
                .iter()
                .map(|r| (*r, incidents.get(r).map(encode_state)))
                .collect(),
            deliveries: deliveries
                .iter()
                .filter(|d| dirty.deliveries.contains(&d.id))
                .map(|d| (d.id, encode_state(&(d, &d.body))))
                .collect(),
            keep_from: deliveries.front().map_or(0, |d| d.id),
            dirty,
        })
    }

    /// Puts back changes whose write failed, to be written with the next ones.
    fn unwritten(&self, dirty: Dirty) {
        let mut d = lock(&self.dirty);
        d.incidents.extend(dirty.incidents);
        d.deliveries.extend(dirty.deliveries);
    }
}

fn open_if_present<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> store::Result<Option<redb::ReadOnlyTable<K, V>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(redb::Error::from(e).into()),
    }
}

/// Rows to write in one transaction.
struct Changes {
    /// rule → the incident's record, `None` when it closed.
    incidents: Vec<(u32, Option<Vec<u8>>)>,
    deliveries: Vec<(u64, Vec<u8>)>,
    /// Deliveries older than this one are no longer kept.
    keep_from: u64,
    dirty: Dirty,
}

fn write_changes(db: &redb::Database, c: &Changes) -> store::Result<()> {
    let txn = store::begin_write(db)?;
    {
        let mut t = txn.open_table(ALERT_INCIDENTS)?;
        for (rule, v) in &c.incidents {
            match v {
                Some(v) => t.insert(*rule, v.as_slice())?,
                None => t.remove(*rule)?,
            };
        }
        let mut t = txn.open_table(ALERT_DELIVERIES)?;
        for (id, v) in &c.deliveries {
            t.insert(*id, v.as_slice())?;
        }
        t.retain_in(..c.keep_from, |_, _| false)?;
    }
    txn.commit()?;
    Ok(())
}

/// Writes what changed, on the writer thread between two commits (never in an ingest
/// commit, never waited for by ingest). False when it could not (the changes stay queued).
async fn persist(writer: &Writer, s: &State) -> bool {
    let Some(changes) = s.changes() else {
        return true;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let dirty = changes.dirty.clone();
    let job = move |db: &redb::Database| {
        let _ = tx.send(write_changes(db, &changes));
    };
    if !writer.later(Box::new(job)) {
        // The queue is full (or the writer stopped): written with the next changes.
        s.unwritten(dirty);
        return false;
    }
    match rx.await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "alert state: writing failed; retried");
            s.unwritten(dirty);
            false
        }
        Err(_) => {
            s.unwritten(dirty);
            false
        }
    }
}

/// What the alert task waits for between two passes.
type Attempted = (u64, Result<u16, String>);

/// The alert task: evaluates the rules every `interval` (the first pass after one interval)
/// and makes the webhook deliveries, each attempt once its state is in the database.
/// Forever; `webhook_ca` adds a private CA's certificates to the system's roots for
/// `https://` webhooks.
pub async fn run(
    store: &Store,
    writer: &Writer,
    watch: &Watch,
    interval: Duration,
    webhook_ca: Option<PathBuf>,
) {
    let s = &watch.alerts;
    s.started_ms
        .store(crate::clock::now_ms(), Ordering::Relaxed);
    s.retry_ms
        .store(interval.as_millis() as u64, Ordering::Relaxed);
    if let Err(e) = s.restore(store) {
        tracing::warn!(error = %e, "alert state: reading failed; incidents start empty");
    }
    // Made at the first https:// delivery (reading the system's roots costs memory).
    let mut tls = Tls {
        ca: webhook_ca,
        client: None,
    };
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Attempted>();
    let mut in_flight: HashSet<u64> = HashSet::new();
    let mut next_pass = tokio::time::Instant::now() + interval;
    loop {
        let written = persist(writer, s).await;
        if written {
            start_due(store, s, &mut tls, &done_tx, &mut in_flight);
        }
        let now = crate::clock::now_ms();
        let next_attempt = lock(&s.deliveries)
            .iter()
            .filter(|d| d.state == "pending" && !in_flight.contains(&d.id))
            .filter_map(|d| d.next_attempt_ms)
            .min()
            .map(|at| tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now)));
        let mut wake_at = next_attempt.map_or(next_pass, |a| a.min(next_pass));
        if !written {
            // Not written (the writer's queue is full, or it stopped): no attempt starts, so
            // a due delivery must not wake this loop at once; the write is tried again.
            wake_at = tokio::time::Instant::now() + Duration::from_millis(100);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = s.wake.notified() => {}
            Some((id, r)) = done_rx.recv() => {
                in_flight.remove(&id);
                settle(s, id, r);
            }
        }
        if tokio::time::Instant::now() >= next_pass {
            next_pass = tokio::time::Instant::now() + interval;
            match list(store) {
                Ok(rules) => evaluate(store, watch, &rules, crate::clock::now_ms()),
                Err(e) => tracing::warn!(error = %e, "alert rules: reading failed"),
            }
        }
    }
}

/// The TLS client settings of https:// webhooks, made when first needed.
struct Tls {
    ca: Option<PathBuf>,
    client: Option<Arc<rustls::ClientConfig>>,
}

impl Tls {
    fn client(&mut self) -> Option<Arc<rustls::ClientConfig>> {
        if self.client.is_none() {
            match webhook::tls_client(self.ca.as_deref()) {
                Ok(c) => self.client = Some(c),
                Err(e) => tracing::error!(error = %e, "alert webhooks: no TLS settings"),
            }
        }
        self.client.clone()
    }
}

/// Starts an attempt of every pending delivery that is due.
fn start_due(
    store: &Store,
    s: &State,
    tls: &mut Tls,
    done: &tokio::sync::mpsc::UnboundedSender<Attempted>,
    in_flight: &mut HashSet<u64>,
) {
    let now = crate::clock::now_ms();
    let due: Vec<Delivery> = lock(&s.deliveries)
        .iter()
        .filter(|d| {
            d.state == "pending"
                && !in_flight.contains(&d.id)
                && d.next_attempt_ms.is_some_and(|at| at <= now)
        })
        .cloned()
        .collect();
    if due.is_empty() {
        return;
    }
    let rules = list(store).unwrap_or_default();
    for d in due {
        let Some(rule) = rules.iter().find(|r| r.id == d.rule) else {
            s.update(d.id, |d| {
                d.state = "failed".into();
                d.last = Some("the rule was removed".into());
                d.next_attempt_ms = None;
            });
            continue;
        };
        let target = match webhook::Target::parse(&d.url) {
            Ok(t) => t,
            Err(e) => {
                s.update(d.id, |d| {
                    d.state = "failed".into();
                    d.last = Some(e);
                    d.next_attempt_ms = None;
                });
                continue;
            }
        };
        let secret = secret_of(store, rule);
        if secret.is_none() {
            tracing::warn!(
                rule = rule.id,
                "alert webhook: its secret cannot be opened; sent unsigned"
            );
        }
        in_flight.insert(d.id);
        let tls = if target.tls { tls.client() } else { None };
        let done = done.clone();
        let body = Bytes::from(d.body);
        tokio::spawn(async move {
            let unix = crate::clock::now_ms() / 1000;
            let headers = secret
                .map(|s| ("x-inlet-signature", signature(&s, unix, &body)))
                .into_iter()
                .collect();
            let r = webhook::post(&target, tls.as_ref(), body, headers).await;
            let _ = done.send((d.id, r));
        });
    }
}

/// The wait after failed attempt number `attempt`: the evaluation interval, doubling, at
/// most [`MAX_BACKOFF`].
fn backoff(first_ms: u64, attempt: u32) -> u64 {
    let doubled = first_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    doubled.min(MAX_BACKOFF.as_millis() as u64)
}

/// Records the outcome of one attempt.
fn settle(s: &State, id: u64, r: Result<u16, String>) {
    let ok = matches!(r, Ok(code) if (200..300).contains(&code));
    let last = match r {
        Ok(code) => code.to_string(),
        Err(e) => e,
    };
    s.counts[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    let first = s.retry_ms.load(Ordering::Relaxed).max(100);
    s.update(id, |d| {
        d.attempts += 1;
        let done = ok || d.attempts >= MAX_ATTEMPTS;
        if !ok {
            tracing::warn!(delivery = d.id, rule = d.rule, attempt = d.attempts, status = %last, "alert webhook failed");
        }
        d.state = match (ok, done) {
            (true, _) => "delivered",
            (false, true) => "failed",
            _ => "pending",
        }
        .into();
        d.next_attempt_ms =
            (!done).then(|| crate::clock::now_ms() + backoff(first, d.attempts));
        d.last = Some(last);
    });
}

/// Whether a rule holds now.
enum Verdict {
    Holds(String),
    Clear,
    /// Not known yet (figures since the start do not cover the rule's window): an open
    /// incident stays open, none opens.
    Unknown,
}

/// Whether `rule` holds now, and why. `open`: its incident, if one is open.
fn holds(
    store: &Store,
    watch: &Watch,
    rule: &Rule,
    open: Option<&Incident>,
    now_ms: u64,
    tenants: &mut Option<Vec<(String, u64, u64)>>,
) -> Verdict {
    let started = watch.alerts.started_ms.load(Ordering::Relaxed);
    // Opened before this process started (read back from the database).
    let restored = open.is_some_and(|i| i.since_ms < started);
    match &rule.condition {
        Condition::Silence { secs } => {
            let w = watch.health.window(&rule.app, rule.key, now_ms, 1);
            match w.last_event_ms {
                Some(l) if now_ms.saturating_sub(l) > secs * 1000 => Verdict::Holds(format!(
                    "no events for {} s (last at {l})",
                    (now_ms - l) / 1000
                )),
                Some(_) => Verdict::Clear,
                // Nothing since the start: an incident open before a restart goes on.
                None if restored || now_ms.saturating_sub(started) > secs * 1000 => {
                    Verdict::Holds(format!(
                        "no events since the start ({} s)",
                        now_ms.saturating_sub(started) / 1000
                    ))
                }
                None => Verdict::Clear,
            }
        }
        Condition::Rejections {
            pct,
            window_minutes,
            min_events,
        } => {
            let w = watch
                .health
                .window(&rule.app, rule.key, now_ms, *window_minutes);
            let total = w.accepted + w.duplicate + w.rejected;
            if total >= *min_events && w.rejected * 100 > u64::from(*pct) * total {
                Verdict::Holds(format!(
                    "{} of {total} events rejected over {window_minutes} min",
                    w.rejected
                ))
            } else if restored && now_ms.saturating_sub(started) < window_minutes * 60_000 {
                Verdict::Unknown
            } else {
                Verdict::Clear
            }
        }
        Condition::Quota { pct } => {
            if tenants.is_none() {
                let (Ok(apps), Ok(ts)) = (store.apps(), store.tenants(now_ms)) else {
                    return Verdict::Unknown;
                };
                *tenants = Some(
                    apps.into_iter()
                        .filter_map(|a| {
                            let t = ts.iter().find(|t| t.name == a.tenant)?;
                            Some((a.name, t.used_this_month, t.monthly_quota))
                        })
                        .collect(),
                );
            }
            let found = tenants
                .as_ref()
                .and_then(|t| t.iter().find(|(a, ..)| *a == rule.app));
            match found {
                Some((_, used, quota)) if *quota > 0 && used * 100 >= u64::from(*pct) * quota => {
                    Verdict::Holds(format!(
                        "{used} of {quota} events of the monthly quota used"
                    ))
                }
                _ => Verdict::Clear,
            }
        }
    }
}

/// One pass: opens and closes incidents, queues their webhook messages.
pub fn evaluate(store: &Store, watch: &Watch, rules: &[Rule], now_ms: u64) {
    let s = &watch.alerts;
    let mut tenants = None;
    let mut sends = Vec::new();
    {
        let mut open = lock(&s.incidents);
        let gone: Vec<u32> = open
            .keys()
            .filter(|id| !rules.iter().any(|r| r.id == **id))
            .copied()
            .collect();
        for id in gone {
            open.remove(&id);
            s.mark_incident(id);
        }
        for rule in rules {
            let is_open = open.contains_key(&rule.id);
            let verdict = holds(store, watch, rule, open.get(&rule.id), now_ms, &mut tenants);
            match (verdict, is_open) {
                (Verdict::Holds(detail), false) => {
                    tracing::warn!(rule = rule.id, app = %rule.app, %detail, "alert fired");
                    let i = Incident {
                        rule: rule.id,
                        app: rule.app.clone(),
                        key: rule.key,
                        since_ms: now_ms,
                        detail,
                    };
                    sends.push((rule.clone(), "alert.fired", i.clone()));
                    open.insert(rule.id, i);
                    s.mark_incident(rule.id);
                }
                (Verdict::Clear, true) => {
                    let i = open.remove(&rule.id).expect("checked");
                    tracing::info!(rule = rule.id, app = %rule.app, "alert resolved");
                    sends.push((rule.clone(), "alert.resolved", i));
                    s.mark_incident(rule.id);
                }
                _ => {}
            }
        }
    }
    for (rule, kind, incident) in sends {
        send(watch, &rule, kind, &incident, now_ms);
    }
}

/// Sends a test message for rule `id` (the panel's and the API's "test").
pub fn test(store: &Store, watch: &Watch, id: u32, now_ms: u64) -> store::Result<bool> {
    let rule = list(store)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| store::Error::NotFound(format!("no alert rule {id}")))?;
    let incident = Incident {
        rule: id,
        app: rule.app.clone(),
        key: rule.key,
        since_ms: now_ms,
        detail: "a test message".into(),
    };
    let queued = send(watch, &rule, "alert.test", &incident, now_ms);
    watch.alerts.wake.notify_one();
    Ok(queued)
}

/// The `id` of a message: one per incident and change (fired, resolved), the same at every
/// attempt; a test message has one of its own.
pub fn message_id(kind: &str, incident: &Incident, delivery: u64) -> String {
    match kind {
        "alert.fired" => format!("{}-{}-fired", incident.rule, incident.since_ms),
        "alert.resolved" => format!("{}-{}-resolved", incident.rule, incident.since_ms),
        _ => format!("{}-{}-test-{delivery}", incident.rule, incident.since_ms),
    }
}

/// The JSON body of a message.
pub fn message(rule: &Rule, kind: &str, id: &str, incident: &Incident, now_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": kind,
        "id": id,
        "at_ms": now_ms,
        "rule": public(rule),
        "condition": rule.condition.describe(),
        "incident": incident,
    }))
    .unwrap_or_default()
}

/// Queues a delivery of `kind` to the rule's webhook (if it has one); false without one.
/// The alert task writes it to the database before its first attempt.
fn send(watch: &Watch, rule: &Rule, kind: &'static str, incident: &Incident, now_ms: u64) -> bool {
    let Some(url) = rule.webhook.clone() else {
        return false;
    };
    if webhook::Target::parse(&url).is_err() {
        return false;
    }
    let s = &watch.alerts;
    let id = s.next_delivery.fetch_add(1, Ordering::Relaxed) + 1;
    let message_id = message_id(kind, incident, id);
    let body = message(rule, kind, &message_id, incident, now_ms);
    {
        let mut d = lock(&s.deliveries);
        while d.len() >= DELIVERIES_KEPT {
            d.pop_front();
        }
        d.push_back(Delivery {
            id,
            rule: rule.id,
            kind: kind.into(),
            message_id,
            url,
            state: "pending".into(),
            attempts: 0,
            last: None,
            created_ms: now_ms,
            next_attempt_ms: Some(now_ms),
            body,
        });
    }
    lock(&s.dirty).deliveries.insert(id);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        let sig = signature("s3cret", 1_700_000_000, b"{}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
        let mac = ring::hmac::sign(&key, b"1700000000.{}");
        assert_eq!(sig, format!("t=1700000000,v1={}", hex(mac.as_ref())));
    }

    #[test]
    fn the_backoff_doubles_from_the_interval_up_to_its_cap() {
        assert_eq!(backoff(100, 1), 100);
        assert_eq!(backoff(100, 2), 200);
        assert_eq!(backoff(100, 4), 800);
        assert_eq!(backoff(15_000, 7), MAX_BACKOFF.as_millis() as u64);
        assert_eq!(backoff(15_000, 40), MAX_BACKOFF.as_millis() as u64);
    }

    #[test]
    fn state_records_read_back_and_refuse_other_versions() {
        let d = Delivery {
            id: 3,
            rule: 1,
            kind: "alert.fired".into(),
            message_id: "1-5-fired".into(),
            url: "https://x/".into(),
            state: "pending".into(),
            attempts: 2,
            last: Some("500".into()),
            created_ms: 5,
            next_attempt_ms: Some(9),
            body: b"{}".to_vec(),
        };
        let bytes = encode_state(&(&d, &d.body));
        assert_eq!(bytes[0], STATE_V1);
        let (mut back, body): (Delivery, Vec<u8>) = decode_state("d", &bytes).unwrap();
        assert!(back.body.is_empty());
        back.body = body;
        assert_eq!(back, d);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(decode_state::<(Delivery, Vec<u8>)>("d", &other).is_err());
        assert!(decode_state::<(Delivery, Vec<u8>)>("d", &[]).is_err());
        let i = Incident {
            rule: 1,
            app: "game".into(),
            key: None,
            since_ms: 5,
            detail: "x".into(),
        };
        assert_eq!(decode_state::<Incident>("i", &encode_state(&i)).unwrap(), i);
        assert_eq!(message_id("alert.fired", &i, 3), "1-5-fired");
        assert_eq!(message_id("alert.resolved", &i, 4), "1-5-resolved");
    }

    #[test]
    fn conditions_are_checked() {
        assert!(Condition::Silence { secs: 0 }.check().is_err());
        assert!(Condition::Quota { pct: 101 }.check().is_err());
        assert!(
            Condition::Rejections {
                pct: 20,
                window_minutes: 61,
                min_events: 1
            }
            .check()
            .is_err()
        );
        assert!(Condition::Silence { secs: 60 }.check().is_ok());
        let c: Condition =
            serde_json::from_str(r#"{"kind":"rejections","pct":10,"window_minutes":5}"#).unwrap();
        assert_eq!(
            c,
            Condition::Rejections {
                pct: 10,
                window_minutes: 5,
                min_events: 1
            }
        );
    }
}
