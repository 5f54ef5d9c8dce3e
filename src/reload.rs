//! Hot reload: SIGHUP, or a change of the config file on disk (the parent
//! directory is watched, so editors that replace the file and Kubernetes
//! ConfigMap symlink swaps are seen). A valid file replaces the generation
//! atomically (in-flight requests finish under the old one); an invalid one
//! is logged and counted, and the old policy stays.
//!
//! Every setting applies to the next request or the next connection (the
//! listener reads `[server]` from the current generation at each accept and
//! `max_connections` is resized here); those that cannot (listen addresses,
//! `workers`, the log format and level) are logged as needing a restart. A
//! new JWKS source is loaded before the swap: if it cannot be, the reload
//! fails, rather than swapping in an empty key set that refuses every token.
//! `[tracing]`: `propagate` and `sample_ratio` apply to the next request; a
//! changed export setting (endpoint, service name, queue size, timeout)
//! builds a new span exporter (`proxy::generation`), and the old one
//! flushes what it holds and stops once no generation uses it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::config::{self, Env, Policy};
use crate::proxy::generation::{self, start_background};
use crate::proxy::server::tls_acceptor;
use crate::proxy::state::{Generation, Shared};

/// The config file's watch, registered before the server starts so that no
/// edit made after start-up can be missed.
pub struct ConfigWatch {
    path: PathBuf,
    events: mpsc::UnboundedReceiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
    last_text: Vec<u8>,
    /// Registered at once: a SIGHUP's default action would end the process.
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl ConfigWatch {
    /// Watches `path`'s directory (editors replace files; ConfigMaps swap symlinks).
    pub fn new(path: PathBuf) -> Self {
        let (tx, events) = mpsc::unbounded_channel::<()>();
        let watcher = file_watcher(&path, tx);
        let last_text = std::fs::read(&path).unwrap_or_default();
        Self {
            path,
            events,
            _watcher: watcher,
            last_text,
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// Reloads on SIGHUP and on changes of the file; runs until the process ends.
    pub async fn run(mut self, shared: Arc<Shared>) {
        #[cfg(unix)]
        let mut hup = self.hangup.take();
        loop {
            #[cfg(unix)]
            let hup_recv = async {
                match hup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup_recv = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = hup_recv => {
                    tracing::info!("SIGHUP: reloading the config");
                    reload(&shared, &self.path).await;
                    self.last_text = std::fs::read(&self.path).unwrap_or_default();
                }
                event = self.events.recv() => {
                    if event.is_none() {
                        return;
                    }
                    // Let an editor finish writing, and fold bursts of events.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    while self.events.try_recv().is_ok() {}
                    let text = std::fs::read(&self.path).unwrap_or_default();
                    if text != self.last_text {
                        tracing::info!("config file changed: reloading");
                        reload(&shared, &self.path).await;
                        self.last_text = text;
                    }
                }
            }
        }
    }
}

fn file_watcher(path: &Path, tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Only events about the config file itself, or Kubernetes' `..data`
    // symlink swap, matter: other files in the directory (a log written next
    // to the config, say) must not make every write re-read the policy.
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if concerns_config(&event.paths, name.as_deref()) {
            let _ = tx.send(());
        }
    })
    .map_err(|error| tracing::warn!(%error, "cannot watch the config file; SIGHUP still reloads"))
    .ok()?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|error| tracing::warn!(%error, "cannot watch the config directory; SIGHUP still reloads"))
        .ok()?;
    Some(watcher)
}

/// Whether a directory event touches the config file (or a Kubernetes
/// `..data`-style entry its symlink goes through).
fn concerns_config(paths: &[PathBuf], config_name: Option<&std::ffi::OsStr>) -> bool {
    paths.iter().any(|p| match p.file_name() {
        Some(file) => Some(file) == config_name || file.to_string_lossy().starts_with(".."),
        None => false,
    })
}

/// Loads, validates and swaps in the file at `path`; returns whether it did.
pub async fn reload(shared: &Shared, path: &Path) -> bool {
    reload_with_env(shared, path, &Env::from_process()).await
}

/// [`reload`] with an explicit environment (tests).
pub async fn reload_with_env(shared: &Shared, path: &Path, env: &Env) -> bool {
    let metrics = &shared.metrics;
    match try_reload(shared, path, env).await {
        Ok(changes) => {
            metrics.config_reloads.with_label_values(&["success"]).inc();
            metrics.mark_config_loaded();
            // The same lines as `palisade check --against` (SPEC §6.5).
            let changes = if changes.is_empty() {
                "none to the routes".to_string()
            } else {
                changes.join("; ")
            };
            tracing::info!(changes, "config reloaded");
            true
        }
        Err(error) => {
            tracing::error!(%error, "config reload failed; keeping the current policy");
            metrics.config_reloads.with_label_values(&["failure"]).inc();
            false
        }
    }
}

/// Loads, validates and builds the next generation, then swaps it in and
/// returns the route changes; on any error nothing has changed.
async fn try_reload(shared: &Shared, path: &Path, env: &Env) -> Result<Vec<String>, String> {
    let current = shared.current.load_full();
    let old = &current.policy;
    let running_jwks_file = old
        .auth
        .jwks()
        .filter(|store| store.is_ready())
        .and_then(|store| match &store.source {
            crate::policy::auth::jwks::JwksSource::File(file) => Some(file.as_path()),
            crate::policy::auth::jwks::JwksSource::Url(_) => None,
        });
    let policy =
        config::load_file_for_reload(path, env, running_jwks_file).map_err(|e| e.to_string())?;
    let changes = crate::route::changes::changes(&old.routes, &policy.routes);
    warn_restart_only(&policy, old);
    let same_upstream = serde_json::to_value(&policy.effective.upstream).ok()
        == serde_json::to_value(&old.effective.upstream).ok();
    let acceptor = reload_tls(shared, &policy)?;
    let reuse = same_upstream.then(|| current.upstream.clone());
    let next = generation::build(policy, &shared.persistent, &shared.metrics, reuse)
        .map_err(|e| e.to_string())?;
    carry_jwks(old, &next).await?;
    start_background(&next);
    if let Some(acceptor) = acceptor {
        shared.tls.store(Some(acceptor));
    }
    shared
        .connections
        .set_max(next.policy.server.max_connections);
    shared.current.store(Arc::new(next));
    Ok(changes)
}

/// Settings read only at start-up: changed, they are logged as needing a
/// restart.
fn warn_restart_only(new: &Policy, old: &Policy) {
    if new.server.listen != old.server.listen || new.admin_listen != old.admin_listen {
        tracing::warn!(
            "listener addresses changed in the config; they take effect after a restart"
        );
    }
    if new.server.workers != old.server.workers {
        tracing::warn!("server.workers changed in the config; it takes effect after a restart");
    }
    if new.log.json != old.log.json || new.log.level != old.log.level {
        tracing::warn!(
            "log.format or log.level changed in the config; they take effect after a restart"
        );
    }
}

/// TLS files are re-read on every reload (certificates rotate in place).
/// Adding or removing TLS needs a restart.
fn reload_tls(shared: &Shared, policy: &Policy) -> Result<Option<Arc<TlsAcceptor>>, String> {
    match (&policy.server.tls, shared.tls.load().is_some()) {
        (Some(files), true) => tls_acceptor(&files.cert, &files.key)
            .map(|acceptor| Some(Arc::new(acceptor)))
            .map_err(|e| e.to_string()),
        (tls, listening_tls) => {
            if tls.is_some() != listening_tls {
                tracing::warn!(
                    "server.tls was added or removed; that takes effect after a restart"
                );
            }
            Ok(None)
        }
    }
}

/// The JWKS store carries its keys over from the old generation; a new
/// source's keys are loaded before the swap (swapping in an empty key set
/// would refuse every token and fail readiness).
async fn carry_jwks(old: &Policy, next: &Generation) -> Result<(), String> {
    let old_jwks = old.auth.jwks();
    let Some(new_store) = next.policy.auth.jwks() else {
        return Ok(());
    };
    if let Some(old_store) = old_jwks {
        new_store.adopt(old_store);
    }
    let same_source = old_jwks.is_some_and(|o| o.source == new_store.source);
    if !same_source && !new_store.is_ready() {
        new_store
            .fetch()
            .await
            .map_err(|e| format!("the new JWKS could not be loaded: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_config_and_configmap_entries_matter() {
        let name = Some(std::ffi::OsStr::new("policy.toml"));
        let event = |p: &str| vec![PathBuf::from(p)];
        assert!(concerns_config(&event("/etc/palisade/policy.toml"), name));
        assert!(concerns_config(&event("/etc/palisade/..data"), name));
        assert!(concerns_config(
            &event("/etc/palisade/..2026_11_28_10_00_00.123"),
            name
        ));
        assert!(!concerns_config(&event("/etc/palisade/access.log"), name));
        assert!(!concerns_config(
            &event("/etc/palisade/policy.toml.swp"),
            name
        ));
        assert!(!concerns_config(&[], name));
    }
}
