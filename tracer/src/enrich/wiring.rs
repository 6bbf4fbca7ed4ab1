//! What `pkttrace topology` shows beyond the naming model: the host's
//! netfilter rules, published ports and the processes serving them, and
//! each container's namespaces and resolver. Read in the same pass as the
//! [`Topology`], which stays what `follow` needs to name things.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::{FdbEntry, Topology, fdb_of, firewall, processes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiring {
    pub topology: Topology,
    /// The host's ruleset, or one line saying why it could not be read.
    pub firewall: Result<Ruleset, String>,
    /// Ports Docker published (`-p HOSTPORT:PORT`); empty without Docker.
    pub port_bindings: Vec<PortBinding>,
    /// Listening sockets of the host namespace and the processes holding them.
    pub listeners: Vec<Listener>,
    /// The host's namespaces (pid 1's), to compare a container's with.
    pub host_namespaces: NamespaceIds,
    /// One per running container, in the order of `topology.containers`.
    pub containers: Vec<ContainerInside>,
    /// The VXLAN devices' own forwarding database entries: which remote
    /// tunnel endpoint each MAC address's frames go to.
    pub vxlan_fdb: Vec<FdbEntry>,
}

impl Wiring {
    /// As much as a topology alone tells (no rules, sockets or published
    /// ports): enough to draw journeys on, also from a recording.
    pub fn of_topology(topology: Topology) -> Wiring {
        Wiring {
            topology,
            firewall: Err("not read for a journey picture".into()),
            port_bindings: Vec::new(),
            listeners: Vec::new(),
            host_namespaces: NamespaceIds::default(),
            containers: Vec::new(),
            vxlan_fdb: Vec::new(),
        }
    }

    pub async fn discover() -> anyhow::Result<Wiring> {
        let (discovered, firewall) = tokio::join!(
            Topology::discover(),
            tokio::task::spawn_blocking(firewall::read)
        );
        let topology = discovered?;
        let port_bindings = topology.port_bindings();
        let firewall = firewall.unwrap_or_else(|e| Err(format!("reading the ruleset failed: {e}")));
        let containers = topology
            .containers
            .iter()
            .map(|c| ContainerInside {
                id: c.id.clone(),
                namespaces: processes::namespace_ids(Some(c.pid)),
                nameservers: processes::nameservers(c.pid),
            })
            .collect();
        let vxlan_fdb = vxlan_fdb(&topology).await;
        Ok(Wiring {
            vxlan_fdb,
            firewall,
            port_bindings,
            listeners: processes::host_listeners(),
            host_namespaces: processes::namespace_ids(None),
            containers,
            topology,
        })
    }
}

/// The remote endpoints of every namespace's VXLAN devices, read inside
/// each (netlink on threads of their own, off the event loop's).
async fn vxlan_fdb(topology: &Topology) -> Vec<FdbEntry> {
    let mut namespaces: Vec<u32> = topology
        .vxlan_devices()
        .map(|(netns, _, _)| netns)
        .collect();
    namespaces.dedup();
    let mut entries = Vec::new();
    for netns in namespaces {
        let Some(namespace) = topology.namespace(netns).cloned() else {
            continue;
        };
        let host = topology.host_netns;
        let read = tokio::task::spawn_blocking(move || fdb_of(&namespace, host)).await;
        entries.extend(
            read.ok()
                .and_then(Result::ok)
                .unwrap_or_default()
                .into_iter()
                .filter(|entry| entry.remote.is_some()),
        );
    }
    entries
}

/// A table's chain as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// `ip`, `ip6`, `inet`, ...
    pub family: String,
    pub table: String,
    pub name: String,
    /// Set for base chains, the ones the kernel calls from a hook.
    pub hook: Option<ChainHook>,
    /// Chains with a rule that jumps (or goes) here, in listing order.
    pub entered_from: Vec<String>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHook {
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: String,
    /// `filter`, `nat`, `route`.
    pub kind: String,
    pub priority: i64,
    pub policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub handle: u64,
    /// nft's wording without the counter: `oifname != "docker0" ip saddr 172.17.0.0/16 masquerade`.
    pub text: String,
    pub matches: Vec<RuleMatch>,
    /// `accept`, `drop`, `return`, `jump DOCKER`, `masquerade`, `dnat`, ...
    pub action: Option<String>,
    /// The rule's counter, when it has one.
    pub packets: Option<u64>,
}

/// One comparison of a rule, as nft writes it: `iifname != docker0`,
/// `tcp dport == 4000`, `ip saddr == 172.17.0.0/16`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    pub field: String,
    pub op: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: Vec<Chain>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub container_id: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub container_port: u16,
    /// `0.0.0.0`, `::`, or one address; empty when Docker did not say.
    pub host_ip: String,
    pub host_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub address: SocketAddr,
    pub socket_inode: u64,
    pub pid: u32,
    /// Command name (`docker-proxy`).
    pub process: String,
    /// The full command line, program first.
    pub args: Vec<String>,
}

impl Listener {
    /// Where docker-proxy forwards to: its `-container-ip` and `-container-port`.
    pub fn proxy_target(&self) -> Option<SocketAddr> {
        let value = |flag: &str| {
            let at = self.args.iter().position(|a| a == flag)?;
            self.args.get(at + 1)
        };
        let ip: IpAddr = value("-container-ip")?.parse().ok()?;
        Some(SocketAddr::new(ip, value("-container-port")?.parse().ok()?))
    }
}

/// Namespace inodes as `lsns` shows them; None where /proc hid one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NamespaceIds {
    pub net: Option<u64>,
    pub pid: Option<u64>,
    pub mnt: Option<u64>,
    pub uts: Option<u64>,
    pub ipc: Option<u64>,
    pub user: Option<u64>,
    pub cgroup: Option<u64>,
}

impl NamespaceIds {
    /// In `lsns`'s order.
    pub fn all(&self) -> [(&'static str, Option<u64>); 7] {
        [
            ("net", self.net),
            ("pid", self.pid),
            ("mnt", self.mnt),
            ("uts", self.uts),
            ("ipc", self.ipc),
            ("user", self.user),
            ("cgroup", self.cgroup),
        ]
    }
}

/// A container as seen from inside: its init process's namespaces and its
/// resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInside {
    pub id: String,
    pub namespaces: NamespaceIds,
    /// Nameservers of its /etc/resolv.conf, or why it could not be read.
    pub nameservers: Result<Vec<IpAddr>, String>,
}
