//! The cases file of `palisade test` (SPEC §6.5): `[[case]]` tables,
//! parsed strictly (unknown keys are errors, as in `policy.toml`) into
//! ready-to-send requests and their expectations. Every error is
//! `PATH:LINE:COL: KEY: message`, like a policy error.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use super::harness::Probe;
use crate::config::expand::expand;
use crate::config::{ConfigError, Env};

/// Signs a token's claims (HS256 with the policy's secret).
pub type Signer<'a> = &'a dyn Fn(Map<String, Value>) -> Result<String, String>;

/// One case, ready to run.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the case checks, as printed.
    pub name: String,
    /// The request (token already signed into `Authorization`).
    pub probe: Probe,
    /// How many times it is sent; the expectations apply to the last.
    pub repeat: u32,
    /// What must be true of the last response.
    pub expect: Expect,
}

/// The expectations of a case; `None` / empty = not checked.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The response status.
    pub status: Option<StatusCode>,
    /// The route that took the request.
    pub route: Option<String>,
    /// The rejection or auth-failure reason.
    pub reason: Option<String>,
    /// Whether the stub upstream was reached.
    pub upstream: Option<bool>,
    /// Headers the upstream received (`""` = must be absent).
    pub upstream_headers: Vec<(HeaderName, String)>,
    /// Response headers (`""` = must be absent).
    pub headers: Vec<(HeaderName, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCases {
    #[serde(default)]
    case: Vec<FileCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCase {
    name: String,
    method: Option<Spanned<String>>,
    path: Spanned<String>,
    token: Option<Spanned<toml::Table>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    body: Option<String>,
    repeat: Option<Spanned<i64>>,
    expect: FileExpect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileExpect {
    status: Option<Spanned<i64>>,
    route: Option<String>,
    reason: Option<String>,
    upstream: Option<bool>,
    #[serde(default)]
    upstream_headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
}

/// Where errors point: the file and its text.
struct Source<'a> {
    path: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: std::ops::Range<usize>, key: String, message: String) -> ConfigError {
        ConfigError::at_span(self.path, self.text, Some(span), Some(key), message)
    }
}

/// Parses a cases file; `${VAR}` in header values is expanded with `env`.
pub fn parse(
    text: &str,
    path: &str,
    env: &Env,
    sign: Signer<'_>,
) -> Result<Vec<Case>, ConfigError> {
    let file: FileCases = toml::from_str(text).map_err(|e| {
        ConfigError::at_span(path, text, e.span(), None, e.message().trim().to_string())
    })?;
    if file.case.is_empty() {
        return Err(ConfigError::plain(
            path,
            "no [[case]] entries: write at least one (see SPEC §6.5)",
        ));
    }
    let source = Source { path, text };
    file.case
        .into_iter()
        .enumerate()
        .map(|(i, case)| compile_case(&source, i, case, env, sign))
        .collect()
}

fn compile_case(
    src: &Source<'_>,
    i: usize,
    case: FileCase,
    env: &Env,
    sign: Signer<'_>,
) -> Result<Case, ConfigError> {
    let key = |k: &str| format!("case[{i}].{k}");
    let method = match &case.method {
        None => Method::GET,
        Some(m) => Method::from_bytes(m.get_ref().as_bytes())
            .map_err(|_| src.error(m.span(), key("method"), "not an HTTP method".into()))?,
    };
    let target = case.path.get_ref().clone();
    if !target.starts_with('/') && !target.contains("://") {
        return Err(src.error(
            case.path.span(),
            key("path"),
            format!("{target:?}: write a path starting with `/`"),
        ));
    }
    // Values were checked by `headers`.
    let mut headers: Vec<(HeaderName, HeaderValue)> =
        headers(src, &key("headers"), &case.headers, env)?
            .into_iter()
            .filter_map(|(name, value)| Some((name, HeaderValue::from_str(&value).ok()?)))
            .collect();
    if let Some(token) = &case.token {
        let claims = serde_json::to_value(token.get_ref())
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let signed = sign(claims).map_err(|e| src.error(token.span(), key("token"), e))?;
        let value = HeaderValue::from_str(&format!("Bearer {signed}"))
            .map_err(|e| src.error(token.span(), key("token"), e.to_string()))?;
        headers.push((http::header::AUTHORIZATION, value));
    }
    let repeat = match &case.repeat {
        None => 1,
        Some(r) => u32::try_from(*r.get_ref())
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| src.error(r.span(), key("repeat"), "write 1 to 100000".into()))?,
    };
    Ok(Case {
        name: case.name,
        probe: Probe {
            method,
            target,
            headers,
            body: Bytes::from(case.body.unwrap_or_default()),
        },
        repeat,
        expect: expect(src, &key("expect"), case.expect, env)?,
    })
}

fn expect(src: &Source<'_>, key: &str, e: FileExpect, env: &Env) -> Result<Expect, ConfigError> {
    let status = match &e.status {
        None => None,
        Some(s) => Some(
            u16::try_from(*s.get_ref())
                .ok()
                .and_then(|n| StatusCode::from_u16(n).ok())
                .ok_or_else(|| {
                    src.error(
                        s.span(),
                        format!("{key}.status"),
                        "write a status 100-999".into(),
                    )
                })?,
        ),
    };
    Ok(Expect {
        status,
        route: e.route,
        reason: e.reason,
        upstream: e.upstream,
        upstream_headers: headers(
            src,
            &format!("{key}.upstream_headers"),
            &e.upstream_headers,
            env,
        )?,
        headers: headers(src, &format!("{key}.headers"), &e.headers, env)?,
    })
}

/// Header names checked, values `${VAR}`-expanded.
fn headers(
    src: &Source<'_>,
    key: &str,
    table: &BTreeMap<String, Spanned<String>>,
    env: &Env,
) -> Result<Vec<(HeaderName, String)>, ConfigError> {
    table
        .iter()
        .map(|(name, value)| {
            let at = format!("{key}.\"{name}\"");
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| src.error(value.span(), at.clone(), "not a header name".into()))?;
            let expanded =
                expand(value.get_ref(), env).map_err(|e| src.error(value.span(), at.clone(), e))?;
            if HeaderValue::from_str(&expanded).is_err() {
                return Err(src.error(value.span(), at, "not a valid header value".into()));
            }
            Ok((header, expanded))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(claims: Map<String, Value>) -> Result<String, String> {
        Ok(format!("signed-{}", claims.len()))
    }

    #[test]
    fn parses_a_case_with_defaults_and_expansion() {
        let text = r#"
[[case]]
name = "one"
path = "/a"
token = { sub = "u1" }
headers = { "X-Key" = "${KEY}" }
expect = { status = 403, route = "r", headers = { "Retry-After" = "" } }
"#;
        let env = Env::from_pairs([("KEY", "k1")]);
        let cases = parse(text, "c.toml", &env, &sign).unwrap();
        let case = &cases[0];
        assert_eq!(case.probe.method, Method::GET);
        assert_eq!(case.repeat, 1);
        assert_eq!(case.probe.headers[0].1, "k1");
        assert_eq!(case.probe.headers[1].1, "Bearer signed-1");
        assert_eq!(case.expect.status, Some(StatusCode::FORBIDDEN));
        assert_eq!(case.expect.headers[0].1, "");
    }

    #[test]
    fn errors_carry_a_position_and_a_key() {
        let text = "[[case]]\nname = \"x\"\npath = \"/a\"\nrepeat = 0\nexpect = {}\n";
        let error = parse(text, "c.toml", &Env::default(), &sign).unwrap_err();
        assert_eq!(
            error.to_string(),
            "c.toml:4:10: case[0].repeat: write 1 to 100000"
        );
        let typo = "[[case]]\nname = \"x\"\npath = \"/a\"\nexpect = { stauts = 200 }\n";
        let error = parse(typo, "c.toml", &Env::default(), &sign).unwrap_err();
        assert!(error.to_string().starts_with("c.toml:4:"), "{error}");
        assert!(error.to_string().contains("stauts"), "{error}");
        let unset =
            "[[case]]\nname = \"x\"\npath = \"/a\"\nheaders = { A = \"${NOPE}\" }\nexpect = {}\n";
        let error = parse(unset, "c.toml", &Env::default(), &sign).unwrap_err();
        assert!(error.to_string().contains("NOPE"), "{error}");
    }
}
