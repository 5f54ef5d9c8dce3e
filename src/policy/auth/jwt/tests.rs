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

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn absent_iss_or_aud_is_refused_when_configured() {
    let v = verifier(&["exp", "sub"]);
    let without = |claim: &str| {
        let mut claims = good();
        claims.as_object_mut().unwrap().remove(claim);
        sign(claims)
    };
    assert_eq!(
        v.verify(&without("iss")).await.unwrap_err(),
        AuthFailure::WrongIssuer
    );
    assert_eq!(
        v.verify(&without("aud")).await.unwrap_err(),
        AuthFailure::WrongAudience
    );
    // Present but of another type, or a list holding the issuer among others.
    for (claim, value, reason) in [
        ("iss", json!(null), AuthFailure::WrongIssuer),
        ("iss", json!(5), AuthFailure::WrongIssuer),
        (
            "iss",
            json!(["https://evil.example", "https://issuer.example"]),
            AuthFailure::WrongIssuer,
        ),
        ("aud", json!(null), AuthFailure::WrongAudience),
        ("aud", json!(5), AuthFailure::WrongAudience),
        ("aud", json!([]), AuthFailure::WrongAudience),
        (
            "aud",
            json!(["authenticated", 5]),
            AuthFailure::WrongAudience,
        ),
    ] {
        assert_eq!(
            v.verify(&sign(with(good(), claim, value.clone())))
                .await
                .unwrap_err(),
            reason,
            "{claim}: {value}"
        );
    }
    // A list naming the audience is fine.
    let listed = with(good(), "aud", json!(["other", "authenticated"]));
    assert!(v.verify(&sign(listed)).await.is_ok());
}

#[tokio::test]
async fn empty_or_null_required_claims_count_as_missing() {
    let v = verifier(&["exp", "sub", "restaurant_id"]);
    let ok = with(good(), "restaurant_id", json!("r1"));
    for (claim, value) in [
        ("sub", json!("")),
        ("restaurant_id", json!("")),
        ("restaurant_id", json!(null)),
    ] {
        assert_eq!(
            v.verify(&sign(with(ok.clone(), claim, value.clone())))
                .await
                .unwrap_err(),
            AuthFailure::MissingClaim,
            "{claim}: {value}"
        );
    }
}

#[tokio::test]
async fn unknown_crit_header_parameter_is_refused() {
    let v = verifier(&["exp"]);
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp-ext".into()]);
    header.extras.insert("exp-ext", true);
    let token = jsonwebtoken::encode(&header, &good(), &EncodingKey::from_secret(SECRET)).unwrap();
    assert_eq!(v.verify(&token).await.unwrap_err(), AuthFailure::Malformed);
}

#[tokio::test]
async fn fractional_dates_are_read_as_numbers_and_bound_the_cache() {
    let v = verifier(&["exp"]);
    // A float iat is a valid NumericDate.
    let iat = with(good(), "iat", json!(now_f64()));
    assert!(v.verify(&sign(iat)).await.is_ok());
    assert_eq!(v.cached(), 1);
    // Expired 5.5 s ago: inside the leeway, so admitted, but never cached
    // (the old `as_u64` read saw no exp and cached it for cache_ttl).
    let past = with(good(), "exp", json!(now_f64() - 5.5));
    assert!(v.verify(&sign(past)).await.is_ok());
    assert_eq!(v.cached(), 1);
    // Past exp + leeway by a fraction: expired, not rounded into validity.
    let gone = with(good(), "exp", json!(now_f64() - 30.6));
    assert_eq!(
        v.verify(&sign(gone)).await.unwrap_err(),
        AuthFailure::Expired
    );
    let future_iat = with(good(), "iat", json!(now_f64() + 90.5));
    assert_eq!(
        v.verify(&sign(future_iat)).await.unwrap_err(),
        AuthFailure::NotYetValid
    );
}

/// The cached token found before its line is read as text is the one the
/// sources find, or none: every `Authorization` shape below either takes
/// the short way to the very claims the long way gives, or is left to it.
#[tokio::test]
async fn a_cached_bearer_is_the_token_the_sources_find() {
    let v = verifier(&["exp"]);
    let token = sign(good());
    let claims = v.verify(&token).await.unwrap();
    let other = sign(with(good(), "sub", json!("u2")));
    let lines = |values: &[String]| {
        let mut headers = HeaderMap::new();
        for value in values {
            let value = http::HeaderValue::from_bytes(value.as_bytes()).unwrap();
            headers.append(http::header::AUTHORIZATION, value);
        }
        headers
    };
    let short_way = [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
    ];
    for value in &short_way {
        let headers = lines(std::slice::from_ref(value));
        let found = v.cached_bearer(&headers).expect(value);
        assert!(Arc::ptr_eq(&found, &claims), "{value}");
        let long_way = v.token_from(&headers).unwrap().unwrap();
        assert_eq!(long_way, token.as_str(), "{value}");
    }
    let long_way = [
        vec![format!("Bearer  {token}")],
        vec![format!("Bearer {token} ")],
        vec![format!("Bearer\t{token}")],
        vec![format!(" Bearer {token}")],
        vec![format!("Bearer {token}\u{a0}")],
        vec![format!("Bearer {token}"), format!("Bearer {token}")],
        vec![format!("Bearer {other}")],
        vec![format!("Token {token}")],
        vec!["Bearer".to_string()],
        vec![],
    ];
    for values in &long_way {
        assert!(v.cached_bearer(&lines(values)).is_none(), "{values:?}");
    }
    // Other sources: the long way, whatever the line.
    let mut both = verifier(&["exp"]);
    both.bearer_only = false;
    both.verify(&token).await.unwrap();
    assert!(both.cached_bearer(&lines(&short_way[..1])).is_none());
    // Not cached yet, then cached: the short way finds it only once it is.
    let fresh = verifier(&["exp"]);
    let headers = lines(&short_way[..1]);
    assert!(fresh.cached_bearer(&headers).is_none());
    fresh.verify(&token).await.unwrap();
    assert!(fresh.cached_bearer(&headers).is_some());
}
