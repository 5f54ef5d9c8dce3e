//! `[ratelimit]` compiled into the rate-limit settings.

use super::{Compiler, Result};
use crate::config::choices::{Backend, RateHeaders, RedisErrorMode};
use crate::config::file::{FileConfig, RateLimitFile};
use crate::config::values::UNSET_PLACEHOLDER;
use crate::policy::ratelimit::{HeaderMode, OnRedisError, RateLimitSettings, RedisTarget};

impl Compiler<'_> {
    pub(super) fn ratelimit(&self, file: &FileConfig) -> Result<RateLimitSettings> {
        let r = &file.ratelimit;
        if !(1..=128).contains(&r.ipv6_prefix) {
            return Err(self.err("ratelimit.ipv6_prefix", "must be between 1 and 128"));
        }
        self.redis_urls(r)?;
        if r.redis_timeout.0.is_zero() {
            return Err(self.err("ratelimit.redis_timeout", "must be longer than 0s"));
        }
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
            if !(placeholder || url.0.starts_with("redis://") || url.0.starts_with("rediss://")) {
                return Err(self.err(key, "must start with redis:// or rediss://"));
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
