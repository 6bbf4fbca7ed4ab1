//! `pkttrace topology`: the host's wiring as grouped tables, as JSON and
//! as a Graphviz picture, all three from one [`Report`].

pub mod dot;
pub mod journey;
pub mod table;

use crate::enrich::report::Report;

/// Lets Graphviz lay a picture out and write it as SVG.
pub fn write_svg(dot: &str, path: &std::path::Path) -> anyhow::Result<()> {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };

    use anyhow::{Context, bail};

    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .arg("-o")
        .arg(path)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run Graphviz's `dot` for --svg (apt-get install graphviz)")?;
    child
        .stdin
        .take()
        .context("dot has no stdin")?
        .write_all(dot.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "Graphviz's dot could not write {}: {}",
            path.display(),
            stderr.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}

/// The version of `topology --json`'s document; it changes when a field
/// changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 2;

/// The report as one pretty-printed JSON document, with its schema version
/// (docs/json.md, `pkttrace schema topology`).
pub fn json(report: &Report) -> String {
    #[derive(serde::Serialize)]
    struct Document<'a> {
        schema_version: u32,
        #[serde(flatten)]
        report: &'a Report,
    }
    serde_json::to_string_pretty(&Document {
        schema_version: SCHEMA_VERSION,
        report,
    })
    .expect("a report always serializes")
}

#[cfg(test)]
mod tests;
