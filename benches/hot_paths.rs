//! The pieces every proxied request pays for (issue 12), through the crate's
//! public API: route matching on a 50-route table, path canonicalisation,
//! request header stripping and injection, response header work, a GCRA
//! decision of the memory rate limiter, JWT verification on a cache hit, and
//! the trace context of `[tracing]` (off, and propagation on).
//! Run with `cargo bench --bench hot_paths` (a filter narrows it, e.g.
//! `cargo bench --bench hot_paths -- route`). Criterion reports time per
//! call; instruction counts under callgrind are steadier on a shared machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use governor::clock::DefaultClock;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use palisade::config::{Env, Policy, load_str};
use palisade::observe::trace::{self, TracingPolicy};
use palisade::policy::auth::Identity;
use palisade::policy::ratelimit::gcra::Gcra;
use palisade::policy::ratelimit::local::{LimiterRegistry, LocalBuckets};
use palisade::policy::ratelimit::{KeyInputs, RateLimitEngine};
use palisade::policy::response_headers::edit_map;
use palisade::policy::{forward, head, headers, sanitize};
use palisade::route::Lookup;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

/// A policy whose table has 50 routes of the shapes a real API has: literal
/// prefixes, `{param}` captures, `*`, and `**` tails, with method lists, so
/// a lookup walks many patterns before its match. JWT (HS256, cache on),
/// CORS and a memory limit on the last route.
fn policy() -> Policy {
    let mut text = String::from(
        "[auth.jwt]\nhs256_secret = \"${S}\"\nalgorithms = [\"HS256\"]\ncache_ttl = \"60s\"\n\
         forward_claims = { sub = \"X-User-Id\", restaurant_id = \"X-Tenant-Id\", role = \"X-User-Role\" }\n\
         [auth.secrets.hook]\nheader = \"X-Hook-Secret\"\nvalue = \"${H}\"\n\
         [cors]\nallow_origins = [\"https://app.example.com\"]\n\
         [defaults]\nauth = \"none\"\n",
    );
    for i in 0..49 {
        let (path, methods) = match i % 5 {
            0 => (
                format!("/api/v{}/service{i}/items/{{id}}", i % 3 + 1),
                "[\"GET\"]",
            ),
            1 => (format!("/api/service{i}/**"), "[\"GET\", \"POST\"]"),
            2 => (format!("/service{i}/*/detail"), "[\"GET\", \"HEAD\"]"),
            3 => (
                format!("/api/restaurants/{{rid}}/section{i}/**"),
                "[\"GET\", \"PUT\"]",
            ),
            _ => (format!("/static{i}/assets/**"), "[\"GET\"]"),
        };
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\npath = \"{path}\"\nmethods = {methods}\n"
        ));
    }
    text.push_str(
        "[[routes]]\nname = \"last\"\npath = \"/**\"\nauth = \"jwt\"\n\
         rate_limits = [{ by = \"ip\", limit = 1000000000, per = \"1s\" }]\n",
    );
    let policy = load_str(
        &text,
        "bench",
        &Env::from_pairs([("S", SECRET), ("H", "hook-secret-value")]),
    )
    .unwrap();
    assert_eq!(policy.routes.routes().len(), 50);
    policy
}

fn route_matching(c: &mut Criterion, policy: &Policy) {
    let table = &policy.routes;
    let found = |path: &str, name: &str| match table.lookup(&Method::GET, path) {
        Lookup::Found(route, _) => assert_eq!(&*route.name, name, "{path}"),
        _ => panic!("{path}: no route"),
    };
    found("/api/v1/service0/items/42", "r0");
    found("/api/restaurants/r-42/section23/orders/7", "r23");
    found("/not/listed/anywhere", "last");
    let mut group = c.benchmark_group("route_match_50");
    for (name, path) in [
        ("first", "/api/v1/service0/items/42"),
        ("middle_param", "/api/restaurants/r-42/section23/orders/7"),
        ("fallthrough_last", "/not/listed/anywhere"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| table.lookup(black_box(&Method::GET), black_box(path)))
        });
    }
    // A DELETE whose path an earlier GET/POST route takes: that route is
    // passed over and the catch-all answers.
    match table.lookup(&Method::DELETE, "/api/service1/x") {
        Lookup::Found(route, _) => assert_eq!(&*route.name, "last"),
        _ => panic!("DELETE /api/service1/x: no route"),
    }
    group.bench_function("wrong_method_then_last", |b| {
        b.iter(|| table.lookup(black_box(&Method::DELETE), black_box("/api/service1/x")))
    });
    group.finish();
}

fn canonicalisation(c: &mut Criterion) {
    let mut group = c.benchmark_group("canonicalize");
    for (name, path) in [
        ("plain", "/api/restaurants/r-42/orders/7"),
        (
            "escapes_and_slashes",
            "/api//restaurants/%72-42/orders%2d7/%7e/",
        ),
        (
            "long",
            "/api/v2/restaurants/0123456789abcdef/orders/2026/12/01/items/42/notes/latest",
        ),
    ] {
        assert!(sanitize::canonicalize(path).is_ok(), "{path}");
        group.bench_function(name, |b| b.iter(|| sanitize::canonicalize(black_box(path))));
    }
    let canonical = sanitize::canonicalize("/api/restaurants/r-42/orders/7").unwrap();
    group.bench_function("fold_lookalikes", |b| {
        b.iter(|| sanitize::fold_lookalikes(black_box(&canonical)))
    });
    group.finish();
}

/// A browser-like request head with a few headers a client may not send.
fn client_headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("origin", "https://app.example.com"),
        ("referer", "https://app.example.com/orders"),
        ("cookie", "theme=dark"),
        ("cookie", "sb-refresh=abc"),
        ("connection", "keep-alive, x-trace"),
        ("x-trace", "1"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x_user_id", "someone-else"),
        ("x-user-id", "someone-else"),
        ("x-request-id", "req-0123456789"),
    ] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn header_work(c: &mut Criterion, policy: &Policy, token: &str) {
    // The connection's peer as header text, written once per connection.
    let peer = forward::ip_header_value(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    let request_id = policy.request_id.header.clone();
    let host = HeaderValue::from_static("api.example.com");
    let template = client_headers(token);
    let mut group = c.benchmark_group("headers");
    // What the pipeline and the upstream client do to a request's headers:
    // clean, strip what a client may not claim, make the X-Forwarded-*
    // lines (written after the map's), inject the forwarded claims, drop
    // hop-by-hop.
    group.bench_function("request_strip_and_inject", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| {
                head::clean_client_headers(h, |name| name == request_id);
                forward::remove_client_claimed(h, false);
                policy.stripped_headers.strip(h);
                let forwarded = forward::forwarded(h, &peer, false, false, Some(&host));
                headers::remove_matching(h, |name| forward::forwarded_replaces(name, false));
                std::hint::black_box(forwarded);
                h.insert(
                    HeaderName::from_static("x-user-id"),
                    HeaderValue::from_static("user-1"),
                );
                headers::strip_fixed_hop_by_hop(h);
            },
            BatchSize::SmallInput,
        )
    });
    let mut response = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("content-length", "79"),
        ("server", "uvicorn"),
        ("x-powered-by", "fastapi"),
        ("date", "Tue, 01 Dec 2026 12:00:00 GMT"),
        ("connection", "keep-alive"),
    ] {
        response.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let route = policy.routes.routes().last().unwrap().clone();
    // The response: hop-by-hop out, the route's security headers in.
    group.bench_function("response_security_headers", |b| {
        b.iter_batched_ref(
            || response.clone(),
            |h| {
                headers::strip_hop_by_hop(h);
                edit_map(h, |h| route.security_headers.apply(h, false, true));
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn rate_limit(c: &mut Criterion, policy: &Policy, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("ratelimit");
    let gcra = Gcra::new(100, Duration::from_secs(1), 20);
    let mut tat = None;
    let mut now = 1_000_000_000_i64;
    group.bench_function("gcra_decide", |b| {
        b.iter(|| {
            now += 7_000;
            let outcome = gcra.decide(black_box(tat), black_box(now));
            tat = Some(outcome.tat);
            outcome
        })
    });
    // The memory backend: governor's keyed store deciding by `gcra`, one key.
    let wide = Gcra::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000);
    let buckets = LocalBuckets::with_clock(wide, DefaultClock::default());
    let key = "palisade:{last}:ip:1000000000:1000000:0:10.1.2.3".to_string();
    group.bench_function("memory_limiter_check", |b| {
        b.iter(|| buckets.charge(black_box(&key), buckets.now_us()))
    });
    // The whole stage: key built from the client IP, the memory decision,
    // the RateLimit headers.
    let registry = LimiterRegistry::default();
    let engine = RateLimitEngine::new(
        policy.ratelimit.clone(),
        policy.routes.routes(),
        &registry,
        None,
    );
    let route = policy.routes.routes().last().unwrap().clone();
    let identity = Identity::Anonymous;
    let headers = HeaderMap::new();
    let inputs = KeyInputs {
        client_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        client_ip_text: Some("10.1.2.3"),
        identity: &identity,
        headers: &headers,
    };
    group.bench_function("engine_check_memory", |b| {
        b.iter(|| rt.block_on(engine.check(&route, black_box(&inputs))))
    });
    group.finish();
}

fn token() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({ "sub": "user-1", "exp": now + 3600, "iat": now,
        "restaurant_id": "r-42", "role": "authenticated" });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn jwt_cache_hit(c: &mut Criterion, policy: &Policy, rt: &tokio::runtime::Runtime, token: &str) {
    let verifier = policy.auth.jwt.clone().unwrap();
    rt.block_on(verifier.verify(token)).unwrap();
    c.bench_function("jwt_verify_hs256_cache_hit", |b| {
        b.iter(|| rt.block_on(verifier.verify(black_box(token))).unwrap())
    });
}

/// `[tracing]` per request: off (must cost one branch), and propagation
/// continuing a caller's trace (parse, new span id, the outgoing header).
fn trace_context(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace_context");
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    headers.insert("tracestate", HeaderValue::from_static("vendor=abc"));
    let off = TracingPolicy::default();
    let on = TracingPolicy {
        propagate: true,
        ..TracingPolicy::default()
    };
    group.bench_function("off", |b| {
        b.iter(|| trace::start(black_box(&off), None, black_box(&headers), false))
    });
    group.bench_function("continue", |b| {
        b.iter(|| trace::start(black_box(&on), None, black_box(&headers), false))
    });
    let absent = HeaderMap::new();
    group.bench_function("start_new", |b| {
        b.iter(|| trace::start(black_box(&on), None, black_box(&absent), false))
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let policy = policy();
    let token = token();
    route_matching(c, &policy);
    canonicalisation(c);
    header_work(c, &policy, &token);
    rate_limit(c, &policy, &rt);
    jwt_cache_hit(c, &policy, &rt, &token);
    trace_context(c);
}

criterion_group!(benches, bench);
criterion_main!(benches);
