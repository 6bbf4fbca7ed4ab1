//! A VXLAN device wrapping a frame into a UDP datagram for the tunnel's far
//! end (encapsulation), and the far end's VXLAN device taking it out again
//! (decapsulation). In between, the same skb carries the packet over the
//! underlay, where its events carry the outer headers.

use std::net::IpAddr;

use crate::decode::{Event, EventKind, Mac, Tunnel};

use super::{Decider, Details, StepKind};

/// A VXLAN device wrapped the frame: the step's device.
#[derive(Clone, Debug, PartialEq)]
pub struct Encapsulation {
    pub vni: Option<u32>,
    /// The outer datagram, as the underlay's next event saw it.
    pub outer: Option<Tunnel>,
    /// The namespace whose network carries the datagram (the device's
    /// socket's), when the topology knows it.
    pub underlay: Option<String>,
    /// The device's forwarding database entry for the frame's destination
    /// MAC: the tunnel endpoint it sends that MAC's frames to.
    pub endpoint: Option<(Mac, IpAddr)>,
    /// The Docker host at that endpoint, when an engine here is the Swarm
    /// node with that address.
    pub endpoint_host: Option<String>,
}

/// A VXLAN device took the frame out of a datagram: the step's device.
#[derive(Clone, Debug, PartialEq)]
pub struct Decapsulation {
    pub vni: Option<u32>,
    /// The outer datagram, as the underlay's last event saw it.
    pub outer: Option<Tunnel>,
    /// The namespace whose network delivered the datagram.
    pub underlay: Option<String>,
}

impl Decider<'_> {
    /// The transmit at `events[i]` on a VXLAN device: the frame is wrapped
    /// for the far end. The outer headers are the next event's of the
    /// same skb, when the underlay was traced.
    pub(super) fn encapsulation_step(&mut self, i: usize) {
        let event = &self.events[i];
        let outer = self.events[i + 1..]
            .iter()
            .find(|e| e.skb == event.skb && !matches!(e.kind, EventKind::Route { .. }))
            .and_then(|e| e.packet.tunnel);
        let vxlan = self
            .interface(event.netns, event.ifindex)
            .and_then(|i| i.vxlan.clone());
        let mac_dst = match event.kind {
            EventKind::Transmit { mac_dst } => mac_dst,
            _ => None,
        };
        let endpoint = mac_dst.and_then(|mac| {
            self.facts
                .fdb
                .iter()
                .filter(|f| f.netns == event.netns && f.port == event.ifindex)
                .find_map(|f| Some((mac, f.remote?)).filter(|_| Mac(f.mac) == mac))
        });
        let endpoint_host = endpoint.and_then(|(_, remote)| {
            self.topology
                .engines
                .iter()
                .find(|e| {
                    e.swarm
                        .as_ref()
                        .is_some_and(|s| s.address == remote.to_string())
                })
                .map(|e| e.name.clone())
        });
        let encapsulation = Encapsulation {
            endpoint_host,
            vni: outer.map(|o| o.vni).or(vxlan.as_ref().map(|v| v.vni)),
            outer,
            underlay: vxlan
                .and_then(|v| v.underlay_netns)
                .map(|netns| self.namespace(netns)),
            endpoint,
        };
        self.push(
            event,
            Some(event.ifname.to_string()),
            StepKind::Encapsulation(encapsulation),
        );
    }

    /// The receive at `event` on a VXLAN device: the frame came out of a
    /// datagram, whose outer headers the skb's last underlay event saw.
    pub(super) fn decapsulation_step(&mut self, i: usize) {
        let event: &Event = &self.events[i];
        let outer_event = self.events[..i]
            .iter()
            .rev()
            .find(|e| e.skb == event.skb && e.packet.tunnel.is_some());
        let outer = outer_event.and_then(|e| e.packet.tunnel);
        let vxlan = self
            .interface(event.netns, event.ifindex)
            .and_then(|i| i.vxlan.clone());
        let underlay = outer_event
            .map(|e| e.netns)
            .or(vxlan.as_ref().and_then(|v| v.underlay_netns))
            .map(|netns| self.namespace(netns));
        let decapsulation = Decapsulation {
            vni: outer.map(|o| o.vni).or(vxlan.map(|v| v.vni)),
            outer,
            underlay,
        };
        self.push(
            event,
            Some(event.ifname.to_string()),
            StepKind::Decapsulation(decapsulation),
        );
    }
}

/// "VXLAN (VNI 4097)", or plain "VXLAN" when the VNI is not known.
fn vxlan_words(vni: Option<u32>) -> String {
    vni.map_or("VXLAN".into(), |vni| format!("VXLAN (VNI {vni})"))
}

impl Encapsulation {
    pub fn words(&self, device: &str) -> String {
        let mut text = format!("{device} wraps the frame in {}", vxlan_words(self.vni));
        if let Some((mac, remote)) = &self.endpoint {
            let host = self
                .endpoint_host
                .as_ref()
                .map(|host| format!(" (Docker host {host})"))
                .unwrap_or_default();
            text += &format!(
                " for the tunnel endpoint {remote}{host}, where its forwarding database sends {mac}"
            );
        }
        match (&self.outer, &self.underlay) {
            (Some(outer), underlay) => {
                let sender = underlay.as_deref().unwrap_or("the underlay");
                text += &format!(
                    ": {sender} sends it on as the UDP datagram {}:{} → {}:{}",
                    outer.src, outer.sport, outer.dst, outer.dport
                );
            }
            (None, _) => {
                text += "; the datagram was not seen after it (its underlay is not traced)"
            }
        }
        text
    }

    pub fn details(&self) -> Details {
        Details::Encap {
            vni: self.vni,
            outer: self.outer,
            endpoint: self.endpoint.map(|(_, remote)| remote),
        }
    }
}

impl Decapsulation {
    pub fn words(&self, device: &str) -> String {
        let from = match (&self.outer, &self.underlay) {
            (Some(outer), Some(underlay)) => format!(
                " that {underlay} took in on UDP port {} from {}",
                outer.dport, outer.src
            ),
            (Some(outer), None) => format!(" from {}", outer.src),
            (None, _) => String::new(),
        };
        format!(
            "{device} takes the frame out of the {} datagram{from}",
            vxlan_words(self.vni)
        )
    }

    pub fn details(&self) -> Details {
        Details::Decap {
            vni: self.vni,
            outer: self.outer,
        }
    }
}
