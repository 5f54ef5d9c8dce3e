//! The tokio floor: the least an HTTP/1 pass-through on tokio can do, with
//! no HTTP library. Used by `bench/run.sh` (target `tokio-floor`, with
//! `FLOOR_BIN`) beside `examples/hyper_ceiling.rs`, to measure how much of
//! a proxy's CPU per request is the HTTP library's and how much is tokio's
//! and the kernel's (issue 12).
//!
//! Each client connection owns one upstream connection, in one task on a
//! current-thread runtime. A request head is parsed only to find where it
//! ends (`httparse`), then its bytes are copied upstream unchanged with
//! their `Content-Length` body; the response is parsed the same way and
//! copied back. Nothing is validated, rewritten or bounded, and a chunked
//! body ends the connection: it is a measuring stick for the bench's two
//! workloads, never a proxy.
//!
//! `cargo run --release --example tokio_floor -- LISTEN_ADDR UPSTREAM_ADDR`

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Headers a message may carry here (the bench's carry about ten).
const MAX_HEADERS: usize = 64;

/// Where a message parsed from the front of `buf` ends (head and body),
/// once its head is complete.
fn message_end(buf: &[u8], request: bool) -> Result<Option<usize>, BoxError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (status, headers) = if request {
        let mut parsed = httparse::Request::new(&mut headers);
        (parsed.parse(buf)?, parsed.headers)
    } else {
        let mut parsed = httparse::Response::new(&mut headers);
        (parsed.parse(buf)?, parsed.headers)
    };
    let httparse::Status::Complete(head) = status else {
        return Ok(None);
    };
    let mut length = 0usize;
    for header in headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)?.trim().parse()?;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked bodies are not handled".into());
        }
    }
    Ok(Some(head + length))
}

/// A read buffer: `data[..filled]` holds bytes not relayed yet.
struct Buffer {
    data: Vec<u8>,
    filled: usize,
}

impl Buffer {
    fn new() -> Self {
        // Zeroed once; a message must fit (the bench's are at most 17 KiB).
        Self {
            data: vec![0; 64 * 1024],
            filled: 0,
        }
    }
}

/// Reads one whole message from `from` (with what `buf` already holds),
/// writes it to `to`, and keeps what followed it in `buf`.
async fn relay(
    from: &mut TcpStream,
    to: &mut TcpStream,
    buf: &mut Buffer,
    request: bool,
) -> Result<bool, BoxError> {
    let end = loop {
        if let Some(end) = message_end(&buf.data[..buf.filled], request)?
            && end <= buf.filled
        {
            break end;
        }
        if buf.filled == buf.data.len() {
            return Err("a message larger than the buffer".into());
        }
        let read = from.read(&mut buf.data[buf.filled..]).await?;
        if read == 0 {
            return Ok(false);
        }
        buf.filled += read;
    };
    to.write_all(&buf.data[..end]).await?;
    buf.data.copy_within(end..buf.filled, 0);
    buf.filled -= end;
    Ok(true)
}

async fn serve(mut client: TcpStream, upstream: SocketAddr) -> Result<(), BoxError> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let mut requests = Buffer::new();
    let mut responses = Buffer::new();
    while relay(&mut client, &mut server, &mut requests, true).await? {
        if !relay(&mut server, &mut client, &mut responses, false).await? {
            break;
        }
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: LISTEN_ADDR UPSTREAM_ADDR";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(async move {
                if let Err(error) = serve(client, upstream).await {
                    eprintln!("connection: {error}");
                }
            });
        }
    })
}
