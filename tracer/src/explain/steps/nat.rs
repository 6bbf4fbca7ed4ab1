//! NAT at a netfilter hook: the packet's addresses or ports before and after.

use crate::decode::{CtDirection, Event, Hook};

use super::{Decider, Details, StepKind};
use crate::explain::{NatKind, Tuple};

#[derive(Clone, Debug, PartialEq)]
pub struct Rewrite {
    pub hook: Hook,
    pub nat: NatKind,
    pub before: Tuple,
    pub after: Tuple,
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
        };
        self.push(
            after,
            Some(event.ifname.to_string()),
            StepKind::Nat(rewrite),
        );
    }
}

impl Rewrite {
    pub fn words(&self) -> String {
        format!(
            "{} in {}: {}  ⇒  {}",
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
        }
    }
}
