//! Which HTTP a connection speaks, and the hyper builder for it.
//!
//! hyper-util's auto builder detects HTTP/2 by reading the first bytes into
//! a buffer it then replays (`Rewind`) on every read for the life of the
//! connection, and its connection type is an enum as large as an HTTP/2
//! connection even when it serves HTTP/1.1. palisade decides once instead:
//! with TLS by ALPN, in plaintext by peeking (not reading) the socket for
//! the h2c prior-knowledge preface. Each connection then holds only the
//! connection type it needs, boxed.

use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;

use crate::config::ServerPolicy;

/// The protocol of one client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x (and WebSocket upgrades).
    Http1,
    /// HTTP/2: negotiated by ALPN, or h2c with prior knowledge.
    Http2,
}

/// What every HTTP/2-with-prior-knowledge connection starts with (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at the first bytes of a plaintext connection: the h2c preface
/// means HTTP/2, anything else (or the client closing) HTTP/1. Nothing is
/// consumed; the caller bounds the wait (`header_read_timeout`).
pub async fn detect_plaintext(stream: &TcpStream) -> std::io::Result<Protocol> {
    let mut first = [0u8; PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 || first[..n] != PREFACE[..n] {
            return Ok(Protocol::Http1);
        }
        if n == PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        // Part of the preface so far (or "P" of a POST): the socket stays
        // readable with those bytes unread, so wait a little, not for
        // readiness; longer each time, so a client trickling the preface
        // costs a few dozen wake-ups, not one per millisecond.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(64));
    }
}

/// The protocol a TLS handshake agreed on.
pub fn from_alpn(alpn: Option<&[u8]>) -> Protocol {
    match alpn {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    }
}

/// hyper's buffer for one connection's heads. hyper answers 431 itself
/// past it; it is kept above our own limits so the pipeline answers first
/// with a proper problem body.
pub fn buffer_size(server: &ServerPolicy) -> usize {
    server
        .max_header_bytes
        .saturating_add(server.max_uri_bytes)
        .saturating_add(4096)
        .max(8192)
}

/// Header lines hyper takes in one head; past them it answers a bare 431
/// itself (palisade's own HTTP/1 reader refuses such a head first, with
/// the pipeline's 431). Above hyper's default of 100 so that most header
/// floods reach the pipeline's own 431 (counted, with problem+json and
/// security headers).
pub const HYPER_MAX_HEADERS: usize = 256;

/// The HTTP/1 settings.
pub fn http1_builder(buffer: usize) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Head and idle deadlines are tracked per connection (proxy::conn):
        // hyper's own timer would also cut idle keep-alive connections.
        .header_read_timeout(None)
        .max_buf_size(buffer)
        .max_headers(HYPER_MAX_HEADERS)
        .keep_alive(true);
    builder
}

/// The HTTP/2 settings.
pub fn http2_builder(buffer: usize) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buffer).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // No keep-alive PINGs: their round trips count as activity, so an
        // idle connection would never reach `idle_timeout` (proxy::conn).
        .keep_alive_interval(None);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn detected(first_bytes: &[&[u8]]) -> Protocol {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let chunks: Vec<Vec<u8>> = first_bytes.iter().map(|c| c.to_vec()).collect();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            for chunk in chunks {
                stream.write_all(&chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stream
        });
        let (server, _) = listener.accept().await.unwrap();
        let protocol = detect_plaintext(&server).await.unwrap();
        let sent = first_bytes.concat();
        let mut peeked = [0u8; 4];
        let n = server.peek(&mut peeked).await.unwrap();
        assert_eq!(&peeked[..n], &sent[..n], "nothing consumed");
        drop(client.await.unwrap());
        protocol
    }

    #[tokio::test]
    async fn the_preface_means_http2_and_anything_else_http1() {
        assert_eq!(detected(&[PREFACE]).await, Protocol::Http2);
        assert_eq!(
            detected(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]).await,
            Protocol::Http2
        );
        assert_eq!(
            detected(&[b"GET / HTTP/1.1\r\n\r\n"]).await,
            Protocol::Http1
        );
        assert_eq!(
            detected(&[b"P", b"OST / HTTP/1.1\r\n"]).await,
            Protocol::Http1
        );
        assert_eq!(
            detected(&[b"PRI * HTTP/1.1\r\n\r\n"]).await,
            Protocol::Http1
        );
    }

    #[test]
    fn alpn_h2_only() {
        assert_eq!(from_alpn(Some(b"h2")), Protocol::Http2);
        assert_eq!(from_alpn(Some(b"http/1.1")), Protocol::Http1);
        assert_eq!(from_alpn(None), Protocol::Http1);
    }
}
