//! Rate-limit rules as compiled from `rate_limits = [...]`, and the tier a
//! verified claim picks (SPEC §6.2).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::policy::auth::{Identity, claims};

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// Client IP (after `trusted_proxies`; IPv6 grouped by prefix).
    Ip,
    /// The verified `sub`; anonymous requests fall back to the IP.
    User,
    /// The tenant claim.
    Tenant(String),
    /// A request header's value.
    Header(HeaderName),
    /// One bucket for the whole route.
    Route,
}

/// One compiled limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitRule {
    /// What it counts by.
    pub by: LimitKey,
    /// `by` as written (metric label).
    pub by_label: Arc<str>,
    /// Requests per `per` (the sustained rate).
    pub limit: u32,
    /// The period of `limit`.
    pub per: Duration,
    /// How many a full bucket admits at once.
    pub burst: u32,
    /// Counted and reported, never enforced.
    pub shadow: bool,
    /// `tier_claim` (SPEC §6.2): the verified claim (dotted path, a
    /// string) that picks one of `tiers`.
    pub tier_claim: Option<String>,
    /// `tiers`: other numbers for callers whose claim names them.
    pub tiers: Vec<Tier>,
}

/// One tier of a limit: its own numbers (and its own buckets); `per` is
/// the limit's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// The claim value that selects it.
    pub name: Arc<str>,
    /// Requests per the limit's `per`.
    pub limit: u32,
    /// How many a full bucket admits at once (default: its own `limit`).
    pub burst: u32,
}

impl RateLimitRule {
    /// The tier the caller's verified claim names: `None` (the base
    /// numbers) for a missing or non-string claim, an anonymous caller, or
    /// a value that names no tier.
    pub fn tier_of(&self, identity: &Identity) -> Option<usize> {
        let claim = self.tier_claim.as_deref()?;
        let value = claims::lookup(identity.claims()?, claim)?.as_str()?;
        self.tiers.iter().position(|tier| &*tier.name == value)
    }

    /// This limit with a tier's numbers.
    pub fn with_tier(&self, tier: &Tier) -> Self {
        Self {
            limit: tier.limit,
            burst: tier.burst,
            ..self.clone()
        }
    }
}

impl LimitKey {
    /// Parses `by`. `tenant_claim` is the route's `tenant.claim`, if any.
    pub fn parse(by: &str, tenant_claim: Option<&str>) -> Result<Self, String> {
        Ok(match by {
            "ip" => Self::Ip,
            "user" => Self::User,
            "route" => Self::Route,
            "tenant" => Self::Tenant(tenant_claim.unwrap_or("restaurant_id").to_string()),
            other => match other.strip_prefix("header:") {
                Some(name) => {
                    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        format!("\"{other}\": \"{name}\" is not a valid header name")
                    })?;
                    // Removed from every request before a limit reads it
                    // (hop-by-hop, and `Proxy`): such a key would count
                    // every request by its IP, and `Connection` (a list)
                    // would refuse every request that sends one.
                    if crate::policy::headers::is_hop_by_hop_name(header.as_str().as_bytes())
                        || header == crate::policy::head::PROXY
                    {
                        return Err(format!(
                            "\"{other}\": {name} is a hop-by-hop header palisade removes before a limit reads it; key by another header"
                        ));
                    }
                    Self::Header(header)
                }
                None => {
                    return Err(format!(
                        "unknown rate-limit key \"{other}\"; accepted: \"ip\", \"user\", \"tenant\", \"header:NAME\", \"route\""
                    ));
                }
            },
        })
    }
}
