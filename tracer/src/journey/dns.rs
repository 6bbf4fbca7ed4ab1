//! DNS exchanges: a container's query paired with its answer, and with the
//! queries Docker's embedded DNS forwarded upstream on its behalf. Pure: it
//! sees finished journeys whose packets carried a DNS message, nothing else.

use std::net::IpAddr;

use crate::decode::{DnsMessage, EventKind, Packet, Transport};

use super::Journey;

/// A DNS packet's addresses and ports at one end of its journey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

impl Endpoints {
    fn of(packet: Packet) -> Self {
        let (sport, dport) = match packet.transport {
            Transport::Udp { sport, dport } | Transport::Tcp { sport, dport, .. } => (sport, dport),
            _ => (0, 0),
        };
        Self {
            src: packet.src,
            sport,
            dst: packet.dst,
            dport,
        }
    }
}

/// One DNS packet's journey and the message it carried.
#[derive(Clone, Debug)]
pub struct DnsPacket {
    pub journey: Journey,
    pub message: DnsMessage,
    /// As the packet left (before any NAT).
    pub sent: Endpoints,
    /// As the packet arrived (after all NAT).
    pub delivered: Endpoints,
}

impl DnsPacket {
    /// The journey's DNS message, taken from the first event that carried one.
    fn of(journey: Journey) -> Option<Self> {
        let message = journey
            .events
            .iter()
            .find_map(|e| e.dns.as_deref().cloned())?;
        Some(Self {
            sent: Endpoints::of(journey.first_packet()),
            delivered: Endpoints::of(journey.last_packet()),
            journey,
            message,
        })
    }

    /// When the packet was first seen (its route lookup, made before, aside).
    pub fn time_ns(&self) -> u64 {
        self.journey.packet_events().next().map_or(0, |e| e.time_ns)
    }

    /// When the packet reached its last stop: read by a socket, else its
    /// last step before being freed (a freed skb can linger).
    pub fn arrival_ns(&self) -> u64 {
        let read = self
            .journey
            .events
            .iter()
            .find(|e| e.kind == EventKind::SocketRead);
        let last_step = || {
            self.journey
                .packet_events()
                .rev()
                .find(|e| !matches!(e.kind, EventKind::Consume { .. }))
        };
        read.or_else(last_step)
            .map_or_else(|| self.time_ns(), |e| e.time_ns)
    }

    fn same_question(&self, other: &DnsPacket) -> bool {
        self.message.question.is_some() && self.message.question == other.message.question
    }

    /// True when `answer` answers this query: same id and question, sent
    /// back to the port the query came from.
    fn answered_by(&self, answer: &DnsPacket) -> bool {
        answer.message.id == self.message.id
            && self.sent.sport == answer.delivered.dport
            && self.same_question(answer)
    }
}

/// A query Docker's embedded DNS sent upstream for the container's query.
#[derive(Clone, Debug)]
pub struct ForwardedLeg {
    pub query: DnsPacket,
    pub answer: Option<DnsPacket>,
}

/// A query the container made, and what became of it.
#[derive(Clone, Debug)]
pub struct DnsExchange {
    pub query: DnsPacket,
    pub answer: Option<DnsPacket>,
    pub forwarded: Vec<ForwardedLeg>,
    /// Copies of the query the resolver sent again (same id and port).
    pub retries: u32,
    /// Set when no answer came: how long it was waited for.
    pub waited_ns: Option<u64>,
    /// No answer came within the scope's timeout (rather than pkttrace
    /// stopping before it could).
    pub timed_out: bool,
}

impl DnsExchange {
    /// The journeys of every packet of the exchange: the query, its answer,
    /// the forwarded queries and theirs.
    pub fn journeys(&self) -> impl Iterator<Item = &Journey> {
        std::iter::once(&self.query)
            .chain(&self.answer)
            .chain(
                self.forwarded
                    .iter()
                    .flat_map(|leg| std::iter::once(&leg.query).chain(&leg.answer)),
            )
            .map(|packet| &packet.journey)
    }

    /// From the query's first event to the last event of any packet of the
    /// exchange, or to the end of the wait for an answer that did not come
    /// (kernel clock).
    pub fn span_ns(&self) -> (u64, u64) {
        let last_seen = self
            .journeys()
            .map(Journey::last_seen_ns)
            .max()
            .unwrap_or(0);
        let start = self.query.journey.first_seen_ns();
        let waited_until = self
            .waited_ns
            .map_or(0, |waited| self.query.time_ns() + waited);
        (start, last_seen.max(waited_until))
    }
}

/// What the correlator knows about the container.
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    /// Inode of the container's network namespace.
    pub netns: u32,
    /// The embedded DNS's address when resolv.conf names it: a query to
    /// another server then is dockerd forwarding one of the container's.
    pub embedded: Option<IpAddr>,
    /// A query with no answer after this long is reported as timed out.
    pub timeout_ns: u64,
}

/// Journeys finish when they go quiet, not in the order they started (a
/// query's skb can linger after its answer's is done), so packets wait this
/// long and are then taken in the order they were sent.
const HOLD_NS: u64 = 1_000_000_000;
/// Most queries waiting at once: a resolver flood cannot grow memory
/// without bound (the oldest is reported as timed out instead).
const MAX_PENDING: usize = 1024;

pub struct Correlator {
    scope: Scope,
    /// DNS packets not yet taken, in arrival order.
    arrived: Vec<DnsPacket>,
    /// Queries waiting for their answer, oldest first.
    pending: Vec<DnsExchange>,
}

impl Correlator {
    pub fn new(scope: Scope) -> Self {
        Self {
            scope,
            arrived: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Takes a finished journey: kept when it carried a DNS message through
    /// the container's namespace.
    pub fn push(&mut self, journey: Journey) {
        let in_container = journey.events.iter().any(|e| e.netns == self.scope.netns);
        if let Some(packet) = DnsPacket::of(journey).filter(|_| in_container) {
            self.arrived.push(packet);
        }
    }

    /// Takes the packets sent before `now_ns - HOLD_NS` (kernel monotonic
    /// clock) in the order they were sent; returns the exchanges answered,
    /// then those whose answer is overdue.
    pub fn advance(&mut self, now_ns: u64) -> Vec<DnsExchange> {
        let ready_before = now_ns.saturating_sub(HOLD_NS);
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.arrived)
            .into_iter()
            .partition(|p| p.time_ns() <= ready_before);
        self.arrived = later;
        let mut done = self.take(ready);
        let timeout = self.scope.timeout_ns;
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|x| now_ns.saturating_sub(x.query.time_ns()) >= timeout);
        self.pending = waiting;
        done.extend(late.into_iter().map(|x| x.unanswered(now_ns, timeout)));
        done
    }

    /// pkttrace is stopping: everything arrived is taken, and the queries
    /// still waiting are told as unanswered.
    pub fn finish(&mut self, now_ns: u64) -> Vec<DnsExchange> {
        let arrived = std::mem::take(&mut self.arrived);
        let mut done = self.take(arrived);
        let timeout = self.scope.timeout_ns;
        done.extend(
            std::mem::take(&mut self.pending)
                .into_iter()
                .map(|x| x.unanswered(now_ns, timeout)),
        );
        done
    }

    fn take(&mut self, mut packets: Vec<DnsPacket>) -> Vec<DnsExchange> {
        packets.sort_by_key(DnsPacket::time_ns);
        let mut done = Vec::new();
        for packet in packets {
            if packet.message.response {
                done.extend(self.answer(packet));
            } else {
                done.extend(self.query(packet));
            }
        }
        done
    }

    fn query(&mut self, packet: DnsPacket) -> Option<DnsExchange> {
        let Endpoints {
            sport: port,
            dst: server,
            ..
        } = packet.sent;
        if let Some(embedded) = self.scope.embedded
            && server != embedded
            && let Some(exchange) = self
                .pending
                .iter_mut()
                .rev()
                .find(|x| x.query.sent.dst == embedded && x.query.same_question(&packet))
        {
            exchange.forwarded.push(ForwardedLeg {
                query: packet,
                answer: None,
            });
            return None;
        }
        if let Some(exchange) = self.pending.iter_mut().find(|x| {
            x.query.message.id == packet.message.id
                && x.query.sent.sport == port
                && x.query.same_question(&packet)
        }) {
            exchange.retries += 1;
            return None;
        }
        self.pending.push(DnsExchange {
            query: packet,
            answer: None,
            forwarded: Vec::new(),
            retries: 0,
            waited_ns: None,
            timed_out: false,
        });
        (self.pending.len() > MAX_PENDING).then(|| {
            let oldest = self.pending.remove(0);
            let (timeout, sent) = (self.scope.timeout_ns, oldest.query.time_ns());
            oldest.unanswered(sent + timeout, timeout)
        })
    }

    fn answer(&mut self, packet: DnsPacket) -> Option<DnsExchange> {
        if let Some(at) = self
            .pending
            .iter()
            .position(|x| x.query.answered_by(&packet))
        {
            let mut exchange = self.pending.remove(at);
            exchange.answer = Some(packet);
            return Some(exchange);
        }
        let leg = self
            .pending
            .iter_mut()
            .flat_map(|x| x.forwarded.iter_mut())
            .find(|leg| leg.answer.is_none() && leg.query.answered_by(&packet))?;
        leg.answer = Some(packet);
        None
    }
}

impl DnsExchange {
    fn unanswered(mut self, now_ns: u64, timeout_ns: u64) -> Self {
        let waited = now_ns.saturating_sub(self.query.time_ns());
        self.waited_ns = Some(waited);
        self.timed_out = waited >= timeout_ns;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::tests::{EMBEDDED_DNS as EMBEDDED, assemble};
    const CLIENT_NETNS: u32 = 4026532408;
    const SECOND: u64 = 1_000_000_000;

    fn correlator() -> Correlator {
        Correlator::new(Scope {
            netns: CLIENT_NETNS,
            embedded: Some(IpAddr::from([127, 0, 0, 11])),
            timeout_ns: 5 * SECOND,
        })
    }

    /// The journeys in the order they finish live: by their last event.
    fn in_finishing_order(fixture: &str) -> Vec<Journey> {
        let mut journeys = assemble(fixture);
        journeys.sort_by_key(|j| j.events.last().map(|e| e.time_ns));
        journeys
    }

    fn question(exchange: &DnsExchange) -> String {
        let q = exchange.query.message.question.as_ref().unwrap();
        format!("{} {}", q.record_type, q.name)
    }

    #[test]
    fn every_query_gets_its_own_answer_and_forwarded_leg() {
        let journeys = in_finishing_order(EMBEDDED);
        let end = journeys.last().unwrap().events.last().unwrap().time_ns;
        let mut correlator = correlator();
        for journey in journeys {
            correlator.push(journey);
        }
        let done = correlator.advance(end + 2 * SECOND);
        let told: Vec<String> = done.iter().map(question).collect();
        assert_eq!(
            told,
            [
                "AAAA dns-server-1",
                "A dns-server-1",
                "AAAA upstream.lab",
                "A upstream.lab",
                "A nosuch.lab",
                "AAAA nosuch.lab"
            ],
            "in the order the answers came"
        );
        for exchange in &done {
            let answer = exchange.answer.as_ref().expect("answered");
            assert_eq!(answer.message.id, exchange.query.message.id);
            let latency = answer.arrival_ns() - exchange.query.time_ns();
            assert!(latency < 5_000_000, "{}: {latency} ns", question(exchange));
        }
        let forwarded = |name: &str| {
            done.iter()
                .find(|x| question(x) == name)
                .unwrap()
                .forwarded
                .clone()
        };
        assert!(
            forwarded("A dns-server-1").is_empty(),
            "dockerd knows its containers"
        );
        let leg = &forwarded("A upstream.lab")[0];
        assert_eq!(leg.query.sent.dst, IpAddr::from([198, 51, 100, 1]));
        let answer = leg.answer.as_ref().expect("upstream answered");
        assert_eq!(answer.message.answers[0].data, "198.51.100.1");
        assert_eq!(
            forwarded("A nosuch.lab")[0]
                .answer
                .as_ref()
                .unwrap()
                .message
                .rcode,
            "NXDOMAIN"
        );
    }

    #[test]
    fn packets_wait_until_earlier_ones_can_have_finished() {
        let journeys = in_finishing_order(EMBEDDED);
        let first = journeys.iter().map(|j| j.events[0].time_ns).min().unwrap();
        let mut correlator = correlator();
        for journey in journeys {
            correlator.push(journey);
        }
        assert!(correlator.advance(first + SECOND / 2).is_empty());
    }

    #[test]
    fn an_unanswered_query_times_out() {
        let mut journeys = assemble(EMBEDDED);
        journeys.retain(|j| {
            let dns = j.events.iter().find_map(|e| e.dns.as_deref());
            dns.is_some_and(|d| !d.response)
        });
        let sent = journeys[0].packet_events().next().unwrap().time_ns;
        let mut correlator = correlator();
        correlator.push(journeys.remove(0));
        assert!(correlator.advance(sent + 4 * SECOND).is_empty());
        let done = correlator.advance(sent + 5 * SECOND);
        assert_eq!(done.len(), 1);
        assert!(done[0].answer.is_none());
        assert_eq!(done[0].waited_ns, Some(5 * SECOND));
        assert!(done[0].timed_out);
    }

    #[test]
    fn stopping_tells_what_is_still_waiting() {
        let mut correlator = correlator();
        for journey in assemble(EMBEDDED) {
            correlator.push(journey);
        }
        let done = correlator.finish(0);
        assert_eq!(done.len(), 6);
        assert!(done.iter().all(|x| x.answer.is_some()));
    }
}
