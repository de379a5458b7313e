//! Health per app and per key, in memory: the last event, events per minute and per hour,
//! outcomes by reason. Fed once per request (a batch is one call, one lock); read by the
//! panel, `/metrics` and the alert rules. A restart forgets it: figures count from the
//! process start, and "last event" is unknown until the next event arrives.
//!
//! Bounded: apps and keys are the ones the database knows (a refused request without an
//! app or key is not kept here), a key is named by its id, never by its secret.

use crate::event::Reason;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;

/// Minutes of per-minute counts kept (the per-hour figure and rule windows).
pub const MINUTES: usize = 60;

/// Counts of one minute.
#[derive(Debug, Clone, Copy, Default)]
struct Minute {
    /// Minutes since the epoch this slot holds.
    at: u64,
    accepted: u64,
    duplicate: u64,
    rejected: u64,
}

/// The figures of one app or key.
#[derive(Debug, Clone, Default)]
struct Entry {
    last_ms: Option<u64>,
    last_accepted_ms: Option<u64>,
    minutes: Vec<Minute>,
    /// Since the process started.
    accepted: u64,
    duplicate: u64,
    rejected: HashMap<Reason, u64>,
}

/// One request's outcomes, as ingest reports them.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub accepted: u64,
    pub duplicate: u64,
    /// Rejections by reason (a few distinct reasons per request).
    pub rejected: Vec<(Reason, u64)>,
}

impl Tally {
    pub fn reject(&mut self, reason: Reason) {
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.rejected.push((reason, 1)),
        }
    }

    fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    fn is_empty(&self) -> bool {
        self.accepted == 0 && self.duplicate == 0 && self.rejected.is_empty()
    }
}

impl Entry {
    fn add(&mut self, at_ms: u64, t: &Tally) {
        self.last_ms = Some(self.last_ms.map_or(at_ms, |l| l.max(at_ms)));
        if t.accepted > 0 {
            self.last_accepted_ms = Some(self.last_accepted_ms.map_or(at_ms, |l| l.max(at_ms)));
        }
        self.accepted += t.accepted;
        self.duplicate += t.duplicate;
        for (r, n) in &t.rejected {
            *self.rejected.entry(*r).or_default() += n;
        }
        if self.minutes.is_empty() {
            self.minutes = vec![Minute::default(); MINUTES];
        }
        let minute = at_ms / 60_000;
        let slot = &mut self.minutes[(minute % MINUTES as u64) as usize];
        if slot.at != minute {
            *slot = Minute {
                at: minute,
                ..Minute::default()
            };
        }
        slot.accepted += t.accepted;
        slot.duplicate += t.duplicate;
        slot.rejected += t.rejected_total();
    }

    /// (accepted, duplicate, rejected) over the `n` minutes up to and including `now`'s.
    fn window(&self, now_ms: u64, n: u64) -> (u64, u64, u64) {
        let now = now_ms / 60_000;
        let from = now.saturating_sub(n.saturating_sub(1));
        self.minutes
            .iter()
            .filter(|m| m.at >= from && m.at <= now && (m.accepted + m.duplicate + m.rejected) > 0)
            .fold((0, 0, 0), |(a, d, r), m| {
                (a + m.accepted, d + m.duplicate, r + m.rejected)
            })
    }

    fn view(&self, name: String, now_ms: u64) -> View {
        let (a1, d1, r1) = self.window(now_ms, 1);
        let (a60, d60, r60) = self.window(now_ms, MINUTES as u64);
        let mut rejected: Vec<(String, u64)> = self
            .rejected
            .iter()
            .map(|(r, n)| (r.tag().into_owned(), *n))
            .collect();
        rejected.sort();
        View {
            name,
            last_event_ms: self.last_ms,
            last_accepted_ms: self.last_accepted_ms,
            events_last_minute: a1 + d1 + r1,
            events_last_hour: a60 + d60 + r60,
            rejected_last_hour: r60,
            accepted: self.accepted,
            duplicate: self.duplicate,
            rejected: rejected
                .into_iter()
                .map(|(k, n)| (k, serde_json::Value::from(n)))
                .collect(),
        }
    }
}

/// The figures of one app or key, as the panel and the API show them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct View {
    /// App name, or key id.
    pub name: String,
    pub last_event_ms: Option<u64>,
    pub last_accepted_ms: Option<u64>,
    /// Events (any outcome) in the current minute.
    pub events_last_minute: u64,
    /// Events (any outcome) in the last 60 minutes.
    pub events_last_hour: u64,
    pub rejected_last_hour: u64,
    /// Since the process started.
    pub accepted: u64,
    pub duplicate: u64,
    /// Rejections since the process started, by reason tag.
    pub rejected: serde_json::Map<String, serde_json::Value>,
}

#[derive(Default)]
struct Inner {
    apps: HashMap<String, Entry>,
    /// key id → (its app, its figures).
    keys: HashMap<u32, (String, Entry)>,
}

/// Health of every app and key seen since the process started.
#[derive(Default)]
pub struct Health {
    inner: Mutex<Inner>,
}

/// What a rule reads of one app or key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub last_event_ms: Option<u64>,
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
}

impl Health {
    /// One request's outcomes under its app and key (`None`: a signed request).
    pub fn record(&self, app: &str, key: Option<u32>, at_ms: u64, tally: &Tally) {
        if tally.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.apps.get_mut(app) {
            Some(e) => e.add(at_ms, tally),
            None => {
                let mut e = Entry::default();
                e.add(at_ms, tally);
                inner.apps.insert(app.to_owned(), e);
            }
        }
        if let Some(id) = key {
            let (_, e) = inner
                .keys
                .entry(id)
                .or_insert_with(|| (app.to_owned(), Entry::default()));
            e.add(at_ms, tally);
        }
    }

    /// Every app's figures, by name.
    pub fn apps(&self, now_ms: u64) -> Vec<View> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<View> = inner
            .apps
            .iter()
            .map(|(name, e)| e.view(name.clone(), now_ms))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every key's figures (name: its id), with its app, by id.
    pub fn keys(&self, now_ms: u64) -> Vec<(String, View)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(u32, String, View)> = inner
            .keys
            .iter()
            .map(|(id, (app, e))| (*id, app.clone(), e.view(id.to_string(), now_ms)))
            .collect();
        v.sort_by_key(|(id, _, _)| *id);
        v.into_iter().map(|(_, app, view)| (app, view)).collect()
    }

    /// An app's (or, with `key`, a key's) last event and outcomes over the last `minutes`.
    pub fn window(&self, app: &str, key: Option<u32>, now_ms: u64, minutes: u64) -> Window {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let e = match key {
            Some(id) => inner.keys.get(&id).map(|(_, e)| e),
            None => inner.apps.get(app),
        };
        e.map_or_else(Window::default, |e| {
            let (accepted, duplicate, rejected) = e.window(now_ms, minutes);
            Window {
                last_event_ms: e.last_ms,
                accepted,
                duplicate,
                rejected,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_add_up_per_app_and_key_and_age_out_of_the_hour() {
        let h = Health::default();
        let t0 = 1_700_000_000_000 / 60_000 * 60_000;
        let mut t = Tally {
            accepted: 3,
            duplicate: 1,
            ..Default::default()
        };
        t.reject(Reason::BadJson);
        t.reject(Reason::BadJson);
        h.record("game", Some(7), t0, &t);
        h.record(
            "game",
            None,
            t0 + 61_000,
            &Tally {
                accepted: 1,
                ..Default::default()
            },
        );
        let apps = h.apps(t0 + 61_000);
        assert_eq!(apps.len(), 1);
        let a = &apps[0];
        assert_eq!(a.last_event_ms, Some(t0 + 61_000));
        assert_eq!((a.events_last_minute, a.events_last_hour), (1, 7));
        assert_eq!(a.rejected["bad_json"], 2);
        let keys = h.keys(t0 + 61_000);
        assert_eq!(keys[0].0, "game");
        assert_eq!((keys[0].1.name.as_str(), keys[0].1.accepted), ("7", 3));
        let w = h.window("game", None, t0 + 61_000, 1);
        assert_eq!((w.accepted, w.rejected), (1, 0));
        let w = h.window("game", Some(7), t0 + 61_000, 2);
        assert_eq!((w.accepted, w.duplicate, w.rejected), (3, 1, 2));
        // An hour later the minutes are gone, the totals stay.
        let later = h.apps(t0 + 2 * 3_600_000);
        assert_eq!((later[0].events_last_hour, later[0].accepted), (0, 4));
        assert!(h.window("other", None, t0, 5).last_event_ms.is_none());
    }
}
