//! Drop rules: per app, events matching a rule (event name, source, key) are answered
//! `dropped` and not stored, billed or deduped (issue 21; the rules are kept in
//! `store::bizkey`).
//!
//! Rules are compiled once per configuration generation (the writer bumps it after every
//! admin job, so a rule added or removed acts on the next request) into each app's
//! [`AppDrops`]; matching an event compares its name, source and key id with each rule, no
//! allocation. Each rule's count of dropped events lives here, in this process, and is
//! shown by `/metrics` (`inlet_dropped_total{app,rule}`) and the admin API.

use crate::store::Store;
use crate::store::bizkey::{self, DropRule};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One compiled rule.
struct Compiled {
    id: u32,
    event: Option<Box<str>>,
    source: Option<Box<str>>,
    key_id: Option<u32>,
    dropped: Arc<AtomicU64>,
}

impl Compiled {
    fn matches(&self, event: &str, source: &str, key_id: u32) -> bool {
        self.event.as_deref().is_none_or(|e| e == event)
            && self.source.as_deref().is_none_or(|s| s == source)
            && self.key_id.is_none_or(|k| k == key_id)
    }
}

/// The drop rules of one app, as of one configuration generation.
#[derive(Default)]
pub struct AppDrops(Vec<Compiled>);

impl AppDrops {
    /// No rules.
    pub fn none() -> Arc<AppDrops> {
        Arc::new(AppDrops::default())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first rule that drops an event named `event` from `source` sent with `key_id`
    /// (its index, for [`AppDrops::count`], and its id).
    pub fn matching(&self, event: &str, source: &str, key_id: u32) -> Option<Hit> {
        self.0
            .iter()
            .position(|r| r.matches(event, source, key_id))
            .map(|index| Hit {
                index,
                rule: self.0[index].id,
            })
    }

    /// Counts an event dropped by `hit` (not for a dry run).
    pub fn count(&self, hit: Hit) {
        if let Some(r) = self.0.get(hit.index) {
            r.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A rule that matched an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    index: usize,
    /// The rule's id within its app.
    pub rule: u32,
}

/// Each app's compiled rules (app id → rules).
type ByApp = HashMap<u32, Arc<AppDrops>>;

/// Every app's compiled rules, kept for one configuration generation, and each rule's count.
#[derive(Default)]
pub struct Rules {
    /// The generation they were compiled in, and the rules.
    compiled: Mutex<Option<(u64, ByApp)>>,
    /// (app id, rule id) → events it dropped; kept across generations.
    counts: Mutex<HashMap<(u32, u32), Arc<AtomicU64>>>,
}

impl Rules {
    /// The drop rules of `app_id` as of configuration `generation`. A store that cannot be
    /// read now (being reopened) drops nothing: the writer refuses the events anyway.
    pub fn of(&self, store: &Store, generation: u64, app_id: u32) -> Arc<AppDrops> {
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if compiled.as_ref().is_none_or(|(g, _)| *g != generation) {
            let all = store
                .db()
                .and_then(|db| Ok(redb::ReadableDatabase::begin_read(&*db)?))
                .and_then(|txn| bizkey::all(&txn));
            match all {
                Ok(all) => *compiled = Some((generation, self.compile(all))),
                Err(e) => {
                    tracing::warn!(error = %e, "drop rules could not be read");
                    return AppDrops::none();
                }
            }
        }
        compiled
            .as_ref()
            .and_then(|(_, apps)| apps.get(&app_id).cloned())
            .unwrap_or_else(AppDrops::none)
    }

    fn compile(&self, all: HashMap<u32, bizkey::AppRules>) -> ByApp {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        all.into_iter()
            .filter(|(_, r)| !r.drop.is_empty())
            .map(|(app, r)| {
                let rules = r.drop.into_iter().map(|d: DropRule| Compiled {
                    dropped: counts.entry((app, d.id)).or_default().clone(),
                    id: d.id,
                    event: d.event.map(String::into_boxed_str),
                    source: d.source.map(String::into_boxed_str),
                    key_id: d.key_id,
                });
                (app, Arc::new(AppDrops(rules.collect())))
            })
            .collect()
    }

    /// Events dropped by rule `rule` of app `app_id` in this process.
    pub fn dropped(&self, app_id: u32, rule: u32) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .get(&(app_id, rule))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every (app id, rule id, events dropped) that dropped at least one event.
    pub fn counts(&self) -> Vec<(u32, u32, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = counts
            .iter()
            .map(|(&(app, rule), n)| (app, rule, n.load(Ordering::Relaxed)))
            .filter(|(_, _, n)| *n > 0)
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: Vec<DropRule>) -> (Rules, Arc<AppDrops>) {
        let r = Rules::default();
        let all = HashMap::from([(
            7,
            bizkey::AppRules {
                drop: list,
                ..Default::default()
            },
        )]);
        let mut compiled = r.compile(all);
        let app = compiled.remove(&7).unwrap();
        (r, app)
    }

    fn rule(id: u32, event: Option<&str>, source: Option<&str>, key_id: Option<u32>) -> DropRule {
        DropRule {
            id,
            event: event.map(str::to_owned),
            source: source.map(str::to_owned),
            key_id,
        }
    }

    #[test]
    fn a_rule_matches_every_field_it_names_and_counts_per_rule() {
        let (r, app) = rules(vec![
            rule(1, Some("debug"), None, None),
            rule(2, None, Some("adjust"), Some(5)),
        ]);
        assert_eq!(app.matching("debug", "reflect", 1).map(|h| h.rule), Some(1));
        assert_eq!(app.matching("buy", "adjust", 5).map(|h| h.rule), Some(2));
        assert_eq!(app.matching("buy", "adjust", 6), None);
        assert_eq!(app.matching("buy", "reflect", 5), None);
        let hit = app.matching("debug", "adjust", 5).unwrap();
        assert_eq!(hit.rule, 1, "the first matching rule decides");
        app.count(hit);
        app.count(hit);
        assert_eq!(r.dropped(7, 1), 2);
        assert_eq!(r.dropped(7, 2), 0);
        assert_eq!(r.counts(), vec![(7, 1, 2)]);
    }
}
