//! JWT verification cost on the request path: a cache hit (the common case
//! for a browser session) and a miss (full signature check), for HS256 and
//! ES256. Run with `cargo bench --bench auth`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use palisade::config::{Env, load_str};
use palisade::policy::auth::jwt::JwtVerifier;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

fn verifier(cache_ttl: &str) -> std::sync::Arc<JwtVerifier> {
    let jwks =
        std::env::temp_dir().join(format!("palisade-bench-jwks-{}.json", std::process::id()));
    let jwks = jwks.display();
    let keys: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwks-keys.json"
        ))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        jwks.to_string(),
        serde_json::json!({ "keys": [keys["es256-a"]] }).to_string(),
    )
    .unwrap();
    let text = format!(
        "[auth.jwt]\nhs256_secret = \"${{S}}\"\njwks_file = \"{jwks}\"\nalgorithms = [\"HS256\", \"ES256\"]\ncache_ttl = \"{cache_ttl}\"\n\
         [[routes]]\nname = \"a\"\npath = \"/**\"\n"
    );
    let policy = load_str(&text, "bench", &Env::from_pairs([("S", SECRET)])).unwrap();
    policy.auth.jwt.clone().unwrap()
}

fn claims() -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    serde_json::json!({ "sub": "user-1", "exp": now + 3600, "iat": now, "restaurant_id": "r-42", "role": "authenticated" })
}

fn tokens() -> [(&'static str, String); 2] {
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/es256-a.pem"
    ))
    .unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("key-a".into());
    let es =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap();
    [("hs256", hs), ("es256", es)]
}

fn bench(c: &mut Criterion) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cached = verifier("60s");
    let uncached = verifier("0s");
    for (name, token) in tokens() {
        rt.block_on(cached.verify(&token)).unwrap();
        c.bench_function(&format!("verify_{name}_cache_hit"), |b| {
            b.iter(|| rt.block_on(cached.verify(black_box(&token))).unwrap())
        });
        c.bench_function(&format!("verify_{name}_cache_miss"), |b| {
            b.iter(|| rt.block_on(uncached.verify(black_box(&token))).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
