//! The binary as operators run it: `check`, exit codes, JSON logs with the
//! access line, `token`, and SIGTERM draining.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http::StatusCode;
use support::process::{Process, palisade, temp_dir, write_config};
use support::{HOOK_SECRET, JWT_SECRET, TestUpstream, get, get_with, now, send, token};

#[test]
fn check_accepts_the_shipped_policy_and_prints_the_routes() {
    let out = palisade()
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policy.toml"),
        ])
        .env("SUPABASE_JWT_SECRET", "x")
        .env("VAPI_WEBHOOK_SECRET", "y")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["health", "embeddings", "restaurant", "vapi-webhook", "api"] {
        assert!(stdout.contains(name), "{stdout}");
    }
    assert!(stdout.contains("/api/restaurants/{restaurant_id}/**"));
    assert!(stdout.contains("256KiB"));
}

/// Runs `palisade check` on a config; returns the exit code, stderr and path.
fn check(name: &str, text: &str) -> (Option<i32>, String, std::path::PathBuf) {
    let path = write_config(&temp_dir(name), text);
    let out = palisade()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
    )
}

#[test]
fn check_names_a_misspelt_key_and_its_line() {
    let (code, stderr, path) = check(
        "misspelt",
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[upstream]\nurll = \"http://x\"\n",
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with(&format!(
            "{}:5:1: upstream.urll: unknown field `urll`",
            path.display()
        )),
        "{stderr}"
    );
}

/// SPEC §1: every error is `PATH:LINE:COL: KEY: message`, also those found
/// after parsing (cross-key checks, references, patterns).
#[test]
fn check_places_every_error_at_its_key() {
    let route = "[[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n";
    let cases = [
        (
            format!("{route}timeout = \"30\"\n"),
            "5:11: routes[0].timeout: duration \"30\" has no unit",
        ),
        (
            format!("[server]\nmax_uri_bytes = \"1B\"\n{route}"),
            "2:17: server.max_uri_bytes: must be at least",
        ),
        (
            format!("[log]\nformat = \"xml\"\n{route}"),
            "2:10: log.format: unknown variant `xml`, expected `json` or `pretty`",
        ),
        (
            route.replace("\"none\"", "\"secret:hook\""),
            "4:8: routes[0].auth: secret \"hook\" is not defined",
        ),
        (
            format!("{route}rate_limits = [{{ by = \"ip\", limit = 0, per = \"1s\" }}]\n"),
            "5:37: routes[0].rate_limits[0].limit: must be at least 1",
        ),
        // Syntax errors too: the key is read from the line toml refused.
        (
            format!("[server]\nworkers = 1\nworkers = 2\n{route}"),
            "3:1: server.workers: duplicate key",
        ),
        (
            format!("[server]\nworkers = \n{route}"),
            "2:11: server.workers: string values must be quoted",
        ),
        (
            format!("{route}{route}path = /x\n"),
            "9:8: routes[1].path: ",
        ),
        // After a multi-line array, syntax errors still name their key.
        (
            format!("[cors]\nallow_origins = [\n\"https://a.example\"\n]\n{route}timeout = \"1s\n"),
            "9:14: routes[0].timeout: invalid basic string",
        ),
        (
            format!("[cors]\nallow_origins = [\n\"https://a.example\"\n]\n{route}auth = \"jwt\"\n"),
            "9:1: routes[0].auth: duplicate key",
        ),
        // A word `EnvFilter` would take for a target, logging nothing.
        (
            format!("[log]\nlevel = \"verbose\"\n{route}"),
            "2:9: log.level: \"verbose\" is not a log level or filter",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let (code, stderr, path) = check(&format!("placed-{i}"), text);
        assert_eq!(code, Some(1), "{stderr}");
        let expected = format!("{}:{expected}", path.display());
        assert!(
            stderr.starts_with(&expected),
            "expected {expected}\n got {stderr}"
        );
    }
}

/// `check` refuses what `run` would refuse as it starts: TLS files,
/// the upstream's CA file and Redis URLs the client cannot use. Each used
/// to pass `check` and stop `run` without a position.
#[test]
fn check_refuses_what_run_would() {
    let route = "[[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n";
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let cases = [
        (
            format!("[server]\ntls = {{ cert = \"nope.crt\", key = \"nope.key\" }}\n{route}"),
            "2:16: server.tls.cert: cert ",
        ),
        (
            format!(
                "[server]\ntls = {{ cert = \"{fixtures}/tls.crt\", key = \"{fixtures}/tls.crt\" }}\n{route}"
            ),
            "server.tls.key: key ",
        ),
        (
            format!("[upstream]\nurl = \"https://127.0.0.1:1\"\nca_file = \"nope.pem\"\n{route}"),
            "3:11: upstream.ca_file: ",
        ),
        (
            format!(
                "[ratelimit]\nbackend = \"redis\"\nredis_url = \"redis://u:pw-in-url@127.0.0.1:notaport\"\n{route}"
            ),
            "3:13: ratelimit.redis_url: not a Redis URL",
        ),
        (
            format!(
                "[ratelimit]\nbackend = \"redis\"\nredis_cluster = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:bad\"]\n{route}"
            ),
            "3:44: ratelimit.redis_cluster[1]: not a Redis URL",
        ),
        // Values that panicked `run` (session 20's red team).
        (
            format!("[server]\nmax_header_bytes = \"18446744073709551615B\"\n{route}"),
            "2:20: server.max_header_bytes: must be at most",
        ),
        (
            format!("[server]\nworkers = 18446744073709551615\n{route}"),
            "2:11: server.workers: must be at most 1024",
        ),
        (
            format!("{route}timeout = \"5000000000000000h\"\n"),
            "5:11: routes[0].timeout: duration",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let (code, stderr, path) = check(&format!("run-would-{i}"), text);
        assert_eq!(code, Some(1), "{text}\n{stderr}");
        assert!(
            stderr.starts_with(&format!("{}:", path.display())) && stderr.contains(expected),
            "expected {expected}\n got {stderr}"
        );
        assert!(!stderr.contains("pw-in-url"), "{stderr}");
    }
    let good = format!(
        "[server]\ntls = {{ cert = \"{fixtures}/tls.crt\", key = \"{fixtures}/tls.key\" }}\n\
         [upstream]\nurl = \"https://127.0.0.1:1\"\nca_file = \"{fixtures}/ca.crt\"\n{route}"
    );
    let (code, stderr, _) = check("run-would-ok", &good);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn check_fails_on_an_unset_variable() {
    let text = "[upstream]\nurl = \"${PALISADE_TEST_UNSET_VAR}\"\n[[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n";
    let (code, stderr, _) = check("unset", text);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("PALISADE_TEST_UNSET_VAR"), "{stderr}");
}

#[test]
fn check_refuses_a_signed_template_without_its_header_and_passes_an_unset_whsec() {
    let route = "[[routes]]\nname = \"h\"\npath = \"/h\"\nauth = \"hmac:hook\"\n";
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth.hmac.hook]\nsecret = \"x\"\n\
         header = \"X-Sig\"\nsigned = \"{{timestamp}}.{{body}}\"\n{route}"
    );
    let (code, stderr, _) = check("hmac-template", &text);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(":6:10: auth.hmac.hook.signed: uses {timestamp} but no timestamp_header"),
        "{stderr}"
    );
    let text = text.replace(
        "signed = \"{timestamp}.{body}\"",
        "signed = \"{id}.{body}\"",
    );
    let (code, stderr, _) = check("hmac-id", &text);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("uses {id} but no id_header"), "{stderr}");
    // A standard-webhooks secret not set where `check` runs: a warning.
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth.hmac.hook]\npreset = \"standard-webhooks\"\n\
         secret = \"${{PALISADE_TEST_UNSET_WHSEC}}\"\n{route}"
    );
    let (code, stderr, _) = check("hmac-unset", &text);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("PALISADE_TEST_UNSET_WHSEC"), "{stderr}");
}

#[test]
fn check_passes_an_unset_redis_url_secret_with_a_warning() {
    let text = "[upstream]\nurl = \"http://127.0.0.1:1\"\n[ratelimit]\nbackend = \"redis\"\n\
                redis_url = \"${PALISADE_TEST_UNSET_REDIS_URL}\"\n[[routes]]\nname = \"a\"\n\
                path = \"/**\"\nauth = \"none\"\n";
    let (code, stderr, _) = check("unset-redis", text);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("PALISADE_TEST_UNSET_REDIS_URL"),
        "{stderr}"
    );
    // A set value is still checked for its scheme.
    let text = text.replace("${PALISADE_TEST_UNSET_REDIS_URL}", "http://redis");
    let (code, stderr, _) = check("bad-redis", &text);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("ratelimit.redis_url"), "{stderr}");
}

#[test]
fn usage_error_exits_2() {
    let out = palisade().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = palisade().args(["token"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--sub is required");
    let out = palisade()
        .args(["--log-level", "warning", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a level that logs nothing");
}

#[test]
fn config_error_on_run_exits_1() {
    let dir = temp_dir("badrun");
    let path = write_config(&dir, "[server]\nlisten = \"not-an-address\"\n");
    let out = palisade().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn taken_port_exits_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = temp_dir("taken");
    let text = format!(
        "[server]\nlisten = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nname = \"a\"\npath = \"/**\"\nauth = \"none\"\n",
        taken.local_addr().unwrap()
    );
    let path = write_config(&dir, &text);
    let out = palisade()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn token_mints_a_verifiable_hs256_jwt() {
    let out = palisade()
        .args([
            "token",
            "--sub",
            "user-1",
            "--claim",
            "restaurant_id=r9",
            "--ttl",
            "5m",
            "--secret-env",
            "MY_SECRET",
        ])
        .env("MY_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "user-1");
    assert_eq!(data.claims["restaurant_id"], "r9");
    let exp = data.claims["exp"].as_u64().unwrap();
    assert!(exp > now() && exp <= now() + 300);
    // The secret's variable unset: the environment is at fault, not the
    // command line: 1 (config error), as `run` exits, not 2 (usage).
    let out = palisade()
        .args([
            "token",
            "--sub",
            "u",
            "--secret-env",
            "PALISADE_TEST_UNSET_SECRET",
        ])
        .env_remove("PALISADE_TEST_UNSET_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PALISADE_TEST_UNSET_SECRET"));
}

fn process_config(upstream: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{upstream}\"\n[[routes]]\nname = \"all\"\npath = \"/**\"\nauth = \"none\"\n"
    )
}

#[tokio::test]
async fn json_logs_with_access_line_and_request_id_on_every_request_line() {
    let upstream = TestUpstream::start().await;
    let dir = temp_dir("logs");
    let path = write_config(&dir, &process_config(upstream.addr, ""));
    let mut process = Process::start(&path);
    let (proxy, _admin) = process.addresses();
    let reply = get_with(
        proxy,
        "/hello?x=1",
        &[
            ("x-request-id", "log-test-id-1"),
            ("cookie", "session=do-not-log"),
            ("authorization", "Bearer do-not-log-either"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let closed_path = get_with(proxy, "/%2e%2e/etc", &[("x-request-id", "log-test-id-2")]).await;
    assert_eq!(closed_path.status, StatusCode::BAD_REQUEST);
    let access = process.wait_for("log-test-id-2");
    process.signal("TERM");
    let (code, lines) = process.rest();
    assert_eq!(code, Some(0));
    let mut access_lines = Vec::new();
    for line in &lines {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(!line.contains("do-not-log"), "a secret was logged: {line}");
        if json["target"] == "palisade::access" {
            access_lines.push(json);
        }
    }
    assert!(access.contains("log-test-id-2"));
    let first = access_lines
        .iter()
        .find(|l| l["request_id"] == "log-test-id-1")
        .expect("access line");
    for field in [
        "request_id",
        "method",
        "path",
        "route",
        "status",
        "duration_ms",
        "upstream_ms",
        "client_ip",
        "user",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(
            first.get(field).is_some(),
            "access line lacks {field}: {first}"
        );
    }
    // A field that does not apply is there as null (SPEC §5 lists them all).
    assert_eq!(first["user"], serde_json::Value::Null, "{first}");
    let refused = access_lines
        .iter()
        .find(|l| l["request_id"] == "log-test-id-2")
        .expect("the refused request's access line");
    assert_eq!(refused["upstream_ms"], serde_json::Value::Null, "{refused}");
    assert!(refused.get("upstream_ms").is_some(), "{refused}");
    assert_eq!(first["status"], 200);
    assert_eq!(first["route"], "all");
    assert_eq!(first["client_ip"], "127.0.0.1");
    // The rejected request is logged once: its access line names the
    // problem and carries its id; no other line repeats it.
    let rejected: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"problem\":\"bad-path\""))
        .collect();
    assert_eq!(rejected.len(), 1, "{lines:?}");
    assert!(rejected[0].contains("\"request_id\":\"log-test-id-2\""));
    assert!(rejected[0].contains("\"status\":400"));
    assert_eq!(
        lines.iter().filter(|l| l.contains("log-test-id-2")).count(),
        1,
        "one line for the rejected request: {lines:?}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let upstream = TestUpstream::start().await;
    let dir = temp_dir("drain");
    let path = write_config(&dir, &process_config(upstream.addr, ""));
    let mut process = Process::start(&path);
    let (proxy, admin) = process.addresses();
    assert_eq!(get(admin, "/readyz").await.status, StatusCode::OK);
    let mut arrived = upstream.notify_first_body_bytes();
    let in_flight = tokio::spawn(async move {
        let req = http::Request::post("/slow")
            .header("x-test-delay-ms", "1500")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"payload",
            )))
            .unwrap();
        send(proxy, req).await
    });
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .unwrap();
    process.signal("TERM");
    process.wait_for("draining connections");
    // The admin listener keeps answering during the drain, with 503.
    let ready = get(admin, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["status"], "draining");
    // New connections are refused.
    assert!(tokio::net::TcpStream::connect(proxy).await.is_err());
    // The in-flight request finishes.
    assert_eq!(in_flight.await.unwrap().status, StatusCode::OK);
    let (code, _) = process.rest();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn without_access_log_a_rejection_is_still_logged_once() {
    let upstream = TestUpstream::start().await;
    let dir = temp_dir("no-access-log");
    let config =
        process_config(upstream.addr, "").replace("[admin]", "[log]\naccess_log = false\n[admin]");
    let path = write_config(&dir, &config);
    let mut process = Process::start(&path);
    let (proxy, _admin) = process.addresses();
    let served = get_with(proxy, "/fine", &[("x-request-id", "quiet-ok")]).await;
    assert_eq!(served.status, StatusCode::OK);
    let refused = get_with(proxy, "/a/%2e%2e/b", &[("x-request-id", "quiet-refused")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    process.wait_for("quiet-refused");
    process.signal("TERM");
    let (code, lines) = process.rest();
    assert_eq!(code, Some(0));
    assert!(
        !lines.iter().any(|l| l.contains("quiet-ok")),
        "no access line: {lines:?}"
    );
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("quiet-refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{lines:?}");
    assert!(refused[0].contains("request rejected"), "{refused:?}");
}

#[tokio::test]
async fn tokens_and_secrets_never_appear_in_output_at_any_level() {
    let upstream = TestUpstream::start().await;
    let dir = temp_dir("secrecy");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nenvironment = \"development\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n\
         [auth.jwt]\nhs256_secret = \"${{JWT_SECRET}}\"\nsources = [\"header:Authorization\", \"cookie:sb-access-token\"]\n\
         [auth.secrets.hook]\nheader = \"X-Hook-Secret\"\nvalue = \"${{HOOK_SECRET}}\"\n\
         [[routes]]\nname = \"hook\"\npath = \"/hook\"\nauth = \"secret:hook\"\n[[routes]]\nname = \"api\"\npath = \"/**\"\n",
        upstream.addr
    );
    let path = write_config(&dir, &text);
    for level in ["trace", "debug", "info"] {
        let mut child = palisade()
            // Development logs pretty unless told otherwise; JSON is read here.
            .args([
                "run",
                "--log-format",
                "json",
                "--log-level",
                level,
                "--config",
            ])
            .arg(&path)
            .env("JWT_SECRET", JWT_SECRET)
            .env("HOOK_SECRET", HOOK_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = BufReader::new(stream).read_to_string_lossy(&mut text);
                text
            })
        };
        let (tx, rx) = mpsc::channel::<String>();
        let out_thread = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let err_thread = collect(Box::new(stderr));
        let line = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("listening line");
            if line.contains("palisade listening") {
                break line;
            }
        };
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let proxy: std::net::SocketAddr = json["proxy"].as_str().unwrap().parse().unwrap();
        let good = token(serde_json::json!({"sub": "u", "exp": now() + 600}));
        let expired = token(serde_json::json!({"sub": "u", "exp": now() - 600}));
        let cookie = format!("sb-access-token={expired}");
        get_with(proxy, "/a", &[("authorization", &format!("Bearer {good}"))]).await;
        get_with(
            proxy,
            "/a",
            &[("authorization", &format!("Bearer {expired}"))],
        )
        .await;
        get_with(proxy, "/a", &[("cookie", &cookie)]).await;
        get_with(proxy, "/hook", &[("x-hook-secret", HOOK_SECRET)]).await;
        get_with(proxy, "/hook", &[("x-hook-secret", "wrong-secret-attempt")]).await;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let output = out_thread.join().unwrap() + &err_thread.join().unwrap();
        assert!(
            output.contains("\"reason\":\"expired\""),
            "{level}: the failures were logged"
        );
        for secret in [
            good.as_str(),
            expired.as_str(),
            JWT_SECRET,
            HOOK_SECRET,
            "wrong-secret-attempt",
        ] {
            assert!(
                !output.contains(secret),
                "{level}: a secret appeared in the output"
            );
        }
        // Not even a recognisable piece of a token.
        let signature = good.rsplit('.').next().unwrap();
        assert!(
            !output.contains(signature),
            "{level}: a token signature appeared"
        );
    }
}

trait ReadLossy {
    fn read_to_string_lossy(&mut self, out: &mut String) -> std::io::Result<usize>;
}

impl<R: std::io::Read> ReadLossy for BufReader<R> {
    fn read_to_string_lossy(&mut self, out: &mut String) -> std::io::Result<usize> {
        let mut bytes = Vec::new();
        let n = std::io::Read::read_to_end(self, &mut bytes)?;
        out.push_str(&String::from_utf8_lossy(&bytes));
        Ok(n)
    }
}

#[test]
fn demo_serves_and_its_printed_curl_lines_work() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is needed to check the demo's printed lines");
    }
    let mut child = palisade()
        .args([
            "demo",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policy.toml"),
        ])
        .env_remove("SUPABASE_JWT_SECRET")
        .env_remove("VAPI_WEBHOOK_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo banner");
        let done = line.contains("Ctrl-C stops it");
        banner.push(line);
        if done {
            break;
        }
    }
    let text = banner.join("\n");
    assert!(text.contains("generated development values"), "{text}");
    let exports: Vec<String> = banner
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("export "))
        .map(String::from)
        .collect();
    assert!(
        exports.iter().any(|e| e.starts_with("export TOKEN=")),
        "{text}"
    );
    let curls: Vec<(String, Option<String>)> = banner
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl "))
        .map(|l| match l.split_once("  # ") {
            Some((cmd, comment)) => (cmd.trim().to_string(), Some(comment.to_string())),
            None => (l.to_string(), None),
        })
        .collect();
    assert!(curls.len() >= 6, "{text}");
    for (cmd, comment) in &curls {
        let script = format!("{}\n{cmd}", exports.join("\n"));
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        let output = String::from_utf8_lossy(&out.stdout).to_string();
        if cmd.contains("/metrics") {
            assert!(
                output.contains("palisade_requests_total"),
                "{cmd}: {output}"
            );
            continue;
        }
        let status: u16 = output
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{cmd}: {output}"));
        match comment.as_deref() {
            Some(c) if c.starts_with("401") => assert_eq!(status, 401, "{cmd}"),
            Some(c) if c.starts_with("400") => assert_eq!(status, 400, "{cmd}"),
            _ => assert_eq!(status, 200, "{cmd}: {output}"),
        }
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn palisade_config_names_the_default_file() {
    let path = write_config(
        &temp_dir("envdefault"),
        "[server]\nlisten = \"127.0.0.1:0\"\nlisten = \"twice\"\n",
    );
    let out = palisade()
        .arg("check")
        .env("PALISADE_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&path.display().to_string()),
        "the error names the file from $PALISADE_CONFIG: {stderr}"
    );
}
