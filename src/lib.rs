//! palisade: a reverse-proxy sidecar that enforces cross-cutting policy from
//! one TOML file in front of an unchanged upstream.
//!
//! The path of a request (see `proxy::pipeline::handle`):
//!
//! 1. `proxy::server` accepts under `max_connections`, finishes TLS and serves
//!    HTTP/1.1 and HTTP/2 with header-read timeouts and size caps.
//! 2. `proxy::pipeline` takes one policy snapshot and runs each `policy`
//!    stage in SPEC §3 order; a failure becomes a `proxy::reject::Reject`.
//! 3. `proxy::upstream` forwards over a pooled client under the route's
//!    deadline, streaming bodies both ways.
//! 4. `proxy::respond` turns rejections into problem+json; response headers
//!    are added; `observe` records metrics and the access line at the end.

pub mod admin;
pub mod cli;
pub mod config;
pub mod observe;
pub mod policy;
#[cfg(any(test, fuzzing))]
pub mod props;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod shutdown;

pub use proxy::server::{Server, StartError, start};
