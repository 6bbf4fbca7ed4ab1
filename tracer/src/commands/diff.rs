//! `pkttrace diff A.rec B.rec`: two recordings of the same flow, told again
//! and lined up hop by hop; the first place each exchange parts is told
//! with both sides and why. Exit code 0: they tell the same; 1: they part.

use std::{io::Write, path::Path, process::ExitCode};

use anyhow::{Context, Result};

use crate::{
    cli::DiffArgs,
    explain::compare::{self, Telling},
    render,
    session::{recording::Recording, teller},
};

pub fn run(args: DiffArgs) -> Result<ExitCode> {
    let (label_a, a) = told(&args.a)?;
    let (label_b, b) = told(&args.b)?;
    let compared = compare::compare(&a, &b);
    let text = if args.json {
        render::json::compared(&compared) + "\n"
    } else {
        render::diff::render(
            &compared,
            &label_a,
            &label_b,
            render::terminal::Palette::for_stdout(),
        )
    };
    let mut out = anstream::stdout();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::from(if compared.same { 0 } else { 1 }))
}

/// A recording's stories, and how its run is named ("server-1 → 198.51.100.1").
fn told(path: &Path) -> Result<(String, Telling)> {
    let (header, retold) = Recording::read(path)?
        .retold()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let port = header
        .destination
        .port
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let label = format!(
        "{} ({} → {}{port})",
        path.display(),
        header.source,
        header.destination.address
    );
    Ok((label, teller::collect(&header, &retold)))
}
