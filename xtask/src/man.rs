//! `cargo xtask man`: pkttrace's man pages, made by clap_mangen from the very
//! definitions the binary parses its command line with.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::pkttrace_cli;

/// Writes `pkttrace.1` and one page per subcommand (`pkttrace-follow.1`, ...)
/// into `dir` and returns their paths.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let command = pkttrace_cli::Cli::command();
    clap_mangen::generate_to(command.clone(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    let mut pages = vec![dir.join("pkttrace.1")];
    pages.extend(
        command
            .get_subcommands()
            .map(|sub| dir.join(format!("pkttrace-{}.1", sub.get_name()))),
    );
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::write_pages;

    #[test]
    fn every_subcommand_gets_a_page_with_its_options() {
        let dir = std::env::temp_dir().join(format!("pkttrace-man-{}", std::process::id()));
        let pages = write_pages(&dir).unwrap();
        let follow = std::fs::read_to_string(dir.join("pkttrace-follow.1")).unwrap();
        let dns = std::fs::read_to_string(dir.join("pkttrace-dns.1")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(pages.len() >= 5, "{pages:?}");
        assert!(follow.starts_with(".ie") || follow.contains(".TH"), "roff");
        assert!(follow.contains("probe"));
        assert!(dns.contains("answer"));
    }
}
