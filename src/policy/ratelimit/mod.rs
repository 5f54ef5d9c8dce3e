//! Rate limits (`[ratelimit]`, route `rate_limits`): GCRA per limit, keyed
//! by ip / user / tenant / header / route. Every enforced limit must admit a
//! request; shadow limits are counted and reported but never reject. A
//! limit with `tiers` picks its numbers (and buckets) by a verified claim.
//! Backends: governor in memory (per instance), or Redis (shared, exact),
//! with `on_redis_error` deciding what happens when Redis cannot answer.

mod compiled;
pub mod gcra;
mod headers;
mod keys;
pub mod local;
pub mod redis;
pub mod rule;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use self::compiled::{CompiledLimit, TieredLimit, compile_limit};
use self::gcra::{Gcra, Outcome, ceil_secs};
pub use self::headers::{RATE_LIMIT_HEADERS, RateHeaders, quotable};
pub use self::keys::ip_bucket;
use self::keys::{bounded, bounded_bytes, push_ip_bucket};
use self::local::LimiterRegistry;
use self::redis::{RedisBackend, RedisFailure};

/// One item per limit of a route: a route has a few, so they stay on the
/// stack instead of a heap allocation per request and list.
type PerLimit<T> = smallvec::SmallVec<[T; 4]>;
pub use self::rule::{LimitKey, RateLimitRule, Tier};
use crate::policy::auth::{Identity, claims};
use crate::policy::head::HeadRejection;
use crate::route::Route;

/// `headers = ...`: which rate-limit headers responses carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMode {
    /// `X-RateLimit-*`.
    Legacy,
    /// `RateLimit`, `RateLimit-Policy`.
    Draft,
    /// Both sets.
    Both,
    /// None.
    None,
}

/// `on_redis_error = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// The per-instance memory limiter with the same limits.
    Local,
    /// Admit.
    Allow,
    /// 503.
    Deny,
}

/// Where the Redis backend is: `redis_url`, or the `redis_cluster` nodes.
/// Both may hold credentials, so `Debug` never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `redis_url`.
    pub url: String,
    /// `redis_cluster` (empty: a single server).
    pub cluster: Vec<String>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RedisTarget(<redacted>, {} cluster nodes)",
            self.cluster.len()
        )
    }
}

/// `[ratelimit]`, compiled.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// `backend = "redis"`: where Redis is.
    pub redis: Option<RedisTarget>,
    /// Bound on each Redis decision.
    pub redis_timeout: Duration,
    /// CA bundle (PEM bytes, read at load) for `rediss://` with a private CA.
    pub redis_ca: Option<Vec<u8>>,
    /// What a Redis failure means.
    pub on_redis_error: OnRedisError,
    /// IPv6 clients are grouped by this prefix.
    pub ipv6_prefix: u8,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Which headers to send.
    pub headers: HeaderMode,
}

/// The outcome of a request's rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Every enforced limit admitted it.
    #[default]
    Allowed,
    /// Refused; retry after this long.
    Denied(Duration),
    /// Redis failed with `on_redis_error = "deny"`.
    Unavailable,
}

/// Why the rate limits refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateRefusal {
    /// 429: retry after this long.
    Limited(Duration),
    /// 503: Redis failed with `on_redis_error = "deny"`.
    Unavailable,
}

impl Verdict {
    /// `Ok` when admitted; the refusal otherwise.
    pub fn admit(&self) -> Result<(), RateRefusal> {
        match self {
            Verdict::Allowed => Ok(()),
            Verdict::Denied(wait) => Err(RateRefusal::Limited(*wait)),
            Verdict::Unavailable => Err(RateRefusal::Unavailable),
        }
    }
}

/// What each of a request's limits decided: inline, no allocation, for
/// the usual one or two limits of a route.
pub type Decisions = smallvec::SmallVec<[RateDecision; 2]>;

/// One limit's decision, as `palisade_ratelimit_decisions_total` counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateDecision {
    /// The limit's position in the route's `rate_limits` (its metric
    /// series are cached by it, `observe::metrics::RouteSeries`).
    pub index: usize,
    /// The limit's `by` label.
    pub by: Arc<str>,
    /// Whether it admitted the request.
    pub allowed: bool,
    /// Whether it is a shadow limit.
    pub shadow: bool,
}

/// The decision and the headers to send, and what each limit decided (for
/// the metrics, recorded when the request ends).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateOutcome {
    /// Admit or not.
    pub verdict: Verdict,
    /// Headers for every response of the route (none for shadow-only routes).
    pub headers: Option<RateHeaders>,
    /// Each limit that decided.
    pub decisions: Decisions,
    /// Whether the Redis backend failed (cool-down skips excluded).
    pub backend_failed: bool,
}

/// What keys are made of.
pub struct KeyInputs<'a> {
    /// Client IP after `trusted_proxies`.
    pub client_ip: IpAddr,
    /// `client_ip` as text when it is at hand already (the connection's
    /// peer, written once per connection): an IPv4 key copies it instead
    /// of writing the address again on every request.
    pub client_ip_text: Option<&'a str>,
    /// Who the caller proved to be.
    pub identity: &'a Identity,
    /// Request headers (for `header:NAME`).
    pub headers: &'a HeaderMap,
}

/// One limit's decision, whichever backend made it.
#[derive(Debug, Clone, Copy)]
struct LimitResult {
    allowed: bool,
    remaining: u32,
    retry_after_us: i64,
    reset_us: i64,
}

/// What the headers say of one limit that did (or did not) admit a
/// request, its bucket at `tat` at `now`: the same for both backends.
fn limit_result(gcra: Gcra, allowed: bool, tat: i64, now: i64) -> LimitResult {
    LimitResult {
        allowed,
        remaining: gcra.remaining(tat, now),
        retry_after_us: if allowed {
            0
        } else {
            gcra.decide(Some(tat), now).retry_after_us
        },
        reset_us: gcra.reset_us(tat, now),
    }
}

/// One limit's memory decision for `key`, judged and charged in one step.
fn charge_one(limit: &CompiledLimit, key: &String) -> LimitResult {
    let now = limit.local.now_us();
    let outcome = limit.local.charge(key, now);
    limit_result(limit.gcra, outcome.allowed, outcome.tat, now)
}

/// Rate limiting for one policy generation.
pub struct RateLimitEngine {
    settings: RateLimitSettings,
    redis: Option<Arc<RedisBackend>>,
    routes: Vec<Vec<TieredLimit>>,
}

impl std::fmt::Debug for RateLimitEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RateLimitEngine(redis: {})", self.redis.is_some())
    }
}

impl RateLimitEngine {
    /// Resolves every route's limits against the registry (state survives
    /// reloads for unchanged limits) and the Redis backend, if any.
    pub fn new(
        settings: RateLimitSettings,
        routes: &[Arc<Route>],
        registry: &LimiterRegistry,
        redis: Option<Arc<RedisBackend>>,
    ) -> Self {
        let compiled = routes
            .iter()
            .map(|route| {
                let limit = |rule: &RateLimitRule, tier: Option<&Tier>| {
                    compile_limit(&settings, registry, &route.name, rule, tier)
                };
                let tiered = |rule: &RateLimitRule| TieredLimit {
                    base: limit(rule, None),
                    tiers: rule.tiers.iter().map(|t| limit(rule, Some(t))).collect(),
                };
                route.rate_limits.iter().map(tiered).collect()
            })
            .collect();
        Self {
            settings,
            redis,
            routes: compiled,
        }
    }

    /// The Redis backend, if configured.
    pub fn redis(&self) -> Option<&Arc<RedisBackend>> {
        self.redis.as_ref()
    }

    /// The bucket key of each of `route`'s limits for these inputs, in
    /// `rate_limits` order (what `palisade explain` shows).
    pub fn keys(&self, route: &Route, inputs: &KeyInputs<'_>) -> Vec<String> {
        self.routes.get(route.id).map_or_else(Vec::new, |tiered| {
            let limits: Vec<&CompiledLimit> =
                tiered.iter().map(|t| t.pick(inputs.identity)).collect();
            self.keys_of(&limits, inputs, Keyspace::Shared).into_vec()
        })
    }

    fn keys_of(
        &self,
        limits: &[&CompiledLimit],
        inputs: &KeyInputs<'_>,
        keyspace: Keyspace,
    ) -> PerLimit<String> {
        limits
            .iter()
            .map(|l| self.key_of(l, inputs, keyspace))
            .collect()
    }

    /// One limit's bucket key in `keyspace`.
    fn key_of(&self, limit: &CompiledLimit, inputs: &KeyInputs<'_>, keyspace: Keyspace) -> String {
        let base = match keyspace {
            Keyspace::Shared => limit.key_base.as_str(),
            Keyspace::Own => "",
        };
        let mut key = String::with_capacity(base.len() + 24);
        key.push_str(base);
        self.push_key_value(&mut key, &limit.rule.by, inputs);
        key
    }

    /// Decides a request on `route`.
    pub async fn check(&self, route: &Route, inputs: &KeyInputs<'_>) -> RateOutcome {
        let Some(tiered) = self.routes.get(route.id).filter(|l| !l.is_empty()) else {
            return RateOutcome::default();
        };
        if let ([only], None) = (tiered.as_slice(), &self.redis) {
            // One limit in memory, as most routes have: decided without
            // the per-limit lists.
            let limit = only.pick(inputs.identity);
            let key = self.key_of(limit, inputs, Keyspace::Own);
            return self.conclude(route, &[limit], &[Some(charge_one(limit, &key))]);
        }
        let limits: PerLimit<&CompiledLimit> =
            tiered.iter().map(|t| t.pick(inputs.identity)).collect();
        let limits = limits.as_slice();
        let mut backend_failed = false;
        let results = match &self.redis {
            None => self.local(limits, &self.keys_of(limits, inputs, Keyspace::Own)),
            Some(redis) => {
                let keys = self.keys_of(limits, inputs, Keyspace::Shared);
                // The keys go to Redis; the memory fallback (rare) makes
                // them again.
                let request: Vec<(String, Gcra, bool)> = limits
                    .iter()
                    .zip(keys)
                    .map(|(l, k)| (k, l.gcra, !l.rule.shadow))
                    .collect();
                // Boxed: the Redis round trip is a large future, and
                // inline it would be copied with every request's future
                // whatever the route's backend.
                match Box::pin(redis.decide(request)).await {
                    Ok(decision) => limits
                        .iter()
                        .zip(&decision.limits)
                        .map(|(l, r)| Some(limit_result(l.gcra, r.allowed, r.tat, decision.now)))
                        .collect::<PerLimit<_>>(),
                    Err(failure) => {
                        backend_failed = !matches!(failure, RedisFailure::CoolingDown);
                        if backend_failed {
                            tracing::warn!(error = %failure, fallback = ?self.settings.on_redis_error, "rate-limit backend failed");
                        }
                        let verdict = match self.settings.on_redis_error {
                            OnRedisError::Local => None,
                            OnRedisError::Allow => Some(Verdict::Allowed),
                            OnRedisError::Deny => Some(Verdict::Unavailable),
                        };
                        match verdict {
                            None => {
                                self.local(limits, &self.keys_of(limits, inputs, Keyspace::Own))
                            }
                            Some(verdict) => {
                                return RateOutcome {
                                    verdict,
                                    backend_failed,
                                    ..RateOutcome::default()
                                };
                            }
                        }
                    }
                }
            }
        };
        let mut outcome = self.conclude(route, limits, &results);
        outcome.backend_failed = backend_failed;
        outcome
    }

    /// The memory backend, deciding as the Redis script does: every limit
    /// judges the request (shadow ones too); it is admitted when every
    /// enforced limit admits it, and only then are the buckets that
    /// admitted it charged, each once (two identical limits share one
    /// bucket, as they share one key in Redis). One limit (most routes) is
    /// judged and charged in one step.
    fn local(&self, limits: &[&CompiledLimit], keys: &[String]) -> PerLimit<Option<LimitResult>> {
        if let ([limit], [key]) = (limits, keys) {
            return smallvec::smallvec![Some(charge_one(limit, key))];
        }
        let judged: PerLimit<(Option<i64>, i64)> = limits
            .iter()
            .zip(keys)
            .map(|(l, key)| (l.local.peek(key), l.local.now_us()))
            .collect();
        // Each limit's verdict and headers with nothing charged: what a
        // refused request reports, and which limits a charge is due to.
        let uncharged: PerLimit<(bool, LimitResult)> = limits
            .iter()
            .zip(&judged)
            .map(|(l, &(tat, now))| {
                let allowed = l.gcra.decide(tat, now).allowed;
                let tat = tat.unwrap_or(now).max(now);
                (allowed, limit_result(l.gcra, allowed, tat, now))
            })
            .collect();
        let mut results: PerLimit<Option<LimitResult>> =
            uncharged.iter().map(|(_, result)| Some(*result)).collect();
        let admitted = limits
            .iter()
            .zip(&uncharged)
            .all(|(l, (allowed, _))| l.rule.shadow || *allowed);
        if !admitted {
            return results;
        }
        // Charged in order. A charge that a concurrent request for the same
        // key beat to the last room refuses this request after all: the
        // charges already made for it are taken back.
        let mut charged: PerLimit<(usize, Outcome)> = PerLimit::new();
        for (i, (l, key)) in limits.iter().zip(keys).enumerate() {
            if !uncharged[i].0 {
                continue;
            }
            let now = judged[i].1;
            let same_bucket = charged
                .iter()
                .find(|(j, _)| Arc::ptr_eq(&limits[*j].local, &l.local) && keys[*j] == *key);
            let outcome = match same_bucket {
                Some((_, outcome)) => *outcome,
                None => l.local.charge(key, now),
            };
            results[i] = Some(limit_result(l.gcra, outcome.allowed, outcome.tat, now));
            if !outcome.allowed && !l.rule.shadow {
                for (j, outcome) in &charged {
                    if outcome.allowed {
                        limits[*j].local.refund(&keys[*j]);
                    }
                }
                for (result, (_, before)) in results.iter_mut().zip(&uncharged).take(i) {
                    *result = Some(*before);
                }
                return results;
            }
            if same_bucket.is_none() {
                charged.push((i, outcome));
            }
        }
        results
    }

    fn conclude(
        &self,
        route: &Route,
        limits: &[&CompiledLimit],
        results: &[Option<LimitResult>],
    ) -> RateOutcome {
        let mut decisions = Decisions::new();
        let mut denied: Option<(usize, i64)> = None;
        let mut tightest: Option<usize> = None;
        for (i, (limit, result)) in limits.iter().zip(results).enumerate() {
            let Some(result) = result else { continue };
            decisions.push(RateDecision {
                index: i,
                by: limit.rule.by_label.clone(),
                allowed: result.allowed,
                shadow: limit.rule.shadow,
            });
            if limit.rule.shadow {
                if !result.allowed {
                    tracing::info!(
                        route = &*route.name,
                        by = &*limit.rule.by_label,
                        "shadow rate limit would refuse this request"
                    );
                }
                continue;
            }
            if !result.allowed && denied.is_none_or(|(_, wait)| result.retry_after_us > wait) {
                denied = Some((i, result.retry_after_us));
            }
            let tighter = tightest.is_none_or(|t| {
                let best = results[t].map_or((u32::MAX, 0), |r| (r.remaining, r.reset_us));
                (result.remaining, -result.reset_us) < (best.0, -best.1)
            });
            if tighter {
                tightest = Some(i);
            }
        }
        let shown = denied.map(|(i, _)| i).or(tightest);
        let headers = match (self.settings.headers, shown) {
            (HeaderMode::None, _) | (_, None) => None,
            (mode, Some(i)) => results[i].map(|r| RateHeaders {
                mode,
                fixed: limits[i].fixed.clone(),
                remaining: if r.allowed { r.remaining } else { 0 },
                reset_secs: ceil_secs(r.reset_us),
            }),
        };
        let verdict = match denied {
            Some((_, wait)) => Verdict::Denied(Duration::from_secs(ceil_secs(wait).max(1))),
            None => Verdict::Allowed,
        };
        RateOutcome {
            verdict,
            headers,
            decisions,
            backend_failed: false,
        }
    }

    /// Appends what `by` keys this request on (its IP when it lacks the
    /// identity `by` needs).
    fn push_key_value(&self, key: &mut String, by: &LimitKey, inputs: &KeyInputs<'_>) {
        let value = match by {
            LimitKey::Ip => None,
            LimitKey::Route => Some(("route", String::new())),
            LimitKey::User => inputs.identity.subject().map(|sub| ("user:", bounded(sub))),
            LimitKey::Tenant(claim) => inputs
                .identity
                .claims()
                .and_then(|c| claims::lookup(c, claim))
                .map(|v| ("tenant:", bounded(&claims::as_text(v)))),
            LimitKey::Header(name) => inputs
                .headers
                .get(name)
                .map(|v| ("header:", bounded_bytes(v.as_bytes()))),
        };
        match value {
            Some((kind, rest)) => {
                key.push_str(kind);
                key.push_str(&rest);
            }
            None => {
                key.push_str("ip:");
                match inputs.client_ip_text {
                    // An IPv4 address's bucket is the address as written.
                    Some(text) if inputs.client_ip.to_canonical().is_ipv4() => key.push_str(text),
                    _ => push_ip_bucket(key, inputs.client_ip, self.settings.ipv6_prefix),
                }
            }
        }
    }
}

/// Where a bucket key is looked up, which decides what it must name.
#[derive(Debug, Clone, Copy)]
enum Keyspace {
    /// Redis, which holds every route's and limit's buckets (and other
    /// instances' prefixes): the key names them (`key_base`).
    Shared,
    /// A limit's own memory store (`LocalBuckets`, one per route and limit
    /// numbers, as `key_base` is): the caller's value alone, so no request
    /// copies and hashes the route's part of the key.
    Own,
}

/// Refuses a request that sends a `header:NAME` key of the route's limits
/// as several values (lines, or a comma list): it would be counted under
/// one value while the backend may read another (a decoy first escapes the
/// real key's bucket). Refuses a key with a byte outside ASCII too: one
/// server strips `\xa0` as Latin-1 NBSP, another `\xc2\xa0` as UTF-8's,
/// a third neither, so padded spellings would be fresh buckets for a key
/// the backend reads as one.
pub fn check_key_headers(route: &Route, headers: &HeaderMap) -> Result<(), HeadRejection> {
    for rule in &route.rate_limits {
        let mut lines = match &rule.by {
            LimitKey::Header(name) => headers.get_all(name).iter(),
            _ => continue,
        };
        let first = lines.next();
        // Two lines, or one line with a list (`decoy, REAL`: the same thing
        // to RFC 9110 §5.3 and to a backend that takes the last value).
        if lines.next().is_some() || first.is_some_and(|v| v.as_bytes().contains(&b',')) {
            return Err(HeadRejection::RepeatedLimitKey);
        }
        if first.is_some_and(|v| !v.as_bytes().is_ascii()) {
            return Err(HeadRejection::LimitKeyBytes);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
