//! Listeners, connections, limits, reloads and graceful shutdown.
//!
//! Owns sockets and connection lifetimes: binds the proxy listeners (plain, or TLS with SNI
//! certificates) and the admin listener; serves each connection with hyper-util's auto builder
//! (HTTP/1.1 with upgrades, HTTP/2 by ALPN or prior knowledge); caps open connections per
//! listener, header reading, idle keep-alive and HTTP/2 streams; swaps the data plane on reload
//! ([`Reloader`]); and on shutdown turns `/readyz` to 503 at once, keeps accepting for
//! `shutdown.delay` (while Kubernetes removes the pod from its Services' endpoints and load
//! balancers stop sending), then stops accepting, lets in-flight requests finish up to
//! `shutdown.timeout`, and returns.
//!
//! Files: [`listeners`] (binding), [`connection`] (one connection's life), [`reload`]
//! (SIGHUP), [`shutdown`] (counting open connections); this file builds the app and runs it.

mod connection;
mod listeners;
mod reload;
mod shutdown;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Request;
use hyper::body::Incoming;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin::Admin;
use crate::config::{Config, Limits, ShutdownConfig};
use crate::console::{Console, CookiePolicy};
use crate::control::Store;
use crate::metrics::Metrics;
use crate::proxy::upstream::UpstreamTlsError;
use crate::proxy::{Gateway, Peer};
use crate::store::source::UsedTokens;
use crate::store::TokenSource;
use crate::tls::TlsError;
use crate::validator::Validator;
use connection::{accept_loop, connection_builder, ConnSettings};
pub use listeners::{Listeners, ProxyListener};
use reload::Live;
pub use reload::{reload_on_sighup, ReloadError, Reloader};
use shutdown::Tracker;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {address}: {source}; is another process using it?")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The token source could not be opened.
    #[error(transparent)]
    Tokens(#[from] crate::store::source::OpenError),
    /// Metrics could not be registered (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A listener's certificates could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The trust for https upstreams could not be set up.
    #[error(transparent)]
    UpstreamTls(#[from] UpstreamTlsError),
}

/// Everything a running server shares: built before any listener accepts, so a bad token file
/// fails start and tests see a fully loaded server as soon as start returns.
pub struct App {
    live: Arc<Live>,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Where tokens live; its background work runs while the server serves.
    source: Arc<dyn TokenSource>,
    validator: Arc<Validator>,
    admin: Arc<Admin>,
    draining: Arc<AtomicBool>,
    usage_flush: Duration,
    shutdown: ShutdownConfig,
}

impl App {
    /// Loads the token source and builds the data plane for `config`.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let metrics = Arc::new(Metrics::new()?);
        let source = crate::store::open(&config.tokens, &metrics).await?;
        let validator =
            Validator::shared(&config.tokens, Arc::clone(&source), Arc::clone(&metrics));
        let store = Store::new(Arc::clone(&source)).map(Arc::new);
        if let Some(store) = &store {
            store.set_routed(config.deployments.iter().map(|d| d.name.clone()).collect());
        }
        let throttle = crate::throttle::Throttle::new(&config.throttle).map(Arc::new);
        let gateway = Gateway::new(&config, Arc::clone(&validator), &metrics, throttle.clone())?;
        let draining = Arc::new(AtomicBool::new(false));
        let tls = config.admin_tls.is_some();
        let console = store
            .clone()
            .filter(|_| config.console.enabled)
            .map(|store| {
                Arc::new(Console::new(
                    store,
                    Arc::clone(&validator),
                    config.console,
                    CookiePolicy::new(tls),
                    throttle.clone(),
                ))
            });
        let admin = Arc::new(
            Admin::new(
                Arc::clone(&metrics),
                Arc::clone(&validator),
                store.clone(),
                Arc::clone(&draining),
                throttle.clone(),
            )
            .with_console(console),
        );
        Ok(App {
            limits: config.limits.clone(),
            shutdown: config.shutdown,
            usage_flush: config.tokens.usage_flush,
            live: Arc::new(Live {
                gateway: ArcSwap::from_pointee(gateway),
                config: Mutex::new(config),
                metrics: Arc::clone(&metrics),
                validator: Arc::clone(&validator),
                resolvers: Mutex::new(Vec::new()),
                admin_tls: Mutex::new(None),
                throttle,
                store,
            }),
            metrics,
            source,
            validator,
            admin,
            draining,
        })
    }

    /// The handle that reloads this server's configuration.
    pub fn reloader(&self) -> Reloader {
        Reloader(Arc::clone(&self.live))
    }

    /// Serves until `shutdown` resolves (SIGTERM), then stops as `shutdown.*` says: `/readyz`
    /// 503 at once, still accepting for `shutdown.delay`, then draining up to `shutdown.timeout`.
    pub async fn serve(self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        self.serve_until(listeners, async move {
            shutdown.await;
            Stop::Graceful
        })
        .await
    }

    /// Serves until `shutdown` resolves, then stops the way it says: [`Stop::Graceful`] as
    /// [`App::serve`], [`Stop::Now`] without the delay (an operator's Ctrl-C).
    pub async fn serve_until(self, listeners: Listeners, shutdown: impl Future<Output = Stop>) {
        let App {
            live,
            limits,
            metrics,
            source,
            validator,
            admin,
            draining,
            usage_flush,
            shutdown: times,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let settings = Arc::new(ConnSettings {
            builder: connection_builder(&limits),
            keepalive: limits.keepalive_timeout,
            handshake_timeout: limits.header_read_timeout,
            tracker: Tracker::default(),
            stop: stop_rx.clone(),
        });
        let mut loops: Vec<JoinHandle<()>> = Vec::new();
        let used: UsedTokens = {
            let validator = Arc::clone(&validator);
            Arc::new(move || validator.used_tokens())
        };
        loops.extend(Arc::clone(&source).start(Arc::clone(&used), usage_flush, stop_rx.clone()));
        if let Ok(mut r) = live.resolvers.lock() {
            *r = listeners.proxy.iter().map(|l| l.tls.clone()).collect();
        }
        for l in &listeners.proxy {
            if let (Some(resolver), Ok(addr)) = (&l.tls, l.listener.local_addr()) {
                resolver.observe(format!("proxy {addr}"), Arc::clone(&metrics));
            }
        }
        if let Some(resolver) = &listeners.admin_tls {
            resolver.observe("admin".to_owned(), Arc::clone(&metrics));
        }
        if let Ok(mut a) = live.admin_tls.lock() {
            a.clone_from(&listeners.admin_tls);
        }
        let admin_acceptor = match &listeners.admin_tls {
            None => None,
            Some(resolver) => {
                loops.push(tokio::spawn(Arc::clone(resolver).watch(stop_rx.clone())));
                match resolver.server_config() {
                    Ok(c) => Some(TlsAcceptor::from(c)),
                    Err(e) => {
                        // Never fall back to plain text on a listener meant for TLS.
                        tracing::error!(error = %e, "admin TLS listener not started; stopping");
                        let _ = stop_tx.send(true);
                        return;
                    }
                }
            }
        };
        for l in listeners.proxy {
            let acceptor = match &l.tls {
                None => None,
                Some(resolver) => {
                    loops.push(tokio::spawn(Arc::clone(resolver).watch(stop_rx.clone())));
                    match resolver.server_config() {
                        Ok(c) => Some(TlsAcceptor::from(c)),
                        Err(e) => {
                            tracing::error!(error = %e, "TLS listener not started");
                            continue;
                        }
                    }
                }
            };
            let live = Arc::clone(&live);
            let handler = move |req: Request<Incoming>, peer: Peer| {
                let gateway = live.gateway.load_full();
                // Boxed once here: the request's future is large (2.5 KB) and hyper's service
                // layers would otherwise copy it several times per request.
                Box::pin(async move { gateway.handle(req, peer).await })
            };
            loops.push(tokio::spawn(accept_loop(
                l.listener,
                acceptor,
                handler,
                Arc::clone(&settings),
                Arc::new(Semaphore::new(limits.max_connections)),
            )));
        }
        if let Some(probes) = listeners.probes {
            let admin = Arc::clone(&admin);
            let probe_handler = move |req: Request<Incoming>, _peer: Peer| {
                let res = admin.probe(&req);
                std::future::ready(res)
            };
            loops.push(tokio::spawn(accept_loop(
                probes,
                None,
                probe_handler,
                Arc::clone(&settings),
                Arc::new(Semaphore::new(limits.max_connections)),
            )));
        }
        let admin_handler = move |req: Request<Incoming>, peer: Peer| {
            let admin = Arc::clone(&admin);
            async move { admin.handle(req, peer.addr.ip()).await }
        };
        loops.push(tokio::spawn(accept_loop(
            listeners.admin,
            admin_acceptor,
            admin_handler,
            Arc::clone(&settings),
            Arc::new(Semaphore::new(limits.max_connections)),
        )));

        tracing::info!(tokens = metrics.tokens_loaded.get(), "bentogate ready");
        let stop = shutdown.await;
        // Not ready from now on, so the kubelet takes the pod out of its Services' endpoints;
        // but whoever still routes here during the delay is served, not refused.
        draining.store(true, Ordering::Release);
        if let (Stop::Graceful, false) = (stop, times.delay.is_zero()) {
            tracing::info!(delay = ?times.delay, "shutting down: /readyz answers 503; still accepting while load balancers stop sending");
            tokio::time::sleep(times.delay).await;
        }
        tracing::info!(timeout = ?times.timeout, "shutting down: no new connections, draining in-flight requests");
        // Closing the listeners first refuses new connections at once; every connection then
        // finishes its in-flight requests and closes (HTTP/2: GOAWAY).
        let _ = stop_tx.send(true);
        for l in loops {
            let _ = l.await;
        }
        match tokio::time::timeout(times.timeout, settings.tracker.idle()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => tracing::warn!("drain timeout reached; closing the remaining connections"),
        }
        // No request can record a use any more: write the last ones out.
        source.flush_usage(used).await;
        tracing::info!("bye");
    }
}

/// How a server is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How a stop was asked for.
pub enum Stop {
    /// As on SIGTERM: not ready, `shutdown.delay` still accepting, then drain.
    Graceful,
    /// Skip the delay (an embedder that knows nothing routes here any more): drain at once.
    Now,
}

/// A server started in the background (tests, embedding): its addresses, a reload handle and
/// a stop switch.
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addrs: Vec<SocketAddr>,
    /// Where the admin listener is.
    pub admin_addr: SocketAddr,
    /// Where the probe listener is (`admin.probes`), if configured.
    pub probes_addr: Option<SocketAddr>,
    /// Applies a new configuration, as SIGHUP does.
    pub reloader: Reloader,
    stop: Option<tokio::sync::oneshot::Sender<Stop>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Binds and starts `config` in the background; returns once it accepts connections.
    pub async fn start(config: Config) -> Result<Running, StartError> {
        let listeners = Listeners::bind(&config).await?;
        let proxy_addrs = listeners.proxy_addrs();
        let admin_addr = listeners
            .admin_addr()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let probes_addr = listeners.probes_addr();
        let app = App::build(config).await?;
        let reloader = app.reloader();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(app.serve_until(listeners, async move {
            // A dropped handle stops as SIGTERM would.
            rx.await.unwrap_or(Stop::Graceful)
        }));
        Ok(Running {
            proxy_addrs,
            admin_addr,
            probes_addr,
            reloader,
            stop: Some(tx),
            task,
        })
    }

    /// Stops accepting and drains at once (no `shutdown.delay`: the caller knows nothing
    /// routes here any more), and waits for it to finish.
    pub async fn stop(self) {
        self.end(Stop::Now).await
    }

    /// Stops as SIGTERM does: `/readyz` 503 at once, still accepting for `shutdown.delay`, then
    /// draining up to `shutdown.timeout`; waits for it to finish.
    pub async fn terminate(self) {
        self.end(Stop::Graceful).await
    }

    async fn end(mut self, how: Stop) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(how);
        }
        let _ = (&mut self.task).await;
    }
}
