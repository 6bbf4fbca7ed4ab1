//! The packet (or a copy of it) freed with a drop reason: where, by which
//! code, for a netfilter drop the hook and the rule, and what to check.

use crate::decode::{CodeSite, DropReason, Event, EventKind, SiteRole};

use super::{Decider, Details, Ending};
use crate::explain::hints::{self, DropContext};
use crate::explain::verdict::in_namespace;

#[derive(Clone, Debug, PartialEq)]
pub struct Dropped {
    /// Only a copy of the packet was dropped (the packet itself arrived).
    pub a_copy: bool,
    /// How long it waited for its next hop's MAC address first, on which
    /// device (a failed neighbour), in seconds.
    pub waited_for_neighbour: Option<(f64, String)>,
    /// What the hint is told from.
    pub context: DropContext,
}

impl Decider<'_> {
    /// A copy of the packet dropped at `event` after the packet itself arrived.
    pub(super) fn copy_dropped(
        &self,
        event: &Event,
        reason: &DropReason,
        location: &CodeSite,
    ) -> Dropped {
        Dropped {
            a_copy: true,
            waited_for_neighbour: None,
            context: DropContext {
                reason: reason.clone(),
                location: location.clone(),
                hook: None,
                rule: None,
                input: None,
                source: event.packet.src,
                rule_tracing_unavailable: None,
                next_hop: None,
                arp_attempts: 0,
                route: None,
                destination: event.packet.dst,
                ttl: event.packet.ttl,
                length: event.packet.length,
                out_mtu: None,
                run_in: in_namespace(self.topology, event.netns),
            },
        }
    }

    /// The packet dropped at `events[i]`, and the journey's end there.
    pub(super) fn dropped(
        &self,
        i: usize,
        reason: &DropReason,
        location: &CodeSite,
    ) -> (Dropped, Ending) {
        let events = self.events;
        let event = &events[i];
        let netfilter = reason.is_netfilter_drop_at(location);
        let hook = netfilter.then(|| self.last_netfilter_hook()).flatten();
        let rule = netfilter.then(|| self.facts.rule_verdict.clone()).flatten();
        let input = input_device(events, i);
        let route = self.last_route_in(event.netns).cloned();
        let out_mtu = route
            .as_ref()
            .and_then(|r| r.out_device.as_deref())
            .and_then(|device| self.mtu_of(event.netns, device));
        let waited_for_neighbour = reason
            .is_neighbour_failure_at(location)
            .then(|| {
                events
                    .iter()
                    .find(|e| e.kind.is_neighbour_solicit())
                    .map(|queued| {
                        let waited = event.time_ns.saturating_sub(queued.time_ns);
                        (waited as f64 / 1e9, event.ifname.to_string())
                    })
            })
            .flatten();
        let ending = Ending::Dropped {
            namespace: self.namespace(event.netns),
            netns: event.netns,
            reason: reason.clone(),
            location: location.clone(),
            hook,
            rule: rule.clone(),
            // ip_error drops what the route it found said no to.
            refused_by: route
                .clone()
                .filter(|r| location.role == SiteRole::RouteError && !r.result.found()),
        };
        let dropped = Dropped {
            a_copy: false,
            waited_for_neighbour,
            context: DropContext {
                reason: reason.clone(),
                location: location.clone(),
                hook,
                rule,
                input: input.and_then(|dev| {
                    self.facts
                        .ip_settings_of(event.netns, dev, event.packet.dst.is_ipv6())
                        .cloned()
                }),
                source: event.packet.src,
                rule_tracing_unavailable: self.facts.rule_tracing_unavailable.clone(),
                next_hop: self.next_hop(event),
                arp_attempts: crate::explain::arp_attempts(events, event),
                route,
                destination: event.packet.dst,
                ttl: event.packet.ttl,
                length: event.packet.length,
                out_mtu,
                run_in: in_namespace(self.topology, event.netns),
            },
        };
        (dropped, ending)
    }
}

/// The device the packet came in on, in the namespace of `events[i]`:
/// the last receive there before it (None for a packet sent there).
fn input_device(events: &[Event], i: usize) -> Option<&str> {
    let netns = events[i].netns;
    events[..i]
        .iter()
        .rev()
        .take_while(|e| e.netns == netns)
        .find(|e| matches!(e.kind, EventKind::Receive { .. }))
        .map(|e| e.ifname.as_str())
}

impl Dropped {
    pub fn words(&self, ns: &str) -> String {
        let (reason, location) = (&self.context.reason, &self.context.location);
        if self.a_copy {
            return format!("a copy of it was dropped in {ns}: {reason} at {location}");
        }
        let mut text = if *reason == DropReason::Unreported {
            format!(
                "dropped in {ns} by the kernel at {location} (this kernel gives no drop reasons)"
            )
        } else {
            format!("dropped in {ns} by the kernel: {reason} at {location}")
        };
        if let Some((seconds, device)) = &self.waited_for_neighbour {
            text += &format!(
                ", after it waited {seconds:.1} s on {device} for its next hop's MAC address"
            );
        }
        text
    }

    pub fn details(&self) -> Details {
        Details::Drop {
            reason: self.context.reason.clone(),
            location: self.context.location.clone(),
            hint: hints::for_drop(&self.context),
            hook: self.context.hook,
            rule: self.context.rule.clone(),
        }
    }
}
