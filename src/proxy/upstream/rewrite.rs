//! The request the upstream receives: hop-by-hop headers gone (what
//! `Connection` named went on arrival), no `Upgrade` but a WebSocket
//! handshake's (rebuilt here), `Host` and `traceparent` set, the URI
//! rebuilt from the canonical path, and `X-Forwarded-*` and the request
//! ID as palisade's own lines after the client's ([`AddedLines`]).

use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Uri, Version};

use super::upgrade::{self, WEBSOCKET};
use crate::config::UpstreamPolicy;
use crate::observe::trace::{self, Outgoing};
use crate::policy::auth::claims::IdentityHeaders;
use crate::policy::forward;
use crate::policy::headers::strip_fixed_hop_by_hop;
use crate::proxy::conn::{ConnRequestGuard, TunnelWatch};
use crate::proxy::reject::Reject;

/// Where a request goes and what the rewrite must know of its client.
pub struct ForwardTarget<'a> {
    /// The canonical path after `strip_prefix`.
    pub path: &'a str,
    /// The TCP peer, as header text.
    pub peer: &'a HeaderValue,
    /// Whether the peer is a trusted proxy.
    pub peer_trusted: bool,
    /// Whether the client reached us over HTTPS.
    pub https: bool,
    /// The request-ID header and its value.
    pub request_id: (&'a HeaderName, &'a HeaderValue),
    /// The verified caller's identity headers (`forward_claims`), if any.
    pub identity: Option<&'a IdentityHeaders>,
    /// palisade's `traceparent` (and the caller's `tracestate`), with
    /// `[tracing] propagate = true`.
    pub trace: Option<&'a Outgoing>,
    /// The client's connection and its `idle_timeout`, for the idle watch
    /// of a WebSocket tunnel (and the connection's timer, for the
    /// upstream deadline).
    pub connection: (&'a ConnRequestGuard, std::time::Duration),
}

/// The request head the upstream receives, sent once or once per try.
/// Made of the client's head ([`Head::of_client`]) and rewritten in place
/// ([`rewrite`]): built from a rewritten copy of the request's parts, it
/// cost nine copies of 190 to 540 bytes per request (`bench/RESULTS.md`,
/// session 24).
#[derive(Clone)]
pub struct Head {
    /// Method.
    pub method: Method,
    /// The client's URI, then the upstream's (origin form).
    pub uri: Uri,
    /// The client's headers, then the rewritten ones.
    pub headers: http::HeaderMap,
    /// palisade's own lines, sent after `headers` (once rewritten).
    pub added: Option<AddedLines>,
    /// A WebSocket handshake (sent on a connection of its own).
    pub upgrade: bool,
}

impl Head {
    /// The client's head, not yet rewritten.
    pub fn of_client(method: Method, uri: Uri, headers: http::HeaderMap) -> Self {
        Self {
            method,
            uri,
            headers,
            added: None,
            upgrade: false,
        }
    }
}

/// The client side of a WebSocket handshake, when the request is one.
pub struct ClientUpgrade {
    /// The client's half of the upgrade.
    pub on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The idle watch of the client connection, for the tunnel.
    pub tunnel_watch: Option<TunnelWatch>,
}

/// The lines palisade adds to the upstream request after the client's
/// (`X-Forwarded-*` and the request ID), kept beside the header map rather
/// than inserted into it: palisade's engine writes them as lines, and only
/// a request hyper sends puts them in its map
/// ([`insert_into`](Self::insert_into)). Hashing each name into the map
/// and reading it back cost about 1,100 instructions per request
/// (`bench/RESULTS.md`). The client's lines of these names are gone from
/// the map (`rewrite`), so the upstream gets one of each.
#[derive(Debug, Clone)]
pub struct AddedLines {
    identity: Option<IdentityHeaders>,
    forwarded: forward::Forwarded,
    request_id: (HeaderName, HeaderValue),
}

impl AddedLines {
    /// The identity headers, `forwarded`'s lines, then the request-ID
    /// header.
    pub fn new(
        identity: Option<IdentityHeaders>,
        forwarded: forward::Forwarded,
        request_id: (HeaderName, HeaderValue),
    ) -> Self {
        Self {
            identity,
            forwarded,
            request_id,
        }
    }

    /// Each line, as name and value, in the order it is written.
    pub fn each(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.identity
            .iter()
            .flat_map(|lines| lines.iter().map(|(name, value)| (name, value)))
            .chain(self.forwarded.each())
            .chain(std::iter::once((&self.request_id.0, &self.request_id.1)))
    }

    /// The lines put into a header map, for an exchange that writes only
    /// a map (hyper's).
    pub fn insert_into(&self, headers: &mut http::HeaderMap) {
        headers.reserve(4 + self.identity.as_ref().map_or(0, |lines| lines.len()));
        for (name, value) in self.each() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// One `Content-Length` line in plain digits: the HTTP library accepted
/// the client's spelling (`0005`, `5, 5`, two equal lines) as one length,
/// and the upstream gets that length, not a spelling its own parser might
/// read otherwise. The upstream's answer gets the same (RFC 9112 §6.3: a
/// recipient of `5, 5` replaces it with one valid value, or refuses it),
/// so the client reads the length palisade framed the body by. `false`
/// when the lines are not one length (a value that is no number, or
/// numbers that differ): they are left as they are.
pub(super) fn canonical_content_length(headers: &mut http::HeaderMap) -> bool {
    let mut lines = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = lines.next() else {
        return true;
    };
    if lines.next().is_none() && crate::proxy::wire::plain_length(first.as_bytes()) {
        return true;
    }
    // Every line must say the same length (the HTTP library refused a
    // request where they differ); otherwise the lines stay as they are.
    let mut length = None;
    for line in headers.get_all(header::CONTENT_LENGTH) {
        match (length, crate::proxy::wire::content_length(line.as_bytes())) {
            (_, None) => return false,
            (Some(seen), Some(this)) if seen != this => return false,
            (_, this) => length = this,
        }
    }
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    true
}

/// Rewrites the client's request head for `policy`'s upstream, in place
/// (`version` and `extensions` are the rest of the client's parts).
pub fn rewrite(
    head: &mut Head,
    version: Version,
    extensions: &mut http::Extensions,
    target: &ForwardTarget<'_>,
    policy: &UpstreamPolicy,
) -> Result<ClientUpgrade, Reject> {
    let websocket = upgrade::requested_websocket(version, &head.method, &head.headers);
    let headers = &mut head.headers;
    // `Upgrade` and `HTTP2-Settings` are hop-by-hop: never forwarded,
    // whatever `Connection` says. Only a WebSocket handshake may switch
    // protocols, and it is rebuilt below.
    strip_fixed_hop_by_hop(headers);
    // The HTTP library refused a request whose lines are not one length.
    let _ = canonical_content_length(headers);
    let client_upgrade = if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, WEBSOCKET.clone());
        let (connection, idle_timeout) = target.connection;
        ClientUpgrade {
            on_upgrade: extensions.remove::<hyper::upgrade::OnUpgrade>(),
            tunnel_watch: Some(connection.tunnel_watch(idle_timeout)),
        }
    } else {
        ClientUpgrade {
            on_upgrade: None,
            tunnel_watch: None,
        }
    };
    let client_host = headers.get(header::HOST).cloned().or_else(|| {
        head.uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let forwarded = forward::forwarded(
        headers,
        target.peer,
        target.peer_trusted,
        target.https,
        client_host.as_ref(),
    );
    // The client's lines palisade's own replace: looked for by name
    // (length first), not hashed one by one; usually none is there.
    let (id_name, id_value) = target.request_id;
    crate::policy::headers::remove_matching(headers, |name| {
        name == id_name || forward::forwarded_replaces(name, target.peer_trusted)
    });
    let host = match client_host {
        Some(host) if policy.preserve_host => host,
        _ => policy.host_header.clone(),
    };
    headers.insert(header::HOST, host);
    if let Some(outgoing) = target.trace {
        trace::set_outgoing(headers, outgoing);
    }
    head.uri = upstream_uri(&policy.base_path, target.path, &head.uri)?;
    head.added = Some(AddedLines::new(
        target.identity.cloned(),
        forwarded,
        (id_name.clone(), id_value.clone()),
    ));
    head.upgrade = client_upgrade.on_upgrade.is_some();
    Ok(client_upgrade)
}

/// The upstream request target for a canonical path (after
/// `strip_prefix`) under `base` (the upstream URL's path) and the client's
/// query.
/// Both were validated on arrival and `base_path` at load, so a failure
/// here is palisade's bug: a 500, never the client's 4xx.
fn upstream_uri(base: &str, path: &str, client: &Uri) -> Result<Uri, Reject> {
    let query = client.query();
    // Most requests: no base path, and the client's target, in origin
    // form, is exactly the canonical path and its query. It is then the
    // upstream's, shared rather than written and checked again. (Not an
    // absolute-form or HTTP/2 target: its path-and-query may be empty,
    // which reads as `/` but is written as nothing: `http://h#f`.)
    if base.is_empty()
        && client.scheme().is_none()
        && client.authority().is_none()
        && let Some(same) = client.path_and_query()
        && same
            .as_str()
            .strip_prefix(path)
            .is_some_and(|rest| match query {
                None => rest.is_empty(),
                Some(query) => rest.strip_prefix('?') == Some(query),
            })
    {
        return Ok(Uri::from(same.clone()));
    }
    let mut pq = String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    pq.push_str(base);
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    // Origin-form (RFC 9112 §3.2.1): the connection already goes to the
    // upstream, and `Host` names it.
    PathAndQuery::from_maybe_shared(pq)
        .map(Uri::from)
        .map_err(|_| Reject::Internal("the upstream path is not a valid URI"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_gets_one_plain_content_length() {
        let canonical = |lines: &[&'static str]| {
            let mut headers = http::HeaderMap::new();
            for line in lines {
                headers.append(header::CONTENT_LENGTH, HeaderValue::from_static(line));
            }
            let _ = canonical_content_length(&mut headers);
            headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(canonical(&["5"]), ["5"]);
        assert_eq!(canonical(&["0"]), ["0"]);
        assert_eq!(canonical(&["0005"]), ["5"]);
        assert_eq!(canonical(&["00"]), ["0"]);
        assert_eq!(canonical(&["5, 5"]), ["5"]);
        assert_eq!(canonical(&["5", "5"]), ["5"]);
        // Lines that disagree or do not parse are left for what refuses them.
        assert_eq!(canonical(&["5", "6"]), ["5", "6"]);
        assert_eq!(canonical(&["x"]), ["x"]);
        assert!(canonical(&[]).is_empty());
    }

    /// The client's target is reused only when it is exactly the canonical
    /// path and its query: a path canonicalised into another (`/a/.`,
    /// `/a//b`, `%2e`) must never reach the upstream as the client sent it.
    #[test]
    fn the_upstream_target_is_the_canonical_path_and_query() {
        let cases = [
            ("/a", "/a", "", "/a"),
            ("/a?x=1", "/a", "", "/a?x=1"),
            ("/a?", "/a", "", "/a?"),
            ("/a/.", "/a", "", "/a"),
            ("/a/.?q", "/a", "", "/a?q"),
            ("/ab", "/a", "", "/a"),
            ("/a//b?q=1", "/a/b", "", "/a/b?q=1"),
            ("/%61", "/a", "", "/a"),
            ("http://h?x", "/", "", "/?x"),
            ("http://h", "/", "", "/"),
            ("http://h#f", "/", "", "/"),
            ("http://h/a", "/a", "", "/a"),
            ("/a?x", "/a", "/base", "/base/a?x"),
        ];
        for (sent, canonical, base, expected) in cases {
            let client: Uri = sent.parse().unwrap();
            let uri = upstream_uri(base, canonical, &client).unwrap();
            assert_eq!(uri.to_string(), expected, "{sent}");
            // What an HTTP/1 writer takes as the request target: the bytes
            // themselves (an empty path-and-query displays as `/`).
            let target = uri.path_and_query().map(|pq| pq.as_str().len());
            assert_eq!(target, Some(expected.len()), "{sent}");
            assert!(
                uri.scheme().is_none() && uri.authority().is_none(),
                "{sent}"
            );
        }
    }
}
