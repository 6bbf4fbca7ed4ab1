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
    /// before. Netfilter rewrites a source only in POSTROUTING (or INPUT)
    /// and a destination only in PREROUTING or OUTPUT, so the hook follows
    /// from what changed.
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
        let (before, after) = (Tuple::of(&earlier.packet), Tuple::of(&event.packet));
        if before == after || before.protocol != after.protocol {
            return;
        }
        let reply = event
            .conntrack
            .or(earlier.conntrack)
            .is_some_and(|c| c.direction == CtDirection::Reply);
        let source_changed = (before.src, before.sport) != (after.src, after.sport);
        let sent_here = earlier.netns == event.netns
            && matches!(earlier.kind, EventKind::Transmit { .. })
            && !self.steps.iter().any(|s| s.netns != event.netns);
        let hook = match (source_changed, sent_here) {
            (true, _) => Hook::Postrouting,
            (false, true) => Hook::Output,
            (false, false) => Hook::Prerouting,
        };
        let nat = match (reply, source_changed) {
            (true, _) => NatKind::Reverse,
            (false, true) => NatKind::Source,
            (false, false) => NatKind::Destination,
        };
        let rewrite = Rewrite {
            hook,
            nat,
            before,
            after,
            inferred: true,
        };
        // POSTROUTING is on the way out, the other hooks on the way in.
        let device = if hook == Hook::Postrouting {
            event
        } else {
            earlier
        };
        self.push(
            event,
            Some(device.ifname.to_string()),
            StepKind::Nat(rewrite),
        );
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
