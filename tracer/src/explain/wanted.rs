//! What the explanation needs to know besides a journey's events, asked of
//! enrichment by kind before the story is told: the settings the kernel
//! checked where it forwarded or refused the packet, the bridges' tables,
//! the hooks with chains, and the rule that dropped it.

use crate::{
    decode::{DropReason, EventKind, Hook, SiteRole, TCP_ACK, TCP_RST, TCP_SYN, Transport},
    enrich::{Topology, facts::Wanted},
    journey::{Journey, is_a_copys_fate},
};

/// The facts the story of `journey` (an ARP exchange when `arp`) will use,
/// on the wiring `topology` it happened on.
pub fn facts_wanted(journey: &Journey, arp: bool, topology: &Topology) -> Vec<Wanted> {
    let mut wanted = Vec::new();
    // The kernel checks the settings of the device a packet came in on:
    // forwarding where a namespace routes it onward, and the same where it
    // refused to route it or its source failed the reverse path filter.
    let mut arrived_on: Option<(u32, &str)> = None;
    let mut settings: Vec<(u32, &str)> = Vec::new();
    let mut hooks_in: Vec<u32> = Vec::new();
    for (netns, event) in journey.located() {
        match &event.kind {
            EventKind::Receive { .. } => arrived_on = Some((event.netns, event.ifname.as_str())),
            EventKind::Netfilter { hook, .. } => {
                if *hook == Hook::Forward {
                    settings.push((event.netns, event.ifname.as_str()));
                }
                hooks_in.push(event.netns);
            }
            EventKind::Drop {
                reason:
                    DropReason::IpInAddrErrors | DropReason::IpInNoRoutes | DropReason::IpRpFilter,
                ..
            } => settings.extend(arrived_on.filter(|(netns, _)| *netns == event.netns)),
            // Without a reason, the route error's code tells the same.
            EventKind::Drop {
                reason: DropReason::Unreported,
                location,
            } if matches!(location.role, SiteRole::RouteError | SiteRole::Forwarding) => {
                settings.extend(arrived_on.filter(|(netns, _)| *netns == event.netns))
            }
            _ => {}
        }
        if let EventKind::Drop { reason, location } = &event.kind
            && reason.is_netfilter_drop_at(location)
        {
            let mut drop = event.clone();
            drop.netns = netns;
            wanted.push(Wanted::DropRule {
                drop: Box::new(drop),
            });
        }
    }
    settings.sort_unstable();
    settings.dedup();
    wanted.extend(
        settings
            .into_iter()
            .map(|(netns, device)| Wanted::Ipv4Settings {
                netns,
                device: device.to_string(),
                ipv6: journey.first_packet().dst.is_ipv6(),
            }),
    );
    hooks_in.sort_unstable();
    hooks_in.dedup();
    wanted.extend(
        hooks_in
            .into_iter()
            .map(|netns| Wanted::NetfilterHooks { netns }),
    );
    // What a bridge did is told from its forwarding database (an ARP
    // exchange always meets one); a file read per journey is too much for a
    // stream, so only then.
    let mut bridged_in: Vec<u32> = journey
        .events
        .iter()
        .filter(|e| {
            topology
                .interface(e.netns, e.ifindex)
                .is_some_and(|i| i.master.is_some())
        })
        .map(|e| e.netns)
        .collect();
    bridged_in.sort_unstable();
    bridged_in.dedup();
    if !bridged_in.is_empty() {
        wanted.push(Wanted::BridgeCallsIptables);
    }
    if arp && bridged_in.is_empty() {
        // An ARP exchange seen on no bridge port meets the host's bridges.
        bridged_in.push(topology.host_netns);
    }
    wanted.extend(
        bridged_in
            .into_iter()
            .map(|netns| Wanted::BridgeFdb { netns }),
    );
    wanted.extend(listeners_wanted(journey));
    wanted
}

/// Who listens on the port a packet was refused at (a reset, a port
/// unreachable, a drop for want of a socket), in any namespace: the story
/// says where it is served instead; and on the port a connection was taken
/// in at, to say who accepted it.
fn listeners_wanted(journey: &Journey) -> Option<Wanted> {
    let first = journey.first_packet();
    let refused_at = match first.transport {
        Transport::Tcp { sport, flags, .. } if flags & TCP_RST != 0 => Some(("tcp", sport)),
        Transport::Icmp {
            quoted: Some(quoted),
            ..
        } if first.transport.icmp() == Some((3, 3)) => {
            protocol_name(quoted.protocol).map(|protocol| (protocol, quoted.dport))
        }
        _ => None,
    };
    let dropped_for_no_socket = || {
        journey
            .events
            .iter()
            .find_map(|e| match (&e.kind, e.packet.transport) {
                (
                    EventKind::Drop {
                        reason: DropReason::NoSocket,
                        ..
                    },
                    Transport::Udp { dport, .. },
                ) => Some(("udp", dport)),
                (
                    EventKind::Drop {
                        reason: DropReason::NoSocket,
                        ..
                    },
                    Transport::Tcp { dport, .. },
                ) => Some(("tcp", dport)),
                _ => None,
            })
    };
    // A connection's first segment that a kernel took in: a listener's, on
    // the port it arrived at (after any DNAT).
    let accepted = || match journey.last_packet().transport {
        Transport::Tcp { dport, flags, .. }
            if flags & (TCP_SYN | TCP_ACK) == TCP_SYN
                && journey.events.iter().all(|e| match &e.kind {
                    // A flooded copy discarded elsewhere is not the segment's end.
                    EventKind::Drop { reason, .. } => is_a_copys_fate(reason, false),
                    EventKind::SocketRead => false,
                    _ => true,
                }) =>
        {
            Some(("tcp", dport))
        }
        _ => None,
    };
    let (protocol, port) = refused_at
        .or_else(dropped_for_no_socket)
        .or_else(accepted)?;
    Some(Wanted::Listeners { protocol, port })
}

fn protocol_name(number: u8) -> Option<&'static str> {
    match number {
        6 => Some("tcp"),
        17 => Some("udp"),
        _ => None,
    }
}
