//! `palisade run`: load, listen, serve until SIGTERM/SIGINT, drain, exit 0.

use std::process::ExitCode;

use super::{Cli, EXIT_BIND, EXIT_CONFIG, runtime};
use crate::config::{self, Env};
use crate::observe::logging;
use crate::proxy::server::{self, Server, StartError};
use crate::shutdown::ShutdownSignals;

/// Runs the sidecar.
pub fn run(cli: &Cli) -> ExitCode {
    let path = cli.config_path();
    let policy = match config::load_file(&path, &Env::from_process()) {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (json, level) = cli.log_settings(policy.log.json, &policy.log.level);
    let _log = logging::init(json, &level);
    let runtime = match runtime(policy.server.workers) {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signals = ShutdownSignals::register();
        let watch = crate::reload::ConfigWatch::new(path);
        let server = match server::start(policy).await {
            Ok(server) => server,
            Err(error) => return start_failure(&error),
        };
        tokio::spawn(watch.run(server.shared.clone()));
        serve_until_signal(server, signals).await
    })
}

/// Serves until SIGTERM/SIGINT, then drains: success. Failure when the
/// proxy listener stops by itself first (its accept loop panicked), so
/// the process does not stay up, ready by `/readyz`, without it.
pub async fn serve_until_signal(mut server: Server, signals: ShutdownSignals) -> ExitCode {
    tokio::select! {
        () = signals.wait() => {}
        () = server.proxy_stopped() => {
            server.shutdown();
            server.wait().await;
            return ExitCode::FAILURE;
        }
    }
    server.shutdown();
    tracing::info!("shutdown requested; readiness is now 503");
    server.wait().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Logs a start-up failure and picks its exit code.
pub fn start_failure(error: &StartError) -> ExitCode {
    tracing::error!(error = %error, "cannot start");
    eprintln!("palisade: {error}");
    match error {
        StartError::Bind { .. } => ExitCode::from(EXIT_BIND),
        _ => ExitCode::from(EXIT_CONFIG),
    }
}
