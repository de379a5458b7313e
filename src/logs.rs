//! Log lines that a client can cause over and over (refusals, connections turned away) go
//! through a [`Throttle`]: the first line of a kind in an interval is written as usual, the
//! rest are counted, and one summary line with the count follows when the interval is over.
//! A key holder flooding inlet with requests it refuses thus costs the journal a few lines a
//! minute, not one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one kind of line is held back after it was written.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Counts of held-back lines per kind.
#[derive(Debug, Default)]
pub struct Throttle {
    kinds: Mutex<HashMap<String, Window>>,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    suppressed: u64,
}

/// What the caller should do with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` lines of its kind were held back in the interval before.
    Write { suppressed: u64 },
    /// Count it only.
    Hold,
}

impl Throttle {
    /// Decides on one line of `kind` at `now`.
    pub fn check(&self, kind: &str, now: Instant) -> Verdict {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        match kinds.get_mut(kind) {
            Some(w) if now.duration_since(w.opened) < INTERVAL => {
                w.suppressed += 1;
                Verdict::Hold
            }
            Some(w) => {
                let suppressed = std::mem::take(&mut w.suppressed);
                w.opened = now;
                Verdict::Write { suppressed }
            }
            None => {
                kinds.insert(
                    kind.to_owned(),
                    Window {
                        opened: now,
                        suppressed: 0,
                    },
                );
                Verdict::Write { suppressed: 0 }
            }
        }
    }

    /// Kinds whose interval is over, with the lines held back in it (those with none are
    /// forgotten). Called periodically so that a flood that stops is still reported.
    pub fn drain_expired(&self, now: Instant) -> Vec<(String, u64)> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        kinds.retain(|kind, w| {
            if now.duration_since(w.opened) < INTERVAL {
                return true;
            }
            if w.suppressed > 0 {
                out.push((kind.clone(), w.suppressed));
            }
            false
        });
        out
    }
}

/// The process's throttle for lines caused by clients. Logging is process-wide already
/// (`tracing`'s subscriber), so its rate limit is too.
pub fn throttle() -> &'static Throttle {
    static THROTTLE: std::sync::OnceLock<Throttle> = std::sync::OnceLock::new();
    THROTTLE.get_or_init(Throttle::default)
}

/// Writes a WARN line of `kind` unless one was written in the last [`INTERVAL`].
#[macro_export]
macro_rules! warn_throttled {
    ($kind:expr, $($arg:tt)+) => {
        match $crate::logs::throttle().check(&$kind, std::time::Instant::now()) {
            $crate::logs::Verdict::Write { suppressed: 0 } => tracing::warn!($($arg)+),
            $crate::logs::Verdict::Write { suppressed } => {
                tracing::warn!(suppressed, $($arg)+)
            }
            $crate::logs::Verdict::Hold => {}
        }
    };
}

/// Writes the summaries of intervals that ended (see [`Throttle::drain_expired`]).
pub fn flush_summaries() {
    for (kind, suppressed) in throttle().drain_expired(Instant::now()) {
        tracing::warn!(kind = %kind, suppressed, interval_secs = INTERVAL.as_secs(), "similar lines held back");
    }
}

/// Runs [`flush_summaries`] every [`INTERVAL`] until the runtime stops.
pub async fn flush_task() {
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        flush_summaries();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_then_a_count() {
        let t = Throttle::default();
        let start = Instant::now();
        assert_eq!(t.check("a", start), Verdict::Write { suppressed: 0 });
        for i in 1..=99 {
            assert_eq!(
                t.check("a", start + Duration::from_millis(i)),
                Verdict::Hold
            );
        }
        // Another kind is not held back by the first.
        assert_eq!(t.check("b", start), Verdict::Write { suppressed: 0 });
        let later = start + INTERVAL;
        assert_eq!(t.check("a", later), Verdict::Write { suppressed: 99 });
        assert_eq!(t.check("a", later), Verdict::Hold);
        // A flood that stops is reported by the periodic drain, once.
        let after = later + INTERVAL;
        assert_eq!(t.drain_expired(after), vec![("a".to_owned(), 1)]);
        assert_eq!(t.drain_expired(after), vec![]);
        assert_eq!(t.check("a", after), Verdict::Write { suppressed: 0 });
    }
}
