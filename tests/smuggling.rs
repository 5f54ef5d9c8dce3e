//! Issue 10, request smuggling over raw sockets: ambiguous framing
//! (`Content-Length` with `Transfer-Encoding`, duplicates, obfuscated
//! `Transfer-Encoding`, bare LF, chunk extensions and sizes), trailers,
//! `Expect: 100-continue` on refused requests, HTTP/2 `content-length`
//! that disagrees with its DATA frames, and pipelining after a refusal.
//!
//! Each case says what the client gets and what the upstream receives:
//! nothing, or exactly one well-framed request. Every case hides a second
//! request in the bytes, for a route that needs a secret the client does
//! not have (`/hook/smuggled`): if palisade reads it as a request of its
//! own, policy refuses it (401); if its bytes ever reached the upstream
//! inside another request's framing, the upstream would record it. It must
//! never reach the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
[upstream]
url = "{UPSTREAM}"
[auth.secrets.hook]
header = "X-Hook-Secret"
value = "${HOOK_SECRET}"
[[routes]]
name = "hook"
path = "/hook/**"
auth = "secret:hook"
max_body = "1KiB"
[[routes]]
name = "small"
path = "/small/**"
auth = "none"
max_body = "16B"
[[routes]]
name = "open"
path = "/**"
auth = "none"
"#;

async fn setup() -> (TestUpstream, palisade::Server) {
    let upstream = TestUpstream::start().await;
    let server = start_palisade(CONFIG, upstream.addr).await;
    (upstream, server)
}

/// The hidden request every case carries.
const SMUGGLED: &str = "GET /hook/smuggled HTTP/1.1\r\nHost: test\r\n\r\n";

/// What the upstream must have received for one case.
#[derive(Debug, Clone, Copy)]
enum Upstream {
    /// Nothing at all.
    Nothing,
    /// Exactly one request, complete, with this body length.
    One(usize),
}

struct Case {
    name: &'static str,
    request: String,
    /// Status of the first response on the connection.
    status: u16,
    upstream: Upstream,
}

fn cases() -> Vec<Case> {
    let chunked_smuggle = format!("0\r\n\r\n{SMUGGLED}");
    vec![
        Case {
            // RFC 9112 §6.3: Transfer-Encoding wins, the Content-Length is
            // dropped, and the connection closes after the response.
            name: "Content-Length with Transfer-Encoding",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{chunked_smuggle}",
                chunked_smuggle.len()
            ),
            status: 200,
            upstream: Upstream::One(0),
        },
        Case {
            name: "two different Content-Length lines",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\
                 Content-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            status: 400,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "Content-Length list with different values",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nContent-Length: 0, {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            status: 400,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "Content-Length with a sign",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nContent-Length: +{}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            status: 400,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "Transfer-Encoding that is not chunked last",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked, identity\r\n\r\n\
                 {chunked_smuggle}"
            ),
            status: 400,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "unknown Transfer-Encoding",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: xchunked\r\n\r\n\
                 {chunked_smuggle}"
            ),
            status: 400,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "space before the colon of Transfer-Encoding",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding : chunked\r\n\r\n\
                 {chunked_smuggle}"
            ),
            status: 400,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "second Transfer-Encoding line",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\
                 Transfer-Encoding: identity\r\n\r\n{chunked_smuggle}"
            ),
            status: 400,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "Transfer-Encoding in upper case is still chunked",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: CHUNKED\r\n\
                 Connection: close\r\n\r\n5\r\nhello\r\n{chunked_smuggle}"
            ),
            status: 200,
            upstream: Upstream::One(5),
        },
        Case {
            name: "Transfer-Encoding with a tab is still chunked",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding:\tchunked\r\n\
                 Connection: close\r\n\r\n5\r\nhello\r\n{chunked_smuggle}"
            ),
            status: 200,
            upstream: Upstream::One(5),
        },
        Case {
            name: "chunk extensions are read past",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n5;ext=\"1\"\r\nhello\r\n{chunked_smuggle}"
            ),
            status: 200,
            upstream: Upstream::One(5),
        },
        Case {
            name: "oversized chunk size",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
                 FFFFFFFFFFFFFFFFFF\r\nhello\r\n{chunked_smuggle}"
            ),
            status: 400,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "chunked body over max_body",
            request: format!(
                "POST /small/x HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
                 20\r\n{}\r\n{chunked_smuggle}",
                "a".repeat(32)
            ),
            status: 413,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "bare LF line endings",
            request: format!(
                "POST /x HTTP/1.1\nHost: test\nContent-Length: 5\nConnection: close\n\nhello{SMUGGLED}"
            ),
            status: 200,
            upstream: Upstream::One(5),
        },
        Case {
            name: "bare CR in a header value",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nX-A: a\rTransfer-Encoding: chunked\r\n\
                 Content-Length: 5\r\n\r\nhello{SMUGGLED}"
            ),
            status: 400,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "obsolete line folding",
            request: format!(
                "POST /x HTTP/1.1\r\nHost: test\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\
                 Content-Length: 5\r\n\r\nhello{SMUGGLED}"
            ),
            status: 400,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "Content-Length over max_body is refused before the body",
            request: format!(
                "POST /small/x HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len() + 40
            ),
            status: 413,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "refused request whose body is a request",
            request: format!(
                "POST /hook/x HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            status: 401,
            upstream: Upstream::Nothing,
        },
        Case {
            name: "Expect: 100-continue on a refused request, body sent anyway",
            request: format!(
                "POST /hook/x HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n\
                 Content-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            status: 401,
            upstream: Upstream::Nothing,
        },
    ]
}

/// Sends the bytes, reads until the server closes (or 3 s of quiet).
async fn exchange(server: &palisade::Server, bytes: &[u8]) -> String {
    exchange_until(server, bytes, Duration::from_secs(3))
        .await
        .0
}

/// Sends the bytes, reads until the server closes or is quiet for
/// `quiet`; whether it closed.
async fn exchange_until(
    server: &palisade::Server,
    bytes: &[u8],
    quiet: Duration,
) -> (String, bool) {
    let mut stream = TcpStream::connect(server.proxy_addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            Ok(_) => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The status codes of every response in a raw HTTP/1.1 stream.
fn statuses(stream: &str) -> Vec<u16> {
    stream
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| stream[i + 9..].get(..3).and_then(|s| s.parse().ok()))
        .filter(|code| *code != 100)
        .collect()
}

#[tokio::test]
async fn smuggling_table() {
    let mut failures = Vec::new();
    for case in cases() {
        let (upstream, server) = setup().await;
        let response = exchange(&server, case.request.as_bytes()).await;
        let got = statuses(&response);
        if got.first() != Some(&case.status) {
            failures.push(format!(
                "{}: status {:?}, expected {} ({response:?})",
                case.name, got, case.status
            ));
        }
        // Let anything palisade forwarded arrive before looking.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = upstream.requests();
        let smuggled = seen.iter().any(|r| r.uri.contains("smuggled"));
        let ok = match case.upstream {
            Upstream::Nothing => seen.is_empty(),
            Upstream::One(len) => seen.len() == 1 && seen[0].complete && seen[0].body_len == len,
        };
        if !ok || smuggled {
            failures.push(format!(
                "{}: upstream saw {:?}, expected {:?}",
                case.name,
                seen.iter()
                    .map(|r| (&r.method, &r.uri, r.body_len, r.complete))
                    .collect::<Vec<_>>(),
                case.upstream
            ));
        }
        // A second response can only be palisade's own refusal of the
        // hidden request, read as a request of its own.
        if got.iter().skip(1).any(|status| *status != 401) {
            failures.push(format!("{}: later responses {got:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The HTTP library reads `0005` and two equal lines as one length of 5
/// (a list it refuses); the upstream gets that length as one plain line, never a
/// spelling its own parser could read otherwise (leading zeros as octal, a
/// list or a second line refused or taken differently).
#[tokio::test]
async fn content_length_reaches_the_upstream_as_one_plain_line() {
    for lines in [
        "Content-Length: 0005\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\n",
    ] {
        let (upstream, server) = setup().await;
        let request =
            format!("POST /x HTTP/1.1\r\nHost: test\r\n{lines}Connection: close\r\n\r\nhello");
        let response = exchange(&server, request.as_bytes()).await;
        assert_eq!(statuses(&response), [200], "{lines:?}: {response}");
        let seen = upstream.wait_for_count(1).await;
        let lengths: Vec<_> = seen[0].headers.get_all("content-length").iter().collect();
        assert_eq!(lengths, ["5"], "{lines:?}");
        assert_eq!((seen[0].body_len, seen[0].complete), (5, true), "{lines:?}");
    }
}

#[tokio::test]
async fn pipelined_request_after_a_refused_one_is_served_alone() {
    let (upstream, server) = setup().await;
    // A refused request with no body, then an allowed one, in one write.
    let bytes = "GET /hook/x HTTP/1.1\r\nHost: test\r\n\r\n\
                 GET /after HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    let response = exchange(&server, bytes.as_bytes()).await;
    assert_eq!(statuses(&response), [401, 200], "{response}");
    let seen = upstream.wait_for_count(1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/after");
}

#[tokio::test]
async fn request_inside_a_refused_body_never_runs() {
    let (upstream, server) = setup().await;
    // 413 on a declared length: the body (which holds a request) is not a
    // request, whether palisade drains it or closes the connection.
    let body = format!(
        "{}GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n",
        "a".repeat(32)
    );
    let bytes = format!(
        "POST /small/x HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = exchange(&server, bytes.as_bytes()).await;
    let got = statuses(&response);
    assert_eq!(got, [413], "{response}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| !r.uri.contains("smuggled")),
        "{:?}",
        upstream.requests()
    );
    assert_eq!(upstream.count(), 0);
}

/// hyper ends a request's trailer section only at CRLF CRLF, where a bare
/// LF ends it for other readers: a request a front proxy pipelined after
/// `0\r\n\n` (or after a trailer line ended by a bare LF) is read as
/// trailers, and every later response on the connection would answer the
/// wrong request. So a body that ends in a trailer section, or that
/// palisade left unread, ends the connection after its response; a
/// section with no field at all can only be a bare LF, and is refused.
#[tokio::test]
async fn a_request_hidden_in_a_trailer_section_ends_the_connection() {
    const NEXT: &str = "GET /next HTTP/1.1\r\nHost: test\r\n\r\n";
    let post = |path: &str, rest: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n{rest}{NEXT}"
        )
    };
    let cases = [
        ("section begins with a bare LF", post("/x", "\n"), 400, None),
        (
            "bare LF ends a trailer line",
            post("/x", "X-A: b\n\n"),
            200,
            Some(5),
        ),
        ("refused, body unread", post("/hook/x", "\n"), 401, None),
        (
            "well-formed trailers",
            post("/x", "X-User-Id: admin\r\n\r\n"),
            200,
            Some(5),
        ),
        // A handshake with a body is served as a plain GET, never a tunnel
        // that would keep the connection (and the body in its stream).
        (
            "WebSocket handshake with a chunked body",
            post("/x", "X-A: b\n\n").replace(
                "POST /x HTTP/1.1\r\n",
                "GET /x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            ),
            200,
            Some(5),
        ),
    ];
    for (name, request, status, forwarded) in cases {
        let (upstream, server) = setup().await;
        let (response, closed) =
            exchange_until(&server, request.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(statuses(&response), [status], "{name}: {response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("connection: close\r\n"),
            "{name}: {response}"
        );
        assert!(closed, "{name}: the connection stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = upstream.requests();
        assert!(seen.iter().all(|r| r.uri != "/next"), "{name}: {seen:?}");
        let complete: Vec<_> = seen.iter().filter(|r| r.complete).collect();
        match forwarded {
            None => assert!(complete.is_empty(), "{name}: {seen:?}"),
            Some(len) => {
                assert_eq!(complete.len(), 1, "{name}: {seen:?}");
                assert_eq!(complete[0].body_len, len, "{name}");
                assert!(!complete[0].headers.contains_key("x-user-id"), "{name}");
                assert!(!complete[0].headers.contains_key("x-a"), "{name}");
            }
        }
    }
    // A body that ends with its last chunk keeps the connection.
    let (upstream, server) = setup().await;
    let request = post("/x", "\r\n").replace(
        NEXT,
        "GET /next HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    let (response, closed) =
        exchange_until(&server, request.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(statuses(&response), [200, 200], "{response}");
    assert!(closed, "the second request asked to close");
    let seen = upstream.wait_for_count(2).await;
    assert_eq!(seen[1].uri, "/next");
}

/// palisade does not tunnel: a `CONNECT` (here with an origin-form target,
/// which routes would match) never reaches the upstream, whose 200 would
/// make the connection a tunnel nobody serves; and the connection closes,
/// where hyper would otherwise wait on it for a tunnel until `idle_timeout`.
#[tokio::test]
async fn connect_is_refused_and_ends_the_connection() {
    let (upstream, server) = setup().await;
    let request = format!("CONNECT /x HTTP/1.1\r\nHost: test\r\n\r\n{SMUGGLED}");
    let (response, closed) =
        exchange_until(&server, request.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(statuses(&response), [400], "{response}");
    assert!(response.contains("connection: close\r\n"), "{response}");
    assert!(closed, "the connection stayed open");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(upstream.count(), 0, "{:?}", upstream.requests());
}

#[tokio::test]
async fn http2_content_length_that_disagrees_with_data_never_completes_upstream() {
    let (upstream, server) = setup().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    // Declares 50 bytes, sends 5.
    let req = Request::post(format!("http://{}/x", server.proxy_addr))
        .header("content-length", "50")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    match client.request(req).await {
        Ok(response) => {
            let status = response.status();
            let _ = response.into_body().collect().await;
            assert_ne!(status, StatusCode::OK, "a short body was accepted");
        }
        // The server side (palisade's HTTP/2 layer) resets the stream.
        Err(error) => assert!(
            format!("{error:?}").contains("PROTOCOL_ERROR, Remote"),
            "{error:?}"
        ),
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        upstream.requests().iter().all(|r| !r.complete),
        "the upstream received a complete request: {:?}",
        upstream.requests()
    );
}
