//! Listeners, connections, limits, reloads and graceful shutdown.
//!
//! Owns sockets and connection lifetimes: binds the proxy listeners (plain, or TLS with SNI
//! certificates) and the admin listener; serves each connection with hyper-util's auto builder
//! (HTTP/1.1 with upgrades, HTTP/2 by ALPN or prior knowledge); caps open connections per
//! listener, header reading, idle keep-alive and HTTP/2 streams; swaps the data plane on reload
//! ([`Reloader`]); and on shutdown stops accepting, lets in-flight requests finish up to the
//! drain timeout, and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::admin::Admin;
use crate::config::{Config, Limits, ListenerConfig};
use crate::control::Store;
use crate::metrics::Metrics;
use crate::proxy::upstream::UpstreamTlsError;
use crate::proxy::{Gateway, Peer};
use crate::store::source::UsedTokens;
use crate::store::TokenSource;
use crate::tls::{SniResolver, TlsError};
use crate::validator::Validator;

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

/// A bound client-facing listener and, for TLS, its certificates.
pub struct ProxyListener {
    listener: TcpListener,
    tls: Option<Arc<SniResolver>>,
}

/// Bound listeners, so callers (tests) can bind `127.0.0.1:0` and learn the ports first.
pub struct Listeners {
    /// Client-facing listeners, in configuration order.
    pub proxy: Vec<ProxyListener>,
    /// The admin listener.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds every address in the configuration and loads the TLS listeners' certificates, so
    /// a missing or mismatched key fails start with the file named.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let bind = |address: SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Bind { address, source })
        };
        let mut proxy = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let tls = match &l.tls {
                Some(pairs) => Some(Arc::new(SniResolver::load(pairs)?)),
                None => None,
            };
            proxy.push(ProxyListener {
                listener: bind(l.address).await?,
                tls,
            });
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
            .filter_map(|l| l.listener.local_addr().ok())
            .collect()
    }

    /// The admin listener's actual address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }
}

/// What a reload replaces while connections keep running: the data plane (routes, upstreams,
/// policies, forwarding) and the listeners' certificates.
struct Live {
    gateway: ArcSwap<Gateway>,
    config: Mutex<Config>,
    metrics: Arc<Metrics>,
    validator: Arc<Validator>,
    resolvers: Mutex<Vec<Option<Arc<SniResolver>>>>,
    /// Failed-authorization buckets shared by the proxy listeners, the token API and
    /// introspection, so a guesser cannot spread guesses over the three; kept across reloads.
    throttle: Option<Arc<crate::throttle::Throttle>>,
}

/// Applies a new configuration to a running server (SIGHUP). Cheap to clone.
#[derive(Clone)]
pub struct Reloader(Arc<Live>);

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
        for (i, resolver, pairs) in staged {
            resolver
                .replace(&pairs)
                .map_err(|e| ReloadError::Listener {
                    address: applied.listeners[i].address,
                    source: e,
                })?;
        }
        live.gateway.store(Arc::new(gateway));
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
    if running.admin != new.admin {
        tracing::warn!(running = %running.admin, requested = %new.admin, "the admin listener cannot be rebound by a reload; restart to apply it. Kept the running one");
        new.admin = running.admin;
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
}

impl App {
    /// Loads the token source and builds the data plane for `config`.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let metrics = Arc::new(Metrics::new()?);
        let source = crate::store::open(&config.tokens, &metrics).await?;
        let validator =
            Validator::shared(&config.tokens, Arc::clone(&source), Arc::clone(&metrics));
        let store = Store::new(Arc::clone(&source)).map(Arc::new);
        let throttle = crate::throttle::Throttle::new(&config.throttle).map(Arc::new);
        let gateway = Gateway::new(&config, Arc::clone(&validator), &metrics, throttle.clone())?;
        let draining = Arc::new(AtomicBool::new(false));
        let admin = Arc::new(Admin::new(
            Arc::clone(&metrics),
            Arc::clone(&validator),
            store,
            Arc::clone(&draining),
            throttle.clone(),
        ));
        Ok(App {
            limits: config.limits.clone(),
            usage_flush: config.tokens.usage_flush,
            live: Arc::new(Live {
                gateway: ArcSwap::from_pointee(gateway),
                config: Mutex::new(config),
                metrics: Arc::clone(&metrics),
                validator: Arc::clone(&validator),
                resolvers: Mutex::new(Vec::new()),
                throttle,
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

    /// Serves until `shutdown` resolves, then drains and returns.
    pub async fn serve(self, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let App {
            live,
            limits,
            metrics,
            source,
            validator,
            admin,
            draining,
            usage_flush,
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
        let admin_handler = move |req: Request<Incoming>, peer: Peer| {
            let admin = Arc::clone(&admin);
            async move { admin.handle(req, peer.addr.ip()).await }
        };
        loops.push(tokio::spawn(accept_loop(
            listeners.admin,
            None,
            admin_handler,
            Arc::clone(&settings),
            Arc::new(Semaphore::new(limits.max_connections)),
        )));

        tracing::info!(tokens = metrics.tokens_loaded.get(), "bentogate ready");
        shutdown.await;
        draining.store(true, Ordering::Release);
        tracing::info!(drain_timeout = ?limits.drain_timeout, "shutting down: no new connections, draining in-flight requests");
        // Closing the listeners first refuses new connections at once; every connection then
        // finishes its in-flight requests and closes (HTTP/2: GOAWAY).
        let _ = stop_tx.send(true);
        for l in loops {
            let _ = l.await;
        }
        match tokio::time::timeout(limits.drain_timeout, settings.tracker.idle()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => tracing::warn!("drain timeout reached; closing the remaining connections"),
        }
        // No request can record a use any more: write the last ones out.
        source.flush_usage(used).await;
        tracing::info!("bye");
    }
}

/// Builds the app for `config` and serves it on `listeners` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    App::build(config).await?.serve(listeners, shutdown).await;
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
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Counts open connections so shutdown can wait for the last one.
#[derive(Default)]
struct Tracker {
    open: AtomicUsize,
    closed: Notify,
}

/// Held by a connection's task; its drop counts the connection closed.
struct Open<'a>(&'a Tracker);

impl Tracker {
    fn open(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self)
    }

    /// Resolves once no connection is open.
    async fn idle(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

/// What every connection of a server shares.
struct ConnSettings {
    builder: auto::Builder<TokioExecutor>,
    keepalive: Duration,
    handshake_timeout: Duration,
    tracker: Tracker,
    stop: watch::Receiver<bool>,
}

async fn accept_loop<H, F, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    settings: Arc<ConnSettings>,
    limit: Arc<Semaphore>,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut stop = settings.stop.clone();
    loop {
        // Beyond max_connections, new connections wait in the kernel backlog.
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let settings = Arc::clone(&settings);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _open = settings.tracker.open();
            serve_connection(stream, addr, tls, handler, &settings).await;
            drop(permit);
        });
    }
}

async fn serve_connection<H, F, B>(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    handler: H,
    settings: &ConnSettings,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tls {
        None => {
            let peer = Peer { addr, https: false };
            drive(TokioIo::new(stream), peer, handler, settings).await
        }
        Some(acceptor) => {
            // The handshake counts against the header read timeout: a silent client holds no slot.
            match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let peer = Peer { addr, https: true };
                    drive(TokioIo::new(tls), peer, handler, settings).await
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %addr, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }
}

/// Serves one connection until it closes, shutting it down gracefully (in-flight requests
/// finish; HTTP/2 sends GOAWAY) when the server stops or no request has started for the
/// keep-alive timeout.
async fn drive<I, H, F, B>(io: I, peer: Peer, handler: H, settings: &ConnSettings)
where
    I: Read + Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::default());
    let seen = Arc::clone(&activity);
    let service = service_fn(move |req| {
        let guard = InFlight::start(Arc::clone(&seen));
        let fut = handler(req, peer);
        async move {
            let res = fut.await;
            Ok::<_, std::convert::Infallible>(res.map(|body| Tracked {
                inner: body,
                _guard: guard,
            }))
        }
    });
    let conn = settings.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut stop = settings.stop.clone();
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    // Checked once per keep-alive period: a connection that saw no request start or finish
    // during a whole period, with none in flight, is closed (after one to two periods).
    let mut events_seen = 0;
    let mut check_at = Instant::now() + settings.keepalive;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, addr = %peer.addr, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(check_at), if !closing => {
                let events = activity.events.load(Ordering::Relaxed);
                if events == events_seen && activity.in_flight.load(Ordering::Relaxed) == 0 {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                events_seen = events;
                check_at = Instant::now() + settings.keepalive;
            }
        }
    }
}

/// What a connection has been doing, for the keep-alive timeout: counters only, so a request
/// costs no clock read.
#[derive(Default)]
struct Activity {
    /// Requests started plus responses finished.
    events: AtomicU64,
    /// Requests whose response body has not finished.
    in_flight: AtomicUsize,
}

/// One request in flight on a connection, from its start until its response body is done.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.events.fetch_add(1, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its request in flight until hyper drops it.
    struct Tracked<B> {
        #[pin]
        inner: B,
        _guard: InFlight,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A server started in the background (tests, embedding): its addresses, a reload handle and
/// a stop switch.
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addrs: Vec<SocketAddr>,
    /// Where the admin listener is.
    pub admin_addr: SocketAddr,
    /// Applies a new configuration, as SIGHUP does.
    pub reloader: Reloader,
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
        let app = App::build(config).await?;
        let reloader = app.reloader();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(app.serve(listeners, async move {
            let _ = rx.await;
        }));
        Ok(Running {
            proxy_addrs,
            admin_addr,
            reloader,
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
