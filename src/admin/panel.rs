//! What the admin panel needs from the database: per-app day and hour counters (written by
//! [`Tallies`], a writer listener, in the same commit as the events they count), and
//! filtered event listings, newest first.

use crate::clock::{Date, days_from_civil};
use crate::store::codec::{EventRecord, decode_event};
use crate::store::tables::*;
use crate::store::writer::{Accepted, CommitListener};
use crate::store::{Result, Store};
use redb::{ReadableTable, WriteTransaction};
use std::collections::HashMap;

const MS_PER_HOUR: u64 = 3_600_000;
const MS_PER_DAY: u64 = 86_400_000;

/// UTC day number since the epoch of `ms`.
pub fn day_of(ms: u64) -> u32 {
    (ms / MS_PER_DAY) as u32
}

/// Hour number since the epoch of `ms`.
pub fn hour_of(ms: u64) -> u32 {
    (ms / MS_PER_HOUR) as u32
}

/// Accepted events of one commit, per app and day and per app and hour.
#[derive(Default)]
pub struct Tally {
    days: HashMap<u64, u64>,
    hours: HashMap<u64, u64>,
}

impl Tally {
    /// Counts `n` accepted events of `app_id` received at `received_at_ms`.
    pub fn add(&mut self, app_id: u32, received_at_ms: u64, n: u64) {
        *self
            .days
            .entry(app_period_key(app_id, day_of(received_at_ms)))
            .or_default() += n;
        *self
            .hours
            .entry(app_period_key(app_id, hour_of(received_at_ms)))
            .or_default() += n;
    }

    /// Adds the tally to the counter tables, inside the commit that stores the events.
    pub fn write(self, txn: &WriteTransaction) -> Result<()> {
        for (table, counts) in [(APP_DAYS, self.days), (APP_HOURS, self.hours)] {
            if counts.is_empty() {
                continue;
            }
            let mut t = txn.open_table(table)?;
            for (k, n) in counts {
                let old = t.get(k)?.map_or(0, |v| v.value());
                t.insert(k, old + n)?;
            }
        }
        Ok(())
    }
}

/// The writer's listener that keeps the counters: each batch's tally is written in the
/// commit that stores its events.
pub struct Tallies;

impl CommitListener for Tallies {
    fn in_commit(&self, txn: &WriteTransaction, accepted: &[Accepted]) -> Result<()> {
        let mut tally = Tally::default();
        for a in accepted {
            tally.add(a.app_id, a.received_at_ms, a.events);
        }
        tally.write(txn)
    }
}

/// Events accepted by one app today and this month (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCount {
    pub app_id: u32,
    pub today: u64,
    pub this_month: u64,
}

/// Which events a listing selects. Every set filter must match exactly.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub app: Option<String>,
    pub event_name: Option<String>,
    pub event_id: Option<String>,
    pub install_uuid: Option<String>,
    pub user_id: Option<String>,
    /// Only seqs below this one (the cursor for older pages).
    pub before: Option<u64>,
    /// Only seqs above this one (for polling newer events).
    pub after: u64,
    pub limit: usize,
}

/// A page of a listing, newest first.
#[derive(Debug, Default)]
pub struct EventPage {
    pub events: Vec<(u64, EventRecord)>,
    /// Pass as `before` to continue with older events; `None` when nothing older is left.
    pub next_before: Option<u64>,
    /// The newest seq of the log.
    pub last_seq: u64,
}

/// Most records one listing request reads, so a filter that matches little stays cheap; the
/// page then ends early with a cursor to continue.
pub const MAX_SCAN: usize = 50_000;

impl EventQuery {
    fn matches(&self, r: &EventRecord) -> bool {
        fn eq(want: &Option<String>, have: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| have == Some(w))
        }
        eq(&self.app, Some(&r.app))
            && eq(&self.event_name, Some(&r.event_name))
            && eq(&self.event_id, Some(&r.event_id))
            && eq(&self.install_uuid, r.install_uuid.as_deref())
            && eq(&self.user_id, r.user_id.as_deref())
    }
}

impl Store {
    /// Per app (that has any): events accepted today and this calendar month (UTC).
    pub fn app_counts(&self, now_ms: u64) -> Result<Vec<AppCount>> {
        let txn = self.db.begin_read()?;
        let days = txn.open_table(APP_DAYS)?;
        let today = day_of(now_ms);
        let d = Date::from_ms(now_ms as i64);
        let month_start = days_from_civil(d.year, d.month, 1) as u32;
        let mut out = Vec::new();
        for row in txn.open_table(APPS)?.iter()? {
            let app_id = row?.0.value();
            let mut c = AppCount {
                app_id,
                today: 0,
                this_month: 0,
            };
            for r in
                days.range(app_period_key(app_id, month_start)..=app_period_key(app_id, today))?
            {
                let (k, n) = r?;
                c.this_month += n.value();
                if k.value() == app_period_key(app_id, today) {
                    c.today = n.value();
                }
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Events accepted in each of the `hours` hours up to and including the one of `now_ms`,
    /// oldest first, summed over all apps.
    pub fn hourly(&self, now_ms: u64, hours: u32) -> Result<Vec<u64>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(APP_HOURS)?;
        let last = hour_of(now_ms);
        let first = last.saturating_sub(hours.saturating_sub(1));
        let mut out = vec![0; (last - first + 1) as usize];
        for row in txn.open_table(APPS)?.iter()? {
            let app_id = row?.0.value();
            for r in table.range(app_period_key(app_id, first)..=app_period_key(app_id, last))? {
                let (k, n) = r?;
                out[(k.value() as u32 - first) as usize] += n.value();
            }
        }
        Ok(out)
    }

    /// Stored events matching `q`, newest first.
    pub fn list_events(&self, q: &EventQuery) -> Result<EventPage> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let last_seq = events.last()?.map_or(0, |(k, _)| k.value());
        let mut page = EventPage {
            last_seq,
            ..EventPage::default()
        };
        let lo = q.after.saturating_add(1);
        let hi = q.before.unwrap_or(u64::MAX);
        if lo >= hi || q.limit == 0 {
            return Ok(page);
        }
        // An event id within one app is a point lookup in the dedupe index.
        if let (Some(app), Some(event_id)) = (&q.app, &q.event_id) {
            let apps = txn.open_table(APPS)?;
            if let Some((app_id, _)) = crate::store::find_app(&apps, app)?
                && let Some(seq) = crate::store::dedupe::lookup_committed(&txn, app_id, event_id)?
                && (lo..hi).contains(&seq)
                && let Some(bytes) = events.get(seq)?
            {
                let r = decode_event(bytes.value())?;
                if q.matches(&r) {
                    page.events.push((seq, r));
                }
            }
            return Ok(page);
        }
        let mut scanned = 0;
        for row in events.range(lo..hi)?.rev() {
            let (seq, bytes) = row?;
            let seq = seq.value();
            scanned += 1;
            let r = decode_event(bytes.value())?;
            if q.matches(&r) {
                page.events.push((seq, r));
            }
            if page.events.len() >= q.limit || scanned >= MAX_SCAN {
                page.next_before = (seq > lo).then_some(seq);
                break;
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::{Pending, Submission, Writer};

    fn record(app: &str, name: &str, id: &str) -> Vec<u8> {
        crate::store::codec::encode_event(&EventRecord {
            received_at_ms: 0,
            app: app.into(),
            event_name: name.into(),
            event_ts_ms: 0,
            install_uuid: Some("i1".into()),
            ..EventRecord::for_test(id)
        })
    }

    #[tokio::test]
    async fn counters_follow_commits_and_listings_go_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = Writer::start(&store, 1 << 20, vec![std::sync::Arc::new(Tallies)]).unwrap();
        // 2026-11-26T10:30Z, and the same day's 11:10Z.
        let t0 = days_from_civil(2026, 11, 26) as u64 * MS_PER_DAY + 10 * MS_PER_HOUR + 1_800_000;
        let t1 = t0 + 2_400_000;
        let mut n = 0;
        for (t, names) in [(t0, ["open", "buy", "open"]), (t1, ["buy", "open", "open"])] {
            let events = names
                .iter()
                .map(|name| {
                    n += 1;
                    Pending::for_test(&format!("e{n}"), record("default", name, &format!("e{n}")))
                })
                .collect();
            let sub = Submission {
                app_id: 1,
                tenant_id: 1,
                key_id: 1,
                received_at_ms: t,
                events,
                audit: None,
            };
            w.submit(sub, 10).await.unwrap();
        }
        // A duplicate is not counted.
        let dup = Submission {
            app_id: 1,
            tenant_id: 1,
            key_id: 1,
            received_at_ms: t1,
            events: vec![Pending::for_test("e1", record("default", "open", "e1"))],
            audit: None,
        };
        w.submit(dup, 10).await.unwrap();
        let counts = store.app_counts(t1).unwrap();
        assert_eq!(
            counts,
            vec![AppCount {
                app_id: 1,
                today: 6,
                this_month: 6
            }]
        );
        // Next day: nothing today, still 6 this month; 1 December: a new month.
        assert_eq!(store.app_counts(t1 + MS_PER_DAY).unwrap()[0].today, 0);
        assert_eq!(store.app_counts(t1 + MS_PER_DAY).unwrap()[0].this_month, 6);
        let dec = days_from_civil(2026, 12, 1) as u64 * MS_PER_DAY;
        assert_eq!(store.app_counts(dec).unwrap()[0].this_month, 0);
        let hourly = store.hourly(t1, 48).unwrap();
        assert_eq!(hourly.len(), 48);
        assert_eq!(hourly[46..], [3, 3]);
        assert_eq!(hourly.iter().sum::<u64>(), 6);

        let all = store
            .list_events(&EventQuery {
                limit: 4,
                ..Default::default()
            })
            .unwrap();
        let seqs: Vec<u64> = all.events.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [6, 5, 4, 3]);
        assert_eq!(all.next_before, Some(3));
        assert_eq!(all.last_seq, 6);
        let older = store
            .list_events(&EventQuery {
                limit: 4,
                before: all.next_before,
                ..Default::default()
            })
            .unwrap();
        let seqs: Vec<u64> = older.events.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [2, 1]);
        assert_eq!(older.next_before, None);
        let buys = store
            .list_events(&EventQuery {
                event_name: Some("buy".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        let seqs: Vec<u64> = buys.events.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [4, 2]);
        let newer = store
            .list_events(&EventQuery {
                after: 4,
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(newer.events.len(), 2);
        let by_id = store
            .list_events(&EventQuery {
                app: Some("default".into()),
                event_id: Some("e5".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_id.events[0].0, 5);
        let other_app = store
            .list_events(&EventQuery {
                app: Some("nope".into()),
                event_id: Some("e5".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert!(other_app.events.is_empty());
    }
}
