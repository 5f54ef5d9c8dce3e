//! The verified-token cache: a token verified once is not verified again
//! until `cache_ttl` passes or it expires, whichever is first. Keyed by the
//! SHA-256 of the token (the token itself is never stored), bounded in size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Entries kept at most; past it, expired entries go, then the oldest half.
pub const MAX_ENTRIES: usize = 10_000;

type Key = [u8; 32];

/// Cached claims and when they stop being fresh.
type Entry = (Instant, Arc<Map<String, Value>>);

/// Verified claims by token hash.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<Key, Entry>>,
}

/// The cache key of a token.
pub fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// Claims cached for `key`, if still fresh at `now`.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Arc<Map<String, Value>>> {
        let mut entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some((until, claims)) if *until > now => Some(claims.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Caches `claims` for `ttl` from `now` (the caller caps it at `exp`).
    pub fn put(&self, key: Key, claims: Arc<Map<String, Value>>, now: Instant, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_ENTRIES {
                let mut ages: Vec<Instant> = entries.values().map(|(until, _)| *until).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                entries.retain(|_, (until, _)| *until > cutoff);
            }
        }
        entries.insert(key, (now + ttl, claims));
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_stays_bounded() {
        let cache = TokenCache::default();
        let now = Instant::now();
        let claims = Arc::new(Map::new());
        cache.put(key("a"), claims.clone(), now, Duration::from_secs(10));
        assert!(cache.get(&key("a"), now + Duration::from_secs(9)).is_some());
        assert!(
            cache
                .get(&key("a"), now + Duration::from_secs(10))
                .is_none()
        );
        assert!(cache.get(&key("b"), now).is_none());
        cache.put(key("zero"), claims.clone(), now, Duration::ZERO);
        assert!(cache.get(&key("zero"), now).is_none());
        for i in 0..(MAX_ENTRIES + 10) {
            cache.put(
                key(&i.to_string()),
                claims.clone(),
                now,
                Duration::from_secs(1 + i as u64),
            );
        }
        assert!(cache.len() <= MAX_ENTRIES);
    }
}
