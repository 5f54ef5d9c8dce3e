//! The proxy: listeners, the request pipeline, the upstream client, and the
//! one place rejections become responses.

pub mod breaker;
pub mod capped;
pub mod conn;
pub mod ctx;
pub mod generation;
pub mod h1;
pub mod held;
pub mod pipeline;
pub mod protocol;
pub mod reject;
pub mod respond;
pub mod response_body;
pub mod retry;
pub mod server;
pub mod state;
pub mod upstream;
pub mod wire;
