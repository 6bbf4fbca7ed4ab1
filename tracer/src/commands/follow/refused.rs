//! Sends the probe's kernel refused though its route lookup found a way
//! (too big for the learned path MTU): each is told as the journey of that
//! lookup, with what the send returned.

use std::{collections::BTreeMap, net::IpAddr, sync::mpsc::Receiver};

use crate::{
    journey::{Assembler, Journey},
    probes,
};

use super::sender::Refusal;

/// The probe's sends its kernel refused though its route lookup found a
/// way (too big for the learned path MTU): each becomes the journey of that
/// lookup once the events up to the refusal are in, and is told with what
/// the send returned. Refusals for want of a route need none of this: their
/// failed lookups are journeys of their own.
#[derive(Default)]
pub struct RefusedSends {
    /// Refusals heard of, with the kernel time they were heard at.
    waiting: Vec<(Refusal, u64)>,
    /// Journey id to the errno of its send.
    pub by_journey: BTreeMap<u64, i32>,
    /// The IPv4 length the probe's packets have.
    pub length: u16,
}

impl RefusedSends {
    /// `length`: the IPv4 length the probe's packets have.
    pub fn new(length: u16) -> Self {
        Self {
            length,
            ..Self::default()
        }
    }

    pub fn take_in(&mut self, refusals: &Receiver<Refusal>) {
        let heard_ns = probes::monotonic_now_ns();
        self.waiting.extend(
            refusals
                .try_iter()
                .filter(|r| r.errno == libc::EMSGSIZE)
                .map(|r| (r, heard_ns)),
        );
    }

    /// The lookups of refused sends whose events are all in by now.
    pub fn journeys(
        &mut self,
        assembler: &mut Assembler,
        taken_in_up_to_ns: u64,
        source_netns: u32,
        destination: IpAddr,
    ) -> Vec<Journey> {
        let (ready, waiting) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, heard)| taken_in_up_to_ns >= *heard);
        self.waiting = waiting;
        let mut journeys = Vec::new();
        for (refusal, _) in ready {
            let lookup = assembler.take_sender_lookup(
                std::process::id(),
                source_netns,
                destination,
                refusal.at_ns,
            );
            if let Some(journey) = lookup {
                self.by_journey.insert(journey.id, refusal.errno);
                journeys.push(journey);
            }
        }
        journeys
    }
}
