//! The floor: what hyper 1.x and tokio alone cost per request on bench/instructions.sh's request
//! mix, with none of bentogate's own work (no routing, no token check, no header rewriting, no
//! metrics, no keep-alive bookkeeping).
//!
//! Issue 16 asks for bentogate's instructions per request to be at or below nginx's. This program
//! answers whether that is reachable on hyper at all: if the bare stack already costs more than
//! nginx doing the whole job, the gap cannot be closed by trimming bentogate's code.
//!
//!   cargo build --release --example floor
//!   PROXIES="nginx floor-refuse floor-forward" N=1000 bench/instructions.sh
//!
//! It serves connections as src/server/connection.rs does (one current-thread runtime, a task per
//! connection, hyper-util's auto builder with upgrades, or `--server http1` for hyper's own
//! HTTP/1.1 builder) and forwards as src/proxy/upstream does (`hyper::client::conn::http1`, the
//! connection future spawned as a task, one connection kept and reused).
//!
//! - `--mode refuse`: every request is answered 401 with a fixed body and `www-authenticate`,
//!   reading nothing of the request: the floor of a refusal.
//! - `--mode forward`: every request goes to the upstream unchanged and the response comes back
//!   streaming (the upstream's `Incoming` body passed through): the floor of a forward.
//!
//! The remaining flags switch hyper's builder knobs, to measure what each costs, and two
//! departures from bentogate's design, to measure what they would buy:
//!
//! - `--client-inline on`: the upstream connection is driven inside the request's task (the
//!   response future, then the response body, poll it) instead of a spawned task reached over
//!   hyper's channel.
//! - `--server raw` (refuse only): no hyper on the server side; `httparse` on a read buffer and a
//!   pre-rendered answer, keep-alive. An HTTP/1.1 codec of one's own, reduced to its cost.
//!
//! Last results (hyper 1.12.0, hyper-util 0.1.21, tokio 1.54.1; N=1000; nginx 25,288 forwarded,
//! 11,649 refused; the last three rows measured in the ninth session, nginx 25,290 / 11,737):
//!
//! | flags                                                          | refuse | forward |
//! |----------------------------------------------------------------|-------:|--------:|
//! | (defaults: auto, timer with header read timeout, as bentogate) | 11,257 | ~28,200-29,000 |
//! | `--timer off`                                                  |  9,828 |  26,320 |
//! | `--timer off --writev off --half-close on --client-writev off` |  8,690 |  24,410 |
//! | `--timer off --writev off` (bentogate's knobs now)             |  9,193 |  25,702 |
//! | `--timer off --writev off --client-inline on`                  |        |  30,494 |
//! | `--server raw`                                                 |  3,275 |         |
//!
//! With the timer on, forward counts move by several hundred between runs (the timer wheel
//! depends on wall time); with it off they repeat to within a few instructions.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_http1;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

const REALM_INVALID: HeaderValue =
    HeaderValue::from_static(r#"Bearer realm="bentogate", error="invalid_token""#);
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const REFUSED: &str = r#"{"error": "invalid token"}"#;

/// What every request gets.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// 401 without reading the request.
    Refuse,
    /// Forwarded to the upstream unchanged.
    Forward,
}

/// Which hyper server builder serves connections.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Server {
    /// hyper-util's auto builder (HTTP/1.1 or HTTP/2 by preface), as bentogate serves.
    Auto,
    /// hyper's HTTP/1.1-only builder.
    Http1,
    /// No hyper: `httparse` on a read buffer and a pre-rendered answer written back, keep-alive,
    /// `--mode refuse` only. What a refusal costs on an HTTP/1.1 codec of one's own (it reads no
    /// request body: the harness sends GETs).
    Raw,
}

/// A knob left at hyper's default or set either way.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Knob {
    Default,
    On,
    Off,
}

impl Knob {
    fn value(self) -> Option<bool> {
        match self {
            Knob::Default => None,
            Knob::On => Some(true),
            Knob::Off => Some(false),
        }
    }
}

/// The command line.
#[derive(Parser)]
#[command(about = "hyper + tokio's floor per request, for bench/instructions.sh")]
struct Args {
    /// Where to serve.
    #[arg(long)]
    listen: SocketAddr,
    /// Where `--mode forward` sends requests.
    #[arg(long)]
    upstream: SocketAddr,
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, value_enum, default_value = "auto")]
    server: Server,
    /// A tokio timer with hyper's header read timeout (30 s), as bentogate has; `off`: no timer,
    /// so no header read timeout.
    #[arg(long, value_enum, default_value = "on")]
    timer: Knob,
    /// The server's vectored writes (hyper's default guesses).
    #[arg(long, value_enum, default_value = "default")]
    writev: Knob,
    /// The server's read buffer limit (hyper's default is ~400 KiB; bentogate sets 12 KiB).
    #[arg(long)]
    max_buf_size: Option<usize>,
    /// The server's `date` header (on by default in hyper).
    #[arg(long, value_enum, default_value = "default")]
    date: Knob,
    /// The server's half-close support (off by default in hyper).
    #[arg(long, value_enum, default_value = "default")]
    half_close: Knob,
    /// The client's vectored writes (hyper's default guesses).
    #[arg(long, value_enum, default_value = "default")]
    client_writev: Knob,
    /// `on`: the upstream connection is driven inside the request's task (the response future and
    /// then the response body poll it) instead of a spawned task it talks to over a channel.
    #[arg(long, value_enum, default_value = "off")]
    client_inline: Knob,
}

/// How connections are served: one of the two builders, with the knobs applied, or no hyper.
enum Serving {
    Auto(auto::Builder<TokioExecutor>),
    Http1(server_http1::Builder),
    /// `--server raw`: the 401 every request gets, rendered once.
    Raw(Bytes),
}

/// Applies the HTTP/1.1 knobs to either builder (hyper-util's auto builder's `http1()` and
/// hyper's own have the same methods but no common trait).
macro_rules! knobs {
    ($h1:ident, $args:ident) => {
        if $args.timer == Knob::On {
            $h1.timer(TokioTimer::new());
        } else {
            $h1.header_read_timeout(None);
        }
        if let Some(v) = $args.writev.value() {
            $h1.writev(v);
        }
        if let Some(max) = $args.max_buf_size {
            $h1.max_buf_size(max);
        }
        if let Some(v) = $args.date.value() {
            $h1.auto_date_header(v);
        }
        if let Some(v) = $args.half_close.value() {
            $h1.half_close(v);
        }
    };
}

impl Serving {
    fn new(args: &Args) -> std::io::Result<Serving> {
        Ok(match args.server {
            Server::Auto => {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                let mut h1 = builder.http1();
                knobs!(h1, args);
                Serving::Auto(builder)
            }
            Server::Http1 => {
                let mut h1 = server_http1::Builder::new();
                knobs!(h1, args);
                Serving::Http1(h1)
            }
            Server::Raw if args.mode == Mode::Refuse => Serving::Raw(Bytes::from(format!(
                "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: {}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{REFUSED}",
                REALM_INVALID.to_str().unwrap_or_default(),
                REFUSED.len()
            ))),
            Server::Raw => {
                return Err(std::io::Error::other(
                    "--server raw serves --mode refuse only",
                ))
            }
        })
    }
}

/// The one kept upstream connection, taken for a request and put back once its response head is
/// in (the next request waits in `ready` if the body is still coming).
struct Upstream {
    addr: SocketAddr,
    writev: Option<bool>,
    kept: Mutex<Option<client_http1::SendRequest<Incoming>>>,
    /// `--client-inline on`: the kept connection with its connection future, driven by whoever
    /// holds it.
    inline: Mutex<Option<Inline>>,
}

/// Polls `conn` (its share of the connection's reading and writing), then `then`.
fn driving<T>(
    conn: &mut client_http1::Connection<TokioIo<TcpStream>, Incoming>,
    cx: &mut Context<'_>,
    then: impl FnOnce(&mut Context<'_>) -> Poll<hyper::Result<T>>,
) -> Poll<hyper::Result<T>> {
    if let Poll::Ready(Err(e)) = conn.poll_without_shutdown(cx) {
        return Poll::Ready(Err(e));
    }
    then(cx)
}

/// An upstream connection driven by the request task that holds it.
struct Inline {
    sender: client_http1::SendRequest<Incoming>,
    conn: client_http1::Connection<TokioIo<TcpStream>, Incoming>,
}

/// The upstream's body with the connection that feeds it: each poll drives the connection first;
/// at the end the connection goes back to `home`.
struct InlineBody {
    inner: Incoming,
    pair: Option<Inline>,
    home: Arc<Upstream>,
}

impl hyper::body::Body for InlineBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(pair) = &mut this.pair {
            if let Poll::Ready(Err(e)) = pair.conn.poll_without_shutdown(cx) {
                this.pair = None;
                return Poll::Ready(Some(Err(e)));
            }
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() || this.inner.is_end_stream() {
            if let Some(pair) = this.pair.take() {
                *this
                    .home
                    .inline
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(pair);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a forward failed; answered 502.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(#[from] std::io::Error),
    #[error("upstream HTTP error: {0}")]
    Http(#[from] hyper::Error),
}

/// Takes what `slot` keeps, leaving it empty.
fn take_kept<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

impl Upstream {
    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Incoming>, ForwardError> {
        let mut sender = match take_kept(&self.kept) {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender.ready().await?;
        let res = sender.send_request(req).await?;
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.is_none() {
            *kept = Some(sender);
        }
        Ok(res)
    }

    /// `--client-inline on`: sends on the kept connection, polling it in this task.
    async fn forward_inline(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<InlineBody>, ForwardError> {
        let mut pair = match take_kept(&self.inline) {
            Some(p) if !p.sender.is_closed() => p,
            _ => self.connect_inline().await?,
        };
        let Inline { sender, conn } = &mut pair;
        poll_fn(|cx| driving(conn, cx, |cx| sender.poll_ready(cx))).await?;
        let mut pending = pin!(sender.send_request(req));
        let res = poll_fn(|cx| driving(conn, cx, |cx| pending.as_mut().poll(cx))).await?;
        let home = Arc::clone(&self);
        Ok(res.map(|inner| InlineBody {
            inner,
            pair: Some(pair),
            home,
        }))
    }

    /// A new connection, not driven yet: `connect` spawns its driver, `--client-inline` keeps it.
    async fn connect_inline(&self) -> Result<Inline, ForwardError> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let mut builder = client_http1::Builder::new();
        if let Some(v) = self.writev {
            builder.writev(v);
        }
        let (sender, conn) = builder.handshake(TokioIo::new(stream)).await?;
        Ok(Inline { sender, conn })
    }

    async fn connect(&self) -> Result<client_http1::SendRequest<Incoming>, ForwardError> {
        let Inline { sender, conn } = self.connect_inline().await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                eprintln!("upstream connection ended with an error: {e}");
            }
        });
        Ok(sender)
    }
}

type Body = Either<Either<Incoming, InlineBody>, Full<Bytes>>;

fn refuse() -> Response<Body> {
    let mut res = Response::new(Either::Right(Full::new(Bytes::from_static(
        REFUSED.as_bytes(),
    ))));
    *res.status_mut() = StatusCode::UNAUTHORIZED;
    res.headers_mut().insert(WWW_AUTHENTICATE, REALM_INVALID);
    res.headers_mut().insert(CONTENT_TYPE, JSON);
    res
}

fn bad_gateway(e: &ForwardError) -> Response<Body> {
    eprintln!("{e}");
    let mut res = Response::new(Either::Right(Full::new(Bytes::from_static(
        br#"{"error": "bad gateway"}"#,
    ))));
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    res
}

/// `upstream` is `None` in `--mode refuse`.
async fn handle(
    upstream: Option<Arc<Upstream>>,
    inline: bool,
    req: Request<Incoming>,
) -> Response<Body> {
    match upstream {
        None => refuse(),
        Some(upstream) if inline => match upstream.forward_inline(req).await {
            Ok(res) => res.map(|b| Either::Left(Either::Right(b))),
            Err(e) => bad_gateway(&e),
        },
        Some(upstream) => match upstream.forward(req).await {
            Ok(res) => res.map(|b| Either::Left(Either::Left(b))),
            Err(e) => bad_gateway(&e),
        },
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let serving = Arc::new(Serving::new(&args)?);
    let upstream = Arc::new(Upstream {
        addr: args.upstream,
        writev: args.client_writev.value(),
        kept: Mutex::new(None),
        inline: Mutex::new(None),
    });
    let mode = args.mode;
    let inline = args.client_inline == Knob::On;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let serving = Arc::clone(&serving);
        let upstream = Arc::clone(&upstream);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                // Refusals take no reference: the floor of a refusal touches nothing shared.
                let upstream = (mode == Mode::Forward).then(|| Arc::clone(&upstream));
                async move { Ok::<_, Infallible>(handle(upstream, inline, req).await) }
            });
            let result = match &*serving {
                Serving::Raw(answer) => refuse_raw(stream, answer).await.map_err(Into::into),
                Serving::Auto(b) => {
                    b.serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await
                }
                Serving::Http1(b) => b
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
                    .map_err(Into::into),
            };
            if let Err(e) = result {
                eprintln!("connection ended with an error: {e}");
            }
        });
    }
}

/// `--server raw`: every request head on the connection parsed by `httparse` and answered with
/// `answer` (rendered once; no `Date` header, which hyper adds from a per-second cache); the
/// connection closes on a malformed head or a head over 16 KiB.
async fn refuse_raw(mut stream: TcpStream, answer: &[u8]) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                bytes::Buf::advance(&mut buf, n);
                stream.write_all(answer).await?;
                continue;
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => {}
            _ => return Ok(()),
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
