//! Fixed vectors from the providers' documentation (GitHub's "Validating
//! webhook deliveries", Slack's "Verifying requests from Slack", the
//! Standard Webhooks specification), and the failure reasons.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::presets::{DEFAULT_TOLERANCE, preset, secret_bytes};
use super::*;

fn verifier(name: &str, secrets: &[&str], replay: bool) -> HmacVerifier {
    let p = preset(name).unwrap();
    let has_time = p.timestamp_header.is_some() || p.timestamp_in_header;
    HmacVerifier::new(
        name,
        HmacSettings {
            layout: p.layout,
            header: HeaderName::from_static(p.header.unwrap()),
            algorithm: p.algorithm,
            encoding: p.encoding,
            prefix: p.prefix.into(),
            timestamp_header: p.timestamp_header.map(HeaderName::from_static),
            id_header: p.id_header.map(HeaderName::from_static),
            signed: parse_template(p.signed).unwrap(),
            tolerance: has_time.then_some(DEFAULT_TOLERANCE),
            replay,
            secrets: secrets
                .iter()
                .map(|s| secret_bytes(p.whsec, s).unwrap())
                .collect(),
        },
    )
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn github_documented_vector() {
    let v = verifier("github", &["It's a Secret to Everybody"], false);
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let h = headers(&[("x-hub-signature-256", sig)]);
    assert_eq!(v.verify(&h, b"Hello, World!", SystemTime::now()), Ok(None));
    assert_eq!(
        v.verify(&h, b"Hello, World?", SystemTime::now()),
        Err(AuthFailure::BadSignature)
    );
    assert_eq!(
        v.verify(&HeaderMap::new(), b"", SystemTime::now()),
        Err(AuthFailure::Missing)
    );
    let twice = headers(&[("x-hub-signature-256", sig), ("x-hub-signature-256", sig)]);
    assert_eq!(
        v.verify(&twice, b"Hello, World!", SystemTime::now()),
        Err(AuthFailure::BadSignature)
    );
}

const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

#[test]
fn slack_documented_vector_and_tolerance() {
    let v = verifier(
        "slack",
        &["rotated-out", "8f742231b10e8888abcd99yyyzzz85a5"],
        false,
    );
    let h = headers(&[
        (
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
        ("x-slack-request-timestamp", "1531420618"),
    ]);
    let body = SLACK_BODY.as_bytes();
    assert_eq!(v.verify(&h, body, at(1531420618 + 299)), Ok(None));
    assert_eq!(v.verify(&h, body, at(1531420618 - 299)), Ok(None));
    assert_eq!(
        v.verify(&h, body, at(1531420618 + 301)),
        Err(AuthFailure::StaleTimestamp)
    );
    let no_time = headers(&[("x-slack-signature", "v0=00")]);
    assert_eq!(v.verify(&no_time, body, at(0)), Err(AuthFailure::Missing));
}

#[test]
fn standard_webhooks_documented_vector_and_replay_key() {
    let v = verifier(
        "standard-webhooks",
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        true,
    );
    let h = headers(&[
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ]);
    let accepted = v
        .verify(&h, br#"{"test": 2432232314}"#, at(1614265330 + 60))
        .unwrap()
        .unwrap();
    assert_eq!(accepted.mac.len(), 32);
    assert_eq!(accepted.ttl, Duration::from_secs(241));
    assert!(secret_bytes(true, "whsec_!!").is_err());
}

#[test]
fn stripe_any_v1_and_timestamp_in_header() {
    let v = verifier("stripe", &["whsec_test"], false);
    let body = br#"{"id":"evt_1"}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
    mac.update(b"1700000000.");
    mac.update(body);
    let good = hex(&mac.finalize().into_bytes());
    let value = format!("t=1700000000,v1={},v0=zz,v1={good}", "ab".repeat(32));
    let h = headers(&[("stripe-signature", &value)]);
    assert_eq!(v.verify(&h, body, at(1700000100)), Ok(None));
    assert_eq!(
        v.verify(&h, body, at(1700000400)),
        Err(AuthFailure::StaleTimestamp)
    );
    let no_t = headers(&[("stripe-signature", &format!("v1={good}"))]);
    assert_eq!(
        v.verify(&no_t, body, at(1700000100)),
        Err(AuthFailure::Missing)
    );
}

#[test]
fn templates() {
    assert_eq!(
        parse_template("v0:{timestamp}:{body}").unwrap(),
        vec![
            Piece::Text("v0:".into()),
            Piece::Timestamp,
            Piece::Text(":".into()),
            Piece::Body
        ]
    );
    assert!(parse_template("{nope}").is_err());
    assert!(parse_template("{body").is_err());
    assert_eq!(decode(Encoding::Hex, "0g"), None);
    assert_eq!(decode(Encoding::Hex, "+f"), None);
    assert_eq!(decode(Encoding::Base64, "AA"), Some(vec![0]));
}
