//! What the cache does when its store fails: the request goes on without it, and the store is
//! left alone for a back-off (doubling from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]) so that while
//! Redis is down requests do not each wait out the timeout; the first operation after the
//! back-off probes it, and the first success resets it. Warnings are logged at most once per
//! [`WARN_INTERVAL`], with the number of failures left unlogged since the last one.
//!
//! Every function takes `now`, so the tests drive time instead of sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
pub const WARN_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct FailureGuard {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// While `Some` and in the future, the store is not tried.
    retry_at: Option<Instant>,
    /// The next back-off; zero until a failure.
    backoff: Duration,
    last_warning: Option<Instant>,
    suppressed: u64,
}

impl FailureGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain fields, valid after any panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the store may be tried at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.lock().retry_at.is_none_or(|t| now >= t)
    }

    /// The store answered: back to normal.
    pub fn succeeded(&self) {
        let mut s = self.lock();
        s.retry_at = None;
        s.backoff = Duration::ZERO;
    }

    /// The store could not be reached at `now`: back off.
    pub fn unreachable(&self, now: Instant) {
        let mut s = self.lock();
        s.backoff = if s.backoff.is_zero() {
            FIRST_BACKOFF
        } else {
            (s.backoff * 2).min(MAX_BACKOFF)
        };
        s.retry_at = Some(now + s.backoff);
    }

    /// Whether a warning may be logged at `now`; `Some(n)`: yes, and `n` earlier ones were
    /// swallowed since the last.
    pub fn warning(&self, now: Instant) -> Option<u64> {
        let mut s = self.lock();
        match s.last_warning {
            Some(last) if now.saturating_duration_since(last) < WARN_INTERVAL => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last_warning = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_doubling_and_recovers_on_success() {
        let g = FailureGuard::default();
        let t = Instant::now();
        assert!(g.available(t));
        g.unreachable(t);
        assert!(!g.available(t));
        assert!(!g.available(t + FIRST_BACKOFF - Duration::from_millis(1)));
        assert!(g.available(t + FIRST_BACKOFF));
        // The probe fails too: twice as long.
        let t2 = t + FIRST_BACKOFF;
        g.unreachable(t2);
        assert!(!g.available(t2 + FIRST_BACKOFF));
        assert!(g.available(t2 + 2 * FIRST_BACKOFF));
        // Never longer than the cap.
        let mut now = t2;
        for _ in 0..20 {
            g.unreachable(now);
            now += MAX_BACKOFF;
        }
        assert!(g.available(now));
        g.unreachable(now);
        assert!(g.available(now + MAX_BACKOFF));
        // A success resets everything.
        g.succeeded();
        assert!(g.available(now));
        g.unreachable(now);
        assert!(g.available(now + FIRST_BACKOFF));
    }

    #[test]
    fn warns_once_per_interval_and_counts_the_rest() {
        let g = FailureGuard::default();
        let t = Instant::now();
        assert_eq!(g.warning(t), Some(0));
        assert_eq!(g.warning(t + Duration::from_secs(1)), None);
        assert_eq!(
            g.warning(t + WARN_INTERVAL - Duration::from_millis(1)),
            None
        );
        assert_eq!(g.warning(t + WARN_INTERVAL), Some(2));
        assert_eq!(g.warning(t + WARN_INTERVAL), None);
        assert_eq!(g.warning(t + 3 * WARN_INTERVAL), Some(1));
    }
}
