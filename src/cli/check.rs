//! `palisade check`: validate, print the compiled route table, never listen.

use std::process::ExitCode;

use super::{Cli, EXIT_CONFIG};
use crate::config::units::{format_duration, format_size};
use crate::config::{self, Env, Policy};
use crate::policy::auth::AuthMethod;
use crate::policy::ratelimit::LimitKey;

/// Runs `check`.
pub fn check(cli: &Cli) -> ExitCode {
    let path = cli.config_path();
    match config::load_file(&path, &Env::from_process().lenient_secrets()) {
        Ok(policy) => {
            for var in &policy.unset_secret_vars {
                eprintln!(
                    "warning: secret variable {var} is not set; checked with a placeholder (`palisade run` refuses to start until it is set)"
                );
            }
            for warning in warnings(&policy) {
                eprintln!("warning: {warning}");
            }
            print!("{}", route_table(&policy));
            println!(
                "{}: OK ({} routes)",
                path.display(),
                policy.routes.routes().len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Policy that loads but probably does not do what its author meant.
/// `check` prints these on stderr; they never fail the check.
pub fn warnings(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for (i, route) in policy.routes.routes().iter().enumerate() {
        // Claims are a JWT's: a request admitted by another proof in an
        // any-of list passes without them.
        if !route.require_claims.is_empty()
            && route.auth.methods.iter().any(|m| *m != AuthMethod::Jwt)
        {
            out.push(format!(
                "routes[{i}] (\"{}\"): require_claims applies only to requests admitted by a JWT; \
                 auth = \"{}\" also admits requests without one, which are not subject to it",
                route.name, route.auth
            ));
        }
        // A client chooses its own headers: without authentication a
        // per-header limit is escaped by sending a new value each time.
        if !route.auth.anonymous {
            continue;
        }
        for rule in &route.rate_limits {
            if matches!(rule.by, LimitKey::Header(_)) && !rule.shadow {
                out.push(format!(
                    "routes[{i}] (\"{}\"): rate limit by = \"{}\" on a route with auth = \"{}\": \
                     any client escapes it by sending a different header value; \
                     add a by = \"ip\" limit or require authentication",
                    route.name, rule.by_label, route.auth
                ));
            }
        }
    }
    let url = &policy.effective.upstream.url;
    if url
        .as_str()
        .parse::<http::Uri>()
        .is_ok_and(|u| u.authority().is_some_and(|a| a.as_str().contains('@')))
    {
        out.push(format!(
            "upstream.url (\"{url}\"): the userinfo is ignored; palisade never sends it to the upstream"
        ));
    }
    out
}

/// The route table as aligned text columns.
pub fn route_table(policy: &Policy) -> String {
    let mut rows = vec![[
        "#".to_string(),
        "NAME".into(),
        "METHODS".into(),
        "PATTERN".into(),
        "AUTH".into(),
        "LIMITS".into(),
        "TIMEOUT".into(),
        "MAX BODY".into(),
    ]];
    for (i, route) in policy.routes.routes().iter().enumerate() {
        let methods = route.methods.as_ref().map_or_else(
            || "*".to_string(),
            |ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
        );
        let limits = if route.rate_limits.is_empty() {
            "-".to_string()
        } else {
            route
                .rate_limits
                .iter()
                .map(|l| {
                    let mut text = format!("{}:{}/{}", l.by_label, l.limit, format_duration(l.per));
                    if l.burst != l.limit {
                        text.push_str(&format!(" burst {}", l.burst));
                    }
                    if let Some(claim) = &l.tier_claim {
                        let names: Vec<&str> = l.tiers.iter().map(|t| &*t.name).collect();
                        text.push_str(&format!(" tiers by {claim}: {}", names.join("/")));
                    }
                    if l.shadow {
                        text.push_str(" (shadow)");
                    }
                    text
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut auth = route.auth.to_string();
        if let Some(tenant) = &route.tenant {
            auth.push_str(&format!(" tenant {{{}}}={}", tenant.param, tenant.claim));
        }
        rows.push([
            (i + 1).to_string(),
            route.name.to_string(),
            methods,
            route.pattern.to_string(),
            auth,
            limits,
            format_duration(route.timeout),
            format_size(route.max_body),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
