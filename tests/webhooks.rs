//! Issue 13 part 1: signed webhooks over real sockets (SPEC §6.1). Every
//! signature here is computed with the `hmac` crate directly, from the
//! provider's documented recipe, never with palisade's code; the
//! providers' own published vectors are checked in the unit tests
//! (`policy::auth::hmac::tests`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use sha2::{Sha256, Sha512};
use support::redis::RedisServer;
use support::upstream::sha256_hex;
use support::*;

const HOOKS: &str = r#"
[upstream]
url = "{UPSTREAM}"
[auth.jwt]
hs256_secret = "${JWT_SECRET}"
[auth.hmac.gh]
preset = "github"
secrets = ["gh-new", "gh-old"]
[auth.hmac.stripe]
preset = "stripe"
secrets = ["whsec_stripe_new", "whsec_stripe_old"]
replay = true
[auth.hmac.slack]
preset = "slack"
secrets = ["slack-new", "slack-old"]
[auth.hmac.sw]
preset = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_b2xkLWtleS1mb3Itcm90YXRpb24="]
replay = true
[auth.hmac.custom]
header = "X-Signature"
algorithm = "sha512"
encoding = "base64"
prefix = "sig="
timestamp_header = "X-Timestamp"
id_header = "X-Delivery"
signed = "{id}:{timestamp}:{body}"
tolerance = "1m"
secret = "custom-secret"
[[routes]]
name = "gh"
path = "/hooks/github"
methods = ["POST"]
auth = "hmac:gh"
max_body = "1KiB"
[[routes]]
name = "stripe"
path = "/hooks/stripe"
auth = "hmac:stripe"
[[routes]]
name = "slack"
path = "/hooks/slack"
auth = "hmac:slack"
[[routes]]
name = "sw"
path = "/hooks/sw"
auth = "hmac:sw"
[[routes]]
name = "custom"
path = "/hooks/custom"
auth = "hmac:custom"
[[routes]]
name = "mixed"
path = "/hooks/mixed"
auth = ["jwt", "hmac:gh"]
"#;

fn mac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn github(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex(&mac256(secret.as_bytes(), &[body])))
}

fn stripe(secret: &str, t: u64, body: &[u8]) -> String {
    let signed = mac256(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]);
    format!("v1={}", hex(&signed))
}

fn slack(secret: &str, t: u64, body: &[u8]) -> String {
    let signed = mac256(
        secret.as_bytes(),
        &[b"v0:", t.to_string().as_bytes(), b":", body],
    );
    format!("v0={}", hex(&signed))
}

fn standard(whsec: &str, id: &str, t: u64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(whsec.strip_prefix("whsec_").unwrap())
        .unwrap();
    let signed = mac256(
        &key,
        &[id.as_bytes(), b".", t.to_string().as_bytes(), b".", body],
    );
    format!("v1,{}", b64(&signed))
}

async fn post(
    server: &palisade::Server,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut req = Request::post(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = Full::new(Bytes::copy_from_slice(body));
    send(server.proxy_addr, req.body(body).unwrap()).await
}

async fn setup() -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(HOOKS, upstream.addr).await;
    (upstream, server)
}

/// A 401 problem+json without a challenge, counted under `reason`.
async fn refused(server: &palisade::Server, reply: &Reply, route: &str, reason: &str, n: f64) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{route} {reason}");
    assert!(
        reply.header("www-authenticate").is_none(),
        "{route} {reason}"
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/problem+json")),
        "{route} {reason}"
    );
    let series = format!("palisade_auth_failures_total{{reason=\"{reason}\",route=\"{route}\"}}");
    assert_eq!(
        sample(&metrics(server).await, &series),
        n,
        "{route} {reason}"
    );
}

#[tokio::test]
async fn github_preset() {
    let (upstream, server) = setup().await;
    let body = br#"{"action":"opened","number":1}"#;
    for secret in ["gh-new", "gh-old"] {
        let sig = github(secret, body);
        let ok = post(
            &server,
            "/hooks/github",
            &[("x-hub-signature-256", &sig)],
            body,
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK, "{secret}");
        let seen = upstream.requests().pop().unwrap();
        assert_eq!(
            seen.headers["x-hub-signature-256"],
            sig.as_str(),
            "header unchanged"
        );
        assert_eq!(seen.body_sha256, sha256_hex(body), "body unchanged");
        assert!(seen.complete);
    }
    // Red-team F3: a `_` twin of the signature header (which a CGI-style
    // backend reads as the same header) never reaches the upstream.
    let sig = github("gh-new", body);
    let ok = post(
        &server,
        "/hooks/github",
        &[
            ("x-hub-signature-256", &sig),
            ("X_Hub_Signature_256", "sha256=00"),
        ],
        body,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let seen = upstream.requests().pop().unwrap();
    assert!(!seen.headers.contains_key("x_hub_signature_256"));
    assert_eq!(seen.headers["x-hub-signature-256"], sig.as_str());
    let wrong = github("gh-guess", body);
    let reply = post(
        &server,
        "/hooks/github",
        &[("x-hub-signature-256", &wrong)],
        body,
    )
    .await;
    refused(&server, &reply, "gh", "bad_signature", 1.0).await;
    let tampered = github("gh-new", body);
    let reply = post(
        &server,
        "/hooks/github",
        &[("x-hub-signature-256", &tampered)],
        b"{}",
    )
    .await;
    refused(&server, &reply, "gh", "bad_signature", 2.0).await;
    let reply = post(&server, "/hooks/github", &[], body).await;
    refused(&server, &reply, "gh", "missing", 1.0).await;
    assert_eq!(upstream.count(), 3);
    let config = get(server.admin_addr, "/config").await;
    let text = String::from_utf8_lossy(&config.body);
    assert!(
        text.contains("\"hmac\"") && text.contains("<redacted>"),
        "{text}"
    );
    for secret in [
        "gh-new",
        "gh-old",
        "whsec_stripe_new",
        "slack-new",
        "custom-secret",
        SW_NEW,
    ] {
        assert!(!text.contains(secret), "{secret} in /config");
    }
}

#[tokio::test]
async fn stripe_preset_with_several_v1_and_replay_in_memory() {
    let (upstream, server) = setup().await;
    let t = now();
    for (i, secret) in ["whsec_stripe_new", "whsec_stripe_old"].iter().enumerate() {
        let body = format!(r#"{{"id":"evt_{i}"}}"#);
        let header = format!(
            "t={t},v1={},{}",
            "0".repeat(64),
            stripe(secret, t, body.as_bytes())
        );
        let ok = post(
            &server,
            "/hooks/stripe",
            &[("stripe-signature", &header)],
            body.as_bytes(),
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK, "{secret}");
        let seen = upstream.requests().pop().unwrap();
        assert_eq!(seen.headers["stripe-signature"], header.as_str());
        // The same delivery again: replayed.
        let again = post(
            &server,
            "/hooks/stripe",
            &[("stripe-signature", &header)],
            body.as_bytes(),
        )
        .await;
        refused(&server, &again, "stripe", "replayed", (i + 1) as f64).await;
    }
    let body = br#"{"id":"evt_x"}"#;
    let old = t - 400;
    let stale = format!("t={old},{}", stripe("whsec_stripe_new", old, body));
    let reply = post(
        &server,
        "/hooks/stripe",
        &[("stripe-signature", &stale)],
        body,
    )
    .await;
    refused(&server, &reply, "stripe", "stale_timestamp", 1.0).await;
    let wrong = format!("t={t},{}", stripe("whsec_guess", t, body));
    let reply = post(
        &server,
        "/hooks/stripe",
        &[("stripe-signature", &wrong)],
        body,
    )
    .await;
    refused(&server, &reply, "stripe", "bad_signature", 1.0).await;
    let reply = post(&server, "/hooks/stripe", &[], body).await;
    refused(&server, &reply, "stripe", "missing", 1.0).await;
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn slack_preset() {
    let (upstream, server) = setup().await;
    let body = b"token=x&team_id=T1&command=%2Fhello&text=hi";
    let t = now();
    for secret in ["slack-new", "slack-old"] {
        let sig = slack(secret, t, body);
        let headers = [
            ("x-slack-signature", sig.as_str()),
            ("x-slack-request-timestamp", &t.to_string()),
        ];
        let ok = post(&server, "/hooks/slack", &headers, body).await;
        assert_eq!(ok.status, StatusCode::OK, "{secret}");
        let seen = upstream.requests().pop().unwrap();
        assert_eq!(seen.headers["x-slack-signature"], sig.as_str());
        assert_eq!(seen.body_sha256, sha256_hex(body));
    }
    let old = t - 301;
    let sig = slack("slack-new", old, body);
    let stale = [
        ("x-slack-signature", sig.as_str()),
        ("x-slack-request-timestamp", &old.to_string()),
    ];
    let reply = post(&server, "/hooks/slack", &stale, body).await;
    refused(&server, &reply, "slack", "stale_timestamp", 1.0).await;
    let sig = slack("slack-guess", t, body);
    let wrong = [
        ("x-slack-signature", sig.as_str()),
        ("x-slack-request-timestamp", &t.to_string()),
    ];
    let reply = post(&server, "/hooks/slack", &wrong, body).await;
    refused(&server, &reply, "slack", "bad_signature", 1.0).await;
    let sig = slack("slack-new", t, body);
    let reply = post(
        &server,
        "/hooks/slack",
        &[("x-slack-signature", &sig)],
        body,
    )
    .await;
    refused(&server, &reply, "slack", "missing", 1.0).await;
    assert_eq!(upstream.count(), 2);
}

const SW_NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_OLD: &str = "whsec_b2xkLWtleS1mb3Itcm90YXRpb24=";

async fn standard_webhooks_deliveries(first: &palisade::Server, second: &palisade::Server) {
    let t = now();
    for (i, whsec) in [SW_NEW, SW_OLD].iter().enumerate() {
        let id = format!("msg_{i}_{t}");
        let body = format!(r#"{{"type":"invoice.paid","n":{i}}}"#);
        let sigs = format!(
            "v1,{} {}",
            b64(&[7; 32]),
            standard(whsec, &id, t, body.as_bytes())
        );
        let ts = t.to_string();
        let headers = [
            ("webhook-id", id.as_str()),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sigs),
        ];
        let ok = post(first, "/hooks/sw", &headers, body.as_bytes()).await;
        assert_eq!(ok.status, StatusCode::OK, "{whsec}");
        let again = post(second, "/hooks/sw", &headers, body.as_bytes()).await;
        refused(second, &again, "sw", "replayed", (i + 1) as f64).await;
    }
}

#[tokio::test]
async fn standard_webhooks_preset_and_replay_in_memory() {
    let (upstream, server) = setup().await;
    standard_webhooks_deliveries(&server, &server).await;
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[0].headers["webhook-signature"]
            .to_str()
            .unwrap()
            .starts_with("v1,")
    );
    let t = now();
    let body = b"{}";
    let old = t - 600;
    let sig = standard(SW_NEW, "msg_old", old, body);
    let ts = old.to_string();
    let stale = [
        ("webhook-id", "msg_old"),
        ("webhook-timestamp", &ts),
        ("webhook-signature", &sig),
    ];
    let reply = post(&server, "/hooks/sw", &stale, body).await;
    refused(&server, &reply, "sw", "stale_timestamp", 1.0).await;
    let ts = t.to_string();
    let sig = standard(SW_NEW, "msg_a", t, body);
    // Signed for another id: the id is part of what is signed.
    let wrong = [
        ("webhook-id", "msg_b"),
        ("webhook-timestamp", &ts),
        ("webhook-signature", &sig),
    ];
    let reply = post(&server, "/hooks/sw", &wrong, body).await;
    refused(&server, &reply, "sw", "bad_signature", 1.0).await;
    let no_id = [
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", &sig),
    ];
    let reply = post(&server, "/hooks/sw", &no_id, body).await;
    refused(&server, &reply, "sw", "missing", 1.0).await;
    assert_eq!(upstream.count(), 2);
}

/// A Stripe delivery `accepting` lets through, then the same delivery
/// refused as replayed by `replaying` (the same instance or another one
/// sharing its Redis).
async fn stripe_accepted_then_replayed(
    accepting: &palisade::Server,
    replaying: &palisade::Server,
    body: &[u8],
) {
    let t = now();
    let header = format!("t={t},{}", stripe("whsec_stripe_new", t, body));
    let signed = [("stripe-signature", header.as_str())];
    let ok = post(accepting, "/hooks/stripe", &signed, body).await;
    assert_eq!(ok.status, StatusCode::OK);
    let again = post(replaying, "/hooks/stripe", &signed, body).await;
    refused(replaying, &again, "stripe", "replayed", 1.0).await;
}

#[tokio::test]
async fn replay_on_redis_is_shared_by_instances() {
    let redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let text = format!(
        "[ratelimit]\nbackend = \"redis\"\nredis_url = \"{}\"\n{HOOKS}",
        redis.url()
    );
    let first = start_palisade(&text, upstream.addr).await;
    let second = start_palisade(&text, upstream.addr).await;
    standard_webhooks_deliveries(&first, &second).await;
    stripe_accepted_then_replayed(&second, &first, br#"{"id":"evt_redis"}"#).await;
    let keys = redis.cli(&["--scan", "--pattern", "*hmac:*"]);
    assert_eq!(keys.lines().count(), 3, "{keys}");
    let ttl: i64 = redis
        .cli(&["PTTL", keys.lines().next().unwrap()])
        .trim()
        .parse()
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 301_000,
        "remembered for the tolerance: {ttl}"
    );
    assert_eq!(upstream.count(), 3);
}

#[tokio::test]
async fn custom_form() {
    let (upstream, server) = setup().await;
    let sign = |id: &str, t: u64, body: &[u8], key: &[u8]| {
        let mut mac = Hmac::<Sha512>::new_from_slice(key).unwrap();
        mac.update(format!("{id}:{t}:").as_bytes());
        mac.update(body);
        format!("sig={}", b64(&mac.finalize().into_bytes()))
    };
    let t = now();
    let body = b"\x00binary\xffbody";
    let sig = sign("d-1", t, body, b"custom-secret");
    let ts = t.to_string();
    let ok = post(
        &server,
        "/hooks/custom",
        &[
            ("x-signature", &sig),
            ("x-timestamp", &ts),
            ("x-delivery", "d-1"),
        ],
        body,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.body_sha256, sha256_hex(body));
    assert_eq!(seen.headers["x-signature"], sig.as_str());
    let old = (t - 90).to_string();
    let stale_sig = sign("d-1", t - 90, body, b"custom-secret");
    let reply = post(
        &server,
        "/hooks/custom",
        &[
            ("x-signature", &stale_sig),
            ("x-timestamp", &old),
            ("x-delivery", "d-1"),
        ],
        body,
    )
    .await;
    refused(&server, &reply, "custom", "stale_timestamp", 1.0).await;
    let wrong = sign("d-1", t, body, b"other");
    let reply = post(
        &server,
        "/hooks/custom",
        &[
            ("x-signature", &wrong),
            ("x-timestamp", &ts),
            ("x-delivery", "d-1"),
        ],
        body,
    )
    .await;
    refused(&server, &reply, "custom", "bad_signature", 1.0).await;
    let unprefixed = sig.trim_start_matches("sig=").to_string();
    let reply = post(
        &server,
        "/hooks/custom",
        &[
            ("x-signature", &unprefixed),
            ("x-timestamp", &ts),
            ("x-delivery", "d-1"),
        ],
        body,
    )
    .await;
    refused(&server, &reply, "custom", "bad_signature", 2.0).await;
    let reply = post(
        &server,
        "/hooks/custom",
        &[("x-signature", &sig), ("x-delivery", "d-1")],
        body,
    )
    .await;
    refused(&server, &reply, "custom", "missing", 1.0).await;
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn any_of_with_jwt() {
    let (upstream, server) = setup().await;
    let body = b"payload";
    let jwt = token(json!({ "sub": "user-1", "exp": now() + 600 }));
    let bearer = format!("Bearer {jwt}");
    let by_token = post(&server, "/hooks/mixed", &[("authorization", &bearer)], body).await;
    assert_eq!(by_token.status, StatusCode::OK);
    let sig = github("gh-new", body);
    let by_signature = post(
        &server,
        "/hooks/mixed",
        &[("x-hub-signature-256", &sig)],
        body,
    )
    .await;
    assert_eq!(by_signature.status, StatusCode::OK);
    assert_eq!(
        upstream.requests().pop().unwrap().body_sha256,
        sha256_hex(body)
    );
    let neither = post(&server, "/hooks/mixed", &[], body).await;
    assert_eq!(neither.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        neither.header("www-authenticate"),
        Some("Bearer realm=\"palisade\"")
    );
    let bad = github("gh-guess", body);
    let reply = post(
        &server,
        "/hooks/mixed",
        &[("x-hub-signature-256", &bad)],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let series = "palisade_auth_failures_total{reason=\"bad_signature\",route=\"mixed\"}";
    assert_eq!(sample(&metrics(&server).await, series), 1.0);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn over_max_body_is_413_and_the_upstream_is_never_contacted() {
    let (upstream, server) = setup().await;
    let body = vec![b'a'; 2048];
    let sig = github("gh-new", &body);
    let declared = post(
        &server,
        "/hooks/github",
        &[("x-hub-signature-256", &sig)],
        &body,
    )
    .await;
    assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked, no length declared: found out while reading.
    let mut chunked = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nX-Hub-Signature-256: {sig}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for piece in body.chunks(512) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw_status(&raw(server.proxy_addr, &chunked).await), 413);
    // Exactly max_body passes.
    let fits = vec![b'b'; 1024];
    let sig = github("gh-new", &fits);
    let ok = post(
        &server,
        "/hooks/github",
        &[("x-hub-signature-256", &sig)],
        &fits,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(upstream.count(), 1);
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(
            &scrape,
            "palisade_rejections_total{reason=\"body_too_large\",route=\"gh\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn replay_falls_back_to_memory_when_redis_is_down() {
    let mut redis = RedisServer::start();
    let upstream = TestUpstream::start().await;
    let text = format!(
        "[ratelimit]\nbackend = \"redis\"\nredis_url = \"{}\"\n{HOOKS}",
        redis.url()
    );
    let server = start_palisade(&text, upstream.addr).await;
    redis.kill();
    stripe_accepted_then_replayed(&server, &server, br#"{"id":"evt_down"}"#).await;
    assert_eq!(upstream.count(), 1);
}
