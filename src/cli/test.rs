//! `palisade test [--config PATH] CASES.toml...` (SPEC §6.5): runs each
//! case through the real pipeline in-process (`cli::harness`) and compares
//! what happened with what the case expects. One line per case, then
//! `N passed, M failed`; exit 0 all pass, 4 any fails, 1 on a config error
//! in the policy or a cases file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use http::HeaderMap;
use serde_json::{Map, Value};

use super::cases::{self, Case, Expect};
use super::harness::{Harness, Observed};
use super::token::{mint_claims, secret_var_of};
use super::{Cli, EXIT_CONFIG};
use crate::config::{self, ConfigError, Env, Policy};

/// Exit code: a `palisade test` case failed.
pub const EXIT_TEST_FAILED: u8 = 4;

/// Arguments of `palisade test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Cases files (`[[case]]` tables, SPEC §6.5).
    #[arg(required = true, value_name = "CASES.toml")]
    pub files: Vec<PathBuf>,
}

/// The policy under test with the environment it was loaded with
/// (unset variables filled with generated values, as `demo` does).
pub struct Loaded {
    /// The compiled policy.
    pub policy: Policy,
    /// The policy's text (for `iss`/`aud` and the secret's variable).
    pub text: String,
    /// The environment, generated values included.
    pub env: Env,
    /// Variables that were unset and got generated values.
    pub generated: Vec<String>,
}

/// Loads the policy for `test` / `explain`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::plain(&label, format!("cannot read the config file: {e}")))?;
    let (env, generated) = super::demo::dev_env(&text);
    let policy = config::load_text_at(path, &text, &env)?;
    Ok(Loaded {
        policy,
        text,
        env,
        generated: generated.into_keys().collect(),
    })
}

impl Loaded {
    /// Signs claims with the policy's HS256 secret.
    pub fn sign(&self, claims: Map<String, Value>) -> Result<String, String> {
        let var = secret_var_of(&self.text)
            .ok_or("the policy has no auth.jwt.hs256_secret = \"${VAR}\" to sign the token with")?;
        let secret = self
            .env
            .get(&var)
            .ok_or_else(|| format!("{var} is not set"))?;
        mint_claims(
            secret.as_bytes(),
            claims,
            Duration::from_secs(3600),
            &self.text,
        )
    }
}

/// Says on stderr what was simulated rather than real.
pub fn notes(generated: &[String], redis_replaced: bool) {
    for var in generated {
        eprintln!("note: {var} is not set; a generated value is used");
    }
    if redis_replaced {
        eprintln!(
            "note: the policy's rate limits use Redis; they are tested with the memory backend"
        );
    }
}

/// Runs `test`.
pub fn test(cli: &Cli, args: &TestArgs) -> ExitCode {
    let loaded = match load(&cli.config_path()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut all = Vec::new();
    for file in &args.files {
        match read_cases(file, &loaded) {
            Ok(cases) => all.extend(cases),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Loaded {
        policy, generated, ..
    } = loaded;
    runtime.block_on(run_all(policy, &generated, all))
}

fn read_cases(file: &Path, loaded: &Loaded) -> Result<Vec<Case>, ConfigError> {
    let label = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError::plain(&label, format!("cannot read the cases file: {e}")))?;
    cases::parse(&text, &label, &loaded.env, &|claims| loaded.sign(claims))
}

async fn run_all(policy: Policy, generated: &[String], cases: Vec<Case>) -> ExitCode {
    let harness = match Harness::new(policy).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("palisade test: {e}");
            return ExitCode::FAILURE;
        }
    };
    notes(generated, harness.redis_replaced);
    let (mut passed, mut failed) = (0, 0);
    for case in &cases {
        let problems = run_case(&harness, case).await;
        if problems.is_empty() {
            passed += 1;
            println!("ok   {}", case.name);
        } else {
            failed += 1;
            println!("FAIL {}: {}", case.name, problems.join("; "));
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_TEST_FAILED)
    }
}

/// Sends the case `repeat` times from full buckets; what the last response
/// got wrong, one entry per expectation.
pub async fn run_case(harness: &Harness, case: &Case) -> Vec<String> {
    harness.reset_limits();
    let mut last = None;
    for _ in 0..case.repeat {
        match harness.send(&case.probe).await {
            Ok(observed) => last = Some(observed),
            Err(e) => return vec![e],
        }
    }
    match last {
        Some(observed) => compare(&case.expect, &observed),
        None => vec!["nothing was sent".into()],
    }
}

/// Every expectation `observed` misses, as `expected X, got Y`.
pub fn compare(expect: &Expect, observed: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    let shown = |v: &Option<String>| v.as_ref().map_or("none".into(), |v| format!("{v:?}"));
    if let Some(status) = expect.status
        && status != observed.status
    {
        out.push(format!(
            "expected status {}, got {}",
            status.as_u16(),
            observed.status.as_u16()
        ));
    }
    if let Some(route) = &expect.route
        && Some(route) != observed.route.as_ref()
    {
        let got = shown(&observed.route);
        out.push(format!("expected route {route:?}, got {got}"));
    }
    if let Some(reason) = &expect.reason
        && Some(reason) != observed.reason.as_ref()
    {
        let got = shown(&observed.reason);
        out.push(format!("expected reason {reason:?}, got {got}"));
    }
    let reached = observed.upstream.is_some();
    if let Some(upstream) = expect.upstream
        && upstream != reached
    {
        let said = |r: bool| if r { "reached" } else { "not reached" };
        out.push(format!(
            "expected upstream {}, got {}",
            said(upstream),
            said(reached)
        ));
    }
    if !expect.upstream_headers.is_empty() {
        match &observed.upstream {
            Some(received) => headers_differ(
                "upstream header",
                &expect.upstream_headers,
                &received.headers,
                &mut out,
            ),
            None => out.push("expected upstream headers, got upstream not reached".into()),
        }
    }
    headers_differ("header", &expect.headers, &observed.headers, &mut out);
    out
}

fn headers_differ(
    what: &str,
    expected: &[(http::HeaderName, String)],
    got: &HeaderMap,
    out: &mut Vec<String>,
) {
    for (name, want) in expected {
        let have = got
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match (want.is_empty(), have) {
            (true, Some(have)) => out.push(format!("expected {what} {name} absent, got {have:?}")),
            (false, None) => out.push(format!("expected {what} {name} = {want:?}, got absent")),
            (false, Some(have)) if &have != want => {
                out.push(format!("expected {what} {name} = {want:?}, got {have:?}"))
            }
            _ => {}
        }
    }
}
