//! OTLP/HTTP (protobuf) span export, batched in the background.
//!
//! Why not the SDK's `BatchSpanProcessor`: it exports from a thread of its
//! own with a plain `block_on`, and the OTLP exporter's hyper client needs a
//! tokio reactor (`opentelemetry-http`'s `HyperClient` spawns its
//! connections with `TokioExecutor` and times out with `tokio::time`); nor
//! does it tell how many spans it dropped. So palisade keeps the pieces it
//! needs: the SDK's [`SpanData`] and the `opentelemetry-otlp` exporter,
//! behind its own bounded queue.
//!
//! - A request's end builds one `SpanData` and offers it to the queue with
//!   `try_send`: never a wait. A full queue drops the span and counts it in
//!   `palisade_trace_spans_dropped_total`.
//! - One thread (`palisade-otlp`) runs a current-thread tokio runtime that
//!   drains the queue in batches (up to [`MAX_BATCH`] spans, or what came
//!   within [`BATCH_DELAY`]) and exports each under `export_timeout`. A
//!   batch that fails (collector down, slow, refusing) is dropped and
//!   counted too, with one warning when exports start failing and one line
//!   when they work again. Requests never wait for any of it.
//! - [`SpanQueue::shutdown`] (SIGTERM, after the drain) exports what is
//!   queued and waits for it at most `export_timeout` (plus a little);
//!   dropping the last handle (a reload that changed the exporter) does
//!   the same without anyone waiting.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use prometheus::IntCounter;
use tokio::sync::{mpsc, oneshot};

use super::{ExportSettings, PendingSpan, RequestTrace};

/// Spans in one export request at most (the SDK's default).
pub const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for company.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);

/// The bounded queue in front of the exporter thread.
pub struct SpanQueue {
    settings: ExportSettings,
    tx: mpsc::Sender<SpanData>,
    dropped: IntCounter,
    control: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl std::fmt::Debug for SpanQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The endpoint may carry credentials in its userinfo or query.
        f.debug_struct("SpanQueue")
            .field("service_name", &self.settings.service_name)
            .field("queue_size", &self.settings.queue_size)
            .finish()
    }
}

impl SpanQueue {
    /// Builds the exporter for `settings` and starts its thread; spans
    /// lost on the way are counted in `dropped`.
    pub fn start(settings: &ExportSettings, dropped: IntCounter) -> Result<Arc<Self>, String> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(settings.endpoint.as_str())
            .with_timeout(settings.export_timeout)
            .build()
            .map_err(|e| format!("tracing.otlp_endpoint: cannot build the exporter: {e}"))?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(settings.service_name.clone())
                .build(),
        );
        let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let worker = Worker {
            rx,
            stop: stop_rx,
            stopping: false,
            exporter,
            dropped: dropped.clone(),
            timeout: settings.export_timeout,
            failing: false,
        };
        std::thread::Builder::new()
            .name("palisade-otlp".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(worker.run()),
                    Err(error) => tracing::error!(%error, "span export cannot start its runtime"),
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start the span export thread: {e}"))?;
        Ok(Arc::new(Self {
            settings: settings.clone(),
            tx,
            dropped,
            control: Mutex::new(Some((stop_tx, done_rx))),
        }))
    }

    /// What this queue was built from.
    pub fn settings(&self) -> &ExportSettings {
        &self.settings
    }

    /// Offers a span; never waits. Counted as dropped when the queue is full.
    pub fn push(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    /// Exports what is queued and stops, waiting at most `export_timeout`
    /// plus a second. Later spans are dropped (and counted).
    pub async fn shutdown(&self) {
        let control = self.control.lock().ok().and_then(|mut c| c.take());
        let Some((stop, done)) = control else { return };
        let _ = stop.send(());
        let bound = self.settings.export_timeout + Duration::from_secs(1);
        if tokio::time::timeout(bound, done).await.is_err() {
            tracing::warn!(
                "span export did not finish its flush in time; remaining spans are lost"
            );
        }
    }
}

/// The exporter thread's loop.
struct Worker {
    rx: mpsc::Receiver<SpanData>,
    stop: oneshot::Receiver<()>,
    stopping: bool,
    exporter: opentelemetry_otlp::SpanExporter,
    dropped: IntCounter,
    timeout: Duration,
    failing: bool,
}

impl Worker {
    async fn run(mut self) {
        while let Some(batch) = self.next_batch().await {
            self.export(batch).await;
        }
        let _ = self.exporter.shutdown();
    }

    /// Waits for a span, then gathers more until the batch is full or
    /// [`BATCH_DELAY`] passed; while stopping, only what is queued.
    /// `None` once the queue is closed and empty.
    async fn next_batch(&mut self) -> Option<Vec<SpanData>> {
        let first = loop {
            tokio::select! {
                span = self.rx.recv() => break span?,
                _ = &mut self.stop, if !self.stopping => self.begin_stop(),
            }
        };
        let mut batch = Vec::with_capacity(MAX_BATCH.min(self.rx.len() + 1));
        batch.push(first);
        let flush_at = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH {
            tokio::select! {
                span = self.rx.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = tokio::time::sleep_until(flush_at), if !self.stopping => break,
                _ = &mut self.stop, if !self.stopping => self.begin_stop(),
            }
        }
        Some(batch)
    }

    /// Stop taking spans; what is queued is still exported.
    fn begin_stop(&mut self) {
        self.stopping = true;
        self.rx.close();
    }

    async fn export(&mut self, batch: Vec<SpanData>) {
        let count = batch.len() as u64;
        let outcome = tokio::time::timeout(self.timeout, self.exporter.export(batch)).await;
        let error = match outcome {
            Ok(Ok(())) => {
                if self.failing {
                    self.failing = false;
                    tracing::info!("span export works again");
                }
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "the collector did not answer within export_timeout".to_string(),
        };
        self.dropped.inc_by(count);
        if !self.failing {
            self.failing = true;
            tracing::warn!(%error, spans = count, "span export failed; spans are dropped (and counted) until it works again");
        }
    }
}

/// What the request's record knows at its end, for the span.
pub struct SpanFacts<'a> {
    /// The method as received.
    pub method: &'a Method,
    /// The canonical path (the raw one when refused before it existed).
    pub path: &'a str,
    /// The matched route's name.
    pub route: Option<&'a Arc<str>>,
    /// The status sent.
    pub status: StatusCode,
    /// Client IP after `trusted_proxies`.
    pub client_ip: IpAddr,
    /// The request ID.
    pub request_id: &'a str,
    /// The rejection or auth-failure reason, when palisade refused.
    pub reject_reason: Option<&'static str>,
    /// From the request's start to the end of its response.
    pub elapsed: Duration,
}

/// Finishes the request's span, if it is being recorded, and queues it.
pub fn finish(trace: &mut RequestTrace, facts: &SpanFacts<'_>) {
    let Some(pending) = trace.pending.take() else {
        return;
    };
    let span = span_data(trace, &pending, facts);
    pending.queue.push(span);
}

/// The SERVER span of SPEC §6.4, in OpenTelemetry's HTTP semantic
/// conventions. No header, query string or credential goes into it.
fn span_data(trace: &RequestTrace, pending: &PendingSpan, facts: &SpanFacts<'_>) -> SpanData {
    let (method, known) = method_name(facts.method);
    let route_name: &str = facts.route.map_or("-", |r| r);
    let mut attributes = Vec::with_capacity(12);
    attributes.push(KeyValue::new("http.request.method", method));
    if !known {
        attributes.push(KeyValue::new(
            "http.request.method_original",
            facts.method.as_str().to_string(),
        ));
    }
    attributes.push(KeyValue::new(
        "url.scheme",
        if pending.https { "https" } else { "http" },
    ));
    attributes.push(KeyValue::new("url.path", facts.path.to_string()));
    if let Some(route) = &pending.route {
        attributes.push(KeyValue::new(
            "http.route",
            route.pattern.as_str().to_string(),
        ));
    }
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(facts.status.as_u16()),
    ));
    attributes.push(KeyValue::new("client.address", facts.client_ip.to_string()));
    if let Some(route) = facts.route {
        attributes.push(KeyValue::new("palisade.route", route.clone()));
    }
    attributes.push(KeyValue::new(
        "palisade.request_id",
        facts.request_id.to_string(),
    ));
    if let Some(reason) = facts.reject_reason {
        attributes.push(KeyValue::new("palisade.reject_reason", reason));
    }
    let status = if facts.status.is_server_error() {
        // Semantic conventions: a SERVER span's error is a 5xx, and
        // `error.type` is then the status code.
        attributes.push(KeyValue::new(
            "error.type",
            facts.status.as_str().to_string(),
        ));
        Status::error("")
    } else {
        Status::Unset
    };
    let parent = trace.parent_id;
    SpanData {
        span_context: SpanContext::new(
            opentelemetry::TraceId::from_bytes(trace.trace_id.to_bytes()),
            opentelemetry::SpanId::from_bytes(trace.span_id.to_bytes()),
            TraceFlags::new(trace.flags),
            false,
            TraceState::NONE,
        ),
        parent_span_id: parent.map_or(opentelemetry::SpanId::INVALID, |p| {
            opentelemetry::SpanId::from_bytes(p.to_bytes())
        }),
        parent_span_is_remote: parent.is_some(),
        span_kind: SpanKind::Server,
        // Semantic conventions name an unknown method's span `HTTP`.
        name: Cow::Owned(format!(
            "{} {route_name}",
            if known { method } else { "HTTP" }
        )),
        start_time: pending.start,
        end_time: pending.start + facts.elapsed,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: InstrumentationScope::builder("palisade")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    }
}

/// The method for `http.request.method` and the span name: a standard
/// method as itself, anything else `_OTHER` (semantic conventions; it keeps
/// span names bounded) with the original beside it.
fn method_name(method: &Method) -> (&'static str, bool) {
    match crate::observe::metrics::method_label(method) {
        "OTHER" => ("_OTHER", false),
        standard => (standard, true),
    }
}
