//! The upstream test server. It records every request it receives (and
//! whether its body arrived complete) and behaves according to headers:
//! `x-test-delay-ms`, `x-test-status`, `x-test-cors`, `x-test-stream-bytes`,
//! `x-test-stall-after-bytes` (that many bytes of a body of unknown length,
//! then nothing until the reader drops the body); otherwise it
//! echoes the request as JSON. It always sends `Server` and `X-Powered-By`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
    pub body_sha256: String,
    /// The body stream ended cleanly (false: it broke off).
    pub complete: bool,
}

/// A running upstream test server.
#[derive(Clone)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    first_body_bytes: Arc<Mutex<Option<mpsc::UnboundedSender<usize>>>>,
    /// Requests seen per `x-test-key`, for `x-test-fail-first`.
    seen_by_key: Arc<Mutex<std::collections::HashMap<String, usize>>>,
}

/// Deterministic streamed content: byte i is (i * 7 + 3) mod 251.
pub fn pattern_bytes(start: usize, len: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| ((i * 7 + 3) % 251) as u8)
        .collect()
}

/// Hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl TestUpstream {
    /// Starts on 127.0.0.1 port 0.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Self {
            addr: listener.local_addr().unwrap(),
            log: Arc::default(),
            first_body_bytes: Arc::default(),
            seen_by_key: Arc::default(),
        };
        let server = upstream.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| server.clone().handle(req));
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    // More header lines than palisade takes (hyper's default
                    // is 100): a test of palisade's limit meets palisade's.
                    builder.http1().max_headers(1024);
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        upstream
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until at least `n` requests were recorded.
    pub async fn wait_for_count(&self, n: usize) -> Vec<Recorded> {
        for _ in 0..1000 {
            if self.count() >= n {
                return self.requests();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "the upstream recorded {} requests, expected {n}",
            self.count()
        );
    }

    /// How many requests reached it.
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Notifies (with the byte count) when a request body's first bytes arrive.
    pub fn notify_first_body_bytes(&self) -> mpsc::UnboundedReceiver<usize> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.first_body_bytes.lock().unwrap() = Some(tx);
        rx
    }

    async fn handle(
        self,
        mut req: Request<Incoming>,
    ) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
        if let Some(protocol) = req.headers().get("upgrade").cloned() {
            return Ok(self.upgrade(&mut req, protocol));
        }
        let (parts, mut body) = req.into_parts();
        let mut hasher = Sha256::new();
        let mut body_len = 0;
        let mut complete = true;
        let mut notified = false;
        loop {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        hasher.update(data);
                        body_len += data.len();
                        if !notified && !data.is_empty() {
                            notified = true;
                            if let Some(tx) = self.first_body_bytes.lock().unwrap().as_ref() {
                                let _ = tx.send(data.len());
                            }
                        }
                    }
                }
                Some(Err(_)) => {
                    complete = false;
                    break;
                }
            }
        }
        let body_sha256: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let recorded = Recorded {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body_len,
            body_sha256: body_sha256.clone(),
            complete,
        };
        self.log.lock().unwrap().push(recorded);
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some(ms) = header("x-test-delay-ms").and_then(|v| v.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut status = header("x-test-status")
            .and_then(|v| v.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        // `x-test-fail-first: N`: the first N requests of an `x-test-key` get 503.
        if let (Some(n), Some(key)) = (
            header("x-test-fail-first").and_then(|v| v.parse::<usize>().ok()),
            header("x-test-key"),
        ) {
            let mut seen = self.seen_by_key.lock().unwrap();
            let count = seen.entry(key).or_insert(0);
            *count += 1;
            if *count <= n {
                status = StatusCode::SERVICE_UNAVAILABLE;
            }
        }
        let body: BoxBody<Bytes, Infallible> = if let Some(first) =
            header("x-test-stall-after-bytes").and_then(|v| v.parse::<usize>().ok())
        {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                let start = Bytes::from(pattern_bytes(0, first));
                if tx.send(Ok(Frame::data(start))).await.is_ok() {
                    // Silent, but open, until the connection reading it lets go.
                    tx.closed().await;
                }
            });
            BodyExt::boxed(StreamBody::new(ReceiverStream(rx)))
        } else if let Some(total) =
            header("x-test-stream-bytes").and_then(|v| v.parse::<usize>().ok())
        {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let chunk = 64 * 1024;
                let mut sent = 0;
                while sent < total {
                    let len = chunk.min(total - sent);
                    if tx
                        .send(Ok(Frame::data(Bytes::from(pattern_bytes(sent, len)))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    sent += len;
                }
            });
            BodyExt::boxed(StreamBody::new(ReceiverStream(rx)))
        } else {
            let headers: serde_json::Map<String, serde_json::Value> = parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                    )
                })
                .collect();
            let echo = serde_json::json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "headers": headers,
                "body_len": body_len,
                "body_sha256": body_sha256,
            });
            Full::new(Bytes::from(echo.to_string())).boxed()
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert("server", "test-upstream".parse().unwrap());
        headers.insert("x-powered-by", "tests".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        // `x-test-retry-after: V`: the response carries `Retry-After: V`.
        if let Some(value) = header("x-test-retry-after") {
            headers.insert("retry-after", value.parse().unwrap());
        }
        // `x-test-cors: 1`: the upstream answers CORS itself, as widely as
        // it can (palisade owns CORS on a CORS-enabled route).
        if header("x-test-cors").is_some() {
            for (name, value) in [
                ("access-control-allow-origin", "*"),
                ("access-control-allow-credentials", "true"),
                ("access-control-allow-credentials", "true"),
                ("access-control-expose-headers", "X-Internal-Token"),
                ("access-control-allow-methods", "DELETE"),
                ("access-control-allow-headers", "X-Admin"),
                ("access-control-max-age", "86400"),
                ("access-control-allow-private-network", "true"),
            ] {
                headers.append(name, value.parse().unwrap());
            }
        }
        Ok(response)
    }
}

impl TestUpstream {
    /// Switches protocols and echoes every byte back, uppercased, so a test
    /// can tell the upstream answered.
    fn upgrade(
        &self,
        req: &mut Request<Incoming>,
        protocol: http::HeaderValue,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        self.log.lock().unwrap().push(Recorded {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
            body_len: 0,
            body_sha256: String::new(),
            complete: true,
        });
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                    return;
                }
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()).boxed());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response.headers_mut().insert("upgrade", protocol);
        response
            .headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        response
    }
}

/// An `mpsc::Receiver` as a `Stream`, for streamed bodies.
pub struct ReceiverStream<T>(pub mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// An upstream of raw bytes: it answers every connection with `response`
/// after the first read, and then holds the connection open without a
/// word more, until the other side closes it.
pub async fn holding_upstream(response: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let _ = socket.write_all(response).await;
                let _ = socket.read_to_end(&mut Vec::new()).await;
            });
        }
    });
    addr
}
