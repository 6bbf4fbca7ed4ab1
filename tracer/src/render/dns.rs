//! One DNS query as labelled lines: what was asked and by whom, how Docker's
//! embedded DNS took it, the paths through the host hop by hop (as `follow`
//! tells them: the query's to its server, dockerd's forwarded query to the
//! upstream, and their answers back), the answer. `--json` prints the same
//! `DnsStory` with serde.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};

use super::terminal::{Palette, render_hops, render_outcome};
use crate::explain::{
    Hop, Outcome,
    dns::{DnsStory, NatSeen, QueryOutcome},
};

const HEADER: Style = Style::new().bold();
const LABEL: Style = AnsiColor::Cyan.on_default().bold();
const NAT: Style = AnsiColor::Yellow.on_default().bold();
const GOOD: Style = AnsiColor::Green.on_default().bold();
const BAD: Style = AnsiColor::Red.on_default().bold();
const DIM: Style = Style::new().dimmed();
/// Hop numbers line up under the labelled lines' text.
const JOURNEY_INDENT: &str = "          ";

pub fn render(story: &DnsStory) -> String {
    let mut out = String::new();
    let result = match (&story.rcode, story.latency_ms, story.waited_ms) {
        (Some(rcode), Some(ms), _) => {
            let style = if rcode == "NOERROR" { GOOD } else { BAD };
            format!("{style}{rcode}{style:#} in {}", millis(ms))
        }
        (_, _, Some(waited)) if story.outcome == QueryOutcome::Timeout => {
            format!("{BAD}no answer{BAD:#} (timed out after {})", millis(waited))
        }
        (_, _, Some(waited)) => format!(
            "{BAD}no answer yet{BAD:#} when pkttrace stopped ({} after the query)",
            millis(waited)
        ),
        _ => format!("{BAD}no answer{BAD:#}"),
    };
    let _ = writeln!(
        out,
        "{HEADER}DNS {} {} from {}{HEADER:#}: {result}",
        story.question.record_type, story.question.name, story.container
    );
    let who = match &story.asked_by {
        Some(asker) => match asker.pid_in_container {
            Some(inner) => format!(
                "{} (pid {}; pid {inner} inside {})",
                asker.process, asker.pid, story.container
            ),
            None => format!("{} (pid {})", asker.process, asker.pid),
        },
        None => "a process pkttrace could not name".to_string(),
    };
    let retries = match story.retries {
        0 => String::new(),
        1 => ", sent twice".to_string(),
        n => format!(", sent {} times", n + 1),
    };
    line(
        &mut out,
        "asked by",
        &format!(
            "{who} over {}, to {} (resolv.conf: nameserver {}){retries}",
            story.transport.to_uppercase(),
            story.asked,
            story.resolv_conf.join(", ")
        ),
    );
    if let Some(note) = &story.note {
        line(&mut out, "note", note);
    }
    match &story.embedded {
        Some(embedded) => {
            if let Some(dnat) = &embedded.dnat {
                nat_line(&mut out, "DNAT", dnat, "");
            }
            let port = embedded
                .port
                .map(|p| format!("127.0.0.11:{p}"))
                .unwrap_or_else(|| "the embedded DNS's socket".into());
            let owner = match &embedded.socket_owner {
                Some(owner) => format!("{} (pid {})", owner.process, owner.pid),
                None => "a process pkttrace could not find".into(),
            };
            line(
                &mut out,
                "served by",
                &format!(
                    "{owner}: Docker's embedded DNS; its socket {port} lives in {}'s namespace",
                    story.container
                ),
            );
        }
        None => {
            line(
                &mut out,
                "path",
                &format!("{DIM}the query, to {}:{DIM:#}", story.served_at),
            );
            journey(&mut out, &story.query_hops, &story.query_outcome);
        }
    }
    for leg in &story.forwarded {
        let result = match (&leg.rcode, leg.latency_ms) {
            (Some(rcode), Some(ms)) => format!("{rcode} in {}", millis(ms)),
            _ => "no answer".to_string(),
        };
        let by = leg.sent_by.as_deref().unwrap_or("dockerd");
        let via = leg
            .device
            .as_ref()
            .map(|d| format!(" via {d}"))
            .unwrap_or_default();
        line(
            &mut out,
            "forwarded",
            &format!(
                "{by} asked {} from {}'s namespace ({}{via}): {result}{}",
                leg.server,
                leg.namespace,
                leg.source,
                records(&leg.answers)
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        );
        line(&mut out, "", &format!("{DIM}the forwarded query:{DIM:#}"));
        journey(&mut out, &leg.hops, &leg.outcome);
        if let Some(outcome) = &leg.answer_outcome {
            line(
                &mut out,
                "",
                &format!("{DIM}the upstream's answer, back to {by}:{DIM:#}"),
            );
            journey(&mut out, &leg.answer_hops, outcome);
        }
    }
    if let Some(embedded) = &story.embedded
        && let Some(reply) = &embedded.reply_nat
    {
        nat_line(
            &mut out,
            "reply NAT",
            reply,
            " (conntrack undoes the DNAT, so the answer comes from port 53)",
        );
    } else if story.embedded.is_none()
        && let Some(outcome) = &story.answer_outcome
    {
        line(&mut out, "back", &format!("{DIM}the answer:{DIM:#}"));
        journey(&mut out, &story.answer_hops, outcome);
    }
    if story.outcome == QueryOutcome::Answered {
        let answers = records(&story.answers).unwrap_or_else(|| {
            let why = match story.rcode.as_deref() {
                Some("NOERROR") => format!(
                    "the name exists but has no {} record",
                    story.question.record_type
                ),
                Some("NXDOMAIN") => "the name does not exist".into(),
                Some("SERVFAIL") => "the server could not get an answer".into(),
                Some("REFUSED") => "the server refused to answer".into(),
                _ => "none".into(),
            };
            format!("no records: {why}")
        });
        line(&mut out, "answer", &answers);
    }
    if story.events_lost {
        let _ = writeln!(
            out,
            "  {BAD}! the kernel dropped events while this query was traced: steps may be missing{BAD:#}"
        );
    }
    out
}

fn line(out: &mut String, label: &str, text: &str) {
    let _ = writeln!(out, "  {LABEL}{label:<10}{LABEL:#} {text}");
}

fn nat_line(out: &mut String, label: &str, nat: &NatSeen, why: &str) {
    line(
        out,
        label,
        &format!(
            "{NAT}{}{NAT:#} in {}'s namespace: {}  ⇒  {}{why}{}",
            nat.hook,
            nat.namespace,
            nat.before,
            nat.after,
            if nat.inferred {
                " (by Docker's rule; this kernel shows no netfilter hooks, so the rewrite itself is not seen)"
            } else {
                ""
            }
        ),
    );
    if let Some(rule) = &nat.rule {
        line(out, "", &format!("{DIM}rule: {rule}{DIM:#}"));
    }
}

fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn records(answers: &[crate::decode::dns::Answer]) -> Option<String> {
    (!answers.is_empty()).then(|| {
        answers
            .iter()
            .map(|a| format!("{} {} {} (TTL {})", a.name, a.record_type, a.data, a.ttl))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Under a label: one journey's hops and how it ended, as `follow` prints them.
fn journey(out: &mut String, hops: &[Hop], outcome: &Outcome) {
    // Printed through anstream, which strips the colours where they do not belong.
    render_hops(out, hops, JOURNEY_INDENT, Palette::COLOR);
    render_outcome(out, outcome, JOURNEY_INDENT, Palette::COLOR);
}
