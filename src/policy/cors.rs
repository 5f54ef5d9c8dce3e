//! CORS: an exact-origin allowlist. Preflights are answered by palisade
//! (204, no auth, upstream never contacted); actual responses, errors
//! included, get the CORS headers so a browser can read a 401 or 429.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};

use std::sync::Arc;

use smallvec::SmallVec;

use super::response_headers::{HeaderBlock, NameSet, ResponseHeaders, edit_map};

/// `[cors]`, compiled.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// Exact allowed origins (`Origin` is compared byte for byte).
    pub origins: Vec<HeaderValue>,
    /// `["*"]` (only legal without credentials).
    pub any_origin: bool,
    /// Send `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
    /// `Access-Control-Allow-Methods` value.
    pub allow_methods: HeaderValue,
    /// `Access-Control-Allow-Headers` value.
    pub allow_headers: HeaderValue,
    /// `Access-Control-Expose-Headers` value, if any.
    pub expose_headers: Option<HeaderValue>,
    /// `Access-Control-Max-Age` in seconds.
    pub max_age: HeaderValue,
    /// The CORS headers of an actual response, made once per answer by
    /// [`answering`](Self::answering) and set as one block: one per
    /// origin of `origins` (in its order), or one for `*` when any origin
    /// is allowed without credentials. Empty (any origin echoed with
    /// credentials): set one by one.
    pub answers: Vec<CorsAnswer>,
    /// The CORS headers palisade does not set on an actual response to an
    /// allowed origin (`Access-Control-Allow-Credentials` without
    /// credentials, `Access-Control-Expose-Headers` without any, and the
    /// preflight-only ones): an upstream's are removed, so the client sees
    /// exactly what the policy says.
    pub unset: NameSet,
}

/// One allowed origin's answer, made once: its headers as a block, and the
/// same block led by `Vary: Origin` for the usual response, one without a
/// `Vary` of its own (one block set instead of a header and a block).
#[derive(Debug, Clone)]
pub struct CorsAnswer {
    /// The CORS headers alone (a `Vary` is there to merge `Origin` into).
    alone: Arc<HeaderBlock>,
    /// `Vary: Origin`, then the CORS headers.
    varied: Arc<HeaderBlock>,
}

/// The CORS headers a response can carry: on a CORS-enabled route they are
/// palisade's to set, and an upstream's are removed from the answers to a
/// refused origin and to a request without `Origin` (which a shared cache
/// might replay to a cross-origin one).
pub const CORS_RESPONSE_HEADERS: [header::HeaderName; 7] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
    ALLOW_PRIVATE_NETWORK,
];

/// Private Network Access's answer (a preflight header, as the three
/// before it in [`CORS_RESPONSE_HEADERS`]).
const ALLOW_PRIVATE_NETWORK: header::HeaderName =
    header::HeaderName::from_static("access-control-allow-private-network");

/// [`CORS_RESPONSE_HEADERS`] as a set to remove.
static ALL_CORS: std::sync::LazyLock<NameSet> =
    std::sync::LazyLock::new(|| NameSet::new(CORS_RESPONSE_HEADERS.to_vec()));

/// A preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
/// Returns the method the browser wants to use.
pub fn preflight_method<B>(req: &Request<B>) -> Option<Method> {
    if req.method() != Method::OPTIONS || !req.headers().contains_key(header::ORIGIN) {
        return None;
    }
    let wanted = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(wanted.as_bytes()).ok()
}

impl CorsPolicy {
    /// Whether `origin` may read responses.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        self.allowed_at(origin).is_some()
    }

    /// The policy with its [`answers`](Self::answers) and
    /// [`unset`](Self::unset) made.
    pub fn answering(mut self) -> Self {
        // Preflight-only: palisade answers preflights, never an upstream.
        let mut unset = vec![
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::ACCESS_CONTROL_MAX_AGE,
            ALLOW_PRIVATE_NETWORK,
        ];
        if !self.credentials {
            unset.push(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
        }
        if self.expose_headers.is_none() {
            unset.push(header::ACCESS_CONTROL_EXPOSE_HEADERS);
        }
        self.unset = NameSet::new(unset);
        self.answers = if self.any_origin {
            if self.credentials {
                Vec::new()
            } else {
                self.answer_block(&HeaderValue::from_static("*"))
                    .into_iter()
                    .collect()
            }
        } else {
            self.origins
                .iter()
                .map(|origin| self.answer_block(origin))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default()
        };
        self
    }

    /// The headers an actual response gets whose
    /// `Access-Control-Allow-Origin` is `allow_origin`.
    fn answer_headers(
        &self,
        allow_origin: HeaderValue,
    ) -> SmallVec<[(HeaderName, HeaderValue); 3]> {
        let mut headers = SmallVec::new();
        headers.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin));
        if self.credentials {
            headers.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(expose) = &self.expose_headers {
            headers.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
        }
        headers
    }

    /// [`answer_headers`](Self::answer_headers) as blocks, with and
    /// without `Vary: Origin` first.
    fn answer_block(&self, allow_origin: &HeaderValue) -> Option<CorsAnswer> {
        let headers = self.answer_headers(allow_origin.clone());
        let mut varied = vec![(header::VARY, HeaderValue::from_static("Origin"))];
        varied.extend(headers.iter().cloned());
        Some(CorsAnswer {
            alone: HeaderBlock::new(&headers)?,
            varied: HeaderBlock::new(&varied)?,
        })
    }

    /// Where `origin`'s answer is in [`answers`](Self::answers) when it is
    /// allowed (`0`, the one answer, when any origin is; an answer there
    /// is not made when any origin is echoed with credentials); `None`
    /// when it is refused. One pass over the origins.
    fn allowed_at(&self, origin: &HeaderValue) -> Option<usize> {
        if self.any_origin {
            return Some(0);
        }
        self.origins.iter().position(|o| o == origin)
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Headers of the 204 answer to a preflight from `origin`.
    pub fn preflight_headers(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        edit_map(headers, |headers| {
            add_vary(
                headers,
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            );
        });
        if !self.allows(origin) {
            return;
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
    }

    /// CORS headers of an actual response to a request carrying `origin`:
    /// for an allowed origin, palisade's, and none of the upstream's it
    /// does not set; for a refused one, none at all.
    pub fn response_headers(&self, origin: &HeaderValue, headers: &mut ResponseHeaders<'_>) {
        let allowed = self.allowed_at(origin);
        let answer = allowed.and_then(|at| self.answers.get(at));
        // The usual response, without a `Vary` of its own: one block.
        if let Some(answer) = answer
            && !headers.contains_key(&header::VARY)
        {
            headers.remove_all(&self.unset);
            headers.insert_block(&answer.varied);
            return;
        }
        add_vary(headers, "Origin");
        if allowed.is_none() {
            // Never let the upstream's own CORS answer through for an origin
            // the policy refuses.
            headers.remove_all(&ALL_CORS);
            return;
        }
        headers.remove_all(&self.unset);
        match answer {
            Some(answer) => headers.insert_block(&answer.alone),
            None => {
                for (name, value) in self.answer_headers(self.allow_origin_value(origin)) {
                    headers.insert(name, value);
                }
            }
        }
    }

    /// The answer to a request without `Origin` on a CORS-enabled route:
    /// no CORS headers (an upstream's are removed), as no origin was
    /// allowed; a shared cache keeping it must not replay them to a
    /// cross-origin request.
    pub fn without_origin(&self, headers: &mut ResponseHeaders<'_>) {
        headers.remove_all(&ALL_CORS);
    }
}

/// Merges `names` into `Vary`, keeping what is there (`*` stays `*`).
/// `names` is written as a `Vary` value (`A, B`), with no name twice: it is
/// the value itself when the response has no `Vary` yet (no text built).
pub fn add_vary(headers: &mut ResponseHeaders<'_>, names: &'static str) {
    if !headers.contains_key(&header::VARY) {
        headers.insert(header::VARY, HeaderValue::from_static(names));
        return;
    }
    let existing: Vec<String> = headers
        .get_all(&header::VARY)
        .filter_map(visible_text)
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if existing.iter().any(|s| s == "*") {
        return;
    }
    let mut merged = existing.clone();
    for name in names.split(',').map(str::trim) {
        if !merged.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            merged.push(name.to_string());
        }
    }
    if merged.len() == existing.len() {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&merged.join(", ")) {
        headers.insert(header::VARY, value);
    }
}

/// A value as text when it is visible ASCII only (`HeaderValue::to_str`'s
/// rule).
fn visible_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (32..127).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(any: bool, credentials: bool) -> CorsPolicy {
        CorsPolicy {
            origins: vec![HeaderValue::from_static("https://app.example.com")],
            any_origin: any,
            credentials,
            allow_methods: HeaderValue::from_static("GET, POST"),
            allow_headers: HeaderValue::from_static("Authorization"),
            expose_headers: Some(HeaderValue::from_static("X-Request-Id")),
            max_age: HeaderValue::from_static("600"),
            answers: Vec::new(),
            unset: NameSet::default(),
        }
        .answering()
    }

    #[test]
    fn an_answer_made_once_is_what_setting_each_header_makes() {
        use crate::policy::response_headers::tests::written;
        use crate::policy::response_headers::{PendingHeaders, UpstreamLines};
        let with_vary = [
            ("Access-Control-Allow-Origin", "*"),
            ("Content-Type", "text/plain"),
            ("access-control-expose-headers", "X-Secret"),
            ("Vary", "Accept-Encoding"),
        ];
        let without_vary = &with_vary[..3];
        for (any, credentials) in [(false, true), (false, false), (true, false), (true, true)] {
            for (origin, upstream) in [
                ("https://app.example.com", &with_vary[..]),
                ("https://other.example", &with_vary[..]),
                ("https://app.example.com", without_vary),
                ("https://other.example", without_vary),
            ] {
                let origin = HeaderValue::from_static(origin);
                let answered = |made_once: bool| {
                    let mut policy = policy(any, credentials);
                    if !made_once {
                        policy.answers.clear();
                    }
                    let mut map = HeaderMap::new();
                    let mut pending =
                        PendingHeaders::new(Some(UpstreamLines::from_pairs(upstream)));
                    let mut headers = ResponseHeaders::new(&mut map, &mut pending);
                    policy.response_headers(&origin, &mut headers);
                    headers.finish();
                    let mut lines = written(&map, &pending);
                    lines.sort();
                    lines
                };
                let once = answered(true);
                assert_eq!(once, answered(false), "{any} {credentials} {origin:?}");
                // `Vary` says `Origin` once, after the upstream's names.
                let vary: Vec<_> = once.iter().filter(|l| l.starts_with("vary:")).collect();
                let expected = match upstream.len() {
                    3 => "vary: Origin",
                    _ => "vary: Accept-Encoding, Origin",
                };
                assert_eq!(vary, [expected], "{any} {credentials} {origin:?}");
            }
        }
        // Made for each allowed origin, or once for `*`; none to echo any
        // origin with credentials.
        assert_eq!(policy(false, true).answers.len(), 1);
        assert_eq!(policy(true, false).answers.len(), 1);
        assert!(policy(true, true).answers.is_empty());
    }

    #[test]
    fn allowed_origin_gets_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        let origin = HeaderValue::from_static("https://app.example.com");
        edit_map(&mut headers, |h| {
            policy(false, true).response_headers(&origin, h)
        });
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[header::VARY], "Accept-Encoding, Origin");
    }

    #[test]
    fn disallowed_origin_gets_none() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        let origin = HeaderValue::from_static("https://evil.example");
        edit_map(&mut headers, |h| {
            policy(false, true).response_headers(&origin, h)
        });
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(headers[header::VARY], "Origin");
    }

    #[test]
    fn wildcard_without_credentials() {
        let mut headers = HeaderMap::new();
        let origin = HeaderValue::from_static("https://any.example");
        edit_map(&mut headers, |h| {
            policy(true, false).response_headers(&origin, h)
        });
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let mut vary_star = HeaderMap::new();
        vary_star.insert(header::VARY, HeaderValue::from_static("*"));
        edit_map(&mut vary_star, |h| add_vary(h, "Origin"));
        assert_eq!(vary_star[header::VARY], "*");
    }

    /// The upstream's own lines (kept as bytes by palisade's exchange) are
    /// edited as a map would be: a refused origin's CORS lines go, and
    /// `Vary` is merged.
    #[test]
    fn upstream_lines_are_edited_like_a_map() {
        use super::super::response_headers::tests::written;
        use super::super::response_headers::{PendingHeaders, UpstreamLines};
        let mut pending = PendingHeaders::new(Some(UpstreamLines::from_pairs(&[
            ("Access-Control-Allow-Origin", "*"),
            ("Vary", "Accept-Encoding"),
            ("access-control-allow-credentials", "true"),
        ])));
        let mut own = HeaderMap::new();
        let origin = HeaderValue::from_static("https://evil.example");
        policy(false, true)
            .response_headers(&origin, &mut ResponseHeaders::new(&mut own, &mut pending));
        let out = written(&own, &pending);
        assert_eq!(out, ["vary: Accept-Encoding, Origin"]);
    }
}
