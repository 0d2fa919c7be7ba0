//! The `bentogate` binary: parses the command line, sets up tracing and the runtime, and hands
//! over to the library. Exit codes: 0 success, 1 runtime failure, 2 usage or config error.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use bentogate::cli::{self, Cli, Command};
use bentogate::config::{Config, LogFormat};
use bentogate::log_line::Style;
use bentogate::server::{self, Listeners};

use bentogate::store::TokenStore;
use clap::Parser;

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("choose one global allocator: --features mimalloc or --features jemalloc");

/// mimalloc instead of the system allocator, for measuring (bench/control-plane.sh).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jemalloc instead of the system allocator, for measuring (bench/control-plane.sh).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Fixes glibc's mmap threshold. By default glibc raises it each time a mapped block is freed,
/// after which the file source's per-change index tables (megabytes each) come from the heap and
/// their memory is never returned: measured with 100,000 tokens under control-plane churn
/// (bench/control-plane.sh), RSS went 74 -> 141 MiB and stayed there; with the threshold fixed,
/// 74 -> 85 -> 77 MiB, and creates were faster. An operator's `MALLOC_MMAP_THRESHOLD_` wins.
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(feature = "mimalloc"),
    not(feature = "jemalloc")
))]
#[allow(unsafe_code)]
fn fix_malloc_mmap_threshold() {
    /// The largest block glibc serves from its heaps (its initial default); larger ones are
    /// mapped, and unmapped on free.
    const MMAP_THRESHOLD: i32 = 128 * 1024;
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    // SAFETY: mallopt only sets an allocator parameter; it runs first thing in main, before any
    // other thread exists, and its failure (0) leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(not(all(
    target_os = "linux",
    target_env = "gnu",
    not(feature = "mimalloc"),
    not(feature = "jemalloc")
)))]
fn fix_malloc_mmap_threshold() {}

fn main() -> ExitCode {
    fix_malloc_mmap_threshold();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(arg) => match cli::load_config(arg.config.as_deref()) {
            Ok(config) => serve(config, arg.config),
            Err(e) => fail(2, &e.to_string()),
        },
        Command::Check(arg) => check(arg.config.as_deref()),
        Command::Migrate(args) => {
            let config = match cli::load_config(args.config.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(2, &e.to_string()),
            };
            let mut out = std::io::stdout().lock();
            match cli::migrate(&args, &config, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.exit_code() as u8, &e.to_string()),
            }
        }
        Command::Token { command, common } => match common.endpoint() {
            Some(endpoint) => with_remote(&endpoint, common.ca_file.as_deref(), |remote, out| {
                remote.token(command, common.output, out)
            }),
            None => match command.refuse_unknown_deployments(common.config.as_deref()) {
                Err(e) => fail(e.exit_code() as u8, &e.to_string()),
                Ok(()) => with_token_file(&common, |file, out| {
                    cli::token(command, file, common.output, out)
                }),
            },
        },
        Command::Member {
            command: cli::MemberCommand::LoginLink { name, url },
            common,
        } => {
            if common.endpoint().is_some() {
                return fail(
                    2,
                    "member login-link runs where the token store is (the token file or the database), not through --endpoint",
                );
            }
            let base = match (&url, cli::load_config(common.config.as_deref())) {
                (Some(u), _) => u.clone(),
                (None, Ok(c)) => {
                    let scheme = if c.admin_tls.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    let mut addr = c.admin;
                    if addr.ip().is_unspecified() {
                        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    format!("{scheme}://{addr}")
                }
                (None, Err(e)) => return fail(2, &e.to_string()),
            };
            with_token_file(&common, |file, out| {
                cli::member::login_link(&name, &base, file, common.output, out)
            })
        }
        Command::Member { command, common } => match common.endpoint() {
            Some(endpoint) => with_remote(&endpoint, common.ca_file.as_deref(), |remote, out| {
                remote.member(command, common.output, out)
            }),
            None => with_token_file(&common, |file, out| {
                cli::member(command, file, common.output, out)
            }),
        },
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("bentogate: {message}");
    ExitCode::from(code)
}

fn with_token_file(
    common: &cli::Common,
    run: impl FnOnce(&dyn TokenStore, &mut dyn Write) -> Result<(), cli::CliError>,
) -> ExitCode {
    let config = match cli::load_config(common.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(2, &e.to_string()),
    };
    let outcome = cli::local_store(&config).and_then(|local| {
        let mut out = std::io::stdout().lock();
        local.run(|store| run(store, &mut out))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.exit_code() as u8, &e.to_string()),
    }
}

fn with_remote(
    endpoint: &str,
    ca_file: Option<&std::path::Path>,
    run: impl FnOnce(&cli::remote::Remote, &mut dyn Write) -> Result<(), cli::CliError>,
) -> ExitCode {
    let outcome = cli::remote::Remote::new(endpoint, ca_file).and_then(|remote| {
        let mut out = std::io::stdout().lock();
        run(&remote, &mut out)
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.exit_code() as u8, &e.to_string()),
    }
}

fn check(path: Option<&std::path::Path>) -> ExitCode {
    match cli::check(path) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, &e.to_string()),
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
    // The access log writes its lines itself, in the subscriber's format, to the same stderr.
    bentogate::proxy::access_log::init(match config.log.format {
        LogFormat::Json => Style::Json,
        LogFormat::Pretty if !ansi => Style::Text,
        LogFormat::Pretty => Style::Tracing,
    });
}

fn serve(config: Config, path: Option<std::path::PathBuf>) -> ExitCode {
    init_tracing(&config);
    // One worker: a current-thread runtime, with no work-stealing or cross-thread wake-ups.
    let mut runtime = match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    if config.worker_threads > 1 {
        runtime.worker_threads(config.worker_threads);
    }
    let result = runtime
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(serve_until_signal(config, path)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "bentogate stopped");
            ExitCode::from(1)
        }
    }
}

async fn serve_until_signal(
    config: Config,
    path: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    tracing::info!(
        proxy_addr = %listeners.proxy_addrs().first().map(|a| a.to_string()).unwrap_or_default(),
        admin_addr = %listeners.admin_addr().map(|a| a.to_string()).unwrap_or_default(),
        probes_addr = %listeners.probes_addr().map(|a| a.to_string()).unwrap_or_default(),
        config = %config.origin,
        tokens = %config.tokens.file.display(),
        "listening"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    // SIGTERM is the orchestrator's stop: wait `shutdown.delay` for endpoints to drop this
    // instance. SIGINT is a person at a terminal (Ctrl-C): nothing routes here by a load
    // balancer's list, so in-flight requests drain at once, without the delay.
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                server::Stop::Graceful
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT received: draining without shutdown.delay");
                server::Stop::Now
            }
        }
    };
    let app = server::App::build(config).await?;
    let reloader = app.reloader();
    tokio::spawn(server::reload_on_sighup(reloader, path)?);
    app.serve_until(listeners, shutdown).await;
    Ok(())
}
