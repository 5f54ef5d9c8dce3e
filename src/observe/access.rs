//! The end of every request: metrics and the access line, recorded once when
//! the response body is finished (or abandoned), success or failure.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, StatusCode};

use super::metrics::{Metrics, method_label};
use crate::policy::body::BodyProgress;

/// Keeps `palisade_requests_in_flight` right however a request ends
/// (including the client vanishing mid-handler).
pub struct InFlightGauge(Arc<Metrics>);

impl InFlightGauge {
    /// Counts one request in.
    pub fn enter(metrics: Arc<Metrics>) -> Self {
        metrics.in_flight.inc();
        Self(metrics)
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Everything the access line and the request metrics need.
pub struct AccessRecord {
    pub metrics: Arc<Metrics>,
    pub in_flight: InFlightGauge,
    pub access_log: bool,
    pub start: Instant,
    pub request_id: HeaderValue,
    pub method: Method,
    pub path: String,
    pub route: Arc<str>,
    pub status: StatusCode,
    pub upstream_time: Option<Duration>,
    pub client_ip: IpAddr,
    pub user: Option<String>,
    pub body_in: Arc<BodyProgress>,
}

impl AccessRecord {
    /// Records metrics and writes the access line.
    pub fn finish(self, bytes_out: u64) {
        let elapsed = self.start.elapsed();
        let route: &str = &self.route;
        self.metrics
            .requests_total
            .with_label_values(&[route, method_label(&self.method), self.status.as_str()])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        if self.access_log {
            tracing::info!(
                target: "palisade::access",
                request_id = self.request_id.to_str().unwrap_or(""),
                method = self.method.as_str(),
                path = self.path.as_str(),
                route,
                status = self.status.as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                upstream_ms = self.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
                client_ip = %self.client_ip,
                user = self.user.as_deref(),
                bytes_in = self.body_in.bytes.load(Ordering::Relaxed),
                bytes_out,
                "access"
            );
        }
    }
}
