//! Explanation: turns a journey (kernel evidence) and the topology (names)
//! into the hop-by-hop story. Pure: it never reads the kernel or Docker.

pub mod compare;
pub mod dns;
mod hints;
mod steps;
mod storyteller;
pub mod verdict;
mod wanted;

pub use storyteller::Storyteller;
pub use verdict::Verdict;
pub use wanted::facts_wanted;
pub mod outcome;
pub mod paths;

use std::net::IpAddr;

use serde::Serialize;

use crate::{
    decode::{
        CodeSite, Conntrack, CtDirection, CtState, DropReason, Event, Hook, LOCAL_TABLE,
        MAIN_TABLE, Mac, Packet, RouteResult, Transport, Tunnel,
    },
    enrich::{
        Listener, Published, Topology,
        facts::{Facts, RuleAction, RuleVerdict},
    },
    journey::{
        Journey,
        exchanges::{ArpResult, Role},
    },
};

pub use outcome::{
    Answer, Ending, LastRoute, NoReply, NotSent, Origin, Outcome, RequestSummary, RouteBack,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Request,
    Reply,
}

/// A packet's addresses and ports as one value, for NAT before/after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Tuple {
    pub protocol: &'static str,
    pub src: IpAddr,
    pub dst: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// ICMP echo identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_id: Option<u16>,
}

impl Tuple {
    /// The tuple of the way back.
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..self
        }
    }

    pub fn of(packet: &Packet) -> Self {
        let (protocol, sport, dport, icmp_id) = match packet.transport {
            Transport::Icmp { id, v6: false, .. } => ("icmp", None, None, Some(id)),
            Transport::Icmp { id, v6: true, .. } => ("icmpv6", None, None, Some(id)),
            Transport::Tcp { sport, dport, .. } => ("tcp", Some(sport), Some(dport), None),
            Transport::Udp { sport, dport } => ("udp", Some(sport), Some(dport), None),
            Transport::Arp { .. } if packet.dst.is_ipv6() => ("nd", None, None, None),
            Transport::Arp { .. } => ("arp", None, None, None),
            Transport::Other { .. } => ("ip", None, None, None),
        };
        Self {
            protocol,
            src: packet.src,
            dst: packet.dst,
            sport,
            dport,
            icmp_id,
        }
    }
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A packet never made has no source chosen yet.
        if self.src.is_unspecified() {
            return match self.dport {
                Some(d) => write!(f, "to {}", std::net::SocketAddr::new(self.dst, d)),
                None => write!(f, "to {}", self.dst),
            };
        }
        match (self.sport, self.dport) {
            (Some(s), Some(d)) => write!(
                f,
                "{} → {}",
                std::net::SocketAddr::new(self.src, s),
                std::net::SocketAddr::new(self.dst, d)
            ),
            _ => write!(f, "{} → {}", self.src, self.dst),
        }
    }
}

/// Kind-specific facts of a hop; `kind` in JSON.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Details {
    Send {
        #[serde(skip_serializing_if = "Option::is_none")]
        process: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        route: Option<RouteChoice>,
        /// The packet waited in the neighbour queue while ARP resolved the next hop.
        waited_for_arp: bool,
    },
    /// The hop is where the packet came out; `peer_*` is the end it went in.
    Veth {
        peer_device: String,
        peer_namespace: String,
        peer_netns: u32,
    },
    Bridge {
        bridge: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        docker_network: Option<String>,
        port: String,
        decision: BridgeDecision,
    },
    Route(RouteChoice),
    Forward {
        from_device: String,
        to_device: String,
        /// `net.ipv4.conf.<from_device>.forwarding` in that namespace: the
        /// setting the kernel checked.
        ip_forward: Option<bool>,
        /// The packet is IPv6: the setting is `net.ipv6.conf.…`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ipv6: bool,
    },
    Netfilter {
        hook: Hook,
        #[serde(skip_serializing_if = "Option::is_none")]
        conntrack: Option<ConntrackSaid>,
        /// POSTROUTING let it out with its private source: the Docker
        /// network it comes from does not masquerade.
        #[serde(skip_serializing_if = "Option::is_none")]
        not_masqueraded_by: Option<String>,
    },
    Nat {
        hook: Hook,
        nat: NatKind,
        before: Tuple,
        after: Tuple,
        /// Told from the packet's addresses on two devices, not seen at the
        /// hook: the kernel has no netfilter programs.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        inferred: bool,
    },
    Xmit,
    /// A VXLAN device wrapped the frame in a UDP datagram (`outer`, when
    /// the underlay was traced) for the tunnel `endpoint` its forwarding
    /// database names.
    Encap {
        #[serde(skip_serializing_if = "Option::is_none")]
        vni: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        outer: Option<Tunnel>,
        #[serde(skip_serializing_if = "Option::is_none")]
        endpoint: Option<IpAddr>,
    },
    /// A VXLAN device took the frame out of the datagram `outer`.
    Decap {
        #[serde(skip_serializing_if = "Option::is_none")]
        vni: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        outer: Option<Tunnel>,
    },
    Receive,
    Deliver {
        process: String,
        pid: u32,
    },
    /// The same hops again and again: a routing loop, told once and counted.
    Loop {
        /// The namespaces that sent it round, in order.
        namespaces: Vec<String>,
        /// Rounds folded into this hop (after the first, told in full).
        rounds: u32,
        ttl_from: u8,
        ttl_to: u8,
    },
    Drop {
        reason: DropReason,
        location: CodeSite,
        hint: String,
        /// For a netfilter drop: the hook it happened in.
        #[serde(skip_serializing_if = "Option::is_none")]
        hook: Option<Hook>,
        /// For a netfilter drop: the rule (or chain policy) that decided.
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<RuleVerdict>,
    },
}

impl Details {
    /// The hop's kind in a word, as the terminal and pcap comments name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Details::Send { .. } => "send",
            Details::Veth { .. } => "veth",
            Details::Bridge { .. } => "bridge",
            Details::Route(_) => "route",
            Details::Forward { .. } => "forward",
            Details::Netfilter { .. } => "netfilter",
            Details::Nat { .. } => "nat",
            Details::Xmit => "xmit",
            Details::Encap { .. } => "encap",
            Details::Decap { .. } => "decap",
            Details::Receive => "receive",
            Details::Deliver { .. } => "deliver",
            Details::Loop { .. } => "loop",
            Details::Drop { .. } => "drop",
        }
    }
}

/// What conntrack said of a packet at a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ConntrackSaid {
    pub state: CtState,
    pub direction: CtDirection,
}

impl From<Conntrack> for ConntrackSaid {
    fn from(conntrack: Conntrack) -> Self {
        Self {
            state: conntrack.state,
            direction: conntrack.direction,
        }
    }
}

impl ConntrackSaid {
    fn words(self) -> &'static str {
        Conntrack {
            id: 0,
            state: self.state,
            direction: self.direction,
        }
        .words()
    }
}

/// Which NAT changed the packet's addresses or ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NatKind {
    /// SNAT or MASQUERADE: the source changes.
    Source,
    /// DNAT: the destination changes.
    Destination,
    /// Conntrack undoing a connection's NAT on its reply.
    Reverse,
}

impl std::fmt::Display for NatKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.words())
    }
}

impl NatKind {
    fn words(self) -> &'static str {
        match self {
            Self::Source => "source NAT (SNAT/MASQUERADE)",
            Self::Destination => "destination NAT (DNAT)",
            Self::Reverse => "reverse NAT of the reply (conntrack undoes the connection's NAT)",
        }
    }
}

/// What a bridge did with a frame that entered one of its ports.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BridgeDecision {
    /// Passed up to the host's IP stack: the frame was for the bridge.
    HandedUp {
        #[serde(skip_serializing_if = "Option::is_none")]
        mac_dst: Option<Mac>,
        /// The destination MAC is the bridge's own.
        bridge_mac: bool,
    },
    /// Sent out of one port, as its forwarding database says.
    Switched {
        port: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        mac_dst: Option<Mac>,
        fdb: FdbSaid,
    },
    /// Sent out of several ports: the destination MAC is not in its database.
    Flooded { ports: Vec<String> },
    /// A broadcast (an ARP request): out of every other port.
    Broadcast { ports: Vec<String>, handed_up: bool },
    /// Nothing more of the bridge was seen.
    Unseen,
}

/// What the bridge's forwarding database says of the frame's destination MAC now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FdbSaid {
    /// On the port it was switched to.
    OnThatPort,
    /// Learned on another port since.
    OnPort(String),
    /// No longer there: learned entries age out.
    AgedOut,
    /// Not known (no destination MAC seen).
    Unknown,
}

/// A routing decision: the table that decided and what it found.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RouteChoice {
    /// Table id (254 main, 255 local, 253 default, others by number).
    pub table: u32,
    pub result: RouteResult,
    /// The device the route sends through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Hop {
    /// Microseconds since the journey's first event.
    pub at_us: u64,
    pub netns: u32,
    /// Who owns the namespace: a container name, "netns NAME", "host".
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The hop in one sentence, the evidence after it.
    pub text: String,
    /// The packet waited for ARP just before this hop (sent or forwarded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arp_wait: Option<ArpWait>,
    #[serde(flatten)]
    pub details: Details,
    /// On a tunnel's underlay: the outer datagram that carried the packet
    /// here (the hop's words are about that datagram).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
    /// The packet's time to live here (0 when unknown: a route lookup).
    #[serde(skip)]
    pub ttl: u8,
    /// The packet's bytes at this hop, for `--pcap`.
    #[serde(skip)]
    pub capture: Option<HopCapture>,
}

/// A packet's first bytes (from its network header on) at one hop, with
/// where and when the kernel saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct HopCapture {
    /// Kernel monotonic time.
    pub time_ns: u64,
    pub ifindex: u32,
    /// Handed to a device for transmit (otherwise received or in the stack).
    pub outgoing: bool,
    pub bytes: Vec<u8>,
}

/// A wait in a namespace's neighbour queue, from the first who-has ARP sent
/// for the packet to its transmit once ARP had answered.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ArpWait {
    pub waited_us: u64,
    /// The neighbour asked for: the route's gateway, or the destination
    /// itself; unknown when no route was looked up there (a retransmission
    /// leaves with its connection's cached route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<IpAddr>,
    /// Its MAC address, as the frame that finally left carried it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    pub device: String,
    /// The packet is IPv6 (the neighbour is found by neighbour discovery).
    #[serde(skip)]
    pub ipv6: bool,
}

impl ArpWait {
    /// "waited 0.2 ms for ARP on eth0: 172.17.0.1 is at 02:42:0a:b6:23:7f".
    fn sentence(&self) -> String {
        // IPv6 resolves a neighbour's MAC address with neighbour discovery.
        let resolution = if self.ipv6 {
            "neighbour discovery"
        } else {
            "ARP"
        };
        let waited = format!(
            "waited {} for {resolution} on {}",
            duration_words(self.waited_us),
            self.device
        );
        let neighbour = self
            .next_hop
            .map_or_else(|| "the next hop".to_string(), |hop| hop.to_string());
        match &self.mac {
            Some(mac) => format!("{waited}: {neighbour} is at {mac}"),
            None => format!("{waited} to resolve {neighbour}'s MAC address"),
        }
    }
}

/// Microseconds in the unit that reads best: "87 µs", "0.2 ms", "3.0 s".
fn duration_words(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.1} s", us as f64 / 1e6),
    }
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Story {
    pub journey: u64,
    pub direction: Direction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// A request a proxy (docker-proxy) made to carry on the request `second_leg_of`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_leg_of: Option<u64>,
    /// The sender sent request `retransmission_of` again: it got no answer in time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmission_of: Option<u64>,
    /// Another UDP datagram with the ports of request `same_flow_as`, which
    /// had no answer yet (a retry or the next of a stream: not told apart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_flow_as: Option<u64>,
    /// What the hops alone do not say (how a published port is served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// "ICMP echo request", "TCP SYN", ...
    pub what: String,
    pub tuple: Tuple,
    pub hops: Vec<Hop>,
    /// How the journey ended: a typed value and its sentence (`text`).
    pub outcome: Outcome,
    /// For a reply: what it means for the request (an answer, a reset, an
    /// ICMP error, who sent it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// The kernel dropped events while this journey was traced: hops may be missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub events_lost: bool,
    /// For a reply that refused its request, or a request never sent: what
    /// failed, why, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// The part a journey plays, as far as its story needs to know.
#[derive(Clone, Debug)]
pub struct Telling<'a> {
    pub direction: Direction,
    /// The request a reply answers.
    pub request: Option<&'a RequestSummary>,
    /// An ARP request's result: known once its reply came or it went unanswered.
    pub arp_result: Option<Ending>,
}

impl<'a> Telling<'a> {
    pub fn request() -> Self {
        Self {
            direction: Direction::Request,
            request: None,
            arp_result: None,
        }
    }

    /// How to tell `journey` in `role`, the requests told so far at hand.
    pub fn of(
        journey: &Journey,
        role: Role,
        requests: impl IntoIterator<Item = &'a RequestSummary>,
    ) -> Self {
        match role {
            Role::Reply { to } | Role::ArpReply { to } => Self {
                direction: Direction::Reply,
                request: requests.into_iter().find(|r| r.id == to),
                arp_result: None,
            },
            Role::ArpRequest { result } => Self {
                arp_result: Some(arp_ending(journey, result)),
                ..Self::request()
            },
            Role::Request
            | Role::Retransmission { .. }
            | Role::SameFlow { .. }
            | Role::SecondLeg { .. } => Self::request(),
        }
    }
}

/// An ARP request's result as the ending of its story.
fn arp_ending(journey: &Journey, result: ArpResult) -> Ending {
    match result {
        ArpResult::Answered { asked, reply, mac } => Ending::ArpAnswered { asked, reply, mac },
        ArpResult::Unanswered { asked } => Ending::ArpUnanswered {
            asked,
            target: journey.first_packet().dst,
        },
    }
}

/// An IP protocol in a word, for a packet not made yet.
fn protocol_words(number: u8) -> String {
    match number {
        1 => "ICMP".into(),
        58 => "ICMPv6".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        n => format!("IP protocol {n}"),
    }
}

pub fn describe(packet: &Packet) -> String {
    match packet.transport {
        Transport::Icmp {
            icmp_type,
            id,
            seq,
            v6,
            ..
        } => {
            let name = if v6 { "ICMPv6" } else { "ICMP" };
            match packet.transport.icmp() {
                Some((8, _)) => format!("{name} echo request (id {id}, seq {seq})"),
                Some((0, _)) => format!("{name} echo reply (id {id}, seq {seq})"),
                Some((error, code)) if matches!(error, 3 | 4 | 5 | 11 | 12) => {
                    format!("{name} {}", outcome::icmp_error_meaning(error, code, v6))
                }
                _ => match (v6, icmp_type) {
                    (true, 133) => "ICMPv6 router solicitation".into(),
                    (true, 134) => "ICMPv6 router advertisement".into(),
                    (true, 135) => "ICMPv6 neighbour solicitation".into(),
                    (true, 136) => "ICMPv6 neighbour advertisement".into(),
                    _ => format!("{name} type {icmp_type}"),
                },
            }
        }
        Transport::Tcp { flags, .. } => format!("TCP {}", tcp_flags(flags)),
        Transport::Udp { .. } => "UDP datagram".into(),
        Transport::Arp { operation: 1, .. } if packet.dst.is_ipv6() => format!(
            "neighbour solicitation: who has {}? tell {}",
            packet.dst, packet.src
        ),
        Transport::Arp { operation: 1, .. } => {
            format!("ARP request: who has {}? tell {}", packet.dst, packet.src)
        }
        Transport::Arp { sender_mac, .. } if packet.src.is_ipv6() => {
            format!("neighbour advertisement: {} is at {sender_mac}", packet.src)
        }
        Transport::Arp { sender_mac, .. } => {
            format!("ARP reply: {} is at {sender_mac}", packet.src)
        }
        Transport::Other { number } => format!("IP protocol {number}"),
    }
}

fn tcp_flags(flags: u8) -> String {
    const NAMES: [(u8, &str); 6] = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x20, "URG"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "segment".into()
    } else {
        names.join("+")
    }
}

/// A routing table as `ip route show table` names it.
fn table_name(table: u32) -> String {
    match table {
        253 => "default".into(),
        MAIN_TABLE => "main".into(),
        LOCAL_TABLE => "local".into(),
        other => other.to_string(),
    }
}

fn describe_route(route: &RouteChoice) -> String {
    let table = table_name(route.table);
    match (route.result, route.gateway, &route.out_device) {
        (RouteResult::NoMatch, _, _) => format!("no route in table {table}"),
        (RouteResult::Unreachable, _, _) => {
            format!("an unreachable route (table {table}): the kernel refuses it")
        }
        (RouteResult::Blackhole, _, _) => {
            format!("a blackhole route (table {table}): the kernel discards it")
        }
        (RouteResult::Prohibit, _, _) => {
            format!("a prohibit route (table {table}): the kernel refuses it")
        }
        (RouteResult::Failed(error), _, _) => {
            format!("no route (table {table}, error {error})")
        }
        (_, Some(gateway), Some(device)) => format!("via {gateway} dev {device} (table {table})"),
        // The kernel sends to its own address through lo, whatever device
        // holds the address.
        (RouteResult::Local, None, Some(device)) => {
            format!("an address of this namespace, on {device}: delivered through lo (table local)")
        }
        (_, None, Some(device)) => format!("directly connected on {device} (table {table})"),
        _ => format!("table {table}"),
    }
}

/// How Docker serves a published port, for the first request to it.
pub fn published_port_note(published: &Published, port: u16, proxy: Option<&Listener>) -> String {
    let dnat = format!(
        "published port {port} of {} goes to {}: Docker's DNAT rule takes traffic from other hosts and namespaces",
        published.container,
        std::net::SocketAddr::new(published.address, published.port)
    );
    match proxy {
        Some(proxy) => format!(
            "{dnat}; {} (pid {}) listens on {} for the rest: from this host itself and from containers, whose bridges the DNAT rule skips (userland proxy on)",
            proxy.process, proxy.pid, proxy.address
        ),
        None => format!(
            "{dnat}; no process listens on port {port} (userland proxy off: the DNAT rule serves everything)"
        ),
    }
}

/// How the proxy's own connection carries on a request.
pub fn second_leg_note(
    first_leg: u64,
    proxy: Option<&Listener>,
    sender_pid: Option<u32>,
) -> String {
    match proxy {
        Some(proxy) => {
            let target = proxy
                .proxy_target()
                .map(|t| format!(" (its -container-ip and -container-port: {t})"))
                .unwrap_or_default();
            let same = if sender_pid == Some(proxy.pid) {
                ", the process that sent this,"
            } else {
                ""
            };
            format!(
                "{} (pid {}){same} accepted #{first_leg}'s connection on {} and opened this one to the container{target}",
                proxy.process, proxy.pid, proxy.address
            )
        }
        None => format!("a proxy carries #{first_leg} on in this connection of its own"),
    }
}

/// Tells one journey's story: its steps decided from the evidence first,
/// then each worded.
pub fn explain(
    journey: &Journey,
    telling: &Telling<'_>,
    topology: &Topology,
    facts: &Facts,
) -> Story {
    let decided = steps::decide(journey, telling, topology, facts);
    let first = journey.first_packet();
    let arp = matches!(first.transport, Transport::Arp { .. });
    // An ARP request's story already says how it was answered.
    let answer = telling.request.filter(|_| !arp).map(|request| {
        let firewall = match &request.ending {
            Ending::Dropped {
                rule: Some(rule),
                netns,
                ..
            } if rule.action == RuleAction::Reject && Some(*netns) == decided.sender_netns => {
                if *netns == topology.host_netns {
                    outcome::Firewall::Host
                } else {
                    outcome::Firewall::Sender
                }
            }
            _ => outcome::Firewall::None,
        };
        outcome::answer(&first, request, firewall, decided.origin.clone())
    });
    Story {
        journey: journey.id,
        direction: telling.direction,
        reply_to: telling.request.map(|r| r.id),
        second_leg_of: None,
        retransmission_of: None,
        same_flow_as: None,
        note: None,
        what: if journey.never_sent() {
            format!(
                "{} (never sent)",
                protocol_words(first.transport.protocol_number())
            )
        } else {
            describe(&first)
        },
        tuple: Tuple::of(&first),
        hops: decided.steps.iter().map(steps::Step::hop).collect(),
        outcome: Outcome::new(decided.ending),
        answer,
        events_lost: facts.events_lost,
        verdict: None,
    }
}

/// What a reply's story (and a "no reply") needs to know of its request.
pub fn request_summary(
    journey: &Journey,
    story: &Story,
    topology: &Topology,
    facts: &Facts,
) -> RequestSummary {
    let last_route = story.hops.iter().rev().find_map(|hop| {
        let route = match &hop.details {
            Details::Route(route) => route,
            Details::Send {
                route: Some(route), ..
            } => route,
            _ => return None,
        };
        let device = route.out_device.clone().unwrap_or_default();
        Some(LastRoute {
            netns: hop.netns,
            mtu: topology
                .namespace(hop.netns)
                .and_then(|ns| ns.interfaces.iter().find(|i| i.name == device))
                .and_then(|i| i.mtu),
            device,
            result: route.result,
            table: route.table,
        })
    });
    let arrived_on = arrival(story);
    let arrived_settings = arrived_on.as_ref().and_then(|(netns, device)| {
        facts.ip_settings_of(*netns, device, journey.first_packet().dst.is_ipv6())
    });
    RequestSummary {
        id: journey.id,
        sent: journey.first_packet(),
        ending: story.outcome.ending.clone(),
        arp_attempts: journey
            .events
            .iter()
            .rev()
            .find(|e| e.kind.is_neighbour_solicit())
            .map_or(0, |last_wait| arp_attempts(&journey.events, last_wait)),
        // Every router takes one off the TTL: what it lost is how many it passed.
        routers: u32::from(
            journey
                .first_packet()
                .ttl
                .saturating_sub(journey.last_packet().ttl),
        ),
        last_ttl: journey.last_packet().ttl,
        last_route,
        looped_between: story
            .hops
            .iter()
            .find_map(|hop| match &hop.details {
                Details::Loop { namespaces, .. } => Some(namespaces.clone()),
                _ => None,
            })
            .unwrap_or_default(),
        source_netns: story.hops.first().map_or(topology.host_netns, |h| h.netns),
        arrived_on: arrived_on.clone(),
        arrived_forwarding: arrived_settings.and_then(|settings| settings.forwards()),
        all_forwarding: arrived_settings.and_then(|settings| settings.all_forwarding),
        arrived_from: arrived_on.as_ref().and_then(|(netns, device)| {
            let iface = topology
                .namespace(*netns)?
                .interfaces
                .iter()
                .find(|i| &i.name == device)?;
            let peer = iface.peer?;
            // The way back is of the packet's family, and routable.
            let ipv6 = journey.last_packet().dst.is_ipv6();
            topology
                .interface(peer.netns, peer.ifindex)?
                .addresses
                .iter()
                .map(|(address, _)| *address)
                .find(|address| address.is_ipv6() == ipv6 && !crate::addr::is_link_local(*address))
        }),
        last_next_hop: story.hops.iter().rev().find_map(|hop| {
            let route = match &hop.details {
                Details::Route(route) => route,
                Details::Send {
                    route: Some(route), ..
                } => route,
                _ => return None,
            };
            route
                .result
                .found()
                .then(|| route.gateway.unwrap_or(journey.last_packet().dst))
        }),
        listeners: facts.listeners.clone(),
        ended_in_tunnel: story.hops.last().and_then(|hop| hop.tunnel),
    }
}

/// Where a story ended and the device its IP stack took it from there:
/// its last hop into a namespace (a veth crossing, an arrival, a bridge
/// passing it up).
fn arrival(story: &Story) -> Option<(u32, String)> {
    story.hops.iter().rev().find_map(|hop| match &hop.details {
        Details::Veth { .. }
        | Details::Receive
        | Details::Bridge {
            decision: BridgeDecision::HandedUp { .. },
            ..
        } => Some((hop.netns, hop.device.clone()?)),
        _ => None,
    })
}

/// Who-has the kernel sent while a packet waited on `at`'s device for a
/// neighbour (a packet can wait more than once: in the container for its
/// gateway, on the host for the next hop): ARP takes a copy of the waiting
/// packet for each and frees it.
fn arp_attempts(events: &[Event], at: &Event) -> u32 {
    events
        .iter()
        .filter(|e| e.kind.is_neighbour_solicit() && e.netns == at.netns && e.ifindex == at.ifindex)
        .count() as u32
}
