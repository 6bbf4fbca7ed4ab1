//! Renderers: the same stories as terminal text or JSON Lines, and the
//! topology as tables, JSON or a picture.

pub mod diff;
pub mod dns;
pub mod json;
pub mod pcap;
pub mod schema;
pub mod step;
pub mod terminal;
pub mod topology;
