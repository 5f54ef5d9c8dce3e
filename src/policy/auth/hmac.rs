//! Signed webhooks (`[auth.hmac.NAME]`, SPEC §6.1): an HMAC over the exact
//! body bytes received (held by the pipeline up to the route's `max_body`),
//! with the timestamp and delivery id a provider signs along with it. One
//! verifier per configured name; the presets (`github`, `stripe`, `slack`,
//! `standard-webhooks`) are only default settings, compiled in
//! `config::compile::hmac`. Every secret is tried against every signature
//! the header carries, compared in constant time.

pub mod presets;
pub mod replay;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::AuthFailure;

/// The hash under the HMAC (`algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// How a signature is written in its header (`encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lower- or upper-case hex.
    Hex,
    /// Standard base64 (padding optional).
    Base64,
}

/// How the signature header carries its value(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The whole value after `prefix` (github, slack, the custom form).
    Single,
    /// `t=<ts>,v1=<sig>[,v1=<sig>...]` (stripe): the timestamp is in the
    /// header, and every item starting with `prefix` is a candidate.
    Stripe,
    /// Space-separated items (standard-webhooks: `v1,<sig> v1,<sig>`):
    /// every item starting with `prefix` is a candidate.
    List,
}

/// One piece of the signed string (`signed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// `{body}`: the raw body bytes.
    Body,
    /// `{timestamp}`: the timestamp as sent.
    Timestamp,
    /// `{id}`: the delivery id as sent.
    Id,
}

/// Parses a `signed` template: `{body}`, `{timestamp}`, `{id}` and literal
/// text; any other `{...}` is an error.
pub fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed \"{{\" in \"{template}\""))?;
        pieces.push(match &rest[open + 1..open + close] {
            "body" => Piece::Body,
            "timestamp" => Piece::Timestamp,
            "id" => Piece::Id,
            other => {
                return Err(format!(
                    "unknown placeholder \"{{{other}}}\"; accepted: {{body}}, {{timestamp}}, {{id}}"
                ));
            }
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

/// A verifier's settings, after the preset's defaults and the overrides.
#[derive(Clone)]
pub struct HmacSettings {
    /// How the signature header is laid out.
    pub layout: Layout,
    /// The header carrying the signature(s).
    pub header: HeaderName,
    /// The hash.
    pub algorithm: Algorithm,
    /// How signatures are written.
    pub encoding: Encoding,
    /// Removed from each signature before decoding (`sha256=`, `v0=`, `v1,`).
    pub prefix: String,
    /// Where the timestamp (unix seconds) is, unless the layout carries it.
    pub timestamp_header: Option<HeaderName>,
    /// Where the delivery id is.
    pub id_header: Option<HeaderName>,
    /// The string signed.
    pub signed: Vec<Piece>,
    /// Largest accepted `|now - timestamp|`.
    pub tolerance: Option<Duration>,
    /// Refuse a signature already accepted within the tolerance.
    pub replay: bool,
    /// The keys (several during rotation); never printed.
    pub secrets: Vec<Vec<u8>>,
}

/// One compiled `[auth.hmac.NAME]`.
pub struct HmacVerifier {
    /// The name (`hmac:NAME`).
    pub name: Arc<str>,
    settings: HmacSettings,
}

impl HmacVerifier {
    /// The headers this verifier reads: signature, timestamp, id.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        std::iter::once(&self.settings.header)
            .chain(self.settings.timestamp_header.as_ref())
            .chain(self.settings.id_header.as_ref())
    }
}

impl std::fmt::Debug for HmacVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HmacVerifier({}, {}, <{} redacted secrets>)",
            self.name,
            self.settings.header,
            self.settings.secrets.len()
        )
    }
}

/// An accepted signature, as replay protection remembers it: the MAC that
/// matched, and how long the timestamp keeps it acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The matching MAC (raw bytes).
    pub mac: Vec<u8>,
    /// How long it must be remembered.
    pub ttl: Duration,
}

/// What the headers say: the signatures and what is signed with the body.
struct Presented<'a> {
    candidates: Vec<Vec<u8>>,
    timestamp: Option<&'a str>,
    id: Option<&'a str>,
}

impl HmacVerifier {
    /// A verifier named `name`.
    pub fn new(name: &str, settings: HmacSettings) -> Self {
        Self {
            name: name.into(),
            settings,
        }
    }

    /// Whether accepted signatures must be remembered (`replay = true`).
    pub fn remembers(&self) -> bool {
        self.settings.replay
    }

    /// Verifies the request: `Ok(Some)` when accepted and it must be
    /// remembered against replay, `Ok(None)` when accepted otherwise.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Option<Accepted>, AuthFailure> {
        let presented = self.presented(headers)?;
        let mac = self
            .matching_mac(&presented, body)
            .ok_or(AuthFailure::BadSignature)?;
        let ttl = self.check_time(presented.timestamp, now)?;
        Ok(self.settings.replay.then_some(Accepted { mac, ttl }))
    }

    /// Reads the signature header(s): `Missing` when a header is absent,
    /// `BadSignature` when one is unreadable.
    fn presented<'a>(&self, headers: &'a HeaderMap) -> Result<Presented<'a>, AuthFailure> {
        let s = &self.settings;
        let value = single(headers, &s.header)?.ok_or(AuthFailure::Missing)?;
        let mut timestamp = match &s.timestamp_header {
            Some(name) => Some(single(headers, name)?.ok_or(AuthFailure::Missing)?),
            None => None,
        };
        let id = match &s.id_header {
            Some(name) => Some(single(headers, name)?.ok_or(AuthFailure::Missing)?),
            None => None,
        };
        let items: Vec<&str> = match s.layout {
            Layout::Single => vec![value.trim()],
            Layout::List => value.split_whitespace().collect(),
            Layout::Stripe => {
                let items: Vec<&str> = value.split(',').map(str::trim).collect();
                if let Some(t) = items.iter().find_map(|i| i.strip_prefix("t=")) {
                    timestamp.get_or_insert(t);
                }
                items
            }
        };
        let candidates: Vec<Vec<u8>> = items
            .iter()
            .filter_map(|item| item.strip_prefix(s.prefix.as_str()))
            .filter_map(|text| decode(s.encoding, text))
            .collect();
        if candidates.is_empty() {
            return Err(AuthFailure::BadSignature);
        }
        let needs_timestamp = s.signed.contains(&Piece::Timestamp) || s.tolerance.is_some();
        if needs_timestamp && timestamp.is_none() {
            return Err(AuthFailure::Missing);
        }
        Ok(Presented {
            candidates,
            timestamp,
            id,
        })
    }

    /// The MAC (under one of the secrets) that equals one of the presented
    /// signatures. Every pair is compared, in constant time.
    fn matching_mac(&self, presented: &Presented<'_>, body: &[u8]) -> Option<Vec<u8>> {
        let mut found = None;
        for secret in &self.settings.secrets {
            let mac = self.mac(secret, presented, body);
            let mut matched = subtle::Choice::from(0);
            for candidate in &presented.candidates {
                matched |= mac.as_slice().ct_eq(candidate);
            }
            if bool::from(matched) && found.is_none() {
                found = Some(mac);
            }
        }
        found
    }

    fn mac(&self, secret: &[u8], presented: &Presented<'_>, body: &[u8]) -> Vec<u8> {
        let parts = self.settings.signed.iter().map(|piece| match piece {
            Piece::Text(text) => text.as_bytes(),
            Piece::Body => body,
            Piece::Timestamp => presented.timestamp.unwrap_or_default().as_bytes(),
            Piece::Id => presented.id.unwrap_or_default().as_bytes(),
        });
        match self.settings.algorithm {
            Algorithm::Sha256 => digest::<Hmac<Sha256>>(secret, parts),
            Algorithm::Sha512 => digest::<Hmac<Sha512>>(secret, parts),
        }
    }

    /// The timestamp within the tolerance; returns how long the signature
    /// stays acceptable (what replay protection remembers it for).
    fn check_time(
        &self,
        timestamp: Option<&str>,
        now: SystemTime,
    ) -> Result<Duration, AuthFailure> {
        let (Some(tolerance), Some(text)) = (self.settings.tolerance, timestamp) else {
            return Ok(Duration::ZERO);
        };
        let sent: i64 = text
            .trim()
            .parse()
            .map_err(|_| AuthFailure::StaleTimestamp)?;
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let tolerance_s = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
        if now.abs_diff(sent) > tolerance_s.unsigned_abs() {
            return Err(AuthFailure::StaleTimestamp);
        }
        // Acceptable until `sent + tolerance`; one more second for rounding.
        let left = sent.saturating_add(tolerance_s).saturating_sub(now).max(0);
        Ok(Duration::from_secs(left.unsigned_abs() + 1))
    }
}

/// A header's one value as text; two lines of it are refused (the
/// upstream might read the other one).
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, AuthFailure> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthFailure::BadSignature);
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| AuthFailure::BadSignature)
}

fn digest<'a, M: Mac + hmac::digest::KeyInit>(
    secret: &[u8],
    parts: impl Iterator<Item = &'a [u8]>,
) -> Vec<u8> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(secret) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Decodes one signature; `None` when it is not valid in `encoding`.
pub fn decode(encoding: Encoding, text: &str) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Hex => decode_hex(text),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .ok(),
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lower-case hex (the replay keys in Redis).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests;
