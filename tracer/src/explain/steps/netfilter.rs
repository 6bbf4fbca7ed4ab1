//! A netfilter hook the packet met: whether it passed, what conntrack said,
//! whose doing the hook was (routing, or a bridge for a switched frame), and
//! a POSTROUTING that let it out unmasqueraded.

use std::net::IpAddr;

use crate::{
    decode::{Event, EventKind, Hook, NatSide},
    journey::is_a_copys_fate,
};

use super::{Decider, Details, StepKind};
use crate::addr;
use crate::explain::{ConntrackSaid, Tuple};

#[derive(Clone, Debug, PartialEq)]
pub struct Passage {
    pub hook: Hook,
    /// A drop follows at this hook: the packet entered and did not pass.
    pub dropped_here: bool,
    pub conntrack: Option<ConntrackSaid>,
    pub bridged: Bridged,
    /// POSTROUTING let it out with its private source `source`: the Docker
    /// network it comes from does not masquerade.
    pub not_masqueraded_by: Option<String>,
    pub source: IpAddr,
}

/// Whose hook it was.
#[derive(Clone, Debug, PartialEq)]
pub enum Bridged {
    /// The namespace routing the packet.
    No,
    /// A bridge switching a frame ran it, through br_netfilter
    /// (`net.bridge.bridge-nf-call-iptables`, when read).
    ByTheBridge { calls_iptables: Option<bool> },
    /// The same, again for the next copy of a flooded frame.
    AgainForACopy,
}

impl Decider<'_> {
    /// The packet at `hook` (`events[i]`, on the `side` of its NAT), bound
    /// for device `out_ifindex`: a forward step at FORWARD, the hook, and
    /// the NAT's rewrite when it changed the packet.
    pub(super) fn netfilter_step(
        &mut self,
        i: usize,
        hook: Hook,
        side: NatSide,
        out_ifindex: u32,
        told: &mut [bool],
    ) {
        let events = self.events;
        let event = &events[i];
        let next_netfilter = events
            .iter()
            .enumerate()
            .skip(i + 1)
            .find(|(_, e)| e.skb == event.skb && matches!(e.kind, EventKind::Netfilter { .. }));
        // The observation on the other side of the NAT priority, same hook:
        // the packet's next netfilter event, when it is that one (where no
        // NAT changed the packet, there is none).
        let after = next_netfilter.filter(|(_, e)| {
            side == NatSide::Before
                && matches!(e.kind, EventKind::Netfilter { hook: h, side: NatSide::After, .. } if h == hook)
        });
        if let Some((j, _)) = after {
            told[j] = true;
        }
        let bridged = self
            .bridging
            .is_some_and(|(netns, until)| netns == event.netns && event.time_ns <= until);
        if hook == Hook::Forward && !bridged {
            self.forward_step(event, out_ifindex);
        }
        // At a hook's entry conntrack may not have looked yet (PREROUTING,
        // OUTPUT): what it decided shows after the NAT or, where the NAT
        // changed nothing, at the packet's next event here (it stays on the
        // skb: the next hook, or the drop).
        let conntrack = event
            .conntrack
            .or_else(|| after.and_then(|(_, a)| a.conntrack))
            .or_else(|| {
                events[i + 1..]
                    .iter()
                    .filter(|e| e.skb == event.skb && e.netns == event.netns)
                    .find_map(|e| e.conntrack)
            })
            .map(ConntrackSaid::from);
        // Some hooks have no program after them: a packet netfilter drops is
        // freed with a drop reason, so without one it passed.
        let read_by_a_socket = events.iter().any(|e| e.kind == EventKind::SocketRead);
        // Chains after the NAT (filter) may still drop it: look past the
        // hook's last observation.
        let last_seen_here = after.map_or(i, |(j, _)| j);
        let dropped_here = events[last_seen_here + 1..]
            .iter()
            .find(|e| !matches!(e.kind, EventKind::Route { .. }))
            .is_some_and(|e| {
                matches!(&e.kind, EventKind::Drop { reason, location }
                    if reason.is_netfilter_drop_at(location) && !is_a_copys_fate(reason, read_by_a_socket))
            });
        // A flooded frame meets the bridge's hooks once per copy it sends out.
        let again_for_a_copy = bridged
            && self
                .steps
                .iter()
                .rev()
                .take_while(|s| !matches!(s.kind, StepKind::Bridge(_)))
                .any(|s| {
                    s.netns == event.netns
                        && matches!(&s.kind, StepKind::Netfilter(p) if p.hook == hook)
                });
        let bridged = match (bridged, again_for_a_copy) {
            (false, _) => Bridged::No,
            (true, true) => Bridged::AgainForACopy,
            (true, false) => Bridged::ByTheBridge {
                calls_iptables: self.facts.bridge_calls_iptables,
            },
        };
        let changed_by_nat =
            after.is_some_and(|(_, a)| Tuple::of(&a.packet) != Tuple::of(&event.packet));
        let not_masqueraded_by = (hook == Hook::Postrouting && !changed_by_nat)
            .then(|| self.unmasqueraded_network(event))
            .flatten();
        // pkttrace's own observer is the only thing at a hook where the
        // namespace has no chain: netfilter does nothing there of its own.
        let nothing_there = self
            .facts
            .netfilter_hooks_of(event.netns, event.packet.dst.is_ipv6())
            .is_some_and(|hooks| !hooks.contains(&hook));
        if !nothing_there || dropped_here {
            let passage = Passage {
                hook,
                dropped_here,
                conntrack,
                bridged,
                not_masqueraded_by,
                source: event.packet.src,
            };
            self.push(
                event,
                Some(event.ifname.to_string()),
                StepKind::Netfilter(passage),
            );
        }
        if let Some((_, after)) = after {
            self.nat_step(event, after, hook);
        }
    }

    /// The Docker network a packet leaving the host comes from, when that
    /// network does not masquerade and the packet leaves by another device
    /// than its bridge.
    fn unmasqueraded_network(&self, event: &Event) -> Option<String> {
        if event.netns != self.topology.host_netns {
            return None;
        }
        let source = event.packet.src;
        self.topology
            .docker_networks
            .iter()
            .find(|network| {
                !network.masquerade
                    && network.bridge.as_deref() != Some(event.ifname.as_str())
                    && network
                        .subnets
                        .iter()
                        .any(|subnet| addr::in_subnet(source, *subnet))
            })
            .map(|network| network.name.clone())
    }
}

impl Passage {
    pub fn words(&self, ns: &str, device: &str) -> String {
        let passed = if self.dropped_here {
            "entered"
        } else {
            "passed"
        };
        let mut text = format!(
            "netfilter {} in {ns} on {device}: {passed}{}",
            self.hook.name(),
            self.conntrack
                .map(|c| format!("; conntrack: {}", c.words()))
                .unwrap_or_default()
        );
        text += match self.bridged {
            Bridged::No => "",
            Bridged::AgainForACopy => " (again, for the next flooded copy)",
            Bridged::ByTheBridge {
                calls_iptables: Some(true),
            } => {
                " (run by the bridge for a switched frame: net.bridge.bridge-nf-call-iptables = 1)"
            }
            Bridged::ByTheBridge { .. } => {
                " (run by the bridge for a switched frame, through br_netfilter)"
            }
        };
        if let Some(network) = &self.not_masqueraded_by {
            text += &format!(
                "; no source NAT: Docker network \"{network}\" does not masquerade (com.docker.network.bridge.enable_ip_masquerade=false), so it leaves with its private source {}",
                self.source
            );
        }
        text
    }

    pub fn details(&self) -> Details {
        Details::Netfilter {
            hook: self.hook,
            conntrack: self.conntrack,
            not_masqueraded_by: self.not_masqueraded_by.clone(),
        }
    }
}
