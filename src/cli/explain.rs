//! `palisade explain METHOD TARGET [-H 'Name: value']... [--token-claims
//! JSON] [--format json]` (SPEC §6.5): what palisade would do with one
//! request and why, stage by stage in SPEC §3 order. The outcome is the
//! real pipeline's (the request runs through `cli::harness`, stub upstream
//! and all); the stages around it (canonical path, route, tenant values,
//! limit keys, timeout, `max_body`, retries) are read from the same
//! compiled policy. Nothing leaves the process.

use crate::config::values::REDACTED;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;
use serde_json::{Map, Value};

use super::harness::{CLIENT_PEER, Harness, Observed, Probe};
use super::test::{Loaded, load, notes};
use super::{Cli, EXIT_CONFIG};
use crate::config::units::{format_duration, format_size};
use crate::policy::auth::{Identity, claims};
use crate::policy::ratelimit::KeyInputs;
use crate::policy::sanitize;
use crate::route::{Lookup, Route, changes};

/// Arguments of `palisade explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The request method.
    pub method: String,
    /// The request target (path and query), as a client would send it.
    pub target: String,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Claims of a token signed with the policy's HS256 secret, sent as Bearer.
    #[arg(long, value_name = "JSON")]
    pub token_claims: Option<String>,
    /// Output: text for people, json for tools.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ExplainFormat,
}

/// `--format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExplainFormat {
    /// Readable lines.
    Text,
    /// One JSON object.
    Json,
}

/// What palisade would do with the request, stage by stage.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// Method and target as given.
    pub request: String,
    /// The canonical path, or why the path is refused.
    pub path: Stage,
    /// The matched route, or 404/405.
    pub route: Stage,
    /// The auth requirement and the outcome of the credentials given.
    pub auth: Stage,
    /// The tenant check.
    pub tenant: Stage,
    /// Each rate limit with its bucket key.
    pub rate_limits: Vec<Stage>,
    /// The route's total upstream deadline.
    pub timeout: Option<String>,
    /// The route's largest request body.
    pub max_body: Option<String>,
    /// Whether and when upstream requests are retried.
    pub retries: Option<String>,
    /// What the upstream would receive (`None`: it would not be contacted).
    pub upstream: Option<Upstream>,
    /// The answer: status and reason.
    pub result: Stage,
}

/// One stage: a one-line summary and, for refusals, the reason.
#[derive(Debug, Serialize)]
pub struct Stage {
    /// What palisade does here.
    pub summary: String,
    /// Whether the request passes this stage (`None`: not reached / n/a).
    pub passes: Option<bool>,
    /// The refusal reason, when it does not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The request the upstream would receive.
#[derive(Debug, Serialize)]
pub struct Upstream {
    /// Method and path (after `strip_prefix`).
    pub request: String,
    /// Its headers, in order.
    pub headers: Vec<(String, String)>,
}

impl Stage {
    fn info(summary: String) -> Self {
        Self {
            summary,
            passes: None,
            reason: None,
        }
    }

    fn outcome(summary: String, passes: bool, reason: Option<String>) -> Self {
        Self {
            summary,
            passes: Some(passes),
            reason: if passes { None } else { reason },
        }
    }
}

/// Runs `explain`.
pub fn explain(cli: &Cli, args: &ExplainArgs) -> ExitCode {
    let loaded = match load(&cli.config_path()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (probe, claims) = match probe(args, &loaded) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("palisade explain: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        eprintln!("palisade explain: cannot start the runtime");
        return ExitCode::FAILURE;
    };
    let Loaded {
        policy, generated, ..
    } = loaded;
    let explained = runtime.block_on(async move {
        let harness = Harness::new(policy).await?;
        notes(&generated, harness.redis_replaced);
        let observed = harness.send(&probe).await?;
        Ok::<_, String>(explain_with(&harness, &probe, claims, &observed))
    });
    match explained {
        Ok(explanation) => {
            match args.format {
                ExplainFormat::Json => println!("{}", serde_json::json!(explanation)),
                ExplainFormat::Text => print!("{}", render(&explanation)),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("palisade explain: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The request from the arguments; the token's claims, if any.
fn probe(
    args: &ExplainArgs,
    loaded: &Loaded,
) -> Result<(Probe, Option<Map<String, Value>>), String> {
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| format!("{:?} is not an HTTP method", args.method))?;
    let mut headers = Vec::new();
    for line in &args.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("-H {line:?}: write 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("-H {line:?}: not a header name"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("-H {line:?}: not a header value"))?;
        headers.push((name, value));
    }
    let claims = match &args.token_claims {
        None => None,
        Some(json) => {
            let value: Value =
                serde_json::from_str(json).map_err(|e| format!("--token-claims: not JSON: {e}"))?;
            let claims = value
                .as_object()
                .cloned()
                .ok_or("--token-claims: write a JSON object")?;
            let token = loaded.sign(claims.clone())?;
            let bearer =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
            headers.push((http::header::AUTHORIZATION, bearer));
            Some(claims)
        }
    };
    let probe = Probe {
        method,
        target: args.target.clone(),
        headers,
        body: bytes::Bytes::new(),
    };
    Ok((probe, claims))
}

/// Builds the explanation of `probe`, whose real outcome is `observed`.
pub fn explain_with(
    harness: &Harness,
    probe: &Probe,
    claims: Option<Map<String, Value>>,
    observed: &Observed,
) -> Explanation {
    let policy = harness.policy();
    // An absolute-form target (`http://host/path`) is routed by its path,
    // as the server does.
    let absolute = probe
        .target
        .parse::<http::Uri>()
        .ok()
        .filter(|uri| uri.scheme().is_some());
    let raw_path = match &absolute {
        Some(uri) => uri.path(),
        None => probe.target.split(['?', '#']).next().unwrap_or(""),
    };
    let canonical = sanitize::route_path(&probe.method, raw_path, &policy.routes);
    let mut explanation = Explanation {
        request: format!("{} {}", probe.method, probe.target),
        path: match &canonical {
            Ok(path) => Stage::outcome(format!("canonical {path}"), true, None),
            Err(why) => Stage::outcome(format!("400: {why}"), false, Some("path".into())),
        },
        route: Stage::info("not reached".into()),
        auth: Stage::info("not reached".into()),
        tenant: Stage::info("not reached".into()),
        rate_limits: Vec::new(),
        timeout: None,
        max_body: None,
        retries: None,
        upstream: observed.upstream.as_ref().map(|received| Upstream {
            request: format!("{} {}", received.method, received.target),
            headers: header_list(&received.headers),
        }),
        result: result(observed),
    };
    // The real pipeline reads the head (its size, `Host`, the method's
    // spelling, the framing) before the path: a refusal there, which the
    // path's own reading cannot know of, is what the path line shows, and
    // no route is reached (a lower-case `get` is a 400, not a 405).
    let status = observed.status.as_u16();
    if observed.route.is_none()
        && observed.upstream.is_none()
        && matches!(status, 400 | 414 | 431)
        && let Some(reason) = &observed.reason
        && explanation.path.reason.as_ref() != Some(reason)
    {
        explanation.path = Stage::outcome(
            format!("{status}: the request head is refused before its path is read"),
            false,
            Some(reason.clone()),
        );
        return explanation;
    }
    let Ok(path) = canonical else {
        return explanation;
    };
    match policy.routes.lookup(&probe.method, &path) {
        Lookup::NotFound => {
            explanation.route = Stage::outcome(
                "404: no route matches".into(),
                false,
                Some("no_route".into()),
            );
        }
        Lookup::MethodNotAllowed(allow) => {
            let summary = format!("405: the path matches, the method does not (Allow: {allow})");
            explanation.route = Stage::outcome(summary, false, Some("method".into()));
        }
        Lookup::Found(route, params) => {
            let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut summary = format!("#{} \"{}\" {}", route.id + 1, route.name, route.pattern);
            if !params.is_empty() {
                summary.push_str(&format!(" ({})", params.join(", ")));
            }
            explanation.route = Stage::outcome(summary, true, None);
            let headers: HeaderMap = probe.headers.iter().cloned().collect();
            let params = params_of(&route, &path);
            route_stages(
                &mut explanation,
                harness,
                &route,
                &params,
                claims,
                observed,
                &headers,
            );
        }
    }
    explanation
}

/// The route's captures, as a map.
fn params_of(route: &Route, path: &str) -> BTreeMap<String, String> {
    let mut params = Vec::new();
    route.pattern.matches(path, &mut params);
    params
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Auth, tenant, limits and the route's settings.
fn route_stages(
    out: &mut Explanation,
    harness: &Harness,
    route: &Arc<Route>,
    params: &BTreeMap<String, String>,
    claims: Option<Map<String, Value>>,
    observed: &Observed,
    request_headers: &HeaderMap,
) {
    let policy = harness.policy();
    // The client as the live server reads it: the peer, or behind a
    // trusted proxy the address its `X-Forwarded-For` names.
    let client_ip = crate::policy::forward::client_ip(
        CLIENT_PEER.ip(),
        request_headers,
        &policy.server.trusted_proxies,
    );
    // The route's IP lists are checked before authentication (SPEC §6.7).
    let refused_by_ip = observed.reason.as_deref() == Some("ip");
    let reached_auth = observed.route.as_deref() == Some(&*route.name);
    let reason = observed.reason.clone();
    out.auth = if refused_by_ip {
        Stage::info(format!(
            "{}: not reached (the client IP {} is refused by the route's IP lists, 403)",
            route.auth, client_ip
        ))
    } else if !reached_auth {
        Stage::info(format!("{}: not reached", route.auth))
    } else if observed.auth_failed {
        Stage::outcome(
            format!("{}: refused, 401", route.auth),
            false,
            reason.clone(),
        )
    } else {
        Stage::outcome(format!("{}: admitted", route.auth), true, None)
    };
    let admitted = out.auth.passes == Some(true);
    let identity = match claims {
        Some(claims) if admitted && route.auth.accepts_jwt() => {
            Identity::Jwt(Arc::new(claims::VerifiedClaims::new(claims)))
        }
        _ => Identity::Anonymous,
    };
    out.tenant = match &route.tenant {
        None => Stage::info("no tenant rule".into()),
        Some(rule) => {
            let value = params.get(&rule.param).map_or("-", String::as_str);
            let claim = identity
                .claims()
                .and_then(|c| claims::lookup(c, &rule.claim))
                .map_or_else(|| "absent".into(), claims::as_text);
            let summary = format!(
                "{{{}}}={value} must equal claim {}={claim}",
                rule.param, rule.claim
            );
            if !admitted {
                Stage::info(format!("{summary}: not reached"))
            } else {
                let refused = reason.as_deref() == Some("tenant");
                let verdict = if refused { "refused, 403" } else { "ok" };
                Stage::outcome(
                    format!("{summary}: {verdict}"),
                    !refused,
                    Some("tenant".into()),
                )
            }
        }
    };
    let inputs = KeyInputs {
        client_ip,
        client_ip_text: None,
        identity: &identity,
        headers: request_headers,
    };
    let keys = harness.limit_keys(route, &inputs);
    let limited = reason.as_deref() == Some("rate-limited");
    let limits = changes::limits(route);
    out.rate_limits = limits
        .split(", ")
        .filter(|l| *l != "-")
        .zip(keys)
        .map(|(limit, key)| {
            Stage::outcome(
                format!("{limit} key {key}"),
                !limited,
                Some("rate-limited".into()),
            )
        })
        .collect();
    out.timeout = Some(format_duration(route.timeout));
    out.max_body = Some(format_size(route.max_body));
    let retry = &policy.upstream.retry;
    out.retries = Some(if route.retry && retry.attempts > 0 {
        format!(
            "up to {} (connect failures: {}, statuses: {:?})",
            retry.attempts, retry.on_connect_failure, retry.on_status
        )
    } else {
        "none".into()
    });
}

fn result(observed: &Observed) -> Stage {
    let status = observed.status.as_u16();
    let passes = observed.upstream.is_some();
    let summary = match (&observed.reason, passes) {
        (_, true) => format!("{status} from the upstream (stub)"),
        (Some(reason), false) => format!("{status} from palisade ({reason})"),
        (None, false) => format!("{status} from palisade"),
    };
    Stage::outcome(summary, passes, observed.reason.clone())
}

/// The headers as text, credentials redacted: the explanation is printed
/// (and pasted into tickets and CI logs), and a token `--token-claims`
/// signed with the policy's secret is a working credential. The scheme of
/// an `Authorization` value stays (`Bearer <redacted>`).
fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let text = String::from_utf8_lossy(v.as_bytes());
            let shown = match k.as_str() {
                "authorization" | "proxy-authorization" => match text.split_once(' ') {
                    Some((scheme, _)) => format!("{scheme} {REDACTED}"),
                    None => REDACTED.to_string(),
                },
                "cookie" => REDACTED.to_string(),
                _ => text.into_owned(),
            };
            (k.to_string(), shown)
        })
        .collect()
}

/// The explanation as aligned lines.
pub fn render(e: &Explanation) -> String {
    let mut lines = vec![("request", e.request.clone())];
    let mut stage = |label: &'static str, stage: &Stage| {
        let mut text = stage.summary.clone();
        if let Some(reason) = &stage.reason {
            text.push_str(&format!(" (reason {reason})"));
        }
        lines.push((label, text));
    };
    stage("path", &e.path);
    stage("route", &e.route);
    stage("auth", &e.auth);
    stage("tenant", &e.tenant);
    for limit in &e.rate_limits {
        stage("rate limit", limit);
    }
    let mut out = String::new();
    for (label, text) in lines {
        out.push_str(&format!("{label:<11} {text}\n"));
    }
    for (label, value) in [
        ("timeout", &e.timeout),
        ("max_body", &e.max_body),
        ("retries", &e.retries),
    ] {
        if let Some(value) = value {
            out.push_str(&format!("{label:<11} {value}\n"));
        }
    }
    match &e.upstream {
        None => out.push_str("upstream    not contacted\n"),
        Some(up) => {
            out.push_str(&format!("upstream    {} with headers:\n", up.request));
            for (name, value) in &up.headers {
                out.push_str(&format!("              {name}: {value}\n"));
            }
        }
    }
    out.push_str(&format!("result      {}\n", e.result.summary));
    out
}
