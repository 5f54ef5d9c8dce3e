//! `[auth.jwt]` and `[auth.secrets.*]` compiled into the JWT verifier and
//! the shared-secret checks.

use super::*;

impl Compiler<'_> {
    pub(super) fn auth(&self, file: &FileConfig) -> Result<AuthPolicy> {
        let jwt = match &file.auth.jwt {
            Some(jwt) => Some(Arc::new(self.jwt(jwt)?)),
            None => None,
        };
        let mut secrets = Vec::new();
        for (name, secret) in &file.auth.secrets {
            let key = format!("auth.secrets.{name}");
            let s = secret.get_ref();
            let header = HeaderName::from_bytes(s.header.as_str().as_bytes()).map_err(|_| {
                self.err(
                    secret.span(),
                    format!("{key}.header"),
                    format!("\"{}\" is not a valid header name", s.header),
                )
            })?;
            let values: Vec<String> = match (&s.value, &s.values) {
                (Some(v), None) => vec![v.0.clone()],
                (None, Some(vs)) => vs.iter().map(|v| v.0.clone()).collect(),
                _ => {
                    return Err(self.err(
                        secret.span(),
                        key,
                        "set exactly one of `value` or `values`",
                    ));
                }
            };
            if values.is_empty() || values.iter().any(|v| v.is_empty()) {
                return Err(self.err(
                    secret.span(),
                    key,
                    "secret values must not be empty (is the environment variable set?)",
                ));
            }
            secrets.push(SecretCheck::new(name, header, values));
        }
        Ok(AuthPolicy { jwt, secrets })
    }

    pub(super) fn jwt(&self, jwt: &JwtFile) -> Result<JwtVerifier> {
        const ALGORITHMS: [&str; 10] = [
            "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384",
            "EdDSA",
        ];
        if jwt.algorithms.is_empty() {
            return Err(self.err(
                0..0,
                "auth.jwt.algorithms",
                "must list at least one algorithm",
            ));
        }
        let mut algorithms = Vec::new();
        for (i, alg) in jwt.algorithms.iter().enumerate() {
            let name = alg.get_ref().as_str();
            let key = format!("auth.jwt.algorithms[{i}]");
            if !ALGORITHMS.contains(&name) {
                return Err(self.err(
                    alg.span(),
                    key,
                    format!(
                        "unknown algorithm \"{name}\" (\"none\" is never allowed); accepted: {}",
                        ALGORITHMS.join(" ")
                    ),
                ));
            }
            let symmetric = name.starts_with("HS");
            if symmetric && jwt.hs256_secret.is_none() {
                return Err(self.err(
                    alg.span(),
                    key,
                    format!("{name} needs auth.jwt.hs256_secret"),
                ));
            }
            if !symmetric && jwt.jwks_url.is_none() && jwt.jwks_file.is_none() {
                return Err(self.err(
                    alg.span(),
                    key,
                    format!("{name} needs auth.jwt.jwks_url or auth.jwt.jwks_file"),
                ));
            }
            algorithms.push(name.parse::<Algorithm>().map_err(|_| {
                self.err(
                    alg.span(),
                    format!("auth.jwt.algorithms[{i}]"),
                    "unsupported",
                )
            })?);
        }
        if let Some(secret) = &jwt.hs256_secret
            && secret.0.is_empty()
        {
            return Err(self.err(
                0..0,
                "auth.jwt.hs256_secret",
                "is empty; set the environment variable it names",
            ));
        }
        if jwt.sources.is_empty() {
            return Err(self.err(
                0..0,
                "auth.jwt.sources",
                "must list at least one token source",
            ));
        }
        let mut sources = Vec::new();
        for (i, source) in jwt.sources.iter().enumerate() {
            let text = source.get_ref().as_str();
            let parsed = TokenSource::parse(text)
                .ok()
                .filter(|s| !matches!(s, TokenSource::Cookie(n) | TokenSource::SupabaseCookie(n) if n.is_empty()))
                .ok_or_else(|| {
                    self.err(
                        source.span(),
                        format!("auth.jwt.sources[{i}]"),
                        format!("unknown token source \"{text}\"; accepted: \"header:NAME\", \"cookie:NAME\", \"supabase-cookie:NAME\""),
                    )
                })?;
            sources.push(parsed);
        }
        self.forward_claims(&jwt.forward_claims, "auth.jwt.forward_claims")?;
        let jwks_source = match (&jwt.jwks_url, &jwt.jwks_file) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    0..0,
                    "auth.jwt.jwks_url",
                    "set jwks_url or jwks_file, not both",
                ));
            }
            (Some(url), None) => {
                let uri: http::Uri = url.as_str().parse().map_err(|_| {
                    self.err(0..0, "auth.jwt.jwks_url", format!("\"{url}\" is not a URL"))
                })?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none()
                {
                    return Err(self.err(
                        0..0,
                        "auth.jwt.jwks_url",
                        format!("\"{url}\" must be an http(s) URL"),
                    ));
                }
                Some(JwksSource::Url(uri))
            }
            (None, Some(file)) => Some(JwksSource::File(self.base.join(file.as_str()))),
            (None, None) => None,
        };
        let jwks = match jwks_source {
            None => None,
            Some(source) => {
                let key = if matches!(source, JwksSource::File(_)) {
                    "auth.jwt.jwks_file"
                } else {
                    "auth.jwt.jwks_url"
                };
                Some(Arc::new(
                    JwksStore::new(source, jwt.jwks_refresh.0)
                        .map_err(|m| self.err(0..0, key, m))?,
                ))
            }
        };
        Ok(JwtVerifier::new(JwtSettings {
            hs_secret: jwt.hs256_secret.as_ref().map(|s| s.0.as_bytes().to_vec()),
            algorithms,
            jwks,
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

    pub(super) fn forward_claims(
        &self,
        claims: &BTreeMap<String, Spanned<Text>>,
        key: &str,
    ) -> Result<Vec<(String, HeaderName)>> {
        claims
            .iter()
            .map(|(claim, header)| {
                Ok((
                    claim.clone(),
                    self.header_name(header, &format!("{key}.{claim}"))?,
                ))
            })
            .collect()
    }
}
