//! The stub upstream of `palisade test` and `palisade explain`: answers 200
//! to every request and records what it received (method, target, headers,
//! body). It listens on an ephemeral 127.0.0.1 port inside the process,
//! because the pipeline forwards through the production upstream client,
//! which connects over TCP; nothing outside the process is contacted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub target: String,
    /// Every header it received.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// A running stub upstream.
#[derive(Debug)]
pub struct Stub {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    /// Binds 127.0.0.1 on an ephemeral port and starts answering.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| record(log.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            received,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests it has received.
    pub fn count(&self) -> usize {
        self.received.lock().map_or(0, |r| r.len())
    }

    /// The last request received after the first `count`, if any.
    pub fn since(&self, count: usize) -> Option<Received> {
        let received = self.received.lock().ok()?;
        received.get(count..)?.last().cloned()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    log: Arc<Mutex<Vec<Received>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_string());
    if let Ok(mut log) = log.lock() {
        log.push(Received {
            method: parts.method,
            target,
            headers: parts.headers,
            body,
        });
    }
    Ok(Response::new(Full::new(Bytes::from_static(
        b"palisade test stub upstream\n",
    ))))
}
