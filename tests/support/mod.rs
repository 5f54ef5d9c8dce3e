//! Integration-test helpers: a recording upstream test server, palisade
//! started in-process on port 0 from a config string, and clients (hyper,
//! and raw bytes on a socket for what HTTP clients would normalise).
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

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
    let policy =
        load_str(&text, "test.toml", &test_env()).unwrap_or_else(|e| panic!("test config: {e}"));
    palisade::start(policy).await.expect("palisade starts")
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

/// The value of one sample line (`name{labels}`) in a scrape, 0 if absent.
/// The metric name must be one palisade exports (a misspelt name would
/// read 0 and make an `== 0.0` assertion pass by itself).
pub fn sample(scrape: &str, series: &str) -> f64 {
    let name = series.split('{').next().unwrap_or(series);
    let family = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    assert!(
        palisade::observe::metrics::names::ALL.contains(&family),
        "{name} is not a palisade metric"
    );
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
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
