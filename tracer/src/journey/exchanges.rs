//! Exchanges: which finished journeys the user asked about, and how they
//! relate. A request goes from SOURCE to DEST; its reply is the first journey
//! that answers it (same conntrack entry, or the swapped tuple: after a DNAT
//! it comes from another address than DEST); behind docker-proxy, the proxy's
//! own connection is a second leg of the request; ARP on the path is its own
//! short exchange. Journeys can finish out of order (a reply before its
//! request), so one that may answer a request not placed yet waits a moment.

use std::{collections::VecDeque, net::Ipv4Addr, time::Duration};

use tokio::time::Instant;

use super::Journey;
use crate::decode::{EventKind, Packet, Transport};

/// How long a request waits for its reply before the exchange counts as done,
/// and a journey waits for the request it may answer.
pub const REPLY_WAIT: Duration = Duration::from_secs(2);
/// Most requests (or parked journeys) kept at once; under a flood the oldest go.
const MAX_WAITING: usize = 1024;
/// `enum ip_conntrack_info` values from here on are the reply direction.
const IP_CT_IS_REPLY: u8 = 3;

/// What the user follows.
#[derive(Clone, Debug)]
pub struct Target {
    pub destination: Ipv4Addr,
    pub port: Option<u16>,
    pub source_netns: u32,
    pub host_netns: u32,
    /// The container end of a published port DEST names (address, port).
    pub published: Option<(Ipv4Addr, u16)>,
    /// docker-proxy serves DEST for this source: an exchange is over when the
    /// proxy's own connection is answered.
    pub expect_second_leg: bool,
    /// `--count`: how many requests to tell at most.
    pub limit: Option<u64>,
}

/// The part a journey plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Request,
    /// docker-proxy's own connection, carrying on request `of`.
    SecondLeg {
        of: u64,
    },
    Reply {
        to: u64,
    },
    ArpRequest,
    ArpReply {
        to: u64,
    },
}

struct Waiting {
    journey: Journey,
    since: Instant,
    second_leg: bool,
    /// Already counted as done (it was dropped): an answer, such as the RST
    /// of a refused connection, is still told but not counted again.
    counted: bool,
}

pub struct Exchanges {
    target: Target,
    waiting: VecDeque<Waiting>,
    parked: VecDeque<(Journey, Instant)>,
    arp_requests: VecDeque<Journey>,
    requests_told: u64,
    arp_requests_told: u64,
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
            arp_requests: VecDeque::new(),
            requests_told: 0,
            arp_requests_told: 0,
            legs_told: Vec::new(),
            last_request: None,
            done: 0,
        }
    }

    /// Requests told (not counting second legs and ARP).
    pub fn requests_told(&self) -> u64 {
        self.requests_told
    }

    /// Exchanges that are over: answered, dropped, or done waiting.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Requests that waited for a reply long enough count as done.
    pub fn stop_waiting_for_old_requests(&mut self) {
        while self
            .waiting
            .front()
            .is_some_and(|r| r.since.elapsed() >= REPLY_WAIT)
        {
            let request = self.waiting.pop_front().expect("checked above");
            self.done += u64::from(!request.counted);
        }
    }

    /// The journeys to tell now, in order, each with its role: `journey`
    /// itself when it belongs to an exchange, then parked journeys it made
    /// placeable. Others are dropped.
    pub fn place(&mut self, journey: Journey) -> Vec<(Journey, Role)> {
        let requests_before = self.requests_so_far();
        let mut told: Vec<(Journey, Role)> = self.place_one(journey).into_iter().collect();
        if self.requests_so_far() > requests_before {
            self.parked.retain(|(_, at)| at.elapsed() < REPLY_WAIT);
            // The first answer is the one that came first.
            let mut parked: Vec<Journey> = std::mem::take(&mut self.parked)
                .into_iter()
                .map(|(j, _)| j)
                .collect();
            parked.sort_by_key(|j| j.id);
            for journey in parked {
                told.extend(self.place(journey));
            }
        }
        told
    }

    fn requests_so_far(&self) -> u64 {
        self.requests_told + self.legs_told.len() as u64 + self.arp_requests_told
    }

    fn park(&mut self, journey: Journey) {
        if self.parked.len() == MAX_WAITING {
            self.parked.pop_front();
        }
        self.parked.push_back((journey, Instant::now()));
    }

    fn place_one(&mut self, journey: Journey) -> Option<(Journey, Role)> {
        let first = journey.first_packet();
        if let Transport::Arp { operation, .. } = first.transport {
            return self.place_arp(journey, operation);
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
        let reply_direction = journey
            .events
            .iter()
            .any(|e| e.conntrack.is_some_and(|c| c.info >= IP_CT_IS_REPLY));
        let target = &self.target;
        let outgoing = first.dst == target.destination
            && starts_in(target.source_netns)
            && !reply_direction
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
            if self.target.limit.is_some_and(|n| self.requests_told >= n) {
                return None;
            }
            self.requests_told += 1;
            self.last_request = Some(journey.id);
            self.wait_for_reply(&journey, false);
            return Some((journey, Role::Request));
        }
        if second_leg {
            // Only the proxy's first connection per request; later ones are its other segments.
            let of = self
                .last_request
                .filter(|first| !self.legs_told.contains(first))?;
            self.legs_told.push(of);
            self.wait_for_reply(&journey, true);
            return Some((journey, Role::SecondLeg { of }));
        }
        match self
            .waiting
            .iter()
            .rposition(|r| journey.answers(&r.journey))
        {
            Some(index) => {
                let request = self.waiting.remove(index).expect("found above");
                // Behind a proxy, the exchange ends with the second leg's answer.
                if !request.counted && (!self.target.expect_second_leg || request.second_leg) {
                    self.done += 1;
                }
                Some((
                    journey,
                    Role::Reply {
                        to: request.journey.id,
                    },
                ))
            }
            // Somebody else's packet, or an answer to a request not placed yet.
            None => {
                self.park(journey);
                None
            }
        }
    }

    fn wait_for_reply(&mut self, request: &Journey, second_leg: bool) {
        let counted = request.ended_in_drop();
        self.done += u64::from(counted);
        if self.waiting.len() == MAX_WAITING {
            let oldest = self.waiting.pop_front().expect("full");
            self.done += u64::from(!oldest.counted);
        }
        self.waiting.push_back(Waiting {
            journey: request.clone(),
            since: Instant::now(),
            second_leg,
            counted,
        });
    }

    /// Neighbour resolution on the path: a who-has request and its is-at
    /// reply, outside the request/reply count.
    fn place_arp(&mut self, journey: Journey, operation: u16) -> Option<(Journey, Role)> {
        const ARP_REQUEST: u16 = 1;
        if operation == ARP_REQUEST {
            self.arp_requests_told += 1;
            if self.arp_requests.len() == MAX_WAITING {
                self.arp_requests.pop_front();
            }
            self.arp_requests.push_back(journey.clone());
            return Some((journey, Role::ArpRequest));
        }
        match self.arp_requests.iter().rposition(|r| journey.answers(r)) {
            Some(index) => {
                let request = self.arp_requests.remove(index).expect("found above");
                Some((journey, Role::ArpReply { to: request.id }))
            }
            None => {
                self.park(journey);
                None
            }
        }
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
    use crate::journey::tests::{FORWARDING_DISABLED, ICMP_MASQUERADE, TCP_REFUSED, assemble};

    /// The recordings' lab: container dev-c1 following the upstream host.
    fn follow_upstream(limit: Option<u64>) -> Exchanges {
        Exchanges::new(Target {
            destination: Ipv4Addr::new(198, 51, 100, 129),
            port: None,
            source_netns: 4026532255,
            host_netns: 4026531833,
            published: None,
            expect_second_leg: false,
            limit,
        })
    }

    fn roles(told: &[(Journey, Role)]) -> Vec<Role> {
        told.iter().map(|(_, role)| *role).collect()
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
        assert_eq!(told[1].0.id, journeys[1].id);
    }

    #[test]
    fn a_refused_connection_is_dropped_and_still_answered() {
        let journeys = assemble(TCP_REFUSED);
        let mut exchanges = follow_upstream(None);
        assert_eq!(
            roles(&exchanges.place(journeys[0].clone())),
            [Role::Request]
        );
        assert_eq!(exchanges.done(), 1, "the SYN was dropped: nothing listens");
        assert_eq!(
            roles(&exchanges.place(journeys[1].clone())),
            [Role::Reply { to: journeys[0].id }],
            "the RST"
        );
        assert_eq!(exchanges.done(), 1, "not counted twice");
    }

    #[test]
    fn a_dropped_request_ends_its_exchange() {
        let journeys = assemble(FORWARDING_DISABLED);
        let mut exchanges = follow_upstream(None);
        assert_eq!(
            roles(&exchanges.place(journeys[0].clone())),
            [Role::Request]
        );
        assert_eq!(exchanges.done(), 1);
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
