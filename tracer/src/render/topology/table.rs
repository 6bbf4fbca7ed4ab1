//! The report as grouped tables for a terminal or a projector: each
//! namespace with its interfaces and routes, then the veth pairs, bridges
//! with their ports and rules, published ports and containers.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};
use tabled::Table;
use tabled::builder::Builder;
use tabled::settings::Style as TableStyle;

use crate::enrich::report::{
    BridgeView, End, NamespaceKind, NamespaceView, PublishedPort, Report, RouteView, RuleView,
};

const HEADING: Style = AnsiColor::Cyan.on_default().bold();
const SUBHEADING: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const DOCKER_EMBEDDED_DNS: &str = "127.0.0.11";

/// Renders with ANSI styles; print through `anstream`, which strips them
/// when the output is not a terminal or NO_COLOR is set.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    if let Some(name) = &report.container {
        container_namespaces(&mut out, report, name);
    }
    heading(&mut out, "Network namespaces");
    let mut last_kind = None;
    for ns in &report.namespaces {
        if last_kind != Some(ns.kind) {
            let group = match ns.kind {
                NamespaceKind::Host => "the host",
                NamespaceKind::DockerHost => "Docker hosts (other engines' own namespaces)",
                NamespaceKind::Container => "containers (Docker)",
                NamespaceKind::Netns => "`ip netns` namespaces",
                NamespaceKind::Docker => "Docker's own namespaces",
                NamespaceKind::Process => "namespaces of other processes",
            };
            let _ = writeln!(out, "{DIM}── {group} ──{DIM:#}\n");
            last_kind = Some(ns.kind);
        }
        namespace(&mut out, ns);
    }
    veth_pairs(&mut out, report);
    for bridge in &report.bridges {
        bridge_section(&mut out, bridge);
    }
    tunnels(&mut out, report);
    uplinks(&mut out, report);
    published_ports(&mut out, &report.published_ports);
    containers(&mut out, report);
    engines(&mut out, report);
    out
}

fn heading(out: &mut String, title: &str) {
    let _ = writeln!(out, "{HEADING}{title}{HEADING:#}\n");
}

fn table(builder: Builder) -> Table {
    let mut table = builder.build();
    table.with(TableStyle::rounded());
    table
}

fn push_table(out: &mut String, builder: Builder) {
    let _ = writeln!(out, "{}\n", table(builder));
}

fn container_namespaces(out: &mut String, report: &Report, name: &str) {
    let Some(container) = report.containers.first() else {
        return;
    };
    heading(out, &format!("{name}: its namespaces and the host's"));
    let mut b = Builder::default();
    b.push_record(["namespace", name, "host", ""]);
    let theirs = container.namespaces.unwrap_or_default();
    for ((kind, own), (_, host)) in theirs.all().into_iter().zip(report.host_namespaces.all()) {
        let shared = match (own, host) {
            (Some(a), Some(b)) if a == b => "shared with the host",
            (Some(_), Some(_)) => "its own",
            _ => "",
        };
        b.push_record([
            kind.to_string(),
            inode(own),
            inode(host),
            shared.to_string(),
        ]);
    }
    push_table(out, b);
}

fn inode(id: Option<u64>) -> String {
    id.map_or_else(|| "?".to_string(), |id| id.to_string())
}

fn namespace(out: &mut String, ns: &NamespaceView) {
    let forwarding = match ns.ip_forward {
        Some(true) => "forwarding on",
        Some(false) => "forwarding off",
        None => "forwarding unknown",
    };
    let names = if ns.netns_names.is_empty() || ns.kind == NamespaceKind::Netns {
        String::new()
    } else {
        format!(" · ip netns {}", ns.netns_names.join(", "))
    };
    let _ = writeln!(
        out,
        "{SUBHEADING}{}{SUBHEADING:#} · netns {}{names} · {forwarding}",
        ns.owner, ns.netns
    );
    let mut b = Builder::default();
    b.push_record([
        "if",
        "interface",
        "kind",
        "state",
        "MAC",
        "addresses",
        "wired to",
    ]);
    for i in &ns.interfaces {
        let mut wired = Vec::new();
        if let Some(bridge) = &i.bridge {
            wired.push(format!("port of {bridge}"));
        }
        if let Some(peer) = &i.peer {
            wired.push(format!("veth peer {}", end_text(peer)));
        }
        b.push_record([
            i.ifindex.to_string(),
            i.name.clone(),
            i.kind.name().to_string(),
            i.state.to_string(),
            i.mac.clone().unwrap_or_default(),
            i.addresses.join("\n"),
            wired.join("\n"),
        ]);
    }
    let _ = writeln!(out, "{}", table(b));
    routes(out, &ns.routes);
}

fn end_text(end: &End) -> String {
    format!("{} in {}", end.interface, end.namespace)
}

/// As `ip route` prints them; the kernel-made local table only counted.
fn routes(out: &mut String, routes: &[RouteView]) {
    let local = routes.iter().filter(|r| r.table == "local").count();
    let shown: Vec<&RouteView> = routes.iter().filter(|r| r.table != "local").collect();
    let note = if local > 0 {
        format!(" {DIM}(and {local} in table local: see --json){DIM:#}")
    } else {
        String::new()
    };
    if shown.is_empty() {
        let _ = writeln!(out, "  routes: none{note}\n");
        return;
    }
    let _ = writeln!(out, "  routes:{note}");
    for r in shown {
        let _ = writeln!(out, "    {}", route_text(r));
    }
    out.push('\n');
}

fn route_text(r: &RouteView) -> String {
    let mut words = Vec::new();
    if r.kind != "unicast" {
        words.push(r.kind.to_string());
    }
    words.push(r.destination.clone());
    if let Some(gateway) = &r.gateway {
        words.push(format!("via {gateway}"));
    }
    if let Some(device) = &r.device {
        words.push(format!("dev {device}"));
    }
    if let Some(source) = &r.source {
        words.push(format!("src {source}"));
    }
    if r.table != "main" {
        words.push(format!("table {}", r.table));
    }
    words.join(" ")
}

fn veth_pairs(out: &mut String, report: &Report) {
    heading(out, "veth pairs (a cable between two namespaces)");
    if report.veth_pairs.is_empty() {
        let _ = writeln!(out, "  none\n");
        return;
    }
    let mut b = Builder::default();
    b.push_record(["one end", "namespace", "other end", "namespace"]);
    for pair in &report.veth_pairs {
        b.push_record([
            pair.a.interface.clone(),
            format!("{} ({})", pair.a.namespace, pair.a.netns),
            pair.b.interface.clone(),
            format!("{} ({})", pair.b.namespace, pair.b.netns),
        ]);
    }
    push_table(out, b);
}

fn tunnels(out: &mut String, report: &Report) {
    if report.tunnels.is_empty() {
        return;
    }
    heading(
        out,
        "VXLAN tunnels (an overlay network's links between hosts)",
    );
    let mut b = Builder::default();
    b.push_record([
        "device",
        "namespace",
        "VNI",
        "over",
        "remote endpoint",
        "for MAC addresses",
        "far end",
    ]);
    for tunnel in &report.tunnels {
        let device = format!("{} (UDP {})", tunnel.device.interface, tunnel.port);
        let namespace = tunnel.device.namespace.clone();
        let over = tunnel.underlay.clone().unwrap_or_default();
        if tunnel.remotes.is_empty() {
            b.push_record([
                device,
                namespace,
                tunnel.vni.to_string(),
                over,
                "none yet".into(),
                String::new(),
                String::new(),
            ]);
            continue;
        }
        for remote in &tunnel.remotes {
            b.push_record([
                device.clone(),
                namespace.clone(),
                tunnel.vni.to_string(),
                over.clone(),
                remote.vtep.clone(),
                remote.macs.join("\n"),
                remote
                    .far_end
                    .as_ref()
                    .map(|end| format!("{} in {}", end.interface, end.namespace))
                    .unwrap_or_else(|| "not on this machine".into()),
            ]);
        }
    }
    push_table(out, b);
}

fn bridge_section(out: &mut String, bridge: &BridgeView) {
    let network = match &bridge.docker_network {
        Some(name) => format!(" · Docker network \"{name}\""),
        None => String::new(),
    };
    heading(
        out,
        &format!(
            "bridge {} in {}{network} · {}",
            bridge.name,
            bridge.namespace,
            if bridge.addresses.is_empty() {
                "no address".to_string()
            } else {
                bridge.addresses.join(", ")
            }
        ),
    );
    if bridge.ports.is_empty() {
        let _ = writeln!(out, "  no ports\n");
    } else {
        let mut b = Builder::default();
        b.push_record(["port", "plugged into it"]);
        for port in &bridge.ports {
            let peer = port
                .peer
                .as_ref()
                .map(end_text)
                .unwrap_or_else(|| "(not a veth, or its peer is out of sight)".into());
            b.push_record([port.interface.clone(), peer]);
        }
        push_table(out, b);
    }
    if bridge.rules.is_empty() {
        let _ = writeln!(out, "  no netfilter rule names {}\n", bridge.name);
        return;
    }
    let _ = writeln!(
        out,
        "  netfilter rules that name {} or its subnet:",
        bridge.name
    );
    push_table(out, rules_table(&bridge.rules));
}

fn rules_table(rules: &[RuleView]) -> Builder {
    let mut b = Builder::default();
    b.push_record(["table", "chain", "reached", "rule", "packets"]);
    for rule in rules {
        let reached = match (&rule.hook, rule.entered_from.is_empty()) {
            (Some(hook), _) => format!("hook {hook}"),
            (None, false) => format!("from {}", rule.entered_from.join(", ")),
            (None, true) => "never".to_string(),
        };
        b.push_record([
            format!("{} {}", rule.family, rule.table),
            rule.chain.clone(),
            reached,
            rule.rule.clone(),
            rule.packets.map(|p| p.to_string()).unwrap_or_default(),
        ]);
    }
    b
}

fn uplinks(out: &mut String, report: &Report) {
    heading(out, "Uplink (the host's default route)");
    if report.uplinks.is_empty() {
        let _ = writeln!(out, "  none: the host has no default route\n");
        return;
    }
    for uplink in &report.uplinks {
        let via = uplink
            .gateway
            .as_ref()
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}{via} ({})",
            uplink.interface,
            uplink.addresses.join(", ")
        );
    }
    out.push('\n');
}

fn published_ports(out: &mut String, ports: &[PublishedPort]) {
    heading(out, "Published ports");
    if ports.is_empty() {
        let _ = writeln!(out, "  none\n");
        return;
    }
    let mut b = Builder::default();
    b.push_record([
        "host port",
        "leads to",
        "served by (listening process)",
        "DNAT rule",
    ]);
    for port in ports {
        let host = match port.host_ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", port.host_port),
            _ if port.host_ip.is_empty() => format!("*:{}", port.host_port),
            _ => format!("{}:{}", port.host_ip, port.host_port),
        };
        let target = format!(
            "{} {}:{}",
            port.container.as_deref().unwrap_or("?"),
            port.container_ip.as_deref().unwrap_or("?"),
            port.container_port
                .map(|p| p.to_string())
                .unwrap_or_else(|| "?".into())
        );
        let servers: Vec<String> = port
            .served_by
            .iter()
            .map(|s| {
                let forwards = match &s.forwards_to {
                    Some(to) => format!("\n  forwards to {to}"),
                    None => String::new(),
                };
                format!(
                    "{} pid {}\n  listens on {}{forwards}",
                    s.process, s.pid, s.listens_on
                )
            })
            .collect();
        let rules: Vec<String> = port
            .dnat_rules
            .iter()
            .map(|r| format!("{} {} {}:\n{}", r.family, r.table, r.chain, r.rule))
            .collect();
        b.push_record([
            format!("{}/{host}", port.protocol),
            target,
            if servers.is_empty() {
                "no process listens".into()
            } else {
                servers.join("\n")
            },
            if rules.is_empty() {
                "none".into()
            } else {
                rules.join("\n")
            },
        ]);
    }
    push_table(out, b);
}

/// The engines, when there is more than one or one did not answer.
fn engines(out: &mut String, report: &Report) {
    if report.engines.len() < 2 && report.engines.iter().all(|e| e.error.is_none()) {
        return;
    }
    heading(out, "Docker engines");
    let mut b = Builder::default();
    b.push_record(["engine", "socket", "host", "swarm address"]);
    for engine in &report.engines {
        let name = match &engine.error {
            Some(error) => format!("{} (did not answer: {error})", engine.name),
            None => engine.name.clone(),
        };
        b.push_record([
            name,
            engine.socket.clone(),
            engine.host.clone().unwrap_or_default(),
            engine.swarm_address.clone().unwrap_or_default(),
        ]);
    }
    push_table(out, b);
}

fn containers(out: &mut String, report: &Report) {
    heading(out, "Containers");
    if let Some(error) = &report.docker_error {
        let _ = writeln!(out, "  unknown: {error}\n");
        return;
    }
    if report.containers.is_empty() {
        let _ = writeln!(out, "  none running\n");
        return;
    }
    let mut b = Builder::default();
    b.push_record([
        "container",
        "pid",
        "netns",
        "networks (bridge: address)",
        "nameservers (resolv.conf)",
    ]);
    for c in &report.containers {
        let networks: Vec<String> = c
            .networks
            .iter()
            .map(|n| {
                format!(
                    "{} ({}): {}",
                    n.network,
                    n.bridge.as_deref().unwrap_or("no bridge"),
                    n.ip.as_deref().unwrap_or("no address")
                )
            })
            .collect();
        let resolvers = match &c.resolv_conf_error {
            Some(error) => error.clone(),
            None => c
                .nameservers
                .iter()
                .map(|s| nameserver_text(s))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        b.push_record([
            format!("{}\n{}", c.name, c.id.get(..12).unwrap_or(&c.id)),
            c.pid.to_string(),
            c.netns.to_string(),
            networks.join("\n"),
            resolvers,
        ]);
    }
    push_table(out, b);
}

/// Docker gives containers on user-defined networks its own resolver.
fn nameserver_text(server: &str) -> String {
    if server == DOCKER_EMBEDDED_DNS {
        format!("{server} (Docker's embedded DNS, served by dockerd)")
    } else {
        server.to_string()
    }
}
