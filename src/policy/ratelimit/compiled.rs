//! A route's limits compiled once per policy generation: per limit, the
//! base numbers and one set per tier (SPEC §6.2), each with its own Redis
//! key base and local limiter, its header name and `RateLimit-Policy`.

use std::sync::Arc;

use super::gcra::Gcra;
use super::headers::FixedLines;
use super::local::{LimiterRegistry, LocalBuckets};
use super::{RateLimitRule, RateLimitSettings, Tier};
use crate::policy::auth::Identity;

/// One limit of one route: its base numbers and one per tier (each with
/// its own buckets).
pub(super) struct TieredLimit {
    pub(super) base: CompiledLimit,
    pub(super) tiers: Vec<CompiledLimit>,
}

impl TieredLimit {
    /// The numbers that apply to this caller.
    pub(super) fn pick(&self, identity: &Identity) -> &CompiledLimit {
        let tier = self.base.rule.tier_of(identity);
        tier.and_then(|i| self.tiers.get(i)).unwrap_or(&self.base)
    }
}

/// One limit (or one tier of it) of one route, ready to decide.
pub(super) struct CompiledLimit {
    pub(super) rule: RateLimitRule,
    pub(super) gcra: Gcra,
    pub(super) local: Arc<LocalBuckets>,
    pub(super) key_base: String,
    /// What its headers always say (its name, limit and policy).
    pub(super) fixed: Arc<FixedLines>,
}

/// One limit compiled for a route: its Redis key base and local limiter
/// (the tier's name is part of both), its name and `RateLimit-Policy`.
pub(super) fn compile_limit(
    settings: &RateLimitSettings,
    registry: &LimiterRegistry,
    route: &str,
    base: &RateLimitRule,
    tier: Option<&Tier>,
) -> CompiledLimit {
    let rule = tier.map_or_else(|| base.clone(), |t| base.with_tier(t));
    let (by, name) = match tier {
        None => (
            rule.by_label.to_string(),
            format!("{route}.{}", rule.by_label),
        ),
        Some(t) => (
            format!("{}:tier={}", rule.by_label, t.name),
            format!("{route}.{}.{}", rule.by_label, t.name),
        ),
    };
    let gcra = Gcra::new(rule.limit, rule.per, rule.burst);
    let id = (
        route.to_string(),
        by.clone(),
        rule.limit,
        rule.per,
        rule.burst,
    );
    let micros = rule.per.as_micros();
    // `w` of `RateLimit-Policy` is whole seconds: rounded up, so a client
    // that keeps to the advertised rate is never refused (`per = "1500ms"`
    // advertised as `w=1` promised more than was admitted).
    let seconds = super::gcra::ceil_secs(i64::try_from(micros).unwrap_or(i64::MAX)).max(1);
    CompiledLimit {
        local: registry.get_or_create(id, gcra),
        key_base: format!(
            "{}{{{route}}}:{by}:{}:{micros}:{}:",
            settings.key_prefix, rule.limit, rule.burst
        ),
        fixed: Arc::new(FixedLines::new(&name, rule.limit, seconds)),
        gcra,
        rule,
    }
}
