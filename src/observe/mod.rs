//! Metrics (an owned Prometheus registry) and logs (JSON lines, one access
//! line per request).

pub mod access;
pub mod logging;
pub mod metrics;
