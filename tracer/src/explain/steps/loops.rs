//! A routing loop: the same few hops again and again until the TTL runs
//! out, told once and counted.

use super::{Details, Step, StepKind};

#[derive(Clone, Debug, PartialEq)]
pub struct Loop {
    /// The namespaces that sent it round, in order.
    pub namespaces: Vec<String>,
    /// Rounds folded into this step (after the first, told in full).
    pub rounds: u32,
    pub ttl_from: u8,
    pub ttl_to: u8,
}

/// Most hops one round of a routing loop takes.
const LONGEST_LOOP: usize = 12;
/// Rounds of the same hops that make a loop worth folding.
const FOLDED_ROUNDS: usize = 3;

/// Whether two steps are the same step: the same kind of hop, in the same
/// namespace, on the same device (and hook).
fn same_step(a: &Step, b: &Step) -> bool {
    a.netns == b.netns
        && a.device == b.device
        && std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind)
        && a.hook() == b.hook()
}

/// A packet caught in a routing loop makes the same few hops until its TTL
/// runs out: the first round is told, the rounds after it become one step
/// saying how many and how the TTL fell.
pub fn fold(steps: &mut Vec<Step>) {
    for start in 0..steps.len() {
        for length in 1..=LONGEST_LOOP {
            // A round again is the same steps with a lower TTL: every router
            // on the way took one off (a bridge's hooks repeat without).
            let repeats = |round: usize| {
                let at = start + round * length;
                let (previous, this) = (&steps[at - length], steps.get(at));
                at + length <= steps.len()
                    && this.is_some_and(|step| step.ttl > 0 && step.ttl < previous.ttl)
                    && (0..length).all(|k| same_step(&steps[start + k], &steps[at + k]))
            };
            let rounds = (1..).take_while(|&round| repeats(round)).count();
            if rounds + 1 < FOLDED_ROUNDS {
                continue;
            }
            let folded_from = start + length;
            let folded_to = start + (rounds + 1) * length;
            let folded = &steps[folded_from..folded_to];
            let mut namespaces: Vec<String> = Vec::new();
            for step in &steps[start..folded_from] {
                if !namespaces.contains(&step.namespace) {
                    namespaces.push(step.namespace.clone());
                }
            }
            let ttl_from = folded.iter().map(|s| s.ttl).find(|t| *t > 0).unwrap_or(0);
            let ttl_to = folded
                .iter()
                .rev()
                .map(|s| s.ttl)
                .find(|t| *t > 0)
                .unwrap_or(0);
            let last = &folded[folded.len() - 1];
            let step = Step {
                at_us: last.at_us,
                netns: last.netns,
                namespace: last.namespace.clone(),
                device: last.device.clone(),
                ttl: ttl_to,
                capture: last.capture.clone(),
                arp: super::ArpWaited::No,
                tunnel: last.tunnel,
                kind: StepKind::Loop(Loop {
                    namespaces,
                    rounds: rounds as u32,
                    ttl_from,
                    ttl_to,
                }),
            };
            steps.splice(folded_from..folded_to, [step]);
            return;
        }
    }
}

impl Loop {
    pub fn words(&self) -> String {
        format!(
            "routing loop: {} sent it round {} more times, each routing it to the next, its TTL falling from {} to {}",
            self.namespaces.join(" and "),
            self.rounds,
            self.ttl_from,
            self.ttl_to
        )
    }

    pub fn details(&self) -> Details {
        Details::Loop {
            namespaces: self.namespaces.clone(),
            rounds: self.rounds,
            ttl_from: self.ttl_from,
            ttl_to: self.ttl_to,
        }
    }
}
