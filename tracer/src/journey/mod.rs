//! Packet journeys: one packet followed across devices and namespaces, and a
//! request paired with its reply.
//!
//! The kernel keeps one `struct sk_buff` for a packet from the container's
//! eth0 through veth, bridge, forwarding and NAT to the uplink, so the skb
//! address ties events together. Addresses alone cannot (NAT rewrites them)
//! and an skb address is reused once freed, so an event only continues a
//! journey when its packet identity also matches: IP id, protocol, length and
//! TCP flags / ICMP type, none of which NAT changes. A clone (the copy a raw
//! socket receives) has a new address but the same identity and addresses.

use serde::Serialize;

use crate::decode::{Event, EventKind, Packet, Transport};

/// Events more than this apart are not the same packet's journey.
const MAX_GAP_NS: u64 = 1_000_000_000;
/// How long before a packet's first event a route lookup may have happened
/// (the sender routes before it builds the packet).
const ROUTE_LEAD_NS: u64 = 20_000_000;

#[derive(Clone, Debug, Serialize)]
pub struct Journey {
    pub id: u64,
    pub events: Vec<Event>,
}

impl Journey {
    /// The packet as it was when first seen.
    pub fn first_packet(&self) -> Packet {
        self.packet_events().next().expect("a journey starts with a packet event").packet
    }

    /// The packet as it was when last seen (after any NAT).
    pub fn last_packet(&self) -> Packet {
        self.packet_events().last().expect("a journey starts with a packet event").packet
    }

    fn packet_events(&self) -> impl DoubleEndedIterator<Item = &Event> {
        self.events.iter().filter(|e| !matches!(e.kind, EventKind::Route { .. }))
    }

    fn last_time(&self) -> u64 {
        self.events.iter().map(|e| e.time_ns).max().unwrap_or(0)
    }

    fn conntrack_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.events.iter().filter_map(|e| e.conntrack.map(|c| c.id))
    }

    /// True when `self` answers `request` (the caller knows which way each
    /// went): both were tracked by the same conntrack entry, or (without
    /// conntrack) the reply's addresses and ports are the request's, as it
    /// arrived, swapped.
    pub fn answers(&self, request: &Journey) -> bool {
        let request_ids: Vec<u64> = request.conntrack_ids().collect();
        if self.conntrack_ids().any(|id| request_ids.contains(&id)) {
            return true;
        }
        let (sent, reply) = (request.last_packet(), self.first_packet());
        if sent.src != reply.dst || sent.dst != reply.src {
            return false;
        }
        match (sent.transport, reply.transport) {
            (Transport::Icmp { id: a, seq: s, .. }, Transport::Icmp { id: b, seq: t, .. }) => a == b && s == t,
            (Transport::Tcp { sport: a, dport: b, .. }, Transport::Tcp { sport: c, dport: d, .. })
            | (Transport::Udp { sport: a, dport: b }, Transport::Udp { sport: c, dport: d }) => a == d && b == c,
            (a, b) => a.protocol_number() == b.protocol_number(),
        }
    }
}

/// What NAT and forwarding cannot change about a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    ip_id: u16,
    length: u16,
    protocol: u8,
    /// TCP flags or ICMP type.
    detail: u8,
}

impl Identity {
    fn of(packet: &Packet) -> Self {
        let detail = match packet.transport {
            Transport::Tcp { flags, .. } => flags,
            Transport::Icmp { icmp_type, .. } => icmp_type,
            _ => 0,
        };
        Self { ip_id: packet.ip_id, length: packet.length, protocol: packet.transport.protocol_number(), detail }
    }
}

struct OpenJourney {
    journey: Journey,
    identity: Identity,
    skbs: Vec<u64>,
}

impl OpenJourney {
    /// Events from different CPUs can reach user space slightly out of order.
    fn into_sorted(mut self) -> Journey {
        self.journey.events.sort_by_key(|e| e.time_ns);
        self.journey
    }
}

/// Builds journeys from events in arrival order.
pub struct Assembler {
    open: Vec<OpenJourney>,
    /// Route lookups no journey has claimed yet.
    unclaimed_routes: Vec<Event>,
    next_id: u64,
    quiet_ns: u64,
}

impl Assembler {
    /// A journey is complete once no event joined it for `quiet_ns`.
    pub fn new(quiet_ns: u64) -> Self {
        Self { open: Vec::new(), unclaimed_routes: Vec::new(), next_id: 1, quiet_ns }
    }

    pub fn push(&mut self, event: Event) {
        if matches!(event.kind, EventKind::Route { .. }) {
            self.push_route(event);
            return;
        }
        let identity = Identity::of(&event.packet);
        let time = event.time_ns;
        let same_skb = self.open.iter().rposition(|j| {
            j.skbs.contains(&event.skb) && j.identity == identity && time.abs_diff(j.journey.last_time()) < MAX_GAP_NS
        });
        let clone = || {
            self.open.iter().rposition(|j| {
                let last = j.journey.last_packet();
                j.identity == identity
                    && last.src == event.packet.src
                    && last.dst == event.packet.dst
                    && time.abs_diff(j.journey.last_time()) < MAX_GAP_NS
            })
        };
        if let Some(index) = same_skb.or_else(clone) {
            let open = &mut self.open[index];
            if !open.skbs.contains(&event.skb) {
                open.skbs.push(event.skb);
            }
            open.journey.events.push(event);
            return;
        }
        let mut events = self.claim_routes_for(&event);
        let skb = event.skb;
        events.push(event);
        self.open.push(OpenJourney { journey: Journey { id: self.next_id, events }, identity, skbs: vec![skb] });
        self.next_id += 1;
    }

    /// A lookup for a packet in flight joins it; one made before a packet
    /// exists (the sender choosing a route) waits for that packet.
    fn push_route(&mut self, route: Event) {
        let flow = route.packet;
        let in_flight = self.open.iter_mut().rev().find(|j| {
            let last = j.journey.last_packet();
            last.dst == flow.dst
                && (flow.src.is_unspecified() || last.src == flow.src)
                && route.time_ns.abs_diff(j.journey.last_time()) < MAX_GAP_NS
        });
        match in_flight {
            Some(open) => open.journey.events.push(route),
            None => self.unclaimed_routes.push(route),
        }
    }

    fn claim_routes_for(&mut self, first: &Event) -> Vec<Event> {
        let (claimed, rest) = std::mem::take(&mut self.unclaimed_routes).into_iter().partition(|route| {
            route.packet.dst == first.packet.dst
                && (route.packet.src.is_unspecified() || route.packet.src == first.packet.src)
                && route.netns == first.netns
                && route.time_ns <= first.time_ns
                && first.time_ns - route.time_ns < ROUTE_LEAD_NS
        });
        self.unclaimed_routes = rest;
        claimed
    }

    /// Journeys that have been quiet for the configured time, oldest first.
    pub fn take_finished(&mut self, now_ns: u64) -> Vec<Journey> {
        let quiet = self.quiet_ns;
        self.unclaimed_routes.retain(|r| now_ns.saturating_sub(r.time_ns) < MAX_GAP_NS);
        let (done, open) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|j: &OpenJourney| now_ns.saturating_sub(j.journey.last_time()) >= quiet);
        self.open = open;
        done.into_iter().map(|j| j.into_sorted()).collect()
    }

    /// Every journey still open, when tracing stops.
    pub fn take_all(&mut self) -> Vec<Journey> {
        self.open.drain(..).map(|j| j.into_sorted()).collect()
    }
}

#[cfg(test)]
pub mod tests;
