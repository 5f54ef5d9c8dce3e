//! Unit tests of `ratelimit`.

use super::headers::FixedLines;

use crate::policy::auth::claims::VerifiedClaims;
use crate::policy::response_headers::edit_map;

use super::*;

#[test]
fn ipv6_is_grouped_by_prefix_and_mapped_ipv4_is_ipv4() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
    assert_eq!(ip_bucket(a, 64), ip_bucket(b, 64));
    assert_ne!(ip_bucket(a, 128), ip_bucket(b, 128));
    assert_eq!(
        ip_bucket("::ffff:10.1.2.3".parse().unwrap(), 64),
        "10.1.2.3"
    );
    assert_eq!(ip_bucket("10.1.2.3".parse().unwrap(), 64), "10.1.2.3");
}

#[test]
fn key_material_is_bounded() {
    assert_eq!(bounded("user-1"), "user-1");
    assert_eq!(bounded(&"x".repeat(100)).len(), 32);
    assert_eq!(bounded("a{b}").len(), 32);
    assert_eq!(bounded("with space").len(), 32);
    // Raw bytes: values a lossy UTF-8 reading would merge stay apart.
    let keys: Vec<String> = [
        b"C\xa0".as_slice(),
        b"C\x85",
        b"C\xff",
        "C\u{fffd}".as_bytes(),
    ]
    .iter()
    .map(|v| bounded_bytes(v))
    .collect();
    for (i, a) in keys.iter().enumerate() {
        assert!(keys[i + 1..].iter().all(|b| a != b), "{keys:?}");
    }
}

#[test]
fn headers_render_both_forms() {
    let headers = RateHeaders {
        mode: HeaderMode::Both,
        fixed: Arc::new(FixedLines::new("api.ip", 10, 60)),
        remaining: 4,
        reset_secs: 6,
    };
    let mut map = HeaderMap::new();
    edit_map(&mut map, |h| headers.apply(h));
    assert_eq!(map["x-ratelimit-limit"], "10");
    assert_eq!(map["x-ratelimit-remaining"], "4");
    assert_eq!(map["x-ratelimit-reset"], "6");
    assert_eq!(map["ratelimit-policy"], "\"api.ip\";q=10;w=60");
    assert_eq!(map["ratelimit"], "\"api.ip\";r=4;t=6");
    let mut legacy = HeaderMap::new();
    let legacy_only = RateHeaders {
        mode: HeaderMode::Legacy,
        ..headers
    };
    edit_map(&mut legacy, |h| legacy_only.apply(h));
    assert!(!legacy.contains_key("ratelimit"));
}

#[test]
fn a_verified_string_claim_picks_the_tier() {
    let rule = RateLimitRule {
        by: LimitKey::User,
        by_label: "user".into(),
        limit: 10,
        per: Duration::from_secs(60),
        burst: 10,
        shadow: false,
        tier_claim: Some("app_metadata.plan".into()),
        tiers: vec![Tier {
            name: "pro".into(),
            limit: 100,
            burst: 100,
        }],
    };
    let jwt = |json: &str| {
        Identity::Jwt(Arc::new(VerifiedClaims::new(
            serde_json::from_str(json).unwrap(),
        )))
    };
    assert_eq!(
        rule.tier_of(&jwt(r#"{"app_metadata":{"plan":"pro"}}"#)),
        Some(0)
    );
    assert_eq!(
        rule.tier_of(&jwt(r#"{"app_metadata":{"plan":"free"}}"#)),
        None
    );
    assert_eq!(
        rule.tier_of(&jwt(r#"{"app_metadata":{"plan":["pro"]}}"#)),
        None
    );
    assert_eq!(rule.tier_of(&jwt(r#"{"sub":"u1"}"#)), None);
    assert_eq!(rule.tier_of(&Identity::Anonymous), None);
    let pro = rule.with_tier(&rule.tiers[0]);
    assert_eq!((pro.limit, pro.burst, pro.per), (100, 100, rule.per));
}

/// An IPv4 client's key copies the connection's address text when it is
/// given; the key is the one written from the address itself, for every
/// spelling of a client (IPv6 goes by its prefix, whatever text is given).
#[test]
fn a_clients_address_text_makes_the_key_its_address_makes() {
    let policy = crate::config::compile::load_str(
        "[[routes]]\nname = \"all\"\npath = \"/**\"\nauth = \"none\"\n\
         rate_limits = [{ by = \"ip\", limit = 5, per = \"1s\" }]\n",
        "test.toml",
        &crate::config::expand::Env::from_pairs([]),
    )
    .unwrap();
    let routes = policy.routes.routes();
    let engine = RateLimitEngine::new(
        policy.ratelimit.clone(),
        routes,
        &LimiterRegistry::default(),
        None,
    );
    let identity = Identity::Anonymous;
    let headers = HeaderMap::new();
    for (ip, text) in [
        ("10.1.2.3", "10.1.2.3"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("127.0.0.1", "127.0.0.1"),
        ("2001:db8:1:2::7", "2001:db8:1:2::7"),
    ] {
        let client_ip: IpAddr = ip.parse().unwrap();
        let keys = |client_ip_text| {
            engine.keys(
                &routes[0],
                &KeyInputs {
                    client_ip,
                    client_ip_text,
                    identity: &identity,
                    headers: &headers,
                },
            )
        };
        assert_eq!(keys(Some(text)), keys(None), "{ip}");
        assert!(keys(None)[0].ends_with(&ip_bucket(client_ip, 64)), "{ip}");
        // The text is what an IPv4 key copies; an IPv6 key never does.
        let copied = keys(Some("as-given"))[0].ends_with("ip:as-given");
        assert_eq!(copied, client_ip.to_canonical().is_ipv4(), "{ip}");
    }
}
