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
