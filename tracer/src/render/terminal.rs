//! The story as text for a terminal or a projector: a header line per
//! journey, two lines per hop (where, then what happened), the outcome.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};

use crate::explain::{
    Details, Direction, Hop, NatKind, NoReply, Outcome, Story, Verdict,
    paths::{Path, PathStep, Summary},
    verdict::ActionKind,
};

/// The styles a story is drawn with: colours for a terminal, none at all
/// for a pipe or a file (cheaper than writing colours and stripping them
/// again, which a followed stream's thousands of stories a second felt).
#[derive(Clone, Copy)]
pub struct Palette {
    pub(super) header: Style,
    pub(super) dim: Style,
    pub(super) drop: Style,
    nat: Style,
    good: Style,
    kind: Style,
}

impl Palette {
    pub const COLOR: Self = Self {
        header: Style::new().bold(),
        dim: Style::new().dimmed(),
        drop: AnsiColor::Red.on_default().bold(),
        nat: AnsiColor::Yellow.on_default().bold(),
        good: AnsiColor::Green.on_default().bold(),
        kind: AnsiColor::Cyan.on_default().bold(),
    };
    pub const PLAIN: Self = Self {
        header: Style::new(),
        dim: Style::new(),
        drop: Style::new(),
        nat: Style::new(),
        good: Style::new(),
        kind: Style::new(),
    };

    /// What standard output takes, as `anstream` decides it (a terminal,
    /// NO_COLOR, CLICOLOR_FORCE).
    pub fn for_stdout() -> Self {
        match anstream::AutoStream::choice(&std::io::stdout()) {
            anstream::ColorChoice::Never => Self::PLAIN,
            _ => Self::COLOR,
        }
    }
}

/// The whole story, drawn with `palette`.
pub fn render(story: &Story, palette: Palette) -> String {
    // Room for a typical story: growing it was a good part of a followed
    // stream's allocations.
    let mut out = String::with_capacity(2048);
    write_story(&mut out, story, palette, |_| {});
    out
}

/// The story in the steps `--step` shows one at a time: the header, each
/// hop, then how it ended.
pub fn render_steps(story: &Story, palette: Palette) -> Vec<String> {
    let mut steps = Vec::new();
    let mut out = String::new();
    write_story(&mut out, story, palette, |step| {
        steps.push(std::mem::take(step))
    });
    steps.push(out);
    steps
}

/// Writes the story into `out`, calling `step_done` after the header and
/// after each hop.
fn write_story(
    out: &mut String,
    story: &Story,
    palette: Palette,
    mut step_done: impl FnMut(&mut String),
) {
    let Palette {
        header,
        dim,
        drop,
        good,
        ..
    } = palette;
    let direction = match (
        story.direction,
        story.reply_to,
        story.second_leg_of,
        story.retransmission_of,
    ) {
        (Direction::Request, _, Some(first_leg), _) => {
            format!("second leg of #{first_leg} (the proxy's own connection)")
        }
        (Direction::Request, _, None, Some(first)) => {
            format!("request, sent again (#{first} got no answer in time)")
        }
        (Direction::Request, _, None, None) if let Some(first) = story.same_flow_as => {
            format!("request, same ports as #{first}, which has no answer yet")
        }
        (Direction::Request, _, None, None) => "request".to_string(),
        (Direction::Reply, Some(id), _, _) => format!("reply to #{id}"),
        (Direction::Reply, None, _, _) => "reply".to_string(),
    };
    let _ = writeln!(
        out,
        "{header}#{} {direction} · {} · {}{header:#}",
        story.journey, story.what, story.tuple
    );
    if let Some(note) = &story.note {
        let _ = writeln!(out, "   {dim}note:{dim:#} {note}");
    }
    step_done(out);
    for (number, hop) in story.hops.iter().enumerate() {
        render_hop(out, number + 1, hop, "", palette);
        step_done(out);
    }
    render_outcome(out, &story.outcome, "", palette);
    if let Some(answer) = &story.answer {
        let style = if answer.succeeded() { good } else { drop };
        let _ = writeln!(out, "   {style}↩ {}{style:#}", answer.text);
    }
    if story.events_lost {
        let _ = writeln!(
            out,
            "   {drop}! the kernel dropped events while this packet was traced: hops may be missing{drop:#}"
        );
    }
    if let Some(verdict) = &story.verdict {
        render_verdict(out, verdict, palette);
    }
}

/// What failed, why, and what to do: a block under the story.
fn render_verdict(out: &mut String, verdict: &Verdict, palette: Palette) {
    let Palette { header, dim, .. } = palette;
    let _ = writeln!(out, "   {header}⚑ verdict:{header:#} {}", verdict.what);
    let _ = writeln!(out, "     {dim}why:{dim:#} {}", verdict.why);
    if let Some(action) = &verdict.action {
        let kind = match action.kind {
            ActionKind::Fix => "  fix:",
            ActionKind::Check => "check:",
        };
        let _ = writeln!(out, "   {header}{kind}{header:#} {}", action.command);
        if let Some(or) = &action.or {
            let _ = writeln!(out, "      {dim}or:{dim:#} {or}");
        }
    }
}

/// A request that got no reply: one line under the stories.
pub fn no_reply(no_reply: &NoReply, palette: Palette) -> String {
    let Palette { header, drop, .. } = palette;
    let mut out = format!(
        "{header}#{} no reply{header:#}\n   {drop}✗ {}{drop:#}\n",
        no_reply.request, no_reply.text
    );
    if no_reply.events_lost {
        let _ = writeln!(
            out,
            "   {drop}! the kernel dropped events while pkttrace waited: the reply may have come unseen{drop:#}"
        );
    }
    render_verdict(&mut out, &no_reply.verdict, palette);
    out
}

/// The hops, numbered, two lines each, every line after `indent`.
pub fn render_hops(out: &mut String, hops: &[Hop], indent: &str, palette: Palette) {
    for (number, hop) in hops.iter().enumerate() {
        render_hop(out, number + 1, hop, indent, palette);
    }
}

/// How a journey ended: `⇒ …`.
pub fn render_outcome(out: &mut String, outcome: &Outcome, indent: &str, palette: Palette) {
    let style = if outcome.is_drop() {
        palette.drop
    } else {
        palette.good
    };
    let _ = writeln!(out, "{indent}   {style}⇒ {}{style:#}", outcome.text);
}

fn render_hop(out: &mut String, number: usize, hop: &Hop, indent: &str, palette: Palette) {
    let Palette { dim, drop, .. } = palette;
    let kind = hop.details.kind();
    let style = match hop.details {
        Details::Drop { .. } => drop,
        Details::Nat { .. } => palette.nat,
        _ => palette.kind,
    };
    let place = match &hop.device {
        Some(device) => format!("{} · {device}", hop.namespace),
        None => hop.namespace.clone(),
    };
    let _ = writeln!(
        out,
        "{indent}{number:>4}  {style}{kind:<9}{style:#} {dim}{:>7} µs{dim:#}  {place} {dim}(netns {}){dim:#}",
        format!("+{}", hop.at_us),
        hop.netns
    );
    let _ = writeln!(out, "{indent}{:>17}{}", "", hop.text);
    if let Details::Drop { hint, .. } = &hop.details {
        let _ = writeln!(out, "{indent}{:>17}{drop}hint:{drop:#} {hint}", "");
    }
}

/// `follow --summary`: one block per path, the most frequent first, a path
/// or a drop not seen before marked NEW.
pub fn summary(summary: &Summary, palette: Palette) -> String {
    let Palette {
        header, dim, drop, ..
    } = palette;
    let mut out = String::new();
    let what = if summary.whole_run {
        "the whole run"
    } else {
        "interval"
    };
    let packets = |direction| {
        summary
            .paths
            .iter()
            .filter(|p| p.path.direction == direction)
            .map(|p| p.packets)
            .sum::<u64>()
    };
    let _ = writeln!(
        out,
        "{header}── {what} {:.1}–{:.1} s: {} requests, {} replies{header:#}",
        summary.from_s,
        summary.to_s,
        packets(Direction::Request),
        packets(Direction::Reply)
    );
    for count in &summary.paths {
        let new = if count.new { "NEW " } else { "" };
        let style = if count.path.dropped() { drop } else { header };
        let _ = writeln!(
            out,
            "  {style}{new}{} {:.1}% · {} packet{} ⇒ {}{style:#}  {dim}p50 {} µs, p99 {} µs{dim:#}",
            match count.path.direction {
                Direction::Request => "request",
                Direction::Reply => "reply",
            },
            count.share * 100.0,
            count.packets,
            if count.packets == 1 { "" } else { "s" },
            count.path.ending.replace('_', " "),
            count.p50_us,
            count.p99_us,
        );
        let _ = writeln!(out, "    {}", path_words(&count.path));
    }
    if summary.other_paths > 0 {
        let _ = writeln!(
            out,
            "  {} packets on further paths (only {} are told apart)",
            summary.other_paths,
            crate::explain::paths::MAX_PATHS
        );
    }
    if summary.unanswered > 0 {
        let _ = writeln!(
            out,
            "  {drop}{} requests got no reply{drop:#}",
            summary.unanswered
        );
    }
    if summary.events_lost > 0 {
        let _ = writeln!(
            out,
            "  {drop}the kernel dropped {} events: the counts may be short{drop:#}",
            summary.events_lost
        );
    }
    out
}

/// A path in a line: each hop as `namespace device kind (what)`.
fn path_words(path: &Path) -> String {
    let words: Vec<String> = path
        .hops
        .iter()
        .map(|hop| {
            let place = match &hop.device {
                Some(device) => format!("{} {device}", hop.namespace),
                None => hop.namespace.clone(),
            };
            let what = match &hop.step {
                PathStep::Netfilter { hook } => format!("netfilter {hook}"),
                PathStep::Nat { hook, nat } => {
                    let nat = match nat {
                        NatKind::Source => "SNAT",
                        NatKind::Destination => "DNAT",
                        NatKind::Reverse => "reverse NAT",
                    };
                    format!("{nat} in {hook}")
                }
                PathStep::Deliver { process } => format!("delivered to {process}"),
                PathStep::Drop { reason, rule } => match rule {
                    Some(rule) => format!("dropped ({reason}) by {rule}"),
                    None => format!("dropped ({reason})"),
                },
                PathStep::Send => "sent".into(),
                PathStep::Veth => "veth".into(),
                PathStep::Bridge => "bridge".into(),
                PathStep::Route => "route".into(),
                PathStep::Forward => "forward".into(),
                PathStep::Xmit => "xmit".into(),
                PathStep::Encap => "VXLAN encap".into(),
                PathStep::Decap => "VXLAN decap".into(),
                PathStep::Receive => "receive".into(),
                PathStep::Loop => "loop".into(),
            };
            format!("{place}: {what}")
        })
        .collect();
    words.join(" → ")
}
