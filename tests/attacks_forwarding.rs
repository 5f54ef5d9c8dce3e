//! Issue 8, attacks on what the upstream is told: `Connection` removing
//! palisade's headers, route bypass by spelling, client-claimed forwarding
//! headers, `Host` and `:authority`, method spelling and overrides, cookie
//! lines, request trailers. Each performs the attack over a real socket and
//! asserts the status and what reached the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CONFIG: &str = r#"
[upstream]
url = "{UPSTREAM}"
[auth.jwt]
hs256_secret = "${JWT_SECRET}"
forward_claims = { sub = "X-User-Id", restaurant_id = "X-Tenant-Id", role = "X-User-Role" }
[auth.secrets.vapi]
header = "X-Vapi-Secret"
value = "${HOOK_SECRET}"
[[routes]]
name = "restaurant"
path = "/api/restaurants/{restaurant_id}/**"
tenant = { param = "restaurant_id", claim = "restaurant_id" }
[[routes]]
name = "admin"
path = "/api/admin"
auth = "secret:vapi"
[[routes]]
name = "admin-feed"
path = "/api/admin.rss"
auth = "none"
[[routes]]
name = "export"
path = "/api/export.csv"
auth = "secret:vapi"
[[routes]]
name = "reports"
path = "/api/reports"
methods = ["GET"]
auth = "secret:vapi"
[[routes]]
name = "manifest"
path = "/{lang}/manifest.json"
auth = "none"
[[routes]]
name = "admin-manifest"
path = "/admin/manifest"
auth = "secret:vapi"
[[routes]]
name = "public-metrics"
path = "/internal/metrics"
auth = "none"
strip_prefix = "/internal"
[[routes]]
name = "me"
path = "/users/@me"
auth = "secret:vapi"
[[routes]]
name = "odata"
path = "/odata/$metadata"
auth = "secret:vapi"
[[routes]]
name = "vapi-webhook"
path = "/webhooks/vapi/**"
methods = ["POST"]
auth = "secret:vapi"
[[routes]]
name = "purge"
path = "/cache/**"
methods = ["PURGE"]
auth = "none"
[[routes]]
name = "open"
path = "/open/**"
auth = "none"
[[routes]]
name = "api"
path = "/**"
"#;

async fn setup() -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CONFIG, upstream.addr).await;
    (upstream, server)
}

fn user_token(tenant: &str) -> String {
    token(json!({
        "sub": "user-5",
        "exp": now() + 600,
        "restaurant_id": tenant,
        "role": "staff",
    }))
}

/// Sends a raw HTTP/1.1 request and returns the status line's code.
async fn raw_status_of(server: &palisade::Server, request: String) -> u16 {
    raw_status(&raw(server.proxy_addr, request.as_bytes()).await)
}

#[tokio::test]
async fn connection_header_cannot_remove_verified_identity() {
    let (upstream, server) = setup().await;
    let token = user_token("5");
    let request = format!(
        "GET /anything HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         X-Request-Id: client-id-1\r\n\
         Connection: keep-alive, X-User-Id, X-Tenant-Id, X-User-Role, Authorization, \
         X-Request-Id, Host, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, close\r\n\r\n"
    );
    assert_eq!(raw_status_of(&server, request).await, 200);
    let seen = &upstream.wait_for_count(1).await[0];
    assert_eq!(seen.headers["x-user-id"], "user-5");
    assert_eq!(seen.headers["x-tenant-id"], "5");
    assert_eq!(seen.headers["x-user-role"], "staff");
    assert_eq!(seen.headers["authorization"], format!("Bearer {token}"));
    assert_eq!(seen.headers["x-request-id"], "client-id-1");
    assert_eq!(seen.headers["host"], "test");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "test");
}

#[tokio::test]
async fn connection_header_still_removes_other_named_headers() {
    let (upstream, server) = setup().await;
    let request = "GET /open/x HTTP/1.1\r\nHost: test\r\nX-Hop: secret-hop\r\n\
                   Connection: X-Hop, close\r\n\r\n"
        .to_string();
    assert_eq!(raw_status_of(&server, request).await, 200);
    let seen = &upstream.wait_for_count(1).await[0];
    assert!(!seen.headers.contains_key("x-hop"));
    assert!(!seen.headers.contains_key("connection"));
}

#[tokio::test]
async fn case_and_semicolon_spellings_of_a_tenant_route_never_reach_a_looser_route() {
    let (upstream, server) = setup().await;
    let token = user_token("5");
    let auth = [("authorization", format!("Bearer {token}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Case variants of the literals match the tenant route: 403, not 200.
    for path in [
        "/api/Restaurants/6/orders",
        "/API/restaurants/6/orders",
        "/Api/RESTAURANTS/6/orders",
        "/api/restaurants/6/orders/",
        "/api/rest%61urants/6/orders",
    ] {
        let reply = get_with(server.proxy_addr, path, &auth).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(reply.json()["status"], 403);
    }
    // `;` path parameters (raw or encoded) are refused outright.
    for path in [
        "/api/restaurants;x=1/6/orders",
        "/api/restaurants;/6/orders",
        "/api/restaurants%3B/6/orders",
        "/api/restaurants/6;x/orders",
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(raw_status_of(&server, request).await, 400, "{path}");
    }
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
    // The tenant's own data in another spelling is still served.
    let reply = get_with(server.proxy_addr, "/API/Restaurants/5/orders", &auth).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn lookalike_spellings_of_a_protected_route_never_reach_a_looser_one() {
    // IIS/Windows trim trailing dots and spaces and `::$DATA`; Spring's
    // trimming matchers and NFKC-normalising apps fold fullwidth forms and
    // no-break spaces: each would serve the protected route.
    let (upstream, server) = setup().await;
    let token = user_token("5");
    for path in [
        "/webhooks/vapi./call-ended",
        "/webhooks/vapi%20/call-ended",
        "/webhooks%20/vapi/call-ended",
        "/webhooks/vapi%2e/call-ended",
        "/webhooks/vapi::$DATA/call-ended",
        "/webhooks/vapi%C2%A0/call-ended",
        "/webhooks/vapi%E2%80%8B/call-ended",
        "/webhooks/vapi%EF%BC%8E/call-ended",
        "/api/restaurants%EF%BC%8F6%EF%BC%8Forders",
        "/api/restaurants./6/orders",
        "/api/restaurants%20/6/orders",
        "/open/%EF%BC%8E%EF%BC%8E/api/admin",
        // Dot segments padded with what IIS/Windows cut (a space, the
        // stream name): `..` to such a backend, gone here once their dots
        // were cut too, so the open route matched.
        "/open/..%20/api/admin",
        "/open/..::$DATA/api/admin",
        "/open/.%20./api/admin",
        "/api/restaurants/5/..%20/6/orders",
        // NTFS stream syntax spelled with `%3A`, or its one-colon form
        // (CVE-2010-2731): IIS serves the name before it.
        "/open/..%3A%3A$DATA/api/admin",
        "/api/admin%3A%3A$INDEX_ALLOCATION",
        "/api/admin:$i30:$INDEX_ALLOCATION",
        // Unicode whitespace an app strips from a segment.
        "/api/admin%C2%85",
        "/open/..%E2%80%A8/api/admin",
        // A leading space (Spring's trimming matcher cut both ends) and
        // the Turkish I (`admin` to Java's case-insensitive compare).
        "/api/%20admin",
        "/%20api/admin",
        "/api/adm%C4%B0n",
        "/API/ADM%C4%B1N",
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(raw_status_of(&server, request).await, 400, "{path}");
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.requests());
    // Lookalikes that fold onto the route they already match are served.
    for path in ["/open/report.", "/open/caf%C3%A9", "/open/a%20b%20"] {
        let reply = get(server.proxy_addr, path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn format_suffixes_of_a_protected_route_never_reach_a_looser_one() {
    // Rails' `(.:format)` and Spring MVC's suffix matching (before 5.3)
    // serve `/api/admin` for `/api/admin.json`, which the catch-all (a JWT
    // is enough) would otherwise take without the shared secret.
    let (upstream, server) = setup().await;
    let token = user_token("5");
    for (method, path) in [
        ("GET", "/api/admin.json"),
        ("GET", "/api/admin.json/"),
        ("GET", "/API/ADMIN.JSON"),
        ("GET", "/api/admin.tar.gz"),
        ("GET", "/api/admin%2Ejson"),
        // With a trailing dot (IIS) and a fullwidth dot (NFKC) as well.
        ("GET", "/api/admin.json."),
        ("GET", "/api/admin%EF%BC%8Ejson"),
        // The webhook route takes POST only: its suffixed spelling must
        // not reach the catch-all either.
        ("POST", "/webhooks/vapi.json"),
        ("POST", "/webhooks/vapi.xml/"),
        // A protected name with a dot of its own: Rails' `(.:format)`
        // cuts at the last dot, so every dot is a cut.
        ("GET", "/api/export.csv.json"),
        ("GET", "/api/EXPORT.CSV.xml/"),
        // A wildcard route naming `manifest.json` does not take the
        // suffixed spelling of a route naming `manifest`.
        ("GET", "/admin/manifest.json"),
        // The stem's route admits anyone but strips its prefix: the
        // backend's own `/internal/metrics` is reached by no spelling.
        ("GET", "/internal/metrics.json"),
    ] {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            raw_status_of(&server, request).await,
            400,
            "{method} {path}"
        );
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.requests());
    // A suffix whose stem reaches the same route is served as usual, and
    // so is a suffixed spelling a route names itself, or one whose stem's
    // route asks nothing of anyone.
    let bearer = format!("Bearer {token}");
    for path in [
        "/open/report.pdf",
        "/static/app.js",
        "/favicon.ico",
        "/webhooks/vapi.json",
        "/api/admin.rss",
        "/.well-known/openid-configuration",
        "/en/manifest.json",
        // The stem's route (`/open/**`) admits anyone: a backend serving
        // `/open` for it gives nothing away.
        "/open.css",
    ] {
        let reply = get_with(server.proxy_addr, path, &[("authorization", &bearer)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    assert_eq!(upstream.count(), 8);
    // The feed route needs no credentials; the admin route still does.
    assert_eq!(
        get(server.proxy_addr, "/api/admin.rss").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(server.proxy_addr, "/api/admin").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn escapes_of_characters_a_path_holds_raw_reach_the_route_naming_them() {
    // `/users/%40me` is `/users/@me` to every framework that decodes the
    // path before routing; it must not slip past the route naming `@me`.
    let (upstream, server) = setup().await;
    let bearer = format!("Bearer {}", user_token("5"));
    for path in [
        "/users/%40me",
        "/users/%40ME/",
        "/odata/%24metadata",
        "/odata/%24Metadata",
    ] {
        let reply = get_with(server.proxy_addr, path, &[("authorization", &bearer)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // With a format suffix the stem is that route too: refused.
    let reply = get_with(
        server.proxy_addr,
        "/users/%40me.json",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(upstream.count(), 0, "{:?}", upstream.requests());
    // With the route's secret it is served, the path forwarded as sent
    // (its canonical form keeps the escape, SPEC §3).
    let reply = get_with(
        server.proxy_addr,
        "/users/%40me",
        &[("x-vapi-secret", HOOK_SECRET)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.requests()[0].uri, "/users/%40me");
}

#[tokio::test]
async fn palisade_answers_head_over_http2_without_content() {
    // A HEAD response carries no content (RFC 9110 §9.3.2); DATA frames
    // after palisade's own 405 or 401 are a protocol error to clients.
    let (upstream, server) = setup().await;
    assert_head_over_h2_without_content(
        server.proxy_addr,
        &[
            ("/api/reports", StatusCode::METHOD_NOT_ALLOWED),
            ("/api/admin", StatusCode::UNAUTHORIZED),
            ("/nothing-here/%2F", StatusCode::BAD_REQUEST),
        ],
    )
    .await;
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn head_never_falls_through_a_get_route_to_a_looser_one() {
    // Backends answer HEAD with their GET handler: falling through the
    // GET-only protected route to the catch-all (a JWT is enough) would
    // run it without the shared secret.
    let (upstream, server) = setup().await;
    let bearer = format!("Bearer {}", user_token("5"));
    for path in ["/api/reports", "/api/reports/", "/API/Reports"] {
        let request = format!(
            "HEAD {path} HTTP/1.1\r\nHost: test\r\nAuthorization: {bearer}\r\n\
             Connection: close\r\n\r\n"
        );
        let reply = raw(server.proxy_addr, request.as_bytes()).await;
        assert_eq!(raw_status(&reply), 405, "{path}");
        let head = reply.to_ascii_lowercase();
        assert!(head.contains("\r\nallow: get\r\n"), "{head}");
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.requests());
    // GET still needs the secret, and other methods still fall through.
    let reply = get_with(
        server.proxy_addr,
        "/api/reports",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let request = format!(
        "DELETE /api/reports HTTP/1.1\r\nHost: test\r\nAuthorization: {bearer}\r\n\
         Connection: close\r\n\r\n"
    );
    assert_eq!(raw_status_of(&server, request).await, 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn trailing_slash_reaches_the_exact_route_not_the_catch_all() {
    let (upstream, server) = setup().await;
    let token = user_token("5");
    // `/api/admin` needs the shared secret; a JWT is enough for `/**`.
    for path in ["/api/admin", "/api/admin/", "/API/ADMIN/"] {
        let reply = get_with(
            server.proxy_addr,
            path,
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(upstream.count(), 0);
}

/// Palisade with `trusted_proxies` as given (the test client is 127.0.0.1).
async fn with_trust(trusted: &str) -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [{trusted}]\n{}",
        OPEN_CONFIG
    );
    let server = start_palisade(&config, upstream.addr).await;
    (upstream, server)
}

const OPEN_CONFIG: &str = r#"
[upstream]
url = "{UPSTREAM}"
[[routes]]
name = "open"
path = "/**"
auth = "none"
rate_limits = [{ by = "ip", limit = 1, per = "1h" }]
"#;

const CLAIMED: [(&str, &str); 24] = [
    ("X-Client-IP", "1.1.1.1"),
    ("CF-Connecting-IP", "1.1.1.1"),
    ("X-Cluster-Client-IP", "1.1.1.1"),
    ("Fastly-Client-IP", "1.1.1.1"),
    ("X-Forwarded", "for=1.1.1.1"),
    ("Forwarded-For", "1.1.1.1"),
    ("X-Forwarded-Uri", "/admin"),
    ("X-Envoy-Original-Path", "/admin"),
    ("Forwarded", "for=10.0.0.1;proto=https"),
    ("X-Real-IP", "10.0.0.1"),
    ("True-Client-IP", "10.0.0.1"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Server", "internal"),
    ("X-Forwarded-Ssl", "on"),
    ("X-Forwarded-Scheme", "https"),
    ("Front-End-Https", "on"),
    ("X-Url-Scheme", "https"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X-Host", "evil.example"),
    ("X-Original-Host", "evil.example"),
    ("X_Real_IP", "10.0.0.1"),
    ("X_Forwarded_For", "10.0.0.1"),
];

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_never_reach_the_upstream() {
    let (upstream, server) = with_trust("").await;
    let mut request =
        String::from("GET /x HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 10.0.0.1\r\n");
    for (name, value) in CLAIMED {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    assert_eq!(raw_status_of(&server, request).await, 200);
    let seen = &upstream.wait_for_count(1).await[0];
    for (name, _) in CLAIMED {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream"
        );
    }
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_kept_and_appended() {
    let (upstream, server) = with_trust("\"127.0.0.1/32\"").await;
    let reply = get_with(
        server.proxy_addr,
        "/x",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("x_forwarded_for", "10.6.6.6"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &upstream.wait_for_count(1).await[0];
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["forwarded"], "for=203.0.113.9");
    assert_eq!(seen.headers["x-real-ip"], "203.0.113.9");
    // The `_` spelling of a header palisade sets never passes.
    assert!(!seen.headers.contains_key("x_forwarded_for"));
}

#[tokio::test]
async fn forwarded_for_entries_with_ports_keep_clients_apart() {
    let (upstream, server) = with_trust("\"127.0.0.1/32\"").await;
    // limit = 1 per hour by ip: each distinct client gets exactly one.
    for client in [
        "9.9.9.9:5555",
        "[2001:db8::1]:443",
        "8.8.8.8:1",
        "[2001:db9::2]",
    ] {
        let reply = get_with(server.proxy_addr, "/x", &[("x-forwarded-for", client)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{client}");
    }
    // The same client again, with another port, is the same client.
    let reply = get_with(
        server.proxy_addr,
        "/x",
        &[("x-forwarded-for", "9.9.9.9:7777")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(upstream.count(), 4);
}

#[tokio::test]
async fn http11_without_host_or_with_two_is_refused() {
    let (upstream, server) = setup().await;
    let cases = [
        "GET /open/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /open/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        "GET /open/x HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET http://legit/open/x HTTP/1.1\r\nHost: evil\r\nConnection: close\r\n\r\n",
        "GET /open/x HTTP/1.1\r\nHost: user@evil\r\nConnection: close\r\n\r\n",
        // Absolute form does not stand in for Host on HTTP/1.1 (red team, session 5).
        "GET http://legit/open/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        // A port is a number up to 65535.
        "GET /open/x HTTP/1.1\r\nHost: legit:abc\r\nConnection: close\r\n\r\n",
        "GET /open/x HTTP/1.1\r\nHost: legit:99999\r\nConnection: close\r\n\r\n",
        "GET http://legit:-1/open/x HTTP/1.1\r\nHost: legit:-1\r\nConnection: close\r\n\r\n",
        // Another port than the target's is another authority.
        "GET http://legit:8080/open/x HTTP/1.1\r\nHost: legit\r\nConnection: close\r\n\r\n",
    ];
    for request in cases {
        let response = raw(server.proxy_addr, request.as_bytes()).await;
        assert_eq!(raw_status(&response), 400, "{request:?}");
        assert!(
            response.contains("application/problem+json"),
            "{request:?}: {response}"
        );
    }
    // HTTP/1.0 may omit Host.
    let response = raw(
        server.proxy_addr,
        b"GET /open/x HTTP/1.0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&response), 200);
    // The scheme's default port, written or left out, is the same
    // authority (RFC 3986 §6.2.3).
    for request in [
        "GET http://legit:80/open/x HTTP/1.1\r\nHost: legit\r\nConnection: close\r\n\r\n",
        "GET http://legit/open/x HTTP/1.1\r\nHost: LEGIT:80\r\nConnection: close\r\n\r\n",
    ] {
        let response = raw(server.proxy_addr, request.as_bytes()).await;
        assert_eq!(raw_status(&response), 200, "{request:?}");
    }
    assert_eq!(upstream.count(), 3);
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"host\",route=\"-\"}"
        ),
        10.0,
        "{scrape}"
    );
}

#[tokio::test]
async fn case_variants_of_methods_are_refused() {
    let (upstream, server) = setup().await;
    let token = user_token("5");
    for method in ["post", "Post", "Delete", "get", "purge"] {
        let request = format!(
            "{method} /webhooks/vapi/call-ended HTTP/1.1\r\nHost: test\r\n\
             Authorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(raw_status_of(&server, request).await, 400, "{method}");
    }
    assert_eq!(upstream.count(), 0);
    // The configured spelling still works, and an unknown method is routed.
    let request = "PURGE /cache/x HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status_of(&server, request.into()).await, 200);
    let request = format!(
        "PROPFIND /x HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_status_of(&server, request).await, 200);
    let methods: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["PURGE", "PROPFIND"]);
}

#[tokio::test]
async fn lower_case_method_over_http2_is_refused() {
    let (upstream, server) = setup().await;
    let client = h2_client();
    let token = user_token("5");
    let req = Request::builder()
        .method(http::Method::from_bytes(b"post").unwrap())
        .uri(format!(
            "http://{}/webhooks/vapi/call-ended",
            server.proxy_addr
        ))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn method_override_query_parameter_is_refused() {
    // `POST ...?_method=DELETE` would run as DELETE in Rails, Laravel,
    // Symfony or Express method-override, past a DELETE-only route.
    let (upstream, server) = setup().await;
    let token = user_token("5");
    for query in [
        "_method=DELETE",
        "%5Fmethod=DELETE",
        "a=1&_METHOD=delete",
        ".method=PUT",
    ] {
        let request = format!(
            "POST /anything?{query} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(raw_status_of(&server, request).await, 400, "{query}");
    }
    assert_eq!(upstream.count(), 0);
    let request = format!(
        "POST /anything?method=fast HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_status_of(&server, request).await, 200);
}

#[tokio::test]
async fn method_override_headers_never_reach_the_upstream() {
    let (upstream, server) = setup().await;
    let reply = get_with(
        server.proxy_addr,
        "/open/x",
        &[
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("x_http_method_override", "DELETE"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &upstream.wait_for_count(1).await[0];
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x_http_method_override",
    ] {
        assert!(!seen.headers.contains_key(name), "{name}");
    }
}

/// An upstream's trailers never reach a client, even an HTTP/2 one that
/// asked for them through hyper's upstream engine (the one that would pass
/// them on): a trailer block would carry a second request ID and headers
/// palisade removes past every response policy.
#[tokio::test]
async fn upstream_trailers_never_reach_an_http2_client() {
    let addr = support::upstream::holding_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Tr\r\n\r\n\
          5\r\nhello\r\n0\r\nX-Tr: t\r\nX-Request-Id: trailer-evil\r\n\
          X-Powered-By: php\r\nConnection: close\r\n\r\n",
    )
    .await;
    for engine in ["hyper", "palisade"] {
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"{{UPSTREAM}}\"\nhttp1_engine = \"{engine}\"\n[upstream.retry]\nattempts = 0\n[[routes]]\nname = \"open\"\npath = \"/**\"\nauth = \"none\"\n"
        );
        let server = start_palisade(&config, addr).await;
        let req = Request::get(format!("http://{}/t", server.proxy_addr))
            .header("te", "trailers")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = h2_client().request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{engine}");
        assert_eq!(response.headers().get_all("x-request-id").iter().count(), 1);
        let collected = response.into_body().collect().await.unwrap();
        assert!(
            collected.trailers().is_none(),
            "{engine}: trailers passed on"
        );
        assert_eq!(collected.to_bytes(), "hello", "{engine}");
    }
}

/// An absolute-form target whose path is empty once its fragment goes
/// (`http://h#f`) is routed as `/`, and `/` is what the upstream gets on
/// every engine: never an empty request target (red-team finding: a
/// Python upstream read `GET  HTTP/1.1` as HTTP/0.9, every answer became a
/// 502, and the breaker opened for everyone).
#[tokio::test]
async fn an_empty_absolute_form_path_reaches_the_upstream_as_slash() {
    let upstream = TestUpstream::start().await;
    for engine in ["hyper", "palisade"] {
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nhttp1_engine = \"{engine}\"\n[upstream]\nurl = \"{{UPSTREAM}}\"\nhttp1_engine = \"{engine}\"\n[[routes]]\nname = \"all\"\npath = \"/**\"\nauth = \"none\"\n"
        );
        let server = start_palisade(&config, upstream.addr).await;
        let before = upstream.count();
        for target in ["http://h#f", "http://h#", "http://h"] {
            let request = format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
            assert_eq!(
                raw_status_of(&server, request).await,
                200,
                "{engine} {target}"
            );
        }
        let seen = upstream.wait_for_count(before + 3).await;
        for request in &seen[before..] {
            assert_eq!(request.uri, "/", "{engine}");
        }
    }
}

/// An absolute-form target of another scheme than `http` or `https`
/// (`ftp://h/x`) names nothing palisade serves: 400 on every engine, and
/// the upstream never sees it as the origin-form request it would become.
#[tokio::test]
async fn absolute_form_targets_of_other_schemes_never_reach_the_upstream() {
    let upstream = TestUpstream::start().await;
    for engine in ["hyper", "palisade"] {
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nhttp1_engine = \"{engine}\"\n[upstream]\nurl = \"{{UPSTREAM}}\"\n[[routes]]\nname = \"all\"\npath = \"/**\"\nauth = \"none\"\n"
        );
        let server = start_palisade(&config, upstream.addr).await;
        for target in ["ftp://h/x", "FTP://h/x", "ws://h/x", "file://h/etc/passwd"] {
            let request = format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
            let response = raw(server.proxy_addr, request.as_bytes()).await;
            assert_eq!(raw_status(&response), 400, "{engine} {target}: {response}");
            assert!(
                response.contains("x-request-id: "),
                "{engine}: palisade's answer"
            );
        }
        let scrape = metrics(&server).await;
        let series = r#"palisade_rejections_total{reason="host",route="-"}"#;
        assert_eq!(sample(&scrape, series), 4.0, "{engine}: {scrape}");
        // The web's schemes still pass.
        let request = "GET HTTPS://h/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        assert_eq!(
            raw_status_of(&server, request.to_string()).await,
            200,
            "{engine}"
        );
    }
    let seen = upstream.wait_for_count(2).await;
    assert_eq!(seen.len(), 2, "only the https targets: {seen:?}");
}

fn h2_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

#[tokio::test]
async fn http2_values_padded_with_whitespace_are_refused() {
    // An HTTP/1 upstream strips a value's surrounding whitespace (h11,
    // which uvicorn uses, reads `k7 ` as `k7`): over HTTP/2, where it
    // arrives as sent, a padded rate-limit key would be a fresh bucket to
    // palisade and the same key to the backend. RFC 9113 §8.2.1 makes
    // such a request malformed.
    let config = r#"
[upstream]
url = "{UPSTREAM}"
[[routes]]
name = "keyed"
path = "/**"
auth = "none"
rate_limits = [{ by = "header:X-Api-Key", limit = 1, per = "1m" }]
"#;
    let upstream = TestUpstream::start().await;
    let server = start_palisade(config, upstream.addr).await;
    let client = h2_client();
    // GET /x over HTTP/2 with these fields; the answer's status.
    let send = |fields: Vec<(&'static str, &'static [u8])>| {
        let client = client.clone();
        let url = format!("http://{}/x", server.proxy_addr);
        async move {
            let mut req = Request::get(url);
            for (name, value) in fields {
                req = req.header(name, http::HeaderValue::from_bytes(value).unwrap());
            }
            let response = client
                .request(req.body(Full::default()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.version(), http::Version::HTTP_2);
            response.status()
        }
    };
    let key = ("x-api-key", b"k7".as_slice());
    assert_eq!(send(vec![key, ("x-other", b"v")]).await, StatusCode::OK);
    for value in [b"v ".as_slice(), b" v", b"\tv", b"v\t\t"] {
        let status = send(vec![key, ("x-other", value)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{value:?}");
    }
    for padded in [b"k7 ".as_slice(), b" k7", b"\tk7", b"k7\t", b" k7 "] {
        let status = send(vec![("x-api-key", padded)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{padded:?}");
    }
    // The key's one bucket is spent: its unpadded spelling is limited.
    assert_eq!(
        send(vec![key, ("x-other", b"v")]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(upstream.count(), 1);
    // Over HTTP/1 the line's whitespace is not the value's: the same
    // bucket.
    let request = "GET /x HTTP/1.1\r\nHost: test\r\nX-Api-Key: k7 \t\r\n\
                   Connection: close\r\n\r\n";
    assert_eq!(raw_status_of(&server, request.into()).await, 429);
    // A key with a byte outside ASCII is refused: servers strip
    // different whitespace from such bytes (gunicorn 21 reads `k7\xa0` as
    // `k7`, and `k7\xc2` and `k7\xc2\xa0` as one `k7Â`; a UTF-8 reader
    // cuts `\xc2\xa0` whole; JavaScript's `trim()` cuts U+FEFF), so no
    // bucket would match every backend's key.
    for padded in [
        b"k7\xa0".as_slice(),
        b"\xa0\x85k7",
        b"k7\xc2",
        "k7\u{a0}".as_bytes(),
        "\u{3000}k7\u{2028}".as_bytes(),
        "k7\u{feff}".as_bytes(),
    ] {
        let mut request = b"GET /x HTTP/1.1\r\nHost: test\r\nX-Api-Key: ".to_vec();
        request.extend_from_slice(padded);
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let response = raw(server.proxy_addr, &request).await;
        assert_eq!(raw_status(&response), 400, "{padded:?}");
    }
    assert_eq!(
        send(vec![("x-api-key", b"k7\xa0")]).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn http2_host_that_disagrees_with_authority_is_refused() {
    let (upstream, server) = setup().await;
    let client = h2_client();
    let req = Request::get(format!("http://{}/open/x", server.proxy_addr))
        .header("host", "evil.example")
        .body(Full::default())
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let req = Request::get(format!("http://user@{}/open/x", server.proxy_addr))
        .body(Full::default())
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(upstream.count(), 0);
    // The same authority twice is fine.
    let req = Request::get(format!("http://{}/open/x", server.proxy_addr))
        .header("host", server.proxy_addr.to_string())
        .body(Full::default())
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn http2_raw_non_ascii_path_is_refused() {
    let (upstream, server) = setup().await;
    let client = h2_client();
    // The http crate lets raw bytes above 0x7F into a path (HTTP/1's
    // request-line parser does not), so an HTTP/2 client can send them.
    let uri = http::Uri::from_maybe_shared(Bytes::from(
        format!("http://{}/open/caf\u{e9}", server.proxy_addr).into_bytes(),
    ))
    .expect("the http crate accepts raw non-ASCII path bytes");
    let req = Request::get(uri).body(Full::default()).unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn http2_cookie_fields_reach_an_http1_upstream_as_one_line() {
    let (upstream, server) = setup().await;
    let client = h2_client();
    let req = Request::get(format!("http://{}/open/x", server.proxy_addr))
        .header("cookie", "a=1")
        .header("cookie", "sb-access-token=abc")
        .body(Full::default())
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = &upstream.wait_for_count(1).await[0];
    let lines: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(lines, ["a=1; sb-access-token=abc"]);
}

#[tokio::test]
async fn http1_cookie_lines_are_joined_too() {
    let (upstream, server) = setup().await;
    let request = "GET /open/x HTTP/1.1\r\nHost: test\r\nCookie: a=1\r\nCookie: b=2\r\n\
                   Connection: close\r\n\r\n";
    assert_eq!(raw_status_of(&server, request.into()).await, 200);
    let seen = &upstream.wait_for_count(1).await[0];
    let lines: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(lines, ["a=1; b=2"]);
}

/// An upstream that records the raw bytes of each request it gets and
/// answers 200; for what a parsing server would hide (trailers).
#[derive(Clone, Default)]
struct RawUpstream {
    seen: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    async fn start() -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Self::default();
        let seen = upstream.seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move { Self::serve(stream, seen).await });
            }
        });
        (upstream, addr)
    }

    async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let Ok(Ok(n)) = read else { break };
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
            if request_complete(&data) {
                break;
            }
        }
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&data).into_owned());
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A chunked request is complete after its last chunk and trailer section.
fn request_complete(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.starts_with("0\r\n") && body.ends_with("\r\n\r\n")
            || body.contains("\r\n0\r\n") && body.ends_with("\r\n\r\n");
    }
    true
}

#[tokio::test]
async fn request_trailers_never_carry_identity_headers_upstream() {
    let (upstream, addr) = RawUpstream::start().await;
    let server = start_palisade(CONFIG, addr).await;
    let request = "POST /open/upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\
                   TE: trailers\r\nTrailer: X-User-Id\r\nConnection: close\r\n\r\n\
                   5\r\nhello\r\n0\r\nX-User-Id: admin\r\nX-Tenant-Id: 6\r\n\r\n";
    let response = raw(server.proxy_addr, request.as_bytes()).await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let wire = seen[0].to_ascii_lowercase();
    assert!(wire.contains("hello"), "{wire}");
    assert!(!wire.contains("x-user-id"), "{wire}");
    assert!(!wire.contains("x-tenant-id"), "{wire}");
}

/// Over HTTP/2 an empty trailer block is framing, not a bare LF hiding a
/// request (HTTP/1's 400 for an empty section does not apply): the body is
/// served, the block dropped.
#[tokio::test]
async fn an_empty_http2_trailer_block_is_served() {
    let (upstream, server) = setup().await;
    /// A body that is these frames, in order.
    struct Frames(std::collections::VecDeque<hyper::body::Frame<Bytes>>);
    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(Ok))
        }
    }
    let body = Frames(
        [
            hyper::body::Frame::data(Bytes::from_static(b"hello")),
            hyper::body::Frame::trailers(http::HeaderMap::new()),
        ]
        .into(),
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::post(format!("http://{}/open/upload", server.proxy_addr))
        .body(body)
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = &upstream.wait_for_count(1).await[0];
    assert_eq!((seen.body_len, seen.complete), (5, true));
}

/// A transfer coding besides the one `chunked` is refused, not dropped:
/// palisade removes the chunked framing and makes it again, so `gzip`
/// before it would reach the upstream as gzip bytes labelled plain, and a
/// second `chunked` would be unwrapped once (RFC 9112 §6.1).
#[tokio::test]
async fn transfer_codings_other_than_one_chunked_never_reach_the_upstream() {
    let (upstream, addr) = RawUpstream::start().await;
    let server = start_palisade(CONFIG, addr).await;
    let codings = [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        // Naming it in `Connection` does not take it out before the check.
        "Transfer-Encoding: gzip, chunked\r\nConnection: transfer-encoding\r\n",
    ];
    for coding in codings {
        let request = format!(
            "POST /open/upload HTTP/1.1\r\nHost: test\r\n{coding}Connection: close\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
        );
        let response = raw(server.proxy_addr, request.as_bytes()).await;
        assert_eq!(raw_status(&response), 400, "{coding}: {response}");
        assert!(
            response.contains("x-request-id: "),
            "palisade's answer: {response}"
        );
    }
    let scrape = metrics(&server).await;
    let series = r#"palisade_rejections_total{reason="transfer_coding",route="-"}"#;
    assert_eq!(sample(&scrape, series), codings.len() as f64, "{scrape}");
    // The one accepted spelling still goes through.
    let request = "POST /open/upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: Chunked \r\n\
                   Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let response = raw(server.proxy_addr, request.as_bytes()).await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "only the accepted request: {seen:?}");
    assert!(seen[0].contains("hello"), "{seen:?}");
}

#[tokio::test]
async fn identity_headers_are_set_once_whatever_the_client_sent() {
    let (upstream, server) = setup().await;
    let token = user_token("5");
    // Two spellings and a duplicate of an identity header, plus the token.
    let request = format!(
        "GET /anything HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         X-User-Id: admin\r\nx-user-id: admin2\r\nX_User_Id: admin3\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_status_of(&server, request).await, 200);
    let seen = &upstream.wait_for_count(1).await[0];
    let ids: Vec<_> = seen.headers.get_all("x-user-id").iter().collect();
    assert_eq!(ids, ["user-5"]);
    assert!(!seen.headers.contains_key("x_user_id"));
}

#[tokio::test]
async fn upstream_body_from_h2_client_is_intact() {
    // A sanity check that cleanup leaves ordinary HTTP/2 traffic alone.
    let (upstream, server) = setup().await;
    let client = h2_client();
    let req = Request::post(format!("http://{}/open/post", server.proxy_addr))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let _ = response.into_body().collect().await.unwrap();
    let seen = &upstream.wait_for_count(1).await[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body_len, 7);
    assert_eq!(seen.headers["content-type"], "application/json");
}

#[tokio::test]
async fn upstream_headers_reach_an_h2_client() {
    // A GET's exchange is palisade's own, which keeps the upstream's lines
    // as bytes; hyper's HTTP/2 server writes one header map: they must be
    // in it, minus those the policy removes, with palisade's own.
    let (upstream, server) = setup().await;
    let client = h2_client();
    let req = Request::get(format!("http://{}/open/get", server.proxy_addr))
        .header("x-test-status", "201")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let headers = response.headers().clone();
    let _ = response.into_body().collect().await.unwrap();
    assert_eq!(headers["content-type"], "application/json");
    assert!(!headers.contains_key("server"));
    assert!(!headers.contains_key("x-powered-by"));
    assert_eq!(headers.get_all("x-request-id").iter().count(), 1);
    assert_eq!(upstream.wait_for_count(1).await[0].method, "GET");
}

/// The one value of `name` the upstream got (it fails on none or several).
fn only_value(seen: &support::upstream::Recorded, name: &str) -> String {
    let values: Vec<_> = seen.headers.get_all(name).iter().collect();
    assert_eq!(values.len(), 1, "{name}: {values:?}");
    values[0].to_str().unwrap().to_string()
}

/// palisade writes `X-Forwarded-*` and the request ID as lines of its own
/// after the client's: the client's lines of those names, in any case and
/// however many, must be gone, so the upstream reads exactly one of each,
/// palisade's. From a trusted proxy, its chain is appended to and its
/// `X-Forwarded-Proto` / `-Host` are kept, once.
#[tokio::test]
async fn forwarding_headers_and_the_request_id_reach_the_upstream_once() {
    let (upstream, server) = setup().await;
    let request = "GET /open/once HTTP/1.1\r\nHost: app.test\r\n\
        x-forwarded-for: 6.6.6.6\r\nX-FORWARDED-FOR: 7.7.7.7\r\n\
        X-Forwarded-Proto: https\r\nx-forwarded-proto: wss\r\n\
        X-Forwarded-Host: evil.test\r\nX-Request-Id: bad id\r\nx-request-id: also bad\r\n\
        Connection: close\r\n\r\n";
    let response = raw(server.proxy_addr, request.as_bytes()).await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let seen = &upstream.wait_for_count(1).await[0];
    let once = |name: &str| only_value(seen, name);
    assert_eq!(once("x-forwarded-for"), "127.0.0.1");
    assert_eq!(once("x-forwarded-proto"), "http");
    assert_eq!(once("x-forwarded-host"), "app.test");
    let id = once("x-request-id");
    assert!(
        response.contains(&format!("x-request-id: {id}\r\n")),
        "{response}"
    );
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    let behind = TestUpstream::start().await;
    let trusting = start_palisade(
        &CONFIG.replace(
            "[auth.jwt]",
            "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[auth.jwt]",
        ),
        behind.addr,
    )
    .await;
    let request = "GET /open/once HTTP/1.1\r\nHost: app.test\r\n\
        X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\
        X-Forwarded-Host: public.test\r\nX-Request-Id: edge-id-1\r\nConnection: close\r\n\r\n";
    let response = raw(trusting.proxy_addr, request.as_bytes()).await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let seen = &behind.wait_for_count(1).await[0];
    let once = |name: &str| only_value(seen, name);
    assert_eq!(once("x-forwarded-for"), "203.0.113.9, 127.0.0.1");
    assert_eq!(once("x-forwarded-proto"), "https");
    assert_eq!(once("x-forwarded-host"), "public.test");
    assert_eq!(once("x-request-id"), "edge-id-1");
}

/// Red team, session 15: from a trusted proxy, a blank `X-Forwarded-For`
/// line dropped the whole chain upstream while palisade believed the
/// address after it, and a line that is not text was left out while the
/// entries left of it were kept (an upstream walking from the right could
/// then believe an entry palisade did not). The upstream now gets the part
/// of the chain palisade believed.
#[tokio::test]
async fn the_upstream_gets_the_part_of_a_trusted_chain_palisade_believed() {
    let (upstream, server) = with_trust("\"127.0.0.1/32\"").await;
    let cases: [(&[u8], &str); 2] = [
        (
            b"X-Forwarded-For: \r\nX-Forwarded-For: 2.2.2.2\r\n",
            "2.2.2.2, 127.0.0.1",
        ),
        (
            b"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: \xff\xfe\r\nX-Forwarded-For: 8.8.8.8\r\n",
            "8.8.8.8, 127.0.0.1",
        ),
    ];
    for (i, (lines, chain)) in cases.into_iter().enumerate() {
        let mut request = b"GET /x HTTP/1.1\r\nHost: t\r\n".to_vec();
        request.extend_from_slice(lines);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        let response = raw(server.proxy_addr, &request).await;
        assert_eq!(raw_status(&response), 200, "{response}");
        let seen = &upstream.wait_for_count(i + 1).await[i];
        assert_eq!(only_value(seen, "x-forwarded-for"), chain);
    }
}
