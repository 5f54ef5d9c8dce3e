//! `[ratelimit]` compiled into the rate-limit settings.

use super::*;
use crate::policy::ratelimit::RedisTarget;

impl Compiler<'_> {
    pub(super) fn ratelimit(&self, file: &FileConfig) -> Result<RateLimitSettings> {
        let r = &file.ratelimit;
        let one_of = |value: &Spanned<Text>, key: &str, accepted: &[&str]| {
            if accepted.contains(&value.get_ref().as_str()) {
                Ok(value.get_ref().as_str().to_string())
            } else {
                Err(self.err(
                    value.span(),
                    key,
                    format!(
                        "unknown value \"{}\"; accepted: {}",
                        value.get_ref(),
                        accepted
                            .iter()
                            .map(|a| format!("\"{a}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        };
        let backend = one_of(&r.backend, "ratelimit.backend", &["memory", "redis"])?;
        let on_redis_error = match one_of(
            &r.on_redis_error,
            "ratelimit.on_redis_error",
            &["local", "allow", "deny"],
        )?
        .as_str()
        {
            "allow" => OnRedisError::Allow,
            "deny" => OnRedisError::Deny,
            _ => OnRedisError::Local,
        };
        let headers = match one_of(
            &r.headers,
            "ratelimit.headers",
            &["legacy", "draft", "both", "none"],
        )?
        .as_str()
        {
            "legacy" => HeaderMode::Legacy,
            "draft" => HeaderMode::Draft,
            "none" => HeaderMode::None,
            _ => HeaderMode::Both,
        };
        if !(1..=128).contains(r.ipv6_prefix.get_ref()) {
            return Err(self.err(
                r.ipv6_prefix.span(),
                "ratelimit.ipv6_prefix",
                "must be between 1 and 128",
            ));
        }
        for (key, url) in std::iter::once(("ratelimit.redis_url", &r.redis_url)).chain(
            r.redis_cluster
                .iter()
                .map(|u| ("ratelimit.redis_cluster", u)),
        ) {
            let placeholder = url.0.starts_with(crate::config::values::UNSET_PLACEHOLDER);
            if !(placeholder || url.0.starts_with("redis://") || url.0.starts_with("rediss://")) {
                return Err(self.err(
                    r.backend.span(),
                    key,
                    "must start with redis:// or rediss://",
                ));
            }
        }
        if r.redis_timeout.0.is_zero() {
            return Err(self.err(0..0, "ratelimit.redis_timeout", "must be longer than 0s"));
        }
        Ok(RateLimitSettings {
            redis: (backend == "redis").then(|| RedisTarget {
                url: r.redis_url.0.clone(),
                cluster: r.redis_cluster.iter().map(|u| u.0.clone()).collect(),
            }),
            redis_timeout: r.redis_timeout.0,
            redis_ca: match &r.redis_ca_file {
                None => None,
                Some(file) => {
                    let path = self.base.join(file.as_str());
                    let pem = std::fs::read(&path).map_err(|e| {
                        self.err(
                            0..0,
                            "ratelimit.redis_ca_file",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    Some(pem)
                }
            },
            on_redis_error,
            ipv6_prefix: *r.ipv6_prefix.get_ref(),
            key_prefix: r.key_prefix.as_str().to_string(),
            headers,
        })
    }
}
