//! The topology renderers on a hand-built model of the lecture's lab: a
//! container on the default bridge and on a user-defined network with a
//! named bridge, publishing 4000 -> 80 through docker-proxy and DNAT, and
//! an `ip netns` joined to the host by a veth (demo #1).

use std::net::IpAddr;

use super::*;
use crate::enrich::{
    Chain, ChainHook, Container, ContainerInside, ContainerNetwork, DockerNetwork, FdbEntry,
    Interface, InterfaceRef, LinkKind, Listener, Namespace, NamespaceIds, Owner, PortBinding,
    Route, RouteKind, Rule, RuleMatch, Ruleset, Topology, Wiring,
};

const HOST: u32 = 4026531833;
const SERVER: u32 = 4026532403;
const DEMO: u32 = 4026532324;
const SERVER_ID: &str = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4";

fn iface(ifindex: u32, name: &str, kind: Option<&str>, address: Option<(IpAddr, u8)>) -> Interface {
    Interface {
        ifindex,
        name: name.into(),
        kind: LinkKind::from_netlink(kind, if kind == Some("lo") { 772 } else { 1 }),
        mtu: None,
        mac: Some([0x02, 0x42, 0xac, 0x11, 0x00, ifindex as u8]),
        addresses: address.into_iter().collect(),
        up: true,
        lower_up: true,
        master: None,
        peer: None,
        driver: None,
        vxlan: None,
    }
}

fn veth(
    ifindex: u32,
    name: &str,
    address: Option<(IpAddr, u8)>,
    peer: (u32, u32),
    master: Option<u32>,
) -> Interface {
    let mut veth = iface(ifindex, name, Some("veth"), address);
    veth.peer = Some(InterfaceRef {
        netns: peer.0,
        ifindex: peer.1,
    });
    veth.master = master;
    veth
}

fn route(
    destination: Option<(IpAddr, u8)>,
    gateway: Option<IpAddr>,
    device: u32,
    table: u32,
) -> Route {
    Route {
        table,
        kind: if table == 255 {
            RouteKind::Local
        } else {
            RouteKind::Unicast
        },
        destination,
        gateway,
        device: Some(device),
        source: None,
        ipv6: destination.is_some_and(|(ip, _)| ip.is_ipv6())
            || gateway.is_some_and(|ip| ip.is_ipv6()),
    }
}

fn rule(
    handle: u64,
    text: &str,
    matches: &[(&str, &str, &str)],
    action: &str,
    packets: u64,
) -> Rule {
    Rule {
        handle,
        text: text.into(),
        matches: matches
            .iter()
            .map(|(field, op, value)| RuleMatch {
                field: field.to_string(),
                op: op.to_string(),
                value: value.to_string(),
            })
            .collect(),
        action: Some(action.into()),
        packets: Some(packets),
    }
}

fn chain(
    table: &str,
    name: &str,
    hook: Option<(&str, &str, i64)>,
    entered_from: &[&str],
    rules: Vec<Rule>,
) -> Chain {
    Chain {
        family: "ip".into(),
        table: table.into(),
        name: name.into(),
        hook: hook.map(|(hook, kind, priority)| ChainHook {
            hook: hook.into(),
            kind: kind.into(),
            priority,
            policy: Some("accept".into()),
        }),
        entered_from: entered_from.iter().map(|c| c.to_string()).collect(),
        rules,
    }
}

fn ruleset() -> Ruleset {
    Ruleset {
        chains: vec![
            chain(
                "nat",
                "DOCKER",
                None,
                &["PREROUTING", "OUTPUT"],
                vec![
                    rule(
                        4,
                        "iifname \"docker0\" return",
                        &[("iifname", "==", "docker0")],
                        "return",
                        0,
                    ),
                    rule(
                        49,
                        "iifname != \"docker0\" tcp dport 4000 dnat to 172.17.0.2:80",
                        &[("iifname", "!=", "docker0"), ("tcp dport", "==", "4000")],
                        "dnat",
                        3,
                    ),
                ],
            ),
            chain(
                "nat",
                "POSTROUTING",
                Some(("postrouting", "nat", 100)),
                &[],
                vec![
                    rule(
                        3,
                        "oifname != \"docker0\" ip saddr 172.17.0.0/16 masquerade",
                        &[
                            ("oifname", "!=", "docker0"),
                            ("ip saddr", "==", "172.17.0.0/16"),
                        ],
                        "masquerade",
                        82,
                    ),
                    rule(
                        47,
                        "oifname != \"labbr\" ip saddr 192.168.80.0/20 masquerade",
                        &[
                            ("oifname", "!=", "labbr"),
                            ("ip saddr", "==", "192.168.80.0/20"),
                        ],
                        "masquerade",
                        0,
                    ),
                ],
            ),
            chain(
                "filter",
                "FORWARD",
                Some(("forward", "filter", 0)),
                &[],
                vec![rule(
                    12,
                    "iifname \"docker0\" oifname != \"docker0\" accept",
                    &[("iifname", "==", "docker0"), ("oifname", "!=", "docker0")],
                    "accept",
                    209,
                )],
            ),
        ],
    }
}

fn lab() -> Wiring {
    let docker0 = iface(
        5,
        "docker0",
        Some("bridge"),
        Some((IpAddr::from([172, 17, 0, 1]), 16)),
    );
    let labbr = iface(
        9,
        "labbr",
        Some("bridge"),
        Some((IpAddr::from([192, 168, 80, 1]), 20)),
    );
    let mut host = Namespace {
        inode: HOST,
        owner: Owner::Host,
        netns_names: Vec::new(),
        interfaces: vec![
            iface(1, "lo", None, Some((IpAddr::from([127, 0, 0, 1]), 8))),
            iface(2, "eth0", None, Some((IpAddr::from([192, 0, 2, 2]), 24))),
            docker0,
            veth(7, "veth3c1d2e4", None, (SERVER, 6), Some(5)),
            labbr,
            veth(11, "veth9f8e7d6", None, (SERVER, 10), Some(9)),
            veth(
                13,
                "pt-demo-h",
                Some((IpAddr::from([10, 11, 12, 13]), 24)),
                (DEMO, 2),
                None,
            ),
        ],
        routes: vec![
            route(None, Some(IpAddr::from([192, 0, 2, 1])), 2, 254),
            route(Some((IpAddr::from([172, 17, 0, 0]), 16)), None, 5, 254),
            route(Some((IpAddr::from([172, 17, 0, 1]), 32)), None, 5, 255),
        ],
        ip_forward: Some(true),
        nsfs_path: None,
    };
    host.routes[1].source = Some(IpAddr::from([172, 17, 0, 1]));
    let server = Namespace {
        inode: SERVER,
        owner: Owner::Container {
            name: "server-1".into(),
            id: SERVER_ID.into(),
        },
        netns_names: Vec::new(),
        interfaces: vec![
            iface(1, "lo", None, Some((IpAddr::from([127, 0, 0, 1]), 8))),
            veth(
                6,
                "eth0",
                Some((IpAddr::from([172, 17, 0, 2]), 16)),
                (HOST, 7),
                None,
            ),
            veth(
                10,
                "eth1",
                Some((IpAddr::from([192, 168, 80, 2]), 20)),
                (HOST, 11),
                None,
            ),
        ],
        routes: vec![route(None, Some(IpAddr::from([172, 17, 0, 1])), 6, 254)],
        ip_forward: Some(false),
        nsfs_path: None,
    };
    let demo = Namespace {
        inode: DEMO,
        owner: Owner::NetnsName("demo".into()),
        netns_names: vec!["demo".into()],
        interfaces: vec![
            iface(1, "lo", None, None),
            veth(
                2,
                "pt-demo-n",
                Some((IpAddr::from([10, 11, 12, 14]), 24)),
                (HOST, 13),
                None,
            ),
        ],
        routes: vec![route(
            Some((IpAddr::from([10, 11, 12, 0]), 24)),
            None,
            2,
            254,
        )],
        ip_forward: Some(false),
        nsfs_path: None,
    };
    let network = |name: &str, ip: [u8; 4], gateway: [u8; 4]| ContainerNetwork {
        network: name.into(),
        ip: Some(ip.into()),
        gateway: Some(gateway.into()),
        mac: None,
        ipv6: None,
        ipv6_gateway: None,
    };
    let topology = Topology {
        namespaces: vec![host, server, demo],
        containers: vec![Container {
            id: SERVER_ID.into(),
            name: "server-1".into(),
            pid: 4242,
            netns: SERVER,
            sandbox_key: "/var/run/docker/netns/0123456789ab".into(),
            networks: vec![
                network("bridge", [172, 17, 0, 2], [172, 17, 0, 1]),
                network("lab", [192, 168, 80, 2], [192, 168, 80, 1]),
            ],
            dns: Vec::new(),
            network_mode: Default::default(),
            paused: false,
            image: String::new(),
            command: Vec::new(),
            published: Vec::new(),
            engine: String::new(),
        }],
        docker_error: None,
        docker_networks: vec![
            DockerNetwork {
                name: "bridge".into(),
                id: "f00d".into(),
                driver: "bridge".into(),
                bridge: Some("docker0".into()),
                subnets: vec![(IpAddr::from([172, 17, 0, 0]), 16)],
                masquerade: true,
                engine: String::new(),
            },
            DockerNetwork {
                name: "lab".into(),
                id: "beef".into(),
                driver: "bridge".into(),
                bridge: Some("labbr".into()),
                subnets: vec![(IpAddr::from([192, 168, 80, 0]), 20)],
                masquerade: true,
                engine: String::new(),
            },
        ],
        host_netns: HOST,
        inactive_containers: Vec::new(),
        engines: Vec::new(),
    };
    let proxy = |pid: u32, host_ip: &str, address: &str| {
        Listener {
        protocol: "tcp".into(),
        address: address.parse().unwrap(),
        socket_inode: u64::from(pid) * 10,
        pid,
        process: "docker-proxy".into(),
        args: format!(
            "/usr/sbin/docker-proxy -proto tcp -host-ip {host_ip} -host-port 4000 -container-ip 172.17.0.2 -container-port 80"
        )
        .split(' ')
        .map(str::to_string)
        .collect(),
    }
    };
    let binding = |host_ip: &str| PortBinding {
        container_id: SERVER_ID.into(),
        protocol: "tcp".into(),
        container_port: 80,
        host_ip: host_ip.into(),
        host_port: 4000,
    };
    let ids = |net: u64, pid: u64, mnt: u64, uts: u64, ipc: u64| NamespaceIds {
        net: Some(net),
        pid: Some(pid),
        mnt: Some(mnt),
        uts: Some(uts),
        ipc: Some(ipc),
        user: Some(4026531837),
        cgroup: Some(4026531835),
    };
    Wiring {
        topology,
        firewall: Ok(ruleset()),
        port_bindings: vec![binding("0.0.0.0"), binding("::")],
        listeners: vec![
            proxy(15536, "0.0.0.0", "0.0.0.0:4000"),
            proxy(15543, "::", "[::]:4000"),
        ],
        host_namespaces: ids(
            u64::from(HOST),
            4026531836,
            4026531832,
            4026531838,
            4026531839,
        ),
        containers: vec![ContainerInside {
            id: SERVER_ID.into(),
            namespaces: ids(
                u64::from(SERVER),
                4026532401,
                4026532398,
                4026532399,
                4026532400,
            ),
            nameservers: Ok(vec!["127.0.0.11".parse().unwrap()]),
        }],
        vxlan_fdb: Vec::new(),
    }
}

/// Two Docker hosts (namespaces with an underlay veth between them), each
/// with an overlay network's namespace holding a VXLAN device whose
/// forwarding database sends the other host's container MAC there.
fn two_hosts() -> Wiring {
    const HOST_A: u32 = 4026532175;
    const HOST_B: u32 = 4026532240;
    const OVERLAY_A: u32 = 4026532513;
    const OVERLAY_B: u32 = 4026532854;
    let docker_host = |inode: u32, engine: &str, address: IpAddr, peer: u32| Namespace {
        inode,
        owner: Owner::DockerHost {
            engine: engine.into(),
        },
        netns_names: vec![format!("pt-{engine}")],
        interfaces: vec![veth(2, "ul", Some((address, 24)), (peer, 2), None)],
        routes: Vec::new(),
        ip_forward: Some(true),
        nsfs_path: None,
    };
    let overlay = |inode: u32, engine: &str, underlay: u32| {
        let mut vxlan0 = iface(5, "vxlan0", Some("vxlan"), None);
        vxlan0.vxlan = Some(crate::enrich::Vxlan {
            vni: 4097,
            port: 4789,
            underlay_netns: Some(underlay),
        });
        vxlan0.master = Some(2);
        Namespace {
            inode,
            owner: Owner::Docker {
                engine: engine.into(),
                kind: crate::enrich::DockerNamespace::Overlay {
                    network: "ovl".into(),
                },
            },
            netns_names: Vec::new(),
            interfaces: vec![iface(2, "br0", Some("bridge"), None), vxlan0],
            routes: Vec::new(),
            ip_forward: Some(true),
            nsfs_path: None,
        }
    };
    let entry = |netns: u32, mac_end: u8, remote: [u8; 4]| FdbEntry {
        netns,
        mac: [0x02, 0x42, 0x0a, 0xfa, 0x00, mac_end],
        port: 5,
        bridge: None,
        permanent: true,
        remote: Some(IpAddr::from(remote)),
    };
    let mut wiring = Wiring::of_topology(Topology {
        namespaces: vec![
            docker_host(HOST_A, "host-a", IpAddr::from([10, 99, 0, 1]), HOST_B),
            docker_host(HOST_B, "host-b", IpAddr::from([10, 99, 0, 2]), HOST_A),
            overlay(OVERLAY_A, "host-a", HOST_A),
            overlay(OVERLAY_B, "host-b", HOST_B),
        ],
        containers: Vec::new(),
        docker_error: None,
        docker_networks: Vec::new(),
        host_netns: HOST,
        inactive_containers: Vec::new(),
        engines: Vec::new(),
    });
    wiring.vxlan_fdb = vec![
        entry(OVERLAY_A, 4, [10, 99, 0, 2]),
        entry(OVERLAY_A, 5, [10, 99, 0, 2]),
        entry(OVERLAY_B, 2, [10, 99, 0, 1]),
    ];
    wiring
}

#[test]
fn vxlan_tunnels_name_their_remote_endpoints_and_the_device_there() {
    let report = Report::build(&two_hosts(), None);
    let a = &report.tunnels[0];
    assert_eq!(
        (
            a.device.namespace.as_str(),
            a.vni,
            a.port,
            a.underlay.as_deref()
        ),
        (
            "overlay network ovl's namespace on host-a",
            4097,
            4789,
            Some("Docker host host-a")
        )
    );
    assert_eq!(a.remotes.len(), 1, "one endpoint, two MACs behind it");
    assert_eq!(a.remotes[0].vtep, "10.99.0.2");
    assert_eq!(
        a.remotes[0].macs,
        ["02:42:0a:fa:00:04", "02:42:0a:fa:00:05"]
    );
    assert_eq!(
        a.remotes[0].far_end.as_ref().map(|e| e.namespace.as_str()),
        Some("overlay network ovl's namespace on host-b"),
        "the VXLAN device whose underlay has 10.99.0.2"
    );
    let text = plain(&table::render(&report));
    assert!(text.contains("VXLAN tunnels"), "{text}");
    let picture = dot::render(&report);
    assert_eq!(
        picture.matches("label=\"VXLAN 4097\"").count(),
        1,
        "each tunnel drawn once: {picture}"
    );
}

fn plain(styled: &str) -> String {
    anstream::adapter::strip_str(styled).to_string()
}

#[test]
fn the_whole_host_as_tables() {
    let report = Report::build(&lab(), None);
    insta::assert_snapshot!(plain(&table::render(&report)));
}

#[test]
fn one_container_with_its_namespaces_as_tables() {
    let wiring = lab();
    let report = Report::build(&wiring, wiring.topology.container("server-1"));
    insta::assert_snapshot!(plain(&table::render(&report)));
}

#[test]
fn the_whole_host_as_a_picture() {
    insta::assert_snapshot!(dot::render(&Report::build(&lab(), None)));
}

#[test]
fn the_report_resolves_names_pairs_ports_and_rules() {
    let report = Report::build(&lab(), None);
    let pairs: Vec<(&str, &str)> = report
        .veth_pairs
        .iter()
        .map(|p| (p.a.interface.as_str(), p.b.interface.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("veth3c1d2e4", "eth0"),
            ("veth9f8e7d6", "eth1"),
            ("pt-demo-h", "pt-demo-n")
        ],
        "each pair once, host end first"
    );
    let labbr = report.bridges.iter().find(|b| b.name == "labbr").unwrap();
    assert_eq!(labbr.docker_network.as_deref(), Some("lab"));
    assert_eq!(
        labbr.ports[0].peer.as_ref().map(|p| p.namespace.as_str()),
        Some("server-1")
    );
    let labbr_rules: Vec<u64> = labbr.rules.iter().map(|r| r.handle).collect();
    assert_eq!(labbr_rules, [47]);
    let v4 = &report.published_ports[0];
    assert_eq!(
        (v4.container.as_deref(), v4.host_port, v4.container_port),
        (Some("server-1"), 4000, Some(80))
    );
    assert_eq!(v4.served_by[0].pid, 15536);
    assert_eq!(
        v4.served_by[0].forwards_to.as_deref(),
        Some("172.17.0.2:80")
    );
    assert_eq!(
        v4.dnat_rules.iter().map(|r| r.handle).collect::<Vec<_>>(),
        [49]
    );
    let v6 = &report.published_ports[1];
    assert_eq!(v6.served_by[0].pid, 15543);
    assert!(
        v6.dnat_rules.is_empty(),
        "IPv4 NAT does not serve the IPv6 binding"
    );
    assert_eq!(report.uplinks[0].gateway.as_deref(), Some("192.0.2.1"));

    let json: serde_json::Value = serde_json::from_str(&json(&report)).unwrap();
    assert_eq!(json["namespaces"][1]["owner"], "server-1");
    assert_eq!(
        json["namespaces"][1]["interfaces"][1]["peer"]["interface"],
        "veth3c1d2e4"
    );
    assert_eq!(json["namespaces"][0]["routes"][0]["destination"], "default");
    assert_eq!(json["containers"][0]["namespaces"]["user"], 4026531837_u64);
}

#[test]
fn without_docker_proxies_are_still_published_ports() {
    let mut wiring = lab();
    wiring.port_bindings.clear();
    wiring.topology.containers.clear();
    wiring.topology.docker_error =
        Some("Docker is not reachable at /nonexistent/docker.sock (is dockerd running?)".into());
    let report = Report::build(&wiring, None);
    assert_eq!(report.published_ports.len(), 2);
    let found = &report.published_ports[0];
    assert_eq!(
        found.container.as_deref(),
        Some("server-1"),
        "named by the namespace that owns 172.17.0.2"
    );
    assert_eq!(
        (found.host_ip.as_str(), found.container_port),
        ("0.0.0.0", Some(80))
    );
    assert!(plain(&table::render(&report)).contains("unknown: Docker is not reachable"));
}
