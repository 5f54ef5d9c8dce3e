//! The memory backend: governor keyed limiters, one per (route, limit),
//! kept in a registry that outlives config generations so an unchanged limit
//! keeps its state across a reload. Idle keys are evicted periodically, so
//! memory stays bounded whatever keys clients make up.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::gcra::Gcra;

/// A keyed limiter reporting its state after each decision.
pub type KeyedLimiter<C = DefaultClock> =
    RateLimiter<String, DashMapStateStore<String>, C, StateInformationMiddleware>;

/// What identifies a limit across reloads: same route name, `by`, `limit`,
/// `per`, `burst` means same state.
pub type LimitId = (String, String, u32, Duration, u32);

/// The decision of one local limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalOutcome {
    /// Admitted.
    pub allowed: bool,
    /// Requests still admitted now.
    pub remaining: u32,
    /// Time until a request would be admitted (0 when allowed).
    pub retry_after: Duration,
    /// Time until the bucket is full.
    pub reset: Duration,
}

/// Builds a limiter for a GCRA with an explicit clock (tests use a fake one).
pub fn limiter_with_clock<C: Clock>(gcra: Gcra, clock: C) -> KeyedLimiter<C> {
    let period = Duration::from_micros(u64::try_from(gcra.emission_us).unwrap_or(1));
    let burst =
        NonZeroU32::new(u32::try_from(gcra.burst).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::dashmap_with_clock(quota, clock).with_middleware::<StateInformationMiddleware>()
}

/// Decides one request for `key`.
pub fn check<C: Clock>(
    limiter: &KeyedLimiter<C>,
    gcra: Gcra,
    clock: &C,
    key: &String,
) -> LocalOutcome {
    let per_cell = Duration::from_micros(u64::try_from(gcra.emission_us).unwrap_or(1));
    match limiter.check_key(key) {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let used = u32::try_from(gcra.burst)
                .unwrap_or(u32::MAX)
                .saturating_sub(remaining);
            LocalOutcome {
                allowed: true,
                remaining,
                retry_after: Duration::ZERO,
                reset: per_cell * used,
            }
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(clock.now());
            let burst = u32::try_from(gcra.burst).unwrap_or(u32::MAX);
            LocalOutcome {
                allowed: false,
                remaining: 0,
                retry_after: wait,
                reset: wait + per_cell * burst.saturating_sub(1),
            }
        }
    }
}

/// Every local limiter, by limit identity.
#[derive(Default)]
pub struct LimiterRegistry {
    limiters: Mutex<HashMap<LimitId, Arc<KeyedLimiter>>>,
}

impl std::fmt::Debug for LimiterRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LimiterRegistry({} limiters)",
            self.limiters.lock().map_or(0, |l| l.len())
        )
    }
}

impl LimiterRegistry {
    /// The limiter for `id`, created on first use and shared afterwards.
    pub fn get_or_create(&self, id: LimitId, gcra: Gcra) -> Arc<KeyedLimiter> {
        let Ok(mut limiters) = self.limiters.lock() else {
            return Arc::new(limiter_with_clock(gcra, DefaultClock::default()));
        };
        limiters
            .entry(id)
            .or_insert_with(|| Arc::new(limiter_with_clock(gcra, DefaultClock::default())))
            .clone()
    }

    /// Evicts idle keys, and limiters no generation uses any more.
    pub fn evict_idle(&self) {
        let Ok(mut limiters) = self.limiters.lock() else {
            return;
        };
        limiters.retain(|_, limiter| Arc::strong_count(limiter) > 1);
        for limiter in limiters.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys held across all limiters.
    pub fn keys(&self) -> usize {
        self.limiters
            .lock()
            .map_or(0, |l| l.values().map(|x| x.len()).sum())
    }

    /// Runs `evict_idle` every `every` while the registry lives.
    pub fn spawn_evictor(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                registry.evict_idle();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn governor_matches_the_gcra_reference() {
        let gcra = Gcra::new(10, Duration::from_secs(60), 5);
        let clock = FakeRelativeClock::default();
        let limiter = limiter_with_clock(gcra, clock.clone());
        let key = "ip:1.2.3.4".to_string();
        for expected in [4, 3, 2, 1, 0] {
            let outcome = check(&limiter, gcra, &clock, &key);
            assert!(outcome.allowed);
            assert_eq!(outcome.remaining, expected);
        }
        let denied = check(&limiter, gcra, &clock, &key);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_secs(6));
        assert_eq!(denied.reset, Duration::from_secs(30));
        clock.advance(Duration::from_secs(6));
        assert!(check(&limiter, gcra, &clock, &key).allowed);
        assert!(!check(&limiter, gcra, &clock, &key).allowed);
        // Another key has its own bucket.
        assert!(check(&limiter, gcra, &clock, &"ip:5.6.7.8".to_string()).allowed);
    }

    #[test]
    fn idle_keys_are_evicted() {
        let registry = Arc::new(LimiterRegistry::default());
        let gcra = Gcra::new(1000, Duration::from_millis(100), 10);
        let limiter = registry.get_or_create(
            (
                "r".into(),
                "ip".into(),
                1000,
                Duration::from_millis(100),
                10,
            ),
            gcra,
        );
        let clock = DefaultClock::default();
        for i in 0..1000 {
            check(&limiter, gcra, &clock, &format!("k{i}"));
        }
        assert_eq!(registry.keys(), 1000);
        std::thread::sleep(Duration::from_millis(150));
        registry.evict_idle();
        assert_eq!(
            registry.keys(),
            0,
            "keys idle past a full refill are dropped"
        );
        // Limiters no generation holds are dropped too.
        drop(limiter);
        registry.evict_idle();
        assert_eq!(registry.limiters.lock().unwrap().len(), 0);
    }
}
