//! `[server]`, `[upstream]` (with its retry and circuit-breaker tables) and
//! `[log]` compiled into their runtime settings.

use std::net::IpAddr;
use std::path::PathBuf;

use http::HeaderValue;
use http::uri::{Authority, Scheme};
use ipnet::IpNet;

use super::{Compiler, LogPolicy, Result, ServerPolicy, TlsFiles, UpstreamPolicy};
use crate::config::choices::{Environment, LogFormat, RetryOn};
use crate::config::file::{BreakerFile, FileConfig, RetryFile, UpstreamFile};
use crate::proxy::breaker::BreakerSettings;
use crate::proxy::retry::RetrySettings;

/// The parts of an upstream URL palisade uses.
struct UpstreamTarget {
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    host_header: HeaderValue,
}

impl Compiler<'_> {
    pub(super) fn server(&self, file: &FileConfig) -> Result<ServerPolicy> {
        let s = &file.server;
        let listen = self.socket_addr(&s.listen, "server.listen")?;
        let mut trusted_proxies = Vec::new();
        for (i, entry) in s.trusted_proxies.iter().enumerate() {
            let text = entry.as_str();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    self.err(
                        format!("server.trusted_proxies[{i}]"),
                        format!(
                            "\"{text}\" is not a CIDR; write e.g. \"10.0.0.0/8\" or \"192.168.1.5\""
                        ),
                    )
                })?;
            trusted_proxies.push(net);
        }
        if s.max_header_bytes.0 < 1024 {
            return Err(self.err("server.max_header_bytes", "must be at least \"1KiB\""));
        }
        if s.max_uri_bytes.0 < 64 {
            return Err(self.err("server.max_uri_bytes", "must be at least \"64B\""));
        }
        // Both size one buffer per connection.
        for (key, size) in [
            ("server.max_header_bytes", s.max_header_bytes.0),
            ("server.max_uri_bytes", s.max_uri_bytes.0),
        ] {
            if size > MAX_HEAD_BYTES {
                return Err(self.err(key, "must be at most \"1MiB\""));
            }
        }
        if s.max_connections == 0 {
            return Err(self.err("server.max_connections", "must be at least 1"));
        }
        // A thread each: thousands would exhaust the host (or overflow the
        // runtime's arithmetic) before serving anything.
        if s.workers > MAX_WORKERS {
            return Err(self.err(
                "server.workers",
                format!("must be at most {MAX_WORKERS} (0 = one per core)"),
            ));
        }
        self.at_least_a_millisecond(s.header_read_timeout.0, "server.header_read_timeout")?;
        if let Some(files) = &s.tls {
            // Read as `run` reads them, so `check` refuses what `run` would.
            let (cert, key) = (
                self.base.join(files.cert.as_str()),
                self.base.join(files.key.as_str()),
            );
            crate::proxy::server::tls_server_config(&cert, &key)
                .map_err(|(key, message)| self.err(key, message))?;
        }
        Ok(ServerPolicy {
            listen,
            tls: s.tls.as_ref().map(|t| TlsFiles {
                cert: PathBuf::from(t.cert.as_str()),
                key: PathBuf::from(t.key.as_str()),
            }),
            production: s.environment == Environment::Production,
            header_read_timeout: s.header_read_timeout.0,
            idle_timeout: s.idle_timeout.0,
            max_header_bytes: usize::try_from(s.max_header_bytes.0).unwrap_or(usize::MAX),
            max_uri_bytes: usize::try_from(s.max_uri_bytes.0).unwrap_or(usize::MAX),
            max_connections: s.max_connections,
            trusted_proxies,
            shutdown_grace: s.shutdown_grace.0,
            workers: s.workers,
            http1_engine: s.http1_engine,
        })
    }

    pub(super) fn upstream(&self, file: &FileConfig) -> Result<UpstreamPolicy> {
        let u = &file.upstream;
        let target = self.upstream_target(u)?;
        if u.max_connections == 0 {
            return Err(self.err("upstream.max_connections", "must be at least 1"));
        }
        self.at_least_a_millisecond(u.connect_timeout.0, "upstream.connect_timeout")?;
        if let Some(ca) = &u.ca_file {
            let path = self.base.join(ca.as_str());
            crate::proxy::upstream::ca_roots(&path)
                .map_err(|e| self.err("upstream.ca_file", format!("{}: {e}", path.display())))?;
        }
        Ok(UpstreamPolicy {
            scheme: target.scheme,
            authority: target.authority,
            base_path: target.base_path,
            host_header: target.host_header,
            connect_timeout: u.connect_timeout.0,
            pool_idle_timeout: u.pool_idle_timeout.0,
            pool_max_idle: u.pool_max_idle,
            max_connections: u.max_connections,
            preserve_host: u.preserve_host,
            ca_file: u.ca_file.as_ref().map(|p| PathBuf::from(p.as_str())),
            deadline_header: match u.deadline_header.as_str() {
                "" => None,
                _ => {
                    Some(self.settable_header_name(&u.deadline_header, "upstream.deadline_header")?)
                }
            },
            http1_engine: u.http1_engine,
            retry: self.retry(&u.retry)?,
            breaker: self.breaker(&u.circuit_breaker)?,
        })
    }

    fn upstream_target(&self, u: &UpstreamFile) -> Result<UpstreamTarget> {
        // Errors show the URL redacted: its userinfo may hold a password.
        let shown = u.url.to_string();
        let bad = |why: &str| {
            self.err(
                "upstream.url",
                format!("\"{shown}\" {why}; write e.g. \"http://127.0.0.1:8000\""),
            )
        };
        let uri: http::Uri = u.url.as_str().parse().map_err(|_| bad("is not a URL"))?;
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
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|_| bad("has an invalid host"))?;
        Ok(UpstreamTarget {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
            host_header,
        })
    }

    fn retry(&self, r: &RetryFile) -> Result<RetrySettings> {
        if r.budget_percent > 100 {
            return Err(self.err("upstream.retry.budget_percent", "must be between 0 and 100"));
        }
        Ok(RetrySettings {
            attempts: r.attempts,
            on_connect_failure: r.on.contains(&RetryOn::ConnectFailure),
            on_reset: r.on.contains(&RetryOn::Reset),
            on_status: r.on.iter().filter_map(|on| on.status()).collect(),
            backoff: r.backoff.0,
            max_backoff: r.max_backoff.0,
            budget_percent: r.budget_percent,
        })
    }

    fn breaker(&self, cb: &BreakerFile) -> Result<BreakerSettings> {
        let key = "upstream.circuit_breaker";
        if !(1..=100).contains(&cb.failure_percent) {
            return Err(self.err(
                format!("{key}.failure_percent"),
                "must be between 1 and 100",
            ));
        }
        if cb.half_open_probes == 0 {
            return Err(self.err(format!("{key}.half_open_probes"), "must be at least 1"));
        }
        // One counter per second of the window, read on every response.
        if cb.window.0 > MAX_BREAKER_WINDOW {
            return Err(self.err(format!("{key}.window"), "must be at most \"1h\""));
        }
        Ok(BreakerSettings {
            enabled: cb.enabled,
            failure_percent: cb.failure_percent,
            min_requests: cb.min_requests,
            window: cb.window.0,
            open_for: cb.open_for.0,
            half_open_probes: cb.half_open_probes,
        })
    }

    pub(super) fn log(&self, file: &FileConfig) -> Result<LogPolicy> {
        let level = file.log.level.as_str().to_string();
        crate::observe::logging::check_level(&level).map_err(|e| self.err("log.level", e))?;
        Ok(LogPolicy {
            json: log_format(file) == LogFormat::Json,
            level,
            access_log: file.log.access_log,
        })
    }
}

/// The log format in force: `log.format`, else pretty in development and
/// JSON in production (SPEC §2: `environment = "development"` means pretty logs).
pub(super) fn log_format(file: &FileConfig) -> LogFormat {
    file.log.format.unwrap_or(match file.server.environment {
        Environment::Development => LogFormat::Pretty,
        Environment::Production => LogFormat::Json,
    })
}

/// The most `max_header_bytes` and `max_uri_bytes` take: far above any
/// real head (NGINX's default is 8 KiB, Envoy's maximum 8 MiB for all
/// headers), and a buffer each connection may grow to.
const MAX_HEAD_BYTES: u64 = 1 << 20;

/// The longest circuit-breaker window: it keeps one counter per second and
/// sums them on every response.
const MAX_BREAKER_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// The most worker threads `server.workers` asks for.
const MAX_WORKERS: usize = 1024;
