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
async fn a_forwarded_for_of_trusted_proxies_only_leaves_the_peer_as_the_client() {
    // 127.0.0.1 and 10.0.0.0/8 are trusted: `X-Forwarded-For: 10.1.1.1`
    // names no untrusted address, so the client is the peer (SPEC §3),
    // 127.0.0.1, which /office/ does not allow.
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&ip_config("\"127.0.0.1\", \"10.0.0.0/8\""), upstream.addr).await;
    for chain in ["10.1.1.1", "10.1.1.1, 10.2.2.2"] {
        assert_eq!(
            from(&server, "/office/a", chain).await.status,
            StatusCode::FORBIDDEN,
            "{chain}"
        );
    }
    // An untrusted address left of the trusted ones is the client.
    assert_eq!(
        from(&server, "/office/a", "203.0.113.7, 10.1.1.1")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(upstream.count(), 0);
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

const CLAIMS_CONFIG: &str = r#"
[upstream]
url = "{UPSTREAM}"
[auth.jwt]
hs256_secret = "${JWT_SECRET}"
[auth.secrets.hook]
header = "X-Hook-Secret"
value = "${HOOK_SECRET}"
[defaults]
require_claims = { role = "member" }
[[routes]]
name = "admin"
path = "/admin/**"
require_claims = { role = ["admin", "owner"] }
[[routes]]
name = "orders"
path = "/orders/**"
auth = "optional"
require_claims = { scope = "orders:write", "app_metadata.plan" = ["pro", "enterprise"], groups = "ops" }
[[routes]]
name = "either"
path = "/either/**"
auth = ["jwt", "secret:hook"]
require_claims = { role = "admin" }
[[routes]]
name = "public"
path = "/public/**"
auth = "none"
require_claims = {}
[[routes]]
name = "api"
path = "/**"
"#;

fn bearer(claims: serde_json::Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(now() + 600);
    claims["sub"] = json!("u1");
    format!("Bearer {}", token(claims))
}

async fn as_caller(server: &palisade::Server, path: &str, claims: serde_json::Value) -> Reply {
    get_with(
        server.proxy_addr,
        path,
        &[("authorization", &bearer(claims))],
    )
    .await
}

#[tokio::test]
async fn claim_requirements_strings_arrays_scopes_and_paths() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CLAIMS_CONFIG, upstream.addr).await;
    // A string claim equal to one of the listed values.
    let admin = as_caller(&server, "/admin/x", json!({"role": "owner"})).await;
    assert_eq!(admin.status, StatusCode::OK);
    let member = as_caller(&server, "/admin/x", json!({"role": "member"})).await;
    assert_eq!(member.status, StatusCode::FORBIDDEN);
    assert_eq!(
        member.header("content-type"),
        Some("application/problem+json")
    );
    assert!(member.header("www-authenticate").is_none());
    // An array claim containing one.
    let roles = as_caller(&server, "/admin/x", json!({"role": ["member", "admin"]})).await;
    assert_eq!(roles.status, StatusCode::OK);
    // Several entries: a scope string, a dotted claim and an array, all
    // of which must match.
    let good = json!({"scope": "orders:read orders:write", "app_metadata": {"plan": "pro"}, "groups": ["dev", "ops"]});
    assert_eq!(
        as_caller(&server, "/orders/1", good.clone()).await.status,
        StatusCode::OK
    );
    for (field, value) in [
        ("scope", json!("orders:read")),
        ("scope", json!("orders:write-all")),
        ("app_metadata", json!({"plan": "free"})),
        ("app_metadata", json!({})),
        ("groups", json!(["dev"])),
    ] {
        let mut claims = good.clone();
        claims[field] = value.clone();
        let reply = as_caller(&server, "/orders/1", claims).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{field} = {value}");
    }
    // `[defaults]` sets one too; `{}` lifts it.
    assert_eq!(
        as_caller(&server, "/x", json!({"role": "member"}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        as_caller(&server, "/x", json!({"role": "guest"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(server.proxy_addr, "/public/x").await.status,
        StatusCode::OK
    );
    assert_eq!(upstream.count(), 5);
    let scrape = metrics(&server).await;
    let refused = |route: &str| {
        sample(
            &scrape,
            &format!("palisade_rejections_total{{reason=\"claims\",route=\"{route}\"}}"),
        )
    };
    assert_eq!(
        (refused("admin"), refused("orders"), refused("api")),
        (1.0, 5.0, 1.0)
    );
}

#[tokio::test]
async fn claim_requirements_without_a_token_are_a_401() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CLAIMS_CONFIG, upstream.addr).await;
    for path in ["/admin/x", "/orders/1"] {
        // `/orders` is `optional`: an anonymous caller still has no claims.
        let reply = get(server.proxy_addr, path).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"palisade\"")
        );
    }
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_auth_failures_total{reason=\"missing\",route=\"orders\"}"
        ),
        1.0
    );
    assert_eq!(family_total(&scrape, "palisade_rejections_total"), 0.0);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn claim_requirements_do_not_apply_to_a_secret_in_an_any_of_list() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CLAIMS_CONFIG, upstream.addr).await;
    let hook = get_with(
        server.proxy_addr,
        "/either/x",
        &[("x-hook-secret", HOOK_SECRET)],
    )
    .await;
    assert_eq!(hook.status, StatusCode::OK);
    let token = as_caller(&server, "/either/x", json!({"role": "member"})).await;
    assert_eq!(token.status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.count(), 1);
}

#[test]
fn check_warns_about_claims_on_a_route_a_secret_also_admits() {
    let policy = palisade::config::load_str(
        &CLAIMS_CONFIG.replace("{UPSTREAM}", "http://127.0.0.1:1"),
        "t.toml",
        &test_env(),
    )
    .unwrap();
    let warnings = palisade::cli::check::warnings(&policy);
    let claims: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("require_claims"))
        .collect();
    assert_eq!(claims.len(), 1, "{warnings:?}");
    assert!(
        claims[0].starts_with("routes[2] (\"either\")"),
        "{}",
        claims[0]
    );
}

#[test]
fn check_warns_about_a_head_route_before_a_get_route_it_overlaps() {
    let config = r#"
[upstream]
url = "http://127.0.0.1:1"
[auth.secrets.admin]
header = "X-Hook-Secret"
value = "${HOOK_SECRET}"
[[routes]]
name = "monitors"
path = "/status/**"
methods = ["HEAD"]
auth = "none"
[[routes]]
name = "section-admin"
path = "/{section}/admin"
methods = ["GET"]
auth = "secret:admin"
[[routes]]
name = "ops"
path = "/ops/**"
methods = ["GET"]
auth = "secret:admin"
[[routes]]
name = "rest"
path = "/**"
auth = "none"
"#;
    let policy = palisade::config::load_str(config, "t.toml", &test_env()).unwrap();
    let warnings = palisade::cli::check::warnings(&policy);
    let head: Vec<_> = warnings.iter().filter(|w| w.contains("HEAD")).collect();
    // `/status/admin` is the monitors' and the admin route's both;
    // nothing under `/ops` is the monitors'; the catch-all, which shares
    // `/status/...` too, admits anyone anyway.
    assert_eq!(head.len(), 1, "{warnings:?}");
    assert!(
        head[0].starts_with(
            "routes[0] (\"monitors\") takes HEAD but not GET for paths of routes[1] (\"section-admin\")"
        ),
        "{}",
        head[0]
    );
}

#[test]
fn check_warns_about_paths_and_prefixes_no_request_reaches() {
    let config = r#"
[upstream]
url = "http://127.0.0.1:1"
[[routes]]
name = "dotted"
path = "/a/x."
auth = "none"
[[routes]]
name = "v2"
path = "/api/**"
auth = "none"
strip_prefix = "/v2"
[[routes]]
name = "short"
path = "/c"
auth = "none"
strip_prefix = "/c/d"
[[routes]]
name = "tenant"
path = "/{t}/app/**"
auth = "none"
strip_prefix = "/acme"
[[routes]]
name = "legacy"
path = "/legacy/**"
auth = "none"
strip_prefix = "/LEGACY/v1"
"#;
    let policy = palisade::config::load_str(config, "t.toml", &test_env()).unwrap();
    let warnings = palisade::cli::check::warnings(&policy);
    let named = |start: &str| warnings.iter().filter(|w| w.starts_with(start)).count();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert_eq!(
        named("routes[0] (\"dotted\"): path \"/a/x.\" is a lookalike"),
        1
    );
    assert_eq!(
        named("routes[1] (\"v2\"): strip_prefix \"/v2\" never applies"),
        1
    );
    assert_eq!(
        named("routes[2] (\"short\"): strip_prefix \"/c/d\" never applies"),
        1
    );
    // A prefix with braces or stars is no literal path: a config error
    // naming the key.
    for prefix in ["/{t}", "/*/legacy", "/**", "/%2A/legacy"] {
        let bad = config.replace(
            "strip_prefix = \"/acme\"",
            &format!("strip_prefix = \"{prefix}\""),
        );
        let error = palisade::config::load_str(&bad, "t.toml", &test_env()).unwrap_err();
        assert!(
            error.to_string().contains("routes[3].strip_prefix"),
            "{prefix}: {error}"
        );
    }
}

#[tokio::test]
async fn a_claims_refusal_names_the_claim_never_its_value() {
    let upstream = TestUpstream::start().await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nenvironment = \"development\"\n{CLAIMS_CONFIG}"
    );
    let server = start_palisade(&config, upstream.addr).await;
    let reply = as_caller(&server, "/admin/x", json!({"role": "secret-role-value"})).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let detail = reply.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("\"role\""), "{detail}");
    assert!(!detail.contains("secret-role-value"), "{detail}");
}
