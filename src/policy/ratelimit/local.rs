//! The memory backend: one bucket store per (route, limit), kept in a
//! registry that outlives config generations so an unchanged limit keeps its
//! state across a reload. Idle keys are evicted periodically, so memory
//! stays bounded whatever keys clients make up.
//!
//! The store is governor's concurrent keyed state (a `tat` per key, updated
//! by compare-and-swap); the decisions are `gcra`'s, the arithmetic the
//! Redis script runs, so both backends give the same answers. That includes
//! judging a request by every limit before charging any: governor's own
//! `check_key` charges a bucket as it admits, and a request a second limit
//! then refused had already drained the first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{NotKeyed, StateStore};

use super::gcra::{Gcra, Outcome};

/// How a bucket's key is hashed: foldhash's quality variant, seeded at
/// random per store (a client cannot aim keys at one slot without the
/// seed), at a fraction of SipHash's cost on every request.
type KeyHasher = foldhash::quality::RandomState;

/// What identifies a limit across reloads: same route name, `by`, `limit`,
/// `per`, `burst` means same state.
pub type LimitId = (String, String, u32, Duration, u32);

/// One limit's buckets in memory: the `tat` of each key, in microseconds
/// of `clock` since `start` (plus one: governor's store reads 0 as "no
/// state").
pub struct LocalBuckets<C: Clock = DefaultClock> {
    store: DashMapStateStore<String, KeyHasher>,
    clock: C,
    start: C::Instant,
    gcra: Gcra,
}

impl<C: Clock> LocalBuckets<C> {
    /// Empty buckets for `gcra`, timed by `clock` (tests use a fake one).
    pub fn with_clock(gcra: Gcra, clock: C) -> Self {
        let start = clock.now();
        Self {
            store: DashMapStateStore::with_hasher(KeyHasher::default()),
            clock,
            start,
            gcra,
        }
    }

    /// The time on this store's scale.
    pub fn now_us(&self) -> i64 {
        let since: u64 = self.clock.now().duration_since(self.start).into();
        i64::try_from(since / 1_000).unwrap_or(i64::MAX - 1) + 1
    }

    /// `key`'s stored `tat`, left as it is (no entry is made for a new key).
    pub fn peek(&self, key: &String) -> Option<i64> {
        let state = self.store.get(key)?;
        let stored = state.measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>);
        stored.err().flatten().map(to_us)
    }

    /// Decides one request for `key` at `now` and, when admitted, charges
    /// its bucket, atomically against concurrent requests for the key.
    pub fn charge(&self, key: &String, now: i64) -> Outcome {
        let gcra = self.gcra;
        let decided = self.store.measure_and_replace(key, |tat| {
            let outcome = gcra.decide(tat.map(to_us), now);
            if outcome.allowed {
                Ok((outcome, from_us(outcome.tat)))
            } else {
                Err(outcome)
            }
        });
        decided.unwrap_or_else(|refused| refused)
    }

    /// Takes one charge of `key` back: a request it was made for was
    /// refused by another limit after all (a concurrent request took that
    /// limit's last room between the judging and the charging). A `tat`
    /// at or below the present is a full bucket, so subtracting one
    /// emission interval is exact whatever was charged since.
    pub fn refund(&self, key: &String) {
        let emission = self.gcra.emission_us;
        let _ = self.store.measure_and_replace(key, |tat| match tat {
            Some(tat) => Ok(((), from_us((to_us(tat) - emission).max(1)))),
            None => Err(()),
        });
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&self.store)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the keys whose bucket is full again (a fresh key's state).
    fn evict_full(&self) {
        self.store.retain_recent(from_us(self.now_us()));
        ShrinkableKeyedStateStore::shrink_to_fit(&self.store);
    }
}

fn to_us(stored: Nanos) -> i64 {
    i64::try_from(u64::from(stored)).unwrap_or(i64::MAX)
}

fn from_us(tat: i64) -> Nanos {
    Nanos::from(u64::try_from(tat).unwrap_or(1))
}

/// Every local limiter, by limit identity.
#[derive(Default)]
pub struct LimiterRegistry {
    limiters: Mutex<HashMap<LimitId, Arc<LocalBuckets>>>,
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
    pub fn get_or_create(&self, id: LimitId, gcra: Gcra) -> Arc<LocalBuckets> {
        let fresh = || Arc::new(LocalBuckets::with_clock(gcra, DefaultClock::default()));
        let Ok(mut limiters) = self.limiters.lock() else {
            return fresh();
        };
        limiters.entry(id).or_insert_with(fresh).clone()
    }

    /// Evicts idle keys, and limiters no generation uses any more.
    pub fn evict_idle(&self) {
        let Ok(mut limiters) = self.limiters.lock() else {
            return;
        };
        limiters.retain(|_, limiter| Arc::strong_count(limiter) > 1);
        for limiter in limiters.values() {
            limiter.evict_full();
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

    const S: i64 = 1_000_000;

    #[test]
    fn buckets_follow_the_gcra_reference() {
        // { limit = 10, per = "1m", burst = 5 }: 5 at once, then one every 6 s.
        let gcra = Gcra::new(10, Duration::from_secs(60), 5);
        let clock = FakeRelativeClock::default();
        let buckets = LocalBuckets::with_clock(gcra, clock.clone());
        let key = "ip:1.2.3.4".to_string();
        for expected in [4, 3, 2, 1, 0] {
            let now = buckets.now_us();
            let outcome = buckets.charge(&key, now);
            assert!(outcome.allowed);
            assert_eq!(gcra.remaining(outcome.tat, now), expected);
        }
        let now = buckets.now_us();
        let denied = buckets.charge(&key, now);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_us, 6 * S);
        assert_eq!(gcra.reset_us(denied.tat, now), 30 * S);
        clock.advance(Duration::from_secs(6));
        assert!(buckets.charge(&key, buckets.now_us()).allowed);
        assert!(!buckets.charge(&key, buckets.now_us()).allowed);
        // Another key has its own bucket.
        assert!(
            buckets
                .charge(&"ip:5.6.7.8".to_string(), buckets.now_us())
                .allowed
        );
    }

    #[test]
    fn peeking_changes_nothing() {
        let gcra = Gcra::new(1, Duration::from_secs(60), 1);
        let buckets = LocalBuckets::with_clock(gcra, FakeRelativeClock::default());
        let key = "k".to_string();
        assert_eq!(buckets.peek(&key), None);
        assert!(buckets.is_empty(), "a peek makes no entry");
        let now = buckets.now_us();
        let charged = buckets.charge(&key, now);
        assert_eq!(buckets.peek(&key), Some(charged.tat));
        assert_eq!(buckets.peek(&key), Some(charged.tat));
        assert!(!buckets.charge(&key, now).allowed);
        assert_eq!(
            buckets.peek(&key),
            Some(charged.tat),
            "a refusal charges nothing"
        );
    }

    #[test]
    fn a_refund_takes_one_charge_back() {
        let gcra = Gcra::new(1, Duration::from_secs(60), 2);
        let buckets = LocalBuckets::with_clock(gcra, FakeRelativeClock::default());
        let key = "k".to_string();
        let now = buckets.now_us();
        let first = buckets.charge(&key, now);
        let second = buckets.charge(&key, now);
        assert!(first.allowed && second.allowed);
        assert!(!buckets.charge(&key, now).allowed, "the bucket is empty");
        buckets.refund(&key);
        assert_eq!(buckets.peek(&key), Some(first.tat));
        assert!(
            buckets.charge(&key, now).allowed,
            "the refunded room is there"
        );
        // A refund of a key never charged makes no entry.
        buckets.refund(&"other".to_string());
        assert_eq!(buckets.peek(&"other".to_string()), None);
    }

    #[test]
    fn full_buckets_are_evicted() {
        let gcra = Gcra::new(10, Duration::from_secs(1), 10);
        let clock = FakeRelativeClock::default();
        let buckets = LocalBuckets::with_clock(gcra, clock.clone());
        for i in 0..1000 {
            buckets.charge(&format!("k{i}"), buckets.now_us());
        }
        clock.advance(Duration::from_millis(50));
        buckets.charge(&"busy".to_string(), buckets.now_us());
        assert_eq!(buckets.len(), 1001);
        buckets.evict_full();
        assert_eq!(buckets.len(), 1001, "no bucket is full yet");
        // 100 ms later the first keys' buckets are full again; `busy`'s
        // is not (charged 50 ms later).
        clock.advance(Duration::from_millis(60));
        buckets.evict_full();
        assert_eq!(buckets.len(), 1, "keys whose bucket refilled are dropped");
    }

    #[test]
    fn limiters_no_generation_holds_are_dropped() {
        let registry = LimiterRegistry::default();
        let gcra = Gcra::new(1000, Duration::from_millis(100), 10);
        let id = || {
            (
                "r".into(),
                "ip".into(),
                1000,
                Duration::from_millis(100),
                10,
            )
        };
        let limiter = registry.get_or_create(id(), gcra);
        limiter.charge(&"k".to_string(), limiter.now_us());
        assert!(Arc::ptr_eq(&limiter, &registry.get_or_create(id(), gcra)));
        assert_eq!(registry.keys(), 1);
        drop(limiter);
        registry.evict_idle();
        assert_eq!(registry.limiters.lock().unwrap().len(), 0);
    }
}
