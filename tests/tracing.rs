//! Issue 14 over real sockets: W3C trace context and OTLP span export
//! (SPEC §6.4). palisade in-process in front of the recording upstream,
//! exporting to a real OTLP/HTTP receiver (`support::otlp`, protobuf
//! decoded with `opentelemetry-proto`); the SIGTERM flush with the real
//! binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use support::otlp::{
    KIND_SERVER, OtlpReceiver, ReceivedSpan, STATUS_ERROR, STATUS_UNSET, closed_port,
    silent_collector,
};
use support::process::{Process, temp_dir};
use support::*;

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Routes every test shares: an open one, a rate-limited one, a JWT one,
/// a quick one (for 504).
const ROUTES: &str = r#"
[auth.jwt]
hs256_secret = "${JWT_SECRET}"
[upstream.circuit_breaker]
enabled = false
[defaults]
auth = "none"
[[routes]]
name = "limited"
path = "/limited/**"
rate_limits = [{ by = "ip", limit = 1, per = "1h" }]
[[routes]]
name = "private"
path = "/private/**"
auth = "jwt"
[[routes]]
name = "quick"
path = "/quick/**"
timeout = "200ms"
[[routes]]
name = "items"
path = "/items/{id}"
"#;

fn config(tracing: &str) -> String {
    format!("[upstream]\nurl = \"{{UPSTREAM}}\"\n[tracing]\n{tracing}\n{ROUTES}")
}

/// The one `traceparent` the upstream received (there must be exactly one).
fn sent_traceparent(recorded: &upstream::Recorded) -> String {
    let values: Vec<_> = recorded.headers.get_all("traceparent").iter().collect();
    assert_eq!(values.len(), 1, "exactly one traceparent: {values:?}");
    values[0].to_str().unwrap().to_string()
}

/// Splits a version-00 traceparent into (trace id, span id, flags),
/// checking its form.
fn fields(traceparent: &str) -> (String, String, String) {
    let parts: Vec<_> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    assert_eq!(
        (parts[1].len(), parts[2].len(), parts[3].len()),
        (32, 16, 2)
    );
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert!(parts[1..].iter().all(|p| lower_hex(p)), "{traceparent}");
    assert_ne!(parts[1], "0".repeat(32));
    assert_ne!(parts[2], "0".repeat(16));
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

fn span_with_request_id<'a>(spans: &'a [ReceivedSpan], reply: &Reply) -> &'a ReceivedSpan {
    let id = reply.header("x-request-id").unwrap();
    spans
        .iter()
        .find(|s| s.attr("palisade.request_id") == Some(id))
        .unwrap_or_else(|| panic!("no span for request {id}: {spans:#?}"))
}

async fn start_with_receiver(tracing: &str) -> (TestUpstream, OtlpReceiver, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let receiver = OtlpReceiver::start().await;
    let text = config(tracing).replace("{OTLP}", &receiver.endpoint());
    let server = start_palisade(&text, upstream.addr).await;
    (upstream, receiver, server)
}

async fn dropped(server: &palisade::Server) -> f64 {
    sample_present(&metrics(server).await, "palisade_trace_spans_dropped_total")
}

// === propagation ===

#[tokio::test]
async fn a_valid_traceparent_is_continued_with_palisades_own_span() {
    let (upstream, receiver, server) =
        start_with_receiver("propagate = true\notlp_endpoint = \"{OTLP}\"\n").await;
    let reply = get_with(
        server.proxy_addr,
        "/items/7?q=secret",
        &[
            ("traceparent", PARENT),
            ("tracestate", "vendor=abc,other=x:y"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &upstream.requests()[0];
    let (trace, span, flags) = fields(&sent_traceparent(seen));
    assert_eq!(trace, PARENT_TRACE, "the same trace");
    assert_ne!(span, PARENT_SPAN, "palisade's own span id");
    assert_eq!(flags, "01", "flags kept");
    let states: Vec<_> = seen.headers.get_all("tracestate").iter().collect();
    assert_eq!(states, ["vendor=abc,other=x:y"], "tracestate unchanged");

    let spans = receiver.wait_for_spans(1).await;
    let exported = span_with_request_id(&spans, &reply);
    assert_eq!(exported.trace_id, PARENT_TRACE);
    assert_eq!(
        exported.parent_span_id, PARENT_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(
        exported.span_id, span,
        "the span id sent upstream is the span's"
    );
    assert_eq!(exported.kind, KIND_SERVER);
    assert_eq!(exported.name, "GET items");
    assert_eq!(exported.status_code, STATUS_UNSET);
    assert_eq!(exported.attr("http.request.method"), Some("GET"));
    assert_eq!(exported.attr("url.path"), Some("/items/7"));
    assert_eq!(exported.attr("url.scheme"), Some("http"));
    assert_eq!(exported.attr("http.route"), Some("/items/{id}"));
    assert_eq!(exported.attr("http.response.status_code"), Some("200"));
    assert_eq!(exported.attr("client.address"), Some("127.0.0.1"));
    assert_eq!(exported.attr("palisade.route"), Some("items"));
    assert_eq!(exported.attr("palisade.reject_reason"), None);
    assert_eq!(exported.service_name, "palisade");
    assert_eq!(exported.scope, "palisade");
    assert!(exported.end_unix_nano >= exported.start_unix_nano);
    assert!(
        !format!("{:?}", exported.attributes).contains("secret"),
        "no query string in the span"
    );
    assert_eq!(receiver.requests()[0], ("POST".into(), "/v1/traces".into()));
}

#[tokio::test]
async fn an_unsampled_caller_keeps_its_flags() {
    let (upstream, _receiver, server) = start_with_receiver("propagate = true\n").await;
    let unsampled = PARENT.replace("-01", "-00");
    get_with(
        server.proxy_addr,
        "/items/1",
        &[("traceparent", &unsampled)],
    )
    .await;
    let (trace, _, flags) = fields(&sent_traceparent(&upstream.requests()[0]));
    assert_eq!((trace.as_str(), flags.as_str()), (PARENT_TRACE, "00"));
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace_and_drops_tracestate() {
    let (upstream, _receiver, server) = start_with_receiver("propagate = true\n").await;
    let invalid = [
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    ];
    for value in invalid {
        get_with(
            server.proxy_addr,
            "/items/1",
            &[("traceparent", value), ("tracestate", "vendor=abc")],
        )
        .await;
    }
    // Two lines: which one is meant is anyone's guess.
    let raw_reply = raw(
        server.proxy_addr,
        format!(
            "GET /items/1 HTTP/1.1\r\nHost: t\r\ntraceparent: {PARENT}\r\nTraceParent: {PARENT}\r\ntracestate: vendor=abc\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw_reply), 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), invalid.len() + 1);
    let mut traces = std::collections::BTreeSet::new();
    for (i, recorded) in seen.iter().enumerate() {
        let (trace, _, flags) = fields(&sent_traceparent(recorded));
        assert_ne!(trace, PARENT_TRACE, "case {i} started a new trace");
        assert_ne!(trace.to_lowercase(), PARENT_TRACE);
        assert_eq!(flags, "01", "sample_ratio defaults to 1");
        assert!(
            recorded.headers.get("tracestate").is_none(),
            "case {i}: tracestate dropped with an invalid parent"
        );
        traces.insert(trace);
    }
    assert_eq!(traces.len(), seen.len(), "each new trace has its own id");
}

#[tokio::test]
async fn without_an_incoming_traceparent_one_is_started_and_sent() {
    let (upstream, _receiver, server) = start_with_receiver("propagate = true\n").await;
    get_with(
        server.proxy_addr,
        "/items/1",
        &[("tracestate", "vendor=abc")],
    )
    .await;
    let recorded = &upstream.requests()[0];
    fields(&sent_traceparent(recorded));
    assert!(recorded.headers.get("tracestate").is_none());
}

#[tokio::test]
async fn propagate_false_passes_both_headers_untouched_and_adds_none() {
    let upstream = TestUpstream::start().await;
    for tracing in ["", "[tracing]\npropagate = false\n"] {
        let text = format!("[upstream]\nurl = \"{{UPSTREAM}}\"\n{tracing}{ROUTES}");
        let server = start_palisade(&text, upstream.addr).await;
        let bad = "ff-whatever";
        get_with(
            server.proxy_addr,
            "/items/1",
            &[("traceparent", PARENT), ("tracestate", "vendor=abc")],
        )
        .await;
        get_with(server.proxy_addr, "/items/1", &[("traceparent", bad)]).await;
        get(server.proxy_addr, "/items/1").await;
        let seen = upstream.requests();
        let last = &seen[seen.len() - 3..];
        assert_eq!(sent_traceparent(&last[0]), PARENT);
        assert_eq!(last[0].headers.get("tracestate").unwrap(), "vendor=abc");
        assert_eq!(sent_traceparent(&last[1]), bad);
        assert!(last[2].headers.get("traceparent").is_none(), "none added");
        assert!(last[2].headers.get("tracestate").is_none());
    }
}

// === refusals and errors ===

#[tokio::test]
async fn refused_requests_export_spans_with_their_reason() {
    let (upstream, receiver, server) =
        start_with_receiver("propagate = true\notlp_endpoint = \"{OTLP}\"\n").await;
    let unauthorized = get(server.proxy_addr, "/private/x").await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    let admitted = get(server.proxy_addr, "/limited/a").await;
    assert_eq!(admitted.status, StatusCode::OK);
    let limited = get(server.proxy_addr, "/limited/a").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let unknown = get(server.proxy_addr, "/nowhere").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(upstream.count(), 1, "only the admitted one went upstream");

    let spans = receiver.wait_for_spans(4).await;
    let span = span_with_request_id(&spans, &unauthorized);
    assert_eq!(span.name, "GET private");
    assert_eq!(span.attr("palisade.reject_reason"), Some("missing"));
    assert_eq!(span.attr("http.response.status_code"), Some("401"));
    assert_eq!(
        span.status_code, STATUS_UNSET,
        "a 4xx is not a server error"
    );
    assert_eq!(
        span.parent_span_id, "",
        "a trace palisade started has no parent"
    );

    let span = span_with_request_id(&spans, &limited);
    assert_eq!(span.name, "GET limited");
    assert_eq!(span.attr("palisade.reject_reason"), Some("rate-limited"));
    assert_eq!(span.attr("http.response.status_code"), Some("429"));
    assert_eq!(span.attr("http.route"), Some("/limited/**"));

    let span = span_with_request_id(&spans, &admitted);
    assert_eq!(span.attr("palisade.reject_reason"), None);

    let span = span_with_request_id(&spans, &unknown);
    assert_eq!(span.name, "GET -", "no route known");
    assert_eq!(span.attr("palisade.reject_reason"), Some("no_route"));
    assert_eq!(span.attr("http.route"), None);
    assert_eq!(span.attr("palisade.route"), None);
    assert_eq!(span.attr("url.path"), Some("/nowhere"));
    let secret_free = format!("{spans:?}");
    assert!(!secret_free.contains(JWT_SECRET));
}

#[tokio::test]
async fn server_errors_have_an_error_status() {
    let (_upstream, receiver, server) = start_with_receiver("otlp_endpoint = \"{OTLP}\"\n").await;
    let timed_out = get_with(
        server.proxy_addr,
        "/quick/x",
        &[("x-test-delay-ms", "2000")],
    )
    .await;
    assert_eq!(timed_out.status, StatusCode::GATEWAY_TIMEOUT);
    let from_upstream = get_with(server.proxy_addr, "/items/1", &[("x-test-status", "500")]).await;
    assert_eq!(from_upstream.status, StatusCode::INTERNAL_SERVER_ERROR);

    // A dead upstream: 502.
    let dead = closed_port();
    let text = config(&format!("otlp_endpoint = \"{}\"\n", receiver.endpoint()));
    let other = start_palisade(&text, dead).await;
    let unreachable = get(other.proxy_addr, "/items/1").await;
    assert_eq!(unreachable.status, StatusCode::BAD_GATEWAY);

    let spans = receiver.wait_for_spans(3).await;
    let span = span_with_request_id(&spans, &timed_out);
    assert_eq!(span.status_code, STATUS_ERROR);
    assert_eq!(span.attr("error.type"), Some("504"));
    assert_eq!(span.attr("palisade.reject_reason"), Some("timeout"));
    let span = span_with_request_id(&spans, &from_upstream);
    assert_eq!(span.status_code, STATUS_ERROR, "the upstream's own 5xx too");
    assert_eq!(span.attr("palisade.reject_reason"), None);
    let span = span_with_request_id(&spans, &unreachable);
    assert_eq!(span.status_code, STATUS_ERROR);
    assert_eq!(span.attr("http.response.status_code"), Some("502"));
    assert_eq!(
        span.attr("palisade.reject_reason"),
        Some("upstream-unreachable")
    );
}

// === sampling ===

#[tokio::test]
async fn ratio_zero_exports_nothing_of_its_own_and_says_so_upstream() {
    let (upstream, receiver, server) = start_with_receiver(
        "propagate = true\notlp_endpoint = \"{OTLP}\"\nsample_ratio = 0.0\nservice_name = \"edge\"\n",
    )
    .await;
    for _ in 0..20 {
        assert_eq!(
            get(server.proxy_addr, "/items/1").await.status,
            StatusCode::OK
        );
    }
    for recorded in upstream.requests() {
        let (_, _, flags) = fields(&sent_traceparent(&recorded));
        assert_eq!(flags, "00", "not sampled");
    }
    // A caller's sampled flag is honoured: that one span, and only it, leaves.
    let sampled = get_with(server.proxy_addr, "/items/2", &[("traceparent", PARENT)]).await;
    // Spans leave in order: any of the 20 before it would have come first.
    let spans = receiver.wait_for_spans(1).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].trace_id, PARENT_TRACE);
    assert_eq!(span_with_request_id(&spans, &sampled).service_name, "edge");
    assert_eq!(dropped(&server).await, 0.0);
}

#[tokio::test]
async fn ratio_one_exports_every_request() {
    let (upstream, receiver, server) =
        start_with_receiver("propagate = true\notlp_endpoint = \"{OTLP}\"\nsample_ratio = 1.0\n")
            .await;
    let mut replies = Vec::new();
    for i in 0..10 {
        replies.push(get(server.proxy_addr, &format!("/items/{i}")).await);
    }
    let spans = receiver.wait_for_spans(10).await;
    for (reply, recorded) in replies.iter().zip(upstream.requests()) {
        let (trace, span_id, flags) = fields(&sent_traceparent(&recorded));
        assert_eq!(flags, "01");
        let span = span_with_request_id(&spans, reply);
        assert_eq!((&span.trace_id, &span.span_id), (&trace, &span_id));
    }
}

#[tokio::test]
async fn export_without_propagation_leaves_the_headers_alone() {
    let (upstream, receiver, server) = start_with_receiver("otlp_endpoint = \"{OTLP}\"\n").await;
    let reply = get_with(server.proxy_addr, "/items/1", &[("traceparent", PARENT)]).await;
    assert_eq!(sent_traceparent(&upstream.requests()[0]), PARENT);
    let spans = receiver.wait_for_spans(1).await;
    let span = span_with_request_id(&spans, &reply);
    assert_ne!(
        span.trace_id, PARENT_TRACE,
        "its own trace: W3C context is off"
    );
    assert_eq!(span.parent_span_id, "");
}

// === a collector that is dead, or slow ===

#[tokio::test]
async fn a_dead_collector_costs_requests_nothing() {
    let upstream = TestUpstream::start().await;
    let dead = closed_port();
    let text = config(&format!(
        "propagate = true\notlp_endpoint = \"http://{dead}\"\nexport_timeout = \"2s\"\n"
    ));
    let server = start_palisade(&text, upstream.addr).await;
    for i in 0..30 {
        let reply = get(server.proxy_addr, &format!("/items/{i}")).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(upstream.count(), 30);
    // The lost spans are counted once their export fails.
    for _ in 0..500 {
        if dropped(&server).await > 0.0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("spans that could not be exported were never counted");
}

#[tokio::test]
async fn a_full_queue_drops_spans_and_counts_them() {
    let upstream = TestUpstream::start().await;
    let silent = silent_collector().await;
    let text = config(&format!(
        "otlp_endpoint = \"http://{silent}\"\nqueue_size = 2\nexport_timeout = \"60s\"\n"
    ));
    let server = start_palisade(&text, upstream.addr).await;
    assert_eq!(dropped(&server).await, 0.0);
    let mut sent = 0;
    while dropped(&server).await == 0.0 {
        assert!(sent < 1000, "nothing was dropped after {sent} requests");
        let reply = get(server.proxy_addr, "/items/1").await;
        assert_eq!(reply.status, StatusCode::OK);
        sent += 1;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(upstream.count(), sent);
}

// === shutdown ===

#[tokio::test]
async fn sigterm_flushes_queued_spans_and_logs_carry_the_trace_id() {
    let upstream = TestUpstream::start().await;
    // The collector takes its time: exiting without waiting for it loses the spans.
    let receiver = OtlpReceiver::start_slow(std::time::Duration::from_millis(700)).await;
    let dir = temp_dir("trace-flush");
    let path = dir.join("policy.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        config(&format!(
            "propagate = true\notlp_endpoint = \"{}\"\n",
            receiver.endpoint()
        ))
        .replace("{UPSTREAM}", &format!("http://{}", upstream.addr))
        .replace("${JWT_SECRET}", JWT_SECRET)
    );
    std::fs::write(&path, text).unwrap();
    let mut process = Process::start(&path);
    let (proxy, _admin) = process.addresses();
    let mut ids = Vec::new();
    for i in 0..3 {
        let reply = get(proxy, &format!("/items/{i}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        ids.push(reply.header("x-request-id").unwrap().to_string());
    }
    // At once: the batch is still waiting for company (1 s) when the
    // signal comes, so only the shutdown flush can deliver it.
    process.signal("TERM");
    let (code, lines) = tokio::task::spawn_blocking(move || process.rest())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    let spans = receiver.spans();
    assert_eq!(spans.len(), 3, "every span was flushed: {spans:#?}");
    for id in &ids {
        let span = spans
            .iter()
            .find(|s| s.attr("palisade.request_id") == Some(id))
            .unwrap();
        let access = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "access" && l["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no access line for {id}: {lines:#?}"));
        assert_eq!(access["trace_id"], span.trace_id.as_str());
    }
}

#[tokio::test]
async fn with_tracing_off_nothing_is_added_or_counted() {
    let upstream = TestUpstream::start().await;
    let text = format!("[upstream]\nurl = \"{{UPSTREAM}}\"\n{ROUTES}");
    let server = start_palisade(&text, upstream.addr).await;
    get(server.proxy_addr, "/items/1").await;
    assert!(upstream.requests()[0].headers.get("traceparent").is_none());
    assert_eq!(dropped(&server).await, 0.0);
}

// === palisade check ===

fn check(name: &str, text: &str) -> (Option<i32>, String, String, std::path::PathBuf) {
    let path = support::process::write_config(&temp_dir(name), text);
    let out = support::process::palisade()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
    )
}

const ANY_ROUTE: &str = "[[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n";

#[test]
fn check_places_tracing_errors_at_their_key() {
    let (code, _, stderr, path) = check(
        "trace-ratio",
        &format!("[tracing]\npropagate = true\nsample_ratio = 2\n{ANY_ROUTE}"),
    );
    assert_eq!(code, Some(1));
    let expected = format!(
        "{}:3:16: tracing.sample_ratio: 2 is not a ratio",
        path.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    let (code, _, stderr, path) = check(
        "trace-endpoint",
        &format!("[tracing]\notlp_endpoint = \"udp://collector:4318\"\n{ANY_ROUTE}"),
    );
    assert_eq!(code, Some(1));
    let expected = format!(
        "{}:2:17: tracing.otlp_endpoint: \"udp://collector:4318\" must use http or https",
        path.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn check_shows_tracing_with_the_endpoint_redacted() {
    let (code, stdout, stderr, _) = check(
        "trace-summary",
        &format!(
            "[tracing]\notlp_endpoint = \"https://user:pw@collector.example/otlp?key=k\"\n{ANY_ROUTE}"
        ),
    );
    assert_eq!(code, Some(1), "a query is refused: {stderr}");
    let (code, stdout_ok, stderr_ok, _) = check(
        "trace-summary-ok",
        &format!(
            "[tracing]\notlp_endpoint = \"https://user:pw@collector.example/otlp\"\n{ANY_ROUTE}"
        ),
    );
    assert_eq!(code, Some(0), "{stderr_ok}");
    assert!(
        stdout_ok.contains("tracing: W3C trace context off; spans to https://<redacted>@collector.example/otlp/v1/traces"),
        "{stdout_ok}"
    );
    assert!(!format!("{stdout}{stderr}{stdout_ok}{stderr_ok}").contains("pw@"));
    assert!(stderr_ok.contains("propagate = false"), "{stderr_ok}");
}

// === reload ===

#[tokio::test]
async fn a_reload_moves_export_to_the_new_endpoint() {
    let upstream = TestUpstream::start().await;
    let (first, second) = (OtlpReceiver::start().await, OtlpReceiver::start().await);
    let dir = temp_dir("trace-reload");
    let path = dir.join("policy.toml");
    let text_for = |receiver: &OtlpReceiver| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
            config(&format!("otlp_endpoint = \"{}\"\n", receiver.endpoint()))
                .replace("{UPSTREAM}", &format!("http://{}", upstream.addr))
        )
    };
    std::fs::write(&path, text_for(&first)).unwrap();
    let policy = palisade::config::load_file(&path, &test_env()).unwrap();
    let server = palisade::start(policy).await.unwrap();
    let before = get(server.proxy_addr, "/items/1").await;
    span_with_request_id(&first.wait_for_spans(1).await, &before);

    std::fs::write(&path, text_for(&second)).unwrap();
    assert!(palisade::reload::reload_with_env(&server.shared, &path, &test_env()).await);
    let after = get(server.proxy_addr, "/items/2").await;
    span_with_request_id(&second.wait_for_spans(1).await, &after);
    assert!(
        first
            .spans()
            .iter()
            .all(|s| s.attr("palisade.request_id") != after.header("x-request-id")),
        "the old exporter got nothing after the reload"
    );
}
