//! The serde mirror of `policy.toml`: every key of SPEC §2, unknown keys
//! refused, spec defaults filled in. After deserialization this value *is*
//! the effective config (what `/config` prints); `compile.rs` turns it into
//! the runtime [`crate::config::Policy`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::choices::{
    Backend, Environment, HmacAlgorithm, HmacEncoding, HmacPresetName, Http1Engine, LogFormat,
    RateHeaders, RedisErrorMode, RetryOn,
};
use super::values::{Dur, OneOrMany, Secret, Size, Text, TextList, Url};

mod security_headers;
pub use security_headers::{SecurityHeadersFile, SecurityHeadersOverride};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub server: ServerFile,
    pub admin: AdminFile,
    pub upstream: UpstreamFile,
    pub log: LogFile,
    pub auth: AuthFile,
    pub ratelimit: RateLimitFile,
    pub cors: Option<CorsFile>,
    pub security_headers: SecurityHeadersFile,
    pub request_id: RequestIdFile,
    pub defaults: DefaultsFile,
    pub routes: Vec<RouteFile>,
    pub tracing: TracingFile,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    pub listen: Text,
    pub tls: Option<TlsFile>,
    pub environment: Environment,
    pub header_read_timeout: Dur,
    pub idle_timeout: Dur,
    pub max_header_bytes: Size,
    pub max_uri_bytes: Size,
    pub max_connections: usize,
    pub trusted_proxies: Vec<Text>,
    pub shutdown_grace: Dur,
    pub workers: usize,
    pub http1_engine: Http1Engine,
}

impl Default for ServerFile {
    fn default() -> Self {
        Self {
            listen: Text::from("0.0.0.0:8080"),
            tls: None,
            environment: Environment::Production,
            header_read_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
            max_header_bytes: Size(16 * 1024),
            max_uri_bytes: Size(8 * 1024),
            max_connections: 10_000,
            trusted_proxies: Vec::new(),
            shutdown_grace: Dur::secs(20),
            workers: 0,
            http1_engine: Http1Engine::Palisade,
        }
    }
}

/// `[server] tls = { cert, key }`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Text,
    pub key: Text,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminFile {
    pub listen: Text,
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            listen: Text::from("127.0.0.1:9901"),
        }
    }
}

/// `[upstream]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamFile {
    pub url: Url,
    pub connect_timeout: Dur,
    pub pool_idle_timeout: Dur,
    pub pool_max_idle: usize,
    pub max_connections: usize,
    pub preserve_host: bool,
    pub ca_file: Option<Text>,
    pub deadline_header: Text,
    pub http1_engine: Http1Engine,
    pub retry: RetryFile,
    pub circuit_breaker: BreakerFile,
}

impl Default for UpstreamFile {
    fn default() -> Self {
        Self {
            url: Url::from("http://127.0.0.1:8000"),
            connect_timeout: Dur::secs(2),
            pool_idle_timeout: Dur::secs(90),
            pool_max_idle: 64,
            max_connections: 1024,
            preserve_host: true,
            ca_file: None,
            deadline_header: Text::from(""),
            http1_engine: Http1Engine::Palisade,
            retry: RetryFile::default(),
            circuit_breaker: BreakerFile::default(),
        }
    }
}

/// `[upstream.retry]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryFile {
    pub attempts: u32,
    pub on: Vec<RetryOn>,
    pub backoff: Dur,
    pub max_backoff: Dur,
    pub budget_percent: u32,
}

impl Default for RetryFile {
    fn default() -> Self {
        Self {
            attempts: 1,
            on: vec![RetryOn::ConnectFailure, RetryOn::Status503],
            backoff: Dur::millis(25),
            max_backoff: Dur::millis(250),
            budget_percent: 20,
        }
    }
}

/// `[upstream.circuit_breaker]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerFile {
    pub enabled: bool,
    pub failure_percent: u32,
    pub min_requests: u32,
    pub window: Dur,
    pub open_for: Dur,
    pub half_open_probes: u32,
}

impl Default for BreakerFile {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_percent: 50,
            min_requests: 20,
            window: Dur::secs(10),
            open_for: Dur::secs(5),
            half_open_probes: 3,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogFile {
    /// Absent: pretty in `environment = "development"`, else JSON (the
    /// compiled config fills it in, so `/config` shows the one in force).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    pub level: Text,
    pub access_log: bool,
}

impl Default for LogFile {
    fn default() -> Self {
        Self {
            format: None,
            level: Text::from("info"),
            access_log: true,
        }
    }
}

/// `[tracing]` (SPEC §6.4): off unless `propagate` or `otlp_endpoint` is set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingFile {
    pub propagate: bool,
    pub otlp_endpoint: Url,
    pub service_name: Text,
    pub sample_ratio: f64,
    /// Spans waiting for export at most; beyond, dropped and counted.
    pub queue_size: usize,
    /// One export request's deadline, and the shutdown flush's.
    pub export_timeout: Dur,
}

impl Default for TracingFile {
    fn default() -> Self {
        Self {
            propagate: false,
            otlp_endpoint: Url::from(""),
            service_name: Text::from("palisade"),
            sample_ratio: 1.0,
            queue_size: 2048,
            export_timeout: Dur::secs(10),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthFile {
    pub jwt: Option<JwtFile>,
    pub secrets: BTreeMap<String, SecretFile>,
    pub hmac: BTreeMap<String, HmacFile>,
}

/// `[auth.jwt]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtFile {
    pub hs256_secret: Option<Secret>,
    pub jwks_url: Option<Url>,
    pub jwks_file: Option<Text>,
    pub algorithms: Vec<Text>,
    pub issuer: Option<Text>,
    pub audiences: Vec<Text>,
    pub leeway: Dur,
    pub require: Vec<Text>,
    pub sources: Vec<Text>,
    pub forward_claims: BTreeMap<String, Text>,
    pub cache_ttl: Dur,
    pub jwks_refresh: Dur,
}

impl Default for JwtFile {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            jwks_url: None,
            jwks_file: None,
            algorithms: vec![Text::from("HS256")],
            issuer: None,
            audiences: Vec::new(),
            leeway: Dur::secs(30),
            require: vec![Text::from("exp"), Text::from("sub")],
            sources: vec![Text::from("header:Authorization")],
            forward_claims: BTreeMap::new(),
            cache_ttl: Dur::secs(60),
            jwks_refresh: Dur::secs(300),
        }
    }
}

/// `[auth.secrets.NAME]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretFile {
    pub header: Text,
    pub value: Option<Secret>,
    pub values: Option<Vec<Secret>>,
}

/// `[auth.hmac.NAME]`: a preset's keys, any of them overridden, or the
/// custom form (SPEC §6.1).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmacFile {
    pub preset: Option<HmacPresetName>,
    pub secret: Option<Secret>,
    pub secrets: Option<Vec<Secret>>,
    pub header: Option<Text>,
    pub algorithm: Option<HmacAlgorithm>,
    pub encoding: Option<HmacEncoding>,
    pub prefix: Option<Text>,
    pub timestamp_header: Option<Text>,
    pub id_header: Option<Text>,
    pub signed: Option<Text>,
    pub tolerance: Option<Dur>,
    pub replay: bool,
}

/// `[ratelimit]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitFile {
    pub backend: Backend,
    pub redis_url: Secret,
    pub redis_cluster: Vec<Secret>,
    pub redis_timeout: Dur,
    /// PEM CA bundle for `rediss://` with a private CA (else the public web roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_ca_file: Option<Text>,
    pub on_redis_error: RedisErrorMode,
    pub ipv6_prefix: u8,
    pub key_prefix: Text,
    pub headers: RateHeaders,
}

impl Default for RateLimitFile {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            redis_url: Secret("redis://127.0.0.1:6379".into()),
            redis_cluster: Vec::new(),
            redis_timeout: Dur::millis(50),
            redis_ca_file: None,
            on_redis_error: RedisErrorMode::Local,
            ipv6_prefix: 64,
            key_prefix: Text::from("palisade:"),
            headers: RateHeaders::Both,
        }
    }
}

/// `[cors]` (absent: no CORS headers at all, preflights go to routes).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsFile {
    pub allow_origins: TextList,
    pub allow_credentials: bool,
    pub allow_methods: TextList,
    pub allow_headers: TextList,
    pub expose_headers: TextList,
    pub max_age: Dur,
}

impl Default for CorsFile {
    fn default() -> Self {
        Self {
            allow_origins: TextList::default(),
            allow_credentials: false,
            allow_methods: TextList::from(&["GET", "POST", "PUT", "PATCH", "DELETE"][..]),
            allow_headers: TextList::from(&["Authorization", "Content-Type", "X-Request-Id"][..]),
            expose_headers: TextList::from(
                &[
                    "X-Request-Id",
                    "RateLimit",
                    "RateLimit-Policy",
                    "Retry-After",
                ][..],
            ),
            max_age: Dur::secs(600),
        }
    }
}

/// `[request_id]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestIdFile {
    pub header: Text,
    pub trust_incoming: bool,
}

impl Default for RequestIdFile {
    fn default() -> Self {
        Self {
            header: Text::from("X-Request-Id"),
            trust_incoming: true,
        }
    }
}

/// `[defaults]`: what every route inherits unless it sets its own.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultsFile {
    pub auth: OneOrMany,
    pub timeout: Dur,
    pub max_body: Size,
    pub rate_limits: Vec<RateLimitRuleFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_ips: Option<Vec<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_ips: Option<Vec<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_claims: Option<BTreeMap<String, OneOrMany>>,
}

impl Default for DefaultsFile {
    fn default() -> Self {
        Self {
            auth: OneOrMany(vec!["jwt".into()]),
            timeout: Dur::secs(30),
            max_body: Size(1 << 20),
            rate_limits: Vec::new(),
            allow_ips: None,
            deny_ips: None,
            require_claims: None,
        }
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: Text,
    pub path: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<Vec<RateLimitRuleFile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<SecurityHeadersOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_claims: Option<BTreeMap<String, Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_ips: Option<Vec<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_ips: Option<Vec<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_claims: Option<BTreeMap<String, OneOrMany>>,
}

/// `tenant = { param, claim }`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    pub param: Text,
    pub claim: Text,
}

/// One entry of `rate_limits`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRuleFile {
    pub by: Text,
    pub limit: u32,
    pub per: Dur,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default)]
    pub shadow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_claim: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<BTreeMap<String, TierFile>>,
}

/// One entry of a limit's `tiers` (it inherits `per`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierFile {
    pub limit: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}
