//! The one upgrade palisade tunnels: a WebSocket handshake (GET over
//! HTTP/1.1, RFC 6455 §4.1). Any other `Upgrade` (`h2c` above all, which
//! would carry further requests past every policy) is dropped from the
//! forwarded request, and a `101` nobody asked for becomes a 502.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, Version};

use crate::policy::headers::strip_hop_by_hop;
use crate::proxy::conn::TunnelWatch;
use crate::proxy::reject::Reject;

/// `Upgrade: websocket`.
pub static WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");

/// Whether any comma-separated token of any `name` line equals `token`.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request is a WebSocket handshake palisade may tunnel: GET
/// over HTTP/1.1 with `Connection: upgrade` and `Upgrade: websocket`.
/// Nothing else ever switches protocols through palisade.
pub fn requested_websocket(version: Version, method: &http::Method, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && method == http::Method::GET
        && has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
        && has_no_body(headers)
}

/// A handshake is a bodiless GET (RFC 6455 §4.1). One with a body is
/// served as the plain GET it also is: after a `101` the connection is a
/// tunnel whatever the body's framing left unread, so a chunked body's
/// trailer section (where hyper may have swallowed a pipelined request,
/// `pipeline::chunked_from_connection`) would never close it, and the
/// upstream would find the body inside its WebSocket stream.
fn has_no_body(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0")
}

/// Whether a 101 switches to WebSocket, the protocol palisade asked for.
fn switched_to_websocket(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::UPGRADE).iter();
    matches!(
        (values.next(), values.next()),
        (Some(only), None) if only.as_bytes().eq_ignore_ascii_case(b"websocket")
    )
}

/// The upstream's response as the client may see it: framing made
/// unambiguous, hop-by-hop headers gone, and a `101` turned into a tunnel
/// when (and only when) the client asked for that WebSocket.
pub fn finish_response<B>(
    mut response: Response<B>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    tunnel_watch: Option<TunnelWatch>,
) -> Result<Response<B>, Reject> {
    drop_conflicting_length(response.headers_mut());
    // RFC 9110 §8.6: a 204 has no `Content-Length` (HTTP/2 clients refuse
    // one). RFC 9112 §6.3: a length that is not one number is an invalid
    // answer, a 502, also where no body follows (`HEAD`, 204, 304), where
    // the HTTP libraries pass it on unread.
    if !super::rewrite::canonical_content_length(response.headers_mut()) {
        return Err(Reject::UpstreamReset(
            "invalid Content-Length from the upstream".into(),
        ));
    }
    if response.status() == http::StatusCode::NO_CONTENT {
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    match (client_upgrade, switching) {
        (Some(client_side), true) if switched_to_websocket(response.headers()) => {
            let headers = response.headers_mut();
            strip_hop_by_hop(headers);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, WEBSOCKET.clone());
            tunnel(client_side, hyper::upgrade::on(&mut response), tunnel_watch);
        }
        // A switch nobody asked for (or to another protocol) never becomes
        // a tunnel, nor reaches the client as a 101.
        (_, true) => {
            return Err(Reject::UpstreamReset(
                "the upstream switched protocols unasked".into(),
            ));
        }
        _ => strip_hop_by_hop(response.headers_mut()),
    }
    Ok(response)
}

/// RFC 9112 §6.3: a response with `Transfer-Encoding` is framed by it, and
/// its `Content-Length` must go; passed on, it would make the client cut
/// the body short (or read past it).
fn drop_conflicting_length(headers: &mut HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
}

/// Splices the client's and the upstream's upgraded connections until
/// either side closes, or no byte went either way for the connection's
/// `idle_timeout`. The client socket keeps its `max_connections` slot
/// until then (it owns it), and so does the upstream socket its own.
fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    watch: Option<TunnelWatch>,
) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client, upstream);
        match (client, upstream) {
            (Ok(client), Ok(upstream)) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                let idle = async {
                    match &watch {
                        Some(watch) => watch.idle().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                        if let Err(error) = copied {
                            tracing::debug!(%error, "upgraded connection ended");
                        }
                    }
                    () = idle => tracing::debug!("idle upgraded connection closed"),
                }
            }
            (Err(error), _) | (_, Err(error)) => tracing::debug!(%error, "upgrade failed"),
        }
    });
}
