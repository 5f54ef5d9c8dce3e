//! Issue 13 part 2 over real sockets: limits tiered by a claim (SPEC §6.2),
//! on both backends. A `pro` caller gets the tier's burst, others the base;
//! the headers show the tier's numbers; each tier has its own buckets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use serde_json::json;
use support::redis::RedisServer;
use support::*;

fn config(backend: &str) -> String {
    format!(
        r#"
[upstream]
url = "{{UPSTREAM}}"
[auth.jwt]
hs256_secret = "${{JWT_SECRET}}"
[ratelimit]
{backend}
[[routes]]
name = "tiered"
path = "/**"
auth = "optional"
rate_limits = [{{ by = "user", limit = 60, per = "1h", burst = 2, tier_claim = "app_metadata.plan",
                 tiers = {{ pro = {{ limit = 600, burst = 5 }}, team = {{ limit = 120 }} }} }}]
"#
    )
}

fn caller(sub: &str, plan: Option<&str>) -> String {
    let mut claims = json!({"sub": sub, "exp": now() + 600});
    if let Some(plan) = plan {
        claims["app_metadata"] = json!({"plan": plan});
    }
    format!("Bearer {}", token(claims))
}

/// Sends until refused; returns how many were admitted (at most 10) and
/// the first reply's rate-limit headers.
async fn admitted(server: &palisade::Server, auth: Option<&str>) -> (usize, Reply) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    let first = get_with(server.proxy_addr, "/x", &headers).await;
    assert_eq!(first.status, StatusCode::OK);
    for n in 1..10 {
        let reply = get_with(server.proxy_addr, "/x", &headers).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            return (n, first);
        }
        assert_eq!(reply.status, StatusCode::OK);
    }
    (10, first)
}

async fn pro_gets_the_tier_and_others_the_base(server: &palisade::Server) {
    let (pro, first) = admitted(server, Some(&caller("p1", Some("pro")))).await;
    assert_eq!(pro, 5, "the pro tier's burst");
    assert_eq!(first.header("x-ratelimit-limit"), Some("600"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("4"));
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"tiered.user.pro\";q=600;w=3600")
    );
    assert!(
        first
            .header("ratelimit")
            .is_some_and(|v| v.starts_with("\"tiered.user.pro\";r=4;")),
        "{:?}",
        first.header("ratelimit")
    );
    // A tier without a burst gets its own limit as burst (more than 10).
    let (team, first) = admitted(server, Some(&caller("t1", Some("team")))).await;
    assert_eq!(team, 10);
    assert_eq!(first.header("x-ratelimit-limit"), Some("120"));
    // The base numbers: an unknown plan, no plan, an anonymous caller.
    for (who, auth) in [
        ("free plan", Some(caller("f1", Some("free")))),
        ("no plan", Some(caller("n1", None))),
        ("anonymous", None),
    ] {
        let (base, first) = admitted(server, auth.as_deref()).await;
        assert_eq!(base, 2, "{who}: the base burst");
        assert_eq!(first.header("x-ratelimit-limit"), Some("60"), "{who}");
        assert_eq!(
            first.header("ratelimit-policy"),
            Some("\"tiered.user\";q=60;w=3600"),
            "{who}"
        );
    }
}

#[tokio::test]
async fn tiers_on_the_memory_backend() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(&config("backend = \"memory\""), upstream.addr).await;
    pro_gets_the_tier_and_others_the_base(&server).await;
    // Each tier has its own buckets: the same user on another plan starts
    // afresh (p1 used up its pro bucket above).
    let (as_team, _) = admitted(&server, Some(&caller("p1", Some("team")))).await;
    assert_eq!(as_team, 10);
}

#[tokio::test]
async fn tiers_on_the_redis_backend() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let backend = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let server = start_palisade(&config(&backend), upstream.addr).await;
    pro_gets_the_tier_and_others_the_base(&server).await;
    // The tier is part of the key.
    let keys = redis.cli(&["--scan", "--pattern", "palisade:*"]);
    assert!(
        keys.lines()
            .any(|k| k.contains("tier=pro") && k.contains("user:p1")),
        "{keys}"
    );
    assert!(
        keys.lines()
            .any(|k| !k.contains("tier=") && k.contains("user:f1")),
        "{keys}"
    );
    // Still one script call per request.
    let calls = || {
        let stats = redis.cli(&["info", "commandstats"]);
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum::<u64>()
    };
    let before = calls();
    let auth = caller("p2", Some("pro"));
    for _ in 0..4 {
        get_with(server.proxy_addr, "/x", &[("authorization", &auth)]).await;
    }
    assert_eq!(calls() - before, 4);
}
