//! Real runs told again. Every recording in `recordings/` was made
//! by an integration test on the real lab (see recordings/README.md): the
//! journeys the kernel's events made, the topology and the facts read for
//! each. They are told again here by the teller `follow` and `replay` use,
//! the terminal text is a snapshot, and the typed values the JSON carries
//! are checked against what the lab was. `pkttrace dns` records nothing:
//! its test alone runs recorded events on a topology built by hand.

use std::net::IpAddr;

use crate::decode::{DropReason, EventKind, Hook, MAIN_TABLE, NatSide, RouteResult};
use crate::enrich::{
    Container, DockerNetwork, Interface, InterfaceRef, LinkKind, Namespace, Owner, Topology,
    facts::{Facts, RuleAction},
};
use crate::explain::*;
use crate::journey::tests::assemble;
use crate::journey::{Journey, exchanges::Role};
use crate::render::terminal::Palette;
use crate::session::recording::{Record, Recording};

macro_rules! recording {
    ($name:literal) => {
        include_str!(concat!("recordings/", $name, ".jsonl"))
    };
}

/// A recording told again: every story and no-reply line as the terminal
/// shows them (without colours), and what they were told from.
struct Told {
    stories: Vec<Story>,
    no_replies: Vec<NoReply>,
    text: String,
    topology: Topology,
    /// The journeys, roles and facts, in the order told.
    journeys: Vec<(Journey, Role, Facts)>,
}

impl Told {
    fn requests(&self) -> Vec<&Story> {
        self.stories
            .iter()
            .filter(|s| s.direction == Direction::Request)
            .collect()
    }

    /// The reply to `request`.
    fn reply_to(&self, request: &Story) -> &Story {
        self.stories
            .iter()
            .find(|s| s.reply_to == Some(request.journey))
            .unwrap_or_else(|| panic!("a reply to #{}: {}", request.journey, self.text))
    }

    /// The story's JSON, as `--json` prints it, checked against the JSON
    /// Schema `pkttrace schema follow` prints.
    fn json(story: &Story) -> serde_json::Value {
        let line = serde_json::from_str(&crate::render::json::render(story)).unwrap();
        follow_schema().validate(&line).unwrap_or_else(|error| {
            panic!(
                "the schema refuses {line:#}: {error} at {}",
                error.instance_path()
            )
        });
        line
    }
}

/// `pkttrace schema follow`, compiled once.
fn follow_schema() -> &'static jsonschema::Validator {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema: serde_json::Value = serde_json::from_str(&crate::render::schema::schema(
            crate::render::schema::Output::Follow,
        ))
        .unwrap();
        jsonschema::validator_for(&schema).expect("a valid JSON Schema")
    })
}

/// Every story of every recording, and every no-reply line, is what the
/// schema says: the schema is made from the types, this checks it against
/// what they serialize to.
#[test]
fn every_recorded_story_is_valid_by_the_shipped_schema() {
    for recording in RECORDINGS {
        let told = tell(recording);
        for story in &told.stories {
            Told::json(story);
        }
        for no_reply in &told.no_replies {
            let line = serde_json::from_str(&crate::render::json::no_reply(no_reply)).unwrap();
            assert!(follow_schema().is_valid(&line), "{line:#}");
        }
    }
    let losses = crate::render::json::losses(
        crate::render::json::SCHEMA_VERSION,
        10,
        &[("kfree_skb".into(), 2)],
        &[],
    );
    assert!(follow_schema().is_valid(&serde_json::from_str(&losses).unwrap()));
    let wrong = serde_json::json!({"schema_version": 3, "record": "journey", "hops": "none"});
    assert!(
        !follow_schema().is_valid(&wrong),
        "the schema says something"
    );
}

const RECORDINGS: &[&str] = &[
    recording!("icmp_masquerade"),
    recording!("cold_arp"),
    recording!("forwarding_disabled"),
    recording!("docker_user_drop"),
    recording!("tcp_reset_by_reject"),
    recording!("reject"),
    recording!("udp_closed_port"),
    recording!("left_through_ifb"),
    recording!("neigh_failed"),
    recording!("same_bridge"),
    recording!("unicast_flood"),
    recording!("published_port_proxy"),
    recording!("beyond_tap_echo"),
    recording!("beyond_tap_unreachable"),
    recording!("beyond_tun_echo"),
    recording!("beyond_time_exceeded"),
    recording!("no_route_at_source"),
    recording!("no_route_back"),
    recording!("unreachable_route"),
    recording!("blackhole_route"),
    recording!("fragmentation_needed"),
    recording!("ttl_one"),
    recording!("routing_loop"),
    recording!("unpublished_port"),
    recording!("network_none"),
    recording!("overlay_ping"),
    recording!("overlay_underlay_drop"),
];

fn plain(story: &Story) -> String {
    anstream::adapter::strip_str(&crate::render::terminal::render(story, Palette::COLOR))
        .to_string()
}

/// Tells `recording` as `pkttrace replay` does.
fn tell(recording: &str) -> Told {
    tell_with(recording, |_, _| {})
}

/// Tells `recording`, each journey's facts changed by `change` first.
fn tell_with(recording: &str, change: impl Fn(&mut Journey, &mut Facts)) -> Told {
    let Recording { header, records } = Recording::parse(recording.as_bytes()).unwrap();
    let mut teller = Storyteller::new(header.destination.port, header.published, header.proxy);
    let mut told = Told {
        stories: Vec::new(),
        no_replies: Vec::new(),
        text: String::new(),
        topology: Topology {
            namespaces: Vec::new(),
            containers: Vec::new(),
            docker_error: None,
            docker_networks: Vec::new(),
            host_netns: 0,
            inactive_containers: Vec::new(),
            engines: Vec::new(),
        },
        journeys: Vec::new(),
    };
    for record in records {
        match record {
            Record::Topology { topology } => told.topology = *topology,
            Record::Journey {
                mut journey,
                role,
                facts,
            } => {
                let mut facts = *facts;
                change(&mut journey, &mut facts);
                let story = teller.story(&journey, role, &told.topology, &facts);
                told.text += &(plain(&story) + "\n");
                told.stories.push(story);
                told.journeys.push((journey, role, facts));
            }
            Record::NoReply {
                request,
                waited_ms,
                events_lost,
            } => {
                let no_reply = teller
                    .no_reply(request, waited_ms, events_lost, &told.topology)
                    .expect("a told request");
                told.text += &(anstream::adapter::strip_str(&crate::render::terminal::no_reply(
                    &no_reply,
                    Palette::COLOR,
                ))
                .to_string()
                    + "\n");
                told.no_replies.push(no_reply);
            }
            Record::Header(_) | Record::End { .. } => {}
        }
    }
    told
}

fn hops_of<'a>(story: &'a Story, kind: &str) -> Vec<&'a Hop> {
    story
        .hops
        .iter()
        .filter(|h| h.details.kind() == kind)
        .collect()
}

const ICMP_MASQUERADE: &str = recording!("icmp_masquerade");

#[test]
fn icmp_through_masquerade_and_back() {
    let told = tell(ICMP_MASQUERADE);
    let request = Told::json(told.requests()[0]);
    let kinds: Vec<&str> = request["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[..3], ["send", "veth", "bridge"]);
    for kind in ["route", "forward", "netfilter", "nat", "receive"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let nat = request["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["kind"] == "nat")
        .unwrap();
    assert_eq!(
        (nat["hook"].as_str(), nat["nat"].as_str()),
        (Some("POSTROUTING"), Some("source"))
    );
    assert_eq!(nat["before"]["src"], request["tuple"]["src"]);
    // MASQUERADE takes the address of the host's device it leaves by.
    let after: IpAddr = nat["after"]["src"].as_str().unwrap().parse().unwrap();
    let host = told.topology.namespace(told.topology.host_netns).unwrap();
    let out = host
        .interfaces
        .iter()
        .find(|i| Some(i.name.as_str()) == nat["device"].as_str())
        .unwrap();
    assert!(out.addresses.iter().any(|(a, _)| *a == after), "{nat}");
    let reply = Told::json(told.reply_to(told.requests()[0]));
    assert_eq!(reply["answer"]["origin"]["kind"], "kernel");
    let deliver = reply["hops"].as_array().unwrap().last().unwrap();
    assert_eq!(deliver["kind"], "deliver");
    insta::assert_snapshot!(told.text);
}

/// Demo #2 on the picture: the request's arrow goes from the host's IP
/// stack through the upstream's veth, the device the host sent it out of, and from
/// there into the upstream's namespace; it does not skip that device.
#[test]
fn the_picture_draws_a_veth_crossing_through_the_end_it_went_in_by() {
    let told = tell(ICMP_MASQUERADE);
    let report = crate::enrich::report::Report::build(
        &crate::enrich::Wiring::of_topology(told.topology.clone()),
        None,
    );
    let dot = crate::render::topology::journey::render(&report, &told.stories);
    let host = told.topology.host_netns;
    // The veth the request left the host by, to the upstream's namespace.
    let uplink_name = told.requests()[0]
        .hops
        .iter()
        .find_map(|hop| match &hop.details {
            Details::Veth {
                peer_device,
                peer_netns,
                ..
            } if *peer_netns == host && hop.netns != host => Some(peer_device),
            _ => None,
        })
        .unwrap();
    let uplink = told
        .topology
        .namespace(host)
        .unwrap()
        .interfaces
        .iter()
        .find(|i| &i.name == uplink_name)
        .unwrap()
        .ifindex;
    let uplink_node = format!("if_{host}_{uplink}");
    let request_arrows: Vec<&str> = dot
        .lines()
        .filter(|l| {
            l.contains(crate::render::topology::journey::REQUEST_COLOUR) && l.contains(" -- ")
        })
        .collect();
    assert!(
        request_arrows
            .iter()
            .any(|l| l.contains(&format!("stack_{host} -- {uplink_node} "))),
        "{request_arrows:#?}"
    );
    assert!(
        request_arrows
            .iter()
            .any(|l| l.contains(&format!("{uplink_node} -- if_"))),
        "{request_arrows:#?}"
    );
}

/// A fresh lab: the container and the host must ARP before sending; the
/// lookups ARP makes are not the packet's route.
#[test]
fn cold_arp_caches_are_waited_for_not_mistaken_for_routes() {
    let told = tell(recording!("cold_arp"));
    let request = told.requests()[0];
    let routed_in: Vec<&str> = hops_of(request, "route")
        .iter()
        .map(|h| h.namespace.as_str())
        .collect();
    assert_eq!(
        routed_in.len(),
        2,
        "one decision in the host, one where it arrives: {routed_in:?}"
    );
    assert_eq!(routed_in[0], "host");
    assert!(
        request.hops[0].arp_wait.is_some(),
        "the sender waited for its gateway's MAC"
    );
    insta::assert_snapshot!(told.text);
}

#[test]
fn forwarding_disabled_is_named_with_its_sysctl() {
    let told = tell(recording!("forwarding_disabled"));
    let drop = hops_of(told.requests()[0], "drop")[0];
    let Details::Drop { hint, reason, .. } = &drop.details else {
        unreachable!()
    };
    assert_eq!(*reason, DropReason::IpInAddrErrors);
    assert!(hint.contains("forwarding is off on"), "{hint}");
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_drop_rule_in_docker_user_is_a_netfilter_drop_in_forward() {
    let told = tell(recording!("docker_user_drop"));
    let Ending::Dropped {
        hook, rule, reason, ..
    } = &told.requests()[0].outcome.ending
    else {
        panic!("{}", told.text)
    };
    assert_eq!(
        (reason.clone(), *hook),
        (DropReason::NetfilterDrop, Some(Hook::Forward))
    );
    let rule = rule.as_ref().expect("the rule nf_tables traced");
    assert_eq!(
        (rule.chain.as_str(), rule.action),
        ("DOCKER-USER", RuleAction::Drop)
    );
    insta::assert_snapshot!(told.text);
}

/// The kernel side sends no after-NAT event when no NAT changed the packet:
/// the hook's entry is then told alone, with conntrack's word (which comes
/// after PREROUTING's and OUTPUT's entry) from the packet's next hook, and a
/// later hook's NAT is not taken for its own.
#[test]
fn a_hook_without_its_after_nat_event_is_told_the_same() {
    let recording = recording!("udp_closed_port");
    let all = tell(recording);
    let left_out = std::cell::Cell::new(0);
    let thinned = tell_with(recording, |journey, _| {
        let events = journey.events.clone();
        journey.events.retain(|e| match e.kind {
            EventKind::Netfilter {
                hook,
                side: NatSide::After,
                ..
            } => {
                // Kept only where its entry saw another packet (a NAT).
                let entry = events.iter().rev().find(|b| {
                    b.time_ns < e.time_ns
                        && b.skb == e.skb
                        && matches!(b.kind, EventKind::Netfilter { hook: h, side: NatSide::Before, .. } if h == hook)
                });
                let kept = entry.is_some_and(|b| b.packet != e.packet);
                left_out.set(left_out.get() + usize::from(!kept));
                kept
            }
            _ => true,
        });
    });
    let texts = |story: &Story| {
        story
            .hops
            .iter()
            .map(|h| h.text.clone())
            .collect::<Vec<_>>()
    };
    for (before, after) in all.stories.iter().zip(&thinned.stories) {
        assert_eq!(texts(before), texts(after));
    }
    let nat_hops = hops_of(thinned.requests()[0], "nat").len();
    assert_eq!(nat_hops, 1, "the host's MASQUERADE, once");
    // The recording holds what the kernel sent: only NATs' after-NAT events.
    assert_eq!(
        left_out.get(),
        0,
        "recorded with the after-NAT events already thinned"
    );
}

#[test]
fn a_reset_from_a_reject_rule_answers_in_the_destinations_name() {
    let told = tell(recording!("tcp_reset_by_reject"));
    let reply = told.reply_to(told.requests()[0]);
    let answer = reply.answer.as_ref().unwrap();
    assert_eq!(
        answer.kind,
        outcome::AnswerKind::Reset { by_firewall: true }
    );
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_story_told_around_lost_events_says_so() {
    let lost = tell_with(ICMP_MASQUERADE, |_, facts| facts.events_lost = true);
    let request = lost.requests()[0];
    assert!(plain(request).contains("the kernel dropped events while this packet was traced"));
    assert_eq!(Told::json(request)["events_lost"], true);
    let complete = tell(ICMP_MASQUERADE);
    assert!(
        Told::json(complete.requests()[0])
            .get("events_lost")
            .is_none(),
        "only said when it happened"
    );
}

#[test]
fn two_containers_on_one_bridge_are_switched_with_fdb_evidence() {
    let told = tell(recording!("same_bridge"));
    let request = told.requests()[0];
    let Details::Bridge { decision, .. } = &hops_of(request, "bridge")[0].details else {
        unreachable!()
    };
    assert!(
        matches!(
            decision,
            BridgeDecision::Switched {
                fdb: FdbSaid::OnThatPort,
                ..
            }
        ),
        "{decision:?}"
    );
    // Switched, not routed: and a bridge's hooks are no routing loop.
    for kind in ["nat", "forward", "route", "loop"] {
        for story in &told.stories {
            assert!(hops_of(story, kind).is_empty(), "no {kind}: {}", told.text);
        }
    }
    insta::assert_snapshot!(told.text);
}

/// Two Docker hosts, one Swarm overlay: the frame is wrapped in VXLAN in
/// host-a's overlay namespace, crosses the underlay as a UDP datagram
/// that both hosts' netfilter sees, and is unwrapped on host-b; the reply
/// the same way back.
#[test]
fn an_overlay_packet_is_wrapped_carried_and_unwrapped() {
    let told = tell(recording!("overlay_ping"));
    let request = told.requests()[0];
    for (story, from, to) in [
        (request, "host-a", "host-b"),
        (told.reply_to(request), "host-b", "host-a"),
    ] {
        let Details::Encap {
            vni: Some(vni),
            outer: Some(outer),
            endpoint: Some(endpoint),
        } = &hops_of(story, "encap")[0].details
        else {
            panic!("{}", told.text)
        };
        assert_eq!(*endpoint, outer.dst, "the VXLAN FDB names the far end");
        assert_eq!((*vni, outer.vni, outer.dport), (4097, 4097, 4789));
        let hops = &story.hops;
        let wrapped = hops
            .iter()
            .position(|h| h.details.kind() == "encap")
            .unwrap();
        let unwrapped = hops
            .iter()
            .position(|h| h.details.kind() == "decap")
            .unwrap();
        let underlay = &hops[wrapped + 1..unwrapped];
        assert!(underlay.len() >= 3, "{}", told.text);
        for hop in underlay {
            assert_eq!(hop.tunnel.as_ref(), Some(outer), "{}", told.text);
            assert!(
                hop.namespace.starts_with("Docker host "),
                "{}",
                hop.namespace
            );
        }
        assert_eq!(
            hops[wrapped].namespace,
            format!("overlay network ovl's namespace on {from}")
        );
        assert_eq!(
            hops[unwrapped].namespace,
            format!("overlay network ovl's namespace on {to}")
        );
        let Details::Decap {
            outer: Some(carried),
            ..
        } = &hops[unwrapped].details
        else {
            panic!("{}", told.text)
        };
        assert_eq!(carried, outer);
        // No hop of the tunnel is told as the packet's own: the story's
        // tuple stays the containers'.
        assert!(story.tuple.src.to_string().starts_with("10.250.0."));
    }
    insta::assert_snapshot!(told.text);
}

/// host-b drops UDP 4789: the datagram carrying the ping dies in its INPUT,
/// the rule is named from nf_tables' trace of the outer datagram, and the
/// verdict says what that means for the overlay.
#[test]
fn a_drop_on_the_underlay_is_the_tunnels_datagram_and_its_rule() {
    let told = tell(recording!("overlay_underlay_drop"));
    let request = told.requests()[0];
    let Ending::Dropped {
        namespace, rule, ..
    } = &request.outcome.ending
    else {
        panic!("{}", told.text)
    };
    assert_eq!(namespace, "Docker host host-b");
    assert!(rule.as_ref().unwrap().text.contains("udp dport 4789"));
    assert!(request.hops.last().unwrap().tunnel.is_some());
    let verdict = &told.no_replies[0].verdict;
    let verdict::Cause::InTunnel { tunnel, cause } = &verdict.cause else {
        panic!("{verdict:?}")
    };
    assert_eq!(tunnel.dport, 4789);
    assert!(
        matches!(**cause, verdict::Cause::FirewallRule { .. }),
        "{cause:?}"
    );
    insta::assert_snapshot!(told.text);
}

/// The bridge had forgotten the server's MAC: the request is flooded to the
/// server and the bystander, whose kernel discards its copy (OTHERHOST);
/// the story follows the copy that arrived.
#[test]
fn a_frame_for_an_unknown_mac_is_flooded_and_the_other_copies_discarded() {
    let told = tell(recording!("unicast_flood"));
    let request = told.requests()[0];
    let Details::Bridge { decision, .. } = &hops_of(request, "bridge")[0].details else {
        unreachable!()
    };
    let BridgeDecision::Flooded { ports } = decision else {
        panic!("{decision:?}")
    };
    assert_eq!(ports.len(), 2);
    assert!(
        hops_of(request, "loop").is_empty(),
        "a bridge's hooks for each copy are no loop: {}",
        told.text
    );
    assert!(plain(request).contains("discarded it: not addressed to it (OTHERHOST)"));
    assert!(
        matches!(request.outcome.ending, Ending::TakenIn { .. }),
        "{}",
        told.text
    );
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_next_hop_that_never_answers_arp_is_told_from_the_failed_neighbour() {
    let told = tell(recording!("neigh_failed"));
    assert!(
        told.text.contains("no ARP reply came: nothing there owns"),
        "{}",
        told.text
    );
    let request = told
        .requests()
        .into_iter()
        .find(|s| s.tuple.protocol == "icmp")
        .unwrap();
    assert!(matches!(
        &request.outcome.ending,
        Ending::Dropped {
            reason: DropReason::NeighFailed,
            ..
        }
    ));
    let answer = told.reply_to(request).answer.as_ref().unwrap();
    assert!(matches!(answer.origin, Origin::Kernel { .. }));
    assert!(
        answer
            .text
            .contains("got no ARP reply, so it dropped the request"),
        "{}",
        answer.text
    );
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_reject_rule_is_named_and_its_icmp_error_is_the_reply() {
    let told = tell(recording!("reject"));
    assert!(
        told.text.contains("the host's own REJECT rule sent this"),
        "{}",
        told.text
    );
    let Ending::Dropped {
        rule: Some(rule), ..
    } = &told.requests()[0].outcome.ending
    else {
        panic!("{}", told.text)
    };
    assert_eq!(rule.action, RuleAction::Reject);
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_closed_udp_port_answers_port_unreachable() {
    let told = tell(recording!("udp_closed_port"));
    assert!(
        told.text.contains("unreachable — no process listens there"),
        "{}",
        told.text
    );
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_packet_freed_by_the_device_it_left_by_is_no_receive() {
    let told = tell(recording!("left_through_ifb"));
    let Ending::Left {
        device_kind,
        freed_by,
        ..
    } = &told.requests()[0].outcome.ending
    else {
        panic!("{}", told.text)
    };
    assert_eq!(
        (device_kind, freed_by.as_deref()),
        (&LinkKind::Ifb, Some("ifb_xmit"))
    );
    assert!(
        hops_of(told.requests()[0], "receive").is_empty(),
        "{}",
        told.text
    );
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_published_port_on_localhost_is_carried_on_by_the_proxy() {
    let told = tell(recording!("published_port_proxy"));
    assert!(
        told.stories.iter().any(|s| s.second_leg_of.is_some()),
        "{}",
        told.text
    );
    assert!(told.stories[0].note.is_some(), "how the port is served");
    insta::assert_snapshot!(told.text);
}

/// The origin of an answer that first arrived through `device`, from beyond it.
fn beyond(story: &Story) -> (&str, &LinkKind) {
    match &story.answer.as_ref().expect("an answer").origin {
        Origin::Beyond {
            device,
            device_kind,
            ..
        } => (device, device_kind),
        origin => panic!("not from beyond: {origin:?}"),
    }
}

#[test]
fn an_echo_reply_from_beyond_a_tap_is_the_far_hosts() {
    let told = tell(recording!("beyond_tap_echo"));
    let request = told.requests()[0];
    let reply = told.reply_to(request);
    let Ending::Left { device, .. } = &request.outcome.ending else {
        panic!("{}", told.text)
    };
    assert_eq!(beyond(reply), (device.as_str(), &LinkKind::Tap));
    assert_eq!(reply.answer.as_ref().unwrap().from, request.tuple.dst);
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_routers_error_from_beyond_a_tap_invents_nothing_here() {
    let told = tell(recording!("beyond_tap_unreachable"));
    let request = told.requests()[0];
    assert!(hops_of(request, "drop").is_empty());
    let answer = told.reply_to(request).answer.as_ref().unwrap();
    assert_eq!(beyond(told.reply_to(request)).1, &LinkKind::Tap);
    assert!(!answer.text.contains("ARP"), "{}", answer.text);
    assert_ne!(
        answer.from, request.tuple.dst,
        "a router's, not the destination's"
    );
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_tun_device_has_no_mac_addresses() {
    let told = tell(recording!("beyond_tun_echo"));
    let request = told.requests()[0];
    let Ending::Left {
        next_hop_mac,
        device_kind,
        ..
    } = &request.outcome.ending
    else {
        panic!("{}", told.text)
    };
    assert_eq!((next_hop_mac, device_kind), (&None, &LinkKind::Tun));
    assert_eq!(beyond(told.reply_to(request)).1, &LinkKind::Tun);
    insta::assert_snapshot!(told.text);
}

#[test]
fn time_exceeded_from_beyond_is_that_routers() {
    let told = tell(recording!("beyond_time_exceeded"));
    let reply = told.reply_to(told.requests()[0]);
    assert_eq!(beyond(reply).1, &LinkKind::Tap);
    insta::assert_snapshot!(told.text);
}

#[test]
fn no_route_at_the_source_is_told_with_the_namespaces_routes() {
    let told = tell(recording!("no_route_at_source"));
    let request = told.requests()[0];
    let Ending::NotSent { why, netns, .. } = &request.outcome.ending else {
        panic!("{}", told.text)
    };
    let NotSent::NoRoute {
        result,
        routes,
        default_route,
        ..
    } = why
    else {
        panic!("{why:?}")
    };
    assert_eq!((*result, *default_route), (RouteResult::NoMatch, false));
    let namespace = told.topology.namespace(*netns).unwrap();
    let unicast = namespace
        .routes
        .iter()
        .filter(|r| r.table == MAIN_TABLE && r.kind == crate::enrich::RouteKind::Unicast)
        .count();
    assert_eq!(
        routes.len(),
        unicast,
        "every route of table main: {routes:?}"
    );
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_network_without_masquerading_gets_no_route_back() {
    let told = tell(recording!("no_route_back"));
    let request = told.requests()[0];
    let Ending::TakenIn {
        no_route_back: Some(back),
        ..
    } = &request.outcome.ending
    else {
        panic!("{}", told.text)
    };
    assert_eq!(back.to, request.tuple.src);
    let unmasqueraded = request.hops.iter().any(|h| {
        matches!(
            &h.details,
            Details::Netfilter {
                not_masqueraded_by: Some(_),
                ..
            }
        )
    });
    assert!(unmasqueraded, "{}", told.text);
    assert_eq!(told.no_replies.len(), 1);
    insta::assert_snapshot!(told.text);
}

#[test]
fn an_unreachable_route_refuses_and_the_host_answers() {
    let told = tell(recording!("unreachable_route"));
    let request = told.requests()[0];
    let route = hops_of(request, "route");
    assert!(
        route.iter().any(
            |h| matches!(&h.details, Details::Route(r) if r.result == RouteResult::Unreachable)
        ),
        "{}",
        told.text
    );
    let answer = told.reply_to(request).answer.as_ref().unwrap();
    assert!(matches!(answer.origin, Origin::Kernel { .. }));
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_blackhole_route_drops_without_a_word() {
    let told = tell(recording!("blackhole_route"));
    let request = told.requests()[0];
    assert!(
        hops_of(request, "route")
            .iter()
            .any(|h| matches!(&h.details, Details::Route(r) if r.result == RouteResult::Blackhole)),
        "{}",
        told.text
    );
    assert_eq!(told.stories.len(), 1, "nothing answered");
    insta::assert_snapshot!(told.text);
}

#[test]
fn fragmentation_needed_and_the_path_mtu_learned_from_it() {
    let told = tell(recording!("fragmentation_needed"));
    let requests = told.requests();
    assert!(matches!(
        &requests[0].outcome.ending,
        Ending::Dropped {
            reason: DropReason::PktTooBig,
            ..
        }
    ));
    let answer = told.reply_to(requests[0]).answer.as_ref().unwrap();
    assert!(matches!(
        answer.kind,
        outcome::AnswerKind::Error {
            next_hop_mtu: Some(1280),
            ..
        }
    ));
    assert!(matches!(
        &requests[1].outcome.ending,
        Ending::NotSent {
            why: NotSent::TooBig {
                path_mtu: Some(1280),
                ..
            },
            ..
        }
    ));
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_ttl_of_one_runs_out_at_the_first_router() {
    let told = tell(recording!("ttl_one"));
    let answer = told.reply_to(told.requests()[0]).answer.as_ref().unwrap();
    assert!(answer.text.contains("the 1st router"), "{}", answer.text);
    insta::assert_snapshot!(told.text);
}

#[test]
fn a_routing_loop_is_told_once_and_counted() {
    let told = tell(recording!("routing_loop"));
    let request = told.requests()[0];
    let folded = hops_of(request, "loop");
    let [loop_hop] = folded.as_slice() else {
        panic!("one loop hop: {}", told.text)
    };
    let Details::Loop {
        namespaces,
        rounds,
        ttl_from,
        ttl_to,
    } = &loop_hop.details
    else {
        unreachable!()
    };
    assert_eq!(namespaces.len(), 2);
    assert!(*rounds > 20 && ttl_from > ttl_to, "{loop_hop:?}");
    let answer = told.reply_to(request).answer.as_ref().unwrap();
    assert!(
        answer.text.contains("routing loop between"),
        "{}",
        answer.text
    );
    insta::assert_snapshot!(told.text);
}

/// Without colours (a pipe, a file) the story is the coloured one with its
/// styles taken out, drawn without them in the first place.
#[test]
fn the_plain_palette_draws_the_coloured_story_without_styles() {
    for story in tell(ICMP_MASQUERADE).stories {
        let coloured = crate::render::terminal::render(&story, Palette::COLOR);
        let plain = crate::render::terminal::render(&story, Palette::PLAIN);
        assert_ne!(coloured, plain);
        assert_eq!(anstream::adapter::strip_str(&coloured).to_string(), plain);
    }
}

/// `--step` shows the same text in pieces: the header, one piece per hop,
/// then how it ended.
#[test]
fn steps_are_the_story_cut_at_each_hop() {
    for story in tell(ICMP_MASQUERADE).stories {
        let steps = crate::render::terminal::render_steps(&story, Palette::COLOR);
        assert_eq!(steps.len(), story.hops.len() + 2);
        assert_eq!(
            steps.concat(),
            crate::render::terminal::render(&story, Palette::COLOR)
        );
        assert!(steps[1..=story.hops.len()].iter().all(|s| !s.is_empty()));
    }
}

/// `--svg`: the ping and its reply drawn on the lab's picture (DOT text).
#[test]
fn the_journey_picture_of_a_ping_through_masquerade() {
    use crate::{enrich::report::Report, render::topology::journey};
    let told = tell(ICMP_MASQUERADE);
    let report = Report::build(
        &crate::enrich::Wiring::of_topology(told.topology.clone()),
        None,
    );
    let dot = journey::render(&report, &told.stories);
    for story in &told.stories {
        let colour = match story.direction {
            Direction::Request => journey::REQUEST_COLOUR,
            Direction::Reply => journey::REPLY_COLOUR,
        };
        let arrows = dot
            .lines()
            .filter(|l| l.contains("dir=forward") && l.contains(colour))
            .count();
        assert!(arrows > 1, "{colour}: {dot}");
    }
}

/// The lab the DNS events were recorded on, built by hand (`pkttrace dns`
/// records no topology): dns-client-1 on network ptdns (bridge
/// br-e91aaeeb4e86), the upstream 198.51.100.1 behind the host's pt-up-host.
fn dns_lab() -> Topology {
    const HOST: u32 = 4026531833;
    const CLIENT: u32 = 4026532408;
    const UPSTREAM: u32 = 4026532178;
    let interface = |ifindex, name: &str, kind, address: Option<(IpAddr, u8)>| Interface {
        ifindex,
        name: name.into(),
        kind,
        mac: None,
        mtu: None,
        addresses: address.into_iter().collect(),
        up: true,
        lower_up: true,
        master: None,
        peer: None,
        driver: None,
        vxlan: None,
    };
    let veth = |ifindex, name: &str, address, peer: (u32, u32)| Interface {
        peer: Some(InterfaceRef {
            netns: peer.0,
            ifindex: peer.1,
        }),
        ..interface(ifindex, name, LinkKind::Veth, address)
    };
    let namespace = |inode, owner, interfaces| Namespace {
        inode,
        owner,
        netns_names: Vec::new(),
        interfaces,
        routes: Vec::new(),
        ip_forward: Some(true),
        nsfs_path: None,
    };
    let bridge = interface(
        2494,
        "br-e91aaeeb4e86",
        LinkKind::Bridge,
        Some((IpAddr::from([172, 18, 0, 1]), 16)),
    );
    let port = Interface {
        master: Some(2494),
        ..veth(2498, "veth03a3a6c", None, (CLIENT, 2497))
    };
    let uplink = veth(
        2491,
        "pt-up-host",
        Some((IpAddr::from([198, 51, 100, 254]), 24)),
        (UPSTREAM, 2),
    );
    Topology {
        namespaces: vec![
            namespace(HOST, Owner::Host, vec![bridge, uplink, port]),
            namespace(
                CLIENT,
                Owner::Container {
                    name: "dns-client-1".into(),
                    id: "c14e2a8ea686".into(),
                },
                vec![
                    interface(
                        1,
                        "lo",
                        LinkKind::Loopback,
                        Some((IpAddr::from([127, 0, 0, 1]), 8)),
                    ),
                    veth(
                        2497,
                        "eth0",
                        Some((IpAddr::from([172, 18, 0, 3]), 16)),
                        (HOST, 2498),
                    ),
                ],
            ),
            Namespace {
                netns_names: vec!["pt-upstream".into()],
                ..namespace(
                    UPSTREAM,
                    Owner::NetnsName("pt-upstream".into()),
                    vec![veth(
                        2,
                        "eth0",
                        Some((IpAddr::from([198, 51, 100, 1]), 24)),
                        (HOST, 2491),
                    )],
                )
            },
        ],
        containers: vec![Container {
            id: "c14e2a8ea686".into(),
            name: "dns-client-1".into(),
            pid: 4242,
            netns: CLIENT,
            sandbox_key: String::new(),
            networks: Vec::new(),
            dns: Vec::new(),
            network_mode: Default::default(),
            paused: false,
            image: String::new(),
            command: Vec::new(),
            published: Vec::new(),
            engine: String::new(),
        }],
        docker_error: None,
        docker_networks: vec![DockerNetwork {
            name: "ptdns".into(),
            id: "9f0c".into(),
            driver: "bridge".into(),
            bridge: Some("br-e91aaeeb4e86".into()),
            subnets: vec![(IpAddr::from([172, 18, 0, 0]), 16)],
            masquerade: true,
            engine: String::new(),
        }],
        host_netns: HOST,
        inactive_containers: Vec::new(),
        engines: Vec::new(),
    }
}

/// `pkttrace dns dns-client-1` on the recording of three nslookups: each
/// query's entry as the terminal shows it.
#[test]
fn dns_entries_tell_the_embedded_dns_and_the_forwarded_leg() {
    use crate::enrich::dns::{DnsSetup, EmbeddedListener, SocketOwner};
    use crate::journey::dns::{Correlator, Scope};

    let mut correlator = Correlator::new(Scope {
        netns: 4026532408,
        embedded: Some(IpAddr::from([127, 0, 0, 11])),
        timeout_ns: 5_000_000_000,
    });
    for journey in assemble(crate::journey::tests::EMBEDDED_DNS) {
        correlator.push(journey);
    }
    let setup = DnsSetup {
        nameservers: vec![IpAddr::from([127, 0, 0, 11])],
        embedded: vec![EmbeddedListener {
            protocol: "udp".into(),
            port: 45513,
            owner: SocketOwner {
                process: "dockerd".into(),
                pid: 8682,
            },
            dnat_rule: Some(
                "ip nat DOCKER_OUTPUT: ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:45513"
                    .into(),
            ),
            snat_rule: Some(
                "ip nat DOCKER_POSTROUTING: ip saddr 127.0.0.11 udp sport 45513 snat to :53".into(),
            ),
        }],
        ruleset_error: None,
    };
    let topology = dns_lab();
    // As read on that lab: the host forwards on both devices.
    let forwarding = |device: &str| {
        (
            topology.host_netns,
            crate::enrich::Ipv4Settings {
                device: device.into(),
                forwarding: Some(true),
                all_forwarding: Some(true),
                rp_filter: Some(0),
                all_rp_filter: Some(0),
                ipv6: false,
            },
        )
    };
    let facts = Facts {
        ipv4: vec![forwarding("pt-up-host"), forwarding("br-e91aaeeb4e86")],
        ..Facts::default()
    };
    let told: String = correlator
        .finish(u64::MAX)
        .iter()
        .map(|exchange| {
            let facts = exchange
                .journeys()
                .map(|journey| (journey.id, facts.clone()))
                .collect();
            let context = dns::DnsContext {
                container: "dns-client-1",
                setup: &setup,
                topology: &topology,
                facts: &facts,
                events_lost: false,
            };
            crate::render::dns::render(&dns::explain_dns(exchange, &context))
        })
        .collect();
    insta::assert_snapshot!(anstream::adapter::strip_str(&told).to_string());
}

/// `diff` of the lecture's forwarding experiment, from two real runs: A
/// forwarded, B (forwarding off) dropped at the same place; they part at
/// the forward hop, B's side says why with its verdict and the fix.
#[test]
fn diff_parts_where_forwarding_was_turned_off() {
    use crate::explain::compare::{Telling, compare};
    let worked = tell(ICMP_MASQUERADE);
    let failed = tell(recording!("forwarding_disabled"));
    let a = Telling {
        stories: worked.stories.clone(),
        no_replies: Vec::new(),
    };
    assert!(compare(&a, &a).same, "a run compared with itself");
    // The same run, but its request dropped where A's was forwarded, as
    // the failed run's request was (its own namespaces' names differ).
    let mut request = worked.requests()[0].clone();
    let forward = request
        .hops
        .iter()
        .position(|h| h.details.kind() == "forward")
        .expect("A forwards");
    let failed_request = failed.requests()[0];
    let mut drop = hops_of(failed_request, "drop")[0].clone();
    drop.namespace = request.hops[forward].namespace.clone();
    drop.device = request.hops[forward].device.clone();
    request.hops.truncate(forward);
    request.hops.push(drop);
    request.outcome = failed_request.outcome.clone();
    let mut no_reply = failed.no_replies[0].clone();
    no_reply.request = request.journey;
    let b = Telling {
        stories: vec![request],
        no_replies: vec![no_reply],
    };
    let compared = compare(&a, &b);
    assert!(!compared.same);
    let parting = compared.exchanges[0].parting.as_ref().expect("they part");
    assert_eq!(parting.same_hops, forward);
    assert_eq!(
        parting.a.as_ref().map(|h| h.details.kind()),
        Some("forward")
    );
    assert_eq!(parting.b.as_ref().map(|h| h.details.kind()), Some("drop"));
    assert!(
        parting
            .why
            .starts_with("B was dropped here: forwarding is off"),
        "{}",
        parting.why
    );
    let action = parting.action.as_ref().expect("the fix");
    assert!(
        action.command.contains(".forwarding=1"),
        "{}",
        action.command
    );
}

/// Demo 0: the host's port refused, and the container that listens on it
/// in its own namespace named, with how to publish it.
#[test]
fn an_unpublished_port_names_the_container_that_listens() {
    let told = tell(recording!("unpublished_port"));
    let request = told.requests()[0];
    let reply = told.reply_to(request);
    let verdict = reply.verdict.as_ref().expect("a verdict on the reset");
    let crate::explain::verdict::Cause::NotPublished {
        container,
        listening_on,
        listener_is_its_command,
        ..
    } = &verdict.cause
    else {
        panic!("{}", told.text)
    };
    let (_, journey_topology) = (container, &told.topology);
    let listener = journey_topology
        .container(container)
        .expect("the container, as Docker named it");
    assert_eq!(
        listening_on,
        &format!(
            "{}:{}",
            listener.networks[0].ip.unwrap(),
            listener.command[3]
        )
    );
    assert!(listener_is_its_command);
    insta::assert_snapshot!(told.text);
}

/// A container with --network none: no packet is made, and the verdict
/// says how to connect it.
#[test]
fn a_container_without_a_network_is_told_how_to_connect_it() {
    let told = tell(recording!("network_none"));
    let request = told.requests()[0];
    let verdict = request
        .verdict
        .as_ref()
        .expect("a verdict on the send never made");
    assert!(matches!(
        verdict.cause,
        crate::explain::verdict::Cause::NetworkNone { .. }
    ));
    insta::assert_snapshot!(told.text);
}

/// A kernel without BPF netfilter programs, made from a real run by
/// taking out what they saw: the journey as it would have been recorded.
fn without_netfilter_programs(journey: &mut Journey, facts: &mut Facts) {
    journey
        .events
        .retain(|e| !matches!(e.kind, EventKind::Netfilter { .. }));
    facts.hooks_unseen = true;
}

fn inferred_rewrites(story: &Story) -> Vec<(usize, Hook, NatKind, &Hop)> {
    story
        .hops
        .iter()
        .enumerate()
        .filter_map(|(at, hop)| match &hop.details {
            Details::Nat {
                hook,
                nat,
                inferred: true,
                ..
            } => Some((at, *hook, *nat, hop)),
            _ => None,
        })
        .collect()
}

#[test]
fn without_netfilter_programs_the_masquerade_is_told_from_the_addresses() {
    let full = tell(ICMP_MASQUERADE);
    let full_request = full.requests()[0];
    assert!(
        inferred_rewrites(full_request).is_empty()
            && inferred_rewrites(full.reply_to(full_request)).is_empty(),
        "nothing is inferred when the hooks are seen"
    );
    let full_nat = hops_of(full_request, "nat")[0];

    let told = tell_with(ICMP_MASQUERADE, without_netfilter_programs);
    let request = told.requests()[0];
    assert!(hops_of(request, "netfilter").is_empty());
    let rewrites = inferred_rewrites(request);
    assert_eq!(rewrites.len(), 1, "{}", told.text);
    let (_, hook, nat, hop) = rewrites[0];
    assert_eq!((hook, nat), (Hook::Postrouting, NatKind::Source));
    assert_eq!(hop.device, full_nat.device, "the device it left by");
    assert_eq!(hop.details, {
        let Details::Nat {
            hook,
            nat,
            before,
            after,
            ..
        } = full_nat.details.clone()
        else {
            unreachable!()
        };
        Details::Nat {
            hook,
            nat,
            before,
            after,
            inferred: true,
        }
    });

    let reply = told.reply_to(request);
    let rewrites = inferred_rewrites(reply);
    assert_eq!(rewrites.len(), 1, "{}", told.text);
    let (at, hook, nat, _) = rewrites[0];
    assert_eq!((hook, nat), (Hook::Prerouting, NatKind::Reverse));
    let first_route = reply
        .hops
        .iter()
        .position(|h| h.details.kind() == "route")
        .unwrap();
    assert!(
        at < first_route,
        "PREROUTING comes before the routing decision: {}",
        told.text
    );
    insta::assert_snapshot!(told.text);
}

#[test]
fn without_drop_reasons_a_netfilter_drop_is_known_by_the_code_that_freed_it() {
    let told = tell_with(recording!("docker_user_drop"), |journey, _| {
        for event in &mut journey.events {
            if let EventKind::Drop { reason, .. } = &mut event.kind {
                *reason = DropReason::Unreported;
            }
        }
    });
    let Ending::Dropped { rule, reason, .. } = &told.requests()[0].outcome.ending else {
        panic!("{}", told.text)
    };
    assert_eq!(*reason, DropReason::Unreported);
    assert_eq!(
        rule.as_ref().map(|r| r.chain.as_str()),
        Some("DOCKER-USER"),
        "the rule nf_tables traced is still found"
    );
    assert!(
        told.text.contains("(this kernel gives no drop reasons)"),
        "{}",
        told.text
    );
}

/// Without consume_skb's location, the copies ARP frees while the packet
/// waits for a next hop that never answers are no arrival.
#[test]
fn without_free_locations_a_packet_waiting_for_arp_is_no_arrival() {
    let unlocated = |journey: &mut Journey, _: &mut Facts| {
        for event in &mut journey.events {
            if let EventKind::Consume { location } = &mut event.kind {
                *location = crate::decode::CodeSite {
                    name: "unknown".into(),
                    role: crate::decode::SiteRole::Unlocated,
                };
            }
        }
    };
    for name in ["neigh_failed", "cold_arp"] {
        let recording = match name {
            "neigh_failed" => recording!("neigh_failed"),
            _ => recording!("cold_arp"),
        };
        let full = tell(recording);
        let told = tell_with(recording, unlocated);
        let (request, full_request) = (told.requests()[0], full.requests()[0]);
        assert_eq!(
            request.hops[0].details.kind(),
            "send",
            "{name}: {}",
            told.text
        );
        assert_eq!(
            hops_of(request, "receive").len(),
            hops_of(full_request, "receive").len(),
            "{name}: {}",
            told.text
        );
        assert_eq!(
            std::mem::discriminant(&request.outcome.ending),
            std::mem::discriminant(&full_request.outcome.ending),
            "{name}: {}",
            told.text
        );
    }
}

/// `follow --summary`: journeys on the same path are one line with their
/// count, share and latency; a drop is a path of its own, marked new when
/// it first appears, with its reason and rule.
#[test]
fn a_summary_groups_journeys_by_path_and_a_new_drop_stands_out() {
    use crate::explain::paths::{PathCounter, PathStep};
    let masquerade = tell(ICMP_MASQUERADE);
    let dropped = tell(recording!("docker_user_drop"));
    let mut counter = PathCounter::new();
    for _ in 0..3 {
        for story in &masquerade.stories {
            counter.count(story);
        }
    }
    let first = counter.interval(1.0, 0);
    assert_eq!(first.paths.len(), 2, "{first:#?}");
    assert!(
        first
            .paths
            .iter()
            .all(|p| p.packets == 3 && p.new && p.share == 1.0)
    );
    assert_eq!(first.paths[0].path.direction, Direction::Request);

    for story in masquerade.stories.iter().chain(&dropped.stories) {
        counter.count(story);
    }
    let second = counter.interval(2.0, 5);
    let drop = second
        .paths
        .iter()
        .find(|p| p.path.dropped())
        .expect("the drop's path");
    assert!(drop.new);
    let Some(PathStep::Drop { reason, rule }) = drop.path.hops.last().map(|h| &h.step) else {
        panic!("{drop:#?}")
    };
    assert_eq!(reason, "NETFILTER_DROP");
    assert!(
        rule.as_deref().is_some_and(|r| r.contains("DOCKER-USER")),
        "{rule:?}"
    );
    let answered = second
        .paths
        .iter()
        .find(|p| p.path.direction == Direction::Request && !p.path.dropped())
        .unwrap();
    assert!(!answered.new);
    assert_eq!((answered.packets, answered.share), (1, 0.5));
    assert_eq!(second.events_lost, 5);
    let whole = counter.whole_run(2.0);
    assert!(whole.whole_run);
    assert_eq!(
        whole.paths.iter().map(|p| p.packets).collect::<Vec<_>>(),
        [4, 1, 4],
        "requests first, the most frequent first: {whole:#?}"
    );
    insta::assert_snapshot!(crate::render::terminal::summary(&second, Palette::PLAIN));
}

/// Memory stays bounded: paths beyond the first `MAX_PATHS` are counted
/// together.
#[test]
fn a_summary_tells_apart_a_bounded_number_of_paths() {
    use crate::explain::paths::{MAX_PATHS, PathCounter};
    let told = tell(ICMP_MASQUERADE);
    let request = told.requests()[0].clone();
    let mut counter = PathCounter::new();
    for n in 0..MAX_PATHS + 6 {
        let mut story = request.clone();
        story.hops[0].namespace = format!("ns{n}");
        counter.count(&story);
    }
    let summary = counter.interval(1.0, 0);
    assert_eq!(summary.paths.len(), MAX_PATHS);
    assert_eq!(summary.other_paths, 6);
}

/// Without consume_skb's location, a free in a namespace that routed the
/// packet elsewhere (the copy ARP frees while the packet waits for a next
/// hop) is not the packet taken in there, even when nothing follows it.
#[test]
fn without_free_locations_a_free_where_the_packet_was_routed_on_is_no_arrival() {
    let told = tell_with(recording!("neigh_failed"), |journey, _| {
        journey
            .events
            .retain(|e| !matches!(e.kind, EventKind::Drop { .. }));
        for event in &mut journey.events {
            if let EventKind::Consume { location } = &mut event.kind {
                *location = crate::decode::CodeSite {
                    name: "unknown".into(),
                    role: crate::decode::SiteRole::Unlocated,
                };
            }
        }
    });
    let request = told
        .requests()
        .into_iter()
        .find(|s| s.tuple.protocol == "icmp")
        .unwrap();
    assert!(
        !matches!(request.outcome.ending, Ending::TakenIn { .. }),
        "{}",
        told.text
    );
}
