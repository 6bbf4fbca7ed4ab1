//! `pkttrace topology`: the host's wiring as grouped tables, as JSON and
//! as a Graphviz picture, all three from one [`Report`].

pub mod dot;
pub mod journey;
mod report;
pub mod table;

pub use report::Report;

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

/// The report as one pretty-printed JSON document; the schema is in the README.
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a report always serializes")
}

#[cfg(test)]
mod tests;
