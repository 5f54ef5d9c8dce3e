use std::time::Duration;

use super::{Policy, load_str};
use crate::config::error::ConfigError;
use crate::config::expand::Env;

const MINIMAL: &str = r#"
[[routes]]
name = "all"
path = "/**"
auth = "none"
"#;

fn load(text: &str) -> Result<Policy, ConfigError> {
    load_str(
        text,
        "test.toml",
        &Env::from_pairs([
            ("SECRET", "s3cret-value"),
            ("ORIGINS", "https://a.example, https://b.example"),
        ]),
    )
}

fn err(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn development_logs_pretty_unless_a_format_is_set() {
    assert!(load(MINIMAL).unwrap().log.json);
    let dev = format!("[server]\nenvironment = \"development\"\n{MINIMAL}");
    let policy = load(&dev).unwrap();
    assert!(!policy.log.json);
    let shown = serde_json::to_value(&*policy.effective).unwrap();
    assert_eq!(shown["log"]["format"], "pretty");
    let json =
        format!("[server]\nenvironment = \"development\"\n[log]\nformat = \"json\"\n{MINIMAL}");
    assert!(load(&json).unwrap().log.json);
}

#[test]
fn minimal_config_gets_spec_defaults() {
    let policy = load(MINIMAL).unwrap();
    assert_eq!(policy.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(policy.admin_listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(policy.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(policy.server.max_header_bytes, 16 * 1024);
    assert_eq!(policy.server.max_uri_bytes, 8 * 1024);
    assert!(policy.server.production);
    assert_eq!(policy.upstream.authority.as_str(), "127.0.0.1:8000");
    let route = &policy.routes.routes()[0];
    assert_eq!(route.timeout, Duration::from_secs(30));
    assert_eq!(route.max_body, 1 << 20);
    assert!(route.auth.is_none());
    assert_eq!(policy.request_id.header, "x-request-id");
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = "[server]\nlisten = \"127.0.0.1:1\"\nlistne = \"x\"\n";
    let message = err(text);
    assert!(message.starts_with("test.toml:3:1:"), "{message}");
    assert!(message.contains("listne"), "{message}");
    let message =
        err("[[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\ntimout = \"1s\"\n");
    assert!(message.starts_with("test.toml:5:"), "{message}");
    assert!(message.contains("timout"), "{message}");
}

#[test]
fn bad_values_point_at_the_value() {
    let message = err("[server]\nheader_read_timeout = \"10\"\n");
    assert!(message.starts_with("test.toml:2:23:"), "{message}");
    assert!(message.contains("no unit"), "{message}");
    let message = err("[server]\nmax_header_bytes = \"lots\"\n");
    assert!(message.starts_with("test.toml:2:"), "{message}");
    let message = err(&format!("[server]\nlisten = \"nowhere\"\n{MINIMAL}"));
    assert!(
        message.contains("server.listen") && message.contains("test.toml:2:"),
        "{message}"
    );
    let message = err(&format!("[log]\nformat = \"xml\"\n{MINIMAL}"));
    assert!(
        message.starts_with("test.toml:2:10: log.format: ")
            && message.contains("`json` or `pretty`"),
        "{message}"
    );
}

#[test]
fn env_expansion_and_unset_variable() {
    let text = format!("[upstream]\nurl = \"${{UPSTREAM:-http://10.0.0.1:9000}}\"\n{MINIMAL}");
    let policy = load(&text).unwrap();
    assert_eq!(policy.upstream.authority.as_str(), "10.0.0.1:9000");
    let message = err(&format!(
        "[upstream]\nurl = \"${{NOT_SET_ANYWHERE}}\"\n{MINIMAL}"
    ));
    assert!(
        message.contains("NOT_SET_ANYWHERE") && message.starts_with("test.toml:2:"),
        "{message}"
    );
}

#[test]
fn lenient_secrets_only_for_secret_fields() {
    let text = format!(
        "[auth.secrets.hook]\nheader = \"X-Hook\"\nvalue = \"${{HOOK_SECRET}}\"\n{MINIMAL}"
    );
    let strict = load_str(&text, "t", &Env::default());
    assert!(strict.unwrap_err().to_string().contains("HOOK_SECRET"));
    let lenient = load_str(&text, "t", &Env::default().lenient_secrets()).unwrap();
    assert_eq!(lenient.unset_secret_vars, vec!["HOOK_SECRET".to_string()]);
    let non_secret = format!("[upstream]\nurl = \"${{UP}}\"\n{MINIMAL}");
    assert!(load_str(&non_secret, "t", &Env::default().lenient_secrets()).is_err());
}

#[test]
fn shadowed_route_is_an_error() {
    let text = r#"
[defaults]
auth = "none"
[[routes]]
name = "all"
path = "/**"
[[routes]]
name = "api"
path = "/api/**"
"#;
    let message = err(text);
    assert!(
        message.contains("routes[1]") && message.contains("\"all\""),
        "{message}"
    );
    assert!(message.starts_with("test.toml:9:"), "{message}");
}

#[test]
fn jwt_route_without_jwt_config_is_an_error() {
    let message = err("[[routes]]\nname = \"a\"\npath = \"/**\"\n");
    assert!(
        message.contains("[auth.jwt] is not configured") && message.contains("auth = \"none\""),
        "{message}"
    );
}

#[test]
fn undefined_secret_is_an_error() {
    let message = err("[[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"secret:nope\"\n");
    assert!(
        message.contains("secret \"nope\" is not defined"),
        "{message}"
    );
}

#[test]
fn secret_needs_exactly_one_of_value_or_values() {
    let base = format!("{MINIMAL}\n[auth.secrets.hook]\nheader = \"X-Hook\"\n");
    assert!(err(&base).contains("exactly one"));
    let both = format!("{base}value = \"${{SECRET}}\"\nvalues = [\"${{SECRET}}\"]\n");
    assert!(err(&both).contains("exactly one"));
    let empty = format!("{base}values = []\n");
    assert!(err(&empty).contains("must not be empty"));
}

#[test]
fn cors_wildcard_with_credentials_is_an_error() {
    let message = err(&format!(
        "[cors]\nallow_origins = [\"*\"]\nallow_credentials = true\n{MINIMAL}"
    ));
    assert!(
        message.contains("cors.allow_origins") && message.starts_with("test.toml:2:"),
        "{message}"
    );
    let message = err(&format!(
        "[cors]\nallow_origins = [\"https://a.example/\"]\n{MINIMAL}"
    ));
    assert!(message.contains("not an origin"), "{message}");
}

#[test]
fn cors_origins_from_a_comma_separated_variable() {
    let policy = load(&format!(
        "[cors]\nallow_origins = \"${{ORIGINS}}\"\n{MINIMAL}"
    ))
    .unwrap();
    let cors = policy.cors.unwrap();
    assert_eq!(cors.origins.len(), 2);
    assert_eq!(cors.origins[1], "https://b.example");
}

#[test]
fn tenant_param_must_be_captured() {
    let text = r#"
[auth.jwt]
hs256_secret = "${SECRET}"
[[routes]]
name = "r"
path = "/api/restaurants/{id}/**"
tenant = { param = "restaurant_id", claim = "restaurant_id" }
"#;
    assert!(err(text).contains("is not a {param}"));
}

#[test]
fn duplicate_route_names_are_an_error() {
    let text = "[defaults]\nauth = \"none\"\n[[routes]]\nname = \"a\"\npath = \"/x\"\n[[routes]]\nname = \"a\"\npath = \"/y\"\n";
    assert!(err(text).contains("used twice"));
}

#[test]
fn bad_patterns_and_methods() {
    assert!(
        err("[[routes]]\nname = \"a\"\npath = \"/**/x\"\nauth = \"none\"\n")
            .contains("last segment")
    );
    assert!(
        err("[[routes]]\nname = \"a\"\npath = \"/a/../b\"\nauth = \"none\"\n")
            .contains("routes[0].path")
    );
    assert!(
        err("[[routes]]\nname = \"a\"\npath = \"/a\"\nauth = \"none\"\nmethods = [\"G E T\"]\n")
            .contains("not an HTTP method")
    );
    assert!(
        err("[[routes]]\nname = \"a\"\npath = \"/a\"\nauth = \"none\"\nmethods = [\"connect\"]\n")
            .contains("routes[0].methods[0]: CONNECT is never served")
    );
    assert!(
        err("[[routes]]\nname = \"a\"\npath = \"/a\"\nauth = \"sometimes\"\n")
            .contains("unknown auth mode")
    );
    assert!(err("[[routes]]\nname = \"a\"\npath = \"/a\"\nauth = \"none\"\nrate_limits = [{ by = \"moon\", limit = 1, per = \"1s\" }]\n").contains("unknown rate-limit key"));
}

#[test]
fn no_routes_is_an_error() {
    assert!(err("").contains("no [[routes]]"));
}

#[test]
fn secrets_are_redacted_in_the_effective_config() {
    let text = format!(
        "[auth.jwt]\nhs256_secret = \"${{SECRET}}\"\n[auth.secrets.hook]\nheader = \"X-Hook\"\nvalue = \"${{SECRET}}\"\n{MINIMAL}"
    );
    let policy = load(&text).unwrap();
    let json = serde_json::to_string(&*policy.effective).unwrap();
    assert!(!json.contains("s3cret-value"), "{json}");
    assert!(json.contains("<redacted>"));
    assert!(!format!("{:?}", policy.effective).contains("s3cret-value"));
}

#[test]
fn route_overrides_and_inheritance() {
    let text = r#"
[defaults]
auth = "none"
timeout = "5s"
max_body = "2MiB"
rate_limits = [{ by = "ip", limit = 10, per = "1m" }]
[security_headers]
x_frame_options = "SAMEORIGIN"
[[routes]]
name = "special"
path = "/special"
timeout = "300ms"
max_body = "1KiB"
rate_limits = []
security_headers = { x_frame_options = "" }
strip_prefix = "/special"
[[routes]]
name = "rest"
path = "/**"
"#;
    let policy = load(text).unwrap();
    let [special, rest] = policy.routes.routes() else {
        panic!("two routes")
    };
    assert_eq!(special.timeout, Duration::from_millis(300));
    assert_eq!(special.max_body, 1024);
    assert!(special.rate_limits.is_empty());
    assert!(
        !special
            .security_headers
            .always()
            .iter()
            .any(|(n, _)| n == "x-frame-options")
    );
    assert_eq!(rest.timeout, Duration::from_secs(5));
    assert_eq!(rest.max_body, 2 << 20);
    assert_eq!(rest.rate_limits.len(), 1);
    assert_eq!(rest.rate_limits[0].burst, 10);
    assert!(
        rest.security_headers
            .always()
            .iter()
            .any(|(n, v)| n == "x-frame-options" && v == "SAMEORIGIN")
    );
}

#[test]
fn the_shipped_policy_compiles() {
    let text = include_str!("../../../policy.toml");
    let env = Env::from_pairs([("SUPABASE_JWT_SECRET", "x"), ("VAPI_WEBHOOK_SECRET", "y")]);
    let policy = load_str(text, "policy.toml", &env).unwrap();
    let names: Vec<&str> = policy.routes.routes().iter().map(|r| &*r.name).collect();
    assert_eq!(
        names,
        [
            "health",
            "embeddings",
            "admin",
            "restaurant",
            "vapi-webhook",
            "api"
        ]
    );
}

#[test]
fn the_readme_shows_the_shipped_policy_verbatim() {
    let readme = include_str!("../../../README.md");
    let policy = include_str!("../../../policy.toml");
    assert!(
        readme.contains(policy),
        "README.md must embed policy.toml unchanged; update both together"
    );
}

#[test]
fn upstream_max_connections_defaults_to_1024_and_is_shown() {
    let policy = load(MINIMAL).unwrap();
    assert_eq!(policy.upstream.max_connections, 1024);
    let shown = serde_json::to_value(&*policy.effective).unwrap();
    assert_eq!(shown["upstream"]["max_connections"], 1024);
    let text = format!("[upstream]\nmax_connections = 8\n{MINIMAL}");
    assert_eq!(load(&text).unwrap().upstream.max_connections, 8);
    let text = format!("[upstream]\nmax_connections = 0\n{MINIMAL}");
    assert!(err(&text).contains("upstream.max_connections"));
}

/// `policy::head::check_method` lets a method with no lower-case letter
/// through without comparing: it relies on every known method being in
/// upper case, as a route's `methods` are made at load.
#[test]
fn route_methods_are_known_in_upper_case() {
    let policy = load(
        "[[routes]]\nname = \"purge\"\npath = \"/cache/**\"\nauth = \"none\"\nmethods = [\"purge\", \"Get\"]\n",
    )
    .unwrap();
    let known = policy.routes.known_methods();
    assert!(known.iter().any(|m| m.as_str() == "PURGE"), "{known:?}");
    assert!(
        known
            .iter()
            .all(|m| !m.as_str().bytes().any(|b| b.is_ascii_lowercase())),
        "{known:?}"
    );
}
