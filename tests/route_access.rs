//! Issue 13 parts 3 and 4 over real sockets: client-IP allow and deny lists
//! (SPEC §6.7) and claim requirements (SPEC §6.6).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use serde_json::json;
use support::*;

/// The test client connects from 127.0.0.1; `trusted` decides whether its
/// `X-Forwarded-For` counts.
fn ip_config(trusted: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = [{trusted}]
[upstream]
url = "{{UPSTREAM}}"
[auth.jwt]
hs256_secret = "${{JWT_SECRET}}"
[defaults]
auth = "none"
deny_ips = ["192.0.2.66"]
[[routes]]
name = "office"
path = "/office/**"
allow_ips = ["10.0.0.0/8", "2001:db8::/32"]
deny_ips = ["10.9.0.0/16", "2001:db8:bad::/48"]
[[routes]]
name = "private"
path = "/private/**"
auth = "jwt"
allow_ips = ["10.0.0.0/8"]
[[routes]]
name = "open"
path = "/**"
"#
    )
}

async fn from(server: &palisade::Server, path: &str, xff: &str) -> Reply {
    get_with(server.proxy_addr, path, &[("x-forwarded-for", xff)]).await
}

#[tokio::test]
async fn ip_lists_allow_refuse_and_deny_wins() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&ip_config("\"127.0.0.1\""), upstream.addr).await;
    let allowed = from(&server, "/office/a", "10.1.2.3").await;
    assert_eq!(allowed.status, StatusCode::OK);
    let refused = from(&server, "/office/a", "203.0.113.7").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    // Deny over allow: 10.9.0.0/16 is inside the allowed 10.0.0.0/8.
    assert_eq!(
        from(&server, "/office/a", "10.9.1.1").await.status,
        StatusCode::FORBIDDEN
    );
    // IPv6, allowed and denied.
    assert_eq!(
        from(&server, "/office/a", "2001:db8:1::5").await.status,
        StatusCode::OK
    );
    assert_eq!(
        from(&server, "/office/a", "[2001:db8:bad::1]:443")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        from(&server, "/office/a", "2001:db9::1").await.status,
        StatusCode::FORBIDDEN
    );
    // The default's deny list applies where a route sets none of its own,
    // and a route's own list replaces it.
    assert_eq!(
        from(&server, "/x", "192.0.2.66").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        from(&server, "/x", "192.0.2.67").await.status,
        StatusCode::OK
    );
    assert_eq!(
        from(&server, "/office/a", "192.0.2.66").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(upstream.count(), 3);
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"ip\",route=\"office\"}"
        ),
        5.0
    );
    assert_eq!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"ip\",route=\"open\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn ip_lists_are_checked_before_authentication() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&ip_config("\"127.0.0.1\""), upstream.addr).await;
    // No token from a refused address: 403, not 401, and no auth failure.
    let refused = from(&server, "/private/a", "203.0.113.7").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.header("www-authenticate").is_none());
    // From an allowed address the missing token is what fails.
    let allowed = from(&server, "/private/a", "10.1.1.1").await;
    assert_eq!(allowed.status, StatusCode::UNAUTHORIZED);
    let auth = format!("Bearer {}", token(json!({"sub": "u1", "exp": now() + 600})));
    let admitted = get_with(
        server.proxy_addr,
        "/private/a",
        &[("x-forwarded-for", "10.1.1.1"), ("authorization", &auth)],
    )
    .await;
    assert_eq!(admitted.status, StatusCode::OK);
    let scrape = metrics(&server).await;
    assert_eq!(family_total(&scrape, "palisade_auth_failures_total"), 1.0);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_for_is_ignored() {
    let upstream = TestUpstream::start().await;
    // No trusted proxies: the client IP is the peer, 127.0.0.1, whatever
    // X-Forwarded-For claims.
    let server = start_palisade(&ip_config(""), upstream.addr).await;
    assert_eq!(
        from(&server, "/office/a", "10.1.2.3").await.status,
        StatusCode::FORBIDDEN
    );
    // A denied address in the header does not refuse the (allowed) peer.
    assert_eq!(
        from(&server, "/x", "192.0.2.66").await.status,
        StatusCode::OK
    );
    assert_eq!(upstream.count(), 1);
}
