//! A transmit on a veth whose other end receives next is a crossing of the
//! pair; a transmit into a bridge is the bridge at work; one on a VXLAN
//! device wraps the frame for a tunnel; otherwise the packet leaves
//! through that device.

use super::{Decider, Details, StepKind};
use crate::{decode::EventKind, enrich::LinkKind};

/// The packet crossed a veth pair; the step is told where it came out.
#[derive(Clone, Debug, PartialEq)]
pub struct Crossing {
    /// The end it went in by, in `from_namespace`.
    pub from_device: String,
    pub from_namespace: String,
    pub from_netns: u32,
    /// The end it came out of (the step's own device).
    pub to_device: String,
}

impl Decider<'_> {
    /// The transmit at `events[i]`: a veth crossing, the host handing a
    /// frame to a bridge, or the packet leaving (`after_send`: its send
    /// step already says where it leaves).
    pub(super) fn veth_or_xmit(&mut self, i: usize, told: &mut [bool], after_send: bool) {
        let events = self.events;
        let event = &events[i];
        // The other end of a veth receives what this end sends (other copies'
        // events may come in between).
        let peer = self
            .interface(event.netns, event.ifindex)
            .and_then(|iface| iface.peer);
        let received = peer.and_then(|peer| {
            (i + 1..events.len()).find(|&j| {
                let e = &events[j];
                !told[j]
                    && matches!(e.kind, EventKind::Receive { .. })
                    && e.netns == peer.netns
                    && e.ifindex == peer.ifindex
            })
        });
        if let Some(j) = received {
            told[j] = true;
            let received = &events[j];
            let crossing = Crossing {
                from_device: event.ifname.to_string(),
                from_namespace: self.namespace(event.netns),
                from_netns: event.netns,
                to_device: received.ifname.to_string(),
            };
            self.push(
                received,
                Some(received.ifname.to_string()),
                StepKind::Veth(crossing),
            );
            if let Some(bridge) = self.bridge_of(received).cloned() {
                let mac_dst = match received.kind {
                    EventKind::Receive { mac_dst, .. } => mac_dst,
                    _ => None,
                };
                self.bridge_step(j, &bridge, mac_dst, told);
            }
            return;
        }
        if self.is_bridge(event) && self.bridge_from_host(i, told) {
            return;
        }
        if self.link_kind(event) == Some(&LinkKind::Vxlan) {
            self.encapsulation_step(i);
        } else if !after_send {
            self.push(event, Some(event.ifname.to_string()), StepKind::Xmit);
        }
    }
}

impl Crossing {
    pub fn words(&self, ns: &str) -> String {
        format!(
            "crosses the veth pair: {} in {} → its peer {} in {ns}",
            self.from_device, self.from_namespace, self.to_device
        )
    }

    pub fn details(&self) -> Details {
        Details::Veth {
            peer_device: self.from_device.clone(),
            peer_namespace: self.from_namespace.clone(),
            peer_netns: self.from_netns,
        }
    }
}
