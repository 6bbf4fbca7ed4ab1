//! What the user names on the command line: where packets come from (a
//! container, an `ip netns`, the host) and where they go.

use serde::{Deserialize, Serialize};
use std::{fmt, net::IpAddr, path::PathBuf};

use crate::{
    enrich::{Container, ContainerStatus, InactiveContainer, NetworkMode, Topology},
    session::Destination,
};

/// A user mistake, reported as one line with exit code 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

fn input_error(message: impl Into<String>) -> anyhow::Error {
    InputError(message.into()).into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Source {
    /// How to name it: "server-1", "netns my-net", "host".
    pub label: String,
    pub netns: u32,
    /// Where to enter the namespace to send a probe; None for the host.
    pub netns_path: Option<PathBuf>,
}

impl Source {
    /// The default gateway of a container's or netns's main table for one
    /// family (none for the host: its gateway is this machine's real uplink).
    pub fn gateway(&self, topology: &Topology, ipv6: bool) -> Option<IpAddr> {
        self.netns_path.as_ref()?;
        const MAIN_TABLE: u32 = 254;
        topology
            .namespace(self.netns)?
            .routes
            .iter()
            .find(|r| r.table == MAIN_TABLE && r.destination.is_none() && r.ipv6 == ipv6)?
            .gateway
    }
}

pub fn resolve_source(name: &str, topology: &Topology) -> anyhow::Result<Source> {
    if name == "host" {
        return Ok(Source {
            label: "host".into(),
            netns: topology.host_netns,
            netns_path: None,
        });
    }
    if let Some(container) = topology.container(name) {
        if let Some(note) = state_note(container, topology) {
            eprintln!("pkttrace: note: {note}");
        }
        if container.network_mode == NetworkMode::Host {
            return Ok(Source {
                label: format!("{} (host network)", container.name),
                netns: topology.host_netns,
                netns_path: None,
            });
        }
        return Ok(Source {
            label: container.name.clone(),
            netns: container.netns,
            netns_path: Some(PathBuf::from(format!("/proc/{}/ns/net", container.pid))),
        });
    }
    if let Some(inactive) = topology.inactive_container(name) {
        return Err(input_error(not_running(inactive)));
    }
    if let Some(namespace) = topology.netns_by_name(name) {
        return Ok(Source {
            label: format!("netns {name}"),
            netns: namespace.inode,
            netns_path: Some(PathBuf::from(format!("/run/netns/{name}"))),
        });
    }
    let running: Vec<&str> = topology
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let netns: Vec<&str> = topology
        .namespaces
        .iter()
        .flat_map(|n| n.netns_names.iter().map(String::as_str))
        .collect();
    let mut message = format!("no container or network namespace named '{name}'");
    match &topology.docker_error {
        Some(docker) => message += &format!(" ({docker}; `ip netns` names and `host` still work)"),
        None if running.is_empty() => message += "; no container is running",
        None => message += &format!("; running containers: {}", running.join(", ")),
    }
    if !netns.is_empty() {
        message += &format!("; ip netns: {}", netns.join(", "));
    }
    Err(input_error(message))
}

/// A running container by name or id prefix, or a one-line error naming
/// the running ones (or why Docker could not be asked).
pub fn resolve_container<'a>(
    name: &str,
    topology: &'a Topology,
) -> anyhow::Result<&'a crate::enrich::Container> {
    if let Some(container) = topology.container(name) {
        if let Some(note) = state_note(container, topology) {
            eprintln!("pkttrace: note: {note}");
        }
        return Ok(container);
    }
    if let Some(inactive) = topology.inactive_container(name) {
        return Err(input_error(not_running(inactive)));
    }
    let running: Vec<&str> = topology
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    Err(input_error(match &topology.docker_error {
        Some(docker) => format!("cannot look up container '{name}': {docker}"),
        None if running.is_empty() => {
            format!("no container named '{name}'; no container is running")
        }
        None => format!(
            "no container named '{name}'; running containers: {}",
            running.join(", ")
        ),
    }))
}

/// DEST is `ADDRESS`, `ADDRESS:PORT` (`[IPV6]:PORT`), or a container name
/// (its first address of the family asked for: IPv6 with `ipv6`).
pub fn resolve_destination(
    text: &str,
    ipv6: bool,
    topology: &Topology,
) -> anyhow::Result<Destination> {
    let (host, port) = split_port(text)?;
    // A zone (`fe80::1%eth0`) only ever goes with a link-local address.
    if let Some((address, zone)) = host.split_once('%')
        && address.parse::<std::net::Ipv6Addr>().is_ok()
    {
        return Err(input_error(format!(
            "'{host}' names a link-local address on {zone}: such an address means something on one link only, and pkttrace follows routed addresses; give a global or unique local address"
        )));
    }
    if let Ok(address) = host.parse::<IpAddr>() {
        if let IpAddr::V6(v6) = address
            && v6.is_unicast_link_local()
        {
            return Err(input_error(format!(
                "'{host}' is a link-local address: it means something on one link only, and pkttrace follows routed addresses; give a global or unique local address"
            )));
        }
        if ipv6 && address.is_ipv4() {
            return Err(input_error(format!(
                "-6 picks a container's IPv6 address, and '{host}' is an IPv4 address: drop -6, or give an IPv6 address"
            )));
        }
        return Ok(Destination { address, port });
    }
    if let Some(container) = topology.container(host) {
        if let Some(note) = state_note(container, topology) {
            eprintln!("pkttrace: note: {note}");
        }
        let address = address_of(container, ipv6, topology).ok_or_else(|| {
            input_error(match container.network_mode {
                NetworkMode::None => format!(
                    "container '{host}' runs with --network none: it has no address to reach; connect it to a network: docker network connect bridge {host}"
                ),
                NetworkMode::Host => format!(
                    "container '{host}' uses the host's network (--network host): it has no address of its own; follow one of the host's addresses (127.0.0.1:PORT) instead"
                ),
                _ if ipv6 => format!(
                    "container '{host}' has no IPv6 address: none of its networks was made with --ipv6 (docker network create --ipv6 --subnet fd00:…/64 …); follow its IPv4 address without -6"
                ),
                _ => format!(
                    "container '{host}' has no IPv4 address (is it on a network with IPv4?)"
                ),
            })
        })?;
        return Ok(Destination { address, port });
    }
    if let Some(inactive) = topology.inactive_container(host) {
        return Err(input_error(not_running(inactive)));
    }
    Err(input_error(format!(
        "cannot use '{text}' as a destination: give an address (10.0.0.5, 2001:db8::5), an address and port (10.0.0.5:80, [2001:db8::5]:80), or a running container's name"
    )))
}

/// DEST's host and port: `HOST:PORT`, `[IPV6]:PORT`, `[IPV6]`, or a bare
/// host (an IPv6 address has colons of its own).
fn split_port(text: &str) -> anyhow::Result<(&str, Option<u16>)> {
    let port_of = |port: &str| {
        port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            input_error(format!(
                "'{port}' in '{text}' is not a port number (1-65535)"
            ))
        })
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| {
            input_error(format!(
                "'{text}' opens a bracket it does not close: [2001:db8::5]:80"
            ))
        })?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port_of(port)?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(input_error(format!(
                "'{text}': after the bracketed address comes ':' and a port, as in [2001:db8::5]:80"
            ))),
        };
    }
    match text.split_once(':') {
        // More than one colon: an IPv6 address without a port.
        Some((_, rest)) if rest.contains(':') => Ok((text, None)),
        Some((host, port)) => Ok((host, Some(port_of(port)?))),
        None => Ok((text, None)),
    }
}

/// A container's first address of the family asked for; one that shares
/// another's namespace (`--network container:ID`) has that one's.
fn address_of(container: &Container, ipv6: bool, topology: &Topology) -> Option<IpAddr> {
    let owner = match &container.network_mode {
        NetworkMode::Container { id } => topology.container(id)?,
        _ => container,
    };
    owner
        .networks
        .iter()
        .find_map(|n| if ipv6 { n.ipv6 } else { n.ip })
}

/// What a running container's state means for tracing it, and what to do,
/// when it is out of the ordinary: paused, or not on a network of its own.
fn state_note(container: &Container, topology: &Topology) -> Option<String> {
    let name = &container.name;
    let network = match &container.network_mode {
        NetworkMode::Networks => None,
        NetworkMode::None => Some(format!(
            "container '{name}' runs with --network none: its namespace has only lo, so no packet leaves it or reaches it; connect it to a network: docker network connect bridge {name}"
        )),
        NetworkMode::Host => Some(format!(
            "container '{name}' uses the host's network (--network host): its packets are the host's own, followed as the host's"
        )),
        NetworkMode::Container { id } => {
            let other = topology
                .container(id)
                .map_or(id.as_str(), |c| c.name.as_str());
            Some(format!(
                "container '{name}' shares the network namespace of '{other}' (--network container:{other}): its packets are that namespace's"
            ))
        }
    };
    let paused = container.paused.then(|| {
        format!(
            "container '{name}' is paused: its processes are frozen, so none reads or answers (its kernel still answers pings and takes TCP connections in); resume it: docker unpause {name}"
        )
    });
    match (network, paused) {
        (Some(network), Some(paused)) => Some(format!("{network}; {paused}")),
        (network, paused) => network.or(paused),
    }
}

/// Why a container Docker knows cannot be traced: it does not run.
fn not_running(container: &InactiveContainer) -> String {
    let name = &container.name;
    match container.status {
        ContainerStatus::Exited { code } => format!(
            "container '{name}' is not running: it exited with code {code}, so it has no network namespace; start it: docker start {name}"
        ),
        ContainerStatus::Created => format!(
            "container '{name}' was created but never started, so it has no network namespace; start it: docker start {name}"
        ),
        ContainerStatus::Restarting { count } => format!(
            "container '{name}' is restarting (its process keeps ending; restarted {count} times), so it has no network namespace now; see why: docker logs {name}"
        ),
        ContainerStatus::Removing => {
            format!("container '{name}' is being removed: it has no network namespace")
        }
        ContainerStatus::Dead => format!(
            "container '{name}' is dead (Docker could not stop or remove it cleanly): it has no network namespace; remove it: docker rm -f {name}"
        ),
    }
}

/// `--probe`: the packet pkttrace sends itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Icmp,
    Udp(u16),
    Tcp(u16),
}

impl Probe {
    /// The IP protocol of the probe's packets to `destination` (ICMP over
    /// IPv6 is ICMPv6).
    pub fn protocol(self, destination: IpAddr) -> u8 {
        match self {
            Self::Icmp if destination.is_ipv6() => 58,
            Self::Icmp => 1,
            Self::Tcp(_) => 6,
            Self::Udp(_) => 17,
        }
    }

    pub fn port(self) -> Option<u16> {
        match self {
            Self::Icmp => None,
            Self::Udp(port) | Self::Tcp(port) => Some(port),
        }
    }
}

/// `icmp`, `udp:PORT`, `tcp:PORT`; a port given in DEST may stand for PORT.
pub fn parse_probe(text: &str, destination: &Destination) -> anyhow::Result<Probe> {
    let (kind, port) = match text.split_once(':') {
        Some((kind, port)) => (kind, Some(port)),
        None => (text, None),
    };
    let port = match port {
        Some(port) => Some(
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    input_error(format!(
                        "'{port}' in --probe {text} is not a port number (1-65535)"
                    ))
                })?,
        ),
        None => destination.port,
    };
    let need_port = || {
        input_error(format!(
            "--probe {kind} needs a port: --probe {kind}:PORT or DEST as ADDRESS:PORT"
        ))
    };
    match kind {
        "icmp" => Ok(Probe::Icmp),
        "udp" => Ok(Probe::Udp(port.ok_or_else(need_port)?)),
        "tcp" => Ok(Probe::Tcp(port.ok_or_else(need_port)?)),
        _ => Err(input_error(format!(
            "unknown --probe '{text}': use icmp, udp:PORT or tcp:PORT"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Topology {
        Topology {
            namespaces: Vec::new(),
            containers: Vec::new(),
            docker_error: None,
            docker_networks: Vec::new(),
            host_netns: 1,
            inactive_containers: Vec::new(),
            engines: Vec::new(),
        }
    }

    #[test]
    fn destinations_parse_with_and_without_port() {
        let d = resolve_destination("198.51.100.1:80", false, &empty()).unwrap();
        assert_eq!(
            (d.address, d.port),
            (IpAddr::from([198, 51, 100, 1]), Some(80))
        );
        assert_eq!(
            resolve_destination("198.51.100.1", false, &empty())
                .unwrap()
                .port,
            None
        );
        let error = resolve_destination("nowhere", false, &empty())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("cannot use 'nowhere' as a destination"),
            "{error}"
        );
        let v6 = resolve_destination("[2001:db8::5]:80", false, &empty()).unwrap();
        assert_eq!(
            (v6.address, v6.port),
            ("2001:db8::5".parse().unwrap(), Some(80))
        );
        for link_local in ["fe80::1", "fe80::1%eth0", "[fe80::1%eth0]:80"] {
            let error = resolve_destination(link_local, false, &empty())
                .unwrap_err()
                .to_string();
            assert!(error.contains("link-local"), "{link_local}: {error}");
        }
        let error = resolve_destination("10.0.0.5", true, &empty())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("-6 picks a container's IPv6 address"),
            "{error}"
        );
        assert!(resolve_destination("198.51.100.1:99999", false, &empty()).is_err());
    }

    #[test]
    fn probes_take_their_port_from_the_flag_or_the_destination() {
        let with_port = Destination {
            address: IpAddr::from([127, 0, 0, 1]),
            port: Some(4000),
        };
        let without = Destination {
            address: IpAddr::from([127, 0, 0, 1]),
            port: None,
        };
        assert_eq!(parse_probe("tcp", &with_port).unwrap(), Probe::Tcp(4000));
        assert_eq!(parse_probe("udp:53", &without).unwrap(), Probe::Udp(53));
        assert_eq!(parse_probe("icmp", &without).unwrap(), Probe::Icmp);
        assert!(
            parse_probe("tcp", &without)
                .unwrap_err()
                .to_string()
                .contains("needs a port")
        );
        assert!(parse_probe("sctp:1", &without).is_err());
    }

    #[test]
    fn an_unknown_source_lists_what_exists() {
        let error = resolve_source("server-9", &empty())
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "no container or network namespace named 'server-9'; no container is running"
        );
        let mut docker_down = empty();
        docker_down.docker_error =
            Some("Docker is not reachable at /var/run/docker.sock (is dockerd running?)".into());
        let error = resolve_source("server-9", &docker_down)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is dockerd running?") && error.contains("`host` still work"),
            "{error}"
        );
        assert_eq!(resolve_source("host", &empty()).unwrap().netns, 1);
    }

    #[test]
    fn a_container_that_does_not_run_says_how_to_start_it() {
        let mut topology = empty();
        topology.inactive_containers.push(InactiveContainer {
            id: "fedcba9876".into(),
            name: "web".into(),
            image: "pkttrace-lab".into(),
            status: ContainerStatus::Exited { code: 137 },
        });
        let as_source = resolve_source("web", &topology).unwrap_err().to_string();
        assert_eq!(
            as_source,
            "container 'web' is not running: it exited with code 137, so it has no network namespace; start it: docker start web"
        );
        let as_destination = resolve_destination("web:80", false, &topology)
            .unwrap_err()
            .to_string();
        assert_eq!(as_destination, as_source);
        topology.inactive_containers[0].status = ContainerStatus::Restarting { count: 4 };
        assert!(
            resolve_container("web", &topology)
                .unwrap_err()
                .to_string()
                .contains("restarted 4 times")
        );
    }
}
