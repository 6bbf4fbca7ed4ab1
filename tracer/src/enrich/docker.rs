//! What Docker knows: running containers and networks.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
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

use std::path::{Path, PathBuf};

use super::{
    Container, ContainerNetwork, ContainerStatus, DockerNetwork, Engine, InactiveContainer,
    NetworkMode, PortBinding, SwarmNode, engines::EngineProcess, netns,
};

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Discovery runs at startup: a hung dockerd must not hang pkttrace.
const TIMEOUT: Duration = Duration::from_secs(3);
const MASQUERADE_OPTION: &str = "com.docker.network.bridge.enable_ip_masquerade";
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// What Docker reported, every engine together.
#[derive(Debug, Default)]
pub(super) struct Found {
    /// Running containers (paused ones too: they keep their namespace).
    pub containers: Vec<Container>,
    /// The others.
    pub inactive: Vec<InactiveContainer>,
    pub networks: Vec<DockerNetwork>,
    /// The engines asked, those that did not answer too.
    pub engines: Vec<Engine>,
}

/// Containers and networks of every engine `running` on this machine (only
/// the one DOCKER_HOST names, when it names a unix socket: the user's
/// choice, as for the docker CLI), or a one-line reason no engine could be
/// asked. An engine that does not answer while others do is kept with its
/// error.
pub(super) async fn discover(running: &[EngineProcess]) -> Result<Found, String> {
    let asked: Vec<(PathBuf, Option<&EngineProcess>)> = sockets(running)
        .into_iter()
        .map(PathBuf::from)
        .map(|socket| {
            let process = running.iter().find(|e| e.sockets.contains(&socket));
            (socket, process)
        })
        .collect();
    let answers = join_all(asked.iter().map(|(socket, _)| discover_at(socket))).await;
    if answers.iter().all(Result::is_err) {
        return Err(answers
            .into_iter()
            .find_map(Result::err)
            .unwrap_or_else(|| "no Docker engine".into()));
    }
    // Engines sharing a machine's hostname are told apart by their socket.
    let names: Vec<Option<String>> = answers
        .iter()
        .map(|a| a.as_ref().ok().map(|a| a.engine.name.clone()))
        .collect();
    let mut found = Found::default();
    for ((socket, process), mut answer) in asked.into_iter().zip(answers) {
        if let Ok(answer) = &mut answer {
            let same = names
                .iter()
                .filter(|n| n.as_deref() == Some(answer.engine.name.as_str()))
                .count();
            if same > 1 {
                answer.engine.name = format!("{} ({})", answer.engine.name, socket.display());
            }
        }
        let (engine, containers) = match answer {
            Ok(answer) => (answer.engine, Some(answer.found)),
            Err(error) => (
                Engine {
                    error: Some(error),
                    ..Engine::default()
                },
                None,
            ),
        };
        let engine = Engine {
            socket: socket.display().to_string(),
            pid: process.map(|p| p.pid),
            netns: process.and_then(|p| netns::proc_netns_inode(p.pid).ok()),
            exec_root: process.map(|p| p.exec_root.display().to_string()),
            ..engine
        };
        if let Some(mut answered) = containers {
            for container in &mut answered.containers {
                container.engine = engine.name.clone();
            }
            for network in &mut answered.networks {
                network.engine = engine.name.clone();
            }
            found.containers.append(&mut answered.containers);
            found.inactive.append(&mut answered.inactive);
            found.networks.append(&mut answered.networks);
        }
        found.engines.push(engine);
    }
    found.containers.sort_by(|a, b| a.name.cmp(&b.name));
    found.inactive.sort_by(|a, b| a.name.cmp(&b.name));
    found
        .networks
        .sort_by(|a, b| (&a.name, &a.engine).cmp(&(&b.name, &b.engine)));
    Ok(found)
}

/// One engine's answer: what it is, and its containers and networks.
pub(super) struct Answer {
    engine: Engine,
    found: Found,
}

pub(super) async fn discover_at(socket: &Path) -> Result<Answer, String> {
    let path = socket.display().to_string();
    match tokio::time::timeout(TIMEOUT, query(&path)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(describe(&path, &e)),
        Err(_) => Err(format!(
            "Docker at {path} did not answer within {} s",
            TIMEOUT.as_secs()
        )),
    }
}

/// The sockets of the engines discovery asks (as `discover` picks them):
/// the ones whose events are watched.
pub(super) fn sockets(running: &[EngineProcess]) -> Vec<String> {
    let chosen = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string));
    match chosen {
        Some(socket) => vec![socket],
        None if running.is_empty() => vec![DEFAULT_SOCKET.to_string()],
        None => running
            .iter()
            .map(|e| e.sockets[0].display().to_string())
            .collect(),
    }
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
pub(super) async fn watch_events(socket: String, mut changed: impl FnMut()) {
    let Ok(docker) = connect(&socket).await else {
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

async fn query(path: &str) -> Result<Answer, DockerError> {
    let docker = connect(path).await?;
    let all = ListContainersOptions::<String> {
        all: true,
        ..Default::default()
    };
    let (info, listed, networks) = tokio::try_join!(
        docker.info(),
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
    let swarm = info.swarm.as_ref();
    let node = swarm
        .and_then(|s| s.node_id.clone())
        .filter(|id| !id.is_empty());
    let engine = Engine {
        name: info.name.clone().unwrap_or_default(),
        swarm: node.map(|node_id| SwarmNode {
            node_id,
            address: swarm.and_then(|s| s.node_addr.clone()).unwrap_or_default(),
        }),
        ..Engine::default()
    };
    Ok(Answer {
        engine,
        found: Found {
            containers,
            inactive,
            networks,
            engines: Vec::new(),
        },
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
        engine: String::new(),
    })
}

fn container_network(network: String, ep: EndpointSettings) -> ContainerNetwork {
    let ip = |s: Option<String>| s.and_then(|s| s.parse::<IpAddr>().ok());
    ContainerNetwork {
        network,
        ip: ip(ep.ip_address),
        gateway: ip(ep.gateway),
        mac: ep.mac_address.as_deref().and_then(parse_mac),
        ipv6: ip(ep.global_ipv6_address),
        ipv6_gateway: ip(ep.ipv6_gateway),
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
        engine: String::new(),
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

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
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
