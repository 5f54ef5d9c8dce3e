//! Issue 8, the authentication items, performed as an attacker would over
//! real sockets against a real palisade and a recording upstream: tokens
//! missing `iss`/`aud`, fractional `exp` outliving the cache, ambiguous
//! credentials (two tokens, lenient cookie spellings, split Cookie lines),
//! JWT edge cases (`crit`, empty `sub`, CR/LF in a forwarded claim),
//! Supabase chunk floods, and credentials in config URLs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::process::{Process, palisade, temp_dir, write_config};
use support::*;

const ISSUER: &str = "https://issuer.example";

fn config(extra_jwt: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_header_bytes = "64KiB"
[upstream]
url = "{{UPSTREAM}}"
[auth.jwt]
hs256_secret = "${{JWT_SECRET}}"
issuer = "{ISSUER}"
audiences = ["authenticated"]
require = ["exp", "sub"]
sources = ["header:Authorization", "cookie:sb-access-token", "supabase-cookie:sb-ref-auth-token"]
forward_claims = {{ sub = "X-User-Id", restaurant_id = "X-Tenant-Id", role = "X-User-Role" }}
{extra_jwt}
[[routes]]
name = "api"
path = "/**"
"#
    )
}

async fn setup(extra_jwt: &str) -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&config(extra_jwt), upstream.addr).await;
    (upstream, server)
}

fn claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "exp": now() + 600,
        "iat": now(),
        "iss": ISSUER,
        "aud": "authenticated",
        "restaurant_id": "r-1",
        "role": "authenticated",
    })
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

fn with(mut c: Value, key: &str, value: Value) -> Value {
    c[key] = value;
    c
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// A forged admin token with `alg: none`: what an attacker would hide
/// beside a valid one, hoping the backend reads it.
fn forged_admin() -> String {
    format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims("admin").to_string())
    )
}

/// A Supabase SSR session cookie value holding `token`.
fn session(token: &str) -> String {
    format!(
        "base64-{}",
        b64(&json!({ "access_token": token, "refresh_token": "r" }).to_string())
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Sends GET /api/x with these header lines (repeats allowed, raw bytes allowed).
async fn attempt(server: &palisade::Server, lines: &[(&str, HeaderValue)]) -> Reply {
    let mut req = Request::get("/api/x");
    for (name, value) in lines {
        req = req.header(*name, value.clone());
    }
    send(
        server.proxy_addr,
        req.body(Full::<Bytes>::default()).unwrap(),
    )
    .await
}

fn text(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap()
}

const INVALID: &str = "Bearer realm=\"palisade\", error=\"invalid_token\"";

/// The request was refused with 401 `invalid_token`, counted under
/// `reason`, and nothing reached the upstream.
async fn refused(server: &palisade::Server, upstream: &TestUpstream, reply: &Reply, reason: &str) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
    assert_eq!(reply.header("www-authenticate"), Some(INVALID));
    assert_eq!(upstream.count(), 0, "the upstream was reached");
    let series = format!("palisade_auth_failures_total{{reason=\"{reason}\",route=\"api\"}}");
    assert!(
        sample(&metrics(server).await, &series) >= 1.0,
        "no {series} in the metrics"
    );
}

// === item 4: absent iss / aud ===

#[tokio::test]
async fn rejects_token_without_iss_when_issuer_set() {
    let (upstream, server) = setup("").await;
    let token = token(without(claims("user-1"), "iss"));
    let reply = attempt(&server, &[("authorization", text(&bearer(&token)))]).await;
    refused(&server, &upstream, &reply, "wrong_issuer").await;
}

#[tokio::test]
async fn rejects_token_without_aud_when_audiences_set() {
    let (upstream, server) = setup("").await;
    let token = token(without(claims("user-1"), "aud"));
    let reply = attempt(&server, &[("authorization", text(&bearer(&token)))]).await;
    refused(&server, &upstream, &reply, "wrong_audience").await;
}

#[tokio::test]
async fn rejects_iss_or_aud_of_the_wrong_type() {
    let (upstream, server) = setup("").await;
    for (claim, value) in [
        ("iss", json!(7)),
        ("iss", json!(["https://evil.example", ISSUER])),
        ("aud", json!(7)),
        ("aud", json!(null)),
    ] {
        let token = token(with(claims("user-1"), claim, value));
        let reply = attempt(&server, &[("authorization", text(&bearer(&token)))]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{claim}");
    }
    assert_eq!(upstream.count(), 0);
}

// === item 6: a fractional exp outliving the cache ===

#[tokio::test]
async fn float_exp_token_is_not_served_from_cache_after_expiry() {
    let (upstream, server) = setup("leeway = \"0s\"\ncache_ttl = \"60s\"").await;
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let exp = unix.floor() + 2.5;
    let token = token(with(claims("user-1"), "exp", json!(exp)));
    let first = attempt(&server, &[("authorization", text(&bearer(&token)))]).await;
    assert_eq!(first.status, StatusCode::OK);
    // Wait until the token has expired (a second past exp), then replay it:
    // it must be verified again, not admitted from the cache.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64((exp + 1.0 - now).max(0.0))).await;
    let replay = attempt(&server, &[("authorization", text(&bearer(&token)))]).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.count(), 1, "only the first request reached it");
    let series = "palisade_auth_failures_total{reason=\"expired\",route=\"api\"}";
    assert_eq!(sample(&metrics(&server).await, series), 1.0);
}

/// The verified-token cache admits the very token it verified and nothing
/// near it: once a token is cached, the same token with one character of
/// its signature changed, with a claim changed under the old signature,
/// cut short, or with a character added is verified (and refused) as any
/// other token would be, and nothing of them reaches the upstream.
#[tokio::test]
async fn a_cached_token_admits_only_itself() {
    let (upstream, server) = setup("cache_ttl = \"60s\"").await;
    let good = token(claims("user-1"));
    let first = attempt(&server, &[("authorization", text(&bearer(&good)))]).await;
    assert_eq!(first.status, StatusCode::OK);
    let mut parts = good.split('.');
    let (head, payload, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut flipped = signature.to_string();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    let admin_payload = b64(&with(claims("user-1"), "sub", json!("admin")).to_string());
    let near = [
        format!("{head}.{payload}.{flipped}"),
        format!("{head}.{admin_payload}.{signature}"),
        good[..good.len() - 1].to_string(),
        format!("{good}A"),
    ];
    for forged in &near {
        let reply = attempt(&server, &[("authorization", text(&bearer(forged)))]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{forged}");
    }
    assert_eq!(upstream.count(), 1, "only the good token reached it");
    let again = attempt(&server, &[("authorization", text(&bearer(&good)))]).await;
    assert_eq!(again.status, StatusCode::OK);
    let seen = upstream.wait_for_count(2).await;
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|r| r.headers.get("x-user-id").is_some_and(|v| v == "user-1")),
        "every admitted request was the good token's user"
    );
}

// === item 13: ambiguous credentials ===

#[tokio::test]
async fn rejects_two_access_token_cookies_with_different_values() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let cookie = format!("sb-access-token={user}; sb-access-token={}", forged_admin());
    let reply = attempt(&server, &[("cookie", text(&cookie))]).await;
    refused(&server, &upstream, &reply, "ambiguous").await;
}

#[tokio::test]
async fn rejects_two_authorization_headers_with_different_tokens() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let reply = attempt(
        &server,
        &[
            ("authorization", text(&bearer(&user))),
            ("authorization", text(&bearer(&forged_admin()))),
        ],
    )
    .await;
    refused(&server, &upstream, &reply, "ambiguous").await;
}

#[tokio::test]
async fn rejects_another_credential_on_a_second_authorization_line() {
    // The verified bearer's line is read as a token source; a backend
    // might read the other line, whatever its order.
    let user = token(claims("user-1"));
    for credential in [
        format!("Token {}", forged_admin()),
        "Basic YWRtaW46YWRtaW4=".to_string(),
        forged_admin(),
        "Bearer ".to_string(),
    ] {
        for bearer_first in [true, false] {
            let (upstream, server) = setup("").await;
            let mut lines = vec![
                ("authorization", text(&bearer(&user))),
                ("authorization", text(&credential)),
            ];
            if !bearer_first {
                lines.reverse();
            }
            let reply = attempt(&server, &lines).await;
            refused(&server, &upstream, &reply, "ambiguous").await;
        }
    }
    // The same bearer on two lines is one token.
    let (upstream, server) = setup("").await;
    let reply = attempt(
        &server,
        &[
            ("authorization", text(&bearer(&user))),
            ("authorization", text(&bearer(&user))),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn rejects_bearer_plus_different_cookie_token() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let reply = attempt(
        &server,
        &[
            ("authorization", text(&bearer(&user))),
            (
                "cookie",
                text(&format!("theme=dark; sb-access-token={}", forged_admin())),
            ),
        ],
    )
    .await;
    refused(&server, &upstream, &reply, "ambiguous").await;
}

#[tokio::test]
async fn rejects_another_authorization_scheme_beside_a_verified_cookie_token() {
    // palisade verifies the cookie; the backend might read `Authorization`.
    let user = token(claims("user-1"));
    for credential in [
        format!("Token {}", forged_admin()),
        format!("JWT {}", forged_admin()),
        "Basic YWRtaW46YWRtaW4=".to_string(),
        forged_admin(),
    ] {
        let (upstream, server) = setup("").await;
        let reply = attempt(
            &server,
            &[
                ("authorization", text(&credential)),
                ("cookie", text(&format!("sb-access-token={user}"))),
            ],
        )
        .await;
        refused(&server, &upstream, &reply, "ambiguous").await;
    }
    // The same token as a bearer beside its cookie is fine.
    let (upstream, server) = setup("").await;
    let reply = attempt(
        &server,
        &[
            ("authorization", text(&bearer(&user))),
            ("cookie", text(&format!("sb-access-token={user}"))),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn rejects_a_token_cookie_in_another_case_beside_a_bearer() {
    // ASP.NET Core reads cookie names ignoring case.
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let reply = attempt(
        &server,
        &[
            ("authorization", text(&bearer(&user))),
            (
                "cookie",
                text(&format!("SB-ACCESS-TOKEN={}", forged_admin())),
            ),
        ],
    )
    .await;
    refused(&server, &upstream, &reply, "ambiguous").await;
}

#[tokio::test]
async fn rejects_cookie_name_with_space_before_equals() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    // Starlette strips the name and reads this session; palisade used to skip it.
    let cookie = format!("sb-ref-auth-token ={}", session(&forged_admin()));
    let reply = attempt(
        &server,
        &[
            ("authorization", text(&bearer(&user))),
            ("cookie", text(&cookie)),
        ],
    )
    .await;
    refused(&server, &upstream, &reply, "ambiguous").await;
}

#[tokio::test]
async fn rejects_lenient_cookie_spellings_hiding_a_second_token() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let forged = forged_admin();
    let spellings = [
        format!("sb-access-token={user}; \tsb-access-token\t={forged}"),
        format!("sb-access-token={user}; sb-access-token=\"{forged}\""),
        format!("sb-access-token={user}, sb-access-token={forged}"),
        format!("sb-access-token={user}; sb%2Daccess%2Dtoken={forged}"),
    ];
    for cookie in &spellings {
        let reply = attempt(&server, &[("cookie", text(cookie))]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{cookie}");
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn rejects_token_cookies_split_over_cookie_lines_that_disagree() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let reply = attempt(
        &server,
        &[
            ("cookie", text(&format!("sb-access-token={user}"))),
            (
                "cookie",
                text(&format!("sb-access-token={}", forged_admin())),
            ),
        ],
    )
    .await;
    refused(&server, &upstream, &reply, "ambiguous").await;
}

#[tokio::test]
async fn rejects_disagreeing_token_cookies_sent_as_http2_cookie_crumbs() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    // HTTP/2 clients send each cookie as its own `cookie` field (RFC 9113 §8.2.3).
    let req = Request::get(format!("http://{}/api/x", server.proxy_addr))
        .header("cookie", format!("sb-access-token={user}"))
        .header("cookie", "theme=dark")
        .header("cookie", format!("sb-access-token={}", forged_admin()))
        .body(Full::default())
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.count(), 0);
}

/// Sends GET /api/x over HTTP/2 (prior knowledge) with each of `cookies`
/// as its own `cookie` field, as HTTP/2 clients send them (RFC 9113 §8.2.3).
async fn attempt_h2(server: &palisade::Server, cookies: &[HeaderValue]) -> http::Response<()> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut req = Request::get(format!("http://{}/api/x", server.proxy_addr));
    for cookie in cookies {
        req = req.header("cookie", cookie.clone());
    }
    let response = client
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    response.map(|_| ())
}

#[tokio::test]
async fn cookie_rules_hold_when_the_cookies_come_as_http2_crumbs() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let whole = session(&user);
    let forged = session(&forged_admin());
    // A session in chunks, one crumb each: joined, read, and passed on as
    // one `Cookie` line.
    let (a, rest) = whole.split_at(whole.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let chunks = [
        format!("sb-ref-auth-token.0={a}"),
        format!("sb-ref-auth-token.1={b}"),
        format!("sb-ref-auth-token.2={c}"),
    ];
    let crumbs: Vec<_> = chunks.iter().map(|c| text(c)).collect();
    let response = attempt_h2(&server, &crumbs).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = &upstream.wait_for_count(1).await[0];
    assert_eq!(seen.headers["x-user-id"], "user-1");
    let lines: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(lines, [chunks.join("; ").as_str()]);
    // Each attack the HTTP/1 tests make on one line, made across crumbs:
    // a chunk run holding another session beside NAME; a chunk given
    // twice; a crumb a whitespace-splitting (SimpleCookie) or
    // Unicode-stripping (Django) reader starts a second cookie in; a `,`
    // inside a crumb.
    let attacks: Vec<Vec<HeaderValue>> = vec![
        vec![
            text(&format!("sb-ref-auth-token={whole}")),
            text(&format!("sb-ref-auth-token.0={forged}")),
        ],
        vec![
            text(&format!("sb-ref-auth-token={whole}")),
            text(&format!("sb-ref-auth-token.0={whole}")),
            text(&format!("sb-ref-auth-token.0={forged}")),
        ],
        vec![
            text(&format!("sb-access-token={user}")),
            text(&format!("x=1 sb-access-token={}", forged_admin())),
        ],
        vec![
            text(&format!("sb-access-token={user}")),
            HeaderValue::from_bytes(
                format!("\u{3000}sb-access-token={}", forged_admin()).as_bytes(),
            )
            .unwrap(),
        ],
        vec![
            text(&format!("sb-access-token={user},x=1")),
            text("theme=dark"),
        ],
    ];
    for crumbs in &attacks {
        let response = attempt_h2(&server, crumbs).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{crumbs:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            INVALID,
            "{crumbs:?}"
        );
    }
    // None of them reached the upstream.
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn rejects_a_second_token_in_a_cookie_line_with_non_ascii_bytes() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    // palisade used to skip a Cookie line that is not ASCII; a backend
    // decoding headers as Latin-1 reads it.
    let mut line = b"x=\xff; sb-access-token=".to_vec();
    line.extend_from_slice(forged_admin().as_bytes());
    let reply = attempt(
        &server,
        &[
            ("authorization", text(&bearer(&user))),
            ("cookie", HeaderValue::from_bytes(&line).unwrap()),
        ],
    )
    .await;
    refused(&server, &upstream, &reply, "ambiguous").await;
}

#[tokio::test]
async fn rejects_supabase_whole_cookie_and_chunks_that_disagree() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let forged = session(&forged_admin());
    let (a, b) = forged.split_at(forged.len() / 2);
    let cookie = format!(
        "sb-ref-auth-token={}; sb-ref-auth-token.0={a}; sb-ref-auth-token.1={b}",
        session(&user)
    );
    let reply = attempt(&server, &[("cookie", text(&cookie))]).await;
    refused(&server, &upstream, &reply, "ambiguous").await;
}

#[tokio::test]
async fn accepts_the_same_token_in_several_places() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let reply = attempt(
        &server,
        &[
            ("authorization", text(&bearer(&user))),
            ("authorization", text(&bearer(&user))),
            (
                "cookie",
                text(&format!(
                    "sb-access-token={user}; sb-ref-auth-token={}",
                    session(&user)
                )),
            ),
            ("cookie", text(&format!("sb-access-token=\"{user}\""))),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.requests()[0].headers["x-user-id"], "user-1");
}

// === item 20: JWT edge cases ===

#[tokio::test]
async fn rejects_unknown_crit_header_parameter() {
    let (upstream, server) = setup("").await;
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["urn:example:must-understand".into()]);
    header.extras.insert("urn:example:must-understand", true);
    let token = jsonwebtoken::encode(
        &header,
        &claims("user-1"),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let reply = attempt(&server, &[("authorization", text(&bearer(&token)))]).await;
    refused(&server, &upstream, &reply, "malformed").await;
}

#[tokio::test]
async fn rejects_empty_sub_when_sub_required() {
    let (upstream, server) = setup("").await;
    let token = token(claims(""));
    let reply = attempt(&server, &[("authorization", text(&bearer(&token)))]).await;
    refused(&server, &upstream, &reply, "missing_claim").await;
}

#[tokio::test]
async fn rejects_sub_with_crlf_instead_of_forwarding_no_user_id() {
    let (upstream, server) = setup("").await;
    let token = token(claims("user-1\r\nX-User-Role: admin"));
    let reply = attempt(&server, &[("authorization", text(&bearer(&token)))]).await;
    refused(&server, &upstream, &reply, "malformed").await;
}

#[tokio::test]
async fn rejects_forwarded_claims_that_are_not_header_values() {
    let (upstream, server) = setup("").await;
    for (claim, value) in [
        ("restaurant_id", json!("r-1\nr-2")),
        ("restaurant_id", json!("r-1\u{0}")),
        ("role", json!(" admin")),
        ("role", json!("ad\tmin")),
    ] {
        let token = token(with(claims("user-1"), claim, value.clone()));
        let reply = attempt(&server, &[("authorization", text(&bearer(&token)))]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{claim}: {value}");
    }
    assert_eq!(upstream.count(), 0);
}

/// A token that gives a forwarded claim two values (a top-level
/// `"app_metadata.tenant"` beside the nested claim): refused, never
/// forwarded without the tenant header; one value twice is fine.
#[tokio::test]
async fn refuses_a_forwarded_claim_the_token_gives_two_values() {
    let route = "path = \"/**\"\nforward_claims = { \"app_metadata.tenant\" = \"X-Tenant-Id\" }";
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&config("").replace("path = \"/**\"", route), upstream.addr).await;
    let two = with(
        with(claims("user-1"), "app_metadata.tenant", json!("t-other")),
        "app_metadata",
        json!({ "tenant": "t-1" }),
    );
    let reply = attempt(&server, &[("authorization", text(&bearer(&token(two))))]).await;
    refused(&server, &upstream, &reply, "malformed").await;
    let same = with(
        with(claims("user-1"), "app_metadata.tenant", json!("t-1")),
        "app_metadata",
        json!({ "tenant": "t-1" }),
    );
    let reply = attempt(&server, &[("authorization", text(&bearer(&token(same))))]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.requests()[0].headers["x-tenant-id"], "t-1");
}

// === item 22: Supabase chunk floods ===

#[tokio::test]
async fn refuses_a_session_split_into_six_hundred_chunks() {
    let (upstream, server) = setup("").await;
    // A valid session, padded so that it splits into 600 chunks; before,
    // palisade reassembled it in quadratic time and admitted it.
    let user = token(claims("user-1"));
    let value = format!(
        "base64-{}",
        b64(&json!({ "access_token": user, "refresh_token": "r".repeat(600) }).to_string())
    );
    let per = value.len() / 600;
    let chunks: Vec<String> = (0..600)
        .map(|i| {
            let end = if i == 599 { value.len() } else { (i + 1) * per };
            format!("sb-ref-auth-token.{i}={}", &value[i * per..end])
        })
        .collect();
    let reply = attempt(&server, &[("cookie", text(&chunks.join("; ")))]).await;
    refused(&server, &upstream, &reply, "malformed").await;
}

#[tokio::test]
async fn many_unrelated_cookies_and_a_chunked_session_still_authenticate() {
    let (upstream, server) = setup("").await;
    let user = token(claims("user-1"));
    let value = session(&user);
    let per = value.len() / 4 + 1;
    let mut cookies: Vec<String> = (0..1000).map(|i| format!("pref{i}=v{i}")).collect();
    for (i, piece) in value.as_bytes().chunks(per).enumerate() {
        cookies.push(format!(
            "sb-ref-auth-token.{i}={}",
            std::str::from_utf8(piece).unwrap()
        ));
    }
    let reply = attempt(&server, &[("cookie", text(&cookies.join("; ")))]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.requests()[0].headers["x-user-id"], "user-1");
}

// === items 11 and 21: credentials in config URLs ===

const UPSTREAM_PASSWORD: &str = "upstream-pa55word";
const JWKS_API_KEY: &str = "jwks-api-key-0123";

fn url_config(upstream: std::net::SocketAddr, jwks_port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "http://operator:{UPSTREAM_PASSWORD}@{upstream}"
preserve_host = false
[auth.jwt]
jwks_url = "http://127.0.0.1:{jwks_port}/jwks.json?apikey={JWKS_API_KEY}"
algorithms = ["RS256"]
[[routes]]
name = "open"
path = "/**"
auth = "none"
"#
    )
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn config_readyz_and_metrics_never_show_url_credentials() {
    let upstream = TestUpstream::start().await;
    let policy_text = url_config(upstream.addr, closed_port());
    let policy = palisade::config::load_str(&policy_text, "test.toml", &test_env()).unwrap();
    let server = palisade::start(policy).await.unwrap();
    // A request goes through: the upstream sees no userinfo in Host either.
    let reply = get(server.proxy_addr, "/x").await;
    assert_eq!(reply.status, StatusCode::OK);
    let host = upstream.requests()[0].headers["host"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(host, upstream.addr.to_string());
    for path in ["/config", "/readyz", "/metrics"] {
        let body = String::from_utf8(get(server.admin_addr, path).await.body.to_vec()).unwrap();
        for secret in [UPSTREAM_PASSWORD, "operator", JWKS_API_KEY] {
            assert!(!body.contains(secret), "{path} shows {secret}: {body}");
        }
    }
    let config = get(server.admin_addr, "/config").await.json();
    assert!(
        config["auth"]["jwt"]["jwks_url"]
            .as_str()
            .unwrap()
            .ends_with("/jwks.json?<redacted>")
    );
    assert_eq!(
        config["upstream"]["url"],
        format!("http://<redacted>@{}", upstream.addr)
    );
}

#[test]
fn check_errors_never_show_url_credentials() {
    let dir = temp_dir("url-errors");
    let path = write_config(
        &dir,
        &format!(
            "[upstream]\nurl = \"ftp://operator:{UPSTREAM_PASSWORD}@10.0.0.1/x?token={JWKS_API_KEY}\"\n[[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n"
        ),
    );
    let out = palisade()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("upstream.url"), "{all}");
    assert!(!all.contains(UPSTREAM_PASSWORD), "{all}");
    assert!(!all.contains(JWKS_API_KEY), "{all}");
}

#[tokio::test]
async fn logs_never_show_url_credentials() {
    let upstream = TestUpstream::start().await;
    let dir = temp_dir("url-logs");
    let path = write_config(&dir, &url_config(upstream.addr, closed_port()));
    let mut process = Process::start(&path);
    let (proxy, _admin) = process.addresses();
    assert_eq!(get(proxy, "/x").await.status, StatusCode::OK);
    // The access line first; the JWKS failure repeats every second after.
    process.wait_for("\"status\":200");
    process.wait_for("JWKS fetch failed");
    for line in &process.seen {
        for secret in [UPSTREAM_PASSWORD, JWKS_API_KEY] {
            assert!(!line.contains(secret), "a log line shows {secret}: {line}");
        }
    }
}

// === by = "header:NAME" limits without authentication ===

#[test]
fn check_warns_about_header_limit_on_route_without_auth() {
    let dir = temp_dir("header-limit");
    let path = write_config(
        &dir,
        "[upstream]\nurl = \"http://127.0.0.1:8000\"\n\
         [[routes]]\nname = \"open\"\npath = \"/open/**\"\nauth = \"none\"\n\
         rate_limits = [{ by = \"header:X-Api-Key\", limit = 10, per = \"1m\" }]\n\
         [[routes]]\nname = \"ip-only\"\npath = \"/**\"\nauth = \"none\"\n\
         rate_limits = [{ by = \"ip\", limit = 10, per = \"1m\" }]\n",
    );
    let out = palisade()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("\"open\""), "{stderr}");
    assert!(warnings[0].contains("header:X-Api-Key"), "{stderr}");
}

// === siblings ===

#[tokio::test]
async fn rejects_underscore_spelling_of_a_token_header_holding_another_token() {
    let upstream = TestUpstream::start().await;
    let policy = "[upstream]\nurl = \"{UPSTREAM}\"\n[auth.jwt]\nhs256_secret = \"${JWT_SECRET}\"\n\
                sources = [\"header:X-Api-Token\"]\nforward_claims = { sub = \"X-User-Id\" }\n\
                [[routes]]\nname = \"api\"\npath = \"/**\"\n";
    let server = start_palisade(policy, upstream.addr).await;
    let user = token(claims("user-1"));
    // WSGI servers read X_Api_Token as X-Api-Token (HTTP_X_API_TOKEN).
    let reply = attempt(
        &server,
        &[
            ("x-api-token", text(&user)),
            ("x_api_token", text(&forged_admin())),
        ],
    )
    .await;
    refused(&server, &upstream, &reply, "ambiguous").await;
}

#[tokio::test]
async fn a_null_tenant_claim_matches_no_tenant_path() {
    let upstream = TestUpstream::start().await;
    let policy = "[upstream]\nurl = \"{UPSTREAM}\"\n[auth.jwt]\nhs256_secret = \"${JWT_SECRET}\"\n\
                forward_claims = { restaurant_id = \"X-Tenant-Id\" }\n\
                [[routes]]\nname = \"restaurant\"\npath = \"/api/restaurants/{restaurant_id}/**\"\n\
                tenant = { param = \"restaurant_id\", claim = \"restaurant_id\" }\n";
    let server = start_palisade(policy, upstream.addr).await;
    let token = token(with(claims("user-1"), "restaurant_id", Value::Null));
    let reply = get_with(
        server.proxy_addr,
        "/api/restaurants/null/orders",
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.count(), 0);
}

#[test]
fn check_warns_that_upstream_userinfo_is_never_sent() {
    let dir = temp_dir("upstream-userinfo");
    let path = write_config(
        &dir,
        &format!(
            "[upstream]\nurl = \"http://operator:{UPSTREAM_PASSWORD}@127.0.0.1:8000\"\n\
             [[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n"
        ),
    );
    let out = palisade()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: upstream.url (\"http://<redacted>@127.0.0.1:8000\")"),
        "{stderr}"
    );
    assert!(!stderr.contains(UPSTREAM_PASSWORD), "{stderr}");
}

#[test]
fn config_parse_errors_never_show_url_credentials() {
    // serde quotes the value it could not use; a URL there is redacted.
    let text = format!(
        "[ratelimit]\nredis_cluster = \"redis://:{UPSTREAM_PASSWORD}@10.0.0.1:7000\"\n\
         [[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n"
    );
    let error = palisade::config::load_str(&text, "t.toml", &test_env())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("redis_cluster") || error.contains("t.toml:2"),
        "{error}"
    );
    assert!(!error.contains(UPSTREAM_PASSWORD), "{error}");
}
