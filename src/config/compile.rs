//! Compiles the serde mirror into the runtime [`Policy`]: every string is
//! validated and turned into its runtime type here (addresses, CIDRs, header
//! names and values, patterns, auth modes), with errors that name the key,
//! its line, the bad value and what is accepted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use super::choices::Http1Engine;
use super::error::ConfigError;
use super::expand::Env;
use super::file::FileConfig;
use super::keys::{KeyPath, Located};
use super::values::{Text, with_env};
use crate::observe::trace::TracingPolicy;
use crate::policy::auth::AuthPolicy;
use crate::policy::cors::CorsPolicy;
use crate::policy::forward::StrippedHeaders;
use crate::policy::headers::SecurityHeaders;
use crate::policy::ratelimit::RateLimitSettings;
use crate::policy::request_id::RequestIdPolicy;
use crate::proxy::breaker::BreakerSettings;
use crate::proxy::retry::RetrySettings;
use crate::route::RouteTable;

mod auth;
#[cfg(test)]
mod error_tests;
mod headers;
mod hmac;
mod ratelimit;
mod route_policy;
#[cfg(test)]
mod route_policy_tests;
mod routes;
mod server;
#[cfg(test)]
mod tests;
mod trace;
#[cfg(test)]
mod trace_tests;

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
    /// `[tracing]` (SPEC §6.4).
    pub tracing: TracingPolicy,
    /// Secret variables that were unset (only under `Env::lenient_secrets`).
    pub unset_secret_vars: Vec<String>,
}

/// The HTTPS listener's certificate chain and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// `[server]`, compiled.
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
    /// What serves plaintext HTTP/1.1 connections.
    pub http1_engine: Http1Engine,
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
    /// `deadline_header` (SPEC §6.3): each try carries the milliseconds
    /// left of the route's timeout in it.
    pub deadline_header: Option<HeaderName>,
    /// What speaks HTTP/1.1 to the upstream.
    pub http1_engine: Http1Engine,
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
    load_file_for_reload(path, env, None)
}

/// [`load_file`] for a reload of a policy whose JWKS is read from
/// `running_jwks_file`: if the new policy names the same file and it cannot
/// be read or parsed just now (a rotation half written), that is no error:
/// the reload keeps the running keys (SPEC §5: only a reload that changes
/// `jwks_file` may fail on the key set).
pub fn load_file_for_reload(
    path: &Path,
    env: &Env,
    running_jwks_file: Option<&Path>,
) -> Result<Policy, ConfigError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::plain(&label, format!("cannot read the config file: {e}")))?;
    compile_at(path, &text, env, running_jwks_file)
}

/// Compiles `text` as if read from `path` (relative TLS and CA paths are
/// resolved against its directory).
pub fn load_text_at(path: &Path, text: &str, env: &Env) -> Result<Policy, ConfigError> {
    compile_at(path, text, env, None)
}

/// [`load_text_at`], with the reload's running `jwks_file` (see
/// [`load_file_for_reload`]).
fn compile_at(
    path: &Path,
    text: &str,
    env: &Env,
    running_jwks_file: Option<&Path>,
) -> Result<Policy, ConfigError> {
    let label = path.display().to_string();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut policy = compile_text(text, &label, env, &base, running_jwks_file)?;
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
    compile_text(text, label, env, Path::new(""), None)
}

fn compile_text(
    text: &str,
    label: &str,
    env: &Env,
    base: &Path,
    running_jwks_file: Option<&Path>,
) -> Result<Policy, ConfigError> {
    let doc = Located::parse(text);
    let (parsed, unset_secret_vars) = with_env(env, || toml::from_str(text));
    let file: FileConfig = parsed.map_err(|e: toml::de::Error| {
        // serde's messages may quote a value, and a URL there may carry credentials.
        let message = super::redact::urls_in(e.message().trim());
        let key = e.span().and_then(|span| {
            doc.key_at(&span)
                .or_else(|| super::keys::key_from_text(text, span.start))
        });
        ConfigError::at_span(label, text, e.span(), key.map(|k| k.to_string()), message)
    })?;
    let compiler = Compiler {
        label,
        text,
        base,
        doc,
        running_jwks_file,
    };
    let mut policy = compiler.compile(file)?;
    policy.unset_secret_vars = unset_secret_vars;
    Ok(policy)
}

/// Compiles one parsed file; every error it makes is located by its key.
struct Compiler<'a> {
    label: &'a str,
    text: &'a str,
    base: &'a Path,
    doc: Located<'a>,
    /// On a reload, the running policy's `jwks_file` (see
    /// [`load_file_for_reload`]).
    running_jwks_file: Option<&'a Path>,
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

impl Compiler<'_> {
    /// An error at `key`: the position is that of the key's value in the
    /// file, or of the nearest enclosing value the file sets (a default).
    fn err(&self, key: impl Into<KeyPath>, message: impl Into<String>) -> ConfigError {
        let key = key.into();
        let span = self.doc.span_of(&key);
        ConfigError::at_span(self.label, self.text, span, Some(key.to_string()), message)
    }

    /// The floor of a timeout or a limit's window: under a millisecond (the
    /// timers' and the Redis limiter's resolution) every request would time
    /// out before it was sent, or a window would round to nothing.
    fn at_least_a_millisecond(
        &self,
        duration: std::time::Duration,
        key: impl Into<KeyPath>,
    ) -> Result<()> {
        if duration < std::time::Duration::from_millis(1) {
            return Err(self.err(key, "must be at least 1ms"));
        }
        Ok(())
    }

    fn compile(&self, mut file: FileConfig) -> Result<Policy> {
        // Checked even when every route sets its own: a route added later
        // would inherit it.
        self.at_least_a_millisecond(file.defaults.timeout.0, "defaults.timeout")?;
        let server = self.server(&file)?;
        let admin_listen = self.socket_addr(&file.admin.listen, "admin.listen")?;
        let upstream = self.upstream(&file)?;
        let log = self.log(&file)?;
        file.log.format = Some(server::log_format(&file));
        let request_id = RequestIdPolicy {
            header: self.settable_header_name(&file.request_id.header, "request_id.header")?,
            trust_incoming: file.request_id.trust_incoming,
        };
        let auth = self.auth(&file)?;
        let ratelimit = self.ratelimit(&file)?;
        let cors = self.cors(&file)?;
        let base_headers =
            self.security_headers(&file.security_headers, &"security_headers".into())?;
        let routes = self.routes(&file, &base_headers)?;
        let mut stripped_headers = routes::stripped_headers(&file);
        self.own_headers_apart(&file, &request_id, &stripped_headers)?;
        routes::strip_twins(&mut stripped_headers, &request_id, &auth, &routes);
        let tracing = self.tracing(&file)?;
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
            tracing,
            unset_secret_vars: Vec::new(),
        })
    }

    fn socket_addr(&self, value: &Text, key: impl Into<KeyPath>) -> Result<SocketAddr> {
        value.as_str().parse().map_err(|_| {
            self.err(
                key,
                format!(
                    "\"{value}\" is not an address; write IP:PORT such as \"0.0.0.0:8080\" or \"127.0.0.1:9901\""
                ),
            )
        })
    }

    fn header_name(&self, value: &Text, key: impl Into<KeyPath>) -> Result<HeaderName> {
        HeaderName::from_bytes(value.as_str().as_bytes())
            .map_err(|_| self.err(key, format!("\"{value}\" is not a valid header name")))
    }

    /// The headers palisade sets for the operator keep apart: the
    /// deadline header is no claim's target (each try's deadline is
    /// palisade's, not a verified claim's), and the request ID, read from
    /// the client (`trust_incoming`) and set by palisade, is no header
    /// palisade strips from clients and sets with another meaning.
    fn own_headers_apart(
        &self,
        file: &FileConfig,
        request_id: &RequestIdPolicy,
        stripped: &StrippedHeaders,
    ) -> Result<()> {
        let deadline = file.upstream.deadline_header.as_str();
        if !deadline.is_empty()
            && routes::claim_targets(file)
                .any(|t| crate::policy::forward::same_header_name(t.as_str(), deadline))
        {
            return Err(self.err(
                "upstream.deadline_header",
                format!(
                    "\"{deadline}\" is also a forward_claims target; the two would share one header"
                ),
            ));
        }
        if crate::policy::headers::set_on_responses(request_id.header.as_str()) {
            return Err(self.err(
                "request_id.header",
                format!(
                    "\"{}\" is a response header palisade sets (a security, rate-limit, CORS \
                     or error header); choose a name of its own",
                    file.request_id.header
                ),
            ));
        }
        if stripped.contains(request_id.header.as_str()) {
            return Err(self.err(
                "request_id.header",
                format!(
                    "\"{}\" is also a header palisade sets with another meaning (a forward_claims \
                     target, a shared secret's header, upstream.deadline_header or a method \
                     override); choose a name of its own",
                    file.request_id.header
                ),
            ));
        }
        Ok(())
    }

    /// A header palisade sets on the upstream request for the operator
    /// (the request ID, `deadline_header`, a `forward_claims` target): a
    /// valid name, and none palisade already owns
    /// (`policy::head::reserved_reason`).
    fn settable_header_name(&self, value: &Text, key: impl Into<KeyPath>) -> Result<HeaderName> {
        let key = key.into();
        let name = self.header_name(value, key.clone())?;
        match crate::policy::head::reserved_reason(name.as_str()) {
            None => Ok(name),
            Some(why) => Err(self.err(
                key,
                format!("\"{value}\" is a header palisade {why}; choose a name of your own"),
            )),
        }
    }
}
