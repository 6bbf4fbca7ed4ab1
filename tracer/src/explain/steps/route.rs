//! Routing decisions: the lookup that decided where the packet goes, one a
//! sender made in vain (no packet), and one for an answer that found no
//! way back.

use std::net::IpAddr;

use crate::{
    decode::{Event, EventKind, LOCAL_TABLE, RouteFor, RouteResult},
    explain::describe_route,
};

use super::{Decider, RouteChoice, StepKind};

/// A sender's lookup that found no way: no packet was made.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    /// Who asked (a process in its system call), when known.
    pub sender: Option<(String, u32)>,
    pub destination: IpAddr,
    pub route: RouteChoice,
}

/// A routing decision of a namespace for the packet.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub destination: IpAddr,
    pub route: RouteChoice,
    pub kind: DecisionKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DecisionKind {
    /// Where the packet goes next.
    Onward,
    /// It is for an address of the namespace's own, on `device`.
    LocalDelivery { device: String },
    /// ARP asked for an address of the namespace's own, on `device`.
    ArpForOwnAddress { device: String },
    /// The namespace went to answer the packet (an echo reply, an ICMP
    /// error) and found no route back to its source.
    NoRouteBack,
}

impl Decider<'_> {
    /// A sender's route lookup that found no way: no packet was made.
    pub(super) fn refused_route_step(&mut self, event: &Event) {
        let route = self.route_choice(event).expect("a route event");
        let refused = Refused {
            sender: event.process().map(|(comm, pid)| (comm.to_string(), pid)),
            destination: event.packet.dst,
            route,
        };
        self.push(event, None, StepKind::RefusedRoute(refused));
    }

    /// The routing decision; a namespace looks up more than once per packet
    /// (address checks, then the route), and the last lookup is the decision.
    pub(super) fn route_step(&mut self, event: &Event) {
        let route = self.route_choice(event).expect("a route event");
        let dst = event.packet.dst;
        let own = self.topology.namespace(event.netns).and_then(|n| {
            n.interfaces
                .iter()
                .find(|i| i.addresses.iter().any(|(a, _)| *a == dst))
        });
        let local = route.result == RouteResult::Local;
        let answering = matches!(
            event.kind,
            EventKind::Route {
                route_for: RouteFor::AnswerTo,
                ..
            }
        );
        let kind = match own {
            _ if answering && !route.result.found() => {
                self.unanswerable = Some((
                    event.clone(),
                    Decision {
                        destination: dst,
                        route,
                        kind: DecisionKind::NoRouteBack,
                    },
                ));
                return;
            }
            // Found, the answer's route is the answer's own story.
            _ if answering => return,
            // ARP looks up the address it is asked about: an answer follows if it is ours.
            Some(iface) if self.arp && local => DecisionKind::ArpForOwnAddress {
                device: iface.name.clone(),
            },
            Some(iface) if local => DecisionKind::LocalDelivery {
                device: iface.name.clone(),
            },
            // A local-table hit for a foreign address is an address-type check,
            // and ARP only ever asks about neighbours: neither is a route.
            _ if local || route.table == LOCAL_TABLE || self.arp => return,
            _ => DecisionKind::Onward,
        };
        // The same decision again (a REJECT looking up where to answer) adds nothing.
        let told = self.steps.iter().any(|s| {
            s.netns == event.netns && matches!(&s.kind, StepKind::Route(d) if d.route == route)
        });
        if told {
            return;
        }
        if self
            .steps
            .last()
            .is_some_and(|s| matches!(s.kind, StepKind::Route(_)) && s.netns == event.netns)
        {
            self.steps.pop();
        }
        let device = route.out_device.clone();
        let decision = Decision {
            destination: dst,
            route,
            kind,
        };
        self.push(event, device, StepKind::Route(decision));
    }
}

impl Refused {
    pub fn words(&self, ns: &str) -> String {
        let who = match &self.sender {
            Some((comm, pid)) => format!("{comm} (pid {pid})"),
            None => "a sender".into(),
        };
        format!(
            "{who} in {ns} asks the kernel for a route to {}: {}",
            self.destination,
            describe_route(&self.route)
        )
    }
}

impl Decision {
    pub fn words(&self, ns: &str) -> String {
        let dst = self.destination;
        match &self.kind {
            DecisionKind::NoRouteBack => format!(
                "{ns} went to answer it and found no route back to {dst}: {}",
                describe_route(&self.route)
            ),
            DecisionKind::ArpForOwnAddress { device } => format!(
                "{ns} checks the address asked for: {dst} is its own (on {device}), so its kernel answers"
            ),
            DecisionKind::LocalDelivery { device } => format!(
                "routing decision in {ns}: local delivery, {dst} is this namespace's own address (on {device})"
            ),
            DecisionKind::Onward => format!(
                "routing decision in {ns}: {dst} → {}",
                describe_route(&self.route)
            ),
        }
    }
}
