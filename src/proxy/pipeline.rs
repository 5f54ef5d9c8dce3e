//! `handle`: the one function to read. It takes one policy snapshot and runs
//! every stage in SPEC §3 order with early returns:
//!
//! request ID (and trace context) → identity-header stripping (with the client-header cleanup:
//! `Connection`-named headers, cookie lines, headers only a trusted proxy
//! may send) → URI and header limits → `Host`, transfer coding and method
//! spelling → path sanitization → route match → CORS preflight → client-IP lists →
//! (signed-webhook routes: the body held up to `max_body`) →
//! authentication (then `require_claims`) → tenant check → rate limits →
//! body limit (streamed) → upstream (timeout, retry, circuit breaker) →
//! response headers (security, request ID, rate-limit, CORS) → access log
//! and metrics (once, when the response ends).
//!
//! Each stage's body lives in its policy module; here is one call each. It
//! never returns `Err` to hyper (that would abort the connection).
//!
//! `handle`, `process` and the upstream exchange under them are written as
//! functions returning an `async move` block, not as `async fn`: an
//! `async fn` keeps each argument twice in its future (the argument, and
//! the local it is moved into), and each level's future is copied into its
//! parent's. `handle`'s future went from 7,888 to 5,344 bytes with that and
//! hyper's upstream exchange boxed (`-Zprint-type-sizes`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header;
use http::{HeaderValue, Method, Request, Response, StatusCode};

use super::conn::ConnRequestGuard;
use super::ctx::RequestCtx;
use super::held;
use super::reject::Reject;
use super::respond;
use super::response_body::ResponseBody;
use super::state::{Generation, Shared};
use super::upstream::{ExchangeSettings, ForwardTarget};
use crate::config::Policy;
use crate::observe::access::{Rejection, RequestRecord};
use crate::observe::trace;
use crate::policy::auth::Signed;
use crate::policy::body::RequestBody;
use crate::policy::ratelimit::{self, KeyInputs};
use crate::policy::response_headers::ResponseHeaders;
use crate::policy::{
    cors, forward, head, identity, ip_list, limits, require_claims, sanitize, tenant,
};
use crate::route::{Lookup, Params, Route};

/// The connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// TCP peer.
    pub peer: SocketAddr,
    /// The peer's address as header text (`X-Forwarded-For`), written once
    /// per connection instead of once per request.
    pub peer_text: HeaderValue,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// `server.idle_timeout` when the connection was accepted (a WebSocket
    /// tunnel made from it obeys it).
    pub idle_timeout: std::time::Duration,
    /// Its responses are written by hyper's server, which writes a header
    /// map alone: every header goes into the map before the response is
    /// handed over (palisade's engine writes them where they are,
    /// `policy::response_headers`). Done here, not by wrapping this
    /// future in another: that copied the whole request future once more.
    pub one_header_map: bool,
}

impl ConnInfo {
    /// A connection from `peer`.
    pub fn new(peer: SocketAddr, tls: bool, idle_timeout: std::time::Duration) -> Self {
        Self {
            peer,
            peer_text: forward::ip_header_value(peer.ip()),
            tls,
            idle_timeout,
            one_header_map: false,
        }
    }
}

/// Serves one request.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps each argument twice in its future; see proxy::pipeline"
)]
fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    in_flight_on_conn: ConnRequestGuard,
    mut req: Request<RequestBody>,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> {
    async move {
        let generation = shared.current.load_full();
        let policy = &generation.policy;
        let chunked_body = chunked_from_connection(&req);
        // Refused in the head checks; hyper's HTTP/1 server then reads no
        // further request on the connection (it waits for a tunnel), so
        // it is closed instead of left hanging until `idle_timeout`.
        let connect = req.method() == Method::CONNECT;
        let start = in_flight_on_conn
            .arrived()
            .unwrap_or_else(std::time::Instant::now);

        let request_id = policy.request_id.resolve(req.headers());
        let trusted = &policy.server.trusted_proxies;
        let peer_trusted = !trusted.is_empty() && forward::is_trusted(conn.peer.ip(), trusted);
        let client_ip = forward::client_ip(conn.peer.ip(), req.headers(), trusted);
        let https = forward::client_is_https(conn.tls, peer_trusted, req.headers());
        let mut ctx = RequestCtx {
            route: None,
            peer: conn.peer.ip(),
            peer_trusted,
            https,
            origin: req.headers().get(header::ORIGIN).cloned(),
            preflight: false,
            rate_headers: None,
            record: RequestRecord::begin(
                shared.metrics.clone(),
                policy.log.access_log,
                request_id,
                req.method().clone(),
                client_ip,
                start,
            ),
        };
        if chunked_body {
            ctx.record.body_in.chunked.store(true, Ordering::Relaxed);
        }
        // Before the client's headers are cleaned: its `traceparent` is read here.
        ctx.record.trace = trace::start(
            &policy.tracing,
            generation.spans.as_ref(),
            req.headers(),
            https,
        );
        let request_id = ctx.record.request_id.to_str().unwrap_or("");
        let span = match ctx.record.trace.as_deref() {
            None => tracing::info_span!("request", request_id),
            Some(t) => {
                tracing::info_span!("request", request_id, trace_id = t.trace_id.hex().as_str())
            }
        };

        // Polled in place inside the span, not wrapped in `Instrumented`:
        // the wrapper is another copy of this large future per request.
        let outcome = {
            let mut processing = std::pin::pin!(process(
                &generation,
                &mut ctx,
                &mut req,
                (&conn, &in_flight_on_conn)
            ));
            std::future::poll_fn(|cx| span.in_scope(|| processing.as_mut().poll(cx))).await
        };
        let mut response = outcome.unwrap_or_else(|reject| {
            ctx.record.rejection = Some(rejection(&reject));
            respond::problem(&reject, &ctx.record.request_id, policy.server.production)
        });
        // Finished in place: taken apart and put together again, the
        // response (440 bytes) was copied twice more per request. Its
        // header map is lent out while the body's pending headers are
        // edited beside it (taking an empty map allocates nothing).
        let mut headers = std::mem::take(response.headers_mut());
        let body = response.body_mut();
        if ctx.record.method == Method::HEAD {
            body.drop_local_content();
        }
        let edited = if conn.one_header_map {
            ResponseHeaders::in_one_map(&mut headers, body.pending_headers_mut())
        } else {
            ResponseHeaders::new(&mut headers, body.pending_headers_mut())
        };
        finish_headers(policy, &ctx, edited);
        if connect || (chunked_body && !ctx.record.body_in.ended_cleanly()) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        *response.headers_mut() = headers;
        let mut record = ctx.record;
        record.status = response.status();
        response.body_mut().set_record(record, in_flight_on_conn);
        Ok(response)
    }
}

/// Whether hyper reads this request's body from an HTTP/1 connection in
/// chunks, after which the next request starts where hyper says the body
/// ended. Such a connection serves no further request unless the body was
/// read to its last chunk with no trailer section after it
/// ([`BodyProgress::ended_cleanly`]): hyper ends a trailer section only at
/// CRLF CRLF (and its drain of a body left unread reads through one),
/// where other readers end it at a bare LF, so a request a front proxy
/// pipelined after one could vanish into it, and the responses on the
/// connection would no longer match its requests. (A `Content-Length` body
/// ends where its length says, on every reader.) The body's kind is looked
/// at first: palisade's engine never hands on a chunked body, so most
/// requests need no header lookup.
///
/// [`BodyProgress::ended_cleanly`]: crate::policy::body::BodyProgress::ended_cleanly
fn chunked_from_connection(req: &Request<RequestBody>) -> bool {
    matches!(req.body(), RequestBody::Hyper(body) if !http_body::Body::is_end_stream(body))
        && req.version() <= http::Version::HTTP_11
        && req.headers().contains_key(header::TRANSFER_ENCODING)
}

/// [`handle`]'s future on the heap, where each engine keeps it (inline, it
/// would be part of every idle connection's state). Written into the
/// allocation, not moved there: `Box::pin(handle(..))` built the future
/// on the stack and copied all of its bytes into the box, 6,032 of them
/// (`-Zprint-type-sizes`), most for states it had not reached (callgrind, plain GET:
/// 29,295 -> 28,733 instructions, and the largest copy in a real-time
/// profile).
#[inline(always)]
pub fn handle_boxed(
    shared: Arc<Shared>,
    conn: ConnInfo,
    in_flight_on_conn: ConnRequestGuard,
    req: Request<RequestBody>,
) -> std::pin::Pin<Box<impl Future<Output = Result<Response<ResponseBody>, Infallible>>>> {
    Box::into_pin(Box::write(
        Box::new_uninit(),
        handle(shared, conn, in_flight_on_conn, req),
    ))
}

/// The request-side stages, in SPEC §3 order. `Err` is palisade's own answer.
/// The request is lent, here and to the upstream exchange, which takes
/// its parts out of it: moved into each stage's future, it was copied
/// once per stage.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps each argument twice in its future; see proxy::pipeline"
)]
fn process(
    generation: &Generation,
    ctx: &mut RequestCtx,
    req: &mut Request<RequestBody>,
    (conn, connection): (&ConnInfo, &ConnRequestGuard),
) -> impl Future<Output = Result<Response<ResponseBody>, Reject>> {
    async move {
        let policy = &generation.policy;
        let presented = identity::strip_client_headers(policy, req.headers_mut(), ctx.peer_trusted);
        ctx.record.path = match check_head(policy, req) {
            Ok(canonical) => canonical,
            Err(reject) => {
                // Refused before its canonical path existed: the record
                // keeps the path as sent.
                ctx.record.path = req.uri().path().to_string();
                return Err(reject);
            }
        };

        let (route, params) = match match_route(policy, req, &ctx.record.path)? {
            Matched::Preflight(route) => return Ok(answer_preflight(policy, ctx, &route)),
            Matched::Request(route, params) => (route, params),
        };
        ctx.set_route(&route);
        ip_list::check(&route.ips, ctx.record.client_ip)?;

        // A held body is read within the route's timeout, and what its
        // reading took comes off the upstream's: the timeout is one total
        // deadline (SPEC §3), and the deadline header says what is left.
        let holding_since = route.auth.accepts_hmac().then(std::time::Instant::now);
        let held = match holding_since {
            Some(_) => Some(held::hold_body(req, &route, &ctx.record.body_in).await?),
            None => None,
        };
        let signed = held.as_deref().map(|body| Signed {
            body,
            replay: &generation.replay,
        });
        let verified = identity::verify(policy, &route, req.headers(), &presented, signed).await?;
        ctx.record.user = verified.identity.clone();
        require_claims::check(&route.require_claims, &verified.identity)?;
        tenant::check(route.tenant.as_ref(), &params, &verified.identity)?;
        if !route.rate_limits.is_empty() {
            ratelimit::check_key_headers(&route, req.headers())?;
            let inputs = KeyInputs {
                client_ip: ctx.record.client_ip,
                client_ip_text: (ctx.record.client_ip == conn.peer.ip())
                    .then(|| conn.peer_text.to_str().ok())
                    .flatten(),
                identity: &verified.identity,
                headers: req.headers(),
            };
            let outcome = generation.ratelimit.check(&route, &inputs).await;
            ctx.rate_headers = outcome.headers;
            ctx.record.rate_decisions = outcome.decisions;
            ctx.record.rate_backend_failed = outcome.backend_failed;
            outcome.verdict.admit()?;
        }
        limits::check_declared_body(req.headers(), route.max_body)?;

        let target = ForwardTarget {
            path: strip_prefix(&ctx.record.path, route.strip_prefix.as_deref()),
            peer: &conn.peer_text,
            peer_trusted: ctx.peer_trusted,
            https: ctx.https,
            request_id: (&policy.request_id.header, &ctx.record.request_id),
            identity: verified.headers.as_ref(),
            trace: ctx.record.trace.as_ref().and_then(|t| t.outgoing.as_ref()),
            connection: (connection, conn.idle_timeout),
        };
        let settings = ExchangeSettings {
            retry: route.retry,
            max_body: route.max_body,
            deadline: holding_since.map_or(route.timeout, |since| {
                route.timeout.saturating_sub(since.elapsed())
            }),
        };
        let body = ctx.record.body_in.clone();
        let mut retries = 0;
        // Inline, not boxed: `handle`'s future is boxed once per request by
        // whichever engine serves it, and a second box here cost an allocation
        // and a copy of this future (about 5 KiB) per request (callgrind, plain
        // GET: 35,428 -> 34,943 instructions without it).
        let exchange = generation
            .upstream
            .send(req, held, &target, settings, body, &mut retries)
            .await;
        ctx.record.retries = retries;
        let exchange = exchange?;
        ctx.record.upstream_time = Some(exchange.elapsed);
        Ok(exchange.response.map(ResponseBody::upstream))
    }
}

/// The head's limits and spelling (URI and header sizes, `Host`, one
/// `chunked` coding at most, method, no method override), then the
/// canonical path routes are matched on.
fn check_head(policy: &Policy, req: &Request<RequestBody>) -> Result<String, Reject> {
    let server = &policy.server;
    if let Some(oversized) = req.extensions().get::<limits::OversizedHead>() {
        return Err(oversized.broken(server.max_uri_bytes).into());
    }
    limits::check_head(
        req.uri(),
        req.headers(),
        server.max_uri_bytes,
        server.max_header_bytes,
    )?;
    head::check_host(req.version(), req.uri(), req.headers())?;
    head::check_transfer_coding(req.headers())?;
    head::check_field_values(req.version(), req.headers())?;
    head::check_method(req.method(), policy.routes.known_methods())?;
    head::check_method_override(req.uri().query())?;
    Ok(sanitize::route_path(
        req.method(),
        req.uri().path(),
        &policy.routes,
    )?)
}

/// The route a request is for: a CORS preflight is matched with the method
/// the browser intends to use, everything else with its own.
enum Matched {
    /// A preflight palisade answers (the route has `cors` on).
    Preflight(Arc<Route>),
    /// A request for this route.
    Request(Arc<Route>, Params),
}

/// Route match (404, 405) and the preflight decision, with one lookup on
/// every request but an `OPTIONS` preflight for a route without CORS.
fn match_route(policy: &Policy, req: &Request<RequestBody>, path: &str) -> Result<Matched, Reject> {
    let preflight = match &policy.cors {
        Some(_) if req.headers().contains_key(header::ORIGIN) => cors::preflight_method(req),
        _ => None,
    };
    if let Some(intended) = &preflight
        && let Lookup::Found(route, _) = policy.routes.lookup(intended, path)
        && route.cors
    {
        return Ok(Matched::Preflight(route));
    }
    match policy.routes.lookup(req.method(), path) {
        Lookup::Found(route, params) => Ok(Matched::Request(route, params)),
        Lookup::MethodNotAllowed(allow) => Err(Reject::MethodNotAllowed(allow)),
        Lookup::NotFound => Err(Reject::NoRoute),
    }
}

/// The CORS preflight answer: 204, no authentication, no upstream.
fn answer_preflight(
    policy: &Policy,
    ctx: &mut RequestCtx,
    route: &Arc<Route>,
) -> Response<ResponseBody> {
    ctx.set_route(route);
    ctx.preflight = true;
    let mut response = respond::empty(StatusCode::NO_CONTENT);
    if let (Some(cors_policy), Some(origin)) = (&policy.cors, &ctx.origin) {
        cors_policy.preflight_headers(origin, response.headers_mut());
    }
    response
}

/// What the record keeps of a rejection (its labels and detail).
fn rejection(reject: &Reject) -> Rejection {
    let description = reject.describe();
    Rejection {
        reason: description.rejection_reason,
        upstream_error: description.upstream_error,
        auth_reason: description.auth_reason,
        slug: description.slug,
        detail: reject.specific_detail(),
        status: description.status,
    }
}

/// The path the upstream receives: the canonical path minus `strip_prefix`
/// (whole segments), each segment compared as routes compare them
/// (`route::pattern`: any ASCII case, an escape of a character a path
/// holds raw equal to it): `/V1/x` and `/%40api/x` took the `/v1/**` and
/// `/@api/**` routes, so they lose `/V1` and `/%40api`.
fn strip_prefix<'a>(path: &'a str, prefix: Option<&str>) -> &'a str {
    let Some(prefix) = prefix else { return path };
    let mut rest = path;
    for wanted in prefix.split('/').skip(1) {
        let Some(after) = rest.strip_prefix('/') else {
            return path;
        };
        let end = after.find('/').unwrap_or(after.len());
        if !crate::route::pattern::literal_eq(&after[..end], wanted) {
            return path;
        }
        rest = &after[end..];
    }
    if rest.is_empty() { "/" } else { rest }
}

/// Response headers on every response, errors included: security headers,
/// the request ID, rate-limit headers, CORS (over the upstream's lines
/// when the exchange kept them as bytes: `policy::response_headers`).
fn finish_headers(policy: &Policy, ctx: &RequestCtx, mut headers: ResponseHeaders<'_>) {
    // CORS is palisade's on this response (a preflight was answered whole).
    let cors_policy = policy
        .cors
        .as_ref()
        .filter(|_| !ctx.preflight && ctx.route.as_ref().is_none_or(|r| r.cors));
    let cors = cors_policy.is_some() && ctx.origin.is_some();
    // Room, made once, for what is set one by one below: the request ID
    // and up to four CORS headers (`Vary`, and an answer not made as a
    // block). The security, rate-limit and CORS answers are blocks.
    headers.reserve(1 + if cors { 4 } else { 0 });
    let security = ctx
        .route
        .as_ref()
        .map_or(&policy.security_headers, |route| &route.security_headers);
    // palisade's own answers (a refusal, a preflight) keep what they carry.
    let from_upstream = ctx.record.rejection.is_none() && !ctx.preflight;
    security.apply(&mut headers, ctx.https, from_upstream);
    headers.insert(
        policy.request_id.header.clone(),
        ctx.record.request_id.clone(),
    );
    if let Some(rate) = &ctx.rate_headers {
        rate.apply(&mut headers);
    }
    if let Some(cors_policy) = cors_policy {
        match &ctx.origin {
            Some(origin) => cors_policy.response_headers(origin, &mut headers),
            None => cors_policy.without_origin(&mut headers),
        }
    }
    headers.finish();
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
        // In any case, as the route matched it.
        assert_eq!(strip_prefix("/API/users", Some("/api")), "/users");
        assert_eq!(strip_prefix("/Api", Some("/api")), "/");
        assert_eq!(strip_prefix("/APIx/users", Some("/api")), "/APIx/users");
        assert_eq!(strip_prefix("/ap", Some("/api")), "/ap");
        assert_eq!(strip_prefix("/caf%C3%A9/x", Some("/CAF%c3%a9")), "/x");
        // Escapes of characters a path holds raw, as routes match them
        // (the prefix is in match form: `@` raw).
        assert_eq!(strip_prefix("/%40api/x", Some("/@api")), "/x");
        assert_eq!(strip_prefix("/@api/x", Some("/@api")), "/x");
        assert_eq!(strip_prefix("/%40apix/x", Some("/@api")), "/%40apix/x");
        assert_eq!(strip_prefix("/v1/%40api/", Some("/v1/@api")), "/");
        assert_eq!(strip_prefix("/v1", Some("/v1/@api")), "/v1");
    }
}
