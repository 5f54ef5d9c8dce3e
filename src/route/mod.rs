//! Routes: compiled patterns and the first-match table (SPEC §2 "Routes").

pub mod changes;
pub mod pattern;
pub mod table;

pub use pattern::{Params, Pattern};
pub use table::{Lookup, Route, RouteTable};
