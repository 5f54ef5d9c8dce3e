//! Issue 4: authentication over real sockets: every failure reason, claim
//! forwarding, spoofed identity headers, any-of lists, tenant scoping,
//! cookie sources, shared secrets, algorithm confusion, JWKS rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::*;

const CONFIG: &str = r#"
[upstream]
url = "{UPSTREAM}"
[auth.jwt]
hs256_secret = "${JWT_SECRET}"
issuer = "https://issuer.example"
audiences = ["authenticated"]
leeway = "30s"
require = ["exp", "sub"]
sources = ["header:Authorization", "cookie:sb-access-token", "supabase-cookie:sb-ref-auth-token"]
forward_claims = { sub = "X-User-Id", restaurant_id = "X-Tenant-Id", role = "X-User-Role", "app_metadata.plan" = "X-Plan" }
[auth.secrets.hook]
header = "X-Hook-Secret"
values = ["${HOOK_SECRET}", "previous-hook-secret"]
[[routes]]
name = "public"
path = "/public/**"
auth = "none"
[[routes]]
name = "maybe"
path = "/maybe/**"
auth = "optional"
[[routes]]
name = "restaurant"
path = "/api/restaurants/{restaurant_id}/**"
tenant = { param = "restaurant_id", claim = "restaurant_id" }
[[routes]]
name = "hook"
path = "/webhooks/**"
methods = ["POST"]
auth = "secret:hook"
[[routes]]
name = "either"
path = "/either/**"
auth = ["jwt", "secret:hook"]
[[routes]]
name = "api"
path = "/api/**"
"#;

fn claims() -> Value {
    json!({
        "sub": "user-1",
        "exp": now() + 600,
        "iat": now(),
        "iss": "https://issuer.example",
        "aud": "authenticated",
        "restaurant_id": "r-42",
        "role": "authenticated",
        "app_metadata": { "plan": "pro" },
    })
}

fn with(mut c: Value, key: &str, value: Value) -> Value {
    c[key] = value;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn setup() -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CONFIG, upstream.addr).await;
    (upstream, server)
}

#[tokio::test]
async fn valid_token_reaches_the_upstream_with_claim_headers() {
    let (upstream, server) = setup().await;
    let token = token(claims());
    let reply = get_with(
        server.proxy_addr,
        "/api/orders",
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &upstream.requests()[0].headers;
    assert_eq!(seen["x-user-id"], "user-1");
    assert_eq!(seen["x-tenant-id"], "r-42");
    assert_eq!(seen["x-user-role"], "authenticated");
    assert_eq!(seen["x-plan"], "pro");
    // Authorization reaches the unchanged backend as it was.
    assert_eq!(seen["authorization"], bearer(&token).as_str());
}

async fn expect_401(
    server: &palisade::Server,
    path: &str,
    headers: &[(&str, &str)],
    challenge: Option<&str>,
) {
    let reply = get_with(server.proxy_addr, path, headers).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path} {headers:?}");
    assert_eq!(reply.header("www-authenticate"), challenge, "{headers:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(reply.json()["status"], 401);
    assert!(
        reply.header("x-frame-options").is_some(),
        "security headers on 401"
    );
}

/// The status of `GET /api/x` with `token` as a Bearer credential.
async fn bearer_status(server: &palisade::Server, token: &str) -> StatusCode {
    get_with(
        server.proxy_addr,
        "/api/x",
        &[("authorization", &bearer(token))],
    )
    .await
    .status
}

/// A token presented to `/api/x` is refused with 401, counted under `reason`.
async fn refused(server: &palisade::Server, token: &str, reason: &str) {
    expect_401(
        server,
        "/api/x",
        &[("authorization", &bearer(token))],
        INVALID,
    )
    .await;
    let series = format!("palisade_auth_failures_total{{reason=\"{reason}\",route=\"api\"}}");
    assert_eq!(sample(&metrics(server).await, &series), 1.0, "{reason}");
}

const INVALID: Option<&str> = Some("Bearer realm=\"palisade\", error=\"invalid_token\"");

#[tokio::test]
async fn every_failure_reason_is_401_and_never_reaches_the_upstream() {
    let (upstream, server) = setup().await;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims().to_string())
    );
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims(),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let wrong_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("malformed", "not-a-jwt".into()),
        ("malformed", "a.b.c".into()),
        ("bad_signature", wrong_key),
        ("expired", token(with(claims(), "exp", json!(now() - 3600)))),
        (
            "not_yet_valid",
            token(with(claims(), "nbf", json!(now() + 3600))),
        ),
        (
            "not_yet_valid",
            token(with(claims(), "iat", json!(now() + 3600))),
        ),
        (
            "wrong_issuer",
            token(with(claims(), "iss", json!("https://evil.example"))),
        ),
        (
            "wrong_audience",
            token(with(claims(), "aud", json!("service_role"))),
        ),
        ("missing_claim", token(without(claims(), "sub"))),
        ("missing_claim", token(without(claims(), "exp"))),
        ("alg_not_allowed", alg_none),
        ("alg_not_allowed", hs512),
    ];
    for (reason, bad) in &cases {
        expect_401(
            &server,
            "/api/x",
            &[("authorization", &bearer(bad))],
            INVALID,
        )
        .await;
        let scrape = metrics(&server).await;
        assert!(
            sample(
                &scrape,
                &format!("palisade_auth_failures_total{{reason=\"{reason}\",route=\"api\"}}")
            ) >= 1.0,
            "{reason} not counted"
        );
    }
    // Missing credentials: a plain challenge. Basic counts as missing.
    expect_401(&server, "/api/x", &[], Some("Bearer realm=\"palisade\"")).await;
    expect_401(
        &server,
        "/api/x",
        &[("authorization", "Basic dXNlcjpwYXNz")],
        Some("Bearer realm=\"palisade\""),
    )
    .await;
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_auth_failures_total{reason=\"missing\",route=\"api\"}"
        ),
        2.0
    );
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn production_detail_does_not_say_why() {
    let (_upstream, server) = setup().await;
    let expired = get_with(
        server.proxy_addr,
        "/api/x",
        &[(
            "authorization",
            &bearer(&token(with(claims(), "exp", json!(now() - 3600)))),
        )],
    )
    .await;
    let forged = get_with(
        server.proxy_addr,
        "/api/x",
        &[("authorization", "Bearer a.b.c")],
    )
    .await;
    assert_eq!(expired.json()["detail"], forged.json()["detail"]);
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let (upstream, server) = setup().await;
    let spoof = [
        ("x-user-id", "admin"),
        ("x_user_id", "admin"),
        ("X-Tenant-Id", "r-1"),
        ("x_user_role", "service_role"),
        ("x-plan", "enterprise"),
    ];
    // none, optional (anonymous) and jwt routes.
    for path in ["/public/x", "/maybe/x"] {
        assert_eq!(
            get_with(server.proxy_addr, path, &spoof).await.status,
            StatusCode::OK
        );
    }
    let mut with_token = spoof.to_vec();
    let token = token(without(claims(), "role"));
    let auth = bearer(&token);
    with_token.push(("authorization", &auth));
    assert_eq!(
        get_with(server.proxy_addr, "/api/x", &with_token)
            .await
            .status,
        StatusCode::OK
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    for request in &seen[..2] {
        for name in [
            "x-user-id",
            "x_user_id",
            "x-tenant-id",
            "x_user_role",
            "x-plan",
            "x-user-role",
        ] {
            assert!(
                !request.headers.contains_key(name),
                "{name} reached {}",
                request.uri
            );
        }
    }
    let verified = &seen[2].headers;
    assert_eq!(verified["x-user-id"], "user-1");
    assert_eq!(verified.get_all("x-user-id").iter().count(), 1);
    assert_eq!(verified["x-tenant-id"], "r-42");
    assert_eq!(verified["x-plan"], "pro");
    assert!(!verified.contains_key("x_user_id"));
    assert!(
        !verified.contains_key("x-user-role"),
        "a claim the token lacks must not come from the client"
    );
}

#[tokio::test]
async fn optional_route() {
    let (upstream, server) = setup().await;
    assert_eq!(
        get(server.proxy_addr, "/maybe/x").await.status,
        StatusCode::OK
    );
    assert!(!upstream.requests()[0].headers.contains_key("x-user-id"));
    expect_401(
        &server,
        "/maybe/x",
        &[("authorization", "Bearer broken")],
        INVALID,
    )
    .await;
    let reply = get_with(
        server.proxy_addr,
        "/maybe/x",
        &[("authorization", &bearer(&token(claims())))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.requests()[1].headers["x-user-id"], "user-1");
}

fn post(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::post(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from_static(b"{\"event\":\"call.ended\"}")))
        .unwrap()
}

#[tokio::test]
async fn shared_secret_routes() {
    let (upstream, server) = setup().await;
    let ok = send(
        server.proxy_addr,
        post("/webhooks/vapi", &[("x-hook-secret", HOOK_SECRET)]),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let rotated = send(
        server.proxy_addr,
        post(
            "/webhooks/vapi",
            &[("x-hook-secret", "previous-hook-secret")],
        ),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK);
    for seen in upstream.requests() {
        assert!(
            !seen.headers.contains_key("x-hook-secret"),
            "the secret was forwarded"
        );
    }
    let wrong = send(
        server.proxy_addr,
        post("/webhooks/vapi", &[("x-hook-secret", "guess")]),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.header("www-authenticate").is_none(),
        "secret-only routes send no challenge"
    );
    let missing = send(server.proxy_addr, post("/webhooks/vapi", &[])).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert!(missing.header("www-authenticate").is_none());
    // The secret header in another spelling is neither accepted nor forwarded.
    let spelled = send(
        server.proxy_addr,
        post("/webhooks/vapi", &[("x_hook_secret", HOOK_SECRET)]),
    )
    .await;
    assert_eq!(spelled.status, StatusCode::UNAUTHORIZED);
    let public = get_with(
        server.proxy_addr,
        "/public/x",
        &[
            ("x-hook-secret", HOOK_SECRET),
            ("X_Hook_Secret", HOOK_SECRET),
        ],
    )
    .await;
    assert_eq!(public.status, StatusCode::OK);
    let last = upstream.requests().pop().unwrap();
    assert!(
        !last.headers.contains_key("x-hook-secret") && !last.headers.contains_key("x_hook_secret")
    );
    assert_eq!(upstream.count(), 3);
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_auth_failures_total{reason=\"bad_secret\",route=\"hook\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_secret_header_sent_twice_with_different_values_is_ambiguous() {
    let (upstream, server) = setup().await;
    // The right secret first and a guess second, then the other way round:
    // neither line wins; the request is refused as ambiguous.
    for pair in [[HOOK_SECRET, "guess"], ["guess", HOOK_SECRET]] {
        let reply = send(
            server.proxy_addr,
            post(
                "/webhooks/vapi",
                &[("x-hook-secret", pair[0]), ("x-hook-secret", pair[1])],
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{pair:?}");
    }
    assert_eq!(
        upstream.count(),
        0,
        "an ambiguous secret reached the upstream"
    );
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_auth_failures_total{reason=\"ambiguous\",route=\"hook\"}"
        ),
        2.0
    );
    // The same value twice is one secret.
    let twice = send(
        server.proxy_addr,
        post(
            "/webhooks/vapi",
            &[
                ("x-hook-secret", HOOK_SECRET),
                ("x-hook-secret", HOOK_SECRET),
            ],
        ),
    )
    .await;
    assert_eq!(twice.status, StatusCode::OK);
}

#[tokio::test]
async fn connection_cannot_remove_the_headers_authentication_reads() {
    let (upstream, server) = setup().await;
    // The secret's header named in `Connection` (any case) is still read:
    // SPEC §3, `Connection` never removes a header palisade relies on.
    let hook = format!(
        "POST /webhooks/vapi HTTP/1.1\r\nHost: a\r\nX-Hook-Secret: {HOOK_SECRET}\r\n\
         Connection: close, x-HOOK-secret\r\nContent-Length: 0\r\n\r\n"
    );
    let reply = raw(server.proxy_addr, hook.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // So is a token in the `Authorization` header it names.
    let token = format!(
        "GET /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\
         Connection: close, Authorization\r\n\r\n",
        token(claims())
    );
    let reply = raw(server.proxy_addr, token.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        !seen[0].headers.contains_key("x-hook-secret"),
        "the secret was forwarded"
    );
}

#[tokio::test]
async fn any_of_lists() {
    let (upstream, server) = setup().await;
    // A valid secret beside a broken token is admitted.
    let reply = get_with(
        server.proxy_addr,
        "/either/x",
        &[
            ("authorization", "Bearer broken.token.here"),
            ("x-hook-secret", HOOK_SECRET),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // A valid token alone.
    let reply = get_with(
        server.proxy_addr,
        "/either/x",
        &[("authorization", &bearer(&token(claims())))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.requests()[1].headers["x-user-id"], "user-1");
    // Both broken.
    let reply = get_with(
        server.proxy_addr,
        "/either/x",
        &[
            ("authorization", "Bearer broken.token.here"),
            ("x-hook-secret", "nope"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), INVALID);
    // Nothing at all.
    expect_401(&server, "/either/x", &[], Some("Bearer realm=\"palisade\"")).await;
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn tenant_scoping() {
    let (upstream, server) = setup().await;
    let auth = bearer(&token(claims()));
    let mine = get_with(
        server.proxy_addr,
        "/api/restaurants/r-42/menu",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(mine.status, StatusCode::OK);
    let theirs = get_with(
        server.proxy_addr,
        "/api/restaurants/r-43/menu",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN);
    assert_eq!(
        theirs.header("content-type"),
        Some("application/problem+json")
    );
    // An encoded form of the same id is the same resource.
    let encoded = get_with(
        server.proxy_addr,
        "/api/restaurants/r%2D42/menu",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(encoded.status, StatusCode::OK);
    let no_claim = bearer(&token(without(claims(), "restaurant_id")));
    assert_eq!(
        get_with(
            server.proxy_addr,
            "/api/restaurants/r-42/menu",
            &[("authorization", &no_claim)]
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(upstream.count(), 2);
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"tenant\",route=\"restaurant\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn cookie_sources() {
    let (upstream, server) = setup().await;
    let token = token(claims());
    let plain = get_with(
        server.proxy_addr,
        "/api/x",
        &[("cookie", &format!("theme=dark; sb-access-token={token}"))],
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK);
    let session =
        json!({"access_token": token, "refresh_token": "r", "token_type": "bearer"}).to_string();
    let encoded = format!(
        "base64-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&session)
    );
    let whole = get_with(
        server.proxy_addr,
        "/api/x",
        &[("cookie", &format!("sb-ref-auth-token={encoded}"))],
    )
    .await;
    assert_eq!(whole.status, StatusCode::OK);
    let (a, rest) = encoded.split_at(encoded.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let chunked =
        format!("sb-ref-auth-token.0={a}; sb-ref-auth-token.1={b}; sb-ref-auth-token.2={c}");
    let reply = get_with(server.proxy_addr, "/api/x", &[("cookie", &chunked)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.requests()[2].headers["x-user-id"], "user-1");
    // Cookies reach the backend unchanged.
    assert_eq!(upstream.requests()[2].headers["cookie"], chunked.as_str());
    // A missing chunk invalidates the session.
    let gap = format!("sb-ref-auth-token.0={a}; sb-ref-auth-token.2={c}");
    expect_401(&server, "/api/x", &[("cookie", &gap)], INVALID).await;
    assert_eq!(upstream.count(), 3);
    // NAME itself wins when present (SPEC §2): stray chunks beside it that
    // no reader joins (no `.0`), or a run holding the same token, pass.
    for stray in [
        format!("sb-ref-auth-token.1={b}"),
        "sb-ref-auth-token.01=x".to_string(),
        format!("sb-ref-auth-token.0={encoded}"),
    ] {
        let cookie = format!("{stray}; sb-ref-auth-token={encoded}");
        let reply = get_with(server.proxy_addr, "/api/x", &[("cookie", &cookie)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{cookie}");
        let seen = upstream.requests();
        assert_eq!(seen.last().unwrap().headers["x-user-id"], "user-1");
    }
    assert_eq!(upstream.count(), 6);
    // Beside NAME, the chunk a chunk reader would join first may not be
    // given twice with different values, nor hold another token past a gap.
    let forged = format!(
        "base64-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"access_token": "forged.tok.sig"}).to_string())
    );
    // Nor may a run palisade cannot read stand beside NAME: a backend that
    // does not see NAME (another case, an empty value) and reads chunks
    // more leniently (percent-escapes, an empty chunk ending the run)
    // would get the forged token.
    let escaped = format!("base64-%{:02X}{}", forged.as_bytes()[7], &forged[8..]);
    for attack in [
        format!(
            "sb-ref-auth-token={encoded}; sb-ref-auth-token.0={encoded}; sb-ref-auth-token.0={forged}"
        ),
        format!("sb-ref-auth-token={encoded}; sb-ref-auth-token.0={forged}; sb-ref-auth-token.2=x"),
        format!("SB-REF-AUTH-TOKEN={encoded}; sb-ref-auth-token.0={escaped}"),
        format!(
            "sb-ref-auth-token={encoded}; sb-ref-auth-token.0={forged}; sb-ref-auth-token.1=; sb-ref-auth-token.2=zz"
        ),
        format!("sb-ref-auth-token.0=garbage; sb-ref-auth-token={encoded}"),
    ] {
        expect_401(&server, "/api/x", &[("cookie", &attack)], INVALID).await;
    }
    // An empty NAME beside a bearer token: the chunks are the session
    // (Supabase reads them), read strictly.
    let bearer = format!("Bearer {token}");
    let empty_name = format!("sb-ref-auth-token=; sb-ref-auth-token.0={escaped}");
    expect_401(
        &server,
        "/api/x",
        &[("authorization", &bearer), ("cookie", &empty_name)],
        INVALID,
    )
    .await;
    // Lines backends split differently from palisade (whitespace starts a
    // cookie for SimpleCookie; a `,` is a value's for `cookie`/Starlette,
    // a separator for others), and a plain-JSON session whose raw text
    // (read without percent-decoding) holds another token.
    for attack in [
        format!("sb-access-token={token}; x=1 sb-access-token=forged.tok.sig"),
        format!("sb-access-token={token},x=1"),
        format!("sb-access-token={token}; \u{3000}sb-access-token=forged.tok.sig"),
        format!("sb-ref-auth-token={encoded}; x=1 sb-ref-auth-token={forged}"),
        format!("sb-ref-auth-token=[\"{token}%22%2C%22x\"]"),
        // A plain-JSON session's escape split across chunks: the `cookie`
        // package decodes chunk by chunk and keeps an undecodable one raw.
        format!(
            "sb-ref-auth-token.0=%7B%22access_token%22%3A%2; sb-ref-auth-token.1=2{token}%22%7D"
        ),
    ] {
        expect_401(&server, "/api/x", &[("cookie", &attack)], INVALID).await;
    }
    assert_eq!(
        upstream.count(),
        6,
        "an ambiguous session reached the upstream"
    );
}

// === JWKS ===

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn jwk(name: &str) -> Value {
    let keys: Value = serde_json::from_slice(&fixture("jwks-keys.json")).unwrap();
    keys[name].clone()
}

fn es256_token(key_file: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(&fixture(key_file)).unwrap(),
    )
    .unwrap()
}

/// A JWKS endpoint whose document the test can change or take down.
struct JwksServer {
    addr: SocketAddr,
    document: Arc<Mutex<Value>>,
    fetches: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let document = Arc::new(Mutex::new(json!({ "keys": keys })));
        let fetches = Arc::new(Mutex::new(0));
        let (doc, count) = (document.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (doc, count) = (doc.clone(), count.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        *count.lock().unwrap() += 1;
                        let body = doc.lock().unwrap().to_string();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            document,
            fetches,
            task,
        }
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.document.lock().unwrap() = json!({ "keys": keys });
    }

    fn fetches(&self) -> usize {
        *self.fetches.lock().unwrap()
    }
}

fn jwks_config(jwks: SocketAddr, algorithms: &str) -> String {
    CONFIG
        .replace("hs256_secret = \"${JWT_SECRET}\"", &format!("hs256_secret = \"${{JWT_SECRET}}\"\njwks_url = \"http://{jwks}/.well-known/jwks.json\"\njwks_refresh = \"1h\"\nalgorithms = {algorithms}"))
}

async fn wait_ready(server: &palisade::Server) {
    for _ in 0..500 {
        if get(server.admin_addr, "/readyz").await.status == StatusCode::OK {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never ready");
}

#[tokio::test]
async fn jwks_rotation_without_restart_and_outage_tolerance() {
    let jwks = JwksServer::start(vec![jwk("es256-a")]).await;
    let upstream = TestUpstream::start().await;
    let server = start_palisade(
        &jwks_config(jwks.addr, "[\"HS256\", \"ES256\"]"),
        upstream.addr,
    )
    .await;
    wait_ready(&server).await;
    let ready = get(server.admin_addr, "/readyz").await.json();
    assert_eq!(ready["jwks"]["status"], "loaded");
    // Supabase's migration case: an HS256 token and an ES256 token both work.
    let es = es256_token("es256-a.pem", "key-a", &claims());
    assert_eq!(bearer_status(&server, &es).await, StatusCode::OK);
    assert_eq!(
        bearer_status(&server, &token(claims())).await,
        StatusCode::OK
    );
    // A new key appears in the JWKS after start-up: accepted without a restart.
    jwks.set_keys(vec![jwk("es256-a"), jwk("es256-b")]);
    let rotated = es256_token("es256-b.pem", "key-b", &claims());
    assert_eq!(bearer_status(&server, &rotated).await, StatusCode::OK);
    // An unknown kid after the refresh is 401 unknown_kid, and does not refetch again within 10 s.
    let fetches = jwks.fetches();
    let unknown = es256_token("es256-b.pem", "key-zzz", &claims());
    expect_401(
        &server,
        "/api/x",
        &[("authorization", &bearer(&unknown))],
        INVALID,
    )
    .await;
    expect_401(
        &server,
        "/api/x",
        &[("authorization", &bearer(&unknown))],
        INVALID,
    )
    .await;
    assert_eq!(jwks.fetches(), fetches, "refetch rate limit");
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_auth_failures_total{reason=\"unknown_kid\",route=\"api\"}"
        ),
        2.0
    );
    // The JWKS server goes down: tokens signed by known keys still verify.
    jwks.task.abort();
    let fresh = es256_token(
        "es256-a.pem",
        "key-a",
        &with(claims(), "sub", json!("user-2")),
    );
    assert_eq!(bearer_status(&server, &fresh).await, StatusCode::OK);
}

#[tokio::test]
async fn readiness_waits_for_the_first_jwks_fetch() {
    // A JWKS URL nothing listens on: palisade serves /readyz 503 meanwhile.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&jwks_config(closed, "[\"ES256\"]"), upstream.addr).await;
    let ready = get(server.admin_addr, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["jwks"]["status"], "pending");
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let jwks = JwksServer::start(vec![jwk("rsa"), jwk("es256-a")]).await;
    let upstream = TestUpstream::start().await;
    // RS→HS: a token HMAC-signed with the RSA public key as the secret.
    let public_pem = fixture("rsa.pub.pem");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public_pem)).unwrap();
    // With HS256 also allowed (its own secret): the signature fails.
    let both = start_palisade(
        &jwks_config(jwks.addr, "[\"HS256\", \"RS256\"]"),
        upstream.addr,
    )
    .await;
    wait_ready(&both).await;
    refused(&both, &confused, "bad_signature").await;
    // With only RS256 allowed: the algorithm is refused.
    let rsa_only = start_palisade(
        &jwks_config(jwks.addr, "[\"RS256\"]").replace("hs256_secret = \"${JWT_SECRET}\"\n", ""),
        upstream.addr,
    )
    .await;
    wait_ready(&rsa_only).await;
    expect_401(
        &rsa_only,
        "/api/x",
        &[("authorization", &bearer(&confused))],
        INVALID,
    )
    .await;
    // A genuine RS256 token works there.
    let mut rs_header = Header::new(Algorithm::RS256);
    rs_header.kid = Some("rsa-1".into());
    let genuine = jsonwebtoken::encode(
        &rs_header,
        &claims(),
        &EncodingKey::from_rsa_pem(&fixture("rsa.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(bearer_status(&rsa_only, &genuine).await, StatusCode::OK);
    // An ES256 token naming the RSA key's kid: the key type does not fit.
    let misfit = es256_token("es256-a.pem", "rsa-1", &claims());
    let es_and_rs = start_palisade(
        &jwks_config(jwks.addr, "[\"RS256\", \"ES256\"]")
            .replace("hs256_secret = \"${JWT_SECRET}\"\n", ""),
        upstream.addr,
    )
    .await;
    wait_ready(&es_and_rs).await;
    refused(&es_and_rs, &misfit, "alg_not_allowed").await;
    assert_eq!(
        sample(
            &metrics(&rsa_only).await,
            "palisade_auth_failures_total{reason=\"alg_not_allowed\",route=\"api\"}"
        ),
        1.0
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn cors_preflight_needs_no_credentials_and_401_carries_cors() {
    let upstream = TestUpstream::start().await;
    let config = format!(
        "[cors]\nallow_origins = [\"https://app.example.com\"]\nallow_credentials = true\n{CONFIG}"
    );
    let server = start_palisade(&config, upstream.addr).await;
    let preflight = Request::options("/api/orders")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .body(Full::default())
        .unwrap();
    let reply = send(server.proxy_addr, preflight).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let denied = get_with(
        server.proxy_addr,
        "/api/orders",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        denied.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(upstream.count(), 0);
}
