//! The command line (SPEC §1): one file per subcommand. Each returns the
//! process exit code: 0 clean, 1 config error, 2 usage error, 3 bind
//! failure, 4 a `palisade test` case failed.

pub mod cases;
pub mod check;
pub mod demo;
pub mod echo;
pub mod explain;
pub mod harness;
pub mod run;
pub mod stub;
pub mod test;
pub mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code: the config could not be loaded.
pub const EXIT_CONFIG: u8 = 1;
/// Exit code: a listener could not bind.
pub const EXIT_BIND: u8 = 3;

/// palisade: a policy-enforcing reverse-proxy sidecar.
#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about,
    args_conflicts_with_subcommands = false
)]
pub struct Cli {
    /// Policy file [default: $PALISADE_CONFIG, else ./policy.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Overrides [log] format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Overrides [log] level (RUST_LOG overrides both).
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<String>,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--log-level`: checked as `log.level` is (a typo is a usage error, not
/// a filter that logs nothing).
fn parse_log_level(text: &str) -> Result<String, String> {
    crate::observe::logging::check_level(text).map(|()| text.to_string())
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable.
    Pretty,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Run,
    /// Validate the config and print the compiled route table.
    Check(check::CheckArgs),
    /// Try palisade: built-in echo upstream, dev secrets, ready-to-paste curl lines.
    Demo,
    /// Print an HS256 development JWT.
    Token(token::TokenArgs),
    /// Run policy test cases through the real pipeline, in-process.
    Test(test::TestArgs),
    /// Explain what palisade would do with one request, and why.
    Explain(explain::ExplainArgs),
}

impl Cli {
    /// The config path: `--config`, else `$PALISADE_CONFIG`, else `./policy.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os("PALISADE_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("policy.toml"))
    }

    /// Logging settings after CLI overrides.
    pub fn log_settings(&self, json: bool, level: &str) -> (bool, String) {
        let json = match self.log_format {
            Some(LogFormat::Json) => true,
            Some(LogFormat::Pretty) => false,
            None => json,
        };
        (
            json,
            self.log_level.clone().unwrap_or_else(|| level.to_string()),
        )
    }
}

/// Dispatches to the subcommand.
pub fn main(cli: Cli) -> ExitCode {
    match &cli.command {
        None | Some(Command::Run) => run::run(&cli),
        Some(Command::Check(args)) => check::check(&cli, args),
        Some(Command::Demo) => demo::demo(&cli),
        Some(Command::Token(args)) => token::token(&cli, args),
        Some(Command::Test(args)) => test::test(&cli, args),
        Some(Command::Explain(args)) => explain::explain(&cli, args),
    }
}

/// Builds the runtime: `workers` threads (0 = one per available core); a
/// single worker runs on a current-thread runtime, which is measurably
/// cheaper per request (see BENCH.md).
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        workers
    };
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}
