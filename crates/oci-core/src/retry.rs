//! The one retry policy: exponential backoff with equal jitter, and `Retry-After`.
//!
//! Retry `n` (1-based) waits between half and all of `min(cap, base × 2^(n-1))`: the
//! doubling spreads load away from a struggling server, the jitter keeps many clients (or
//! replicas) from retrying in lockstep, and the floor of half keeps a retry from coming
//! back at once.

use std::time::{Duration, SystemTime};

/// An exponential backoff with equal jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's wait.
    pub base: Duration,
    /// No wait is longer.
    pub cap: Duration,
}

impl Backoff {
    /// A backoff from `base`, doubling up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap }
    }

    /// The most retry `attempt` (1-based) waits: `min(cap, base × 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.base
            .checked_mul(1 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// How long retry `attempt` (1-based) waits: between half and all of its ceiling.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt)
            .mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// How long a `Retry-After` header value (seconds, or an HTTP date) asks to wait, at most
/// `cap`; `None` when it is malformed or in the past.
pub fn retry_after(value: &str, cap: Duration) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(cap));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    when.duration_since(SystemTime::now())
        .ok()
        .map(|d| d.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_equal_jitter() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let ceilings: Vec<u64> = (1..=8).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
        for n in 1..=10 {
            let d = b.delay(n);
            assert!(d >= b.ceiling(n) / 2 && d <= b.ceiling(n), "{n}: {d:?}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let cap = Duration::from_secs(300);
        assert_eq!(retry_after("7", cap), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("99999", cap), Some(cap));
        assert_eq!(retry_after("soon", cap), None);
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", cap),
            None,
            "past"
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = retry_after(&later, cap).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }
}
