//! The explanation of recorded journeys, as the terminal shows it (snapshots)
//! and as JSON. The topology is built by hand to match the recording's lab.

use std::net::Ipv4Addr;

use super::*;
use crate::enrich::{
    Container, DockerNetwork, FdbEntry, InterfaceRef, Ipv4Settings, Namespace, Owner,
};
use crate::journey::Journey;
use crate::journey::tests::{
    COLD_ARP, DOCKER_USER_DROP, FORWARDING_DISABLED, ICMP_MASQUERADE, LEFT_THROUGH_IFB,
    NEIGH_FAILED, REJECT, SAME_BRIDGE, TCP_REFUSED, UDP_CLOSED_PORT, UNICAST_FLOOD, assemble,
};
use crate::render::terminal::Palette;

const HOST: u32 = 4026531833;

/// The lab a recording was made on: a container on docker0 and an upstream
/// netns reached from the host through a veth.
struct Shape {
    container: (&'static str, u32, Ipv4Addr),
    /// The container's eth0 and its host-side peer.
    eth0: u32,
    host_veth: (u32, &'static str),
    upstream: (&'static str, u32, Ipv4Addr, u8),
    uplink: (u32, &'static str, Ipv4Addr),
    /// The container's bridge: ifindex, name, its address, Docker network name.
    bridge: (u32, &'static str, Ipv4Addr, &'static str),
}

/// `cargo xtask lab` (ICMP with cold ARP caches).
const XTASK_LAB: Shape = Shape {
    container: ("server-1", 4026532403, Ipv4Addr::new(172, 17, 0, 3)),
    eth0: 275,
    host_veth: (276, "vethb38e3fe"),
    upstream: (
        "pt-upstream",
        4026532324,
        Ipv4Addr::new(198, 51, 100, 1),
        24,
    ),
    uplink: (274, "pt-up-host", Ipv4Addr::new(198, 51, 100, 254)),
    bridge: (5, "docker0", Ipv4Addr::new(172, 17, 0, 1), "bridge"),
};

/// A hand-made lab (the other recordings).
const DEV_LAB: Shape = Shape {
    container: ("dev-c1", 4026532255, Ipv4Addr::new(172, 17, 0, 2)),
    eth0: 7,
    host_veth: (8, "veth020989f"),
    upstream: ("dev-up", 4026532178, Ipv4Addr::new(198, 51, 100, 129), 25),
    uplink: (6, "dev-up-host", Ipv4Addr::new(198, 51, 100, 130)),
    bridge: (5, "docker0", Ipv4Addr::new(172, 17, 0, 1), "bridge"),
};

/// `cargo xtask lab`, for the failure recordings (server-1 on docker0).
const FAILURES_LAB: Shape = Shape {
    container: ("server-1", 4026532257, Ipv4Addr::new(172, 17, 0, 2)),
    eth0: 614,
    host_veth: (615, "vethd47484d"),
    upstream: (
        "pt-upstream",
        4026532178,
        Ipv4Addr::new(198, 51, 100, 1),
        24,
    ),
    uplink: (613, "pt-up-host", Ipv4Addr::new(198, 51, 100, 254)),
    bridge: (5, "docker0", Ipv4Addr::new(172, 17, 0, 1), "bridge"),
};

/// `cargo xtask lab` with dns-client-1 on a user-defined network (the DNS recording).
const DNS_LAB: Shape = Shape {
    container: ("dns-client-1", 4026532408, Ipv4Addr::new(172, 18, 0, 3)),
    eth0: 2497,
    host_veth: (2498, "veth03a3a6c"),
    upstream: (
        "pt-upstream",
        4026532178,
        Ipv4Addr::new(198, 51, 100, 1),
        24,
    ),
    uplink: (2491, "pt-up-host", Ipv4Addr::new(198, 51, 100, 254)),
    bridge: (
        2494,
        "br-e91aaeeb4e86",
        Ipv4Addr::new(172, 18, 0, 1),
        "ptdns",
    ),
};

fn interface(ifindex: u32, name: &str, kind: &str, address: Option<(Ipv4Addr, u8)>) -> Interface {
    Interface {
        ifindex,
        name: name.into(),
        kind: Some(kind.into()),
        mac: None,
        addresses: address.into_iter().collect(),
        up: true,
        lower_up: true,
        master: None,
        peer: None,
        driver: None,
    }
}

fn veth(ifindex: u32, name: &str, address: Option<(Ipv4Addr, u8)>, peer: (u32, u32)) -> Interface {
    let mut veth = interface(ifindex, name, "veth", address);
    veth.peer = Some(InterfaceRef {
        netns: peer.0,
        ifindex: peer.1,
    });
    veth
}

fn namespace(inode: u32, owner: Owner, interfaces: Vec<Interface>) -> Namespace {
    Namespace {
        inode,
        owner,
        netns_names: Vec::new(),
        interfaces,
        routes: Vec::new(),
        ip_forward: Some(true),
        nsfs_path: None,
    }
}

fn lab(shape: &Shape) -> Topology {
    let (container_name, container_ns, container_ip) = shape.container;
    let (upstream_name, upstream_ns, upstream_ip, prefix) = shape.upstream;
    let (uplink_index, uplink_name, uplink_ip) = shape.uplink;
    let (veth_index, veth_name) = shape.host_veth;
    let (bridge_index, bridge_name, bridge_ip, network_name) = shape.bridge;
    let mut bridge = interface(bridge_index, bridge_name, "bridge", Some((bridge_ip, 16)));
    bridge.mac = Some(
        if bridge_index == FAILURES_LAB.bridge.0 && container_ns == FAILURES_LAB.container.1 {
            [0x02, 0x42, 0x0a, 0xb6, 0x23, 0x7f]
        } else {
            [0x02, 0x42, 0xb1, 0x84, 0x69, 0x35]
        },
    );
    let mut port = veth(veth_index, veth_name, None, (container_ns, shape.eth0));
    port.master = Some(bridge_index);
    let host = namespace(
        HOST,
        Owner::Host,
        vec![
            bridge,
            veth(
                uplink_index,
                uplink_name,
                Some((uplink_ip, prefix)),
                (upstream_ns, 2),
            ),
            port,
        ],
    );
    let container = namespace(
        container_ns,
        Owner::Container {
            name: container_name.into(),
            id: "c14e2a8ea686".into(),
        },
        vec![veth(
            shape.eth0,
            "eth0",
            Some((container_ip, 16)),
            (HOST, veth_index),
        )],
    );
    let mut upstream = namespace(
        upstream_ns,
        Owner::NetnsName(upstream_name.into()),
        vec![veth(
            2,
            "eth0",
            Some((upstream_ip, prefix)),
            (HOST, uplink_index),
        )],
    );
    upstream.netns_names = vec![upstream_name.into()];
    Topology {
        namespaces: vec![host, container, upstream],
        containers: vec![Container {
            id: "c14e2a8ea686".into(),
            name: container_name.into(),
            pid: 4242,
            netns: container_ns,
            sandbox_key: String::new(),
            networks: Vec::new(),
            dns: Vec::new(),
        }],
        docker_error: None,
        docker_networks: vec![DockerNetwork {
            name: network_name.into(),
            id: "9f0c".into(),
            driver: "bridge".into(),
            bridge: Some(bridge_name.into()),
            subnets: vec![(
                Ipv4Addr::new(bridge_ip.octets()[0], bridge_ip.octets()[1], 0, 0),
                16,
            )],
        }],
        host_netns: HOST,
    }
}

fn stories(fixture: &str, facts: &Facts) -> Vec<Story> {
    stories_on(&DEV_LAB, fixture, facts)
}

fn stories_on(shape: &Shape, fixture: &str, facts: &Facts) -> Vec<Story> {
    let journeys = assemble(fixture);
    let topology = lab(shape);
    tell_all(&journeys, &topology, facts)
}

/// The first journey as the request, the others as its replies.
fn tell_all(journeys: &[Journey], topology: &Topology, facts: &Facts) -> Vec<Story> {
    let mut told: Vec<Story> = Vec::new();
    let mut request: Option<RequestSummary> = None;
    for journey in journeys {
        let telling = Telling {
            direction: if request.is_some() {
                Direction::Reply
            } else {
                Direction::Request
            },
            request: request.as_ref(),
            arp_result: None,
        };
        let story = explain(journey, &telling, topology, facts);
        if request.is_none() {
            request = Some(request_summary(journey, &story));
        }
        told.push(story);
    }
    told
}

fn plain(stories: &[Story]) -> String {
    let text: String = stories
        .iter()
        .map(|story| crate::render::terminal::render(story, Palette::COLOR))
        .collect();
    anstream::adapter::strip_str(&text).to_string()
}

/// The host's devices' forwarding settings, as read where it forwards.
fn forwarding(on: bool) -> Facts {
    let settings = |device: &str| {
        (
            HOST,
            Ipv4Settings {
                device: device.into(),
                forwarding: Some(on),
                all_forwarding: Some(on),
                rp_filter: Some(0),
                all_rp_filter: Some(0),
            },
        )
    };
    Facts {
        bridge_calls_iptables: Some(true),
        ipv4: ["docker0", "dev-up-host", "pt-up-host"]
            .into_iter()
            .map(settings)
            .collect(),
        ..Facts::default()
    }
}

fn forwarding_on() -> Facts {
    forwarding(true)
}

#[test]
fn icmp_through_masquerade_and_back() {
    insta::assert_snapshot!(plain(&stories(ICMP_MASQUERADE, &forwarding_on())));
}

/// Fresh lab: both the container and the host must ARP before sending; the
/// lookups ARP makes are not the packet's route.
#[test]
fn cold_arp_caches_are_waited_for_not_mistaken_for_routes() {
    let told = stories_on(&XTASK_LAB, COLD_ARP, &forwarding_on());
    let route_namespaces: Vec<&str> = told[0]
        .hops
        .iter()
        .filter(|h| matches!(h.details, Details::Route(_)))
        .map(|h| h.namespace.as_str())
        .collect();
    assert_eq!(
        route_namespaces,
        ["host", "netns pt-upstream"],
        "one decision per namespace, made where the packet is"
    );
    insta::assert_snapshot!(plain(&told));
}

#[test]
fn forwarding_disabled_is_named_with_its_sysctl() {
    insta::assert_snapshot!(plain(&stories(FORWARDING_DISABLED, &forwarding(false))));
}

#[test]
fn a_drop_rule_in_docker_user_is_a_netfilter_drop_in_forward() {
    insta::assert_snapshot!(plain(&stories(DOCKER_USER_DROP, &forwarding_on())));
}

/// The kernel side sends no after-NAT event when no NAT changed the packet:
/// the hook's entry is then told alone, with conntrack's word (which comes
/// after PREROUTING's and OUTPUT's entry) from the packet's next hook, and a
/// later hook's NAT is not taken for its own.
#[test]
fn a_hook_without_its_after_nat_event_is_told_the_same() {
    let all = stories_on(&FAILURES_LAB, UDP_CLOSED_PORT, &forwarding_on());
    let mut journeys = assemble(UDP_CLOSED_PORT);
    let mut left_out = 0;
    for journey in &mut journeys {
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
                left_out += usize::from(!kept);
                kept
            }
            _ => true,
        });
    }
    assert!(
        left_out >= 4,
        "unchanged packets at PREROUTING and OUTPUT too"
    );
    let thinned = tell_all(&journeys, &lab(&FAILURES_LAB), &forwarding_on());
    let texts = |story: &Story| {
        story
            .hops
            .iter()
            .map(|h| h.text.clone())
            .collect::<Vec<_>>()
    };
    for (before, after) in all.iter().zip(&thinned) {
        assert_eq!(texts(before), texts(after));
    }
    let nat_hops = thinned[0]
        .hops
        .iter()
        .filter(|h| matches!(h.details, Details::Nat { .. }))
        .count();
    assert_eq!(nat_hops, 1, "the host's MASQUERADE, once");
}

#[test]
fn a_refused_tcp_connection() {
    insta::assert_snapshot!(plain(&stories(TCP_REFUSED, &forwarding_on())));
}

#[test]
fn json_has_the_documented_hop_kinds_and_nat_tuples() {
    let told = stories(ICMP_MASQUERADE, &forwarding_on());
    let request: serde_json::Value =
        serde_json::from_str(&crate::render::json::render(&told[0])).unwrap();
    assert_eq!(request["direction"], "request");
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
    assert_eq!(nat["hook"], "POSTROUTING");
    assert_eq!(nat["before"]["src"], "172.17.0.2");
    assert_eq!(nat["after"]["src"], "198.51.100.130");
    let reply: serde_json::Value =
        serde_json::from_str(&crate::render::json::render(&told[1])).unwrap();
    assert_eq!(reply["direction"], "reply");
    assert_eq!(reply["reply_to"], told[0].journey);
    let deliver = reply["hops"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (deliver["kind"].as_str(), deliver["process"].as_str()),
        (Some("deliver"), Some("ping"))
    );
}

#[test]
fn a_story_told_around_lost_events_says_so() {
    let facts = Facts {
        events_lost: true,
        ..forwarding_on()
    };
    let told = stories(ICMP_MASQUERADE, &facts);
    assert!(plain(&told[..1]).contains("the kernel dropped events while this packet was traced"));
    let json: serde_json::Value =
        serde_json::from_str(&crate::render::json::render(&told[0])).unwrap();
    assert_eq!(json["events_lost"], true);
    let complete: serde_json::Value = serde_json::from_str(&crate::render::json::render(
        &stories(ICMP_MASQUERADE, &forwarding_on())[0],
    ))
    .unwrap();
    assert!(
        complete.get("events_lost").is_none(),
        "only said when it happened"
    );
}

/// A container on a bridge: name, netns inode, eth0's ifindex, address,
/// MAC, and its host-side veth (ifindex, name).
struct Member {
    name: &'static str,
    inode: u32,
    eth0: u32,
    ip: Ipv4Addr,
    mac: [u8; 6],
    port: (u32, &'static str),
}

/// Containers on one Docker network's bridge (ifindex, name, gateway
/// address, network name), the bridge having learned every member's MAC.
fn bridge_lab(
    bridge: (u32, &'static str, Ipv4Addr, &'static str),
    members: &[Member],
) -> (Topology, Vec<FdbEntry>) {
    let (bridge_index, bridge_name, gateway, network) = bridge;
    let mut host_interfaces = vec![interface(
        bridge_index,
        bridge_name,
        "bridge",
        Some((gateway, 16)),
    )];
    host_interfaces[0].mac = Some([0x02, 0x42, 0xa7, 0x88, 0x71, 0x87]);
    let mut namespaces = Vec::new();
    let mut fdb = Vec::new();
    for member in members {
        let mut port = veth(
            member.port.0,
            member.port.1,
            None,
            (member.inode, member.eth0),
        );
        port.master = Some(bridge_index);
        host_interfaces.push(port);
        namespaces.push(namespace(
            member.inode,
            Owner::Container {
                name: member.name.into(),
                id: member.name.into(),
            },
            vec![veth(
                member.eth0,
                "eth0",
                Some((member.ip, 16)),
                (HOST, member.port.0),
            )],
        ));
        fdb.push(FdbEntry {
            mac: member.mac,
            port: member.port.0,
            bridge: bridge_index,
            permanent: false,
        });
    }
    namespaces.insert(0, namespace(HOST, Owner::Host, host_interfaces));
    let octets = gateway.octets();
    let topology = Topology {
        namespaces,
        containers: Vec::new(),
        docker_error: None,
        docker_networks: vec![DockerNetwork {
            name: network.into(),
            id: "4d2f".into(),
            driver: "bridge".into(),
            bridge: Some(bridge_name.into()),
            subnets: vec![(Ipv4Addr::new(octets[0], octets[1], 0, 0), 16)],
        }],
        host_netns: HOST,
    };
    (topology, fdb)
}

/// pt-c1 (172.18.0.3) and pt-s1 (172.18.0.2) on network "ptnet", bridge pt-demo-br.
fn same_bridge_lab() -> (Topology, Vec<FdbEntry>) {
    bridge_lab(
        (483, "pt-demo-br", Ipv4Addr::new(172, 18, 0, 1), "ptnet"),
        &[
            Member {
                name: "pt-s1",
                inode: 4026532185,
                eth0: 484,
                ip: Ipv4Addr::new(172, 18, 0, 2),
                mac: [0x02, 0x42, 0xac, 0x12, 0x00, 0x02],
                port: (485, "veth991b44f"),
            },
            Member {
                name: "pt-c1",
                inode: 4026532338,
                eth0: 486,
                ip: Ipv4Addr::new(172, 18, 0, 3),
                mac: [0x02, 0x42, 0xac, 0x12, 0x00, 0x03],
                port: (487, "veth86188c1"),
            },
        ],
    )
}

/// Tells a request and its reply with the bridges' `fdb` as the facts.
fn request_and_reply(fixture: &str, topology: &Topology, fdb: Vec<FdbEntry>) -> Vec<Story> {
    let facts = Facts {
        fdb,
        ..forwarding_on()
    };
    tell_all(&assemble(fixture), topology, &facts)
}

#[test]
fn two_containers_on_one_bridge_are_switched_with_fdb_evidence() {
    let (topology, fdb) = same_bridge_lab();
    insta::assert_snapshot!(plain(&request_and_reply(SAME_BRIDGE, &topology, fdb)));
}

/// fl-c1 pings fl-c2 (network "ptflood", bridge pt-flood-br, fl-c3 a third
/// member) right after fl-c2's MAC was deleted from the bridge's forwarding
/// database: the request is flooded to fl-c2 and fl-c3, fl-c3 discards its
/// copy (OTHERHOST), the reply is switched (the bridge learned fl-c1 before).
#[test]
fn a_frame_for_an_unknown_mac_is_flooded_and_the_other_copies_discarded() {
    let member = |name, inode, eth0, last: u8, port| Member {
        name,
        inode,
        eth0,
        ip: Ipv4Addr::new(172, 22, 0, last),
        mac: [0x02, 0x42, 0xac, 0x16, 0x00, last],
        port,
    };
    let (topology, mut fdb) = bridge_lab(
        (3112, "pt-flood-br", Ipv4Addr::new(172, 22, 0, 1), "ptflood"),
        &[
            member("fl-c1", 4026532185, 3113, 2, (3114, "veth78f6705")),
            member("fl-c2", 4026532260, 3115, 3, (3116, "veth36d1df7")),
            member("fl-c3", 4026532335, 3117, 4, (3118, "veth2735212")),
        ],
    );
    // When it was told, the bridge knew fl-c1 only.
    fdb.truncate(1);
    let told = request_and_reply(UNICAST_FLOOD, &topology, fdb);
    let request = plain(&told[..1]);
    assert!(
        request.contains("flooded to ports veth2735212, veth36d1df7"),
        "{request}"
    );
    assert!(
        request.contains("discarded it: not addressed to it (OTHERHOST)"),
        "{request}"
    );
    assert!(
        request.contains("reached fl-c2"),
        "the flood is not the packet's fate: {request}"
    );
    insta::assert_snapshot!(plain(&told));
}

/// `pkttrace dns dns-client-1` on the recording of three nslookups: each
/// query's entry as the terminal shows it.
#[test]
fn dns_entries_tell_the_embedded_dns_and_the_forwarded_leg() {
    use crate::enrich::dns::{DnsSetup, EmbeddedListener, SocketOwner};
    use crate::journey::dns::{Correlator, Scope};

    let mut correlator = Correlator::new(Scope {
        netns: 4026532408,
        embedded: Some(Ipv4Addr::new(127, 0, 0, 11)),
        timeout_ns: 5_000_000_000,
    });
    for journey in assemble(crate::journey::tests::EMBEDDED_DNS) {
        correlator.push(journey);
    }
    let setup = DnsSetup {
        nameservers: vec![Ipv4Addr::new(127, 0, 0, 11).into()],
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
    let topology = lab(&DNS_LAB);
    let facts = forwarding_on();
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

/// The recorded journeys told the way `follow` tells them: the exchanges
/// decide each one's part (ARP held until answered or given up on, replies
/// paired, requests without one told unanswered at the end).
fn followed(fixture: &str, topology: &Topology, facts: &Facts, destination: Ipv4Addr) -> String {
    use crate::journey::exchanges::{Exchanges, Role, Target, Told};
    // As on the lab: Docker's chains in the host, none in the container and the upstream.
    let facts = &Facts {
        netfilter_hooks: vec![
            (
                HOST,
                vec![
                    Hook::Prerouting,
                    Hook::Input,
                    Hook::Forward,
                    Hook::Output,
                    Hook::Postrouting,
                ],
            ),
            (FAILURES_LAB.container.1, Vec::new()),
            (FAILURES_LAB.upstream.1, Vec::new()),
        ],
        ..facts.clone()
    };
    let mut exchanges = Exchanges::new(Target {
        destination,
        port: None,
        source_netns: FAILURES_LAB.container.1,
        host_netns: HOST,
        published: None,
        expect_second_leg: false,
        limit: Some(1),
        reply_wait: std::time::Duration::from_secs(5),
        arp_journeys: false,
    });
    let mut requests: Vec<RequestSummary> = Vec::new();
    let mut told = String::new();
    let tell = |item: Told, requests: &mut Vec<RequestSummary>, told: &mut String| match item {
        Told::Journey(journey, role) => {
            let story = explain(
                &journey,
                &Telling::of(&journey, role, requests.iter()),
                topology,
                facts,
            );
            if matches!(role, Role::Request | Role::ArpRequest { .. }) {
                requests.push(request_summary(&journey, &story));
            }
            told.push_str(&plain(std::slice::from_ref(&story)));
        }
        Told::NoReply { request, .. } => {
            let last_seen = requests
                .iter()
                .find(|r| r.id == request)
                .map(|r| Outcome::new(r.ending.clone()))
                .expect("a told request");
            // The wait depends on the clock of the test run.
            let no_reply = NoReply::new(request, 5000, last_seen, false);
            told.push_str(
                &anstream::adapter::strip_str(&crate::render::terminal::no_reply(
                    &no_reply,
                    Palette::COLOR,
                ))
                .to_string(),
            );
        }
    };
    for journey in assemble(fixture) {
        for item in exchanges.place(journey) {
            tell(item, &mut requests, &mut told);
        }
    }
    for item in exchanges.finish() {
        tell(item, &mut requests, &mut told);
    }
    told
}

#[test]
fn a_next_hop_that_never_answers_arp_is_told_from_the_failed_neighbour() {
    let told = followed(
        NEIGH_FAILED,
        &lab(&FAILURES_LAB),
        &forwarding_on(),
        Ipv4Addr::new(198, 51, 100, 99),
    );
    assert!(
        told.contains("asked 3 times on the whole segment; no ARP reply came"),
        "{told}"
    );
    assert!(told.contains("host 198.51.100.99 unreachable"), "{told}");
    insta::assert_snapshot!(told);
}

#[test]
fn a_reject_rule_is_named_and_its_icmp_error_is_the_reply() {
    let facts = Facts {
        rule_verdict: Some(RuleVerdict {
            table: "ip filter".into(),
            chain: "DOCKER-USER".into(),
            through: vec!["FORWARD".into()],
            handle: Some(21),
            text: "tcp dport 81 reject".into(),
            action: "reject".into(),
        }),
        ..forwarding_on()
    };
    let told = followed(
        REJECT,
        &lab(&FAILURES_LAB),
        &facts,
        Ipv4Addr::new(198, 51, 100, 1),
    );
    assert!(
        told.contains("rejected in host, FORWARD, by ip filter DOCKER-USER"),
        "{told}"
    );
    assert!(
        told.contains("the host's own REJECT rule sent this"),
        "{told}"
    );
    insta::assert_snapshot!(told);
}

#[test]
fn a_closed_udp_port_answers_port_unreachable() {
    let told = followed(
        UDP_CLOSED_PORT,
        &lab(&FAILURES_LAB),
        &forwarding_on(),
        Ipv4Addr::new(198, 51, 100, 1),
    );
    assert!(
        told.contains("port 5353 (udp) unreachable — no process listens there"),
        "{told}"
    );
    insta::assert_snapshot!(told);
}

#[test]
fn a_packet_freed_by_the_device_it_left_by_is_no_receive() {
    let mut topology = lab(&FAILURES_LAB);
    let mut nic = interface(
        621,
        "ptnic0",
        "ifb",
        Some((Ipv4Addr::new(198, 51, 100, 241), 30)),
    );
    nic.mac = Some([0x7e, 0x49, 0x75, 0x95, 0xc9, 0x29]);
    topology.namespaces[0].interfaces.push(nic);
    let told = followed(
        LEFT_THROUGH_IFB,
        &topology,
        &forwarding_on(),
        Ipv4Addr::new(198, 51, 100, 242),
    );
    assert!(
        told.contains("left host through ptnic0 (IFB device"),
        "{told}"
    );
    assert!(
        !told.contains("taken in by the kernel of host (ifb_xmit"),
        "{told}"
    );
    insta::assert_snapshot!(told);
}

/// Without colours (a pipe, a file) the story is the coloured one with its
/// styles taken out, drawn without them in the first place.
#[test]
fn the_plain_palette_draws_the_coloured_story_without_styles() {
    for story in stories(ICMP_MASQUERADE, &forwarding_on()) {
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
    for story in stories(ICMP_MASQUERADE, &forwarding_on()) {
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
    use crate::render::topology::{Report, journey};
    let told = stories(ICMP_MASQUERADE, &forwarding_on());
    let report = Report::build(&crate::enrich::Wiring::of_topology(lab(&DEV_LAB)), None);
    let dot = journey::render(&report, &told);
    for story in &told {
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
    insta::assert_snapshot!(dot);
}

/// iptables' three REJECT codes for "prohibited" are told apart, as
/// `iptables -S` names them (icmp-net-, icmp-host-, icmp-admin-prohibited).
#[test]
fn each_prohibited_code_is_named_as_its_reject_rule_says() {
    use super::outcome::icmp_error_meaning;
    assert_eq!(
        icmp_error_meaning(3, 9),
        "network administratively prohibited"
    );
    assert_eq!(
        icmp_error_meaning(3, 10),
        "host administratively prohibited"
    );
    assert_eq!(
        icmp_error_meaning(3, 13),
        "communication administratively prohibited"
    );
}
