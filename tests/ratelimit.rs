//! Issue 5: rate limiting over real sockets with real Redis servers started
//! by the tests: GCRA bursts and headers, exactness across four palisade
//! processes, Redis outages (local / allow / deny, recovery), restarts,
//! reloads, Redis Cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::process::{Process, temp_dir, write_config};
use support::redis::{RedisCluster, RedisServer};
use support::*;

fn config(backend: &str, routes: &str) -> String {
    let timeout = if backend.contains("redis_timeout") {
        ""
    } else {
        "redis_timeout = \"50ms\""
    };
    format!(
        "[upstream]\nurl = \"{{UPSTREAM}}\"\n[ratelimit]\n{backend}\n{timeout}\n\
         [auth.jwt]\nhs256_secret = \"${{JWT_SECRET}}\"\n[defaults]\nauth = \"none\"\n{routes}"
    )
}

const ROUTES: &str = r#"
[[routes]]
name = "limited"
path = "/limited/**"
rate_limits = [{ by = "ip", limit = 10, per = "1m", burst = 5 }]
[[routes]]
name = "two"
path = "/two/**"
rate_limits = [{ by = "ip", limit = 100, per = "1m" }, { by = "route", limit = 60, per = "1h", burst = 3 }]
[[routes]]
name = "shadowed"
path = "/shadowed/**"
rate_limits = [{ by = "ip", limit = 1, per = "1h", burst = 1, shadow = true }]
[[routes]]
name = "per-client"
path = "/keyed/**"
rate_limits = [{ by = "header:X-Client", limit = 1, per = "1h", burst = 2 }]
[[routes]]
name = "per-user"
path = "/users/**"
auth = "optional"
rate_limits = [{ by = "user", limit = 1, per = "1h", burst = 1 }]
[[routes]]
name = "steady"
path = "/steady/**"
rate_limits = [{ by = "ip", limit = 4, per = "1s", burst = 3 }]
[[routes]]
name = "free"
path = "/**"
"#;

/// palisade with the Redis backend on `redis` and the test routes.
async fn with_redis(redis: &RedisServer) -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let backend = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let server = start_palisade(&config(&backend, ROUTES), upstream.addr).await;
    (upstream, server)
}

/// `remove_response_headers` listing `Retry-After` removes the upstream's
/// but never palisade's own on its 429 (SPEC §4: a refused request is told
/// when to come back), as it never removes palisade's rate-limit headers
/// or any other header of palisade's own answer (its `Cache-Control`).
#[tokio::test]
async fn removing_retry_after_keeps_palisades_own_on_a_429() {
    let upstream = TestUpstream::start().await;
    let routes = r#"
[security_headers]
remove_response_headers = ["Retry-After", "X-Powered-By", "X-RateLimit-Limit", "Cache-Control"]
[[routes]]
name = "once"
path = "/**"
rate_limits = [{ by = "ip", limit = 1, per = "1h", burst = 1 }]
"#;
    let server = start_palisade(&config("backend = \"memory\"", routes), upstream.addr).await;
    let admitted = get_with(server.proxy_addr, "/x", &[("x-test-retry-after", "120")]).await;
    assert_eq!(admitted.status, StatusCode::OK);
    assert_eq!(
        admitted.header("retry-after"),
        None,
        "the upstream's is removed"
    );
    assert_eq!(admitted.header("x-powered-by"), None);
    assert_eq!(admitted.header("x-ratelimit-limit"), Some("1"));
    let refused = get_with(server.proxy_addr, "/x", &[("x-test-retry-after", "120")]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused
        .header("retry-after")
        .expect("palisade's own Retry-After is kept")
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    assert_eq!(refused.headers.get_all("retry-after").iter().count(), 1);
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    assert_eq!(upstream.count(), 1, "the refused request never reached it");
}

/// `RateLimit-Policy` says the window in whole seconds, rounded up: a
/// client keeping to the rate it advertises is never refused (1500 ms
/// read as `w=1` advertised 3 a second where 2 were admitted).
#[tokio::test]
async fn a_window_of_a_fraction_of_seconds_is_advertised_rounded_up() {
    let upstream = TestUpstream::start().await;
    let routes = r#"
[[routes]]
name = "odd"
path = "/odd/**"
rate_limits = [{ by = "ip", limit = 3, per = "1500ms" }]
[[routes]]
name = "short"
path = "/**"
rate_limits = [{ by = "ip", limit = 3, per = "200ms" }]
"#;
    let server = start_palisade(&config("backend = \"memory\"", routes), upstream.addr).await;
    let odd = get(server.proxy_addr, "/odd/x").await;
    assert_eq!(odd.header("ratelimit-policy"), Some("\"odd.ip\";q=3;w=2"));
    let short = get(server.proxy_addr, "/x").await;
    assert_eq!(
        short.header("ratelimit-policy"),
        Some("\"short.ip\";q=3;w=1")
    );
}

async fn burst_and_headers(server: &palisade::Server, upstream: &TestUpstream) {
    let before = upstream.count();
    for remaining in (0..5).rev() {
        let reply = get(server.proxy_addr, "/limited/x").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-ratelimit-limit"), Some("10"));
        assert_eq!(
            reply.header("x-ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"limited.ip\";q=10;w=60")
        );
        assert!(
            reply
                .header("ratelimit")
                .unwrap()
                .starts_with(&format!("\"limited.ip\";r={remaining};t="))
        );
    }
    let refused = get(server.proxy_addr, "/limited/x").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (5..=6).contains(&retry),
        "one every 6 s: Retry-After {retry}"
    );
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = refused
        .header("x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!((29..=30).contains(&reset), "full again in 30 s: {reset}");
    assert_eq!(
        upstream.count() - before,
        5,
        "the refused request never reached the upstream"
    );
    // A route without limits has no rate-limit headers.
    let free = get(server.proxy_addr, "/free").await;
    assert!(free.header("x-ratelimit-limit").is_none() && free.header("ratelimit").is_none());
}

/// The `steady` route's limit: 4 per second (one every 250 ms), burst 3.
const STEADY: Steady = Steady {
    emission: Duration::from_millis(250),
    burst: 3,
};

struct Steady {
    emission: Duration,
    burst: usize,
}

/// One request of a sustained-rate run: when the test sent it, when it read
/// the answer, and whether it was admitted. palisade decided it in between.
struct Hit {
    sent: Instant,
    answered: Instant,
    admitted: bool,
}

/// The sustained rate, end to end: one request at a time (round robin over
/// `instances`) until the burst and six refills were admitted (a wait on a
/// count, with a generous cap), then every decision is checked against
/// GCRA. Only bounds that hold however slowly the machine runs are used:
/// palisade decided each request after the test sent it and before the test
/// read the answer, so a late answer only widens them. With `T` the
/// emission interval, `b` the burst, `d` decision times:
/// - never faster: the n-th admission satisfies `d_n >= d_k + (n-k-b+1)T`
///   for every earlier admission k;
/// - never slower: a refusal after m admissions satisfies
///   `d_j < d_k + (m-k+2-b)T` for some admission k <= m (the bucket's
///   theoretical arrival time was still ahead).
async fn sustained_rate(
    instances: &[SocketAddr],
    path: &str,
    headers: &[(&str, &str)],
    limit: Steady,
) {
    let wanted = limit.burst + 6;
    let t = limit.emission.as_secs_f64();
    // Clock slack: the limiter's clock and the test's are both monotonic
    // but not the same clock.
    let slack = t / 10.0;
    let mut hits: Vec<Hit> = Vec::new();
    let started = Instant::now();
    while hits.iter().filter(|h| h.admitted).count() < wanted {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} admitted in two minutes",
            hits.iter().filter(|h| h.admitted).count()
        );
        let addr = instances[hits.len() % instances.len()];
        let sent = Instant::now();
        let reply = get_with(addr, path, headers).await;
        let answered = Instant::now();
        let admitted = match reply.status {
            StatusCode::OK => true,
            StatusCode::TOO_MANY_REQUESTS => false,
            other => panic!("unexpected {other}"),
        };
        hits.push(Hit {
            sent,
            answered,
            admitted,
        });
        // Poll about ten times per interval.
        tokio::time::sleep(limit.emission / 10).await;
    }
    let secs = |later: Instant, earlier: Instant| {
        later.saturating_duration_since(earlier).as_secs_f64()
            - earlier.saturating_duration_since(later).as_secs_f64()
    };
    assert!(hits[0].admitted, "a fresh bucket admits");
    let admissions: Vec<&Hit> = hits.iter().filter(|h| h.admitted).collect();
    // Never faster than the rate (nor a bigger burst).
    for (n, hit) in admissions.iter().enumerate() {
        for (k, earlier) in admissions[..n].iter().enumerate() {
            let steps = n as f64 - k as f64 - limit.burst as f64 + 1.0;
            assert!(
                secs(hit.answered, earlier.sent) >= steps * t - slack,
                "admission {} came {:.3} s after admission {}: faster than one per {t} s",
                n + 1,
                secs(hit.answered, earlier.sent),
                k + 1
            );
        }
    }
    // Never slower: every refusal came before the next emission was due.
    for (j, hit) in hits.iter().enumerate().filter(|(_, h)| !h.admitted) {
        let before: Vec<&Hit> = hits[..j].iter().filter(|h| h.admitted).collect();
        let m = before.len();
        assert!(
            m >= limit.burst,
            "refused after only {m} admissions: the burst is {}",
            limit.burst
        );
        let due = before.iter().enumerate().any(|(k, earlier)| {
            let steps = m as f64 - k as f64 + 1.0 - limit.burst as f64;
            secs(hit.sent, earlier.answered) < steps * t + slack
        });
        assert!(
            due,
            "request {} was refused after {m} admissions although a refill was due \
             (slower than one per {t} s)",
            j + 1
        );
    }
}

#[tokio::test]
async fn memory_backend_burst_and_headers() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&config("backend = \"memory\"", ROUTES), upstream.addr).await;
    burst_and_headers(&server, &upstream).await;
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_ratelimit_decisions_total{by=\"ip\",decision=\"allow\",mode=\"enforce\",route=\"limited\"}"
        ),
        5.0
    );
    assert_eq!(
        sample(
            &scrape,
            "palisade_ratelimit_decisions_total{by=\"ip\",decision=\"deny\",mode=\"enforce\",route=\"limited\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn memory_backend_sustained_rate() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&config("backend = \"memory\"", ROUTES), upstream.addr).await;
    sustained_rate(&[server.proxy_addr], "/steady/x", &[], STEADY).await;
}

#[tokio::test]
async fn redis_backend_gives_the_same_answers() {
    let redis = RedisServer::start();
    let (upstream, server) = with_redis(&redis).await;
    burst_and_headers(&server, &upstream).await;
    sustained_rate(&[server.proxy_addr], "/steady/x", &[], STEADY).await;
    // The bucket lives in Redis, with a TTL so idle keys expire.
    let keys = redis.cli(&["--scan", "--pattern", "palisade:*"]);
    let key = keys
        .lines()
        .find(|k| k.contains("limited"))
        .expect("a bucket key in redis");
    let ttl: i64 = redis.cli(&["pttl", key]).trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 31_000, "ttl {ttl}");
}

async fn most_restrictive_and_shadow(backend: &str) {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&config(backend, ROUTES), upstream.addr).await;
    // Two limits: the route-wide one (burst 3) is the most restrictive.
    for remaining in (0..3).rev() {
        let reply = get(server.proxy_addr, "/two/x").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"two.route\";q=60;w=3600")
        );
        assert_eq!(
            reply.header("x-ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
    }
    assert_eq!(
        get(server.proxy_addr, "/two/x").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Shadow limits never reject and never show in headers, but are counted.
    for _ in 0..3 {
        let reply = get(server.proxy_addr, "/shadowed/x").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.header("x-ratelimit-limit").is_none());
    }
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_ratelimit_decisions_total{by=\"ip\",decision=\"deny\",mode=\"shadow\",route=\"shadowed\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &scrape,
            "palisade_ratelimit_decisions_total{by=\"ip\",decision=\"allow\",mode=\"shadow\",route=\"shadowed\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn most_restrictive_limit_and_shadow_mode_memory() {
    most_restrictive_and_shadow("backend = \"memory\"").await;
}

#[tokio::test]
async fn most_restrictive_limit_and_shadow_mode_redis() {
    let redis = RedisServer::start();
    most_restrictive_and_shadow(&format!(
        "backend = \"redis\"\nredis_url = \"{}\"",
        redis.url()
    ))
    .await;
}

/// Two limits on one route, and a shadow limit behind an enforced one.
const LAYERED: &str = r#"
[[routes]]
name = "layered"
path = "/layered/**"
rate_limits = [{ by = "route", limit = 3, per = "1h", burst = 3 }, { by = "header:X-Client", limit = 1, per = "1h", burst = 1 }]
[[routes]]
name = "watched"
path = "/watched/**"
rate_limits = [{ by = "header:X-Client", limit = 1, per = "1h", burst = 1 }, { by = "route", limit = 10, per = "1h", shadow = true }]
[[routes]]
name = "twin"
path = "/twin/**"
rate_limits = [{ by = "header:X-Client", limit = 2, per = "1h", burst = 2 }, { by = "header:X-Client", limit = 2, per = "1h", burst = 2, shadow = true }]
"#;

/// A request one limit refuses costs the others nothing, and shadow limits
/// still judge it (what Redis's script does, and NGINX's `limit_req` with
/// several zones): a client past its own limit cannot drain a limit it
/// shares with others.
async fn refused_requests_are_not_charged(backend: &str) {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&config(backend, LAYERED), upstream.addr).await;
    let send = |path: &'static str, client: &'static str| {
        let addr = server.proxy_addr;
        async move {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nX-Client: {client}\r\nConnection: close\r\n\r\n"
            );
            raw_status(&raw(addr, request.as_bytes()).await)
        }
    };
    // `a` uses its one request, then is refused twice by its own limit.
    assert_eq!(send("/layered/x", "a").await, 200);
    assert_eq!(send("/layered/x", "a").await, 429);
    assert_eq!(send("/layered/x", "a").await, 429);
    // The route-wide limit (3) counted only the admitted request.
    assert_eq!(
        send("/layered/x", "b").await,
        200,
        "the shared limit was drained"
    );
    assert_eq!(send("/layered/x", "c").await, 200);
    assert_eq!(
        send("/layered/x", "d").await,
        429,
        "the shared limit holds 3"
    );
    assert_eq!(upstream.count(), 3);

    for expected in [200, 429, 429] {
        assert_eq!(send("/watched/x", "a").await, expected);
    }
    let scrape = metrics(&server).await;
    let shadow = |decision: &str| {
        sample(
            &scrape,
            &format!(
                "palisade_ratelimit_decisions_total{{by=\"route\",decision=\"{decision}\",mode=\"shadow\",route=\"watched\"}}"
            ),
        )
    };
    assert_eq!(
        shadow("allow"),
        3.0,
        "the shadow limit judged every request: {scrape}"
    );

    // Two identical limits share one bucket (one key in Redis): a request
    // is charged to it once, and the shadow twin refuses nothing.
    for expected in [200, 200, 429] {
        assert_eq!(send("/twin/x", "a").await, expected);
    }
}

#[tokio::test]
async fn refused_requests_are_not_charged_memory() {
    refused_requests_are_not_charged("backend = \"memory\"").await;
}

#[tokio::test]
async fn refused_requests_are_not_charged_redis() {
    let redis = RedisServer::start();
    refused_requests_are_not_charged(&format!(
        "backend = \"redis\"\nredis_url = \"{}\"",
        redis.url()
    ))
    .await;
}

#[tokio::test]
async fn keys_by_header_and_user() {
    let redis = RedisServer::start();
    let (_upstream, server) = with_redis(&redis).await;
    for client in ["a", "b"] {
        for _ in 0..2 {
            assert_eq!(
                get_with(server.proxy_addr, "/keyed/x", &[("x-client", client)])
                    .await
                    .status,
                StatusCode::OK
            );
        }
        assert_eq!(
            get_with(server.proxy_addr, "/keyed/x", &[("x-client", client)])
                .await
                .status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    let alice = token(serde_json::json!({"sub": "alice", "exp": now() + 600}));
    let bob = token(serde_json::json!({"sub": "bob", "exp": now() + 600}));
    for user in [&alice, &bob] {
        let auth = format!("Bearer {user}");
        assert_eq!(
            get_with(server.proxy_addr, "/users/x", &[("authorization", &auth)])
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            get_with(server.proxy_addr, "/users/x", &[("authorization", &auth)])
                .await
                .status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    // Anonymous callers fall back to their IP.
    assert_eq!(
        get(server.proxy_addr, "/users/x").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(server.proxy_addr, "/users/x").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_palisade_restart_does_not_reset_a_redis_bucket() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let text = config(
        &format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url()),
        ROUTES,
    );
    let first = start_palisade(&text, upstream.addr).await;
    for _ in 0..5 {
        assert_eq!(
            get(first.proxy_addr, "/limited/x").await.status,
            StatusCode::OK
        );
    }
    first.shutdown();
    first.wait().await;
    let second = start_palisade(&text, upstream.addr).await;
    assert_eq!(
        get(second.proxy_addr, "/limited/x").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn memory_state_survives_a_reload_for_unchanged_limits() {
    let upstream = TestUpstream::start().await;
    let dir = temp_dir("reload-limits");
    let text = config("backend = \"memory\"", ROUTES)
        .replace("{UPSTREAM}", &format!("http://{}", upstream.addr));
    let text =
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{text}");
    let path = write_config(&dir, &text);
    let policy = palisade::config::load_file(&path, &test_env()).unwrap();
    let server = palisade::start(policy).await.unwrap();
    for _ in 0..5 {
        get(server.proxy_addr, "/limited/x").await;
    }
    assert_eq!(
        get(server.proxy_addr, "/limited/x").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Same limits, another route added: the bucket keeps its state.
    let grown = text.replace(
        "[[routes]]\nname = \"free\"",
        "[[routes]]\nname = \"extra\"\npath = \"/extra\"\n[[routes]]\nname = \"free\"",
    );
    std::fs::write(&path, &grown).unwrap();
    assert!(reload_with(&server, &path).await);
    assert_eq!(
        get(server.proxy_addr, "/limited/x").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A changed limit starts fresh.
    std::fs::write(&path, grown.replace("burst = 5", "burst = 6")).unwrap();
    assert!(reload_with(&server, &path).await);
    assert_eq!(
        get(server.proxy_addr, "/limited/x").await.status,
        StatusCode::OK
    );
}

async fn reload_with(server: &palisade::Server, path: &std::path::Path) -> bool {
    palisade::reload::reload_with_env(&server.shared, path, &test_env()).await
}

async fn outage_config(redis: &RedisServer, on_error: &str) -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let backend = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\non_redis_error = \"{on_error}\"",
        redis.url()
    );
    let server = start_palisade(&config(&backend, ROUTES), upstream.addr).await;
    (upstream, server)
}

#[tokio::test]
async fn redis_down_with_local_fallback_keeps_limiting_and_recovers() {
    let mut redis = RedisServer::start();
    let (_upstream, server) = outage_config(&redis, "local").await;
    let (_upstream2, peer) = outage_config(&redis, "local").await;
    for _ in 0..2 {
        assert_eq!(
            get(server.proxy_addr, "/limited/x").await.status,
            StatusCode::OK
        );
    }
    redis.kill();
    // The local limiter takes over with the same limits: a full burst of 5, then 429.
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(get(server.proxy_addr, "/limited/x").await.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        5,
        "{statuses:?}"
    );
    assert!(
        statuses[5..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS)
    );
    // Redis was asked once, then skipped during the cool-down: at most a
    // probe or two out of 30 requests ever waited for it.
    let scrape = metrics(&server).await;
    let errors = sample(
        &scrape,
        "palisade_ratelimit_backend_errors_total{backend=\"redis\"}",
    );
    assert!(
        (1.0..=3.0).contains(&errors),
        "{errors} backend errors for 30 requests"
    );
    let ready = get(server.admin_addr, "/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "the fallback serves: still ready"
    );
    assert_eq!(ready.json()["redis"]["status"], "degraded");
    // Redis comes back: shared limiting resumes without restarting palisade.
    redis.restart();
    wait_for_shared_limiting(&server, &peer).await;
}

/// `/readyz` tells the truth about a Redis that was never reached: before
/// any request has failed it used to say `ok`. It says `degraded` once the
/// start-up connection fails, and `ok` again when the background retry
/// reaches Redis, with no request sent at all.
#[tokio::test]
async fn readyz_reports_a_redis_never_reached_and_its_arrival() {
    let mut redis = RedisServer::start();
    redis.kill();
    let (upstream, server) = outage_config(&redis, "local").await;
    // What `/readyz` says of Redis once it says `wanted`, or after `tries`
    // looks 100 ms apart (the retry's first back-off is 1 s).
    let redis_status = |wanted: &'static str, tries: usize| {
        let admin = server.admin_addr;
        async move {
            let mut seen = String::new();
            for _ in 0..tries {
                let ready = get(admin, "/readyz").await;
                assert_eq!(ready.status, StatusCode::OK, "the fallback serves");
                seen = ready.json()["redis"]["status"]
                    .as_str()
                    .unwrap()
                    .to_string();
                if seen == wanted {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        }
    };
    assert_eq!(
        redis_status("degraded", 50).await,
        "degraded",
        "no request was sent, Redis is down"
    );
    redis.restart();
    let seen = redis_status("ok", 200).await;
    assert_eq!(seen, "ok", "the background retry reached Redis");
    assert_eq!(upstream.count(), 0);
}

/// Polls until one instance's consumption is visible to the other again
/// (the cool-down ends within 30 s).
async fn wait_for_shared_limiting(a: &palisade::Server, b: &palisade::Server) {
    for round in 0..200 {
        let client = format!("recovery-{round}");
        let first = get_with(a.proxy_addr, "/keyed/x", &[("x-client", &client)])
            .await
            .status;
        let second = get_with(a.proxy_addr, "/keyed/x", &[("x-client", &client)])
            .await
            .status;
        let third = get_with(b.proxy_addr, "/keyed/x", &[("x-client", &client)])
            .await
            .status;
        if first == StatusCode::OK
            && second == StatusCode::OK
            && third == StatusCode::TOO_MANY_REQUESTS
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("shared limiting never resumed after Redis came back");
}

#[tokio::test]
async fn hanging_redis_costs_at_most_a_probe_per_cool_down() {
    let redis = RedisServer::start();
    let (_upstream, server) = outage_config(&redis, "local").await;
    assert_eq!(
        get(server.proxy_addr, "/limited/x").await.status,
        StatusCode::OK
    );
    redis.pause(true);
    for _ in 0..20 {
        let status = get(server.proxy_addr, "/limited/x").await.status;
        assert!(status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS);
    }
    let scrape = metrics(&server).await;
    let errors = sample(
        &scrape,
        "palisade_ratelimit_backend_errors_total{backend=\"redis\"}",
    );
    assert!(
        (1.0..=3.0).contains(&errors),
        "every request waited for a hung Redis: {errors} timeouts for 20 requests"
    );
    redis.pause(false);
}

#[tokio::test]
async fn redis_down_with_deny_is_503_and_with_allow_is_200() {
    let mut redis = RedisServer::start();
    let (deny_upstream, deny) = outage_config(&redis, "deny").await;
    let (_allow_upstream, allow) = outage_config(&redis, "allow").await;
    redis.kill();
    let refused = get(deny.proxy_addr, "/limited/x").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(deny_upstream.count(), 0);
    for _ in 0..10 {
        assert_eq!(
            get(allow.proxy_addr, "/limited/x").await.status,
            StatusCode::OK
        );
    }
    // Routes without limits never touch Redis.
    assert_eq!(get(deny.proxy_addr, "/free").await.status, StatusCode::OK);
}

// === exactness across processes ===

fn process_config(upstream: SocketAddr, redis: &str, burst: u32) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess_log = false\n[upstream]\nurl = \"http://{upstream}\"\n\
         [ratelimit]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nredis_timeout = \"2s\"\non_redis_error = \"deny\"\n\
         [defaults]\nauth = \"none\"\n\
         [[routes]]\nname = \"exact\"\npath = \"/exact/**\"\nrate_limits = [{{ by = \"header:X-Round\", limit = 1, per = \"1h\", burst = {burst} }}]\n\
         [[routes]]\nname = \"steady\"\npath = \"/steady/**\"\nrate_limits = [{{ by = \"header:X-Round\", limit = 4, per = \"1s\", burst = 3 }}]\n"
    )
}

async fn hammer(
    instances: &[SocketAddr],
    path: &str,
    round: &str,
    requests: usize,
) -> (usize, usize) {
    let mut tasks = Vec::new();
    for i in 0..requests {
        let addr = instances[i % instances.len()];
        let (path, round) = (path.to_string(), round.to_string());
        tasks.push(tokio::spawn(async move {
            get_with(addr, &path, &[("x-round", &round)]).await.status
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (ok, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_processes_admit_exactly_the_burst() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let burst = 37;
    let dir = temp_dir("exact");
    let path = write_config(&dir, &process_config(upstream.addr, &redis.url(), burst));
    let mut processes: Vec<Process> = (0..4).map(|_| Process::start(&path)).collect();
    let instances: Vec<SocketAddr> = processes.iter_mut().map(|p| p.addresses().0).collect();
    for round in 0..4 {
        let (ok, limited) = hammer(&instances, "/exact/x", &format!("round-{round}"), 160).await;
        assert_eq!(
            ok, burst as usize,
            "round {round}: {ok} admitted, {limited} limited"
        );
        assert_eq!(ok + limited, 160);
    }
    // Then the sustained rate, shared by all four: requests go round robin
    // over the processes, and the admissions keep to one bucket's rate
    // (four buckets would admit about four times as many).
    sustained_rate(&instances, "/steady/x", &[("x-round", "steady")], STEADY).await;
    for process in &processes {
        process.signal("TERM");
    }
    for process in processes {
        assert_eq!(process.rest().0, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_limits_hold() {
    let cluster = RedisCluster::start();
    let upstream = TestUpstream::start().await;
    let nodes = cluster
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let backend = format!(
        "backend = \"redis\"\nredis_cluster = [{nodes}]\nredis_timeout = \"2s\"\non_redis_error = \"deny\""
    );
    let server = start_palisade(&config(&backend, ROUTES), upstream.addr).await;
    let addrs = [server.proxy_addr];
    // Each client's bucket holds exactly (a route's buckets share one slot).
    for client in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        let mut ok = 0;
        for _ in 0..5 {
            if get_with(addrs[0], "/keyed/x", &[("x-client", client)])
                .await
                .status
                == StatusCode::OK
            {
                ok += 1;
            }
        }
        assert_eq!(ok, 2, "{client}");
    }
    burst_and_headers(&server, &upstream).await;
    let scrape = metrics(&server).await;
    assert_eq!(
        family_total(&scrape, "palisade_ratelimit_backend_errors_total"),
        0.0
    );
}

#[tokio::test]
async fn rediss_with_a_private_ca() {
    let redis = RedisServer::start_tls();
    let upstream = TestUpstream::start().await;
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ca.crt");
    let trusted = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nredis_ca_file = \"{ca}\"\non_redis_error = \"deny\"\nredis_timeout = \"2s\"",
        redis.url()
    );
    let server = start_palisade(&config(&trusted, ROUTES), upstream.addr).await;
    burst_and_headers(&server, &upstream).await;
    assert!(
        redis
            .cli(&["--scan", "--pattern", "palisade:*"])
            .contains("limited"),
        "the bucket lives in the TLS Redis"
    );
    // Without the CA the server's certificate is refused: no silent plaintext.
    let untrusted = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\non_redis_error = \"deny\"",
        redis.url()
    );
    let refusing = start_palisade(&config(&untrusted, ROUTES), upstream.addr).await;
    assert_eq!(
        get(refusing.proxy_addr, "/limited/x").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// An upstream's own rate-limit headers (any case, repeated) never reach
/// the client beside palisade's: over HTTP/1 (palisade's writer, which
/// keeps the upstream's lines as bytes) and HTTP/2 (one header map), each
/// name comes once, with palisade's value.
#[tokio::test]
async fn the_upstreams_own_rate_limit_headers_are_replaced() {
    let upstream = support::upstream::holding_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nX-RateLimit-Limit: 999\r\n\
          ratelimit: \"up\";r=9;t=9\r\nx-ratelimit-remaining: 77\r\n\
          RateLimit-Policy: \"up\";q=999\r\nX-RATELIMIT-RESET: 0\r\nX-Kept: yes\r\n\
          X-RateLimit-Limit: 998\r\n\r\nok",
    )
    .await;
    let server = start_palisade(&config("backend = \"memory\"", ROUTES), upstream).await;
    let ours = [
        ("x-ratelimit-limit", "10"),
        ("x-ratelimit-remaining", "4"),
        ("x-ratelimit-reset", "6"),
        ("ratelimit-policy", "\"limited.ip\";q=10;w=60"),
    ];
    let response = raw_get(server.proxy_addr, "/limited/a").await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let head = response
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    let lines: Vec<&str> = head.lines().skip(1).collect();
    for (name, value) in ours {
        let named: Vec<&&str> = lines
            .iter()
            .filter(|line| line.starts_with(&format!("{name}:")))
            .collect();
        assert_eq!(named, [&format!("{name}: {value}").as_str()], "{response}");
    }
    let state: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("ratelimit:"))
        .collect();
    assert_eq!(state.len(), 1, "{response}");
    assert!(
        state[0].starts_with("ratelimit: \"limited.ip\";r=4;t="),
        "{response}"
    );
    assert!(lines.contains(&"x-kept: yes"), "{response}");

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::get(format!("http://{}/limited/b", server.proxy_addr))
        .body(http_body_util::Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    for (name, _) in ours {
        assert_eq!(
            headers.get_all(name).iter().count(),
            1,
            "{name}: {headers:?}"
        );
    }
    assert_eq!(headers["x-ratelimit-limit"], "10");
    assert_eq!(headers["x-ratelimit-remaining"], "3");
    assert_eq!(
        headers.get_all("ratelimit").iter().count(),
        1,
        "{headers:?}"
    );
    assert_eq!(headers["x-kept"], "yes");
}

/// A client's `Connection` cannot remove the header a limit is keyed by
/// (SPEC §3: never a header palisade relies on): `Connection: X-Client`
/// would move the request to the peer's IP bucket, a second allowance
/// for a key whose own is spent, and the upstream would never see the
/// key. Both engines.
#[tokio::test]
async fn connection_cannot_remove_a_limits_key_header() {
    for engine in ["palisade", "hyper"] {
        let upstream = TestUpstream::start().await;
        let config = config("backend = \"memory\"", ROUTES).replacen(
            "[upstream]\n",
            &format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nhttp1_engine = \"{engine}\"\n\
                 [upstream]\nhttp1_engine = \"{engine}\"\n"
            ),
            1,
        );
        let server = start_palisade(&config, upstream.addr).await;
        let keyed = |client: &str| {
            format!(
                "GET /keyed/x HTTP/1.1\r\nHost: t\r\nX-Client: {client}\r\n\
                 Connection: X-Client, close\r\n\r\n"
            )
        };
        let remaining = |response: &str| {
            response.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-ratelimit-remaining: ")
                    .map(str::to_string)
            })
        };
        // Two keys, a bucket each (burst 2), though both name the key
        // in `Connection`.
        for client in ["conn-a", "conn-b"] {
            let first = raw(server.proxy_addr, keyed(client).as_bytes()).await;
            assert_eq!(raw_status(&first), 200, "{engine}: {first}");
            assert_eq!(remaining(&first).as_deref(), Some("1"), "{engine}: {first}");
        }
        let second = raw(server.proxy_addr, keyed("conn-a").as_bytes()).await;
        assert_eq!(
            remaining(&second).as_deref(),
            Some("0"),
            "{engine}: {second}"
        );
        let spent = raw(server.proxy_addr, keyed("conn-a").as_bytes()).await;
        assert_eq!(raw_status(&spent), 429, "{engine}: {spent}");
        let seen = upstream.requests();
        assert_eq!(seen.len(), 3, "{engine}");
        for (request, client) in seen.iter().zip(["conn-a", "conn-b", "conn-a"]) {
            assert_eq!(request.headers["x-client"], client, "{engine}");
        }
    }
}
