//! What the explanation needs to know besides a journey's events, asked of
//! enrichment by kind before the story is told: the settings the kernel
//! checked where it forwarded or refused the packet, the bridges' tables,
//! the hooks with chains, and the rule that dropped it.

use crate::{
    decode::{DropReason, EventKind, Hook},
    enrich::{Topology, facts::Wanted},
    journey::Journey,
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
            _ => {}
        }
        if let EventKind::Drop {
            reason: DropReason::NetfilterDrop,
            ..
        } = &event.kind
        {
            let mut drop = event.clone();
            drop.netns = netns;
            wanted.push(Wanted::DropRule { drop });
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
    let bridged = journey.events.iter().any(|e| {
        topology
            .interface(e.netns, e.ifindex)
            .is_some_and(|i| i.master.is_some())
    });
    if bridged {
        wanted.push(Wanted::BridgeCallsIptables);
    }
    if arp || bridged {
        wanted.push(Wanted::BridgeFdb);
    }
    wanted
}
