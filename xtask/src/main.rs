//! Project tasks, run as `cargo xtask <task>`: machine setup, the demo lab,
//! the demo itself and the full test run used by CI.

mod bench;
mod cmd;
mod lab;
mod setup;
mod testrun;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::cmd::{cmd, describe, run};

#[derive(Parser)]
#[command(about = "pkttrace project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install and start everything a fresh machine needs (idempotent)
    Setup,
    /// Create or remove the demo lab (upstream netns + container server-1)
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Build the tracer, bring the lab up, follow server-1 -> upstream, tear down
    Demo,
    /// Unit tests, tracer build, integration tests (what CI runs)
    Test,
    /// Measure what tracing costs traffic (iperf3) and the host (CPU, memory)
    Bench,
}

#[derive(Subcommand)]
enum LabAction {
    Up,
    Down,
}

fn main() -> Result<ExitCode> {
    match Cli::parse().task {
        Task::Setup => setup::setup().map(|()| ExitCode::SUCCESS),
        Task::Lab {
            action: LabAction::Up,
        } => lab::up().map(|()| ExitCode::SUCCESS),
        Task::Lab {
            action: LabAction::Down,
        } => lab::down().map(|()| ExitCode::SUCCESS),
        Task::Demo => demo(),
        Task::Test => testrun::test(),
        Task::Bench => bench::bench(),
    }
}

fn demo() -> Result<ExitCode> {
    setup::setup()?;
    run(&mut cargo(["build", "--release", "-p", "tracer"]))?;
    let traced = lab::up().and_then(|()| {
        let mut follow = cmd(
            target_dir()?.join("release/pkttrace"),
            ["follow", "server-1", "198.51.100.1", "--probe", "icmp"],
        );
        println!("demo: {}", describe(&follow));
        follow
            .status()
            .with_context(|| format!("cannot start `{}`", describe(&follow)))
    });
    // Tear down also when the lab or the tracer failed, then report the first error.
    let down = lab::down();
    let status = traced?;
    down?;
    // A tracer killed by a signal has no code: report that as a failure.
    Ok(status
        .code()
        .map_or(ExitCode::FAILURE, |code| ExitCode::from(code as u8)))
}

/// A `cargo` command run from the workspace root, whatever the caller's folder.
fn cargo<const N: usize>(args: [&str; N]) -> std::process::Command {
    let mut command = cmd("cargo", args);
    command.current_dir(workspace_root());
    command
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// Where cargo puts binaries: `CARGO_TARGET_DIR` (relative to the folder xtask
/// was started from, as cargo reads it) or `<workspace>/target`.
fn target_dir() -> Result<PathBuf> {
    Ok(match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::env::current_dir()
            .context("cannot read the current folder")?
            .join(dir),
        None => workspace_root().join("target"),
    })
}
