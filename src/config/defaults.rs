//! Every default of the configuration, by name: what an omitted key means.
//!
//! Re-exported from [`crate::config`]; the resolver fills omitted keys from here and nowhere else.

use std::time::Duration;

/// Default plain listener when `listeners` is omitted.
pub const DEFAULT_LISTENER: &str = "127.0.0.1:8080";
/// Default admin listener: loopback, since it serves metrics and (later) the control plane.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// Default token file, relative to the configuration file's folder.
pub const DEFAULT_TOKEN_FILE: &str = "tokens.yaml";
/// Default bound on cached token lookups.
pub const DEFAULT_CACHE_CAPACITY: u64 = 100_000;
/// Default life of a cached positive lookup (expiry and revocation are still enforced sooner).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// Default life of a cached "unknown token" answer.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How often last-use times are written to the token file (last use is shown at most a few seconds late).
pub const DEFAULT_USAGE_FLUSH: Duration = Duration::from_secs(5);
/// Connections per replica to the `postgres` source.
pub const DEFAULT_PG_POOL_SIZE: usize = 4;
/// How long cached tokens keep passing while a remote token source is unreachable.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(300);
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default wait for the upstream's response headers.
pub const DEFAULT_RESPONSE_HEADERS_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest silence on an upstream body, and idle life of a pooled connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default limit on a request's header block.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default time a client has to send its whole header block (slowloris guard).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit on open client connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time in-flight requests get to finish after SIGTERM (`shutdown.timeout`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time the listeners keep accepting after SIGTERM while `/readyz` says 503
/// (`shutdown.delay`): long enough for Kubernetes to take the pod out of a Service's endpoints
/// and for load balancers to stop sending, so no connection is refused while it still routes here.
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);
/// Default refill of each client's failure bucket.
pub const DEFAULT_THROTTLE_PER_MINUTE: u32 = 30;
/// Default failures a client may make at once.
pub const DEFAULT_THROTTLE_BURST: u32 = 10;
/// Default most client addresses tracked by the throttle.
pub const DEFAULT_THROTTLE_CLIENTS: u64 = 100_000;
/// Default life of an idle keep-alive client connection.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default concurrent streams per HTTP/2 client connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default idle upstream connections kept per upstream.
pub const DEFAULT_MAX_IDLE_PER_UPSTREAM: usize = 256;
/// Default requests in flight per upstream.
pub const DEFAULT_MAX_CONNECTIONS_PER_UPSTREAM: usize = 1024;
/// Default identity header carrying the caller's token uid.
pub const DEFAULT_UID_HEADER: &str = "x-bentogate-token-uid";
/// Default identity header carrying the caller's token name.
pub const DEFAULT_NAME_HEADER: &str = "x-bentogate-token-name";
/// Default identity header carrying the caller's owner (organization, or the user's name).
pub const DEFAULT_OWNER_HEADER: &str = "x-bentogate-token-owner";

/// Default location of the file source's last-use times: `<token file>.last-used`, beside it.
pub fn default_last_used_file(token_file: &std::path::Path) -> std::path::PathBuf {
    let mut name = token_file.file_name().unwrap_or_default().to_owned();
    name.push(".last-used");
    token_file.with_file_name(name)
}
/// Default idle timeout of a console session (`admin.console.session_idle`).
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Default absolute lifetime of a console session (`admin.console.session_lifetime`).
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Default most browser-login codes waiting at once (`admin.console.pending_codes`): each is a
/// row or an entry an anonymous caller made, so they are bounded.
pub const DEFAULT_PENDING_CODES: usize = 1000;
/// Default browser-login codes one client address may ask for per minute
/// (`admin.console.codes_per_minute`).
pub const DEFAULT_CODES_PER_MINUTE: u32 = 10;
