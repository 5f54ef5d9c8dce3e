//! Replay protection (`replay = true`): a signature accepted once is
//! refused while its timestamp is still within the tolerance. Remembered in
//! the rate-limit backend: Redis (`SET NX PX`, so every instance agrees)
//! when `[ratelimit] backend = "redis"`, else this instance's memory,
//! bounded. When Redis cannot answer, memory decides (logged).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Accepted, hex};
use crate::policy::ratelimit::redis::RedisBackend;

/// Most signatures remembered in memory; beyond, the oldest are forgotten.
pub const MEMORY_CAPACITY: usize = 100_000;

/// Accepted signatures in this instance's memory (kept across reloads).
#[derive(Debug)]
pub struct SeenSignatures {
    capacity: usize,
    inner: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    until: HashMap<Vec<u8>, Instant>,
    order: VecDeque<(Instant, Vec<u8>)>,
}

impl Default for SeenSignatures {
    fn default() -> Self {
        Self::with_capacity(MEMORY_CAPACITY)
    }
}

impl SeenSignatures {
    /// A store remembering at most `capacity` signatures.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Seen::default()),
        }
    }

    /// Remembers `key` until `now + ttl`: `true` the first time, `false`
    /// while it is remembered.
    pub fn first_sighting(&self, key: Vec<u8>, ttl: Duration, now: Instant) -> bool {
        let Ok(mut seen) = self.inner.lock() else {
            return false;
        };
        while let Some((until, _)) = seen.order.front() {
            if *until > now && seen.order.len() < self.capacity {
                break;
            }
            if let Some((until, old)) = seen.order.pop_front()
                && seen.until.get(&old) == Some(&until)
            {
                seen.until.remove(&old);
            }
        }
        if seen.until.get(&key).is_some_and(|until| *until > now) {
            return false;
        }
        let until = now + ttl;
        seen.until.insert(key.clone(), until);
        seen.order.push_back((until, key));
        true
    }

    /// How many signatures are remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |s| s.until.len())
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where one generation remembers accepted signatures.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    memory: Arc<SeenSignatures>,
    redis: Option<(Arc<RedisBackend>, String)>,
}

impl ReplayGuard {
    /// Memory always (the fallback); Redis with its key prefix when the
    /// rate-limit backend is Redis.
    pub fn new(memory: Arc<SeenSignatures>, redis: Option<(Arc<RedisBackend>, String)>) -> Self {
        Self { memory, redis }
    }

    /// Whether this is the first time the signature `accepted` of verifier
    /// `name` is seen (and remembers it).
    pub async fn first_sighting(&self, name: &str, accepted: &Accepted) -> bool {
        if let Some((redis, prefix)) = &self.redis {
            let key = format!("{prefix}hmac:{name}:{}", hex(&accepted.mac));
            match redis.set_once(&key, accepted.ttl).await {
                Ok(first) => return first,
                Err(error) => {
                    tracing::warn!(%error, "replay check fell back to memory: redis failed");
                }
            }
        }
        let mut key = name.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&accepted.mac);
        self.memory
            .first_sighting(key, accepted.ttl, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_and_stays_bounded() {
        let seen = SeenSignatures::with_capacity(3);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        assert!(seen.first_sighting(b"a".to_vec(), ttl, t0));
        assert!(!seen.first_sighting(b"a".to_vec(), ttl, t0 + Duration::from_secs(9)));
        assert!(seen.first_sighting(b"a".to_vec(), ttl, t0 + Duration::from_secs(11)));
        for k in [b"b", b"c", b"d", b"e"] {
            assert!(seen.first_sighting(k.to_vec(), ttl, t0 + Duration::from_secs(12)));
        }
        assert!(seen.len() <= 3);
    }
}
