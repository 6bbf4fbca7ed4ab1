//! Explanation: turns a journey (kernel evidence) and the topology (names)
//! into the hop-by-hop story. Pure: it never reads the kernel or Docker.

pub mod dns;
mod hints;
mod wanted;

pub use wanted::facts_wanted;
pub mod outcome;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::{
    decode::{
        CodeSite, Conntrack, CtDirection, CtState, DropReason, Event, EventKind, Hook, LOCAL_TABLE,
        MAIN_TABLE, Mac, NatSide, Packet, RouteFor, RouteResult, SiteRole, Transport,
    },
    enrich::{
        Interface, LinkKind, Listener, Published, Topology,
        facts::{Facts, RuleAction, RuleVerdict},
    },
    journey::{
        Journey,
        exchanges::{ArpResult, Role},
        is_a_copys_fate,
    },
};

pub use outcome::{
    Answer, Ending, LastRoute, NoReply, NotSent, Origin, Outcome, RequestSummary, RouteBack,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Request,
    Reply,
}

/// A packet's addresses and ports as one value, for NAT before/after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Tuple {
    pub protocol: &'static str,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// ICMP echo identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_id: Option<u16>,
}

impl Tuple {
    pub fn of(packet: &Packet) -> Self {
        let (protocol, sport, dport, icmp_id) = match packet.transport {
            Transport::Icmp { id, .. } => ("icmp", None, None, Some(id)),
            Transport::Tcp { sport, dport, .. } => ("tcp", Some(sport), Some(dport), None),
            Transport::Udp { sport, dport } => ("udp", Some(sport), Some(dport), None),
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
                Some(d) => write!(f, "to {}:{d}", self.dst),
                None => write!(f, "to {}", self.dst),
            };
        }
        match (self.sport, self.dport) {
            (Some(s), Some(d)) => write!(f, "{}:{s} → {}:{d}", self.src, self.dst),
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
    },
    Xmit,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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

impl BridgeDecision {
    /// The decision in words; `bridge` is the bridge's name.
    fn words(&self, bridge: &str) -> String {
        match self {
            Self::HandedUp {
                mac_dst: Some(mac),
                bridge_mac: true,
            } => format!(
                "passed up to the host's IP stack (destination MAC {mac} is {bridge}'s own)"
            ),
            Self::HandedUp {
                mac_dst: Some(mac), ..
            } => format!("passed up to the host's IP stack (destination MAC {mac})"),
            Self::HandedUp { mac_dst: None, .. } => {
                "passed up to the host's IP stack (addressed to the bridge)".into()
            }
            Self::Switched { port, mac_dst, fdb } => {
                let evidence = match (mac_dst, fdb) {
                    (Some(mac), FdbSaid::OnThatPort) => {
                        format!(" (its forwarding database has {mac} on that port)")
                    }
                    (Some(mac), FdbSaid::OnPort(now)) => {
                        format!(" (its forwarding database now has {mac} on port {now})")
                    }
                    (Some(mac), FdbSaid::AgedOut) => format!(
                        " ({mac} is no longer in its forwarding database: learned entries age out)"
                    ),
                    _ => String::new(),
                };
                format!("switched to port {port}{evidence}")
            }
            Self::Flooded { ports } => format!(
                "flooded to ports {} (destination MAC not in its forwarding database)",
                ports.join(", ")
            ),
            Self::Broadcast { ports, handed_up } => match (ports.as_slice(), handed_up) {
                ([], true) => {
                    "broadcast: not flooded (no other port) and handed up to the host".into()
                }
                ([], false) => "broadcast: no other port to flood it to".into(),
                (_, true) => format!(
                    "broadcast: flooded to ports {} and handed up to the host",
                    ports.join(", ")
                ),
                (_, false) => format!("broadcast: flooded to ports {}", ports.join(", ")),
            },
            Self::Unseen => "no further bridge action seen".into(),
        }
    }
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
    pub gateway: Option<Ipv4Addr>,
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
    /// The neighbour asked for: the route's gateway, or the destination itself.
    pub next_hop: Ipv4Addr,
    /// Its MAC address, as the frame that finally left carried it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    pub device: String,
}

impl ArpWait {
    /// "waited 0.2 ms for ARP on eth0: 172.17.0.1 is at 02:42:0a:b6:23:7f".
    fn sentence(&self) -> String {
        let waited = format!(
            "waited {} for ARP on {}",
            duration_words(self.waited_us),
            self.device
        );
        match &self.mac {
            Some(mac) => format!("{waited}: {} is at {mac}", self.next_hop),
            None => format!("{waited} to resolve {}'s MAC address", self.next_hop),
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

/// Where the packet waited for ARP, by namespace: from the first copy ARP
/// freed for a who-has to the packet's next transmit there.
fn arp_waits(events: &[Event]) -> Vec<(u32, ArpWait)> {
    let mut waits: Vec<(u32, ArpWait)> = Vec::new();
    for (i, queued) in events.iter().enumerate() {
        if !queued.kind.is_neighbour_solicit() || waits.iter().any(|(ns, _)| *ns == queued.netns) {
            continue;
        }
        let Some(sent) = events[i + 1..]
            .iter()
            .find(|e| e.netns == queued.netns && matches!(e.kind, EventKind::Transmit { .. }))
        else {
            continue;
        };
        let routed = events[..i].iter().rev().find_map(|e| match e.kind {
            EventKind::Route { gateway, .. } if e.netns == queued.netns => {
                Some(gateway.unwrap_or(e.packet.dst))
            }
            _ => None,
        });
        let EventKind::Transmit { mac_dst } = &sent.kind else {
            continue;
        };
        waits.push((
            queued.netns,
            ArpWait {
                waited_us: sent.time_ns.saturating_sub(queued.time_ns) / 1_000,
                next_hop: routed.unwrap_or(sent.packet.dst),
                mac: *mac_dst,
                device: sent.ifname.to_string(),
            },
        ));
    }
    waits
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
        6 => "TCP".into(),
        17 => "UDP".into(),
        n => format!("IP protocol {n}"),
    }
}

pub fn describe(packet: &Packet) -> String {
    match packet.transport {
        Transport::Icmp {
            icmp_type: 8,
            id,
            seq,
            ..
        } => format!("ICMP echo request (id {id}, seq {seq})"),
        Transport::Icmp {
            icmp_type: 0,
            id,
            seq,
            ..
        } => format!("ICMP echo reply (id {id}, seq {seq})"),
        Transport::Icmp {
            icmp_type, code, ..
        } if matches!(icmp_type, 3 | 4 | 5 | 11 | 12) => {
            format!("ICMP {}", outcome::icmp_error_meaning(icmp_type, code))
        }
        Transport::Icmp { icmp_type, .. } => format!("ICMP type {icmp_type}"),
        Transport::Tcp { flags, .. } => format!("TCP {}", tcp_flags(flags)),
        Transport::Udp { .. } => "UDP datagram".into(),
        Transport::Arp { operation: 1, .. } => {
            format!("ARP request: who has {}? tell {}", packet.dst, packet.src)
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

struct Explainer<'a> {
    topology: &'a Topology,
    /// The journey's events in order, for the bytes a hop without its own
    /// (a routing decision) shows.
    events: &'a [Event],
    /// The kernel copied packet bytes (`--pcap`): hops carry them.
    captured: bool,
    facts: &'a Facts,
    start_ns: u64,
    hops: Vec<Hop>,
    /// The packet sat in this namespace's neighbour queue while ARP resolved
    /// its next hop; said on the hop that follows.
    waited_for_arp_in: Option<u32>,
    /// Each namespace's wait for ARP, measured over the whole journey.
    arp_waits: Vec<(u32, ArpWait)>,
    /// The sender's own wait for ARP, said on the send hop (which can come
    /// before the wait: at OUTPUT).
    sender_waits_for_arp: bool,
    /// While a bridge switches a frame (namespace, until when), netfilter hooks
    /// are the bridge's doing, not the host routing it.
    bridging: Option<(u32, u64)>,
    /// Namespaces that discarded a flooded copy: nothing there is this packet's.
    discarded_in: Vec<u32>,
    /// The journey is an ARP message: its lookups are address checks, not routes.
    arp: bool,
    /// A namespace's failed lookup for an answer to the packet, told last.
    unanswerable: Option<(Event, String, RouteChoice)>,
}

impl Explainer<'_> {
    fn namespace(&self, netns: u32) -> String {
        self.topology.owner_label(netns)
    }

    fn interface(&self, netns: u32, ifindex: u32) -> Option<&Interface> {
        self.topology.interface(netns, ifindex)
    }

    fn bridge_of(&self, event: &Event) -> Option<&Interface> {
        let master = self.interface(event.netns, event.ifindex)?.master?;
        self.interface(event.netns, master)
    }

    fn is_bridge(&self, event: &Event) -> bool {
        self.link_kind(event) == Some(&LinkKind::Bridge)
    }

    /// The link kind of `event`'s device, when the topology knows it.
    fn link_kind(&self, event: &Event) -> Option<&LinkKind> {
        self.interface(event.netns, event.ifindex).map(|i| &i.kind)
    }

    fn push(&mut self, event: &Event, device: Option<String>, mut text: String, details: Details) {
        let mut arp_wait = None;
        if matches!(details, Details::Veth { .. } | Details::Xmit)
            && let Some(netns) = self.waited_for_arp_in.take()
        {
            arp_wait = self.arp_wait_in(netns);
            match &arp_wait {
                Some(wait) => text += &format!(" (after it {})", wait.sentence()),
                None => text += " (after waiting for ARP to resolve the next hop's MAC address)",
            }
        }
        self.push_hop(event, device, text, details, arp_wait);
    }

    fn push_hop(
        &mut self,
        event: &Event,
        device: Option<String>,
        text: String,
        details: Details,
        arp_wait: Option<ArpWait>,
    ) {
        self.hops.push(Hop {
            at_us: event.time_ns.saturating_sub(self.start_ns) / 1_000,
            netns: event.netns,
            namespace: self.namespace(event.netns),
            device,
            text,
            arp_wait,
            details,
            ttl: event.packet.ttl,
            capture: self.capture_at(event),
        });
    }

    /// The packet as captured at `event` (`--pcap`); a routing decision
    /// has no packet at hand, and shows it as last captured before.
    fn capture_at(&self, event: &Event) -> Option<HopCapture> {
        if !self.captured {
            return None;
        }
        let bytes = event.headers.clone().or_else(|| {
            self.events
                .iter()
                .rev()
                .filter(|e| e.time_ns <= event.time_ns)
                .find_map(|e| e.headers.clone())
        })?;
        Some(HopCapture {
            time_ns: event.time_ns,
            ifindex: event.ifindex,
            outgoing: matches!(event.kind, EventKind::Transmit { .. }),
            bytes: bytes.0,
        })
    }

    fn arp_wait_in(&self, netns: u32) -> Option<ArpWait> {
        self.arp_waits
            .iter()
            .find(|(ns, _)| *ns == netns)
            .map(|(_, wait)| wait.clone())
    }

    fn route_choice(&self, event: &Event) -> Option<RouteChoice> {
        let EventKind::Route {
            table,
            result,
            gateway,
            ..
        } = event.kind
        else {
            return None;
        };
        Some(RouteChoice {
            table,
            result,
            out_device: (!event.ifname.is_empty() && result.found())
                .then(|| event.ifname.to_string()),
            gateway,
        })
    }
}

/// Packets only the kernel sends: handshake answers, resets, ICMP replies and errors.
fn kernel_generated(packet: &Packet) -> bool {
    use crate::decode::{TCP_ACK, TCP_RST, TCP_SYN};
    match packet.transport {
        Transport::Tcp { flags, .. } => {
            flags & TCP_RST != 0 || flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
        }
        Transport::Icmp { icmp_type, .. } => icmp_type != 8,
        Transport::Arp { .. } => true,
        _ => false,
    }
}

/// Flooded to the ports of `copies`, or switched to its one port (with what
/// the forwarding database says, `fdb`).
fn switch_or_flood(
    events: &[Event],
    copies: &[usize],
    mac_dst: Option<Mac>,
    fdb: FdbSaid,
) -> BridgeDecision {
    match copies {
        [one] => BridgeDecision::Switched {
            port: events[*one].ifname.to_string(),
            mac_dst,
            fdb,
        },
        _ => BridgeDecision::Flooded {
            ports: copies
                .iter()
                .map(|&c| events[c].ifname.to_string())
                .collect(),
        },
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
        "published port {port} of {} goes to {}:{}: Docker's DNAT rule takes traffic from other hosts and namespaces",
        published.container, published.address, published.port
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

/// Tells one journey's story.
pub fn explain(
    journey: &Journey,
    telling: &Telling<'_>,
    topology: &Topology,
    facts: &Facts,
) -> Story {
    let events = &journey.located_events();
    let sender_netns = events
        .iter()
        .find(|e| !matches!(e.kind, EventKind::Route { .. }))
        .map(|e| e.netns);
    let start_ns = events.first().map(|e| e.time_ns).unwrap_or(0);
    let mut x = Explainer {
        topology,
        events,
        captured: events.iter().any(|e| e.headers.is_some()),
        facts,
        start_ns,
        hops: Vec::new(),
        waited_for_arp_in: None,
        arp_waits: arp_waits(events),
        sender_waits_for_arp: events
            .iter()
            .take_while(|e| {
                !(matches!(e.kind, EventKind::Transmit { .. }) && Some(e.netns) == sender_netns)
            })
            .any(|e| Some(e.netns) == sender_netns && e.kind.is_neighbour_solicit()),
        bridging: None,
        discarded_in: Vec::new(),
        arp: matches!(journey.first_packet().transport, Transport::Arp { .. }),
        unanswerable: None,
    };
    let delivered_to_socket = events.iter().any(|e| e.kind == EventKind::SocketRead);
    // Indices already told as part of an earlier hop.
    let mut told = vec![false; events.len()];
    let mut pending_route: Option<&Event> = None;
    let mut sent = false;
    let mut ending = None;
    // The skb the packet arrived as (taken in or read by a process).
    let mut arrived_skb: Option<u64> = None;
    // Each skb's last transmit not yet followed by its receive elsewhere: a
    // free after it is the device done sending, not a receive.
    let mut transmitted: Vec<(u64, usize)> = Vec::new();

    for (i, event) in events.iter().enumerate() {
        match &event.kind {
            EventKind::Transmit { .. } => {
                transmitted.retain(|(skb, _)| *skb != event.skb);
                transmitted.push((event.skb, i));
            }
            EventKind::Receive { .. } => transmitted.retain(|(skb, _)| *skb != event.skb),
            _ => {}
        }
        if told[i] {
            continue;
        }
        let device = (!event.ifname.is_empty()).then(|| event.ifname.to_string());
        let ns = x.namespace(event.netns);
        match &event.kind {
            // A copy of the payload for DNS decoding: no step of the journey.
            EventKind::TcpPayload => {}
            EventKind::Route { .. } => {
                // Lookups come in runs (local table, then main); the last one
                // decided. A lookup for an answer is another flow's.
                let next_is_route = events.get(i + 1).is_some_and(|e| {
                    e.netns == event.netns
                        && e.packet.dst == event.packet.dst
                        && matches!(
                            (&e.kind, &event.kind),
                            (
                                EventKind::Route { route_for: next, .. },
                                EventKind::Route { route_for: this, .. },
                            ) if next == this
                        )
                });
                // Lookups elsewhere (ARP processing ahead of the packet) are not its route.
                let here = x.hops.last().is_some_and(|h| h.netns == event.netns)
                    && !x.discarded_in.contains(&event.netns);
                if sender_netns.is_none() {
                    // No packet was made: the lookups are the whole story.
                    if !next_is_route {
                        x.refused_route_hop(event);
                    }
                } else if !sent {
                    // Only the sender's own lookup is the route it sent by.
                    if Some(event.netns) == sender_netns {
                        pending_route = Some(event);
                    }
                } else if !next_is_route && here {
                    x.route_hop(event);
                }
            }
            EventKind::Transmit { .. } if !sent => {
                sent = true;
                x.send_hop(event, pending_route, None);
                x.veth_or_xmit(events, i, &mut told, true);
            }
            EventKind::Transmit { .. } => x.veth_or_xmit(events, i, &mut told, false),
            EventKind::Receive { mac_dst, .. } => {
                sent = true;
                if let Some(bridge) = x.bridge_of(event).cloned() {
                    x.bridge_hop(events, i, &bridge, *mac_dst, &mut told);
                } else if !x.is_bridge(event) {
                    let text = format!("arrives in {ns} on {}", event.ifname);
                    x.push(event, device, text, Details::Receive);
                }
            }
            EventKind::Netfilter {
                hook,
                side,
                out_ifindex,
            } => {
                // A packet the host itself sends meets OUTPUT before any device.
                if !sent && *hook == Hook::Output {
                    // OUTPUT's NAT can send it elsewhere: where it leaves is
                    // the device it meets next.
                    let leaves_by = events[i + 1..]
                        .iter()
                        .filter(|e| e.netns == event.netns)
                        .find(|e| {
                            matches!(
                                e.kind,
                                EventKind::Transmit { .. }
                                    | EventKind::Netfilter {
                                        hook: Hook::Postrouting,
                                        ..
                                    }
                            )
                        })
                        .map(|e| e.ifname.as_str())
                        .filter(|device| !device.is_empty() && *device != event.ifname);
                    x.send_hop(event, pending_route, leaves_by);
                }
                sent = true;
                x.netfilter_hop(events, i, *hook, *side, *out_ifindex, &mut told);
            }
            EventKind::Drop { reason, .. } if is_a_copys_fate(reason, delivered_to_socket) => {
                if *reason == DropReason::OtherHost {
                    x.discarded_in.push(event.netns);
                    let text = format!(
                        "a flooded copy reached {ns}, whose kernel discarded it: not addressed to it ({reason})"
                    );
                    x.push(event, device, text, Details::Receive);
                }
            }
            // The packet itself already arrived: this is a copy's end (one a
            // socket's error queue held, say), not the packet's.
            EventKind::Drop { reason, location }
                if arrived_skb.is_some_and(|skb| skb != event.skb) =>
            {
                let hint = hints::for_drop(&hints::DropContext {
                    reason,
                    location,
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
                });
                let text = format!("a copy of it was dropped in {ns}: {reason} at {location}");
                x.push(
                    event,
                    device,
                    text,
                    Details::Drop {
                        reason: reason.clone(),
                        location: location.clone(),
                        hint,
                        hook: None,
                        rule: None,
                    },
                );
            }
            EventKind::Drop { reason, location } => {
                let netfilter = *reason == DropReason::NetfilterDrop;
                let hook = netfilter.then(|| x.last_netfilter_hook()).flatten();
                let rule = netfilter.then(|| x.facts.rule_verdict.clone()).flatten();
                let input = x.input_device(events, i);
                let route = x.last_route_in(event.netns);
                let out_mtu = route
                    .and_then(|r| r.out_device.as_deref())
                    .and_then(|device| x.mtu_of(event.netns, device));
                let hint = hints::for_drop(&hints::DropContext {
                    reason,
                    location,
                    hook,
                    rule: rule.as_ref(),
                    input: input.and_then(|dev| x.facts.ipv4_of(event.netns, dev)),
                    source: event.packet.src,
                    rule_tracing_unavailable: x.facts.rule_tracing_unavailable.as_deref(),
                    next_hop: x.next_hop(event),
                    arp_attempts: arp_attempts(events, event),
                    route,
                    destination: event.packet.dst,
                    ttl: event.packet.ttl,
                    length: event.packet.length,
                    out_mtu,
                });
                let mut text = format!("dropped in {ns} by the kernel: {reason} at {location}");
                if reason.is_neighbour_failure() {
                    let waited = events
                        .iter()
                        .find(|e| e.kind.is_neighbour_solicit())
                        .map(|queued| event.time_ns.saturating_sub(queued.time_ns));
                    if let Some(waited) = waited {
                        text += &format!(
                            ", after it waited {:.1} s on {} for its next hop's MAC address",
                            waited as f64 / 1e9,
                            event.ifname
                        );
                    }
                }
                ending = Some(Ending::Dropped {
                    namespace: ns,
                    netns: event.netns,
                    reason: reason.clone(),
                    location: location.clone(),
                    hook,
                    rule: rule.clone(),
                    // ip_error drops what the route it found said no to.
                    refused_by: route
                        .filter(|r| location.role == SiteRole::RouteError && !r.result.found())
                        .cloned(),
                });
                x.push(
                    event,
                    device,
                    text,
                    Details::Drop {
                        reason: reason.clone(),
                        location: location.clone(),
                        hint,
                        hook,
                        rule,
                    },
                );
            }
            EventKind::Consume { .. } if event.kind.is_neighbour_solicit() => {
                // The copy ARP used for its request; the packet itself waits in
                // the queue. The sender's wait is told on its send hop.
                if !(x.sender_waits_for_arp && Some(event.netns) == sender_netns) {
                    x.waited_for_arp_in = Some(event.netns);
                }
            }
            EventKind::Consume { location } => {
                let after_transmit = transmitted
                    .iter()
                    .find(|(skb, _)| *skb == event.skb)
                    .map(|(_, at)| &events[*at]);
                if let Some(sent_out) = after_transmit {
                    // Sent and freed by the device: nothing received it.
                    if ending.is_none() {
                        ending = Some(x.left(sent_out, Some(location.function())));
                    }
                } else if ending.is_none() && !delivered_to_socket {
                    arrived_skb = Some(event.skb);
                    let text = format!("taken in by the kernel of {ns} ({location})");
                    ending = Some(Ending::TakenIn {
                        namespace: ns,
                        netns: event.netns,
                        handler: Some(location.function().to_string()),
                        no_route_back: None,
                    });
                    x.push(event, device, text, Details::Receive);
                }
            }
            EventKind::SocketRead => {
                let (comm, pid) = event.process().unwrap_or((event.comm.as_str(), event.pid));
                // A tun/tap device hands what it sends to the program reading
                // it: that program is the wire (a VM, a VPN), not the receiver.
                let through_tap = transmitted
                    .iter()
                    .find(|(skb, _)| *skb == event.skb)
                    .map(|(_, at)| &events[*at])
                    .filter(|sent| x.link_kind(sent).is_some_and(LinkKind::read_by_a_program));
                let text = match through_tap {
                    Some(sent) => {
                        let reader = format!("{comm} (pid {pid})");
                        let text = format!(
                            "{reader} read it from {}, the device's other end",
                            sent.ifname
                        );
                        if ending.is_none() {
                            let mut left = x.left(sent, None);
                            if let Ending::Left { read_by, .. } = &mut left {
                                *read_by = Some(reader);
                            }
                            ending = Some(left);
                        }
                        text
                    }
                    None => {
                        arrived_skb = Some(event.skb);
                        ending = Some(Ending::Delivered {
                            namespace: ns.clone(),
                            netns: event.netns,
                            process: comm.to_string(),
                            pid,
                        });
                        format!("delivered: {comm} (pid {pid}) in {ns} read it from its socket")
                    }
                };
                x.push(
                    event,
                    None,
                    text,
                    Details::Deliver {
                        process: comm.to_string(),
                        pid,
                    },
                );
            }
        }
    }

    // Hops are told as their evidence is found; the story reads in kernel time.
    x.hops.sort_by_key(|h| h.at_us);
    fold_loops(&mut x.hops);
    if let Some((event, text, route)) = x.unanswerable.take() {
        let last_us = x.hops.last().map_or(0, |h| h.at_us);
        x.push(&event, None, text, Details::Route(route));
        if let Some(hop) = x.hops.last_mut() {
            hop.at_us = hop.at_us.max(last_us);
        }
    }
    let first = journey.first_packet();
    let mut ending = telling
        .arp_result
        .clone()
        .or(ending)
        .unwrap_or_else(|| x.unfinished(events));
    if let Ending::TakenIn {
        netns,
        no_route_back,
        ..
    } = &mut ending
    {
        *no_route_back = failed_route_back(events, *netns, topology);
    }
    // An ARP request's story already says how it was answered.
    let answer = telling.request.filter(|_| !x.arp).map(|request| {
        let firewall = match &request.ending {
            Ending::Dropped {
                rule: Some(rule),
                netns,
                ..
            } if rule.action == RuleAction::Reject && Some(*netns) == sender_netns => {
                if *netns == topology.host_netns {
                    outcome::Firewall::Host
                } else {
                    outcome::Firewall::Sender
                }
            }
            _ => outcome::Firewall::None,
        };
        outcome::answer(&first, request, firewall, x.origin(events))
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
        hops: x.hops,
        outcome: Outcome::new(ending),
        answer,
        events_lost: facts.events_lost,
    }
}

/// Whether two hops are the same step: the same kind of hop, in the same
/// namespace, on the same device.
fn same_step(a: &Hop, b: &Hop) -> bool {
    let same_hook = match (&a.details, &b.details) {
        (Details::Netfilter { hook: x, .. }, Details::Netfilter { hook: y, .. })
        | (Details::Nat { hook: x, .. }, Details::Nat { hook: y, .. }) => x == y,
        _ => true,
    };
    a.netns == b.netns && a.device == b.device && a.details.kind() == b.details.kind() && same_hook
}

/// Most hops one round of a routing loop takes.
const LONGEST_LOOP: usize = 12;
/// Rounds of the same hops that make a loop worth folding.
const FOLDED_ROUNDS: usize = 3;

/// A packet caught in a routing loop makes the same few hops until its TTL
/// runs out: the first round is told, the rounds after it become one hop
/// saying how many and how the TTL fell.
fn fold_loops(hops: &mut Vec<Hop>) {
    for start in 0..hops.len() {
        for length in 1..=LONGEST_LOOP {
            // A round again is the same steps with a lower TTL: every router
            // on the way took one off (a bridge's hooks repeat without).
            let repeats = |round: usize| {
                let at = start + round * length;
                let (previous, this) = (&hops[at - length], hops.get(at));
                at + length <= hops.len()
                    && this.is_some_and(|hop| hop.ttl > 0 && hop.ttl < previous.ttl)
                    && (0..length).all(|k| same_step(&hops[start + k], &hops[at + k]))
            };
            let rounds = (1..).take_while(|&round| repeats(round)).count();
            if rounds + 1 < FOLDED_ROUNDS {
                continue;
            }
            let folded_from = start + length;
            let folded_to = start + (rounds + 1) * length;
            let folded = &hops[folded_from..folded_to];
            let mut namespaces: Vec<String> = Vec::new();
            for hop in &hops[start..folded_from] {
                if !namespaces.contains(&hop.namespace) {
                    namespaces.push(hop.namespace.clone());
                }
            }
            let ttl_from = folded.iter().map(|h| h.ttl).find(|t| *t > 0).unwrap_or(0);
            let ttl_to = folded
                .iter()
                .rev()
                .map(|h| h.ttl)
                .find(|t| *t > 0)
                .unwrap_or(0);
            let last = &folded[folded.len() - 1];
            let text = format!(
                "routing loop: {} sent it round {rounds} more times, each routing it to the next, its TTL falling from {ttl_from} to {ttl_to}",
                namespaces.join(" and ")
            );
            let hop = Hop {
                at_us: last.at_us,
                netns: last.netns,
                namespace: last.namespace.clone(),
                device: last.device.clone(),
                text,
                arp_wait: None,
                details: Details::Loop {
                    namespaces,
                    rounds: rounds as u32,
                    ttl_from,
                    ttl_to,
                },
                ttl: ttl_to,
                capture: last.capture.clone(),
            };
            hops.splice(folded_from..folded_to, [hop]);
            return;
        }
    }
}

/// The lookup a namespace made for an answer to the packet (an echo
/// reply, a reset, an ICMP error) that found no route back to its source.
fn failed_route_back(events: &[Event], netns: u32, topology: &Topology) -> Option<RouteBack> {
    events.iter().rev().find_map(|e| match e.kind {
        EventKind::Route {
            table,
            result,
            route_for: RouteFor::AnswerTo,
            ..
        } if e.netns == netns && !result.found() => {
            let (routes, default_route) = table_routes(topology, netns, table);
            Some(RouteBack {
                to: e.packet.dst,
                table,
                result,
                routes,
                default_route,
            })
        }
        _ => None,
    })
}

/// The unicast routes of `table` in `netns`, as `ip route show` words them
/// ("10.44.5.0/24 dev lec1", "198.51.100.0/24 via 10.0.0.1 dev eth0"), and
/// whether the table has a default route.
fn table_routes(topology: &Topology, netns: u32, table: u32) -> (Vec<String>, bool) {
    let Some(namespace) = topology.namespace(netns) else {
        return (Vec::new(), false);
    };
    let routes: Vec<&crate::enrich::Route> = namespace
        .routes
        .iter()
        .filter(|r| r.table == table && r.kind == crate::enrich::RouteKind::Unicast)
        .collect();
    let words = routes
        .iter()
        .filter_map(|r| {
            let (network, prefix) = r.destination?;
            let mut words = format!("{network}/{prefix}");
            if let Some(gateway) = r.gateway {
                words += &format!(" via {gateway}");
            }
            if let Some(device) = r.device.and_then(|i| namespace.interface(i)) {
                words += &format!(" dev {}", device.name);
            }
            Some(words)
        })
        .collect();
    (words, routes.iter().any(|r| r.destination.is_none()))
}

/// What a reply's story (and a "no reply") needs to know of its request.
pub fn request_summary(journey: &Journey, story: &Story, topology: &Topology) -> RequestSummary {
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
    }
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

impl Explainer<'_> {
    /// Where the journey starts: who sent it, by which route.
    /// `rerouted_to`: the device it left by when OUTPUT's NAT changed its
    /// destination after the first route sent it to `event`'s device.
    fn send_hop(
        &mut self,
        event: &Event,
        pending_route: Option<&Event>,
        rerouted_to: Option<&str>,
    ) {
        let ns = self.namespace(event.netns);
        // ARP is below routing: a lookup before it is the kernel checking addresses.
        let is_arp = matches!(event.packet.transport, Transport::Arp { .. });
        let route = pending_route
            .filter(|_| !is_arp)
            .and_then(|r| self.route_choice(r));
        // The sender is the task whose own system call made the packet: its
        // route lookup, or the transmit when nothing waited in between (a
        // packet queued for ARP goes out later, from a softirq). The kernel
        // answers some packets itself, often while some process is current.
        let in_its_context = [pending_route, Some(event)]
            .into_iter()
            .flatten()
            .find(|e| e.in_task == Some(true));
        let process = match in_its_context {
            Some(e) => e.process(),
            None if event.in_task.is_none() => event.process(),
            None => None,
        }
        .filter(|_| !kernel_generated(&event.packet));
        let who = match process {
            Some((comm, pid)) => format!("{comm} (pid {pid})"),
            None => format!("the kernel of {ns}"),
        };
        let out = rerouted_to.unwrap_or(&event.ifname);
        let mut text = format!("{who} sends it from {ns} out of {out}");
        if let Some(first) = rerouted_to.map(|_| &event.ifname) {
            text += &format!(" (first routed to {first}; NAT in OUTPUT changed its destination)");
        }
        if let Some(route) = &route {
            text += &format!("; route: {}", describe_route(route));
        }
        let waited_in = self
            .waited_for_arp_in
            .take()
            .or(self.sender_waits_for_arp.then_some(event.netns));
        let arp_wait = waited_in.and_then(|netns| self.arp_wait_in(netns));
        match (&arp_wait, waited_in) {
            (Some(wait), _) => text += &format!("; it first {}", wait.sentence()),
            (None, Some(_)) => {
                let next_hop = route
                    .as_ref()
                    .and_then(|r| r.gateway)
                    .unwrap_or(event.packet.dst);
                text += &format!("; it first waited for ARP to resolve {next_hop}'s MAC address");
            }
            (None, None) => {}
        }
        let details = Details::Send {
            process: process.map(|(comm, _)| comm.to_string()),
            pid: process.map(|(_, pid)| pid),
            route,
            waited_for_arp: waited_in.is_some(),
        };
        let device = (!out.is_empty()).then(|| out.to_string());
        self.push_hop(event, device, text, details, arp_wait);
    }

    /// A sender's route lookup that found no way: no packet was made.
    fn refused_route_hop(&mut self, event: &Event) {
        let route = self.route_choice(event).expect("a route event");
        let ns = self.namespace(event.netns);
        let who = match event.process() {
            Some((comm, pid)) => format!("{comm} (pid {pid})"),
            None => "a sender".into(),
        };
        let text = format!(
            "{who} in {ns} asks the kernel for a route to {}: {}",
            event.packet.dst,
            describe_route(&route)
        );
        self.push(event, None, text, Details::Route(route));
    }

    /// The routing decision; a namespace looks up more than once per packet
    /// (address checks, then the route), and the last lookup is the decision.
    fn route_hop(&mut self, event: &Event) {
        let route = self.route_choice(event).expect("a route event");
        let ns = self.namespace(event.netns);
        let dst = event.packet.dst;
        let own = self.topology.namespace(event.netns).and_then(|n| {
            n.interfaces
                .iter()
                .find(|i| i.addresses.iter().any(|(a, _)| *a == dst))
        });
        let local = route.result == RouteResult::Local;
        let is_arp = self.arp;
        let answering = matches!(
            event.kind,
            EventKind::Route {
                route_for: RouteFor::AnswerTo,
                ..
            }
        );
        let text = match own {
            // The kernel went to answer the packet (an echo reply, an ICMP
            // error) and found no way back to its source.
            _ if answering && !route.result.found() => {
                // Told after the packet is taken in, which the kernel
                // finishes only once it gave up answering.
                let text = format!(
                    "{ns} went to answer it and found no route back to {dst}: {}",
                    describe_route(&route)
                );
                self.unanswerable = Some((event.clone(), text, route));
                return;
            }
            // Found, the answer's route is the answer's own story.
            _ if answering => return,
            // ARP looks up the address it is asked about: an answer follows if it is ours.
            Some(iface) if is_arp && local => format!(
                "{ns} checks the address asked for: {dst} is its own (on {}), so its kernel answers",
                iface.name
            ),
            Some(iface) if local => format!(
                "routing decision in {ns}: local delivery, {dst} is this namespace's own address (on {})",
                iface.name
            ),
            // A local-table hit for a foreign address is an address-type check,
            // and ARP only ever asks about neighbours: neither is a route.
            _ if local || route.table == LOCAL_TABLE || is_arp => return,
            _ => format!(
                "routing decision in {ns}: {dst} → {}",
                describe_route(&route)
            ),
        };
        // The same decision again (a REJECT looking up where to answer) adds nothing.
        let told = self
            .hops
            .iter()
            .any(|h| h.netns == event.netns && h.details == Details::Route(route.clone()));
        if told {
            return;
        }
        if self
            .hops
            .last()
            .is_some_and(|h| matches!(h.details, Details::Route(_)) && h.netns == event.netns)
        {
            self.hops.pop();
        }
        self.push(event, route.out_device.clone(), text, Details::Route(route));
    }

    fn last_netfilter_hook(&self) -> Option<Hook> {
        self.hops.iter().rev().find_map(|h| match h.details {
            Details::Netfilter { hook, .. } => Some(hook),
            _ => None,
        })
    }

    /// The last routing decision told for the packet in `netns`.
    fn last_route_in(&self, netns: u32) -> Option<&RouteChoice> {
        self.hops.iter().rev().find_map(|h| match &h.details {
            Details::Route(route) if h.netns == netns => Some(route),
            Details::Send {
                route: Some(route), ..
            } if h.netns == netns => Some(route),
            _ => None,
        })
    }

    /// The MTU of the device `name` in `netns`, when the topology knows it.
    fn mtu_of(&self, netns: u32, name: &str) -> Option<u32> {
        self.topology
            .namespace(netns)?
            .interfaces
            .iter()
            .find(|i| i.name == name)?
            .mtu
    }

    /// Where the packet came from: sent in a namespace pkttrace sees (by a
    /// process or its kernel), or received first on a device whose other
    /// side nothing traces (a NIC, a tap or tun): then from beyond it.
    fn origin(&self, events: &[Event]) -> Origin {
        let first = events
            .iter()
            .find(|e| !matches!(e.kind, EventKind::Route { .. }));
        let Some(first) = first else {
            return Origin::Kernel {
                namespace: "nowhere".into(),
                netns: 0,
            };
        };
        if matches!(first.kind, EventKind::Receive { .. })
            && let Some(kind) = self.link_kind(first)
            && !kind.passes_on()
        {
            return Origin::Beyond {
                namespace: self.namespace(first.netns),
                netns: first.netns,
                device: first.ifname.to_string(),
                device_kind: kind.clone(),
            };
        }
        match self.hops.iter().find_map(|h| match &h.details {
            Details::Send {
                process: Some(process),
                pid: Some(pid),
                ..
            } => Some((process.clone(), *pid)),
            _ => None,
        }) {
            Some((process, pid)) => Origin::Process {
                namespace: self.namespace(first.netns),
                netns: first.netns,
                process,
                pid,
            },
            None => Origin::Kernel {
                namespace: self.namespace(first.netns),
                netns: first.netns,
            },
        }
    }

    /// The device the packet came in on, in the namespace of `events[i]`:
    /// the last receive there before it (None for a packet sent there).
    fn input_device<'e>(&self, events: &'e [Event], i: usize) -> Option<&'e str> {
        let netns = events[i].netns;
        events[..i]
            .iter()
            .rev()
            .take_while(|e| e.netns == netns)
            .find(|e| matches!(e.kind, EventKind::Receive { .. }))
            .map(|e| e.ifname.as_str())
    }

    /// Where the namespace of `event` sends the packet next: the gateway its
    /// routing decision chose, or the destination itself when on-link.
    fn next_hop(&self, event: &Event) -> Option<Ipv4Addr> {
        let route = self.hops.iter().rev().find_map(|h| match &h.details {
            Details::Route(route) if h.netns == event.netns => Some(route),
            Details::Send { route, .. } if h.netns == event.netns => route.as_ref(),
            _ => None,
        })?;
        Some(route.gateway.unwrap_or(event.packet.dst)).filter(|_| route.result.found())
    }

    /// The packet left through `sent_out`'s device; `freed_by` is where the
    /// device freed it after sending, when that was seen.
    fn left(&self, sent_out: &Event, freed_by: Option<&str>) -> Ending {
        let iface = self.interface(sent_out.netns, sent_out.ifindex);
        // Devices without ARP (ifb, dummy) address frames to themselves or to
        // everyone: that is no neighbour's address.
        let own_mac = iface.and_then(Interface::mac);
        let next_hop_mac = match sent_out.kind {
            EventKind::Transmit { mac_dst: Some(mac) }
                if Some(mac) != own_mac && mac != Mac::BROADCAST =>
            {
                Some(mac)
            }
            _ => None,
        };
        Ending::Left {
            namespace: self.namespace(sent_out.netns),
            netns: sent_out.netns,
            device: sent_out.ifname.to_string(),
            device_kind: iface.map_or(LinkKind::Hardware, |i| i.kind.clone()),
            driver: iface.and_then(|i| i.driver.clone()),
            next_hop: self.next_hop(sent_out),
            next_hop_mac,
            freed_by: freed_by.map(str::to_string),
            read_by: None,
        }
    }

    /// How a journey with no end of its own (no drop, receive or delivery)
    /// stands: it left through a device nothing is traced beyond, it was
    /// never sent, or it was still in the kernel, e.g. waiting for a neighbour.
    fn unfinished(&self, events: &[Event]) -> Ending {
        let last = events
            .iter()
            .rev()
            .find(|e| !matches!(e.kind, EventKind::Route { .. }));
        let Some(last) = last else {
            return self.not_sent(events);
        };
        // Routed to an address of its own, a namespace's kernel takes it in.
        let arrived = self.hops.last().is_some_and(|h| {
            h.netns == last.netns
                && matches!(&h.details, Details::Route(r) if r.result == RouteResult::Local)
        });
        let taken_in = || Ending::TakenIn {
            namespace: self.namespace(last.netns),
            netns: last.netns,
            handler: None,
            no_route_back: None,
        };
        if arrived {
            return taken_in();
        }
        let continues = self.link_kind(last).is_some_and(LinkKind::passes_on);
        match &last.kind {
            EventKind::Transmit { .. } if !continues => self.left(last, None),
            kind if kind.enters_local_stack() => taken_in(),
            kind if kind.is_neighbour_solicit() => Ending::InFlight {
                namespace: self.namespace(last.netns),
                netns: last.netns,
                device: Some(last.ifname.to_string()),
                waiting_for: self.next_hop(last),
            },
            _ => Ending::InFlight {
                namespace: self.namespace(last.netns),
                netns: last.netns,
                device: (!last.ifname.is_empty()).then(|| last.ifname.to_string()),
                waiting_for: None,
            },
        }
    }

    /// A journey of route lookups alone: a sender asked for a route and the
    /// kernel found none, so no packet was made. Told with the namespace's
    /// routes of the table that answered.
    fn not_sent(&self, events: &[Event]) -> Ending {
        let failed = events.iter().rev().find_map(|e| match e.kind {
            EventKind::Route { table, result, .. } if !result.found() => Some((e, table, result)),
            _ => None,
        });
        let sender = |lookup: &Event| {
            lookup
                .process()
                .map(|(comm, pid)| format!("{comm} (pid {pid})"))
        };
        let Some((lookup, table, result)) = failed else {
            // The route was found, and the send refused all the same: too
            // big for the path MTU the namespace learned.
            return match (events.first(), &self.facts.refused_send) {
                (Some(lookup), Some(refused)) => Ending::NotSent {
                    namespace: self.namespace(lookup.netns),
                    netns: lookup.netns,
                    sender: sender(lookup),
                    why: NotSent::TooBig {
                        destination: lookup.packet.dst,
                        length: refused.length,
                        path_mtu: refused.path_mtu,
                    },
                },
                _ => Ending::InFlight {
                    namespace: "nowhere".into(),
                    netns: 0,
                    device: None,
                    waiting_for: None,
                },
            };
        };
        let (routes, default_route) = table_routes(self.topology, lookup.netns, table);
        Ending::NotSent {
            namespace: self.namespace(lookup.netns),
            netns: lookup.netns,
            sender: sender(lookup),
            why: NotSent::NoRoute {
                destination: lookup.packet.dst,
                table,
                result,
                routes,
                default_route,
            },
        }
    }

    /// A transmit on a veth whose other end receives next is a veth crossing;
    /// a transmit into a bridge is the bridge at work; otherwise the packet
    /// leaves through that device.
    fn veth_or_xmit(&mut self, events: &[Event], i: usize, told: &mut [bool], after_send: bool) {
        let event = &events[i];
        let ns = self.namespace(event.netns);
        let device = Some(event.ifname.to_string());
        // The other end of a veth receives what this end sends (other copies'
        // events may come in between).
        let peer = self
            .interface(event.netns, event.ifindex)
            .and_then(|iface| iface.peer);
        let received = peer.and_then(|peer| {
            (i + 1..events.len()).find(|&j| {
                let e = &events[j];
                !told[j]
                    && matches!(e.kind, EventKind::Receive { .. })
                    && e.netns == peer.netns
                    && e.ifindex == peer.ifindex
            })
        });
        if let Some(j) = received {
            told[j] = true;
            let received = &events[j];
            let peer_ns = self.namespace(received.netns);
            let text = format!(
                "crosses the veth pair: {} in {ns} → its peer {} in {peer_ns}",
                event.ifname, received.ifname
            );
            let details = Details::Veth {
                peer_device: event.ifname.to_string(),
                peer_namespace: ns,
                peer_netns: event.netns,
            };
            self.push(received, Some(received.ifname.to_string()), text, details);
            if let Some(bridge) = self.bridge_of(received).cloned() {
                let mac_dst = match received.kind {
                    EventKind::Receive { mac_dst, .. } => mac_dst,
                    _ => None,
                };
                self.bridge_hop(events, j, &bridge, mac_dst, told);
            }
            return;
        }
        if self.is_bridge(event) {
            // The host's IP stack hands the packet to the bridge; the bridge
            // picks the port from its forwarding database, or floods.
            let copies = self.port_copies(events, i + 1, event.ifindex, told);
            if let Some(&first) = copies.first() {
                let network = self
                    .topology
                    .bridge_network(&event.ifname)
                    .map(|n| n.name.clone());
                let decision = switch_or_flood(events, &copies, None, FdbSaid::Unknown);
                let text = format!(
                    "bridge {}{}: the host hands the frame to the bridge, which {}",
                    event.ifname,
                    network
                        .as_ref()
                        .map(|n| format!(" (Docker network \"{n}\")"))
                        .unwrap_or_default(),
                    decision
                        .words(&event.ifname)
                        .replacen("switched", "switches it", 1)
                        .replacen("flooded", "floods it", 1)
                );
                let details = Details::Bridge {
                    bridge: event.ifname.to_string(),
                    docker_network: network,
                    port: events[first].ifname.to_string(),
                    decision,
                };
                self.push(event, device, text, details);
                for copy in copies {
                    self.veth_or_xmit(events, copy, told, false);
                }
                return;
            }
        }
        if !after_send {
            let text = format!("leaves {ns} through {}", event.ifname);
            self.push(event, device, text, Details::Xmit);
        }
    }

    /// The copies a bridge sent out of its ports from `start` on (one when it
    /// switched, several when it flooded); marked as told.
    fn port_copies(
        &self,
        events: &[Event],
        start: usize,
        bridge: u32,
        told: &mut [bool],
    ) -> Vec<usize> {
        let Some(first) = events.get(start..).and_then(|rest| {
            rest.iter().position(|e| {
                matches!(e.kind, EventKind::Transmit { .. }) && self.is_port_of(e, bridge)
            })
        }) else {
            return Vec::new();
        };
        let first = start + first;
        let copies: Vec<usize> = (first..events.len())
            .filter(|&j| {
                let e = &events[j];
                !told[j]
                    && e.netns == events[first].netns
                    && matches!(e.kind, EventKind::Transmit { .. })
                    && self.is_port_of(e, bridge)
            })
            .collect();
        for &j in &copies {
            told[j] = true;
        }
        copies
    }

    fn is_port_of(&self, event: &Event, bridge: u32) -> bool {
        self.interface(event.netns, event.ifindex)
            .and_then(|p| p.master)
            == Some(bridge)
    }

    /// An ARP request is a broadcast: the bridge sends it out of every other
    /// port and hands a copy up to the host too.
    fn broadcast_hop(
        &mut self,
        events: &[Event],
        i: usize,
        bridge: &Interface,
        network: Option<String>,
        told: &mut [bool],
    ) {
        let port_event = &events[i];
        let copies = self.port_copies(events, i + 1, bridge.ifindex, told);
        let handed_up = (i + 1..events.len()).find(|&j| {
            let e = &events[j];
            !told[j]
                && e.netns == port_event.netns
                && e.ifindex == bridge.ifindex
                && matches!(e.kind, EventKind::Receive { .. })
        });
        if let Some(j) = handed_up {
            told[j] = true;
        }
        let decision = BridgeDecision::Broadcast {
            ports: copies
                .iter()
                .map(|&c| events[c].ifname.to_string())
                .collect(),
            handed_up: handed_up.is_some(),
        };
        let text = format!(
            "bridge {}{}: the frame entered port {}; {}",
            bridge.name,
            network
                .as_ref()
                .map(|n| format!(" (Docker network \"{n}\")"))
                .unwrap_or_default(),
            port_event.ifname,
            decision.words(&bridge.name)
        );
        let details = Details::Bridge {
            bridge: bridge.name.clone(),
            docker_network: network,
            port: port_event.ifname.to_string(),
            decision,
        };
        self.push(port_event, Some(bridge.name.clone()), text, details);
        for copy in copies {
            self.veth_or_xmit(events, copy, told, false);
        }
    }

    /// Why the bridge chose `out`: the forwarding database entry for the destination MAC.
    fn fdb_evidence(&self, bridge: &Interface, mac_dst: Option<Mac>, out: &Event) -> FdbSaid {
        let Some(mac_dst) = mac_dst else {
            return FdbSaid::Unknown;
        };
        let entry = self
            .facts
            .fdb
            .iter()
            .find(|f| f.bridge == bridge.ifindex && Mac(f.mac) == mac_dst);
        match entry {
            Some(entry) if entry.port == out.ifindex => FdbSaid::OnThatPort,
            Some(entry) => FdbSaid::OnPort(
                self.interface(out.netns, entry.port)
                    .map_or(entry.port.to_string(), |p| p.name.clone()),
            ),
            None => FdbSaid::AgedOut,
        }
    }

    /// A frame entered a bridge port: was it for the bridge itself (handed up
    /// to the host's IP stack) or switched to another port?
    fn bridge_hop(
        &mut self,
        events: &[Event],
        i: usize,
        bridge: &Interface,
        mac_dst: Option<Mac>,
        told: &mut [bool],
    ) {
        let port_event = &events[i];
        let network = self
            .topology
            .bridge_network(&bridge.name)
            .map(|n| n.name.clone());
        if matches!(
            port_event.packet.transport,
            Transport::Arp { operation: 1, .. }
        ) {
            self.broadcast_hop(events, i, bridge, network, told);
            return;
        }
        let mut decision = None;
        for (j, e) in events.iter().enumerate().skip(i + 1) {
            let same_ns = e.netns == port_event.netns;
            if same_ns && matches!(e.kind, EventKind::Receive { .. }) && e.ifindex == bridge.ifindex
            {
                told[j] = true;
                let handed_up = BridgeDecision::HandedUp {
                    mac_dst,
                    bridge_mac: mac_dst.is_some() && mac_dst == bridge.mac(),
                };
                decision = Some((handed_up, Vec::new()));
                break;
            }
            if same_ns
                && matches!(e.kind, EventKind::Transmit { .. })
                && self.is_port_of(e, bridge.ifindex)
            {
                let copies = self.port_copies(events, j, bridge.ifindex, told);
                let last = copies.last().map_or(e.time_ns, |&c| events[c].time_ns);
                self.bridging = Some((e.netns, last));
                let fdb = self.fdb_evidence(bridge, mac_dst, e);
                decision = Some((switch_or_flood(events, &copies, mac_dst, fdb), copies));
                break;
            }
        }
        let (decision, copies) = decision.unwrap_or((BridgeDecision::Unseen, Vec::new()));
        let mut text = format!(
            "bridge {}{}: the frame entered port {}; {}",
            bridge.name,
            network
                .as_ref()
                .map(|n| format!(" (Docker network \"{n}\")"))
                .unwrap_or_default(),
            port_event.ifname,
            decision.words(&bridge.name)
        );
        if !copies.is_empty() {
            text += ". Like a hardware switch: the host does no routing and no NAT for this packet";
        }
        let details = Details::Bridge {
            bridge: bridge.name.clone(),
            docker_network: network,
            port: port_event.ifname.to_string(),
            decision,
        };
        self.push(port_event, Some(bridge.name.clone()), text, details);
        for copy in copies {
            self.veth_or_xmit(events, copy, told, false);
        }
    }

    /// The Docker network a packet leaving the host comes from, when that
    /// network does not masquerade and the packet leaves by another device
    /// than its bridge.
    fn unmasqueraded_network(&self, event: &Event) -> Option<String> {
        if event.netns != self.topology.host_netns {
            return None;
        }
        let source = u32::from(event.packet.src);
        self.topology
            .docker_networks
            .iter()
            .find(|network| {
                !network.masquerade
                    && network.bridge.as_deref() != Some(event.ifname.as_str())
                    && network.subnets.iter().any(|(address, prefix)| {
                        let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                        source & mask == u32::from(*address) & mask
                    })
            })
            .map(|network| network.name.clone())
    }

    fn netfilter_hop(
        &mut self,
        events: &[Event],
        i: usize,
        hook: Hook,
        side: NatSide,
        out_ifindex: u32,
        told: &mut [bool],
    ) {
        let event = &events[i];
        let ns = self.namespace(event.netns);
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
            let to = self
                .interface(event.netns, out_ifindex)
                .map(|d| d.name.clone())
                .unwrap_or_else(|| format!("if{out_ifindex}"));
            // The kernel checks the input device's own setting, in this namespace.
            let forwarding = self
                .facts
                .ipv4_of(event.netns, &event.ifname)
                .and_then(|s| s.forwarding);
            let setting = match forwarding {
                Some(true) => format!("as net.ipv4.conf.{}.forwarding = 1 allows", event.ifname),
                Some(false) => format!(
                    "although net.ipv4.conf.{}.forwarding is 0 now",
                    event.ifname
                ),
                None => "forwarding setting unknown".to_string(),
            };
            let text = format!(
                "{ns} routes it onward from {} to {to}, {setting}",
                event.ifname
            );
            let details = Details::Forward {
                from_device: event.ifname.to_string(),
                to_device: to,
                ip_forward: forwarding,
            };
            self.push(event, Some(event.ifname.to_string()), text, details);
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
                matches!(&e.kind, EventKind::Drop { reason, .. }
                    if *reason == DropReason::NetfilterDrop && !is_a_copys_fate(reason, read_by_a_socket))
            });
        let passed = if dropped_here { "entered" } else { "passed" };
        let mut text = format!(
            "netfilter {} in {ns} on {}: {passed}{}",
            hook.name(),
            event.ifname,
            conntrack
                .map(|c| format!("; conntrack: {}", c.words()))
                .unwrap_or_default()
        );
        // A flooded frame meets the bridge's hooks once per copy it sends out.
        let again_for_a_copy = bridged
            && self
                .hops
                .iter()
                .rev()
                .take_while(|h| !matches!(h.details, Details::Bridge { .. }))
                .any(|h| {
                    h.netns == event.netns
                        && matches!(h.details, Details::Netfilter { hook: told, .. } if told == hook)
                });
        if again_for_a_copy {
            text += " (again, for the next flooded copy)";
        } else if bridged {
            text += match self.facts.bridge_calls_iptables {
                Some(true) => {
                    " (run by the bridge for a switched frame: net.bridge.bridge-nf-call-iptables = 1)"
                }
                _ => " (run by the bridge for a switched frame, through br_netfilter)",
            };
        }
        let changed_by_nat =
            after.is_some_and(|(_, a)| Tuple::of(&a.packet) != Tuple::of(&event.packet));
        let not_masqueraded_by = (hook == Hook::Postrouting && !changed_by_nat)
            .then(|| self.unmasqueraded_network(event))
            .flatten();
        if let Some(network) = &not_masqueraded_by {
            text += &format!(
                "; no source NAT: Docker network \"{network}\" does not masquerade (com.docker.network.bridge.enable_ip_masquerade=false), so it leaves with its private source {}",
                event.packet.src
            );
        }
        // pkttrace's own observer is the only thing at a hook where the
        // namespace has no chain: netfilter does nothing there of its own.
        let nothing_there = self
            .facts
            .netfilter_hooks_of(event.netns)
            .is_some_and(|hooks| !hooks.contains(&hook));
        if !nothing_there || dropped_here {
            self.push(
                event,
                Some(event.ifname.to_string()),
                text,
                Details::Netfilter {
                    hook,
                    conntrack,
                    not_masqueraded_by,
                },
            );
        }
        if let Some((_, after)) = after {
            let (before, after_tuple) = (Tuple::of(&event.packet), Tuple::of(&after.packet));
            if before != after_tuple {
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
                let text = format!("{} in {hook}: {before}  ⇒  {after_tuple}", nat.words());
                let details = Details::Nat {
                    hook,
                    nat,
                    before,
                    after: after_tuple,
                };
                self.push(after, Some(event.ifname.to_string()), text, details);
            }
        }
    }
}
