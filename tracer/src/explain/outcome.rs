//! How a journey ended and what a reply means, as typed values decided from
//! the kernel's evidence; the sentences are made from these values only.

use std::net::IpAddr;

use serde::Serialize;

use crate::{
    decode::{
        CodeSite, DropReason, Hook, Mac, Packet, Quoted, RouteResult, SiteRole, Transport, Tunnel,
    },
    enrich::{
        LinkKind,
        facts::{RuleAction, RuleVerdict},
    },
};

use super::{RouteChoice, table_name};

/// How a journey ended.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
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
        /// The kernel there went to answer and found no route back.
        #[serde(skip_serializing_if = "Option::is_none")]
        no_route_back: Option<RouteBack>,
        /// A connection's first segment: the process whose listening socket
        /// took it in (its kernel completes the handshake for it).
        #[serde(skip_serializing_if = "Option::is_none")]
        accepted_by: Option<AcceptedBy>,
    },
    /// It left through a device beyond which nothing is traced: a NIC, a
    /// tap, a tunnel. The driver freeing it after the transmit is no receive.
    Left {
        namespace: String,
        netns: u32,
        device: String,
        device_kind: LinkKind,
        /// The driver of a hardware device (`virtio_net`).
        #[serde(skip_serializing_if = "Option::is_none")]
        driver: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_hop: Option<IpAddr>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_hop_mac: Option<Mac>,
        /// Where the device freed it once sent (`__free_old_xmit`), when seen.
        #[serde(skip_serializing_if = "Option::is_none")]
        freed_by: Option<String>,
        /// The program that read it from a tun/tap device ("qemu (pid 4)").
        #[serde(skip_serializing_if = "Option::is_none")]
        read_by: Option<String>,
        /// It left inside a tunnel: the datagram that carries it on.
        #[serde(skip_serializing_if = "Option::is_none")]
        in_tunnel: Option<Tunnel>,
    },
    /// The kernel dropped it.
    Dropped {
        namespace: String,
        netns: u32,
        reason: DropReason,
        location: CodeSite,
        /// The netfilter hook it was dropped in, for a netfilter drop.
        #[serde(skip_serializing_if = "Option::is_none")]
        hook: Option<Hook>,
        /// The rule (or chain policy) that decided, from nf_tables tracing.
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<RuleVerdict>,
        /// The route that said no (unreachable, blackhole, prohibit, none),
        /// for a drop by the input route's error handler.
        #[serde(skip_serializing_if = "Option::is_none")]
        refused_by: Option<RouteChoice>,
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
        waiting_for: Option<IpAddr>,
    },
    /// The kernel refused to send it: no packet was ever made.
    NotSent {
        namespace: String,
        netns: u32,
        /// The process that tried ("ping (pid 7)").
        #[serde(skip_serializing_if = "Option::is_none")]
        sender: Option<String>,
        why: NotSent,
    },
    /// An ARP request that got its reply.
    ArpAnswered { asked: u32, reply: u64, mac: Mac },
    /// An ARP request nobody answered: `asked` who-has went out.
    ArpUnanswered { asked: u32, target: IpAddr },
}

/// The listening socket a connection was taken in for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AcceptedBy {
    pub process: String,
    pub pid: u32,
    /// The address it listens on (`0.0.0.0:4000`).
    pub listening_on: String,
}

/// A namespace's failed route back to a packet's source: it could not answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RouteBack {
    pub to: IpAddr,
    pub table: u32,
    pub result: RouteResult,
    /// The namespace's routes of that table, in `ip route` words.
    pub routes: Vec<String>,
    pub default_route: bool,
}

/// Why the kernel made no packet of what a process asked it to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum NotSent {
    /// Its route lookup found no way: `routes` are the namespace's routes of
    /// the table that answered, in `ip route` words.
    NoRoute {
        destination: IpAddr,
        table: u32,
        result: RouteResult,
        routes: Vec<String>,
        default_route: bool,
    },
    /// Larger than the path MTU the namespace learned for the destination
    /// (from an ICMP fragmentation needed), with don't-fragment set: the
    /// send failed with EMSGSIZE.
    TooBig {
        destination: IpAddr,
        length: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        path_mtu: Option<u32>,
    },
}

/// An outcome: the typed ending and its sentence.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
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

    /// It did not get where it was going (the terminal draws it red).
    pub fn is_drop(&self) -> bool {
        matches!(
            self.ending,
            Ending::Dropped { .. } | Ending::ArpUnanswered { .. } | Ending::NotSent { .. }
        )
    }
}

/// What a device is, in words, for a packet leaving by it.
pub fn device_words(kind: &LinkKind, driver: Option<&str>) -> String {
    match (kind, driver) {
        (LinkKind::Tun, _) => "tun device: a program reads the IP packets it sends".into(),
        (LinkKind::Tap, _) => "tap device: a program reads the frames it sends".into(),
        (LinkKind::Ifb, _) => "IFB device: it frees what it is given, like a dummy".into(),
        (LinkKind::Dummy, _) => "dummy device: it frees what it is given".into(),
        (LinkKind::Vxlan, _) => "VXLAN tunnel".into(),
        (LinkKind::Wireguard, _) => "WireGuard tunnel".into(),
        (LinkKind::Tunnel(kind), _) => format!("{kind} tunnel"),
        (LinkKind::Hardware, Some(driver)) => format!("network card ({driver})"),
        (LinkKind::Hardware, None) => "device".into(),
        (kind, _) => format!("{} device", kind.name()),
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
            handler,
            no_route_back,
            accepted_by,
            ..
        } => {
            let taken = match (accepted_by, handler) {
                (Some(by), _) => format!(
                    "accepted by {} (pid {}), listening on {} in {namespace}",
                    by.process, by.pid, by.listening_on
                ),
                (None, Some(handler)) => {
                    format!("reached {namespace}, whose kernel took it in ({handler})")
                }
                (None, None) => format!(
                    "reached {namespace}, the namespace it was addressed to; its kernel took it in (its protocol freed it without a trace)"
                ),
            };
            match no_route_back {
                Some(back) => format!("{taken}, but could not answer: {}", back.words(namespace)),
                None => taken,
            }
        }
        Ending::Left {
            namespace,
            device,
            device_kind,
            in_tunnel: Some(tunnel),
            ..
        } => format!(
            "left {namespace} through {device} ({}) in a VXLAN datagram (VNI {}) for the tunnel endpoint {}; nothing beyond it is traced here",
            device_words(device_kind, None),
            tunnel.vni,
            tunnel.dst
        ),
        Ending::Left {
            namespace,
            device,
            device_kind,
            driver,
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
                "left {namespace} through {device} ({}){towards}; nothing beyond it is traced{freed}",
                device_words(device_kind, driver.as_deref())
            )
        }
        Ending::Dropped {
            refused_by: Some(route),
            namespace,
            reason,
            ..
        } => format!("dropped in {namespace} {} ({reason})", refused_words(route)),
        Ending::Dropped {
            namespace,
            reason,
            location,
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
                if rule.action == RuleAction::Reject {
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
            // No hook seen (no netfilter programs); nf_tables' trace named the rule.
            (None, Some(rule)) if reason.is_netfilter_drop_at(location) => format!(
                "dropped in {namespace} by {} {}: {}",
                rule.table,
                rule.chain,
                if rule.handle.is_none() {
                    "its policy (no rule accepted it)"
                } else {
                    &rule.text
                }
            ),
            _ => match reason {
                DropReason::PktTooBig => format!(
                    "dropped in {namespace}: too big for the next link, and it may not be fragmented ({reason})"
                ),
                DropReason::IpInHdr if location.role == SiteRole::Forwarding => {
                    // ip6_forward dropped it: IPv6 calls it the hop limit.
                    let life = if location.name.starts_with("ip6") {
                        "hop limit"
                    } else {
                        "time to live"
                    };
                    format!("dropped in {namespace}: its {life} ran out ({reason})")
                }
                DropReason::Unreported => format!(
                    "dropped in {namespace} by {} (no drop reason given)",
                    location.function()
                ),
                _ => format!("dropped in {namespace}: {reason}"),
            },
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
        Ending::NotSent {
            namespace,
            sender,
            why,
            ..
        } => {
            let who = sender.as_deref().unwrap_or("the sender");
            format!(
                "not sent: {}, so its kernel refused {who}'s send: no packet was made",
                why.words(namespace)
            )
        }
        Ending::ArpAnswered { reply, mac, .. } => format!("answered by #{reply}: it is at {mac}"),
        Ending::ArpUnanswered { asked, target } => format!(
            "asked {} on the whole segment; no {} came: nothing there owns {target}",
            times(*asked),
            crate::addr::neighbour_words(*target).1
        ),
    }
}

/// How a route refused a packet, after "dropped in NAMESPACE": "by a
/// blackhole route (table main): …", or ": no route in table main".
fn refused_words(route: &RouteChoice) -> String {
    match route.result {
        RouteResult::NoMatch => format!(": {}", super::describe_route(route)),
        _ => format!("by {}", super::describe_route(route)),
    }
}

/// "once", "3 times".
fn times(n: u32) -> String {
    match n {
        1 => "once".into(),
        n => format!("{n} times"),
    }
}

impl RouteBack {
    /// "no route back to 10.67.0.2 in netns up (table main)".
    fn words(&self, namespace: &str) -> String {
        let table = table_name(self.table);
        match self.result {
            RouteResult::Unreachable => format!(
                "its route back to {} is an unreachable route (table {table})",
                self.to
            ),
            RouteResult::Blackhole => format!(
                "its route back to {} is a blackhole route (table {table})",
                self.to
            ),
            RouteResult::Prohibit => format!(
                "its route back to {} is a prohibit route (table {table})",
                self.to
            ),
            _ => format!(
                "no route back to {} in {namespace}{}",
                self.to,
                routes_words(&table, &self.routes, self.default_route)
            ),
        }
    }
}

/// " (table main has only 10.0.0.0/24 dev eth0, and no default route)";
/// nothing when it has a default route.
fn routes_words(table: &str, routes: &[String], default_route: bool) -> String {
    match (routes, default_route) {
        (_, true) => String::new(),
        ([], false) => format!(" (table {table} is empty)"),
        (routes, false) => format!(
            " (table {table} has only {}, and no default route)",
            routes.join(", ")
        ),
    }
}

impl NotSent {
    /// Why, as a clause about `namespace`.
    fn words(&self, namespace: &str) -> String {
        match self {
            Self::NoRoute {
                destination,
                table,
                result,
                routes,
                default_route,
            } => {
                let table = table_name(*table);
                let has = routes_words(&table, routes, *default_route);
                match result {
                    RouteResult::Unreachable => format!(
                        "{namespace}'s route to {destination} is an unreachable route (table {table})"
                    ),
                    RouteResult::Blackhole => format!(
                        "{namespace}'s route to {destination} is a blackhole route (table {table})"
                    ),
                    RouteResult::Prohibit => format!(
                        "{namespace}'s route to {destination} is a prohibit route (table {table})"
                    ),
                    _ => format!("{namespace} has no route to {destination}{has}"),
                }
            }
            Self::TooBig {
                destination,
                length,
                path_mtu,
            } => {
                let mtu = match path_mtu {
                    Some(mtu) => {
                        format!("the path MTU {mtu} that {namespace} learned for {destination}")
                    }
                    None => format!("the path MTU {namespace} learned for {destination}"),
                };
                let (packet, error) = if destination.is_ipv6() {
                    (format!("{length} bytes"), "ICMPv6 packet too big")
                } else {
                    (
                        format!("{length} bytes, don't fragment"),
                        "ICMP fragmentation needed",
                    )
                };
                format!(
                    "the packet ({packet}) is larger than {mtu} from an {error} (`ip route get {destination}` shows it until it expires; EMSGSIZE)"
                )
            }
        }
    }
}

/// What a reply means for its request.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Answer {
    #[serde(flatten)]
    pub kind: AnswerKind,
    /// Who sent the reply (an ICMP error's source is often a router or the
    /// firewall, not the destination).
    pub from: IpAddr,
    /// Where it came from, as far as pkttrace sees.
    pub origin: Origin,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnswerKind {
    /// The answer the request asked for: an echo reply, a SYN+ACK, a datagram.
    Reply,
    /// A TCP reset: the connection is refused.
    Reset {
        /// The host's own firewall sent it in the destination's name.
        by_firewall: bool,
    },
    /// An ICMP error about the request; type and code in ICMP's (IPv4's)
    /// numbering, an ICMPv6 error mapped to its twin (`icmpv6` says so).
    Error {
        icmp_type: u8,
        code: u8,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        icmpv6: bool,
        /// "port unreachable", "host unreachable", ...
        meaning: String,
        /// The host's own firewall (a REJECT rule) sent it.
        by_firewall: bool,
        /// Fragmentation needed (ICMPv6: packet too big): the next link's
        /// MTU, as the error says.
        #[serde(skip_serializing_if = "Option::is_none")]
        next_hop_mtu: Option<u32>,
    },
}

/// Where a reply came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A process in a namespace pkttrace sees sent it.
    Process {
        namespace: String,
        netns: u32,
        process: String,
        pid: u32,
    },
    /// The kernel of a namespace pkttrace sees made it.
    Kernel { namespace: String, netns: u32 },
    /// It arrived through `device` of `namespace` from beyond it, where
    /// nothing is traced (a NIC, a tap or tun, a tunnel).
    Beyond {
        namespace: String,
        netns: u32,
        device: String,
        device_kind: LinkKind,
        /// It arrived inside a tunnel: the datagram that carried it.
        #[serde(skip_serializing_if = "Option::is_none")]
        in_tunnel: Option<Tunnel>,
    },
}

impl Origin {
    /// The namespace whose kernel made it, when it is one pkttrace sees.
    fn kernel_netns(&self) -> Option<u32> {
        match self {
            Self::Kernel { netns, .. } => Some(*netns),
            _ => None,
        }
    }

    /// Who answered, in words: "netns up (198.51.100.1)", "198.51.100.9, beyond tap0".
    fn who(&self, from: IpAddr, router: bool) -> String {
        match self {
            Self::Process { namespace, .. } | Self::Kernel { namespace, .. } => {
                format!("{namespace} ({from})")
            }
            Self::Beyond {
                device,
                in_tunnel: Some(tunnel),
                ..
            } => format!("{from}, beyond {device} (in VXLAN from {}),", tunnel.src),
            Self::Beyond { device, .. } if router => format!("{from}, a router beyond {device},"),
            Self::Beyond { device, .. } => format!("{from}, beyond {device},"),
        }
    }
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
    /// The request as its sender sent it.
    pub sent: Packet,
    pub ending: Ending,
    /// Who-has the kernel sent while the request waited for a neighbour.
    pub arp_attempts: u32,
    /// Namespaces that routed it onward before it ended (routers on its way).
    pub routers: u32,
    /// Its TTL where it was last seen.
    pub last_ttl: u8,
    /// The last route chosen for it: namespace, out device and that device's MTU.
    pub last_route: Option<LastRoute>,
    /// The namespaces of a routing loop it went round, when it did.
    pub looped_between: Vec<String>,
    /// The namespace that sent it.
    pub source_netns: u32,
    /// Where it ended: the namespace and the device it came in on there.
    pub arrived_on: Option<(u32, String)>,
    /// That device's `forwarding` setting, and the namespace's `all`, when
    /// they were read.
    pub arrived_forwarding: Option<bool>,
    pub all_forwarding: Option<bool>,
    /// The address on the other end of that device's link (the way back).
    pub arrived_from: Option<IpAddr>,
    /// Where the namespace it ended in was sending it next (its gateway,
    /// or the destination on-link).
    pub last_next_hop: Option<IpAddr>,
    /// Sockets listening on the port it was refused at, in any namespace.
    pub listeners: Vec<crate::enrich::facts::ListenerAt>,
    /// It was last seen on a tunnel's underlay, inside this datagram.
    pub ended_in_tunnel: Option<crate::decode::Tunnel>,
}

/// The last routing decision made for a request.
#[derive(Clone, Debug, PartialEq)]
pub struct LastRoute {
    pub netns: u32,
    pub device: String,
    pub mtu: Option<u32>,
    pub result: RouteResult,
    pub table: u32,
}

/// ICMP destination unreachable codes and other errors, in words; an
/// ICMPv6 error (in ICMP's numbering, see `Transport::icmp`) by its own name.
pub fn icmp_error_meaning(icmp_type: u8, code: u8, icmpv6: bool) -> String {
    if icmpv6 {
        match (icmp_type, code) {
            (3, 0) => return "no route to destination".into(),
            (3, 1) => return "address unreachable".into(),
            (3, 13) => return "administratively prohibited".into(),
            (3, 4) => return "packet too big".into(),
            (11, 0) => return "hop limit exceeded in transit".into(),
            _ => {}
        }
    }
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
/// rule), not by the destination. `origin` is where the reply came from.
pub fn answer(
    reply: &Packet,
    request: &RequestSummary,
    firewall: Firewall,
    origin: Origin,
) -> Answer {
    let firewall_sent = firewall != Firewall::None;
    let destination = request.sent.dst;
    let from = reply.src;
    let (kind, text) = match (reply.transport, reply.transport.icmp()) {
        (
            Transport::Icmp {
                quoted,
                id,
                seq,
                v6,
                ..
            },
            Some((icmp_type, code)),
        ) if matches!(icmp_type, 3 | 4 | 5 | 11 | 12) => {
            let meaning = icmp_error_meaning(icmp_type, code, v6);
            let port = quoted_port(quoted);
            // The next link's MTU: in the second half of the header (RFC
            // 1191), or ICMPv6's packet too big's whole 32 bits.
            let mtu = if v6 {
                u32::from(id) << 16 | u32::from(seq)
            } else {
                u32::from(seq)
            };
            let next_hop_mtu = (icmp_type, code) == (3, 4);
            let subject = match (icmp_type, code, port) {
                (3, 3, Some(port)) => format!(
                    "port {port} ({}) unreachable",
                    protocol_name(request.sent.transport.protocol_number())
                ),
                (3, 1, _) => format!("host {destination} unreachable"),
                (3, 0, _) => format!("network of {destination} unreachable"),
                (3, 4, _) if v6 => format!(
                    "packet too big: the packet ({} bytes) does not fit the next link's MTU {mtu}",
                    request.sent.length
                ),
                (3, 4, _) => format!(
                    "fragmentation needed: the packet ({} bytes, don't fragment) does not fit the next link's MTU {mtu}",
                    request.sent.length
                ),
                _ => meaning.clone(),
            };
            let who = origin.who(from, from != destination);
            let why = error_cause(icmp_type, code, from, request, firewall, &origin);
            (
                AnswerKind::Error {
                    icmp_type,
                    code,
                    icmpv6: v6,
                    meaning,
                    by_firewall: firewall_sent,
                    next_hop_mtu: next_hop_mtu.then_some(mtu),
                },
                format!("{who} answered: {subject}{why}"),
            )
        }
        (Transport::Tcp { flags, .. }, _) if flags & 0x04 != 0 => {
            let text = if firewall_sent {
                format!(
                    "{} answered in {destination}'s name with a reset (REJECT with tcp-reset, see #{}): the connection is refused and {destination} never saw it",
                    firewall_of(firewall, &origin),
                    request.id
                )
            } else {
                let port = match request.sent.transport {
                    Transport::Tcp { dport, .. } => format!(" on port {dport}"),
                    _ => String::new(),
                };
                format!(
                    "{} answered with a reset: nothing listens{port}, the connection is refused",
                    origin.who(from, false)
                )
            };
            (
                AnswerKind::Reset {
                    by_firewall: firewall_sent,
                },
                text,
            )
        }
        _ => (
            AnswerKind::Reply,
            format!("{} answered", origin.who(from, false)),
        ),
    };
    Answer {
        kind,
        from,
        origin,
        text,
    }
}

/// Why an ICMP error was sent, when the evidence tells: what happened to
/// the request in the namespace whose kernel made the error, or that it
/// came from beyond a device, where nothing is seen.
fn error_cause(
    icmp_type: u8,
    code: u8,
    from: IpAddr,
    request: &RequestSummary,
    firewall: Firewall,
    origin: &Origin,
) -> String {
    if firewall != Firewall::None {
        let rule = match (firewall, origin) {
            (Firewall::Sender, Origin::Kernel { namespace, .. }) => {
                format!("a REJECT rule of {namespace}")
            }
            _ => "the host's own REJECT rule".to_string(),
        };
        return format!(
            " — {rule} sent this (see #{}), {} never saw the request",
            request.id, request.sent.dst
        );
    }
    let (life, ttl) = crate::addr::lifetime_words(request.sent.dst);
    if let Origin::Beyond { device, .. } = origin {
        let beyond = format!("beyond {device} is traced");
        return match (icmp_type, code) {
            (3, 3) if from == request.sent.dst => {
                format!(" — no process listens there (nothing {beyond})")
            }
            (11, 0) => format!(
                " — its {life} ran out at {from} (nothing {beyond}; sent with {ttl} {}, {} on this host)",
                request.sent.ttl,
                routers(request.routers)
            ),
            (3, 4) => {
                format!(" — a link after {from} is smaller than the packet (nothing {beyond})")
            }
            _ => format!(" (nothing {beyond}: this is that router's own word)"),
        };
    }
    // What the kernel that made the error did to the request.
    let here = origin.kernel_netns();
    let (dropped_here, neighbour_failed_here) = match &request.ending {
        Ending::Dropped {
            netns,
            reason,
            location,
            ..
        } if Some(*netns) == here => (Some(reason), reason.is_neighbour_failure_at(location)),
        _ => (None, false),
    };
    let route_here = request
        .last_route
        .as_ref()
        .filter(|route| Some(route.netns) == here);
    match (icmp_type, code) {
        (3, 3) if from == request.sent.dst => {
            " — no process listens there (nothing is bound to that port)".into()
        }
        (3, _) if neighbour_failed_here => format!(
            " — it asked for the next hop's MAC address {} and got no {}, so it dropped the request (see #{})",
            times(request.arp_attempts),
            crate::addr::neighbour_words(request.sent.dst).1,
            request.id
        ),
        (3, 4) if dropped_here == Some(&DropReason::PktTooBig) => {
            let unsplittable = if request.sent.dst.is_ipv6() {
                "an IPv6 router never splits a packet"
            } else {
                "the packet's don't-fragment bit forbids splitting it"
            };
            match route_here {
                Some(route) => format!(
                    " — its route sends the packet on through {}{}, and {unsplittable} (see #{})",
                    route.device,
                    route
                        .mtu
                        .map(|mtu| format!(" (MTU {mtu})"))
                        .unwrap_or_default(),
                    request.id
                ),
                None => format!(
                    " — the next link is smaller than the packet, and {unsplittable} (see #{})",
                    request.id
                ),
            }
        }
        (3, 0 | 1 | 13) if route_here.is_some_and(|r| !r.result.found()) => {
            let route = route_here.expect("checked above");
            let table = table_name(route.table);
            let what = match route.result {
                RouteResult::Unreachable => format!("an unreachable route for it (table {table})"),
                RouteResult::Prohibit => format!("a prohibit route for it (table {table})"),
                _ => format!("no route to it (table {table})"),
            };
            format!(" — its routing table has {what} (see #{})", request.id)
        }
        (11, 0) if dropped_here == Some(&DropReason::IpInHdr) => {
            let looped = match request.looped_between.as_slice() {
                [] => String::new(),
                namespaces => format!(
                    "; it went round a routing loop between {} (see #{})",
                    namespaces.join(" and "),
                    request.id
                ),
            };
            format!(
                " — its {life} ran out there: it arrived with {ttl} {}, and a router does not pass on a packet whose {ttl} would reach 0; that was the {} router on its way (sent with {ttl} {}){looped}",
                request.last_ttl,
                ordinal(request.routers + 1),
                request.sent.ttl
            )
        }
        (3, 0) | (3, 1) => " — it has no way to reach it".into(),
        (3, 9) | (3, 10) | (3, 13) => " — a firewall rule there rejected it".into(),
        (11, 0) => {
            format!(" — its {life} ran out on the way (a routing loop, or a traceroute)")
        }
        _ => String::new(),
    }
}

/// "no router", "1 router", "3 routers".
fn routers(n: u32) -> String {
    match n {
        0 => "no router".into(),
        1 => "1 router".into(),
        n => format!("{n} routers"),
    }
}

/// "1st", "2nd", "3rd", "4th", "11th" ...
fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
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
fn firewall_of(firewall: Firewall, origin: &Origin) -> String {
    match (firewall, origin) {
        (Firewall::Sender, Origin::Kernel { namespace, .. }) => {
            format!("the firewall of {namespace}")
        }
        _ => "the host's firewall".to_string(),
    }
}

/// Where a request that got no reply was last seen, in a few words.
fn where_last_seen(ending: &Ending) -> String {
    match ending {
        Ending::Delivered {
            namespace, process, ..
        } => format!("{process} in {namespace} read it and did not answer"),
        Ending::TakenIn {
            namespace,
            no_route_back: Some(back),
            ..
        } => format!(
            "it reached {namespace}, whose kernel went to answer and could not: {}",
            back.words(namespace)
        ),
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
            refused_by: Some(route),
            ..
        } => format!("it was dropped in {namespace} {}", refused_words(route)),
        Ending::Dropped {
            namespace,
            reason: DropReason::Unreported,
            location,
            ..
        } => format!("it was dropped in {namespace} by {}", location.function()),
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
        Ending::NotSent { namespace, .. } => {
            format!("it was never sent: the kernel of {namespace} refused it")
        }
        Ending::ArpAnswered { .. } | Ending::ArpUnanswered { .. } => {
            "a request for a MAC address".into()
        }
    }
}

/// A request that got no reply.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct NoReply {
    pub request: u64,
    pub waited_ms: u64,
    /// Where the request was last seen (its own outcome).
    pub last_seen: Outcome,
    pub text: String,
    /// The kernel lost events while the reply was waited for: it may have
    /// come and not been seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub events_lost: bool,
    /// What failed, why, and what to do.
    pub verdict: super::Verdict,
}

impl NoReply {
    pub fn new(
        request: u64,
        waited_ms: u64,
        last_seen: Outcome,
        events_lost: bool,
        verdict: super::Verdict,
    ) -> Self {
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
            verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// iptables' three REJECT codes for "prohibited" are told apart, as
    /// `iptables -S` names them (icmp-net-, icmp-host-, icmp-admin-prohibited).
    #[test]
    fn each_prohibited_code_is_named_as_its_reject_rule_says() {
        assert_eq!(
            icmp_error_meaning(3, 9, false),
            "network administratively prohibited"
        );
        assert_eq!(
            icmp_error_meaning(3, 10, false),
            "host administratively prohibited"
        );
        assert_eq!(
            icmp_error_meaning(3, 13, false),
            "communication administratively prohibited"
        );
    }

    /// A SYN to 198.51.100.1:80 that a REJECT rule dropped.
    fn rejected_syn() -> RequestSummary {
        RequestSummary {
            id: 1,
            sent: Packet {
                src: IpAddr::from([172, 17, 0, 2]),
                dst: IpAddr::from([198, 51, 100, 1]),
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
                ttl: 64,
                dont_fragment: true,
                tunnel: None,
            },
            ending: Ending::InFlight {
                namespace: "server-1".into(),
                netns: 1,
                device: None,
                waiting_for: None,
            },
            arp_attempts: 0,
            routers: 0,
            last_ttl: 64,
            last_route: None,
            looped_between: Vec::new(),
            source_netns: 1,
            arrived_on: None,
            arrived_forwarding: None,
            all_forwarding: None,
            arrived_from: None,
            last_next_hop: None,
            listeners: Vec::new(),
            ended_in_tunnel: None,
        }
    }

    /// The reset a REJECT rule sends back in the destination's name.
    fn reset() -> Packet {
        Packet {
            src: IpAddr::from([198, 51, 100, 1]),
            dst: IpAddr::from([172, 17, 0, 2]),
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
            ttl: 64,
            dont_fragment: true,
            tunnel: None,
        }
    }

    /// A REJECT rule in a container's own namespace is that container's
    /// firewall, not the host's.
    #[test]
    fn a_reset_from_a_containers_reject_rule_names_the_container() {
        let request = rejected_syn();
        let kernel_of = |namespace: &str| Origin::Kernel {
            namespace: namespace.into(),
            netns: 1,
        };
        let told = answer(&reset(), &request, Firewall::Sender, kernel_of("server-1")).text;
        assert!(
            told.starts_with("the firewall of server-1 answered"),
            "{told}"
        );
        let told = answer(&reset(), &request, Firewall::Host, kernel_of("host")).text;
        assert!(told.starts_with("the host's firewall answered"), "{told}");
    }
}
