//! The story of one DNS query: who asked what, which server the container
//! believes it talks to, how the packet really got there (Docker's DNAT to
//! its embedded DNS, or the path through bridge and NAT), what dockerd asked
//! upstream on its behalf, and the answer.

use std::collections::HashMap;

use serde::Serialize;

use crate::{
    decode::{
        Hook,
        dns::{Answer, Question},
    },
    enrich::{
        Topology,
        dns::{DnsSetup, SocketOwner},
    },
    journey::dns::{DnsExchange, DnsPacket, ForwardedLeg},
};

use crate::enrich::facts::Facts;

use super::{Details, Direction, Hop, Outcome, Telling, Tuple, explain};

/// How a DNS query ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueryOutcome {
    Answered,
    /// No answer came in time.
    Timeout,
    /// pkttrace stopped before an answer or the timeout.
    Stopped,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct DnsStory {
    /// The container (or namespace) that asked.
    pub container: String,
    pub question: Question,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asked_by: Option<Asker>,
    /// Where the process sent the query: `127.0.0.11:53`.
    pub asked: String,
    /// Where it arrived after every NAT on its way: dockerd's real port
    /// (`127.0.0.11:43681`), or the server itself.
    pub served_at: String,
    /// `nameserver` lines of the container's resolv.conf.
    pub resolv_conf: Vec<String>,
    /// How Docker's embedded DNS took the query (when the server is 127.0.0.11).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedDns>,
    /// The queries dockerd sent upstream for this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwarded: Vec<Forwarded>,
    pub outcome: QueryOutcome,
    /// What the steps alone do not say (no embedded DNS here, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// NOERROR, NXDOMAIN, SERVFAIL ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    pub answers: Vec<Answer>,
    /// From the query leaving the asker to the answer coming back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// How long pkttrace waited for an answer that did not come.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<f64>,
    /// Copies of the query the resolver sent again.
    pub retries: u32,
    /// The query's hops, as `pkttrace follow` tells them.
    pub query_hops: Vec<Hop>,
    /// Where the query's journey ended (last seen, for a query not answered).
    pub query_outcome: Outcome,
    /// The answer's hops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answer_hops: Vec<Hop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_outcome: Option<Outcome>,
    /// The kernel dropped events while this query was traced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub events_lost: bool,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Asker {
    pub process: String,
    /// Host pid.
    pub pid: u32,
    /// The pid inside the container's pid namespace (as the kernel numbered it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_in_container: Option<u32>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct EmbeddedDns {
    /// The rewrite of 127.0.0.11:53 to dockerd's port, as the kernel did it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnat: Option<NatSeen>,
    /// The port dockerd's socket listens on inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Who holds that socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_owner: Option<SocketOwner>,
    /// The answer's source port put back to 53.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_nat: Option<NatSeen>,
}

/// One NAT rewrite the netfilter probes saw, and the rule that asked for it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct NatSeen {
    pub hook: Hook,
    pub namespace: String,
    pub before: Tuple,
    pub after: Tuple,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Told from Docker's rule, not seen: the kernel has no netfilter
    /// programs, and this rewrite happens before any device.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Forwarded {
    /// The namespace the forwarded query left from.
    pub namespace: String,
    /// Source as it left: the container's own address and a port of dockerd's.
    pub source: String,
    pub server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Who sent it, when the kernel saw a process of that namespace do so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    pub answers: Vec<Answer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    pub hops: Vec<Hop>,
    /// Where the forwarded query's journey ended (last seen, when the
    /// upstream did not answer).
    pub outcome: Outcome,
    /// The upstream's answer on its way back to dockerd.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answer_hops: Vec<Hop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_outcome: Option<Outcome>,
}

/// What the explanation is told besides the exchange.
pub struct DnsContext<'a> {
    pub container: &'a str,
    pub setup: &'a DnsSetup,
    pub topology: &'a Topology,
    /// The facts each journey of the exchange is told with, by journey id.
    pub facts: &'a HashMap<u64, Facts>,
    /// The kernel lost events while the exchange was under way.
    pub events_lost: bool,
}

impl DnsContext<'_> {
    /// Tells one packet's journey as `follow` does.
    fn tell(&self, packet: &DnsPacket, direction: Direction) -> super::Story {
        let telling = Telling {
            direction,
            request: None,
            arp_result: None,
        };
        let no_facts = Facts::default();
        let facts = self.facts.get(&packet.journey.id).unwrap_or(&no_facts);
        explain(&packet.journey, &telling, self.topology, facts)
    }
}

/// The port a DNS client asks, which Docker's DNAT moves to dockerd's.
const DNS_PORT: u16 = 53;

pub fn explain_dns(exchange: &DnsExchange, context: &DnsContext) -> DnsStory {
    let query = &exchange.query;
    let query_story = context.tell(query, Direction::Request);
    let answer_story = exchange
        .answer
        .as_ref()
        .map(|a| context.tell(a, Direction::Reply));
    let (server, mut server_port) = (query.sent.dst, query.sent.dport);
    let transport = query_story.tuple.protocol;
    let asked_by = query.journey.events.iter().find_map(|e| {
        let (process, pid) = e.process()?;
        Some(Asker {
            process: process.to_string(),
            pid,
            pid_in_container: (e.ns_pid != 0 && e.ns_pid != pid).then_some(e.ns_pid),
        })
    });
    let to_embedded_dns =
        context.setup.uses_embedded_dns() && server == crate::enrich::dns::EMBEDDED_DNS;
    let hooks_unseen = context
        .facts
        .get(&query.journey.id)
        .is_some_and(|facts| facts.hooks_unseen);
    let embedded = to_embedded_dns.then(|| {
        let listener = context.setup.embedded_listener(transport);
        let mut dnat = nat_seen(
            &query_story.hops,
            listener.and_then(|l| l.dnat_rule.clone()),
        );
        let mut reply_nat = answer_story
            .as_ref()
            .and_then(|a| nat_seen(&a.hops, listener.and_then(|l| l.snat_rule.clone())));
        // Unseen, the rewrite still happened: the first device already
        // shows dockerd's port, which only Docker's DNAT of port 53 leads to.
        if let Some(listener) = listener.filter(|l| {
            hooks_unseen && dnat.is_none() && l.dnat_rule.is_some() && l.port == server_port
        }) {
            let namespace = query_story
                .hops
                .first()
                .map(|h| h.namespace.clone())
                .unwrap_or_default();
            let after = Tuple::of(&query.journey.first_packet());
            let before = Tuple {
                dport: Some(DNS_PORT),
                ..after
            };
            dnat = Some(NatSeen {
                hook: Hook::Output,
                namespace: namespace.clone(),
                before,
                after,
                rule: listener.dnat_rule.clone(),
                inferred: true,
            });
            // The answer's rewrite only when there was an answer.
            reply_nat = answer_story
                .as_ref()
                .and(listener.snat_rule.clone())
                .map(|rule| NatSeen {
                    hook: Hook::Postrouting,
                    namespace,
                    before: after.reversed(),
                    after: before.reversed(),
                    rule: Some(rule),
                    inferred: true,
                });
            server_port = DNS_PORT;
        }
        EmbeddedDns {
            dnat,
            port: listener.map(|l| l.port),
            socket_owner: listener.map(|l| l.owner.clone()),
            reply_nat,
        }
    });
    let answer = exchange.answer.as_ref();
    DnsStory {
        container: context.container.to_string(),
        question: query.message.question.clone().unwrap_or(Question {
            name: "?".into(),
            record_type: "?".into(),
        }),
        transport,
        asked_by,
        asked: std::net::SocketAddr::new(server, server_port).to_string(),
        served_at: std::net::SocketAddr::new(query.delivered.dst, query.delivered.dport).to_string(),
        resolv_conf: context
            .setup
            .nameservers
            .iter()
            .map(ToString::to_string)
            .collect(),
        embedded,
        forwarded: exchange
            .forwarded
            .iter()
            .map(|leg| forwarded(leg, context))
            .collect(),
        outcome: match (answer, exchange.timed_out) {
            (Some(_), _) => QueryOutcome::Answered,
            (None, true) => QueryOutcome::Timeout,
            (None, false) => QueryOutcome::Stopped,
        },
        note: (!context.setup.uses_embedded_dns()).then(|| {
            format!(
                "no embedded DNS in {}: its resolv.conf names the server itself (as on Docker's default bridge), so the query leaves through its own interface",
                context.container
            )
        }),
        rcode: answer.map(|a| a.message.rcode.clone()),
        answers: answer.map(|a| a.message.answers.clone()).unwrap_or_default(),
        latency_ms: answer.map(|a| latency_ms(query, a)),
        waited_ms: exchange.waited_ns.map(|ns| ns as f64 / 1e6),
        retries: exchange.retries,
        query_hops: query_story.hops,
        query_outcome: query_story.outcome,
        answer_outcome: answer_story.as_ref().map(|a| a.outcome.clone()),
        answer_hops: answer_story.map(|a| a.hops).unwrap_or_default(),
        events_lost: context.events_lost,
    }
}

/// From the query leaving its sender to the answer reaching it.
fn latency_ms(query: &DnsPacket, answer: &DnsPacket) -> f64 {
    answer.arrival_ns().saturating_sub(query.time_ns()) as f64 / 1e6
}

fn forwarded(leg: &ForwardedLeg, context: &DnsContext) -> Forwarded {
    let sent = leg.query.sent;
    // Its first hop, not a route lookup: a lookup is joined to a journey by
    // its addresses alone, and another packet's (the host's, forwarding an
    // earlier one) may come first.
    let first = leg.query.journey.packet_events().next();
    let story = context.tell(&leg.query, Direction::Request);
    let answer_story = leg
        .answer
        .as_ref()
        .map(|a| context.tell(a, Direction::Reply));
    Forwarded {
        namespace: first.map_or_else(String::new, |e| context.topology.owner_label(e.netns)),
        source: std::net::SocketAddr::new(sent.src, sent.sport).to_string(),
        server: std::net::SocketAddr::new(sent.dst, sent.dport).to_string(),
        device: leg
            .query
            .journey
            .events
            .iter()
            .find(|e| {
                !e.ifname.is_empty()
                    && context
                        .topology
                        .interface(e.netns, e.ifindex)
                        .is_none_or(|i| i.kind != crate::enrich::LinkKind::Loopback)
            })
            .map(|e| e.ifname.to_string()),
        sent_by: leg
            .query
            .journey
            .events
            .iter()
            .find_map(|e| e.process().map(|(name, pid)| format!("{name} (pid {pid})"))),
        rcode: leg.answer.as_ref().map(|a| a.message.rcode.clone()),
        answers: leg
            .answer
            .as_ref()
            .map(|a| a.message.answers.clone())
            .unwrap_or_default(),
        latency_ms: leg.answer.as_ref().map(|a| latency_ms(&leg.query, a)),
        hops: story.hops,
        outcome: story.outcome,
        answer_outcome: answer_story.as_ref().map(|a| a.outcome.clone()),
        answer_hops: answer_story.map(|a| a.hops).unwrap_or_default(),
    }
}

/// The first NAT rewrite among `hops`, with the rule the caller found for it.
fn nat_seen(hops: &[Hop], rule: Option<String>) -> Option<NatSeen> {
    hops.iter().find_map(|hop| match &hop.details {
        Details::Nat {
            hook,
            before,
            after,
            ..
        } => Some(NatSeen {
            hook: *hook,
            namespace: hop.namespace.clone(),
            before: *before,
            after: *after,
            rule: rule.clone(),
            inferred: false,
        }),
        _ => None,
    })
}
