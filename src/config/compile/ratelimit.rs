//! `[ratelimit]` compiled into the rate-limit settings.

use super::{Compiler, Result};
use crate::config::choices::{Backend, RateHeaders, RedisErrorMode};
use crate::config::file::{FileConfig, RateLimitFile, RateLimitRuleFile};
use crate::config::keys::KeyPath;
use crate::config::values::UNSET_PLACEHOLDER;
use crate::policy::ratelimit::{HeaderMode, OnRedisError, RateLimitSettings, RedisTarget, Tier};

impl Compiler<'_> {
    /// A limit's `tiers` (SPEC §6.2): each with a limit of at least 1 and a
    /// burst defaulting to it; only with `tier_claim`, which picks one.
    pub(super) fn tiers(&self, r: &RateLimitRuleFile, key: &KeyPath) -> Result<Vec<Tier>> {
        let Some(tiers) = &r.tiers else {
            if r.tier_claim.is_some() {
                return Err(self.err(
                    key.key("tier_claim"),
                    "names no tiers; add tiers = { NAME = { limit = N } }, or remove tier_claim",
                ));
            }
            return Ok(Vec::new());
        };
        match &r.tier_claim {
            None => return Err(self.err(key.key("tiers"), "tiers need tier_claim, the claim (dotted path) whose value picks a tier; e.g. tier_claim = \"app_metadata.plan\"")),
            Some(claim) if claim.as_str().is_empty() => return Err(self.err(key.key("tier_claim"), "is empty; name a claim, e.g. \"app_metadata.plan\"")),
            Some(_) => {}
        }
        let mut out = Vec::with_capacity(tiers.len());
        for (name, tier) in tiers {
            let at = key.key("tiers").key(name);
            // The name is written into the RateLimit headers' quoted
            // names (RFC 8941 strings): no quote, backslash, control
            // character or non-ASCII, which would end the name early or
            // make the header one a client cannot read.
            if name.is_empty() || !name.chars().all(crate::policy::ratelimit::quotable) {
                return Err(self.err(
                    at,
                    format!(
                        "\"{}\" is not a tier name; use printable ASCII without \" or \\",
                        name.escape_debug()
                    ),
                ));
            }
            if tier.limit == 0 {
                return Err(self.err(at.key("limit"), "must be at least 1"));
            }
            let burst = tier.burst.unwrap_or(tier.limit);
            if burst == 0 {
                return Err(self.err(at.key("burst"), "must be at least 1"));
            }
            self.bucket_span_bounded(r.per.0, tier.limit, burst, at.key("burst"))?;
            out.push(Tier {
                name: name.as_str().into(),
                limit: tier.limit,
                burst,
            });
        }
        Ok(out)
    }

    /// A full bucket's span (`per` x `burst` / `limit`), what a bucket
    /// remembers, bounded like every duration (past it the limiter's
    /// microsecond arithmetic would overflow).
    pub(super) fn bucket_span_bounded(
        &self,
        per: std::time::Duration,
        limit: u32,
        burst: u32,
        key: KeyPath,
    ) -> Result<()> {
        let span = per.as_secs_f64() * f64::from(burst) / f64::from(limit.max(1));
        if span > crate::config::units::MAX_DURATION.as_secs_f64() {
            return Err(self.err(
                key,
                "per x burst / limit (a full bucket's span) must be at most 366 days",
            ));
        }
        Ok(())
    }

    pub(super) fn ratelimit(&self, file: &FileConfig) -> Result<RateLimitSettings> {
        let r = &file.ratelimit;
        if !(1..=128).contains(&r.ipv6_prefix) {
            return Err(self.err("ratelimit.ipv6_prefix", "must be between 1 and 128"));
        }
        self.redis_urls(r)?;
        self.at_least_a_millisecond(r.redis_timeout.0, "ratelimit.redis_timeout")?;
        Ok(RateLimitSettings {
            redis: (r.backend == Backend::Redis).then(|| RedisTarget {
                url: r.redis_url.0.clone(),
                cluster: r.redis_cluster.iter().map(|u| u.0.clone()).collect(),
            }),
            redis_timeout: r.redis_timeout.0,
            redis_ca: self.redis_ca(r)?,
            on_redis_error: match r.on_redis_error {
                RedisErrorMode::Local => OnRedisError::Local,
                RedisErrorMode::Allow => OnRedisError::Allow,
                RedisErrorMode::Deny => OnRedisError::Deny,
            },
            ipv6_prefix: r.ipv6_prefix,
            key_prefix: r.key_prefix.as_str().to_string(),
            headers: match r.headers {
                RateHeaders::Legacy => HeaderMode::Legacy,
                RateHeaders::Draft => HeaderMode::Draft,
                RateHeaders::Both => HeaderMode::Both,
                RateHeaders::None => HeaderMode::None,
            },
        })
    }

    /// `redis_url` and each `redis_cluster` entry: `redis://` or `rediss://`
    /// (or the placeholder `check` gives an unset secret).
    fn redis_urls(&self, r: &RateLimitFile) -> Result<()> {
        let cluster = r
            .redis_cluster
            .iter()
            .enumerate()
            .map(|(i, url)| (format!("ratelimit.redis_cluster[{i}]"), url));
        for (key, url) in
            std::iter::once(("ratelimit.redis_url".to_string(), &r.redis_url)).chain(cluster)
        {
            let placeholder = url.0.starts_with(UNSET_PLACEHOLDER);
            if placeholder {
                continue;
            }
            if !(url.0.starts_with("redis://") || url.0.starts_with("rediss://")) {
                return Err(self.err(key, "must start with redis:// or rediss://"));
            }
            // As the client will read it when `run` starts (its message
            // never quotes the URL, which may carry a password).
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.0.as_str()) {
                return Err(self.err(key, format!("not a Redis URL the client can use: {e}")));
            }
        }
        Ok(())
    }

    fn redis_ca(&self, r: &RateLimitFile) -> Result<Option<Vec<u8>>> {
        let Some(file) = &r.redis_ca_file else {
            return Ok(None);
        };
        let path = self.base.join(file.as_str());
        let pem = std::fs::read(&path).map_err(|e| {
            self.err(
                "ratelimit.redis_ca_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Ok(Some(pem))
    }
}
