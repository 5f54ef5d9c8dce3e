//! Trace context and span export (SPEC §6.4): where a request's trace
//! comes from, what the upstream is told of it, and the one SERVER span
//! palisade exports for it.
//!
//! In the pipeline: [`start`] runs when the request ID is known (before the
//! client's headers are cleaned), so the request's log span carries
//! `trace_id`; the client's `traceparent`/`tracestate` are stripped with
//! the other client headers ([`strip_client_headers`]); the upstream
//! request gets palisade's own `traceparent` as its last change
//! (`proxy::upstream::rewrite`); and when the response ends,
//! `observe::access` finishes the span beside the metrics and the access
//! line ([`export::finish`]).
//!
//! Everything is off unless configured: with no `[tracing]` (or
//! `propagate = false` and no `otlp_endpoint`) [`start`] returns `None`
//! after one branch, with no RNG call and no allocation.

pub mod context;
pub mod export;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use self::context::{FLAG_SAMPLED, Incoming, SpanId, TRACEPARENT, TRACESTATE, TraceId};
use self::export::SpanQueue;
use crate::route::Route;

/// The longest `tracestate` passed on (W3C §3.3.1.5: vendors must pass at
/// least 512 characters; a longer one is dropped whole rather than cut,
/// since cutting could split an entry).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// `[tracing]`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingPolicy {
    /// W3C Trace Context in and out.
    pub propagate: bool,
    /// Share of the traces palisade starts that are sampled, 0.0..=1.0.
    pub sample_ratio: f64,
    /// Where spans go, when `otlp_endpoint` is set.
    pub export: Option<ExportSettings>,
}

impl Default for TracingPolicy {
    fn default() -> Self {
        Self {
            propagate: false,
            sample_ratio: 1.0,
            export: None,
        }
    }
}

/// What an exporter is built from; a reload that changes any of it builds a
/// new exporter (the old one flushes what it holds and stops).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// The OTLP/HTTP traces URL (`.../v1/traces`).
    pub endpoint: String,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Spans waiting for export at most; more are dropped and counted.
    pub queue_size: usize,
    /// One export request's deadline (and the shutdown flush's).
    pub export_timeout: Duration,
}

impl TracingPolicy {
    /// Whether requests get a trace at all.
    pub fn active(&self) -> bool {
        self.propagate || self.export.is_some()
    }

    /// The sampling decision for a trace palisade starts: taken from the
    /// trace id's low 64 bits (as OpenTelemetry's `TraceIdRatioBased`), so
    /// one trace id always gets the same answer.
    fn samples(&self, id: TraceId) -> bool {
        if self.sample_ratio >= 1.0 {
            return true;
        }
        let threshold = (self.sample_ratio * u64::MAX as f64) as u64;
        (id.0 as u64) < threshold
    }
}

/// One request's trace: its ids, what the upstream is told, and the span
/// being recorded (when it is sampled and exported).
#[derive(Debug)]
pub struct RequestTrace {
    /// The trace (continued or new).
    pub trace_id: TraceId,
    /// palisade's span for this request.
    pub span_id: SpanId,
    /// The caller's span, when the trace was continued.
    pub parent_id: Option<SpanId>,
    /// Trace flags (the caller's, or palisade's sampling decision).
    pub flags: u8,
    /// The headers the upstream receives (`propagate = true`).
    pub outgoing: Option<Outgoing>,
    /// The span to export when the response ends.
    pub pending: Option<PendingSpan>,
}

/// `traceparent` and `tracestate` for the upstream.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Version 00, this trace, palisade's span, the flags.
    pub traceparent: HeaderValue,
    /// The caller's, unchanged, when its `traceparent` was valid.
    pub tracestate: Option<HeaderValue>,
}

/// A span being recorded: what is known at the start that the record does
/// not keep.
#[derive(Debug)]
pub struct PendingSpan {
    queue: Arc<SpanQueue>,
    start: SystemTime,
    route: Option<Arc<Route>>,
    https: bool,
}

/// The trace of a request, `None` when tracing is off. `queue` is where
/// sampled spans go (`None`: nothing is exported).
pub fn start(
    policy: &TracingPolicy,
    queue: Option<&Arc<SpanQueue>>,
    headers: &HeaderMap,
    https: bool,
) -> Option<Box<RequestTrace>> {
    if !policy.active() {
        return None;
    }
    let incoming = if policy.propagate {
        read_incoming(headers)
    } else {
        None
    };
    let (trace_id, parent_id, flags, tracestate) = match incoming {
        Some((
            Incoming {
                trace_id,
                parent_id,
                flags,
            },
            state,
        )) => (trace_id, Some(parent_id), flags, state),
        None => {
            let id = TraceId::random();
            let flags = if policy.samples(id) { FLAG_SAMPLED } else { 0 };
            (id, None, flags, None)
        }
    };
    let span_id = SpanId::random();
    let outgoing = if policy.propagate {
        let text = context::format_traceparent(trace_id, span_id, flags);
        HeaderValue::from_str(text.as_str())
            .ok()
            .map(|traceparent| Outgoing {
                traceparent,
                tracestate,
            })
    } else {
        None
    };
    let pending = match queue {
        Some(queue) if flags & FLAG_SAMPLED != 0 => Some(PendingSpan {
            queue: queue.clone(),
            start: SystemTime::now(),
            route: None,
            https,
        }),
        _ => None,
    };
    Some(Box::new(RequestTrace {
        trace_id,
        span_id,
        parent_id,
        flags,
        outgoing,
        pending,
    }))
}

impl RequestTrace {
    /// Remembers the matched route (its pattern is the span's `http.route`).
    pub fn set_route(&mut self, route: &Arc<Route>) {
        if let Some(pending) = &mut self.pending {
            pending.route = Some(route.clone());
        }
    }

    /// Whether the trace is sampled.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

/// A valid incoming `traceparent` (exactly one header line) and the
/// `tracestate` that goes with it; `None` when absent or invalid (then the
/// `tracestate` is dropped too, as W3C §3.3.1.1 asks).
fn read_incoming(headers: &HeaderMap) -> Option<(Incoming, Option<HeaderValue>)> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    let first = values.next()?;
    if values.next().is_some() {
        // Two `traceparent` lines: which one is meant is anyone's guess.
        return None;
    }
    let incoming = context::parse_traceparent(first.as_bytes())?;
    Some((incoming, read_tracestate(headers)))
}

/// The caller's `tracestate`: one line passes as it is; several are joined
/// with `,` (W3C §3.3.1.1 lets a list span lines); dropped when longer
/// than [`MAX_TRACESTATE_BYTES`], empty, or not visible ASCII.
fn read_tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(&TRACESTATE).iter();
    let first = values.next()?;
    let acceptable = |v: &[u8]| {
        !v.is_empty()
            && v.len() <= MAX_TRACESTATE_BYTES
            && v.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t')
    };
    let Some(second) = values.next() else {
        return acceptable(first.as_bytes()).then(|| first.clone());
    };
    let mut joined = Vec::with_capacity(MAX_TRACESTATE_BYTES);
    joined.extend_from_slice(first.as_bytes());
    for value in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
        if joined.len() > MAX_TRACESTATE_BYTES {
            return None;
        }
    }
    if !acceptable(&joined) {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Removes every client-sent `traceparent` and `tracestate` line (with
/// `propagate = true`; palisade sets exactly one of each).
pub fn strip_client_headers(headers: &mut HeaderMap) {
    headers.remove(&TRACEPARENT);
    headers.remove(&TRACESTATE);
}

/// Sets palisade's `traceparent` (and the caller's `tracestate`) on the
/// upstream request.
pub fn set_outgoing(headers: &mut HeaderMap, outgoing: &Outgoing) {
    headers.insert(TRACEPARENT.clone(), outgoing.traceparent.clone());
    match &outgoing.tracestate {
        Some(state) => {
            headers.insert(TRACESTATE.clone(), state.clone());
        }
        None => {
            headers.remove(&TRACESTATE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn policy(propagate: bool, ratio: f64) -> TracingPolicy {
        TracingPolicy {
            propagate,
            sample_ratio: ratio,
            export: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn off_means_no_trace() {
        let h = headers(&[("traceparent", PARENT)]);
        assert!(start(&TracingPolicy::default(), None, &h, false).is_none());
    }

    #[test]
    fn a_valid_parent_is_continued_with_a_new_span() {
        let h = headers(&[("traceparent", PARENT), ("tracestate", "a=1,b=2")]);
        let trace = start(&policy(true, 0.0), None, &h, false).unwrap();
        assert_eq!(trace.trace_id, TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736));
        assert_eq!(trace.parent_id, Some(SpanId(0x00f067aa0ba902b7)));
        assert!(
            trace.sampled(),
            "the caller's sampled flag wins over ratio 0"
        );
        let out = trace.outgoing.unwrap();
        let sent = out.traceparent.to_str().unwrap();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(sent.ends_with("-01"));
        assert_ne!(&sent[36..52], "00f067aa0ba902b7");
        assert_eq!(out.tracestate.unwrap(), "a=1,b=2");
    }

    #[test]
    fn an_invalid_or_doubled_parent_starts_a_new_trace_without_tracestate() {
        let doubled = headers(&[
            ("traceparent", PARENT),
            ("traceparent", PARENT),
            ("tracestate", "a=1"),
        ]);
        let bad = headers(&[("traceparent", "garbage"), ("tracestate", "a=1")]);
        for h in [doubled, bad] {
            let trace = start(&policy(true, 1.0), None, &h, false).unwrap();
            assert_ne!(trace.trace_id, TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736));
            assert_eq!(trace.parent_id, None);
            assert!(trace.outgoing.unwrap().tracestate.is_none());
        }
    }

    #[test]
    fn tracestate_lines_join_and_long_ones_drop() {
        let two = headers(&[("tracestate", "a=1"), ("tracestate", "b=2")]);
        assert_eq!(read_tracestate(&two).unwrap(), "a=1,b=2");
        let long = "k=".to_string() + &"v".repeat(MAX_TRACESTATE_BYTES);
        assert!(read_tracestate(&headers(&[("tracestate", &long)])).is_none());
        let limit = "k=".to_string() + &"v".repeat(MAX_TRACESTATE_BYTES - 2);
        assert!(read_tracestate(&headers(&[("tracestate", &limit)])).is_some());
    }

    #[test]
    fn sampling_follows_the_ratio() {
        let never = policy(false, 0.0);
        let always = policy(false, 1.0);
        let half = policy(false, 0.5);
        let mut sampled = 0;
        for _ in 0..2000 {
            let id = TraceId::random();
            assert!(!never.samples(id));
            assert!(always.samples(id));
            sampled += usize::from(half.samples(id));
        }
        assert!((800..1200).contains(&sampled), "{sampled}");
    }
}
