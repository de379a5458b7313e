//! Per-key requests-per-minute limits (the GameRebellion dialect's `X-RateLimit-*`), kept in
//! memory.
//!
//! A fixed window per key and calendar minute (UTC): `limit` requests are allowed from
//! `hh:mm:00` to `hh:mm:59`; `X-RateLimit-Reset` is the Unix time (seconds) the next window
//! starts, as in the spec's example. Windows are keyed on the id of a key that was already
//! authenticated, never on a header a client chose, so the table holds at most one entry per
//! existing key. Counts start at zero with each process (a restart forgives at most a minute).

use std::collections::HashMap;
use std::sync::Mutex;

/// The state of a key's window after a request, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether this request is within the limit (and was counted).
    pub allowed: bool,
    /// `X-RateLimit-Limit`.
    pub limit: u32,
    /// `X-RateLimit-Remaining`: requests left in this window after this one.
    pub remaining: u32,
    /// `X-RateLimit-Reset`: Unix seconds when the next window starts.
    pub reset_secs: u64,
}

impl Verdict {
    /// Seconds from `now_ms` until the window resets (at least 1), for `Retry-After`.
    pub fn retry_after(&self, now_ms: u64) -> u64 {
        (self.reset_secs * 1000)
            .saturating_sub(now_ms)
            .div_ceil(1000)
            .max(1)
    }

    /// The three `X-RateLimit-*` headers.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset_secs.to_string()),
        ]
    }
}

#[derive(Default)]
pub struct RateLimiter {
    /// key id → (minute since the epoch, requests counted in it).
    windows: Mutex<HashMap<u32, (u64, u32)>>,
}

impl RateLimiter {
    /// Counts one request of `key_id` against `limit` per minute at `now_ms`. A refused request
    /// is not counted (the window stays full until it resets).
    pub fn hit(&self, key_id: u32, limit: u32, now_ms: u64) -> Verdict {
        let minute = now_ms / 60_000;
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window = windows.entry(key_id).or_insert((minute, 0));
        if window.0 != minute {
            *window = (minute, 0);
        }
        let allowed = window.1 < limit;
        if allowed {
            window.1 += 1;
        }
        Verdict {
            allowed,
            limit,
            remaining: limit.saturating_sub(window.1),
            reset_secs: (minute + 1) * 60,
        }
    }

    /// The headers of a response to a request that named no valid key: the default limit,
    /// nothing counted.
    pub fn unkeyed(limit: u32, now_ms: u64) -> Verdict {
        Verdict {
            allowed: true,
            limit,
            remaining: limit,
            reset_secs: (now_ms / 60_000 + 1) * 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_resets_each_minute() {
        let r = RateLimiter::default();
        let t = 1_764_137_640_000; // 06:14:00.000
        let v = r.hit(1, 2, t);
        assert_eq!(
            v,
            Verdict {
                allowed: true,
                limit: 2,
                remaining: 1,
                reset_secs: 1_764_137_700
            }
        );
        assert_eq!(r.hit(1, 2, t + 1).remaining, 0);
        let refused = r.hit(1, 2, t + 59_999);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after(t + 59_999), 1);
        assert!(r.hit(2, 2, t).allowed, "another key has its own window");
        let next = r.hit(1, 2, t + 60_000);
        assert!(next.allowed);
        assert_eq!(next.remaining, 1);
        assert_eq!(next.reset_secs, 1_764_137_760);
    }

    #[test]
    fn a_lowered_limit_applies_at_once() {
        let r = RateLimiter::default();
        let t = 1_764_137_640_000;
        for _ in 0..5 {
            assert!(r.hit(1, 10, t).allowed);
        }
        let v = r.hit(1, 3, t);
        assert!(!v.allowed);
        assert_eq!(v.remaining, 0);
    }
}
