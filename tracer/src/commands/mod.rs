//! The commands: each chooses what to follow, where its events come from
//! and where its stories go; the session engine does the rest.

pub mod diff;
pub mod dns;
pub mod follow;
pub mod replay;
pub mod target;
pub mod topology;
