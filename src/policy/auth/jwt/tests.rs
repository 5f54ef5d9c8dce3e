use super::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const SECRET: &[u8] = b"unit-test-secret";

fn verifier(require: &[&str]) -> JwtVerifier {
    JwtVerifier::new(JwtSettings {
        hs_secret: Some(SECRET.to_vec()),
        algorithms: vec![Algorithm::HS256],
        jwks: None,
        issuer: Some("https://issuer.example".into()),
        audiences: vec!["authenticated".into()],
        leeway: Duration::from_secs(30),
        require: require.iter().map(|s| s.to_string()).collect(),
        sources: vec![TokenSource::parse("header:Authorization").unwrap()],
        cache_ttl: Duration::from_secs(60),
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn good() -> serde_json::Value {
    json!({"sub": "u1", "exp": now() + 600, "iat": now(), "iss": "https://issuer.example", "aud": "authenticated"})
}

fn with(mut claims: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    claims[key] = value;
    claims
}

#[tokio::test]
async fn reasons() {
    let v = verifier(&["exp", "sub", "restaurant_id"]);
    let ok = with(good(), "restaurant_id", json!("r1"));
    assert!(v.verify(&sign(ok.clone())).await.is_ok());
    let cases = [
        (
            sign(with(ok.clone(), "exp", json!(now() - 120))),
            AuthFailure::Expired,
        ),
        (
            sign(with(ok.clone(), "nbf", json!(now() + 120))),
            AuthFailure::NotYetValid,
        ),
        (
            sign(with(ok.clone(), "iat", json!(now() + 120))),
            AuthFailure::NotYetValid,
        ),
        (
            sign(with(ok.clone(), "iss", json!("https://evil.example"))),
            AuthFailure::WrongIssuer,
        ),
        (
            sign(with(ok.clone(), "aud", json!("other"))),
            AuthFailure::WrongAudience,
        ),
        (sign(good()), AuthFailure::MissingClaim),
        ("not.a.jwt".to_string(), AuthFailure::Malformed),
        ("onlyonepart".to_string(), AuthFailure::Malformed),
    ];
    for (token, expected) in cases {
        assert_eq!(v.verify(&token).await.unwrap_err(), expected, "{token}");
    }
    let mut tampered = sign(ok.clone());
    tampered.push('x');
    assert_eq!(
        v.verify(&tampered).await.unwrap_err(),
        AuthFailure::BadSignature
    );
    let other_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &ok,
        &EncodingKey::from_secret(b"other"),
    )
    .unwrap();
    assert_eq!(
        v.verify(&other_key).await.unwrap_err(),
        AuthFailure::BadSignature
    );
}

#[tokio::test]
async fn leeway_applies_to_exp() {
    let v = verifier(&["exp"]);
    assert!(
        v.verify(&sign(with(good(), "exp", json!(now() - 10))))
            .await
            .is_ok()
    );
    assert_eq!(
        v.verify(&sign(with(good(), "exp", json!(now() - 60))))
            .await
            .unwrap_err(),
        AuthFailure::Expired
    );
}

#[tokio::test]
async fn alg_none_and_unlisted_algorithms_are_refused() {
    let v = verifier(&["exp"]);
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&good().to_string())
    );
    assert_eq!(
        v.verify(&none).await.unwrap_err(),
        AuthFailure::AlgNotAllowed
    );
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &good(),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    assert_eq!(
        v.verify(&hs512).await.unwrap_err(),
        AuthFailure::AlgNotAllowed
    );
}

#[tokio::test]
async fn verified_tokens_are_cached_until_exp() {
    let v = verifier(&["exp"]);
    let token = sign(good());
    v.verify(&token).await.unwrap();
    assert_eq!(v.cached(), 1);
    v.verify(&token).await.unwrap();
    assert_eq!(v.cached(), 1);
    // A token expiring within the leeway window is never cached past its exp.
    let short = sign(with(good(), "exp", json!(now() - 5)));
    v.verify(&short).await.unwrap();
    assert_eq!(v.cached(), 1);
}
