//! Listeners, the accept loop, limits and graceful shutdown.
//!
//! Owns sockets and connection lifetimes: binds the proxy and admin listeners, serves each
//! connection with hyper-util's auto builder (HTTP/1.1 and h2c prior knowledge), caps open
//! connections per listener, bounds header reading, and on shutdown stops accepting, lets
//! in-flight requests finish up to the drain timeout, and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::config::{Config, Limits};
use crate::control::Store;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::store::introspect::IntrospectSource;
use crate::store::{FileSource, StoreError};
use crate::validator::Source;
use crate::validator::Validator;

/// How often a gateway on the `introspect` source checks that its control plane answers.
pub const INTROSPECT_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// The token file could not be loaded.
    #[error("token file: {0}")]
    Tokens(#[from] StoreError),
    /// Metrics could not be registered (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Bound listeners, so callers (tests) can bind `127.0.0.1:0` and learn the ports first.
pub struct Listeners {
    /// Client-facing listeners.
    pub proxy: Vec<TcpListener>,
    /// The admin listener.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds every address in the configuration.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let bind = |address: SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Bind { address, source })
        };
        let mut proxy = Vec::with_capacity(config.listeners.len());
        for &a in &config.listeners {
            proxy.push(bind(a).await?);
        }
        Ok(Listeners {
            proxy,
            admin: bind(config.admin).await?,
        })
    }

    /// The proxy listeners' actual addresses.
    pub fn proxy_addrs(&self) -> Vec<SocketAddr> {
        self.proxy
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The admin listener's actual address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }
}

/// Everything a running server shares: built before any listener accepts, so a bad token file
/// fails start and tests see a fully loaded server as soon as start returns.
pub struct App {
    config: Config,
    metrics: Arc<Metrics>,
    /// The token file, unless tokens come from a remote control plane.
    source: Option<Arc<FileSource>>,
    validator: Arc<Validator>,
    gateway: Arc<Gateway>,
    admin: Arc<Admin>,
    draining: Arc<AtomicBool>,
}

impl App {
    /// Loads the token source and builds the data plane for `config`.
    pub fn build(config: Config) -> Result<App, StartError> {
        let metrics = Arc::new(Metrics::new()?);
        let (source, validator) = match &config.tokens.introspect {
            None => {
                let file = Arc::new(FileSource::open(&config.tokens.file, Arc::clone(&metrics))?);
                let validator =
                    Validator::new(&config.tokens, Arc::clone(&file), Arc::clone(&metrics));
                (Some(file), validator)
            }
            Some(remote) => {
                let remote = Arc::new(IntrospectSource::new(remote.clone(), Arc::clone(&metrics)));
                let validator =
                    Validator::introspecting(&config.tokens, remote, Arc::clone(&metrics));
                (None, validator)
            }
        };
        let validator = Arc::new(validator);
        let gateway = Arc::new(Gateway::new(&config, Arc::clone(&validator), &metrics));
        let draining = Arc::new(AtomicBool::new(false));
        let store = source.as_ref().map(|f| Arc::new(Store::new(Arc::clone(f))));
        let admin = Arc::new(Admin::new(
            Arc::clone(&metrics),
            Arc::clone(&validator),
            store,
            Arc::clone(&draining),
        ));
        Ok(App {
            config,
            metrics,
            source,
            validator,
            gateway,
            admin,
            draining,
        })
    }

    /// Serves until `shutdown` resolves, then drains and returns.
    pub async fn serve(self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let App {
            config,
            metrics,
            source,
            validator,
            gateway,
            admin,
            draining,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let builder = Arc::new(connection_builder(&config.limits));
        let mut loops: Vec<JoinHandle<()>> = Vec::new();
        if let Some(source) = &source {
            loops.push(tokio::spawn(Arc::clone(source).watch(stop_rx.clone())));
            loops.push(tokio::spawn(
                Arc::clone(source).flush_usage_every(config.tokens.usage_flush, stop_rx.clone()),
            ));
        }
        if let Source::Introspect(remote) = validator.source() {
            loops.push(tokio::spawn(
                Arc::clone(remote).probe_every(INTROSPECT_PROBE_INTERVAL, stop_rx.clone()),
            ));
        }
        for listener in listeners.proxy {
            let gateway = Arc::clone(&gateway);
            let handler = move |req: Request<Incoming>, peer: SocketAddr| {
                let gateway = Arc::clone(&gateway);
                async move { gateway.handle(req, peer).await }
            };
            loops.push(tokio::spawn(accept_loop(
                listener,
                handler,
                Arc::clone(&builder),
                Arc::clone(&graceful),
                Arc::new(Semaphore::new(config.limits.max_connections)),
                stop_rx.clone(),
            )));
        }
        let admin_handler = move |req: Request<Incoming>, _peer: SocketAddr| {
            let admin = Arc::clone(&admin);
            async move { admin.handle(req).await }
        };
        loops.push(tokio::spawn(accept_loop(
            listeners.admin,
            admin_handler,
            Arc::clone(&builder),
            Arc::clone(&graceful),
            Arc::new(Semaphore::new(config.limits.max_connections)),
            stop_rx,
        )));

        tracing::info!(
            deployments = config.deployments.len(),
            tokens = metrics.tokens_loaded.get(),
            "bentogate ready"
        );
        shutdown.await;
        draining.store(true, Ordering::Release);
        tracing::info!(drain_timeout = ?config.limits.drain_timeout, "shutting down: no new connections, draining in-flight requests");
        // Closing the listeners first refuses new connections at once.
        let _ = stop_tx.send(true);
        for l in loops {
            let _ = l.await;
        }
        // Every accept loop has returned, so this is the last handle.
        if let Ok(graceful) = Arc::try_unwrap(graceful) {
            match tokio::time::timeout(config.limits.drain_timeout, graceful.shutdown()).await {
                Ok(()) => tracing::info!("drained"),
                Err(_) => {
                    tracing::warn!("drain timeout reached; closing the remaining connections")
                }
            }
        }
        // No request can record a use any more: write the last ones out.
        if let Some(source) = source {
            source.flush_usage_logged().await;
        }
        tracing::info!("bye");
    }
}

/// Builds the app for `config` and serves it on `listeners` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    App::build(config)?.serve(listeners, shutdown).await;
    Ok(())
}

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper refuses buffers under 8 KiB; the exact header limit is enforced per request (431).
    let buf = (limits.max_header_bytes + 4096).max(8192);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(buf);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

async fn accept_loop<H, F, B>(
    listener: TcpListener,
    handler: H,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        // Beyond max_connections, new connections wait in the kernel backlog.
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let fut = handler(req, peer);
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watcher().watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// A server started in the background (tests, embedding): its addresses and a stop switch.
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addrs: Vec<SocketAddr>,
    /// Where the admin listener is.
    pub admin_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
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
        let app = App::build(config)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(app.serve(listeners, async move {
            let _ = rx.await;
        }));
        Ok(Running {
            proxy_addrs,
            admin_addr,
            stop: Some(tx),
            task,
        })
    }

    /// Starts graceful shutdown and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}
