//! The engine under every tracing command. A source hands over what a
//! story is told from (`Told`): the live kernel (`live`: events taken in,
//! decoded, assembled into journeys, paired, enriched with the facts read
//! where they happened) or a recording of such a run (`recording`). The
//! teller (`teller`) explains each and hands the story to the sinks the
//! command chose (terminal, JSON, step mode, pcapng, SVG); a recorder keeps
//! what it was told from. A recording re-told goes through the very code a
//! live run does, so it is the same story by construction.

pub mod intake;
pub mod join;
pub mod live;
pub mod recording;
pub mod sinks;
pub mod teller;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    enrich::facts::Facts,
    journey::{Journey, exchanges::Role},
};

/// What one story is told from.
#[derive(Clone, Debug)]
pub enum Told {
    /// A journey in the part it plays, with the facts read for it.
    Journey {
        journey: Journey,
        role: Role,
        facts: Box<Facts>,
    },
    /// Request `request` got no reply within `waited_ms`.
    NoReply {
        request: u64,
        waited_ms: u64,
        /// The kernel lost events while the reply could have come.
        events_lost: bool,
    },
}

/// Where the followed packets go: an address, and a port when one was named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub address: IpAddr,
    pub port: Option<u16>,
}
