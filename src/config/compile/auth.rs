//! `[auth.jwt]` and `[auth.secrets.*]` compiled into the JWT verifier and
//! the shared-secret checks (`[auth.hmac.*]`: `hmac.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use jsonwebtoken::Algorithm;

use super::{Compiler, Result};
use crate::config::file::{FileConfig, JwtFile, SecretFile};
use crate::config::keys::KeyPath;
use crate::config::values::Text;
use crate::policy::auth::AuthPolicy;
use crate::policy::auth::jwks::{JwksSource, JwksStore};
use crate::policy::auth::jwt::{JwtSettings, JwtVerifier};
use crate::policy::auth::secret::SecretCheck;
use crate::policy::auth::sources::TokenSource;

/// Every algorithm `auth.jwt.algorithms` accepts (never `none`).
const ALGORITHMS: [&str; 10] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
];

impl Compiler<'_> {
    pub(super) fn auth(&self, file: &FileConfig) -> Result<AuthPolicy> {
        let jwt = match &file.auth.jwt {
            Some(jwt) => Some(Arc::new(self.jwt(jwt)?)),
            None => None,
        };
        let mut secrets = Vec::new();
        for (name, secret) in &file.auth.secrets {
            secrets.push(self.secret(name, secret)?);
        }
        let mut hmac = Vec::new();
        for (name, h) in &file.auth.hmac {
            hmac.push(self.hmac(name, h)?);
        }
        Ok(AuthPolicy { jwt, secrets, hmac })
    }

    fn secret(&self, name: &str, s: &SecretFile) -> Result<SecretCheck> {
        let key = KeyPath::from("auth.secrets").key(name);
        let header = self.header_name(&s.header, key.key("header"))?;
        let values: Vec<String> = match (&s.value, &s.values) {
            (Some(v), None) => vec![v.0.clone()],
            (None, Some(vs)) => vs.iter().map(|v| v.0.clone()).collect(),
            (Some(_), Some(_)) => {
                return Err(self.err(key.key("values"), "set exactly one of `value` or `values`"));
            }
            (None, None) => return Err(self.err(key, "set exactly one of `value` or `values`")),
        };
        if let Some(i) = values.iter().position(String::is_empty) {
            let at = match &s.values {
                Some(_) => key.key("values").at(i),
                None => key.key("value"),
            };
            return Err(self.err(
                at,
                "secret values must not be empty (is the environment variable set?)",
            ));
        }
        if values.is_empty() {
            return Err(self.err(key.key("values"), "secret values must not be empty"));
        }
        Ok(SecretCheck::new(name, header, values))
    }

    fn jwt(&self, jwt: &JwtFile) -> Result<JwtVerifier> {
        let algorithms = self.algorithms(jwt)?;
        if let Some(secret) = &jwt.hs256_secret
            && secret.0.is_empty()
        {
            return Err(self.err(
                "auth.jwt.hs256_secret",
                "is empty; set the environment variable it names",
            ));
        }
        if jwt.sources.is_empty() {
            return Err(self.err("auth.jwt.sources", "must list at least one token source"));
        }
        let mut sources = Vec::new();
        for (i, source) in jwt.sources.iter().enumerate() {
            let text = source.as_str();
            let parsed = TokenSource::parse(text)
                .ok()
                .filter(|s| !matches!(s, TokenSource::Cookie(n) | TokenSource::SupabaseCookie(n) if n.is_empty()))
                .ok_or_else(|| {
                    self.err(
                        format!("auth.jwt.sources[{i}]"),
                        format!("unknown token source \"{text}\"; accepted: \"header:NAME\", \"cookie:NAME\", \"supabase-cookie:NAME\""),
                    )
                })?;
            sources.push(parsed);
        }
        self.forward_claims(&jwt.forward_claims, &"auth.jwt.forward_claims".into())?;
        Ok(JwtVerifier::new(JwtSettings {
            hs_secret: jwt.hs256_secret.as_ref().map(|s| s.0.as_bytes().to_vec()),
            algorithms,
            jwks: self.jwks(jwt)?,
            issuer: jwt.issuer.as_ref().map(|i| i.as_str().to_string()),
            audiences: jwt
                .audiences
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
            leeway: jwt.leeway.0,
            require: jwt.require.iter().map(|c| c.as_str().to_string()).collect(),
            sources,
            cache_ttl: jwt.cache_ttl.0,
        }))
    }

    fn algorithms(&self, jwt: &JwtFile) -> Result<Vec<Algorithm>> {
        if jwt.algorithms.is_empty() {
            return Err(self.err("auth.jwt.algorithms", "must list at least one algorithm"));
        }
        let mut algorithms = Vec::new();
        for (i, alg) in jwt.algorithms.iter().enumerate() {
            let name = alg.as_str();
            let key = format!("auth.jwt.algorithms[{i}]");
            if !ALGORITHMS.contains(&name) {
                return Err(self.err(
                    key,
                    format!(
                        "unknown algorithm \"{name}\" (\"none\" is never allowed); accepted: {}",
                        ALGORITHMS.join(" ")
                    ),
                ));
            }
            let symmetric = name.starts_with("HS");
            if symmetric && jwt.hs256_secret.is_none() {
                return Err(self.err(key, format!("{name} needs auth.jwt.hs256_secret")));
            }
            if !symmetric && jwt.jwks_url.is_none() && jwt.jwks_file.is_none() {
                return Err(self.err(
                    key,
                    format!("{name} needs auth.jwt.jwks_url or auth.jwt.jwks_file"),
                ));
            }
            algorithms.push(
                name.parse::<Algorithm>()
                    .map_err(|_| self.err(key, "unsupported"))?,
            );
        }
        Ok(algorithms)
    }

    fn jwks(&self, jwt: &JwtFile) -> Result<Option<Arc<JwksStore>>> {
        let (source, key) = match (&jwt.jwks_url, &jwt.jwks_file) {
            (Some(_), Some(_)) => {
                return Err(self.err("auth.jwt.jwks_file", "set jwks_url or jwks_file, not both"));
            }
            (Some(url), None) => {
                let key = "auth.jwt.jwks_url";
                let uri: http::Uri = url
                    .as_str()
                    .parse()
                    .map_err(|_| self.err(key, format!("\"{url}\" is not a URL")))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none()
                {
                    return Err(self.err(key, format!("\"{url}\" must be an http(s) URL")));
                }
                (JwksSource::Url(uri), key)
            }
            (None, Some(file)) => (
                JwksSource::File(self.base.join(file.as_str())),
                "auth.jwt.jwks_file",
            ),
            (None, None) => return Ok(None),
        };
        // Shorter would fetch the keys in a loop (an unknown kid is
        // refetched at most once per 10 s regardless).
        if jwt.jwks_refresh.0 < std::time::Duration::from_secs(1) {
            return Err(self.err("auth.jwt.jwks_refresh", "must be at least 1s"));
        }
        let refresh = jwt.jwks_refresh.0;
        let store = match JwksStore::new(source.clone(), refresh) {
            Ok(store) => store,
            Err(_) if matches!(&source, JwksSource::File(path) if Some(path.as_path()) == self.running_jwks_file) =>
            {
                tracing::warn!(
                    file = %source,
                    "auth.jwt.jwks_file cannot be read now; the reload keeps the running keys"
                );
                JwksStore::unread(source, refresh)
            }
            Err(m) => return Err(self.err(key, m)),
        };
        Ok(Some(Arc::new(store)))
    }

    pub(super) fn forward_claims(
        &self,
        claims: &BTreeMap<String, Text>,
        key: &KeyPath,
    ) -> Result<crate::policy::auth::claims::ForwardClaims> {
        claims
            .iter()
            .map(|(claim, header)| {
                Ok((
                    claim.clone(),
                    self.settable_header_name(header, key.key(claim))?,
                ))
            })
            .collect::<Result<Vec<_>>>()
            .map(Into::into)
    }
}
