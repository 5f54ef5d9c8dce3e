//! `[tracing]` (SPEC §6.4) compiled: the sampling ratio checked, the OTLP
//! endpoint checked and completed to its traces URL.

use http::uri::Scheme;

use super::{Compiler, Result};
use crate::config::file::FileConfig;
use crate::observe::trace::{ExportSettings, TracingPolicy};

/// The path OTLP/HTTP receives traces on (appended to a base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is).
const TRACES_PATH: &str = "/v1/traces";

impl Compiler<'_> {
    pub(super) fn tracing(&self, file: &FileConfig) -> Result<TracingPolicy> {
        let t = &file.tracing;
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return Err(self.err(
                "tracing.sample_ratio",
                format!(
                    "{} is not a ratio; write a number from 0.0 (none) to 1.0 (every trace)",
                    t.sample_ratio
                ),
            ));
        }
        if t.service_name.as_str().trim().is_empty() {
            return Err(self.err("tracing.service_name", "must not be empty"));
        }
        if !(1..=MAX_QUEUE_SIZE).contains(&t.queue_size) {
            return Err(self.err(
                "tracing.queue_size",
                format!("must be between 1 and {MAX_QUEUE_SIZE}"),
            ));
        }
        self.at_least_a_millisecond(t.export_timeout.0, "tracing.export_timeout")?;
        let export = match t.otlp_endpoint.as_str() {
            "" => None,
            _ => Some(ExportSettings {
                endpoint: self.traces_url(file)?,
                service_name: t.service_name.as_str().to_string(),
                queue_size: t.queue_size,
                export_timeout: t.export_timeout.0,
            }),
        };
        Ok(TracingPolicy {
            propagate: t.propagate,
            sample_ratio: t.sample_ratio,
            export,
        })
    }

    /// `otlp_endpoint` as the URL spans are posted to: a base URL
    /// (`http://collector:4318`) gets `/v1/traces`; one that already ends
    /// with it is kept.
    fn traces_url(&self, file: &FileConfig) -> Result<String> {
        let url = &file.tracing.otlp_endpoint;
        // Errors show the URL redacted: its userinfo may hold a password.
        let bad = |why: &str| {
            self.err(
                "tracing.otlp_endpoint",
                format!("\"{url}\" {why}; write e.g. \"http://otel-collector:4318\""),
            )
        };
        let uri: http::Uri = url.as_str().parse().map_err(|_| bad("is not a URL"))?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => {}
            _ => return Err(bad("must use http or https")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let text = url.as_str().trim_end_matches('/');
        if uri.path().trim_end_matches('/').ends_with(TRACES_PATH) {
            Ok(text.to_string())
        } else {
            Ok(format!("{text}{TRACES_PATH}"))
        }
    }
}

/// The most spans the export queue holds: each queued span holds memory,
/// and the channel behind it panics past 2^61.
const MAX_QUEUE_SIZE: usize = 1 << 20;
