//! A packet handed to a device to send, with nothing traced receiving it
//! next; and the waits in a neighbour queue said on the hop that follows.

use crate::decode::{Event, EventKind};

use super::{ArpWait, ArpWaited};

pub fn words(ns: &str, device: &str) -> String {
    format!("leaves {ns} through {device}")
}

/// The wait for ARP said after a veth crossing or a transmit.
pub fn after_arp(arp: &ArpWaited) -> String {
    match arp {
        ArpWaited::No => String::new(),
        ArpWaited::For(wait) => format!(" (after it {})", wait.sentence()),
        ArpWaited::Unmeasured => " (after waiting for the next hop's MAC address)".into(),
    }
}

/// Where the packet waited for ARP, by namespace: from the first copy ARP
/// freed for a who-has to the packet's next transmit there.
pub fn arp_waits(events: &[Event]) -> Vec<(u32, ArpWait)> {
    let mut waits: Vec<(u32, ArpWait)> = Vec::new();
    for (i, queued) in events.iter().enumerate() {
        if !queued.kind.is_neighbour_solicit() || waits.iter().any(|(ns, _)| *ns == queued.netns) {
            continue;
        }
        let Some(sent) = events[i + 1..]
            .iter()
            .find(|e| e.netns == queued.netns && matches!(e.kind, EventKind::Transmit { .. }))
        else {
            continue;
        };
        let routed = events[..i].iter().rev().find_map(|e| match e.kind {
            EventKind::Route { gateway, .. } if e.netns == queued.netns => {
                Some(gateway.unwrap_or(e.packet.dst))
            }
            _ => None,
        });
        let EventKind::Transmit { mac_dst } = &sent.kind else {
            continue;
        };
        waits.push((
            queued.netns,
            ArpWait {
                waited_us: sent.time_ns.saturating_sub(queued.time_ns) / 1_000,
                next_hop: routed,
                mac: *mac_dst,
                device: sent.ifname.to_string(),
                ipv6: sent.packet.dst.is_ipv6(),
            },
        ));
    }
    waits
}
