//! `handle`: the one function to read. It takes one policy snapshot and runs
//! every stage in SPEC §3 order with early returns:
//!
//! request ID → client-header cleanup (`Connection`-named headers, cookie
//! lines, headers only a trusted proxy may send) and identity-header
//! stripping → URI and header limits → `Host` and method spelling → path
//! sanitization → route match → CORS preflight → authentication → tenant
//! check → rate limits → body limit (streamed) → upstream (timeout) →
//! response headers (security, request ID, CORS) → access log and metrics.
//!
//! It never returns `Err` to hyper (that would abort the connection).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument;

use super::conn::ConnRequestGuard;
use super::reject::Reject;
use super::respond;
use super::response_body::ResponseBody;
use super::state::{Generation, Shared};
use super::upstream::{ClientSide, ExchangeSettings};
use crate::observe::access::{AccessRecord, InFlightGauge};
use crate::observe::metrics::{Metrics, NO_ROUTE_LABEL};
use crate::policy::auth;
use crate::policy::body::BodyProgress;
use crate::policy::ratelimit::{KeyInputs, RateHeaders, Verdict};
use crate::policy::{cors, forward, head, limits, sanitize};
use crate::route::{Lookup, Route};

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Per-request context, filled in as stages run and read by the response
/// stage and the access record. No stage looks anything up twice.
struct RequestCtx {
    request_id: HeaderValue,
    route: Option<Arc<Route>>,
    client_ip: IpAddr,
    peer_trusted: bool,
    https: bool,
    origin: Option<HeaderValue>,
    path: String,
    preflight: bool,
    user: Option<String>,
    rate_headers: Option<RateHeaders>,
    upstream_time: Option<std::time::Duration>,
    body: Arc<BodyProgress>,
}

/// Serves one request.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    in_flight_on_conn: ConnRequestGuard,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    let in_flight = InFlightGauge::enter(shared.metrics.clone());
    let generation = shared.current.load_full();
    let policy = &generation.policy;

    let request_id = policy.request_id.resolve(req.headers());
    let span = tracing::info_span!("request", request_id = request_id.to_str().unwrap_or(""));
    let trusted = &policy.server.trusted_proxies;
    let peer_trusted = !trusted.is_empty() && forward::is_trusted(conn.peer.ip(), trusted);
    let mut ctx = RequestCtx {
        client_ip: forward::client_ip(conn.peer.ip(), req.headers(), trusted),
        https: forward::client_is_https(conn.tls, peer_trusted, req.headers()),
        peer_trusted,
        origin: req.headers().get(header::ORIGIN).cloned(),
        request_id,
        route: None,
        path: String::new(),
        preflight: false,
        user: None,
        rate_headers: None,
        upstream_time: None,
        body: Arc::new(BodyProgress::default()),
    };
    let method = req.method().clone();
    // A refcount, not a copy: the raw path is only written out when the
    // request was refused before its canonical path existed.
    let raw_uri = req.uri().clone();

    let outcome = process(&generation, &shared.metrics, conn, &mut ctx, req)
        .instrument(span.clone())
        .await;
    let mut response = match outcome {
        Ok(response) => response,
        Err(reject) => {
            let _entered = span.enter();
            reject_response(&shared, &ctx, &reject, policy.server.production)
        }
    };
    finish_headers(&generation, &ctx, &mut response);
    if let (Some(elapsed), Some(route)) = (ctx.upstream_time, &ctx.route) {
        shared
            .metrics
            .upstream_duration
            .with_label_values(&[&*route.name])
            .observe(elapsed.as_secs_f64());
    }

    let record = AccessRecord {
        metrics: shared.metrics.clone(),
        in_flight,
        access_log: policy.log.access_log,
        start,
        request_id: ctx.request_id.clone(),
        method,
        path: if ctx.path.is_empty() {
            raw_uri.path().to_string()
        } else {
            ctx.path
        },
        route: ctx
            .route
            .as_ref()
            .map_or_else(|| NO_ROUTE_LABEL.into(), |r| r.name.clone()),
        status: response.status(),
        upstream_time: ctx.upstream_time,
        client_ip: ctx.client_ip,
        user: ctx.user.take(),
        body_in: ctx.body.clone(),
    };
    response.body_mut().set_record(record, in_flight_on_conn);
    Ok(response)
}

/// The request-side stages, in order. `Err` is palisade's own answer.
async fn process(
    generation: &Generation,
    metrics: &Metrics,
    conn: ConnInfo,
    ctx: &mut RequestCtx,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Reject> {
    let policy = &generation.policy;

    // Client-header cleanup, before palisade reads or adds any header:
    // what `Connection` names goes now (so it can never remove a header
    // palisade sets later), cookie lines are joined, and what only a
    // trusted proxy may claim is dropped from anyone else.
    head::clean_client_headers(req.headers_mut(), &policy.request_id.header);
    forward::remove_client_claimed(req.headers_mut(), ctx.peer_trusted);

    // Identity-header stripping: before anything else reads headers. The
    // shared-secret headers are captured first: they are checked, never forwarded.
    let presented_secrets = if policy.auth.secrets.is_empty() {
        Vec::new()
    } else {
        policy.auth.capture_secrets(req.headers())
    };
    policy.stripped_headers.strip(req.headers_mut());

    // URI and header limits.
    if limits::uri_len(req.uri()) > policy.server.max_uri_bytes {
        return Err(Reject::UriTooLong);
    }
    if limits::header_block_len(req.headers()) > policy.server.max_header_bytes {
        return Err(Reject::HeaderTooLarge);
    }

    // `Host` and method: one spelling each, as HTTP defines them.
    head::check_host(req.version(), req.uri(), req.headers()).map_err(Reject::BadHead)?;
    head::check_method(req.method(), policy.routes.known_methods()).map_err(Reject::BadHead)?;
    head::check_method_override(req.uri().query()).map_err(Reject::BadHead)?;

    // Path sanitization.
    ctx.path = sanitize::canonicalize(req.uri().path()).map_err(Reject::BadPath)?;
    // A spelling that a lenient server folds onto another path (trailing
    // dots or spaces, fullwidth forms, invisible characters) must reach the
    // route it looks like, or nothing.
    if let Some(folded) = sanitize::fold_lookalikes(&ctx.path) {
        let folded = folded.map_err(Reject::BadPath)?;
        if !policy.routes.same_route(req.method(), &ctx.path, &folded) {
            return Err(Reject::BadPath(sanitize::PathRejection::Lookalike));
        }
    }

    // CORS preflight: matched with the method the browser intends to use.
    if let (Some(cors_policy), Some(origin)) = (&policy.cors, &ctx.origin)
        && let Some(intended) = cors::preflight_method(&req)
        && let Lookup::Found(route, _) = policy.routes.lookup(&intended, &ctx.path)
        && route.cors
    {
        ctx.route = Some(route);
        ctx.preflight = true;
        let mut response = respond::empty(StatusCode::NO_CONTENT);
        cors_policy.preflight_headers(origin, response.headers_mut());
        return Ok(response);
    }

    // Route match.
    let (route, params) = match policy.routes.lookup(req.method(), &ctx.path) {
        Lookup::Found(route, params) => (route, params),
        Lookup::MethodNotAllowed(allow) => return Err(Reject::MethodNotAllowed(allow)),
        Lookup::NotFound => return Err(Reject::NoRoute),
    };
    ctx.route = Some(route.clone());

    // Authentication.
    let verified = auth::authenticate(&policy.auth, &route.auth, req.headers(), &presented_secrets)
        .await
        .and_then(|identity| {
            let headers = auth::identity_headers(&identity, &route.forward_claims)?;
            Ok((identity, headers))
        });
    let (identity, identity_headers) = verified.map_err(Reject::Unauthorized)?;
    ctx.user = identity.subject().map(str::to_string);

    // Tenant check.
    if let Some(rule) = &route.tenant
        && !rule.admits(&params, &identity)
    {
        return Err(Reject::TenantMismatch);
    }

    // Rate limits.
    if !route.rate_limits.is_empty() {
        let inputs = KeyInputs {
            client_ip: ctx.client_ip,
            identity: &identity,
            headers: req.headers(),
        };
        let outcome = generation.ratelimit.check(&route, &inputs, metrics).await;
        ctx.rate_headers = outcome.headers;
        match outcome.verdict {
            Verdict::Allowed => {}
            Verdict::Denied(wait) => return Err(Reject::RateLimited(wait)),
            Verdict::Unavailable => return Err(Reject::RateLimitUnavailable),
        }
    }

    // Verified claims become identity headers (client copies were stripped).
    for (header, value) in identity_headers {
        req.headers_mut().insert(header, value);
    }

    // Body limit, declared: refuse before reading a byte.
    if let Some(length) = limits::declared_length(req.headers())
        && length > route.max_body
    {
        return Err(Reject::BodyTooLarge);
    }

    // Upstream.
    let upstream_path = strip_prefix(&ctx.path, route.strip_prefix.as_deref());
    let client = ClientSide {
        peer: conn.peer.ip(),
        peer_trusted: ctx.peer_trusted,
        https: ctx.https,
    };
    let result = generation
        .upstream
        .send(
            req,
            upstream_path,
            &client,
            (&policy.request_id.header, &ctx.request_id),
            ctx.body.clone(),
            ExchangeSettings {
                retry: route.retry,
                max_body: route.max_body,
                deadline: route.timeout,
                metrics,
                route: &route.name,
            },
        )
        .await;
    let exchange = result?;
    ctx.upstream_time = Some(exchange.elapsed);
    Ok(exchange.response.map(ResponseBody::upstream))
}

/// The path the upstream receives: the canonical path minus `strip_prefix`
/// (on a segment boundary).
fn strip_prefix<'a>(path: &'a str, prefix: Option<&str>) -> &'a str {
    let Some(prefix) = prefix else { return path };
    match path.strip_prefix(prefix) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Counts and logs a rejection (one log line each), then builds its response.
fn reject_response(
    shared: &Shared,
    ctx: &RequestCtx,
    reject: &Reject,
    production: bool,
) -> Response<ResponseBody> {
    let route = ctx.route.as_ref().map_or(NO_ROUTE_LABEL, |r| &*r.name);
    let metrics = &shared.metrics;
    let shape = reject.problem();
    if let Some(reason) = shape.rejection_reason {
        metrics.rejections.with_label_values(&[route, reason]).inc();
    }
    let upstream_error = match reject {
        Reject::Timeout => Some("timeout"),
        Reject::UpstreamConnect(_) => Some("connect"),
        Reject::UpstreamReset(_) => Some("reset"),
        _ => None,
    };
    if let Some(kind) = upstream_error {
        metrics
            .upstream_errors
            .with_label_values(&[route, kind])
            .inc();
    }
    match reject {
        Reject::Unauthorized(denied) => {
            let reason = denied.reason.as_str();
            metrics
                .auth_failures
                .with_label_values(&[route, reason])
                .inc();
            tracing::warn!(route, client_ip = %ctx.client_ip, reason, "authentication failed");
        }
        Reject::TenantMismatch => {
            tracing::warn!(route, client_ip = %ctx.client_ip, user = ctx.user.as_deref(), "tenant mismatch");
        }
        _ if shape.status.is_server_error() => {
            tracing::warn!(route, status = shape.status.as_u16(), detail = %reject.specific_detail(), "request failed");
        }
        _ => {
            tracing::info!(route, status = shape.status.as_u16(), detail = %reject.specific_detail(), "request rejected");
        }
    }
    respond::problem(reject, &ctx.request_id, production)
}

/// Response headers on every response, errors included: security headers,
/// the request ID, CORS.
fn finish_headers(
    generation: &Generation,
    ctx: &RequestCtx,
    response: &mut Response<ResponseBody>,
) {
    let policy = &generation.policy;
    let headers = response.headers_mut();
    match &ctx.route {
        Some(route) => route.security_headers.apply(headers, ctx.https),
        None => policy.security_headers.apply(headers, ctx.https),
    }
    headers.insert(policy.request_id.header.clone(), ctx.request_id.clone());
    if let Some(rate) = &ctx.rate_headers {
        rate.apply(headers);
    }
    if ctx.preflight {
        return;
    }
    if let (Some(cors_policy), Some(origin)) = (&policy.cors, &ctx.origin)
        && ctx.route.as_ref().is_none_or(|r| r.cors)
    {
        cors_policy.response_headers(origin, headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_on_segment_boundary() {
        assert_eq!(strip_prefix("/api/users", Some("/api")), "/users");
        assert_eq!(strip_prefix("/api", Some("/api")), "/");
        assert_eq!(strip_prefix("/apix/users", Some("/api")), "/apix/users");
        assert_eq!(strip_prefix("/api/users", None), "/api/users");
    }
}
