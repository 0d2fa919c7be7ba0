//! Reloads: a new configuration applied to a running server (SIGHUP), all or nothing.
//!
//! Owns what may change while connections keep running (routes, upstreams, policies,
//! forwarding, certificates) and what may not (listener addresses, limits, the runtime, the
//! throttle, the token source): those are kept as they run, named in a warning, and never
//! recorded as applied. Never stores a configuration that is not the one in force.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{Config, ListenerConfig};
use crate::metrics::Metrics;
use crate::proxy::upstream::UpstreamTlsError;
use crate::proxy::Gateway;
use crate::tls::{SniResolver, TlsError};
use crate::validator::Validator;

/// Why a reload was refused; the running configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration file could not be read or validated.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener's new certificates could not be loaded.
    #[error("listener {address}: TLS: {source}")]
    Listener {
        /// The listener whose certificates failed.
        address: SocketAddr,
        /// Why.
        source: TlsError,
    },
    /// The trust for https upstreams could not be set up.
    #[error(transparent)]
    UpstreamTls(#[from] UpstreamTlsError),
    /// An earlier reload panicked while holding the running state (a bug); nothing was changed.
    #[error("the running state is unavailable after an earlier failure; restart bentogate")]
    Poisoned,
}

/// What a reload replaces while connections keep running: the data plane (routes, upstreams,
/// policies, forwarding) and the listeners' certificates.
pub(super) struct Live {
    pub(super) gateway: ArcSwap<Gateway>,
    pub(super) config: Mutex<Config>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) validator: Arc<Validator>,
    pub(super) resolvers: Mutex<Vec<Option<Arc<SniResolver>>>>,
    /// The admin listener's certificates, when it serves TLS.
    pub(super) admin_tls: Mutex<Option<Arc<SniResolver>>>,
    /// Failed-authorization buckets shared by the proxy listeners, the token API and
    /// introspection, so a guesser cannot spread guesses over the three; kept across reloads.
    pub(super) throttle: Option<Arc<crate::throttle::Throttle>>,
    /// The control plane, told the new routes' deployments on reload.
    pub(super) store: Option<Arc<crate::control::Store>>,
}

/// Applies a new configuration to a running server (SIGHUP). Cheap to clone.
#[derive(Clone)]
pub struct Reloader(pub(super) Arc<Live>);

impl Reloader {
    /// Applies a freshly loaded configuration, or counts the failure to load one, so that
    /// `bentogate_config_reloads_total{outcome}` sees every attempt (SIGHUP included). Returns
    /// why the running configuration was kept.
    pub fn reload_loaded(
        &self,
        loaded: Result<Config, crate::config::ConfigError>,
    ) -> Result<(), ReloadError> {
        match loaded {
            Ok(new) => self.reload(new),
            Err(e) => {
                self.count(false);
                Err(e.into())
            }
        }
    }

    /// Builds everything the new configuration needs first and swaps only if all of it loads,
    /// so a bad configuration leaves the old one serving. In-flight requests finish on the
    /// data plane they started on. Listener addresses, limits, the throttle, the admin listener
    /// and the token source need a restart; changes to them are logged and left alone.
    pub fn reload(&self, new: Config) -> Result<(), ReloadError> {
        let outcome = self.apply(new);
        self.count(outcome.is_ok());
        outcome
    }

    fn count(&self, applied: bool) {
        self.0
            .metrics
            .config_reloads
            .with_label_values(&[if applied { "success" } else { "failure" }])
            .inc();
    }

    fn apply(&self, new: Config) -> Result<(), ReloadError> {
        let live = &self.0;
        let resolvers = live.resolvers.lock().map_err(|_| ReloadError::Poisoned)?;
        let mut old = live.config.lock().map_err(|_| ReloadError::Poisoned)?;
        // What needs a restart is kept as it runs, named, and not recorded as applied: the
        // configuration built and stored is the one in force, so the next reload compares
        // against it.
        let mut applied = new;
        keep_running_parts(&old, &mut applied);
        let gateway = Gateway::new(
            &applied,
            Arc::clone(&live.validator),
            &live.metrics,
            live.throttle.clone(),
        )?;
        // Load every new certificate set before replacing any.
        let mut staged = Vec::new();
        for (i, resolver) in resolvers.iter().enumerate() {
            let (Some(resolver), Some(pairs)) = (
                resolver,
                applied.listeners.get(i).and_then(|l| l.tls.as_ref()),
            ) else {
                continue;
            };
            SniResolver::load(pairs).map_err(|e| ReloadError::Listener {
                address: applied.listeners[i].address,
                source: e,
            })?;
            staged.push((i, Arc::clone(resolver), pairs.clone()));
        }
        let admin_tls = live
            .admin_tls
            .lock()
            .map_err(|_| ReloadError::Poisoned)?
            .clone();
        let admin_pairs = match (&admin_tls, &applied.admin_tls) {
            (Some(resolver), Some(t)) => {
                SniResolver::load(&t.certificates).map_err(|e| ReloadError::Listener {
                    address: applied.admin,
                    source: e,
                })?;
                Some((resolver, t.certificates.clone()))
            }
            _ => None,
        };
        if let Some((resolver, pairs)) = admin_pairs {
            resolver
                .replace(&pairs)
                .map_err(|e| ReloadError::Listener {
                    address: applied.admin,
                    source: e,
                })?;
        }
        for (i, resolver, pairs) in staged {
            resolver
                .replace(&pairs)
                .map_err(|e| ReloadError::Listener {
                    address: applied.listeners[i].address,
                    source: e,
                })?;
        }
        live.gateway.store(Arc::new(gateway));
        if let Some(store) = &live.store {
            store.set_routed(applied.deployments.iter().map(|d| d.name.clone()).collect());
        }
        tracing::info!(
            deployments = applied.deployments.len(),
            "configuration reloaded"
        );
        *old = applied;
        Ok(())
    }
}

/// Copies from `running` into `new` every part a reload cannot change (listener addresses,
/// the admin listener, limits, the runtime, the throttle, the token source), logging each
/// change it had to refuse, with the listener it concerns.
fn keep_running_parts(running: &Config, new: &mut Config) {
    let count = running.listeners.len().max(new.listeners.len());
    for i in 0..count {
        let (was, asked) = (running.listeners.get(i), new.listeners.get(i));
        let same = match (was, asked) {
            (Some(a), Some(b)) => a.address == b.address && a.tls.is_some() == b.tls.is_some(),
            _ => false,
        };
        if !same {
            tracing::warn!(
                listener = i,
                running = %was.map_or("none".to_owned(), describe_listener),
                requested = %asked.map_or("none".to_owned(), describe_listener),
                "a listener cannot be rebound by a reload; restart to apply it. Kept the running listener"
            );
        }
    }
    // Certificates of kept listeners were applied above; their addresses stay.
    let tls: Vec<_> = new.listeners.iter().map(|l| l.tls.clone()).collect();
    new.listeners = running.listeners.clone();
    for (l, t) in new.listeners.iter_mut().zip(tls) {
        if l.tls.is_some() && t.is_some() {
            l.tls = t;
        }
    }
    let same_client_ca = running.admin_tls.as_ref().map(|t| &t.client_ca)
        == new.admin_tls.as_ref().map(|t| &t.client_ca);
    if running.admin_tls.is_some() != new.admin_tls.is_some() || !same_client_ca {
        tracing::warn!("turning admin.tls on or off, or changing admin.tls.client_ca's path, needs a restart; kept the running admin listener (its certificates were reloaded)");
        let certificates = new.admin_tls.take().map(|t| t.certificates);
        new.admin_tls = running.admin_tls.clone();
        if let (Some(t), Some(c)) = (new.admin_tls.as_mut(), certificates) {
            t.certificates = c;
        }
    }
    if running.admin != new.admin {
        tracing::warn!(running = %running.admin, requested = %new.admin, "the admin listener cannot be rebound by a reload; restart to apply it. Kept the running one");
        new.admin = running.admin;
    }
    if running.probes != new.probes || running.shutdown != new.shutdown {
        tracing::warn!("admin.probes and shutdown changes need a restart; kept the running ones");
        new.probes = running.probes;
        new.shutdown = running.shutdown;
    }
    if running.limits != new.limits || running.worker_threads != new.worker_threads {
        tracing::warn!("limits and runtime changes need a restart; kept the running ones");
        new.limits = running.limits.clone();
        new.worker_threads = running.worker_threads;
    }
    if running.throttle != new.throttle {
        tracing::warn!("throttle changes need a restart; kept the running throttle");
        new.throttle = running.throttle.clone();
    }
    if running.tokens.file != new.tokens.file
        || running.tokens.introspect.is_some() != new.tokens.introspect.is_some()
        || running.tokens.postgres.is_some() != new.tokens.postgres.is_some()
    {
        tracing::warn!("token source changes need a restart; kept the running source");
        new.tokens = running.tokens.clone();
    }
}

fn describe_listener(l: &ListenerConfig) -> String {
    format!(
        "{} ({})",
        l.address,
        if l.tls.is_some() { "TLS" } else { "plain" }
    )
}

/// Re-reads the configuration at `path` (the embedded default when none) on every SIGHUP and
/// applies it; a bad one is refused, counted and logged, and the old one keeps serving.
/// Returns the loop to spawn, or why SIGHUP cannot be listened for.
pub fn reload_on_sighup(
    reloader: Reloader,
    path: Option<std::path::PathBuf>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(async move {
        while hup.recv().await.is_some() {
            let loaded = match &path {
                Some(p) => Config::load(p),
                None => Config::embedded(),
            };
            if let Err(e) = reloader.reload_loaded(loaded) {
                tracing::error!(error = %e, "reload refused; the running configuration stays");
            }
        }
    })
}
