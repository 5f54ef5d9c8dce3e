//! GCRA arithmetic, the reference for both backends: the Redis script makes
//! the same decision atomically, and the headers of both are computed here.
//! Times are integer microseconds so any clock (Redis `TIME`, a fake clock)
//! gives exact, repeatable results.
//!
//! `limit` per `per` is the sustained rate, so one request is "emitted"
//! every `T = per / limit`; a full bucket admits `burst` at once. State is
//! one number per bucket, the theoretical arrival time `tat`.

use std::time::Duration;

/// One limit's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval `T`, in microseconds.
    pub emission_us: i64,
    /// Bucket size.
    pub burst: i64,
}

/// A decision and what the headers say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Admitted.
    pub allowed: bool,
    /// The bucket's `tat` after the decision.
    pub tat: i64,
    /// How long until a request would be admitted (0 when allowed).
    pub retry_after_us: i64,
}

impl Gcra {
    /// `limit` requests per `per`, `burst` at once.
    pub fn new(limit: u32, per: Duration, burst: u32) -> Self {
        let per_us = i64::try_from(per.as_micros()).unwrap_or(i64::MAX);
        Self {
            emission_us: (per_us / i64::from(limit.max(1))).max(1),
            burst: i64::from(burst.max(1)),
        }
    }

    /// Decides one request arriving at `now` against the stored `tat`.
    pub fn decide(&self, stored_tat: Option<i64>, now: i64) -> Outcome {
        let tat = stored_tat.unwrap_or(now).max(now);
        // Saturating: config bounds a bucket's span to 366 days, but a
        // decision must never panic on the request path.
        let new_tat = tat.saturating_add(self.emission_us);
        let allow_at = new_tat.saturating_sub(self.emission_us.saturating_mul(self.burst));
        if now < allow_at {
            Outcome {
                allowed: false,
                tat,
                retry_after_us: allow_at - now,
            }
        } else {
            Outcome {
                allowed: true,
                tat: new_tat,
                retry_after_us: 0,
            }
        }
    }

    /// Requests a bucket at `tat` would still admit at `now`.
    pub fn remaining(&self, tat: i64, now: i64) -> u32 {
        let room = now
            .saturating_add(self.emission_us.saturating_mul(self.burst))
            .saturating_sub(tat.max(now))
            / self.emission_us;
        u32::try_from(room.clamp(0, self.burst)).unwrap_or(0)
    }

    /// Time until the bucket is full again.
    pub fn reset_us(&self, tat: i64, now: i64) -> i64 {
        (tat - now).max(0)
    }
}

/// Whole seconds, rounded up (`Retry-After`, `Reset`).
pub fn ceil_secs(us: i64) -> u64 {
    u64::try_from((us + 999_999) / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    /// A fake clock: a bucket's state and the time, advanced by hand.
    struct Bucket {
        gcra: Gcra,
        tat: Option<i64>,
        now: i64,
    }

    impl Bucket {
        fn hit(&mut self) -> Outcome {
            let outcome = self.gcra.decide(self.tat, self.now);
            if outcome.allowed {
                self.tat = Some(outcome.tat);
            }
            outcome
        }
    }

    #[test]
    fn burst_then_sustained_rate() {
        // { limit = 10, per = "1m", burst = 5 }: 5 at once, then one every 6 s.
        let mut b = Bucket {
            gcra: Gcra::new(10, Duration::from_secs(60), 5),
            tat: None,
            now: 1_000 * S,
        };
        for expected_remaining in [4, 3, 2, 1, 0] {
            let outcome = b.hit();
            assert!(outcome.allowed);
            assert_eq!(b.gcra.remaining(outcome.tat, b.now), expected_remaining);
        }
        let denied = b.hit();
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_us, 6 * S);
        assert_eq!(ceil_secs(denied.retry_after_us), 6);
        assert_eq!(b.gcra.reset_us(denied.tat, b.now), 30 * S);
        // Refill: one more after 6 s, not before.
        b.now += 6 * S - 1;
        assert!(!b.hit().allowed);
        b.now += 1;
        assert!(b.hit().allowed);
        assert!(!b.hit().allowed);
        // A full refill after 30 s restores the whole burst.
        b.now += 30 * S;
        for _ in 0..5 {
            assert!(b.hit().allowed);
        }
        assert!(!b.hit().allowed);
    }

    #[test]
    fn a_bucket_past_any_span_config_allows_does_not_overflow() {
        // Config refuses such a span; the arithmetic still must not panic.
        let gcra = Gcra::new(1, Duration::from_secs(366 * 86_400), u32::MAX);
        let now = 1_700_000_000_000_000;
        let first = gcra.decide(None, now);
        assert!(first.allowed);
        assert!(gcra.remaining(first.tat, now) > 0);
        assert!(gcra.decide(Some(i64::MAX - 1), now).retry_after_us >= 0);
    }

    #[test]
    fn burst_defaults_to_limit_and_partial_seconds_round_up() {
        let gcra = Gcra::new(3, Duration::from_secs(1), 3);
        assert_eq!(gcra.emission_us, 333_333);
        let mut b = Bucket {
            gcra,
            tat: None,
            now: 0,
        };
        assert!(b.hit().allowed && b.hit().allowed && b.hit().allowed);
        let denied = b.hit();
        assert!(!denied.allowed);
        assert_eq!(
            ceil_secs(denied.retry_after_us),
            1,
            "Retry-After is at least 1 whole second"
        );
        assert_eq!(ceil_secs(b.gcra.reset_us(denied.tat, 0)), 1);
    }

    #[test]
    fn a_fresh_bucket_is_full() {
        let gcra = Gcra::new(100, Duration::from_secs(60), 20);
        assert_eq!(gcra.remaining(0, 50 * S), 20);
        assert_eq!(gcra.reset_us(0, 50 * S), 0);
    }
}
