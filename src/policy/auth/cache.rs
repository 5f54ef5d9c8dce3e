//! The verified-token cache: a token verified once is not verified again
//! until `cache_ttl` passes or it expires, whichever is first. Found by a
//! seeded hash of the token's tail (its signature) and length, confirmed by
//! comparing the whole token in constant time, bounded in size.
//!
//! The token is kept beside its claims (as Envoy's JWT cache keeps it):
//! an exact comparison cannot be fooled by a colliding key, and it costs a
//! few dozen cycles where the SHA-256 digest this cache was keyed by before
//! cost a third of a microsecond on every request. A process that can be
//! read holds the signing secret and every token in flight anyway. Tokens
//! longer than [`MAX_TOKEN_BYTES`] are verified every time, not kept.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashbrown::HashTable;

use super::claims::VerifiedClaims;

/// Entries kept at most; past it, expired entries go, then the oldest half.
pub const MAX_ENTRIES: usize = 10_000;

/// The longest token cached, so the cache stays within
/// `MAX_ENTRIES * MAX_TOKEN_BYTES` whatever tokens the issuer mints.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Verified claims, shared by every request that presents the token.
pub type Claims = Arc<VerifiedClaims>;

/// One verified token.
#[derive(Debug)]
struct Entry {
    token: Box<[u8]>,
    /// When the claims stop being fresh.
    until: Instant,
    /// The token's `exp` as read once (a hit re-checks it against the
    /// wall clock without looking it up).
    exp: Option<f64>,
    claims: Claims,
}

/// Verified claims by token.
#[derive(Debug, Default)]
pub struct TokenCache {
    /// Seeded at random per cache: where a token lands is not something a
    /// client can aim (and only verified tokens are ever inserted).
    hasher: foldhash::quality::RandomState,
    entries: Mutex<HashTable<Entry>>,
}

/// Whether `a` and `b` are the same bytes, in time that depends on their
/// length only (the length of a token is not a secret; its bytes are).
/// Eight bytes at a time: a token is compared on every request.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    let words = a_words.iter().zip(b_words).fold(0u64, |acc, (x, y)| {
        acc | (u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y))
    });
    let rest = a_rest
        .iter()
        .zip(b_rest)
        .fold(0u64, |acc, (x, y)| acc | u64::from(x ^ y));
    std::hint::black_box(words | rest) == 0
}

/// The bytes of a token that place it in the table: its last
/// [`HASHED_TAIL`] bytes (a JWT's signature, which no two verified tokens
/// share) and its length. Hashing the whole token cost a pass over it on
/// every request; only verified tokens are ever inserted, so a client
/// cannot fill one slot with tokens it chose, and a lookup still compares
/// the whole token.
fn placed_by(token: &[u8]) -> (&[u8], usize) {
    (
        &token[token.len().saturating_sub(HASHED_TAIL)..],
        token.len(),
    )
}

/// How many of a token's last bytes are hashed (see [`placed_by`]).
const HASHED_TAIL: usize = 32;

impl TokenCache {
    /// Claims cached for `token`, if still fresh at `now`.
    /// With them, their `exp` (see [`Entry`]).
    pub fn get(&self, token: &[u8], now: Instant) -> Option<(Option<f64>, Claims)> {
        let hash = self.hasher.hash_one(placed_by(token));
        let mut entries = self.entries.lock().ok()?;
        let found = entries
            .find_entry(hash, |entry| same_token(&entry.token, token))
            .ok()?;
        let entry = found.get();
        if entry.until > now {
            Some((entry.exp, entry.claims.clone()))
        } else {
            found.remove();
            None
        }
    }

    /// Caches `claims` for `ttl` from `now` (the caller caps it at `exp`,
    /// which it gives too). A token longer than [`MAX_TOKEN_BYTES`] is not
    /// cached.
    pub fn put(&self, token: &str, exp: Option<f64>, claims: Claims, now: Instant, ttl: Duration) {
        let token = token.as_bytes();
        if ttl.is_zero() || token.len() > MAX_TOKEN_BYTES {
            return;
        }
        let hash = self.hasher.hash_one(placed_by(token));
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|entry| entry.until > now);
            if entries.len() >= MAX_ENTRIES {
                let mut ages: Vec<Instant> = entries.iter().map(|entry| entry.until).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                entries.retain(|entry| entry.until > cutoff);
            }
        }
        let entry = Entry {
            token: token.into(),
            until: now + ttl,
            exp,
            claims,
        };
        match entries.find_entry(hash, |old| same_token(&old.token, token)) {
            Ok(mut old) => *old.get_mut() = entry,
            Err(absent) => {
                absent
                    .into_table()
                    .insert_unique(hash, entry, |e| self.hasher.hash_one(placed_by(&e.token)));
            }
        }
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
        cache.put("a", None, claims.clone(), now, Duration::from_secs(10));
        assert!(cache.get(b"a", now + Duration::from_secs(9)).is_some());
        assert!(cache.get(b"a", now + Duration::from_secs(10)).is_none());
        assert!(cache.get(b"b", now).is_none());
        cache.put("zero", None, claims.clone(), now, Duration::ZERO);
        assert!(cache.get(b"zero", now).is_none());
        for i in 0..(MAX_ENTRIES + 10) {
            cache.put(
                &i.to_string(),
                None,
                claims.clone(),
                now,
                Duration::from_secs(1 + i as u64),
            );
        }
        assert!(cache.len() <= MAX_ENTRIES);
    }

    #[test]
    fn only_the_very_same_token_hits() {
        let cache = TokenCache::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let put_with_sub = |sub: &str| {
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), sub.into());
            let claims = Arc::new(VerifiedClaims::new(claims));
            cache.put("aaa.bbb.ccc", None, claims, now, ttl);
        };
        put_with_sub("first");
        for other in [
            "aaa.bbb.ccd",
            "aaa.bbb.cc",
            "aaa.bbb.ccc.",
            "Aaa.bbb.ccc",
            "",
        ] {
            assert!(cache.get(other.as_bytes(), now).is_none(), "{other:?} hit");
        }
        let (_, hit) = cache
            .get(b"aaa.bbb.ccc", now)
            .expect("the token itself hits");
        assert_eq!(hit.get("sub"), Some(&serde_json::Value::from("first")));
        // Caching the token again replaces its entry rather than adding one.
        put_with_sub("second");
        assert_eq!(cache.len(), 1);
        let (_, hit) = cache.get(b"aaa.bbb.ccc", now).expect("still cached");
        assert_eq!(hit.get("sub"), Some(&serde_json::Value::from("second")));
    }

    #[test]
    fn a_token_past_the_size_cap_is_not_kept() {
        let cache = TokenCache::default();
        let now = Instant::now();
        let claims = Arc::new(VerifiedClaims::new(serde_json::Map::new()));
        let at_cap = "x".repeat(MAX_TOKEN_BYTES);
        let past_cap = "x".repeat(MAX_TOKEN_BYTES + 1);
        cache.put(&at_cap, None, claims.clone(), now, Duration::from_secs(10));
        cache.put(&past_cap, None, claims, now, Duration::from_secs(10));
        assert!(cache.get(at_cap.as_bytes(), now).is_some());
        assert!(cache.get(past_cap.as_bytes(), now).is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn same_token_compares_every_byte() {
        assert!(same_token(b"", b""));
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"xbc"));
        assert!(!same_token(b"abc", b"ab"));
        // Past a word: a difference at any byte, in the words or the rest.
        let token: Vec<u8> = (0..43u8).map(|i| b'A' + i).collect();
        assert!(same_token(&token, &token.clone()));
        for at in 0..token.len() {
            let mut other = token.clone();
            other[at] ^= 0x20;
            assert!(!same_token(&token, &other), "byte {at}");
        }
    }

    #[test]
    fn tokens_with_one_tail_are_told_apart() {
        let cache = TokenCache::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let tail = "s".repeat(HASHED_TAIL);
        let with_sub = |sub: &str| {
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), sub.into());
            Arc::new(VerifiedClaims::new(claims))
        };
        // Same length, same last bytes (one slot), different heads.
        let first = format!("head1.{tail}");
        let second = format!("head2.{tail}");
        cache.put(&first, None, with_sub("first"), now, ttl);
        assert!(cache.get(second.as_bytes(), now).is_none());
        cache.put(&second, None, with_sub("second"), now, ttl);
        assert_eq!(cache.len(), 2);
        for (token, sub) in [(&first, "first"), (&second, "second")] {
            let (_, hit) = cache.get(token.as_bytes(), now).expect("cached");
            assert_eq!(hit.get("sub"), Some(&serde_json::Value::from(sub)));
        }
    }
}
