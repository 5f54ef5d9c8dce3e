//! JWT verification. The algorithm is pinned by configuration and by the
//! key's type, never taken on trust from the token: `alg: none` and the
//! RS→HS confusion (a token HMAC-signed with the RSA public key) fail.
//! Verified claims are cached by token (see `cache`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::AuthFailure;
use super::cache::{self, TokenCache};
use super::jwks::{JwksStore, KeyKind};
use super::sources::TokenSource;

const SPEC_CLAIMS: [&str; 5] = ["exp", "nbf", "aud", "iss", "sub"];

/// `[auth.jwt]`, compiled.
pub struct JwtVerifier {
    hs_key: Option<DecodingKey>,
    validations: HashMap<Algorithm, Validation>,
    /// The JWKS, when asymmetric algorithms are allowed.
    pub jwks: Option<Arc<JwksStore>>,
    /// Every `require`d claim: absent, `null` or `""` counts as missing.
    required: Vec<String>,
    /// When set, `iss` must be present and equal (a string, not a list).
    issuer: Option<String>,
    /// When set, `aud` must be present and name one of them.
    audiences: Vec<String>,
    leeway: u64,
    sources: Vec<TokenSource>,
    /// The sources are `header:Authorization` alone (the default): a
    /// cached token may be found before its line is read as text
    /// ([`cached_bearer`](Self::cached_bearer)).
    bearer_only: bool,
    cache: TokenCache,
    cache_ttl: Duration,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JwtVerifier(algorithms: {:?}, jwks: {:?})",
            self.validations.keys().collect::<Vec<_>>(),
            self.jwks
        )
    }
}

/// What the verifier is built from (validated by the config compiler).
pub struct JwtSettings {
    pub hs_secret: Option<Vec<u8>>,
    pub algorithms: Vec<Algorithm>,
    pub jwks: Option<Arc<JwksStore>>,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub require: Vec<String>,
    pub sources: Vec<TokenSource>,
    pub cache_ttl: Duration,
}

impl JwtVerifier {
    /// Builds the per-algorithm validations once.
    pub fn new(settings: JwtSettings) -> Self {
        let spec_required: Vec<&str> = settings
            .require
            .iter()
            .map(String::as_str)
            .filter(|c| SPEC_CLAIMS.contains(c))
            .collect();
        let mut validations = HashMap::new();
        for alg in &settings.algorithms {
            let mut validation = Validation::new(*alg);
            validation.leeway = settings.leeway.as_secs();
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&spec_required);
            if settings.audiences.is_empty() {
                validation.validate_aud = false;
            } else {
                validation.set_audience(&settings.audiences);
            }
            if let Some(issuer) = &settings.issuer {
                validation.set_issuer(&[issuer]);
            }
            validations.insert(*alg, validation);
        }
        Self {
            hs_key: settings.hs_secret.map(|s| DecodingKey::from_secret(&s)),
            validations,
            jwks: settings.jwks,
            required: settings.require,
            issuer: settings.issuer,
            audiences: settings.audiences,
            leeway: settings.leeway.as_secs(),
            bearer_only: settings.sources == [TokenSource::Header(http::header::AUTHORIZATION)],
            sources: settings.sources,
            cache: TokenCache::default(),
            cache_ttl: settings.cache_ttl,
        }
    }

    /// The token the sources hold: every source is read, and two different
    /// tokens are refused as ambiguous (see `sources`).
    pub fn token_from<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<Option<std::borrow::Cow<'h, str>>, AuthFailure> {
        super::sources::token_in(&self.sources, headers)
    }

    /// The claims cached for the usual request's token, found without
    /// reading its line as text (a UTF-8 check and two trims of every
    /// token, on every request): with `header:Authorization` the only
    /// source, one `Authorization` line that is `Bearer <token>` with no
    /// whitespace or non-ASCII byte at either end of the token is exactly
    /// the token [`token_from`](Self::token_from) finds, and the cache
    /// holds only verified tokens. `None` (any other shape, a miss, an
    /// entry past its time) sends the request the long way.
    pub fn cached_bearer(&self, headers: &HeaderMap) -> Option<cache::Claims> {
        if !self.bearer_only {
            return None;
        }
        let mut lines = headers.get_all(http::header::AUTHORIZATION).iter();
        let (Some(line), None) = (lines.next(), lines.next()) else {
            return None;
        };
        let token = super::sources::plain_bearer(line.as_bytes())?;
        self.fresh_claims(token, Instant::now(), unix_now())
    }

    /// The claims cached for `token`, fresh at `now` and not past their
    /// `exp` at `wall_now`. The cache entry never outlives `exp`;
    /// re-checking it on a hit also covers a wall clock that moved since
    /// the entry was made.
    fn fresh_claims(&self, token: &[u8], now: Instant, wall_now: f64) -> Option<cache::Claims> {
        let (exp, claims) = self.cache.get(token, now)?;
        exp.is_none_or(|exp| exp > wall_now).then_some(claims)
    }

    /// Whether a `header:` source reads the header `name`.
    pub fn reads_header(&self, name: &http::HeaderName) -> bool {
        self.sources
            .iter()
            .any(|source| matches!(source, TokenSource::Header(header) if header == name))
    }

    /// Verifies `token`, from the cache when it was verified recently.
    pub async fn verify(&self, token: &str) -> Result<cache::Claims, AuthFailure> {
        let now = Instant::now();
        let wall_now = unix_now();
        if let Some(claims) = self.fresh_claims(token.as_bytes(), now, wall_now) {
            return Ok(claims);
        }
        let (alg, kid) = read_header(token)?;
        let validation = self
            .validations
            .get(&alg)
            .ok_or(AuthFailure::AlgNotAllowed)?;
        let claims = match KeyKind::for_algorithm(alg) {
            KeyKind::Oct => {
                let key = self.hs_key.as_ref().ok_or(AuthFailure::AlgNotAllowed)?;
                decode(token, key, validation)?
            }
            kind => {
                let store = self.jwks.as_ref().ok_or(AuthFailure::AlgNotAllowed)?;
                let found = match store.keys().find(kid.as_deref(), kind) {
                    Some(found) => found,
                    None => {
                        store.refresh_for_unknown_kid().await;
                        store
                            .keys()
                            .find(kid.as_deref(), kind)
                            .ok_or(AuthFailure::UnknownKid)?
                    }
                };
                if found.kind != kind || found.alg.is_some_and(|pinned| pinned != alg) {
                    return Err(AuthFailure::AlgNotAllowed);
                }
                decode(token, &found.key, validation)?
            }
        };
        self.check_extra(&claims, wall_now)?;
        let claims = Arc::new(super::claims::VerifiedClaims::new(claims));
        // `exp` may be fractional: read as f64, so the entry ends at `exp`
        // itself, not at a truncation or a rounding of it.
        let exp = claims.get("exp").and_then(numeric_date);
        let ttl = match exp {
            Some(exp) => Duration::try_from_secs_f64((exp - wall_now).max(0.0))
                .map_or(self.cache_ttl, |left| left.min(self.cache_ttl)),
            None => self.cache_ttl,
        };
        self.cache.put(token, exp, claims.clone(), now, ttl);
        Ok(claims)
    }

    /// What `jsonwebtoken` leaves to us: dates as fractional NumericDates
    /// (it rounds them), `iss`/`aud` present and matching when configured
    /// (it checks them only when present and well-typed), `iat` not in the
    /// future, and required claims present and not `null` or `""`.
    fn check_extra(&self, claims: &Map<String, Value>, now: f64) -> Result<(), AuthFailure> {
        let leeway = self.leeway as f64;
        let date = |name: &str| match claims.get(name).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(value) => numeric_date(value).map(Some).ok_or(AuthFailure::Malformed),
        };
        if date("exp")?.is_some_and(|exp| exp + leeway < now) {
            return Err(AuthFailure::Expired);
        }
        if date("nbf")?.is_some_and(|nbf| nbf - leeway > now) {
            return Err(AuthFailure::NotYetValid);
        }
        if date("iat")?.is_some_and(|iat| iat - leeway > now) {
            return Err(AuthFailure::NotYetValid);
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(AuthFailure::WrongIssuer);
        }
        if !self.audiences.is_empty() && !audience_matches(claims.get("aud"), &self.audiences) {
            return Err(AuthFailure::WrongAudience);
        }
        let blank = |v: &Value| v.is_null() || v.as_str().is_some_and(str::is_empty);
        if self
            .required
            .iter()
            .any(|c| super::claims::lookup(claims, c).is_none_or(blank))
        {
            return Err(AuthFailure::MissingClaim);
        }
        Ok(())
    }

    /// Number of cached verified tokens (for tests and benches).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// Seconds since the epoch, with the fraction.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A NumericDate (RFC 7519 §2: seconds, possibly fractional).
fn numeric_date(value: &Value) -> Option<f64> {
    value.as_f64().filter(|f| f.is_finite())
}

/// `aud` names one of `audiences`: a string, or a list of strings.
fn audience_matches(aud: Option<&Value>, audiences: &[String]) -> bool {
    let names = |a: &str| audiences.iter().any(|w| w == a);
    match aud {
        Some(Value::String(a)) => names(a),
        Some(Value::Array(items)) => {
            items.iter().all(Value::is_string) && items.iter().filter_map(Value::as_str).any(names)
        }
        _ => false,
    }
}

/// `alg` and `kid` from the token's header, without trusting anything else.
fn read_header(token: &str) -> Result<(Algorithm, Option<String>), AuthFailure> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthFailure::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthFailure::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthFailure::Malformed)?;
    // RFC 7515 §4.1.11: extensions listed in `crit` must be understood, and
    // palisade implements none, so a token that has one is refused.
    if header.contains_key("crit") {
        return Err(AuthFailure::Malformed);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AuthFailure::Malformed)?;
    // Unknown names, "none" included, are simply not allowed.
    let alg: Algorithm = alg.parse().map_err(|_| AuthFailure::AlgNotAllowed)?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((alg, kid))
}

fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, AuthFailure> {
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthFailure::BadSignature,
            ErrorKind::ExpiredSignature => AuthFailure::Expired,
            ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
            ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
            ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidSubject => {
                AuthFailure::MissingClaim
            }
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm => AuthFailure::AlgNotAllowed,
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => AuthFailure::BadSignature,
            _ => AuthFailure::Malformed,
        })
}

#[cfg(test)]
mod tests;
