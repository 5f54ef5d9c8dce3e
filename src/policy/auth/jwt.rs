//! JWT verification. The algorithm is pinned by configuration and by the
//! key's type, never taken on trust from the token: `alg: none` and the
//! RS→HS confusion (a token HMAC-signed with the RSA public key) fail.
//! Verified claims are cached by token hash (see `cache`).

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
    extra_required: Vec<String>,
    require_iat: bool,
    leeway: u64,
    sources: Vec<TokenSource>,
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
            extra_required: settings
                .require
                .iter()
                .filter(|c| !SPEC_CLAIMS.contains(&c.as_str()) && *c != "iat")
                .cloned()
                .collect(),
            require_iat: settings.require.iter().any(|c| c == "iat"),
            leeway: settings.leeway.as_secs(),
            sources: settings.sources,
            cache: TokenCache::default(),
            cache_ttl: settings.cache_ttl,
        }
    }

    /// The token of the first source that holds one.
    pub fn token_from(&self, headers: &HeaderMap) -> Result<Option<String>, AuthFailure> {
        for source in &self.sources {
            if let Some(token) = source.extract(headers)? {
                return Ok(Some(token));
            }
        }
        Ok(None)
    }

    /// Verifies `token`, from the cache when it was verified recently.
    pub async fn verify(&self, token: &str) -> Result<Arc<Map<String, Value>>, AuthFailure> {
        let key = cache::key(token);
        let now = Instant::now();
        if let Some(claims) = self.cache.get(&key, now) {
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
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.check_extra(&claims, unix_now)?;
        let claims = Arc::new(claims);
        let ttl = match claims.get("exp").and_then(Value::as_u64) {
            Some(exp) => self
                .cache_ttl
                .min(Duration::from_secs(exp.saturating_sub(unix_now))),
            None => self.cache_ttl,
        };
        self.cache.put(key, claims.clone(), now, ttl);
        Ok(claims)
    }

    fn check_extra(&self, claims: &Map<String, Value>, unix_now: u64) -> Result<(), AuthFailure> {
        match claims.get("iat") {
            Some(iat) => {
                let iat = iat.as_u64().ok_or(AuthFailure::Malformed)?;
                if iat > unix_now + self.leeway {
                    return Err(AuthFailure::NotYetValid);
                }
            }
            None if self.require_iat => return Err(AuthFailure::MissingClaim),
            None => {}
        }
        if self
            .extra_required
            .iter()
            .any(|c| super::claims::lookup(claims, c).is_none())
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
