//! Retries and the circuit breaker toward the upstream, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::upstream::sha256_hex;
use support::*;

const CONFIG: &str = r#"
[upstream]
url = "{UPSTREAM}"
[upstream.retry]
attempts = 2
on = ["connect-failure", "503"]
backoff = "1ms"
max_backoff = "5ms"
[upstream.circuit_breaker]
enabled = false
failure_percent = 50
min_requests = 4
window = "10s"
open_for = "1s"
half_open_probes = 1
[defaults]
auth = "none"
[[routes]]
name = "no-retry"
path = "/once/**"
retry = false
[[routes]]
name = "api"
path = "/**"
"#;

fn failing(key: &str, times: &str) -> [(&'static str, String); 2] {
    [
        ("x-test-fail-first", times.to_string()),
        ("x-test-key", key.to_string()),
    ]
}

async fn get_failing(addr: std::net::SocketAddr, path: &str, key: &str, times: &str) -> Reply {
    let headers = failing(key, times);
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    get_with(addr, path, &refs).await
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_503() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CONFIG, upstream.addr).await;
    let reply = get_failing(server.proxy_addr, "/items", "get-1", "2").await;
    assert_eq!(reply.status, StatusCode::OK, "third try succeeded");
    assert_eq!(upstream.count(), 3);
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(&scrape, "palisade_upstream_retries_total{route=\"api\"}"),
        2.0
    );
    // Attempts are bounded: three failures in a row pass the last 503 through.
    let reply = get_failing(server.proxy_addr, "/items", "get-2", "5").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count(), 6);
}

#[tokio::test]
async fn non_idempotent_requests_are_not_retried() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CONFIG, upstream.addr).await;
    let mut req = Request::post("/orders");
    for (k, v) in failing("post-1", "1") {
        req = req.header(k, v);
    }
    let reply = send(
        server.proxy_addr,
        req.body(Full::new(Bytes::from_static(b"{}"))).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count(), 1);
    // With an Idempotency-Key the small body is replayed intact.
    let body = Bytes::from(vec![b'x'; 10_000]);
    let mut req = Request::post("/orders").header("idempotency-key", "order-42");
    for (k, v) in failing("post-2", "1") {
        req = req.header(k, v);
    }
    let reply = send(
        server.proxy_addr,
        req.body(Full::new(body.clone())).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[1..]
            .iter()
            .all(|r| r.body_sha256 == sha256_hex(&body) && r.complete)
    );
}

#[tokio::test]
async fn retry_false_and_large_bodies_are_sent_once() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CONFIG, upstream.addr).await;
    assert_eq!(
        get_failing(server.proxy_addr, "/once/x", "route-off", "1")
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(upstream.count(), 1);
    // A PUT whose body is over 64 KiB streams, so it is never replayed.
    let mut req = Request::put("/big");
    for (k, v) in failing("big", "1") {
        req = req.header(k, v);
    }
    let reply = send(
        server.proxy_addr,
        req.body(Full::new(Bytes::from(vec![0u8; 100_000])))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn connect_failures_are_retried_then_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = start_palisade(CONFIG, closed).await;
    assert_eq!(
        get(server.proxy_addr, "/x").await.status,
        StatusCode::BAD_GATEWAY
    );
    let scrape = metrics(&server).await;
    assert_eq!(
        sample(&scrape, "palisade_upstream_retries_total{route=\"api\"}"),
        2.0
    );
}

/// A client that waits the `Retry-After` of a circuit-open 503 is served
/// (the probe goes through): the header is rounded up, never down to a
/// moment the circuit is still open. Found by a red-team round: with
/// `open_for = "3s"` it said 2 right after opening, and a client that
/// waited 2 s got another 503.
#[tokio::test]
async fn waiting_a_circuit_open_retry_after_is_enough() {
    let upstream = TestUpstream::start().await;
    let config = CONFIG
        .replace("attempts = 2", "attempts = 0")
        .replace("enabled = false", "enabled = true")
        .replace("open_for = \"1s\"", "open_for = \"3s\"");
    let server = start_palisade(&config, upstream.addr).await;
    for _ in 0..4 {
        let failed = get_with(server.proxy_addr, "/x", &[("x-test-status", "503")]).await;
        assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let refused = get(server.proxy_addr, "/x").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count(), 4, "the open circuit kept the request");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let probe = get(server.proxy_addr, "/x").await;
    assert_eq!(
        probe.status,
        StatusCode::OK,
        "waited Retry-After {retry_after} s and was still refused"
    );
    assert_eq!(upstream.count(), 5);
}

#[tokio::test]
async fn the_breaker_opens_serves_503_and_recovers() {
    let upstream = TestUpstream::start().await;
    let config = CONFIG
        .replace("attempts = 2", "attempts = 0")
        .replace("enabled = false", "enabled = true");
    let server = start_palisade(&config, upstream.addr).await;
    let circuit = |scrape: &str| {
        // Present from the start: an absent gauge must not read as "closed".
        sample_present(
            scrape,
            &format!("palisade_circuit_state{{upstream=\"{}\"}}", upstream.addr),
        )
    };
    assert_eq!(circuit(&metrics(&server).await), 0.0);
    for _ in 0..4 {
        assert_eq!(
            get_with(server.proxy_addr, "/x", &[("x-test-status", "503")])
                .await
                .status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    // Open: answered by palisade, the upstream is left alone.
    let refused = get(server.proxy_addr, "/x").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(upstream.count(), 4);
    assert_eq!(circuit(&metrics(&server).await), 2.0);
    let ready = get(server.admin_addr, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "palisade itself serves");
    assert_eq!(ready.json()["upstream"]["status"], "circuit_open");
    assert_eq!(ready.json()["upstream"]["circuit"], "open");
    // After open_for one probe goes through; it succeeds and closes the circuit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(server.proxy_addr, "/x").await.status, StatusCode::OK);
    assert_eq!(circuit(&metrics(&server).await), 0.0);
    let ready = get(server.admin_addr, "/readyz").await.json();
    assert_eq!(ready["upstream"]["status"], "ok");
    assert_eq!(ready["upstream"]["circuit"], "closed");
    assert_eq!(get(server.proxy_addr, "/x").await.status, StatusCode::OK);
    assert_eq!(upstream.count(), 6);
}

/// SPEC §4: `/readyz` gives the upstream's status. It said only its URL,
/// `ok` or not, while every request got 502.
#[tokio::test]
async fn readyz_says_when_the_upstream_cannot_be_reached() {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CONFIG, upstream.addr).await;
    let ready = get(server.admin_addr, "/readyz").await.json();
    assert_eq!(ready["upstream"]["status"], "ok");
    assert_eq!(get(server.proxy_addr, "/x").await.status, StatusCode::OK);
    let dead = support::otlp::closed_port();
    let gone = start_palisade(CONFIG, dead).await;
    assert_eq!(
        get(gone.proxy_addr, "/x").await.status,
        StatusCode::BAD_GATEWAY
    );
    let ready = get(gone.admin_addr, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "palisade itself serves");
    assert_eq!(ready.json()["upstream"]["status"], "unreachable");
    assert_eq!(ready.json()["upstream"]["circuit"], "closed");
}

/// An upstream whose first connection answers one request (keep-alive, no
/// `Connection: close`), then reads the next head and closes without a
/// word: its keep-alive timer and that request crossing on the wire. Every
/// later connection answers `fresh`. Each request line comes with the
/// number of the connection it arrived on.
async fn closes_after_one_answer() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                for answered in 0.. {
                    // One head (the tests' bodies are short and come with it).
                    let mut chunk = [0u8; 4096];
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buffer).to_string();
                    buffer.clear();
                    let line = head.lines().next().unwrap_or("").to_string();
                    log.lock().unwrap().push((connection, line));
                    if connection == 0 && answered == 1 {
                        return; // closed, unanswered
                    }
                    let body = if connection == 0 { "ok" } else { "fresh" };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// palisade's upstream engine, no configured retries: a re-send seen here
/// is the pool's own.
/// One retry, not on resets: a request a reused connection left
/// unanswered goes again all the same (it counts as the retry).
const RETRY_NOT_ON_RESET: &str = r#"
[upstream]
url = "{UPSTREAM}"
http1_engine = "palisade"
[upstream.retry]
attempts = 1
on = ["connect-failure"]
[defaults]
auth = "none"
[[routes]]
name = "all"
path = "/**"
"#;

/// palisade in front of [`closes_after_one_answer`] with `policy`, after
/// `GET /first` left its first connection idle in palisade's pool.
async fn one_answer_kept_alive(
    policy: &str,
) -> (
    palisade::Server,
    std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>,
) {
    let (addr, seen) = closes_after_one_answer().await;
    let server = start_palisade(policy, addr).await;
    assert_eq!(
        get(server.proxy_addr, "/first").await.status,
        StatusCode::OK
    );
    (server, seen)
}

#[tokio::test]
async fn a_get_a_reused_connection_left_unanswered_goes_once_more_on_another() {
    let (server, seen) = one_answer_kept_alive(RETRY_NOT_ON_RESET).await;
    let reply = get(server.proxy_addr, "/second").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, Bytes::from_static(b"fresh"));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (0, "GET /first HTTP/1.1".to_string()),
            (0, "GET /second HTTP/1.1".to_string()),
            (1, "GET /second HTTP/1.1".to_string()),
        ]
    );
    // It was a retry, and is counted as one.
    assert_eq!(
        sample(
            &metrics(&server).await,
            "palisade_upstream_retries_total{route=\"all\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_get_a_reused_connection_left_unanswered_is_not_sent_again_when_retries_are_off() {
    let policy = RETRY_NOT_ON_RESET.replace("attempts = 1", "attempts = 0");
    let (server, seen) = one_answer_kept_alive(&policy).await;
    let reply = get(server.proxy_addr, "/second").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (0, "GET /first HTTP/1.1".to_string()),
            (0, "GET /second HTTP/1.1".to_string()),
        ],
        "attempts = 0: the upstream sees the request once"
    );
}

#[tokio::test]
async fn a_post_a_reused_connection_left_unanswered_is_not_sent_again() {
    let (server, seen) = one_answer_kept_alive(RETRY_NOT_ON_RESET).await;
    let post = Request::post(format!("http://{}/second", server.proxy_addr))
        .body(Full::new(Bytes::from_static(b"order")))
        .unwrap();
    assert_eq!(
        send(server.proxy_addr, post).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (0, "GET /first HTTP/1.1".to_string()),
            (0, "POST /second HTTP/1.1".to_string()),
        ],
        "a request that is not idempotent reaches the upstream once"
    );
}

/// What [`first_answer_then`] gives the test: the upstream's address, the
/// request lines it saw (with the number of the connection each came on),
/// the word that lets it go on after its first answer, and the word it
/// sends back once it has.
type Scripted = (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>,
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
);

/// An upstream whose first connection answers `GET /first` (keep-alive),
/// then, once the test says so (the connection is idle in palisade's pool
/// by then), sends `after` on it and, when `close`, closes it. Every later
/// connection answers `fresh`.
async fn first_answer_then(after: &'static [u8], close: bool) -> Scripted {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let (done, done_heard) = tokio::sync::oneshot::channel();
    let (go, go_heard) = tokio::sync::oneshot::channel::<()>();
    let mut done = Some(done);
    let mut go_heard = Some(go_heard);
    tokio::spawn(async move {
        let mut held = Vec::new();
        for connection in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut answered = 0;
            loop {
                while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                if buffer.is_empty() {
                    break;
                }
                let head = String::from_utf8_lossy(&buffer).to_string();
                buffer.clear();
                let line = head.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push((connection, line));
                let body = if connection == 0 { "ok" } else { "fresh" };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
                answered += 1;
                if connection == 0 && answered == 1 {
                    if let Some(go_heard) = go_heard.take() {
                        let _ = go_heard.await;
                    }
                    socket.write_all(after).await.unwrap();
                    if close {
                        drop(socket);
                    } else {
                        held.push(socket);
                    }
                    if let Some(done) = done.take() {
                        let _ = done.send(());
                    }
                    break;
                }
            }
        }
    });
    (addr, seen, go, done_heard)
}

/// palisade (`engine` toward the upstream, no retries) in front of
/// [`first_answer_then`], after `GET /first` and after the upstream has
/// sent `after` (and closed, when `close`) on the connection idle in the
/// pool.
async fn idle_connection_then(
    engine: &str,
    after: &'static [u8],
    close: bool,
) -> (
    palisade::Server,
    std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>,
) {
    let policy = RETRY_NOT_ON_RESET
        .replace("attempts = 1", "attempts = 0")
        .replace(
            "http1_engine = \"palisade\"",
            &format!("http1_engine = \"{engine}\""),
        );
    let (addr, seen, go, done) = first_answer_then(after, close).await;
    let server = start_palisade(&policy, addr).await;
    assert_eq!(
        get(server.proxy_addr, "/first").await.status,
        StatusCode::OK
    );
    go.send(()).unwrap();
    done.await.unwrap();
    (server, seen)
}

/// The second request got `fresh` from a second connection, the only one
/// it reached.
fn answered_on_a_fresh_connection(
    reply: &Reply,
    seen: &std::sync::Mutex<Vec<(usize, String)>>,
    second: &str,
    engine: &str,
) {
    assert_eq!(reply.status, StatusCode::OK, "{engine}");
    assert_eq!(reply.body, Bytes::from_static(b"fresh"), "{engine}");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (0, "GET /first HTTP/1.1".to_string()),
            (1, format!("{second} HTTP/1.1")),
        ],
        "{engine}"
    );
}

/// The pool looks at an idle connection before handing it out: one its
/// upstream has closed since is not used. A `POST` (never re-sent) sent on
/// it would be lost as a 502.
#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    for engine in ["palisade", "hyper"] {
        let (server, seen) = idle_connection_then(engine, b"", true).await;
        let post = Request::post(format!("http://{}/second", server.proxy_addr))
            .body(Full::new(Bytes::from_static(b"order")))
            .unwrap();
        let reply = send(server.proxy_addr, post).await;
        answered_on_a_fresh_connection(&reply, &seen, "POST /second", engine);
    }
}

/// Bytes an upstream sends on an idle connection answer nothing: a whole
/// response nobody asked for (a desynchronised or hostile upstream) must
/// never be taken as the answer to the next request sent on it.
#[tokio::test]
async fn an_answer_nobody_asked_for_on_an_idle_connection_answers_no_request() {
    const UNASKED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled";
    for engine in ["palisade", "hyper"] {
        let (server, seen) = idle_connection_then(engine, UNASKED, false).await;
        let reply = get(server.proxy_addr, "/second").await;
        answered_on_a_fresh_connection(&reply, &seen, "GET /second", engine);
    }
}
