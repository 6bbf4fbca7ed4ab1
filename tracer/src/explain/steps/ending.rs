//! How a journey without an end of its own stands (it left through a device
//! nothing is traced beyond, it was never sent, it is still in the kernel),
//! where its packet came from, and an answer's failed way back.

use crate::{
    decode::{Event, EventKind, Mac, RouteFor, RouteResult, TCP_ACK, TCP_SYN, Transport},
    enrich::{Interface, LinkKind, Route, RouteKind, Topology, facts::Facts},
    explain::{NotSent, RouteBack, outcome::AcceptedBy},
    journey::Journey,
};

use super::{Decider, Ending, Origin, StepKind};

impl Decider<'_> {
    /// The packet left through `sent_out`'s device; `freed_by` is where the
    /// device freed it after sending, when that was seen.
    pub(super) fn left(&self, sent_out: &Event, freed_by: Option<&str>) -> Ending {
        let iface = self.interface(sent_out.netns, sent_out.ifindex);
        // Devices without ARP (ifb, dummy) address frames to themselves or to
        // everyone: that is no neighbour's address.
        let own_mac = iface.and_then(Interface::mac);
        let next_hop_mac = match sent_out.kind {
            EventKind::Transmit { mac_dst: Some(mac) }
                if Some(mac) != own_mac && mac != Mac::BROADCAST =>
            {
                Some(mac)
            }
            _ => None,
        };
        Ending::Left {
            namespace: self.namespace(sent_out.netns),
            netns: sent_out.netns,
            device: sent_out.ifname.to_string(),
            device_kind: iface.map_or(LinkKind::Hardware, |i| i.kind.clone()),
            driver: iface.and_then(|i| i.driver.clone()),
            next_hop: self.next_hop(sent_out),
            next_hop_mac,
            freed_by: freed_by.map(str::to_string),
            read_by: None,
            in_tunnel: sent_out.packet.tunnel,
        }
    }

    /// How a journey with no end of its own (no drop, receive or delivery)
    /// stands: it left through a device nothing is traced beyond, it was
    /// never sent, or it was still in the kernel, e.g. waiting for a neighbour.
    pub(super) fn unfinished(&self) -> Ending {
        let last = self
            .events
            .iter()
            .rev()
            .find(|e| !matches!(e.kind, EventKind::Route { .. }));
        let Some(last) = last else {
            return self.not_sent();
        };
        // Routed to an address of its own, a namespace's kernel takes it in.
        let arrived = self.steps.last().is_some_and(|s| {
            s.netns == last.netns
                && match &s.kind {
                    StepKind::Route(decision) => decision.route.result == RouteResult::Local,
                    StepKind::RefusedRoute(refused) => refused.route.result == RouteResult::Local,
                    _ => false,
                }
        });
        let taken_in = || Ending::TakenIn {
            namespace: self.namespace(last.netns),
            netns: last.netns,
            handler: None,
            no_route_back: None,
            accepted_by: None,
        };
        if arrived {
            return taken_in();
        }
        let continues = self.passes_on_here(last);
        match &last.kind {
            EventKind::Transmit { .. } if !continues => self.left(last, None),
            kind if kind.enters_local_stack() => taken_in(),
            kind if kind.is_neighbour_solicit() => Ending::InFlight {
                namespace: self.namespace(last.netns),
                netns: last.netns,
                device: Some(last.ifname.to_string()),
                waiting_for: self.next_hop(last),
            },
            _ => Ending::InFlight {
                namespace: self.namespace(last.netns),
                netns: last.netns,
                device: (!last.ifname.is_empty()).then(|| last.ifname.to_string()),
                waiting_for: None,
            },
        }
    }

    /// A journey of route lookups alone: a sender asked for a route and the
    /// kernel found none, so no packet was made. Told with the namespace's
    /// routes of the table that answered.
    fn not_sent(&self) -> Ending {
        let failed = self.events.iter().rev().find_map(|e| match e.kind {
            EventKind::Route { table, result, .. } if !result.found() => Some((e, table, result)),
            _ => None,
        });
        let sender = |lookup: &Event| {
            lookup
                .process()
                .map(|(comm, pid)| format!("{comm} (pid {pid})"))
        };
        let Some((lookup, table, result)) = failed else {
            // The route was found, and the send refused all the same: too
            // big for the path MTU the namespace learned.
            return match (self.events.first(), &self.facts.refused_send) {
                (Some(lookup), Some(refused)) => Ending::NotSent {
                    namespace: self.namespace(lookup.netns),
                    netns: lookup.netns,
                    sender: sender(lookup),
                    why: NotSent::TooBig {
                        destination: lookup.packet.dst,
                        length: refused.length,
                        path_mtu: refused.path_mtu,
                    },
                },
                _ => Ending::InFlight {
                    namespace: "nowhere".into(),
                    netns: 0,
                    device: None,
                    waiting_for: None,
                },
            };
        };
        let (routes, default_route) = table_routes(
            self.topology,
            lookup.netns,
            table,
            lookup.packet.dst.is_ipv6(),
        );
        Ending::NotSent {
            namespace: self.namespace(lookup.netns),
            netns: lookup.netns,
            sender: sender(lookup),
            why: NotSent::NoRoute {
                destination: lookup.packet.dst,
                table,
                result,
                routes,
                default_route,
            },
        }
    }

    /// Where the packet came from: sent in a namespace pkttrace sees (by a
    /// process or its kernel), or received first on a device whose other
    /// side nothing traces (a NIC, a tap or tun): then from beyond it.
    pub(super) fn origin(&self) -> Origin {
        let first = self
            .events
            .iter()
            .find(|e| !matches!(e.kind, EventKind::Route { .. }));
        let Some(first) = first else {
            return Origin::Kernel {
                namespace: "nowhere".into(),
                netns: 0,
            };
        };
        if matches!(first.kind, EventKind::Receive { .. })
            && let Some(kind) = self.link_kind(first)
            && !self.passes_on_here(first)
        {
            return Origin::Beyond {
                namespace: self.namespace(first.netns),
                netns: first.netns,
                device: first.ifname.to_string(),
                device_kind: kind.clone(),
                in_tunnel: first.packet.tunnel,
            };
        }
        let sender = self.steps.iter().find_map(|s| match &s.kind {
            StepKind::Send(send) => send.process.clone(),
            _ => None,
        });
        match sender {
            Some((process, pid)) => Origin::Process {
                namespace: self.namespace(first.netns),
                netns: first.netns,
                process,
                pid,
            },
            None => Origin::Kernel {
                namespace: self.namespace(first.netns),
                netns: first.netns,
            },
        }
    }
}

/// The process whose socket listens where a connection's first segment
/// (a SYN) was taken in, in namespace `netns`: its kernel took the
/// connection in for that socket.
pub fn accepted_by(journey: &Journey, netns: u32, facts: &Facts) -> Option<AcceptedBy> {
    let packet = journey.last_packet();
    let Transport::Tcp { dport, flags, .. } = packet.transport else {
        return None;
    };
    if flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return None;
    }
    // An IPv4 socket takes no IPv6 connection; an IPv6 one bound to every
    // address may take IPv4 too (dual-stack), after an IPv4 socket.
    let listening = |same_family: bool| {
        facts.listeners.iter().find(move |at| {
            let address = at.listener.address;
            at.netns == netns
                && at.listener.protocol == "tcp"
                && address.port() == dport
                && (address.is_ipv6() == packet.dst.is_ipv6()) == same_family
                && (address.ip().is_unspecified() || address.ip() == packet.dst)
        })
    };
    let listener = listening(true).or_else(|| listening(false).filter(|_| packet.dst.is_ipv4()))?;
    Some(AcceptedBy {
        process: listener.listener.process.clone(),
        pid: listener.listener.pid,
        listening_on: listener.listener.address.to_string(),
    })
}

/// The lookup a namespace made for an answer to the packet (an echo
/// reply, a reset, an ICMP error) that found no route back to its source.
pub fn failed_route_back(events: &[Event], netns: u32, topology: &Topology) -> Option<RouteBack> {
    events.iter().rev().find_map(|e| match e.kind {
        EventKind::Route {
            table,
            result,
            route_for: RouteFor::AnswerTo,
            ..
        } if e.netns == netns && !result.found() => {
            let (routes, default_route) =
                table_routes(topology, netns, table, e.packet.dst.is_ipv6());
            Some(RouteBack {
                to: e.packet.dst,
                table,
                result,
                routes,
                default_route,
            })
        }
        _ => None,
    })
}

/// The unicast routes of `table` in `netns` of one family, as `ip route
/// show` words them ("10.44.5.0/24 dev lec1", "198.51.100.0/24 via 10.0.0.1
/// dev eth0"), and whether the table has a default route.
fn table_routes(topology: &Topology, netns: u32, table: u32, ipv6: bool) -> (Vec<String>, bool) {
    let Some(namespace) = topology.namespace(netns) else {
        return (Vec::new(), false);
    };
    let routes: Vec<&Route> = namespace
        .routes
        .iter()
        .filter(|r| r.table == table && r.kind == RouteKind::Unicast && r.ipv6 == ipv6)
        .collect();
    let words = routes
        .iter()
        .filter_map(|r| {
            let (network, prefix) = r.destination?;
            let mut words = format!("{network}/{prefix}");
            if let Some(gateway) = r.gateway {
                words += &format!(" via {gateway}");
            }
            if let Some(device) = r.device.and_then(|i| namespace.interface(i)) {
                words += &format!(" dev {}", device.name);
            }
            Some(words)
        })
        .collect();
    (words, routes.iter().any(|r| r.destination.is_none()))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};

    use super::*;
    use crate::enrich::Listener;
    use crate::enrich::facts::ListenerAt;
    use crate::journey::tests::{TCP_REFUSED, assemble};

    fn proxy(pid: u32, address: &str, netns: u32) -> ListenerAt {
        ListenerAt {
            netns,
            listener: Listener {
                protocol: "tcp".into(),
                address: address.parse::<SocketAddr>().unwrap(),
                socket_inode: u64::from(pid),
                pid,
                process: "docker-proxy".into(),
                args: Vec::new(),
            },
        }
    }

    /// docker-proxy listens once per family: an IPv6 SYN is taken in by
    /// the [::] socket, an IPv4 one by the 0.0.0.0 one.
    #[test]
    fn a_syn_is_accepted_by_a_socket_of_its_family() {
        let mut syn = assemble(TCP_REFUSED).remove(0);
        let netns = syn.events.last().unwrap().netns;
        let Transport::Tcp { dport, .. } = syn.last_packet().transport else {
            panic!("a TCP SYN first")
        };
        let facts = |listeners| Facts {
            listeners,
            ..Facts::default()
        };
        let both = facts(vec![
            proxy(4, &format!("0.0.0.0:{dport}"), netns),
            proxy(6, &format!("[::]:{dport}"), netns),
        ]);
        assert_eq!(accepted_by(&syn, netns, &both).map(|a| a.pid), Some(4));
        for event in &mut syn.events {
            event.packet.dst = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        }
        assert_eq!(accepted_by(&syn, netns, &both).map(|a| a.pid), Some(6));
        let v4_only = facts(vec![proxy(4, &format!("0.0.0.0:{dport}"), netns)]);
        assert_eq!(accepted_by(&syn, netns, &v4_only).map(|a| a.pid), None);
    }
}
