//! What Docker knows: running containers and networks.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use bollard::container::ListContainersOptions;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings, Network,
};
use bollard::system::EventsOptions;
use bollard::{API_DEFAULT_VERSION, Docker};
use futures::StreamExt;
use futures::future::join_all;

use super::{
    Container, ContainerNetwork, ContainerStatus, DockerNetwork, InactiveContainer, NetworkMode,
    PortBinding, netns,
};

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Discovery runs at startup: a hung dockerd must not hang pkttrace.
const TIMEOUT: Duration = Duration::from_secs(3);
const MASQUERADE_OPTION: &str = "com.docker.network.bridge.enable_ip_masquerade";
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// What Docker reported.
#[derive(Debug)]
pub(super) struct Found {
    /// Running containers (paused ones too: they keep their namespace).
    pub containers: Vec<Container>,
    /// The others.
    pub inactive: Vec<InactiveContainer>,
    pub networks: Vec<DockerNetwork>,
}

/// Containers and networks, or a one-line reason Docker could not be asked.
pub(super) async fn discover() -> Result<Found, String> {
    discover_at(&socket_path()).await
}

pub(super) async fn discover_at(path: &str) -> Result<Found, String> {
    match tokio::time::timeout(TIMEOUT, query(path)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(describe(path, &e)),
        Err(_) => Err(format!(
            "Docker at {path} did not answer within {} s",
            TIMEOUT.as_secs()
        )),
    }
}

/// Honours DOCKER_HOST when it names a unix socket; a remote daemon's
/// containers would not be on this host anyway.
fn socket_path() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string())
}

/// A client for the daemon at `path`, at the API version both speak.
async fn connect(path: &str) -> Result<Docker, DockerError> {
    // Negotiate: bollard's default API version is newer than what older
    // daemons (Debian's 20.10 speaks 1.41) accept, and newer daemons drop
    // old versions.
    Docker::connect_with_socket(path, TIMEOUT.as_secs(), API_DEFAULT_VERSION)?
        .negotiate_version()
        .await
}

/// The daemon's container and network events, as they happen; ends when
/// Docker is not reachable.
pub(super) async fn watch_events(mut changed: impl FnMut()) {
    let Ok(docker) = connect(&socket_path()).await else {
        return;
    };
    let filters = HashMap::from([(
        "type".to_string(),
        vec!["container".to_string(), "network".to_string()],
    )]);
    let mut events = docker.events(Some(EventsOptions {
        filters,
        ..Default::default()
    }));
    while let Some(Ok(_)) = events.next().await {
        changed();
    }
}

async fn query(path: &str) -> Result<Found, DockerError> {
    let docker = connect(path).await?;
    let all = ListContainersOptions::<String> {
        all: true,
        ..Default::default()
    };
    let (listed, networks) = tokio::try_join!(
        docker.list_containers(Some(all)),
        docker.list_networks::<String>(None)
    )?;
    let inspections = listed
        .iter()
        .filter_map(|c| c.id.as_deref())
        .map(|id| docker.inspect_container(id, None));
    let mut containers = Vec::new();
    let mut inactive = Vec::new();
    // A container removed since the listing is simply left out.
    for inspected in join_all(inspections).await.into_iter().flatten() {
        match inactive_container(&inspected) {
            Some(found) => inactive.push(found),
            None => containers.extend(container(inspected)),
        }
    }
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    inactive.sort_by(|a, b| a.name.cmp(&b.name));
    let mut networks: Vec<DockerNetwork> = networks.into_iter().filter_map(network).collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Found {
        containers,
        inactive,
        networks,
    })
}

/// `NetworkSettings.Ports`: "80/tcp" -> host address and port, one entry
/// per host address family Docker bound (0.0.0.0 and ::).
fn published(c: &ContainerInspectResponse) -> Vec<PortBinding> {
    let Some(id) = c.id.as_deref() else {
        return Vec::new();
    };
    let ports = c.network_settings.as_ref().and_then(|s| s.ports.as_ref());
    let mut bindings = Vec::new();
    for (port, hosts) in ports.into_iter().flatten() {
        let (port, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
        let Ok(container_port) = port.parse() else {
            continue;
        };
        for host in hosts.iter().flatten() {
            let Some(host_port) = host.host_port.as_deref().and_then(|p| p.parse().ok()) else {
                continue;
            };
            bindings.push(PortBinding {
                container_id: id.to_string(),
                protocol: protocol.to_string(),
                container_port,
                host_ip: host.host_ip.clone().unwrap_or_default(),
                host_port,
            });
        }
    }
    bindings.sort_by(|a, b| {
        (a.host_port, &a.protocol, &a.host_ip).cmp(&(b.host_port, &b.protocol, &b.host_ip))
    });
    bindings
}

/// A container without a running process, and why; None for one that runs
/// (or is paused).
fn inactive_container(c: &ContainerInspectResponse) -> Option<InactiveContainer> {
    let state = c.state.as_ref()?;
    let status = match state.status? {
        ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED => return None,
        ContainerStateStatusEnum::RESTARTING => ContainerStatus::Restarting {
            count: c.restart_count.unwrap_or_default(),
        },
        ContainerStateStatusEnum::EXITED => ContainerStatus::Exited {
            code: state.exit_code.unwrap_or_default(),
        },
        ContainerStateStatusEnum::REMOVING => ContainerStatus::Removing,
        ContainerStateStatusEnum::DEAD => ContainerStatus::Dead,
        ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EMPTY => {
            ContainerStatus::Created
        }
    };
    Some(InactiveContainer {
        id: c.id.clone()?,
        name: name_of(c),
        image: image_of(c),
        status,
    })
}

/// Without Docker's leading '/'.
fn name_of(c: &ContainerInspectResponse) -> String {
    c.name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string()
}

/// The image as `docker run` was given it.
fn image_of(c: &ContainerInspectResponse) -> String {
    c.config
        .as_ref()
        .and_then(|config| config.image.clone())
        .unwrap_or_default()
}

/// `HostConfig.NetworkMode`: "none", "host", "container:ID", or a network.
fn network_mode(c: &ContainerInspectResponse) -> NetworkMode {
    let mode = c
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref());
    match mode {
        Some("none") => NetworkMode::None,
        Some("host") => NetworkMode::Host,
        Some(other) => match other.strip_prefix("container:") {
            Some(id) => NetworkMode::Container { id: id.to_string() },
            None => NetworkMode::Networks,
        },
        None => NetworkMode::Networks,
    }
}

fn container(c: ContainerInspectResponse) -> Option<Container> {
    let state = c.state.as_ref()?;
    let pid = u32::try_from(state.pid?).ok().filter(|&pid| pid > 0)?;
    let paused = state.paused.unwrap_or_default();
    let (name, image, network_mode, published) =
        (name_of(&c), image_of(&c), network_mode(&c), published(&c));
    let command = c
        .config
        .as_ref()
        .and_then(|config| config.cmd.clone())
        .unwrap_or_default();
    let settings = c.network_settings.unwrap_or_default();
    let sandbox_key = settings.sandbox_key.unwrap_or_default();
    // The sandbox file is a bind mount of the same namespace: a fallback
    // for when /proc shows another pid namespace.
    let netns = netns::proc_netns_inode(pid)
        .or_else(|_| netns::open_nsfs(&sandbox_key).map(|(inode, _)| inode))
        .ok()?;
    let mut networks: Vec<ContainerNetwork> = settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| container_network(name, ep))
        .collect();
    networks.sort_by(|a, b| a.network.cmp(&b.network));
    let dns = c.host_config.and_then(|h| h.dns).unwrap_or_default();
    Some(Container {
        id: c.id?,
        name,
        pid,
        netns,
        sandbox_key,
        networks,
        dns: dns.iter().filter_map(|s| s.parse().ok()).collect(),
        network_mode,
        paused,
        image,
        command,
        published,
    })
}

fn container_network(network: String, ep: EndpointSettings) -> ContainerNetwork {
    let ip = |s: Option<String>| s.and_then(|s| s.parse::<Ipv4Addr>().ok());
    ContainerNetwork {
        network,
        ip: ip(ep.ip_address),
        gateway: ip(ep.gateway),
        mac: ep.mac_address.as_deref().and_then(parse_mac),
    }
}

fn network(n: Network) -> Option<DockerNetwork> {
    let (name, id) = (n.name?, n.id?);
    let driver = n.driver.unwrap_or_default();
    let subnets = n
        .ipam
        .and_then(|ipam| ipam.config)
        .into_iter()
        .flatten()
        .filter_map(|c| parse_cidr(c.subnet.as_deref()?))
        .collect();
    Some(DockerNetwork {
        bridge: bridge_name(&name, &id, &driver, n.options.as_ref()),
        masquerade: masquerades(n.options.as_ref()),
        name,
        id,
        driver,
        subnets,
    })
}

/// Docker masquerades unless the network says otherwise (`-o
/// com.docker.network.bridge.enable_ip_masquerade=false`).
fn masquerades(options: Option<&HashMap<String, String>>) -> bool {
    options
        .and_then(|o| o.get(MASQUERADE_OPTION))
        .is_none_or(|value| value.parse::<bool>().unwrap_or(true))
}

/// The Linux bridge Docker made for a bridge-driver network: the name given
/// with `-o com.docker.network.bridge.name`, "docker0" for the default
/// network "bridge", otherwise "br-" and the first 12 characters of the id.
pub(super) fn bridge_name(
    name: &str,
    id: &str,
    driver: &str,
    options: Option<&HashMap<String, String>>,
) -> Option<String> {
    if driver != "bridge" {
        return None;
    }
    if let Some(bridge) = options
        .and_then(|o| o.get(BRIDGE_NAME_OPTION))
        .filter(|b| !b.is_empty())
    {
        return Some(bridge.clone());
    }
    if name == "bridge" {
        return Some("docker0".to_string());
    }
    Some(format!("br-{}", id.get(..12).unwrap_or(id)))
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|&l| l <= 32)?;
    Some((ip.parse().ok()?, len))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn describe(path: &str, err: &DockerError) -> String {
    let not_running = "is dockerd running?";
    let reason = match err {
        DockerError::SocketNotFoundError(_) => not_running.to_string(),
        _ => match io_error_kind(err) {
            Some(io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
                not_running.to_string()
            }
            Some(io::ErrorKind::PermissionDenied) => "permission denied".to_string(),
            Some(_) => one_line(err),
            // It answered, just not as expected.
            None => return format!("Docker at {path} failed: {}", one_line(err)),
        },
    };
    format!("Docker is not reachable at {path} ({reason})")
}

fn io_error_kind(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        next = e.source();
    }
    None
}

fn one_line(err: &dyn std::fmt::Display) -> String {
    err.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
