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
/// The HTTPS listener's certificate chain and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerPolicy {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// `server.tls`: PEM paths, resolved against the config's directory.
    pub tls: Option<TlsFiles>,
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
    /// Upstream sockets open at once (requests wait for one inside their
    /// route's timeout); bounds what client connections times HTTP/2
    /// streams could otherwise open.
    pub max_connections: usize,
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
    if let Some(files) = policy.server.tls.take() {
        policy.server.tls = Some(TlsFiles {
            cert: base.join(files.cert),
            key: base.join(files.key),
        });
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
        // serde's messages may quote a value, and a URL there may carry credentials.
        let message = super::redact::urls_in(e.message().trim());
        ConfigError::at_span(label, text, e.span(), None, message)
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
            tls: s.tls.as_ref().map(|t| TlsFiles {
                cert: PathBuf::from(t.cert.as_str()),
                key: PathBuf::from(t.key.as_str()),
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
        // Errors show the URL redacted: its userinfo may hold a password.
        let shown = u.url.get_ref().to_string();
        let bad = |why: &str| {
            self.err(
                u.url.span(),
                "upstream.url",
                format!("\"{shown}\" {why}; write e.g. \"http://127.0.0.1:8000\""),
            )
        };
        let uri: http::Uri = text.parse().map_err(|_| bad("is not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("has no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad("must use http or https"));
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        // Userinfo is never sent (it would otherwise end up in `Host`, in the
        // circuit-state label and in `/readyz`): only host and port are kept.
        let authority = match authority.as_str().rsplit_once('@') {
            Some((_, host_port)) => {
                Authority::try_from(host_port).map_err(|_| bad("has an invalid host"))?
            }
            None => authority.clone(),
        };
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
        if u.max_connections == 0 {
            return Err(self.err(0..0, "upstream.max_connections", "must be at least 1"));
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
            max_connections: u.max_connections,
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
}

mod auth;
mod headers;
mod ratelimit;
mod routes;

use routes::stripped_headers;
#[cfg(test)]
mod tests;
