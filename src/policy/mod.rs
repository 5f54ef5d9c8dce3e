//! Each policy stage: a type compiled at load time plus one check or apply
//! function, called by `proxy::pipeline::handle` in SPEC §3 order.

pub mod auth;
pub mod body;
pub mod cors;
pub mod forward;
pub mod head;
pub mod headers;
pub mod identity;
pub mod ip_list;
pub mod limits;
pub mod ratelimit;
pub mod request_id;
pub mod require_claims;
pub mod response_headers;
pub mod sanitize;
pub mod tenant;
