//! Where a journey starts: who sent it, from where, by which route, and
//! whether it first waited for ARP.

use std::net::IpAddr;

use crate::decode::{Event, Packet, TCP_ACK, TCP_RST, TCP_SYN, Transport};

use super::{ArpWaited, Decider, Details, RouteChoice, StepKind};
use crate::explain::describe_route;

#[derive(Clone, Debug, PartialEq)]
pub struct Send {
    /// The process whose system call made it; None: the namespace's kernel.
    pub process: Option<(String, u32)>,
    /// The device it leaves by.
    pub out: String,
    /// The device its first route chose, when NAT in OUTPUT changed its
    /// destination and so where it leaves.
    pub first_routed_to: Option<String>,
    pub route: Option<RouteChoice>,
    /// Whom it waited for ARP (neighbour discovery) for, when that wait was
    /// not measured: unknown without a route.
    pub next_hop: Option<IpAddr>,
    pub ipv6: bool,
}

impl Decider<'_> {
    /// The start of the journey at `event`, by the route `pending_route`
    /// found. `rerouted_to`: the device it left by when OUTPUT's NAT changed
    /// its destination after the first route sent it to `event`'s device.
    pub(super) fn send_step(
        &mut self,
        event: &Event,
        pending_route: Option<&Event>,
        rerouted_to: Option<&str>,
    ) {
        // ARP is below routing: a lookup before it is the kernel checking addresses.
        let is_arp = matches!(event.packet.transport, Transport::Arp { .. });
        let route = pending_route
            .filter(|_| !is_arp)
            .and_then(|r| self.route_choice(r));
        // The sender is the task whose own system call made the packet: its
        // route lookup, or the transmit when nothing waited in between (a
        // packet queued for ARP goes out later, from a softirq). The kernel
        // answers some packets itself, often while some process is current.
        let in_its_context = [pending_route, Some(event)]
            .into_iter()
            .flatten()
            .find(|e| e.in_task == Some(true));
        let process = match in_its_context {
            Some(e) => e.process(),
            None if event.in_task.is_none() => event.process(),
            None => None,
        }
        .filter(|_| !kernel_generated(&event.packet));
        let out = rerouted_to.unwrap_or(&event.ifname);
        let waited_in = self
            .waited_for_arp_in
            .take()
            .or(self.sender_waits_for_arp.then_some(event.netns));
        let arp = match waited_in {
            None => ArpWaited::No,
            Some(netns) => match self.arp_wait_in(netns) {
                Some(wait) => ArpWaited::For(wait),
                None => ArpWaited::Unmeasured,
            },
        };
        let send = Send {
            process: process.map(|(comm, pid)| (comm.to_string(), pid)),
            out: out.to_string(),
            first_routed_to: rerouted_to.map(|_| event.ifname.to_string()),
            next_hop: route
                .as_ref()
                .map(|r| r.gateway.unwrap_or(event.packet.dst)),
            ipv6: event.packet.dst.is_ipv6(),
            route,
        };
        let device = (!out.is_empty()).then(|| out.to_string());
        self.push_waited(event, device, StepKind::Send(send), arp);
    }
}

impl Send {
    pub fn words(&self, ns: &str, arp: &ArpWaited) -> String {
        let who = match &self.process {
            Some((comm, pid)) => format!("{comm} (pid {pid})"),
            None => format!("the kernel of {ns}"),
        };
        let mut text = format!("{who} sends it from {ns} out of {}", self.out);
        if let Some(first) = &self.first_routed_to {
            text += &format!(" (first routed to {first}; NAT in OUTPUT changed its destination)");
        }
        if let Some(route) = &self.route {
            text += &format!("; route: {}", describe_route(route));
        }
        match arp {
            ArpWaited::For(wait) => text += &format!("; it first {}", wait.sentence()),
            ArpWaited::Unmeasured => {
                let resolution = if self.ipv6 {
                    "neighbour discovery"
                } else {
                    "ARP"
                };
                let neighbour = self
                    .next_hop
                    .map_or_else(|| "the next hop".to_string(), |hop| hop.to_string());
                text += &format!(
                    "; it first waited for {resolution} to resolve {neighbour}'s MAC address"
                );
            }
            ArpWaited::No => {}
        }
        text
    }

    pub fn details(&self, arp: &ArpWaited) -> Details {
        Details::Send {
            process: self.process.as_ref().map(|(comm, _)| comm.clone()),
            pid: self.process.as_ref().map(|(_, pid)| *pid),
            route: self.route.clone(),
            waited_for_arp: *arp != ArpWaited::No,
        }
    }
}

/// Packets only the kernel sends: handshake answers, resets, ICMP replies and errors.
fn kernel_generated(packet: &Packet) -> bool {
    match packet.transport {
        Transport::Tcp { flags, .. } => {
            flags & TCP_RST != 0 || flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
        }
        Transport::Icmp { .. } => packet.transport.icmp() != Some((8, 0)),
        Transport::Arp { .. } => true,
        _ => false,
    }
}
