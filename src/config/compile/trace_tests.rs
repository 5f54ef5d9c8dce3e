//! `[tracing]` (SPEC §6.4): what it compiles to, and its errors named by
//! key and place like every other section's.

use super::error_tests::fails_at;
use super::load_str;
use crate::config::expand::Env;

const ROUTE: &str = "\n[[routes]]\nname = \"all\"\npath = \"/**\"\nauth = \"none\"\n";

fn tracing_of(section: &str) -> crate::observe::trace::TracingPolicy {
    let text = format!("{section}{ROUTE}");
    load_str(&text, "t.toml", &Env::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .tracing
}

#[test]
fn absent_means_off() {
    let policy = tracing_of("");
    assert!(!policy.active());
    assert!(!policy.propagate);
    assert!(policy.export.is_none());
}

#[test]
fn a_base_url_gets_the_traces_path() {
    let policy = tracing_of(
        "[tracing]\npropagate = true\notlp_endpoint = \"http://otel-collector:4318\"\nsample_ratio = 0.25\n",
    );
    assert!(policy.propagate);
    assert_eq!(policy.sample_ratio, 0.25);
    let export = policy.export.unwrap();
    assert_eq!(export.endpoint, "http://otel-collector:4318/v1/traces");
    assert_eq!(export.service_name, "palisade");
    assert_eq!(export.queue_size, 2048);
    for (given, used) in [
        ("https://c.example/", "https://c.example/v1/traces"),
        ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
        ("http://c:4318/otlp", "http://c:4318/otlp/v1/traces"),
    ] {
        let policy = tracing_of(&format!("[tracing]\notlp_endpoint = \"{given}\"\n"));
        assert_eq!(policy.export.unwrap().endpoint, used);
    }
    // An integer ratio is a number too.
    assert_eq!(
        tracing_of("[tracing]\nsample_ratio = 0\n").sample_ratio,
        0.0
    );
}

#[test]
fn errors_name_the_key_and_its_place() {
    fails_at(
        &format!("[tracing]\nsample_ratio = 1.5\n{ROUTE}"),
        "t.toml:2:16: tracing.sample_ratio: 1.5 is not a ratio",
    );
    fails_at(
        &format!("[tracing]\npropagate = true\nsample_ratio = -0.1\n{ROUTE}"),
        "t.toml:3:16: tracing.sample_ratio: -0.1 is not a ratio",
    );
    fails_at(
        &format!("[tracing]\nsample_ratio = \"half\"\n{ROUTE}"),
        "t.toml:2:16: tracing.sample_ratio: invalid type",
    );
    fails_at(
        &format!("[tracing]\notlp_endpoint = \"otel-collector:4318\"\n{ROUTE}"),
        "t.toml:2:17: tracing.otlp_endpoint: \"otel-collector:4318\" must use http or https",
    );
    fails_at(
        &format!("[tracing]\notlp_endpoint = \"grpc://c:4317\"\n{ROUTE}"),
        "t.toml:2:17: tracing.otlp_endpoint: \"grpc://c:4317\" must use http or https",
    );
    fails_at(
        &format!("[tracing]\notlp_endpoint = \"not a url\"\n{ROUTE}"),
        "t.toml:2:17: tracing.otlp_endpoint: \"not a url\" is not a URL",
    );
    fails_at(
        &format!("[tracing]\notlp_endpoint = \"http://c:4318/?key=x\"\n{ROUTE}"),
        "t.toml:2:17: tracing.otlp_endpoint:",
    );
    fails_at(
        &format!("[tracing]\nqueue_size = 0\n{ROUTE}"),
        "t.toml:2:14: tracing.queue_size: must be between 1 and 1048576",
    );
    fails_at(
        &format!("[tracing]\nexport_timeout = \"0s\"\n{ROUTE}"),
        "t.toml:2:18: tracing.export_timeout: must be at least 1ms",
    );
    fails_at(
        &format!("[tracing]\nservice_name = \"\"\n{ROUTE}"),
        "t.toml:2:16: tracing.service_name: must not be empty",
    );
    fails_at(
        &format!("[tracing]\npropagte = true\n{ROUTE}"),
        "t.toml:2:1: tracing.propagte: unknown field `propagte`",
    );
}

#[test]
fn the_endpoint_is_redacted_in_errors() {
    fails_at(
        &format!("[tracing]\notlp_endpoint = \"ftp://user:hunter2@c:4318\"\n{ROUTE}"),
        "t.toml:2:17: tracing.otlp_endpoint:",
    );
    let text = format!("[tracing]\notlp_endpoint = \"ftp://user:hunter2@c:4318\"\n{ROUTE}");
    let message = super::error_tests::error_of(&text);
    assert!(!message.contains("hunter2"), "{message}");
}
