//! An app's event rules (its record in [`APP_RULES`]) and the business-key index.
//!
//! **Business-key dedupe** (opt-in per app, [`AppRules::business_key`]): besides its event
//! id, an event that carries a transaction id is known by `(event_name, transaction_id)`.
//! The writer, in the commit that would store it, looks that key up in [`BIZKEYS`]; found,
//! the event is a duplicate of the stored one (not stored, not billed), exactly as for an
//! event id; stored, its key points at its seq. The index is exact (the whole key, no
//! fingerprint) and goes with its event: [`forget`] runs in `store::remove_events`.
//!
//! Where each dialect carries the transaction id ([`transaction_id`]): the canonical
//! `transaction_id` (Reflect's `transaction_id`, GameRebellion's `payload.transaction_id`,
//! Datafly's `properties.order_id`); Adjust's `deduplication_id`, else `transaction_id`
//! parameter; AppsFlyer's `eventValue.af_order_id`, else `eventValue.af_receipt_id`.
//!
//! **Drop rules** ([`AppRules::drop`]) are only kept here; `crate::rules` compiles and
//! applies them before the writer.

use super::codec::{EventRecord, decode_config, decode_event, encode_config};
use super::tables::{APP_RULES, APPS, BIZKEYS};
use super::{Error, Result};
use redb::{ReadableDatabase, ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// Most drop rules one app may have.
pub const MAX_DROP_RULES: usize = 100;
/// Longest event name or source a drop rule may name.
pub const MAX_RULE_TEXT: usize = 256;
/// The sources a drop rule may name (each dialect's `SOURCE`).
pub const SOURCES: [&str; 5] = ["reflect", "gamerebellion", "adjust", "appsflyer", "datafly"];

/// An app's rules (JSON config record; absent = none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRules {
    /// `(event_name, transaction_id)` is a second dedupe key of the app.
    #[serde(default)]
    pub business_key: bool,
    /// Events answered `dropped`, not stored.
    #[serde(default)]
    pub drop: Vec<DropRule>,
    /// The id the next drop rule gets (ids are never given twice within an app).
    #[serde(default)]
    pub next_rule: u32,
}

/// Drops an event matching every field it names (at least one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRule {
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<u32>,
}

/// What a new drop rule matches on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDropRule {
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub key_id: Option<u32>,
}

fn app_id(txn: &WriteTransaction, app: &str) -> Result<u32> {
    super::find_app(&txn.open_table(APPS)?, app)?
        .map(|(id, _)| id)
        .ok_or_else(|| Error::NotFound(format!("no app {app:?}")))
}

fn load(table: &impl ReadableTable<u32, &'static [u8]>, app_id: u32) -> Result<AppRules> {
    match table.get(app_id)? {
        Some(v) => Ok(decode_config("app rules", v.value())?),
        None => Ok(AppRules::default()),
    }
}

/// Changes the rules of `app` with `f` in the caller's transaction; returns them.
fn update<R>(
    txn: &WriteTransaction,
    app: &str,
    f: impl FnOnce(&mut AppRules) -> Result<R>,
) -> Result<(AppRules, R)> {
    let id = app_id(txn, app)?;
    let mut table = txn.open_table(APP_RULES)?;
    let mut rules = load(&table, id)?;
    let r = f(&mut rules)?;
    if rules == AppRules::default() {
        table.remove(id)?;
    } else {
        table.insert(id, encode_config(&rules).as_slice())?;
    }
    Ok((rules, r))
}

/// Turns business-key dedupe of `app` on or off (events stored while it was on keep their
/// keys until they are removed).
pub fn set_business_key(txn: &WriteTransaction, app: &str, on: bool) -> Result<AppRules> {
    Ok(update(txn, app, |r| {
        r.business_key = on;
        Ok(())
    })?
    .0)
}

/// Adds a drop rule to `app`; returns its id.
pub fn add_drop_rule(txn: &WriteTransaction, app: &str, new: NewDropRule) -> Result<u32> {
    let refuse = |m: String| Err(Error::Refused(m));
    let NewDropRule {
        event,
        source,
        key_id,
    } = new;
    let event = event.filter(|e| !e.is_empty());
    let source = source.filter(|s| !s.is_empty());
    if event.is_none() && source.is_none() && key_id.is_none() {
        return refuse("a drop rule names an event, a source or a key".into());
    }
    if event.as_ref().is_some_and(|e| e.len() > MAX_RULE_TEXT) {
        return refuse(format!("event: longer than {MAX_RULE_TEXT} bytes"));
    }
    if let Some(s) = &source
        && !SOURCES.contains(&s.as_str())
    {
        return refuse(format!("source: {s:?} is none of {}", SOURCES.join(", ")));
    }
    if let Some(k) = key_id {
        let key = txn
            .open_table(super::tables::KEYS)?
            .get(k)?
            .map(|v| decode_config::<super::codec::Key>("key", v.value()).map(|key| key.app_id));
        if key.transpose()? != Some(app_id(txn, app)?) {
            return refuse(format!("key_id: no key {k} of app {app:?}"));
        }
    }
    Ok(update(txn, app, |r| {
        if r.drop.len() >= MAX_DROP_RULES {
            return Err(Error::Refused(format!(
                "app {app:?} has {MAX_DROP_RULES} drop rules already"
            )));
        }
        let id = r.next_rule.max(1);
        r.next_rule = id + 1;
        r.drop.push(DropRule {
            id,
            event,
            source,
            key_id,
        });
        Ok(id)
    })?
    .1)
}

/// Removes drop rule `id` of `app`.
pub fn remove_drop_rule(txn: &WriteTransaction, app: &str, id: u32) -> Result<AppRules> {
    Ok(update(txn, app, |r| {
        let before = r.drop.len();
        r.drop.retain(|d| d.id != id);
        if r.drop.len() == before {
            return Err(Error::NotFound(format!(
                "app {app:?} has no drop rule {id}"
            )));
        }
        Ok(())
    })?
    .0)
}

/// Every app's rules: app id → rules (apps without any are absent).
pub fn all(txn: &redb::ReadTransaction) -> Result<HashMap<u32, AppRules>> {
    let mut out = HashMap::new();
    for row in txn.open_table(APP_RULES)?.iter()? {
        let (id, v) = row?;
        out.insert(id.value(), decode_config("app rules", v.value())?);
    }
    Ok(out)
}

/// The rules of app `name` (`None`: no such app).
pub fn of_app(store: &super::Store, name: &str) -> Result<Option<(u32, AppRules)>> {
    let txn = store.db()?.begin_read()?;
    let Some((id, _)) = super::find_app(&txn.open_table(APPS)?, name)? else {
        return Ok(None);
    };
    Ok(Some((id, load(&txn.open_table(APP_RULES)?, id)?)))
}

/// The transaction id an event carries, as its dialect carries it (see the module docs).
pub fn transaction_id(r: &EventRecord) -> Option<String> {
    if let Some(t) = r.transaction_id.as_deref().filter(|t| !t.is_empty()) {
        return Some(t.to_owned());
    }
    let (fields, inside): (&[&str], Option<&str>) = match r.source.as_str() {
        "adjust" => (&["deduplication_id", "transaction_id"], None),
        "appsflyer" => (&["af_order_id", "af_receipt_id"], Some("eventValue")),
        _ => return None,
    };
    let props: Value = serde_json::from_str(&r.props).ok()?;
    let holder = match inside {
        None => props,
        Some(name) => match props.get(name)? {
            Value::String(text) => serde_json::from_str(text).ok()?,
            other => other.clone(),
        },
    };
    fields.iter().find_map(|f| match holder.get(*f)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The [`BIZKEYS`] key of an event of app `app_id`: app_id u32 BE ++ u16 BE length of the
/// event name ++ event name ++ transaction id; `None` when it carries no transaction id (or
/// a name too long to prefix).
pub fn key(app_id: u32, r: &EventRecord) -> Option<Vec<u8>> {
    let t = transaction_id(r)?;
    let name = u16::try_from(r.event_name.len()).ok()?;
    let mut k = Vec::with_capacity(6 + r.event_name.len() + t.len());
    k.extend_from_slice(&app_id.to_be_bytes());
    k.extend_from_slice(&name.to_be_bytes());
    k.extend_from_slice(r.event_name.as_bytes());
    k.extend_from_slice(t.as_bytes());
    Some(k)
}

/// What the business-key index says of a new event.
pub enum Check {
    /// Its business key is stored, under this seq: a duplicate.
    Seen(u64),
    /// New: once stored, its key (when it has one) is [`Index::insert`]ed.
    New(Option<Vec<u8>>),
}

/// The business-key index within one writer transaction.
pub struct Index<'t> {
    txn: &'t WriteTransaction,
    table: Option<Table<'t, &'static [u8], u64>>,
    /// Whether each app seen in this transaction has business-key dedupe on.
    apps: HashMap<u32, bool>,
}

impl<'t> Index<'t> {
    pub fn new(txn: &'t WriteTransaction) -> Index<'t> {
        Index {
            txn,
            table: None,
            apps: HashMap::new(),
        }
    }

    fn table(&mut self) -> Result<&mut Table<'t, &'static [u8], u64>> {
        if self.table.is_none() {
            self.table = Some(self.txn.open_table(BIZKEYS)?);
        }
        Ok(self.table.as_mut().expect("opened above"))
    }

    /// Looks up the business key of `record` (an event of `app_id` about to be stored),
    /// when the app has business-key dedupe on.
    pub fn check(&mut self, app_id: u32, record: &[u8]) -> Result<Check> {
        let on = match self.apps.get(&app_id) {
            Some(on) => *on,
            None => {
                let on = load(&self.txn.open_table(APP_RULES)?, app_id)?.business_key;
                *self.apps.entry(app_id).or_insert(on)
            }
        };
        if !on {
            return Ok(Check::New(None));
        }
        let Some(k) = key(app_id, &decode_event(record)?) else {
            return Ok(Check::New(None));
        };
        match self.table()?.get(k.as_slice())? {
            Some(seq) => Ok(Check::Seen(seq.value())),
            None => Ok(Check::New(Some(k))),
        }
    }

    /// Indexes a stored event's business key under its `seq`.
    pub fn insert(&mut self, key: Option<Vec<u8>>, seq: u64) -> Result<()> {
        if let Some(k) = key {
            self.table()?.insert(k.as_slice(), seq)?;
        }
        Ok(())
    }
}

/// The removal side, for `store::remove_events`: forgets the business key of a removed
/// event (its record, stored as `seq` of app `app_id`) when it still points at it.
pub struct Forget<'t> {
    /// `None` when the index is empty (nothing to forget, no record to decode).
    table: Option<Table<'t, &'static [u8], u64>>,
}

impl<'t> Forget<'t> {
    pub fn new(txn: &'t WriteTransaction) -> Result<Forget<'t>> {
        let table = txn.open_table(BIZKEYS)?;
        let empty = table.first()?.is_none();
        Ok(Forget {
            table: (!empty).then_some(table),
        })
    }

    pub fn event(&mut self, app_id: u32, seq: u64, record: &[u8]) -> Result<()> {
        let Some(table) = &mut self.table else {
            return Ok(());
        };
        // An undecodable record has no key to find; it was stored by this build's codec.
        let Some(k) = decode_event(record).ok().and_then(|r| key(app_id, &r)) else {
            return Ok(());
        };
        if table.get(k.as_slice())?.is_some_and(|s| s.value() == seq) {
            table.remove(k.as_slice())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(source: &str, txid: Option<&str>, props: &str) -> EventRecord {
        EventRecord {
            source: source.into(),
            event_name: "purchase".into(),
            transaction_id: txid.map(str::to_owned),
            props: props.into(),
            ..EventRecord::for_test("e1")
        }
    }

    #[test]
    fn each_dialect_carries_its_transaction_id() {
        let t = |source, txid, props| transaction_id(&record(source, txid, props));
        assert_eq!(t("reflect", Some("tx1"), "{}").as_deref(), Some("tx1"));
        assert_eq!(t("reflect", Some(""), "{}"), None);
        assert_eq!(t("reflect", None, r#"{"transaction_id":"x"}"#), None);
        assert_eq!(
            t("adjust", None, r#"{"transaction_id":"a1"}"#).as_deref(),
            Some("a1")
        );
        assert_eq!(
            t(
                "adjust",
                None,
                r#"{"transaction_id":"a1","deduplication_id":"d1"}"#
            )
            .as_deref(),
            Some("d1")
        );
        assert_eq!(
            t("appsflyer", None, r#"{"eventValue":{"af_order_id":"o1"}}"#).as_deref(),
            Some("o1")
        );
        assert_eq!(
            t(
                "appsflyer",
                None,
                r#"{"eventValue":"{\"af_receipt_id\":7}"}"#
            )
            .as_deref(),
            Some("7")
        );
        assert_eq!(t("appsflyer", None, r#"{"eventValue":"nope"}"#), None);
        assert_eq!(t("datafly", None, r#"{"order_id":"x"}"#), None);
    }

    /// Through the writer: within a batch, across batches, and a dry run that leaves nothing.
    #[tokio::test]
    async fn the_writer_answers_a_known_business_key_as_a_duplicate() {
        use crate::store::writer::{DEFAULT_QUEUE_BYTES, Outcome, Pending, Submission, Writer};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let txn = db.begin_write().unwrap();
        set_business_key(&txn, "default", true).unwrap();
        txn.commit().unwrap();
        let w = Writer::start(&store, DEFAULT_QUEUE_BYTES, vec![]).unwrap();
        let sub = |events: &[(&str, &str)]| Submission {
            app_id: 1,
            tenant_id: 1,
            key_id: 1,
            received_at_ms: 1_764_000_000_000,
            events: events
                .iter()
                .map(|(id, tx)| {
                    let r = record("reflect", Some(tx), "{}");
                    let r = EventRecord {
                        event_id: (*id).into(),
                        ..r
                    };
                    Pending::for_test(id, crate::store::codec::encode_event(&r))
                })
                .collect(),
            audit: None,
        };
        let dry = w
            .submit_dry(sub(&[("a", "t"), ("b", "t")]), 10)
            .await
            .unwrap();
        assert_eq!(
            dry,
            [Outcome::Accepted { seq: 1 }, Outcome::Duplicate { seq: 1 }]
        );
        let out = w
            .submit(sub(&[("c", "t"), ("d", "t"), ("e", "u")]), 10)
            .await;
        assert_eq!(
            out.unwrap(),
            [
                Outcome::Accepted { seq: 1 },
                Outcome::Duplicate { seq: 1 },
                Outcome::Accepted { seq: 2 }
            ],
            "the dry run kept nothing"
        );
        let out = w.submit(sub(&[("f", "u")]), 10).await.unwrap();
        assert_eq!(out, [Outcome::Duplicate { seq: 2 }]);
    }

    #[test]
    fn keys_of_other_names_or_apps_differ() {
        let a = record("reflect", Some("tx"), "{}");
        let b = EventRecord {
            event_name: "purchas".into(),
            transaction_id: Some("etx".into()),
            ..a.clone()
        };
        assert_ne!(
            key(1, &a),
            key(1, &b),
            "the name's length is part of the key"
        );
        assert_ne!(key(1, &a), key(2, &a));
    }
}
