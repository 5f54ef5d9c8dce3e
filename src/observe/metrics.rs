//! Every metric of SPEC §4, in a registry owned by one server (never the
//! process-global one), so parallel tests and several servers in one process
//! never collide. Labels are bounded: route *names*, never raw paths.

use crate::policy::ratelimit::RateDecision;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Metric names, one constant each (dashboards depend on them).
pub mod names {
    pub const REQUESTS_TOTAL: &str = "palisade_requests_total";
    pub const REQUEST_DURATION: &str = "palisade_request_duration_seconds";
    pub const UPSTREAM_DURATION: &str = "palisade_upstream_duration_seconds";
    pub const IN_FLIGHT: &str = "palisade_requests_in_flight";
    pub const AUTH_FAILURES: &str = "palisade_auth_failures_total";
    pub const RATELIMIT_DECISIONS: &str = "palisade_ratelimit_decisions_total";
    pub const RATELIMIT_BACKEND_ERRORS: &str = "palisade_ratelimit_backend_errors_total";
    pub const REJECTIONS: &str = "palisade_rejections_total";
    pub const UPSTREAM_ERRORS: &str = "palisade_upstream_errors_total";
    pub const UPSTREAM_RETRIES: &str = "palisade_upstream_retries_total";
    pub const CIRCUIT_STATE: &str = "palisade_circuit_state";
    pub const CONFIG_RELOADS: &str = "palisade_config_reloads_total";
    pub const CONFIG_LAST_RELOAD: &str = "palisade_config_last_reload_success_timestamp_seconds";
    pub const BUILD_INFO: &str = "palisade_build_info";
    /// SPEC §6.4: spans lost (queue full, or their export failed).
    pub const TRACE_SPANS_DROPPED: &str = "palisade_trace_spans_dropped_total";
    /// Every name above (tests refuse to look up any other).
    pub const ALL: [&str; 15] = [
        REQUESTS_TOTAL,
        REQUEST_DURATION,
        UPSTREAM_DURATION,
        IN_FLIGHT,
        AUTH_FAILURES,
        RATELIMIT_DECISIONS,
        RATELIMIT_BACKEND_ERRORS,
        REJECTIONS,
        UPSTREAM_ERRORS,
        UPSTREAM_RETRIES,
        CIRCUIT_STATE,
        CONFIG_RELOADS,
        CONFIG_LAST_RELOAD,
        BUILD_INFO,
        TRACE_SPANS_DROPPED,
    ];
}

/// The route label used before a route is known (400, 404, 405, 414, 431).
pub const NO_ROUTE_LABEL: &str = "-";

/// All of palisade's metrics.
pub struct Metrics {
    registry: Registry,
    /// `route, method, status`.
    pub requests_total: IntCounterVec,
    /// `route`.
    pub request_duration: HistogramVec,
    /// `route`.
    pub upstream_duration: HistogramVec,
    /// Requests being served now.
    pub in_flight: IntGauge,
    /// `route, reason`.
    pub auth_failures: IntCounterVec,
    /// `route, by, decision, mode`.
    pub ratelimit_decisions: IntCounterVec,
    /// `backend`.
    pub ratelimit_backend_errors: IntCounterVec,
    /// `route, reason`.
    pub rejections: IntCounterVec,
    /// `route, kind`.
    pub upstream_errors: IntCounterVec,
    /// `route`.
    pub upstream_retries: IntCounterVec,
    /// `upstream`: 0 closed, 1 half-open, 2 open.
    pub circuit_state: IntGaugeVec,
    /// `result`.
    pub config_reloads: IntCounterVec,
    /// Unix time of the last successful load.
    pub config_last_reload: Gauge,
    /// Spans that never reached the collector (SPEC §6.4).
    pub trace_spans_dropped: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn histogram(registry: &Registry, name: &str, help: &str) -> prometheus::Result<HistogramVec> {
    let buckets = vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0,
    ];
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["route"])?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Self> {
        use names::*;
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let in_flight = IntGauge::new(IN_FLIGHT, "Requests being served now")?;
        registry.register(Box::new(in_flight.clone()))?;
        let circuit_state = IntGaugeVec::new(
            Opts::new(
                CIRCUIT_STATE,
                "Upstream circuit breaker: 0 closed, 1 half-open, 2 open",
            ),
            &["upstream"],
        )?;
        registry.register(Box::new(circuit_state.clone()))?;
        let config_last_reload = Gauge::new(
            CONFIG_LAST_RELOAD,
            "Unix time of the last successful config load",
        )?;
        registry.register(Box::new(config_last_reload.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "palisade build information"),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let trace_spans_dropped = IntCounter::new(
            TRACE_SPANS_DROPPED,
            "Spans dropped: the export queue was full or their export failed",
        )?;
        registry.register(Box::new(trace_spans_dropped.clone()))?;
        let metrics = Self {
            requests_total: counter(
                &registry,
                REQUESTS_TOTAL,
                "Requests answered",
                &["route", "method", "status"],
            )?,
            request_duration: histogram(
                &registry,
                REQUEST_DURATION,
                "Time from request to end of response",
            )?,
            upstream_duration: histogram(
                &registry,
                UPSTREAM_DURATION,
                "Time until the upstream's response headers",
            )?,
            in_flight,
            auth_failures: counter(
                &registry,
                AUTH_FAILURES,
                "Authentication failures",
                &["route", "reason"],
            )?,
            ratelimit_decisions: counter(
                &registry,
                RATELIMIT_DECISIONS,
                "Rate-limit decisions",
                &["route", "by", "decision", "mode"],
            )?,
            ratelimit_backend_errors: counter(
                &registry,
                RATELIMIT_BACKEND_ERRORS,
                "Rate-limit backend errors",
                &["backend"],
            )?,
            rejections: counter(
                &registry,
                REJECTIONS,
                "Requests rejected by policy",
                &["route", "reason"],
            )?,
            upstream_errors: counter(
                &registry,
                UPSTREAM_ERRORS,
                "Failed upstream exchanges",
                &["route", "kind"],
            )?,
            upstream_retries: counter(&registry, UPSTREAM_RETRIES, "Upstream retries", &["route"])?,
            circuit_state,
            config_reloads: counter(&registry, CONFIG_RELOADS, "Config reloads", &["result"])?,
            config_last_reload,
            trace_spans_dropped,
            registry,
        };
        metrics.zero_known_series();
        Ok(metrics)
    }

    /// Shows at 0, from start-up, each series whose labels are known before
    /// anything happens, as Prometheus advises: a counter first created by
    /// its first event is absent from every scrape before it, so a dashboard
    /// or an alert on `increase()` misses that first event, and a scrape
    /// cannot tell "no reload failed" from "not exported".
    fn zero_known_series(&self) {
        for result in ["success", "failure"] {
            self.config_reloads.with_label_values(&[result]);
        }
        self.ratelimit_backend_errors.with_label_values(&["redis"]);
    }

    /// Records a successful config load now.
    pub fn mark_config_loaded(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.config_last_reload.set(now);
    }

    /// The Prometheus text exposition and its content type.
    pub fn render(&self) -> (Vec<u8>, String) {
        let encoder = TextEncoder::new();
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        (buf, encoder.format_type().to_string())
    }
}

/// The bounded `method` labels: standard methods as-is, anything else
/// `OTHER` (the last).
const METHOD_LABELS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

/// The position of `method`'s label in [`METHOD_LABELS`].
fn method_index(method: &http::Method) -> usize {
    use http::Method as M;
    match *method {
        M::GET => 0,
        M::POST => 1,
        M::PUT => 2,
        M::DELETE => 3,
        M::PATCH => 4,
        M::HEAD => 5,
        M::OPTIONS => 6,
        M::CONNECT => 7,
        M::TRACE => 8,
        _ => 9,
    }
}

/// A bounded `method` label: standard methods as-is, anything else `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    METHOD_LABELS[method_index(method)]
}

/// Counts one limit's decision in `palisade_ratelimit_decisions_total`
/// by its labels (a request without its route's cached series).
pub fn count_decision(metrics: &Metrics, route: &str, decision: &RateDecision) {
    metrics
        .ratelimit_decisions
        .with_label_values(&decision_labels(route, decision))
        .inc();
}

/// `{route, by, verdict, mode}` of a decision.
fn decision_labels<'a>(route: &'a str, decision: &'a RateDecision) -> [&'a str; 4] {
    let verdict = if decision.allowed { "allow" } else { "deny" };
    let mode = if decision.shadow { "shadow" } else { "enforce" };
    [route, &decision.by, verdict, mode]
}

/// The series every request to one route records, looked up once per
/// route instead of on every request (`with_label_values` hashes its
/// labels and takes a lock). Requests answered 200 are counted here too,
/// by method; a series appears in `/metrics` only once it was used.
#[derive(Debug)]
pub struct RouteSeries {
    /// `palisade_request_duration_seconds{route}`.
    pub request_duration: Histogram,
    /// `palisade_upstream_duration_seconds{route}`.
    pub upstream_duration: Histogram,
    /// `palisade_requests_total{route, method, status="200"}` by method.
    ok_by_method: [std::sync::OnceLock<IntCounter>; METHOD_LABELS.len()],
    /// `palisade_ratelimit_decisions_total{route, by, verdict, mode}` by the
    /// limit's position in `rate_limits`, then denied (0) or allowed (1):
    /// a limit's `by` and mode are fixed, whichever tier decided.
    decisions: Vec<[std::sync::OnceLock<IntCounter>; 2]>,
    /// The metrics these series belong to: a route shared by two servers'
    /// policies records into its own server's only. Held weakly, which
    /// also keeps the address from being reused by another server's.
    owner: std::sync::Weak<Metrics>,
}

impl RouteSeries {
    /// The series of the route named `route`, which has `limits` rate limits.
    pub fn new(metrics: &std::sync::Arc<Metrics>, route: &str, limits: usize) -> Self {
        Self {
            request_duration: metrics.request_duration.with_label_values(&[route]),
            upstream_duration: metrics.upstream_duration.with_label_values(&[route]),
            ok_by_method: Default::default(),
            decisions: (0..limits).map(|_| Default::default()).collect(),
            owner: std::sync::Arc::downgrade(metrics),
        }
    }

    /// Whether these are `metrics`' series.
    pub fn belongs_to(&self, metrics: &std::sync::Arc<Metrics>) -> bool {
        std::ptr::eq(self.owner.as_ptr(), std::sync::Arc::as_ptr(metrics))
    }

    /// Counts one limit's decision in `palisade_ratelimit_decisions_total`.
    pub fn count_decision(&self, metrics: &Metrics, route: &str, decision: &RateDecision) {
        match self.decisions.get(decision.index) {
            Some(series) => series[usize::from(decision.allowed)]
                .get_or_init(|| {
                    metrics
                        .ratelimit_decisions
                        .with_label_values(&decision_labels(route, decision))
                })
                .inc(),
            None => count_decision(metrics, route, decision),
        }
    }

    /// Counts one request in `palisade_requests_total`.
    pub fn count_request(
        &self,
        metrics: &Metrics,
        route: &str,
        method: &http::Method,
        status: http::StatusCode,
    ) {
        let method = method_index(method);
        if status != http::StatusCode::OK {
            let labels = [route, METHOD_LABELS[method], status.as_str()];
            metrics.requests_total.with_label_values(&labels).inc();
            return;
        }
        self.ok_by_method[method]
            .get_or_init(|| {
                let labels = [route, METHOD_LABELS[method], "200"];
                metrics.requests_total.with_label_values(&labels)
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_series_count_into_their_own_registry() {
        let mine = std::sync::Arc::new(Metrics::new().unwrap());
        let other = std::sync::Arc::new(Metrics::new().unwrap());
        let series = RouteSeries::new(&mine, "r", 1);
        assert!(series.belongs_to(&mine) && !series.belongs_to(&other));
        let get = http::Method::GET;
        series.count_request(&mine, "r", &get, http::StatusCode::OK);
        series.count_request(&mine, "r", &get, http::StatusCode::OK);
        series.count_request(&mine, "r", &get, http::StatusCode::NOT_FOUND);
        let count = |m: &Metrics, status| {
            m.requests_total
                .with_label_values(&["r", "GET", status])
                .get()
        };
        assert_eq!((count(&mine, "200"), count(&mine, "404")), (2, 1));
        assert_eq!(count(&other, "200"), 0);
        let decision = |allowed, index| RateDecision {
            index,
            by: "ip".into(),
            allowed,
            shadow: false,
        };
        // Index 1 is past the route's one limit: counted by its labels.
        for (allowed, index) in [(true, 0), (true, 0), (false, 0), (true, 1)] {
            series.count_decision(&mine, "r", &decision(allowed, index));
        }
        let decided = |verdict| {
            mine.ratelimit_decisions
                .with_label_values(&["r", "ip", verdict, "enforce"])
                .get()
        };
        assert_eq!((decided("allow"), decided("deny")), (3, 1));
    }

    #[test]
    fn renders_every_metric_name() {
        let metrics = Metrics::new().unwrap();
        metrics
            .requests_total
            .with_label_values(&["r", "GET", "200"])
            .inc();
        metrics
            .request_duration
            .with_label_values(&["r"])
            .observe(0.1);
        metrics
            .upstream_duration
            .with_label_values(&["r"])
            .observe(0.1);
        metrics
            .auth_failures
            .with_label_values(&["r", "missing"])
            .inc();
        metrics
            .ratelimit_decisions
            .with_label_values(&["r", "ip", "allow", "enforce"])
            .inc();
        metrics
            .ratelimit_backend_errors
            .with_label_values(&["redis"])
            .inc();
        metrics.rejections.with_label_values(&["-", "path"]).inc();
        metrics
            .upstream_errors
            .with_label_values(&["r", "connect"])
            .inc();
        metrics.upstream_retries.with_label_values(&["r"]).inc();
        metrics.circuit_state.with_label_values(&["u"]).set(0);
        metrics.config_reloads.with_label_values(&["success"]).inc();
        let (body, content_type) = metrics.render();
        let text = String::from_utf8(body).unwrap();
        assert!(content_type.starts_with("text/plain"));
        for name in [
            names::REQUESTS_TOTAL,
            names::REQUEST_DURATION,
            names::UPSTREAM_DURATION,
            names::IN_FLIGHT,
            names::AUTH_FAILURES,
            names::RATELIMIT_DECISIONS,
            names::RATELIMIT_BACKEND_ERRORS,
            names::REJECTIONS,
            names::UPSTREAM_ERRORS,
            names::UPSTREAM_RETRIES,
            names::CIRCUIT_STATE,
            names::CONFIG_RELOADS,
            names::CONFIG_LAST_RELOAD,
            names::BUILD_INFO,
            names::TRACE_SPANS_DROPPED,
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "OTHER"
        );
    }
}
