//! The in-process harness of `palisade test` and `palisade explain` (SPEC
//! §6.5): the production `pipeline::handle`, served by hyper over an
//! in-memory duplex (no listener), in front of the stub upstream of
//! `cli::stub` (200 to everything, recording what it received). Rate limits
//! run on the memory backend, whatever the policy says; each case starts
//! with full buckets ([`Harness::reset_limits`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prometheus::IntCounterVec;
use prometheus::core::Collector;

use super::stub::{Received, Stub};
use crate::config::Policy;
use crate::observe::metrics::Metrics;
use crate::policy::ratelimit::local::LimiterRegistry;
use crate::policy::ratelimit::{KeyInputs, RateLimitEngine};
use crate::proxy::conn::Activity;
use crate::proxy::generation;
use crate::proxy::pipeline::ConnInfo;
use crate::proxy::server::proxy_service;
use crate::proxy::state::{Generation, Persistent, Shared};
use crate::route::Route;

/// The client every simulated request comes from (TEST-NET-1).
pub const CLIENT_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 40000);
/// The `Host` sent when a request does not set one.
pub const DEFAULT_HOST: &str = "palisade.test";

/// One request to simulate.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The method.
    pub method: Method,
    /// The request target, sent as written.
    pub target: String,
    /// Request headers, in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request body.
    pub body: Bytes,
}

/// What happened to one request.
#[derive(Debug)]
pub struct Observed {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The response body.
    pub body: Bytes,
    /// The route that took it (`None`: refused before a route was known).
    pub route: Option<String>,
    /// The rejection or auth-failure reason, or the problem's slug.
    pub reason: Option<String>,
    /// Whether the reason is an authentication failure.
    pub auth_failed: bool,
    /// What the stub upstream received, if the request reached it.
    pub upstream: Option<Received>,
}

/// The policy behind the real pipeline, with a stub upstream.
pub struct Harness {
    shared: Arc<Shared>,
    stub: Stub,
    /// Whether the policy asked for Redis (tested with memory instead).
    pub redis_replaced: bool,
}

impl Harness {
    /// Starts the stub upstream and builds the policy's generation against it.
    pub async fn new(mut policy: Policy) -> Result<Self, String> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let stub = Stub::start()
            .await
            .map_err(|e| format!("cannot start the stub upstream: {e}"))?;
        policy = super::demo::point_at(policy, stub.addr());
        let redis_replaced = policy.ratelimit.redis.take().is_some();
        // It sends nothing anywhere: no span leaves a simulated request.
        policy.tracing.export = None;
        let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
        let persistent = Arc::new(Persistent::default());
        let first =
            generation::build(policy, &persistent, &metrics, None).map_err(|e| e.to_string())?;
        Ok(Self {
            shared: Arc::new(Shared::new(first, metrics, persistent)),
            stub,
            redis_replaced,
        })
    }

    /// The policy under test.
    pub fn policy(&self) -> Arc<Policy> {
        self.shared.current.load().policy.clone()
    }

    /// The bucket keys of `route`'s limits for these inputs.
    pub fn limit_keys(&self, route: &Route, inputs: &KeyInputs<'_>) -> Vec<String> {
        self.shared.current.load().ratelimit.keys(route, inputs)
    }

    /// Empties every rate-limit bucket (each case starts fresh).
    pub fn reset_limits(&self) {
        let current = self.shared.current.load_full();
        let registry = LimiterRegistry::default();
        let ratelimit = RateLimitEngine::new(
            current.policy.ratelimit.clone(),
            current.policy.routes.routes(),
            &registry,
            None,
        );
        self.shared.current.store(Arc::new(Generation {
            policy: current.policy.clone(),
            upstream: current.upstream.clone(),
            ratelimit,
            replay: current.replay.clone(),
            spans: None,
        }));
    }

    /// Sends one request through `pipeline::handle` and waits until the
    /// request's record is written (its metrics say route and reason).
    pub async fn send(&self, probe: &Probe) -> Result<Observed, String> {
        let Ok(request) = build_request(probe) else {
            return Ok(unparseable());
        };
        let metrics = &self.shared.metrics;
        let before = Counts::take(metrics);
        let received_before = self.stub.count();
        let (client_io, server_io) = tokio::io::duplex(256 * 1024);
        let shared = self.shared.clone();
        let server = tokio::spawn(async move {
            let activity = Activity::new();
            let info = ConnInfo::new(CLIENT_PEER, false, std::time::Duration::from_secs(60));
            let service = proxy_service(shared, info, activity);
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server_io), service)
                .await
        });
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
            .await
            .map_err(|e| format!("in-memory connection: {e}"))?;
        let client = tokio::spawn(conn);
        let response = sender.send_request(request).await;
        drop(sender);
        let (status, headers, body) = match response {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes());
                (parts.status, parts.headers, body.unwrap_or_default())
            }
            Err(e) => return Err(format!("no response: {e}")),
        };
        let _ = client.await;
        let _ = server.await;
        let after = Counts::take(metrics);
        let received = self.stub.since(received_before);
        Ok(observe(status, headers, body, &before, &after, received))
    }
}

/// The hyper request for a probe; `Host` added unless given.
fn build_request(probe: &Probe) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::builder()
        .method(probe.method.clone())
        .uri(probe.target.as_str());
    let has_host = probe.headers.iter().any(|(n, _)| n == header::HOST);
    if !has_host {
        builder = builder.header(header::HOST, DEFAULT_HOST);
    }
    for (name, value) in &probe.headers {
        builder = builder.header(name, value);
    }
    builder.body(Full::new(probe.body.clone())).map_err(|e| {
        format!(
            "{} {}: not a valid request: {e}",
            probe.method, probe.target
        )
    })
}

/// A target the HTTP library cannot parse never reaches the pipeline: in
/// production hyper answers a plain 400 and closes the connection.
fn unparseable() -> Observed {
    Observed {
        status: StatusCode::BAD_REQUEST,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        route: None,
        reason: Some("unparseable".into()),
        auth_failed: false,
        upstream: None,
    }
}

fn observe(
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    before: &Counts,
    after: &Counts,
    received: Option<Received>,
) -> Observed {
    let route = grew(&after.requests, &before.requests, "route")
        .filter(|r| r != crate::observe::metrics::NO_ROUTE_LABEL);
    let auth = grew(&after.auth, &before.auth, "reason");
    let reason = auth
        .clone()
        .or_else(|| grew(&after.rejections, &before.rejections, "reason"))
        .or_else(|| problem_slug(&headers, &body));
    Observed {
        status,
        headers,
        body,
        route,
        reason,
        auth_failed: auth.is_some(),
        upstream: received,
    }
}

/// The value of `label` on the series that grew from `then` to `now`.
fn grew(now: &Series, then: &Series, label: &str) -> Option<String> {
    now.iter()
        .find(|(labels, n)| then.get(*labels).is_none_or(|b| b < *n))
        .and_then(|(labels, _)| labels.iter().find(|(name, _)| name == label))
        .map(|(_, value)| value.clone())
}

/// The slug of a problem+json body palisade wrote (`rate-limited`, ...).
fn problem_slug(headers: &HeaderMap, body: &Bytes) -> Option<String> {
    let problem = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if !problem {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let kind = value.get("type")?.as_str()?;
    Some(kind.rsplit(':').next()?.to_string())
}

/// Counter values by their (name, value) label pairs.
type Series = std::collections::BTreeMap<Vec<(String, String)>, u64>;

/// Counter values by label set: the difference across one request says
/// which route took it and why it was refused.
struct Counts {
    requests: Series,
    rejections: Series,
    auth: Series,
}

impl Counts {
    fn take(metrics: &Metrics) -> Self {
        Self {
            requests: counts(&metrics.requests_total),
            rejections: counts(&metrics.rejections),
            auth: counts(&metrics.auth_failures),
        }
    }
}

fn counts(vec: &IntCounterVec) -> Series {
    let mut out = Series::new();
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels = metric
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            out.insert(labels, metric.get_counter().get_value() as u64);
        }
    }
    out
}
