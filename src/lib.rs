//! bentogate: an authorizing reverse proxy for protected Bento deployments.
//!
//! # Layout
//!
//! Leaves know nothing of the server; the pipeline uses them; dependencies point one way (down):
//!
//! ```text
//! main.rs (bin)   command line, tracing, runtime; wires the library and runs it
//! cli/            commands: check, token, member, migrate; local (file or database) or remote
//! server/         listeners, connections, reloads (SIGHUP), graceful shutdown
//! admin.rs        /healthz /readyz /metrics on the admin listener; routes control-plane paths
//! control/        control plane: callers, issuance, grant rule, members, views, audit, token API,
//!                 /v1/introspect
//! proxy/          the request pipeline in phase order: target, route, authorize, rewrite, forward
//! throttle.rs     per-address failure buckets (429), shared by every listener
//! tls/            certificates, SNI resolver, client CA, TLS server config; client configs for
//!                 the outbound hops (PostgreSQL, introspection, the remote CLI); expiry
//! validator.rs    moka cache in front of a token source
//! store/          the TokenSource trait and store::open; file, postgres, introspect; the file format
//! route.rs        host + longest-prefix route table
//! auth.rs         Bearer parsing, the presented control-plane token, the policy decision
//! path.rs         request-path normalization (RFC 3986), the one reading of a path
//! metrics.rs      the metrics struct on an explicit registry
//! config/         YAML -> validated Config: raw shapes, resolver, defaults
//! token.rs        token values, digests, the Token record
//! clock.rs        Unix seconds and timestamp formats
//! log_line.rs     log lines formatted by hand (the access log's), as the tracing subscriber would
//! periodic.rs     background work on a period until shutdown
//! yaml.rs         every YAML read and write; the one file that names the YAML parser
//! ```
//!
//! The rule: nothing here logs, formats or returns a token value, except the creation paths in
//! `cli` and `control::api` (the create response). docs/design.md is the design contract.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod control;
pub mod log_line;
pub mod metrics;
pub mod path;
pub mod periodic;
pub mod proxy;
pub mod route;
pub mod server;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod token;
pub mod validator;
pub mod yaml;
