//! Red-team findings of session 4, each performed over a real socket:
//! `_` spellings of headers palisade reads or sets (`X_Request_Id`, a
//! rate-limit key as `X_Api_Key`), a rate-limit key header sent twice with
//! a decoy first, and a token whose dotted claim name disagrees with the
//! nested claim it spells. The upstream must never see a second value
//! beside the one palisade used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use serde_json::json;
use support::*;

const CONFIG: &str = r#"
[upstream]
url = "{UPSTREAM}"
[auth.jwt]
hs256_secret = "${JWT_SECRET}"
forward_claims = { sub = "X-User-Id" }
[[routes]]
name = "keyed"
path = "/keyed/**"
auth = "none"
rate_limits = [{ by = "header:X-Api-Key", limit = 2, per = "1m", burst = 2 }]
[[routes]]
name = "plans"
path = "/plans/**"
require_claims = { "app_metadata.plan" = ["pro"] }
[[routes]]
name = "open"
path = "/**"
auth = "none"
"#;

async fn setup() -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CONFIG, upstream.addr).await;
    (upstream, server)
}

fn header_names(seen: &support::upstream::Recorded) -> Vec<String> {
    seen.headers
        .keys()
        .map(|k| k.as_str().to_string())
        .collect()
}

#[tokio::test]
async fn an_underscore_request_id_never_reaches_the_upstream() {
    let (upstream, server) = setup().await;
    let reply = get_with(
        server.proxy_addr,
        "/open/x",
        &[("X_Request_Id", "forged-id"), ("x_REQUEST-id", "forged-2")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = upstream.requests().pop().unwrap();
    let names = header_names(&seen);
    assert_eq!(
        names.iter().filter(|n| n.contains("request")).count(),
        1,
        "only palisade's request id: {names:?}"
    );
    assert_eq!(
        seen.headers["x-request-id"],
        reply.header("x-request-id").unwrap(),
        "the id palisade logged"
    );
}

/// Session 14's red team: `Transfer_Encoding: chunked` beside a
/// `Content-Length` reached the upstream, where a CGI/WSGI-style server
/// reads it as `Transfer-Encoding` and frames the body otherwise than
/// palisade did (a desync). Every `_` spelling of a framing header goes;
/// the request is framed by its `Content-Length` alone, on both engines.
#[tokio::test]
async fn underscore_spellings_of_framing_headers_never_reach_the_upstream() {
    let (upstream, server) = setup().await;
    let request = b"POST /open/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\
        Transfer_Encoding: chunked\r\nCONTENT_length: 99\r\nKeep_Alive: 1\r\n\
        Connection: close\r\n\r\n0\r\n\r\n";
    let response = raw(server.proxy_addr, request).await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let seen = upstream.wait_for_count(1).await.pop().unwrap();
    let names = header_names(&seen);
    assert!(
        names.iter().all(|n| !n.contains('_')),
        "an underscore framing header went upstream: {names:?}"
    );
    assert_eq!(seen.headers["content-length"], "5");
    assert_eq!((seen.body_len, seen.complete), (5, true));
}

/// "httpoxy": a `Proxy` request header becomes `HTTP_PROXY` in a CGI-style
/// server, which many HTTP client libraries take as their outbound proxy.
/// It never reaches the upstream, over HTTP/1.1 (any case) or HTTP/2; nor
/// do the `_` spellings of the other hop-by-hop headers.
#[tokio::test]
async fn a_proxy_header_never_reaches_the_upstream() {
    let (upstream, server) = setup().await;
    let request = b"GET /open/h1 HTTP/1.1\r\nHost: t\r\nPROXY: http://evil.example:8080\r\n\
        Proxy_Authorization: Basic eDp5\r\nHTTP2_Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\
        Proxy-Token: kept\r\nConnection: close\r\n\r\n";
    let response = raw(server.proxy_addr, request).await;
    assert_eq!(raw_status(&response), 200, "{response}");

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let h2 = http::Request::get(format!("http://{}/open/h2", server.proxy_addr))
        .header("proxy", "http://evil.example:8080")
        .body(http_body_util::Full::default())
        .unwrap();
    let answer = client.request(h2).await.unwrap();
    assert_eq!(answer.version(), http::Version::HTTP_2);
    assert_eq!(answer.status(), StatusCode::OK);

    let seen = upstream.wait_for_count(2).await;
    for request in &seen {
        let names = header_names(request);
        assert!(
            !names.iter().any(|n| n == "proxy" || n.contains('_')),
            "{}: {names:?}",
            request.uri
        );
    }
    // Only that name: a header that merely starts with it passes.
    let h1 = seen.iter().find(|r| r.uri == "/open/h1").unwrap();
    assert_eq!(h1.headers["proxy-token"], "kept");
}

#[tokio::test]
async fn a_rate_limit_key_sent_twice_is_refused_before_the_upstream() {
    let (upstream, server) = setup().await;
    for _ in 0..2 {
        let reply = get_with(server.proxy_addr, "/keyed/a", &[("X-Api-Key", "REAL")]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let limited = get_with(server.proxy_addr, "/keyed/a", &[("X-Api-Key", "REAL")]).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let before = upstream.count();
    let joined = get_with(
        server.proxy_addr,
        "/keyed/a",
        &[("X-Api-Key", "decoy-3, REAL")],
    )
    .await;
    assert_eq!(
        joined.status,
        StatusCode::BAD_REQUEST,
        "one line with a list"
    );
    for decoy in ["decoy-1", "decoy-2", "REAL"] {
        let raw_reply = raw(
            server.proxy_addr,
            format!(
                "GET /keyed/a HTTP/1.1\r\nHost: x\r\nX-Api-Key: {decoy}\r\nX-Api-Key: REAL\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&raw_reply), 400, "{decoy}: {raw_reply}");
        assert!(raw_reply.contains("application/problem+json"));
    }
    assert_eq!(upstream.count(), before, "nothing forwarded");
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"repeated_header\",route=\"keyed\"}"
        ),
        4.0
    );
}

#[tokio::test]
async fn an_underscore_rate_limit_key_is_not_forwarded() {
    let (upstream, server) = setup().await;
    let reply = get_with(
        server.proxy_addr,
        "/keyed/b",
        &[("X-Api-Key", "mine"), ("X_Api_Key", "REAL")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = upstream.requests().pop().unwrap();
    let names = header_names(&seen);
    assert!(!names.iter().any(|n| n == "x_api_key"), "{names:?}");
    assert_eq!(seen.headers["x-api-key"], "mine");
}

#[tokio::test]
async fn a_dotted_claim_name_cannot_shadow_the_nested_claim() {
    let (upstream, server) = setup().await;
    let shadowing = token(json!({
        "sub": "u1",
        "exp": now() + 600,
        "app_metadata.plan": "pro",
        "app_metadata": { "plan": "free" },
    }));
    let auth = format!("Bearer {shadowing}");
    let reply = get_with(server.proxy_addr, "/plans/x", &[("authorization", &auth)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.count(), 0);
    let honest = token(json!({
        "sub": "u1",
        "exp": now() + 600,
        "app_metadata": { "plan": "pro" },
    }));
    let auth = format!("Bearer {honest}");
    let reply = get_with(server.proxy_addr, "/plans/x", &[("authorization", &auth)]).await;
    assert_eq!(reply.status, StatusCode::OK);
}
