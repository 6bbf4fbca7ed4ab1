//! Which nf_tables rule decided a packet's fate: the kernel's trace messages
//! grouped into one packet's walk through the chains of a hook, and found
//! again for a journey's drop.
//!
//! The kernel gives a traced packet an id per namespace and hook traversal
//! (it hashes the skb), and sends the packet's headers only with the first
//! message of each base chain; so messages are grouped by (namespace, id)
//! and a group is matched to a dropped packet by its headers.

use std::collections::VecDeque;

use crate::decode::{
    Event, EventKind, Transport,
    nftrace::{RuleTrace, TraceKind, TracedPacket, TracedTransport, Verdict},
};

const IPPROTO_UDP: u8 = 17;

/// Most traversals kept: a flood of traced packets cannot grow memory.
const MAX_TRAVERSALS: usize = 4096;

/// One packet's walk through the chains of one hook in one namespace.
struct Traversal {
    netns: u32,
    id: u32,
    packet: Option<TracedPacket>,
    steps: Vec<RuleTrace>,
}

/// The rule (or policy) that dropped a packet, as the trace told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedDrop {
    pub family: String,
    pub table: String,
    pub chain: String,
    /// None when the base chain's policy dropped it.
    pub handle: Option<u64>,
    /// The chains that jumped (or went) to `chain`, from the base chain on.
    pub through: Vec<String>,
}

/// Recent trace messages, grouped per packet and hook.
pub struct RuleTraces {
    /// pkttrace's own trace table: its messages only mark packets.
    own_table: String,
    traversals: VecDeque<Traversal>,
}

impl RuleTraces {
    pub fn new(own_table: &str) -> Self {
        Self {
            own_table: own_table.to_string(),
            traversals: VecDeque::new(),
        }
    }

    /// Takes one message in.
    pub fn push(&mut self, trace: RuleTrace) {
        if trace.table == self.own_table {
            return;
        }
        let found = self
            .traversals
            .iter_mut()
            .rev()
            .find(|t| t.netns == trace.netns && t.id == trace.id);
        match found {
            Some(traversal) => {
                if traversal.packet.is_none() {
                    traversal.packet = trace.packet;
                }
                traversal.steps.push(trace);
            }
            None => {
                if self.traversals.len() == MAX_TRAVERSALS {
                    self.traversals.pop_front();
                }
                self.traversals.push_back(Traversal {
                    netns: trace.netns,
                    id: trace.id,
                    packet: trace.packet,
                    steps: vec![trace],
                });
            }
        }
    }

    /// The rule or policy that dropped `drop`'s packet (a NETFILTER_DROP
    /// event), when a traversal in its namespace with its headers ended in a
    /// drop; the newest such traversal is the one.
    pub fn drop_of(&self, drop: &Event) -> Option<TracedDrop> {
        if !matches!(
            &drop.kind,
            EventKind::Drop { reason, location } if reason.is_netfilter_drop_at(location)
        ) {
            return None;
        }
        // Inside a tunnel netfilter saw the outer datagram.
        let packet = drop.packet;
        let (src, dst, ip_id, protocol) = match packet.tunnel {
            Some(outer) => (outer.src.into(), outer.dst.into(), outer.ip_id, IPPROTO_UDP),
            None => (
                packet.src,
                packet.dst,
                packet.ip_id,
                packet.transport.protocol_number(),
            ),
        };
        self.traversals
            .iter()
            .rev()
            .filter(|t| t.netns == drop.netns)
            .filter(|t| {
                t.packet.is_some_and(|p| {
                    p.src == src
                        && p.dst == dst
                        && p.ip_id == ip_id
                        && p.protocol == protocol
                        && (ip_id != 0 || same_transport(p.transport, packet.transport))
                })
            })
            .find_map(Traversal::dropped_by)
    }
}

/// Without an IP id (IPv6 has none) the transport header tells packets
/// of the same addresses apart: ports and TCP flags, an echo's id and
/// sequence.
fn same_transport(traced: Option<TracedTransport>, packet: Transport) -> bool {
    match (traced, packet) {
        (
            Some(TracedTransport::Tcp {
                sport,
                dport,
                flags,
                ..
            }),
            Transport::Tcp {
                sport: s,
                dport: d,
                flags: f,
                ..
            },
        ) => (sport, dport, flags) == (s, d, f),
        (Some(TracedTransport::Udp { sport, dport }), Transport::Udp { sport: s, dport: d }) => {
            (sport, dport) == (s, d)
        }
        (
            Some(TracedTransport::Icmp {
                icmp_type, id, seq, ..
            }),
            Transport::Icmp {
                icmp_type: t,
                id: i,
                seq: q,
                ..
            },
        ) => (icmp_type, id, seq) == (t, i, q),
        // A trace without its transport header cannot be told apart.
        (None, _) => true,
        _ => false,
    }
}

impl Traversal {
    /// The step that dropped the packet, with the chains that led there.
    fn dropped_by(&self) -> Option<TracedDrop> {
        let (index, step) =
            self.steps
                .iter()
                .enumerate()
                .rev()
                .find(|(_, step)| match step.kind {
                    TraceKind::Rule => step.verdict == Some(Verdict::Drop),
                    TraceKind::Policy => step.policy == Some(Verdict::Drop),
                    TraceKind::Return => false,
                })?;
        // The jumps that reached the deciding chain, newest last.
        let mut through: Vec<String> = Vec::new();
        let mut wanted = step.chain.clone();
        for earlier in self.steps[..index].iter().rev() {
            if let Some(Verdict::Jump(target) | Verdict::Goto(target)) = &earlier.verdict
                && *target == wanted
            {
                through.insert(0, earlier.chain.clone());
                wanted = earlier.chain.clone();
            }
        }
        Some(TracedDrop {
            family: step.family.clone(),
            table: step.table.clone(),
            chain: step.chain.clone(),
            handle: (step.kind == TraceKind::Rule)
                .then_some(step.handle)
                .flatten(),
            through,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::journey::tests::{DOCKER_USER_DROP, recorded};

    fn step(
        id: u32,
        chain: &str,
        kind: TraceKind,
        handle: Option<u64>,
        verdict: Option<Verdict>,
    ) -> RuleTrace {
        RuleTrace {
            netns: 4026531833,
            received_ns: 0,
            id,
            family: "ip".into(),
            table: "filter".into(),
            chain: chain.into(),
            handle,
            kind,
            verdict,
            policy: None,
            iif: None,
            oif: None,
            packet: None,
        }
    }

    /// The drop event of the DOCKER-USER recording and the trace messages the
    /// kernel sends for such a drop: FORWARD jumps to DOCKER-USER, whose rule
    /// rejects it.
    fn forward_reject() -> (Event, Vec<RuleTrace>) {
        let drop = recorded(DOCKER_USER_DROP)
            .into_iter()
            .find(|e| matches!(e.kind, EventKind::Drop { .. }))
            .unwrap();
        let mut first = step(
            7,
            "FORWARD",
            TraceKind::Rule,
            Some(3),
            Some(Verdict::Jump("DOCKER-USER".into())),
        );
        first.packet = Some(TracedPacket {
            src: drop.packet.src,
            dst: drop.packet.dst,
            protocol: drop.packet.transport.protocol_number(),
            ip_id: drop.packet.ip_id,
            length: drop.packet.length,
            transport: None,
        });
        let steps = vec![
            first,
            step(
                7,
                "DOCKER-USER",
                TraceKind::Rule,
                Some(12),
                Some(Verdict::Drop),
            ),
        ];
        (drop, steps)
    }

    #[test]
    fn a_rule_reached_through_a_jump_is_the_one_that_dropped() {
        let (drop, steps) = forward_reject();
        let mut traces = RuleTraces::new("pkttrace_1_0");
        let mut own = step(7, "pre", TraceKind::Rule, Some(2), Some(Verdict::Continue));
        own.table = "pkttrace_1_0".into();
        traces.push(own);
        for s in steps {
            traces.push(s);
        }
        assert_eq!(
            traces.drop_of(&drop),
            Some(TracedDrop {
                family: "ip".into(),
                table: "filter".into(),
                chain: "DOCKER-USER".into(),
                handle: Some(12),
                through: vec!["FORWARD".into()],
            })
        );
    }

    #[test]
    fn a_policy_drop_has_no_rule_and_other_packets_do_not_match() {
        let (drop, mut steps) = forward_reject();
        steps.truncate(1);
        steps[0].verdict = Some(Verdict::Continue);
        let mut policy = step(7, "FORWARD", TraceKind::Policy, None, None);
        policy.policy = Some(Verdict::Drop);
        steps.push(policy);
        let mut traces = RuleTraces::new("own");
        for s in steps.clone() {
            traces.push(s);
        }
        let found = traces.drop_of(&drop).unwrap();
        assert_eq!((found.chain.as_str(), found.handle), ("FORWARD", None));

        let mut elsewhere = RuleTraces::new("own");
        for mut s in steps {
            if let Some(p) = s.packet.as_mut() {
                p.src = IpAddr::from([10, 1, 2, 3]);
            }
            elsewhere.push(s);
        }
        assert_eq!(elsewhere.drop_of(&drop), None, "another packet's trace");
    }
}
