//! Outcome counters of the running process: how many events were accepted, were duplicates
//! or were rejected (by reason), per app and source. The admin overview and `/metrics` read
//! them; they start at zero with each process.

use std::collections::HashMap;
use std::sync::Mutex;

/// One row of [`Counters::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutcomeCount {
    /// App name; `-` when the request was refused before its key named an app.
    pub app: String,
    pub source: &'static str,
    /// `accepted`, `duplicate`, or a rejection reason tag.
    pub outcome: String,
    pub count: u64,
}

#[derive(Default)]
pub struct Counters {
    inner: Mutex<HashMap<(String, &'static str, String), u64>>,
    /// Request latency by status class, for `/metrics`.
    pub requests: crate::metrics::RequestMetrics,
    /// Connections closed at accept because their peer held its limit already.
    pub connections_refused: prometheus_client::metrics::counter::Counter,
    /// Connections closed because a response could not be written for `write_timeout`.
    pub connections_write_stalled: prometheus_client::metrics::counter::Counter,
}

impl Counters {
    pub fn add(&self, app: &str, source: &'static str, outcome: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(&(app.to_owned(), source, outcome.to_owned())) {
            Some(c) => *c += n,
            None => {
                m.insert((app.to_owned(), source, outcome.to_owned()), n);
            }
        }
    }

    /// Every counter, sorted.
    pub fn snapshot(&self) -> Vec<OutcomeCount> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<OutcomeCount> = m
            .iter()
            .map(|((app, source, outcome), count)| OutcomeCount {
                app: app.clone(),
                source,
                outcome: outcome.clone(),
                count: *count,
            })
            .collect();
        rows.sort();
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up() {
        let c = Counters::default();
        c.add("a", "reflect", "accepted", 2);
        c.add("a", "reflect", "accepted", 3);
        c.add("-", "reflect", "missing_bearer_token", 1);
        c.add("a", "reflect", "duplicate", 0);
        let rows = c.snapshot();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].count, 5);
        assert_eq!(rows[0].outcome, "missing_bearer_token");
    }
}
