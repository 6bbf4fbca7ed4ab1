//! The host's network model: every network namespace with its links,
//! IPv4 addresses and routes, plus what Docker knows about containers and
//! networks. The tracer uses it to name what the kernel reports (a netns
//! inode and an ifindex); the `topology` subcommand prints it.

pub mod dns;
mod docker;
pub(super) mod engines;
pub mod facts;
mod fdb;
mod firewall;
#[cfg(test)]
mod lab_test;
mod netlink;
mod netns;
mod path_mtu;
mod peers;
mod processes;
mod published;
pub mod report;
mod sysctl;
#[cfg(test)]
mod tests;
mod watch;
mod wiring;

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::decode::{Hook, Mac};

pub use fdb::{FdbEntry, fdb_of};
pub use path_mtu::path_mtu;
pub use processes::listeners_in;
pub use published::{Published, published_target};
pub use sysctl::{Ipv4Settings, ipv4_settings, sysctl_name};
pub use watch::changes;
pub use wiring::{
    Chain, ChainHook, ContainerInside, Listener, NamespaceIds, PortBinding, Rule, RuleMatch,
    Ruleset, Wiring,
};

/// Everything discovered in one pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Host first, then containers, `ip netns` names and other processes.
    pub namespaces: Vec<Namespace>,
    /// Running containers; empty when Docker is unreachable.
    pub containers: Vec<Container>,
    /// One-line reason Docker was not reachable.
    pub docker_error: Option<String>,
    pub docker_networks: Vec<DockerNetwork>,
    /// Inode of pid 1's network namespace (pkttrace's own where pid 1
    /// cannot be inspected).
    pub host_netns: u32,
    /// Containers Docker knows that do not run (stopped, restarting, made
    /// but never started): they have no network namespace.
    #[serde(default)]
    pub inactive_containers: Vec<InactiveContainer>,
    /// The Docker engines asked: one on most machines.
    #[serde(default)]
    pub engines: Vec<Engine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub inode: u32,
    pub owner: Owner,
    /// `ip netns` names bound to this namespace, whatever its owner (a
    /// container's namespace can be given a name with `ip netns attach`).
    pub netns_names: Vec<String>,
    /// Sorted by ifindex.
    pub interfaces: Vec<Interface>,
    /// IPv4 routes of all tables (main, local and any other).
    pub routes: Vec<Route>,
    /// `net.ipv4.conf.all.forwarding` inside this namespace.
    pub ip_forward: Option<bool>,
    /// Where to enter it (`/run/netns/NAME`, `/proc/PID/ns/net`); None when
    /// not known (a model built by hand).
    pub nsfs_path: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owner {
    Host,
    Container {
        name: String,
        id: String,
    },
    NetnsName(String),
    /// Where a Docker engine other than the machine's own runs: a Docker
    /// host of its own (a second node of a Swarm, docker-in-docker).
    DockerHost {
        engine: String,
    },
    /// One of Docker's own namespaces (no container's): an overlay
    /// network's, Swarm's ingress sandbox, a load balancer's.
    Docker {
        /// The engine that keeps it, when there is more than one engine.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        engine: String,
        kind: DockerNamespace,
    },
    /// Lowest pid found in the namespace, with its command name.
    Process {
        pid: u32,
        comm: String,
    },
}

/// What one of Docker's own namespaces is for, from its file's name in the
/// engine's `netns/` folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DockerNamespace {
    /// `1-<network id>`: an overlay network's bridge and VXLAN device.
    Overlay { network: String },
    /// `ingress_sbox`: Swarm's routing mesh.
    Ingress,
    /// `lb_<network id>`: a network's load balancer.
    LoadBalancer { network: String },
    /// Another name.
    Other { name: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub ifindex: u32,
    pub name: String,
    pub kind: LinkKind,
    pub mac: Option<[u8; 6]>,
    /// IFLA_MTU: the largest packet the link takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    pub addresses: Vec<(IpAddr, u8)>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Has carrier (IFF_LOWER_UP): a veth whose peer is down is up but not
    /// lower_up, and drops what it is given.
    pub lower_up: bool,
    /// Ifindex of the bridge (or other master) this port belongs to.
    pub master: Option<u32>,
    /// The other end of a veth, resolved across namespaces.
    pub peer: Option<InterfaceRef>,
    /// Kernel driver of a host device with hardware behind it (`virtio_net`).
    pub driver: Option<String>,
    /// A VXLAN device's tunnel: its VNI, UDP port and underlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<Vxlan>,
}

/// What a VXLAN device puts around the frames it sends (`ip -d link`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vxlan {
    /// The VXLAN network identifier its frames carry.
    pub vni: u32,
    /// The UDP port its datagrams go to.
    pub port: u16,
    /// The namespace its UDP socket lives in, whose network carries the
    /// datagrams (the underlay); None when it is the device's own or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_netns: Option<u32>,
}

/// What kind of link a device is, from IFLA_INFO_KIND and its link-layer
/// type: what it does with what it is given decides what the story can
/// see beyond it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    Loopback,
    /// One end of a veth pair: the other end receives what it sends.
    Veth,
    Bridge,
    /// A tun device: IP packets, no Ethernet, handed to the program holding it.
    Tun,
    /// A tap device: Ethernet frames, handed to the program holding it.
    Tap,
    /// Frees what it is given (nothing redirected to it).
    Ifb,
    Dummy,
    Vxlan,
    Macvlan,
    Macvtap,
    Wireguard,
    /// An IP tunnel (gre, ipip, sit, geneve, gretap, ...), by its kind.
    Tunnel(String),
    /// A device with no link kind: hardware behind a driver (a NIC).
    Hardware,
    /// Any other link kind, by its IFLA_INFO_KIND.
    Other(String),
}

/// `ARPHRD_LOOPBACK` and `ARPHRD_ETHER`: the link-layer types of loopback
/// and of Ethernet-framed devices.
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_ETHER: u16 = 1;

impl LinkKind {
    /// From IFLA_INFO_KIND (None for a device without one) and the
    /// link-layer type (`ARPHRD_*`), which tells a tap from a tun.
    pub fn from_netlink(info_kind: Option<&str>, link_layer_type: u16) -> Self {
        match info_kind {
            None if link_layer_type == ARPHRD_LOOPBACK => Self::Loopback,
            None => Self::Hardware,
            Some("veth") => Self::Veth,
            Some("bridge") => Self::Bridge,
            Some("tun") if link_layer_type == ARPHRD_ETHER => Self::Tap,
            Some("tun") => Self::Tun,
            Some("ifb") => Self::Ifb,
            Some("dummy") => Self::Dummy,
            Some("vxlan") => Self::Vxlan,
            Some("macvlan") => Self::Macvlan,
            Some("macvtap") => Self::Macvtap,
            Some("wireguard") => Self::Wireguard,
            Some(kind @ ("gre" | "gretap" | "ipip" | "sit" | "geneve" | "ip6tnl" | "ip6gre")) => {
                Self::Tunnel(kind.to_string())
            }
            Some(other) => Self::Other(other.to_string()),
        }
    }

    /// What the device sends is taken in again by a device pkttrace sees
    /// (a veth's peer, a bridge's ports or the host above it, loopback):
    /// anything else hands it to the world beyond, where nothing is traced.
    pub fn passes_on(&self) -> bool {
        matches!(self, Self::Veth | Self::Bridge | Self::Loopback)
    }

    /// The kind in a word, as `ip -d link` names it ("veth", "tap", "gre");
    /// empty for loopback and hardware, which have none.
    pub fn name(&self) -> &str {
        match self {
            Self::Loopback | Self::Hardware => "",
            Self::Veth => "veth",
            Self::Bridge => "bridge",
            Self::Tun => "tun",
            Self::Tap => "tap",
            Self::Ifb => "ifb",
            Self::Dummy => "dummy",
            Self::Vxlan => "vxlan",
            Self::Macvlan => "macvlan",
            Self::Macvtap => "macvtap",
            Self::Wireguard => "wireguard",
            Self::Tunnel(kind) | Self::Other(kind) => kind,
        }
    }

    /// A program holds the device's other end and reads what it sends.
    pub fn read_by_a_program(&self) -> bool {
        matches!(self, Self::Tun | Self::Tap | Self::Macvtap)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InterfaceRef {
    pub netns: u32,
    pub ifindex: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub table: u32,
    pub kind: RouteKind,
    /// None is the default route.
    pub destination: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub device: Option<u32>,
    /// Preferred source address (RTA_PREFSRC).
    pub source: Option<IpAddr>,
    /// An IPv6 route (a default route names no address to tell by).
    #[serde(default)]
    pub ipv6: bool,
}

/// Route type: the local table is mostly `Local` and `Broadcast`, and
/// `Blackhole`/`Unreachable`/`Prohibit` routes explain drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteKind {
    Unicast,
    Local,
    Broadcast,
    Multicast,
    Blackhole,
    Unreachable,
    Prohibit,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    pub pid: u32,
    pub netns: u32,
    pub sandbox_key: String,
    pub networks: Vec<ContainerNetwork>,
    /// `--dns` servers given to the container (empty: Docker's default).
    pub dns: Vec<IpAddr>,
    /// `--network`: its own namespace on Docker networks, or none, or
    /// another's.
    #[serde(default)]
    pub network_mode: NetworkMode,
    /// `docker pause`: its processes are frozen.
    #[serde(default)]
    pub paused: bool,
    /// The image it runs, as it was named.
    #[serde(default)]
    pub image: String,
    /// Its command (the arguments after the image, or the image's own).
    #[serde(default)]
    pub command: Vec<String>,
    /// Its ports Docker published (`-p HOSTPORT:PORT`).
    #[serde(default)]
    pub published: Vec<PortBinding>,
    /// The engine that runs it (its `name`).
    #[serde(default)]
    pub engine: String,
}

/// A Docker engine on this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engine {
    /// The name it gives its host (`docker info`'s Name).
    pub name: String,
    /// The unix socket it was asked on.
    pub socket: String,
    /// Its process, when found.
    pub pid: Option<u32>,
    /// Where it keeps its namespaces and runtime state.
    pub exec_root: Option<String>,
    /// The network namespace it runs in: its host.
    #[serde(default)]
    pub netns: Option<u32>,
    /// Its node in a Swarm, when it is in one.
    pub swarm: Option<SwarmNode>,
    /// Why it could not be asked, when it could not.
    pub error: Option<String>,
}

/// An engine's place in a Swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmNode {
    pub node_id: String,
    /// The address it talks to the other nodes from (the underlay).
    pub address: String,
}

/// A container's network (`docker run --network`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum NetworkMode {
    /// A namespace of its own, on Docker networks (the default bridge or others).
    #[default]
    Networks,
    /// `--network none`: a namespace of its own with only `lo`.
    None,
    /// `--network host`: the host's namespace.
    Host,
    /// `--network container:ID`: another container's namespace.
    Container { id: String },
}

/// A container that does not run: no process, no network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InactiveContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    pub status: ContainerStatus,
}

/// Why a container does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ContainerStatus {
    /// Made (`docker create`) and never started.
    Created,
    /// Its main process ended with `code`.
    Exited {
        code: i64,
    },
    /// Docker restarts it (a restart policy after it ended); `count` times so far.
    Restarting {
        count: i64,
    },
    Removing,
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerNetwork {
    pub network: String,
    pub ip: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
    /// Its IPv6 address and gateway on a network made with `--ipv6`.
    #[serde(default)]
    pub ipv6: Option<IpAddr>,
    #[serde(default)]
    pub ipv6_gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerNetwork {
    pub name: String,
    pub id: String,
    pub driver: String,
    /// Linux bridge of a bridge-driver network: "docker0" for the default
    /// network, else option `com.docker.network.bridge.name` or "br-" +
    /// the first 12 characters of the id.
    pub bridge: Option<String>,
    pub subnets: Vec<(IpAddr, u8)>,
    /// The engine that made it (its `name`).
    #[serde(default)]
    pub engine: String,
    /// Docker masquerades what leaves the network for elsewhere (option
    /// `com.docker.network.bridge.enable_ip_masquerade`, on by default).
    #[serde(default = "masquerades_by_default")]
    pub masquerade: bool,
}

fn masquerades_by_default() -> bool {
    true
}

/// The netfilter hooks where `namespace` has base chains of its own, for
/// IPv4 and for IPv6 (tables named `skip_tables*` left out): at the others
/// netfilter does nothing there.
pub fn netfilter_hooks_of(
    namespace: &Namespace,
    host_netns: u32,
    skip_tables: &str,
) -> Result<FamilyHooks, String> {
    let path = (namespace.inode != host_netns)
        .then_some(namespace.nsfs_path.as_deref())
        .map(|p| p.ok_or_else(|| format!("cannot enter netns:[{}]", namespace.inode)))
        .transpose()?;
    let (ipv4, ipv6) = firewall::hooks_with_chains(path, skip_tables)?;
    let hooks = |names: Vec<String>| {
        names
            .iter()
            .filter_map(|name| Hook::from_nft_name(name))
            .collect()
    };
    Ok(FamilyHooks {
        ipv4: hooks(ipv4),
        ipv6: hooks(ipv6),
    })
}

/// A namespace's netfilter hooks with chains, per family.
#[derive(Clone, Debug, Default)]
pub struct FamilyHooks {
    pub ipv4: Vec<Hook>,
    pub ipv6: Vec<Hook>,
}

/// The netfilter ruleset of `namespace`: the host's, or read inside it.
pub fn read_ruleset_of(namespace: &Namespace, host_netns: u32) -> Result<Ruleset, String> {
    if namespace.inode == host_netns {
        return firewall::read();
    }
    let path = namespace
        .nsfs_path
        .as_deref()
        .ok_or_else(|| format!("cannot enter netns:[{}]", namespace.inode))?;
    firewall::read_in(path)
}

/// `net.bridge.bridge-nf-call-iptables` (None when br_netfilter is not loaded).
pub fn bridge_calls_iptables() -> Option<bool> {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .ok()
        .map(|v| v.trim() != "0")
}

impl Topology {
    /// Reads the whole model. Docker failures end up in `docker_error`;
    /// only failing to read the namespaces themselves is an error.
    pub async fn discover() -> anyhow::Result<Topology> {
        let running = engines::running();
        let docker_dirs: Vec<(std::path::PathBuf, usize)> = running
            .iter()
            .enumerate()
            .map(|(index, engine)| (engine.exec_root.join("netns"), index))
            .collect();
        let (namespaces, docker) =
            tokio::join!(netns::discover(&docker_dirs), docker::discover(&running));
        let (host_netns, mut namespaces) = namespaces?;
        let (found, docker_error) = match docker {
            Ok(found) => (found, None),
            Err(e) => (docker::Found::default(), Some(e)),
        };
        let docker::Found {
            containers,
            inactive: inactive_containers,
            networks: docker_networks,
            engines,
        } = found;
        for ns in &mut namespaces {
            if let Owner::Docker { engine, kind } = &mut ns.owner {
                (*engine, *kind) =
                    docker_namespace(engine, kind, &running, &engines, &docker_networks);
            }
            if ns.inode == host_netns {
                ns.owner = Owner::Host;
            } else if let Some(c) = containers.iter().find(|c| c.netns == ns.inode) {
                ns.owner = Owner::Container {
                    name: c.name.clone(),
                    id: c.id.clone(),
                };
            } else if let Some(engine) = engines.iter().find(|e| e.netns == Some(ns.inode)) {
                ns.owner = Owner::DockerHost {
                    engine: engine.name.clone(),
                };
            }
        }
        namespaces.sort_by_cached_key(|ns| {
            let rank = match ns.owner {
                Owner::Host => 0,
                Owner::DockerHost { .. } => 1,
                Owner::Container { .. } => 2,
                Owner::NetnsName(_) => 3,
                Owner::Docker { .. } => 4,
                Owner::Process { .. } => 5,
            };
            (rank, owner_text(&ns.owner), ns.inode)
        });
        Ok(Topology {
            namespaces,
            containers,
            docker_error,
            docker_networks,
            host_netns,
            inactive_containers,
            engines,
        })
    }

    /// The namespace the engine named `engine` runs in (its host): the
    /// machine's for an engine whose process is not known.
    pub fn engine_host(&self, engine: &str) -> u32 {
        self.engines
            .iter()
            .find(|e| e.name == engine)
            .and_then(|e| e.netns)
            .unwrap_or(self.host_netns)
    }

    /// One line per Docker engine that runs here and did not answer (while
    /// another did: when none did, `docker_error` says so).
    pub fn engine_errors(&self) -> impl Iterator<Item = &str> {
        self.engines.iter().filter_map(|e| e.error.as_deref())
    }

    /// Every port Docker published, all containers together, by host port.
    pub fn port_bindings(&self) -> Vec<PortBinding> {
        let mut bindings: Vec<PortBinding> = self
            .containers
            .iter()
            .flat_map(|c| c.published.iter().cloned())
            .collect();
        bindings.sort_by(|a, b| {
            (a.host_port, &a.protocol, &a.host_ip).cmp(&(b.host_port, &b.protocol, &b.host_ip))
        });
        bindings
    }

    /// A container that does not run, by name or id prefix.
    pub fn inactive_container(&self, name_or_id_prefix: &str) -> Option<&InactiveContainer> {
        let key = name_or_id_prefix.trim_start_matches('/');
        if key.is_empty() {
            return None;
        }
        self.inactive_containers
            .iter()
            .find(|c| c.name == key || c.id.starts_with(key))
    }

    pub fn namespace(&self, inode: u32) -> Option<&Namespace> {
        self.namespaces.iter().find(|ns| ns.inode == inode)
    }

    /// This machine as the Docker host `engine` sees itself: its own
    /// namespace, its containers' and Docker's own namespaces there; what
    /// a pkttrace running on that host alone would know. None when no
    /// engine has that name.
    pub fn seen_from(&self, engine: &str) -> Option<Topology> {
        let host = self.engines.iter().find(|e| e.name == engine)?;
        let host_netns = host.netns.unwrap_or(self.host_netns);
        // With one engine, Docker's own namespaces carry no engine name.
        let only_engine = self.engines.len() == 1;
        let on_host = |ns: &Namespace| {
            ns.inode == host_netns
                || self
                    .containers
                    .iter()
                    .any(|c| c.netns == ns.inode && c.engine == engine)
                || matches!(&ns.owner, Owner::Docker { engine: of, .. }
                    if of == engine || (of.is_empty() && only_engine))
        };
        let mut seen = self.clone();
        seen.namespaces.retain(on_host);
        seen.containers.retain(|c| c.engine == engine);
        seen.docker_networks.retain(|n| n.engine == engine);
        seen.engines.retain(|e| e.name == engine);
        Some(seen)
    }

    /// Two hosts' views of themselves (`follow --on-host` on each) as one
    /// wiring: what either knows. A namespace both know is kept once.
    pub fn merged(mut self, other: &Topology) -> Topology {
        for ns in &other.namespaces {
            if self.namespace(ns.inode).is_none() {
                self.namespaces.push(ns.clone());
            }
        }
        for container in &other.containers {
            if !self.containers.iter().any(|c| c.id == container.id) {
                self.containers.push(container.clone());
            }
        }
        for network in &other.docker_networks {
            if !self
                .docker_networks
                .iter()
                .any(|n| n.id == network.id && n.engine == network.engine)
            {
                self.docker_networks.push(network.clone());
            }
        }
        for engine in &other.engines {
            if !self.engines.iter().any(|e| e.name == engine.name) {
                self.engines.push(engine.clone());
            }
        }
        for container in &other.inactive_containers {
            if !self
                .inactive_containers
                .iter()
                .any(|c| c.id == container.id)
            {
                self.inactive_containers.push(container.clone());
            }
        }
        self.docker_error = self.docker_error.or(other.docker_error.clone());
        self
    }

    /// The names of the Docker engines asked, for an error message.
    pub fn engine_names(&self) -> Vec<&str> {
        self.engines.iter().map(|e| e.name.as_str()).collect()
    }

    /// Every VXLAN device on the machine, with its namespace.
    pub fn vxlan_devices(&self) -> impl Iterator<Item = (u32, &Interface, &Vxlan)> {
        self.namespaces.iter().flat_map(|ns| {
            ns.interfaces
                .iter()
                .filter_map(move |i| Some((ns.inode, i, i.vxlan.as_ref()?)))
        })
    }

    /// The UDP port the machine's VXLAN tunnels use (Docker's overlay
    /// networks all use one), None when there is no tunnel.
    pub fn vxlan_port(&self) -> Option<u16> {
        self.vxlan_devices().map(|(_, _, vxlan)| vxlan.port).next()
    }

    pub fn interface(&self, netns: u32, ifindex: u32) -> Option<&Interface> {
        self.namespace(netns)?.interface(ifindex)
    }

    /// "server-1", "netns my-net", "host", "pid 123 (sshd)", or
    /// "netns:[4026532000]" for a namespace discovery did not see.
    pub fn owner_label(&self, inode: u32) -> String {
        match self.namespace(inode) {
            Some(ns) => owner_text(&ns.owner),
            None => format!("netns:[{inode}]"),
        }
    }

    /// Exact name or id first, then a unique id prefix (as `docker` does).
    pub fn container(&self, name_or_id_prefix: &str) -> Option<&Container> {
        let key = name_or_id_prefix.trim_start_matches('/');
        if key.is_empty() {
            return None;
        }
        if let Some(c) = self
            .containers
            .iter()
            .find(|c| c.name == key || c.id == key)
        {
            return Some(c);
        }
        let mut matches = self.containers.iter().filter(|c| c.id.starts_with(key));
        let first = matches.next()?;
        matches.next().is_none().then_some(first)
    }

    /// A namespace by its `ip netns` name.
    pub fn netns_by_name(&self, name: &str) -> Option<&Namespace> {
        self.namespaces
            .iter()
            .find(|ns| ns.netns_names.iter().any(|n| n == name))
    }

    /// The Docker network whose Linux bridge is `bridge_name` ("docker0" ->
    /// network "bridge").
    pub fn bridge_network(&self, bridge_name: &str) -> Option<&DockerNetwork> {
        self.docker_networks
            .iter()
            .find(|n| n.bridge.as_deref() == Some(bridge_name))
    }
}

impl Interface {
    /// Its MAC address, typed as events carry them.
    pub fn mac(&self) -> Option<Mac> {
        self.mac.map(Mac)
    }
}

impl Namespace {
    pub fn interface(&self, ifindex: u32) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.ifindex == ifindex)
    }

    // The privileged test checks names with it.
    #[cfg(test)]
    pub fn interface_by_name(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// Interfaces enslaved to `bridge` (its ports).
    pub fn bridge_ports(&self, bridge: u32) -> impl Iterator<Item = &Interface> {
        self.interfaces
            .iter()
            .filter(move |i| i.master == Some(bridge))
    }
}

/// What one of Docker's own namespaces is, from its file name and the
/// networks of the engine that keeps it (`engine`: its index among the
/// `running` engines): its engine named only when there are several.
fn docker_namespace(
    engine: &str,
    kind: &DockerNamespace,
    running: &[engines::EngineProcess],
    engines: &[Engine],
    networks: &[DockerNetwork],
) -> (String, DockerNamespace) {
    let process = engine.parse::<usize>().ok().and_then(|i| running.get(i));
    let name = process
        .and_then(|p| engines.iter().find(|e| e.pid == Some(p.pid)))
        .map(|e| e.name.clone())
        .unwrap_or_default();
    let label = if engines.len() > 1 {
        name.clone()
    } else {
        String::new()
    };
    let DockerNamespace::Other { name: file } = kind else {
        return (label, kind.clone());
    };
    let network = |id_prefix: &str| {
        networks
            .iter()
            .filter(|n| n.engine == name || name.is_empty())
            .find(|n| !id_prefix.is_empty() && n.id.starts_with(id_prefix))
            .map_or_else(|| id_prefix.to_string(), |n| n.name.clone())
    };
    let kind = if file == "ingress_sbox" {
        DockerNamespace::Ingress
    } else if let Some(id) = file.strip_prefix("lb_") {
        DockerNamespace::LoadBalancer {
            network: network(id),
        }
    } else if let Some(id) = file
        .split_once('-')
        .filter(|(layer, _)| layer.bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, id)| id)
    {
        DockerNamespace::Overlay {
            network: network(id),
        }
    } else {
        kind.clone()
    };
    (label, kind)
}

fn owner_text(owner: &Owner) -> String {
    match owner {
        Owner::Host => "host".to_string(),
        Owner::Container { name, .. } => name.clone(),
        Owner::NetnsName(name) => format!("netns {name}"),
        Owner::DockerHost { engine } => format!("Docker host {engine}"),
        Owner::Docker { engine, kind } => {
            let on = if engine.is_empty() {
                String::new()
            } else {
                format!(" on {engine}")
            };
            match kind {
                DockerNamespace::Overlay { network } => {
                    format!("overlay network {network}'s namespace{on}")
                }
                DockerNamespace::Ingress => format!("Swarm's ingress sandbox{on}"),
                DockerNamespace::LoadBalancer { network } => {
                    format!("network {network}'s load balancer{on}")
                }
                DockerNamespace::Other { name } => format!("Docker namespace {name}{on}"),
            }
        }
        Owner::Process { pid, comm } => format!("pid {pid} ({comm})"),
    }
}
