//! The verified-token cache: a token verified once is not verified again
//! until `cache_ttl` passes or it expires, whichever is first. Keyed by the
//! SHA-256 of the token (the token itself is never stored), bounded in size.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::claims::VerifiedClaims;

/// Entries kept at most; past it, expired entries go, then the oldest half.
pub const MAX_ENTRIES: usize = 10_000;

type Key = [u8; 32];

/// Verified claims, shared by every request that presents the token.
pub type Claims = Arc<VerifiedClaims>;

/// Cached claims, when they stop being fresh, and their `exp` as read
/// once (a hit re-checks it against the wall clock without looking it up).
type Entry = (Instant, Option<f64>, Claims);

/// Verified claims by token hash.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<Key, Entry, BuildHasherDefault<DigestFold>>>,
}

/// The table's hash of a key: its words folded together. The key is already a
/// SHA-256 digest, evenly spread, so hashing it again (SipHash, the
/// default) buys nothing; and only verified tokens are ever inserted, so
/// a client cannot fill the table with digests it ground to collide.
#[derive(Debug, Default)]
pub struct DigestFold(u64);

impl Hasher for DigestFold {
    fn write(&mut self, bytes: &[u8]) {
        // Called once with the digest (an array's length prefix goes
        // through `write_usize` below). Every word is folded in, so the
        // hash stays a function of all of the key, whatever it is given.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, _length: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The cache key of a token.
pub fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// Claims cached for `key`, if still fresh at `now`.
    /// With them, their `exp` (see [`Entry`]).
    pub fn get(&self, key: &Key, now: Instant) -> Option<(Option<f64>, Claims)> {
        let mut entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some((until, exp, claims)) if *until > now => Some((*exp, claims.clone())),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Caches `claims` for `ttl` from `now` (the caller caps it at `exp`,
    /// which it gives too).
    pub fn put(&self, key: Key, exp: Option<f64>, claims: Claims, now: Instant, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (until, _, _)| *until > now);
            if entries.len() >= MAX_ENTRIES {
                let mut ages: Vec<Instant> = entries.values().map(|(until, _, _)| *until).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                entries.retain(|_, (until, _, _)| *until > cutoff);
            }
        }
        entries.insert(key, (now + ttl, exp, claims));
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
        let claims = Arc::new(VerifiedClaims::new(serde_json::Map::new()));
        cache.put(key("a"), None, claims.clone(), now, Duration::from_secs(10));
        assert!(cache.get(&key("a"), now + Duration::from_secs(9)).is_some());
        assert!(
            cache
                .get(&key("a"), now + Duration::from_secs(10))
                .is_none()
        );
        assert!(cache.get(&key("b"), now).is_none());
        cache.put(key("zero"), None, claims.clone(), now, Duration::ZERO);
        assert!(cache.get(&key("zero"), now).is_none());
        for i in 0..(MAX_ENTRIES + 10) {
            cache.put(
                key(&i.to_string()),
                None,
                claims.clone(),
                now,
                Duration::from_secs(1 + i as u64),
            );
        }
        assert!(cache.len() <= MAX_ENTRIES);
    }
}
