//! Issue 2: the proxy core over real sockets: forwarding, streaming, routes,
//! per-route timeouts, request IDs, errors, admin and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use support::upstream::{pattern_bytes, sha256_hex};
use support::*;

const OPEN: &str = r#"
[upstream]
url = "{UPSTREAM}"
[defaults]
auth = "none"
[[routes]]
name = "health"
path = "/health"
methods = ["GET", "HEAD"]
[[routes]]
name = "slow"
path = "/slow/**"
timeout = "300ms"
[[routes]]
name = "patient"
path = "/patient/**"
timeout = "2s"
[[routes]]
name = "items"
path = "/items/{id}"
methods = ["GET"]
[[routes]]
name = "items-write"
path = "/items/{id}"
methods = ["PUT", "DELETE"]
[[routes]]
name = "legacy"
path = "/legacy/**"
strip_prefix = "/legacy"
[[routes]]
name = "api"
path = "/api/**"
max_body = "8MiB"
"#;

async fn setup(config: &str) -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(config, upstream.addr).await;
    (upstream, server)
}

#[tokio::test]
async fn forwards_with_forwarding_headers_and_request_id() {
    let (upstream, server) = setup(OPEN).await;
    let reply = get_with(
        server.proxy_addr,
        "/api/users?x=1&y=%2F",
        &[("host", "app.example.com")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &upstream.requests()[0];
    assert_eq!(seen.uri, "/api/users?x=1&y=%2F");
    assert_eq!(seen.headers["host"], "app.example.com");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "app.example.com");
    let id = reply
        .header("x-request-id")
        .expect("request id on the response");
    assert_eq!(seen.headers["x-request-id"], id);
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (upstream, server) = setup(OPEN).await;
    let reply = get_with(
        server.proxy_addr,
        "/api/x",
        &[
            ("connection", "keep-alive, x-private-hop"),
            ("x-private-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &upstream.requests()[0].headers;
    for gone in ["x-private-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(!seen.contains_key(gone), "{gone} was forwarded");
    }
    assert_eq!(seen["x-kept"], "yes");
}

#[tokio::test]
async fn no_route_is_404_and_never_reaches_the_upstream() {
    let (upstream, server) = setup(OPEN).await;
    let reply = get(server.proxy_addr, "/not/routed").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    let problem = reply.json();
    assert_eq!(problem["status"], 404);
    assert_eq!(problem["request_id"], reply.header("x-request-id").unwrap());
    assert!(
        problem["type"].is_string()
            && problem["title"].is_string()
            && problem["detail"].is_string()
    );
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_of_every_matching_route() {
    let (upstream, server) = setup(OPEN).await;
    let reply = send(
        server.proxy_addr,
        Request::post("/items/7").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, PUT, DELETE"));
    assert_eq!(upstream.count(), 0);
    // A later route with the method takes it.
    let reply = send(
        server.proxy_addr,
        Request::delete("/items/7").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn unreachable_upstream_is_502_without_revealing_its_address() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = start_palisade(OPEN, closed).await;
    let reply = get(server.proxy_addr, "/api/x").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let body = String::from_utf8_lossy(&reply.body).to_string();
    assert!(!body.contains(&closed.port().to_string()), "{body}");
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_upstream_errors_total{kind=\"connect\",route=\"api\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn development_mode_says_what_failed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config =
        format!("[server]\nlisten = \"127.0.0.1:0\"\nenvironment = \"development\"\n{OPEN}");
    let server = start_palisade(&config, closed).await;
    let reply = get(server.proxy_addr, "/api/x").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        reply.json()["detail"].as_str().unwrap().contains("connect"),
        "{:?}",
        reply.json()
    );
}

#[tokio::test]
async fn each_route_gets_its_own_timeout() {
    let (_upstream, server) = setup(OPEN).await;
    let slow = get_with(
        server.proxy_addr,
        "/slow/report",
        &[("x-test-delay-ms", "1000")],
    )
    .await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        slow.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        slow.json()["request_id"],
        slow.header("x-request-id").unwrap()
    );
    let patient = get_with(
        server.proxy_addr,
        "/patient/report",
        &[("x-test-delay-ms", "1000")],
    )
    .await;
    assert_eq!(patient.status, StatusCode::OK);
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"timeout\",route=\"slow\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "palisade_upstream_errors_total{kind=\"timeout\",route=\"slow\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn trusted_request_id_is_kept_invalid_one_replaced() {
    let (upstream, server) = setup(OPEN).await;
    let kept = get_with(
        server.proxy_addr,
        "/api/x",
        &[("x-request-id", "trace-abc.123:4")],
    )
    .await;
    assert_eq!(kept.header("x-request-id"), Some("trace-abc.123:4"));
    assert_eq!(
        upstream.requests()[0].headers["x-request-id"],
        "trace-abc.123:4"
    );
    let replaced = get_with(
        server.proxy_addr,
        "/api/x",
        &[("x-request-id", "bad id with spaces")],
    )
    .await;
    let new_id = replaced.header("x-request-id").unwrap();
    assert_ne!(new_id, "bad id with spaces");
    assert_eq!(upstream.requests()[1].headers["x-request-id"], new_id);
    // On errors too.
    let error = get_with(
        server.proxy_addr,
        "/nowhere",
        &[("x-request-id", "err-id-1")],
    )
    .await;
    assert_eq!(error.header("x-request-id"), Some("err-id-1"));
    assert_eq!(error.json()["request_id"], "err-id-1");
}

#[tokio::test]
async fn untrusted_request_id_config_always_generates() {
    let config =
        format!("[request_id]\nheader = \"X-Correlation-Id\"\ntrust_incoming = false\n{OPEN}");
    let (upstream, server) = setup(&config).await;
    let reply = get_with(
        server.proxy_addr,
        "/api/x",
        &[("x-correlation-id", "client-chosen")],
    )
    .await;
    let id = reply.header("x-correlation-id").unwrap();
    assert_ne!(id, "client-chosen");
    assert_eq!(upstream.requests()[0].headers["x-correlation-id"], id);
}

#[tokio::test]
async fn upstream_errors_pass_through_untouched() {
    let (_upstream, server) = setup(OPEN).await;
    let reply = get_with(server.proxy_addr, "/api/x", &[("x-test-status", "503")]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.json()["uri"].is_string(), "the upstream's own body");
}

#[tokio::test]
async fn five_mib_request_body_arrives_intact() {
    let (upstream, server) = setup(OPEN).await;
    let payload = pattern_bytes(0, 5 * 1024 * 1024);
    let reply = send(
        server.proxy_addr,
        Request::post("/api/upload")
            .body(Full::new(Bytes::from(payload.clone())))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &upstream.requests()[0];
    assert!(seen.complete);
    assert_eq!(seen.body_len, payload.len());
    assert_eq!(seen.body_sha256, sha256_hex(&payload));
}

#[tokio::test]
async fn five_mib_streamed_response_arrives_intact() {
    let (_upstream, server) = setup(OPEN).await;
    let size = 5 * 1024 * 1024;
    let reply = get_with(
        server.proxy_addr,
        "/api/download",
        &[("x-test-stream-bytes", &size.to_string())],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), size);
    assert_eq!(sha256_hex(&reply.body), sha256_hex(&pattern_bytes(0, size)));
}

#[tokio::test]
async fn request_body_is_streamed_not_buffered() {
    let (upstream, server) = setup(OPEN).await;
    let mut first_bytes = upstream.notify_first_body_bytes();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
    let body = StreamBody::new(ReceiverStream(rx));
    let addr = server.proxy_addr;
    let request = tokio::spawn(async move {
        let req = Request::post(format!("http://{addr}/api/stream"))
            .body(body)
            .unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let response = client.request(req).await.unwrap();
        let status = response.status();
        let _ = response.into_body().collect().await;
        status
    });
    tx.send(Ok(Frame::data(Bytes::from(vec![b'a'; 1024]))))
        .await
        .unwrap();
    // The upstream sees the first bytes while the client still holds the rest.
    let seen = tokio::time::timeout(Duration::from_secs(10), first_bytes.recv())
        .await
        .expect("first bytes reach the upstream before the body ends");
    assert!(seen.unwrap() > 0);
    assert_eq!(upstream.count(), 0, "the upstream has not seen the end yet");
    tx.send(Ok(Frame::data(Bytes::from(vec![b'b'; 1024]))))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(request.await.unwrap(), StatusCode::OK);
    assert_eq!(upstream.requests()[0].body_len, 2048);
}

#[tokio::test]
async fn strip_prefix_and_canonical_path_reach_the_upstream() {
    let (upstream, server) = setup(OPEN).await;
    assert_eq!(
        get(server.proxy_addr, "/legacy/v1//users?q=1").await.status,
        StatusCode::OK
    );
    assert_eq!(upstream.requests()[0].uri, "/v1/users?q=1");
}

/// A chunked body on a method without defined body semantics (GET, HEAD,
/// DELETE) reaches the upstream whole, chunked: it was sent as no body at
/// all (the red team, session 13).
#[tokio::test]
async fn a_chunked_body_on_a_get_reaches_the_upstream() {
    let (upstream, server) = setup(OPEN).await;
    for method in ["GET", "DELETE", "OPTIONS"] {
        let request = format!(
            "{method} /api/cg HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let response = raw(server.proxy_addr, request.as_bytes()).await;
        assert_eq!(raw_status(&response), 200, "{method}: {response}");
        let seen = upstream.requests().pop().unwrap();
        assert_eq!(seen.method, method);
        assert_eq!(
            (seen.body_len, seen.body_sha256.as_str()),
            (5, sha256_hex(b"hello").as_str()),
            "{method}: the body did not arrive"
        );
        assert!(seen.complete, "{method}");
    }
}

#[tokio::test]
async fn strip_prefix_applies_in_whatever_case_the_route_matched() {
    // Routes match literal segments ignoring case, so `/LEGACY/x` takes the
    // `legacy` route: the upstream must get `/x`, not the unstripped path
    // a case-sensitive strip left it.
    let (upstream, server) = setup(OPEN).await;
    for (sent, forwarded) in [
        ("/LEGACY/v1/users?q=1", "/v1/users?q=1"),
        ("/Legacy", "/"),
        ("/legacyX/v1", "/legacyX/v1"),
    ] {
        let status = get(server.proxy_addr, sent).await.status;
        let expected = if sent == "/legacyX/v1" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(status, expected, "{sent}");
        if expected == StatusCode::OK {
            assert_eq!(upstream.requests().last().unwrap().uri, forwarded, "{sent}");
        }
    }
    assert_eq!(upstream.count(), 2, "nothing else reached the upstream");
}

#[tokio::test]
async fn strip_prefix_applies_to_escaped_spellings_the_route_matched() {
    // `/%40api/x` takes the `/@api/**` route (routers decode it to `@api`),
    // so it loses the prefix too; written escaped in the file, the prefix
    // still strips the raw spelling.
    for (pattern, prefix) in [("/@api/**", "/@api"), ("/%40api/**", "/%40api")] {
        let config = OPEN.replace(
            "[[routes]]\nname = \"legacy\"",
            &format!(
                "[[routes]]\nname = \"at\"\npath = \"{pattern}\"\nstrip_prefix = \"{prefix}\"\n\
                 [[routes]]\nname = \"legacy\""
            ),
        );
        let (upstream, server) = setup(&config).await;
        for sent in ["/%40api/secret", "/@api/secret", "/%40API/secret"] {
            assert_eq!(get(server.proxy_addr, sent).await.status, StatusCode::OK);
            assert_eq!(
                upstream.requests().last().unwrap().uri,
                "/secret",
                "{pattern}: {sent}"
            );
        }
    }
}

#[tokio::test]
async fn preserve_host_false_sends_the_upstream_host() {
    let config = OPEN.replace(
        "url = \"{UPSTREAM}\"",
        "url = \"{UPSTREAM}\"\npreserve_host = false",
    );
    let (upstream, server) = setup(&config).await;
    get_with(server.proxy_addr, "/api/x", &[("host", "public.example")]).await;
    let seen = &upstream.requests()[0].headers;
    assert_eq!(seen["host"], upstream.addr.to_string());
    assert_eq!(seen["x-forwarded-host"], "public.example");
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    // Not trusted: the peer is the client and the chain is replaced by it.
    let (upstream, server) = setup(OPEN).await;
    get_with(
        server.proxy_addr,
        "/api/x",
        &[("x-forwarded-for", "6.6.6.6")],
    )
    .await;
    assert_eq!(
        upstream.requests()[0].headers["x-forwarded-for"],
        "127.0.0.1"
    );
    // Trusted loopback proxy with a https hint.
    let config =
        format!("[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n{OPEN}");
    let (upstream, server) = setup(&config).await;
    get_with(
        server.proxy_addr,
        "/api/x",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    let seen = &upstream.requests()[0].headers;
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let (upstream, server) = setup(OPEN).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{}/api/h2", server.proxy_addr))
        .body(Full::default())
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let seen = &upstream.requests()[0];
    assert_eq!(seen.uri, "/api/h2");
    assert_eq!(seen.headers["host"], server.proxy_addr.to_string());
}

#[tokio::test]
async fn admin_endpoints() {
    let config =
        format!("[auth.secrets.hook]\nheader = \"X-Hook\"\nvalue = \"${{HOOK_SECRET}}\"\n{OPEN}");
    let (upstream, server) = setup(&config).await;
    assert_eq!(
        get(server.admin_addr, "/healthz").await.status,
        StatusCode::OK
    );
    let ready = get(server.admin_addr, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["status"], "ready");
    let config_json = get(server.admin_addr, "/config").await;
    assert_eq!(config_json.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&config_json.body);
    assert!(!text.contains(HOOK_SECRET), "{text}");
    assert_eq!(
        config_json.json()["auth"]["secrets"]["hook"]["value"],
        "<redacted>"
    );
    // The admin listener never proxies; what it does not serve is a
    // problem+json 404 like every other error palisade produces.
    let unknown = get(server.admin_addr, "/api/x").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.headers["content-type"], "application/problem+json");
    assert_eq!(unknown.json()["status"], 404);
    assert!(
        unknown.json()["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(upstream.count(), 0);
    // The proxy listener does not serve admin paths.
    assert_eq!(
        get(server.proxy_addr, "/metrics").await.status,
        StatusCode::NOT_FOUND
    );
    // Every admin endpoint only reads: another method gets 405 with
    // `Allow`, where `POST /config` used to answer 200.
    for (method, path) in [
        ("POST", "/config"),
        ("DELETE", "/metrics"),
        ("PUT", "/readyz"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", server.admin_addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let refused = send(server.admin_addr, request).await;
        assert_eq!(
            refused.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(refused.headers["allow"], "GET, HEAD");
        assert_eq!(refused.headers["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn admin_answers_head_over_http2_without_content() {
    // A HEAD response carries no content (RFC 9110 §9.3.2): DATA frames
    // after the admin listener's answer are a protocol error to clients.
    let (_upstream, server) = setup(OPEN).await;
    assert_head_over_h2_without_content(
        server.admin_addr,
        &[
            ("/readyz", StatusCode::OK),
            ("/metrics", StatusCode::OK),
            ("/nope", StatusCode::NOT_FOUND),
        ],
    )
    .await;
}

#[tokio::test]
async fn metrics_are_labelled_by_route_name_with_bounded_labels() {
    let (_upstream, server) = setup(OPEN).await;
    get(server.proxy_addr, "/health").await;
    get(server.proxy_addr, "/api/a").await;
    get(server.proxy_addr, "/nope").await;
    let before = metrics(&server).await;
    for expected in [
        "palisade_requests_total{method=\"GET\",route=\"health\",status=\"200\"} 1",
        "palisade_requests_total{method=\"GET\",route=\"api\",status=\"200\"} 1",
        "palisade_requests_total{method=\"GET\",route=\"-\",status=\"404\"} 1",
        "palisade_rejections_total{reason=\"no_route\",route=\"-\"} 1",
        "palisade_request_duration_seconds_count{route=\"api\"} 1",
        "palisade_upstream_duration_seconds_count{route=\"api\"} 1",
        "palisade_requests_in_flight 0",
        "palisade_circuit_state{upstream=",
        "palisade_config_last_reload_success_timestamp_seconds",
        "palisade_build_info{version=",
    ] {
        assert!(before.contains(expected), "missing {expected} in\n{before}");
    }
    let series = |scrape: &str| {
        scrape
            .lines()
            .filter(|l| l.starts_with("palisade_"))
            .count()
    };
    for i in 0..200 {
        get(server.proxy_addr, &format!("/api/item-{i}")).await;
        get(server.proxy_addr, &format!("/unrouted-{i}")).await;
    }
    let after = metrics(&server).await;
    assert_eq!(series(&before), series(&after), "new label values appeared");
    assert!(!after.contains("item-1"));
    assert_eq!(
        sample(
            &after,
            "palisade_requests_total{method=\"GET\",route=\"api\",status=\"200\"}"
        ),
        201.0
    );
}

const WEBSOCKET_HANDSHAKE: &[u8] = b"GET /api/socket HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[tokio::test]
async fn websocket_upgrades_are_tunnelled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, server) = setup(OPEN).await;
    let mut stream = tokio::net::TcpStream::connect(server.proxy_addr)
        .await
        .unwrap();
    stream.write_all(WEBSOCKET_HANDSHAKE).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("x-request-id"), "{head}");
    let seen = &upstream.requests()[0].headers;
    assert_eq!(seen["upgrade"], "websocket");
    assert_eq!(seen["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
    // Bytes flow both ways through the tunnel.
    for message in [&b"hello"[..], b"second frame"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message.to_ascii_uppercase());
    }
}

#[tokio::test]
async fn upgrade_requests_pass_the_request_policy_first() {
    let upstream = TestUpstream::start().await;
    let config = "[upstream]\nurl = \"{UPSTREAM}\"\n[auth.jwt]\nhs256_secret = \"${JWT_SECRET}\"\n[[routes]]\nname = \"api\"\npath = \"/api/**\"\n";
    let server = start_palisade(config, upstream.addr).await;
    let handshake = String::from_utf8_lossy(WEBSOCKET_HANDSHAKE)
        .replace("Connection: Upgrade", "Connection: Upgrade, close");
    let response = raw(server.proxy_addr, handshake.as_bytes()).await;
    assert_eq!(raw_status(&response), 401);
    assert_eq!(upstream.count(), 0);
}
