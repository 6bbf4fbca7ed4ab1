//! The explanation of recorded journeys, as the terminal shows it (snapshots)
//! and as JSON. The topology is built by hand to match the recording's lab.

use std::net::Ipv4Addr;

use super::*;
use crate::enrich::{Container, DockerNetwork, InterfaceRef, Namespace, Owner};
use crate::journey::tests::{DOCKER_USER_DROP, FORWARDING_DISABLED, ICMP_MASQUERADE, TCP_REFUSED, assemble};

const HOST: u32 = 4026531833;
const CONTAINER: u32 = 4026532255;
const UPSTREAM: u32 = 4026532178;

fn interface(ifindex: u32, name: &str, kind: &str, peer: Option<(u32, u32)>, master: Option<u32>) -> Interface {
    let address = match name {
        "docker0" => vec![(Ipv4Addr::new(172, 17, 0, 1), 16)],
        "dev-up-host" => vec![(Ipv4Addr::new(198, 51, 100, 130), 25)],
        "eth0" if peer == Some((HOST, 8)) => vec![(Ipv4Addr::new(172, 17, 0, 2), 16)],
        "eth0" => vec![(Ipv4Addr::new(198, 51, 100, 129), 25)],
        _ => Vec::new(),
    };
    Interface {
        ifindex,
        name: name.into(),
        kind: Some(kind.into()).filter(|k: &String| !k.is_empty()),
        mac: None,
        addresses: address,
        up: true,
        lower_up: true,
        master,
        peer: peer.map(|(netns, ifindex)| InterfaceRef { netns, ifindex }),
    }
}

fn namespace(inode: u32, owner: Owner, interfaces: Vec<Interface>) -> Namespace {
    Namespace { inode, owner, netns_names: Vec::new(), interfaces, routes: Vec::new(), ip_forward: Some(true) }
}

/// The lab of the recordings: container dev-c1 on docker0, an upstream netns
/// reached through dev-up-host.
fn lab() -> Topology {
    let mut docker0 = interface(5, "docker0", "bridge", None, None);
    docker0.mac = Some([0x02, 0x42, 0xb1, 0x84, 0x69, 0x35]);
    let host = namespace(HOST, Owner::Host, vec![
        docker0,
        interface(6, "dev-up-host", "veth", Some((UPSTREAM, 2)), None),
        interface(8, "veth020989f", "veth", Some((CONTAINER, 7)), Some(5)),
    ]);
    let container = namespace(CONTAINER, Owner::Container { name: "dev-c1".into(), id: "c14e2a8ea686".into() }, vec![
        interface(7, "eth0", "veth", Some((HOST, 8)), None),
    ]);
    let mut upstream = namespace(UPSTREAM, Owner::NetnsName("dev-up".into()), vec![interface(
        2,
        "eth0",
        "veth",
        Some((HOST, 6)),
        None,
    )]);
    upstream.netns_names = vec!["dev-up".into()];
    Topology {
        namespaces: vec![host, container, upstream],
        containers: vec![Container {
            id: "c14e2a8ea686".into(),
            name: "dev-c1".into(),
            pid: 4242,
            netns: CONTAINER,
            sandbox_key: String::new(),
            networks: Vec::new(),
            dns: Vec::new(),
        }],
        docker_error: None,
        docker_networks: vec![DockerNetwork {
            name: "bridge".into(),
            id: "9f0c".into(),
            driver: "bridge".into(),
            bridge: Some("docker0".into()),
            subnets: vec![(Ipv4Addr::new(172, 17, 0, 0), 16)],
        }],
        host_netns: HOST,
    }
}

fn stories(fixture: &str, facts: &Facts) -> Vec<Story> {
    let journeys = assemble(fixture);
    let topology = lab();
    let mut told: Vec<Story> = Vec::new();
    for journey in &journeys {
        let request = told.iter().find(|s| s.direction == Direction::Request).map(|s| s.journey);
        let direction = if told.is_empty() { Direction::Request } else { Direction::Reply };
        told.push(explain(journey, direction, request.filter(|_| direction == Direction::Reply), &topology, facts));
    }
    told
}

fn plain(stories: &[Story]) -> String {
    let text: String = stories.iter().map(crate::render::terminal::render).collect();
    anstream::adapter::strip_str(&text).to_string()
}

const FORWARDING_ON: Facts = Facts { host_ip_forward: Some(true) };

#[test]
fn icmp_through_masquerade_and_back() {
    insta::assert_snapshot!(plain(&stories(ICMP_MASQUERADE, &FORWARDING_ON)));
}

#[test]
fn forwarding_disabled_is_named_with_its_sysctl() {
    let facts = Facts { host_ip_forward: Some(false) };
    insta::assert_snapshot!(plain(&stories(FORWARDING_DISABLED, &facts)));
}

#[test]
fn a_drop_rule_in_docker_user_is_a_netfilter_drop_in_forward() {
    insta::assert_snapshot!(plain(&stories(DOCKER_USER_DROP, &FORWARDING_ON)));
}

#[test]
fn a_refused_tcp_connection() {
    insta::assert_snapshot!(plain(&stories(TCP_REFUSED, &FORWARDING_ON)));
}

#[test]
fn json_has_the_documented_hop_kinds_and_nat_tuples() {
    let told = stories(ICMP_MASQUERADE, &FORWARDING_ON);
    let request: serde_json::Value = serde_json::from_str(&crate::render::json::render(&told[0])).unwrap();
    assert_eq!(request["direction"], "request");
    let kinds: Vec<&str> = request["hops"].as_array().unwrap().iter().map(|h| h["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[..3], ["send", "veth", "bridge"]);
    for kind in ["route", "forward", "netfilter", "nat", "receive"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let nat = request["hops"].as_array().unwrap().iter().find(|h| h["kind"] == "nat").unwrap();
    assert_eq!(nat["hook"], "POSTROUTING");
    assert_eq!(nat["before"]["src"], "172.17.0.2");
    assert_eq!(nat["after"]["src"], "198.51.100.130");
    let reply: serde_json::Value = serde_json::from_str(&crate::render::json::render(&told[1])).unwrap();
    assert_eq!(reply["direction"], "reply");
    assert_eq!(reply["reply_to"], told[0].journey);
    let deliver = reply["hops"].as_array().unwrap().last().unwrap();
    assert_eq!((deliver["kind"].as_str(), deliver["process"].as_str()), (Some("deliver"), Some("ping")));
}
