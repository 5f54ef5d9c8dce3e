//! A real OTLP/HTTP trace receiver for tests: a hyper server on 127.0.0.1
//! port 0 that takes `POST /v1/traces` (protobuf), decodes each
//! `ExportTraceServiceRequest` with `opentelemetry-proto`, keeps its spans
//! and answers 200 with an empty `ExportTraceServiceResponse`. Also a
//! collector that accepts connections and never answers, and a closed port.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message;
use tokio::net::TcpListener;

/// `Span.kind` SERVER in OTLP.
pub const KIND_SERVER: i32 = 2;
/// `Status.code` ERROR in OTLP.
pub const STATUS_ERROR: i32 = 2;
/// `Status.code` UNSET in OTLP.
pub const STATUS_UNSET: i32 = 0;

/// One span as the receiver decoded it (ids as lowercase hex).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub kind: i32,
    pub status_code: i32,
    pub flags: u32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, String>,
    /// `service.name` of the resource it came with.
    pub service_name: String,
    /// The instrumentation scope's name.
    pub scope: String,
}

impl ReceivedSpan {
    /// An attribute's value as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running receiver.
#[derive(Clone)]
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    /// How long each export request waits before its body is read.
    delay: Duration,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

impl OtlpReceiver {
    /// Starts on 127.0.0.1 port 0.
    pub async fn start() -> Self {
        Self::start_slow(Duration::ZERO).await
    }

    /// Starts a receiver that waits `delay` before it reads each export
    /// request's body: a sender that does not wait for the answer (a
    /// process exiting without a flush) loses the spans.
    pub async fn start_slow(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Self {
            addr: listener.local_addr().unwrap(),
            spans: Arc::default(),
            requests: Arc::default(),
            delay,
        };
        let server = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| server.clone().handle(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    /// The base URL for `otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Method and path of every export request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits (up to 15 s: batches leave once a second) for `n` spans.
    pub async fn wait_for_spans(&self, n: usize) -> Vec<ReceivedSpan> {
        for _ in 0..1500 {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the receiver got {} spans, expected {n}",
            self.spans().len()
        );
    }

    async fn handle(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let (parts, body) = req.into_parts();
        self.requests
            .lock()
            .unwrap()
            .push((parts.method.to_string(), parts.uri.path().to_string()));
        tokio::time::sleep(self.delay).await;
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let decoded = (content_type == "application/x-protobuf")
            .then(|| ExportTraceServiceRequest::decode(body.as_ref()).ok())
            .flatten();
        let Some(request) = decoded else {
            let mut response = Response::new(Full::new(Bytes::from_static(b"not OTLP protobuf")));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(response);
        };
        let mut received = Vec::new();
        for resource_spans in request.resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service_name = resource.get("service.name").cloned().unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                let scope = scope_spans.scope.map(|s| s.name).unwrap_or_default();
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        status_code: span.status.map_or(STATUS_UNSET, |s| s.code),
                        flags: span.flags,
                        start_unix_nano: span.start_time_unix_nano,
                        end_unix_nano: span.end_time_unix_nano,
                        attributes: attributes(&span.attributes),
                        service_name: service_name.clone(),
                        scope: scope.clone(),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(received);
        let answer = ExportTraceServiceResponse::default().encode_to_vec();
        let mut response = Response::new(Full::new(Bytes::from(answer)));
        response.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        Ok(response)
    }
}

/// A collector that accepts connections, reads, and never answers; the
/// sockets stay open for as long as the test runs.
pub async fn silent_collector() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A loopback port nothing listens on (bound, then closed).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}
