//! Hostile-input properties, one function per target, shared by the
//! cargo-fuzz targets in `fuzz/` (built with `--cfg fuzzing`, nightly) and
//! by the property tests below, which run the same checks on stable inside
//! `cargo test` with bounded case counts. Each function panics when its
//! property breaks, and must never panic otherwise.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Env, load_str};
use crate::policy::auth::jwt::{JwtSettings, JwtVerifier};
use crate::policy::auth::sources::{TokenSource, token_in};
use crate::policy::forward::{StrippedHeaders, remove_client_claimed};
use crate::policy::head::clean_client_headers;
use crate::policy::headers::strip_fixed_hop_by_hop;
use crate::policy::sanitize::{canonicalize, fold_lookalikes};
use crate::route::Pattern;

/// Patterns the path property matches every accepted path against.
const PATTERNS: [&str; 6] = [
    "/",
    "/health",
    "/api/**",
    "/api/restaurants/{restaurant_id}/**",
    "/users/*/orders",
    "/**",
];

/// Path canonicalisation and route matching: no panic; the canonical form
/// is a fixed point; nothing ambiguous is ever accepted (dot segments, an
/// encoded `/` `\` `%`, NUL or controls, `;`, raw non-ASCII, bad escapes);
/// the forwarded URI carries the canonical bytes unchanged; a route match
/// does not depend on ASCII case.
pub fn path(input: &str) {
    let Ok(canonical) = canonicalize(input) else {
        return;
    };
    assert_eq!(
        canonicalize(&canonical).as_deref(),
        Ok(canonical.as_str()),
        "not idempotent"
    );
    let bytes = canonical.as_bytes();
    assert_eq!(bytes.first(), Some(&b'/'));
    assert!(!canonical.contains("//"), "{canonical}");
    assert!(
        bytes
            .iter()
            .all(|b| b.is_ascii_graphic() && *b != b'\\' && *b != b';'),
        "{canonical:?}"
    );
    for segment in canonical.split('/') {
        assert!(segment != "." && segment != "..", "{canonical}");
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = &bytes[i + 1..i + 3];
            assert!(
                hex.iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
                "{canonical}"
            );
            let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16);
            let Ok(value) = value else {
                panic!("bad escape in {canonical}")
            };
            assert!(
                !(value.is_ascii_alphanumeric() || b"-._~/\\%;".contains(&value) || value < 0x20),
                "{canonical}: %{value:02X} should be decoded or refused"
            );
            i += 3;
        } else {
            i += 1;
        }
    }
    if let Some(Ok(folded)) = fold_lookalikes(&canonical) {
        assert_eq!(canonicalize(&folded).as_deref(), Ok(folded.as_str()));
    }
    let forwarded = http::uri::PathAndQuery::try_from(canonical.as_str());
    assert_eq!(
        forwarded.as_ref().map(|pq| pq.path()).ok(),
        Some(canonical.as_str()),
        "the forwarded path differs from the canonical one"
    );
    let flipped: String = canonical
        .chars()
        .enumerate()
        .map(|(n, c)| {
            if n % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    for pattern in PATTERNS {
        let Ok(pattern) = Pattern::parse(pattern) else {
            panic!("test pattern {pattern} does not parse")
        };
        assert_eq!(
            pattern.matches(&canonical, &mut Vec::new()),
            pattern.matches(&flipped, &mut Vec::new()),
            "{pattern} on {canonical} vs {flipped}"
        );
    }
}

/// Config parsing and compilation: any text is a config or an error, never
/// a panic.
pub fn config(text: &str) {
    let env = Env::from_pairs([("JWT_SECRET", "s3cret-for-fuzzing-0123456789")]);
    let _ = load_str(text, "fuzz.toml", &env);
}

/// The header lines that are valid names and values, in order.
fn header_map(lines: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// Identity headers palisade sets in the head property.
const IDENTITY: [&str; 2] = ["x-user-id", "x-tenant-id"];

/// The request head as palisade forwards it: whatever header lines a client
/// sends (identity headers in any spelling, `Connection` naming anything,
/// cookie lines, forwarding headers), after the cleanup stages and the
/// verified identity being set, the upstream sees exactly the identity
/// palisade set, no client-claimed forwarding header, one `Cookie` line,
/// and no hop-by-hop header.
pub fn head(lines: &[(String, Vec<u8>)]) {
    let mut headers = header_map(lines);
    clean_client_headers(&mut headers, |name| name == "x-request-id");
    remove_client_claimed(&mut headers, false);
    let mut stripped = StrippedHeaders::default();
    for name in IDENTITY {
        stripped.add(name);
    }
    stripped.strip(&mut headers);
    for name in headers.keys() {
        assert!(
            !stripped.contains(name.as_str()),
            "{name} survived stripping"
        );
    }
    for name in IDENTITY {
        headers.insert(name, HeaderValue::from_static("verified"));
    }
    strip_fixed_hop_by_hop(&mut headers);
    for name in IDENTITY {
        let values: Vec<_> = headers.get_all(name).iter().collect();
        assert_eq!(values, ["verified"], "{name}");
    }
    assert!(headers.get_all(http::header::COOKIE).iter().count() <= 1);
    for gone in ["connection", "upgrade", "forwarded", "x-real-ip", "te"] {
        assert!(!headers.contains_key(gone), "{gone} reached the upstream");
    }
    for value in headers.values() {
        assert!(!value.as_bytes().iter().any(|b| *b == b'\r' || *b == b'\n'));
    }
}

/// Token sources the token property reads, one of each kind.
const TOKEN_SOURCES: [&str; 4] = [
    "header:Authorization",
    "header:X-Api-Token",
    "cookie:sb-access-token",
    "supabase-cookie:sb-ref-auth-token",
];

/// Token extraction (bearer headers, cookies, Supabase session cookies and
/// their chunks), after the pipeline joined the `Cookie` lines: no panic; a
/// token found is non-empty; the same lines give the same answer.
pub fn tokens(lines: &[(String, Vec<u8>)]) {
    let sources: Vec<TokenSource> = TOKEN_SOURCES
        .iter()
        .filter_map(|s| TokenSource::parse(s).ok())
        .collect();
    let mut headers = header_map(lines);
    clean_client_headers(&mut headers, |name| name == "x-request-id");
    let found = token_in(&sources, &headers);
    if let Ok(Some(token)) = &found {
        assert!(!token.is_empty());
    }
    assert_eq!(found, token_in(&sources, &headers), "not deterministic");
}

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> =
        tokio::runtime::Builder::new_current_thread().build().ok();
    static VERIFIER: JwtVerifier = JwtVerifier::new(JwtSettings {
        hs_secret: Some(b"fuzzing-secret-0123456789abcdef".to_vec()),
        algorithms: vec![jsonwebtoken::Algorithm::HS256],
        jwks: None,
        issuer: Some("https://issuer.example".into()),
        audiences: vec!["authenticated".into()],
        leeway: std::time::Duration::from_secs(30),
        require: vec!["exp".into(), "sub".into()],
        sources: Vec::new(),
        cache_ttl: std::time::Duration::from_secs(60),
    });
}

/// JWT header parsing and verification: any text is refused (the input
/// cannot carry a valid HMAC), never a panic, whatever its header says
/// (`alg: none`, `crit`, odd `kid`s, padding, huge numbers).
pub fn jwt(token: &str) {
    RUNTIME.with(|runtime| {
        let Some(runtime) = runtime else { return };
        VERIFIER.with(|verifier| {
            let verdict = runtime.block_on(verifier.verify(token));
            assert!(verdict.is_err(), "an unsigned token was accepted: {token}");
        });
    });
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Path-like strings: mostly the characters that matter.
    fn path_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just(";".to_string()),
            Just("\\".to_string()),
            Just("%".to_string()),
            "%[0-9a-fA-F]{2}",
            "%(2[eEfF5]|5[cC]|3[bB]|00|[cC]0%[aA][eE])",
            "[a-zA-Z0-9_~-]{1,6}",
            "[\\x00-\\x7f]",
            "[^\\x00-\\x7f]",
            Just("api".to_string()),
            Just("restaurants".to_string()),
            // Lookalike folding: suffixes, trailing dots and spaces, and
            // characters whose case forms differ in UTF-8 length.
            Just("::$".to_string()),
            Just("%20".to_string()),
            Just("%C4%B0".to_string()),
            Just("%C3%A9".to_string()),
            Just("%EF%BC%8E".to_string()),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|parts| {
            let mut text = String::from("/");
            text.extend(parts);
            text
        })
    }

    proptest! {
        #![proptest_config(config(4000))]
        #[test]
        fn path_property(input in path_text()) {
            super::path(&input);
        }

        #[test]
        fn path_property_any_text(input in any::<String>()) {
            super::path(&input);
        }
    }

    /// The shipped policy with one value replaced by arbitrary text.
    fn mutated_policy() -> impl Strategy<Value = String> {
        let shipped = include_str!("../policy.toml");
        let values: Vec<(usize, usize)> = shipped
            .match_indices(" = ")
            .map(|(i, _)| {
                let start = i + 3;
                let end = shipped[start..]
                    .find('\n')
                    .map_or(shipped.len(), |n| start + n);
                (start, end)
            })
            .collect();
        let replacement = prop_oneof![
            any::<String>(),
            "\"[0-9]{0,4}(ms|s|m|h|KiB|MiB|B|x)?\"",
            "\\[[^\\]]{0,20}\\]",
            "\\{[^}]{0,20}\\}",
            Just("\"${UNSET_VAR}\"".to_string()),
            Just("-1".to_string()),
            Just("18446744073709551616".to_string()),
        ];
        (0..values.len(), replacement).prop_map(move |(n, text)| {
            let (start, end) = values[n];
            format!("{}{}{}", &shipped[..start], text, &shipped[end..])
        })
    }

    proptest! {
        #![proptest_config(config(1500))]
        #[test]
        fn config_property_mutated_policy(text in mutated_policy()) {
            super::config(&text);
        }

        #[test]
        fn config_property_any_text(text in "[\\[\\]a-z_.=\" \\n{},0-9$:-]{0,200}") {
            super::config(&text);
        }
    }

    fn header_line() -> impl Strategy<Value = (String, Vec<u8>)> {
        let name = prop_oneof![
            Just("X-User-Id".to_string()),
            Just("x_user_id".to_string()),
            Just("X_TENANT_ID".to_string()),
            Just("x-tenant-id".to_string()),
            Just("Connection".to_string()),
            Just("Cookie".to_string()),
            Just("Forwarded".to_string()),
            Just("X-Real-IP".to_string()),
            Just("Upgrade".to_string()),
            Just("TE".to_string()),
            "[A-Za-z_-]{1,12}",
        ];
        let value = prop_oneof![
            Just(b"x-user-id, X-Tenant-Id, close".to_vec()),
            Just(b"keep-alive, upgrade".to_vec()),
            prop::collection::vec(any::<u8>(), 0..20),
            "[a-zA-Z0-9=;, _-]{0,20}".prop_map(String::into_bytes),
        ];
        (name, value)
    }

    fn token_line() -> impl Strategy<Value = (String, Vec<u8>)> {
        let name = prop_oneof![
            Just("Authorization".to_string()),
            Just("X-Api-Token".to_string()),
            Just("x_api_token".to_string()),
            Just("Cookie".to_string()),
        ];
        let cookie_name = prop_oneof![
            Just("sb-access-token".to_string()),
            Just(" sb-access-token ".to_string()),
            Just("sb-ref-auth-token".to_string()),
            "sb-ref-auth-token\\.[0-9]{1,3}",
            "[a-z%-]{1,8}",
        ];
        let cookie_value = prop_oneof![
            "[A-Za-z0-9._-]{0,12}",
            "\"[^\"]{0,8}\"?",
            "base64-[A-Za-z0-9_=-]{0,40}",
            Just("base64-eyJhY2Nlc3NfdG9rZW4iOiJhLmIuYyJ9".to_string()),
            Just("{\"access_token\":\"a.b.c\"}".to_string()),
        ];
        let cookie = (
            prop::collection::vec((cookie_name, cookie_value), 1..6),
            any::<bool>(),
        )
            .prop_map(|(pairs, semicolons)| {
                pairs
                    .into_iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join(if semicolons { "; " } else { "," })
                    .into_bytes()
            });
        let value = prop_oneof![
            cookie,
            "(Bearer|bearer|Basic) ?[A-Za-z0-9._-]{0,12}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..24),
        ];
        (name, value)
    }

    /// The jwt property is not vacuous: the same verifier accepts a token
    /// signed with its secret.
    #[test]
    fn jwt_property_verifier_accepts_a_signed_token() {
        let claims = serde_json::json!({
            "sub": "u", "exp": 4_000_000_000u64,
            "iss": "https://issuer.example", "aud": "authenticated",
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"fuzzing-secret-0123456789abcdef"),
        )
        .unwrap();
        super::RUNTIME.with(|runtime| {
            let runtime = runtime.as_ref().unwrap();
            super::VERIFIER.with(|verifier| {
                assert!(runtime.block_on(verifier.verify(&token)).is_ok());
            });
        });
    }

    fn jwt_text() -> impl Strategy<Value = String> {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = prop_oneof![
            Just(r#"{"alg":"none"}"#.to_string()),
            Just(r#"{"alg":"HS256","crit":["exp"]}"#.to_string()),
            Just(r#"{"alg":"HS256","kid":"../../etc/passwd"}"#.to_string()),
            Just(r#"{"alg":"RS256"}"#.to_string()),
            Just(r#"{"alg":"HS256"}"#.to_string()),
            "\\{[^}]{0,30}\\}",
        ];
        let payload = prop_oneof![
            Just(
                r#"{"sub":"u","exp":1e300,"iss":"https://issuer.example","aud":"authenticated"}"#
                    .to_string()
            ),
            Just(r#"{"sub":"","exp":9999999999.5}"#.to_string()),
            "\\{[^}]{0,30}\\}",
        ];
        let signature = "[A-Za-z0-9_-]{0,43}";
        (header, payload, signature)
            .prop_map(move |(h, p, s)| format!("{}.{}.{s}", engine.encode(h), engine.encode(p)))
    }

    proptest! {
        #![proptest_config(config(3000))]
        #[test]
        fn token_property(lines in prop::collection::vec(token_line(), 0..8)) {
            super::tokens(&lines);
        }

        #[test]
        fn jwt_property(token in jwt_text()) {
            super::jwt(&token);
        }

        #[test]
        fn jwt_property_any_text(token in "[A-Za-z0-9._=-]{0,80}") {
            super::jwt(&token);
        }

        #[test]
        fn head_property(lines in prop::collection::vec(header_line(), 0..16)) {
            super::head(&lines);
        }
    }
}
