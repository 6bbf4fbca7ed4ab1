//! Project tasks, run as `cargo xtask <task>`: machine setup, the demo lab,
//! the demo itself, the full test run used by CI, and the packages users install.

mod bench;
mod cmd;
mod dist;
mod hosts;
mod lab;
mod man;
mod setup;
mod testrun;

// The tracer package's build script compiles the eBPF programs: xtask
// includes the command line's source file (for man pages and completions)
// instead of depending on it.
#[allow(dead_code)]
#[path = "../../tracer/src/cli.rs"]
mod pkttrace_cli;

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
    /// Create or remove the demo lab (upstream netns, server-1, client-1 and web-1)
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Build the tracer, bring the lab up, run a demo, tear down
    Demo {
        /// follow: server-1 pings the upstream; dns: client-1 looks up web-1 and upstream.lab
        #[arg(value_enum, default_value = "follow")]
        demo: DemoKind,
    },
    /// Unit tests, tracer build, integration tests (what CI runs)
    Test,
    /// Measure what tracing costs traffic (iperf3) and the host (CPU, memory)
    Bench,
    /// Write pkttrace's man pages (default: target/man; `man -l target/man/pkttrace-follow.1`)
    Man {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Build the release binary and package it: target/dist/pkttrace_<version>_amd64.deb and a .tar.gz
    Dist,
    /// Build the Docker image pkttrace:<version> (and :latest) offline from this machine's files
    Image,
    /// Build, install and run the .deb and the image on the lab, then remove them (a step of `test`)
    CheckPackages,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DemoKind {
    Follow,
    Dns,
}

#[derive(Subcommand)]
enum LabAction {
    Up {
        /// 2: two Docker hosts in one Swarm with an overlay network, instead of the demo lab
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        hosts: u8,
        /// Also IPv6: the upstream gets 2001:db8:100::1, and container v6-1 a dual-stack network
        #[arg(long, conflicts_with = "hosts")]
        ipv6: bool,
    },
    Down {
        /// 2: the two-host lab
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        hosts: u8,
    },
}

fn main() -> Result<ExitCode> {
    match Cli::parse().task {
        Task::Setup => setup::setup().map(|()| ExitCode::SUCCESS),
        Task::Lab {
            action: LabAction::Up { hosts: 2, .. },
        } => hosts::up().map(|()| ExitCode::SUCCESS),
        Task::Lab {
            action: LabAction::Up { ipv6, .. },
        } => lab::up(ipv6).map(|()| ExitCode::SUCCESS),
        Task::Lab {
            action: LabAction::Down { hosts: 2 },
        } => hosts::down().map(|()| ExitCode::SUCCESS),
        Task::Lab {
            action: LabAction::Down { .. },
        } => lab::down().map(|()| ExitCode::SUCCESS),
        Task::Demo { demo: kind } => demo(kind),
        Task::Test => testrun::test(),
        Task::Bench => bench::bench(),
        Task::Man { out } => {
            let dir = match out {
                Some(dir) => dir,
                None => target_dir()?.join("man"),
            };
            for page in man::write_pages(&dir)? {
                println!("man: {}", page.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Task::Dist => {
            let packages = dist::dist()?;
            println!("dist: {}", packages.deb.display());
            println!("dist: {}", packages.tarball.display());
            Ok(ExitCode::SUCCESS)
        }
        Task::CheckPackages => testrun::packages().map(|()| ExitCode::SUCCESS),
        Task::Image => {
            let image = dist::image()?;
            println!("image: {image} (and {}:latest); run it with:", dist::IMAGE);
            println!(
                "  docker run {} {image} topology",
                dist::DOCKER_RUN_FLAGS.join(" ")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn demo(kind: DemoKind) -> Result<ExitCode> {
    setup::setup()?;
    run(&mut cargo(["build", "--release", "-p", "tracer"]))?;
    let traced = lab::up(false).and_then(|()| {
        let pkttrace = target_dir()?.join("release/pkttrace");
        match kind {
            DemoKind::Follow => {
                let mut follow = cmd(
                    pkttrace,
                    ["follow", "server-1", "198.51.100.1", "--probe", "icmp"],
                );
                println!("demo: {}", describe(&follow));
                follow
                    .status()
                    .with_context(|| format!("cannot start `{}`", describe(&follow)))
            }
            DemoKind::Dns => dns_demo(pkttrace),
        }
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

/// `pkttrace dns client-1` while client-1 looks up a container's name (the
/// embedded DNS answers) and a name only the upstream knows (forwarded).
fn dns_demo(pkttrace: PathBuf) -> Result<std::process::ExitStatus> {
    let mut dns = cmd(
        pkttrace,
        ["dns", lab::DNS_CLIENT, "--count", "2", "--timeout", "20"],
    );
    println!("demo: {}", describe(&dns));
    dns.stderr(std::process::Stdio::piped());
    let mut tracer = dns
        .spawn()
        .with_context(|| format!("cannot start `{}`", describe(&dns)))?;
    // The lookups start once pkttrace says it watches: a query sent while it
    // still attaches would be told in part. Its stderr is passed on as it comes.
    let stderr = tracer.stderr.take().context("pkttrace's stderr")?;
    let (attached, attached_seen) = std::sync::mpsc::channel();
    let forwarder = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            if line.starts_with("pkttrace: watching") {
                let _ = attached.send(());
            }
        }
    });
    if attached_seen
        .recv_timeout(std::time::Duration::from_secs(60))
        .is_err()
    {
        let _ = tracer.kill();
        let _ = tracer.wait();
        anyhow::bail!("pkttrace dns did not start watching within 60 s");
    }
    for name in [lab::DNS_SERVER, "upstream.lab"] {
        let mut lookup = cmd(
            "docker",
            ["exec", lab::DNS_CLIENT, "nslookup", "-type=a", name],
        );
        println!("demo: {}", describe(&lookup));
        // The answer is pkttrace's to show; nslookup's own output would interleave.
        let _ = lookup.output();
    }
    let status = tracer.wait()?;
    let _ = forwarder.join();
    Ok(status)
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
