//! Exchanges: which finished journeys the user asked about, and how they
//! relate. A request goes from SOURCE to DEST; its reply is the first journey
//! that answers it (same conntrack entry, the swapped tuple, or an ICMP error
//! quoting it: after a DNAT it comes from another address than DEST, and an
//! error may come from a router or the host's firewall); behind
//! docker-proxy, the proxy's own connection is a second leg of the request;
//! a request sent again is a retransmission of the first; ARP on the path
//! is its own short exchange, told once it was answered or given up on. A
//! request nobody answers in time gets a "no reply". Journeys can finish out
//! of order (a reply before its request), so one that may answer a request
//! not placed yet waits a moment.

use serde::{Deserialize, Serialize};
use std::{collections::VecDeque, net::IpAddr, time::Duration};

use tokio::time::Instant;

use super::{Asked, Journey};
use crate::decode::{CtDirection, EventKind, Mac, Packet, TCP_ACK, Transport};

/// How long a journey waits for the request it may answer.
const PARK_WAIT: Duration = Duration::from_secs(5);
/// The kernel asks a neighbour again every second (net.ipv4.neigh.*.retrans_time_ms):
/// a who-has with no follow-up for this long was the last one.
const ARP_RETRY_GAP: Duration = Duration::from_millis(1500);
/// Most requests (or parked journeys) kept at once; under a flood the oldest go.
const MAX_WAITING: usize = 1024;
/// The acknowledgement number of a TCP segment with ACK set.
fn acknowledged(packet: &Packet) -> Option<u32> {
    match packet.transport {
        Transport::Tcp { flags, ack, .. } if flags & TCP_ACK != 0 => Some(ack),
        _ => None,
    }
}

const ARP_REQUEST: u16 = 1;

/// What the user follows.
#[derive(Clone, Debug)]
pub struct Target {
    pub destination: IpAddr,
    pub port: Option<u16>,
    pub source_netns: u32,
    /// SOURCE is on another host than the one whose view is told (`follow
    /// --on-host`): its requests are first seen arriving here.
    pub source_elsewhere: bool,
    pub host_netns: u32,
    /// The container end of a published port DEST names (address, port).
    pub published: Option<(IpAddr, u16)>,
    /// docker-proxy serves DEST for this source: an exchange is over when the
    /// proxy's own connection is answered.
    pub expect_second_leg: bool,
    /// `--count`: how many requests to tell at most.
    pub limit: Option<u64>,
    /// How long a request waits for its reply before it is told unanswered.
    pub reply_wait: Duration,
    /// `--arp`: answered ARP exchanges are journeys of their own too (by
    /// default the hop that waited for one tells it in a line; an unanswered
    /// one is always a journey).
    pub arp_journeys: bool,
    /// `--summary`: every packet of the flow counts, so one from DEST's
    /// port that answers no waiting request (a stream's later segments, its
    /// FIN) is told as a reply to the flow's last request, not set aside.
    pub every_reply: bool,
}

/// The part a journey plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Request,
    /// The sender sent request `of` again (a TCP SYN retransmitted, an
    /// ICMP echo with the same id and sequence number).
    Retransmission {
        of: u64,
    },
    /// Another UDP datagram with the ports of request `of`, still
    /// unanswered: a retry (DNS) or the next of a stream, which the kernel
    /// cannot tell apart.
    SameFlow {
        of: u64,
    },
    /// docker-proxy's own connection, carrying on request `of`.
    SecondLeg {
        of: u64,
    },
    Reply {
        to: u64,
    },
    /// A who-has, told once it was answered or given up on.
    ArpRequest {
        result: ArpResult,
    },
    ArpReply {
        to: u64,
    },
}

/// How an ARP request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArpResult {
    Answered {
        /// Who-has sent (this one and its retries) before the answer.
        asked: u32,
        reply: u64,
        mac: Mac,
    },
    Unanswered {
        asked: u32,
    },
}

/// What is to be told, in order.
#[derive(Debug)]
pub enum Told {
    Journey(Journey, Role),
    /// Request `request`, sent at `sent_ns` (kernel clock), got no reply
    /// within `waited`.
    NoReply {
        request: u64,
        sent_ns: u64,
        waited: Duration,
    },
}

struct Waiting {
    asked: Asked,
    since: Instant,
    second_leg: bool,
}

/// A who-has waiting for its is-at, with the retries that followed it.
struct PendingArp {
    first: Journey,
    asked: u32,
    last_asked: Instant,
}

pub struct Exchanges {
    target: Target,
    waiting: VecDeque<Waiting>,
    parked: VecDeque<(Journey, Instant)>,
    arp_pending: VecDeque<PendingArp>,
    /// Told ARP requests whose reply may still be on its way to be told.
    arp_answered: VecDeque<(u64, Journey)>,
    requests_told: u64,
    arp_requests_seen: u64,
    legs_told: Vec<u64>,
    last_request: Option<u64>,
    done: u64,
}

impl Exchanges {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            waiting: VecDeque::new(),
            parked: VecDeque::new(),
            arp_pending: VecDeque::new(),
            arp_answered: VecDeque::new(),
            requests_told: 0,
            arp_requests_seen: 0,
            legs_told: Vec::new(),
            last_request: None,
            done: 0,
        }
    }

    /// Requests told (not counting retransmissions, second legs and ARP).
    pub fn requests_told(&self) -> u64 {
        self.requests_told
    }

    /// Exchanges that are over: answered, or told unanswered.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// What time alone decides: requests that waited for their reply long
    /// enough, ARP requests whose retries stopped.
    pub fn tick(&mut self) -> Vec<Told> {
        let mut told = Vec::new();
        while self
            .waiting
            .front()
            .is_some_and(|r| r.since.elapsed() >= self.target.reply_wait)
        {
            let request = self.waiting.pop_front().expect("checked above");
            told.push(self.no_reply(request));
        }
        while self
            .arp_pending
            .front()
            .is_some_and(|a| a.last_asked.elapsed() >= ARP_RETRY_GAP)
        {
            let arp = self.arp_pending.pop_front().expect("checked above");
            told.push(unanswered(arp));
        }
        self.parked.retain(|(_, at)| at.elapsed() < PARK_WAIT);
        told
    }

    /// When tracing stops: every request still waiting is unanswered so far.
    pub fn finish(&mut self) -> Vec<Told> {
        let mut told: Vec<Told> = std::mem::take(&mut self.arp_pending)
            .into_iter()
            .map(unanswered)
            .collect();
        for request in std::mem::take(&mut self.waiting) {
            told.push(self.no_reply(request));
        }
        told
    }

    /// Counts the exchange `request` belongs to as over, once its wait
    /// ends: behind a proxy the exchange ends with the second leg's.
    fn end_wait(&mut self, request: &Waiting) {
        if !self.target.expect_second_leg || request.second_leg {
            self.done += 1;
        }
    }

    fn no_reply(&mut self, request: Waiting) -> Told {
        self.end_wait(&request);
        Told::NoReply {
            request: request.asked.id,
            sent_ns: request.asked.sent_ns,
            waited: request.since.elapsed(),
        }
    }

    /// What to tell now, in order: `journey` itself when it belongs to an
    /// exchange, the ARP request it answers, then parked journeys it made
    /// placeable. Others are dropped.
    pub fn place(&mut self, journey: Journey) -> Vec<Told> {
        let requests_before = self.requests_so_far();
        let newest_before = self.waiting.back().map(|w| w.asked.id);
        let mut told = self.place_one(journey);
        if self.requests_so_far() > requests_before {
            // Only what the new requests (or an ARP request) can make
            // placeable is tried again: under a flood, hundreds are parked
            // and hundreds wait, and trying every pair for every request
            // would cost more than the flood.
            let new_requests: Vec<&Asked> = self
                .waiting
                .iter()
                .map(|w| &w.asked)
                .filter(|j| newest_before.is_none_or(|newest| j.id > newest))
                .collect();
            let (mut retry, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
                .into_iter()
                .partition(|(parked, _)| {
                    matches!(parked.first_packet().transport, Transport::Arp { .. })
                        || new_requests.iter().any(|request| parked.answers(request))
                });
            self.parked = keep.into();
            // The first answer is the one that came first.
            retry.sort_by_key(|(j, _)| j.id);
            for (journey, _) in retry {
                told.extend(self.place(journey));
            }
        }
        told
    }

    /// With `every_reply`: `packet` comes from DEST (and its port) to a
    /// request already told.
    fn of_the_flow_back(&self, packet: &Packet) -> bool {
        self.target.every_reply
            && packet.src == self.target.destination
            && self
                .target
                .port
                .is_none_or(|port| source_port(packet) == Some(port))
    }

    fn requests_so_far(&self) -> u64 {
        self.requests_told + self.legs_told.len() as u64 + self.arp_requests_seen
    }

    fn park(&mut self, journey: Journey) {
        if self.parked.len() == MAX_WAITING {
            self.parked.pop_front();
        }
        self.parked.push_back((journey, Instant::now()));
    }

    fn place_one(&mut self, journey: Journey) -> Vec<Told> {
        let first = journey.first_packet();
        if let Transport::Arp { operation, .. } = first.transport {
            return self.place_arp(journey, operation);
        }
        if journey.never_sent() {
            return self.place_refused(journey);
        }
        let starts_in = |netns: u32| {
            journey
                .events
                .iter()
                .find(|e| !matches!(e.kind, EventKind::Route { .. }))
                .is_some_and(|e| e.netns == netns)
        };
        // Conntrack knows the direction (on loopback both ways look alike);
        // without it, a request goes to DEST's port.
        let reply_direction = journey.events.iter().any(|e| {
            e.conntrack
                .is_some_and(|c| c.direction == CtDirection::Reply)
        });
        let target = &self.target;
        let arrives = || {
            journey
                .events
                .iter()
                .find(|e| !matches!(e.kind, EventKind::Route { .. }))
                .is_some_and(|e| matches!(e.kind, EventKind::Receive { .. }))
        };
        let from_source = starts_in(target.source_netns) || (target.source_elsewhere && arrives());
        let outgoing = first.dst == target.destination
            && from_source
            && !reply_direction
            && !is_icmp_error(&first)
            && target
                .port
                .is_none_or(|port| destination_port(&first) == Some(port));
        // docker-proxy opens its connection from the host's namespace, whoever the source is.
        let second_leg = !outgoing
            && !reply_direction
            && starts_in(target.host_netns)
            && target.published.is_some_and(|(address, port)| {
                first.dst == address && destination_port(&first) == Some(port)
            });
        if outgoing {
            if let Some(of) = self.retransmission_of(&first) {
                let role = if matches!(first.transport, Transport::Udp { .. }) {
                    Role::SameFlow { of }
                } else {
                    Role::Retransmission { of }
                };
                return vec![Told::Journey(journey, role)];
            }
            if self.target.limit.is_some_and(|n| self.requests_told >= n) {
                return Vec::new();
            }
            if first.transport.asks_for_no_answer() {
                // A bare ACK or a RST: told, but no exchange of its own.
                return vec![Told::Journey(journey, Role::Request)];
            }
            self.requests_told += 1;
            self.last_request = Some(journey.id);
            self.wait_for_reply(&journey, false);
            return vec![Told::Journey(journey, Role::Request)];
        }
        if second_leg {
            // Only the proxy's first connection per request; later ones are its other segments.
            let Some(of) = self
                .last_request
                .filter(|first| !self.legs_told.contains(first))
            else {
                return Vec::new();
            };
            self.legs_told.push(of);
            self.wait_for_reply(&journey, true);
            return vec![Told::Journey(journey, Role::SecondLeg { of })];
        }
        // A TCP acknowledgement answers every segment it covers, the last
        // one told; without one, the newest request it answers.
        let acked = acknowledged(&first);
        let covered = |r: &Waiting| {
            acked.is_some_and(|ack| {
                r.asked
                    .first_packet()
                    .transport
                    .tcp_end()
                    .is_some_and(|end| (ack.wrapping_sub(end) as i32) >= 0)
            })
        };
        let index = self
            .waiting
            .iter()
            .rposition(|r| covered(r) && journey.answers(&r.asked))
            .or_else(|| self.waiting.iter().rposition(|r| journey.answers(&r.asked)));
        match index {
            Some(index) => {
                let request = self.waiting.remove(index).expect("found above");
                let mut earlier = Vec::new();
                if self.waiting.iter().any(covered) {
                    let rest: Vec<Waiting>;
                    (earlier, rest) = std::mem::take(&mut self.waiting)
                        .into_iter()
                        .partition(|r| covered(r) && journey.answers(&r.asked));
                    self.waiting = rest.into();
                }
                for answered in earlier.iter().chain([&request]) {
                    self.end_wait(answered);
                }
                vec![Told::Journey(
                    journey,
                    Role::Reply {
                        to: request.asked.id,
                    },
                )]
            }
            None => match self.last_request.filter(|_| self.of_the_flow_back(&first)) {
                Some(to) => vec![Told::Journey(journey, Role::Reply { to })],
                // Somebody else's packet, or an answer to a request not placed yet.
                None => {
                    self.park(journey);
                    Vec::new()
                }
            },
        }
    }

    /// A send from SOURCE to DEST the kernel refused (no route): a request
    /// told and over at once, as nothing can answer what was never sent.
    fn place_refused(&mut self, journey: Journey) -> Vec<Told> {
        let from_source = journey
            .events
            .first()
            .is_some_and(|e| e.netns == self.target.source_netns);
        let wanted = from_source && journey.first_packet().dst == self.target.destination;
        if !wanted || self.target.limit.is_some_and(|n| self.requests_told >= n) {
            return Vec::new();
        }
        self.requests_told += 1;
        self.done += 1;
        vec![Told::Journey(journey, Role::Request)]
    }

    /// The request still waiting whose first packet `packet` repeats (for
    /// UDP: whose ports it has).
    fn retransmission_of(&self, packet: &Packet) -> Option<u64> {
        self.waiting
            .iter()
            .find(|r| {
                let first = r.asked.first_packet();
                first.src == packet.src
                    && first.dst == packet.dst
                    && first.transport == packet.transport
            })
            .map(|r| r.asked.id)
    }

    fn wait_for_reply(&mut self, request: &Journey, second_leg: bool) {
        if self.waiting.len() == MAX_WAITING {
            let oldest = self.waiting.pop_front().expect("full");
            self.end_wait(&oldest);
        }
        self.waiting.push_back(Waiting {
            asked: Asked::of(request),
            since: Instant::now(),
            second_leg,
        });
    }

    /// Neighbour resolution on the path, outside the request/reply count: a
    /// who-has waits (with its retries) for the is-at that answers it.
    fn place_arp(&mut self, journey: Journey, operation: u16) -> Vec<Told> {
        if operation == ARP_REQUEST {
            let first = journey.first_packet();
            let netns = journey.events.first().map(|e| e.netns);
            let retry = self.arp_pending.iter_mut().find(|a| {
                let asked = a.first.first_packet();
                asked.src == first.src
                    && asked.dst == first.dst
                    && a.first.events.first().map(|e| e.netns) == netns
            });
            match retry {
                Some(arp) => {
                    arp.asked += 1;
                    arp.last_asked = Instant::now();
                }
                None => {
                    self.arp_requests_seen += 1;
                    if self.arp_pending.len() == MAX_WAITING {
                        let oldest = self.arp_pending.pop_front().expect("full");
                        return vec![unanswered(oldest)];
                    }
                    self.arp_pending.push_back(PendingArp {
                        first: journey,
                        asked: 1,
                        last_asked: Instant::now(),
                    });
                }
            }
            return Vec::new();
        }
        let Transport::Arp { sender_mac, .. } = journey.first_packet().transport else {
            return Vec::new();
        };
        if let Some(index) = self
            .arp_pending
            .iter()
            .position(|a| journey.answers(&Asked::of(&a.first)))
        {
            let arp = self.arp_pending.remove(index).expect("found above");
            let to = arp.first.id;
            let result = ArpResult::Answered {
                asked: arp.asked,
                reply: journey.id,
                mac: sender_mac,
            };
            if self.arp_answered.len() == MAX_WAITING {
                self.arp_answered.pop_front();
            }
            self.arp_answered.push_back((to, arp.first.clone()));
            if !self.target.arp_journeys {
                return Vec::new();
            }
            return vec![
                Told::Journey(arp.first, Role::ArpRequest { result }),
                Told::Journey(journey, Role::ArpReply { to }),
            ];
        }
        self.park(journey);
        Vec::new()
    }
}

fn unanswered(arp: PendingArp) -> Told {
    Told::Journey(
        arp.first,
        Role::ArpRequest {
            result: ArpResult::Unanswered { asked: arp.asked },
        },
    )
}

fn is_icmp_error(packet: &Packet) -> bool {
    matches!(
        packet.transport,
        Transport::Icmp {
            quoted: Some(_),
            ..
        }
    )
}

fn source_port(packet: &Packet) -> Option<u16> {
    match packet.transport {
        Transport::Tcp { sport, .. } | Transport::Udp { sport, .. } => Some(sport),
        _ => None,
    }
}

fn destination_port(packet: &Packet) -> Option<u16> {
    match packet.transport {
        Transport::Tcp { dport, .. } | Transport::Udp { dport, .. } => Some(dport),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::tests::{
        FORWARDING_DISABLED, ICMP_MASQUERADE, TCP_REFUSED, UDP_CLOSED_PORT, assemble,
    };

    /// The recordings' lab: container dev-c1 following the upstream host
    /// (with `--arp`: ARP exchanges are journeys too).
    fn follow_upstream(limit: Option<u64>) -> Exchanges {
        Exchanges::new(Target {
            destination: IpAddr::from([198, 51, 100, 129]),
            port: None,
            source_netns: 4026532255,
            source_elsewhere: false,
            host_netns: 4026531833,
            published: None,
            expect_second_leg: false,
            limit,
            reply_wait: Duration::from_secs(5),
            arp_journeys: true,
            every_reply: false,
        })
    }

    fn roles(told: &[Told]) -> Vec<Role> {
        told.iter()
            .filter_map(|t| match t {
                Told::Journey(_, role) => Some(*role),
                Told::NoReply { .. } => None,
            })
            .collect()
    }

    fn journey_ids(told: &[Told]) -> Vec<u64> {
        told.iter()
            .filter_map(|t| match t {
                Told::Journey(journey, _) => Some(journey.id),
                Told::NoReply { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_request_then_its_reply_is_one_exchange() {
        let journeys = assemble(ICMP_MASQUERADE);
        let mut exchanges = follow_upstream(None);
        assert_eq!(
            roles(&exchanges.place(journeys[0].clone())),
            [Role::Request]
        );
        assert_eq!(
            roles(&exchanges.place(journeys[1].clone())),
            [Role::Reply { to: journeys[0].id }]
        );
        assert_eq!((exchanges.requests_told(), exchanges.done()), (1, 1));
        assert!(exchanges.finish().is_empty(), "nothing left unanswered");
    }

    /// A packet going the request's own way shares its conntrack entry:
    /// the request seen again after a NAT that went unseen (a kernel without
    /// netfilter programs) is no answer to it.
    #[test]
    fn a_packet_going_the_requests_own_way_answers_nothing() {
        let journeys = assemble(ICMP_MASQUERADE);
        let mut exchanges = follow_upstream(None);
        exchanges.place(journeys[0].clone());
        let sender = journeys[0].first_packet().src;
        let mut after_nat = journeys[0].clone();
        after_nat.id += 100;
        after_nat.events.retain(|e| e.packet.src != sender);
        assert!(
            after_nat.events.iter().any(|e| e
                .conntrack
                .is_some_and(|c| c.direction == CtDirection::Original)),
            "the recording has the entry on the masqueraded packet"
        );
        assert!(
            roles(&exchanges.place(after_nat)).is_empty(),
            "set aside, not a reply"
        );
    }

    /// `--summary` counts every packet of the flow: a second answer from
    /// DEST to a request already answered is told as a reply to it, where
    /// stories set it aside.
    #[test]
    fn with_every_reply_an_answer_to_no_waiting_request_is_still_the_flows() {
        let journeys = assemble(ICMP_MASQUERADE);
        for (every_reply, expected) in [
            (false, vec![]),
            (true, vec![Role::Reply { to: journeys[0].id }]),
        ] {
            let mut exchanges = Exchanges::new(Target {
                every_reply,
                ..follow_upstream(None).target
            });
            exchanges.place(journeys[0].clone());
            exchanges.place(journeys[1].clone());
            let mut again = journeys[1].clone();
            again.id += 100;
            assert_eq!(
                roles(&exchanges.place(again)),
                expected,
                "every_reply {every_reply}"
            );
        }
    }

    #[test]
    fn a_reply_that_finishes_first_waits_for_its_request() {
        let journeys = assemble(TCP_REFUSED);
        let mut exchanges = follow_upstream(None);
        assert!(
            exchanges.place(journeys[1].clone()).is_empty(),
            "no request to answer yet"
        );
        let told = exchanges.place(journeys[0].clone());
        assert_eq!(
            roles(&told),
            [Role::Request, Role::Reply { to: journeys[0].id }]
        );
        assert_eq!(journey_ids(&told)[1], journeys[1].id);
    }

    #[test]
    fn a_refused_connection_is_answered_by_its_reset() {
        let journeys = assemble(TCP_REFUSED);
        let mut exchanges = follow_upstream(None);
        assert_eq!(
            roles(&exchanges.place(journeys[0].clone())),
            [Role::Request]
        );
        assert_eq!(exchanges.done(), 0, "a reset may still come");
        assert_eq!(
            roles(&exchanges.place(journeys[1].clone())),
            [Role::Reply { to: journeys[0].id }],
            "the RST"
        );
        assert_eq!(exchanges.done(), 1);
    }

    #[test]
    fn a_dropped_request_without_an_answer_is_told_unanswered() {
        let journeys = assemble(FORWARDING_DISABLED);
        let mut exchanges = follow_upstream(None);
        exchanges.target.reply_wait = Duration::ZERO;
        assert_eq!(
            roles(&exchanges.place(journeys[0].clone())),
            [Role::Request]
        );
        let told = exchanges.tick();
        assert!(
            matches!(told[..], [Told::NoReply { request, .. }] if request == journeys[0].id),
            "{told:?}"
        );
        assert_eq!(exchanges.done(), 1);
        assert!(exchanges.finish().is_empty(), "told once");
    }

    #[test]
    fn a_request_still_waiting_when_tracing_stops_is_unanswered() {
        let journeys = assemble(FORWARDING_DISABLED);
        let mut exchanges = follow_upstream(None);
        exchanges.place(journeys[0].clone());
        assert!(exchanges.tick().is_empty(), "still within the wait");
        assert!(matches!(exchanges.finish()[..], [Told::NoReply { .. }]));
    }

    #[test]
    fn the_same_packet_sent_again_is_a_retransmission() {
        let journeys = assemble(TCP_REFUSED);
        let mut exchanges = follow_upstream(Some(1));
        exchanges.place(journeys[0].clone());
        let mut again = journeys[0].clone();
        again.id = 99;
        assert_eq!(
            roles(&exchanges.place(again)),
            [Role::Retransmission { of: journeys[0].id }],
            "not a new request, and not left out by --count"
        );
    }

    #[test]
    fn another_datagram_of_an_unanswered_flow_is_not_called_sent_again() {
        let journeys = assemble(UDP_CLOSED_PORT);
        let mut exchanges = follow_upstream(Some(1));
        exchanges.target.destination = journeys[0].first_packet().dst;
        exchanges.target.source_netns = journeys[0].events[0].netns;
        assert_eq!(
            roles(&exchanges.place(journeys[0].clone())),
            [Role::Request]
        );
        let mut next = journeys[0].clone();
        next.id = 99;
        assert_eq!(
            roles(&exchanges.place(next)),
            [Role::SameFlow { of: journeys[0].id }],
            "a retry and the next of a stream look the same"
        );
    }

    /// `journey` as another TCP segment of its connection.
    fn segment(journey: &Journey, id: u64, flags: u8, seq: u32, ack: u32, payload: u16) -> Journey {
        let mut segment = journey.clone();
        segment.id = id;
        for event in &mut segment.events {
            if let Transport::Tcp { sport, dport, .. } = event.packet.transport {
                event.packet.transport = Transport::Tcp {
                    sport,
                    dport,
                    flags,
                    seq,
                    ack,
                    payload: Some(payload),
                };
            }
        }
        segment
    }

    #[test]
    fn one_cumulative_ack_answers_every_segment_it_covers() {
        let journeys = assemble(TCP_REFUSED);
        let (request, reply) = (&journeys[0], &journeys[1]);
        let mut exchanges = follow_upstream(None);
        let (push, ack) = (0x18, 0x10);
        for (id, seq) in [(10, 1000), (11, 1100), (12, 1200)] {
            assert_eq!(
                roles(&exchanges.place(segment(request, id, push, seq, 1, 100))),
                [Role::Request]
            );
        }
        assert_eq!(
            roles(&exchanges.place(segment(reply, 20, ack, 1, 1200, 0))),
            [Role::Reply { to: 11 }],
            "the last segment it covers, not the newest"
        );
        assert_eq!(exchanges.done(), 2, "and the one before it");
        assert_eq!(
            roles(&exchanges.place(segment(reply, 21, ack, 1, 1300, 0))),
            [Role::Reply { to: 12 }]
        );
        assert_eq!(exchanges.done(), 3);
        assert!(exchanges.finish().is_empty(), "no segment left unanswered");
    }

    #[test]
    fn a_bare_ack_waits_for_no_answer() {
        let journeys = assemble(TCP_REFUSED);
        let mut exchanges = follow_upstream(None);
        assert_eq!(
            roles(&exchanges.place(segment(&journeys[0], 10, 0x10, 1000, 1, 0))),
            [Role::Request]
        );
        assert!(exchanges.finish().is_empty(), "no \"no reply\" for an ACK");
        assert_eq!(exchanges.done(), 0, "and no exchange");
    }

    /// An ARP message's journey, made from a recorded event: `operation` 1
    /// asks who has `dst`, 2 says `src` is at `mac`.
    fn arp(id: u64, operation: u16, src: [u8; 4], dst: [u8; 4], mac: [u8; 6]) -> Journey {
        let mut journey = assemble(ICMP_MASQUERADE)[0].clone();
        journey.id = id;
        journey
            .events
            .retain(|e| !matches!(e.kind, EventKind::Route { .. }));
        for event in &mut journey.events {
            event.packet.src = IpAddr::from(src);
            event.packet.dst = IpAddr::from(dst);
            event.packet.transport = Transport::Arp {
                operation,
                sender_mac: Mac(mac),
                target_mac: Mac::default(),
            };
            event.conntrack = None;
        }
        journey
    }

    const HOST_SIDE: [u8; 4] = [198, 51, 100, 130];
    const UPSTREAM: [u8; 4] = [198, 51, 100, 129];

    #[test]
    fn by_default_an_answered_arp_exchange_is_no_journey_but_an_unanswered_one_is() {
        let mut exchanges = Exchanges::new(Target {
            arp_journeys: false,
            ..follow_upstream(None).target
        });
        let who_has = arp(1, 1, HOST_SIDE, UPSTREAM, [2, 0, 0, 0, 0, 1]);
        let is_at = arp(2, 2, UPSTREAM, HOST_SIDE, [2, 0, 0, 0, 0, 2]);
        assert!(exchanges.place(who_has).is_empty());
        assert!(
            exchanges.place(is_at).is_empty(),
            "told by the hop that waited"
        );
        let unanswered = arp(3, 1, HOST_SIDE, [198, 51, 100, 99], [2, 0, 0, 0, 0, 1]);
        assert!(exchanges.place(unanswered).is_empty());
        let told = exchanges.finish();
        assert_eq!(
            roles(&told),
            [Role::ArpRequest {
                result: ArpResult::Unanswered { asked: 1 }
            }]
        );
    }

    #[test]
    fn an_arp_request_is_told_once_answered_with_its_reply() {
        let who_has = arp(1, 1, HOST_SIDE, UPSTREAM, [2, 0, 0, 0, 0, 1]);
        let is_at = arp(2, 2, UPSTREAM, HOST_SIDE, [2, 0, 0, 0, 0, 2]);
        let mut exchanges = follow_upstream(None);
        assert!(exchanges.place(who_has).is_empty(), "waits for its answer");
        let told = exchanges.place(is_at);
        assert_eq!(journey_ids(&told), [1, 2]);
        assert_eq!(
            roles(&told),
            [
                Role::ArpRequest {
                    result: ArpResult::Answered {
                        asked: 1,
                        reply: 2,
                        mac: Mac([2, 0, 0, 0, 0, 2])
                    }
                },
                Role::ArpReply { to: 1 }
            ]
        );
    }

    #[test]
    fn retries_of_an_unanswered_arp_request_are_one_story() {
        let mut exchanges = follow_upstream(None);
        for id in 1..=3 {
            let who_has = arp(id, 1, HOST_SIDE, [198, 51, 100, 99], [2, 0, 0, 0, 0, 1]);
            assert!(exchanges.place(who_has).is_empty());
        }
        let told = exchanges.finish();
        assert_eq!(journey_ids(&told), [1], "told as the first who-has");
        assert_eq!(
            roles(&told),
            [Role::ArpRequest {
                result: ArpResult::Unanswered { asked: 3 }
            }]
        );
        assert_eq!(exchanges.done(), 0, "ARP is no exchange of the user's");
    }

    #[test]
    fn the_count_limits_the_requests_told_and_others_are_left_out() {
        let journeys = assemble(ICMP_MASQUERADE);
        let mut exchanges = follow_upstream(Some(0));
        assert!(exchanges.place(journeys[0].clone()).is_empty());
        let mut elsewhere = follow_upstream(None);
        elsewhere.target.source_netns = 1;
        assert!(
            elsewhere.place(journeys[0].clone()).is_empty(),
            "not from SOURCE"
        );
    }
}
