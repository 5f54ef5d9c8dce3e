//! Every config error names its key and its place (SPEC §1): a bad value
//! in each section, with the exact `PATH:LINE:COL: KEY: ` prefix.

use super::load_str;
use crate::config::expand::Env;

/// A route that satisfies everything, put after the section under test.
const ROUTE: &str = "\n[[routes]]\nname = \"all\"\npath = \"/**\"\nauth = \"none\"\n";

pub(super) const JWT: &str = "[auth.jwt]\nhs256_secret = \"${SECRET}\"\n";

pub(super) fn error_of(text: &str) -> String {
    let env = Env::from_pairs([("SECRET", "s3cret-value")]);
    match load_str(text, "t.toml", &env) {
        Ok(_) => format!("loaded without an error:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// `text` fails with an error that starts with `prefix`.
pub(super) fn fails_at(text: &str, prefix: &str) {
    let message = error_of(text);
    assert!(
        message.starts_with(prefix),
        "expected {prefix:?}…\n     got {message:?}"
    );
}

#[test]
fn server() {
    fails_at(
        &format!("[server]\nlisten = \"127.0.0.1:1\"\nheader_read_timeout = \"10\"\n{ROUTE}"),
        "t.toml:3:23: server.header_read_timeout: duration \"10\" has no unit",
    );
    fails_at(
        &format!("[server]\nlisten = \"nowhere\"\n{ROUTE}"),
        "t.toml:2:10: server.listen: \"nowhere\" is not an address",
    );
    fails_at(
        &format!("[server]\nlisten = \"127.0.0.1:1\"\nmax_uri_bytes = \"10B\"\n{ROUTE}"),
        "t.toml:3:17: server.max_uri_bytes: must be at least \"64B\"",
    );
    fails_at(
        &format!("[server]\nmax_header_bytes = \"100B\"\n{ROUTE}"),
        "t.toml:2:20: server.max_header_bytes: must be at least \"1KiB\"",
    );
    fails_at(
        &format!("[server]\nenvironment = \"staging\"\n{ROUTE}"),
        "t.toml:2:15: server.environment: unknown variant `staging`, expected `production` or `development`",
    );
    fails_at(
        &format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n{ROUTE}"),
        "t.toml:2:34: server.trusted_proxies[1]: \"nope\" is not a CIDR",
    );
    fails_at(
        &format!("[server]\nmax_connections = 0\n{ROUTE}"),
        "t.toml:2:19: server.max_connections: must be at least 1",
    );
    fails_at(
        &format!("[server]\nworkers = \"four\"\n{ROUTE}"),
        "t.toml:2:11: server.workers: invalid type",
    );
    fails_at(
        &format!("[server]\nhttp1_engine = \"fast\"\n{ROUTE}"),
        "t.toml:2:16: server.http1_engine: unknown variant `fast`, expected `hyper` or `palisade`",
    );
    fails_at(
        &format!("[upstream]\nurl = \"http://127.0.0.1:1\"\nhttp1_engine = \"own\"\n{ROUTE}"),
        "t.toml:3:16: upstream.http1_engine: unknown variant `own`, expected `hyper` or `palisade`",
    );
    fails_at(
        &format!("[server]\ntls = {{ cert = \"c.pem\" }}\n{ROUTE}"),
        "t.toml:2:7: server.tls: missing field `key`",
    );
}

#[test]
fn admin_and_request_id() {
    fails_at(
        &format!("[admin]\nlisten = \"9901\"\n{ROUTE}"),
        "t.toml:2:10: admin.listen: \"9901\" is not an address",
    );
    fails_at(
        &format!("[request_id]\nheader = \"X Request\"\n{ROUTE}"),
        "t.toml:2:10: request_id.header: \"X Request\" is not a valid header name",
    );
}

#[test]
fn upstream() {
    fails_at(
        &format!("[upstream]\nurl = \"ftp://files\"\n{ROUTE}"),
        "t.toml:2:7: upstream.url: \"ftp://files\" must use http or https",
    );
    fails_at(
        &format!("[upstream]\nurll = \"http://x\"\n{ROUTE}"),
        "t.toml:2:1: upstream.urll: unknown field `urll`",
    );
    fails_at(
        &format!("[upstream]\nmax_connections = 0\n{ROUTE}"),
        "t.toml:2:19: upstream.max_connections: must be at least 1",
    );
    fails_at(
        &format!("[upstream]\nurl = \"${{UPSTREAM_NOT_SET}}\"\n{ROUTE}"),
        "t.toml:2:7: upstream.url: environment variable UPSTREAM_NOT_SET is not set",
    );
}

#[test]
fn retry_and_breaker() {
    fails_at(
        &format!("[upstream.retry]\non = [\"503\", \"teapot\"]\n{ROUTE}"),
        "t.toml:2:14: upstream.retry.on[1]: unknown variant `teapot`, expected one of `connect-failure`, `502`, `503`, `504`, `reset`",
    );
    fails_at(
        &format!("[upstream.retry]\nbudget_percent = 101\n{ROUTE}"),
        "t.toml:2:18: upstream.retry.budget_percent: must be between 0 and 100",
    );
    fails_at(
        &format!("[upstream.retry]\nmax_backoff = \"1\"\n{ROUTE}"),
        "t.toml:2:15: upstream.retry.max_backoff: duration \"1\" has no unit",
    );
    fails_at(
        &format!("[upstream.circuit_breaker]\nfailure_percent = 0\n{ROUTE}"),
        "t.toml:2:19: upstream.circuit_breaker.failure_percent: must be between 1 and 100",
    );
    fails_at(
        &format!("[upstream.circuit_breaker]\nhalf_open_probes = 0\n{ROUTE}"),
        "t.toml:2:20: upstream.circuit_breaker.half_open_probes: must be at least 1",
    );
}

#[test]
fn log() {
    fails_at(
        &format!("[log]\nformat = \"xml\"\n{ROUTE}"),
        "t.toml:2:10: log.format: unknown variant `xml`, expected `json` or `pretty`",
    );
    fails_at(
        &format!("[log]\nlevel = \"info,x=loud\"\n{ROUTE}"),
        "t.toml:2:9: log.level: \"info,x=loud\" is not a log level or filter",
    );
    // `EnvFilter` reads a bare word as a target, logging nothing else.
    fails_at(
        &format!("[log]\nlevel = \"verbose\"\n{ROUTE}"),
        "t.toml:2:9: log.level: \"verbose\" is not a log level or filter",
    );
}

#[test]
fn jwt() {
    fails_at(
        &format!("{JWT}algorithms = [\"HS256\", \"none\"]\n{ROUTE}"),
        "t.toml:3:24: auth.jwt.algorithms[1]: unknown algorithm \"none\"",
    );
    // A default that the rest of the table makes wrong: placed at the table.
    fails_at(
        &format!("[auth.jwt]\njwks_file = \"jwks.json\"\n{ROUTE}"),
        "t.toml:1:1: auth.jwt.algorithms[0]: HS256 needs auth.jwt.hs256_secret",
    );
    fails_at(
        &format!("{JWT}leeway = \"30\"\n{ROUTE}"),
        "t.toml:3:10: auth.jwt.leeway: duration \"30\" has no unit",
    );
    fails_at(
        &format!("{JWT}sources = [\"query:token\"]\n{ROUTE}"),
        "t.toml:3:12: auth.jwt.sources[0]: unknown token source \"query:token\"",
    );
    fails_at(
        &format!("{JWT}forward_claims = {{ sub = \"X User\" }}\n{ROUTE}"),
        "t.toml:3:26: auth.jwt.forward_claims.sub: \"X User\" is not a valid header name",
    );
    fails_at(
        &format!("{JWT}algorithms = [\"RS256\"]\njwks_url = \"ftp://keys\"\n{ROUTE}"),
        "t.toml:4:12: auth.jwt.jwks_url: \"ftp://keys\" must be an http(s) URL",
    );
    fails_at(
        &format!("[auth.jwt]\nhs256_secret = \"${{JWT_NOT_SET}}\"\n{ROUTE}"),
        "t.toml:2:16: auth.jwt.hs256_secret: environment variable JWT_NOT_SET is not set",
    );
}

#[test]
fn secrets() {
    let hook = "[auth.secrets.hook]\n";
    fails_at(
        &format!("{hook}header = \"X Hook\"\nvalue = \"${{SECRET}}\"\n{ROUTE}"),
        "t.toml:2:10: auth.secrets.hook.header: \"X Hook\" is not a valid header name",
    );
    fails_at(
        &format!("{hook}header = \"X-Hook\"\n{ROUTE}"),
        "t.toml:1:1: auth.secrets.hook: set exactly one of `value` or `values`",
    );
    fails_at(
        &format!("{hook}header = \"X-Hook\"\nvalues = [\"${{SECRET}}\", \"\"]\n{ROUTE}"),
        "t.toml:3:24: auth.secrets.hook.values[1]: secret values must not be empty",
    );
    fails_at(
        &format!("[auth.secrets.\"my.hook\"]\nheader = \"X-Hook\"\nvalue = 5\n{ROUTE}"),
        "t.toml:3:9: auth.secrets.\"my.hook\".value: invalid type",
    );
}

#[test]
fn hmac() {
    let hook = "[auth.hmac.hook]\nsecret = \"${SECRET}\"\n";
    fails_at(
        &format!("{hook}header = \"X-Sig\"\nsigned = \"{{timestamp}}.{{body}}\"\n{ROUTE}"),
        "t.toml:4:10: auth.hmac.hook.signed: uses {timestamp} but no timestamp_header is set",
    );
    fails_at(
        &format!("{hook}header = \"X-Sig\"\nsigned = \"{{id}}.{{body}}\"\n{ROUTE}"),
        "t.toml:4:10: auth.hmac.hook.signed: uses {id} but no id_header is set",
    );
    fails_at(
        &format!("{hook}header = \"X-Sig\"\nsigned = \"{{ts}}\"\n{ROUTE}"),
        "t.toml:4:10: auth.hmac.hook.signed: unknown placeholder \"{ts}\"",
    );
    fails_at(
        &format!("{hook}algorithm = \"sha256\"\n{ROUTE}"),
        "t.toml:1:1: auth.hmac.hook.header: is required without a preset",
    );
    fails_at(
        &format!("{hook}preset = \"gitlab\"\n{ROUTE}"),
        "t.toml:3:10: auth.hmac.hook.preset: unknown variant `gitlab`",
    );
    fails_at(
        &format!("{hook}preset = \"github\"\nreplay = true\n{ROUTE}"),
        "t.toml:4:10: auth.hmac.hook.replay: needs a signed timestamp",
    );
    // Red-team round 2: a template without the body signs nothing a
    // replayer cannot keep while changing the body.
    fails_at(
        &format!(
            "{hook}header = \"X-Sig\"\ntimestamp_header = \"X-Ts\"\nsigned = \"{{timestamp}}\"\n{ROUTE}"
        ),
        "t.toml:5:10: auth.hmac.hook.signed: must include {body}",
    );
    // Red-team F1: a timestamp or id outside the signature can be replaced
    // by whoever replays a captured delivery.
    fails_at(
        &format!("{hook}header = \"X-Sig\"\ntimestamp_header = \"X-Ts\"\nreplay = true\n{ROUTE}"),
        "t.toml:4:20: auth.hmac.hook.timestamp_header: timestamp_header is set but the signed template does not include {timestamp}",
    );
    fails_at(
        &format!(
            "{hook}header = \"X-Sig\"\ntimestamp_header = \"X-Ts\"\nsigned = \"{{body}}\"\n{ROUTE}"
        ),
        "t.toml:5:10: auth.hmac.hook.signed: timestamp_header is set but the signed template does not include {timestamp}",
    );
    fails_at(
        &format!(
            "{hook}preset = \"standard-webhooks\"\nsigned = \"{{timestamp}}.{{body}}\"\n{ROUTE}"
        ),
        "t.toml:4:10: auth.hmac.hook.signed: id_header is set but the signed template does not include {id}",
    );
    fails_at(
        &format!("{hook}preset = \"github\"\nencoding = \"base32\"\n{ROUTE}"),
        "t.toml:4:12: auth.hmac.hook.encoding: unknown variant `base32`",
    );
    fails_at(
        &format!(
            "[auth.hmac.sw]\npreset = \"standard-webhooks\"\nsecrets = [\"whsec_MfKQ\", \"nope!\"]\n{ROUTE}"
        ),
        "t.toml:3:26: auth.hmac.sw.secrets[1]: must be \"whsec_\" followed by base64",
    );
    fails_at(
        "[[routes]]\nname = \"hooks\"\npath = \"/hooks\"\nauth = [\"hmac:stripe\"]\n",
        "t.toml:4:8: routes[0].auth: signed webhook \"stripe\" is not defined; add [auth.hmac.stripe]",
    );
}

#[test]
fn ratelimit() {
    fails_at(
        &format!("[ratelimit]\nbackend = \"redis\"\nredis_url = \"http://cache\"\n{ROUTE}"),
        "t.toml:3:13: ratelimit.redis_url: must start with redis:// or rediss://",
    );
    fails_at(
        &format!("[ratelimit]\nredis_cluster = [\"redis://a\", \"b\"]\n{ROUTE}"),
        "t.toml:2:31: ratelimit.redis_cluster[1]: must start with redis:// or rediss://",
    );
    fails_at(
        &format!("[ratelimit]\non_redis_error = \"panic\"\n{ROUTE}"),
        "t.toml:2:18: ratelimit.on_redis_error: unknown variant `panic`, expected one of `local`, `allow`, `deny`",
    );
    fails_at(
        &format!("[ratelimit]\nipv6_prefix = 0\n{ROUTE}"),
        "t.toml:2:15: ratelimit.ipv6_prefix: must be between 1 and 128",
    );
    fails_at(
        &format!("[ratelimit]\nredis_timeout = \"0s\"\n{ROUTE}"),
        "t.toml:2:17: ratelimit.redis_timeout: must be at least 1ms",
    );
}

#[test]
fn cors() {
    fails_at(
        &format!("[cors]\nallow_origins = [\"https://a.example/\"]\n{ROUTE}"),
        "t.toml:2:18: cors.allow_origins[0]: \"https://a.example/\" is not an origin",
    );
    fails_at(
        &format!("[cors]\nallow_origins = [\"*\"]\nallow_credentials = true\n{ROUTE}"),
        "t.toml:2:17: cors.allow_origins: [\"*\"] cannot be combined",
    );
    fails_at(
        &format!("[cors]\nallow_methods = [\"GET\", \"G T\"]\n{ROUTE}"),
        "t.toml:2:25: cors.allow_methods[1]: \"G T\" is not an HTTP method",
    );
    fails_at(
        &format!("[cors]\nexpose_headers = [\"X Id\"]\n{ROUTE}"),
        "t.toml:2:19: cors.expose_headers[0]: \"X Id\" is not a valid header name",
    );
    fails_at(
        &format!("[cors]\nmax_age = \"10\"\n{ROUTE}"),
        "t.toml:2:11: cors.max_age: duration \"10\" has no unit",
    );
}

#[test]
fn security_headers() {
    fails_at(
        &format!("[security_headers]\nx_frame_options = \"a\\u0001b\"\n{ROUTE}"),
        "t.toml:2:19: security_headers.x_frame_options: \"a\u{1}b\" is not a valid header value",
    );
    fails_at(
        &format!("[security_headers]\nx_frame_option = \"DENY\"\n{ROUTE}"),
        "t.toml:2:1: security_headers.x_frame_option: unknown field `x_frame_option`, expected one of `x_content_type_options`",
    );
    fails_at(
        &format!(
            "[security_headers]\nremove_response_headers = [\"Server\", \"X Powered\"]\n{ROUTE}"
        ),
        "t.toml:2:38: security_headers.remove_response_headers[1]: \"X Powered\" is not a valid header name",
    );
    fails_at(
        &format!("{ROUTE}security_headers = {{ referrer_policy = \"a\\u0001\" }}\n"),
        "t.toml:6:40: routes[0].security_headers.referrer_policy: \"a\u{1}\" is not a valid header value",
    );
}

#[test]
fn defaults() {
    fails_at(
        &format!("[defaults]\ntimeout = \"5\"\n{ROUTE}"),
        "t.toml:2:11: defaults.timeout: duration \"5\" has no unit",
    );
    fails_at(
        &format!("[defaults]\nauth = \"sometimes\"\n{ROUTE}"),
        "t.toml:2:8: defaults.auth: unknown auth mode",
    );
    fails_at(
        &format!(
            "[defaults]\nrate_limits = [{{ by = \"moon\", limit = 1, per = \"1s\" }}]\n{ROUTE}"
        ),
        "t.toml:2:23: defaults.rate_limits[0].by: unknown rate-limit key",
    );
}

#[test]
fn routes() {
    let head = "[[routes]]\nname = \"a\"\n";
    fails_at(
        &format!("{head}path = \"/a\"\nauth = \"none\"\ntimeout = \"30\"\n"),
        "t.toml:5:11: routes[0].timeout: duration \"30\" has no unit",
    );
    fails_at(
        &format!("{ROUTE}[[routes]]\nname = \"b\"\npath = \"/**/x\"\nauth = \"none\"\n"),
        "t.toml:8:8: routes[1].path: ",
    );
    fails_at(
        &format!("{head}path = \"/a\"\nauth = \"none\"\nmethods = [\"GET\", \"G T\"]\n"),
        "t.toml:5:19: routes[0].methods[1]: \"G T\" is not an HTTP method",
    );
    fails_at(
        &format!("{head}auth = \"none\"\n"),
        "t.toml:1:1: routes[0]: missing field `path`",
    );
    fails_at(
        &format!("{head}path = \"/a\"\nauth = \"none\"\nstrip_prefix = \"a\"\n"),
        "t.toml:5:16: routes[0].strip_prefix: \"a\" must start with \"/\"",
    );
    fails_at(
        &format!("{head}path = \"/a\"\nauth = \"none\"\nretry = \"yes\"\n"),
        "t.toml:5:9: routes[0].retry: invalid type",
    );
    fails_at(
        &format!("{head}path = \"/a\"\nauth = \"secret:nope\"\n"),
        "t.toml:4:8: routes[0].auth: secret \"nope\" is not defined",
    );
    // Inherited from [defaults]: placed at the route.
    fails_at(
        &format!("{ROUTE}[[routes]]\nname = \"b\"\npath = \"/b\"\n"),
        "t.toml:6:1: routes[1].auth: route \"b\" requires a JWT",
    );
    fails_at(
        &format!("[defaults]\nauth = \"none\"\n{ROUTE}[[routes]]\nname = \"all\"\npath = \"/b\"\n"),
        "t.toml:9:8: routes[1].name: route name \"all\" is used twice",
    );
    fails_at(
        &format!("[defaults]\nauth = \"none\"\n{ROUTE}[[routes]]\nname = \"b\"\npath = \"/b\"\n"),
        "t.toml:10:8: routes[1].path: route \"b\" (/b) can never match",
    );
    fails_at("", "t.toml: routes: no [[routes]]");
}

#[test]
fn route_rate_limits_and_tenant() {
    let head = "[[routes]]\nname = \"a\"\npath = \"/t/{id}/**\"\nauth = \"none\"\n";
    fails_at(
        &format!("{head}rate_limits = [{{ by = \"ip\", limit = 0, per = \"1s\" }}]\n"),
        "t.toml:5:37: routes[0].rate_limits[0].limit: must be at least 1",
    );
    fails_at(
        &format!("{head}rate_limits = [{{ by = \"ip\", limit = 1, per = \"1\" }}]\n"),
        "t.toml:5:46: routes[0].rate_limits[0].per: duration \"1\" has no unit",
    );
    fails_at(
        &format!("{head}rate_limits = [{{ by = \"ip\", limit = 1, per = \"1s\", brust = 2 }}]\n"),
        "t.toml:5:52: routes[0].rate_limits[0].brust: unknown field `brust`",
    );
    for hop in ["TE", "connection", "Upgrade", "Keep-Alive", "Proxy"] {
        let error = error_of(&format!(
            "{head}rate_limits = [{{ by = \"header:{hop}\", limit = 1, per = \"1s\" }}]\n"
        ));
        assert!(
            error.starts_with("t.toml:5:23: routes[0].rate_limits[0].by: ")
                && error.contains("is a hop-by-hop header palisade removes"),
            "{hop}: {error}"
        );
    }
    fails_at(
        &format!(
            "{JWT}[[routes]]\nname = \"a\"\npath = \"/t/{{id}}/**\"\ntenant = {{ param = \"tid\", claim = \"t\" }}\n"
        ),
        "t.toml:6:20: routes[0].tenant.param: \"tid\" is not a {param} of the path",
    );
    fails_at(
        &format!("{head}tenant = {{ param = \"id\", claim = \"t\" }}\n"),
        "t.toml:5:10: routes[0].tenant: tenant scoping needs a verified JWT claim",
    );
}

#[test]
fn a_syntax_error_still_has_its_place() {
    fails_at("[server\nlisten = \"x\"\n", "t.toml:1:8: ");
}

#[test]
fn unknown_tables_and_listed_values_from_a_variable() {
    fails_at(
        &format!("[sever]\nlisten = \"x\"\n{ROUTE}"),
        "t.toml:1:2: sever: unknown field `sever`",
    );
    // One string split on commas: the item is named, the string is the place.
    let text =
        format!("[cors]\nallow_origins = \"${{ORIGINS:-https://a.example,ftp://b}}\"\n{ROUTE}");
    fails_at(
        &text,
        "t.toml:2:17: cors.allow_origins[1]: \"ftp://b\" is not an origin",
    );
}

/// A zero timeout would answer every request (or connection) at once:
/// refused, naming the key, as `redis_timeout = "0s"` already was.
#[test]
fn zero_timeouts() {
    fails_at(
        &format!("{ROUTE}timeout = \"0s\"\n"),
        "t.toml:6:11: routes[0].timeout: must be at least 1ms",
    );
    fails_at(
        &format!("[defaults]\ntimeout = \"0ms\"\n{ROUTE}"),
        "t.toml:2:11: defaults.timeout: must be at least 1ms",
    );
    fails_at(
        &format!("[server]\nheader_read_timeout = \"0s\"\n{ROUTE}"),
        "t.toml:2:23: server.header_read_timeout: must be at least 1ms",
    );
    fails_at(
        &format!("[upstream]\nconnect_timeout = \"0s\"\n{ROUTE}"),
        "t.toml:2:19: upstream.connect_timeout: must be at least 1ms",
    );
    // Under a millisecond is no timeout either.
    fails_at(
        &format!("{ROUTE}timeout = \"400us\"\n"),
        "t.toml:6:11: routes[0].timeout: must be at least 1ms",
    );
    // defaults.timeout is checked even when every route sets its own.
    fails_at(
        &format!("[defaults]\ntimeout = \"1ns\"\n{ROUTE}timeout = \"5s\"\n"),
        "t.toml:2:11: defaults.timeout: must be at least 1ms",
    );
    // A timeout so long its deadline would overflow the clock.
    fails_at(
        &format!("{ROUTE}timeout = \"5000000000000000h\"\n"),
        "t.toml:6:11: routes[0].timeout: duration \"5000000000000000h\" is longer",
    );
}

#[test]
fn values_run_could_not_live_with() {
    fails_at(
        &format!("[server]\nworkers = 18446744073709551615\n{ROUTE}"),
        "t.toml:2:11: server.workers: must be at most 1024 (0 = one per core)",
    );
    // Session 20's red team: heads that
    // overflowed the buffer's size, a bucket span that overflowed the
    // limiter, a breaker window summed on every response, a queue the
    // channel refuses, keys fetched in a loop.
    fails_at(
        &format!("[server]\nmax_header_bytes = \"18446744073709551615B\"\n{ROUTE}"),
        "t.toml:2:20: server.max_header_bytes: must be at most \"1MiB\"",
    );
    fails_at(
        &format!("[server]\nmax_uri_bytes = \"2MiB\"\n{ROUTE}"),
        "t.toml:2:17: server.max_uri_bytes: must be at most \"1MiB\"",
    );
    fails_at(
        &format!(
            "{ROUTE}rate_limits = [{{ by = \"ip\", limit = 1, per = \"1h\", burst = 4294967295 }}]\n"
        ),
        "t.toml:6:60: routes[0].rate_limits[0].burst: per x burst / limit",
    );
    fails_at(
        &format!("[upstream.circuit_breaker]\nwindow = \"366d\"\n{ROUTE}"),
        "t.toml:2:10: upstream.circuit_breaker.window: must be at most \"1h\"",
    );
    fails_at(
        &format!("[tracing]\nqueue_size = 18446744073709551615\n{ROUTE}"),
        "t.toml:2:14: tracing.queue_size: must be between 1 and 1048576",
    );
    fails_at(
        &format!(
            "[auth.jwt]\nalgorithms = [\"ES256\"]\njwks_url = \"https://x.example/jwks.json\"\njwks_refresh = \"0s\"\n{ROUTE}"
        ),
        "t.toml:4:16: auth.jwt.jwks_refresh: must be at least 1s",
    );
}
