//! `cargo xtask test`: the whole check CI runs. Every step runs even after an
//! earlier one failed (except the integration tests, which need a fresh
//! tracer binary), and the run closes with one summed-up result line.

use std::io::{self, Read, Write};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};

use crate::cmd::describe;
use crate::{cargo, setup, target_dir};

pub fn test() -> Result<ExitCode> {
    setup::setup()?;
    let mut totals = Totals::default();
    let mut failed = Vec::new();

    // tracer-ebpf builds only for the bpf target, and integration tests come later.
    // --no-fail-fast: one failing test binary must not hide the others' results.
    let mut unit = cargo([
        "test",
        "--workspace",
        "--no-fail-fast",
        "--exclude",
        "integration-tests",
        "--exclude",
        "tracer-ebpf",
    ]);
    if !run_counting(&mut unit, &mut totals)? {
        failed.push("unit tests");
    }

    // Clippy is part of the gate: the host crates, then the eBPF crate for its target.
    let lints = [
        cargo([
            "clippy",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        cargo([
            "+nightly",
            "clippy",
            "-p",
            "tracer-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]),
    ];
    for mut lint in lints {
        println!("xtask test: {}", describe(&lint));
        if let Err(err) = crate::cmd::run(&mut lint) {
            eprintln!("xtask test: {err:#}");
            failed.push("clippy");
        }
    }

    // The tracer's own tests that need root and a real lab are marked #[ignore].
    let mut privileged = cargo([
        "test",
        "-p",
        "tracer",
        "--no-fail-fast",
        "--",
        "--ignored",
        "--test-threads=1",
    ]);
    if !run_counting(&mut privileged, &mut totals)? {
        failed.push("privileged tracer tests");
    }

    let mut build = cargo(["build", "-p", "tracer"]);
    println!("xtask test: {}", describe(&build));
    let built = crate::cmd::run(&mut build);
    if let Err(err) = &built {
        eprintln!("xtask test: {err:#}");
        // Testing an older binary left in target/ would prove nothing.
        failed.push("tracer build (integration tests skipped)");
    } else {
        let bin = target_dir()?.join("debug/pkttrace");
        let mut integration = cargo([
            "test",
            "-p",
            "integration-tests",
            "--no-fail-fast",
            "--",
            "--test-threads=1",
        ]);
        integration.env("PKTTRACE_BIN", &bin);
        if !run_counting(&mut integration, &mut totals)? {
            failed.push("integration tests");
        }
    }

    if failed.is_empty() {
        println!("xtask test: all steps passed");
    } else {
        println!("xtask test: FAILED: {}", failed.join(", "));
    }
    // One line in the form CI reads, summing every test binary's result.
    println!(
        "total: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Passes the command's stdout through as it comes and adds up the
/// `test result:` lines of cargo test; true when the command succeeded.
fn run_counting(command: &mut Command, totals: &mut Totals) -> Result<bool> {
    println!("xtask test: {}", describe(command));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", describe(command)))?;
    let mut pipe = child.stdout.take().context("no stdout pipe")?;
    let mut stdout = io::stdout();
    let mut chunk = [0u8; 8192];
    let mut line = Vec::new();
    loop {
        let n = pipe.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        // Forward raw chunks: "test x ... " shows before its verdict arrives.
        stdout.write_all(&chunk[..n])?;
        stdout.flush()?;
        for &byte in &chunk[..n] {
            if byte == b'\n' {
                totals.add(&String::from_utf8_lossy(&line));
                line.clear();
            } else {
                line.push(byte);
            }
        }
    }
    Ok(child.wait()?.success())
}

#[derive(Default, Debug, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Reads `test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        let counts = rest.split_once(". ").map_or(rest, |(_, counts)| counts);
        for part in counts.split("; ") {
            let Some((number, word)) = part.split_once(' ') else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match word {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_cargo_test_result_lines() {
        let mut totals = Totals::default();
        totals.add("test result: ok. 3 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        totals.add("test result: FAILED. 1 passed; 4 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.50s");
        totals.add("test lab::pings ... ok");
        assert_eq!(
            totals,
            Totals {
                passed: 4,
                failed: 4,
                ignored: 2
            }
        );
    }
}
