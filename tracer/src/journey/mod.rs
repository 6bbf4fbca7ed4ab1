//! Packet journeys: one packet followed across devices and namespaces, and a
//! request paired with its reply.
//!
//! The kernel keeps one `struct sk_buff` for a packet from the container's
//! eth0 through veth, bridge, forwarding and NAT to the uplink, so the skb
//! address ties events together. Addresses alone cannot (NAT rewrites them)
//! and an skb address is reused once freed, so an event only continues a
//! journey when its packet identity also matches: IP id, protocol, length and
//! TCP flags / ICMP type, none of which NAT changes, and one side of the
//! addresses and ports (a NAT rewrites one side at a time). A clone (the copy
//! a raw socket receives) has a new address but the same identity, addresses
//! and ports.
//!
//! A journey ends after a short quiet time, but while its packet waits in a
//! neighbour's queue for ARP (the kernel frees a copy of it for every
//! who-has) it stays open: what the kernel decides seconds later (a failed
//! ARP drops the packet after three seconds) still lands in it. A wait whose
//! end is never seen keeps it open for at most `WAIT_LIMIT_NS`. Likewise a
//! UDP datagram queued for a socket waits up to `READ_WAIT_NS` for its read.

use std::{
    collections::{BTreeMap, VecDeque},
    hash::{Hash, Hasher},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use crate::addr;
use crate::decode::{
    CtDirection, DropReason, Event, EventKind, Packet, Quoted, RouteFor, RouteResult, SiteRole,
    Transport,
};

/// A journey whose packets are all gone takes events this far apart no
/// more (a clone's last steps come within it).
const MAX_GAP_NS: u64 = 1_000_000_000;
/// A journey whose packet waits for a neighbour is finished after this long
/// without news (the kernel gives up after 3 s by default).
const WAIT_LIMIT_NS: u64 = 5_000_000_000;
/// A UDP datagram queued for a socket waits this long for the process to
/// read it: a busy reader (dockerd under load) may take longer than the
/// quiet time, and without its read the story would end in the kernel.
const READ_WAIT_NS: u64 = 1_000_000_000;
/// UDP frees a datagram it copied out before the read is reported: a
/// datagram freed this shortly before a read can be the one read.
const FREED_BEFORE_READ_NS: u64 = 1_000_000;
/// Events of one packet through a host and two namespaces, with room to spare.
const EVENTS_PER_JOURNEY: usize = 16;
/// A journey whose packets are all gone is complete once no event joined it
/// for this long; so none of its events lies further than this from the
/// others.
pub const QUIET_NS: u64 = 150_000_000;
/// How far from its packet's events a route lookup may be: before the first
/// (the sender routes before it builds the packet), or after the last seen
/// (a packet in flight is routed as it arrives). One further off is another
/// packet's of the same flow.
const ROUTE_LEAD_NS: u64 = 20_000_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Journey {
    pub id: u64,
    pub events: Vec<Event>,
}

impl Journey {
    /// The packet as it was when first seen; for a journey of route
    /// lookups alone (a send the kernel refused), the flow it asked about.
    pub fn first_packet(&self) -> Packet {
        self.packet_events()
            .next()
            .or(self.events.first())
            .expect("a journey has an event")
            .packet
    }

    /// The packet as it was when last seen (after any NAT).
    pub fn last_packet(&self) -> Packet {
        self.packet_events()
            .last()
            .or(self.events.last())
            .expect("a journey has an event")
            .packet
    }

    /// Nothing but route lookups: no packet was ever made.
    pub fn never_sent(&self) -> bool {
        self.packet_events().next().is_none()
    }

    /// When its first event happened (kernel clock).
    pub fn first_seen_ns(&self) -> u64 {
        self.events.iter().map(|e| e.time_ns).min().unwrap_or(0)
    }

    /// When its last event happened (kernel clock).
    pub fn last_seen_ns(&self) -> u64 {
        self.events.iter().map(|e| e.time_ns).max().unwrap_or(0)
    }

    /// Its events, each with a namespace: a packet freed or read after it
    /// left its device has none of its own, and is where it was last seen.
    pub fn located_events(&self) -> Vec<Event> {
        self.located()
            .map(|(netns, event)| Event {
                netns,
                ..event.clone()
            })
            .collect()
    }

    /// Each event with the namespace it happened in (see `located_events`),
    /// without copying any.
    pub fn located(&self) -> impl Iterator<Item = (u32, &Event)> {
        let mut last_netns = 0;
        self.events.iter().map(move |event| {
            if event.netns != 0 {
                last_netns = event.netns;
            }
            (last_netns, event)
        })
    }

    /// Its events without the route lookups (which carry no packet).
    pub fn packet_events(&self) -> impl DoubleEndedIterator<Item = &Event> {
        self.events
            .iter()
            .filter(|e| !matches!(e.kind, EventKind::Route { .. }))
    }

    /// The conntrack entries that tracked its packet; inside a tunnel the
    /// entry is the outer datagram's flow, which many inner flows share.
    fn conntrack_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.events
            .iter()
            .filter(|e| e.packet.tunnel.is_none())
            .filter_map(|e| e.conntrack.map(|c| c.id))
    }

    /// True when `self` answers `request` (the caller knows which way each
    /// went): both were tracked by the same conntrack entry, or (without
    /// conntrack) the reply's addresses and ports are the request's, as it
    /// arrived, swapped.
    pub fn answers(&self, request: &Asked) -> bool {
        // A journey's events name one or two entries (NAT makes none new):
        // a few comparisons, nothing allocated, as this runs per waiting request.
        // Only a packet going the entry's reply way answers: another packet
        // of the request's own way (one whose NAT went unseen) is tracked by
        // the same entry too.
        if self
            .events
            .iter()
            .filter(|e| e.packet.tunnel.is_none())
            .filter_map(|e| e.conntrack)
            .any(|c| c.direction == CtDirection::Reply && request.conntrack_ids.contains(&c.id))
        {
            return true;
        }
        // An ICMP error quotes the packet it is about, as it was where the
        // error was made (after the NATs on its way there).
        if let Transport::Icmp {
            quoted: Some(quoted),
            ..
        } = self.first_packet().transport
        {
            return request.packets.iter().any(|packet| quotes(&quoted, packet));
        }
        let (mut sent, reply) = (request.last_packet(), self.first_packet());
        if matches!(sent.transport, Transport::Arp { .. }) {
            sent = request.first_packet();
        }
        if sent.src != reply.dst || sent.dst != reply.src {
            return false;
        }
        match (sent.transport, reply.transport) {
            (Transport::Icmp { id: a, seq: s, .. }, Transport::Icmp { id: b, seq: t, .. }) => {
                a == b && s == t
            }
            (Transport::Arp { operation: 1, .. }, Transport::Arp { operation: 2, .. }) => true,
            (
                Transport::Tcp {
                    sport: a, dport: b, ..
                },
                Transport::Tcp {
                    sport: c, dport: d, ..
                },
            )
            | (Transport::Udp { sport: a, dport: b }, Transport::Udp { sport: c, dport: d }) => {
                a == d && b == c
            }
            (a, b) => a.protocol_number() == b.protocol_number(),
        }
    }
}

/// What a reply is matched against: a request's identity, kept instead of
/// its whole journey while it waits for its answer.
#[derive(Clone, Debug)]
pub struct Asked {
    pub id: u64,
    /// When its first event was seen (kernel clock).
    pub sent_ns: u64,
    /// The conntrack entries that tracked it.
    conntrack_ids: Vec<u64>,
    /// The packet as it was along its way (consecutive repeats once, NAT's
    /// rewrites each): an ICMP error quotes one of them.
    packets: Vec<Packet>,
}

impl Asked {
    pub fn of(journey: &Journey) -> Self {
        let mut conntrack_ids: Vec<u64> = journey.conntrack_ids().collect();
        conntrack_ids.sort_unstable();
        conntrack_ids.dedup();
        let mut packets: Vec<Packet> = journey.packet_events().map(|e| e.packet).collect();
        packets.dedup();
        Self {
            id: journey.id,
            sent_ns: journey.first_seen_ns(),
            conntrack_ids,
            packets,
        }
    }

    /// The packet as its sender sent it.
    pub fn first_packet(&self) -> Packet {
        self.packets[0]
    }

    /// The packet as last seen (after any NAT).
    pub fn last_packet(&self) -> Packet {
        self.packets[self.packets.len() - 1]
    }
}

/// True when `quoted` (from an ICMP error) is `packet`: addresses,
/// protocol, IP id and TCP/UDP ports or ICMP identifier and sequence.
fn quotes(quoted: &Quoted, packet: &Packet) -> bool {
    let same_ends = match packet.transport {
        Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => {
            quoted.sport == sport && quoted.dport == dport
        }
        Transport::Icmp { id, seq, .. } => quoted.sport == id && quoted.dport == seq,
        _ => true,
    };
    quoted.src == packet.src
        && quoted.dst == packet.dst
        && quoted.protocol == packet.transport.protocol_number()
        && quoted.ip_id == packet.ip_id
        && same_ends
}

/// Drops that end a copy, not the packet: a frame a bridge flooded reaches
/// hosts it is not for (OTHERHOST), and an ICMP message a raw socket received
/// has no socket of the kernel's own (NO_SOCKET).
pub fn is_a_copys_fate(reason: &DropReason, read_by_a_socket: bool) -> bool {
    // Without drop reasons, a free after a socket read the packet is its
    // clone's (ping_rcv's NO_SOCKET on a kernel that gives a reason).
    *reason == DropReason::OtherHost
        || (matches!(reason, DropReason::NoSocket | DropReason::Unreported) && read_by_a_socket)
}

/// What NAT and forwarding cannot change about a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    ip_id: u16,
    length: u16,
    protocol: u8,
    /// TCP flags or ICMP type.
    detail: u8,
    /// TCP sequence and acknowledgement numbers: IP id 0 and the same
    /// ports do not make two resets one.
    sequence: (u32, u32),
    /// ARP messages all look alike but for their addresses, which no NAT changes.
    arp_between: Option<(IpAddr, IpAddr)>,
}

impl Identity {
    fn of(packet: &Packet) -> Self {
        let detail = match packet.transport {
            Transport::Tcp { flags, .. } => flags,
            Transport::Icmp { icmp_type, .. } => icmp_type,
            Transport::Arp { operation, .. } => operation as u8,
            _ => 0,
        };
        let arp_between =
            matches!(packet.transport, Transport::Arp { .. }).then_some((packet.src, packet.dst));
        let sequence = match packet.transport {
            Transport::Tcp { seq, ack, .. } => (seq, ack),
            _ => (0, 0),
        };
        Self {
            ip_id: packet.ip_id,
            length: packet.length,
            protocol: packet.transport.protocol_number(),
            detail,
            sequence,
            arp_between,
        }
    }
}

/// Every event is looked up and indexed under up to four keys: they hash as
/// a few packed words, not field by field as derived (hashing was ~4% of
/// pkttrace's time following a stream). Equal values pack equal, as `Eq`
/// needs.
impl Hash for Identity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Whether there are ARP addresses is said in the first word.
        let arp = self.arp_between.map_or(0, |(a, b)| pair(a, b));
        state.write_u64(
            u64::from(self.ip_id)
                | u64::from(self.length) << 16
                | u64::from(self.protocol) << 32
                | u64::from(self.detail) << 40
                | u64::from(self.arp_between.is_some()) << 48,
        );
        state.write_u64(u64::from(self.sequence.0) << 32 | u64::from(self.sequence.1));
        state.write_u64(arp);
    }
}

/// Two addresses as one word.
fn pair(a: IpAddr, b: IpAddr) -> u64 {
    addr::word(a).rotate_left(32) ^ addr::word(b)
}

/// A packet's two ends as a NAT sees them: address and TCP/UDP port. An
/// ICMP echo's identifier is rewritten along with either side, so it
/// belongs to neither.
fn sides(packet: &Packet) -> ((IpAddr, u16), (IpAddr, u16)) {
    match packet.transport {
        Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => {
            ((packet.src, sport), (packet.dst, dport))
        }
        _ => ((packet.src, 0), (packet.dst, 0)),
    }
}

/// What tells apart packets of one identity (IP id 0 is common: SYN+ACKs,
/// resets, DF datagrams): TCP/UDP ports, an ICMP message's identifier and
/// sequence number.
fn ports(packet: &Packet) -> (u16, u16) {
    match packet.transport {
        Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => (sport, dport),
        Transport::Icmp { id, seq, .. } => (id, seq),
        _ => (0, 0),
    }
}

/// Most journeys open at once, and most events they hold: past either the
/// oldest is finished early, so a flood of matching packets cannot grow
/// pkttrace's memory without bound (tens of MiB at most).
const MAX_OPEN: usize = 4096;
const MAX_OPEN_EVENTS: usize = 65_536;
/// Most events of one journey joined by lookalike identity. A packet's
/// journey makes a few dozen; more means lookalike packets were joined (the
/// DF datagrams of one flow all carry IP id 0), so the journey is finished
/// there and the next event starts another: a flood of them cannot grow one
/// journey without bound.
const MAX_EVENTS: usize = 256;
/// Most events of one journey whose skb is still alive: one packet caught
/// in a routing loop goes back and forth until its TTL runs out (64 rounds
/// of up to a dozen events each).
const MAX_EVENTS_OF_ONE_SKB: usize = 2048;
/// Most route lookups waiting for their packet.
const MAX_UNCLAIMED_ROUTES: usize = 256;

/// How a later event finds its journey: by skb, by the packet's identity and
/// current addresses and ports (a clone), by addresses alone (a route
/// lookup), by a live skb's address alone (a route lookup the kernel's
/// evidence ties to that skb).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Skb(u64, Identity),
    Packet(Identity, IpAddr, IpAddr, (u16, u16)),
    Flow(IpAddr, IpAddr),
    Destination(IpAddr),
    Alive(u64),
}

/// Packed words, as for `Identity`; the first tells the kinds apart.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Key::Skb(skb, identity) => {
                state.write_u64(*skb);
                identity.hash(state);
            }
            Key::Packet(identity, src, dst, (sport, dport)) => {
                state.write_u64(1 << 32 | u64::from(*sport) << 16 | u64::from(*dport));
                state.write_u64(pair(*src, *dst));
                identity.hash(state);
            }
            Key::Flow(src, dst) => {
                state.write_u64(2 << 32);
                state.write_u64(pair(*src, *dst));
            }
            Key::Destination(dst) => {
                state.write_u64(3 << 32);
                state.write_u64(addr::word(*dst));
            }
            Key::Alive(skb) => {
                state.write_u64(4 << 32);
                state.write_u64(*skb);
            }
        }
    }
}

struct OpenJourney {
    journey: Journey,
    last_time: u64,
    /// The packet as last seen, to check a match by skb address against.
    last_packet: Option<Packet>,
    /// Index entries that point here, removed when the journey finishes.
    keys: Vec<Key>,
    /// Addresses of its skbs not yet freed or read by a process: only these
    /// can be met again under their address.
    alive: Vec<u64>,
    /// Its packet sits in a neighbour's queue, waiting for ARP.
    waiting_for_neighbour: bool,
    /// The kernel freed its skb after a socket reader consumed it, on the
    /// CPU that made it (see `push_deferred_free`): its read may come later.
    consumed_by_reader: bool,
    /// A UDP datagram of it entered a namespace's local stack.
    delivered_datagram: bool,
    /// A process's read of it was seen.
    read: bool,
}

/// A freed skb's address is another packet's next: it stops being a key.
fn forget_skb(
    open: &mut OpenJourney,
    index: &mut foldhash::HashMap<Key, u64>,
    id: u64,
    freed: u64,
) {
    open.alive.retain(|skb| *skb != freed);
    open.keys.retain(|key| {
        let gone = matches!(key, Key::Skb(skb, _) | Key::Alive(skb) if *skb == freed);
        if gone && index.get(key) == Some(&id) {
            index.remove(key);
        }
        !gone
    });
}

impl OpenJourney {
    /// Events from different CPUs can reach user space slightly out of order.
    fn into_sorted(mut self) -> Journey {
        self.journey.events.sort_by_key(|e| e.time_ns);
        self.journey
    }

    /// Finished: quiet for `quiet_ns`, or while its packet waits for a
    /// neighbour or its datagram for a reader, quiet for so long that the
    /// wait's end is not coming.
    fn finished(&self, now_ns: u64, quiet_ns: u64) -> bool {
        let silent = now_ns.saturating_sub(self.last_time);
        let waiting_for_a_read = self.delivered_datagram
            && !self.read
            && (!self.alive.is_empty() || self.consumed_by_reader);
        let limit = if self.waiting_for_neighbour {
            WAIT_LIMIT_NS
        } else if waiting_for_a_read {
            READ_WAIT_NS
        } else {
            quiet_ns
        };
        silent >= limit
    }
}

/// Builds journeys from events in arrival order; every event finds its
/// journey through an index, so the cost per event does not grow with load.
pub struct Assembler {
    /// By journey id, so the oldest comes first.
    open: BTreeMap<u64, OpenJourney>,
    index: foldhash::HashMap<Key, u64>,
    /// Route lookups no journey has claimed yet, oldest first.
    unclaimed_routes: VecDeque<Event>,
    /// Journeys finished early because too many were open.
    evicted: Vec<Journey>,
    next_id: u64,
    quiet_ns: u64,
    /// Events held by the open journeys.
    open_events: usize,
    /// When `take_finished` last looked through every open journey.
    last_sweep_ns: u64,
}

/// How often `take_finished` looks through the open journeys, a tenth of
/// the shortest wait: under a flood thousands are open, and looking at
/// each of them for every batch of events was a tenth of pkttrace's time.
fn sweep_every_ns(quiet_ns: u64) -> u64 {
    quiet_ns / 10
}

impl Assembler {
    /// A journey whose packets are all gone is complete once no event joined
    /// it for `quiet_ns`.
    pub fn new(quiet_ns: u64) -> Self {
        Self {
            open: BTreeMap::new(),
            index: foldhash::HashMap::default(),
            unclaimed_routes: VecDeque::new(),
            evicted: Vec::new(),
            next_id: 1,
            open_events: 0,
            quiet_ns,
            last_sweep_ns: 0,
        }
    }

    /// The open journey `key` points to, if it can still take an event at
    /// `time`: by its skb while that skb is alive; as a clone while its
    /// packet waits for a neighbour or within `MAX_GAP_NS` of its last event.
    fn find(&self, key: Key, time: u64) -> Option<u64> {
        let id = *self.index.get(&key)?;
        let open = self.open.get(&id)?;
        let takes = match key {
            Key::Skb(skb, _) | Key::Alive(skb) => open.alive.contains(&skb),
            _ => open.waiting_for_neighbour || time.abs_diff(open.last_time) < MAX_GAP_NS,
        };
        takes.then_some(id)
    }

    fn add_to(&mut self, id: u64, event: Event) {
        let (identity, packet) = (Identity::of(&event.packet), event.packet);
        let all_keys = [
            Key::Packet(identity, packet.src, packet.dst, ports(&packet)),
            Key::Flow(packet.src, packet.dst),
            Key::Destination(packet.dst),
            Key::Skb(event.skb, identity),
        ];
        let keys = match &event.kind {
            EventKind::Route { .. } => &all_keys[..0],
            // A freed skb's address is another packet's next: only a live one is a key.
            kind if kind.ends_skb() => &all_keys[..3],
            _ => &all_keys[..],
        };
        for key in keys {
            self.index.insert(*key, id);
        }
        let open = self.open.get_mut(&id).expect("journey is open");
        // ARP frees a copy of a waiting packet for each who-has; anything
        // else happening to the packet means it is on its way again, or gone.
        open.waiting_for_neighbour = event.kind.is_neighbour_solicit()
            || (open.waiting_for_neighbour && matches!(event.kind, EventKind::Route { .. }));
        open.delivered_datagram |= event.kind.enters_local_stack()
            && matches!(event.packet.transport, Transport::Udp { .. });
        open.read |= event.kind == EventKind::SocketRead;
        match &event.kind {
            EventKind::Route { .. } => {}
            kind if kind.ends_skb() => forget_skb(open, &mut self.index, id, event.skb),
            _ => {
                if !open.alive.contains(&event.skb) {
                    open.alive.push(event.skb);
                    self.index.insert(Key::Alive(event.skb), id);
                    open.keys.push(Key::Alive(event.skb));
                }
            }
        }
        if !matches!(event.kind, EventKind::Route { .. }) && event.time_ns >= open.last_time {
            open.last_packet = Some(event.packet);
        }
        open.last_time = open.last_time.max(event.time_ns);
        open.journey.events.push(event);
        self.open_events += 1;
        for key in keys {
            if !open.keys.contains(key) {
                open.keys.push(*key);
            }
        }
    }

    pub fn push(&mut self, event: Event) {
        if matches!(event.kind, EventKind::Route { .. }) {
            self.push_route(event);
            return;
        }
        if event.kind.is_deferred_free() {
            self.push_deferred_free(&event);
            return;
        }
        if event.kind == EventKind::SocketRead && event.skb == 0 {
            self.push_datagram_read(event);
            return;
        }
        let identity = Identity::of(&event.packet);
        let time = event.time_ns;
        // A freed skb's address is soon reused, and packets the kernel makes
        // (SYN+ACK, RST) share their identity; but a NAT rewrites only one
        // side at a time, so the same packet keeps its source or destination.
        let (source, destination) = sides(&event.packet);
        let same_packet = |id: &u64| {
            self.open[id].last_packet.is_none_or(|last| {
                let (last_source, last_destination) = sides(&last);
                last_source == source || last_destination == destination
            })
        };
        let by_skb = self
            .find(Key::Skb(event.skb, identity), time)
            .filter(same_packet);
        let existing = by_skb.or_else(|| {
            self.find(
                Key::Packet(
                    identity,
                    event.packet.src,
                    event.packet.dst,
                    ports(&event.packet),
                ),
                time,
            )
        });
        if let Some(id) = existing {
            let limit = if by_skb.is_some() {
                MAX_EVENTS_OF_ONE_SKB
            } else {
                MAX_EVENTS
            };
            if self.open[&id].journey.events.len() < limit {
                self.add_to(id, event);
                return;
            }
            // Lookalikes merged (see MAX_EVENTS): this one ends here.
            let full = self.open.remove(&id).expect("found above");
            self.forget(&full);
            self.evicted.push(full.into_sorted());
        }
        // A free of a packet never seen, with no code location to place it
        // (a kernel whose consume_skb gives none), is no journey: most likely
        // the copy ARP frees while the packet itself waits for an answer.
        if matches!(&event.kind, EventKind::Consume { location } if location.role == SiteRole::Unlocated)
        {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        // ARP is below routing: the lookups before it are the IP packet's
        // that waits for its answer (ARP's own are address checks).
        let routes = if matches!(event.packet.transport, Transport::Arp { .. }) {
            VecDeque::new()
        } else {
            self.claim_routes_for(&event)
        };
        // Room for a whole typical journey: growing it copied every event twice.
        let journey = Journey {
            id,
            events: Vec::with_capacity(EVENTS_PER_JOURNEY),
        };
        self.open.insert(
            id,
            OpenJourney {
                journey,
                last_time: time,
                last_packet: None,
                keys: Vec::with_capacity(8),
                alive: Vec::with_capacity(4),
                waiting_for_neighbour: false,
                consumed_by_reader: false,
                delivered_datagram: false,
                read: false,
            },
        );
        for route in routes {
            self.add_to(id, route);
        }
        self.add_to(id, event);
        while (self.open.len() > MAX_OPEN || self.open_events > MAX_OPEN_EVENTS)
            && let Some((_, oldest)) = self.open.pop_first()
        {
            self.forget(&oldest);
            self.evicted.push(oldest.into_sorted());
        }
    }

    /// A deferred free (see `decode::is_deferred_free`) is no hop: it happens
    /// whenever and wherever the allocating CPU gets to it, before or after
    /// the read that caused it is reported. It only says that the skb is gone
    /// and that a reader consumed the packet.
    fn push_deferred_free(&mut self, free: &Event) {
        let key = Key::Skb(free.skb, Identity::of(&free.packet));
        let Some(id) = self.find(key, free.time_ns) else {
            return;
        };
        let open = self.open.get_mut(&id).expect("found above");
        open.consumed_by_reader = true;
        forget_skb(open, &mut self.index, id, free.skb);
    }

    /// A datagram read is seen by its socket, not its packet (UDP copies a
    /// linear datagram past the skb tracepoint). A socket's queue is read in
    /// order: the read is the oldest open journey whose packet was delivered
    /// in the socket's namespace to its port (and address, unless it is bound
    /// to all), and is still queued. A read no journey fits is dropped.
    fn push_datagram_read(&mut self, mut read: Event) {
        let Transport::Udp { dport: port, .. } = read.packet.transport else {
            return;
        };
        let local = read.packet.dst;
        let queued = self.open.iter().find_map(|(id, open)| {
            let packet = open.last_packet?;
            let Transport::Udp { dport, .. } = packet.transport else {
                return None;
            };
            let skb = open.journey.packet_events().rev().find(|e| e.skb != 0)?.skb;
            let delivered_here = open.journey.events.iter().any(|e| {
                e.netns == read.netns
                    && (e.kind.enters_local_stack()
                        || matches!(
                            e.kind,
                            EventKind::Route {
                                result: RouteResult::Local,
                                ..
                            }
                        ))
            });
            // Read ones are done; UDP may free a datagram (same CPU) just
            // before the read is reported.
            let queued = open.alive.contains(&skb)
                || open.consumed_by_reader
                || open.journey.events.last().is_some_and(|last| {
                    matches!(last.kind, EventKind::Consume { .. })
                        && read.time_ns.saturating_sub(last.time_ns) < FREED_BEFORE_READ_NS
                });
            (dport == port
                && (local.is_unspecified() || packet.dst == local)
                && delivered_here
                && !open.read
                && queued
                && open.last_time <= read.time_ns)
                .then_some((*id, skb, packet))
        });
        if let Some((id, skb, packet)) = queued {
            read.skb = skb;
            read.packet = packet;
            self.add_to(id, read);
        }
    }

    /// A lookup for a packet in flight joins it; one made before a packet
    /// exists (the sender choosing a route) waits for that packet. A lookup
    /// the kernel's evidence ties to a live skb (`RouteFor`) joins that
    /// skb's journey: its own route, or a failed route back for an answer
    /// (a found one is the answer's own, which waits like a sender's).
    fn push_route(&mut self, route: Event) {
        let EventKind::Route {
            result, route_for, ..
        } = route.kind
        else {
            return;
        };
        let tied = match route_for {
            RouteFor::Packet => true,
            RouteFor::AnswerTo => !result.found(),
            RouteFor::Sender => false,
        };
        if tied && let Some(id) = self.find(Key::Alive(route.skb), route.time_ns) {
            self.add_to(id, route);
            return;
        }
        let flow = route.packet;
        let key = if flow.src.is_unspecified() {
            Key::Destination(flow.dst)
        } else {
            Key::Flow(flow.src, flow.dst)
        };
        // An answer's found route is made before the answer exists: it waits
        // for it, even when an earlier answer between the same two addresses
        // is still under way. ARP is below routing: no lookup is an ARP
        // message's. A lookup in a task's own system call is no packet's of
        // another task's.
        let answer = route_for == RouteFor::AnswerTo;
        let in_flight = self.find(key, route.time_ns).filter(|id| {
            let open = &self.open[id];
            let arp = open
                .last_packet
                .is_some_and(|p| matches!(p.transport, Transport::Arp { .. }));
            let other_task = open.journey.events.first().is_some_and(|first| {
                first.in_task == Some(true) && route.in_task == Some(true) && first.pid != route.pid
            });
            !answer
                && !arp
                && !other_task
                && route.time_ns.saturating_sub(open.last_time) < ROUTE_LEAD_NS
        });
        match in_flight {
            Some(id) => self.add_to(id, route),
            None => {
                if self.unclaimed_routes.len() == MAX_UNCLAIMED_ROUTES {
                    self.unclaimed_routes.pop_front();
                }
                self.unclaimed_routes.push_back(route);
            }
        }
    }

    /// The lookups made for the packet `first` is the first event of: its
    /// flow and protocol, its namespace, shortly before it, and made by the
    /// same task when both were made in a task's own context (its system
    /// call). A sender looks up its route for its protocol, and netfilter
    /// re-routes a packet it made (a REJECT's reset) with no protocol but
    /// the packet's source; a lookup with neither is the kernel checking an
    /// address (the type of a neighbour it is about to ask ARP for), no
    /// route of the packet's.
    fn claim_routes_for(&mut self, first: &Event) -> VecDeque<Event> {
        let protocol = first.packet.transport.protocol_number();
        let routes_this_protocol = |route: &Event| match route.packet.transport.protocol_number() {
            0 => !route.packet.src.is_unspecified(),
            number => number == protocol,
        };
        let candidate = |route: &Event| {
            routes_this_protocol(route)
                && route.packet.dst == first.packet.dst
                && (route.packet.src.is_unspecified() || route.packet.src == first.packet.src)
                && route.netns == first.netns
                && route.time_ns <= first.time_ns
                && first.time_ns - route.time_ns < ROUTE_LEAD_NS
        };
        // A packet first seen outside its sender's system call (it waited
        // for ARP, and a softirq sent it) names no task: it takes the
        // lookups of one task, the earliest, as waiting packets leave in the
        // order they were queued; another task's are another packet's.
        let task = match first.in_task {
            Some(true) => Some(first.pid),
            _ => self
                .unclaimed_routes
                .iter()
                .find(|route| candidate(route) && route.in_task == Some(true))
                .map(|route| route.pid),
        };
        let same_task =
            |route: &Event| route.in_task != Some(true) || task.is_none_or(|pid| route.pid == pid);
        let (claimed, rest) = std::mem::take(&mut self.unclaimed_routes)
            .into_iter()
            .partition(|route| candidate(route) && same_task(route));
        self.unclaimed_routes = rest;
        claimed
    }

    /// Removes the index entries that still point at a finished journey.
    fn forget(&mut self, open: &OpenJourney) {
        self.open_events = self.open_events.saturating_sub(open.journey.events.len());
        for key in &open.keys {
            if self.index.get(key) == Some(&open.journey.id) {
                self.index.remove(key);
            }
        }
    }

    /// Journeys that are over (or were evicted under load), oldest first;
    /// an over journey may wait for the next sweep (`sweep_every_ns`).
    pub fn take_finished(&mut self, now_ns: u64) -> Vec<Journey> {
        let quiet_ns = self.quiet_ns;
        let mut done = std::mem::take(&mut self.evicted);
        done.extend(
            self.take_refused_sends(|route| now_ns.saturating_sub(route.time_ns) >= quiet_ns),
        );
        self.unclaimed_routes
            .retain(|r| now_ns.saturating_sub(r.time_ns) < MAX_GAP_NS);
        if now_ns.saturating_sub(self.last_sweep_ns) < sweep_every_ns(quiet_ns) {
            return done;
        }
        self.last_sweep_ns = now_ns;
        let finished: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, j)| j.finished(now_ns, quiet_ns))
            .map(|(id, _)| *id)
            .collect();
        for id in finished {
            let open = self.open.remove(&id).expect("listed as open");
            self.forget(&open);
            done.push(open.into_sorted());
        }
        done
    }

    /// Sends the kernel refused: a sender's own lookups (in its system
    /// call) that found no route and that no packet followed, once `over`
    /// says no packet can follow any more. The lookups one send made
    /// (a table each) are one journey, of route lookups alone; a send whose
    /// lookups went on to find a route made a packet, or nothing to tell.
    fn take_refused_sends(&mut self, over: impl Fn(&Event) -> bool) -> Vec<Journey> {
        let mut refused: Vec<Journey> = Vec::new();
        let mut kept = VecDeque::with_capacity(self.unclaimed_routes.len());
        let unclaimed = std::mem::take(&mut self.unclaimed_routes);
        let same_send = |a: &Event, b: &Event| {
            a.pid == b.pid && a.netns == b.netns && a.packet.dst == b.packet.dst
        };
        for route in &unclaimed {
            let refused_send = route.in_task == Some(true)
                && route.kind.is_failed_route()
                && over(route)
                && !unclaimed.iter().any(|later| {
                    later.time_ns >= route.time_ns
                        && !later.kind.is_failed_route()
                        && same_send(route, later)
                        && later.time_ns - route.time_ns < ROUTE_LEAD_NS
                });
            if !refused_send {
                kept.push_back(route.clone());
                continue;
            }
            let joins = refused.last_mut().filter(|journey| {
                journey.events.last().is_some_and(|last| {
                    same_send(last, route) && route.time_ns - last.time_ns < ROUTE_LEAD_NS
                })
            });
            match joins {
                Some(journey) => journey.events.push(route.clone()),
                None => {
                    refused.push(Journey {
                        id: self.next_id,
                        events: vec![route.clone()],
                    });
                    self.next_id += 1;
                }
            }
        }
        self.unclaimed_routes = kept;
        refused
    }

    /// The route lookup a sender (`pid`, in its system call, in `netns`)
    /// made for `destination` at `since_ns` or later, whose send the kernel
    /// then refused although the route was found (too big for the path MTU
    /// it learned): a journey of that lookup alone, no packet being made.
    pub fn take_sender_lookup(
        &mut self,
        pid: u32,
        netns: u32,
        destination: IpAddr,
        since_ns: u64,
    ) -> Option<Journey> {
        let at = self.unclaimed_routes.iter().rposition(|route| {
            route.in_task == Some(true)
                && route.pid == pid
                && route.netns == netns
                && route.packet.dst == destination
                && route.time_ns >= since_ns
        })?;
        let lookup = self.unclaimed_routes.remove(at)?;
        let id = self.next_id;
        self.next_id += 1;
        Some(Journey {
            id,
            events: vec![lookup],
        })
    }

    /// Every journey still open, when tracing stops.
    pub fn take_all(&mut self) -> Vec<Journey> {
        self.index.clear();
        self.open_events = 0;
        let mut done = std::mem::take(&mut self.evicted);
        done.extend(self.take_refused_sends(|_| true));
        done.extend(
            std::mem::take(&mut self.open)
                .into_values()
                .map(OpenJourney::into_sorted),
        );
        done
    }
}

pub mod dns;
pub mod exchanges;
pub mod rules;
#[cfg(test)]
pub mod tests;
