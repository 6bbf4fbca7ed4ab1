//! The story as text for a terminal or a projector: a header line per
//! journey, two lines per hop (where, then what happened), the outcome.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};

use crate::explain::{Details, Direction, Hop, NoReply, Outcome, Story};

const HEADER: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const DROP: Style = AnsiColor::Red.on_default().bold();
const NAT: Style = AnsiColor::Yellow.on_default().bold();
const GOOD: Style = AnsiColor::Green.on_default().bold();
const KIND: Style = AnsiColor::Cyan.on_default().bold();

/// Renders with ANSI styles; callers print through `anstream`, which strips
/// them when the output is not a terminal or NO_COLOR is set.
pub fn render(story: &Story) -> String {
    render_steps(story).concat()
}

/// The story in the steps `--step` shows one at a time: the header, each
/// hop, then how it ended.
pub fn render_steps(story: &Story) -> Vec<String> {
    let mut steps = Vec::new();
    let mut out = String::new();
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
        "{HEADER}#{} {direction} · {} · {}{HEADER:#}",
        story.journey, story.what, story.tuple
    );
    if let Some(note) = &story.note {
        let _ = writeln!(out, "   {DIM}note:{DIM:#} {note}");
    }
    steps.push(std::mem::take(&mut out));
    for (number, hop) in story.hops.iter().enumerate() {
        render_hop(&mut out, number + 1, hop, "");
        steps.push(std::mem::take(&mut out));
    }
    render_outcome(&mut out, &story.outcome, "");
    if let Some(answer) = &story.answer {
        let style = if answer.succeeded() { GOOD } else { DROP };
        let _ = writeln!(out, "   {style}↩ {}{style:#}", answer.text);
    }
    if story.events_lost {
        let _ = writeln!(
            out,
            "   {DROP}! the kernel dropped events while this packet was traced: hops may be missing{DROP:#}"
        );
    }
    steps.push(out);
    steps
}

/// A request that got no reply: one line under the stories.
pub fn no_reply(no_reply: &NoReply) -> String {
    let mut out = format!(
        "{HEADER}#{} no reply{HEADER:#}\n   {DROP}✗ {}{DROP:#}\n",
        no_reply.request, no_reply.text
    );
    if no_reply.events_lost {
        let _ = writeln!(
            out,
            "   {DROP}! the kernel dropped events while pkttrace waited: the reply may have come unseen{DROP:#}"
        );
    }
    out
}

/// The hops, numbered, two lines each, every line after `indent`.
pub fn render_hops(out: &mut String, hops: &[Hop], indent: &str) {
    for (number, hop) in hops.iter().enumerate() {
        render_hop(out, number + 1, hop, indent);
    }
}

/// How a journey ended: `⇒ …`.
pub fn render_outcome(out: &mut String, outcome: &Outcome, indent: &str) {
    let style = if outcome.is_drop() { DROP } else { GOOD };
    let _ = writeln!(out, "{indent}   {style}⇒ {}{style:#}", outcome.text);
}

fn render_hop(out: &mut String, number: usize, hop: &Hop, indent: &str) {
    let kind = hop.details.kind();
    let style = match hop.details {
        Details::Drop { .. } => DROP,
        Details::Nat { .. } => NAT,
        _ => KIND,
    };
    let place = match &hop.device {
        Some(device) => format!("{} · {device}", hop.namespace),
        None => hop.namespace.clone(),
    };
    let _ = writeln!(
        out,
        "{indent}{number:>4}  {style}{kind:<9}{style:#} {DIM}{:>7} µs{DIM:#}  {place} {DIM}(netns {}){DIM:#}",
        format!("+{}", hop.at_us),
        hop.netns
    );
    let _ = writeln!(out, "{indent}{:>17}{}", "", hop.text);
    if let Details::Drop { hint, .. } = &hop.details {
        let _ = writeln!(out, "{indent}{:>17}{DROP}hint:{DROP:#} {hint}", "");
    }
}
