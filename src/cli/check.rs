//! `palisade check`: validate, print the compiled route table, never listen;
//! with `--against OLD.toml`, also what changed from OLD (SPEC §6.5).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{Cli, EXIT_CONFIG};
use crate::config::{self, Env, Policy};
use crate::policy::auth::AuthMethod;
use crate::policy::ratelimit::LimitKey;
use crate::route::changes;

/// Arguments of `palisade check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also print the routes added, removed, reordered and changed from
    /// this older config.
    #[arg(long, value_name = "OLD.toml")]
    pub against: Option<PathBuf>,
}

/// Runs `check`.
pub fn check(cli: &Cli, args: &CheckArgs) -> ExitCode {
    let path = cli.config_path();
    let env = Env::from_process().lenient_secrets();
    let old = match &args.against {
        None => None,
        Some(old) => match config::load_file(old, &env) {
            Ok(policy) => Some(policy),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    match config::load_file(&path, &env) {
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
            if let Some(line) = tracing_summary(&policy) {
                print!("{line}");
            }
            println!(
                "{}: OK ({} routes)",
                path.display(),
                policy.routes.routes().len()
            );
            if let (Some(old), Some(old_path)) = (&old, &args.against) {
                print!("{}", change_report(old, &policy, old_path));
            }
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
    out.extend(head_before_get(policy));
    out.extend(unreachable_spellings(policy));
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
    if policy.tracing.export.is_some() && !policy.tracing.propagate {
        out.push(
            "tracing: spans are exported but propagate = false: each is a trace of its own, \
             and neither the caller's trace nor the upstream's spans join it"
                .to_string(),
        );
    }
    out
}

/// Route paths no request can reach, and `strip_prefix` values no path
/// of their route starts with: both load, and do nothing.
fn unreachable_spellings(policy: &Policy) -> Vec<String> {
    use crate::route::pattern::Segment;
    let mut out = Vec::new();
    for (i, route) in policy.routes.routes().iter().enumerate() {
        let path = route.pattern.as_str();
        if crate::policy::sanitize::fold_lookalikes(path).is_some() {
            out.push(format!(
                "routes[{i}] (\"{}\"): path \"{path}\" is a lookalike spelling (trailing dots or \
                 spaces, stream syntax, compatibility forms): requests for it are refused with 400",
                route.name
            ));
        }
        let Some(prefix) = &route.strip_prefix else {
            continue;
        };
        let segments = route.pattern.segments();
        let never = prefix.split('/').skip(1).enumerate().any(|(at, wanted)| {
            let before_rest = segments[..at.min(segments.len())]
                .iter()
                .any(|s| matches!(s, Segment::Rest));
            !before_rest
                && match segments.get(at) {
                    Some(Segment::Literal(literal)) => !literal.eq_ignore_ascii_case(wanted),
                    Some(_) => false,
                    None => true,
                }
        });
        if never {
            out.push(format!(
                "routes[{i}] (\"{}\"): strip_prefix \"{prefix}\" never applies: no path of \"{path}\" \
                 starts with it",
                route.name
            ));
        }
    }
    out
}

/// A route taking `HEAD` but not `GET` before a route taking `GET` for
/// some of the same paths, asking something of its callers
/// (`Route::admits_anyone`): backends answer `HEAD`
/// with the `GET` handler, so the later route's handler runs for a `HEAD`
/// under the earlier route's policy. (The other order is handled at run time: a `HEAD` stops at a
/// route taking `GET`.)
fn head_before_get(policy: &Policy) -> Vec<String> {
    let routes = policy.routes.routes();
    let mut out = Vec::new();
    for (i, head_route) in routes.iter().enumerate() {
        if !head_route.accepts(&http::Method::HEAD) || head_route.accepts(&http::Method::GET) {
            continue;
        }
        for (j, get_route) in routes.iter().enumerate().skip(i + 1) {
            // A GET route that admits anyone, and would handle the
            // request no more strictly, loses nothing.
            if get_route.accepts(&http::Method::GET)
                && !(get_route.admits_anyone() && head_route.handles_no_looser(get_route))
                && head_route.pattern.overlaps(&get_route.pattern)
            {
                out.push(format!(
                    "routes[{i}] (\"{}\") takes HEAD but not GET for paths of routes[{j}] \
                     (\"{}\"), which takes GET: backends answer HEAD with the GET handler, so a \
                     HEAD runs it under routes[{i}]'s policy; add GET to routes[{i}] or narrow its path",
                    head_route.name, get_route.name
                ));
            }
        }
    }
    out
}

/// One line on `[tracing]` when it is on (nothing when off).
pub fn tracing_summary(policy: &Policy) -> Option<String> {
    let tracing = &policy.tracing;
    if !tracing.active() {
        return None;
    }
    let propagation = if tracing.propagate {
        "W3C trace context continued and sent upstream"
    } else {
        "W3C trace context off"
    };
    let export = match &tracing.export {
        Some(export) => format!(
            "spans to {} (service.name \"{}\", sample_ratio {})",
            crate::config::redact::url(&export.endpoint),
            export.service_name,
            tracing.sample_ratio
        ),
        None => "no span export".to_string(),
    };
    Some(format!("tracing: {propagation}; {export}\n"))
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
        let [methods, pattern, auth, tenant, limits, timeout, max_body] =
            changes::summary(route).map(|(_, value)| value);
        let auth = if route.tenant.is_some() {
            format!("{auth} tenant {tenant}")
        } else {
            auth
        };
        rows.push([
            (i + 1).to_string(),
            route.name.to_string(),
            methods,
            pattern,
            auth,
            limits,
            timeout,
            max_body,
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

/// `--against`: what changed from `old`, one line each.
fn change_report(old: &Policy, new: &Policy, old_path: &std::path::Path) -> String {
    let lines = changes::changes(&old.routes, &new.routes);
    let mut out = format!("changes from {}:", old_path.display());
    if lines.is_empty() {
        out.push_str(" none to the routes\n");
        return out;
    }
    out.push('\n');
    for line in lines {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}
