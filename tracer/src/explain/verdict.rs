//! Why a request did not get what it asked for, in the terms the user works
//! in (a Docker network, a published port, a container, the administrator's
//! own chain, masquerading, forwarding, a route), and what to do: a command
//! that fixes it, or one that checks what pkttrace cannot see. Decided from
//! typed facts only; where the facts tell no cause, it says "not known".

use std::net::IpAddr;

use serde::Serialize;

use crate::addr::in_subnet;
use crate::{
    decode::{DropReason, RouteResult, SiteRole, Transport, Tunnel},
    enrich::{
        Container, NetworkMode, Owner, Topology,
        facts::{ChainRole, ListenerAt, RuleAction},
    },
};

use super::{Answer, Ending, NotSent, Origin, RequestSummary, outcome::AnswerKind};

/// What failed, why, and what to do.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Verdict {
    /// What failed, in one line.
    pub what: String,
    pub cause: Cause,
    /// The cause in words.
    pub why: String,
    /// What to do, when the facts support a command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

/// A command to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Action {
    pub kind: ActionKind,
    pub command: String,
    /// Another way, or what to mind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub or: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Running it mends the cause.
    Fix,
    /// Running it shows what pkttrace could not see.
    Check,
}

/// Why, typed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// A container listens on that port in its own namespace, and Docker
    /// did not publish it on the host.
    NotPublished {
        container: String,
        listening_on: String,
        protocol: String,
        port: u16,
        /// The listener is the container's own command (so running the
        /// image again with `-p` serves the port the same way).
        listener_is_its_command: bool,
    },
    /// A container listens on that port, and Docker published it on
    /// another host port.
    PublishedElsewhere {
        container: String,
        container_port: u16,
        host_port: u16,
        protocol: String,
    },
    /// Nothing listens there; something listens on that port in another
    /// namespace.
    ListensElsewhere {
        namespace: String,
        process: String,
        listening_on: String,
    },
    /// Nothing listens on that port where the packet arrived, nor anywhere else.
    NothingListens {
        namespace: String,
        protocol: String,
        port: u16,
    },
    /// Docker keeps its networks apart: its isolation rule dropped it.
    NetworksIsolated {
        #[serde(skip_serializing_if = "Option::is_none")]
        from_network: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to_network: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        container: Option<String>,
    },
    /// On a tunnel's underlay: the datagram carrying the packet was
    /// dropped, for `cause`, and the packet with it.
    InTunnel { tunnel: Tunnel, cause: Box<Cause> },
    /// A rule in DOCKER-USER, the administrator's own chain.
    AdministratorRule {
        rule: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        position: Option<u32>,
        reject: bool,
    },
    /// A rule of another chain.
    FirewallRule {
        namespace: String,
        table: String,
        chain: String,
        rule: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        handle: Option<u64>,
    },
    /// A chain's policy: no rule accepted it.
    ChainPolicy {
        namespace: String,
        table: String,
        chain: String,
        /// The host's FORWARD chain, whose policy Docker sets to drop: it
        /// forwards only what its own rules accept; `device` is where the
        /// packet came in.
        #[serde(skip_serializing_if = "Option::is_none")]
        docker_forward_from: Option<String>,
    },
    /// Forwarding is off on the device it came in on (and for every device,
    /// `all_off`: `net.ipv4.conf.all.forwarding` is 0 too).
    ForwardingOff {
        namespace: String,
        device: String,
        all_off: bool,
        /// IPv6's setting (`net.ipv6.conf.…`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ipv6: bool,
    },
    /// The reverse path filter of the device it came in on.
    ReversePathFilter { namespace: String, device: String },
    /// An unreachable, blackhole or prohibit route.
    RouteRefuses {
        namespace: String,
        result: RouteResult,
        #[serde(skip_serializing_if = "Option::is_none")]
        route: Option<String>,
    },
    /// The sender's namespace has no route there: no packet was made.
    NoRouteAtSource {
        namespace: String,
        destination: IpAddr,
        #[serde(skip_serializing_if = "Option::is_none")]
        gateway: Option<IpAddr>,
    },
    /// The sender is a container with `--network none`.
    NetworkNone { container: String },
    /// The destination's namespace has no route back to the source.
    NoRouteBack {
        namespace: String,
        to: IpAddr,
        /// The Docker network the source is on, when it does not masquerade.
        #[serde(skip_serializing_if = "Option::is_none")]
        not_masqueraded_by: Option<String>,
    },
    /// The next hop never answered ARP.
    NextHopSilent {
        namespace: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_hop: Option<IpAddr>,
    },
    /// Larger than a link on the way, with don't fragment set.
    TooBig {
        /// Its IPv4 length.
        length: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
    },
    /// Its time to live ran out on the way.
    TtlRanOut {
        #[serde(skip_serializing_if = "Option::is_none")]
        router: Option<IpAddr>,
        looped_between: Vec<String>,
    },
    /// It left through a device nothing is traced beyond, or its answer came
    /// from there: what happened out there is not seen.
    Beyond {
        device: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        router: Option<IpAddr>,
    },
    /// The destination's kernel took it in and nothing answered.
    NotAnswered { namespace: String },
    /// The evidence tells no cause.
    NotKnown,
}

/// The verdict on a reply that refused or failed its request.
pub fn on_reply(
    request: &RequestSummary,
    answer: &Answer,
    listeners: &[ListenerAt],
    topology: &Topology,
) -> Option<Verdict> {
    let destination = request.sent.dst;
    let (what, cause) = match &answer.kind {
        AnswerKind::Reply => return None,
        AnswerKind::Reset { by_firewall: false } => {
            let port = request_port(request)?;
            (
                format!(
                    "the connection to {} was refused",
                    std::net::SocketAddr::new(destination, port)
                ),
                listening_cause(request, "tcp", port, listeners, topology),
            )
        }
        AnswerKind::Error {
            icmp_type: 3,
            code: 3,
            by_firewall: false,
            ..
        } if answer.from == destination => {
            let port = request_port(request)?;
            let protocol = protocol_name(&request.sent.transport);
            (
                format!("{protocol} port {port} of {destination} is closed"),
                listening_cause(request, protocol, port, listeners, topology),
            )
        }
        AnswerKind::Reset { .. } | AnswerKind::Error { .. } => {
            let what = match &answer.kind {
                AnswerKind::Error { meaning, .. } => {
                    format!("{} said: {meaning}", answer.from)
                }
                _ => format!("the connection to {destination} was refused"),
            };
            (what, dead_end(request, Some(answer), topology))
        }
    };
    Some(verdict(what, cause, request, topology))
}

/// The verdict on a request that got no reply.
pub fn on_no_reply(request: &RequestSummary, topology: &Topology) -> Verdict {
    let what = format!(
        "{} got no reply from {}",
        describe_request(request),
        request.sent.dst
    );
    let cause = match &request.ending {
        Ending::Dropped {
            reason: DropReason::NoSocket,
            ..
        } => match request_port(request) {
            Some(port) => listening_cause(
                request,
                protocol_name(&request.sent.transport),
                port,
                &request.listeners,
                topology,
            ),
            None => Cause::NotKnown,
        },
        _ => dead_end(request, None, topology),
    };
    verdict(what, cause, request, topology)
}

/// The verdict on a request whose kernel made no packet of it.
pub fn on_not_sent(request: &RequestSummary, topology: &Topology) -> Option<Verdict> {
    let Ending::NotSent { why, netns, .. } = &request.ending else {
        return None;
    };
    let what = format!("nothing was sent to {}", request.sent.dst);
    let cause = match why {
        NotSent::NoRoute { destination, .. } => match container_in(topology, *netns) {
            Some(container) if container.network_mode == NetworkMode::None => Cause::NetworkNone {
                container: container.name.clone(),
            },
            _ => Cause::NoRouteAtSource {
                namespace: topology.owner_label(*netns),
                destination: *destination,
                gateway: gateway_candidate(topology, *netns, *destination),
            },
        },
        NotSent::TooBig {
            length, path_mtu, ..
        } => Cause::TooBig {
            length: *length,
            mtu: *path_mtu,
        },
    };
    Some(verdict(what, cause, request, topology))
}

/// Why a request went nowhere: where and how it ended, in Docker's terms
/// where they apply; on a tunnel's underlay, what ended the datagram
/// carrying it.
fn dead_end(request: &RequestSummary, answer: Option<&Answer>, topology: &Topology) -> Cause {
    let cause = dead_end_here(request, answer, topology);
    match (request.ended_in_tunnel, &request.ending) {
        (Some(tunnel), Ending::Dropped { .. }) => Cause::InTunnel {
            tunnel,
            cause: Box::new(cause),
        },
        _ => cause,
    }
}

fn dead_end_here(request: &RequestSummary, answer: Option<&Answer>, topology: &Topology) -> Cause {
    if let Some(Origin::Beyond { device, .. }) = answer.map(|a| &a.origin) {
        return Cause::Beyond {
            device: device.clone(),
            router: answer.map(|a| a.from),
        };
    }
    let ttl_ran_out = answer.is_some_and(|a| {
        matches!(
            a.kind,
            AnswerKind::Error {
                icmp_type: 11,
                code: 0,
                ..
            }
        )
    });
    if ttl_ran_out {
        return Cause::TtlRanOut {
            router: answer.map(|a| a.from),
            looped_between: request.looped_between.clone(),
        };
    }
    match &request.ending {
        Ending::Dropped {
            namespace,
            netns,
            reason,
            location,
            rule,
            refused_by,
            ..
        } => match (reason, rule) {
            (reason, Some(rule)) if reason.is_netfilter_drop_at(location) => {
                match rule.chain_role() {
                    ChainRole::DockerIsolation => isolation(request, topology),
                    ChainRole::Administrator => Cause::AdministratorRule {
                        rule: rule.text.clone(),
                        position: rule.position,
                        reject: rule.action == RuleAction::Reject,
                    },
                    _ if rule.handle.is_none() => Cause::ChainPolicy {
                        namespace: namespace.clone(),
                        table: rule.table.clone(),
                        chain: rule.chain.clone(),
                        docker_forward_from: (*netns == topology.host_netns
                            && matches!(&*rule.table, "ip filter" | "ip6 filter")
                            && rule.chain == "FORWARD"
                            && !topology.docker_networks.is_empty())
                        .then(|| arrived_on(request))
                        .flatten(),
                    },
                    _ => Cause::FirewallRule {
                        namespace: namespace.clone(),
                        table: rule.table.clone(),
                        chain: rule.chain.clone(),
                        rule: rule.text.clone(),
                        handle: rule.handle,
                    },
                }
            }
            // ip6_forward checks only `all`'s setting, before anything else.
            (DropReason::IpInAddrErrors | DropReason::Unreported, _)
                if location.role == SiteRole::Forwarding
                    && request.sent.dst.is_ipv6()
                    && forwarding_off(request) =>
            {
                Cause::ForwardingOff {
                    namespace: namespace.clone(),
                    device: arrived_on(request).unwrap_or_default(),
                    all_off: true,
                    ipv6: true,
                }
            }
            (DropReason::IpRpFilter, _) => Cause::ReversePathFilter {
                namespace: namespace.clone(),
                device: arrived_on(request).unwrap_or_default(),
            },
            _ if location.role == SiteRole::RouteError => match refused_by {
                Some(route) if !route.result.found() && route.result != RouteResult::NoMatch => {
                    Cause::RouteRefuses {
                        namespace: namespace.clone(),
                        result: route.result,
                        route: refusing_route(topology, *netns, route.result, request.sent.dst),
                    }
                }
                _ => match arrived_on(request) {
                    Some(device) if forwarding_off(request) => Cause::ForwardingOff {
                        namespace: namespace.clone(),
                        device,
                        all_off: request.all_forwarding == Some(false),
                        ipv6: request.sent.dst.is_ipv6(),
                    },
                    _ => Cause::NotKnown,
                },
            },
            (reason, _) if reason.is_neighbour_failure_at(location) => Cause::NextHopSilent {
                namespace: namespace.clone(),
                next_hop: request.last_next_hop,
            },
            (DropReason::PktTooBig, _) => Cause::TooBig {
                length: request.sent.length,
                mtu: request.last_route.as_ref().and_then(|r| r.mtu),
            },
            (DropReason::IpInHdr, _) if location.role == SiteRole::Forwarding => Cause::TtlRanOut {
                router: None,
                looped_between: request.looped_between.clone(),
            },
            _ => Cause::NotKnown,
        },
        Ending::TakenIn {
            namespace,
            no_route_back: Some(back),
            ..
        } => Cause::NoRouteBack {
            namespace: namespace.clone(),
            to: back.to,
            not_masqueraded_by: unmasqueraded_network(topology, request.sent.src),
        },
        Ending::TakenIn { namespace, .. } | Ending::Delivered { namespace, .. } => {
            Cause::NotAnswered {
                namespace: namespace.clone(),
            }
        }
        Ending::Left { device, .. } => Cause::Beyond {
            device: device.clone(),
            router: None,
        },
        Ending::InFlight {
            namespace,
            waiting_for: Some(next_hop),
            ..
        } => Cause::NextHopSilent {
            namespace: namespace.clone(),
            next_hop: Some(*next_hop),
        },
        _ => Cause::NotKnown,
    }
}

/// Why nothing listened where the request was refused: a container that
/// listens on that port (published elsewhere or not at all), another
/// namespace that does, or nothing anywhere.
fn listening_cause(
    request: &RequestSummary,
    protocol: &str,
    port: u16,
    listeners: &[ListenerAt],
    topology: &Topology,
) -> Cause {
    let refused_in = refused_in(request, topology);
    let elsewhere: Vec<&ListenerAt> = listeners
        .iter()
        .filter(|at| at.listener.protocol == protocol && at.listener.address.port() == port)
        .filter(|at| Some(at.netns) != refused_in)
        .collect();
    // Containers first, what the lecture's demo 0 is about; one that
    // published that port (elsewhere) before one that did not.
    let publishes = |container: &Container| {
        container
            .published
            .iter()
            .any(|b| b.protocol == protocol && b.container_port == port)
    };
    let mut in_containers: Vec<(&Container, &ListenerAt)> = elsewhere
        .iter()
        .filter_map(|at| Some((container_in(topology, at.netns)?, *at)))
        .collect();
    in_containers.sort_by_key(|(container, _)| !publishes(container));
    let in_container = in_containers.first().copied();
    let to_host = refused_in == Some(topology.host_netns);
    if let Some((container, at)) = in_container
        && to_host
    {
        let published = container
            .published
            .iter()
            .find(|b| b.protocol == protocol && b.container_port == port);
        return match published {
            Some(binding) => Cause::PublishedElsewhere {
                container: container.name.clone(),
                container_port: port,
                host_port: binding.host_port,
                protocol: protocol.to_string(),
            },
            None => Cause::NotPublished {
                container: container.name.clone(),
                listening_on: listening_address(at, container),
                protocol: protocol.to_string(),
                port,
                listener_is_its_command: !container.command.is_empty()
                    && at.listener.args == container.command,
            },
        };
    }
    match elsewhere.first() {
        Some(at) => Cause::ListensElsewhere {
            namespace: topology.owner_label(at.netns),
            process: format!("{} (pid {})", at.listener.process, at.listener.pid),
            listening_on: match container_in(topology, at.netns) {
                Some(container) => listening_address(at, container),
                None => at.listener.address.to_string(),
            },
        },
        None => Cause::NothingListens {
            namespace: refused_in.map_or_else(
                || request.sent.dst.to_string(),
                |netns| topology.owner_label(netns),
            ),
            protocol: protocol.to_string(),
            port,
        },
    }
}

/// A container's listener as the host would reach it: its address on a
/// Docker network for a socket bound to all addresses.
fn listening_address(at: &ListenerAt, container: &Container) -> String {
    let address = at.listener.address;
    match (address.ip(), container.networks.iter().find_map(|n| n.ip)) {
        (ip, Some(own)) if ip.is_unspecified() => {
            std::net::SocketAddr::new(own, address.port()).to_string()
        }
        _ => address.to_string(),
    }
}

/// Where the request was refused: the namespace that ended it.
fn refused_in(request: &RequestSummary, topology: &Topology) -> Option<u32> {
    match &request.ending {
        Ending::Dropped { netns, .. }
        | Ending::TakenIn { netns, .. }
        | Ending::Delivered { netns, .. } => Some(*netns),
        _ => topology
            .namespaces
            .iter()
            .find(|ns| {
                ns.interfaces
                    .iter()
                    .any(|i| i.addresses.iter().any(|(a, _)| *a == request.sent.dst))
            })
            .map(|ns| ns.inode),
    }
}

/// Docker's isolation rule dropped it: the networks of its source and of
/// its destination.
fn isolation(request: &RequestSummary, topology: &Topology) -> Cause {
    let network_of = |address: IpAddr| {
        topology
            .docker_networks
            .iter()
            .find(|n| n.subnets.iter().any(|subnet| in_subnet(address, *subnet)))
            .map(|n| n.name.clone())
    };
    let container = topology
        .containers
        .iter()
        .find(|c| c.networks.iter().any(|n| n.ip == Some(request.sent.src)))
        .map(|c| c.name.clone());
    Cause::NetworksIsolated {
        from_network: network_of(request.sent.src),
        to_network: network_of(request.sent.dst),
        container,
    }
}

/// The Docker network `source` is on, when that network does not masquerade.
fn unmasqueraded_network(topology: &Topology, source: IpAddr) -> Option<String> {
    topology
        .docker_networks
        .iter()
        .find(|n| !n.masquerade && n.subnets.iter().any(|s| in_subnet(source, *s)))
        .map(|n| n.name.clone())
}

/// The device the request came in on where it ended.
fn arrived_on(request: &RequestSummary) -> Option<String> {
    request
        .arrived_on
        .as_ref()
        .map(|(_, device)| device.clone())
}

fn forwarding_off(request: &RequestSummary) -> bool {
    request.arrived_forwarding == Some(false)
}

/// The route of `result`'s kind in `netns` that covers `destination`, as
/// `ip route` names it.
fn refusing_route(
    topology: &Topology,
    netns: u32,
    result: RouteResult,
    destination: IpAddr,
) -> Option<String> {
    use crate::enrich::RouteKind;
    let kind = match result {
        RouteResult::Unreachable => RouteKind::Unreachable,
        RouteResult::Blackhole => RouteKind::Blackhole,
        RouteResult::Prohibit => RouteKind::Prohibit,
        _ => return None,
    };
    let word = match kind {
        RouteKind::Unreachable => "unreachable",
        RouteKind::Blackhole => "blackhole",
        _ => "prohibit",
    };
    let route = topology
        .namespace(netns)?
        .routes
        .iter()
        .filter(|r| r.kind == kind)
        .filter_map(|r| r.destination)
        .filter(|subnet| in_subnet(destination, *subnet))
        .max_by_key(|(_, prefix)| *prefix)?;
    Some(format!("{word} {}/{}", route.0, route.1))
}

/// Where a namespace with no default route to `destination` would send:
/// the host's end of the link it has, of the destination's family and on
/// the namespace's own subnet (the address on its veth peer, or on the
/// bridge that peer is a port of: a Docker network's gateway). Never a
/// link-local address, which a route needs a device for.
fn gateway_candidate(topology: &Topology, netns: u32, destination: IpAddr) -> Option<IpAddr> {
    let namespace = topology.namespace(netns)?;
    let usable = |address: &IpAddr| {
        address.is_ipv6() == destination.is_ipv6() && !crate::addr::is_link_local(*address)
    };
    namespace.interfaces.iter().find_map(|i| {
        let peer_ref = i.peer?;
        let peer = topology.interface(peer_ref.netns, peer_ref.ifindex)?;
        let bridge = peer
            .master
            .and_then(|master| topology.interface(peer_ref.netns, master));
        let own: Vec<(IpAddr, u8)> = i
            .addresses
            .iter()
            .copied()
            .filter(|(a, _)| usable(a))
            .collect();
        peer.addresses
            .iter()
            .chain(bridge.into_iter().flat_map(|b| b.addresses.iter()))
            .map(|(address, _)| *address)
            .filter(usable)
            .find(|address| own.is_empty() || own.iter().any(|subnet| in_subnet(*address, *subnet)))
    })
}

/// The running container that owns namespace `netns`.
fn container_in(topology: &Topology, netns: u32) -> Option<&Container> {
    match &topology.namespace(netns)?.owner {
        Owner::Container { id, .. } => topology.containers.iter().find(|c| &c.id == id),
        _ => None,
    }
}

fn request_port(request: &RequestSummary) -> Option<u16> {
    match request.sent.transport {
        Transport::Tcp { dport, .. } | Transport::Udp { dport, .. } => Some(dport),
        _ => None,
    }
}

fn protocol_name(transport: &Transport) -> &'static str {
    match transport {
        Transport::Udp { .. } => "udp",
        _ => "tcp",
    }
}

fn describe_request(request: &RequestSummary) -> String {
    match (request.sent.transport, request_port(request)) {
        (Transport::Icmp { .. }, _) => "the ping".into(),
        (_, Some(port)) => format!(
            "the {} packet to port {port}",
            protocol_name(&request.sent.transport)
        ),
        _ => "the packet".into(),
    }
}

/// How to run a command in namespace `netns`: as is on the host, through
/// `ip netns exec` for a named one, `nsenter` into a container's or a
/// process's.
pub(super) fn in_namespace(topology: &Topology, netns: u32) -> String {
    if netns == topology.host_netns {
        return String::new();
    }
    let namespace = topology.namespace(netns);
    match namespace.map(|ns| &ns.owner) {
        Some(Owner::NetnsName(name)) => format!("ip netns exec {name} "),
        Some(Owner::DockerHost { engine }) => match namespace.and_then(|ns| ns.netns_names.first())
        {
            Some(name) => format!("ip netns exec {name} "),
            None => topology
                .engines
                .iter()
                .find(|e| &e.name == engine)
                .and_then(|e| e.pid)
                .map_or_else(String::new, |pid| format!("nsenter -t {pid} -n ")),
        },
        Some(Owner::Container { id, .. }) => topology
            .containers
            .iter()
            .find(|c| &c.id == id)
            .map_or_else(String::new, |c| format!("nsenter -t {} -n ", c.pid)),
        Some(Owner::Process { pid, .. }) => format!("nsenter -t {pid} -n "),
        _ => String::new(),
    }
}

/// The verdict's words and command for `cause`.
fn verdict(what: String, cause: Cause, request: &RequestSummary, topology: &Topology) -> Verdict {
    let (why, action) = words(&cause, request, topology);
    Verdict {
        what,
        cause,
        why,
        action,
    }
}

fn fix(command: String) -> Option<Action> {
    Some(Action {
        kind: ActionKind::Fix,
        command,
        or: None,
    })
}

fn check(command: String) -> Option<Action> {
    Some(Action {
        kind: ActionKind::Check,
        command,
        or: None,
    })
}

fn words(cause: &Cause, request: &RequestSummary, topology: &Topology) -> (String, Option<Action>) {
    let (life, _) = crate::addr::lifetime_words(request.sent.dst);
    let source_prefix = in_namespace(topology, request.source_netns);
    match cause {
        Cause::NotPublished {
            container,
            listening_on,
            protocol,
            port,
            listener_is_its_command,
        } => {
            let run = topology
                .container(container)
                .filter(|_| *listener_is_its_command)
                .map(|c| {
                    format!(
                        "docker run -d -p {port}:{port}/{protocol} {} {}",
                        c.image,
                        c.command.join(" ")
                    )
                });
            (
                format!(
                    "{container} listens on {listening_on} in its own network namespace, and Docker did not publish port {port}: the host's port {port} leads nowhere; publish it with -p {port}:{port} when you run {container}, or reach it where it listens"
                ),
                run.map(|command| Action {
                    kind: ActionKind::Fix,
                    command,
                    or: Some(format!("reach it where it listens, {listening_on}")),
                }),
            )
        }
        Cause::PublishedElsewhere {
            container,
            container_port,
            host_port,
            protocol,
        } => (
            format!(
                "{container} listens on port {container_port}, and Docker published it on the host's port {host_port} (-p {host_port}:{container_port}/{protocol}), not on {container_port}"
            ),
            Some(Action {
                kind: ActionKind::Check,
                command: format!(
                    "pkttrace follow {} {} --probe {protocol}",
                    source_label(topology, request.source_netns),
                    std::net::SocketAddr::new(request.sent.dst, *host_port)
                ),
                or: Some(format!("connect to port {host_port} instead")),
            }),
        ),
        Cause::ListensElsewhere {
            namespace,
            process,
            listening_on,
        } => (
            format!(
                "nothing listens there, but {process} listens on {listening_on} in {namespace}"
            ),
            None,
        ),
        Cause::NothingListens {
            namespace,
            protocol,
            port,
        } => {
            let netns = refused_in(request, topology).unwrap_or(topology.host_netns);
            let list = if protocol == "udp" { "-ulnp" } else { "-tlnp" };
            (
                format!(
                    "no process in {namespace}, nor in any other namespace here, listens on {protocol} port {port}"
                ),
                check(format!("{}ss {list}", in_namespace(topology, netns))),
            )
        }
        Cause::NetworksIsolated {
            from_network,
            to_network,
            container,
        } => {
            let networks = match (from_network, to_network) {
                (Some(from), Some(to)) => format!("Docker networks {from} and {to}"),
                _ => "Docker's networks".to_string(),
            };
            let connect = match (to_network, container) {
                (Some(to), Some(container)) => {
                    fix(format!("docker network connect {to} {container}"))
                }
                _ => None,
            };
            (
                format!(
                    "{networks} are isolated from each other by design: Docker's isolation rule (DOCKER-ISOLATION-STAGE-2) drops what goes from one to the other; to talk, containers share a network"
                ),
                connect,
            )
        }
        Cause::InTunnel { tunnel, cause } => {
            let (why, action) = words(cause, request, topology);
            (
                format!(
                    "the VXLAN datagram carrying it ({} → {}, UDP port {}, VNI {}) was dropped, and the packet with it: {why}; an overlay network needs UDP port {} open between its hosts",
                    tunnel.src, tunnel.dst, tunnel.dport, tunnel.vni, tunnel.dport
                ),
                action,
            )
        }
        Cause::AdministratorRule {
            rule,
            position,
            reject,
        } => {
            let decided = if *reject { "rejected" } else { "dropped" };
            (
                format!(
                    "a rule in DOCKER-USER, the chain Docker leaves to the administrator and runs before its own rules, {decided} it: {rule}"
                ),
                position.map_or_else(
                    || check("iptables -L DOCKER-USER --line-numbers".into()),
                    |position| fix(format!("iptables -D DOCKER-USER {position}")),
                ),
            )
        }
        Cause::FirewallRule {
            namespace,
            table,
            chain,
            rule,
            handle,
        } => {
            let netns = refused_in(request, topology).unwrap_or(topology.host_netns);
            let prefix = in_namespace(topology, netns);
            (
                format!("a netfilter rule in {namespace} dropped it: {table} {chain}: {rule}"),
                handle.map_or_else(
                    || check(format!("{prefix}nft -a list chain {table} {chain}")),
                    |handle| {
                        fix(format!(
                            "{prefix}nft delete rule {table} {chain} handle {handle}"
                        ))
                    },
                ),
            )
        }
        Cause::ChainPolicy {
            docker_forward_from: Some(device),
            ..
        } => (
            format!(
                "Docker set the host's FORWARD chain to drop what no rule accepts, and forwards only its own networks' traffic; this came in on {device}, which none of its rules accepts"
            ),
            Some(Action {
                kind: ActionKind::Fix,
                command: format!(
                    "iptables -I DOCKER-USER -i {device} -j ACCEPT && iptables -I DOCKER-USER -o {device} -j ACCEPT"
                ),
                or: Some(
                    "DOCKER-USER is the chain Docker leaves to you; both ways, for the replies"
                        .into(),
                ),
            }),
        ),
        Cause::ChainPolicy {
            namespace,
            table,
            chain,
            ..
        } => {
            let netns = refused_in(request, topology).unwrap_or(topology.host_netns);
            (
                format!(
                    "in {namespace}, chain {table} {chain} drops what no rule accepts (its policy), and no rule accepted this"
                ),
                check(format!(
                    "{}nft list chain {table} {chain}",
                    in_namespace(topology, netns)
                )),
            )
        }
        Cause::ForwardingOff {
            namespace,
            device,
            all_off,
            ipv6,
        } => {
            let name = |device: &str| crate::enrich::sysctl_name(*ipv6, device, "forwarding");
            let netns = refused_in(request, topology).unwrap_or(topology.host_netns);
            let prefix = in_namespace(topology, netns);
            // Writing `all` sets every device, but only when its value
            // changes: with it already 1, the device's own setting is the fix.
            let (why, setting) = if *ipv6 {
                (
                    format!(
                        "IPv6 forwarding is off in {namespace} ({} = 0, the only IPv6 forwarding setting the kernel checks), so the packet that came in on {device} is not routed on",
                        name("all")
                    ),
                    "all".to_string(),
                )
            } else if *all_off {
                (
                    format!(
                        "forwarding is off in {namespace} ({} = 0, and on {device}, where it came in), so the kernel routes nothing on: what lets containers reach out",
                        name("all")
                    ),
                    "all".to_string(),
                )
            } else {
                (
                    format!(
                        "forwarding is off on {device} in {namespace}, where it came in, so the kernel does not route it on (what lets containers reach out: {})",
                        name(device)
                    ),
                    device.clone(),
                )
            };
            (why, fix(format!("{prefix}sysctl -w {}=1", name(&setting))))
        }
        Cause::ReversePathFilter { namespace, device } => {
            let netns = refused_in(request, topology).unwrap_or(topology.host_netns);
            (
                format!(
                    "the reverse path filter on {device} in {namespace} dropped it: the route back to its source {} does not go out of {device}",
                    request.sent.src
                ),
                fix(format!(
                    "{}sysctl -w net.ipv4.conf.{device}.rp_filter=2",
                    in_namespace(topology, netns)
                )),
            )
        }
        Cause::RouteRefuses {
            namespace,
            result,
            route,
        } => {
            let netns = refused_in(request, topology).unwrap_or(topology.host_netns);
            let kind = match result {
                RouteResult::Blackhole => "a blackhole route",
                RouteResult::Prohibit => "a prohibit route",
                _ => "an unreachable route",
            };
            (
                format!(
                    "{namespace} has {kind} for {}: it refuses to route there",
                    request.sent.dst
                ),
                route.as_ref().map_or_else(
                    || {
                        check(format!(
                            "{}ip route get {}",
                            in_namespace(topology, netns),
                            request.sent.dst
                        ))
                    },
                    |route| {
                        fix(format!(
                            "{}ip route del {route}",
                            in_namespace(topology, netns)
                        ))
                    },
                ),
            )
        }
        Cause::NoRouteAtSource {
            namespace,
            destination,
            gateway,
        } => (
            format!(
                "{namespace} has no route to {destination} and no default route, so its kernel refused to send"
            ),
            match gateway {
                Some(gateway) => fix(format!("{source_prefix}ip route add default via {gateway}")),
                None => check(format!("{source_prefix}ip route")),
            },
        ),
        Cause::NetworkNone { container } => (
            format!(
                "{container} runs with --network none: its namespace has only lo, so nothing can leave it"
            ),
            fix(format!("docker network connect bridge {container}")),
        ),
        Cause::NoRouteBack {
            namespace,
            to,
            not_masqueraded_by,
        } => {
            let netns = refused_in(request, topology).unwrap_or(topology.host_netns);
            let network = not_masqueraded_by
                .as_ref()
                .and_then(|name| topology.docker_networks.iter().find(|n| &n.name == name));
            let why = match not_masqueraded_by {
                Some(name) => format!(
                    "Docker network {name} does not masquerade (enable_ip_masquerade=false), so the packet left the host with its private source {to}, and {namespace} has no route back to it"
                ),
                None => format!("{namespace} has no route back to {to}, so it could not answer"),
            };
            let route_back = match (
                network.and_then(|n| n.subnets.first()),
                request.arrived_from,
            ) {
                (Some((subnet, prefix)), Some(via)) => fix(format!(
                    "{}ip route add {subnet}/{prefix} via {via}",
                    in_namespace(topology, netns)
                )),
                (None, Some(via)) => fix(format!(
                    "{}ip route add {to} via {via}",
                    in_namespace(topology, netns)
                )),
                _ => check(format!(
                    "{}ip route get {to}",
                    in_namespace(topology, netns)
                )),
            };
            (why, route_back)
        }
        Cause::NextHopSilent {
            namespace,
            next_hop,
        } => (
            match next_hop {
                Some(hop) => format!(
                    "{namespace} asked for {hop}'s MAC address and nobody answered: nothing on that link owns {hop}"
                ),
                None => format!(
                    "{namespace}'s next hop never answered {}",
                    crate::addr::neighbour_words(request.sent.dst).0
                ),
            },
            check(format!(
                "{}ip neigh show{}",
                in_namespace(
                    topology,
                    refused_in(request, topology).unwrap_or(topology.host_netns)
                ),
                next_hop.map(|h| format!(" {h}")).unwrap_or_default()
            )),
        ),
        Cause::TooBig { length, mtu } => (
            {
                // IPv6 routers never fragment: there is no bit to set.
                let sent = if request.sent.dst.is_ipv6() {
                    format!("it is {length} bytes")
                } else {
                    format!("it is {length} bytes with don't fragment set")
                };
                match mtu {
                    Some(mtu) => format!("{sent}, and a link on its way carries at most {mtu}"),
                    None => format!("{sent}, larger than a link on its way"),
                }
            },
            check(format!("{source_prefix}ip route get {}", request.sent.dst)),
        ),
        Cause::TtlRanOut {
            router,
            looped_between,
        } => (
            match (router, looped_between.as_slice()) {
                (_, [_, ..]) => format!(
                    "a routing loop between {} used up its {life}",
                    looped_between.join(" and ")
                ),
                (Some(router), []) => format!(
                    "its {life} ran out at {router}: the sender set it too small for the way there"
                ),
                (None, []) => format!("its {life} ran out on the way"),
            },
            check(format!("{source_prefix}ip route get {}", request.sent.dst)),
        ),
        Cause::Beyond { device, router } => (
            match router {
                Some(router) => format!(
                    "not known here: the answer came from {router}, beyond {device}, where nothing is traced"
                ),
                None => format!(
                    "not known here: it left through {device}, and nothing beyond {device} is traced"
                ),
            },
            None,
        ),
        Cause::NotAnswered { namespace } => (
            format!(
                "{namespace} took it in and nothing there answered: not known why (no process reads it, or it chose not to answer)"
            ),
            None,
        ),
        Cause::NotKnown => (
            "not known: the kernel's evidence tells no cause".into(),
            None,
        ),
    }
}

/// How the source is named on the command line.
fn source_label(topology: &Topology, netns: u32) -> String {
    match topology.namespace(netns).map(|ns| &ns.owner) {
        Some(Owner::NetnsName(name)) => name.clone(),
        Some(Owner::Container { name, .. }) => name.clone(),
        _ => "host".into(),
    }
}
