//! `palisade test`, `palisade explain` and the change summary of `check
//! --against` and of a reload (SPEC §6.5), over the built binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::process::{Process, palisade, temp_dir};

/// A policy whose secret variable is never set in these tests: `test` and
/// `explain` generate it, so the tokens they sign still verify.
const POLICY: &str = r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:9"
[auth.jwt]
hs256_secret = "${PT_UNSET_JWT_SECRET}"
forward_claims = { sub = "X-User-Id", org = "X-Org" }
[ratelimit]
backend = "redis"
redis_url = "redis://127.0.0.1:9"
[[routes]]
name = "org"
path = "/orgs/{org}/**"
tenant = { param = "org", claim = "org" }
rate_limits = [{ by = "user", limit = 3, per = "1m" }]
[[routes]]
name = "open"
path = "/open"
methods = ["GET"]
auth = "none"
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str], dir: &Path) -> (Option<i32>, String, String) {
    let out: Output = palisade()
        .current_dir(dir)
        .env_remove("PT_UNSET_JWT_SECRET")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn test_cases(name: &str, cases: &str) -> (Option<i32>, String, String) {
    let dir = temp_dir(name);
    write(&dir, "policy.toml", POLICY);
    write(&dir, "cases.toml", cases);
    run(&["test", "--config", "policy.toml", "cases.toml"], &dir)
}

#[test]
fn the_shipped_policy_tests_pass_without_its_secrets() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = palisade()
        .current_dir(root)
        .env_remove("SUPABASE_JWT_SECRET")
        .env_remove("VAPI_WEBHOOK_SECRET")
        .args(["test", "--config", "policy.toml", "policy.test.toml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.trim_end().ends_with("passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SUPABASE_JWT_SECRET is not set"),
        "{stderr}"
    );
}

#[test]
fn a_passing_file_signs_tokens_forwards_claims_and_notes_the_memory_backend() {
    let (code, stdout, stderr) = test_cases(
        "pt-pass",
        r#"
[[case]]
name = "own org"
path = "/orgs/o1/items"
token = { sub = "u1", org = "o1" }
headers = { "X-Org" = "forged" }
expect = { status = 200, route = "org", upstream = true, upstream_headers = { "X-User-Id" = "u1", "X-Org" = "o1", "X-Vapi" = "" } }

[[case]]
name = "other org"
path = "/orgs/o2/items"
token = { sub = "u1", org = "o1" }
expect = { status = 403, route = "org", reason = "tenant", upstream = false }

[[case]]
name = "a target the HTTP library refuses"
path = "/open/a`b"
expect = { status = 400, reason = "unparseable", upstream = false }

[[case]]
name = "no token"
path = "/orgs/o1/items"
expect = { status = 401, reason = "missing", upstream = false, headers = { "WWW-Authenticate" = 'Bearer realm="palisade"' } }
"#,
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok   own org\n"), "{stdout}");
    assert!(stdout.ends_with("4 passed, 0 failed\n"), "{stdout}");
    assert!(
        stderr.contains("PT_UNSET_JWT_SECRET is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("memory backend"), "{stderr}");
}

#[test]
fn repeat_reaches_429_and_each_case_starts_with_full_buckets() {
    let case = |name: &str, repeat: u32, status: u16| {
        format!(
            "[[case]]\nname = \"{name}\"\npath = \"/orgs/o1/x\"\ntoken = {{ sub = \"u1\", org = \"o1\" }}\n\
             repeat = {repeat}\nexpect = {{ status = {status}, upstream = {} }}\n",
            status == 200
        )
    };
    let cases = format!(
        "{}{}{}",
        case("three pass", 3, 200),
        case("the fourth is limited", 4, 429),
        case("fresh buckets again", 3, 200)
    );
    let cases = cases.replace(
        "status = 429, upstream = false }",
        "status = 429, upstream = false, reason = \"rate-limited\", headers = { \"Retry-After\" = \"20\" } }",
    );
    let started = std::time::Instant::now();
    let (code, stdout, _) = test_cases("pt-repeat", &cases);
    assert_eq!(code, Some(0), "{stdout}");
    let hundred = "[[case]]\nname = \"a hundred\"\npath = \"/open\"\nrepeat = 100\nexpect = { status = 200 }\n";
    let (code, stdout, _) = test_cases("pt-hundred", hundred);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn a_failing_case_exits_4_with_expected_and_got() {
    let (code, stdout, _) = test_cases(
        "pt-fail",
        r#"
[[case]]
name = "passes"
path = "/open"
expect = { status = 200 }

[[case]]
name = "wrong"
path = "/orgs/o1/x"
token = { sub = "u1", org = "o2" }
expect = { status = 200, route = "open", upstream_headers = { "X-User-Id" = "u1" } }
"#,
    );
    assert_eq!(code, Some(4), "{stdout}");
    let fail = stdout
        .lines()
        .find(|l| l.starts_with("FAIL wrong: "))
        .unwrap();
    assert!(fail.contains("expected status 200, got 403"), "{fail}");
    assert!(
        fail.contains("expected route \"open\", got \"org\""),
        "{fail}"
    );
    assert!(
        fail.contains("expected upstream headers, got upstream not reached"),
        "{fail}"
    );
    assert!(stdout.ends_with("1 passed, 1 failed\n"), "{stdout}");
}

#[test]
fn a_malformed_cases_file_or_policy_exits_1_with_a_position() {
    let (code, stdout, stderr) = test_cases(
        "pt-malformed",
        "[[case]]\nname = \"x\"\npath = \"/open\"\nexpect = { status = 200, upstreem = true }\n",
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.starts_with("cases.toml:4:"), "{stderr}");
    assert!(stderr.contains("upstreem"), "{stderr}");
    let (code, _, stderr) = test_cases(
        "pt-malformed-repeat",
        "[[case]]\nname = \"x\"\npath = \"/open\"\nrepeat = -1\nexpect = {}\n",
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr.trim_end(),
        "cases.toml:4:10: case[0].repeat: write 1 to 100000"
    );
    let dir = temp_dir("pt-bad-policy");
    write(
        &dir,
        "policy.toml",
        "[[routes]]\nname = \"x\"\npathh = \"/**\"\n",
    );
    write(
        &dir,
        "cases.toml",
        "[[case]]\nname = \"x\"\npath = \"/\"\nexpect = {}\n",
    );
    let (code, _, stderr) = run(&["test", "--config", "policy.toml", "cases.toml"], &dir);
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("policy.toml:3:1: "), "{stderr}");
}

fn explain(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = temp_dir(name);
    write(&dir, "policy.toml", POLICY);
    let mut all = vec!["explain", "--config", "policy.toml"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run(&all, &dir);
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn explain_shows_route_auth_tenant_limits_and_upstream_headers() {
    let claims = r#"{"sub":"u1","org":"o1"}"#;
    let (code, out) = explain("ex-ok", &["GET", "/orgs/o1/a", "--token-claims", claims]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("#1 \"org\" /orgs/{org}/** (org=o1)"), "{out}");
    assert!(out.contains("auth        jwt: admitted"), "{out}");
    assert!(
        out.contains("{org}=o1 must equal claim org=o1: ok"),
        "{out}"
    );
    assert!(
        out.contains("rate limit  user:3/1m key palisade:{org}:user:"),
        "{out}"
    );
    assert!(out.contains(":user:u1"), "{out}");
    assert!(out.contains("x-user-id: u1"), "{out}");
    assert!(out.contains("x-org: o1"), "{out}");
    // The token it signed is a working credential: never printed.
    assert!(out.contains("authorization: Bearer <redacted>"), "{out}");
    assert!(!out.contains("eyJ"), "{out}");
    assert!(out.contains("timeout     30s"), "{out}");
    assert!(out.contains("max_body    1MiB"), "{out}");
    assert!(out.contains("result      200 from the upstream"), "{out}");
}

#[test]
fn explain_gives_refusal_reasons() {
    let claims = r#"{"sub":"u1","org":"o2"}"#;
    let (_, out) = explain(
        "ex-tenant",
        &["GET", "/orgs/o1/a", "--token-claims", claims],
    );
    assert!(
        out.contains("claim org=o2: refused, 403 (reason tenant)"),
        "{out}"
    );
    assert!(out.contains("upstream    not contacted"), "{out}");
    let (_, out) = explain("ex-missing", &["GET", "/orgs/o1/a"]);
    assert!(
        out.contains("auth        jwt: refused, 401 (reason missing)"),
        "{out}"
    );
    let (_, out) = explain("ex-path", &["GET", "/orgs/o1/%2e%2e/o2"]);
    assert!(out.contains("path        400:"), "{out}");
    assert!(
        out.contains("result      400 from palisade (path)"),
        "{out}"
    );
    let (_, out) = explain("ex-405", &["POST", "/open"]);
    assert!(
        out.contains("405: the path matches, the method does not (Allow: GET"),
        "{out}"
    );
    let (_, out) = explain("ex-404", &["GET", "/nowhere"]);
    assert!(out.contains("404: no route matches"), "{out}");
    // Refused by the head's checks before the path is read: the path line
    // gives that 400 and its reason, and no route is reached (the audit
    // saw a 405 route line beside a 400 result for `get`).
    for (name, method, target, reason) in [
        ("ex-case", "get", "/open", "method"),
        ("ex-target", "GET", "open", "host"),
    ] {
        let (_, out) = explain(name, &[method, target]);
        assert!(
            out.contains(&format!("path        400: the request head is refused before its path is read (reason {reason})")),
            "{out}"
        );
        assert!(out.contains("route       not reached"), "{out}");
        assert!(
            out.contains(&format!("result      400 from palisade ({reason})")),
            "{out}"
        );
    }
}

/// Red team, session 22: an absolute-form target was explained as a path
/// not starting with "/" while the server routed it by its path.
#[test]
fn explain_routes_an_absolute_form_target_by_its_path() {
    let (code, out) = explain(
        "ex-absolute",
        &[
            "GET",
            "http://api.example.com/orgs/o1/a",
            "-H",
            "Host: api.example.com",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("path        canonical /orgs/o1/a"), "{out}");
    assert!(out.contains("#1 \"org\" /orgs/{org}/**"), "{out}");
    assert!(
        out.contains("auth        jwt: refused, 401 (reason missing)"),
        "{out}"
    );
    assert!(out.contains("result      401 from palisade"), "{out}");
}

/// Black-box audit, session 16: a request the IP lists refuse was
/// explained as admitted by auth, which it never reaches.
#[test]
fn explain_says_an_ip_refusal_comes_before_auth() {
    let dir = temp_dir("ex-ip");
    let policy = POLICY.replace(
        "[[routes]]\nname = \"open\"",
        "[[routes]]\nname = \"office\"\npath = \"/office\"\nauth = \"none\"\nallow_ips = [\"10.0.0.0/8\"]\n[[routes]]\nname = \"open\"",
    );
    write(&dir, "policy.toml", &policy);
    let (code, out, err) = run(
        &["explain", "--config", "policy.toml", "GET", "/office"],
        &dir,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("auth        none: not reached (the client IP"),
        "{out}"
    );
    assert!(!out.contains("admitted"), "{out}");
    assert!(out.contains("result      403 from palisade (ip)"), "{out}");
}

/// Red team, session 21: behind a trusted proxy `explain` keyed a
/// `by = "ip"` limit by the proxy's address; the live server keys it by
/// the client `X-Forwarded-For` names.
#[test]
fn explain_keys_an_ip_limit_by_the_forwarded_client_behind_a_trusted_proxy() {
    let dir = temp_dir("ex-xff");
    let policy = POLICY
        .replace(
            "[server]\n",
            "[server]\ntrusted_proxies = [\"192.0.2.0/24\"]\n",
        )
        .replace(
            "path = \"/open\"\n",
            "path = \"/open\"\nrate_limits = [{ by = \"ip\", limit = 5, per = \"1m\" }]\n",
        );
    write(&dir, "policy.toml", &policy);
    let (code, out, err) = run(
        &[
            "explain",
            "--config",
            "policy.toml",
            "GET",
            "/open",
            "-H",
            "X-Forwarded-For: 203.0.113.7",
        ],
        &dir,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("ip:5/1m key "), "{out}");
    assert!(out.contains(":ip:203.0.113.7\n"), "{out}");
    assert!(!out.contains(":ip:192.0.2.10"), "{out}");
}

#[test]
fn explain_json_is_one_object_for_tools() {
    let claims = r#"{"sub":"u1","org":"o1"}"#;
    let (code, out) = explain(
        "ex-json",
        &[
            "GET",
            "/orgs/o1/a",
            "--token-claims",
            claims,
            "-H",
            "X-Org: forged",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let line = out.lines().find(|l| l.starts_with('{')).unwrap();
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["route"]["passes"], true);
    assert_eq!(json["tenant"]["passes"], true);
    let limit = json["rate_limits"][0]["summary"].as_str().unwrap();
    assert!(limit.ends_with(":user:u1"), "{limit}");
    assert_eq!(json["result"]["summary"], "200 from the upstream (stub)");
    let headers = json["upstream"]["headers"].as_array().unwrap();
    assert!(
        headers.iter().any(|h| h[0] == "x-org" && h[1] == "o1"),
        "{headers:?}"
    );
    assert!(!headers.iter().any(|h| h[1] == "forged"), "{headers:?}");
}

const OLD: &str = r#"
[upstream]
url = "http://127.0.0.1:9"
[defaults]
auth = "none"
[[routes]]
name = "a"
path = "/a/**"
[[routes]]
name = "gone"
path = "/gone"
"#;

const NEW: &str = r#"
[upstream]
url = "http://127.0.0.1:9"
[defaults]
auth = "none"
[[routes]]
name = "a"
path = "/a/**"
methods = ["GET"]
timeout = "5s"
rate_limits = [{ by = "ip", limit = 10, per = "1m" }]
[[routes]]
name = "b"
path = "/b"
"#;

#[test]
fn check_against_prints_the_route_changes() {
    let dir = temp_dir("check-against");
    write(&dir, "old.toml", OLD);
    write(&dir, "new.toml", NEW);
    let (code, stdout, stderr) = run(
        &["check", "--config", "new.toml", "--against", "old.toml"],
        &dir,
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("changes from old.toml:"), "{stdout}");
    assert!(
        stdout.contains("  removed route \"gone\" (was #2)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  changed route \"a\": methods * -> GET; limits - -> ip:10/1m; timeout 30s -> 5s"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("  added route \"b\" at #2: methods *, pattern /b"),
        "{stdout}"
    );
}

#[test]
fn a_reload_logs_the_same_changes() {
    let dir = temp_dir("reload-changes");
    let listen = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let path = write(&dir, "policy.toml", &format!("{listen}{OLD}"));
    let mut process = Process::start(&path);
    process.addresses();
    let next = dir.join("next.toml");
    std::fs::write(&next, format!("{listen}{NEW}")).unwrap();
    std::fs::rename(&next, &path).unwrap();
    let line = process.wait_for("config reloaded");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    let changes = json["changes"].as_str().unwrap_or_else(|| panic!("{line}"));
    assert!(
        changes.contains("removed route \"gone\" (was #2)"),
        "{changes}"
    );
    assert!(
        changes.contains("changed route \"a\": methods * -> GET"),
        "{changes}"
    );
    assert!(changes.contains("added route \"b\""), "{changes}");
    process.signal("TERM");
    assert_eq!(process.rest().0, Some(0));
}
