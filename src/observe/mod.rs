//! Metrics (an owned Prometheus registry), logs (JSON lines, one access
//! line per request) and traces (W3C context, OTLP span export).

pub mod access;
pub mod logging;
pub mod metrics;
pub mod trace;
