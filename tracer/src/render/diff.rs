//! `pkttrace diff` as text: per exchange, where the two recordings part,
//! the hop of each there, and why.

use std::fmt::Write;

use super::terminal::Palette;
use crate::explain::{
    Direction, Hop,
    compare::{Compared, Parting},
    verdict::ActionKind,
};

pub fn render(compared: &Compared, label_a: &str, label_b: &str, palette: Palette) -> String {
    let Palette { header, .. } = palette;
    let mut out = String::new();
    let _ = writeln!(out, "{header}A{header:#} {label_a}");
    let _ = writeln!(out, "{header}B{header:#} {label_b}");
    for (number, exchange) in compared.exchanges.iter().enumerate() {
        let numbers = match (exchange.a, exchange.b) {
            (Some(a), Some(b)) => format!("A #{a}, B #{b}"),
            (Some(a), None) => format!("A #{a}"),
            (None, Some(b)) => format!("B #{b}"),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "\n{header}exchange {} ({numbers}){header:#}",
            number + 1
        );
        match &exchange.parting {
            None => {
                let _ = writeln!(out, "   the same hops and the same ending in both");
            }
            Some(parting) => render_parting(&mut out, parting, palette),
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        if compared.same {
            "A and B tell the same path."
        } else {
            "A and B part: see above."
        }
    );
    out
}

fn render_parting(out: &mut String, parting: &Parting, palette: Palette) {
    let Palette { drop, dim, .. } = palette;
    let journey = match parting.journey {
        Direction::Request => "request",
        Direction::Reply => "reply",
    };
    let hop_number = parting.same_hops + 1;
    let _ = writeln!(
        out,
        "   the {journey}s go the same way for {} hop{}, then part at hop {hop_number}:",
        parting.same_hops,
        if parting.same_hops == 1 { "" } else { "s" }
    );
    for (side, hop, outcome) in [
        ("A", &parting.a, &parting.a_outcome),
        ("B", &parting.b, &parting.b_outcome),
    ] {
        match (hop, outcome) {
            (Some(hop), _) => {
                let _ = writeln!(out, "   {side}: {} {}", place(hop), hop.details.kind());
                let _ = writeln!(out, "      {}", hop.text);
            }
            (None, Some(outcome)) => {
                let _ = writeln!(out, "   {side}: {dim}no such hop:{dim:#} {outcome}");
            }
            (None, None) => {
                let _ = writeln!(out, "   {side}: {dim}no such hop{dim:#}");
            }
        }
    }
    let _ = writeln!(out, "   {drop}why:{drop:#} {}", parting.why);
    if let Some(action) = &parting.action {
        let kind = match action.kind {
            ActionKind::Fix => "fix",
            ActionKind::Check => "check",
        };
        let _ = writeln!(out, "   {kind}: {}", action.command);
    }
}

fn place(hop: &Hop) -> String {
    match &hop.device {
        Some(device) => format!("{} · {device}", hop.namespace),
        None => hop.namespace.clone(),
    }
}
