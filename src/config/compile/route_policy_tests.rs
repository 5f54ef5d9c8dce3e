//! Config errors of the per-route keys of SPEC §6 (IP lists, claim
//! requirements, tiers, the deadline header): each names its key and place.

use super::error_tests::{JWT, error_of, fails_at};

#[test]
fn a_bad_cidr_names_its_key() {
    let route = "[[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n";
    fails_at(
        &format!("{route}allow_ips = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n"),
        "t.toml:5:28: routes[0].allow_ips[1]: \"10.0.0.0/33\" is not an IP address or CIDR",
    );
    fails_at(
        &format!("{route}deny_ips = [\"2001:db8::/200\"]\n"),
        "t.toml:5:13: routes[0].deny_ips[0]: \"2001:db8::/200\" is not",
    );
    fails_at(
        &format!("[defaults]\nallow_ips = [\"office\"]\n{route}"),
        "t.toml:2:14: defaults.allow_ips[0]: \"office\" is not",
    );
    let ok = format!("{JWT}{route}allow_ips = [\"10.0.0.1\", \"::1\", \"2001:db8::/32\"]\n");
    assert!(
        error_of(&ok).starts_with("loaded without an error"),
        "{}",
        error_of(&ok)
    );
}

#[test]
fn claims_need_a_route_that_takes_a_jwt() {
    let route = "[[routes]]\nname = \"a\"\npath = \"/**\"\n";
    fails_at(
        &format!("{JWT}{route}auth = \"none\"\nrequire_claims = {{ role = \"admin\" }}\n"),
        "t.toml:7:18: routes[0].require_claims: route \"a\" requires claims but its auth (\"none\") accepts no JWT",
    );
    fails_at(
        &format!("{JWT}{route}require_claims = {{ role = \"\" }}\n"),
        "t.toml:6:27: routes[0].require_claims.role: a claim name and its values must not be empty",
    );
    let lifted = format!(
        "{JWT}[defaults]\nrequire_claims = {{ role = \"admin\" }}\n{route}auth = \"none\"\nrequire_claims = {{}}\n"
    );
    assert!(
        error_of(&lifted).starts_with("loaded without an error"),
        "{}",
        error_of(&lifted)
    );
}

/// `[defaults] require_claims` guards the routes that take a JWT; a public
/// route or one that takes only a shared secret beside them loads, with
/// no requirement it could never check (black-box audit, session 16: such
/// a policy was refused at load).
#[test]
fn default_claims_apply_to_the_routes_that_take_a_jwt() {
    let text = format!(
        "{JWT}[auth.secrets.vapi]\nheader = \"X-Vapi-Secret\"\nvalue = \"${{SECRET}}\"\n\
         [defaults]\nauth = \"jwt\"\nrequire_claims = {{ role = \"admin\" }}\n\
         [[routes]]\nname = \"admin\"\npath = \"/admin/**\"\n\
         [[routes]]\nname = \"health\"\npath = \"/health\"\nauth = \"none\"\n\
         [[routes]]\nname = \"hook\"\npath = \"/hook\"\nauth = \"secret:vapi\"\n\
         [[routes]]\nname = \"either\"\npath = \"/either\"\nauth = [\"jwt\", \"secret:vapi\"]\n"
    );
    let env = crate::config::expand::Env::from_pairs([("SECRET", "s3cret-value")]);
    let policy = super::load_str(&text, "t.toml", &env).unwrap();
    let required: Vec<(&str, usize)> = policy
        .routes
        .routes()
        .iter()
        .map(|r| (&*r.name, r.require_claims.len()))
        .collect();
    assert_eq!(
        required,
        [("admin", 1), ("health", 0), ("hook", 0), ("either", 1)]
    );
}

#[test]
fn a_bad_deadline_header_names_its_key() {
    fails_at(
        "[upstream]\ndeadline_header = \"X Timeout\"\n\
         [[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n",
        "t.toml:2:19: upstream.deadline_header: \"X Timeout\" is not a valid header name",
    );
}

/// Red team, session 15: a header palisade owns, given as the request
/// ID, the deadline header or a claim's target, reached the upstream twice
/// (`X-Forwarded-For`), client-chosen (`Proxy`), or as a framing header
/// with a UUID in it (`Content-Length`).
#[test]
fn headers_palisade_owns_cannot_be_set_for_the_operator() {
    let route = "[[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n";
    fails_at(
        &format!("[request_id]\nheader = \"X-Forwarded-For\"\n{route}"),
        "t.toml:2:10: request_id.header: \"X-Forwarded-For\" is a header palisade sets or removes",
    );
    fails_at(
        &format!("[request_id]\nheader = \"proxy\"\n{route}"),
        "t.toml:2:10: request_id.header: \"proxy\" is a header palisade frames or routes",
    );
    fails_at(
        &format!("[upstream]\ndeadline_header = \"Content_Length\"\n{route}"),
        "t.toml:2:19: upstream.deadline_header: \"Content_Length\" is a header palisade frames",
    );
    fails_at(
        &format!("{JWT}forward_claims = {{ sub = \"Host\" }}\n{route}"),
        "t.toml:3:26: auth.jwt.forward_claims.sub: \"Host\" is a header palisade frames",
    );
    for owned in [
        "X-Frame-Options",
        "ratelimit",
        "Access-Control-Allow-Origin",
        "Retry_After",
        "content_type",
        "Allow",
        "Date",
    ] {
        fails_at(
            &format!("[request_id]\nheader = \"{owned}\"\n{route}"),
            &format!(
                "t.toml:2:10: request_id.header: \"{owned}\" is a response header palisade sets"
            ),
        );
    }
    // Red team, session 29: a claim a user can edit (Supabase's
    // `user_metadata`) set as a method override chose the method the
    // upstream ran.
    fails_at(
        &format!("{JWT}forward_claims = {{ m = \"X-HTTP-Method-Override\" }}\n{route}"),
        "t.toml:3:24: auth.jwt.forward_claims.m: \"X-HTTP-Method-Override\" is a header palisade removes: a method override",
    );
    fails_at(
        &format!("[upstream]\ndeadline_header = \"x_method_override\"\n{route}"),
        "t.toml:2:19: upstream.deadline_header: \"x_method_override\" is a header palisade removes",
    );
    fails_at(
        &format!("[request_id]\nheader = \"traceparent\"\n{route}"),
        "t.toml:2:10: request_id.header: \"traceparent\" is a header palisade sets for trace",
    );
    fails_at(
        &format!(
            "{JWT}forward_claims = {{ sub = \"X-Trace\" }}\n[request_id]\nheader = \"x_trace\"\n{route}"
        ),
        "t.toml:5:10: request_id.header: \"x_trace\" is also a header palisade sets with another meaning",
    );
    fails_at(
        &format!(
            "{JWT}forward_claims = {{ sub = \"X-Budget\" }}\n[upstream]\ndeadline_header = \"x_budget\"\n{route}"
        ),
        "t.toml:5:19: upstream.deadline_header: \"x_budget\" is also a forward_claims target",
    );
    let ok = format!(
        "{JWT}forward_claims = {{ sub = \"X-User-Id\" }}\n[request_id]\nheader = \"X-Correlation-Id\"\n\
         [upstream]\ndeadline_header = \"X-Request-Timeout-Ms\"\n{route}"
    );
    assert!(
        error_of(&ok).starts_with("loaded without an error"),
        "{}",
        error_of(&ok)
    );
}

#[test]
fn tiers_need_a_tier_claim_and_good_limits() {
    let route = "[[routes]]\nname = \"a\"\npath = \"/**\"\n";
    fails_at(
        &format!(
            "{JWT}{route}rate_limits = [{{ by = \"user\", limit = 1, per = \"1m\", tiers = {{ pro = {{ limit = 5 }} }} }}]\n"
        ),
        "t.toml:6:62: routes[0].rate_limits[0].tiers: tiers need tier_claim",
    );
    let tiered = |tier: &str| {
        format!(
            "{JWT}{route}rate_limits = [{{ by = \"user\", limit = 1, per = \"1m\", tier_claim = \"plan\", tiers = {{ pro = {tier} }} }}]\n"
        )
    };
    fails_at(
        &tiered("{ limit = 0 }"),
        "t.toml:6:101: routes[0].rate_limits[0].tiers.pro.limit: must be at least 1",
    );
    fails_at(
        &tiered("{ limit = 5, burst = 0 }"),
        "t.toml:6:112: routes[0].rate_limits[0].tiers.pro.burst: must be at least 1",
    );
    fails_at(
        &tiered("{ limit = -1 }"),
        "t.toml:6:101: routes[0].rate_limits[0].tiers.pro.limit: ",
    );
    fails_at(&tiered("{ limit = 5, per = \"1s\" }"), "t.toml:6:");
    // Tier names are written into the RateLimit headers' quoted names.
    let named = |name: &str| {
        format!(
            "{JWT}{route}rate_limits = [{{ by = \"user\", limit = 1, per = \"1m\", tier_claim = \"plan\", tiers = {{ {name} = {{ limit = 5 }} }} }}]\n"
        )
    };
    for bad in [
        r#""a\"b""#,
        r#""a\\b""#,
        r#""a\r\nb""#,
        r#""a\u007fb""#,
        r#""\u00e9t\u00e9""#,
        r#""""#,
    ] {
        let error = error_of(&named(bad));
        assert!(
            error.starts_with("t.toml:6:")
                && error.contains("routes[0].rate_limits[0].tiers.")
                && error.contains("is not a tier name"),
            "{bad}: {error}"
        );
    }
    for good in ["pro", r#""Pro Plan""#, r#""team:b2b.v2""#] {
        let error = error_of(&named(good));
        assert!(
            error.starts_with("loaded without an error"),
            "{good}: {error}"
        );
    }
    assert!(error_of(&tiered("{ limit = 5 }")).starts_with("loaded without an error"));
}
