//! The report as a Graphviz picture (DOT text; `dot -Tsvg` draws it):
//! namespaces as boxes, bridges as switches with one socket per port,
//! veth pairs as wires, VXLAN tunnels as dashed links, the uplink to the
//! outside, and published ports.
//! Loopback and interfaces that are down without an address are left out
//! so the picture stays readable on a projector.

use std::fmt::Write;

use crate::enrich::LinkKind;
use crate::enrich::report::{End, InterfaceView, NamespaceKind, NamespaceView, Report};

const FONT: &str = "Helvetica";

pub fn render(report: &Report) -> String {
    picture(report, &Overlay::default())
}

/// What a journey picture adds to the wiring (see `journey.rs`).
#[derive(Default)]
pub(super) struct Overlay {
    /// The picture's title, instead of the topology's.
    pub title: Option<String>,
    /// Namespaces the journeys touched; the others are greyed. Empty: none is.
    pub touched: Vec<u32>,
    /// DOT lines drawn inside a namespace's box, by namespace.
    pub inside: Vec<(u32, String)>,
    /// DOT lines drawn after the wiring.
    pub lines: Vec<String>,
}

pub(super) fn picture(report: &Report, overlay: &Overlay) -> String {
    let mut out = String::new();
    let title = match (&overlay.title, &report.container) {
        (Some(title), _) => title.clone(),
        (None, Some(name)) => format!("pkttrace topology: {name}"),
        (None, None) => "pkttrace topology".to_string(),
    };
    let note = match &report.docker_error {
        Some(error) => format!("\n{error}"),
        None => String::new(),
    };
    let _ = writeln!(out, "graph topology {{");
    let _ = writeln!(
        out,
        "  graph [rankdir=LR, fontname=\"{FONT}\", fontsize=20, labelloc=t, nodesep=0.5, ranksep=1.2, label=\"{}\"];",
        quoted(&(title + &note))
    );
    let _ = writeln!(
        out,
        "  node [fontname=\"{FONT}\", fontsize=14, shape=box, style=\"rounded,filled\", fillcolor=white];"
    );
    let _ = writeln!(
        out,
        "  edge [fontname=\"{FONT}\", fontsize=12, penwidth=2];"
    );
    if !report.uplinks.is_empty() {
        let _ = writeln!(
            out,
            "  outside [shape=ellipse, style=dashed, label=\"outside world\"];"
        );
    }
    for ns in report.namespaces.iter().filter(|ns| is_drawn(ns)) {
        cluster(&mut out, report, ns, overlay);
    }
    for pair in &report.veth_pairs {
        if let (Some(a), Some(b)) = (endpoint(report, &pair.a), endpoint(report, &pair.b)) {
            let _ = writeln!(out, "  {a} -- {b} [label=\"veth\"];");
        }
    }
    // A tunnel once, from the end listed first.
    let mut drawn_tunnels: Vec<(&End, &End)> = Vec::new();
    for tunnel in &report.tunnels {
        for far in tunnel.remotes.iter().filter_map(|r| r.far_end.as_ref()) {
            if drawn_tunnels.contains(&(far, &tunnel.device)) {
                continue;
            }
            drawn_tunnels.push((&tunnel.device, far));
            if let (Some(a), Some(b)) = (endpoint(report, &tunnel.device), endpoint(report, far)) {
                let _ = writeln!(
                    out,
                    "  {a} -- {b} [label=\"VXLAN {}\", style=dashed, color=purple];",
                    tunnel.vni
                );
            }
        }
    }
    let host = report
        .namespaces
        .iter()
        .find(|ns| ns.kind == NamespaceKind::Host);
    for uplink in &report.uplinks {
        let Some(host) = host else { break };
        let Some(iface) = host.interfaces.iter().find(|i| i.name == uplink.interface) else {
            continue;
        };
        let via = uplink
            .gateway
            .as_ref()
            .map(|g| format!("default via {g}"))
            .unwrap_or_else(|| "default route".into());
        let _ = writeln!(
            out,
            "  outside -- {} [label=\"{}\", style=dashed];",
            node_id(host.netns, iface),
            quoted(&via)
        );
    }
    for (n, port) in report.published_ports.iter().enumerate() {
        let target = report.namespaces.iter().find_map(|ns| {
            let ip = port.container_ip.as_deref()?;
            let iface = ns
                .interfaces
                .iter()
                .find(|i| i.addresses.iter().any(|a| a.split('/').next() == Some(ip)))?;
            Some(endpoint_of(ns, iface))
        });
        let Some(target) = target else { continue };
        let container_port = port
            .container_port
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  published_{n} -- {target} [style=dotted, color=darkorange, label=\"{}\"];",
            quoted(&format!(
                "→ {}{container_port}",
                port.container_ip.as_deref().unwrap_or("?")
            ))
        );
    }
    for line in &overlay.lines {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "}}");
    out
}

/// A namespace gets a box when it has an interface worth drawing.
fn is_drawn(ns: &NamespaceView) -> bool {
    ns.interfaces.iter().any(drawn)
}

/// The namespace `netns`, when the picture has a box for it.
pub(super) fn drawn_namespace(report: &Report, netns: u32) -> Option<&NamespaceView> {
    report
        .namespaces
        .iter()
        .find(|ns| ns.netns == netns && is_drawn(ns))
}

pub(super) fn drawn(iface: &InterfaceView) -> bool {
    iface.name != "lo" && (iface.state != "down" || !iface.addresses.is_empty())
}

fn cluster(out: &mut String, report: &Report, ns: &NamespaceView, overlay: &Overlay) {
    let untouched = !overlay.touched.is_empty() && !overlay.touched.contains(&ns.netns);
    let color = match ns.kind {
        _ if untouched => "gray92",
        NamespaceKind::Host | NamespaceKind::DockerHost => "gray95",
        NamespaceKind::Container => "lightcyan",
        NamespaceKind::Netns => "honeydew",
        NamespaceKind::Docker => "lavender",
        NamespaceKind::Process => "lightyellow",
    };
    let forwarding = match ns.ip_forward {
        Some(true) => " · forwarding on",
        Some(false) => " · forwarding off",
        None => "",
    };
    let _ = writeln!(out, "  subgraph cluster_{} {{", ns.netns);
    let _ = writeln!(
        out,
        "    label=\"{}\"; labeljust=l; margin=14; style=\"rounded,filled\"; fillcolor={color}; fontsize=18;",
        quoted(&format!("{}\nnetns {}{forwarding}", ns.owner, ns.netns))
    );
    if untouched {
        // Not on the journey's way: there, but out of the way.
        let _ = writeln!(out, "    fontcolor=gray50; color=gray70;");
        let _ = writeln!(out, "    node [color=gray60, fontcolor=gray50];");
    }
    for (_, line) in overlay
        .inside
        .iter()
        .filter(|(netns, _)| *netns == ns.netns)
    {
        let _ = writeln!(out, "    {line}");
    }
    for iface in ns.interfaces.iter().filter(|i| drawn(i)) {
        if iface.kind == LinkKind::Bridge {
            bridge(out, report, ns, iface);
        } else if !is_drawn_port(ns, iface) {
            let mut label = format!("<B>{}</B>", html(&iface.name));
            for address in &iface.addresses {
                let _ = write!(label, "<BR/>{}", html(address));
            }
            if iface.state != "up" {
                let _ = write!(label, "<BR/><I>{}</I>", iface.state);
            }
            let _ = writeln!(out, "    {} [label=<{label}>];", node_id(ns.netns, iface));
        }
    }
    if ns.kind == NamespaceKind::Host {
        for (n, port) in report.published_ports.iter().enumerate() {
            let mut label = format!(
                "<B>published {} port {} on {}</B>",
                html(&port.protocol),
                port.host_port,
                html(&port.host_ip)
            );
            for server in &port.served_by {
                let _ = write!(
                    label,
                    "<BR/>{} pid {} on {}",
                    html(&server.process),
                    server.pid,
                    html(&server.listens_on)
                );
            }
            for rule in &port.dnat_rules {
                let _ = write!(
                    label,
                    "<BR/>DNAT rule in {} {}",
                    html(&rule.table),
                    html(&rule.chain)
                );
            }
            let _ = writeln!(
                out,
                "    published_{n} [shape=note, style=filled, fillcolor=moccasin, label=<{label}>];"
            );
        }
    }
    let _ = writeln!(out, "  }}");
}

/// A bridge port is drawn as a socket of its bridge, not as a node.
fn is_drawn_port(ns: &NamespaceView, iface: &InterfaceView) -> bool {
    iface
        .bridge
        .as_ref()
        .is_some_and(|b| ns.interfaces.iter().any(|i| &i.name == b && drawn(i)))
}

/// A switch: the bridge's name, network and addresses on top, a row of
/// sockets below, one per port.
fn bridge(out: &mut String, report: &Report, ns: &NamespaceView, bridge: &InterfaceView) {
    let ports: Vec<&InterfaceView> = ns
        .interfaces
        .iter()
        .filter(|i| i.bridge.as_ref() == Some(&bridge.name) && drawn(i))
        .collect();
    let mut top = format!("<B>{}</B> (bridge)", html(&bridge.name));
    if let Some(network) = report
        .bridges
        .iter()
        .find(|b| b.netns == ns.netns && b.name == bridge.name)
        .and_then(|b| b.docker_network.as_ref())
    {
        let _ = write!(top, "<BR/>Docker network \"{}\"", html(network));
    }
    for address in &bridge.addresses {
        let _ = write!(top, "<BR/>{}", html(address));
    }
    let columns = ports.len().max(1);
    let mut label = format!(
        "<TABLE BORDER=\"1\" CELLBORDER=\"1\" CELLSPACING=\"0\" CELLPADDING=\"6\" BGCOLOR=\"lightsteelblue\"><TR><TD COLSPAN=\"{columns}\">{top}</TD></TR><TR>"
    );
    if ports.is_empty() {
        label.push_str("<TD><I>no ports</I></TD>");
    }
    for port in &ports {
        let _ = write!(
            label,
            "<TD PORT=\"p{}\" BGCOLOR=\"white\">{}</TD>",
            port.ifindex,
            html(&port.name)
        );
    }
    label.push_str("</TR></TABLE>");
    let _ = writeln!(
        out,
        "    {} [shape=plain, style=\"\", label=<{label}>];",
        node_id(ns.netns, bridge)
    );
}

pub(super) fn node_id(netns: u32, iface: &InterfaceView) -> String {
    format!("if_{netns}_{}", iface.ifindex)
}

/// Where a wire to this interface attaches, if it is drawn.
fn endpoint(report: &Report, end: &End) -> Option<String> {
    let ns = report.namespaces.iter().find(|ns| ns.netns == end.netns)?;
    let iface = ns
        .interfaces
        .iter()
        .find(|i| i.ifindex == end.ifindex)
        .filter(|i| drawn(i))?;
    Some(endpoint_of(ns, iface))
}

pub(super) fn endpoint_of(ns: &NamespaceView, iface: &InterfaceView) -> String {
    match iface
        .bridge
        .as_ref()
        .and_then(|b| ns.interfaces.iter().find(|i| &i.name == b && drawn(i)))
    {
        Some(bridge) => format!("{}:p{}", node_id(ns.netns, bridge), iface.ifindex),
        None => node_id(ns.netns, iface),
    }
}

/// Text inside a double-quoted DOT string.
pub(super) fn quoted(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Text inside a Graphviz HTML-like label.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
