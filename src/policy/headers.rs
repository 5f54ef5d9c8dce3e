//! Response security headers (`[security_headers]`, per-route overrides) and
//! the hop-by-hop header rules of RFC 9110 §7.6.1, applied both ways.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// A compiled security-header set: values validated at load time.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    /// Set on every response (empty values were dropped at load).
    pub always: Vec<(HeaderName, HeaderValue)>,
    /// `Strict-Transport-Security`, set only when the client used HTTPS.
    pub hsts: Option<HeaderValue>,
    /// Dropped from upstream responses (`Server`, `X-Powered-By`, ...).
    pub remove: Vec<HeaderName>,
}

impl SecurityHeaders {
    /// Removes the configured response headers, then sets the security
    /// headers (replacing any the upstream sent).
    pub fn apply(&self, headers: &mut HeaderMap, client_https: bool) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.always {
            headers.insert(name.clone(), value.clone());
        }
        if client_https && let Some(hsts) = &self.hsts {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
}

/// Hop-by-hop headers that never cross a proxy (RFC 9110 §7.6.1, plus the
/// historical `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and every header the `Connection` header
/// names. For responses, where palisade sets its own headers afterwards.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_connection_nominated(headers, |_| false);
    strip_fixed_hop_by_hop(headers);
}

/// Removes the fixed hop-by-hop headers only. For a request whose
/// `Connection`-named headers were already removed by
/// [`remove_connection_nominated`] before palisade added its own headers:
/// nothing named in `Connection` may remove what palisade sets.
pub fn strip_fixed_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes every header the `Connection` header names, except hop-by-hop
/// ones (removed later, after an `Upgrade` was read) and those `protected`
/// says palisade sets or relies on. `Connection` itself stays until then.
pub fn remove_connection_nominated(
    headers: &mut HeaderMap,
    protected: impl Fn(&HeaderName) -> bool,
) {
    if !headers.contains_key(header::CONNECTION) {
        return;
    }
    // Every token of every Connection line names a hop-by-hop header.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !HOP_BY_HOP.contains(name) && !protected(name))
        .collect();
    for extra in named {
        headers.remove(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("x-other-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn connection_cannot_remove_protected_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("upgrade, authorization, x-hop"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        remove_connection_nominated(&mut headers, |name| name == header::AUTHORIZATION);
        assert!(headers.contains_key(header::AUTHORIZATION));
        assert!(headers.contains_key(header::UPGRADE));
        assert!(headers.contains_key(header::CONNECTION));
        assert!(!headers.contains_key("x-hop"));
        strip_fixed_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn hsts_only_on_https() {
        let set = SecurityHeaders {
            always: vec![(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"))],
            hsts: Some(HeaderValue::from_static("max-age=1")),
            remove: vec![header::SERVER],
        };
        let mut plain = HeaderMap::new();
        plain.insert(header::SERVER, HeaderValue::from_static("uvicorn"));
        set.apply(&mut plain, false);
        assert!(!plain.contains_key(header::SERVER));
        assert!(!plain.contains_key(header::STRICT_TRANSPORT_SECURITY));
        assert_eq!(plain[header::X_FRAME_OPTIONS], "DENY");
        let mut tls = HeaderMap::new();
        set.apply(&mut tls, true);
        assert_eq!(tls[header::STRICT_TRANSPORT_SECURITY], "max-age=1");
    }
}
