//! Compiles the serde mirror into the runtime [`Policy`]: every string is
//! validated and turned into its runtime type here (addresses, CIDRs, header
//! names and values, patterns, auth modes), with errors that name the key,
//! its line, the bad value and what is accepted.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use toml::Spanned;

use super::error::ConfigError;
use super::expand::Env;
use super::file::{
    FileConfig, JwtFile, RateLimitRuleFile, RouteFile, SecurityHeadersFile, SecurityHeadersOverride,
};
use super::values::{Text, with_env};
use crate::policy::auth::jwks::{JwksSource, JwksStore};
use crate::policy::auth::jwt::{JwtSettings, JwtVerifier};
use crate::policy::auth::secret::SecretCheck;
use crate::policy::auth::sources::TokenSource;
use crate::policy::auth::{AuthPolicy, AuthRequirement};
use crate::policy::cors::CorsPolicy;
use crate::policy::forward::StrippedHeaders;
use crate::policy::headers::SecurityHeaders;
use crate::policy::ratelimit::{
    HeaderMode, LimitKey, OnRedisError, RateLimitRule, RateLimitSettings,
};
use crate::policy::request_id::RequestIdPolicy;
use crate::policy::sanitize;
use crate::policy::tenant::TenantRule;
use crate::proxy::breaker::BreakerSettings;
use crate::proxy::retry::RetrySettings;
use crate::route::{Pattern, Route, RouteTable};
use jsonwebtoken::Algorithm;

/// The whole compiled policy: one immutable snapshot shared by every
/// request that starts while it is current.
#[derive(Debug)]
pub struct Policy {
    /// Where it was loaded from (messages, reload).
    pub source: PathBuf,
    /// The effective config (defaults filled in), for `/config`.
    pub effective: Arc<FileConfig>,
    /// `[server]`.
    pub server: ServerPolicy,
    /// `[admin] listen`.
    pub admin_listen: SocketAddr,
    /// `[upstream]`.
    pub upstream: UpstreamPolicy,
    /// `[log]`.
    pub log: LogPolicy,
    /// `[request_id]`.
    pub request_id: RequestIdPolicy,
    /// `[auth]`: the JWT verifier and shared secrets.
    pub auth: AuthPolicy,
    /// `[ratelimit]`.
    pub ratelimit: RateLimitSettings,
    /// Headers stripped from every client request (identity + secrets).
    pub stripped_headers: StrippedHeaders,
    /// `[cors]`, if configured.
    pub cors: Option<CorsPolicy>,
    /// `[security_headers]` for responses before a route is known.
    pub security_headers: SecurityHeaders,
    /// Routes in match order.
    pub routes: RouteTable,
    /// Secret variables that were unset (only under `Env::lenient_secrets`).
    pub unset_secret_vars: Vec<String>,
}

/// `[server]`, compiled.
#[derive(Debug, Clone)]
pub struct ServerPolicy {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// `(cert, key)` PEM paths, resolved against the config's directory.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `environment = "production"`: generic error details.
    pub production: bool,
    /// Slow-header cut-off.
    pub header_read_timeout: Duration,
    /// Keep-alive connections with no request are closed after this.
    pub idle_timeout: Duration,
    /// 431 beyond.
    pub max_header_bytes: usize,
    /// 414 beyond.
    pub max_uri_bytes: usize,
    /// Connections accepted at once.
    pub max_connections: usize,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Drain time on SIGTERM.
    pub shutdown_grace: Duration,
    /// Serving threads (0 = one per available core).
    pub workers: usize,
}

/// `[upstream]`, compiled.
#[derive(Debug, Clone)]
pub struct UpstreamPolicy {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
    /// A path prefix of the upstream URL (`""` when none).
    pub base_path: String,
    /// `Host` sent when `preserve_host = false`.
    pub host_header: HeaderValue,
    /// TCP (and TLS) connect deadline.
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept.
    pub pool_max_idle: usize,
    /// Forward the client's `Host`.
    pub preserve_host: bool,
    /// Private CA for an https upstream.
    pub ca_file: Option<PathBuf>,
    /// `[upstream.retry]`.
    pub retry: RetrySettings,
    /// `[upstream.circuit_breaker]`.
    pub breaker: BreakerSettings,
}

/// `[log]`, compiled.
#[derive(Debug, Clone)]
pub struct LogPolicy {
    /// JSON lines (else pretty).
    pub json: bool,
    /// An `EnvFilter` directive.
    pub level: String,
    /// One line per request.
    pub access_log: bool,
}

/// Reads and compiles a policy file.
pub fn load_file(path: &Path, env: &Env) -> Result<Policy, ConfigError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::plain(&label, format!("cannot read the config file: {e}")))?;
    load_text_at(path, &text, env)
}

/// Compiles `text` as if read from `path` (relative TLS and CA paths are
/// resolved against its directory).
pub fn load_text_at(path: &Path, text: &str, env: &Env) -> Result<Policy, ConfigError> {
    let label = path.display().to_string();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut policy = compile_text(text, &label, env, &base)?;
    policy.source = path.to_path_buf();
    if let Some((cert, key)) = policy.server.tls.take() {
        policy.server.tls = Some((base.join(cert), base.join(key)));
    }
    if let Some(ca) = policy.upstream.ca_file.take() {
        policy.upstream.ca_file = Some(base.join(ca));
    }
    Ok(policy)
}

/// Parses and compiles policy text; `label` names it in errors. Relative
/// file paths (`jwks_file`) are taken from the working directory.
pub fn load_str(text: &str, label: &str, env: &Env) -> Result<Policy, ConfigError> {
    compile_text(text, label, env, Path::new(""))
}

fn compile_text(text: &str, label: &str, env: &Env, base: &Path) -> Result<Policy, ConfigError> {
    let (parsed, unset_secret_vars) = with_env(env, || toml::from_str(text));
    let file: FileConfig = parsed.map_err(|e: toml::de::Error| {
        ConfigError::at_span(label, text, e.span(), None, e.message().trim().to_string())
    })?;
    let mut policy = Compiler { label, text, base }.compile(file)?;
    policy.unset_secret_vars = unset_secret_vars;
    Ok(policy)
}

struct Compiler<'a> {
    label: &'a str,
    text: &'a str,
    base: &'a Path,
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

impl Compiler<'_> {
    fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let span = (span != (0..0)).then_some(span);
        ConfigError::at_span(self.label, self.text, span, Some(key.into()), message)
    }

    fn compile(&self, file: FileConfig) -> Result<Policy> {
        let server = self.server(&file)?;
        let admin_listen = self.socket_addr(&file.admin.listen, "admin.listen")?;
        let upstream = self.upstream(&file)?;
        let log = self.log(&file)?;
        let request_id = RequestIdPolicy {
            header: self.header_name(&file.request_id.header, "request_id.header")?,
            trust_incoming: file.request_id.trust_incoming,
        };
        let auth = self.auth(&file)?;
        let ratelimit = self.ratelimit(&file)?;
        let cors = self.cors(&file)?;
        let base_headers = self.security_headers(&file.security_headers, "security_headers")?;
        let routes = self.routes(&file, &base_headers)?;
        let stripped_headers = stripped_headers(&file);
        Ok(Policy {
            source: PathBuf::from(self.label),
            effective: Arc::new(file),
            server,
            admin_listen,
            upstream,
            log,
            request_id,
            auth,
            ratelimit,
            stripped_headers,
            cors,
            security_headers: base_headers,
            routes,
            unset_secret_vars: Vec::new(),
        })
    }

    fn socket_addr(&self, value: &Spanned<Text>, key: &str) -> Result<SocketAddr> {
        value.get_ref().as_str().parse().map_err(|_| {
            self.err(
                value.span(),
                key,
                format!(
                    "\"{}\" is not an address; write IP:PORT such as \"0.0.0.0:8080\" or \"127.0.0.1:9901\"",
                    value.get_ref()
                ),
            )
        })
    }

    fn header_name(&self, value: &Spanned<Text>, key: &str) -> Result<HeaderName> {
        HeaderName::from_bytes(value.get_ref().as_str().as_bytes()).map_err(|_| {
            self.err(
                value.span(),
                key,
                format!("\"{}\" is not a valid header name", value.get_ref()),
            )
        })
    }

    fn server(&self, file: &FileConfig) -> Result<ServerPolicy> {
        let s = &file.server;
        let listen = self.socket_addr(&s.listen, "server.listen")?;
        let production = match s.environment.get_ref().as_str() {
            "production" => true,
            "development" => false,
            other => {
                return Err(self.err(
                    s.environment.span(),
                    "server.environment",
                    format!(
                        "unknown environment \"{other}\"; accepted: \"production\", \"development\""
                    ),
                ));
            }
        };
        let mut trusted_proxies = Vec::new();
        for (i, entry) in s.trusted_proxies.iter().enumerate() {
            let text = entry.get_ref().as_str();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    self.err(
                        entry.span(),
                        format!("server.trusted_proxies[{i}]"),
                        format!(
                            "\"{text}\" is not a CIDR; write e.g. \"10.0.0.0/8\" or \"192.168.1.5\""
                        ),
                    )
                })?;
            trusted_proxies.push(net);
        }
        let min_header = 1024;
        if s.max_header_bytes.0 < min_header || s.max_uri_bytes.0 < 64 {
            return Err(self.err(
                s.listen.span(),
                "server.max_header_bytes",
                "max_header_bytes must be at least \"1KiB\" and max_uri_bytes at least \"64B\"",
            ));
        }
        if s.max_connections == 0 {
            return Err(self.err(0..0, "server.max_connections", "must be at least 1"));
        }
        Ok(ServerPolicy {
            listen,
            tls: s.tls.as_ref().map(|t| {
                (
                    PathBuf::from(t.cert.as_str()),
                    PathBuf::from(t.key.as_str()),
                )
            }),
            production,
            header_read_timeout: s.header_read_timeout.0,
            idle_timeout: s.idle_timeout.0,
            max_header_bytes: usize::try_from(s.max_header_bytes.0).unwrap_or(usize::MAX),
            max_uri_bytes: usize::try_from(s.max_uri_bytes.0).unwrap_or(usize::MAX),
            max_connections: s.max_connections,
            trusted_proxies,
            shutdown_grace: s.shutdown_grace.0,
            workers: s.workers,
        })
    }

    fn upstream(&self, file: &FileConfig) -> Result<UpstreamPolicy> {
        let u = &file.upstream;
        let text = u.url.get_ref().as_str();
        let bad = |why: &str| {
            self.err(
                u.url.span(),
                "upstream.url",
                format!("\"{text}\" {why}; write e.g. \"http://127.0.0.1:8000\""),
            )
        };
        let uri: http::Uri = text.parse().map_err(|_| bad("is not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("has no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad("must use http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("has no host"))?;
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|_| bad("has an invalid host"))?;
        for (i, on) in u.retry.on.iter().enumerate() {
            let value = on.get_ref().as_str();
            if !["connect-failure", "502", "503", "504", "reset"].contains(&value) {
                return Err(self.err(
                    on.span(),
                    format!("upstream.retry.on[{i}]"),
                    format!("unknown retry condition \"{value}\"; accepted: \"connect-failure\", \"502\", \"503\", \"504\", \"reset\""),
                ));
            }
        }
        if u.retry.budget_percent > 100 {
            return Err(self.err(
                0..0,
                "upstream.retry.budget_percent",
                "must be between 0 and 100",
            ));
        }
        let cb = &u.circuit_breaker;
        if !(1..=100).contains(&cb.failure_percent) {
            return Err(self.err(
                0..0,
                "upstream.circuit_breaker.failure_percent",
                "must be between 1 and 100",
            ));
        }
        if cb.half_open_probes == 0 {
            return Err(self.err(
                0..0,
                "upstream.circuit_breaker.half_open_probes",
                "must be at least 1",
            ));
        }
        Ok(UpstreamPolicy {
            scheme,
            authority,
            base_path,
            host_header,
            connect_timeout: u.connect_timeout.0,
            pool_idle_timeout: u.pool_idle_timeout.0,
            pool_max_idle: u.pool_max_idle,
            preserve_host: u.preserve_host,
            ca_file: u.ca_file.as_ref().map(|p| PathBuf::from(p.as_str())),
            retry: RetrySettings {
                attempts: u.retry.attempts,
                on_connect_failure: u
                    .retry
                    .on
                    .iter()
                    .any(|o| o.get_ref().as_str() == "connect-failure"),
                on_reset: u.retry.on.iter().any(|o| o.get_ref().as_str() == "reset"),
                on_status: u
                    .retry
                    .on
                    .iter()
                    .filter_map(|o| o.get_ref().as_str().parse().ok())
                    .collect(),
                backoff: u.retry.backoff.0,
                max_backoff: u.retry.max_backoff.0,
                budget_percent: u.retry.budget_percent,
            },
            breaker: BreakerSettings {
                enabled: cb.enabled,
                failure_percent: cb.failure_percent,
                min_requests: cb.min_requests,
                window: cb.window.0,
                open_for: cb.open_for.0,
                half_open_probes: cb.half_open_probes,
            },
        })
    }

    fn log(&self, file: &FileConfig) -> Result<LogPolicy> {
        let json = match file.log.format.get_ref().as_str() {
            "json" => true,
            "pretty" => false,
            other => {
                return Err(self.err(
                    file.log.format.span(),
                    "log.format",
                    format!("unknown log format \"{other}\"; accepted: \"json\", \"pretty\""),
                ));
            }
        };
        let level = file.log.level.as_str().to_string();
        tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| {
            self.err(0..0, "log.level", format!("\"{level}\" is not a log level or filter ({e}); accepted: error, warn, info, debug, trace"))
        })?;
        Ok(LogPolicy {
            json,
            level,
            access_log: file.log.access_log,
        })
    }

    fn auth(&self, file: &FileConfig) -> Result<AuthPolicy> {
        let jwt = match &file.auth.jwt {
            Some(jwt) => Some(Arc::new(self.jwt(jwt)?)),
            None => None,
        };
        let mut secrets = Vec::new();
        for (name, secret) in &file.auth.secrets {
            let key = format!("auth.secrets.{name}");
            let s = secret.get_ref();
            let header = HeaderName::from_bytes(s.header.as_str().as_bytes()).map_err(|_| {
                self.err(
                    secret.span(),
                    format!("{key}.header"),
                    format!("\"{}\" is not a valid header name", s.header),
                )
            })?;
            let values: Vec<String> = match (&s.value, &s.values) {
                (Some(v), None) => vec![v.0.clone()],
                (None, Some(vs)) => vs.iter().map(|v| v.0.clone()).collect(),
                _ => {
                    return Err(self.err(
                        secret.span(),
                        key,
                        "set exactly one of `value` or `values`",
                    ));
                }
            };
            if values.is_empty() || values.iter().any(|v| v.is_empty()) {
                return Err(self.err(
                    secret.span(),
                    key,
                    "secret values must not be empty (is the environment variable set?)",
                ));
            }
            secrets.push(SecretCheck::new(name, header, values));
        }
        Ok(AuthPolicy { jwt, secrets })
    }

    fn jwt(&self, jwt: &JwtFile) -> Result<JwtVerifier> {
        const ALGORITHMS: [&str; 10] = [
            "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384",
            "EdDSA",
        ];
        if jwt.algorithms.is_empty() {
            return Err(self.err(
                0..0,
                "auth.jwt.algorithms",
                "must list at least one algorithm",
            ));
        }
        let mut algorithms = Vec::new();
        for (i, alg) in jwt.algorithms.iter().enumerate() {
            let name = alg.get_ref().as_str();
            let key = format!("auth.jwt.algorithms[{i}]");
            if !ALGORITHMS.contains(&name) {
                return Err(self.err(
                    alg.span(),
                    key,
                    format!(
                        "unknown algorithm \"{name}\" (\"none\" is never allowed); accepted: {}",
                        ALGORITHMS.join(" ")
                    ),
                ));
            }
            let symmetric = name.starts_with("HS");
            if symmetric && jwt.hs256_secret.is_none() {
                return Err(self.err(
                    alg.span(),
                    key,
                    format!("{name} needs auth.jwt.hs256_secret"),
                ));
            }
            if !symmetric && jwt.jwks_url.is_none() && jwt.jwks_file.is_none() {
                return Err(self.err(
                    alg.span(),
                    key,
                    format!("{name} needs auth.jwt.jwks_url or auth.jwt.jwks_file"),
                ));
            }
            algorithms.push(name.parse::<Algorithm>().map_err(|_| {
                self.err(
                    alg.span(),
                    format!("auth.jwt.algorithms[{i}]"),
                    "unsupported",
                )
            })?);
        }
        if let Some(secret) = &jwt.hs256_secret
            && secret.0.is_empty()
        {
            return Err(self.err(
                0..0,
                "auth.jwt.hs256_secret",
                "is empty; set the environment variable it names",
            ));
        }
        if jwt.sources.is_empty() {
            return Err(self.err(
                0..0,
                "auth.jwt.sources",
                "must list at least one token source",
            ));
        }
        let mut sources = Vec::new();
        for (i, source) in jwt.sources.iter().enumerate() {
            let text = source.get_ref().as_str();
            let parsed = TokenSource::parse(text)
                .ok()
                .filter(|s| !matches!(s, TokenSource::Cookie(n) | TokenSource::SupabaseCookie(n) if n.is_empty()))
                .ok_or_else(|| {
                    self.err(
                        source.span(),
                        format!("auth.jwt.sources[{i}]"),
                        format!("unknown token source \"{text}\"; accepted: \"header:NAME\", \"cookie:NAME\", \"supabase-cookie:NAME\""),
                    )
                })?;
            sources.push(parsed);
        }
        self.forward_claims(&jwt.forward_claims, "auth.jwt.forward_claims")?;
        let jwks_source = match (&jwt.jwks_url, &jwt.jwks_file) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    0..0,
                    "auth.jwt.jwks_url",
                    "set jwks_url or jwks_file, not both",
                ));
            }
            (Some(url), None) => {
                let uri: http::Uri = url.as_str().parse().map_err(|_| {
                    self.err(0..0, "auth.jwt.jwks_url", format!("\"{url}\" is not a URL"))
                })?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none()
                {
                    return Err(self.err(
                        0..0,
                        "auth.jwt.jwks_url",
                        format!("\"{url}\" must be an http(s) URL"),
                    ));
                }
                Some(JwksSource::Url(uri))
            }
            (None, Some(file)) => Some(JwksSource::File(self.base.join(file.as_str()))),
            (None, None) => None,
        };
        let jwks = match jwks_source {
            None => None,
            Some(source) => {
                let key = if matches!(source, JwksSource::File(_)) {
                    "auth.jwt.jwks_file"
                } else {
                    "auth.jwt.jwks_url"
                };
                Some(Arc::new(
                    JwksStore::new(source, jwt.jwks_refresh.0)
                        .map_err(|m| self.err(0..0, key, m))?,
                ))
            }
        };
        Ok(JwtVerifier::new(JwtSettings {
            hs_secret: jwt.hs256_secret.as_ref().map(|s| s.0.as_bytes().to_vec()),
            algorithms,
            jwks,
            issuer: jwt.issuer.as_ref().map(|i| i.as_str().to_string()),
            audiences: jwt
                .audiences
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
            leeway: jwt.leeway.0,
            require: jwt.require.iter().map(|c| c.as_str().to_string()).collect(),
            sources,
            cache_ttl: jwt.cache_ttl.0,
        }))
    }

    fn forward_claims(
        &self,
        claims: &BTreeMap<String, Spanned<Text>>,
        key: &str,
    ) -> Result<Vec<(String, HeaderName)>> {
        claims
            .iter()
            .map(|(claim, header)| {
                Ok((
                    claim.clone(),
                    self.header_name(header, &format!("{key}.{claim}"))?,
                ))
            })
            .collect()
    }

    fn ratelimit(&self, file: &FileConfig) -> Result<RateLimitSettings> {
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
            if !(url.0.starts_with("redis://") || url.0.starts_with("rediss://")) {
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
            redis: (backend == "redis").then(|| {
                (
                    r.redis_url.0.clone(),
                    r.redis_cluster.iter().map(|u| u.0.clone()).collect(),
                )
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

    fn cors(&self, file: &FileConfig) -> Result<Option<CorsPolicy>> {
        let Some(c) = &file.cors else { return Ok(None) };
        let span = c.allow_origins.span();
        let origins_list = &c.allow_origins.get_ref().0;
        let any_origin = origins_list.iter().any(|o| o == "*");
        if any_origin && c.allow_credentials {
            return Err(self.err(
                span,
                "cors.allow_origins",
                "[\"*\"] cannot be combined with allow_credentials = true (browsers refuse it, and it would let any site act as the user); list exact origins",
            ));
        }
        let mut origins = Vec::new();
        for origin in origins_list.iter().filter(|o| *o != "*") {
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.trim_end_matches('/').ends_with("://")
                && !origin.ends_with('/')
                && origin
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.path() == "/" && u.query().is_none());
            if !valid && origin != "null" {
                return Err(self.err(
                    span,
                    "cors.allow_origins",
                    format!("\"{origin}\" is not an origin; write scheme://host[:port] with no path or trailing slash, e.g. \"https://app.example.com\""),
                ));
            }
            origins.push(HeaderValue::from_str(origin).map_err(|_| {
                self.err(
                    span.clone(),
                    "cors.allow_origins",
                    format!("\"{origin}\" is not a valid header value"),
                )
            })?);
        }
        for method in &c.allow_methods.0 {
            Method::from_bytes(method.as_bytes()).map_err(|_| {
                self.err(
                    0..0,
                    "cors.allow_methods",
                    format!("\"{method}\" is not an HTTP method"),
                )
            })?;
        }
        for (list, key) in [
            (&c.allow_headers.0, "cors.allow_headers"),
            (&c.expose_headers.0, "cors.expose_headers"),
        ] {
            for name in list {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    self.err(0..0, key, format!("\"{name}\" is not a valid header name"))
                })?;
            }
        }
        let join = |list: &[String], key: &str| {
            HeaderValue::from_str(&list.join(", "))
                .map_err(|_| self.err(0..0, key, "contains characters not allowed in a header"))
        };
        Ok(Some(CorsPolicy {
            origins,
            any_origin,
            credentials: c.allow_credentials,
            allow_methods: join(&c.allow_methods.0, "cors.allow_methods")?,
            allow_headers: join(&c.allow_headers.0, "cors.allow_headers")?,
            expose_headers: if c.expose_headers.0.is_empty() {
                None
            } else {
                Some(join(&c.expose_headers.0, "cors.expose_headers")?)
            },
            max_age: HeaderValue::from(c.max_age.0.as_secs()),
        }))
    }

    fn security_headers(&self, s: &SecurityHeadersFile, key: &str) -> Result<SecurityHeaders> {
        let fields: [(&str, &Text); 7] = [
            ("x-content-type-options", &s.x_content_type_options),
            ("x-frame-options", &s.x_frame_options),
            ("x-xss-protection", &s.x_xss_protection),
            ("referrer-policy", &s.referrer_policy),
            ("content-security-policy", &s.content_security_policy),
            ("permissions-policy", &s.permissions_policy),
            ("cross-origin-opener-policy", &s.cross_origin_opener_policy),
        ];
        let value = |name: &str, text: &Text| {
            HeaderValue::from_str(text.as_str()).map_err(|_| {
                self.err(
                    0..0,
                    format!("{key}.{}", name.replace('-', "_")),
                    format!("\"{text}\" is not a valid header value"),
                )
            })
        };
        let mut always = Vec::new();
        for (name, text) in fields {
            if !text.as_str().is_empty() {
                always.push((HeaderName::from_static(name), value(name, text)?));
            }
        }
        let hsts = if s.strict_transport_security.as_str().is_empty() {
            None
        } else {
            Some(value(
                "strict-transport-security",
                &s.strict_transport_security,
            )?)
        };
        let mut remove = Vec::new();
        for name in &s.remove_response_headers {
            remove.push(
                HeaderName::from_bytes(name.as_str().as_bytes()).map_err(|_| {
                    self.err(
                        0..0,
                        format!("{key}.remove_response_headers"),
                        format!("\"{name}\" is not a valid header name"),
                    )
                })?,
            );
        }
        Ok(SecurityHeaders {
            always,
            hsts,
            remove,
        })
    }

    fn rate_limits(
        &self,
        rules: &[Spanned<RateLimitRuleFile>],
        key: &str,
        tenant_claim: Option<&str>,
    ) -> Result<Vec<RateLimitRule>> {
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let r = rule.get_ref();
            let key = format!("{key}[{i}]");
            let by = LimitKey::parse(r.by.as_str(), tenant_claim)
                .map_err(|m| self.err(rule.span(), format!("{key}.by"), m))?;
            if r.limit == 0 {
                return Err(self.err(rule.span(), format!("{key}.limit"), "must be at least 1"));
            }
            if r.per.0.is_zero() {
                return Err(self.err(rule.span(), format!("{key}.per"), "must be longer than 0s"));
            }
            let burst = r.burst.unwrap_or(r.limit);
            if burst == 0 {
                return Err(self.err(rule.span(), format!("{key}.burst"), "must be at least 1"));
            }
            out.push(RateLimitRule {
                by,
                by_label: r.by.as_str().into(),
                limit: r.limit,
                per: r.per.0,
                burst,
                shadow: r.shadow,
            });
        }
        Ok(out)
    }

    fn routes(&self, file: &FileConfig, base_headers: &SecurityHeaders) -> Result<RouteTable> {
        let defaults = &file.defaults;
        let default_auth = AuthRequirement::parse(&defaults.auth.get_ref().0)
            .map_err(|m| self.err(defaults.auth.span(), "defaults.auth", m))?;
        let global_claims = match &file.auth.jwt {
            Some(jwt) => self.forward_claims(&jwt.forward_claims, "auth.jwt.forward_claims")?,
            None => Vec::new(),
        };
        if file.routes.is_empty() {
            return Err(self.err(0..0, "routes", "no [[routes]]: every request would be 404; add at least one (path = \"/**\" passes everything)"));
        }
        let mut names = HashSet::new();
        let mut routes = Vec::new();
        for (i, spanned) in file.routes.iter().enumerate() {
            let route = self.route(
                i,
                spanned,
                file,
                &default_auth,
                &global_claims,
                base_headers,
            )?;
            if !names.insert(route.name.clone()) {
                return Err(self.err(
                    spanned.get_ref().name.span(),
                    format!("routes[{i}].name"),
                    format!(
                        "route name \"{}\" is used twice; names must be unique",
                        route.name
                    ),
                ));
            }
            routes.push(route);
        }
        RouteTable::new(routes).map_err(|(later, earlier)| {
            let r = &file.routes[later];
            let e = &file.routes[earlier];
            self.err(
                r.get_ref().path.span(),
                format!("routes[{later}]"),
                format!(
                    "route \"{}\" ({}) can never match: the earlier route \"{}\" ({}) takes every request it would; move it above, or narrow the earlier route's path or methods",
                    r.get_ref().name.get_ref(), r.get_ref().path.get_ref(), e.get_ref().name.get_ref(), e.get_ref().path.get_ref()
                ),
            )
        })
    }

    fn route(
        &self,
        i: usize,
        spanned: &Spanned<RouteFile>,
        file: &FileConfig,
        default_auth: &AuthRequirement,
        global_claims: &[(String, HeaderName)],
        base_headers: &SecurityHeaders,
    ) -> Result<Route> {
        let r = spanned.get_ref();
        let key = format!("routes[{i}]");
        let name = r.name.get_ref().as_str();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(self.err(
                r.name.span(),
                format!("{key}.name"),
                format!("\"{name}\" is not a route name; use letters, digits, - _ . :"),
            ));
        }
        let path_text = r.path.get_ref().as_str();
        let canonical = sanitize::canonicalize(path_text).map_err(|why| {
            self.err(
                r.path.span(),
                format!("{key}.path"),
                format!("\"{path_text}\": {why}"),
            )
        })?;
        let pattern = Pattern::parse(&canonical)
            .map_err(|m| self.err(r.path.span(), format!("{key}.path"), m))?;
        let methods = match &r.methods {
            None => None,
            Some(list) => {
                let mut methods = Vec::new();
                for m in list.get_ref() {
                    let upper = m.as_str().to_ascii_uppercase();
                    let method = Method::from_bytes(upper.as_bytes()).map_err(|_| {
                        self.err(
                            list.span(),
                            format!("{key}.methods"),
                            format!("\"{m}\" is not an HTTP method"),
                        )
                    })?;
                    methods.push(method);
                }
                if methods.is_empty() {
                    return Err(self.err(
                        list.span(),
                        format!("{key}.methods"),
                        "is empty; leave it out to accept every method",
                    ));
                }
                Some(methods)
            }
        };
        let auth = match &r.auth {
            Some(a) => AuthRequirement::parse(&a.get_ref().0)
                .map_err(|m| self.err(a.span(), format!("{key}.auth"), m))?,
            None => default_auth.clone(),
        };
        let auth_span = r
            .auth
            .as_ref()
            .map(|a| a.span())
            .unwrap_or_else(|| spanned.span());
        if auth.accepts_jwt() && file.auth.jwt.is_none() {
            return Err(self.err(auth_span, format!("{key}.auth"), format!(
                "route \"{name}\" requires a JWT (auth = \"{auth}\"{}) but [auth.jwt] is not configured; add [auth.jwt], or set auth = \"none\" explicitly to run without auth",
                if r.auth.is_none() { ", inherited from [defaults]" } else { "" }
            )));
        }
        for secret in auth.secret_names() {
            if !file.auth.secrets.contains_key(secret) {
                return Err(self.err(
                    auth_span.clone(),
                    format!("{key}.auth"),
                    format!("secret \"{secret}\" is not defined; add [auth.secrets.{secret}]"),
                ));
            }
        }
        let tenant = match &r.tenant {
            None => None,
            Some(t) => {
                let rule = TenantRule {
                    param: t.get_ref().param.as_str().to_string(),
                    claim: t.get_ref().claim.as_str().to_string(),
                };
                if !pattern.param_names().any(|p| p == rule.param) {
                    return Err(self.err(
                        t.span(),
                        format!("{key}.tenant.param"),
                        format!(
                            "\"{}\" is not a {{param}} of the path \"{path_text}\"",
                            rule.param
                        ),
                    ));
                }
                if !auth.accepts_jwt() {
                    return Err(self.err(t.span(), format!("{key}.tenant"), "tenant scoping needs a verified JWT claim; the route's auth must include \"jwt\""));
                }
                Some(rule)
            }
        };
        let tenant_claim = tenant.as_ref().map(|t| t.claim.as_str());
        let rate_limits = match &r.rate_limits {
            Some(rules) => self.rate_limits(rules, &format!("{key}.rate_limits"), tenant_claim)?,
            None => self.rate_limits(
                &file.defaults.rate_limits,
                "defaults.rate_limits",
                tenant_claim,
            )?,
        };
        let security_headers = match &r.security_headers {
            None => Arc::new(base_headers.clone()),
            Some(overrides) => Arc::new(self.security_headers(
                &merge_headers(&file.security_headers, overrides),
                &format!("{key}.security_headers"),
            )?),
        };
        let forward_claims = match &r.forward_claims {
            Some(claims) => self.forward_claims(claims, &format!("{key}.forward_claims"))?,
            None => global_claims.to_vec(),
        };
        let strip_prefix = match &r.strip_prefix {
            None => None,
            Some(p) => {
                let text = p.get_ref().as_str();
                if !text.starts_with('/') || text.len() < 2 || text.ends_with('/') {
                    return Err(self.err(
                        p.span(),
                        format!("{key}.strip_prefix"),
                        format!(
                            "\"{text}\" must start with \"/\" and not end with \"/\", e.g. \"/api\""
                        ),
                    ));
                }
                Some(text.to_string())
            }
        };
        Ok(Route {
            id: i,
            name: name.into(),
            pattern,
            methods,
            auth,
            tenant,
            timeout: r.timeout.unwrap_or(file.defaults.timeout).0,
            max_body: r.max_body.unwrap_or(file.defaults.max_body).0,
            rate_limits,
            cors: r.cors.unwrap_or(true),
            security_headers,
            retry: r.retry.unwrap_or(true),
            forward_claims,
            strip_prefix,
        })
    }
}

fn merge_headers(base: &SecurityHeadersFile, o: &SecurityHeadersOverride) -> SecurityHeadersFile {
    let pick = |over: &Option<Text>, base: &Text| over.clone().unwrap_or_else(|| base.clone());
    SecurityHeadersFile {
        x_content_type_options: pick(&o.x_content_type_options, &base.x_content_type_options),
        x_frame_options: pick(&o.x_frame_options, &base.x_frame_options),
        x_xss_protection: pick(&o.x_xss_protection, &base.x_xss_protection),
        referrer_policy: pick(&o.referrer_policy, &base.referrer_policy),
        content_security_policy: pick(&o.content_security_policy, &base.content_security_policy),
        strict_transport_security: pick(
            &o.strict_transport_security,
            &base.strict_transport_security,
        ),
        permissions_policy: pick(&o.permissions_policy, &base.permissions_policy),
        cross_origin_opener_policy: pick(
            &o.cross_origin_opener_policy,
            &base.cross_origin_opener_policy,
        ),
        remove_response_headers: o
            .remove_response_headers
            .clone()
            .unwrap_or_else(|| base.remove_response_headers.clone()),
    }
}

/// Every `forward_claims` target and every shared-secret header.
fn stripped_headers(file: &FileConfig) -> StrippedHeaders {
    let mut set = StrippedHeaders::default();
    if let Some(jwt) = &file.auth.jwt {
        for header in jwt.forward_claims.values() {
            set.add(header.get_ref().as_str());
        }
    }
    for route in &file.routes {
        for header in route
            .get_ref()
            .forward_claims
            .iter()
            .flat_map(|m| m.values())
        {
            set.add(header.get_ref().as_str());
        }
    }
    for secret in file.auth.secrets.values() {
        set.add(secret.get_ref().header.as_str());
    }
    set
}

#[cfg(test)]
mod tests;
