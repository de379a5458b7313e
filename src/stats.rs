//! Outcome counters of the running process: how many events were accepted, were duplicates
//! or were rejected (by reason), per app and source. The admin overview and `/metrics` read
//! them; they start at zero with each process.

use crate::event::Reason;
use std::collections::HashMap;
use std::sync::Mutex;

/// What a counted event (or refused request) became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counted {
    Accepted,
    Duplicate,
    Rejected(Reason),
}

/// One row of [`Counters::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeCount {
    /// App name; `-` when the request was refused before its key named an app.
    pub app: String,
    pub source: &'static str,
    pub outcome: Counted,
    pub count: u64,
}

#[derive(Default)]
pub struct Counters {
    inner: Mutex<HashMap<(String, &'static str, Counted), u64>>,
    /// Request latency by status class, for `/metrics`.
    pub requests: crate::metrics::RequestMetrics,
    /// Connections closed at accept because their peer held its limit already.
    pub connections_refused: prometheus_client::metrics::counter::Counter,
    /// Connections closed because a response could not be written for `write_timeout`.
    pub connections_write_stalled: prometheus_client::metrics::counter::Counter,
}

impl Counters {
    pub fn add(&self, app: &str, source: &'static str, outcome: Counted, n: u64) {
        if n == 0 {
            return;
        }
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(&(app.to_owned(), source, outcome)) {
            Some(c) => *c += n,
            None => {
                m.insert((app.to_owned(), source, outcome), n);
            }
        }
    }

    /// Every counter, sorted by app, source, then outcome (accepted, duplicate, rejection
    /// reasons by tag).
    pub fn snapshot(&self) -> Vec<OutcomeCount> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<OutcomeCount> = m
            .iter()
            .map(|(&(ref app, source, outcome), count)| OutcomeCount {
                app: app.clone(),
                source,
                outcome,
                count: *count,
            })
            .collect();
        let order = |o: &Counted| match o {
            Counted::Accepted => (0, String::new()),
            Counted::Duplicate => (1, String::new()),
            Counted::Rejected(r) => (2, r.tag().into_owned()),
        };
        rows.sort_by_cached_key(|r| (r.app.clone(), r.source, order(&r.outcome)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up() {
        let c = Counters::default();
        c.add("a", "reflect", Counted::Accepted, 2);
        c.add("a", "reflect", Counted::Accepted, 3);
        c.add(
            "-",
            "reflect",
            Counted::Rejected(Reason::MissingBearerToken),
            1,
        );
        c.add("a", "reflect", Counted::Duplicate, 0);
        let rows = c.snapshot();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].count, 5);
        assert_eq!(
            rows[0].outcome,
            Counted::Rejected(Reason::MissingBearerToken)
        );
    }
}
