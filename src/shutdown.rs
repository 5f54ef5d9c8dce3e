//! Shutdown: the SIGTERM and SIGINT handlers (registered before the
//! listeners open). What follows a signal lives with what it stops:
//! `Shared::start_draining` turns `/readyz` to 503, and the proxy listener
//! (`proxy::server`) stops accepting and drains for `shutdown_grace`.

/// SIGTERM and SIGINT, registered before the listeners open so that a
/// signal arriving during start-up still means "drain and exit 0".
pub struct ShutdownSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Registers the handlers (inside the runtime).
    pub fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Waits for either signal.
    pub async fn wait(mut self) {
        #[cfg(unix)]
        {
            match (self.terminate.as_mut(), self.interrupt.as_mut()) {
                (Some(term), Some(int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
