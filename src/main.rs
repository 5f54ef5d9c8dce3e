//! The `palisade` binary: parse the command line, run the subcommand, map
//! its outcome to an exit code. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: measurably cheaper than glibc malloc for the many small,
/// short-lived allocations of the request path (see bench/run.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = match palisade::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    palisade::cli::main(cli)
}
