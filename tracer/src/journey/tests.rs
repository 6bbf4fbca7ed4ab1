use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::decode::{DropReason, RouteFor};

/// Decoded events recorded from real runs on the lab (container 172.17.0.2 on
/// docker0, upstream 198.51.100.129 behind the host's 198.51.100.130).
pub fn recorded(fixture: &str) -> Vec<Event> {
    fixture
        .lines()
        .map(|line| serde_json::from_str(line).expect("fixture line is an Event"))
        .collect()
}

pub const ICMP_MASQUERADE: &str = include_str!("fixtures/icmp_masquerade.jsonl");
pub const FORWARDING_DISABLED: &str = include_str!("fixtures/forwarding_disabled.jsonl");
pub const DOCKER_USER_DROP: &str = include_str!("fixtures/docker_user_drop.jsonl");
pub const TCP_REFUSED: &str = include_str!("fixtures/tcp_refused.jsonl");
/// `nslookup` of dns-server-1, upstream.lab and nosuch.lab from dns-client-1 on a
/// user-defined network (embedded DNS forwarding to the lab's dnsmasq at
/// 198.51.100.1), recorded with `pkttrace dns --save-events`.
pub const EMBEDDED_DNS: &str = include_str!("fixtures/embedded_dns.jsonl");
/// The failure stories, recorded with `pkttrace follow server-1 ... --probe ...
/// --save-events` on `cargo xtask lab`: 198.51.100.99, on the upstream's
/// segment but nobody's (ARP unanswered, NEIGH_FAILED, ICMP host unreachable).
pub const NEIGH_FAILED: &str = include_str!("fixtures/neigh_failed.jsonl");
/// UDP to 198.51.100.1:5353, where nothing listens.
pub const UDP_CLOSED_PORT: &str = include_str!("fixtures/udp_closed_port.jsonl");

/// `follow pt-upstream 198.51.100.254 --probe icmp` with pt-upstream's
/// neighbour cache flushed (--save-events): the probe's lookups, its ARP
/// who-has, the echo request queued until the answer came.
pub const COLD_ARP_FROM_NETNS: &str = include_str!("fixtures/cold_arp_from_netns.jsonl");

/// `cargo xtask demo` on a fresh lab (--save-events): every ARP cache cold,
/// so pt-upstream answers the host's who-has just before the echo reply,
/// from and to the very addresses the reply has.
pub const COLD_DEMO: &str = include_str!("fixtures/cold_demo.jsonl");

/// Two `nc` in server-1 connecting at once to 198.51.100.1:7777, where
/// nothing listens (--save-events): the second SYN's lookups come while the
/// first connection's SYN and reset are still under way.
pub const TWO_CONNECTIONS_REFUSED: &str = include_str!("fixtures/two_connections_refused.jsonl");

/// A UDP probe from server-1 to 198.51.100.1:7777, where a python echo
/// server answers: both datagrams are read by sockets, seen by socket only.
pub const UDP_ECHO: &str = include_str!("fixtures/udp_echo.jsonl");

/// Three datagrams from netns ptx (10.202.0.2, sender on CPU 0) to a python
/// socket on the host (10.202.0.1:5300, reader on CPU 1), recorded with
/// --save-events: CPU 0 frees each skb (`skb_defer_free_flush`) when it next
/// runs its network softirq, 100-300 ms after the read.
pub const UDP_DEFERRED_FREE: &str = include_str!("fixtures/udp_deferred_free.jsonl");

pub fn assemble(fixture: &str) -> Vec<Journey> {
    assemble_events(recorded(fixture))
}

fn assemble_events(events: Vec<Event>) -> Vec<Journey> {
    let mut assembler = Assembler::new(100_000_000);
    for event in events {
        assembler.push(event);
    }
    let mut journeys = assembler.take_all();
    journeys.sort_by_key(|j| j.events[0].time_ns);
    journeys
}

const CONTAINER: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 17, 0, 2));
const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 130));
const UPSTREAM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 129));

#[test]
fn one_skb_across_namespaces_and_nat_is_one_journey() {
    let journeys = assemble(ICMP_MASQUERADE);
    assert_eq!(journeys.len(), 2, "an echo request and its reply");
    let (request, reply) = (&journeys[0], &journeys[1]);
    assert_eq!(
        (request.first_packet().src, request.first_packet().dst),
        (CONTAINER, UPSTREAM)
    );
    assert_eq!(
        (request.last_packet().src, request.last_packet().dst),
        (HOST, UPSTREAM),
        "after MASQUERADE"
    );
    assert_eq!(
        (reply.first_packet().src, reply.first_packet().dst),
        (UPSTREAM, HOST)
    );
    assert_eq!(reply.last_packet().dst, CONTAINER, "after de-NAT");
    assert!(reply.answers(&Asked::of(request)));
}

#[test]
fn the_senders_route_lookup_joins_the_packet_it_routed() {
    let journeys = assemble(ICMP_MASQUERADE);
    let first = &journeys[0].events[0];
    let EventKind::Route { gateway, table, .. } = first.kind else {
        panic!("starts with the route lookup")
    };
    assert_eq!((gateway, table), (Some(IpAddr::from([172, 17, 0, 1])), 254));
    assert_eq!(first.comm, "ping");
}

#[test]
fn the_raw_socket_copy_joins_the_reply() {
    let journeys = assemble(ICMP_MASQUERADE);
    let reply = &journeys[1];
    let read = reply
        .events
        .iter()
        .find(|e| e.kind == EventKind::SocketRead)
        .expect("ping read the reply");
    assert_eq!(read.comm, "ping");
}

#[test]
fn a_drop_ends_the_journey() {
    for (fixture, reason) in [
        (FORWARDING_DISABLED, "IP_INADDRERRORS"),
        (DOCKER_USER_DROP, "NETFILTER_DROP"),
    ] {
        let journeys = assemble(fixture);
        assert_eq!(journeys.len(), 1, "no reply to a dropped request");
        let last = journeys[0]
            .events
            .iter()
            .rev()
            .find(|e| !matches!(e.kind, EventKind::Route { .. }))
            .unwrap();
        assert!(
            matches!(&last.kind, EventKind::Drop { reason: r, .. } if r.kernel_name() == reason),
            "{:?}",
            last.kind
        );
    }
}

#[test]
fn a_reset_answers_the_syn() {
    let journeys = assemble(TCP_REFUSED);
    assert_eq!(journeys.len(), 2);
    assert!(journeys[1].answers(&Asked::of(&journeys[0])));
}

#[test]
fn quiet_journeys_finish_and_busy_ones_stay_open() {
    let events = recorded(ICMP_MASQUERADE);
    let last_time = assemble(ICMP_MASQUERADE)[1].events.last().unwrap().time_ns;
    let mut assembler = Assembler::new(100_000_000);
    events.into_iter().for_each(|e| assembler.push(e));
    assert!(
        assembler.take_finished(last_time + 1_000).is_empty(),
        "both were busy a moment ago"
    );
    let finished = assembler.take_finished(last_time + 100_000_000);
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[0].first_packet().src, CONTAINER, "oldest first");
}

/// A look right after a sweep does not look again; the next sweep, a tenth
/// of the quiet time later, tells what went quiet meanwhile.
#[test]
fn open_journeys_are_looked_through_once_per_sweep() {
    let events = recorded(ICMP_MASQUERADE);
    let last_time = assemble(ICMP_MASQUERADE)[1].events.last().unwrap().time_ns;
    let quiet = 100_000_000;
    let mut assembler = Assembler::new(quiet);
    events.into_iter().for_each(|e| assembler.push(e));
    // The request went quiet before the reply did.
    assert_eq!(assembler.take_finished(last_time + quiet - 1).len(), 1);
    assert!(
        assembler.take_finished(last_time + quiet).is_empty(),
        "swept a moment ago"
    );
    let told = assembler.take_finished(last_time + quiet - 1 + quiet / 10);
    assert_eq!(told.len(), 1);
}

/// `count` transmits of the recorded ping, each its own skb, 1 ns apart;
/// `distinct` gives each its own IP id (else they look alike).
fn flood(count: u64, distinct: bool) -> Assembler {
    let template = recorded(ICMP_MASQUERADE)
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::Transmit { .. }))
        .unwrap();
    let mut assembler = Assembler::new(u64::MAX);
    for n in 0..count {
        let mut event = template.clone();
        event.skb += n * 256;
        if distinct {
            event.packet.ip_id = n as u16;
        }
        event.time_ns += n;
        assembler.push(event);
    }
    assembler
}

#[test]
fn a_flood_cannot_grow_the_open_set_without_bound() {
    let mut assembler = flood(MAX_OPEN as u64 + 10, true);
    let evicted = assembler.take_finished(0);
    assert_eq!(evicted.len(), 10, "the oldest are finished early");
    assert_eq!(evicted[0].id, 1);
    assert_eq!(assembler.take_all().len(), MAX_OPEN);
}

/// The DF datagrams of one flow all carry IP id 0: a flood of them looks
/// like one packet seen again and again, and must not make one journey
/// grow without bound.
#[test]
fn lookalike_packets_cannot_grow_one_journey_without_bound() {
    let sizes: Vec<usize> = flood(3 * MAX_EVENTS as u64, false)
        .take_all()
        .iter()
        .map(|j| j.events.len())
        .collect();
    assert_eq!(sizes, vec![MAX_EVENTS; 3]);
}

#[test]
fn a_reused_skb_address_does_not_join_two_lookalike_packets() {
    // Two SYN+ACKs (IP id 0, same length) of different connections, one skb slot.
    let template = recorded(ICMP_MASQUERADE)
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::Transmit { .. }))
        .unwrap();
    let syn_ack = |src: [u8; 4], dst: [u8; 4], time: u64| {
        let mut event = template.clone();
        event.packet.src = IpAddr::from(src);
        event.packet.dst = IpAddr::from(dst);
        event.packet.ip_id = 0;
        event.packet.transport = Transport::Tcp {
            sport: 80,
            dport: 40000,
            flags: 0x12,
            seq: 1,
            ack: 2,
            payload: Some(0),
        };
        event.time_ns = time;
        event
    };
    let mut assembler = Assembler::new(100_000_000);
    assembler.push(syn_ack([127, 0, 0, 1], [127, 0, 0, 1], 1_000));
    assembler.push(syn_ack([172, 17, 0, 2], [172, 17, 0, 1], 2_000));
    assert_eq!(assembler.take_all().len(), 2);
}

#[test]
fn an_icmp_error_answers_the_packet_it_quotes_even_without_conntrack() {
    let mut journeys = assemble(UDP_CLOSED_PORT);
    for journey in &mut journeys {
        for event in &mut journey.events {
            event.conntrack = None;
        }
    }
    let request = journeys
        .iter()
        .find(|j| {
            matches!(
                j.first_packet().transport,
                Transport::Udp { dport: 5353, .. }
            )
        })
        .expect("the datagram");
    let error = journeys
        .iter()
        .find(|j| {
            matches!(
                j.first_packet().transport,
                Transport::Icmp { icmp_type: 3, .. }
            )
        })
        .expect("the port unreachable");
    assert!(
        error.answers(&Asked::of(request)),
        "it quotes the datagram as it arrived"
    );
    let other = journeys
        .iter()
        .find(|j| matches!(j.first_packet().transport, Transport::Arp { .. }))
        .expect("an ARP exchange of the run");
    assert!(!error.answers(&Asked::of(other)), "nor anything else");
}

#[test]
fn a_packet_waiting_for_arp_keeps_its_journey_open_until_the_neighbour_fails() {
    let events = recorded(NEIGH_FAILED);
    let drop = events
        .iter()
        .find(|e| {
            matches!(
                &e.kind,
                EventKind::Drop {
                    reason: DropReason::NeighFailed,
                    ..
                }
            )
        })
        .expect("the drop three seconds later")
        .clone();
    let mut assembler = Assembler::new(100_000_000);
    for event in events.into_iter().filter(|e| e.time_ns < drop.time_ns) {
        assembler.push(event);
    }
    let before = drop.time_ns - 1_000;
    assert!(
        assembler.take_finished(before).iter().all(|j| !matches!(
            j.first_packet().transport,
            Transport::Icmp { icmp_type: 8, .. }
        )),
        "the echo request still waits in the neighbour's queue"
    );
    assembler.push(drop);
    let finished = assembler.take_finished(before + 1_000_000_000);
    let request = finished
        .iter()
        .find(|j| {
            matches!(
                j.first_packet().transport,
                Transport::Icmp { icmp_type: 8, .. }
            )
        })
        .expect("finished once dropped");
    assert!(
        request.events.iter().any(|e| matches!(
            &e.kind,
            EventKind::Drop {
                reason: DropReason::NeighFailed,
                ..
            }
        )),
        "the drop joined the journey of the packet it ended"
    );
}

#[test]
fn two_resets_of_one_port_and_ip_id_0_are_two_packets() {
    // A port reused by the next connection: the resets differ only in their
    // acknowledgement numbers (each answers its own SYN's random sequence).
    let journeys = assemble(TCP_REFUSED);
    let reset = journeys
        .iter()
        .flat_map(|j| j.events.iter())
        .find(|e| matches!(e.packet.transport, Transport::Tcp { flags, .. } if flags & 0x04 != 0))
        .expect("the recording's reset")
        .clone();
    let with_ack = |ack: u32, skb: u64, time: u64| {
        let mut event = reset.clone();
        event.skb = skb;
        event.time_ns = time;
        event.packet.ip_id = 0;
        if let Transport::Tcp { ack: a, .. } = &mut event.packet.transport {
            *a = ack;
        }
        event
    };
    let mut assembler = Assembler::new(100_000_000);
    assembler.push(with_ack(1_000, 0xa00, 1_000));
    assembler.push(with_ack(2_000, 0xb00, 3_000_000));
    assert_eq!(
        assembler.take_all().len(),
        2,
        "not one journey and its clone"
    );
}

#[test]
fn a_datagram_read_seen_by_its_socket_joins_the_datagram_it_read() {
    let journeys = assemble(UDP_ECHO);
    let reads: Vec<(&Journey, &Event)> = journeys
        .iter()
        .flat_map(|j| {
            j.events
                .iter()
                .filter(|e| e.kind == EventKind::SocketRead)
                .map(move |e| (j, e))
        })
        .collect();
    assert_eq!(reads.len(), 2, "the echo server's read and the probe's");
    for (journey, read) in &reads {
        assert_ne!(read.skb, 0, "given the skb of the datagram it read");
        assert_eq!(read.packet, journey.last_packet());
    }
    let (request, _) = reads
        .iter()
        .find(|(_, read)| read.comm == "python3")
        .expect("python3 read the probe");
    assert!(matches!(
        request.first_packet().transport,
        Transport::Udp { dport: 7777, .. }
    ));
}

fn assert_each_datagram_read_and_no_free_in(journeys: &[Journey]) {
    let datagrams: Vec<&Journey> = journeys
        .iter()
        .filter(|j| matches!(j.first_packet().transport, Transport::Udp { .. }))
        .collect();
    assert_eq!(datagrams.len(), 3, "one journey per datagram");
    for journey in datagrams {
        assert!(
            journey
                .events
                .iter()
                .any(|e| e.kind == EventKind::SocketRead),
            "python3's read joined journey {}",
            journey.id
        );
        assert!(
            !journey.events.iter().any(|e| e.kind.is_deferred_free()),
            "a deferred free is no hop of journey {}",
            journey.id
        );
    }
}

#[test]
fn a_deferred_free_is_no_hop_and_does_not_keep_the_read_out() {
    let events = recorded(UDP_DEFERRED_FREE);
    assert_eq!(
        events.iter().filter(|e| e.kind.is_deferred_free()).count(),
        2,
        "the fixture has the frees of the first two datagrams"
    );
    assert_each_datagram_read_and_no_free_in(&assemble_events(events.clone()));

    // The free may also be reported just before the read that caused it
    // (the reader's CPU reports the read after handing the skb back).
    let mut raced = events;
    let frees: Vec<usize> = (0..raced.len())
        .filter(|&i| raced[i].kind.is_deferred_free())
        .collect();
    for at in frees.into_iter().rev() {
        let free = raced.remove(at);
        let read_at = raced
            .iter()
            .position(|e| {
                e.kind == EventKind::SocketRead
                    && e.time_ns > raced.iter().find(|p| p.skb == free.skb).unwrap().time_ns
            })
            .expect("the read of the freed datagram");
        let mut free = free;
        free.time_ns = raced[read_at].time_ns - 2_000;
        raced.insert(read_at, free);
    }
    assert_each_datagram_read_and_no_free_in(&assemble_events(raced));
}

/// A busy reader (dockerd under load) may read a datagram later than the
/// quiet time: its journey waits for the read instead of ending in the kernel.
#[test]
fn a_datagram_queued_for_a_slow_reader_waits_for_its_read() {
    let events = recorded(UDP_DEFERRED_FREE);
    let first_read = events
        .iter()
        .position(|e| e.kind == EventKind::SocketRead)
        .expect("the first datagram's read");
    let mut read = events[first_read].clone();
    let delivered = events[first_read - 1].time_ns;
    let mut assembler = Assembler::new(QUIET_NS);
    for event in events[..first_read]
        .iter()
        .filter(|e| !e.kind.is_deferred_free())
    {
        assembler.push(event.clone());
    }
    let datagram = |journeys: &[Journey]| {
        journeys
            .iter()
            .any(|j| matches!(j.first_packet().transport, Transport::Udp { .. }))
    };
    let quiet_long_since = delivered + 3 * QUIET_NS;
    assert!(
        !datagram(&assembler.take_finished(quiet_long_since)),
        "still waiting for its reader"
    );
    read.time_ns = quiet_long_since;
    assembler.push(read);
    let told = assembler.take_finished(quiet_long_since + READ_WAIT_NS);
    let journey = told
        .iter()
        .find(|j| matches!(j.first_packet().transport, Transport::Udp { .. }))
        .expect("told once read and quiet");
    assert!(
        journey
            .events
            .iter()
            .any(|e| e.kind == EventKind::SocketRead)
    );
}

#[test]
fn a_datagram_read_no_delivered_datagram_fits_is_dropped() {
    let mut events = recorded(UDP_ECHO);
    for event in &mut events {
        if event.kind == EventKind::SocketRead && event.skb == 0 {
            event.packet.transport = Transport::Udp { sport: 0, dport: 9 };
        }
    }
    let mut assembler = Assembler::new(100_000_000);
    for event in events {
        assembler.push(event);
    }
    let journeys = assembler.take_all();
    assert!(
        journeys
            .iter()
            .flat_map(|j| &j.events)
            .all(|e| e.kind != EventKind::SocketRead),
        "a read of port 9 read none of these"
    );
}

/// The kernel's events of a run, as a recording of it keeps them (every
/// journey's, in kernel time): the recordings the engine's tests tell again.
fn events_of(recording: &str) -> Vec<Event> {
    // A recording is JSON Lines; each journey line carries its events.
    let mut events: Vec<Event> = recording
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|record| record["record"] == "journey")
        .flat_map(|record| {
            serde_json::from_value::<Vec<Event>>(record["journey"]["events"].clone()).unwrap()
        })
        .collect();
    events.sort_by_key(|e| e.time_ns);
    events
}

macro_rules! recording {
    ($name:literal) => {
        include_str!(concat!("../session/recordings/", $name, ".jsonl"))
    };
}

/// The far namespace's lookup for its answer is tied to the request's skb
/// by the kernel side (same CPU, back to its source): it joins the
/// request, whatever time passed.
#[test]
fn a_failed_lookup_for_the_answer_joins_the_request_by_its_skb() {
    let journeys = assemble_events(events_of(recording!("no_route_back")));
    let request = &journeys[0];
    let back = request
        .events
        .iter()
        .find(|e| {
            matches!(
                e.kind,
                EventKind::Route {
                    route_for: RouteFor::AnswerTo,
                    ..
                }
            )
        })
        .expect("the lookup back joined the request");
    assert_eq!(back.packet.dst, request.first_packet().src);
    assert!(back.kind.is_failed_route());
}

/// A sender's lookup that found no route, and no packet after it: a
/// journey of that lookup alone, once the packet cannot come any more.
#[test]
fn a_refused_send_is_a_journey_of_its_lookups() {
    let events = events_of(recording!("no_route_at_source"));
    let last = events.last().unwrap().time_ns;
    let mut assembler = Assembler::new(100_000_000);
    for event in events {
        assembler.push(event);
    }
    assert!(
        assembler.take_finished(last).is_empty(),
        "a packet may still follow"
    );
    let refused = assembler.take_finished(last + 200_000_000);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].never_sent());
    assert!(assembler.take_all().is_empty(), "told once");
}

/// One packet going round a routing loop until its TTL runs out makes
/// hundreds of events of one live skb: one journey, from its send to its
/// drop, not cut in pieces.
#[test]
fn a_packet_in_a_routing_loop_is_one_journey() {
    let journeys = assemble_events(events_of(recording!("routing_loop")));
    let request = &journeys[0];
    assert!(request.events.len() > 150, "{}", request.events.len());
    assert!(matches!(
        request.events.last().unwrap().kind,
        EventKind::Drop {
            reason: DropReason::IpInHdr,
            ..
        }
    ));
    let ttls: Vec<u8> = request
        .packet_events()
        .map(|e| e.packet.ttl)
        .filter(|t| *t > 0)
        .collect();
    assert_eq!(ttls.first(), Some(&64));
    assert_eq!(ttls.last(), Some(&1));
    assert!(
        journeys[1..]
            .iter()
            .all(|j| j.first_packet().src != request.first_packet().src),
        "no piece of the request told apart"
    );
}

/// The lookup the probe's refused send made (EMSGSIZE, its route found)
/// is taken by the sender's pid, namespace and destination.
#[test]
fn a_senders_lookup_is_taken_for_its_refused_send() {
    let events = events_of(recording!("fragmentation_needed"));
    let lookup = events
        .iter()
        .rev()
        .find(|e| matches!(e.kind, EventKind::Route { .. }) && e.in_task == Some(true))
        .unwrap()
        .clone();
    let mut assembler = Assembler::new(100_000_000);
    assembler.push(lookup.clone());
    assert!(
        assembler
            .take_sender_lookup(lookup.pid + 1, lookup.netns, lookup.packet.dst, 0)
            .is_none(),
        "another process's"
    );
    let journey = assembler
        .take_sender_lookup(lookup.pid, lookup.netns, lookup.packet.dst, lookup.time_ns)
        .expect("the lookup");
    assert!(journey.never_sent());
    assert!(
        assembler
            .take_sender_lookup(lookup.pid, lookup.netns, lookup.packet.dst, 0)
            .is_none(),
        "taken once"
    );
}

/// Past the limit for lookalike packets, events of one skb still alive
/// are one packet's: they stay one journey.
#[test]
fn a_live_skb_may_make_more_events_than_lookalikes() {
    let template = events_of(recording!("routing_loop"))
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::Transmit { .. }))
        .unwrap();
    let mut assembler = Assembler::new(100_000_000);
    for n in 0..(MAX_EVENTS as u64 * 2) {
        let mut event = template.clone();
        event.time_ns += n * 1_000;
        event.kind = if n % 2 == 0 {
            EventKind::Transmit { mac_dst: None }
        } else {
            EventKind::Receive {
                mac_src: None,
                mac_dst: None,
            }
        };
        assembler.push(event);
    }
    let journeys = assembler.take_all();
    assert_eq!(journeys.len(), 1);
    assert_eq!(journeys[0].events.len(), MAX_EVENTS * 2);
}

/// ARP is below routing: the sender's lookups made before its who-has are
/// the IP packet's, which waits for the answer; the ARP message claims none,
/// and the packet does not claim the kernel's check of the neighbour's
/// address type (a lookup in table local with no protocol, made as it
/// starts to ask ARP), which would tell a wrong table.
#[test]
fn the_senders_route_goes_to_its_packet_not_to_the_arp_it_waited_for() {
    let journeys = assemble(COLD_ARP_FROM_NETNS);
    let routes_of = |journey: &Journey| {
        journey
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Route { .. }) && e.in_task == Some(true))
            .count()
    };
    let (arp, ip): (Vec<&Journey>, Vec<&Journey>) = journeys
        .iter()
        .partition(|j| matches!(j.first_packet().transport, Transport::Arp { .. }));
    assert!(arp.iter().all(|j| routes_of(j) == 0));
    let request = ip
        .iter()
        .find(|j| {
            matches!(
                j.first_packet().transport,
                Transport::Icmp { icmp_type: 8, .. }
            )
        })
        .unwrap();
    assert!(routes_of(request) >= 1, "{:?}", request.events);
    let senders_tables: Vec<u32> = request
        .events
        .iter()
        .filter(|e| e.in_task == Some(true))
        .filter_map(|e| match e.kind {
            EventKind::Route { table, .. } => Some(table),
            _ => None,
        })
        .collect();
    assert!(
        senders_tables.iter().all(|&t| t == 254),
        "{senders_tables:?}"
    );
}

/// The kernel's lookup for an echo reply is the reply's own, even when an
/// ARP reply between the same two addresses went out just before it.
#[test]
fn an_answers_route_is_not_taken_by_the_arp_reply_before_it() {
    let journeys = assemble(COLD_DEMO);
    let reply = journeys
        .iter()
        .find(|j| {
            matches!(
                j.first_packet().transport,
                Transport::Icmp { icmp_type: 0, .. }
            )
        })
        .expect("the echo reply");
    let sender = reply.events[0].netns;
    assert!(
        reply
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Route { table: 254, .. }) && e.netns == sender),
        "{:#?}",
        reply.events
    );
    for arp in journeys
        .iter()
        .filter(|j| matches!(j.first_packet().transport, Transport::Arp { .. }))
    {
        assert!(
            !arp.events
                .iter()
                .any(|e| matches!(e.kind, EventKind::Route { .. })),
            "{:#?}",
            arp.events
        );
    }
}

/// Each SYN has the lookups its own `nc` made, and each reset the lookup its
/// kernel made for it, though the second connection came while the first
/// one's packets were still under way, between the same addresses.
#[test]
fn concurrent_connections_each_keep_their_own_routes() {
    let journeys = assemble(TWO_CONNECTIONS_REFUSED);
    let tcp = |flags: u8| -> Vec<&Journey> {
        journeys
            .iter()
            .filter(|j| matches!(j.first_packet().transport, Transport::Tcp { flags: f, .. } if f == flags))
            .collect()
    };
    let (syns, resets) = (tcp(0x02), tcp(0x14));
    assert_eq!((syns.len(), resets.len()), (2, 2), "{journeys:#?}");
    for syn in syns {
        let sender = syn
            .packet_events()
            .find(|e| e.in_task == Some(true))
            .expect("sent in its connect")
            .pid;
        let lookups: Vec<u32> = syn
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Route { .. }) && e.in_task == Some(true))
            .map(|e| e.pid)
            .collect();
        assert!(
            !lookups.is_empty() && lookups.iter().all(|&pid| pid == sender),
            "{lookups:?} for {sender}"
        );
    }
    for reset in resets {
        let answers = reset
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::Route {
                        route_for: RouteFor::AnswerTo,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(answers, 1, "{:#?}", reset.events);
    }
}

/// Two senders' SYNs that both waited for ARP leave from a softirq, in no
/// task: each takes the lookups of one sender, not one SYN both.
#[test]
fn packets_sent_after_an_arp_wait_take_one_senders_lookups_each() {
    // As if both had waited 5 ms for ARP: every packet event after both
    // senders' lookups, and the SYNs' outside any task.
    let mut events: Vec<Event> = recorded(TWO_CONNECTIONS_REFUSED)
        .into_iter()
        .map(|mut event| {
            if !matches!(event.kind, EventKind::Route { .. }) {
                event.time_ns += 5_000_000;
                let syn = matches!(event.packet.transport, Transport::Tcp { flags, .. } if flags & 0x12 == 0x02);
                if syn {
                    event.in_task = Some(false);
                }
            }
            event
        })
        .collect();
    events.sort_by_key(|event| event.time_ns);
    let journeys = assemble_events(events);
    let senders: Vec<Vec<u32>> = journeys
        .iter()
        .filter(|j| {
            matches!(j.first_packet().transport, Transport::Tcp { flags, .. } if flags & 0x12 == 0x02)
        })
        .map(|j| {
            let mut pids: Vec<u32> = j
                .events
                .iter()
                .filter(|e| matches!(e.kind, EventKind::Route { .. }) && e.in_task == Some(true))
                .map(|e| e.pid)
                .collect();
            pids.dedup();
            pids
        })
        .collect();
    assert_eq!(senders.len(), 2, "{senders:?}");
    assert!(senders.iter().all(|pids| pids.len() == 1), "{senders:?}");
    assert_ne!(senders[0], senders[1], "{senders:?}");
}
