//! Where a token is looked for, in configured order: `header:NAME` (Bearer
//! scheme), `cookie:NAME`, and `supabase-cookie:NAME` — Supabase SSR's
//! session cookie: `base64-` + base64url (padded or not) of JSON, or plain
//! JSON in older versions, possibly split into `NAME.0`, `NAME.1`, ...
//! (`NAME` itself wins; a missing chunk makes the session invalid). Its
//! `access_token` is the token.

use base64::Engine;
use http::header::{self, HeaderMap, HeaderName};

use super::AuthFailure;

/// One configured token source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `header:NAME`.
    Header(HeaderName),
    /// `cookie:NAME`.
    Cookie(String),
    /// `supabase-cookie:NAME`.
    SupabaseCookie(String),
}

impl TokenSource {
    /// Parses `header:NAME`, `cookie:NAME`, `supabase-cookie:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("\"{name}\" is not a valid header name"));
        }
        if let Some(name) = text.strip_prefix("supabase-cookie:") {
            return Ok(Self::SupabaseCookie(name.to_string()));
        }
        if let Some(name) = text.strip_prefix("cookie:") {
            return Ok(Self::Cookie(name.to_string()));
        }
        Err(format!("unknown token source \"{text}\""))
    }

    /// The token this source holds: `Ok(None)` when it holds nothing,
    /// `Err(Malformed)` when it holds something unreadable.
    pub fn extract(&self, headers: &HeaderMap) -> Result<Option<String>, AuthFailure> {
        match self {
            Self::Header(name) => {
                let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
                    return Ok(None);
                };
                let value = value.trim();
                match value.split_once(' ') {
                    Some((scheme, token))
                        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
                    {
                        Ok(Some(token.trim().to_string()))
                    }
                    // Another scheme (Basic, ...) on Authorization counts as no token.
                    _ if name == header::AUTHORIZATION => Ok(None),
                    _ if value.is_empty() => Ok(None),
                    _ => Ok(Some(value.to_string())),
                }
            }
            Self::Cookie(name) => Ok(cookie(headers, name)
                .filter(|v| !v.is_empty())
                .map(str::to_string)),
            Self::SupabaseCookie(name) => supabase_session(headers, name),
        }
    }
}

/// The value of cookie `name` across all `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn supabase_session(headers: &HeaderMap, name: &str) -> Result<Option<String>, AuthFailure> {
    let raw = match cookie(headers, name) {
        Some(whole) => whole.to_string(),
        None => {
            let mut joined = String::new();
            let mut chunks = 0;
            while let Some(chunk) = cookie(headers, &format!("{name}.{chunks}")) {
                joined.push_str(chunk);
                chunks += 1;
            }
            if chunks == 0 {
                // A later chunk without NAME.0 is a broken session, not an absent one.
                let prefix = format!("{name}.");
                let orphan = headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .any(|pair| pair.trim().starts_with(&prefix));
                return if orphan {
                    Err(AuthFailure::Malformed)
                } else {
                    Ok(None)
                };
            }
            // A gap (NAME.0, NAME.2 without NAME.1) makes the session invalid.
            if cookie(headers, &format!("{name}.{}", chunks + 1)).is_some() {
                return Err(AuthFailure::Malformed);
            }
            joined
        }
    };
    if raw.is_empty() {
        return Ok(None);
    }
    let json_text = match raw.strip_prefix("base64-") {
        Some(encoded) => {
            let trimmed = encoded.trim_end_matches('=');
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
                .map_err(|_| AuthFailure::Malformed)?;
            String::from_utf8(bytes).map_err(|_| AuthFailure::Malformed)?
        }
        None => percent_encoding::percent_decode_str(&raw)
            .decode_utf8()
            .map_err(|_| AuthFailure::Malformed)?
            .into_owned(),
    };
    let session: serde_json::Value =
        serde_json::from_str(&json_text).map_err(|_| AuthFailure::Malformed)?;
    let token = match &session {
        serde_json::Value::Object(map) => map.get("access_token").and_then(|t| t.as_str()),
        // Older helpers stored [access_token, refresh_token, ...].
        serde_json::Value::Array(items) => items.first().and_then(|t| t.as_str()),
        _ => None,
    };
    token
        .filter(|t| !t.is_empty())
        .map(|t| Some(t.to_string()))
        .ok_or(AuthFailure::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn supabase(pairs: &[(&str, &str)]) -> Result<Option<String>, AuthFailure> {
        TokenSource::parse("supabase-cookie:sb-ref-auth-token")
            .unwrap()
            .extract(&headers(pairs))
    }

    #[test]
    fn bearer_header() {
        let source = TokenSource::parse("header:Authorization").unwrap();
        assert_eq!(
            source.extract(&headers(&[("authorization", "Bearer abc")])),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            source.extract(&headers(&[("authorization", "bearer  abc ")])),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            source.extract(&headers(&[("authorization", "Basic dXNlcg==")])),
            Ok(None)
        );
        assert_eq!(
            source.extract(&headers(&[("authorization", "Bearer")])),
            Ok(None)
        );
        assert_eq!(source.extract(&headers(&[])), Ok(None));
        let custom = TokenSource::parse("header:X-Token").unwrap();
        assert_eq!(
            custom.extract(&headers(&[("x-token", "raw")])),
            Ok(Some("raw".into()))
        );
    }

    #[test]
    fn plain_cookie() {
        let source = TokenSource::parse("cookie:sb-access-token").unwrap();
        let map = headers(&[("cookie", "a=1; sb-access-token=tok; b=2")]);
        assert_eq!(source.extract(&map), Ok(Some("tok".into())));
        assert_eq!(source.extract(&headers(&[("cookie", "a=1")])), Ok(None));
    }

    fn b64(json: &str, pad: bool) -> String {
        let engine = if pad {
            base64::engine::general_purpose::URL_SAFE
        } else {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
        };
        format!("base64-{}", engine.encode(json))
    }

    #[test]
    fn supabase_session_forms() {
        let json = r#"{"access_token":"eyJ.tok.sig","refresh_token":"r"}"#;
        let cookie = format!("sb-ref-auth-token={}", b64(json, false));
        assert_eq!(
            supabase(&[("cookie", &cookie)]),
            Ok(Some("eyJ.tok.sig".into()))
        );
        let padded = format!("sb-ref-auth-token={}", b64(json, true));
        assert_eq!(
            supabase(&[("cookie", &padded)]),
            Ok(Some("eyJ.tok.sig".into()))
        );
        let plain = "sb-ref-auth-token=%7B%22access_token%22%3A%22old.tok.sig%22%7D";
        assert_eq!(
            supabase(&[("cookie", plain)]),
            Ok(Some("old.tok.sig".into()))
        );
        let array = "sb-ref-auth-token=%5B%22arr.tok.sig%22%2C%22r%22%5D";
        assert_eq!(
            supabase(&[("cookie", array)]),
            Ok(Some("arr.tok.sig".into()))
        );
        assert_eq!(supabase(&[("cookie", "other=1")]), Ok(None));
        assert_eq!(
            supabase(&[("cookie", "sb-ref-auth-token=base64-!!!")]),
            Err(AuthFailure::Malformed)
        );
    }

    #[test]
    fn supabase_chunks() {
        let encoded = b64(r#"{"access_token":"chunked.tok.sig"}"#, false);
        let (a, b) = encoded.split_at(encoded.len() / 2);
        let cookies = format!("sb-ref-auth-token.0={a}; sb-ref-auth-token.1={b}");
        assert_eq!(
            supabase(&[("cookie", &cookies)]),
            Ok(Some("chunked.tok.sig".into()))
        );
        // Chunks in separate Cookie headers (HTTP/2 splits them).
        let split = [
            ("cookie", format!("sb-ref-auth-token.1={b}")),
            ("cookie", format!("sb-ref-auth-token.0={a}")),
        ];
        let pairs: Vec<(&str, &str)> = split.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(supabase(&pairs), Ok(Some("chunked.tok.sig".into())));
        // A missing chunk invalidates the session.
        let gap = format!("sb-ref-auth-token.0={a}; sb-ref-auth-token.2={b}");
        assert_eq!(supabase(&[("cookie", &gap)]), Err(AuthFailure::Malformed));
        let orphan = format!("sb-ref-auth-token.1={b}");
        assert_eq!(
            supabase(&[("cookie", &orphan)]),
            Err(AuthFailure::Malformed)
        );
        // NAME itself wins over chunks.
        let whole = b64(r#"{"access_token":"whole.tok.sig"}"#, false);
        let both = format!("sb-ref-auth-token.0={a}; sb-ref-auth-token={whole}");
        assert_eq!(
            supabase(&[("cookie", &both)]),
            Ok(Some("whole.tok.sig".into()))
        );
    }
}
