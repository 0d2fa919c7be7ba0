//! bentogate: an authorizing reverse proxy for protected Bento deployments.
//!
//! # Layout
//!
//! Leaves know nothing of the server; the pipeline uses them; dependencies point one way (down):
//!
//! ```text
//! main.rs (bin)   command line, tracing, runtime; calls server::run or cli
//! cli/            token and member commands, local (token file) or remote (--endpoint)
//! server.rs       listeners, connections, limits, reloads, graceful shutdown
//! throttle.rs     per-address failure buckets (429)
//! tls.rs          certificates, SNI resolver, TLS server config
//! admin.rs        /healthz /readyz /metrics on the admin listener; routes control-plane paths
//! control/        control plane: permission rules, BentoCloud token API, /v1/introspect
//! proxy/          the request pipeline in phase order: route, authorize, rewrite, forward, respond
//! validator.rs    moka cache in front of a token source
//! store/          token sources (file, introspect client) and the token file format
//! route.rs        host + longest-prefix route table
//! auth.rs         Bearer parsing and the policy decision, pure functions
//! path.rs         request-path normalization (RFC 3986), the one reading of a path
//! metrics.rs      the metrics struct on an explicit registry
//! config/         YAML -> validated Config: raw shapes, resolver, defaults
//! token.rs        token values, digests, the Token record
//! clock.rs        Unix seconds and timestamp formats
//! yaml.rs         every YAML read and write; the one file that names the YAML parser
//! ```
//!
//! The rule: nothing here logs, formats or returns a token value, except the creation paths in
//! `cli` and `control::api` (the create response).

pub mod admin;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
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
