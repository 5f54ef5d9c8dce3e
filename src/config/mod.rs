//! `policy.toml`: parsed into a serde mirror (`file`), then compiled once
//! into the runtime [`Policy`] (`compile`). Nothing on the request path
//! parses a config string.

pub mod choices;
pub mod compile;
pub mod error;
pub mod expand;
pub mod file;
pub mod keys;
pub mod redact;
pub mod units;
pub mod values;

pub use compile::{
    LogPolicy, Policy, ServerPolicy, UpstreamPolicy, load_file, load_file_for_reload, load_str,
    load_text_at,
};
pub use error::ConfigError;
pub use expand::Env;
