//! The hyper ceiling: the smallest HTTP/1 pass-through hyper allows, used by
//! `bench/run.sh` (target `hyper-ceiling`) and `bench/instructions.sh` as the
//! reference palisade's plain path is measured against (issue 12). No
//! policy: each downstream connection owns one upstream connection made with
//! `hyper::client::conn::http1::handshake`, and both are driven together in
//! one task on a current-thread runtime (no spawn per request, no pool, no
//! cross-task wake-up). It has no bound on upstream connections, which is
//! why palisade cannot be built this way; it is a measuring stick.
//!
//! `cargo run --release --example hyper_ceiling -- LISTEN_ADDR UPSTREAM_ADDR`

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Sender = Rc<RefCell<Option<client::SendRequest<Incoming>>>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn forward(
    sender: Sender,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, BoxError> {
    // HTTP/1 serves one request at a time, so the sender is always there.
    let taken = sender.borrow_mut().take();
    let mut upstream = taken.ok_or("a second request in flight")?;
    upstream.ready().await?;
    let response = upstream.send_request(request).await;
    *sender.borrow_mut() = Some(upstream);
    Ok(response?)
}

async fn serve(
    downstream: TcpStream,
    upstream: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    let socket = TcpStream::connect(upstream).await?;
    socket.set_nodelay(true)?;
    downstream.set_nodelay(true)?;
    let (sender, upstream_conn) = client::handshake(TokioIo::new(socket)).await?;
    let sender: Sender = Rc::new(RefCell::new(Some(sender)));
    let service = service_fn(move |request| forward(sender.clone(), request));
    let downstream_conn =
        server::Builder::new().serve_connection(TokioIo::new(downstream), service);
    // Both connections in this one task: whichever ends first ends the pair.
    tokio::select! {
        result = downstream_conn => result?,
        result = upstream_conn => result?,
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .ok_or("usage: LISTEN_ADDR UPSTREAM_ADDR")?
        .parse()?;
    let upstream: SocketAddr = args
        .next()
        .ok_or("usage: LISTEN_ADDR UPSTREAM_ADDR")?
        .parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (downstream, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                if let Err(error) = serve(downstream, upstream).await {
                    eprintln!("connection: {error}");
                }
            });
        }
    })
}
