//! Pure logic on constructed values: no privileges, no network.

use std::collections::HashMap;
use std::net::IpAddr;

use super::docker::{bridge_name, discover_at};
use super::netlink::{LinkDump, NsDump};
use super::*;

fn iface(ifindex: u32, name: &str, kind: Option<&str>) -> Interface {
    Interface {
        ifindex,
        name: name.to_string(),
        kind: LinkKind::from_netlink(kind, if kind == Some("lo") { 772 } else { 1 }),
        mtu: None,
        mac: None,
        addresses: Vec::new(),
        up: true,
        lower_up: true,
        master: None,
        peer: None,
        driver: None,
        vxlan: None,
    }
}

fn veth(ifindex: u32, name: &str, peer_ifindex: u32, netnsid: Option<i32>) -> LinkDump {
    LinkDump {
        iface: iface(ifindex, name, Some("veth")),
        link: Some(peer_ifindex),
        link_netnsid: netnsid,
    }
}

fn ns(links: Vec<LinkDump>, nsids: &[(i32, u32)]) -> NsDump {
    NsDump {
        links,
        routes: Vec::new(),
        nsids: nsids.iter().copied().collect(),
    }
}

fn peer(dumps: &[(u32, NsDump)], netns: u32, name: &str) -> Option<InterfaceRef> {
    let (_, dump) = dumps.iter().find(|(inode, _)| *inode == netns).unwrap();
    dump.links
        .iter()
        .find(|l| l.iface.name == name)
        .unwrap()
        .iface
        .peer
}

fn at(netns: u32, ifindex: u32) -> Option<InterfaceRef> {
    Some(InterfaceRef { netns, ifindex })
}

#[test]
fn veth_peers_resolve_through_netnsid() {
    // Host (inode 1) knows ns 2 as id 0 and ns 3 as id 1; each container's
    // eth0 sees the host as its id 0. Both containers' eth0 are ifindex 2.
    let mut dumps = vec![
        (
            1,
            ns(
                vec![veth(7, "vethA", 2, Some(0)), veth(9, "vethB", 2, Some(1))],
                &[(0, 2), (1, 3)],
            ),
        ),
        (2, ns(vec![veth(2, "eth0", 7, Some(0))], &[(0, 1)])),
        (3, ns(vec![veth(2, "eth0", 9, Some(0))], &[(0, 1)])),
    ];
    peers::resolve(&mut dumps);
    assert_eq!(peer(&dumps, 1, "vethA"), at(2, 2));
    assert_eq!(peer(&dumps, 1, "vethB"), at(3, 2));
    assert_eq!(peer(&dumps, 2, "eth0"), at(1, 7));
    assert_eq!(peer(&dumps, 3, "eth0"), at(1, 9));
}

#[test]
fn veth_peers_match_mutually_with_the_same_ifindex() {
    // No netnsid could be mapped: both ends are ifindex 5 pointing at 5,
    // and a third namespace has an unrelated veth also numbered 5.
    let mut dumps = vec![
        (10, ns(vec![veth(5, "host-end", 5, Some(3))], &[])),
        (20, ns(vec![veth(5, "ns-end", 5, Some(0))], &[])),
        (30, ns(vec![veth(5, "other", 8, Some(0))], &[])),
    ];
    peers::resolve(&mut dumps);
    assert_eq!(peer(&dumps, 10, "host-end"), at(20, 5));
    assert_eq!(peer(&dumps, 20, "ns-end"), at(10, 5));
    assert_eq!(peer(&dumps, 30, "other"), None);
}

#[test]
fn ambiguous_mutual_match_is_left_unresolved() {
    let mut dumps = vec![
        (10, ns(vec![veth(5, "a", 5, Some(0))], &[])),
        (20, ns(vec![veth(5, "b", 5, Some(0))], &[])),
        (30, ns(vec![veth(5, "c", 5, Some(0))], &[])),
    ];
    peers::resolve(&mut dumps);
    assert!(dumps.iter().all(|(_, d)| d.links[0].iface.peer.is_none()));
}

#[test]
fn veth_peer_in_the_same_namespace_has_no_netnsid() {
    let mut dumps = vec![
        (
            1,
            ns(vec![veth(4, "v0", 5, None), veth(5, "v1", 4, None)], &[]),
        ),
        (2, ns(vec![veth(4, "x", 5, Some(0))], &[(0, 1)])),
    ];
    peers::resolve(&mut dumps);
    assert_eq!(peer(&dumps, 1, "v0"), at(1, 5));
    assert_eq!(peer(&dumps, 1, "v1"), at(1, 4));
    assert_eq!(peer(&dumps, 2, "x"), at(1, 5));
}

#[test]
fn netnsid_pointing_at_a_missing_ifindex_gives_no_peer() {
    let mut dumps = vec![
        (1, ns(vec![veth(4, "v0", 99, Some(0))], &[(0, 2)])),
        (2, ns(vec![], &[])),
    ];
    peers::resolve(&mut dumps);
    assert_eq!(peer(&dumps, 1, "v0"), None);
}

#[test]
fn only_veths_get_peers() {
    // A vlan's IFLA_LINK is its lower device, not a peer.
    let vlan = LinkDump {
        iface: iface(6, "eth0.10", Some("vlan")),
        link: Some(2),
        link_netnsid: None,
    };
    let mut dumps = vec![(
        1,
        ns(
            vec![
                LinkDump {
                    iface: iface(2, "eth0", None),
                    link: None,
                    link_netnsid: None,
                },
                vlan,
            ],
            &[],
        ),
    )];
    peers::resolve(&mut dumps);
    assert_eq!(peer(&dumps, 1, "eth0.10"), None);
}

#[test]
fn bridge_names_of_docker_networks() {
    let id = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4";
    let default_opts: HashMap<String, String> = [(
        "com.docker.network.bridge.name".to_string(),
        "docker0".to_string(),
    )]
    .into();
    assert_eq!(
        bridge_name("bridge", id, "bridge", Some(&default_opts)).as_deref(),
        Some("docker0")
    );
    assert_eq!(
        bridge_name("bridge", id, "bridge", None).as_deref(),
        Some("docker0")
    );
    assert_eq!(
        bridge_name("lab", id, "bridge", None).as_deref(),
        Some("br-3f2a9c1b7d4e")
    );
    let named: HashMap<String, String> = [(
        "com.docker.network.bridge.name".to_string(),
        "labbr".to_string(),
    )]
    .into();
    assert_eq!(
        bridge_name("lab", id, "bridge", Some(&named)).as_deref(),
        Some("labbr")
    );
    assert_eq!(bridge_name("host", id, "host", None), None);
    assert_eq!(bridge_name("none", id, "null", None), None);
}

fn namespace(inode: u32, owner: Owner, names: &[&str]) -> Namespace {
    Namespace {
        inode,
        owner,
        netns_names: names.iter().map(|n| n.to_string()).collect(),
        interfaces: vec![iface(1, "lo", None)],
        routes: Vec::new(),
        ip_forward: Some(false),
        nsfs_path: None,
    }
}

fn container(name: &str, id: &str, netns: u32) -> Container {
    Container {
        id: id.to_string(),
        name: name.to_string(),
        pid: 100,
        netns,
        sandbox_key: format!("/var/run/docker/netns/{}", &id[..12]),
        networks: Vec::new(),
        dns: Vec::new(),
        network_mode: Default::default(),
        paused: false,
        image: String::new(),
        command: Vec::new(),
        published: Vec::new(),
        engine: String::new(),
    }
}

fn sample() -> Topology {
    let c1 = container("server-1", "aaaa11112222333344445555", 11);
    let c2 = container("client-1", "aaab11112222333344445555", 12);
    Topology {
        namespaces: vec![
            namespace(1, Owner::Host, &[]),
            namespace(
                11,
                Owner::Container {
                    name: c1.name.clone(),
                    id: c1.id.clone(),
                },
                &["srv"],
            ),
            namespace(
                12,
                Owner::Container {
                    name: c2.name.clone(),
                    id: c2.id.clone(),
                },
                &[],
            ),
            namespace(
                20,
                Owner::NetnsName("my-net".to_string()),
                &["my-net", "alias"],
            ),
            namespace(
                30,
                Owner::Process {
                    pid: 123,
                    comm: "sshd".to_string(),
                },
                &[],
            ),
        ],
        containers: vec![c1, c2],
        docker_error: None,
        docker_networks: vec![DockerNetwork {
            name: "bridge".to_string(),
            id: "f00d".to_string(),
            driver: "bridge".to_string(),
            bridge: Some("docker0".to_string()),
            subnets: vec![(IpAddr::from([172, 17, 0, 0]), 16)],
            masquerade: true,
            engine: String::new(),
        }],
        host_netns: 1,
        inactive_containers: Vec::new(),
        engines: Vec::new(),
    }
}

#[test]
fn owner_labels() {
    let t = sample();
    assert_eq!(t.owner_label(1), "host");
    assert_eq!(t.owner_label(11), "server-1");
    assert_eq!(t.owner_label(20), "netns my-net");
    assert_eq!(t.owner_label(30), "pid 123 (sshd)");
    assert_eq!(t.owner_label(4026532999), "netns:[4026532999]");
}

#[test]
fn lookups() {
    let t = sample();
    assert_eq!(t.container("server-1").unwrap().netns, 11);
    assert_eq!(t.container("/client-1").unwrap().netns, 12);
    assert_eq!(t.container("aaab").unwrap().name, "client-1");
    assert!(t.container("aaa").is_none(), "ambiguous id prefix");
    assert!(t.container("").is_none());
    assert_eq!(t.netns_by_name("my-net").unwrap().inode, 20);
    assert_eq!(t.netns_by_name("alias").unwrap().inode, 20);
    assert_eq!(
        t.netns_by_name("srv").unwrap().inode,
        11,
        "a container attached with `ip netns attach`"
    );
    assert!(t.netns_by_name("nope").is_none());
    assert_eq!(t.bridge_network("docker0").unwrap().name, "bridge");
    assert!(t.bridge_network("br-0123456789ab").is_none());
    assert_eq!(t.interface(20, 1).unwrap().name, "lo");
    assert!(t.interface(20, 2).is_none());
    assert!(t.interface(99, 1).is_none());
}

#[tokio::test]
async fn unreachable_docker_is_a_message_not_an_error() {
    let dir = std::env::temp_dir().join(format!("pkttrace-enrich-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.sock");
    let missing = missing.to_str().unwrap();
    assert_eq!(
        discover_at(std::path::Path::new(missing))
            .await
            .err()
            .unwrap(),
        format!("Docker is not reachable at {missing} (is dockerd running?)")
    );
    // A socket file nobody listens on any more (dockerd crashed).
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let stale = stale.to_str().unwrap();
    assert_eq!(
        discover_at(std::path::Path::new(stale))
            .await
            .err()
            .unwrap(),
        format!("Docker is not reachable at {stale} (is dockerd running?)")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `nft -j list ruleset` and `nft -a list ruleset`, recorded together on a
/// Docker 20.10 host (iptables-nft) with a container on the default bridge
/// and on a network with bridge `pt-explore-br`, publishing `-p 4000:80`.
fn recorded_ruleset() -> Ruleset {
    super::firewall::parse(
        include_str!("fixtures/nft-ruleset.json"),
        include_str!("fixtures/nft-ruleset.txt"),
    )
    .unwrap()
}

fn chain<'r>(ruleset: &'r Ruleset, table: &str, name: &str) -> &'r Chain {
    ruleset
        .chains
        .iter()
        .find(|c| c.family == "ip" && c.table == table && c.name == name)
        .unwrap_or_else(|| panic!("no chain {table} {name}"))
}

#[test]
fn ruleset_chains_know_their_hooks_and_callers() {
    let ruleset = recorded_ruleset();
    let postrouting = chain(&ruleset, "nat", "POSTROUTING");
    let hook = postrouting.hook.as_ref().unwrap();
    assert_eq!(
        (
            hook.hook.as_str(),
            hook.kind.as_str(),
            hook.priority,
            hook.policy.as_deref()
        ),
        ("postrouting", "nat", 100, Some("accept"))
    );
    let docker_nat = chain(&ruleset, "nat", "DOCKER");
    assert_eq!(docker_nat.hook, None, "only jumped to");
    assert_eq!(docker_nat.entered_from, ["PREROUTING", "OUTPUT"]);
    assert_eq!(
        chain(&ruleset, "filter", "DOCKER-ISOLATION-STAGE-2").entered_from,
        ["DOCKER-ISOLATION-STAGE-1"]
    );
    assert_eq!(
        chain(&ruleset, "filter", "FORWARD")
            .hook
            .as_ref()
            .unwrap()
            .policy
            .as_deref(),
        Some("drop")
    );
}

#[test]
fn ruleset_rules_keep_nfts_wording_and_structure() {
    let ruleset = recorded_ruleset();
    let dnat = &chain(&ruleset, "nat", "DOCKER").rules[2];
    // The JSON only says "xt target DNAT"; the destination comes from the text.
    assert_eq!(
        dnat.text,
        "iifname != \"docker0\" tcp dport 4000 dnat to 172.17.0.2:80"
    );
    assert_eq!(dnat.action.as_deref(), Some("dnat"));
    assert_eq!(dnat.packets, Some(0));
    assert_eq!(
        dnat.matches,
        [
            RuleMatch {
                field: "iifname".into(),
                op: "!=".into(),
                value: "docker0".into()
            },
            RuleMatch {
                field: "tcp dport".into(),
                op: "==".into(),
                value: "4000".into()
            },
        ]
    );
    let masquerade = &chain(&ruleset, "nat", "POSTROUTING").rules[1];
    assert_eq!(
        masquerade.text,
        "oifname != \"docker0\" ip saddr 172.17.0.0/16 masquerade"
    );
    assert_eq!(masquerade.packets, Some(82));
    let jump = &chain(&ruleset, "nat", "PREROUTING").rules[0];
    assert_eq!(jump.action.as_deref(), Some("jump DOCKER"));
    assert_eq!(jump.text, "fib daddr type local jump DOCKER");
}

#[test]
fn rules_touching_a_bridge_are_found_by_name_and_subnet() {
    let ruleset = recorded_ruleset();
    let docker0 = ruleset.rules_touching("docker0", &[(IpAddr::from([172, 17, 0, 1]), 16)]);
    let texts: Vec<&str> = docker0.iter().map(|(_, r)| r.text.as_str()).collect();
    assert_eq!(texts.len(), 11, "{texts:#?}");
    assert!(
        texts.iter().all(|t| !t.contains("pt-explore-br")),
        "{texts:#?}"
    );
    // Names no interface, only the container's address (the hairpin NAT).
    assert!(texts.contains(&"ip saddr 172.17.0.2 ip daddr 172.17.0.2 tcp dport 80 masquerade"));
    let other = ruleset.rules_touching("pt-explore-br", &[(IpAddr::from([192, 168, 80, 1]), 20)]);
    assert_eq!(other.len(), 8);
    assert!(ruleset.rules_touching("br-0123456789ab", &[]).is_empty());
}

#[test]
fn dnat_rules_are_found_by_port() {
    let ruleset = recorded_ruleset();
    let found = ruleset.dnat_rules_for("tcp", 4000);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].0.table.as_str(), found[0].0.name.as_str()),
        ("nat", "DOCKER")
    );
    assert!(ruleset.dnat_rules_for("udp", 4000).is_empty());
    assert!(
        ruleset.dnat_rules_for("tcp", 80).is_empty(),
        "80 is the container's port"
    );
}

#[test]
fn rules_missing_from_the_text_listing_are_worded_from_the_json() {
    let ruleset = super::firewall::parse(include_str!("fixtures/nft-ruleset.json"), "").unwrap();
    let dnat = &chain(&ruleset, "nat", "DOCKER").rules[2];
    assert_eq!(dnat.text, "iifname != docker0 tcp dport 4000 dnat");
    assert!(super::firewall::parse("{\"not\": \"nft\"}", "").is_err());
}

#[test]
fn resolv_conf_nameservers() {
    let text = "# Generated by Docker\nnameserver 127.0.0.11\noptions ndots:0\nnameserver  198.51.100.53 # lab\nnameserver fd00::53\nsearch lab\n";
    let servers: Vec<String> = super::processes::parse_nameservers(text)
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(servers, ["127.0.0.11", "198.51.100.53", "fd00::53"]);
}

#[test]
fn docker_proxy_target_from_its_arguments() {
    let proxy = |args: &str| Listener {
        protocol: "tcp".into(),
        address: "0.0.0.0:4000".parse().unwrap(),
        socket_inode: 1,
        pid: 2,
        process: "docker-proxy".into(),
        args: args.split(' ').map(str::to_string).collect(),
    };
    let args = "/usr/sbin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 4000 -container-ip 172.17.0.2 -container-port 80";
    assert_eq!(
        proxy(args).proxy_target(),
        Some("172.17.0.2:80".parse().unwrap())
    );
    assert_eq!(proxy("/usr/sbin/sshd -D").proxy_target(), None);
    assert_eq!(
        proxy("docker-proxy -container-ip 172.17.0.2").proxy_target(),
        None
    );
}

/// Docker's own namespaces are named after what its engine keeps them for:
/// an overlay network's (`1-<network id>`), Swarm's ingress sandbox, a load
/// balancer's; the engine is said when there are several.
#[test]
fn dockers_own_namespaces_are_named_after_their_networks() {
    let running = vec![super::engines::EngineProcess {
        pid: 42,
        sockets: vec!["/run/b.sock".into()],
        exec_root: "/run/b".into(),
    }];
    let engine = |name: &str, pid| Engine {
        name: name.into(),
        pid,
        ..Engine::default()
    };
    let overlay = DockerNetwork {
        name: "ovl".into(),
        id: "5e1cd3bd82c7aaaa".into(),
        driver: "overlay".into(),
        bridge: None,
        subnets: Vec::new(),
        engine: "host-b".into(),
        masquerade: true,
    };
    let other = |name: &str| DockerNamespace::Other { name: name.into() };
    let one = [engine("host-b", Some(42))];
    let two = [engine("host-a", Some(7)), engine("host-b", Some(42))];
    let networks = [overlay];
    let named = |file: &str, engines: &[Engine]| {
        let (engine, kind) = docker_namespace("0", &other(file), &running, engines, &networks);
        owner_text(&Owner::Docker { engine, kind })
    };
    assert_eq!(
        named("1-5e1cd3bd82", &one),
        "overlay network ovl's namespace"
    );
    assert_eq!(
        named("1-5e1cd3bd82", &two),
        "overlay network ovl's namespace on host-b"
    );
    assert_eq!(
        named("ingress_sbox", &two),
        "Swarm's ingress sandbox on host-b"
    );
    assert_eq!(named("lb_5e1cd3bd8", &one), "network ovl's load balancer");
    assert_eq!(named("lb_0123", &one), "network 0123's load balancer");
    assert_eq!(named("a1b2c3", &one), "Docker namespace a1b2c3");
}
