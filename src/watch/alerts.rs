//! Alert rules on the health figures ([`super::health`]): per app or key, "no events for N"
//! (a dead man's switch), "rejection share above X% over a window", "quota use above Y%".
//!
//! Rules are admin data in the database (table `alert_rules`, a version byte then JSON),
//! each with an optional webhook and its own signing secret, sealed with the data dir's key
//! like the other secrets. A background task ([`run`]) evaluates them every interval; a
//! rule that starts to hold opens an incident and sends `alert.fired` once, and
//! `alert.resolved` when it stops holding. Incidents and deliveries are in memory: after a
//! restart an incident still true fires again.
//!
//! A delivery is a JSON POST signed with HMAC-SHA256 over `<unix time>.<body>`, header
//! `X-Inlet-Signature: t=<unix time>,v1=<hex>`, retried with exponential backoff (from the
//! evaluation interval, doubling, at most [`MAX_BACKOFF`]) up to [`MAX_ATTEMPTS`] times.

use super::Watch;
use crate::auth::secrets::{Sealer, mint};
use crate::event::{hex, unhex};
use crate::store::codec::{decode_config, encode_config};
use crate::store::tables::ALERT_RULES;
use crate::store::{self, Store};
use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts of one delivery at most.
pub const MAX_ATTEMPTS: u32 = 8;
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Deliveries kept for the panel (the newest).
const DELIVERIES_KEPT: usize = 200;
/// Time a webhook has to connect and answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
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

/// A webhook address: `http://host[:port]/path` (plain HTTP; put a relay in front for TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "webhook {url:?}: only http:// addresses are supported (put a TLS relay in front)"
            )
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("webhook {url:?}: bad port"))?,
            ),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || url.len() > 2048
            || path.bytes().any(|b| b <= b' ' || b == 0x7f)
            || host.bytes().any(|b| b <= b' ' || b"/?#@".contains(&b))
        {
            return Err(format!("webhook {url:?}: not a valid http:// address"));
        }
        Ok(Target {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
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
/// why there was none.
pub fn test_now(store: &Store, id: u32, now_ms: u64) -> store::Result<String> {
    let rule = list(store)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| store::Error::NotFound(format!("no alert rule {id}")))?;
    let url = rule
        .webhook
        .as_deref()
        .ok_or_else(|| refused(format!("alert rule {id} has no webhook")))?;
    let target = Target::parse(url).map_err(refused)?;
    let incident = Incident {
        rule: id,
        app: rule.app.clone(),
        key: rule.key,
        since_ms: now_ms,
        detail: "a test message".into(),
    };
    let body = Bytes::from(message(&rule, "alert.test", &incident, now_ms));
    let sig = secret_of(store, &rule).map(|s| signature(&s, now_ms / 1000, &body));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(match rt.block_on(post(&target, body, sig)) {
        Ok(status) => status.to_string(),
        Err(e) => format!("nothing ({e})"),
    })
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
            Target::parse(url).map_err(refused)?;
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
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub rule: u32,
    pub app: String,
    pub key: Option<u32>,
    pub since_ms: u64,
    pub detail: String,
}

/// One webhook delivery and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: u64,
    pub rule: u32,
    /// `alert.fired`, `alert.resolved` or `alert.test`.
    pub kind: &'static str,
    pub url: String,
    /// `pending` (attempts left), `delivered` or `failed`.
    pub state: &'static str,
    pub attempts: u32,
    /// Last HTTP status or connection error.
    pub last: Option<String>,
    pub created_ms: u64,
    pub next_attempt_ms: Option<u64>,
}

/// The alerts' memory in a serving process.
#[derive(Default)]
pub struct State {
    started_ms: AtomicU64,
    /// First wait between attempts (the evaluation interval).
    retry_ms: AtomicU64,
    incidents: Mutex<HashMap<u32, Incident>>,
    deliveries: Arc<Mutex<VecDeque<Delivery>>>,
    next_delivery: AtomicU64,
    /// Deliveries that succeeded, attempts that failed.
    counts: Arc<[AtomicU64; 2]>,
}

impl State {
    pub fn incidents(&self) -> Vec<Incident> {
        let mut v: Vec<Incident> = self
            .incidents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|i| i.rule);
        v
    }

    /// Deliveries, newest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        let d = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        d.iter().rev().cloned().collect()
    }

    /// (deliveries that succeeded, attempts that failed) since the start.
    pub fn delivery_counts(&self) -> (u64, u64) {
        (
            self.counts[0].load(Ordering::Relaxed),
            self.counts[1].load(Ordering::Relaxed),
        )
    }
}

/// Evaluates the rules every `interval` (forever; the first pass after one interval).
pub async fn run(store: &Store, watch: &Watch, interval: Duration) {
    let s = &watch.alerts;
    s.started_ms
        .store(crate::clock::now_ms(), Ordering::Relaxed);
    s.retry_ms
        .store(interval.as_millis() as u64, Ordering::Relaxed);
    loop {
        tokio::time::sleep(interval).await;
        let rules = match list(store) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "alert rules: reading failed");
                continue;
            }
        };
        evaluate(store, watch, &rules, crate::clock::now_ms());
    }
}

/// Whether `rule` holds now, and why.
fn holds(
    store: &Store,
    watch: &Watch,
    rule: &Rule,
    now_ms: u64,
    tenants: &mut Option<Vec<(String, u64, u64)>>,
) -> Option<String> {
    match &rule.condition {
        Condition::Silence { secs } => {
            let w = watch.health.window(&rule.app, rule.key, now_ms, 1);
            let started = watch.alerts.started_ms.load(Ordering::Relaxed);
            let last = w.last_event_ms.unwrap_or(started);
            (now_ms.saturating_sub(last) > secs * 1000).then(|| match w.last_event_ms {
                Some(l) => format!("no events for {} s (last at {l})", (now_ms - l) / 1000),
                None => format!("no events since the start ({} s)", (now_ms - last) / 1000),
            })
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
            (total >= *min_events && w.rejected * 100 > u64::from(*pct) * total).then(|| {
                format!(
                    "{} of {total} events rejected over {window_minutes} min",
                    w.rejected
                )
            })
        }
        Condition::Quota { pct } => {
            if tenants.is_none() {
                let apps = store.apps().ok()?;
                let ts = store.tenants(now_ms).ok()?;
                *tenants = Some(
                    apps.into_iter()
                        .filter_map(|a| {
                            let t = ts.iter().find(|t| t.name == a.tenant)?;
                            Some((a.name, t.used_this_month, t.monthly_quota))
                        })
                        .collect(),
                );
            }
            let (_, used, quota) = tenants.as_ref()?.iter().find(|(a, ..)| *a == rule.app)?;
            (*quota > 0 && used * 100 >= u64::from(*pct) * quota)
                .then(|| format!("{used} of {quota} events of the monthly quota used"))
        }
    }
}

/// One pass: opens and closes incidents, sends their webhooks.
pub fn evaluate(store: &Store, watch: &Watch, rules: &[Rule], now_ms: u64) {
    let mut tenants = None;
    let mut sends = Vec::new();
    {
        let mut open = watch
            .alerts
            .incidents
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.retain(|id, _| rules.iter().any(|r| r.id == *id));
        for rule in rules {
            let now = holds(store, watch, rule, now_ms, &mut tenants);
            match (now, open.contains_key(&rule.id)) {
                (Some(detail), false) => {
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
                }
                (None, true) => {
                    let i = open.remove(&rule.id).expect("checked");
                    tracing::info!(rule = rule.id, app = %rule.app, "alert resolved");
                    sends.push((rule.clone(), "alert.resolved", i));
                }
                _ => {}
            }
        }
    }
    for (rule, kind, incident) in sends {
        send(store, watch, &rule, kind, &incident, now_ms);
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
    Ok(send(store, watch, &rule, "alert.test", &incident, now_ms))
}

/// The JSON body of a message.
pub fn message(rule: &Rule, kind: &str, incident: &Incident, now_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": kind,
        "at_ms": now_ms,
        "rule": public(rule),
        "condition": rule.condition.describe(),
        "incident": incident,
    }))
    .unwrap_or_default()
}

/// Queues a delivery of `kind` to the rule's webhook (if it has one); false without one.
fn send(
    store: &Store,
    watch: &Watch,
    rule: &Rule,
    kind: &'static str,
    incident: &Incident,
    now_ms: u64,
) -> bool {
    let Some(url) = rule.webhook.clone() else {
        return false;
    };
    let Ok(target) = Target::parse(&url) else {
        return false;
    };
    let s = &watch.alerts;
    let id = s.next_delivery.fetch_add(1, Ordering::Relaxed) + 1;
    let body = Bytes::from(message(rule, kind, incident, now_ms));
    let secret = secret_of(store, rule);
    if secret.is_none() {
        tracing::warn!(
            rule = rule.id,
            "alert webhook: its secret cannot be opened; sent unsigned"
        );
    }
    {
        let mut d = s.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        if d.len() >= DELIVERIES_KEPT {
            d.pop_front();
        }
        d.push_back(Delivery {
            id,
            rule: rule.id,
            kind,
            url,
            state: "pending",
            attempts: 0,
            last: None,
            created_ms: now_ms,
            next_attempt_ms: Some(now_ms),
        });
    }
    let retry = Duration::from_millis(s.retry_ms.load(Ordering::Relaxed).max(100));
    let tally = DeliveryTally {
        state: s.deliveries.clone(),
        counts: s.counts.clone(),
        id,
    };
    tokio::spawn(deliver(target, body, secret, retry, tally));
    true
}

/// Where a delivery task reports.
struct DeliveryTally {
    state: Arc<Mutex<VecDeque<Delivery>>>,
    counts: Arc<[AtomicU64; 2]>,
    id: u64,
}

impl DeliveryTally {
    fn update(&self, f: impl FnOnce(&mut Delivery)) {
        let mut d = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(x) = d.iter_mut().find(|x| x.id == self.id) {
            f(x)
        }
    }
}

async fn deliver(
    target: Target,
    body: Bytes,
    secret: Option<String>,
    first_wait: Duration,
    tally: DeliveryTally,
) {
    let mut wait = first_wait;
    for attempt in 1..=MAX_ATTEMPTS {
        let unix = crate::clock::now_ms() / 1000;
        let sig = secret.as_deref().map(|s| signature(s, unix, &body));
        let r = post(&target, body.clone(), sig).await;
        let ok = matches!(r, Ok(s) if (200..300).contains(&s));
        let last = match r {
            Ok(s) => s.to_string(),
            Err(e) => e,
        };
        let done = ok || attempt == MAX_ATTEMPTS;
        let next = (!done).then(|| crate::clock::now_ms() + wait.as_millis() as u64);
        tally.update(|d| {
            d.attempts = attempt;
            d.last = Some(last.clone());
            d.state = match (ok, done) {
                (true, _) => "delivered",
                (false, true) => "failed",
                _ => "pending",
            };
            d.next_attempt_ms = next;
        });
        tally.counts[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        if ok {
            return;
        }
        tracing::warn!(host = %target.host, attempt, status = %last, "alert webhook failed");
        if done {
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// One POST; the response status, or why there was none.
async fn post(target: &Target, body: Bytes, signature: Option<String>) -> Result<u16, String> {
    use http_body_util::Full;
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = match target.port {
            80 => target.host.clone(),
            p => format!("{}:{p}", target.host),
        };
        let mut req = hyper::Request::post(target.path.as_str())
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "inlet-alerts");
        if let Some(sig) = signature {
            req = req.header("x-inlet-signature", sig);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        Ok(resp.status().as_u16())
    };
    tokio::time::timeout(WEBHOOK_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_addresses_are_plain_http_and_checked() {
        let t = Target::parse("http://127.0.0.1:9000/hook?a=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 9000, "/hook?a=1")
        );
        let t = Target::parse("http://example.com").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        assert!(Target::parse("https://example.com/").is_err());
        assert!(Target::parse("http://:80/").is_err());
        assert!(Target::parse("http://a b/").is_err());
        assert!(Target::parse("http://host:99999/").is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        let sig = signature("s3cret", 1_700_000_000, b"{}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
        let mac = ring::hmac::sign(&key, b"1700000000.{}");
        assert_eq!(sig, format!("t=1700000000,v1={}", hex(mac.as_ref())));
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
