//! The end of every request, the one place its metrics, its log lines and
//! its span are recorded: the stages only collect facts into a
//! [`RequestRecord`]; when the response body is finished (or abandoned)
//! the record counts the request, its rejection, upstream errors, retries
//! and rate-limit decisions, writes one line: the access line, which
//! carries the rejection when there is one (or, with `access_log = false`,
//! a line for the rejection alone), and, when the request's trace is
//! sampled and exported, queues its span (SPEC §6.4). Every line carries
//! `trace_id` when the request has a trace.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, StatusCode};

use super::metrics::{self, Metrics, NO_ROUTE_LABEL, RouteSeries, method_label};
use super::trace::RequestTrace;
use super::trace::export::{self, SpanFacts};
use crate::policy::auth::Identity;
use crate::policy::body::BodyProgress;
use crate::policy::ratelimit::Decisions;
use crate::route::Route;

/// The target of the access lines (JSON logs fill in their fields,
/// `observe::logging`).
pub const ACCESS_TARGET: &str = "palisade::access";

/// Keeps `palisade_requests_in_flight` right however a request ends
/// (including the client vanishing mid-handler).
struct InFlightGauge(Arc<Metrics>);

impl InFlightGauge {
    fn enter(metrics: Arc<Metrics>) -> Self {
        metrics.in_flight.inc();
        Self(metrics)
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Why palisade answered itself, as metrics and logs name it.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// `palisade_rejections_total` reason.
    pub reason: Option<&'static str>,
    /// `palisade_upstream_errors_total` kind.
    pub upstream_error: Option<&'static str>,
    /// `palisade_auth_failures_total` reason.
    pub auth_reason: Option<&'static str>,
    /// The problem's stable slug (`type` without its prefix).
    pub slug: &'static str,
    /// What failed (never a secret).
    pub detail: String,
    /// The status palisade answered with.
    pub status: StatusCode,
}

impl Rejection {
    /// The reason a span carries as `palisade.reject_reason`, as `palisade
    /// test` reads it: the auth-failure reason, else the rejection reason,
    /// else the problem's slug (`rate-limited`, `upstream-unreachable`).
    pub fn span_reason(&self) -> &'static str {
        self.auth_reason.or(self.reason).unwrap_or(self.slug)
    }

    /// Whether an operator must see it: a 401, a 403 or palisade's own 5xx.
    pub fn is_warning(&self) -> bool {
        matches!(self.status.as_u16(), 401 | 403) || self.status.is_server_error()
    }
}

/// What one request did: filled in by the stages, recorded once.
pub struct RequestRecord {
    metrics: Arc<Metrics>,
    _in_flight: InFlightGauge,
    access_log: bool,
    start: Instant,
    /// The request ID.
    pub request_id: HeaderValue,
    /// The method as received.
    pub method: Method,
    /// The canonical path (the raw one when refused before it existed).
    pub path: String,
    /// The matched route's name.
    pub route: Option<Arc<str>>,
    /// The route's metric series (with `route`).
    series: Option<Arc<RouteSeries>>,
    /// The status sent.
    pub status: StatusCode,
    /// Time until the upstream's response headers.
    pub upstream_time: Option<Duration>,
    /// Retries of the upstream exchange.
    pub retries: u32,
    /// Client IP after `trusted_proxies`.
    pub client_ip: IpAddr,
    /// Who the request proved to be: its `sub` is the log's `user`, read
    /// only when a line is written (kept, not copied, per request).
    pub user: Identity,
    /// Request-body bytes in.
    pub body_in: Arc<BodyProgress>,
    /// Set when palisade answered itself.
    pub rejection: Option<Rejection>,
    /// What each rate limit decided.
    pub rate_decisions: Decisions,
    /// The rate-limit backend failed.
    pub rate_backend_failed: bool,
    /// The request's trace (`[tracing]` on), and the span being recorded.
    pub trace: Option<Box<RequestTrace>>,
}

impl RequestRecord {
    /// Starts the record of a request that began at `start` (counted in
    /// flight from now), on the heap where the request's context keeps it. Written into the
    /// allocation, not moved there: `Box::new(begin(..))` built the record
    /// on the stack and copied its 408 bytes.
    #[inline(always)]
    pub fn begin(
        metrics: Arc<Metrics>,
        access_log: bool,
        request_id: HeaderValue,
        method: Method,
        client_ip: IpAddr,
        start: Instant,
    ) -> Box<Self> {
        Box::write(
            Box::new_uninit(),
            Self {
                _in_flight: InFlightGauge::enter(metrics.clone()),
                metrics,
                access_log,
                start,
                request_id,
                method,
                path: String::new(),
                route: None,
                series: None,
                status: StatusCode::OK,
                upstream_time: None,
                retries: 0,
                client_ip,
                user: Identity::Anonymous,
                body_in: Arc::new(BodyProgress::default()),
                rejection: None,
                rate_decisions: Decisions::new(),
                rate_backend_failed: false,
                trace: None,
            },
        )
    }

    /// The request is for `route`: its name labels the metrics and the
    /// line, and its series (looked up on the route's first request) take
    /// the counts.
    pub fn set_route(&mut self, route: &Route) {
        self.route = Some(route.name.clone());
        let series = route.series.get_or_init(|| {
            Arc::new(RouteSeries::new(
                &self.metrics,
                &route.name,
                route.rate_limits.len(),
            ))
        });
        // A route of another server's policy (tests run several servers in
        // one process) keeps to the labelled lookup.
        self.series = series.belongs_to(&self.metrics).then(|| series.clone());
    }

    /// Records the request's metrics, writes its line, queues its span.
    /// Returns when it ended (the connection's idle time starts there).
    /// Takes the record boxed, as the response body holds it: by value it
    /// was copied out of its box first (408 bytes a request).
    pub fn finish(mut self: Box<Self>, bytes_out: u64) -> Instant {
        let ended = Instant::now();
        let elapsed = ended.saturating_duration_since(self.start);
        self.record_metrics(elapsed);
        self.log(elapsed, bytes_out);
        if let Some(trace) = self.trace.as_deref_mut() {
            let facts = SpanFacts {
                method: &self.method,
                path: &self.path,
                route: self.route.as_ref(),
                status: self.status,
                client_ip: self.client_ip,
                request_id: self.request_id.to_str().unwrap_or(""),
                reject_reason: self.rejection.as_ref().map(Rejection::span_reason),
                elapsed,
            };
            export::finish(trace, &facts);
        }
        ended
    }

    fn record_metrics(&self, elapsed: Duration) {
        let metrics = &self.metrics;
        let route = self.route.as_deref().unwrap_or(NO_ROUTE_LABEL);
        match &self.series {
            Some(series) => {
                series.count_request(metrics, route, &self.method, self.status);
                series.request_duration.observe(elapsed.as_secs_f64());
                if let Some(time) = self.upstream_time {
                    series.upstream_duration.observe(time.as_secs_f64());
                }
            }
            None => {
                let labels = [route, method_label(&self.method), self.status.as_str()];
                metrics.requests_total.with_label_values(&labels).inc();
                metrics
                    .request_duration
                    .with_label_values(&[route])
                    .observe(elapsed.as_secs_f64());
            }
        }
        if self.retries > 0 {
            metrics
                .upstream_retries
                .with_label_values(&[route])
                .inc_by(u64::from(self.retries));
        }
        for decision in &self.rate_decisions {
            match &self.series {
                Some(series) => series.count_decision(metrics, route, decision),
                None => metrics::count_decision(metrics, route, decision),
            }
        }
        if self.rate_backend_failed {
            metrics
                .ratelimit_backend_errors
                .with_label_values(&["redis"])
                .inc();
        }
        let Some(rejection) = &self.rejection else {
            return;
        };
        if let Some(reason) = rejection.reason {
            metrics.rejections.with_label_values(&[route, reason]).inc();
        }
        if let Some(kind) = rejection.upstream_error {
            metrics
                .upstream_errors
                .with_label_values(&[route, kind])
                .inc();
        }
        if let Some(reason) = rejection.auth_reason {
            metrics
                .auth_failures
                .with_label_values(&[route, reason])
                .inc();
        }
    }

    fn log(&self, elapsed: Duration, bytes_out: u64) {
        let route = self.route.as_deref().unwrap_or(NO_ROUTE_LABEL);
        let request_id = self.request_id.to_str().unwrap_or("");
        let trace_hex = self.trace.as_ref().map(|t| t.trace_id.hex());
        let trace_id = trace_hex.as_ref().map(|h| h.as_str());
        let rejection = self.rejection.as_ref();
        if self.access_log {
            // A refusal an operator must see (401, 403, palisade's own 5xx)
            // is a warning; everything else is information.
            macro_rules! access_line {
                ($level:ident) => {
                    tracing::$level!(
                        target: ACCESS_TARGET,
                        request_id,
                        trace_id,
                        method = self.method.as_str(),
                        path = self.path.as_str(),
                        route,
                        status = self.status.as_u16(),
                        duration_ms = elapsed.as_secs_f64() * 1000.0,
                        upstream_ms = self.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
                        client_ip = %self.client_ip,
                        user = self.user.subject(),
                        bytes_in = self.body_in.bytes.load(Ordering::Relaxed),
                        bytes_out,
                        problem = rejection.map(|r| r.slug),
                        reason = rejection.and_then(|r| r.auth_reason.or(r.reason)),
                        detail = rejection.map(|r| r.detail.as_str()),
                        "access"
                    )
                };
            }
            if rejection.is_some_and(Rejection::is_warning) {
                access_line!(warn);
            } else {
                access_line!(info);
            }
            return;
        }
        let Some(rejection) = rejection else { return };
        let status = self.status.as_u16();
        let detail = rejection.detail.as_str();
        let client_ip = &self.client_ip;
        match rejection.slug {
            _ if !rejection.is_warning() => {
                tracing::info!(
                    request_id,
                    trace_id,
                    route,
                    status,
                    detail,
                    "request rejected"
                );
            }
            "unauthorized" => {
                let reason = rejection.auth_reason;
                tracing::warn!(request_id, trace_id, route, %client_ip, reason, "authentication failed");
            }
            "forbidden" => {
                let user = self.user.subject();
                tracing::warn!(request_id, trace_id, route, %client_ip, user, "tenant mismatch");
            }
            _ => tracing::warn!(
                request_id,
                trace_id,
                route,
                status,
                detail,
                "request failed"
            ),
        }
    }
}
