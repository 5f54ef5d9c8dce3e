//! Integration-test helpers: a recording upstream test server, palisade
//! started in-process on port 0 from a config string, and clients (hyper,
//! and raw bytes on a socket for what HTTP clients would normalise).
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub mod otlp;
pub mod process;
pub mod redis;
pub mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::config::{Env, load_str};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use upstream::{ReceiverStream, TestUpstream};

/// The JWT secret test configs use.
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";
/// The webhook secret test configs use.
pub const HOOK_SECRET: &str = "test-hook-secret-value";

/// The environment test configs are loaded with.
pub fn test_env() -> Env {
    Env::from_pairs([("JWT_SECRET", JWT_SECRET), ("HOOK_SECRET", HOOK_SECRET)])
}

/// Starts palisade from `config` (with `{UPSTREAM}` replaced by the
/// upstream's address); listeners on 127.0.0.1 port 0 unless set.
pub async fn start_palisade(config: &str, upstream: SocketAddr) -> palisade::Server {
    let mut text = config.replace("{UPSTREAM}", &format!("http://{upstream}"));
    if !text.contains("[server]") {
        text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{text}");
    }
    if !text.contains("[admin]") {
        text = format!("[admin]\nlisten = \"127.0.0.1:0\"\n{text}");
    }
    let mut policy =
        load_str(&text, "test.toml", &test_env()).unwrap_or_else(|e| panic!("test config: {e}"));
    if let Some(engine) = engine_override()
        && !text.contains("http1_engine")
    {
        policy.server.http1_engine = engine;
        policy.upstream.http1_engine = engine;
    }
    palisade::start(policy).await.expect("palisade starts")
}

/// `PALISADE_TEST_HTTP1_ENGINE=hyper` (or `palisade`, the default): every
/// test server speaks plain HTTP/1.1 with that engine on both sides
/// (`server` and `upstream.http1_engine`; `.ci/run` runs the suite with
/// hyper too), unless the test's config chooses.
fn engine_override() -> Option<palisade::config::choices::Http1Engine> {
    use palisade::config::choices::Http1Engine;
    match std::env::var("PALISADE_TEST_HTTP1_ENGINE").ok()?.as_str() {
        "palisade" => Some(Http1Engine::Palisade),
        "hyper" => Some(Http1Engine::Hyper),
        other => panic!("PALISADE_TEST_HTTP1_ENGINE={other}: hyper or palisade"),
    }
}

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req` (URI relative to `addr`) and reads the whole response.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    parts.uri = format!("http://{addr}{pq}").parse().unwrap();
    let response = client()
        .request(Request::from_parts(parts, body))
        .await
        .expect("request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET `path`.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, Request::get(path).body(Full::default()).unwrap()).await
}

/// GET `path` with headers.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(addr, req.body(Full::default()).unwrap()).await
}

/// Writes raw bytes and reads until the server closes or `timeout` passes.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// GET `path` exactly as written, `Connection: close`.
pub async fn raw_get(addr: SocketAddr, path: &str) -> String {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Scrapes `/metrics`.
pub async fn metrics(server: &palisade::Server) -> String {
    String::from_utf8(get(server.admin_addr, "/metrics").await.body.to_vec()).unwrap()
}

/// Each metric family's label names (SPEC §4), in the order the exposition
/// prints them (sorted), and the values SPEC fixes for some labels.
const LABELS: [(&str, &[&str]); 15] = [
    ("palisade_requests_total", &["method", "route", "status"]),
    ("palisade_request_duration_seconds", &["route"]),
    ("palisade_upstream_duration_seconds", &["route"]),
    ("palisade_requests_in_flight", &[]),
    ("palisade_auth_failures_total", &["reason", "route"]),
    (
        "palisade_ratelimit_decisions_total",
        &["by", "decision", "mode", "route"],
    ),
    ("palisade_ratelimit_backend_errors_total", &["backend"]),
    ("palisade_rejections_total", &["reason", "route"]),
    ("palisade_upstream_errors_total", &["kind", "route"]),
    ("palisade_upstream_retries_total", &["route"]),
    ("palisade_circuit_state", &["upstream"]),
    ("palisade_config_reloads_total", &["result"]),
    ("palisade_config_last_reload_success_timestamp_seconds", &[]),
    ("palisade_build_info", &["version"]),
    ("palisade_trace_spans_dropped_total", &[]),
];

/// Labels whose values SPEC §4 lists.
const LABEL_VALUES: [(&str, &[&str]); 5] = [
    ("decision", &["allow", "deny"]),
    ("mode", &["enforce", "shadow"]),
    ("result", &["success", "failure"]),
    ("kind", &["connect", "timeout", "reset"]),
    ("backend", &["redis"]),
];

/// Checks that `series` (`name{labels}`) names a palisade metric with
/// exactly its label names, in exposition order, and values SPEC allows;
/// returns the family name. A misspelt name, label or fixed value would
/// never match a line, read 0, and make an `== 0.0` assertion pass by itself.
fn check_series(series: &str) -> &str {
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (
            name,
            rest.strip_suffix('}')
                .unwrap_or_else(|| panic!("{series}: labels do not end with }}")),
        ),
        None => (series, ""),
    };
    let suffix = ["_bucket", "_sum", "_count"]
        .into_iter()
        .find(|suffix| name.ends_with(suffix));
    let family = suffix.map_or(name, |suffix| &name[..name.len() - suffix.len()]);
    assert!(
        palisade::observe::metrics::names::ALL.contains(&family),
        "{name} is not a palisade metric"
    );
    let (_, expected) = LABELS
        .iter()
        .find(|(f, _)| *f == family)
        .unwrap_or_else(|| panic!("{family} has no label list in tests/support"));
    let mut expected = expected.to_vec();
    if suffix == Some("_bucket") {
        expected.push("le");
        expected.sort_unstable();
    }
    let mut names = Vec::new();
    if !labels.is_empty() {
        for pair in labels.split("\",") {
            let (label, value) = pair
                .split_once("=\"")
                .unwrap_or_else(|| panic!("{series}: bad label {pair:?}"));
            let value = value.strip_suffix('"').unwrap_or(value);
            if let Some((_, allowed)) = LABEL_VALUES.iter().find(|(l, _)| *l == label) {
                assert!(
                    allowed.contains(&value),
                    "{series}: {label} is one of {allowed:?}"
                );
            }
            names.push(label);
        }
    }
    assert_eq!(
        names, expected,
        "{series}: {family} has the labels {expected:?}, in that order"
    );
    family
}

/// The value of one sample line (`name{labels}`) in a scrape, 0 if absent
/// (a labelled counter shows no line until it is first counted). The series
/// must be well formed (see `check_series`).
pub fn sample(scrape: &str, series: &str) -> f64 {
    check_series(series);
    find_sample(scrape, series).unwrap_or(0.0)
}

/// The value of one sample line that must be present (a gauge, or a
/// counter already counted): absence fails instead of reading 0.
pub fn sample_present(scrape: &str, series: &str) -> f64 {
    check_series(series);
    find_sample(scrape, series)
        .unwrap_or_else(|| panic!("no sample {series} in the scrape:\n{scrape}"))
}

/// The sum of every sample of a family (all label values), so "none at
/// all" holds whatever a label would have been spelt.
pub fn family_total(scrape: &str, family: &str) -> f64 {
    assert!(
        palisade::observe::metrics::names::ALL.contains(&family),
        "{family} is not a palisade metric"
    );
    scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn find_sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Mints an HS256 token for the test secret.
pub fn token(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sends `HEAD` to each path over HTTP/2 (prior knowledge) and asserts
/// the status and that no content came back: a `HEAD` response carries
/// none (RFC 9110 §9.3.2), and DATA frames after it are a protocol error
/// to clients.
pub async fn assert_head_over_h2_without_content(addr: SocketAddr, cases: &[(&str, StatusCode)]) {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    for (path, status) in cases {
        let request = Request::head(format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), *status, "{path}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "{path}: {body:?}");
    }
}
