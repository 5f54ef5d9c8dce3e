//! Issue 3: request hygiene over real sockets: path tricks (raw bytes),
//! size limits, streamed body limit, security headers, CORS, slow clients,
//! the connection cap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
header_read_timeout = "1s"
max_header_bytes = "4KiB"
max_uri_bytes = "1KiB"
trusted_proxies = ["127.0.0.1/32"]
[upstream]
url = "{UPSTREAM}"
[cors]
allow_origins = ["https://app.example.com"]
allow_credentials = true
[defaults]
auth = "none"
max_body = "64KiB"
[[routes]]
name = "embeddings"
path = "/api/embeddings/**"
max_body = "1KiB"
[[routes]]
name = "slow-body"
path = "/upload/**"
timeout = "500ms"
[[routes]]
name = "no-cors"
path = "/internal/**"
cors = false
[[routes]]
name = "framed"
path = "/embed/**"
security_headers = { x_frame_options = "SAMEORIGIN", content_security_policy = "" }
[[routes]]
name = "catch-all"
path = "/**"
"#;

async fn setup() -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CONFIG, upstream.addr).await;
    (upstream, server)
}

/// Raw request targets that must be refused with 400 and never forwarded.
/// Sent as bytes on a socket: HTTP clients would normalise them.
const PATH_TRICKS: &[&str] = &[
    "/api/../admin",
    "/api/./admin",
    "/../etc/passwd",
    "/./api",
    "/api/..",
    "/api/.",
    "//api/../admin",
    "/api/%2e%2e/admin",
    "/api/%2E%2E/admin",
    "/api/%2e%2E/admin",
    "/api/.%2e/admin",
    "/api/%2e./admin",
    "/api/%2e/admin",
    "/api/%2e%2e%2fadmin",
    "/api%2fadmin",
    "/api%2Fadmin",
    "/api/%2F..%2Fadmin",
    "/api%5cadmin",
    "/api%5Cadmin",
    "/api/%2e%2e%5cadmin",
    "/api\\admin",
    "/api/..\\admin",
    "/api/%252e%252e/admin",
    "/api/%25",
    "/api/%2525",
    "/api/%00",
    "/api/x%00.json",
    "/api/%zz",
    "/api/%4",
    "/api/%",
    "/api/%%32%65",
    "/api/%u002e%u002e/admin",
    "/api/..;/admin",
    "/api/.;/admin",
    "/api/%2e%2e;/admin",
    "/matrix;v=1/x",
    "/api;/admin",
    "/api/%c0%ae%c0%ae/admin",
    "/api/x/..%2F",
    "/api/%0d%0aSet-Cookie:x=1",
    "http://test/api/../admin",
];

#[tokio::test]
async fn path_tricks_are_refused_and_never_forwarded() {
    let (upstream, server) = setup().await;
    let mut failures = Vec::new();
    for trick in PATH_TRICKS {
        let response = raw_get(server.proxy_addr, trick).await;
        let status = raw_status(&response);
        if status != 400 {
            failures.push(format!("{trick} -> {status}"));
        }
    }
    assert!(failures.is_empty(), "not refused: {failures:#?}");
    assert!(PATH_TRICKS.len() >= 30);
    assert_eq!(
        upstream.count(),
        0,
        "a trick reached the upstream: {:#?}",
        upstream.requests()
    );
    let scrape = metrics(&server).await;
    assert!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"path\",route=\"-\"}"
        ) >= 30.0,
        "{scrape}"
    );
}

#[tokio::test]
async fn refused_path_is_problem_json() {
    let (_upstream, server) = setup().await;
    let response = raw_get(server.proxy_addr, "/api/%2e%2e/admin").await;
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{response}"
    );
}

#[tokio::test]
async fn innocent_paths_pass_in_canonical_form() {
    let (upstream, server) = setup().await;
    let cases = [
        ("/files/hello%20world.txt", "/files/hello%20world.txt"),
        ("/files/caf%c3%a9", "/files/caf%C3%A9"),
        (
            "/files/caf\u{e9}".replace('\u{e9}', "%C3%A9").as_str(),
            "/files/caf%C3%A9",
        ),
        (
            "/.well-known/openid-configuration",
            "/.well-known/openid-configuration",
        ),
        (
            "/search?q=../../etc/passwd&x=%2F%00",
            "/search?q=../../etc/passwd&x=%2F%00",
        ),
        ("/a.b/c..d/...", "/a.b/c..d/..."),
        ("/~user/%7Eother", "/~user/~other"),
        ("//double//slashes///", "/double/slashes/"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    for (i, (path, expected)) in cases.iter().enumerate() {
        let response = raw_get(server.proxy_addr, path).await;
        assert_eq!(raw_status(&response), 200, "{path}: {response}");
        assert_eq!(&upstream.requests()[i].uri, expected, "{path}");
    }
}

#[tokio::test]
async fn encoded_path_matches_its_canonical_route_not_the_catch_all() {
    let (upstream, server) = setup().await;
    let response = raw_get(server.proxy_addr, "/api/%65mbeddings/x").await;
    assert_eq!(raw_status(&response), 200);
    assert_eq!(upstream.requests()[0].uri, "/api/embeddings/x");
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_requests_total{method=\"GET\",route=\"embeddings\",status=\"200\"}"
        ),
        1.0,
        "{scrape}"
    );
    // And no other route counted it (summed over every label value, so no
    // spelling of the catch-all's labels can make this pass by itself).
    assert_eq!(
        family_total(&scrape, "palisade_requests_total"),
        1.0,
        "{scrape}"
    );
}

#[tokio::test]
async fn fragment_never_reaches_the_upstream() {
    // SPEC §3 allows 400 or dropping the fragment before matching; palisade
    // drops it (HTTP's request-target parser cuts it off before palisade's
    // stages run), so the request is served as if it had none. A fragment
    // that reached palisade's stages would be refused (400: `#` is no path
    // character) or forwarded; either fails here.
    let (upstream, server) = setup().await;
    let response = raw_get(server.proxy_addr, "/page#section").await;
    assert_eq!(raw_status(&response), 200, "{response}");
    assert_eq!(upstream.wait_for_count(1).await[0].uri, "/page");
    let response = raw_get(server.proxy_addr, "/page?q=1#section/../admin").await;
    assert_eq!(raw_status(&response), 200, "{response}");
    assert_eq!(upstream.wait_for_count(2).await[1].uri, "/page?q=1");
    // Matched without it: the fragment holds what palisade refuses in a
    // path (dot segments, `;`, an encoded `/`) and another route's prefix.
    let response = raw_get(
        server.proxy_addr,
        "/api/embeddings/x#/../../internal/y;a=%2f",
    )
    .await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let seen = upstream.wait_for_count(3).await;
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(seen[2].uri, "/api/embeddings/x");
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_requests_total{method=\"GET\",route=\"embeddings\",status=\"200\"}"
        ),
        1.0,
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            "palisade_requests_total{method=\"GET\",route=\"catch-all\",status=\"200\"}"
        ),
        2.0,
        "{scrape}"
    );
    assert_eq!(family_total(&scrape, "palisade_requests_total"), 3.0);
}

#[tokio::test]
async fn long_uri_is_414() {
    let (upstream, server) = setup().await;
    let path = format!("/x/{}", "a".repeat(2000));
    let response = raw_get(server.proxy_addr, &path).await;
    assert_eq!(raw_status(&response), 414);
    assert_eq!(upstream.count(), 0);
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"uri_too_long\",route=\"-\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn large_header_block_is_431() {
    let (upstream, server) = setup().await;
    let big = "v".repeat(5000);
    let response = raw(
        server.proxy_addr,
        format!("GET /x HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&response), 431);
    // Many small headers count too.
    let many: String = (0..200)
        .map(|i| format!("X-H{i}: {}\r\n", "y".repeat(20)))
        .collect();
    let response = raw(
        server.proxy_addr,
        format!("GET /x HTTP/1.1\r\nHost: t\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&response), 431);
    // Far past hyper's own buffer: still refused, never forwarded.
    let huge = "w".repeat(64 * 1024);
    let response = raw(
        server.proxy_addr,
        format!("GET /x HTTP/1.1\r\nHost: t\r\nX-Huge: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&response), 431);
    assert_eq!(upstream.count(), 0);
    let scrape = metrics(&server).await;
    assert!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"header_too_large\",route=\"-\"}"
        ) >= 2.0
    );
}

#[tokio::test]
async fn declared_oversized_body_is_413_at_once_without_upstream_contact() {
    let (upstream, server) = setup().await;
    // Only the headers are sent: the answer must not wait for the body.
    let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
    stream
        .write_all(b"POST /api/embeddings/x HTTP/1.1\r\nHost: t\r\nContent-Length: 10485760\r\nOrigin: https://app.example.com\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("answered before the body")
        .unwrap();
    let response = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(raw_status(&response), 413, "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(
        lower.contains("access-control-allow-origin: https://app.example.com"),
        "{response}"
    );
    assert!(lower.contains("x-frame-options: deny"), "{response}");
    assert!(lower.contains("application/problem+json"));
    assert_eq!(upstream.count(), 0);
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"body_too_large\",route=\"embeddings\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn chunked_body_past_the_limit_is_413_and_aborted_upstream() {
    let (upstream, server) = setup().await;
    let mut first = upstream.notify_first_body_bytes();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
    let addr = server.proxy_addr;
    let request = tokio::spawn(async move {
        let req = Request::post(format!("http://{addr}/api/embeddings/x"))
            .body(StreamBody::new(ReceiverStream(rx)))
            .unwrap();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let response = client.request(req).await.unwrap();
        (response.status(), response.headers().clone())
    });
    tx.send(Ok(Frame::data(Bytes::from(vec![b'a'; 600]))))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), first.recv())
        .await
        .unwrap();
    // 600 + 600 > 1KiB: the stream passes the limit here.
    tx.send(Ok(Frame::data(Bytes::from(vec![b'b'; 600]))))
        .await
        .unwrap();
    let (status, headers) = request.await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers["content-type"], "application/problem+json");
    drop(tx);
    // The upstream saw the start of a request that never completed.
    let seen = upstream.wait_for_count(1).await;
    assert_eq!(seen.len(), 1);
    assert!(
        !seen[0].complete,
        "the upstream got a complete, truncated request: {seen:#?}"
    );
    assert!(seen[0].body_len <= 1024);
}

#[tokio::test]
async fn body_within_the_limit_passes() {
    let (upstream, server) = setup().await;
    let reply = send(
        server.proxy_addr,
        Request::post("/api/embeddings/x")
            .body(Full::new(Bytes::from(vec![b'z'; 1024])))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.requests()[0].body_len, 1024);
}

fn assert_security_headers(headers: &http::HeaderMap, what: &str) {
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("x-xss-protection", "0"),
        ("referrer-policy", "no-referrer"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ] {
        assert_eq!(
            headers.get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{what}: {name}"
        );
    }
    assert!(
        !headers.contains_key("strict-transport-security"),
        "{what}: HSTS on plain HTTP"
    );
    assert!(
        !headers.contains_key("permissions-policy"),
        "{what}: empty value must be omitted"
    );
}

#[tokio::test]
async fn security_headers_on_success_and_errors() {
    let (_upstream, server) = setup().await;
    let ok = get(server.proxy_addr, "/anything").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_security_headers(&ok.headers, "200");
    assert!(
        !ok.headers.contains_key("server"),
        "upstream Server header kept"
    );
    assert!(!ok.headers.contains_key("x-powered-by"));
    let too_large = send(
        server.proxy_addr,
        Request::post("/api/embeddings/x")
            .body(Full::new(Bytes::from(vec![0u8; 4096])))
            .unwrap(),
    )
    .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_security_headers(&too_large.headers, "413");
    let bad = raw_get(server.proxy_addr, "/a/%2e%2e/b").await;
    assert!(bad.to_ascii_lowercase().contains("x-frame-options: deny"));
}

#[tokio::test]
async fn route_overrides_security_headers() {
    let (_upstream, server) = setup().await;
    let reply = get(server.proxy_addr, "/embed/widget").await;
    assert_eq!(reply.header("x-frame-options"), Some("SAMEORIGIN"));
    assert!(!reply.headers.contains_key("content-security-policy"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn hsts_only_when_a_trusted_proxy_says_https() {
    let (_upstream, server) = setup().await;
    let plain = get(server.proxy_addr, "/x").await;
    assert!(!plain.headers.contains_key("strict-transport-security"));
    let behind_tls = get_with(server.proxy_addr, "/x", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(
        behind_tls.header("strict-transport-security"),
        Some("max-age=63072000; includeSubDomains")
    );
    // An untrusted peer claiming https is not believed.
    let upstream = TestUpstream::start().await;
    let untrusting = start_palisade(
        &CONFIG.replace("trusted_proxies = [\"127.0.0.1/32\"]", ""),
        upstream.addr,
    )
    .await;
    let spoofed = get_with(
        untrusting.proxy_addr,
        "/x",
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(!spoofed.headers.contains_key("strict-transport-security"));
}

#[tokio::test]
async fn cors_preflight_is_answered_without_upstream_or_credentials() {
    let (upstream, server) = setup().await;
    let preflight = Request::options("/api/embeddings/x")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .body(Full::default())
        .unwrap();
    let reply = send(server.proxy_addr, preflight).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(
        reply
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        reply
            .header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );
    assert_eq!(reply.header("access-control-max-age"), Some("600"));
    assert!(reply.header("vary").unwrap().contains("Origin"));
    assert!(reply.headers.contains_key("x-request-id"));
    assert_eq!(upstream.count(), 0);
}

/// A CORS preflight for `path` from `origin`, asking for `method`.
fn preflight(path: &str, origin: &str, method: &str) -> Request<Full<Bytes>> {
    Request::options(path)
        .header("origin", origin)
        .header("access-control-request-method", method)
        .body(Full::default())
        .unwrap()
}

/// Red team, session 29: `remove_response_headers` is for the upstream's
/// answers; a preflight is palisade's own, and lost its `Vary` and
/// `Access-Control-Allow-Origin` (a browser then fails the preflight).
#[tokio::test]
async fn a_preflight_keeps_its_headers_whatever_the_removal_list() {
    let upstream = TestUpstream::start().await;
    let config = CONFIG.replace(
        "[defaults]",
        "[security_headers]\nremove_response_headers = [\"Vary\", \"Access-Control-Allow-Origin\", \"Access-Control-Max-Age\"]\n[defaults]",
    );
    let server = start_palisade(&config, upstream.addr).await;
    let reply = send(
        server.proxy_addr,
        preflight("/x", "https://app.example.com", "POST"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(reply.header("access-control-max-age"), Some("600"));
    assert!(reply.header("vary").unwrap().contains("Origin"));
    assert_eq!(upstream.count(), 0);
    // The upstream's answer still loses them (palisade sets its own CORS
    // headers after the removal).
    let actual = get_with(
        server.proxy_addr,
        "/x",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(actual.status, StatusCode::OK);
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

#[tokio::test]
async fn disallowed_origin_gets_no_cors_headers() {
    let (upstream, server) = setup().await;
    let reply = send(
        server.proxy_addr,
        preflight("/x", "https://evil.example", "DELETE"),
    )
    .await;
    assert!(!reply.headers.contains_key("access-control-allow-origin"));
    assert_eq!(upstream.count(), 0);
    let actual = get_with(
        server.proxy_addr,
        "/x",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(actual.status, StatusCode::OK);
    assert!(!actual.headers.contains_key("access-control-allow-origin"));
    assert!(
        !actual
            .headers
            .contains_key("access-control-allow-credentials")
    );
    assert_eq!(actual.header("vary"), Some("Origin"));
}

#[tokio::test]
async fn allowed_origin_on_actual_responses_and_errors() {
    let (_upstream, server) = setup().await;
    let ok = get_with(
        server.proxy_addr,
        "/x",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert!(
        ok.header("access-control-expose-headers")
            .unwrap()
            .contains("X-Request-Id")
    );
    let too_large = send(
        server.proxy_addr,
        Request::post("/api/embeddings/x")
            .header("origin", "https://app.example.com")
            .body(Full::new(Bytes::from(vec![0u8; 4096])))
            .unwrap(),
    )
    .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_large.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // Without an Origin there is nothing to vary on and no CORS headers.
    let plain = get(server.proxy_addr, "/x").await;
    assert!(!plain.headers.contains_key("access-control-allow-origin"));
}

/// Red team, session 27: CORS is palisade's on a CORS-enabled route. The
/// upstream's own `Access-Control-*` headers never reach the client: not
/// beside an allowed origin's (an `Allow-Credentials` the policy turned
/// off would let a browser read with cookies), not to a refused origin,
/// not to a request without `Origin` (a shared cache could replay them).
#[tokio::test]
async fn the_upstreams_own_cors_headers_never_reach_the_client() {
    const CORS: [&str; 7] = [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-max-age",
        "access-control-allow-private-network",
    ];
    let upstream = TestUpstream::start().await;
    let without_credentials = CONFIG.replace(
        "allow_credentials = true",
        "allow_credentials = false\nexpose_headers = []",
    );
    for (config, credentials) in [(CONFIG.to_string(), true), (without_credentials, false)] {
        let server = start_palisade(&config, upstream.addr).await;
        let addr = server.proxy_addr;
        let ask = |origin: Option<&'static str>| async move {
            let mut headers = vec![("x-test-cors", "1")];
            headers.extend(origin.map(|o| ("origin", o)));
            get_with(addr, "/x", &headers).await
        };
        let allowed = ask(Some("https://app.example.com")).await;
        assert_eq!(allowed.status, StatusCode::OK);
        let values = |name: &str| {
            allowed
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        // Preflight-only headers are palisade's preflight answer's alone.
        for name in &CORS[3..] {
            assert!(values(name).is_empty(), "{name}");
        }
        assert_eq!(
            values("access-control-allow-origin"),
            ["https://app.example.com"]
        );
        if credentials {
            assert_eq!(values("access-control-allow-credentials"), ["true"]);
            assert_eq!(
                values("access-control-expose-headers"),
                ["X-Request-Id, RateLimit, RateLimit-Policy, Retry-After"]
            );
        } else {
            assert!(values("access-control-allow-credentials").is_empty());
            assert!(values("access-control-expose-headers").is_empty());
        }
        for refused in [ask(Some("https://evil.example")).await, ask(None).await] {
            assert_eq!(refused.status, StatusCode::OK);
            for name in CORS {
                assert!(!refused.headers.contains_key(name), "{name}: {refused:?}");
            }
        }
        server.shutdown();
    }
}

#[tokio::test]
async fn route_with_cors_off_forwards_preflights() {
    let (upstream, server) = setup().await;
    let reply = send(
        server.proxy_addr,
        preflight("/internal/x", "https://app.example.com", "POST"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "forwarded as a plain OPTIONS");
    assert_eq!(upstream.count(), 1);
    assert!(!reply.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn slow_header_client_is_cut_off_while_others_are_served() {
    let (upstream, server) = setup().await;
    let mut slow = TcpStream::connect(server.proxy_addr).await.unwrap();
    let request = b"GET /slowloris HTTP/1.1\r\nHost: t\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let drip = tokio::spawn(async move {
        for byte in request {
            if slow.write_all(&[*byte]).await.is_err() {
                return (true, slow);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            // A closed connection shows up as EOF on read.
            let mut probe = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
            {
                return (true, slow);
            }
        }
        (false, slow)
    });
    // Meanwhile other clients are served.
    for _ in 0..3 {
        assert_eq!(get(server.proxy_addr, "/fine").await.status, StatusCode::OK);
    }
    let (cut_off, _stream) = tokio::time::timeout(Duration::from_secs(30), drip)
        .await
        .unwrap()
        .unwrap();
    assert!(cut_off, "the trickling client was never disconnected");
    assert!(upstream.requests().iter().all(|r| r.uri != "/slowloris"));
}

#[tokio::test]
async fn trickling_body_is_bounded_by_the_route_timeout() {
    let (upstream, server) = setup().await;
    let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
    stream
        .write_all(
            b"POST /upload/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nonly-some-bytes",
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    let response = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(raw_status(&response), 504, "{response}");
    let seen = upstream.wait_for_count(1).await;
    assert!(!seen[0].complete, "{seen:#?}");
}

/// Sends one keep-alive request on `stream` and reads its (small) response.
async fn round_trip(stream: &mut TcpStream, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("a held connection answers")
        .unwrap();
    raw_status(&String::from_utf8_lossy(&buf[..n]))
}

#[tokio::test]
async fn connection_cap_queues_extra_clients_and_admin_stays_up() {
    let upstream = TestUpstream::start().await;
    let config = CONFIG.replace(
        "header_read_timeout = \"1s\"",
        "header_read_timeout = \"60s\"\nmax_connections = 2",
    );
    let server = start_palisade(&config, upstream.addr).await;
    // Two connections hold both slots (a request each, kept alive).
    let mut held = Vec::new();
    for i in 0..2 {
        let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
        assert_eq!(round_trip(&mut stream, &format!("/held-{i}")).await, 200);
        held.push(stream);
    }
    // A third client connects (the kernel completes the handshake into the
    // listen backlog) and its whole request is written before anything
    // below happens: it is at palisade's door.
    let mut third = TcpStream::connect(server.proxy_addr).await.unwrap();
    third
        .write_all(b"GET /third HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Proof by order, not by a pause: everything here runs on this test's
    // one-thread runtime, so each round trip below (client -> palisade ->
    // upstream -> back) also gives palisade's accept loop its turns. Without
    // the cap the third request, already waiting, would be accepted and
    // forwarded within the first of these; with it, it is never accepted.
    for round in 0..10 {
        for (i, stream) in held.iter_mut().enumerate() {
            assert_eq!(
                round_trip(stream, &format!("/held-{i}-again-{round}")).await,
                200
            );
        }
    }
    assert_eq!(
        get(server.admin_addr, "/healthz").await.status,
        StatusCode::OK,
        "the admin listener is not under the cap"
    );
    let uris: Vec<String> = upstream.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(
        uris.len(),
        22,
        "only the held connections were served: {uris:?}"
    );
    assert!(
        !uris.contains(&"/third".to_string()),
        "served past max_connections: {uris:?}"
    );
    let mut buf = [0u8; 1];
    assert!(
        matches!(third.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the third client got an answer past max_connections"
    );
    // Freeing one slot lets it through: accepted, forwarded, answered.
    drop(held.pop());
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), third.read_to_end(&mut response))
        .await
        .expect("the third client is served once a slot is free")
        .unwrap();
    assert_eq!(
        raw_status(&String::from_utf8_lossy(&response)),
        200,
        "{response:?}"
    );
    assert_eq!(upstream.requests().last().unwrap().uri, "/third");
}

#[tokio::test]
async fn keep_alive_lasts_idle_timeout_not_header_read_timeout() {
    let upstream = TestUpstream::start().await;
    let config = CONFIG.replace(
        "header_read_timeout = \"1s\"",
        "header_read_timeout = \"1s\"\nidle_timeout = \"3s\"",
    );
    let server = start_palisade(&config, upstream.addr).await;
    let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
    let mut buf = vec![0u8; 8192];
    stream
        .write_all(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert_eq!(raw_status(&String::from_utf8_lossy(&buf[..n])), 200);
    // Idle for longer than header_read_timeout: the connection stays usable.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    stream
        .write_all(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        n > 0,
        "closed after header_read_timeout although idle_timeout is longer"
    );
    assert_eq!(raw_status(&String::from_utf8_lossy(&buf[..n])), 200);
    // Past idle_timeout it is closed.
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("closed within idle_timeout");
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "still open after idle_timeout"
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_body_cut_short_by_the_client_never_completes_upstream() {
    let (upstream, server) = setup().await;
    let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
    // A POST (not replayable) announcing 1000 bytes; the client stops after 10.
    stream
        .write_all(b"POST /upload/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert_eq!(raw_status(&text), 400, "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    let seen = upstream.wait_for_count(1).await;
    assert!(
        !seen[0].complete,
        "the upstream got a complete request from a broken body: {seen:#?}"
    );
    assert_eq!(seen[0].body_len, 10);
}
