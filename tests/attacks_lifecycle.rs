//! Issue 8, the lifecycle attacks: connections, tunnels, the breaker,
//! reload and response framing, each performed over real sockets against
//! a real palisade and a real upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; `None` if it is still
/// open after `limit` (a bound on the wait, not a timing assertion).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let upstream = TestUpstream::start().await;
    let config = "[server]\nlisten = \"127.0.0.1:0\"\nidle_timeout = \"1s\"\nheader_read_timeout = \"60s\"\n[upstream]\nurl = \"{UPSTREAM}\"\n[defaults]\nauth = \"none\"\n[[routes]]\nname = \"api\"\npath = \"/**\"\n";
    let server = start_palisade(config, upstream.addr).await;
    let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
    stream
        .write_all(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let rest = closed_within(&mut stream, Duration::from_secs(15))
        .await
        .expect("the idle keep-alive connection is closed by the server");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(upstream.count(), 1);
}

// === support ===

const OPEN_ROUTES: &str =
    "[defaults]\nauth = \"none\"\n[[routes]]\nname = \"api\"\npath = \"/**\"\n";

const WEBSOCKET_HANDSHAKE: &[u8] = b"GET /socket HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Reads one response head (up to the blank line) from a raw socket.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("a response head within 10 s")
            .unwrap();
        assert!(n > 0, "closed before the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// Opens a WebSocket tunnel through palisade and checks bytes flow.
async fn open_tunnel(proxy: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(WEBSOCKET_HANDSHAKE).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"PING");
    stream
}

/// Whether a response arrives on `stream` within `window` (a bound on how
/// long we look, not a timing assertion: the caller checks the other side).
async fn answered_within(stream: &mut TcpStream, window: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(window, stream.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// A raw upstream: answers every connection's first request with `reply`
/// and counts the requests it read.
async fn raw_upstream(
    reply: &'static [u8],
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(reply).await;
                // Hold the socket open a while, as a tunnel would.
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    (addr, seen)
}

// === 2. h2c smuggling ===

#[tokio::test]
async fn h2c_upgrade_is_dropped_and_never_tunnels() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(
        &format!("[upstream]\nurl = \"{{UPSTREAM}}\"\n{OPEN_ROUTES}"),
        upstream.addr,
    )
    .await;
    // The test upstream answers 101 to any request carrying `Upgrade`.
    let response = raw(
        server.proxy_addr,
        b"GET /app HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        !seen[0].headers.contains_key("upgrade"),
        "{:?}",
        seen[0].headers
    );
    assert!(!seen[0].headers.contains_key("http2-settings"));
    // Nor does any other upgrade than a WebSocket handshake on GET.
    for request in [
        "POST /app HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        "GET /app HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, close\r\nUpgrade: TLS/1.2\r\n\r\n",
    ] {
        let response = raw(server.proxy_addr, request.as_bytes()).await;
        assert_eq!(raw_status(&response), 200, "{response}");
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| !r.headers.contains_key("upgrade")));
}

#[tokio::test]
async fn an_unasked_101_from_the_upstream_is_a_502_not_a_tunnel() {
    let (addr, seen) = raw_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await;
    let server = start_palisade(
        &format!(
            "[upstream]\nurl = \"{{UPSTREAM}}\"\n[upstream.retry]\nattempts = 0\n{OPEN_ROUTES}"
        ),
        addr,
    )
    .await;
    let response = raw(
        server.proxy_addr,
        b"GET /app HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&response), 502, "{response}");
    assert!(!response.to_ascii_lowercase().contains("upgrade: h2c"));
    // A WebSocket handshake answered with a switch to another protocol: 502 too.
    let response = raw(server.proxy_addr, WEBSOCKET_HANDSHAKE).await;
    assert_eq!(raw_status(&response), 502, "{response}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "both reached the upstream: {seen:?}");
    assert!(seen[1].to_ascii_lowercase().contains("upgrade: websocket"));
}

// === 5 and 14. The breaker ===

const BREAKER: &str = r#"
[upstream]
url = "{UPSTREAM}"
[upstream.retry]
attempts = 0
[upstream.circuit_breaker]
enabled = true
failure_percent = 50
min_requests = 4
window = "10s"
open_for = "1s"
half_open_probes = 1
[defaults]
auth = "none"
[[routes]]
name = "api"
path = "/**"
"#;

#[tokio::test]
async fn a_storm_of_500s_does_not_open_the_breaker() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(BREAKER, upstream.addr).await;
    for _ in 0..10 {
        let reply = get_with(server.proxy_addr, "/boom", &[("x-test-status", "500")]).await;
        assert_eq!(reply.status, http::StatusCode::INTERNAL_SERVER_ERROR);
    }
    // Everyone else is still served: 500 is an answer, not ill health.
    assert_eq!(
        get(server.proxy_addr, "/health").await.status,
        http::StatusCode::OK
    );
    assert_eq!(upstream.count(), 11);
    // 503s from the upstream do count (11 successes in the window: 11 more
    // failures reach 50%).
    for _ in 0..11 {
        get_with(server.proxy_addr, "/x", &[("x-test-status", "503")]).await;
    }
    assert_eq!(
        get(server.proxy_addr, "/health").await.status,
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(upstream.count(), 22);
}

#[tokio::test]
async fn a_probe_whose_client_hangs_up_does_not_wedge_the_breaker() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(BREAKER, upstream.addr).await;
    for _ in 0..4 {
        get_with(server.proxy_addr, "/x", &[("x-test-status", "503")]).await;
    }
    assert_eq!(
        get(server.proxy_addr, "/x").await.status,
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(upstream.count(), 4);
    // After open_for, the one probe goes to a slow request whose client
    // hangs up before the answer.
    let mut probe = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nx-test-delay-ms: 3000\r\n\r\n")
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(500), async {
            while upstream.count() < 5 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok()
        {
            probe = Some(stream);
            break;
        }
    }
    assert!(probe.is_some(), "the probe reached the upstream");
    drop(probe);
    // The dropped probe counts as a failure: open again, then a new probe,
    // which succeeds and closes the circuit. Before the fix: 503 forever.
    let mut status = http::StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        status = get(server.proxy_addr, "/x").await.status;
        if status == http::StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, http::StatusCode::OK, "the breaker recovered");
    assert_eq!(
        get(server.proxy_addr, "/x").await.status,
        http::StatusCode::OK
    );
    assert!(upstream.count() >= 7);
}

// === 7. Tunnels keep their connection slot and close when idle ===

#[tokio::test]
async fn held_tunnels_keep_their_connection_slots() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(
        &format!("[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\n[upstream]\nurl = \"{{UPSTREAM}}\"\n{OPEN_ROUTES}"),
        upstream.addr,
    )
    .await;
    let first = open_tunnel(server.proxy_addr).await;
    let second = open_tunnel(server.proxy_addr).await;
    // A third connection waits in the backlog while both tunnels are held.
    let mut third = TcpStream::connect(server.proxy_addr).await.unwrap();
    third
        .write_all(b"GET /third HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(!answered_within(&mut third, Duration::from_secs(1)).await);
    assert_eq!(
        upstream.count(),
        2,
        "only the two handshakes reached the upstream"
    );
    // A tunnel ends: its slot serves the waiting connection.
    drop(first);
    let response = closed_within(&mut third, Duration::from_secs(10))
        .await
        .expect("served once a tunnel closed");
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));
    assert_eq!(upstream.count(), 3);
    drop(second);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_idle_timeout() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(
        &format!("[server]\nlisten = \"127.0.0.1:0\"\nidle_timeout = \"1s\"\nheader_read_timeout = \"60s\"\nmax_connections = 1\n[upstream]\nurl = \"{{UPSTREAM}}\"\n{OPEN_ROUTES}"),
        upstream.addr,
    )
    .await;
    let mut tunnel = open_tunnel(server.proxy_addr).await;
    closed_within(&mut tunnel, Duration::from_secs(15))
        .await
        .expect("the idle tunnel is closed by palisade");
    // And its slot is free again.
    let response = raw_get(server.proxy_addr, "/after").await;
    assert_eq!(raw_status(&response), 200);
    assert_eq!(upstream.count(), 2);
}

// === 16. Response framing ===

/// `GET /file` through palisade to a raw upstream answering `reply`: what
/// the client got, and how many requests the upstream read.
async fn get_from_raw_upstream(reply: &'static [u8]) -> (String, usize) {
    let (addr, seen) = raw_upstream(reply).await;
    let server = start_palisade(
        &format!("[upstream]\nurl = \"{{UPSTREAM}}\"\n{OPEN_ROUTES}"),
        addr,
    )
    .await;
    let response = raw_get(server.proxy_addr, "/file").await;
    let requests = seen.lock().unwrap().len();
    (response, requests)
}

#[tokio::test]
async fn a_chunked_response_with_a_content_length_loses_the_length() {
    let (response, requests) = get_from_raw_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(!lower.contains("content-length: 3"), "{response}");
    assert!(
        response.contains("hello world"),
        "the whole body: {response}"
    );
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn hop_by_hop_headers_of_a_response_never_reach_the_client() {
    // `HTTP2-Settings` belongs to one connection's h2c upgrade; the red
    // team of session 5 saw an upstream's copy reach the client.
    let (response, requests) = get_from_raw_upstream(
        b"HTTP/1.1 200 OK\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nhttp2-settings: AAAA\r\n\
          Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await;
    assert_eq!(raw_status(&response), 200, "{response}");
    assert_eq!(requests, 1);
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("x-kept: yes"), "{response}");
    for hop in ["http2-settings", "keep-alive:", "proxy-connection"] {
        assert!(!lower.contains(hop), "{hop} reached the client: {response}");
    }
}

// === 10 (and its sibling). Keep-alive deadlines ===

#[tokio::test]
async fn a_slow_head_on_a_kept_alive_connection_gets_header_read_timeout() {
    // The head deadline must not wait for the idle deadline slept on before.
    let upstream = TestUpstream::start().await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nidle_timeout = \"120s\"\nheader_read_timeout = \"1s\"\n[upstream]\nurl = \"{{UPSTREAM}}\"\n{OPEN_ROUTES}"
    );
    let server = start_palisade(&config, upstream.addr).await;
    let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
    stream
        .write_all(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Idle for a while (past header_read_timeout: the watchdog now waits
    // for the idle deadline), then a second head that never completes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream
        .write_all(b"GET /two HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    closed_within(&mut stream, Duration::from_secs(15))
        .await
        .expect("the slow head is cut off");
    assert_eq!(upstream.count(), 1);
}

// === Also close: [upstream] max_connections ===

/// An upstream that counts its open connections and remembers the most it
/// ever had at once; answers after `x-test-delay-ms`.
struct CountingUpstream {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingUpstream {
    async fn start() -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let this = Self {
            addr: listener.local_addr().unwrap(),
            open: Default::default(),
            most: Default::default(),
            requests: Default::default(),
        };
        let (open, most, requests) = (this.open.clone(), this.most.clone(), this.requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let now = open.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                let (open, requests) = (open.clone(), requests.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            requests.fetch_add(1, SeqCst);
                            let delay = req
                                .headers()
                                .get("x-test-delay-ms")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            async move {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                    open.fetch_sub(1, SeqCst);
                });
            }
        });
        this
    }

    fn most(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn upstream_connections_are_capped_and_waiters_get_504_at_their_deadline() {
    let upstream = CountingUpstream::start().await;
    let config = "[upstream]\nurl = \"{UPSTREAM}\"\nmax_connections = 1\n[upstream.retry]\nattempts = 0\n[defaults]\nauth = \"none\"\n[[routes]]\nname = \"quick\"\npath = \"/quick/**\"\ntimeout = \"300ms\"\n[[routes]]\nname = \"slow\"\npath = \"/**\"\ntimeout = \"10s\"\n";
    let server = start_palisade(config, upstream.addr).await;
    let proxy = server.proxy_addr;
    let delayed = |ms: &'static str| async move {
        get_with(proxy, "/slow", &[("x-test-delay-ms", ms)])
            .await
            .status
    };
    // Two at once: they take turns on one upstream socket.
    let (a, b) = tokio::join!(delayed("300"), delayed("300"));
    assert_eq!((a, b), (http::StatusCode::OK, http::StatusCode::OK));
    assert_eq!(upstream.requests(), 2);
    assert_eq!(upstream.most(), 1, "never two upstream sockets at once");
    // While the one socket is busy, a request that cannot get one within
    // its route's timeout gets 504 and never reaches the upstream.
    let busy = tokio::spawn(delayed("2000"));
    for _ in 0..500 {
        if upstream.requests() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.requests(), 3);
    assert_eq!(
        get(proxy, "/quick/x").await.status,
        http::StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(upstream.requests(), 3);
    assert_eq!(busy.await.unwrap(), http::StatusCode::OK);
    assert_eq!(upstream.most(), 1);
}

// === 15. Reload applies what it says it applies ===

fn write_policy(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_reload_applies_connection_settings_to_the_next_connection() {
    let upstream = TestUpstream::start().await;
    let dir = support::process::temp_dir("lifecycle-reload-conn");
    let text = |max: u32, idle: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = {max}\nidle_timeout = \"{idle}\"\nheader_read_timeout = \"60s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n{OPEN_ROUTES}",
            upstream.addr
        )
    };
    let path = write_policy(&dir, &text(1, "60s"));
    let server = palisade::start(palisade::config::load_file(&path, &test_env()).unwrap())
        .await
        .unwrap();
    // One kept-alive connection takes the only slot.
    let mut held = TcpStream::connect(server.proxy_addr).await.unwrap();
    held.write_all(b"GET /held HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut held).await.starts_with("http/1.1 200"));
    let mut waiting = TcpStream::connect(server.proxy_addr).await.unwrap();
    waiting
        .write_all(b"GET /waiting HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(!answered_within(&mut waiting, Duration::from_secs(1)).await);
    assert_eq!(upstream.count(), 1);
    // Reload: two connections and a 1 s idle timeout.
    write_policy(&dir, &text(2, "1s"));
    assert!(palisade::reload::reload_with_env(&server.shared, &path, &test_env()).await);
    let response = closed_within(&mut waiting, Duration::from_secs(10))
        .await
        .expect("the raised cap serves the waiting connection");
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));
    // The next connection gets the new idle timeout.
    let mut next = TcpStream::connect(server.proxy_addr).await.unwrap();
    next.write_all(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    closed_within(&mut next, Duration::from_secs(15))
        .await
        .expect("closed after the reloaded idle_timeout");
    assert_eq!(upstream.count(), 3);
    drop(held);
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn rs256_token() -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    jsonwebtoken::encode(
        &header,
        &serde_json::json!({ "sub": "u1", "exp": now() + 3600 }),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&fixture("rsa.pem")).unwrap(),
    )
    .unwrap()
}

/// Starts palisade on the policy at `path`.
async fn start_policy(path: &std::path::Path) -> palisade::Server {
    palisade::start(palisade::config::load_file(path, &test_env()).unwrap())
        .await
        .unwrap()
}

/// GET /orders through `proxy` with an RS256 token of the fixture key `rsa-1`.
async fn with_rs256_token(proxy: std::net::SocketAddr) -> Reply {
    let bearer = format!("Bearer {}", rs256_token());
    get_with(proxy, "/orders", &[("authorization", &bearer)]).await
}

/// Serves `document` as the JWKS at any path.
async fn jwks_server(document: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let document = document.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = bytes::Bytes::from(document.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(body),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_reload_to_an_unreachable_jwks_fails_and_keeps_the_keys() {
    let upstream = TestUpstream::start().await;
    let dir = support::process::temp_dir("lifecycle-reload-jwks");
    let keys: serde_json::Value = serde_json::from_slice(&fixture("jwks-keys.json")).unwrap();
    let document = serde_json::json!({ "keys": [keys["rsa"].clone()] }).to_string();
    std::fs::write(dir.join("jwks.json"), &document).unwrap();
    let text = |source: String| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n[auth.jwt]\n{source}\nalgorithms = [\"RS256\"]\njwks_refresh = \"1h\"\n[[routes]]\nname = \"api\"\npath = \"/**\"\nauth = \"jwt\"\n",
            upstream.addr
        )
    };
    let file_source = format!("jwks_file = \"{}\"", dir.join("jwks.json").display());
    let path = write_policy(&dir, &text(file_source));
    let server = start_policy(&path).await;
    let authed = || with_rs256_token(server.proxy_addr);
    assert_eq!(authed().await.status, http::StatusCode::OK);
    // The attack: one ConfigMap typo points jwks_url at nothing.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    write_policy(
        &dir,
        &text(format!("jwks_url = \"http://{closed}/jwks.json\"")),
    );
    assert!(!palisade::reload::reload_with_env(&server.shared, &path, &test_env()).await);
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(&scrape, "palisade_config_reloads_total{result=\"failure\"}"),
        1.0
    );
    assert_eq!(
        authed().await.status,
        http::StatusCode::OK,
        "the old keys stay"
    );
    assert_eq!(
        get(server.admin_addr, "/readyz").await.status,
        http::StatusCode::OK
    );
    assert_eq!(upstream.count(), 2);
    // A reachable new source is loaded before the swap: no gap at all.
    let jwks = jwks_server(document).await;
    write_policy(
        &dir,
        &text(format!("jwks_url = \"http://{jwks}/jwks.json\"")),
    );
    assert!(palisade::reload::reload_with_env(&server.shared, &path, &test_env()).await);
    assert_eq!(
        get(server.admin_addr, "/readyz").await.status,
        http::StatusCode::OK
    );
    assert_eq!(authed().await.status, http::StatusCode::OK);
    assert_eq!(upstream.count(), 3);
}

/// A key removed from a `jwks_file` stops verifying within `jwks_refresh`,
/// without a reload: the file is read again every period, as a `jwks_url`
/// is fetched again (the file was read once, at start, before). A file
/// that cannot be read meanwhile keeps the last good keys.
#[tokio::test]
async fn a_key_removed_from_a_jwks_file_stops_verifying_without_a_reload() {
    let upstream = TestUpstream::start().await;
    let dir = support::process::temp_dir("lifecycle-jwks-file-refresh");
    let keys: serde_json::Value = serde_json::from_slice(&fixture("jwks-keys.json")).unwrap();
    let jwks = dir.join("jwks.json");
    let with_rsa = serde_json::json!({ "keys": [keys["rsa"].clone(), keys["es256-a"].clone()] });
    std::fs::write(&jwks, with_rsa.to_string()).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n[auth.jwt]\njwks_file = \"{}\"\nalgorithms = [\"RS256\", \"ES256\"]\njwks_refresh = \"1s\"\ncache_ttl = \"0s\"\n[[routes]]\nname = \"api\"\npath = \"/**\"\nauth = \"jwt\"\n",
        upstream.addr,
        jwks.display()
    );
    let path = write_policy(&dir, &text);
    let server = start_policy(&path).await;
    let status = || async { with_rs256_token(server.proxy_addr).await.status };
    assert_eq!(status().await, http::StatusCode::OK);
    // A file that cannot be read (gone for a moment) keeps the keys.
    std::fs::remove_file(&jwks).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status().await,
        http::StatusCode::OK,
        "the last good keys stay"
    );
    // The RSA key is revoked by removing it from the file.
    let without_rsa = serde_json::json!({ "keys": [keys["es256-a"].clone()] });
    std::fs::write(&jwks, without_rsa.to_string()).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if status().await == http::StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the removed key still verified after 10 s");
    assert_eq!(status().await, http::StatusCode::UNAUTHORIZED);
}

/// A reload whose `jwks_file` is the running one's succeeds while that file
/// cannot be read (a key rotation half written): the running keys stay and
/// the rest of the edit applies (SPEC §5: only a reload that changes
/// `jwks_file` may fail on the key set). One that names another, broken,
/// file still fails.
#[tokio::test]
async fn a_reload_keeps_the_running_keys_while_the_same_jwks_file_is_broken() {
    let upstream = TestUpstream::start().await;
    let dir = support::process::temp_dir("lifecycle-jwks-file-broken");
    let keys: serde_json::Value = serde_json::from_slice(&fixture("jwks-keys.json")).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({ "keys": [keys["rsa"].clone()] }).to_string(),
    )
    .unwrap();
    let text = |file: &std::path::Path, open_route: bool| {
        let open = if open_route {
            "[[routes]]\nname = \"open\"\npath = \"/open/**\"\nauth = \"none\"\n"
        } else {
            ""
        };
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n[auth.jwt]\njwks_file = \"{}\"\nalgorithms = [\"RS256\"]\njwks_refresh = \"1h\"\n{open}[[routes]]\nname = \"api\"\npath = \"/**\"\nauth = \"jwt\"\n",
            upstream.addr,
            file.display()
        )
    };
    let path = write_policy(&dir, &text(&jwks, false));
    let server = start_policy(&path).await;
    let authed = || with_rs256_token(server.proxy_addr);
    assert_eq!(authed().await.status, http::StatusCode::OK);
    assert_eq!(
        get(server.proxy_addr, "/open/x").await.status,
        http::StatusCode::UNAUTHORIZED
    );
    // The JWKS file half written, and a policy edit at the same moment.
    std::fs::write(&jwks, "{").unwrap();
    write_policy(&dir, &text(&jwks, true));
    assert!(palisade::reload::reload_with_env(&server.shared, &path, &test_env()).await);
    assert_eq!(
        get(server.proxy_addr, "/open/x").await.status,
        http::StatusCode::OK
    );
    assert_eq!(
        authed().await.status,
        http::StatusCode::OK,
        "the running keys stay"
    );
    assert_eq!(
        get(server.admin_addr, "/readyz").await.status,
        http::StatusCode::OK
    );
    // Another file that cannot be read: the reload fails, nothing changes.
    let other = dir.join("other.json");
    std::fs::write(&other, "{").unwrap();
    write_policy(&dir, &text(&other, false));
    assert!(!palisade::reload::reload_with_env(&server.shared, &path, &test_env()).await);
    assert_eq!(
        get(server.proxy_addr, "/open/x").await.status,
        http::StatusCode::OK
    );
    assert_eq!(authed().await.status, http::StatusCode::OK);
    assert_eq!(upstream.count(), 5, "every request but the refused one");
}

/// A `jwks_file` over 1 MiB (the cap a `jwks_url` body has) is refused:
/// as a config error naming the key at start, and, once running, by the
/// periodic read, which keeps the last good keys.
#[tokio::test]
async fn a_jwks_file_past_the_cap_is_refused_and_the_running_keys_stay() {
    let upstream = TestUpstream::start().await;
    let dir = support::process::temp_dir("lifecycle-jwks-file-cap");
    let keys: serde_json::Value = serde_json::from_slice(&fixture("jwks-keys.json")).unwrap();
    let jwks = dir.join("jwks.json");
    let padded = |document: serde_json::Value| format!("{document}{}", " ".repeat(1 << 20));
    let with_rsa = serde_json::json!({ "keys": [keys["rsa"].clone()] });
    let without_rsa = serde_json::json!({ "keys": [keys["es256-a"].clone()] });
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n[auth.jwt]\njwks_file = \"{}\"\nalgorithms = [\"RS256\", \"ES256\"]\njwks_refresh = \"1s\"\ncache_ttl = \"0s\"\n[[routes]]\nname = \"api\"\npath = \"/**\"\nauth = \"jwt\"\n",
        upstream.addr,
        jwks.display()
    );
    let path = write_policy(&dir, &text);
    std::fs::write(&jwks, padded(with_rsa.clone())).unwrap();
    let refused = palisade::config::load_file(&path, &test_env()).unwrap_err();
    let message = refused.to_string();
    assert!(message.contains("auth.jwt.jwks_file"), "{message}");
    assert!(message.contains("larger than"), "{message}");
    std::fs::write(&jwks, with_rsa.to_string()).unwrap();
    let server = start_policy(&path).await;
    assert_eq!(
        with_rs256_token(server.proxy_addr).await.status,
        http::StatusCode::OK
    );
    // A key set without the RSA key, padded past the cap: not installed.
    std::fs::write(&jwks, padded(without_rsa)).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        with_rs256_token(server.proxy_addr).await.status,
        http::StatusCode::OK,
        "the last good keys stay"
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_reload_that_changes_redis_timeout_applies_it() {
    let upstream = TestUpstream::start().await;
    // A "Redis" that accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hole.accept().await {
            held.push(stream);
        }
    });
    let dir = support::process::temp_dir("lifecycle-reload-redis");
    let text = |timeout: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n[ratelimit]\nbackend = \"redis\"\nredis_url = \"redis://{hole_addr}\"\nredis_timeout = \"{timeout}\"\non_redis_error = \"deny\"\n[defaults]\nauth = \"none\"\n[[routes]]\nname = \"api\"\npath = \"/**\"\nrate_limits = [{{ by = \"ip\", limit = 100, per = \"1m\" }}]\n",
            upstream.addr
        )
    };
    let path = write_policy(&dir, &text("30s"));
    let server = palisade::start(palisade::config::load_file(&path, &test_env()).unwrap())
        .await
        .unwrap();
    write_policy(&dir, &text("100ms"));
    assert!(palisade::reload::reload_with_env(&server.shared, &path, &test_env()).await);
    // The new timeout decides: deny (503) well before the old 30 s.
    let reply = tokio::time::timeout(Duration::from_secs(10), get(server.proxy_addr, "/x"))
        .await
        .expect("answered under the reloaded redis_timeout");
    assert_eq!(reply.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn idle_http2_connections_are_closed_too() {
    let upstream = TestUpstream::start().await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nidle_timeout = \"2s\"\nheader_read_timeout = \"60s\"\n[upstream]\nurl = \"{{UPSTREAM}}\"\n{OPEN_ROUTES}"
    );
    let server = start_palisade(&config, upstream.addr).await;
    let stream = TcpStream::connect(server.proxy_addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(
                stream,
            ))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(
            http::Request::get(format!("http://{}/h2", server.proxy_addr))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    drop(response);
    // The server ends the idle connection (GOAWAY, then close).
    tokio::time::timeout(Duration::from_secs(15), connection)
        .await
        .expect("the idle HTTP/2 connection is closed by the server")
        .unwrap()
        .ok();
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn a_reload_of_workers_says_it_needs_a_restart() {
    let upstream = TestUpstream::start().await;
    let dir = support::process::temp_dir("lifecycle-reload-workers");
    let text = |workers: u32| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = {workers}\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n{OPEN_ROUTES}",
            upstream.addr
        )
    };
    let path = write_policy(&dir, &text(1));
    let mut process = support::process::Process::start(&path);
    let (proxy, _admin) = process.addresses();
    std::fs::write(&path, text(2)).unwrap();
    process.signal("HUP");
    let line = process.wait_for("server.workers changed");
    assert!(line.contains("restart"), "{line}");
    process.wait_for("config reloaded");
    assert_eq!(get(proxy, "/x").await.status, http::StatusCode::OK);
    assert_eq!(upstream.count(), 1);
    process.signal("TERM");
    assert_eq!(process.rest().0, Some(0));
}

#[tokio::test]
async fn a_client_that_never_reads_its_download_does_not_hold_the_upstream_forever() {
    let upstream = TestUpstream::start().await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nidle_timeout = \"1s\"\n[upstream]\nurl = \"{{UPSTREAM}}\"\nmax_connections = 1\n{OPEN_ROUTES}"
    );
    let server = start_palisade(&config, upstream.addr).await;
    // The slow-read attack: ask for a large download, never read a byte.
    let mut reader = TcpStream::connect(server.proxy_addr).await.unwrap();
    reader
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\nx-test-stream-bytes: 1073741824\r\n\r\n")
        .await
        .unwrap();
    upstream.wait_for_count(1).await;
    // Once its writes have been blocked for idle_timeout, the connection is
    // ended and the only upstream socket serves everyone else again.
    let reply = tokio::time::timeout(Duration::from_secs(20), get(server.proxy_addr, "/next"))
        .await
        .expect("answered");
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(upstream.count(), 2);
    drop(reader);
}

#[tokio::test]
async fn stalled_uploads_time_out_without_opening_the_breaker() {
    // An anonymous client announces a body, sends two bytes and stalls: the
    // route's timeout fires (504), but that is the client's doing, not the
    // upstream's, so the breaker must not count it.
    let upstream = TestUpstream::start().await;
    let config = BREAKER.replace(
        "[[routes]]\nname = \"api\"",
        "[[routes]]\nname = \"upload\"\npath = \"/upload/**\"\ntimeout = \"300ms\"\n[[routes]]\nname = \"api\"",
    );
    let server = start_palisade(&config, upstream.addr).await;
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
        stream
            .write_all(b"POST /upload/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab")
            .await
            .unwrap();
        stalled.push(stream);
    }
    for stream in &mut stalled {
        let head = read_head(stream).await;
        assert!(head.starts_with("http/1.1 504"), "{head}");
    }
    let scrape = metrics(&server).await;
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("palisade_circuit_state{") && l.ends_with(" 0")),
        "{scrape}"
    );
    assert_eq!(
        get(server.proxy_addr, "/health").await.status,
        http::StatusCode::OK
    );
    // Timeouts with the body complete do count: a slow upstream opens it.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let reply = get_with(
            server.proxy_addr,
            "/upload/slow",
            &[("x-test-delay-ms", "1000")],
        )
        .await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses[0], 504, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    assert_eq!(
        get(server.proxy_addr, "/health").await.status,
        http::StatusCode::SERVICE_UNAVAILABLE
    );
}
