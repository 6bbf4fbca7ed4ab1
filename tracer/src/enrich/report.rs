//! The discovered model resolved into what the tables, the JSON and the
//! picture show: ifindexes and netns inodes become names, veth ends are
//! paired, bridges get their ports, Docker network and rules, and each
//! published port its serving process and DNAT rule. Pure: it only reads
//! the [`Wiring`] it is given.

use std::collections::HashSet;
use std::net::IpAddr;

use serde::Serialize;

use super::{
    Chain, Container, ContainerInside, Interface, InterfaceRef, LinkKind, Listener, Namespace,
    NamespaceIds, Owner, Route, RouteKind, Rule, Topology, Wiring,
};

/// Everything `pkttrace topology` shows; `--json` prints it as is.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Report {
    /// The container the view is narrowed to, if any.
    pub container: Option<String>,
    /// Why Docker could not be asked (containers then show as namespaces only).
    pub docker_error: Option<String>,
    /// Why the netfilter ruleset could not be read.
    pub firewall_error: Option<String>,
    pub host_namespaces: NamespaceIds,
    pub namespaces: Vec<NamespaceView>,
    pub veth_pairs: Vec<VethPair>,
    pub bridges: Vec<BridgeView>,
    pub uplinks: Vec<Uplink>,
    pub published_ports: Vec<PublishedPort>,
    pub containers: Vec<ContainerView>,
    /// The Docker engines running here (one on most machines).
    pub engines: Vec<EngineView>,
    /// The VXLAN devices (an overlay network's links to other hosts).
    pub tunnels: Vec<TunnelView>,
}

/// A VXLAN device and the remote endpoints its forwarding database names.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TunnelView {
    pub device: End,
    pub vni: u32,
    /// The UDP port its datagrams go to.
    pub port: u16,
    /// The namespace whose network carries its datagrams (its socket's).
    pub underlay: Option<String>,
    pub remotes: Vec<TunnelRemote>,
}

/// Where a VXLAN device sends some MAC addresses' frames.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TunnelRemote {
    /// The remote tunnel endpoint's address (VTEP).
    pub vtep: String,
    /// The MAC addresses whose frames go there.
    pub macs: Vec<String>,
    /// The VXLAN device at that endpoint, when it is on this machine: one
    /// of the same VNI whose underlay has that address.
    pub far_end: Option<End>,
}

/// A Docker engine on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct EngineView {
    /// The name it gives its host.
    pub name: String,
    /// The unix socket it was asked on.
    pub socket: String,
    /// The namespace it runs in (its host), when its process is known.
    pub host: Option<String>,
    /// Its address towards the other nodes, when it is in a Swarm.
    pub swarm_address: Option<String>,
    /// Why it could not be asked.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct NamespaceView {
    pub netns: u32,
    /// `host`, a container name, `netns NAME` or `pid N (comm)`.
    pub owner: String,
    pub kind: NamespaceKind,
    pub netns_names: Vec<String>,
    /// `net.ipv4.conf.all.forwarding` in this namespace.
    pub ip_forward: Option<bool>,
    pub interfaces: Vec<InterfaceView>,
    pub routes: Vec<RouteView>,
}

/// Who owns a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKind {
    /// The host's own namespace.
    Host,
    /// A Docker container's.
    Container,
    /// An `ip netns` name's.
    Netns,
    /// Where a Docker engine other than the machine's own runs.
    #[serde(rename = "docker_host")]
    DockerHost,
    /// One of Docker's own (an overlay network's, Swarm's ingress).
    Docker,
    /// Only a process's (found through /proc).
    Process,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct InterfaceView {
    pub ifindex: u32,
    pub name: String,
    pub kind: LinkKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    pub mac: Option<String>,
    pub addresses: Vec<String>,
    /// `up`, `down`, or `no carrier` (up, but a veth whose peer is down).
    pub state: &'static str,
    /// The bridge this interface is a port of.
    pub bridge: Option<String>,
    /// The other end of a veth.
    pub peer: Option<End>,
}

/// One interface, wherever it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
pub struct End {
    pub namespace: String,
    pub netns: u32,
    pub interface: String,
    pub ifindex: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RouteView {
    /// `main`, `local`, `default` or the table's number.
    pub table: String,
    /// `unicast`, `local`, `broadcast`, `blackhole`, ...
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `default` or ADDRESS/PREFIX.
    pub destination: String,
    pub gateway: Option<String>,
    pub device: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct VethPair {
    /// The end in the namespace listed first (the host's, when it has one).
    pub a: End,
    pub b: End,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct BridgeView {
    pub namespace: String,
    pub netns: u32,
    pub name: String,
    pub ifindex: u32,
    pub addresses: Vec<String>,
    /// The Docker network whose bridge this is.
    pub docker_network: Option<String>,
    pub ports: Vec<BridgePort>,
    /// Netfilter rules that name this bridge or an address in its subnets.
    pub rules: Vec<RuleView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct BridgePort {
    pub interface: String,
    pub ifindex: u32,
    /// What is plugged in: the veth's other end.
    pub peer: Option<End>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RuleView {
    pub family: String,
    pub table: String,
    pub chain: String,
    /// The hook of a base chain (`postrouting`), null for a chain only jumped to.
    pub hook: Option<String>,
    /// Chains that jump here.
    pub entered_from: Vec<String>,
    pub handle: u64,
    /// nft's wording, without the counter.
    pub rule: String,
    pub action: Option<String>,
    pub packets: Option<u64>,
}

/// Where packets leave the host: a default route of its main table.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Uplink {
    pub interface: String,
    pub gateway: Option<String>,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct PublishedPort {
    /// The container it leads to (by Docker, or by the namespace owning the target address).
    pub container: Option<String>,
    pub protocol: String,
    /// `0.0.0.0`, `::`, or one address.
    pub host_ip: String,
    pub host_port: u16,
    pub container_ip: Option<String>,
    pub container_port: Option<u16>,
    /// Processes listening on the host port (docker-proxy, usually).
    pub served_by: Vec<Server>,
    /// NAT rules that rewrite the host port's traffic to the container.
    pub dnat_rules: Vec<RuleView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Server {
    pub pid: u32,
    pub process: String,
    pub listens_on: String,
    pub socket_inode: u64,
    pub args: Vec<String>,
    /// docker-proxy's `-container-ip`:`-container-port`.
    pub forwards_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ContainerView {
    pub name: String,
    pub id: String,
    pub pid: u32,
    pub netns: u32,
    pub networks: Vec<ContainerNetworkView>,
    /// Its init process's namespaces (compare with `host_namespaces`).
    pub namespaces: Option<NamespaceIds>,
    /// From its own /etc/resolv.conf.
    pub nameservers: Vec<String>,
    pub resolv_conf_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ContainerNetworkView {
    pub network: String,
    pub bridge: Option<String>,
    pub ip: Option<String>,
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<String>,
}

impl Report {
    /// The whole host, or narrowed to `focus`: its namespace, the host-side
    /// interfaces it is wired to, its bridges, ports and the uplink.
    pub fn build(wiring: &Wiring, focus: Option<&Container>) -> Report {
        let topology = &wiring.topology;
        let ruleset = wiring.firewall.as_ref().ok();
        let all_bridges: Vec<BridgeView> = topology
            .namespaces
            .iter()
            .flat_map(|ns| {
                ns.interfaces
                    .iter()
                    .filter(|i| i.kind == LinkKind::Bridge)
                    .map(move |bridge| bridge_view(topology, ns, bridge, ruleset))
            })
            .collect();
        let uplinks = uplinks(topology);
        let mut published_ports = published_ports(wiring);
        let mut containers: Vec<ContainerView> = topology
            .containers
            .iter()
            .map(|c| {
                let inside = wiring.containers.iter().find(|i| i.id == c.id);
                container_view(topology, c, inside, &all_bridges)
            })
            .collect();
        let mut namespaces: Vec<NamespaceView> = topology
            .namespaces
            .iter()
            .map(|ns| namespace_view(topology, ns))
            .collect();
        let mut veth_pairs = veth_pairs(&namespaces);
        let mut bridges = all_bridges;
        let mut tunnels = tunnels(wiring);
        if let Some(focus) = focus {
            let wired: HashSet<End> = veth_pairs
                .iter()
                .filter_map(
                    |p| match (p.a.netns == focus.netns, p.b.netns == focus.netns) {
                        (true, false) => Some(p.b.clone()),
                        (false, true) => Some(p.a.clone()),
                        _ => None,
                    },
                )
                .collect();
            veth_pairs.retain(|p| p.a.netns == focus.netns || p.b.netns == focus.netns);
            bridges.retain(|b| {
                wired.iter().any(|end| {
                    end.netns == b.netns && b.ports.iter().any(|p| p.ifindex == end.ifindex)
                })
            });
            let keep = |ns: u32, name: &str| {
                wired.iter().any(|e| e.netns == ns && e.interface == name)
                    || bridges.iter().any(|b| b.netns == ns && b.name == name)
                    || (ns == topology.host_netns && uplinks.iter().any(|u| u.interface == name))
            };
            namespaces
                .retain(|ns| ns.netns == focus.netns || wired.iter().any(|e| e.netns == ns.netns));
            for ns in namespaces.iter_mut().filter(|ns| ns.netns != focus.netns) {
                ns.interfaces.retain(|i| keep(ns.netns, &i.name));
                ns.routes
                    .retain(|r| r.device.as_deref().is_some_and(|d| keep(ns.netns, d)));
            }
            published_ports.retain(|p| p.container.as_deref() == Some(focus.name.as_str()));
            containers.retain(|c| c.id == focus.id);
            tunnels.retain(|t| namespaces.iter().any(|ns| ns.netns == t.device.netns));
        }
        Report {
            container: focus.map(|c| c.name.clone()),
            docker_error: topology.docker_error.clone(),
            firewall_error: wiring.firewall.as_ref().err().cloned(),
            host_namespaces: wiring.host_namespaces,
            namespaces,
            veth_pairs,
            bridges,
            uplinks,
            published_ports,
            containers,
            engines: topology
                .engines
                .iter()
                .map(|engine| engine_view(topology, engine))
                .collect(),
            tunnels,
        }
    }
}

/// Every VXLAN device with its remote endpoints, each matched to the
/// device there when that is on this machine.
fn tunnels(wiring: &Wiring) -> Vec<TunnelView> {
    let topology = &wiring.topology;
    let underlay_has = |netns: Option<u32>, address: IpAddr| {
        netns
            .and_then(|netns| topology.namespace(netns))
            .is_some_and(|ns| {
                ns.interfaces
                    .iter()
                    .any(|i| i.addresses.iter().any(|(a, _)| *a == address))
            })
    };
    topology
        .vxlan_devices()
        .filter_map(|(netns, iface, vxlan)| {
            let device = end(
                topology,
                InterfaceRef {
                    netns,
                    ifindex: iface.ifindex,
                },
            )?;
            let mut remotes: Vec<TunnelRemote> = Vec::new();
            for entry in wiring
                .vxlan_fdb
                .iter()
                .filter(|e| e.netns == netns && e.port == iface.ifindex)
            {
                let Some(vtep) = entry.remote else { continue };
                let mac = mac_text(entry.mac);
                match remotes.iter_mut().find(|r| r.vtep == vtep.to_string()) {
                    Some(remote) => remote.macs.push(mac),
                    None => remotes.push(TunnelRemote {
                        vtep: vtep.to_string(),
                        macs: vec![mac],
                        far_end: topology
                            .vxlan_devices()
                            .find(|(far_netns, _, far)| {
                                *far_netns != netns
                                    && far.vni == vxlan.vni
                                    && underlay_has(far.underlay_netns, vtep)
                            })
                            .and_then(|(far_netns, far, _)| {
                                end(
                                    topology,
                                    InterfaceRef {
                                        netns: far_netns,
                                        ifindex: far.ifindex,
                                    },
                                )
                            }),
                    }),
                }
            }
            Some(TunnelView {
                device,
                vni: vxlan.vni,
                port: vxlan.port,
                underlay: vxlan.underlay_netns.map(|ns| topology.owner_label(ns)),
                remotes,
            })
        })
        .collect()
}

fn namespace_view(topology: &Topology, ns: &Namespace) -> NamespaceView {
    let kind = match ns.owner {
        Owner::Host => NamespaceKind::Host,
        Owner::Container { .. } => NamespaceKind::Container,
        Owner::NetnsName(_) => NamespaceKind::Netns,
        Owner::DockerHost { .. } => NamespaceKind::DockerHost,
        Owner::Docker { .. } => NamespaceKind::Docker,
        Owner::Process { .. } => NamespaceKind::Process,
    };
    NamespaceView {
        netns: ns.inode,
        owner: topology.owner_label(ns.inode),
        kind,
        netns_names: ns.netns_names.clone(),
        ip_forward: ns.ip_forward,
        interfaces: ns
            .interfaces
            .iter()
            .map(|i| interface_view(topology, ns, i))
            .collect(),
        routes: ns.routes.iter().map(|r| route_view(ns, r)).collect(),
    }
}

fn interface_view(topology: &Topology, ns: &Namespace, iface: &Interface) -> InterfaceView {
    let state = match (iface.up, iface.lower_up) {
        (false, _) => "down",
        (true, false) => "no carrier",
        (true, true) => "up",
    };
    InterfaceView {
        ifindex: iface.ifindex,
        name: iface.name.clone(),
        kind: iface.kind.clone(),
        mtu: iface.mtu,
        mac: iface.mac.map(mac_text),
        addresses: iface.addresses.iter().map(|a| cidr(*a)).collect(),
        state,
        bridge: iface
            .master
            .and_then(|m| ns.interface(m))
            .map(|b| b.name.clone()),
        peer: iface.peer.and_then(|p| end(topology, p)),
    }
}

fn end(topology: &Topology, at: InterfaceRef) -> Option<End> {
    let iface = topology.interface(at.netns, at.ifindex)?;
    Some(End {
        namespace: topology.owner_label(at.netns),
        netns: at.netns,
        interface: iface.name.clone(),
        ifindex: at.ifindex,
    })
}

fn route_view(ns: &Namespace, route: &Route) -> RouteView {
    let table = match route.table {
        254 => "main".to_string(),
        255 => "local".to_string(),
        253 => "default".to_string(),
        n => n.to_string(),
    };
    let kind = match route.kind {
        RouteKind::Unicast => "unicast",
        RouteKind::Local => "local",
        RouteKind::Broadcast => "broadcast",
        RouteKind::Multicast => "multicast",
        RouteKind::Blackhole => "blackhole",
        RouteKind::Unreachable => "unreachable",
        RouteKind::Prohibit => "prohibit",
        RouteKind::Other => "other",
    };
    RouteView {
        table,
        kind,
        destination: route
            .destination
            .map_or_else(|| "default".to_string(), cidr),
        gateway: route.gateway.map(|g| g.to_string()),
        device: route
            .device
            .and_then(|d| ns.interface(d))
            .map(|i| i.name.clone()),
        source: route.source.map(|s| s.to_string()),
    }
}

/// Each pair once, from the end met first (namespaces are host first).
fn veth_pairs(namespaces: &[NamespaceView]) -> Vec<VethPair> {
    let mut seen: HashSet<(u32, u32)> = HashSet::new();
    let mut pairs = Vec::new();
    for ns in namespaces {
        for iface in &ns.interfaces {
            let Some(peer) = &iface.peer else { continue };
            if seen.contains(&(ns.netns, iface.ifindex)) {
                continue;
            }
            seen.insert((peer.netns, peer.ifindex));
            let a = End {
                namespace: ns.owner.clone(),
                netns: ns.netns,
                interface: iface.name.clone(),
                ifindex: iface.ifindex,
            };
            pairs.push(VethPair { a, b: peer.clone() });
        }
    }
    pairs
}

fn bridge_view(
    topology: &Topology,
    ns: &Namespace,
    bridge: &Interface,
    ruleset: Option<&crate::enrich::Ruleset>,
) -> BridgeView {
    let in_host = ns.inode == topology.host_netns;
    // Docker's bridges live in the host namespace; a same-named bridge
    // elsewhere is someone else's.
    let docker_network = in_host
        .then(|| topology.bridge_network(&bridge.name))
        .flatten()
        .map(|n| n.name.clone());
    let subnets: Vec<(IpAddr, u8)> = bridge.addresses.clone();
    let rules = match ruleset {
        Some(ruleset) if in_host => ruleset
            .rules_touching(&bridge.name, &subnets)
            .into_iter()
            .map(|(chain, rule)| rule_view(chain, rule))
            .collect(),
        _ => Vec::new(),
    };
    BridgeView {
        namespace: topology.owner_label(ns.inode),
        netns: ns.inode,
        name: bridge.name.clone(),
        ifindex: bridge.ifindex,
        addresses: bridge.addresses.iter().map(|a| cidr(*a)).collect(),
        docker_network,
        ports: ns
            .bridge_ports(bridge.ifindex)
            .map(|port| BridgePort {
                interface: port.name.clone(),
                ifindex: port.ifindex,
                peer: port.peer.and_then(|p| end(topology, p)),
            })
            .collect(),
        rules,
    }
}

fn rule_view(chain: &Chain, rule: &Rule) -> RuleView {
    RuleView {
        family: chain.family.clone(),
        table: chain.table.clone(),
        chain: chain.name.clone(),
        hook: chain.hook.as_ref().map(|h| h.hook.clone()),
        entered_from: chain.entered_from.clone(),
        handle: rule.handle,
        rule: rule.text.clone(),
        action: rule.action.clone(),
        packets: rule.packets,
    }
}

fn uplinks(topology: &Topology) -> Vec<Uplink> {
    let Some(host) = topology.namespace(topology.host_netns) else {
        return Vec::new();
    };
    host.routes
        .iter()
        .filter(|r| r.table == 254 && r.destination.is_none() && r.kind == RouteKind::Unicast)
        .filter_map(|r| {
            let iface = host.interface(r.device?)?;
            Some(Uplink {
                interface: iface.name.clone(),
                gateway: r.gateway.map(|g| g.to_string()),
                addresses: iface.addresses.iter().map(|a| cidr(*a)).collect(),
            })
        })
        .collect()
}

/// Docker's bindings, each with the processes listening on its host port
/// and the DNAT rules for it; docker-proxies Docker did not tell about
/// (Docker unreachable) are listed from their own arguments.
fn published_ports(wiring: &Wiring) -> Vec<PublishedPort> {
    let topology = &wiring.topology;
    let mut used: HashSet<u64> = HashSet::new();
    let mut ports = Vec::new();
    for binding in &wiring.port_bindings {
        let container = topology
            .containers
            .iter()
            .find(|c| c.id == binding.container_id);
        let listeners: Vec<&Listener> = wiring
            .listeners
            .iter()
            .filter(|l| {
                l.protocol == binding.protocol
                    && l.address.port() == binding.host_port
                    && (binding.host_ip.is_empty() || binding.host_ip.parse() == Ok(l.address.ip()))
            })
            .collect();
        used.extend(listeners.iter().map(|l| l.socket_inode));
        let target = listeners.iter().find_map(|l| l.proxy_target());
        let container_ip = target.map(|t| t.ip().to_string()).or_else(|| {
            container?
                .networks
                .iter()
                .find_map(|n| n.ip)
                .map(|ip| ip.to_string())
        });
        ports.push(PublishedPort {
            container: container.map(|c| c.name.clone()),
            protocol: binding.protocol.clone(),
            host_ip: binding.host_ip.clone(),
            host_port: binding.host_port,
            container_ip,
            container_port: Some(binding.container_port),
            served_by: listeners.into_iter().map(server).collect(),
            dnat_rules: dnat_rules(
                wiring,
                &binding.protocol,
                &binding.host_ip,
                binding.host_port,
            ),
        });
    }
    for listener in &wiring.listeners {
        let Some(target) = listener.proxy_target() else {
            continue;
        };
        if used.contains(&listener.socket_inode) {
            continue;
        }
        let host_ip = listener.address.ip().to_string();
        ports.push(PublishedPort {
            container: owner_of_address(topology, target.ip()),
            protocol: listener.protocol.clone(),
            host_port: listener.address.port(),
            container_ip: Some(target.ip().to_string()),
            container_port: Some(target.port()),
            served_by: vec![server(listener)],
            dnat_rules: dnat_rules(
                wiring,
                &listener.protocol,
                &host_ip,
                listener.address.port(),
            ),
            host_ip,
        });
    }
    ports
}

fn dnat_rules(wiring: &Wiring, protocol: &str, host_ip: &str, port: u16) -> Vec<RuleView> {
    let Ok(ruleset) = &wiring.firewall else {
        return Vec::new();
    };
    // An IPv6 binding is not served by IPv4 NAT rules, and the other way round.
    let families: &[&str] = match host_ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => &["ip", "inet"],
        Ok(IpAddr::V6(_)) => &["ip6", "inet"],
        Err(_) => &["ip", "ip6", "inet"],
    };
    ruleset
        .dnat_rules_for(protocol, port)
        .into_iter()
        .filter(|(chain, _)| families.contains(&chain.family.as_str()))
        .map(|(chain, rule)| rule_view(chain, rule))
        .collect()
}

fn server(listener: &Listener) -> Server {
    Server {
        pid: listener.pid,
        process: listener.process.clone(),
        listens_on: listener.address.to_string(),
        socket_inode: listener.socket_inode,
        args: listener.args.clone(),
        forwards_to: listener.proxy_target().map(|t| t.to_string()),
    }
}

/// The namespace (other than the host's) with an interface holding `ip`.
fn owner_of_address(topology: &Topology, ip: IpAddr) -> Option<String> {
    let IpAddr::V4(ip) = ip else { return None };
    topology
        .namespaces
        .iter()
        .filter(|ns| ns.inode != topology.host_netns)
        .find(|ns| {
            ns.interfaces
                .iter()
                .any(|i| i.addresses.iter().any(|(a, _)| *a == ip))
        })
        .map(|ns| topology.owner_label(ns.inode))
}

fn container_view(
    topology: &Topology,
    c: &Container,
    inside: Option<&ContainerInside>,
    bridges: &[BridgeView],
) -> ContainerView {
    let (nameservers, resolv_conf_error) = match inside.map(|i| &i.nameservers) {
        Some(Ok(servers)) => (servers.iter().map(|s| s.to_string()).collect(), None),
        Some(Err(e)) => (Vec::new(), Some(e.clone())),
        None => (Vec::new(), None),
    };
    let networks = c
        .networks
        .iter()
        .map(|n| {
            let bridge = topology
                .docker_networks
                .iter()
                .find(|d| d.name == n.network)
                .and_then(|d| d.bridge.clone())
                .filter(|b| bridges.iter().any(|v| &v.name == b));
            ContainerNetworkView {
                network: n.network.clone(),
                bridge,
                ip: n.ip.map(|ip| ip.to_string()),
                gateway: n.gateway.map(|g| g.to_string()),
                ipv6: n.ipv6.map(|ip| ip.to_string()),
                ipv6_gateway: n.ipv6_gateway.map(|g| g.to_string()),
            }
        })
        .collect();
    ContainerView {
        name: c.name.clone(),
        id: c.id.clone(),
        pid: c.pid,
        netns: c.netns,
        networks,
        namespaces: inside.map(|i| i.namespaces),
        nameservers,
        resolv_conf_error,
    }
}

fn engine_view(topology: &Topology, engine: &super::Engine) -> EngineView {
    let host = engine
        .pid
        .and_then(|pid| super::netns::proc_netns_inode(pid).ok())
        .map(|netns| topology.owner_label(netns));
    EngineView {
        name: engine.name.clone(),
        socket: engine.socket.clone(),
        host,
        swarm_address: engine
            .swarm
            .as_ref()
            .map(|s| s.address.clone())
            .filter(|a| !a.is_empty()),
        error: engine.error.clone(),
    }
}

fn cidr((addr, len): (IpAddr, u8)) -> String {
    format!("{addr}/{len}")
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
