//! `palisade demo`: the newcomer path. Starts the built-in echo upstream,
//! points the config at it, fills unset environment variables with generated
//! development values (said so on screen), starts palisade and prints a
//! development token and ready-to-paste `curl` lines.

use crate::policy::ratelimit::RedisTarget;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::uri::{Authority, Scheme};
use rand::RngExt;

use super::token::{env_var_at, mint, secret_var_of};
use super::{Cli, EXIT_CONFIG, echo, runtime};
use crate::config::expand::required_vars_of_toml;
use crate::config::{self, Env, Policy};
use crate::observe::logging;
use crate::policy::auth::AuthMethod;
use crate::proxy::server::{self, StartError};
use crate::route::pattern::Segment;

const DEMO_TENANT: &str = "demo-tenant";

/// Runs `demo`.
pub fn demo(cli: &Cli) -> ExitCode {
    let path = cli.config_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: cannot read the config file: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (env, generated) = dev_env(&text);
    let policy = match config::load_text_at(&path, &text, &env) {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (json, level) = cli.log_settings(false, &policy.log.level);
    let _log = logging::init(json, &level);
    let rt = match runtime(policy.server.workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let signals = crate::shutdown::ShutdownSignals::register();
        let echo_addr = match echo::start().await {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("cannot start the echo upstream: {e}");
                return ExitCode::FAILURE;
            }
        };
        let policy = redis_or_memory(point_at(policy, echo_addr)).await;
        let token = demo_token(&policy, &text, &env);
        let server = match start_with_fallback(policy).await {
            Ok(server) => server,
            Err(error) => return super::run::start_failure(&error),
        };
        let generation = server.shared.current.load_full();
        let (proxy_addr, admin_addr) = (reachable(server.proxy_addr), reachable(server.admin_addr));
        println!(
            "{}",
            banner(
                &generation.policy,
                proxy_addr,
                admin_addr,
                echo_addr,
                &generated,
                token.as_deref(),
                &text
            )
        );
        super::run::serve_until_signal(server, signals).await
    })
}

/// The process environment with a generated development value for every
/// variable the config text needs but that is unset (returned by name, so
/// it can be said on screen). `demo` and `test` use it, so tokens and
/// secret headers built from those values agree with the policy.
pub fn dev_env(text: &str) -> (Env, BTreeMap<String, String>) {
    let mut env = Env::from_process();
    let mut generated = BTreeMap::new();
    for var in required_vars_of_toml(text) {
        if env.get(&var).is_none() {
            let value = random_hex(24);
            env.set(&var, value.clone());
            generated.insert(var, value);
        }
    }
    (env, generated)
}

/// A wildcard bind address is reached on loopback.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// Rewrites the upstream to `echo` (the demo's echo server, the test stub).
pub fn point_at(mut policy: Policy, echo: SocketAddr) -> Policy {
    if let Ok(authority) = Authority::try_from(echo.to_string()) {
        policy.upstream.scheme = Scheme::HTTP;
        policy.upstream.host_header =
            HeaderValue::from_str(authority.as_str()).unwrap_or(policy.upstream.host_header);
        policy.upstream.authority = authority;
        policy.upstream.base_path = String::new();
        policy.upstream.ca_file = None;
        let effective = Arc::make_mut(&mut policy.effective);
        effective.upstream.url = format!("http://{echo}").as_str().into();
    }
    policy
}

/// A configured Redis that does not answer is replaced by the memory
/// backend, with a warning, so the demo runs anywhere.
async fn redis_or_memory(mut policy: Policy) -> Policy {
    let Some(RedisTarget { url, cluster }) = policy.ratelimit.redis.clone() else {
        return policy;
    };
    let target = cluster.first().cloned().unwrap_or(url);
    let reachable = match target
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().cloned())
    {
        Some(authority) => {
            let addr = format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(6379)
            );
            matches!(
                tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::net::TcpStream::connect(addr)
                )
                .await,
                Ok(Ok(_))
            )
        }
        None => false,
    };
    if !reachable {
        eprintln!(
            "warning: Redis is not reachable; the demo uses the memory rate-limit backend instead"
        );
        policy.ratelimit.redis = None;
    }
    policy
}

/// Binds the configured addresses; one already taken falls back to an
/// ephemeral port so the demo always comes up.
async fn start_with_fallback(mut policy: Policy) -> Result<server::Server, StartError> {
    for addr in [&mut policy.server.listen, &mut policy.admin_listen] {
        if std::net::TcpListener::bind(*addr).is_err() {
            eprintln!("note: {addr} is taken; the demo uses an ephemeral port instead");
            addr.set_port(0);
        }
    }
    server::start(policy).await
}

fn demo_token(policy: &Policy, text: &str, env: &Env) -> Option<String> {
    let var = secret_var_of(text)?;
    let secret = env.get(&var)?;
    let mut claims: Vec<(String, serde_json::Value)> = Vec::new();
    // First the first accepted value of each `require_claims` entry, so the
    // demo token opens every route.
    for entry in policy
        .routes
        .routes()
        .iter()
        .flat_map(|r| &r.require_claims)
    {
        if !claims.iter().any(|(c, _)| **c == *entry.claim) {
            let value = entry.values.first().cloned().unwrap_or_default();
            claims.push((entry.claim.to_string(), value.into()));
        }
    }
    for route in policy.routes.routes() {
        if let Some(tenant) = &route.tenant {
            claims.push((tenant.claim.clone(), DEMO_TENANT.into()));
        }
        for (claim, _) in route.forward_claims.iter() {
            if claim != "sub" && !claims.iter().any(|(c, _)| c == claim) {
                let sample = if claim == "role" {
                    "authenticated"
                } else {
                    DEMO_TENANT
                };
                claims.push((claim.clone(), sample.into()));
            }
        }
    }
    mint(
        secret.as_bytes(),
        "demo-user",
        &claims,
        Duration::from_secs(3600),
        text,
    )
    .ok()
}

fn example_path(route: &crate::route::Route) -> String {
    let tenant_param = route.tenant.as_ref().map(|t| t.param.as_str());
    let mut path = String::new();
    for segment in route.pattern.segments() {
        path.push('/');
        match segment {
            Segment::Literal(lit) => path.push_str(lit),
            Segment::Any => path.push('x'),
            Segment::Param(name) if Some(&**name) == tenant_param => path.push_str(DEMO_TENANT),
            Segment::Param(_) => path.push('1'),
            Segment::Rest => path.push_str("demo"),
        }
    }
    path
}

fn banner(
    policy: &Policy,
    proxy: SocketAddr,
    admin: SocketAddr,
    echo: SocketAddr,
    generated: &BTreeMap<String, String>,
    token: Option<&str>,
    text: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\npalisade demo is running");
    let _ = writeln!(out, "  proxy     http://{proxy}");
    let _ = writeln!(
        out,
        "  admin     http://{admin}  (/metrics /healthz /readyz /config)"
    );
    let _ = writeln!(
        out,
        "  upstream  http://{echo}  (built-in echo: shows what palisade forwarded)"
    );
    if !generated.is_empty() {
        let _ = writeln!(
            out,
            "\nThese environment variables were unset; generated development values are used:"
        );
        for (name, value) in generated {
            let _ = writeln!(out, "  export {name}={value}");
        }
    }
    if let Some(token) = token {
        let _ = writeln!(
            out,
            "\nA development token (HS256, sub=demo-user, valid 1h):\n  export TOKEN={token}"
        );
    }
    let _ = writeln!(out, "\nTry (paste the export lines above first):");
    for route in policy.routes.routes() {
        let path = example_path(route);
        let method = route
            .methods
            .as_ref()
            .and_then(|ms| ms.first())
            .map_or("GET", |m| m.as_str());
        let mut line = String::from("curl -i");
        if method != "GET" {
            let _ = write!(line, " -X {method}");
            if method == "POST" || method == "PUT" || method == "PATCH" {
                line.push_str(" -H 'Content-Type: application/json' -d '{\"hello\":\"palisade\"}'");
            }
        }
        let mut auth_note = route.auth.to_string();
        match route.auth.methods.first() {
            Some(AuthMethod::Jwt) if token.is_some() => {
                line.push_str(" -H \"Authorization: Bearer $TOKEN\"")
            }
            Some(AuthMethod::Secret(name)) => {
                if let Some(secret) = policy.effective.auth.secrets.get(&**name) {
                    let var = env_var_at(text, &["auth", "secrets", name, "value"])
                        .or_else(|| env_var_at(text, &["auth", "secrets", name, "values"]))
                        .unwrap_or_else(|| "SECRET".into());
                    let _ = write!(line, " -H \"{}: ${var}\"", secret.header);
                }
            }
            _ => {}
        }
        if route.auth.is_none() {
            auth_note = "no auth".into();
        }
        let _ = writeln!(out, "  # route \"{}\" ({auth_note})", route.name);
        let _ = writeln!(out, "  {line} http://{proxy}{path}");
    }
    let _ = writeln!(out, "\nAnd what palisade refuses:");
    if let Some(route) = policy
        .routes
        .routes()
        .iter()
        .find(|r| r.auth.accepts_jwt() && !r.auth.anonymous)
    {
        let _ = writeln!(
            out,
            "  curl -i http://{proxy}{}                  # 401: no token",
            example_path(route)
        );
    }
    let _ = writeln!(
        out,
        "  curl -i --path-as-is 'http://{proxy}/api/%2e%2e/admin'  # 400: path trick"
    );
    let _ = writeln!(
        out,
        "  curl -s http://{admin}/metrics | grep '^palisade_requests_total'"
    );
    let _ = writeln!(out, "\nCtrl-C stops it.");
    out
}
