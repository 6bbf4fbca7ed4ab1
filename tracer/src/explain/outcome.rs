//! How a journey ended and what a reply means, as typed values decided from
//! the kernel's evidence; the sentences are made from these values only.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::decode::{Packet, Quoted, Transport};

/// How a journey ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ending {
    /// A process read it from its socket.
    Delivered {
        namespace: String,
        netns: u32,
        process: String,
        pid: u32,
    },
    /// The kernel of a namespace took it in: a protocol handler (icmp_rcv,
    /// tcp_v4_rcv, arp_process ...) consumed it.
    TakenIn {
        namespace: String,
        netns: u32,
        /// None: it was routed to the namespace's own address (and passed
        /// INPUT), then its protocol freed it without a trace.
        #[serde(skip_serializing_if = "Option::is_none")]
        handler: Option<String>,
    },
    /// It left through a device beyond which nothing is traced: a NIC, a
    /// tap, a tunnel. The driver freeing it after the transmit is no receive.
    Left {
        namespace: String,
        netns: u32,
        device: String,
        /// "network card (virtio_net)", "tap device", "ifb device", ...
        device_kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_hop: Option<Ipv4Addr>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_hop_mac: Option<String>,
        /// Where the device freed it once sent (`__free_old_xmit`), when seen.
        #[serde(skip_serializing_if = "Option::is_none")]
        freed_by: Option<String>,
        /// The program that read it from a tun/tap device ("qemu (pid 4)").
        #[serde(skip_serializing_if = "Option::is_none")]
        read_by: Option<String>,
    },
    /// The kernel dropped it.
    Dropped {
        namespace: String,
        netns: u32,
        reason: String,
        location: String,
        /// The netfilter hook it was dropped in, for a netfilter drop.
        #[serde(skip_serializing_if = "Option::is_none")]
        hook: Option<&'static str>,
        /// The rule (or chain policy) that decided, from nf_tables tracing.
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<RuleVerdict>,
    },
    /// Still in the kernel when last seen (waiting for a neighbour's MAC
    /// address, in a queue): the trace ended or gave up waiting first.
    InFlight {
        namespace: String,
        netns: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        /// The neighbour whose MAC address it was waiting for.
        #[serde(skip_serializing_if = "Option::is_none")]
        waiting_for: Option<Ipv4Addr>,
    },
    /// An ARP request that got its reply.
    ArpAnswered { asked: u32, reply: u64, mac: String },
    /// An ARP request nobody answered: `asked` who-has went out.
    ArpUnanswered { asked: u32, target: Ipv4Addr },
}

/// The rule that decided a packet's fate in nf_tables, as the kernel's trace
/// reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleVerdict {
    /// "ip filter".
    pub table: String,
    pub chain: String,
    /// The chains that jumped there, from the hook's base chain on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub through: Vec<String>,
    /// nft's handle of the rule; None when the chain's policy decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    /// The rule as `nft -a list ruleset` shows it; for a policy, "policy drop".
    pub text: String,
    /// "drop", "reject" (REJECT drops and answers), "policy drop".
    pub action: String,
}

impl RuleVerdict {
    pub fn describe(&self) -> String {
        let through = if self.through.is_empty() {
            String::new()
        } else {
            format!(" (reached through {})", self.through.join(" → "))
        };
        match self.handle {
            Some(_) => format!("{} {}: {}{through}", self.table, self.chain, self.text),
            None => format!(
                "{} {}: the chain's policy is drop, no rule accepted it first{through}",
                self.table, self.chain
            ),
        }
    }
}

/// An outcome: the typed ending and its sentence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub ending: Ending,
    pub text: String,
}

impl Outcome {
    pub fn new(ending: Ending) -> Self {
        let text = ending_text(&ending);
        Self { ending, text }
    }

    pub fn is_drop(&self) -> bool {
        matches!(
            self.ending,
            Ending::Dropped { .. } | Ending::ArpUnanswered { .. }
        )
    }
}

fn ending_text(ending: &Ending) -> String {
    match ending {
        Ending::Delivered {
            namespace,
            process,
            pid,
            ..
        } => format!("delivered to {process} (pid {pid}) in {namespace}"),
        Ending::TakenIn {
            namespace,
            handler: Some(handler),
            ..
        } => format!("reached {namespace}, whose kernel took it in ({handler})"),
        Ending::TakenIn {
            namespace,
            handler: None,
            ..
        } => format!(
            "reached {namespace}, the namespace it was addressed to; its kernel took it in (its protocol freed it without a trace)"
        ),
        Ending::Left {
            namespace,
            device,
            device_kind,
            next_hop,
            next_hop_mac,
            freed_by,
            read_by,
            ..
        } => {
            let towards = match (next_hop, next_hop_mac) {
                (Some(hop), Some(mac)) => format!(" towards {hop} ({mac})"),
                (Some(hop), None) => format!(" towards {hop}"),
                (None, _) => String::new(),
            };
            let freed = match (read_by, freed_by) {
                (Some(reader), _) => format!("; {reader} read it from the device"),
                (None, Some(f)) => format!("; the driver freed it once sent ({f})"),
                (None, None) => String::new(),
            };
            format!(
                "left {namespace} through {device} ({device_kind}){towards}; nothing beyond it is traced{freed}"
            )
        }
        Ending::Dropped {
            namespace,
            reason,
            hook,
            rule,
            ..
        } => match (hook, rule) {
            (Some(hook), Some(rule)) if rule.handle.is_none() => format!(
                "dropped in {namespace}, {hook}, by the policy of {} {}: no rule accepted it",
                rule.table, rule.chain
            ),
            (Some(hook), Some(rule)) => format!(
                "{} in {namespace}, {hook}, by {} {}: {}",
                if rule.action == "reject" {
                    "rejected"
                } else {
                    "dropped"
                },
                rule.table,
                rule.chain,
                rule.text
            ),
            (Some(hook), None) => {
                format!("dropped in {namespace} by netfilter in {hook} ({reason})")
            }
            _ => format!("dropped in {namespace}: {reason}"),
        },
        Ending::InFlight {
            namespace,
            device,
            waiting_for,
            ..
        } => match (waiting_for, device) {
            (Some(neighbour), Some(device)) => format!(
                "still waiting in {namespace} for {neighbour}'s MAC address on {device} when last seen"
            ),
            _ => format!("still in the kernel of {namespace} when last seen"),
        },
        Ending::ArpAnswered { reply, mac, .. } => format!("answered by #{reply}: it is at {mac}"),
        Ending::ArpUnanswered { asked, target } => {
            let times = if *asked == 1 {
                "once".to_string()
            } else {
                format!("{asked} times")
            };
            format!(
                "asked {times} on the whole segment; no ARP reply came: nothing there owns {target}"
            )
        }
    }
}

/// What a reply means for its request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    #[serde(flatten)]
    pub kind: AnswerKind,
    /// Who sent the reply (an ICMP error's source is often a router or the
    /// firewall, not the destination).
    pub from: Ipv4Addr,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnswerKind {
    /// The answer the request asked for: an echo reply, a SYN+ACK, a datagram.
    Reply,
    /// A TCP reset: the connection is refused.
    Reset {
        /// The host's own firewall sent it in the destination's name.
        by_firewall: bool,
    },
    /// An ICMP error about the request.
    Error {
        icmp_type: u8,
        code: u8,
        /// "port unreachable", "host unreachable", ...
        meaning: String,
        /// The host's own firewall (a REJECT rule) sent it.
        by_firewall: bool,
    },
}

impl Answer {
    /// True for the answer a prober wants: not an error, not a reset.
    pub fn succeeded(&self) -> bool {
        self.kind == AnswerKind::Reply
    }
}

/// What the explanation knows about the request a reply answers.
#[derive(Clone, Debug)]
pub struct RequestSummary {
    pub id: u64,
    /// When it was first seen (kernel clock).
    pub sent_ns: u64,
    /// The request as its sender sent it.
    pub sent: Packet,
    pub ending: Ending,
    /// Who-has the kernel sent while the request waited for a neighbour.
    pub arp_attempts: u32,
}

/// ICMP destination unreachable codes and other errors, in words.
pub fn icmp_error_meaning(icmp_type: u8, code: u8) -> String {
    match (icmp_type, code) {
        (3, 0) => "network unreachable".into(),
        (3, 1) => "host unreachable".into(),
        (3, 2) => "protocol unreachable".into(),
        (3, 3) => "port unreachable".into(),
        (3, 4) => "fragmentation needed".into(),
        (3, 5) => "source route failed".into(),
        (3, 6) => "destination network unknown".into(),
        (3, 7) => "destination host unknown".into(),
        // iptables' icmp-net-prohibited, icmp-host-prohibited, icmp-admin-prohibited.
        (3, 9) => "network administratively prohibited".into(),
        (3, 10) => "host administratively prohibited".into(),
        (3, 13) => "communication administratively prohibited".into(),
        (3, code) => format!("destination unreachable (code {code})"),
        (4, _) => "source quench".into(),
        (5, _) => "redirect".into(),
        (11, 0) => "time to live exceeded in transit".into(),
        (11, _) => "fragment reassembly time exceeded".into(),
        (12, _) => "parameter problem".into(),
        (icmp_type, code) => format!("ICMP type {icmp_type} code {code}"),
    }
}

/// The quoted packet's destination port, for "port N unreachable".
fn quoted_port(quoted: Option<Quoted>) -> Option<u16> {
    quoted
        .filter(|q| matches!(q.protocol, 6 | 17))
        .map(|q| q.dport)
}

fn protocol_name(number: u8) -> &'static str {
    match number {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        _ => "ip",
    }
}

/// Reads what `reply` (first as sent) says about `request`. `firewall`:
/// the reply was made by the firewall that dropped the request (a REJECT
/// rule), not by the destination. `sender` names the namespace it was sent
/// from.
pub fn answer(
    reply: &Packet,
    request: &RequestSummary,
    firewall: Firewall,
    sender: Option<&str>,
) -> Answer {
    let firewall_sent = firewall != Firewall::None;
    let destination = request.sent.dst;
    let from = reply.src;
    let who = match sender {
        Some(label) => format!("{label} ({from})"),
        None => from.to_string(),
    };
    let (kind, text) = match reply.transport {
        Transport::Icmp {
            icmp_type,
            code,
            quoted,
            seq,
            ..
        } if matches!(icmp_type, 3 | 4 | 5 | 11 | 12) => {
            let meaning = icmp_error_meaning(icmp_type, code);
            let port = quoted_port(quoted);
            let subject = match (icmp_type, code, port) {
                (3, 3, Some(port)) => format!(
                    "port {port} ({}) unreachable",
                    protocol_name(request.sent.transport.protocol_number())
                ),
                (3, 1, _) => format!("host {destination} unreachable"),
                (3, 0, _) => format!("network of {destination} unreachable"),
                // Next-hop MTU in the second half of the header (RFC 1191).
                (3, 4, _) => format!(
                    "fragmentation needed: the packet ({} bytes, don't fragment) does not fit the next link's MTU {seq}",
                    request.sent.length
                ),
                _ => meaning.clone(),
            };
            let why = error_cause(icmp_type, code, &who, from, request, firewall, sender);
            (
                AnswerKind::Error {
                    icmp_type,
                    code,
                    meaning,
                    by_firewall: firewall_sent,
                },
                format!("{who} answered: {subject}{why}"),
            )
        }
        Transport::Tcp { flags, .. } if flags & 0x04 != 0 => {
            let text = if firewall_sent {
                format!(
                    "{} answered in {destination}'s name with a reset (REJECT with tcp-reset, see #{}): the connection is refused and {destination} never saw it",
                    firewall_of(firewall, sender),
                    request.id
                )
            } else {
                let port = match request.sent.transport {
                    Transport::Tcp { dport, .. } => format!(" on port {dport}"),
                    _ => String::new(),
                };
                format!(
                    "{who} answered with a reset: nothing listens{port}, the connection is refused"
                )
            };
            (
                AnswerKind::Reset {
                    by_firewall: firewall_sent,
                },
                text,
            )
        }
        _ => (AnswerKind::Reply, format!("{who} answered")),
    };
    Answer { kind, from, text }
}

/// Why an ICMP error was sent, when the evidence tells.
fn error_cause(
    icmp_type: u8,
    code: u8,
    who: &str,
    from: Ipv4Addr,
    request: &RequestSummary,
    firewall: Firewall,
    sender: Option<&str>,
) -> String {
    if firewall != Firewall::None {
        let rule = match (firewall, sender) {
            (Firewall::Sender, Some(namespace)) => format!("a REJECT rule of {namespace}"),
            _ => "the host's own REJECT rule".to_string(),
        };
        return format!(
            " — {rule} sent this (see #{}), {} never saw the request",
            request.id, request.sent.dst
        );
    }
    match (icmp_type, code) {
        (3, 3) if from == request.sent.dst => {
            " — no process listens there (nothing is bound to that port)".into()
        }
        (3, 1) if request.arp_attempts > 0 => format!(
            " — {who} asked for the next hop's MAC address {} and got no ARP reply, so it dropped the request (see #{})",
            match request.arp_attempts {
                1 => "once".to_string(),
                n => format!("{n} times"),
            },
            request.id
        ),
        (3, 0) | (3, 1) => format!(" — {who} has no way to reach it"),
        (3, 9) | (3, 10) | (3, 13) => " — a firewall rule there rejected it".into(),
        (11, 0) => {
            " — its time to live ran out on the way (a routing loop, or a traceroute)".into()
        }
        _ => String::new(),
    }
}

/// Which firewall sent a reply in the destination's name (a REJECT rule).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Firewall {
    /// None did: the reply is the destination's or a router's own.
    None,
    Host,
    /// The firewall of the namespace that sent the reply (a container's).
    Sender,
}

/// Whose firewall sent a reply: the namespace whose REJECT rule it was.
fn firewall_of(firewall: Firewall, sender: Option<&str>) -> String {
    match (firewall, sender) {
        (Firewall::Sender, Some(namespace)) => format!("the firewall of {namespace}"),
        _ => "the host's firewall".to_string(),
    }
}

/// Where a request that got no reply was last seen, in a few words.
fn where_last_seen(ending: &Ending) -> String {
    match ending {
        Ending::Delivered {
            namespace, process, ..
        } => format!("{process} in {namespace} read it and did not answer"),
        Ending::TakenIn { namespace, .. } => {
            format!("it reached {namespace}, whose kernel took it in and did not answer")
        }
        Ending::Left {
            namespace,
            device,
            next_hop,
            ..
        } => format!(
            "it left {namespace} through {device}{}, beyond what pkttrace can see",
            next_hop
                .map(|h| format!(" towards {h}"))
                .unwrap_or_default()
        ),
        Ending::Dropped {
            namespace,
            reason,
            hook,
            ..
        } => format!(
            "it was dropped in {namespace}{} ({reason})",
            hook.map(|h| format!(", {h}")).unwrap_or_default()
        ),
        Ending::InFlight { namespace, .. } => {
            format!("it was still in the kernel of {namespace} when last seen")
        }
        Ending::ArpAnswered { .. } | Ending::ArpUnanswered { .. } => "an ARP request".into(),
    }
}

/// A request that got no reply.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NoReply {
    pub request: u64,
    pub waited_ms: u64,
    /// Where the request was last seen (its own outcome).
    pub last_seen: Outcome,
    pub text: String,
    /// The kernel lost events while the reply was waited for: it may have
    /// come and not been seen.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub events_lost: bool,
}

impl NoReply {
    pub fn new(request: u64, waited_ms: u64, last_seen: Outcome, events_lost: bool) -> Self {
        let waited = if waited_ms >= 1000 {
            format!("{:.1} s", waited_ms as f64 / 1000.0)
        } else {
            format!("{waited_ms} ms")
        };
        let text = format!(
            "no reply to #{request} within {waited}: {}",
            where_last_seen(&last_seen.ending)
        );
        Self {
            request,
            waited_ms,
            last_seen,
            text,
            events_lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN to 198.51.100.1:80 that a REJECT rule dropped.
    fn rejected_syn() -> RequestSummary {
        RequestSummary {
            id: 1,
            sent_ns: 0,
            sent: Packet {
                src: Ipv4Addr::new(172, 17, 0, 2),
                dst: Ipv4Addr::new(198, 51, 100, 1),
                transport: Transport::Tcp {
                    sport: 40000,
                    dport: 80,
                    flags: 0x02,
                    seq: 1,
                    ack: 0,
                    payload: Some(0),
                },
                ip_id: 7,
                length: 60,
            },
            ending: Ending::InFlight {
                namespace: "server-1".into(),
                netns: 1,
                device: None,
                waiting_for: None,
            },
            arp_attempts: 0,
        }
    }

    /// The reset a REJECT rule sends back in the destination's name.
    fn reset() -> Packet {
        Packet {
            src: Ipv4Addr::new(198, 51, 100, 1),
            dst: Ipv4Addr::new(172, 17, 0, 2),
            transport: Transport::Tcp {
                sport: 80,
                dport: 40000,
                flags: 0x14,
                seq: 0,
                ack: 2,
                payload: Some(0),
            },
            ip_id: 0,
            length: 40,
        }
    }

    /// A REJECT rule in a container's own namespace is that container's
    /// firewall, not the host's.
    #[test]
    fn a_reset_from_a_containers_reject_rule_names_the_container() {
        let request = rejected_syn();
        let told = answer(&reset(), &request, Firewall::Sender, Some("server-1")).text;
        assert!(
            told.starts_with("the firewall of server-1 answered"),
            "{told}"
        );
        let told = answer(&reset(), &request, Firewall::Host, Some("host")).text;
        assert!(told.starts_with("the host's firewall answered"), "{told}");
    }
}
