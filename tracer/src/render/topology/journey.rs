//! `follow --svg FILE`: the journeys drawn on the topology picture. Each
//! place a packet was (a device, a bridge port, a namespace's IP stack) is
//! joined to the next by an arrow in the journey's colour, labelled with the
//! numbers of the hops there; a NAT is a note with the tuple before and
//! after, a drop a red ✗ with its reason. Namespaces no drawn journey
//! touched stay, greyed.

use std::collections::BTreeSet;

use super::dot::{self, Overlay};
use crate::enrich::report::{NamespaceView, Report};
use crate::explain::{Details, Direction, Hop, Story};

/// Colours told apart also by the colour-blind, and on a projector.
pub const REQUEST_COLOUR: &str = "#1f5fbf";
pub const REPLY_COLOUR: &str = "#e07b00";
pub const DROP_COLOUR: &str = "#d62728";

/// The DOT text of `report` with `stories` drawn on it.
pub fn render(report: &Report, stories: &[Story]) -> String {
    let mut overlay = Overlay {
        title: stories
            .first()
            .map(|s| format!("pkttrace follow: {} {}", s.what, s.tuple)),
        ..Overlay::default()
    };
    let mut stacks = BTreeSet::new();
    let mut legend = Vec::new();
    for story in stories {
        draw(report, story, &mut overlay, &mut stacks, &mut legend);
    }
    for netns in stacks {
        overlay.inside.push((
            netns,
            format!(
                "{} [shape=box, style=\"rounded,dashed\", label=\"IP stack\\nrouting · netfilter · sockets\"];",
                stack_id(netns)
            ),
        ));
    }
    overlay.lines.push(format!(
        "subgraph cluster_legend {{ label=\"journeys\"; fontsize=18; style=rounded; {} }}",
        legend.join(" ")
    ));
    dot::picture(report, &overlay)
}

/// Where a hop happened, as a node (or a bridge's port) of the picture.
#[derive(Clone, PartialEq, Eq)]
enum Place {
    Node(String),
    Stack(u32),
}

impl Place {
    fn id(&self) -> String {
        match self {
            Place::Node(id) => id.clone(),
            Place::Stack(netns) => stack_id(*netns),
        }
    }
}

fn stack_id(netns: u32) -> String {
    format!("stack_{netns}")
}

fn colour(story: &Story) -> &'static str {
    match story.direction {
        Direction::Request => REQUEST_COLOUR,
        Direction::Reply => REPLY_COLOUR,
    }
}

fn role(story: &Story) -> String {
    match (story.reply_to, story.second_leg_of, story.retransmission_of) {
        (Some(to), _, _) => format!("reply to #{to}"),
        (_, Some(of), _) => format!("second leg of #{of}"),
        (_, _, Some(of)) => format!("retransmission of #{of}"),
        _ => "request".into(),
    }
}

fn draw(
    report: &Report,
    story: &Story,
    overlay: &mut Overlay,
    stacks: &mut BTreeSet<u32>,
    legend: &mut Vec<String>,
) {
    let colour = colour(story);
    let style = if story.second_leg_of.is_some() || story.retransmission_of.is_some() {
        "dashed"
    } else {
        "solid"
    };
    let journey = story.journey;
    // The places in order, each with the numbers of the hops there.
    let mut visits: Vec<(Place, Vec<usize>)> = Vec::new();
    for (index, hop) in story.hops.iter().enumerate() {
        let number = index + 1;
        let drop = matches!(hop.details, Details::Drop { .. });
        let place = if drop {
            // The ✗ itself is where the journey ends.
            dot::drawn_namespace(report, hop.netns).map(|_| Place::Node(format!("j{journey}_drop")))
        } else {
            place(report, hop)
        };
        let Some(place) = place else {
            // A namespace the picture has no box for: said with the hop before.
            if let Some((_, numbers)) = visits.last_mut() {
                numbers.push(number);
            }
            continue;
        };
        for netns in [Some(hop.netns), peer_netns(hop)].into_iter().flatten() {
            if !overlay.touched.contains(&netns) {
                overlay.touched.push(netns);
            }
        }
        if let Place::Stack(netns) = place {
            stacks.insert(netns);
        }
        // A veth hop is told where it came out; the arrow passes first through
        // the end it went in by (after a routing decision: the device the
        // namespace sent it out of), or the picture has it skip that device.
        if let Some(went_in_by) = veth_entry(report, hop)
            && visits.last().is_none_or(|(last, _)| *last != went_in_by)
        {
            visits.push((went_in_by, Vec::new()));
        }
        match visits.last_mut() {
            Some((last, numbers)) if *last == place => numbers.push(number),
            _ => visits.push((place.clone(), vec![number])),
        }
        if let Details::Nat {
            hook,
            nat,
            before,
            after,
            ..
        } = &hop.details
        {
            overlay.inside.push((
                hop.netns,
                format!(
                    "j{journey}_nat{number} [shape=note, color=\"{colour}\", fontcolor=\"{colour}\", fontsize=14, label=\"{}\"];",
                    dot::quoted(&format!("{number} {nat} in {hook}\n{before}\n⇒ {after}"))
                ),
            ));
            overlay.lines.push(format!(
                "{} -- j{journey}_nat{number} [style=dotted, color=\"{colour}\", constraint=false];",
                place.id()
            ));
        }
        if let Details::Drop {
            reason, hook, rule, ..
        } = &hop.details
        {
            let at = hook.map(|h| format!(" in {h}")).unwrap_or_default();
            let by = rule
                .as_ref()
                .map(|r| format!("\n{} {}: {}", r.table, r.chain, r.text))
                .unwrap_or_default();
            overlay.inside.push((
                hop.netns,
                format!(
                    "j{journey}_drop [shape=box, style=rounded, color=\"{DROP_COLOUR}\", fontcolor=\"{DROP_COLOUR}\", fontsize=18, label=\"{}\"];",
                    dot::quoted(&format!("✗ dropped{at}: {reason}{by}"))
                ),
            ));
        }
    }
    let (Some((first, first_numbers)), Some(first_hop)) = (visits.first(), story.hops.first())
    else {
        return;
    };
    // Where the journey starts, in the box of the namespace it starts in.
    let start = format!("j{journey}_start");
    overlay.inside.push((
        first_hop.netns,
        format!(
            "{start} [shape=box, style=\"rounded,filled\", fillcolor=\"{colour}\", fontcolor=white, fontsize=14, label=\"#{journey} {}\"];",
            dot::quoted(&role(story))
        ),
    ));
    overlay
        .lines
        .push(arrow(&start, &first.id(), first_numbers, colour, style));
    for pair in visits.windows(2) {
        let ((from, _), (to, numbers)) = (&pair[0], &pair[1]);
        overlay
            .lines
            .push(arrow(&from.id(), &to.id(), numbers, colour, style));
    }
    legend.push(format!(
        "legend_{journey} [shape=plaintext, fontcolor=\"{colour}\", fontsize=14, label=\"{}\"];",
        dot::quoted(&format!(
            "━━ #{journey} {} · {} · {}",
            role(story),
            story.what,
            story.tuple
        ))
    ));
}

fn arrow(from: &str, to: &str, numbers: &[usize], colour: &str, style: &str) -> String {
    let label: Vec<String> = numbers.iter().map(usize::to_string).collect();
    format!(
        "{from} -- {to} [dir=forward, color=\"{colour}\", fontcolor=\"{colour}\", fontsize=16, penwidth=3, style={style}, label=\" {} \"];",
        label.join("·")
    )
}

/// The end of a veth pair a veth hop went in by, when the picture has it.
fn veth_entry(report: &Report, hop: &Hop) -> Option<Place> {
    let Details::Veth {
        peer_device,
        peer_netns,
        ..
    } = &hop.details
    else {
        return None;
    };
    node(dot::drawn_namespace(report, *peer_netns)?, peer_device)
}

fn peer_netns(hop: &Hop) -> Option<u32> {
    match &hop.details {
        Details::Veth { peer_netns, .. } => Some(*peer_netns),
        _ => None,
    }
}

/// The node a hop is drawn at: its device (a bridge hop: the port the frame
/// came in by or went out of) when the picture has it, otherwise the IP
/// stack of its namespace.
fn place(report: &Report, hop: &Hop) -> Option<Place> {
    let ns = dot::drawn_namespace(report, hop.netns)?;
    let device = match &hop.details {
        Details::Bridge { port, .. } => Some(port.as_str()),
        Details::Send { .. }
        | Details::Veth { .. }
        | Details::Xmit
        | Details::Encap { .. }
        | Details::Decap { .. }
        | Details::Drop { .. } => hop.device.as_deref(),
        // Taken in by the kernel: its IP stack.
        Details::Receive
        | Details::Route(_)
        | Details::Forward { .. }
        | Details::Netfilter { .. }
        | Details::Nat { .. }
        | Details::Deliver { .. }
        | Details::Loop { .. } => None,
    };
    Some(
        device
            .and_then(|device| node(ns, device))
            .unwrap_or(Place::Stack(ns.netns)),
    )
}

fn node(ns: &NamespaceView, device: &str) -> Option<Place> {
    let iface = ns
        .interfaces
        .iter()
        .find(|i| i.name == device && dot::drawn(i))?;
    Some(Place::Node(dot::endpoint_of(ns, iface)))
}
