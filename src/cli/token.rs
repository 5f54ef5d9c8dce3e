//! `palisade token`: mints an HS256 JWT for development and tests, signed
//! with the secret in `$VAR` (default: the variable `auth.jwt.hs256_secret`
//! names in the config).

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use super::Cli;

/// Arguments of `palisade token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The `sub` claim.
    #[arg(long)]
    pub sub: String,
    /// Extra claims, `K=V` (V read as JSON when it parses, else a string).
    #[arg(long = "claim", value_name = "K=V")]
    pub claims: Vec<String>,
    /// Lifetime, e.g. 1h, 15m.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Environment variable holding the secret.
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
}

/// The variable `auth.jwt.hs256_secret` names in the config text, if any.
pub fn secret_var_of(config_text: &str) -> Option<String> {
    env_var_at(config_text, &["auth", "jwt", "hs256_secret"])
}

/// The variable named by the `"${VAR}"` string at `keys` in the raw config
/// (the first element, for a list).
pub fn env_var_at(config_text: &str, keys: &[&str]) -> Option<String> {
    let root: toml::Value = toml::from_str(config_text).ok()?;
    let mut value = &root;
    for key in keys {
        value = value.get(key)?;
    }
    let raw = match value {
        toml::Value::Array(items) => items.first()?.as_str()?,
        other => other.as_str()?,
    };
    let inner = raw.strip_prefix("${")?.strip_suffix('}')?;
    Some(inner.split(":-").next()?.to_string())
}

/// `iss` / first `aud` from the config, so minted tokens pass its checks.
fn config_claims(config_text: &str) -> Map<String, Value> {
    let mut claims = Map::new();
    let Ok(value) = toml::from_str::<toml::Value>(config_text) else {
        return claims;
    };
    let Some(jwt) = value.get("auth").and_then(|a| a.get("jwt")) else {
        return claims;
    };
    if let Some(issuer) = jwt.get("issuer").and_then(|v| v.as_str()) {
        claims.insert("iss".into(), Value::from(issuer));
    }
    if let Some(aud) = jwt
        .get("audiences")
        .and_then(|v| v.as_array())
        .and_then(|a| a.first())
        .and_then(|v| v.as_str())
    {
        claims.insert("aud".into(), Value::from(aud));
    }
    claims
}

/// Signs the claims: `sub`, `iat`, `exp`, config `iss`/`aud`, then extras.
pub fn mint(
    secret: &[u8],
    sub: &str,
    extra: &[(String, Value)],
    ttl: Duration,
    config_text: &str,
) -> Result<String, String> {
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from(sub));
    for (key, value) in extra {
        claims.insert(key.clone(), value.clone());
    }
    mint_claims(secret, claims, ttl, config_text)
}

/// Signs `claims` as given, adding `iat`, `exp` (now + `ttl`) and the
/// config's `iss`/`aud` where the claims do not set them.
pub fn mint_claims(
    secret: &[u8],
    claims: Map<String, Value>,
    ttl: Duration,
    config_text: &str,
) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let mut all = config_claims(config_text);
    all.insert("iat".into(), Value::from(now));
    all.insert("exp".into(), Value::from(now + ttl.as_secs()));
    all.extend(claims);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &all,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

/// Parses `K=V` pairs.
pub fn parse_claims(pairs: &[String]) -> Result<Vec<(String, Value)>, String> {
    pairs
        .iter()
        .map(|pair| {
            let (key, raw) = pair
                .split_once('=')
                .ok_or_else(|| format!("--claim {pair}: write K=V"))?;
            let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw));
            Ok((key.to_string(), value))
        })
        .collect()
}

/// Runs `token`.
pub fn token(cli: &Cli, args: &TokenArgs) -> ExitCode {
    let config_text = std::fs::read_to_string(cli.config_path()).unwrap_or_default();
    let Some(var) = args
        .secret_env
        .clone()
        .or_else(|| secret_var_of(&config_text))
    else {
        eprintln!(
            "palisade token: no secret: pass --secret-env VAR, or set auth.jwt.hs256_secret = \"${{VAR}}\" in the config"
        );
        return ExitCode::from(2);
    };
    // The command line is fine; the environment it needs is not: a config
    // error (1), as `run` exits on an unset secret, not a usage error (2).
    let Ok(secret) = std::env::var(&var) else {
        eprintln!("palisade token: environment variable {var} is not set");
        return ExitCode::FAILURE;
    };
    let ttl = match crate::config::units::parse_duration(&args.ttl) {
        Ok(ttl) => ttl,
        Err(e) => {
            eprintln!("palisade token: --ttl: {e}");
            return ExitCode::from(2);
        }
    };
    let claims = match parse_claims(&args.claims) {
        Ok(claims) => claims,
        Err(e) => {
            eprintln!("palisade token: {e}");
            return ExitCode::from(2);
        }
    };
    match mint(secret.as_bytes(), &args.sub, &claims, ttl, &config_text) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("palisade token: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_secret_variable() {
        let text = "[auth.jwt]\nhs256_secret = \"${SUPABASE_JWT_SECRET}\"\n";
        assert_eq!(secret_var_of(text).as_deref(), Some("SUPABASE_JWT_SECRET"));
        assert_eq!(
            secret_var_of("[auth.jwt]\nhs256_secret = \"${S:-x}\"").as_deref(),
            Some("S")
        );
        assert_eq!(secret_var_of(""), None);
    }

    #[test]
    fn claims_parse_as_json_or_string() {
        let claims =
            parse_claims(&["role=admin".into(), "n=5".into(), "tags=[\"a\"]".into()]).unwrap();
        assert_eq!(claims[0].1, Value::from("admin"));
        assert_eq!(claims[1].1, Value::from(5));
        assert!(claims[2].1.is_array());
        assert!(parse_claims(&["novalue".into()]).is_err());
    }
}
