//! NAT at a netfilter hook: the packet's addresses or ports before and after.

use crate::decode::{CtDirection, Event, EventKind, Hook};

use super::{Decider, Details, StepKind};
use crate::explain::{NatKind, Tuple};

#[derive(Clone, Debug, PartialEq)]
pub struct Rewrite {
    pub hook: Hook,
    pub nat: NatKind,
    pub before: Tuple,
    pub after: Tuple,
    /// Told from the addresses on two devices (no netfilter programs).
    pub inferred: bool,
}

impl Decider<'_> {
    /// The packet at `hook` before its NAT (`event`) and after it
    /// (`after`): a step when the NAT changed it.
    pub(super) fn nat_step(&mut self, event: &Event, after: &Event, hook: Hook) {
        let (before, after_tuple) = (Tuple::of(&event.packet), Tuple::of(&after.packet));
        if before == after_tuple {
            return;
        }
        let reply = event
            .conntrack
            .or(after.conntrack)
            .is_some_and(|c| c.direction == CtDirection::Reply);
        // Only PREROUTING, OUTPUT and POSTROUTING have an after-NAT program.
        let nat = match (hook, reply) {
            (_, true) => NatKind::Reverse,
            (Hook::Postrouting | Hook::Input, false) => NatKind::Source,
            (_, false) => NatKind::Destination,
        };
        let rewrite = Rewrite {
            hook,
            nat,
            before,
            after: after_tuple,
            inferred: false,
        };
        self.push(
            after,
            Some(event.ifname.to_string()),
            StepKind::Nat(rewrite),
        );
    }

    /// Without netfilter programs no hook is seen, but NAT still shows:
    /// the packet at `events[i]` has other addresses than at its device
    /// before. Netfilter rewrites a destination in PREROUTING, on the way
    /// in and before the routing decision, and a source in POSTROUTING, on
    /// the way out, so the hook follows from what changed. (OUTPUT's DNAT
    /// comes before the sender's first device: it shows nowhere.)
    pub(super) fn nat_seen_between_devices(&mut self, i: usize) {
        let events = self.events;
        let event = &events[i];
        let Some(earlier) = events[..i].iter().rev().find(|e| {
            matches!(
                e.kind,
                EventKind::Transmit { .. } | EventKind::Receive { .. }
            )
        }) else {
            return;
        };
        // The same packet on both devices: NAT keeps its IP id, and a
        // tunnel's underlay carries another datagram.
        let same_packet = earlier.packet.ip_id == event.packet.ip_id
            && earlier.packet.tunnel.is_some() == event.packet.tunnel.is_some();
        let (before, after) = (Tuple::of(&earlier.packet), Tuple::of(&event.packet));
        if self.arp || !same_packet || before == after || before.protocol != after.protocol {
            return;
        }
        let reply = event
            .conntrack
            .or(earlier.conntrack)
            .is_some_and(|c| c.direction == CtDirection::Reply);
        let destination_changed = (before.dst, before.dport) != (after.dst, after.dport);
        // An ICMP echo id moves with the address rewritten beside it.
        let source_changed = (before.src, before.sport) != (after.src, after.sport)
            || (before.icmp_id != after.icmp_id && !destination_changed);
        let between = if destination_changed {
            Tuple {
                dst: after.dst,
                dport: after.dport,
                icmp_id: after.icmp_id,
                ..before
            }
        } else {
            before
        };
        let nat_kind = |source| match (reply, source) {
            (true, _) => NatKind::Reverse,
            (false, true) => NatKind::Source,
            (false, false) => NatKind::Destination,
        };
        if destination_changed {
            self.push(
                earlier,
                Some(earlier.ifname.to_string()),
                StepKind::Nat(Rewrite {
                    hook: Hook::Prerouting,
                    nat: nat_kind(false),
                    before,
                    after: between,
                    inferred: true,
                }),
            );
            // Told where it happened: before the routing decision it led to.
            let earlier_us = earlier.time_ns.saturating_sub(self.start_ns) / 1_000;
            if let Some(at) = self.steps.iter().position(|s| {
                s.netns == earlier.netns
                    && s.at_us >= earlier_us
                    && matches!(s.kind, StepKind::Route(_))
            }) && let Some(rewrite) = self.steps.pop()
            {
                self.steps.insert(at, rewrite);
            }
        }
        if source_changed {
            self.push(
                event,
                Some(event.ifname.to_string()),
                StepKind::Nat(Rewrite {
                    hook: Hook::Postrouting,
                    nat: nat_kind(true),
                    before: between,
                    after,
                    inferred: true,
                }),
            );
        }
    }
}

impl Rewrite {
    pub fn words(&self) -> String {
        let seen = if self.inferred {
            " (seen from its addresses before and after; this kernel shows no netfilter hooks)"
        } else {
            ""
        };
        format!(
            "{} in {}: {}  ⇒  {}{seen}",
            self.nat.words(),
            self.hook,
            self.before,
            self.after
        )
    }

    pub fn details(&self) -> Details {
        Details::Nat {
            hook: self.hook,
            nat: self.nat,
            before: self.before,
            after: self.after,
            inferred: self.inferred,
        }
    }
}
